#include "fake_runtime_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json.hpp>
#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string_view>
#include <thread>

namespace imgsvc::testing {
// The support library is unity-built: helpers live in a namespace of their own.
namespace fake_runtime_api_detail {

namespace http = boost::beast::http;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr std::string_view kRuntimePath = "/2018-06-01/runtime";
constexpr std::string_view kInvocationPath = "/2018-06-01/runtime/invocation/";
// Bodies are read whole before the size check, as Lambda does; beyond this
// the sender is broken, not testing a limit.
constexpr std::uint64_t kReadableBody = 64u << 20;

std::string LowerCase(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

struct Request {
  std::string method;
  std::string path;
  Headers headers;  // names lower-cased
  std::string body;
  bool keep_alive = true;

  std::string Header(std::string_view name) const {
    const std::string wanted = LowerCase(name);
    for (const auto& [key, value] : headers) {
      if (key == wanted) return value;
    }
    return {};
  }
};

struct Reply {
  int status = 200;
  Headers headers;
  std::string body;
};

Reply JsonReply(int status, std::string body) {
  return Reply{.status = status, .headers = {{"Content-Type", "application/json"}}, .body = std::move(body)};
}

Reply Accepted() { return JsonReply(202, R"({"status":"OK"})"); }

Reply ErrorReply(int status, std::string_view type, std::string_view message) {
  boost::json::object document;
  document["errorMessage"] = message;
  document["errorType"] = type;
  return JsonReply(status, boost::json::serialize(document));
}

Reply InvalidRequestId() { return ErrorReply(400, "InvalidRequestID", "Invalid request ID"); }

Reply InvalidStateTransition(std::string_view from, std::string_view to) {
  return ErrorReply(403, "InvalidStateTransition",
                    "State transition from " + std::string(from) + " to " + std::string(to) +
                        " failed for runtime. Error: State transition is not allowed");
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Request Entity Too Large";
    default: return "Internal Server Error";
  }
}

std::string Serialize(const Reply& reply, bool keep_alive) {
  std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " " + ReasonPhrase(reply.status) + "\r\n";
  for (const auto& [name, value] : reply.headers) out += name + ": " + value + "\r\n";
  out += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n";
  if (!keep_alive) out += "Connection: close\r\n";
  out += "\r\n";
  out += reply.body;
  return out;
}

bool SendEverything(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(sent));
  }
  return true;
}

// The next request on `fd` (bytes beyond it stay in `pending`), or nullopt
// when the peer closes, the fake shuts the socket down, or the bytes are not
// HTTP.
std::optional<Request> ReadRequest(int fd, std::string& pending) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(kReadableBody);
  parser.header_limit(64 * 1024);
  parser.eager(true);
  while (!parser.is_done()) {
    if (!pending.empty()) {
      boost::system::error_code error;
      const std::size_t used = parser.put(boost::asio::buffer(pending.data(), pending.size()), error);
      pending.erase(0, used);
      if (error && error != http::error::need_more) return std::nullopt;
      if (!error && used > 0) continue;
    }
    char buffer[64 * 1024];
    const ssize_t received = ::recv(fd, buffer, sizeof buffer, 0);
    if (received < 0 && errno == EINTR) continue;
    if (received <= 0) return std::nullopt;
    pending.append(buffer, static_cast<std::size_t>(received));
  }
  http::request<http::string_body>& message = parser.get();
  Request request;
  request.method = std::string(message.method_string());
  const std::string_view target = message.target();
  request.path = std::string(target.substr(0, target.find('?')));
  for (const auto& field : message) {
    request.headers.emplace_back(LowerCase(field.name_string()), std::string(field.value()));
  }
  request.body = std::move(message.body());
  request.keep_alive = message.keep_alive();
  return request;
}

std::string Hex(std::uint64_t value, int digits) {
  char text[17];
  std::snprintf(text, sizeof text, "%0*llx", digits, static_cast<unsigned long long>(value));
  return std::string(text).substr(0, static_cast<std::size_t>(digits));
}

std::int64_t EpochMs(std::chrono::system_clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

}  // namespace fake_runtime_api_detail

namespace detail = fake_runtime_api_detail;

struct FakeRuntimeApi::Impl {
  enum class State { kInFlight, kAnswered, kFailedByLambda };

