// A small synchronous HTTP/1.1 client for tests that talk to a real server.
//
// Plain POSIX sockets with poll() deadlines (so a hung server fails a test
// instead of hanging it) and Boost.Beast's parser for responses. Besides
// well-formed requests it can send arbitrary bytes (malformed requests), build
// multipart bodies, and stream a body produced on the fly while reading the
// response concurrently, to observe early answers such as a 413 that arrives
// while the client is still sending.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace imgsvc::testing {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse {
  int status = 0;
  HeaderList headers;  // names lower-cased, in the order received
  std::string body;

  // First value of `name` (any case), if present.
  std::optional<std::string> header(std::string_view name) const;
};

struct HttpRequest {
  std::string method = "GET";
  std::string target = "/";
  HeaderList headers;  // Host is added unless given
  std::string body;    // Content-Length is sent when non-empty or method has a body
};

inline constexpr std::chrono::milliseconds kDefaultHttpTimeout{30000};

// The request's bytes as sent on the wire: request line, headers, body.
std::string SerializeRequest(const HttpRequest& request, std::string_view host_header);

// One TCP connection; requests on it reuse it (keep-alive).
class HttpConnection {
 public:
  static StatusOr<HttpConnection> Open(const std::string& host, std::uint16_t port,
                                       std::chrono::milliseconds timeout = kDefaultHttpTimeout);
  HttpConnection(HttpConnection&& other) noexcept;
  HttpConnection& operator=(HttpConnection&& other) noexcept;
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;
  ~HttpConnection();

  StatusOr<HttpResponse> Send(const HttpRequest& request);
  // Sends every byte (errors once the peer stops reading or closed).
  Status Write(std::string_view bytes);
  // Reads the next response (a 1xx interim response counts as one).
  StatusOr<HttpResponse> ReadResponse();
  // Reads everything until the peer closes or the timeout passes.
  std::string ReadUntilClose();

 private:
  HttpConnection(int fd, std::string host_header, std::chrono::milliseconds timeout);

  int fd_ = -1;
  std::string host_header_;
  std::chrono::milliseconds timeout_;
  std::string pending_;  // received, not yet parsed
};

// A connection per request, so each test call is independent of the last.
class HttpClient {
 public:
  HttpClient(std::string host, std::uint16_t port,
             std::chrono::milliseconds timeout = kDefaultHttpTimeout)
      : host_(std::move(host)), port_(port), timeout_(timeout) {}

  StatusOr<HttpResponse> Send(const HttpRequest& request) const;
  StatusOr<HttpResponse> Get(std::string target, HeaderList headers = {}) const;

  const std::string& host() const { return host_; }
  std::uint16_t port() const { return port_; }

 private:
  std::string host_;
  std::uint16_t port_;
  std::chrono::milliseconds timeout_;
};

// Sends `bytes` as they are and returns whatever comes back until the peer
// closes or `timeout` passes. Send errors (the peer closed early) are ignored:
// what matters is the answer.
StatusOr<std::string> RawExchange(const std::string& host, std::uint16_t port, std::string_view bytes,
                                  std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
// Parses the first response in raw bytes.
StatusOr<HttpResponse> ParseResponse(std::string_view raw);

// multipart/form-data bodies, parts in the order added.
class MultipartBuilder {
 public:
  explicit MultipartBuilder(std::string boundary = "e2e-Boundary-5f0c1d7a9b");

  MultipartBuilder& AddField(std::string_view name, std::string_view value);
  MultipartBuilder& AddFile(std::string_view name, std::string_view filename,
                            std::string_view content_type, std::string_view data);
  // For bodies too large to hold: returns everything added so far plus the
  // head of a file part; the caller sends the file's bytes itself, and what is
  // added afterwards (and Build()) continues after them.
  std::string OpenFile(std::string_view name, std::string_view filename,
                       std::string_view content_type);

  // The rest of the body, closing delimiter included.
  std::string Build() const;
  std::string ContentType() const;  // multipart/form-data; boundary=...
  const std::string& boundary() const { return boundary_; }

 private:
  void StartPart();

  std::string boundary_;
  std::string body_;
  bool started_ = false;  // a part was emitted (by Build or OpenFile)
};

// Streams a request body produced on the fly. The producer fills `out` with
// the bytes at body offset `offset` and returns how many; 0 ends the body (it
// may sleep or signal to shape timing). The body is written on its own thread
// while this thread reads the response, so an early answer is seen while the
// body is still going out; the writer stops once the response is complete.
using BodyProducer = std::function<std::size_t(std::span<char> out, std::uint64_t offset)>;

struct StreamedExchange {
  std::optional<HttpResponse> response;
  std::string error;  // why no response, when none
  std::uint64_t bytes_sent = 0;  // body bytes the kernel accepted in total
  // Body bytes accepted when the first byte of the response arrived.
  std::optional<std::uint64_t> bytes_sent_at_response;
  bool body_complete = false;  // the producer reached its end and all was sent
};

StreamedExchange StreamRequest(const std::string& host, std::uint16_t port, const HttpRequest& head,
                               std::uint64_t content_length, const BodyProducer& producer,
                               std::chrono::milliseconds timeout = std::chrono::milliseconds(120000));

}  // namespace imgsvc::testing
