// Transport-neutral HTTP request and response values.
//
// Both transports (the Beast server and the Lambda runtime) turn what they
// receive into a Request and send back a Response; the router sees nothing
// else. The request body is pulled through a BodySource so a socket stream
// and an in-memory event body look the same to the handlers, and so uploads
// can stream without holding the body in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace imgsvc::http {

struct Header {
  std::string name;  // lower-case
  std::string value;
};

using Headers = std::vector<Header>;

// First value of header `name` (lower-case), if present.
std::optional<std::string_view> FindHeader(const Headers& headers, std::string_view name);

// A pull source of request body bytes.
class BodySource {
 public:
  virtual ~BodySource() = default;
  // Reads up to out.size() bytes into out. Returns the number read; 0 means
  // the body is complete. Errors: kBadRequest (connection closed before the
  // declared length), kRequestTimeout (client stalled), kPayloadTooLarge.
  virtual StatusOr<std::size_t> Read(std::span<std::byte> out) = 0;
};

// A BodySource over bytes already in memory (Lambda events, tests).
class MemoryBody final : public BodySource {
 public:
  explicit MemoryBody(std::string data) : data_(std::move(data)) {}
  StatusOr<std::size_t> Read(std::span<std::byte> out) override;

 private:
  std::string data_;
  std::size_t offset_ = 0;
};

// Reads the whole body, failing with kPayloadTooLarge beyond max_bytes.
StatusOr<std::string> ReadAll(BodySource& body, std::size_t max_bytes);

struct Request {
  std::string method;  // upper-case, e.g. "GET"
  std::string path;    // percent-decoded is NOT applied; raw path without query
  std::string query;   // raw query string without '?', may be empty
  Headers headers;
  std::optional<std::uint64_t> content_length;  // when the client declared one
  std::string remote_address;
  // The Lambda invocation's request id (empty elsewhere): logged beside the
  // request's own id so CloudWatch lines join either way.
  std::string invocation_id;
  BodySource* body = nullptr;  // never null when handed to the router

  std::optional<std::string_view> header(std::string_view name) const {
    return FindHeader(headers, name);
  }
};

// A response body served from a file (download URLs of the embedded store).
// The transport streams [offset, offset + length) of the file at `path`.
struct FileBody {
  std::string path;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

struct Response {
  int status = 200;
  Headers headers;
  std::string body;               // used when file is empty
  std::optional<FileBody> file;   // streamed from disk instead of body
  bool close_connection = false;  // the transport closes after sending
  // Why a 5xx happened, in full (dependency, address, AWS request id): for
  // the request's log line only, never sent.
  std::string logged_cause;

  void set_header(std::string name, std::string value);
  std::optional<std::string_view> header(std::string_view name) const {
    return FindHeader(headers, name);
  }
};

}  // namespace imgsvc::http