  FakeRuntimeOptions options;
  int listen_fd = -1;
  std::uint16_t port = 0;

  mutable std::mutex mutex;
  // One per kind of change, so that a change wakes only who waits for it: a
  // benchmark's cold start must not share two vCPUs with waiters that check
  // and sleep again.
  mutable std::condition_variable queued;       // an event was enqueued
  mutable std::condition_variable next_called;  // a /next arrived
  mutable std::condition_variable posted;       // a POST was recorded
  bool shut_down = false;
  std::deque<FakeEvent> queue;
  std::map<std::string, State> invocations;  // handed out by /next
  std::map<std::string, InvocationOutcome> outcomes;
  std::vector<RuntimePost> posts;
  std::vector<std::chrono::steady_clock::time_point> next_call_times;
  std::uint64_t ids_issued = 0;
  std::mt19937_64 random{std::random_device{}()};
  std::set<int> open_connections;
  std::vector<std::thread> threads;
  int waiting_in_accept = 0;

  // Needs `mutex` held.
  void StartAccepter();
  void AcceptAndServe();
  void Serve(int fd);
  // nullopt: close the connection without an answer.
  std::optional<detail::Reply> Route(const detail::Request& request);
  std::optional<detail::Reply> Next();
  detail::Reply Post(const detail::Request& request, RuntimePost::Kind kind, std::string request_id);
  // Both need `mutex` held.
  std::string NewRequestId();
  std::string NewTraceId();
};

void FakeRuntimeApi::Impl::StartAccepter() {
  ++waiting_in_accept;
  threads.emplace_back([this] { AcceptAndServe(); });
}

// A connection is served by the thread that accepted it, and a thread that
// takes the last waiting accept first starts another: a connect finds a
// thread already waiting for it, where starting a thread per connection put
// 0.15 ms of thread start into the cold starts bench/lambda_cold times. Two
// wait from the start, so that a function's one connection starts none.
void FakeRuntimeApi::Impl::AcceptAndServe() {
  for (;;) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0 && errno == EINTR) continue;
    {
      std::lock_guard lock(mutex);
      --waiting_in_accept;
      if (fd < 0 || shut_down) {
        if (fd >= 0) ::close(fd);
        return;
      }
      open_connections.insert(fd);
      if (waiting_in_accept == 0) StartAccepter();
    }
    Serve(fd);
    std::lock_guard lock(mutex);
    if (shut_down) return;
    ++waiting_in_accept;
  }
}

void FakeRuntimeApi::Impl::Serve(int fd) {
  std::string pending;
  for (;;) {
    std::optional<detail::Request> request = detail::ReadRequest(fd, pending);
    if (!request) break;
    std::optional<detail::Reply> reply = Route(*request);
    if (!reply || !detail::SendEverything(fd, detail::Serialize(*reply, request->keep_alive))) break;
    if (!request->keep_alive) break;
  }
  // Closed under the lock so Shutdown() never touches a reused descriptor.
  std::lock_guard lock(mutex);
  open_connections.erase(fd);
  ::close(fd);
}

std::optional<detail::Reply> FakeRuntimeApi::Impl::Route(const detail::Request& request) {
  const std::string& path = request.path;
  const bool post = request.method == "POST";
  if (path == std::string(detail::kRuntimePath) + "/invocation/next") {
    if (request.method != "GET") return detail::Reply{.status = 405, .headers = {}, .body = {}};
    return Next();
  }
  if (path == std::string(detail::kRuntimePath) + "/init/error") {
    if (!post) return detail::Reply{.status = 405, .headers = {}, .body = {}};
    return Post(request, RuntimePost::Kind::kInitError, "");
  }
  if (path.starts_with(detail::kInvocationPath)) {
    const std::string_view rest = std::string_view(path).substr(detail::kInvocationPath.size());
    const std::size_t slash = rest.find('/');
    if (slash != std::string_view::npos && slash > 0) {
      const std::string request_id(rest.substr(0, slash));
      const std::string_view action = rest.substr(slash + 1);
      if (action == "response" || action == "error") {
        if (!post) return detail::Reply{.status = 405, .headers = {}, .body = {}};
        return Post(request, action == "response" ? RuntimePost::Kind::kResponse : RuntimePost::Kind::kError,
                    request_id);
      }
    }
  }
  return detail::Reply{.status = 404, .headers = {{"Content-Type", "text/plain"}}, .body = "404 page not found\n"};
}

