// Tests of the HTTP/1.1 server over real loopback sockets. The clients are
// raw POSIX sockets so malformed, slow and half-sent requests can be written
// byte by byte.
#include "server/server.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/blocking.h"
#include "net/http_client.h"
#include "server/fiber.h"
#include "support/loopback_socket.h"

namespace imgsvc::server {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct ParsedResponse {
  int status = 0;
  http::Headers headers;  // names lower-cased
  std::string body;
  std::optional<std::string_view> header(std::string_view name) const { return http::FindHeader(headers, name); }
};

// A blocking loopback client; every wait is bounded by the socket timeouts.
class Client {
 public:
  explicit Client(std::uint16_t port, std::chrono::milliseconds timeout = 20000ms) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // The next response (a 100 Continue counts as one); nullopt when the
  // connection ends or stalls first.
  std::optional<ParsedResponse> ReadResponse(bool head_request = false) {
    std::size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return std::nullopt;
    }
    const std::string head = buffer_.substr(0, end);
    buffer_.erase(0, end + 4);
    ParsedResponse response;
    if (head.compare(0, 9, "HTTP/1.1 ") != 0) return std::nullopt;
    response.status = std::atoi(head.c_str() + 9);
    std::size_t line_start = head.find("\r\n");
    while (line_start != std::string::npos) {
      line_start += 2;
      const std::size_t line_end = head.find("\r\n", line_start);
      const std::string line = head.substr(line_start, line_end - line_start);
      const std::size_t colon = line.find(':');
      http::Header header{line.substr(0, colon), line.substr(colon + 2)};
      for (char& c : header.name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      response.headers.push_back(std::move(header));
      line_start = line_end;
    }
    const auto length = response.header("content-length");
    if (length && !head_request && response.status >= 200) {
      const std::size_t size = std::stoull(std::string(*length));
      while (buffer_.size() < size) {
        if (!Fill()) return std::nullopt;
      }
      response.body = buffer_.substr(0, size);
      buffer_.erase(0, size);
    }
    return response;
  }

  // True when the server ends the connection (EOF or reset) in time; bytes
  // received before that are appended to `received`.
  bool WaitClosed(std::string* received = nullptr) {
    if (received) received->append(buffer_);
    buffer_.clear();
    char chunk[4096];
    for (;;) {
      const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET || errno == EPIPE;
      if (received) received->append(chunk, static_cast<std::size_t>(n));
    }
  }

  // True when bytes (or the end) are there to read within `limit`.
  bool WaitReadable(std::chrono::milliseconds limit) const {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(limit.count())) == 1;
  }

