// Outbound HTTP/1.1 client: how imgsvc talks to AWS (and, later, to the
// Lambda Runtime API). Built on Boost.Beast/Asio inside http_client.cc only;
// callers see the plain types below.
//
// Scope, on purpose small:
//  - HTTP/1.1 with Content-Length bodies held in memory (S3 parts are at most
//    one part size); chunked responses are read too. IPv4 and IPv6.
//  - https endpoints: TLS >= 1.2 through OpenSSL with verification always on
//    (SNI, hostname check, CA file from the options or the system's standard
//    paths: Debian's /etc/ssl/certs, Amazon Linux's /etc/pki/tls/certs).
//  - A small pool of idle keep-alive connections per endpoint, so steady
//    state opens no new TCP/TLS connection per call. A pooled connection may
//    have been closed by the peer (idle close, a Lambda freeze): when a reused
//    connection fails before any byte of the answer, a replayable request is
//    sent once more on a fresh connection.
//  - Connect and total timeouts per call; a call blocks its thread. Calls
//    from many threads at once are safe (each connection is used by one call
//    at a time).
// Retries beyond that stale-socket replay (5xx, throttling) belong to the
// caller (aws::AwsClient), which knows what is safe to repeat.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace imgsvc::net {

struct Endpoint {
  std::string scheme = "http";  // "http" or "https"
  std::string host;             // name, IPv4, or IPv6 without brackets
  std::uint16_t port = 80;

  // "http://host", "https://host:8443/", "http://[::1]:4566". A path other
  // than "/" or any query is refused (kBadRequest).
  static StatusOr<Endpoint> Parse(std::string_view url);
  // host[:port] as the Host header carries it: the port only when not the
  // scheme's default, IPv6 in brackets.
  std::string Authority() const;
  // scheme://authority
  std::string Origin() const;
  bool IsIpLiteralOrLocalhost() const;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

struct Header {
  std::string name;
  std::string value;
};

struct ClientRequest {
  std::string method = "GET";
  std::string target = "/";  // origin-form: path and query, already encoded
  // Sent as given; Host (from the endpoint) and Content-Length are added when
  // absent. Content-Length is sent for every request with a body and for
  // POST/PUT without one.
  std::vector<Header> headers;
  std::string body;
  // Whether sending it twice is harmless (the stale-connection replay).
  bool replayable = true;
  // Overrides the client's total timeout for this call; zero means none (the
  // Lambda Runtime API's /next waits as long as it takes).
  std::optional<std::chrono::milliseconds> timeout;
};

struct ClientResponse {
  int status = 0;
  std::vector<Header> headers;
  std::string body;
  // The first value of a header (case-insensitive name), or "" when absent.
  std::string_view HeaderValue(std::string_view name) const;
};

struct HttpClientOptions {
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds total_timeout{30000};
  std::size_t max_idle_per_endpoint = 16;
  std::size_t max_response_body = 64u << 20;
  std::string ca_file;  // empty: the system's standard locations
};

// Failures are Status values:
//  - kDeadlineExceeded: a connect or total timeout passed;
//  - kUnavailable: name resolution, connect, TLS or connection failures, and
//    answers that are not HTTP (message names the cause);
//  - kBadRequest: an endpoint or request the client refuses to send.
class HttpClient {
 public:
  explicit HttpClient(HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  StatusOr<ClientResponse> Send(const Endpoint& endpoint, const ClientRequest& request);

  struct Stats {
    std::uint64_t requests = 0;             // calls to Send
    std::uint64_t connections_opened = 0;   // new TCP (and TLS) connections
    std::uint64_t stale_replays = 0;        // replays after a dead pooled connection
  };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace imgsvc::net