std::optional<detail::Reply> FakeRuntimeApi::Impl::Next() {
  std::unique_lock lock(mutex);
  next_call_times.push_back(std::chrono::steady_clock::now());
  next_called.notify_all();
  queued.wait(lock, [&] { return shut_down || !queue.empty(); });
  if (shut_down) return std::nullopt;
  FakeEvent event = std::move(queue.front());
  queue.pop_front();
  invocations[event.request_id] = State::kInFlight;

  const auto deadline =
      event.deadline.value_or(std::chrono::system_clock::now() + options.function_timeout);
  detail::Headers headers = {
      {"Content-Type", "application/json"},
      {"Lambda-Runtime-Aws-Request-Id", event.request_id},
      {"Lambda-Runtime-Deadline-Ms", std::to_string(detail::EpochMs(deadline))},
      {"Lambda-Runtime-Invoked-Function-Arn",
       event.function_arn.empty() ? options.function_arn : event.function_arn},
      {"Lambda-Runtime-Trace-Id", event.trace_id.empty() ? NewTraceId() : event.trace_id},
  };
  if (!event.client_context.empty()) headers.emplace_back("Lambda-Runtime-Client-Context", event.client_context);
  if (!event.cognito_identity.empty()) {
    headers.emplace_back("Lambda-Runtime-Cognito-Identity", event.cognito_identity);
  }
  for (const auto& override_header : event.header_overrides) {
    const std::string overridden = detail::LowerCase(override_header.first);
    std::erase_if(headers, [&](const auto& header) { return detail::LowerCase(header.first) == overridden; });
    if (!override_header.second.empty()) headers.emplace_back(override_header.first, override_header.second);
  }
  return detail::Reply{.status = 200, .headers = std::move(headers), .body = std::move(event.event)};
}

detail::Reply FakeRuntimeApi::Impl::Post(const detail::Request& request, RuntimePost::Kind kind,
                                         std::string request_id) {
  RuntimePost post{.kind = kind,
                   .request_id = std::move(request_id),
                   .headers = request.headers,
                   .body = request.body,
                   .answered = 0};
  std::lock_guard lock(mutex);
  detail::Reply reply;
  if (kind == RuntimePost::Kind::kInitError) {
    reply = !next_call_times.empty() ? detail::InvalidStateTransition("Ready", "InitError") : detail::Accepted();
  } else {
    const auto found = invocations.find(post.request_id);
    const std::string error_type = request.Header("Lambda-Runtime-Function-Error-Type");
    if (found == invocations.end() || found->second == State::kAnswered) {
      reply = detail::InvalidRequestId();
    } else if (found->second == State::kFailedByLambda) {
      reply = detail::InvalidStateTransition("InvocationErrorResponse",
                                             kind == RuntimePost::Kind::kResponse ? "InvocationResponse"
                                                                                  : "InvocationErrorResponse");
    } else if (kind == RuntimePost::Kind::kResponse && request.body.size() > options.max_response_bytes) {
      reply = detail::ErrorReply(413, "RequestEntityTooLarge",
                                 "Exceeded maximum allowed payload size (" +
                                     std::to_string(options.max_response_bytes) + " bytes).");
      found->second = State::kFailedByLambda;
      boost::json::object document;
      document["errorMessage"] = "Response payload size (" + std::to_string(request.body.size()) +
                                 " bytes) exceeded maximum allowed payload size (" +
                                 std::to_string(options.max_response_bytes) + " bytes).";
      document["errorType"] = "Function.ResponseSizeTooLarge";
      outcomes[post.request_id] = InvocationOutcome{.request_id = post.request_id,
                                                    .ok = false,
                                                    .payload = boost::json::serialize(document),
                                                    .error_type = "Function.ResponseSizeTooLarge"};
    } else {
      reply = detail::Accepted();
      found->second = State::kAnswered;
      const bool ok = kind == RuntimePost::Kind::kResponse;
      outcomes[post.request_id] = InvocationOutcome{
          .request_id = post.request_id, .ok = ok, .payload = request.body, .error_type = ok ? "" : error_type};
    }
  }
  post.answered = reply.status;
  posts.push_back(std::move(post));
  posted.notify_all();
  return reply;
}