  // True when the peer has acknowledged everything sent, within `limit`.
  bool WaitAcknowledged(std::chrono::milliseconds limit) const {
    const auto deadline = Clock::now() + limit;
    for (;;) {
      int unacknowledged = 0;
      if (::ioctl(fd_, SIOCOUTQ, &unacknowledged) != 0) return false;
      if (unacknowledged == 0) return true;
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
  }

  // True when nothing arrived and the connection is still open.
  bool IsOpenAndQuiet() const {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  }

 private:
  bool Fill() {
    char chunk[16384];
    const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
};

ServerOptions FastOptions() {
  ServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.io_threads = 1;
  options.worker_threads = 4;
  // Generous: on a loaded VM a client's 50 ms sleep was seen to return after
  // 1 s, which a 2 s body timeout turned into a closed connection. Tests of
  // the timeouts themselves set their own short ones.
  options.header_timeout = 10s;
  options.idle_timeout = 10s;
  options.body_read_timeout = 10s;
  options.send_timeout = 10s;
  options.shutdown_grace = 10s;
  return options;
}

http::Response TextResponse(int status, std::string body) {
  http::Response response;
  response.status = status;
  response.set_header("content-type", "text/plain");
  response.body = std::move(body);
  return response;
}

// A server running in a background thread; stopped and joined on destruction.
class TestServer {
 public:
  // on_stopping runs where the server calls it: on its thread, as the stop begins.
  TestServer(ServerOptions options, Handler handler, std::function<void()> on_stopping = {})
      : on_stopping_(std::move(on_stopping)),
        server_(std::move(options), std::move(handler), [](int status, std::string_view detail) {
          return TextResponse(status, "error " + std::to_string(status) + ": " + std::string(detail));
        }) {
    const Status listening = server_.Listen();
    EXPECT_TRUE(listening.ok()) << listening.ToString();
    run_returned_ = run_done_.get_future();
    thread_ = std::thread([this] {
      server_.Run([this] {
        ++stopping_calls_;
        if (on_stopping_) on_stopping_();
      });
      run_done_.set_value();
    });
  }
  ~TestServer() {
    server_.Stop();
    thread_.join();
  }

  std::uint16_t port() const { return server_.port(); }
  void Stop() { server_.Stop(); }
  bool RunReturnsWithin(std::chrono::milliseconds limit) {
    return run_returned_.wait_for(limit) == std::future_status::ready;
  }
  int stopping_calls() const { return stopping_calls_; }

 private:
  std::function<void()> on_stopping_;
  Server server_;
  std::promise<void> run_done_;
  std::future<void> run_returned_;
  std::atomic<int> stopping_calls_{0};
  std::thread thread_;
};

std::string Get(std::string_view target, std::string_view extra_headers = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: test\r\n" + std::string(extra_headers) + "\r\n";
}

Handler EchoPath() {
  return [](http::Request& request) { return TextResponse(200, request.method + " " + request.path); };
}

// Reads the whole body and answers with it.
Handler EchoBody(std::size_t max_bytes = 64 << 20) {
  return [max_bytes](http::Request& request) {
    auto body = http::ReadAll(*request.body, max_bytes);
    if (!body.ok()) return TextResponse(HttpStatusOf(body.status().code()), body.status().message());
    return TextResponse(200, std::move(*body));
  };
}

std::string Pattern(std::size_t size) {
  std::string data(size, '\0');
  for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return data;
}

// An IMF-fixdate as libc's strftime writes it, the reference for the date header.
std::string ImfFixdate(std::time_t when) {
  std::tm utc{};
  gmtime_r(&when, &utc);
  char text[64];
  const std::size_t length = std::strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S GMT", &utc);
  return std::string(text, length);
}

// A handler's header that could split the response (CR, LF or NUL in its
// name or value) is dropped, as are the framing headers the server sets.
TEST(ServerTest, HandlerHeadersThatCouldSplitTheResponseAreDropped) {
  TestServer server(FastOptions(), [](http::Request&) {
    http::Response response = TextResponse(200, "ok");
    response.headers.push_back({"x-kept", "1"});
    response.headers.push_back({"x-cr", "a\rb"});
    response.headers.push_back({"x-lf", "a\nevil: 1"});
    response.headers.push_back({"x-nul", std::string("a\0b", 3)});
    response.headers.push_back({"x-name\r\nevil", "v"});
    response.headers.push_back({"content-length", "99"});
    response.headers.push_back({"connection", "close"});
    return response;
  });
  Client client(server.port());
  for (int round = 0; round < 2; ++round) {  // still kept alive
    ASSERT_TRUE(client.Send(Get("/")));
    const auto response = client.ReadResponse();
    ASSERT_TRUE(response) << "round " << round;
    EXPECT_EQ(response->body, "ok");
    EXPECT_EQ(response->header("x-kept"), "1");
    EXPECT_EQ(response->header("content-length"), "2");
    for (const char* dropped : {"x-cr", "x-lf", "x-nul", "evil", "x-name"}) {
      EXPECT_FALSE(response->header(dropped)) << dropped;
    }
  }
}

TEST(ServerTest, DateHeaderIsTheCurrentTimeAsAnImfFixdate) {
  TestServer server(FastOptions(), [](http::Request&) { return TextResponse(200, "ok"); });
  Client client(server.port());
  const std::time_t before = std::time(nullptr);
  ASSERT_TRUE(client.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n"));
  const auto response = client.ReadResponse();
  const std::time_t after = std::time(nullptr);
  ASSERT_TRUE(response);
  const std::optional<std::string_view> date = response->header("date");
  ASSERT_TRUE(date);
  bool matched = false;
  for (std::time_t second = before; second <= after; ++second) matched = matched || *date == ImfFixdate(second);
  EXPECT_TRUE(matched) << *date << " is not " << ImfFixdate(before);
}

TEST(ServerTest, BuildsRequestAndRunsHandlerOnWorkerThread) {
  std::mutex mu;
  http::Request seen;
  std::thread::id handler_thread;
  TestServer server(FastOptions(), [&](http::Request& request) {
    std::lock_guard lock(mu);
    seen = request;
    handler_thread = std::this_thread::get_id();
    return TextResponse(200, "ok");
  });
  Client client(server.port());
  ASSERT_TRUE(client.Send("GET /a/b?x=1&y=2?z HTTP/1.1\r\nHost: test\r\nX-Dup: one\r\nx-DUP: two\r\n\r\n"));
  const auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "ok");
  EXPECT_EQ(response->header("content-length"), "2");
  EXPECT_EQ(response->header("content-type"), "text/plain");
  EXPECT_TRUE(response->header("date"));

  std::lock_guard lock(mu);
  EXPECT_EQ(seen.method, "GET");
  EXPECT_EQ(seen.path, "/a/b");
  EXPECT_EQ(seen.query, "x=1&y=2?z");
  EXPECT_EQ(seen.remote_address, "127.0.0.1");
  EXPECT_FALSE(seen.content_length);
  std::vector<std::pair<std::string, std::string>> headers;
  for (const auto& h : seen.headers) headers.emplace_back(h.name, h.value);
  EXPECT_EQ(headers, (std::vector<std::pair<std::string, std::string>>{
                         {"host", "test"}, {"x-dup", "one"}, {"x-dup", "two"}}));
  EXPECT_NE(handler_thread, std::thread::id());
  EXPECT_NE(handler_thread, std::this_thread::get_id());
}

TEST(ServerTest, InlineAnswersDoNotWaitForBusyWorkers) {
  ServerOptions options = FastOptions();
  options.worker_threads = 1;
  options.answer_inline = [](std::string_view method, std::string_view target) {
    return method == "GET" && target.starts_with("/inline");
  };
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> worker_busy{false};
  TestServer server(options, [&](http::Request& request) {
    if (request.path == "/block") {
      worker_busy = true;
      released.wait();
    }
    return TextResponse(200, request.path);
  });
  Client blocked(server.port());
  ASSERT_TRUE(blocked.Send("GET /block HTTP/1.1\r\nHost: test\r\n\r\n"));
  for (int i = 0; i < 1000 && !worker_busy; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(worker_busy);

  // The only worker is taken: an inline GET is still answered, a queued one is not.
  Client inline_client(server.port());
  ASSERT_TRUE(inline_client.Send("GET /inline HTTP/1.1\r\nHost: test\r\n\r\n"));
  const auto answered = inline_client.ReadResponse();
  ASSERT_TRUE(answered);
  EXPECT_EQ(answered->body, "/inline");

  Client queued(server.port(), 500ms);
  ASSERT_TRUE(queued.Send("GET /queued HTTP/1.1\r\nHost: test\r\n\r\n"));
  EXPECT_FALSE(queued.ReadResponse()) << "answered although the only worker is busy";

  release.set_value();
  const auto unblocked = blocked.ReadResponse();
  ASSERT_TRUE(unblocked);
  EXPECT_EQ(unblocked->body, "/block");
}

TEST(ServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  for (const std::size_t io_threads : {1, 2}) {
    ServerOptions options = FastOptions();
    options.io_threads = io_threads;
    TestServer server(options, EchoPath());
    Client client(server.port());
    for (int i = 0; i < 5; ++i) {
      const std::string path = "/item/" + std::to_string(i);
      ASSERT_TRUE(client.Send(Get(path)));
      const auto response = client.ReadResponse();
      ASSERT_TRUE(response) << "request " << i << " with " << io_threads << " io threads";
      EXPECT_EQ(response->body, "GET " + path);
      EXPECT_FALSE(response->header("connection"));
    }
  }
}

// The socket takes only part of a large response at once: the worker sends
// that part and the io thread the rest. The client gets it whole and the
// connection carries the next request.
TEST(ServerTest, ResponseLargerThanTheSocketTakesArrivesWholeAndTheConnectionStays) {
  const std::string big = Pattern(16u << 20);
  TestServer server(FastOptions(), [&big](http::Request& request) {
    return TextResponse(200, request.path == "/big" ? big : "small");
  });
  Client client(server.port());
  ASSERT_TRUE(client.Send(Get("/big")));
  const auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body.size(), big.size());
  EXPECT_TRUE(response->body == big);
  ASSERT_TRUE(client.Send(Get("/small")));
  const auto next = client.ReadResponse();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "small");
}

TEST(ServerTest, AnswersPipelinedRequestsInOrder) {
  TestServer server(FastOptions(), EchoPath());
  Client client(server.port());
  ASSERT_TRUE(client.Send(Get("/one") + Get("/two") + "DELETE /three HTTP/1.1\r\nHost: t\r\n\r\n"));
  for (const char* expected : {"GET /one", "GET /two", "DELETE /three"}) {
    const auto response = client.ReadResponse();
    ASSERT_TRUE(response);
    EXPECT_EQ(response->body, expected);
  }
}

TEST(ServerTest, Http10ClosesUnlessKeepAliveIsAsked) {
  TestServer server(FastOptions(), EchoPath());
  {
    Client client(server.port());
    ASSERT_TRUE(client.Send("GET /old HTTP/1.0\r\n\r\n"));
    const auto response = client.ReadResponse();
    ASSERT_TRUE(response);
    EXPECT_EQ(response->body, "GET /old");
    EXPECT_EQ(response->header("connection"), "close");
    EXPECT_TRUE(client.WaitClosed());
  }
  Client client(server.port());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(client.Send("GET /kept HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    const auto response = client.ReadResponse();
    ASSERT_TRUE(response);
    EXPECT_EQ(response->header("connection"), "keep-alive");
  }
}

TEST(ServerTest, OversizedHeadersGet431AndTheConnectionCloses) {
  ServerOptions options = FastOptions();
  options.max_header_bytes = 1024;
  std::atomic<int> calls{0};
  TestServer server(options, [&](http::Request&) {
    ++calls;
    return TextResponse(200, "ok");
  });
  Client fits(server.port());
  ASSERT_TRUE(fits.Send(Get("/", "X-Fill: " + std::string(900, 'f') + "\r\n")));
  const auto ok = fits.ReadResponse();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);

  Client client(server.port());
  ASSERT_TRUE(client.Send(Get("/", "X-Fill: " + std::string(4096, 'f') + "\r\n")));
  const auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 431);
  EXPECT_EQ(response->body, "error 431: Request header fields too large");
  EXPECT_EQ(response->header("connection"), "close");
  EXPECT_TRUE(client.WaitClosed());
  EXPECT_EQ(calls, 1);
}

