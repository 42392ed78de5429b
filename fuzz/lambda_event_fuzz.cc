// Fuzzes lambda::DecodeEvent, which reads whatever Lambda hands the runtime:
// any input must decode or fail with the one kBadRequest, never crash or
// hang; a decoded event's body must read back to its declared length, and
// any response must encode to JSON in every shape.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "core/status.h"
#include "http/message.h"
#include "lambda/events.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto decoded = imgsvc::lambda::DecodeEvent(input);
  if (!decoded.ok()) {
    Check(decoded.status().code() == imgsvc::Code::kBadRequest);
    return 0;
  }
  Check(decoded->request.body != nullptr);
  auto body = imgsvc::http::ReadAll(*decoded->request.body, 16u << 20);
  Check(body.ok());
  Check(decoded->request.content_length.value_or(0) == body->size());

  // Echo the request back as a response: whatever bytes came in must make
  // valid response JSON (binary ones as base64).
  imgsvc::http::Response response;
  response.status = 200;
  response.body = *body;
  for (const auto& header : decoded->request.headers) response.headers.push_back(header);
  boost::system::error_code error;
  boost::json::parse(imgsvc::lambda::EncodeResponse(decoded->shape, response), error);
  Check(!error);
  return 0;
}
