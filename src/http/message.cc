#include "http/message.h"

#include <algorithm>
#include <cstring>

namespace imgsvc::http {

std::optional<std::string_view> FindHeader(const Headers& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (h.name == name) return std::string_view(h.value);
  }
  return std::nullopt;
}

StatusOr<std::size_t> MemoryBody::Read(std::span<std::byte> out) {
  const std::size_t n = std::min(out.size(), data_.size() - offset_);
  std::memcpy(out.data(), data_.data() + offset_, n);
  offset_ += n;
  return n;
}

StatusOr<std::string> ReadAll(BodySource& body, std::size_t max_bytes) {
  std::string data;
  std::byte chunk[16 * 1024];
  for (;;) {
    IMGSVC_ASSIGN_OR_RETURN(std::size_t n, body.Read(chunk));
    if (n == 0) return data;
    if (data.size() + n > max_bytes) {
      return Status(Code::kPayloadTooLarge, "Request body too large");
    }
    data.append(reinterpret_cast<const char*>(chunk), n);
  }
}

void Response::set_header(std::string name, std::string value) {
  for (auto& h : headers) {
    if (h.name == name) {
      h.value = std::move(value);
      return;
    }
  }
  headers.push_back({std::move(name), std::move(value)});
}

}  // namespace imgsvc::http