TEST(ServerTest, MalformedRequestsGet400AndTheConnectionCloses) {
  std::atomic<int> calls{0};
  TestServer server(FastOptions(), [&](http::Request&) {
    ++calls;
    return TextResponse(200, "ok");
  });
  for (const char* request : {"THIS IS NOT HTTP\r\n\r\n", "GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
                              "GET / HTTP/1.1\r\n\r\n"}) {
    Client client(server.port());
    ASSERT_TRUE(client.Send(request));
    const auto response = client.ReadResponse();
    ASSERT_TRUE(response) << request;
    EXPECT_EQ(response->status, 400) << request;
    EXPECT_EQ(response->body.rfind("error 400: ", 0), 0u) << response->body;
    EXPECT_EQ(response->header("connection"), "close");
    EXPECT_TRUE(client.WaitClosed());
  }
  EXPECT_EQ(calls, 0);
}

TEST(ServerTest, HeaderTimeoutClosesASlowlorisConnectionSilently) {
  ServerOptions options = FastOptions();
  options.header_timeout = 1s;
  TestServer server(options, EchoPath());
  Client client(server.port());
  const auto start = Clock::now();
  ASSERT_TRUE(client.Send("GET / HTTP/1.1\r\nHost: t\r\n"));
  // Trickles a header byte now and then, never finishing the head: each byte
  // would reset a per-read timeout, but not the deadline for the whole head.
  bool send_failed = false;
  while (Clock::now() - start < 10s && !send_failed) {
    std::this_thread::sleep_for(200ms);
    send_failed = !client.Send("X");
    if (client.WaitReadable(0ms)) break;
  }
  std::string received;
  EXPECT_TRUE(client.WaitClosed(&received));
  EXPECT_LT(Clock::now() - start, 8s);
  EXPECT_EQ(received, "");
}

TEST(ServerTest, IdleKeepAliveConnectionClosesAfterIdleTimeout) {
  ServerOptions options = FastOptions();
  options.idle_timeout = 1s;
  TestServer server(options, EchoPath());
  Client client(server.port());
  ASSERT_TRUE(client.Send(Get("/")));
  ASSERT_TRUE(client.ReadResponse());
  const auto start = Clock::now();
  std::string received;
  EXPECT_TRUE(client.WaitClosed(&received));
  EXPECT_GE(Clock::now() - start, 800ms);
  EXPECT_LT(Clock::now() - start, 10s);
  EXPECT_EQ(received, "");
}

TEST(ServerTest, ThousandsOfIdleConnectionsDoNotSlowAnActiveClient) {
  ASSERT_GE(RaiseOpenFileLimit(), 2600u);
  ServerOptions options = FastOptions();
  options.header_timeout = 30s;
  options.idle_timeout = 30s;
  TestServer server(options, EchoPath());
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < 1200; ++i) {
    idle.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(idle.back()->connected()) << i;
    // Every other connection is kept alive after a request; the rest never sent anything.
    if (i % 2 == 0) {
      ASSERT_TRUE(idle.back()->Send(Get("/warm")));
      ASSERT_TRUE(idle.back()->ReadResponse()) << i;
    }
  }
  Client active(server.port());
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(active.Send(Get("/active")));
    const auto response = active.ReadResponse();
    ASSERT_TRUE(response);
    ASSERT_EQ(response->body, "GET /active");
  }
  for (const auto& client : idle) EXPECT_TRUE(client->IsOpenAndQuiet());
}

TEST(ServerTest, ConnectionsBeyondMaxConnectionsAreClosedAtOnce) {
  ServerOptions options = FastOptions();
  options.max_connections = 2;
  TestServer server(options, EchoPath());
  Client first(server.port());
  Client second(server.port());
  ASSERT_TRUE(first.Send(Get("/1")));
  ASSERT_TRUE(first.ReadResponse());
  ASSERT_TRUE(second.Send(Get("/2")));
  ASSERT_TRUE(second.ReadResponse());
  Client third(server.port());
  std::string received;
  EXPECT_TRUE(third.WaitClosed(&received));
  EXPECT_EQ(received, "");
  ASSERT_TRUE(first.Send(Get("/1")));
  EXPECT_TRUE(first.ReadResponse());
}

TEST(ServerTest, HandlerReadsAContentLengthBodyExactly) {
  std::atomic<std::uint64_t> declared{0};
  auto echo = EchoBody();
  TestServer server(FastOptions(), [&](http::Request& request) {
    declared = request.content_length.value_or(0);
    return echo(request);
  });
  const std::string body = Pattern(300 * 1024 + 17);
  Client client(server.port());
  ASSERT_TRUE(client.Send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
                          "\r\n\r\n" + body));
  const auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, body);
  EXPECT_EQ(declared, body.size());
  // The connection carries on after a fully read body.
  ASSERT_TRUE(client.Send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"));
  const auto second = client.ReadResponse();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->body, "abc");
}

TEST(ServerTest, HandlerReadsAChunkedBodyExactly) {
  std::atomic<bool> had_length{true};
  TestServer server(FastOptions(), [&](http::Request& request) {
    had_length = request.content_length.has_value();
    // Small reads exercise many round trips through the io thread.
    std::string body;
    std::byte buffer[1000];
    for (;;) {
      auto n = request.body->Read(buffer);
      if (!n.ok()) return TextResponse(500, n.status().message());
      if (*n == 0) break;
      body.append(reinterpret_cast<const char*>(buffer), *n);
    }
    return TextResponse(200, std::move(body));
  });
  const std::string big = Pattern(150 * 1024);
  Client client(server.port());
  ASSERT_TRUE(client.Send("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"));
  ASSERT_TRUE(client.Send("5\r\nhello\r\n"));
  std::this_thread::sleep_for(50ms);
  char size_line[32];
  std::snprintf(size_line, sizeof(size_line), "%zx;ext=1\r\n", big.size());
  ASSERT_TRUE(client.Send(size_line + big + "\r\n"));
  std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(client.Send("1\r\n!\r\n0\r\n\r\n"));
  const auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "hello" + big + "!");
  EXPECT_FALSE(had_length);
}

// Body bytes already on the socket are parsed by the handler's own thread;
// later ones arrive through the io thread. A broken body fails alike either way.
TEST(ServerTest, ABrokenBodyFailsTheReadWhetherItCameWithTheHeadOrLater) {
  struct Case {
    const char* name;
    std::string start;                    // the head and the body's good beginning
    std::function<bool(Client&)> breaks;  // what the client does next
    const char* message;
  };
  const Case cases[] = {
      {"malformed chunk",
       "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
       [](Client& client) { return client.Send("zz\r\n"); }, "Malformed request body"},
      {"cut short", "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789",
       [](Client& client) { return ::shutdown(client.fd(), SHUT_WR) == 0; },
       "Connection closed before the request body was complete"},
  };
  TestServer server(FastOptions(), EchoBody());
  for (const Case& broken : cases) {
    for (const bool later : {false, true}) {
      SCOPED_TRACE(std::string(broken.name) + (later ? ", later" : ", with the head"));
      Client client(server.port());
      ASSERT_TRUE(client.Send(broken.start));
      if (later) std::this_thread::sleep_for(50ms);
      ASSERT_TRUE(broken.breaks(client));
      const auto response = client.ReadResponse();
      ASSERT_TRUE(response);
      EXPECT_EQ(response->status, 400);
      EXPECT_EQ(response->body, broken.message);
    }
  }
}

