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
//  - Connect and total timeouts per call; a call blocks its thread (or, under
//    a thread's WaitHook, parks its fiber). Calls from many threads at once
//    are safe (each connection is used by one call at a time).
//  - Proxies as curl and the AWS SDKs take them from HTTPS_PROXY, HTTP_PROXY
//    and NO_PROXY (the client never reads the environment; the app passes
//    ProxyOptionsFromEnvironment's result). https endpoints go through an
//    HTTP CONNECT tunnel, with TLS verified against the endpoint, never the
//    proxy; http endpoints send their requests to the proxy in absolute form
//    (its own answers, a 407 or a 502, come back as the response).
//    Only http:// proxies (no TLS to the proxy), Basic credentials from the
//    proxy URL. Nothing bypasses the proxy implicitly, loopback and the EC2
//    metadata address included: list them in no_proxy (as the AWS docs ask
//    for 169.254.169.254), or give such calls a client without proxies.
// Retries beyond that stale-socket replay (5xx, throttling) belong to the
// caller (aws::AwsClient), which knows what is safe to repeat.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
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

  // "http://host:port" or "http://user:pass@host:port" (percent-encoded
  // credentials; no scheme means http; the port defaults to 80 as in any
  // http URL, where curl alone assumes 1080). Empty: direct. https endpoints
  // use https_proxy only, http endpoints http_proxy only. A proxy URL the
  // client cannot use fails the calls that would go through it (kBadRequest).
  std::string http_proxy;
  std::string https_proxy;
  // Endpoints reached directly despite a proxy, as curl reads NO_PROXY: a
  // comma-separated list, case-insensitive, of
  //  - "*": every endpoint;
  //  - a domain name, with or without a leading "." or "*.": that name and
  //    every name under it ("example.com" covers a.example.com, not
  //    notexample.com);
  //  - an IP address or a CIDR block ("10.0.0.0/8", "fd00::/8"), matched
  //    against IP-literal endpoints only (names are not resolved for this);
  //  - any of these but "*" and CIDR with ":port" ("[::1]:4566" for IPv6),
  //    then only that port matches.
  // Entries that are none of these are ignored.
  std::string no_proxy;
};

// The proxy settings of the process's environment: HTTPS_PROXY, HTTP_PROXY and
// NO_PROXY, each falling back to its lower-case spelling when unset or empty.
// The other options keep their defaults. `getenv` returns no value for an
// unset variable.
HttpClientOptions ProxyOptionsFromEnvironment(
    const std::function<std::optional<std::string>(const std::string&)>& getenv);

// Whether `no_proxy` (the syntax of HttpClientOptions::no_proxy) sends
// `endpoint` direct.
bool NoProxyMatches(std::string_view no_proxy, const Endpoint& endpoint);

// Failures are Status values:
//  - kDeadlineExceeded: a connect or total timeout passed;
//  - kUnavailable: name resolution, connect, TLS or connection failures,
//    answers that are not HTTP, and a proxy refusing a CONNECT tunnel
//    (message names the cause or the proxy's status; never the proxy's
//    credentials);
//  - kBadRequest: an endpoint, request or proxy URL the client refuses to use.

// Where a call waits for its socket. Without a hook a call waits in ppoll;
// while a thread has one (the standalone server's fibers, server/fiber.h),
// its calls' waits go through it, so that the caller parks instead of
// holding the thread. (Name resolution, which waits for a resolver thread,
// goes through core::RunBlocking.)
class WaitHook {
 public:
  virtual ~WaitHook() = default;
  // The poll events that came on `fd` (one of `events`); 0 with `timed_out`
  // set when `deadline` (steady clock) passed first.
  virtual short Wait(int fd, short events, std::optional<std::chrono::steady_clock::time_point> deadline,
                     bool& timed_out) = 0;
};
// The calling thread's hook, until replaced; null: none.
void SetThreadWaitHook(WaitHook* hook);

class PendingExchange;

class HttpClient {
 public:
  explicit HttpClient(HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  StatusOr<ClientResponse> Send(const Endpoint& endpoint, const ClientRequest& request);

  // Sends `request` on a new connection and returns without its answer (see
  // PendingExchange). The connect and the write are bounded as in Send.
  StatusOr<PendingExchange> Begin(const Endpoint& endpoint, const ClientRequest& request);

  // Opens a connection to `endpoint` (TCP, and TLS for https) and leaves it
  // in the pool for the next call there: a Lambda function's init makes the
  // first invocation's handshakes ahead of time. Bounded by the connect
  // timeout and the total timeout.
  Status Preconnect(const Endpoint& endpoint);

  struct Stats {
    std::uint64_t requests = 0;             // calls to Send and Begin
    std::uint64_t connections_opened = 0;   // new TCP (and TLS) connections
    std::uint64_t stale_replays = 0;        // replays after a dead pooled connection
  };
  Stats stats() const;
  // The total timeout a request without its own gets.
  std::chrono::milliseconds total_timeout() const;

 private:
  friend class PendingExchange;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A request already sent whose answer is read later, by Finish(): a Lambda
// function's init sends its first AWS call before it asks for its first
// event, and reads the answer when the invocation needs it, so the call's
// round trip overlaps the wait without a second thread (which a fraction of
// a vCPU would not run meanwhile anyway). Made by HttpClient::Begin, which
// it must not outlive; moved, not copied; one thread at a time.
class PendingExchange {
 public:
  PendingExchange(PendingExchange&&) noexcept;
  PendingExchange& operator=(PendingExchange&&) noexcept;
  ~PendingExchange();  // an answer never read closes its connection

  // Reads the answer, waiting at most `timeout` (the client's total timeout
  // when none) from now: an answer that came meanwhile is read at once,
  // however long ago the request was sent. The connection then goes to the
  // pool when it can carry another request. Failures as for Send (no
  // replay: the request was sent once). Only once.
  StatusOr<ClientResponse> Finish(std::optional<std::chrono::milliseconds> timeout = std::nullopt) &&;

 private:
  friend class HttpClient;
  struct State;
  explicit PendingExchange(std::unique_ptr<State> state);

  std::unique_ptr<State> state_;
};

}  // namespace imgsvc::net
