// The standalone HTTP/1.1 server (Boost.Beast/Asio).
//
// Network I/O runs on a few io threads; each request's handler runs on a
// bounded worker pool (worker_pool.h), so blocking store work never stalls
// the sockets and a burst beyond the bound queues. Handlers chosen by the
// options run on the io thread instead: at once when they never block, or
// on fibers that park while they wait on AWS (fiber.h). The handler sees only
// http::Request/Response; its BodySource pulls the body from the socket on
// demand (sending "100 Continue" at the first read when the client asked for
// it), so an early answer (401, 413) is sent without reading the body. Beast
// and Asio headers stay inside server.cc.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/status.h"
#include "http/message.h"

namespace imgsvc::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8000;  // 0: an ephemeral port (see Server::port())
  std::size_t io_threads = 1;
  std::size_t worker_threads = 32;      // bounded concurrency of handler work
  std::size_t max_header_bytes = 16 * 1024;  // request line + headers; over -> 431
  std::chrono::seconds header_timeout{10};   // a request's headers must arrive within
  std::chrono::seconds idle_timeout{75};     // keep-alive connection with no request
  std::chrono::seconds body_read_timeout{30};  // no body progress for this long -> 408
  std::chrono::seconds send_timeout{30};  // a response write stalled this long closes the connection
  std::uint64_t max_drain_bytes = 1024 * 1024;  // unread body discarded to keep a connection
  std::chrono::seconds shutdown_grace{20};
  std::size_t max_connections = 20000;
  // Requests without a body for which this returns true (given the method
  // and the target) are handled on the io thread itself, saving the two
  // thread hand-offs of the worker pool: for handlers that never block, such
  // as reads of the embedded store (SQLite in WAL mode does not make readers
  // wait). Unset: every request goes to the workers.
  std::function<bool(std::string_view method, std::string_view target)> answer_inline;
  // Requests for which this returns true (and answer_inline false) are
  // handled on fibers of the io thread (fiber.h) when they have no body or
  // one of a declared length of at most max_fiber_body_bytes: for handlers
  // whose waits are net::HttpClient calls, such as the AWS stores'. A body
  // read on a fiber parks it until more of the body arrives. Larger and
  // chunked bodies go to the workers: the handler's work on them (parsing,
  // hashing, copying) would hold the io thread, and the connections it
  // serves, meanwhile.
  std::function<bool(std::string_view method, std::string_view target)> answer_on_fiber;
  std::uint64_t max_fiber_body_bytes = 1024 * 1024;
  // Fibers in flight at once, over all io threads (each gets its share, at
  // least one), the rest queued. A request without a body holds little but
  // a parked stack and its peer's connection, so the bound can be far above
  // the workers': while a remote store takes milliseconds per call, it is
  // what caps the requests per second.
  std::size_t max_fibers_without_body = 256;
  // A request with a body also holds what has arrived of it: at most
  // max_fibers_with_body of them at once, holding at most
  // max_fiber_body_bytes_in_flight of bodies between them. Each is charged
  // its body's declared length, but at least the bytes over the fibers, so
  // that both bounds hold: small bodies run as many at once as fibers
  // without a body do, bodies of max_fiber_body_bytes as few as the bytes
  // allow.
  std::size_t max_fibers_with_body = 256;
  std::uint64_t max_fiber_body_bytes_in_flight = 32 * 1024 * 1024;
};

// Runs on a worker thread, an io thread or a fiber (see the options); must not throw.
using Handler = std::function<http::Response(http::Request&)>;
// Builds a response for errors the server detects itself (400, 408, 431, 503
// while stopping), so they carry the same JSON shape and request id as the
// router's. status is the HTTP status, detail the message.
using ErrorResponder = std::function<http::Response(int status, std::string_view detail)>;

class Server {
 public:
  Server(ServerOptions options, Handler handler, ErrorResponder error_responder);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens. kUnavailable with the reason when the address is unusable.
  Status Listen();
  std::uint16_t port() const;  // the bound port, after Listen()

  // Serves until Stop() or SIGTERM/SIGINT. Then stops accepting, lets
  // in-flight requests finish (up to shutdown_grace) and answer with
  // "connection: close", answers 503 to a request already arriving on a
  // connection kept open, closes idle connections, and returns. A handler
  // still busy when the grace period ends runs on, its answer sent only if
  // its io thread is still running: on a worker until it returns, on a fiber
  // for up to another shutdown_grace (then it is never resumed), unless it
  // waits on its client's body (then its read fails at once). on_stopping
  // runs once, first, on the server's thread.
  void Run(std::function<void()> on_stopping = {});
  // Thread-safe; begins the same graceful shutdown as a signal.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit.
std::uint64_t RaiseOpenFileLimit();

}  // namespace imgsvc::server