// Sends a head asking for 100 Continue, expects the interim response, then
// sends the body: the final response.
std::optional<ParsedResponse> SendAfterContinue(Client& client, std::string_view head, std::string_view body) {
  EXPECT_TRUE(client.Send(head));
  const auto interim = client.ReadResponse();
  EXPECT_TRUE(interim);
  if (!interim || interim->status != 100) {
    ADD_FAILURE() << "no 100 Continue";
    return std::nullopt;
  }
  EXPECT_TRUE(client.Send(body));
  return client.ReadResponse();
}

TEST(ServerTest, ContinueIsSentWhenTheHandlerReadsTheBody) {
  TestServer server(FastOptions(), EchoBody());
  Client client(server.port());
  const auto response = SendAfterContinue(
      client, "PUT /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n", "hello world");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "hello world");
  EXPECT_FALSE(response->header("connection"));
}

TEST(ServerTest, AnswerWithoutReadingSendsNoContinueAndCloses) {
  TestServer server(FastOptions(), [](http::Request&) { return TextResponse(401, "who are you"); });
  Client client(server.port());
  ASSERT_TRUE(client.Send("PUT /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n"));
  const auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 401);  // the first thing received: no 100 before it
  EXPECT_EQ(response->body, "who are you");
  EXPECT_EQ(response->header("connection"), "close");
  std::string received;
  EXPECT_TRUE(client.WaitClosed(&received));
  EXPECT_EQ(received, "");
}

TEST(ServerTest, SmallUnreadBodyIsDrainedAndTheConnectionKept) {
  ServerOptions options = FastOptions();
  options.max_drain_bytes = 64 * 1024;
  TestServer server(options, EchoPath());
  Client client(server.port());
  const std::string body = Pattern(40 * 1024);
  ASSERT_TRUE(client.Send("POST /ignored HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
                          "\r\n\r\n" + body));
  const auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "POST /ignored");
  EXPECT_FALSE(response->header("connection"));
  ASSERT_TRUE(client.Send(Get("/next")));
  const auto next = client.ReadResponse();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "GET /next");
}

TEST(ServerTest, EarlyPayloadTooLargeReachesAClientStillSending) {
  ServerOptions options = FastOptions();
  options.max_drain_bytes = 64 * 1024;
  TestServer server(options, EchoBody(256 * 1024));
  constexpr std::uint64_t kDeclared = 64ull << 20;
  Client client(server.port());
  ASSERT_TRUE(client.Send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(kDeclared) +
                          "\r\n\r\n"));
  std::atomic<std::uint64_t> written{0};
  std::thread writer([&] {
    const std::string chunk = Pattern(64 * 1024);
    while (written < kDeclared) {
      const ssize_t n = ::send(client.fd(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      written += static_cast<std::uint64_t>(n);
    }
  });
  const auto response = client.ReadResponse();
  writer.join();
  ASSERT_TRUE(response) << "no response, only a reset";
  EXPECT_EQ(response->status, 413);
  EXPECT_EQ(response->body, "Request body too large");
  EXPECT_EQ(response->header("connection"), "close");
  // The server stopped reading early: what got through is its small read and
  // discard budgets plus the kernel's socket buffers, far below the declared size.
  EXPECT_LT(written.load(), kDeclared / 2);
}

// On a worker; the same on a fiber is ServerFiberTest's.
TEST(ServerTest, StalledBodyGivesTheHandlerRequestTimeoutAndTheClientIts408) {
  ServerOptions options = FastOptions();
  options.body_read_timeout = 1s;
  std::promise<Status> result;
  TestServer server(options, [&](http::Request& request) {
    auto body = http::ReadAll(*request.body, 1 << 20);
    result.set_value(body.ok() ? Status::Ok() : body.status());
    return TextResponse(408, "too slow");
  });
  Client client(server.port());
  const auto start = Clock::now();
  ASSERT_TRUE(client.Send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789"));
  auto future = result.get_future();
  ASSERT_EQ(future.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(future.get().code(), Code::kRequestTimeout);
  EXPECT_GE(Clock::now() - start, 900ms);
  const auto answer = client.ReadResponse();
  ASSERT_TRUE(answer) << "the connection closed without the handler's response";
  EXPECT_EQ(answer->status, 408);
  EXPECT_EQ(answer->body, "too slow");
  EXPECT_EQ(answer->header("connection"), "close");
  EXPECT_TRUE(client.WaitClosed());
}

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/imgsvc-server-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    path_ = dir_ / "blob";
    std::ofstream(path_, std::ios::binary) << content_;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  const std::string content_ = Pattern(300000);
  std::filesystem::path dir_;
  std::filesystem::path path_;
};

TEST_F(FileTest, StreamsExactFileRanges) {
  std::mutex mu;
  http::FileBody next;
  TestServer server(FastOptions(), [&](http::Request&) {
    http::Response response = TextResponse(200, "");
    std::lock_guard lock(mu);
    response.file = next;
    return response;
  });
  Client client(server.port());
  for (const auto& [offset, length] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
           {0, 300000}, {1000, 200000}, {299999, 1}, {5, 0}, {65536, 65536}}) {
    {
      std::lock_guard lock(mu);
      next = {path_.string(), offset, length};
    }
    ASSERT_TRUE(client.Send(Get("/file")));
    const auto response = client.ReadResponse();
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->header("content-length"), std::to_string(length));
    EXPECT_TRUE(response->body == content_.substr(offset, length)) << offset << "+" << length;
  }
  {
    std::lock_guard lock(mu);
    next = {(dir_ / "missing").string(), 0, 10};
  }
  ASSERT_TRUE(client.Send(Get("/file")));
  const auto missing = client.ReadResponse();
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->body, "error 404: File not found");
}

TEST_F(FileTest, HeadSendsTheFullLengthWithoutABody) {
  TestServer server(FastOptions(), [&](http::Request& request) {
    http::Response response = TextResponse(200, "0123456789");
    if (request.path == "/file") response.file = http::FileBody{path_.string(), 10, 5000};
    return response;
  });
  Client client(server.port());
  ASSERT_TRUE(client.Send("HEAD /text HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto response = client.ReadResponse(/*head_request=*/true);
  ASSERT_TRUE(response);
  EXPECT_EQ(response->header("content-length"), "10");
  ASSERT_TRUE(client.Send("HEAD /file HTTP/1.1\r\nHost: t\r\n\r\n"));
  response = client.ReadResponse(/*head_request=*/true);
  ASSERT_TRUE(response);
  EXPECT_EQ(response->header("content-length"), "5000");
  // Had a body followed either head, this response would not parse.
  ASSERT_TRUE(client.Send(Get("/text")));
  response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "0123456789");
}

TEST(ServerTest, ThrowingHandlerGets500FromTheErrorResponder) {
  TestServer server(FastOptions(), [](http::Request&) -> http::Response { throw std::runtime_error("boom"); });
  Client client(server.port());
  ASSERT_TRUE(client.Send(Get("/")));
  const auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 500);
  EXPECT_EQ(response->body, "error 500: Internal server error");
}

