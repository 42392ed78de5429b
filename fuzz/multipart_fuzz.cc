// Fuzzes MultipartBoundary and MultipartForm. The first input line is a
// Content-Type value (its boundary is used when valid, else "b"); the rest is
// the body. The body is parsed twice, once in 64 KiB reads from a MemoryBody
// and once with body chunks whose sizes derive from the input; both runs must
// report the same parts, data and outcome, since where the input is split
// must not change the result.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/multipart.h"

namespace {

using imgsvc::http::BodySource;
using imgsvc::http::MemoryBody;
using imgsvc::http::MultipartForm;

constexpr imgsvc::http::MultipartLimits kLimits{.max_part_header_bytes = 512, .max_parts = 32};

// Sizes 1..max from a seeded xorshift, reproducible per input.
class Sizes {
 public:
  explicit Sizes(std::uint64_t seed) : state_(seed | 1) {}
  std::size_t Next(std::size_t max) {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return 1 + static_cast<std::size_t>(state_ % max);
  }

 private:
  std::uint64_t state_;
};

// A MemoryBody handing out chunks of varying size.
class ChoppyBody final : public BodySource {
 public:
  ChoppyBody(std::string data, std::uint64_t seed) : inner_(std::move(data)), sizes_(seed) {}
  imgsvc::StatusOr<std::size_t> Read(std::span<std::byte> out) override {
    return inner_.Read(out.first(std::min(out.size(), sizes_.Next(300))));
  }

 private:
  MemoryBody inner_;
  Sizes sizes_;
};

void Check(bool condition) {
  if (!condition) std::abort();
}

// Everything a parse reported, in order, the outcome last. Parts whose index
// picks them (the same in both runs) are skipped unread.
std::string Transcript(BodySource& body, const std::string& boundary, std::size_t body_size, std::uint64_t seed) {
  MultipartForm form(body, boundary, kLimits);
  std::string transcript;
  std::size_t parts = 0;
  std::size_t data_bytes = 0;
  for (;;) {
    auto part = form.NextPart();
    if (!part.ok()) return transcript + "error " + part.status().message();
    if (!part->has_value()) break;
    Check(++parts <= kLimits.max_parts);
    const imgsvc::core::FormPart& p = **part;
    transcript += "part " + p.name + "|" + (p.filename ? "file " + *p.filename : "field") + "|" + p.content_type + "\n";
    if (((seed >> (parts % 64)) & 3) == 0) continue;
    for (;;) {
      auto data = form.ReadPart();
      if (!data.ok()) return transcript + "error " + data.status().message();
      if (data->empty()) break;
      Check(data->size() <= MultipartForm::kReadSize);
      data_bytes += data->size();
      Check(data_bytes <= body_size);  // progress is bounded, so no hang
      transcript.append(reinterpret_cast<const char*>(data->data()), data->size());
    }
    transcript += "\nend\n";
  }
  auto after_end = form.ReadPart();
  Check(after_end.ok() && after_end->empty());
  return transcript + "ok";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t newline = input.find('\n');
  const std::string_view content_type = input.substr(0, newline);
  const std::string body(newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1));

  auto parsed_boundary = imgsvc::http::MultipartBoundary(content_type);
  std::string boundary = "b";
  if (parsed_boundary.ok()) {
    Check(!parsed_boundary->empty() && parsed_boundary->size() <= 70);
    boundary = *parsed_boundary;
  }

  std::uint64_t seed = 14695981039346656037ull;  // FNV-1a of the input
  for (const char c : input) seed = (seed ^ static_cast<unsigned char>(c)) * 1099511628211ull;

  MemoryBody whole(body);
  ChoppyBody choppy(body, seed);
  Check(Transcript(whole, boundary, body.size(), seed) == Transcript(choppy, boundary, body.size(), seed));
  return 0;
}