std::string FakeRuntimeApi::Impl::NewRequestId() {
  // Random like Lambda's UUIDs, with a counter in the last group so ids never repeat.
  const std::uint64_t high = random();
  return detail::Hex(high >> 32, 8) + "-" + detail::Hex((high >> 16) & 0xffff, 4) + "-4" +
         detail::Hex(high & 0xfff, 3) + "-" + detail::Hex(0x8000 | (random() & 0x3fff), 4) + "-" +
         detail::Hex(++ids_issued, 12);
}

std::string FakeRuntimeApi::Impl::NewTraceId() {
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  return "Root=1-" + detail::Hex(static_cast<std::uint64_t>(seconds.count()), 8) + "-" +
         detail::Hex(random(), 8) + detail::Hex(random(), 16) + ";Parent=" + detail::Hex(random(), 16) +
         ";Sampled=1";
}

std::optional<std::string> RuntimePost::header(const std::string& name) const {
  const std::string wanted = detail::LowerCase(name);
  for (const auto& [key, value] : headers) {
    if (key == wanted) return value;
  }
  return std::nullopt;
}

StatusOr<std::unique_ptr<FakeRuntimeApi>> FakeRuntimeApi::Start(FakeRuntimeOptions options) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status(Code::kInternal, std::string("socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string error = std::strerror(errno);
    ::close(fd);
    return Status(Code::kInternal, "cannot listen on loopback: " + error);
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->listen_fd = fd;
  impl->port = ntohs(address.sin_port);
  {
    std::lock_guard lock(impl->mutex);
    impl->StartAccepter();
    impl->StartAccepter();
  }
  return std::unique_ptr<FakeRuntimeApi>(new FakeRuntimeApi(std::move(impl)));
}

FakeRuntimeApi::FakeRuntimeApi(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FakeRuntimeApi::~FakeRuntimeApi() { Shutdown(); }

std::string FakeRuntimeApi::address() const { return "127.0.0.1:" + std::to_string(impl_->port); }

std::string FakeRuntimeApi::Enqueue(FakeEvent event) {
  std::lock_guard lock(impl_->mutex);
  if (event.request_id.empty()) event.request_id = impl_->NewRequestId();
  std::string request_id = event.request_id;
  impl_->queue.push_back(std::move(event));
  impl_->queued.notify_all();
  return request_id;
}

std::optional<InvocationOutcome> FakeRuntimeApi::WaitForOutcome(const std::string& request_id,
                                                                std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  if (!impl_->posted.wait_for(lock, timeout, [&] { return impl_->outcomes.contains(request_id); })) {
    return std::nullopt;
  }
  return impl_->outcomes.at(request_id);
}

std::optional<RuntimePost> FakeRuntimeApi::WaitForInitError(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  const auto is_init_error = [](const RuntimePost& post) { return post.kind == RuntimePost::Kind::kInitError; };
  if (!impl_->posted.wait_for(lock, timeout, [&] {
        return std::any_of(impl_->posts.begin(), impl_->posts.end(), is_init_error);
      })) {
    return std::nullopt;
  }
  return *std::find_if(impl_->posts.begin(), impl_->posts.end(), is_init_error);
}

bool FakeRuntimeApi::WaitForNextCalls(std::size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->next_called.wait_for(lock, timeout, [&] { return impl_->next_call_times.size() >= count; });
}

std::vector<std::chrono::steady_clock::time_point> FakeRuntimeApi::NextCallTimes() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->next_call_times;
}

std::vector<RuntimePost> FakeRuntimeApi::Posts() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->posts;
}

void FakeRuntimeApi::Shutdown() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->shut_down) return;
    impl_->shut_down = true;
    // Wakes the threads in accept (Linux fails a pending accept) and refuses new connects.
    ::shutdown(impl_->listen_fd, SHUT_RDWR);
    for (int fd : impl_->open_connections) ::shutdown(fd, SHUT_RDWR);
    impl_->queued.notify_all();
    // No thread starts once shut_down is set.
    threads = std::move(impl_->threads);
  }
  for (std::thread& thread : threads) thread.join();
  ::close(impl_->listen_fd);
}

}  // namespace imgsvc::testing