// Blocks requests to /slow until released, reporting when one started.
struct SlowHandler {
  std::promise<void> started;
  std::chrono::milliseconds delay;
  http::Response operator()(http::Request& request) {
    if (request.path == "/slow") {
      started.set_value();
      std::this_thread::sleep_for(delay);
      return TextResponse(200, "slow done");
    }
    return TextResponse(200, "quick");
  }
};

bool ConnectionRefusedWithin(std::uint16_t port, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    Client probe(port);
    if (!probe.connected()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

void CheckGracefulShutdown(std::size_t io_threads);

// With two io threads the idle connection and the busy one live on different
// io contexts (accepted round robin): the idle one's context must not stop
// the other's while it still finishes its request.
TEST(ServerTest, GracefulShutdownFinishesInFlightRequestsAndRefusesNewOnes) {
  for (const std::size_t io_threads : {1, 2}) {
    SCOPED_TRACE(std::to_string(io_threads) + " io threads");
    CheckGracefulShutdown(io_threads);
  }
}

void CheckGracefulShutdown(std::size_t io_threads) {
  auto slow = std::make_shared<SlowHandler>();
  slow->delay = 1000ms;
  auto started = slow->started.get_future();
  ServerOptions options = FastOptions();
  options.io_threads = io_threads;
  TestServer server(options, [slow](http::Request& request) { return (*slow)(request); });
  Client idle(server.port());
  ASSERT_TRUE(idle.Send(Get("/")));
  ASSERT_TRUE(idle.ReadResponse());
  Client busy(server.port());
  ASSERT_TRUE(busy.Send(Get("/slow")));
  ASSERT_EQ(started.wait_for(5s), std::future_status::ready);

  server.Stop();
  EXPECT_TRUE(idle.WaitClosed());
  EXPECT_TRUE(ConnectionRefusedWithin(server.port(), 1s));
  EXPECT_FALSE(server.RunReturnsWithin(0ms));
  const auto response = busy.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "slow done");
  EXPECT_EQ(response->header("connection"), "close");
  EXPECT_TRUE(busy.WaitClosed());
  EXPECT_TRUE(server.RunReturnsWithin(3s));
  EXPECT_EQ(server.stopping_calls(), 1);
}

TEST(ServerTest, RequestArrivingDuringShutdownGets503) {
  auto slow = std::make_shared<SlowHandler>();
  slow->delay = 1500ms;
  auto started = slow->started.get_future();
  TestServer server(FastOptions(), [slow](http::Request& request) { return (*slow)(request); });
  Client late(server.port());
  ASSERT_TRUE(late.Send(Get("/")));
  ASSERT_TRUE(late.ReadResponse());
  // The next request's head is under way when the shutdown begins.
  ASSERT_TRUE(late.Send("GET /late HTTP/1.1\r\nHost: t\r\n"));
  Client busy(server.port());
  ASSERT_TRUE(busy.Send(Get("/slow")));
  ASSERT_EQ(started.wait_for(5s), std::future_status::ready);
  server.Stop();
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(late.Send("\r\n"));
  const auto response = late.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);
  EXPECT_EQ(response->body, "error 503: Server is shutting down");
  EXPECT_EQ(response->header("connection"), "close");
  EXPECT_TRUE(late.WaitClosed());
  EXPECT_TRUE(busy.ReadResponse());
  EXPECT_TRUE(server.RunReturnsWithin(3s));
}

// The stop begins while a response is still being sent and the client's next
// request is already waiting behind it: that request is answered 503, not
// dropped with the connection.
TEST(ServerTest, RequestPipelinedBehindAResponseInFlightAtTheStopGets503) {
  const std::string big = Pattern(16 << 20);  // more than both sockets' buffers hold
  TestServer server(FastOptions(), [&big](http::Request& request) {
    return TextResponse(200, request.path == "/big" ? big : "small");
  });
  Client client(server.port());
  ASSERT_TRUE(client.Send(Get("/big") + Get("/next")));
  // The response has begun, so it was framed to keep the connection open;
  // it fills the buffers, since the client reads nothing yet.
  ASSERT_TRUE(client.WaitReadable(5s));
  server.Stop();
  const auto deadline = Clock::now() + 5s;
  while (server.stopping_calls() == 0 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(server.stopping_calls(), 1);
  const auto first = client.ReadResponse();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->body.size(), big.size());
  const auto second = client.ReadResponse();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 503);
  EXPECT_EQ(second->body, "error 503: Server is shutting down");
  EXPECT_EQ(second->header("connection"), "close");
  EXPECT_TRUE(client.WaitClosed());
  EXPECT_TRUE(server.RunReturnsWithin(3s));
}

// A request whose bytes reach the server's socket as the stop begins, before
// the io thread has read them, is answered 503: the connection is not closed
// as idle. The bytes are sent from the stop's own callback, on the only io
// thread, so the stop reaches the connection before its read does.
TEST(ServerTest, RequestUnreadWhenTheStopBeginsGets503) {
  ServerOptions options = FastOptions();
  // The first answer, and the idle read after it, happen on the io thread
  // before anything else does there.
  options.answer_inline = [](std::string_view, std::string_view target) { return target == "/"; };
  std::unique_ptr<Client> late;
  TestServer server(options, EchoPath(), [&late] {
    ASSERT_TRUE(late->Send(Get("/late")));
    // Acknowledged, so in the server's socket before the stop goes on.
    ASSERT_TRUE(late->WaitAcknowledged(5s));
  });
  late = std::make_unique<Client>(server.port());
  ASSERT_TRUE(late->Send(Get("/")));
  ASSERT_TRUE(late->ReadResponse());
  server.Stop();
  const auto response = late->ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);
  EXPECT_EQ(response->header("connection"), "close");
  EXPECT_TRUE(late->WaitClosed());
  EXPECT_TRUE(server.RunReturnsWithin(3s));
}

