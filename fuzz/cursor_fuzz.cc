// Fuzzes CursorCodec: opening arbitrary text with a fixed binding must fail
// cleanly with the one 400 (only a genuinely sealed cursor can open, and the
// fuzzer cannot forge one), and a Position built from the input must survive
// Seal/Open unchanged while failing under any other binding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/cursor.h"

namespace {

using imgsvc::core::CursorCodec;
using imgsvc::core::Position;

void Check(bool condition) {
  if (!condition) std::abort();
}

const CursorCodec& Codec() {
  static const CursorCodec codec("fuzz-service-secret-0123456789abcdef");
  return codec;
}

// Splits `input` into three fields at the first two 0xff bytes.
Position PositionFrom(std::string_view input) {
  Position p;
  std::string* fields[] = {&p.user_id, &p.created_at, &p.image_id};
  std::size_t field = 0;
  for (const char c : input) {
    if (c == '\xff' && field < 2) {
      ++field;
    } else {
      fields[field]->push_back(c);
    }
  }
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  constexpr std::string_view kBinding = "list-v1 fixed binding";

  const auto opened = Codec().Open(input, kBinding);
  if (!opened.ok()) {
    Check(opened.status().code() == imgsvc::Code::kBadRequest);
    Check(opened.status().message() == "Invalid pagination cursor");
  }

  const Position position = PositionFrom(input.substr(0, 512));
  const std::string cursor = Codec().Seal(position, kBinding).value();
  const auto reopened = Codec().Open(cursor, kBinding);
  Check(reopened.ok() && *reopened == position);
  Check(!Codec().Open(cursor, std::string(kBinding) + "x").ok());
  Check(!Codec().Open(cursor.substr(0, cursor.size() - 1), kBinding).ok());
  return 0;
}