TEST(ServerTest, ShutdownGraceBoundsTheWaitForStuckRequests) {
  ServerOptions options = FastOptions();
  options.shutdown_grace = 1s;
  options.body_read_timeout = 30s;
  auto slow = std::make_shared<SlowHandler>();
  slow->delay = 10s;  // far beyond the grace, so returning early is the grace's doing
  auto started = slow->started.get_future();
  std::promise<Status> body_result;
  TestServer server(options, [&, slow](http::Request& request) {
    if (request.path == "/upload") {
      auto body = http::ReadAll(*request.body, 1 << 20);
      body_result.set_value(body.ok() ? Status::Ok() : body.status());
      return TextResponse(200, "uploaded");
    }
    return (*slow)(request);
  });
  Client stuck(server.port());
  ASSERT_TRUE(stuck.Send(Get("/slow")));
  ASSERT_EQ(started.wait_for(5s), std::future_status::ready);
  Client stalled(server.port());
  ASSERT_TRUE(stalled.Send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc"));
  std::this_thread::sleep_for(200ms);

  const auto stop = Clock::now();
  server.Stop();
  ASSERT_TRUE(server.RunReturnsWithin(7s));
  EXPECT_GE(Clock::now() - stop, 900ms);
  // The handler blocked on the body is released rather than left waiting 30 s.
  auto result = body_result.get_future();
  ASSERT_EQ(result.wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(result.get().ok());
  EXPECT_TRUE(stuck.WaitClosed());
  EXPECT_TRUE(stalled.WaitClosed());
}

TEST(ServerTest, ListenFailsWhenThePortIsTaken) {
  TestServer first(FastOptions(), EchoPath());
  ServerOptions options = FastOptions();
  options.port = first.port();
  Server second(options, EchoPath(), [](int status, std::string_view) { return TextResponse(status, ""); });
  const Status status = second.Listen();
  EXPECT_EQ(status.code(), Code::kUnavailable);
}

// --- handlers on fibers (answer_on_fiber) --------------------------------

// A peer on loopback that answers each HTTP request once Release() is
// called (never, unless it is).
class GatedPeer {
 public:
  GatedPeer() {
    EXPECT_TRUE(listener_.ok());
    thread_ = std::thread([this] { Serve(); });
  }
  ~GatedPeer() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    ::shutdown(listener_.fd(), SHUT_RDWR);  // ends the accept
    thread_.join();
    // Ends the reads of connections a caller still holds (one on a fiber
    // that a stop left parked); they are closed once their threads end.
    for (const int connection : connections_) ::shutdown(connection, SHUT_RDWR);
    for (std::thread& answer : answers_) answer.join();
    for (const int connection : connections_) ::close(connection);
  }
  std::uint16_t port() const { return listener_.port(); }
  int requests() const { return requests_.load(); }
  void Release() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    changed_.notify_all();
  }

 private:
  void Serve() {
    while (true) {
      const int connection = ::accept(listener_.fd(), nullptr, nullptr);
      if (connection < 0) return;
      {
        std::lock_guard lock(mutex_);
        connections_.push_back(connection);
      }
      answers_.emplace_back([this, connection] {
        char buffer[4096];
        while (::read(connection, buffer, sizeof(buffer)) > 0) {  // a request per read, enough here
          ++requests_;
          std::unique_lock lock(mutex_);
          changed_.wait(lock, [this] { return released_ || stopping_; });
          if (stopping_) break;
          lock.unlock();
          const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
          if (::write(connection, answer.data(), answer.size()) < 0) break;
        }
      });
    }
  }

  imgsvc::testing::LoopbackSocket listener_{/*listening=*/true};
  std::mutex mutex_;
  std::condition_variable changed_;
  bool released_ = false;
  bool stopping_ = false;
  std::atomic<int> requests_{0};
  std::vector<int> connections_;  // guarded by mutex_; closed once their threads end
  std::thread thread_;
  std::vector<std::thread> answers_;
};

// Polls `condition` for up to 10 s.
bool Eventually(const std::function<bool()>& condition) {
  for (int i = 0; i < 1000; ++i) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

ServerOptions FiberOptions() {
  ServerOptions options = FastOptions();
  options.io_threads = 1;
  options.worker_threads = 1;
  options.max_fibers_without_body = 1;
  options.max_fibers_with_body = 1;
  options.answer_on_fiber = [](std::string_view method, std::string_view) { return method == "GET"; };
  return options;
}

TEST(ServerFiberTest, RequestsWaitingOnThePeerShareOneIoThread) {
  GatedPeer peer;
  net::HttpClient client;
  const net::Endpoint endpoint{"http", "127.0.0.1", peer.port()};
  std::mutex threads_mutex;
  std::set<std::thread::id> threads;  // that ran the handlers calling the peer
  ServerOptions options = FiberOptions();
  options.worker_threads = 8;  // on workers, four calls would take four threads
  options.max_fibers_without_body = 8;
  TestServer server(options, [&](http::Request& request) {
    if (request.path == "/fast") return TextResponse(200, "fast");
    {
      std::lock_guard lock(threads_mutex);
      threads.insert(std::this_thread::get_id());
    }
    const auto answer = client.Send(endpoint, net::ClientRequest{});
    return TextResponse(200, answer.ok() ? answer->body : answer.status().ToString());
  });
  std::vector<std::unique_ptr<Client>> waiting;
  for (int i = 0; i < 4; ++i) {
    waiting.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(waiting.back()->Send(Get("/call")));
  }
  ASSERT_TRUE(Eventually([&] { return peer.requests() == 4; }));
  // All four wait on the peer, and the one io thread still answers.
  Client fast(server.port());
  ASSERT_TRUE(fast.Send(Get("/fast")));
  const auto fast_answer = fast.ReadResponse();
  ASSERT_TRUE(fast_answer);
  EXPECT_EQ(fast_answer->body, "fast");
  peer.Release();
  for (auto& one : waiting) {
    const auto answer = one->ReadResponse();
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->body, "ok");
  }
  EXPECT_EQ(threads.size(), 1u);
}

TEST(ServerFiberTest, BlockingWorkRunsOffTheIoThread) {
  std::mutex held_across_a_call;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  ServerOptions options = FiberOptions();
  options.max_fibers_without_body = 4;  // for the three requests
  options.worker_threads = 4;           // for the blocking work
  TestServer server(options, [&](http::Request& request) {
    if (request.path == "/fast") return TextResponse(200, "fast");
    // As a token's fetch holds its lock across the call: were the work run
    // on the io thread, it would stop every fiber there, and a second one
    // wanting the lock would deadlock the thread.
    core::RunBlocking([&] {
      std::lock_guard lock(held_across_a_call);
      released.wait();
    });
    return TextResponse(200, "done");
  });
  Client first(server.port());
  Client second(server.port());
  ASSERT_TRUE(first.Send(Get("/lock")));
  ASSERT_TRUE(second.Send(Get("/lock")));
  Client fast(server.port());
  ASSERT_TRUE(fast.Send(Get("/fast")));
  const auto fast_answer = fast.ReadResponse();
  release.set_value();
  ASSERT_TRUE(fast_answer) << "the io thread was held by blocking work";
  EXPECT_EQ(fast_answer->body, "fast");
  for (Client* client : {&first, &second}) {
    const auto answer = client->ReadResponse();
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->body, "done");
  }
}

TEST(ServerFiberTest, AWaitOnAFiberKeepsTheCallsDeadline) {
  GatedPeer silent;  // never released
  net::HttpClientOptions client_options;
  client_options.total_timeout = 300ms;
  net::HttpClient client(client_options);
  const net::Endpoint endpoint{"http", "127.0.0.1", silent.port()};
  TestServer server(FiberOptions(), [&](http::Request&) {
    const auto answer = client.Send(endpoint, net::ClientRequest{});
    return TextResponse(200, answer.ok() ? "answered" : CodeName(answer.status().code()));
  });
  Client one(server.port());
  ASSERT_TRUE(one.Send(Get("/silent")));
  const auto answer = one.ReadResponse();
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->body, "deadline_exceeded");
}

// Six requests that each call a peer holding its answers: how many reach
// it at once. All six are answered once it lets them go.
int CallsAtOnceOfSix(const ServerOptions& options) {
  GatedPeer peer;
  net::HttpClient client;
  const net::Endpoint endpoint{"http", "127.0.0.1", peer.port()};
  TestServer server(options, [&](http::Request&) {
    const auto answer = client.Send(endpoint, net::ClientRequest{});
    return TextResponse(200, answer.ok() ? answer->body : "failed");
  });
  // Connections go to the io threads in turn.
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 6; ++i) {
    clients.push_back(std::make_unique<Client>(server.port()));
    EXPECT_TRUE(clients.back()->Send(Get("/call")));
  }
  Eventually([&] { return peer.requests() > 0; });
  std::this_thread::sleep_for(300ms);  // time for more to arrive, were the bound not kept
  const int at_once = peer.requests();
  peer.Release();
  for (auto& one : clients) {
    const auto answer = one->ReadResponse();
    EXPECT_TRUE(answer && answer->body == "ok");
  }
  EXPECT_EQ(peer.requests(), 6);
  return at_once;
}

TEST(ServerFiberTest, RequestsBeyondTheBoundWaitForAFiber) {
  ServerOptions options = FiberOptions();
  options.max_fibers_without_body = 2;  // on the one io thread; one worker
  EXPECT_EQ(CallsAtOnceOfSix(options), 2);
}

TEST(ServerFiberTest, ALanesBoundIsSharedOutAmongTheIoThreadsWhole) {
  ServerOptions options = FiberOptions();
  options.io_threads = 2;               // three connections each
  options.max_fibers_without_body = 3;  // two on one io thread, one on the other
  EXPECT_EQ(CallsAtOnceOfSix(options), 3);
}

TEST(ServerFiberTest, AnAwsCallOnAFiberRunsOnPastTheGracePeriod) {
  GatedPeer peer;
  net::HttpClient client;
  const net::Endpoint endpoint{"http", "127.0.0.1", peer.port()};
  std::promise<std::string> call_outcome;
  ServerOptions options = FiberOptions();
  options.shutdown_grace = 3s;
  TestServer server(options, [&](http::Request&) {
    // As an upload's DynamoDB write after its S3 one: cut here, it would
    // leave an object no record points to.
    const auto answer = client.Send(endpoint, net::ClientRequest{});
    call_outcome.set_value(answer.ok() ? answer->body : answer.status().ToString());
    return TextResponse(200, "done");
  });
  Client one(server.port());
  ASSERT_TRUE(one.Send(Get("/write")));
  ASSERT_TRUE(Eventually([&] { return peer.requests() == 1; }));
  server.Stop();
  std::this_thread::sleep_for(3300ms);  // past the grace period, well within the second
  EXPECT_FALSE(server.RunReturnsWithin(0ms)) << "the call in flight was cut";
  peer.Release();
  auto outcome = call_outcome.get_future();
  ASSERT_EQ(outcome.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(outcome.get(), "ok");
  EXPECT_TRUE(server.RunReturnsWithin(5s));
}

TEST(ServerFiberTest, AFibersWorkPastTheGraceIsBoundedByASecondOne) {
  GatedPeer silent;  // never released
  net::HttpClient client;
  const net::Endpoint endpoint{"http", "127.0.0.1", silent.port()};
  ServerOptions options = FiberOptions();
  options.shutdown_grace = 1s;
  TestServer server(options, [&](http::Request&) {
    const auto answer = client.Send(endpoint, net::ClientRequest{});
    return TextResponse(200, answer.ok() ? "answered" : "failed");
  });
  Client one(server.port());
  ASSERT_TRUE(one.Send(Get("/stuck")));
  ASSERT_TRUE(Eventually([&] { return silent.requests() == 1; }));
  const auto stop = Clock::now();
  server.Stop();
  ASSERT_TRUE(server.RunReturnsWithin(8s));
  EXPECT_GE(Clock::now() - stop, 1900ms);
}

// Every request on a fiber, bodies included (within max_fiber_body_bytes).
ServerOptions BodyFiberOptions() {
  ServerOptions options = FiberOptions();
  options.answer_on_fiber = [](std::string_view, std::string_view) { return true; };
  return options;
}

std::string PostHead(std::size_t length, std::string_view extra_headers = "") {
  return "POST /up HTTP/1.1\r\nHost: t\r\n" + std::string(extra_headers) +
         "Content-Length: " + std::to_string(length) + "\r\n\r\n";
}

// The threads that ran the handlers, and how many have begun.
struct HandlerThreads {
  std::mutex mutex;
  std::set<std::thread::id> ids;
  std::atomic<int> started{0};
  void Record() {
    {
      std::lock_guard lock(mutex);
      ids.insert(std::this_thread::get_id());
    }
    ++started;
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return ids.size();
  }
};

TEST(ServerFiberTest, BodyReadsParkTheirFibersAndShareOneIoThread) {
  HandlerThreads threads;
  ServerOptions options = BodyFiberOptions();
  options.worker_threads = 8;  // on workers, four waiting reads would take four threads
  options.max_fibers_with_body = 8;
  const Handler echo = EchoBody();
  TestServer server(options, [&](http::Request& request) {
    threads.Record();
    return echo(request);
  });
  std::vector<std::unique_ptr<Client>> uploading;
  for (int i = 0; i < 4; ++i) {
    uploading.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(uploading.back()->Send(PostHead(10) + "first"));
  }
  ASSERT_TRUE(Eventually([&] { return threads.started == 4; }));
  // All four wait for the rest of their bodies, and the one io thread still answers.
  Client fast(server.port());
  ASSERT_TRUE(fast.Send(Get("/fast")));
  const auto fast_answer = fast.ReadResponse();
  ASSERT_TRUE(fast_answer);
  EXPECT_EQ(fast_answer->status, 200);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(uploading[i]->Send("rest" + std::to_string(i)));
  }
  for (int i = 0; i < 4; ++i) {
    const auto answer = uploading[i]->ReadResponse();
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->status, 200);
    EXPECT_EQ(answer->body, "firstrest" + std::to_string(i));
  }
  EXPECT_EQ(threads.count(), 1u);
}

// Echoes the body, counting the handlers that have begun.
Handler CountingEcho(std::atomic<int>& started) {
  return [&started, echo = EchoBody()](http::Request& request) {
    ++started;
    return echo(request);
  };
}

TEST(ServerFiberTest, BodiesOnFibersAreBoundedInNumberAndInBytes) {
  ServerOptions options = BodyFiberOptions();
  options.max_fibers_with_body = 4;
  options.max_fiber_body_bytes_in_flight = 40;  // each is charged at least 10
  options.body_read_timeout = 30s;
  std::atomic<int> started{0};
  TestServer server(options, CountingEcho(started));
  const auto finish = [](Client& client, const std::string& rest, const std::string& body) {
    ASSERT_TRUE(client.Send(rest));
    const auto answer = client.ReadResponse();
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->body, body);
  };

  // Small bodies: as many at once as the fibers allow, not one more.
  std::vector<std::unique_ptr<Client>> small;
  for (int i = 0; i < 5; ++i) {
    small.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(small.back()->Send(PostHead(2) + "a"));
    if (i < 4) {
      ASSERT_TRUE(Eventually([&] { return started == i + 1; }));
    }
  }
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(started, 4) << "a fifth body ran beyond the fibers' bound";
  for (int i = 0; i < 5; ++i) ASSERT_NO_FATAL_FAILURE(finish(*small[i], "b", "ab"));

  // Large bodies: as many as the bytes allow, though fibers are free.
  Client large(server.port());
  ASSERT_TRUE(large.Send(PostHead(30) + "x"));
  ASSERT_TRUE(Eventually([&] { return started == 6; }));
  Client larger(server.port());
  ASSERT_TRUE(larger.Send(PostHead(20) + "y"));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(started, 6) << "30 + 20 bytes of bodies ran within a bound of 40";
  ASSERT_NO_FATAL_FAILURE(finish(large, std::string(29, 'x'), std::string(30, 'x')));
  ASSERT_NO_FATAL_FAILURE(finish(larger, std::string(19, 'y'), std::string(20, 'y')));
  EXPECT_EQ(started, 7);
}

TEST(ServerFiberTest, BodiesOverTheBoundOrWithoutALengthGoToTheWorkers) {
  std::mutex mutex;
  std::map<std::string, std::thread::id> ran_on;  // by body
  ServerOptions options = BodyFiberOptions();
  options.max_fiber_body_bytes = 8;
  const Handler echo = EchoBody();
  TestServer server(options, [&](http::Request& request) {
    http::Response response = echo(request);
    std::lock_guard lock(mutex);
    ran_on[response.body] = std::this_thread::get_id();
    return response;
  });
  Client client(server.port());
  const auto exchange = [&client](std::string request) {
    ASSERT_TRUE(client.Send(request));
    const auto answer = client.ReadResponse();
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->status, 200);
  };
  exchange(Get("/none"));
  exchange(PostHead(8) + "at-bound");
  exchange(PostHead(9) + "over-it-1");
  exchange("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nchunked\r\n0\r\n\r\n");
  std::lock_guard lock(mutex);
  ASSERT_EQ(ran_on.size(), 4u);
  const std::thread::id io_thread = ran_on[""];
  EXPECT_EQ(ran_on["at-bound"], io_thread);
  EXPECT_NE(ran_on["over-it-1"], io_thread);
  EXPECT_NE(ran_on["chunked"], io_thread);
}

TEST(ServerFiberTest, ABodyThatStallsOnAFiberTimesOutWhileTheThreadServesOthers) {
  ServerOptions options = BodyFiberOptions();
  options.body_read_timeout = 1s;
  TestServer server(options, EchoBody());
  Client stalled(server.port());
  ASSERT_TRUE(stalled.Send(PostHead(10) + "half"));
  Client fast(server.port());
  ASSERT_TRUE(fast.Send(Get("/fast")));
  const auto fast_answer = fast.ReadResponse();
  ASSERT_TRUE(fast_answer);
  EXPECT_EQ(fast_answer->status, 200);
  const auto start = Clock::now();
  const auto answer = stalled.ReadResponse();
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 408);
  EXPECT_EQ(answer->header("connection"), "close");
  EXPECT_LT(Clock::now() - start, 8s);
}

TEST(ServerFiberTest, SlowBodiesDoNotTakeTheFibersOfRequestsWithoutOne) {
  ServerOptions options = BodyFiberOptions();  // one fiber per lane
  options.body_read_timeout = 30s;
  std::atomic<int> started{0};
  TestServer server(options, CountingEcho(started));
  Client slow(server.port());
  ASSERT_TRUE(slow.Send(PostHead(9) + "half"));
  ASSERT_TRUE(Eventually([&] { return started == 1; }));
  Client slower(server.port());  // queued behind it, in its lane
  ASSERT_TRUE(slower.Send(PostHead(9) + "half"));
  Client fast(server.port(), 5000ms);
  ASSERT_TRUE(fast.Send(Get("/fast")));
  const auto fast_answer = fast.ReadResponse();
  ASSERT_TRUE(fast_answer) << "a request without a body waited for a slow one's fiber";
  EXPECT_EQ(fast_answer->status, 200);
  ASSERT_TRUE(slow.Send("-end!"));
  ASSERT_TRUE(slower.Send("-end?"));
  for (auto [client, body] : {std::pair{&slow, "half-end!"}, std::pair{&slower, "half-end?"}}) {
    const auto answer = client->ReadResponse();
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->body, body);
  }
}

TEST(ServerFiberTest, AFiberWaitingOnItsClientsBodyFailsWhenTheGraceEnds) {
  ServerOptions options = BodyFiberOptions();
  options.shutdown_grace = 1s;
  options.body_read_timeout = 30s;
  std::promise<Status> read_outcome;
  std::atomic<int> started{0};
  TestServer server(options, [&](http::Request& request) {
    ++started;
    auto body = http::ReadAll(*request.body, 1024);
    read_outcome.set_value(body.status());
    return TextResponse(200, "unexpected");
  });
  Client stalled(server.port());
  ASSERT_TRUE(stalled.Send(PostHead(10) + "half"));
  ASSERT_TRUE(Eventually([&] { return started == 1; }));
  server.Stop();
  ASSERT_TRUE(server.RunReturnsWithin(5s));
  auto outcome = read_outcome.get_future();
  ASSERT_EQ(outcome.wait_for(1s), std::future_status::ready) << "the fiber was left parked";
  EXPECT_EQ(outcome.get().code(), Code::kUnavailable);
}

TEST(ServerFiberTest, AFiberSendsContinueAtItsFirstBodyRead) {
  std::atomic<bool> on_a_fiber{false};
  const Handler echo = EchoBody();
  TestServer server(BodyFiberOptions(), [&](http::Request& request) {
    on_a_fiber = RunningOnAFiber();
    return echo(request);
  });
  Client client(server.port());
  const auto answer = SendAfterContinue(client, PostHead(5, "Expect: 100-continue\r\n"), "hello");
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(answer->body, "hello");
  EXPECT_TRUE(on_a_fiber);
}

TEST(ServerFiberTest, AClientGoneMidBodyFailsTheFibersReadAndOthersGoOn) {
  std::promise<Status> read_outcome;
  std::atomic<bool> on_a_fiber{false};
  TestServer server(BodyFiberOptions(), [&](http::Request& request) {
    if (request.method == "GET") return TextResponse(200, "still here");
    on_a_fiber = RunningOnAFiber();
    auto body = http::ReadAll(*request.body, 1024);
    read_outcome.set_value(body.status());
    return TextResponse(200, "unexpected");
  });
  {
    Client leaving(server.port());
    ASSERT_TRUE(leaving.Send(PostHead(10) + "half"));
    ASSERT_TRUE(leaving.WaitAcknowledged(5s));
  }
  auto outcome = read_outcome.get_future();
  ASSERT_EQ(outcome.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(outcome.get().code(), Code::kBadRequest);
  EXPECT_TRUE(on_a_fiber);
  Client next(server.port());
  ASSERT_TRUE(next.Send(Get("/next")));
  const auto answer = next.ReadResponse();
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->body, "still here");
}

TEST(RaiseOpenFileLimitTest, RaisesTheSoftLimitToTheHardLimit) {
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  const rlim_t hard = limit.rlim_max;
  limit.rlim_cur = std::min<rlim_t>(hard, 512);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  EXPECT_EQ(RaiseOpenFileLimit(), hard);
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  EXPECT_EQ(limit.rlim_cur, hard);
}

}  // namespace
}  // namespace imgsvc::server
