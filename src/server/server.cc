#include "server/server.h"
#include "server/worker_pool.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>

#include "core/log.h"
#include "server/fiber.h"

namespace imgsvc::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;

// File chunks, large body reads and discarded bodies move in pieces of this
// size, so memory per connection stays flat whatever the payload size.
constexpr std::size_t kIoChunk = 64 * 1024;
// Most requests fit in one read of this size; the buffer grows for larger headers.
constexpr std::size_t kRequestReadSize = 1024;
// Buffers grown beyond this (uploads, big headers) are freed before a
// connection goes idle, so thousands of idle connections stay cheap.
constexpr std::size_t kIdleBufferLimit = 8 * 1024;
// A closing connection keeps reading (and discarding) for at most this long,
// so a client still sending receives our response instead of a reset.
constexpr auto kLingerTime = std::chrono::seconds(2);
// How often an io thread winding down looks whether its fibers are done.
constexpr auto kWindDownCheck = std::chrono::milliseconds(10);
// Accept failures such as EMFILE would otherwise spin the accept loop.
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(50);

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr std::string_view kHeadEnd = "\r\n";
constexpr std::string_view kHeadEndKeepAlive = "connection: keep-alive\r\n\r\n";
constexpr std::string_view kHeadEndClose = "connection: close\r\n\r\n";

// Which io thread this is (0 runs on the server's thread), for its share of
// the fiber lanes' bounds.
thread_local std::size_t t_io_thread_index = 0;

// "date: <IMF-fixdate>\r\n", formatted at most once a second per thread.
// The calendar comes from <chrono>, not gmtime_r: glibc loads the time zone
// (/etc/localtime, seven syscalls) at its first call even to convert to UTC,
// and that first call is a cold start's first response.
std::string_view DateLine() {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  thread_local std::time_t cached_second = -1;
  thread_local char line[48];
  thread_local std::size_t length = 0;
  const std::time_t now = std::time(nullptr);
  if (now != cached_second) {
    const std::chrono::sys_seconds instant{std::chrono::seconds(now)};
    const std::chrono::sys_days day = std::chrono::floor<std::chrono::days>(instant);
    const std::chrono::year_month_day date{day};
    const std::chrono::hh_mm_ss time_of_day{instant - day};
    const int written = std::snprintf(
        line, sizeof(line), "date: %s, %02u %s %04d %02d:%02d:%02d GMT\r\n",
        kDays[std::chrono::weekday(day).c_encoding()], static_cast<unsigned>(date.day()),
        kMonths[static_cast<unsigned>(date.month()) - 1], static_cast<int>(date.year()),
        static_cast<int>(time_of_day.hours().count()), static_cast<int>(time_of_day.minutes().count()),
        static_cast<int>(time_of_day.seconds().count()));
    length = written > 0 ? static_cast<std::size_t>(written) : 0;
    cached_second = now;
  }
  return {line, length};
}

// Framing headers are ours to set; a CR or LF would let a value split the response.
bool ShouldSendHeader(const http::Header& header) {
  if (beast::iequals(header.name, "content-length") || beast::iequals(header.name, "connection") ||
      beast::iequals(header.name, "transfer-encoding")) {
    return false;
  }
  // A loop, not find_first_of, which makes one memchr call per character.
  const auto splits = [](std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
  };
  return !splits(header.name) && !splits(header.value);
}

// Status line and headers, without the connection header and the final CRLF
// (those depend on connection state only the io side knows).
void SerializeHead(const http::Response& response, std::optional<std::uint64_t> content_length,
                   std::string& out) {
  const int status = response.status >= 100 && response.status <= 999 ? response.status : 500;
  out.clear();
  out.append("HTTP/1.1 ");
  log::AppendDecimal(out, static_cast<std::uint64_t>(status));
  out.push_back(' ');
  const bhttp::status known = bhttp::int_to_status(static_cast<unsigned>(status));
  if (known != bhttp::status::unknown) out.append(bhttp::obsolete_reason(known));
  out.append("\r\n");
  for (const http::Header& header : response.headers) {
    if (!ShouldSendHeader(header)) continue;
    out.append(header.name).append(": ").append(header.value).append("\r\n");
  }
  if (content_length) {
    out.append("content-length: ");
    log::AppendDecimal(out, *content_length);
    out.append("\r\n");
  }
  out.append(DateLine());
}

// Parse errors of the request head (400), as opposed to the connection
// ending or timing out (closed silently).
bool IsMalformed(const ErrorCode& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
         ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
}

class Session;

// Everything the listener, the sessions and shutdown share.
class Core {
 public:
  Core(ServerOptions options, Handler handler, ErrorResponder error_responder)
      : options_(Normalized(std::move(options))),
        handler_(std::move(handler)),
        error_responder_(std::move(error_responder)),
        workers_(options_.worker_threads) {
    // Every context runs until StopIo, sessions or none: while the server
    // drains, one may be idle while another still finishes requests.
    io_work_.push_back(asio::make_work_guard(ioc_));
    for (std::size_t i = 1; i < options_.io_threads; ++i) {
      more_iocs_.push_back(std::make_unique<asio::io_context>(1));
      io_work_.push_back(asio::make_work_guard(*more_iocs_.back()));
    }
  }
  ~Core() { io_stopped_ = true; }
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  Status Listen();
  std::uint16_t port() const { return port_; }
  void Run(std::function<void()> on_stopping);
  void Stop() {
    asio::post(server_strand_, [this] { BeginStop(); });
  }

  const ServerOptions& options() const { return options_; }
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  bool grace_over() const { return grace_over_.load(std::memory_order_acquire); }
  WorkerPool& workers() { return workers_; }
  // A lane's share of its bound on the calling io thread (fibers without a
  // body; bytes of bodies): the total split as evenly as whole numbers
  // allow, at least one each.
  std::uint64_t fiber_bound(FiberLane lane) const {
    const std::uint64_t total =
        lane == FiberLane::kBodiless ? options_.max_fibers_without_body : options_.max_fiber_body_bytes_in_flight;
    const std::uint64_t share = total / options_.io_threads + (t_io_thread_index < total % options_.io_threads ? 1 : 0);
    return std::max<std::uint64_t>(1, share);
  }
  // What a fiber of `lane` is charged against that bound (ServerOptions).
  std::uint64_t fiber_weight(FiberLane lane, std::uint64_t body_bytes) const {
    if (lane == FiberLane::kBodiless) return 1;
    const std::uint64_t least = options_.max_fiber_body_bytes_in_flight / options_.max_fibers_with_body;
    return std::max({body_bytes, least, std::uint64_t{1}});
  }
  http::Response Handle(http::Request& request);
  http::Response ErrorResponse(int status, std::string_view detail);

  void Register(Session& session);
  void Unregister(Session& session);

 private:
  static ServerOptions Normalized(ServerOptions options) {
    options.io_threads = std::max<std::size_t>(options.io_threads, 1);
    options.worker_threads = std::max<std::size_t>(options.worker_threads, 1);
    options.max_fibers_with_body = std::max<std::size_t>(options.max_fibers_with_body, 1);
    return options;
  }
  void Accept();
  void OnAccept(const ErrorCode& ec, tcp::socket socket);
  void BeginStop();
  void MaybeFinish();
  void StopIo();
  void WindDown(asio::io_context& context, std::chrono::steady_clock::time_point deadline);
  std::vector<std::shared_ptr<Session>> LiveSessions();

  const ServerOptions options_;
  const Handler handler_;
  const ErrorResponder error_responder_;
  // Declared before the io_context: sessions destroyed with it unregister here.
  std::mutex sessions_mu_;
  Session* sessions_ = nullptr;  // intrusive list of live sessions
  std::atomic<std::size_t> connections_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> grace_over_{false};
  std::atomic<bool> io_stopped_{false};
  std::uint16_t port_ = 0;
  std::function<void()> on_stopping_;
  // One io_context per io thread, each run by its thread alone: a session
  // lives on one context, so its handlers need no strand and never contend
  // with another thread's. The first is the calling thread's and also holds
  // the acceptor, the timers and the signals. The others are declared first,
  // so they outlive it: an accept left queued in it at shutdown holds a
  // socket of another context, whose service must still exist when the
  // accept is destroyed.
  std::vector<std::unique_ptr<asio::io_context>> more_iocs_;
  asio::io_context ioc_{1};
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> io_work_;
  std::size_t next_context_ = 0;  // where the next accepted connection goes (round robin)
  // Acceptor, timers and signals are touched only from this strand.
  asio::strand<asio::io_context::executor_type> server_strand_{asio::make_strand(ioc_)};
  tcp::acceptor acceptor_{server_strand_};
  asio::steady_timer accept_retry_timer_{server_strand_};
  asio::steady_timer grace_timer_{server_strand_};
  std::optional<asio::signal_set> signals_;
  WorkerPool workers_;  // last: joined first on destruction
};

// One connection. Network I/O runs on the session's executor (its io_context,
// run by one io thread); the handler runs on a worker and pulls the
// body through Read(), which hands each read to the executor and waits.
// The thread that ran the handler then sends a response held in memory and
// starts the next request's read itself where it can (RespondAtOnce).
class Session final : public std::enable_shared_from_this<Session>, public http::BodySource {
 public:
  Session(Core& core, tcp::socket socket)
      : core_(core),
        stream_(std::move(socket)),
        buffer_(core.options().max_header_bytes + kIoChunk) {
    core_.Register(*this);
  }
  ~Session() override {
    if (file_fd_ >= 0) ::close(file_fd_);
    core_.Unregister(*this);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  asio::any_io_executor executor() { return stream_.get_executor(); }

  void Start() {
    ErrorCode ec;
    stream_.socket().set_option(tcp::no_delay(true), ec);
    // A worker's body read takes what the socket already holds without
    // blocking (ReadBodyNow); asynchronous operations are unaffected.
    stream_.socket().non_blocking(true, ec);
    const tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_address_ = peer.address().to_string();
    buffer_.reserve(kRequestReadSize);
    ReadRequest();
  }

  // Idle connections close; busy ones finish their request with "connection:
  // close", and one whose next request has begun to arrive answers it 503.
  // An idle connection's read is cancelled rather than its socket closed:
  // a read may have taken the request's bytes already, its completion still
  // queued, and that completion then answers 503 instead of finding the
  // socket gone. A read still waiting ends as aborted and closes.
  void OnServerStopping() {
    std::lock_guard lock(worker_io_mu_);
    if (phase_ == Phase::kAwaitingRequest && !RequestUnderWay()) {
      ErrorCode ignored;
      stream_.socket().cancel(ignored);
    }
  }

  // After the io threads stopped for good: wakes a worker waiting on a body
  // read that will never complete, and drops the socket.
  void Abandon() {
    {
      std::lock_guard lock(body_mu_);
      abandoned_ = true;
    }
    body_cv_.notify_all();
    std::lock_guard lock(worker_io_mu_);
    ErrorCode ignored;
    stream_.socket().close(ignored);
  }

  StatusOr<std::size_t> Read(std::span<std::byte> out) override;

 private:
  friend class Core;
  enum class Phase { kAwaitingRequest, kBusy, kClosing };
  // What follows a written response.
  enum class After { kNextRequest, kDrainBody, kClose, kLinger };

  void ReadRequest();
  void OnIdleRead(const ErrorCode& ec, std::size_t bytes);
  void ReadHeader();
  void OnHeader(const ErrorCode& ec);
  void SendError(int status, std::string_view detail);
  void RunHandler();
  bool BodyFitsAFiber();
  void HandleOnFiber(FiberLane lane, std::uint64_t weight);
  void BuildRequest();
  void PrepareResponse();
  bool RespondAtOnce();
  // Sets after_ and gathers the response's first bytes; false when a file
  // body cannot be read.
  bool StartResponse(std::array<asio::const_buffer, 3>& buffers);
  void WriteResponse();
  bool ReadFileChunk(asio::const_buffer& chunk);
  void OnWritten(const ErrorCode& ec);
  void FinishResponse();
  void NextRequest();
  void DrainBody();
  void OnDrained(ErrorCode ec);
  StatusOr<std::size_t> ReadOnFiber(std::span<std::byte> out);
  bool WriteOnFiber(std::string_view data);
  bool ReadBodyNow();
  void ReserveBodyBuffer();
  void LendBodyOut();
  void StartBodyRead();
  void ContinueBodyRead();
  void ArmBodyTimer();
  void OnBodyRead(ErrorCode ec);
  // The outcome of one body read into body_out_; false: only framing arrived.
  bool SettleBodyRead(ErrorCode ec);
  void FinishBodyRead(Code code, const char* message);
  void SetBodyOutcome(Code code, const char* message);
  // Bytes of a request have arrived: in the read buffer, or still in the
  // socket. Bytes a read has taken whose completion has not run yet are in
  // neither.
  bool RequestUnderWay();
  void CloseGracefully();
  void StartLinger();
  void Linger();
  int UnacknowledgedBytes();
  void Close();
  char* Scratch() {
    if (!scratch_) scratch_ = std::make_unique_for_overwrite<char[]>(kIoChunk);
    return scratch_.get();
  }

  Core& core_;
  Session* prev_ = nullptr;  // Core's registry links, guarded by its mutex
  Session* next_ = nullptr;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::buffer_body>> parser_;
  std::string remote_address_;
  Phase phase_ = Phase::kAwaitingRequest;
  After after_ = After::kNextRequest;
  bool served_any_ = false;

  // The current request. Set on the io side before the handler is posted and
  // read there only after the handler finished (the posts order the accesses).
  bool keep_alive_ = false;
  bool http10_ = false;
  bool is_head_ = false;
  bool expect_continue_ = false;
  bool continue_sent_ = false;
  bool body_failed_ = false;
  http::Request request_;
  http::Response response_;
  std::string head_;
  bool send_body_ = false;
  int file_fd_ = -1;
  std::uint64_t file_offset_ = 0;
  std::uint64_t file_remaining_ = 0;
  std::uint64_t discarded_ = 0;
  std::unique_ptr<char[]> scratch_;  // file chunks and discarded bytes; freed when idle

  // Held by the thread that writes its response and starts the next read
  // (RespondAtOnce), and by what the server posts to every session
  // (OnServerStopping, Abandon), which may arrive meanwhile.
  std::mutex worker_io_mu_;

  // Hand-off of one body read between the worker and the io side.
  std::mutex body_mu_;
  std::condition_variable body_cv_;
  bool body_pending_ = false;
  bool body_done_ = false;
  bool abandoned_ = false;
  Code body_error_ = Code::kOk;
  const char* body_error_message_ = "";
  std::span<std::byte> body_out_;
  std::size_t body_got_ = 0;

  // A worker's body read on the io side: its own timer rather than the
  // stream's timeout, which would close the socket before the 408 is sent.
  std::optional<asio::steady_timer> body_timer_;
  std::uint64_t body_reads_ = 0;  // which read the timer's wait is for
  bool body_read_pending_ = false;
  bool body_timed_out_ = false;
};

// --- request head ---------------------------------------------------------

void Session::ReadRequest() {
  phase_ = Phase::kAwaitingRequest;
  // While stopping, a request that has begun to arrive is read and answered
  // 503 (OnHeader): the client then knows it was not served.
  if (core_.stopping() && !RequestUnderWay()) return CloseGracefully();
  keep_alive_ = http10_ = is_head_ = expect_continue_ = continue_sent_ = body_failed_ = false;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(
      std::min<std::size_t>(core_.options().max_header_bytes, UINT32_MAX)));
  parser_->body_limit(boost::none);  // handlers enforce their own limits
  if (buffer_.size() > 0 || !served_any_) return ReadHeader();

  // Keep-alive: wait for the next request under the idle timeout, then give
  // its head header_timeout, so a trickling client cannot stretch the idle wait.
  if (buffer_.capacity() > kIdleBufferLimit) buffer_.shrink_to_fit();
  scratch_.reset();
  stream_.expires_after(core_.options().idle_timeout);
  stream_.async_read_some(
      buffer_.prepare(std::max(kRequestReadSize, buffer_.capacity())),
      [self = shared_from_this()](const ErrorCode& ec, std::size_t bytes) { self->OnIdleRead(ec, bytes); });
}

void Session::OnIdleRead(const ErrorCode& ec, std::size_t bytes) {
  if (ec) return Close();
  buffer_.commit(bytes);
  ReadHeader();
}

void Session::ReadHeader() {
  stream_.expires_after(core_.options().header_timeout);
  bhttp::async_read_header(stream_, buffer_, *parser_,
                           [self = shared_from_this()](const ErrorCode& ec, std::size_t) { self->OnHeader(ec); });
}

void Session::OnHeader(const ErrorCode& ec) {
  if (ec) {
    if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
      return SendError(431, "Request header fields too large");
    }
    if (IsMalformed(ec)) return SendError(400, "Malformed request");
    return Close();
  }
  phase_ = Phase::kBusy;
  const auto& message = parser_->get();
  http10_ = message.version() < 11;
  is_head_ = message.method() == bhttp::verb::head;
  keep_alive_ = message.keep_alive();
  expect_continue_ = !http10_ && beast::iequals(message[bhttp::field::expect], "100-continue");
  if (!http10_ && message.find(bhttp::field::host) == message.end()) {
    return SendError(400, "Missing Host header");
  }
  if (core_.stopping()) return SendError(503, "Server is shutting down");

  const auto& answer_inline = core_.options().answer_inline;
  if (parser_->is_done() && answer_inline && answer_inline(message.method_string(), message.target())) {
    RunHandler();  // on this io thread: the request has no body to wait for
    if (RespondAtOnce()) return;
    return WriteResponse();
  }
  const auto& on_fiber = core_.options().answer_on_fiber;
  if (on_fiber && BodyFitsAFiber() && on_fiber(message.method_string(), message.target())) {
    const FiberLane lane = parser_->is_done() ? FiberLane::kBodiless : FiberLane::kWithBody;
    const std::uint64_t weight = core_.fiber_weight(lane, parser_->content_length_remaining().value_or(0));
    const bool now =
        TakeFiberSlotOrQueue(lane, core_.fiber_bound(lane), weight, [self = shared_from_this(), lane, weight] {
          Session& session = *self;
          asio::post(session.executor(), [self = std::move(self), lane, weight] { self->HandleOnFiber(lane, weight); });
        });
    if (now) HandleOnFiber(lane, weight);
    return;
  }
  core_.workers().Post([self = shared_from_this()]() mutable {
    self->RunHandler();
    if (self->RespondAtOnce()) return;
    Session& session = *self;
    asio::post(session.executor(), [self = std::move(self)] { self->WriteResponse(); });
  });
}

// No body, or one whose declared length is within the bound (a chunked body
// declares none).
bool Session::BodyFitsAFiber() {
  if (parser_->is_done()) return true;
  const auto remaining = parser_->content_length_remaining();
  return remaining && *remaining <= core_.options().max_fiber_body_bytes;
}

// On this io thread, holding a fiber slot: the handler runs on a fiber that
// parks where it would block.
void Session::HandleOnFiber(FiberLane lane, std::uint64_t weight) {
  if (core_.grace_over()) {  // a start posted before the waiting ones were dropped
    ReturnFiberSlot(lane, core_.fiber_bound(lane), weight);
    return Close();
  }
  StartFiber(executor(), core_.workers(), [self = shared_from_this()] { self->RunHandler(); },
             [self = shared_from_this(), lane, weight] {
               ReturnFiberSlot(lane, self->core_.fiber_bound(lane), weight);
               if (self->RespondAtOnce()) return;
               self->WriteResponse();
             });
}

void Session::SendError(int status, std::string_view detail) {
  phase_ = Phase::kBusy;
  keep_alive_ = false;
  response_ = core_.ErrorResponse(status, detail);
  PrepareResponse();
  WriteResponse();
}

// --- handler (worker, io thread or fiber) ---------------------------------

void Session::RunHandler() {
  BuildRequest();
  response_ = core_.Handle(request_);
  PrepareResponse();
}

void Session::BuildRequest() {
  const auto& message = parser_->get();
  request_.method.assign(message.method_string());
  const std::string_view target = message.target();
  const std::size_t question = target.find('?');
  request_.path.assign(target.substr(0, question));
  request_.query.assign(question == std::string_view::npos ? std::string_view() : target.substr(question + 1));
  request_.headers.clear();
  for (const auto& field : message) {
    http::Header& header = request_.headers.emplace_back();
    header.name.assign(field.name_string());
    for (char& c : header.name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    header.value.assign(field.value());
  }
  const auto content_length = parser_->content_length();
  request_.content_length =
      content_length ? std::optional<std::uint64_t>(*content_length) : std::nullopt;
  request_.remote_address = remote_address_;
  request_.body = this;
  std::lock_guard lock(body_mu_);
  body_done_ = parser_->is_done();
  body_error_ = Code::kOk;
}

// Opens a file body (blocking, so it belongs on the worker where possible)
// and serializes the head.
void Session::PrepareResponse() {
  std::uint64_t length = response_.body.size();
  if (response_.file) {
    file_fd_ = ::open(response_.file->path.c_str(), O_RDONLY | O_CLOEXEC);
    if (file_fd_ < 0) {
      response_ = core_.ErrorResponse(404, "File not found");
      length = response_.body.size();
    } else {
      file_offset_ = response_.file->offset;
      file_remaining_ = length = response_.file->length;
    }
  }
  const int status = response_.status;
  const bool bodiless = status < 200 || status == 204 || status == 304;
  SerializeHead(response_, bodiless ? std::nullopt : std::optional<std::uint64_t>(length), head_);
  send_body_ = !bodiless && !is_head_;
  if (!send_body_ && file_fd_ >= 0) {
    ::close(file_fd_);
    file_fd_ = -1;
  }
}

// --- response (io side) ---------------------------------------------------

bool Session::StartResponse(std::array<asio::const_buffer, 3>& buffers) {
  bool close = !keep_alive_ || response_.close_connection || body_failed_ || core_.stopping();
  after_ = close ? After::kClose : After::kNextRequest;
  if (!body_failed_ && !parser_->is_done()) {
    // The handler answered without reading the whole body.
    const auto remaining = parser_->content_length_remaining();
    const bool never_sent_continue = expect_continue_ && !continue_sent_;
    if (close || never_sent_continue || (remaining && *remaining > core_.options().max_drain_bytes)) {
      close = true;
      after_ = After::kLinger;
    } else {
      after_ = After::kDrainBody;
    }
  }
  const std::string_view head_end = close ? kHeadEndClose : http10_ ? kHeadEndKeepAlive : kHeadEnd;
  buffers = {asio::buffer(head_), asio::buffer(head_end), asio::const_buffer()};
  if (send_body_) {
    if (file_fd_ >= 0) return ReadFileChunk(buffers[2]);
    buffers[2] = asio::buffer(response_.body);
  }
  return true;
}

void Session::WriteResponse() {
  std::array<asio::const_buffer, 3> buffers;
  if (!StartResponse(buffers)) return Close();
  stream_.expires_after(core_.options().send_timeout);
  asio::async_write(stream_, buffers,
                    [self = shared_from_this()](const ErrorCode& ec, std::size_t) { self->OnWritten(ec); });
}

// After the handler, on the thread that ran it: a response held in memory,
// on a connection that stays open, is sent from here (the socket is
// non-blocking) and the read of the next request started from here. From a
// worker, the io thread is then not woken just to do both; on the io thread,
// the write's completion does not go through its queue. Completions, like
// any, run on the io thread. False when nothing was sent: WriteResponse
// then sends the response from the io thread.
bool Session::RespondAtOnce() {
  std::lock_guard lock(worker_io_mu_);
  if (file_fd_ >= 0 || core_.stopping()) return false;
  std::array<asio::const_buffer, 3> buffers;
  if (!StartResponse(buffers) || after_ != After::kNextRequest) return false;
  ErrorCode ec;
  const std::size_t sent = stream_.socket().write_some(buffers, ec);
  if (ec) return false;
  if (sent == asio::buffer_size(buffers)) {
    FinishResponse();
    return true;
  }
  beast::buffers_suffix<std::array<asio::const_buffer, 3>> rest(buffers);
  rest.consume(sent);
  stream_.expires_after(core_.options().send_timeout);
  asio::async_write(stream_, rest,
                    [self = shared_from_this()](const ErrorCode& write_ec, std::size_t) { self->OnWritten(write_ec); });
  return true;
}

bool Session::ReadFileChunk(asio::const_buffer& chunk) {
  const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(kIoChunk, file_remaining_));
  if (want == 0) {
    chunk = asio::const_buffer();
    return true;
  }
  char* data = Scratch();
  ssize_t got;
  do {
    got = ::pread(file_fd_, data, want, static_cast<off_t>(file_offset_));
  } while (got < 0 && errno == EINTR);
  // The length was promised in content-length; a shorter file cannot be
  // reported any more, only cut off.
  if (got <= 0) return false;
  file_offset_ += static_cast<std::uint64_t>(got);
  file_remaining_ -= static_cast<std::uint64_t>(got);
  chunk = asio::buffer(data, static_cast<std::size_t>(got));
  return true;
}

void Session::OnWritten(const ErrorCode& ec) {
  if (ec) return Close();
  if (file_fd_ >= 0 && file_remaining_ > 0) {
    asio::const_buffer chunk;
    if (!ReadFileChunk(chunk)) return Close();
    stream_.expires_after(core_.options().send_timeout);
    asio::async_write(stream_, chunk,
                      [self = shared_from_this()](const ErrorCode& write_ec, std::size_t) { self->OnWritten(write_ec); });
    return;
  }
  FinishResponse();
}

void Session::FinishResponse() {
  if (file_fd_ >= 0) {
    ::close(file_fd_);
    file_fd_ = -1;
  }
  response_ = http::Response();  // frees the body before the connection idles
  switch (after_) {
    case After::kNextRequest:
      return NextRequest();
    case After::kDrainBody:
      discarded_ = 0;
      return DrainBody();
    case After::kClose:
      return CloseGracefully();
    case After::kLinger:
      return StartLinger();
  }
}

void Session::NextRequest() {
  served_any_ = true;
  ReadRequest();
}

// Reads and discards the rest of a small unread body so the connection can
// carry the next request.
void Session::DrainBody() {
  auto& body = parser_->get().body();
  body.data = Scratch();
  body.size = kIoChunk;
  stream_.expires_after(core_.options().body_read_timeout);
  bhttp::async_read_some(stream_, buffer_, *parser_,
                         [self = shared_from_this()](const ErrorCode& ec, std::size_t) { self->OnDrained(ec); });
}

void Session::OnDrained(ErrorCode ec) {
  auto& body = parser_->get().body();
  discarded_ += kIoChunk - body.size;
  body.data = nullptr;
  if (ec == bhttp::error::need_buffer) ec = {};
  if (ec) return Close();
  if (parser_->is_done()) return NextRequest();
  // A chunked body declares no length; give up on the connection beyond the budget.
  if (discarded_ > core_.options().max_drain_bytes) return StartLinger();
  DrainBody();
}

// --- request body (worker <-> io) -----------------------------------------

StatusOr<std::size_t> Session::Read(std::span<std::byte> out) {
  if (out.empty()) return std::size_t{0};
  // Even a request chosen for a fiber runs on a worker when no stack could be had.
  if (RunningOnAFiber()) return ReadOnFiber(out);
  std::unique_lock lock(body_mu_);
  if (body_error_ != Code::kOk) return Status(body_error_, body_error_message_);
  if (body_done_) return std::size_t{0};
  if (abandoned_) return Status(Code::kUnavailable, "Server is shutting down");
  body_out_ = out;
  body_got_ = 0;
  if (!ReadBodyNow()) {
    body_pending_ = true;
    lock.unlock();
    // The handler holds the session alive while it waits here.
    asio::post(executor(), [this] { StartBodyRead(); });
    lock.lock();
    body_cv_.wait(lock, [this] { return !body_pending_ || abandoned_; });
    if (body_pending_) return Status(Code::kUnavailable, "Server is shutting down");
  }
  if (body_error_ != Code::kOk) return Status(body_error_, body_error_message_);
  return body_got_;
}

// On a fiber of this io thread, which leaves the session to it meanwhile (no
// operation is pending on it during the handler): reads what has arrived,
// and parks the fiber until more does, for at most body_read_timeout each
// time. No lock is held across a park (fiber.h).
StatusOr<std::size_t> Session::ReadOnFiber(std::span<std::byte> out) {
  {
    std::lock_guard lock(body_mu_);
    if (body_error_ != Code::kOk) return Status(body_error_, body_error_message_);
    if (body_done_) return std::size_t{0};
  }
  const auto fail = [this](Code code, const char* message) {
    body_failed_ = true;
    std::lock_guard lock(body_mu_);
    SetBodyOutcome(code, message);
  };
  body_out_ = out;
  body_got_ = 0;
  for (;;) {
    if (expect_continue_ && !continue_sent_) {
      continue_sent_ = true;
      if (!WriteOnFiber(kContinue)) {
        // Part of the interim response may have gone: no response can follow it.
        ErrorCode ignored;
        stream_.socket().close(ignored);
        if (core_.grace_over()) {
          fail(Code::kUnavailable, "Server is shutting down");
        } else {
          fail(Code::kBadRequest, "Connection lost before the request body");
        }
        break;
      }
    }
    {
      std::lock_guard lock(body_mu_);
      if (ReadBodyNow()) break;
    }
    bool timed_out = false;
    ParkUntilReady(stream_.socket().native_handle(), POLLIN,
                   std::chrono::steady_clock::now() + core_.options().body_read_timeout, timed_out);
    if (core_.grace_over()) {
      fail(Code::kUnavailable, "Server is shutting down");
      break;
    }
    if (timed_out) {
      fail(Code::kRequestTimeout, "Timed out reading the request body");
      break;
    }
  }
  std::lock_guard lock(body_mu_);
  if (body_error_ != Code::kOk) return Status(body_error_, body_error_message_);
  return body_got_;
}

// On a fiber, which parks while the socket takes no more; false when the
// connection fails or send_timeout passes first.
bool Session::WriteOnFiber(std::string_view data) {
  while (!data.empty()) {
    ErrorCode ec;
    const std::size_t sent = stream_.socket().write_some(asio::buffer(data), ec);
    if (ec == asio::error::would_block) {
      bool timed_out = false;
      const short came = ParkUntilReady(stream_.socket().native_handle(), POLLOUT,
                                        std::chrono::steady_clock::now() + core_.options().send_timeout, timed_out);
      if (timed_out || (came & POLLOUT) == 0) return false;
      continue;
    }
    if (ec) return false;
    data.remove_prefix(sent);
  }
  return true;
}

// On the handler's thread (a worker, or this io thread's fiber), under
// body_mu_, while the io side leaves the session alone (no operation is
// pending on it during the handler, and Abandon, which closes the socket,
// takes the mutex first): takes what the buffer and the socket already hold,
// sparing a worker the two thread switches of a hand-off. False when more
// must come first: the client waits for 100 Continue, or nothing but framing
// has arrived.
bool Session::ReadBodyNow() {
  if (expect_continue_ && !continue_sent_) return false;
  ReserveBodyBuffer();
  LendBodyOut();
  ErrorCode ec;
  bhttp::read_some(stream_.socket(), buffer_, *parser_, ec);
  if (ec == asio::error::would_block) ec = {};
  return SettleBodyRead(ec);
}

// Grows the read buffer for bodies that need socket reads, so an upload
// moves in large reads rather than in the request-sized ones.
void Session::ReserveBodyBuffer() {
  const auto remaining = parser_->content_length_remaining();
  const std::size_t wanted = buffer_.size() + static_cast<std::size_t>(std::min<std::uint64_t>(
                                                  remaining.value_or(kIoChunk), kIoChunk));
  if (buffer_.capacity() < wanted) buffer_.reserve(std::min(wanted, buffer_.max_size()));
}

void Session::StartBodyRead() {
  ReserveBodyBuffer();
  if (expect_continue_ && !continue_sent_) {
    continue_sent_ = true;
    stream_.expires_after(core_.options().send_timeout);
    asio::async_write(stream_, asio::buffer(kContinue),
                      [self = shared_from_this()](const ErrorCode& ec, std::size_t) {
                        if (ec) {
                          self->body_failed_ = true;
                          return self->FinishBodyRead(Code::kBadRequest, "Connection lost before the request body");
                        }
                        self->ContinueBodyRead();
                      });
    return;
  }
  ContinueBodyRead();
}

void Session::ContinueBodyRead() {
  LendBodyOut();
  stream_.expires_never();
  ArmBodyTimer();
  bhttp::async_read_some(stream_, buffer_, *parser_,
                         [self = shared_from_this()](const ErrorCode& ec, std::size_t) { self->OnBodyRead(ec); });
}

// When it fires, the read is cancelled and the socket kept, so the handler's
// 408 reaches the client. A wait that fires once its read has completed (its
// completion already queued when cancelled) finds the count moved on, or no
// read pending, and does nothing.
void Session::ArmBodyTimer() {
  if (!body_timer_) body_timer_.emplace(executor());
  body_read_pending_ = true;
  body_timed_out_ = false;
  body_timer_->expires_after(core_.options().body_read_timeout);
  body_timer_->async_wait([self = shared_from_this(), read = ++body_reads_](const ErrorCode& ec) {
    if (ec || read != self->body_reads_ || !self->body_read_pending_) return;
    self->body_timed_out_ = true;
    ErrorCode ignored;
    self->stream_.socket().cancel(ignored);
  });
}

void Session::OnBodyRead(ErrorCode ec) {
  body_read_pending_ = false;
  body_timer_->cancel();
  if (ec == asio::error::operation_aborted && body_timed_out_) ec = beast::error::timeout;
  std::unique_lock lock(body_mu_);
  if (!SettleBodyRead(ec)) {
    lock.unlock();
    return ContinueBodyRead();
  }
  body_pending_ = false;
  lock.unlock();
  body_cv_.notify_one();
}

// The worker's buffer receives the body directly, lent to the parser for one
// read; SettleBodyRead takes it back.
void Session::LendBodyOut() {
  auto& body = parser_->get().body();
  body.data = body_out_.data();
  body.size = body_out_.size();
}

bool Session::SettleBodyRead(ErrorCode ec) {
  auto& body = parser_->get().body();
  body_got_ = body_out_.size() - body.size;
  body.data = nullptr;
  body.size = 0;
  if (ec == bhttp::error::need_buffer) ec = {};
  if (ec) {
    body_failed_ = true;
    if (ec == beast::error::timeout) {
      SetBodyOutcome(Code::kRequestTimeout, "Timed out reading the request body");
    } else if (IsMalformed(ec)) {
      SetBodyOutcome(Code::kBadRequest, "Malformed request body");
    } else {
      SetBodyOutcome(Code::kBadRequest, "Connection closed before the request body was complete");
    }
    return true;
  }
  // Only framing (a chunk header) arrived: read on rather than report zero,
  // which would mean the end of the body.
  if (body_got_ == 0 && !parser_->is_done()) return false;
  SetBodyOutcome(Code::kOk, "");
  return true;
}

// Under body_mu_, as the worker reads the outcome under it.
void Session::SetBodyOutcome(Code code, const char* message) {
  body_error_ = code;
  body_error_message_ = message;
  body_done_ = parser_->is_done();
}

void Session::FinishBodyRead(Code code, const char* message) {
  {
    std::lock_guard lock(body_mu_);
    SetBodyOutcome(code, message);
    body_pending_ = false;
  }
  body_cv_.notify_one();
}

// --- closing --------------------------------------------------------------

bool Session::RequestUnderWay() {
  ErrorCode ec;
  return buffer_.size() > 0 || stream_.socket().available(ec) > 0;
}

// Closes after a response; lingers only when the client may still be sending,
// since closing with unread data makes the kernel send a reset.
void Session::CloseGracefully() {
  ErrorCode ec;
  if (RequestUnderWay()) return StartLinger();
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  Close();
}

// Sends our FIN, then discards what the client still sends for a bounded time
// and amount, so the response reaches a client that is still uploading.
void Session::StartLinger() {
  phase_ = Phase::kClosing;
  ErrorCode ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) return Close();
  buffer_.consume(buffer_.size());
  discarded_ = 0;
  stream_.expires_after(kLingerTime);  // one deadline for the whole linger
  Linger();
}

void Session::Linger() {
  stream_.async_read_some(asio::buffer(Scratch(), kIoChunk),
                          [self = shared_from_this()](const ErrorCode& ec, std::size_t bytes) {
                            if (ec) return self->Close();
                            self->discarded_ += bytes;
                            const std::uint64_t budget =
                                std::max<std::uint64_t>(self->core_.options().max_drain_bytes * 4, kIoChunk * 4);
                            // Closing with unread input resets the connection and drops
                            // unacknowledged output, so the budget ends lingering only
                            // once the client has acknowledged the whole response.
                            if (self->discarded_ > budget && self->UnacknowledgedBytes() == 0) return self->Close();
                            self->Linger();
                          });
}

int Session::UnacknowledgedBytes() {
  int bytes = 0;
  if (::ioctl(stream_.socket().native_handle(), SIOCOUTQ, &bytes) != 0) return 0;
  return bytes;
}

void Session::Close() {
  phase_ = Phase::kClosing;
  stream_.close();
}

// --- core -----------------------------------------------------------------

http::Response Core::Handle(http::Request& request) {
  try {
    return handler_(request);
  } catch (...) {  // a handler must not throw; a throwing one must not kill the worker
    return ErrorResponse(500, "Internal server error");
  }
}

http::Response Core::ErrorResponse(int status, std::string_view detail) {
  http::Response response;
  try {
    response = error_responder_(status, detail);
  } catch (...) {
    response = http::Response();
    response.status = status;
    response.body.assign(detail);
  }
  response.file.reset();
  return response;
}

void Core::Register(Session& session) {
  std::lock_guard lock(sessions_mu_);
  session.next_ = sessions_;
  if (sessions_) sessions_->prev_ = &session;
  sessions_ = &session;
}

void Core::Unregister(Session& session) {
  std::lock_guard lock(sessions_mu_);
  if (session.prev_) session.prev_->next_ = session.next_;
  if (session.next_) session.next_->prev_ = session.prev_;
  if (sessions_ == &session) sessions_ = session.next_;
  if (connections_.fetch_sub(1) == 1 && stopping() && !io_stopped_) {
    asio::post(server_strand_, [this] { MaybeFinish(); });
  }
}

std::vector<std::shared_ptr<Session>> Core::LiveSessions() {
  std::vector<std::shared_ptr<Session>> live;
  std::lock_guard lock(sessions_mu_);
  for (Session* session = sessions_; session; session = session->next_) {
    if (auto alive = session->weak_from_this().lock()) live.push_back(std::move(alive));
  }
  return live;
}

Status Core::Listen() {
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  ErrorCode ec;
  tcp::resolver resolver(ioc_);
  const auto results = resolver.resolve(options_.host, std::to_string(options_.port),
                                        tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    return Status(Code::kUnavailable, "Cannot resolve listen address " + where + ": " + ec.message());
  }
  const tcp::endpoint endpoint = results.begin()->endpoint();
  const auto fail = [&](const char* step) {
    ErrorCode ignored;
    acceptor_.close(ignored);
    return Status(Code::kUnavailable, std::string("Cannot listen on ") + where + " (" + step + "): " + ec.message());
  };
  acceptor_.open(endpoint.protocol(), ec);
  if (ec) return fail("open");
  acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) return fail("reuse_address");
  acceptor_.bind(endpoint, ec);
  if (ec) return fail("bind");
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen");
  port_ = acceptor_.local_endpoint(ec).port();
  return Status::Ok();
}

void Core::Run(std::function<void()> on_stopping) {
  if (!acceptor_.is_open()) return;
  on_stopping_ = std::move(on_stopping);
  ErrorCode ec;
  signals_.emplace(server_strand_);
  signals_->add(SIGINT, ec);
  signals_->add(SIGTERM, ec);
  signals_->async_wait([this](const ErrorCode& wait_ec, int) {
    if (!wait_ec) BeginStop();
  });
  asio::post(server_strand_, [this] { Accept(); });

  // Requests still waiting for a fiber when the loop ends are dropped there,
  // on their own thread, while this Core is still alive.
  const auto run_io = [](asio::io_context& context, std::size_t index) {
    t_io_thread_index = index;
    context.run();
    DropWaitingFibers();
  };
  std::vector<std::thread> extra_io_threads;
  for (std::size_t i = 0; i < more_iocs_.size(); ++i) {
    extra_io_threads.emplace_back([&run_io, &context = *more_iocs_[i], i] { run_io(context, i + 1); });
  }
  run_io(ioc_, 0);
  for (auto& thread : extra_io_threads) thread.join();

  // Whatever is left outlived the grace period.
  io_stopped_ = true;
  for (const auto& session : LiveSessions()) session->Abandon();
}

void Core::Accept() {
  if (!acceptor_.is_open()) return;
  asio::io_context& context = next_context_ == 0 ? ioc_ : *more_iocs_[next_context_ - 1];
  next_context_ = (next_context_ + 1) % (more_iocs_.size() + 1);
  acceptor_.async_accept(context.get_executor(), [this](const ErrorCode& ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void Core::OnAccept(const ErrorCode& ec, tcp::socket socket) {
  if (!acceptor_.is_open()) return;
  if (ec) {
    if (ec == asio::error::connection_aborted) return Accept();
    accept_retry_timer_.expires_after(kAcceptRetryDelay);
    accept_retry_timer_.async_wait([this](const ErrorCode& wait_ec) {
      if (!wait_ec) Accept();
    });
    return;
  }
  // Over the limit the connection is closed at once: leaving it in the
  // backlog would only make the client wait for nothing.
  if (connections_.load(std::memory_order_relaxed) >= options_.max_connections) {
    ErrorCode ignored;
    socket.close(ignored);
    return Accept();
  }
  connections_.fetch_add(1, std::memory_order_relaxed);
  auto session = std::make_shared<Session>(*this, std::move(socket));
  Session& started = *session;
  asio::post(started.executor(), [session = std::move(session)] { session->Start(); });
  Accept();
}

void Core::BeginStop() {
  if (stopping_.exchange(true, std::memory_order_acq_rel)) return;
  if (on_stopping_) on_stopping_();
  ErrorCode ignored;
  acceptor_.close(ignored);
  accept_retry_timer_.cancel();
  if (signals_) signals_->cancel(ignored);
  for (const auto& session : LiveSessions()) {
    asio::post(session->executor(), [session] { session->OnServerStopping(); });
  }
  grace_timer_.expires_after(options_.shutdown_grace);
  grace_timer_.async_wait([this](const ErrorCode& ec) {
    if (!ec) StopIo();
  });
  MaybeFinish();
}

void Core::MaybeFinish() {
  if (stopping() && connections_.load() == 0) StopIo();
}

// The grace period is over, or no connection is left. A fiber still doing a
// request's work (an AWS call) gets up to another grace period to finish,
// so that a write is not cut between two of its calls (a worker's handler
// runs on as well, joined when the server goes); a fiber waiting on its
// client is woken to fail, and a request still waiting for a fiber dropped.
// Each io thread then stops.
void Core::StopIo() {
  grace_over_.store(true, std::memory_order_release);
  const auto deadline = std::chrono::steady_clock::now() + options_.shutdown_grace;
  WindDown(ioc_, deadline);
  for (const auto& context : more_iocs_) WindDown(*context, deadline);
}

void Core::WindDown(asio::io_context& context, std::chrono::steady_clock::time_point deadline) {
  asio::post(context, [this, &context, deadline] {
    DropWaitingStartsAndWakeClientWaits();
    if (FibersInFlight() == 0 || std::chrono::steady_clock::now() >= deadline) return context.stop();
    auto again = std::make_shared<asio::steady_timer>(context, kWindDownCheck);
    again->async_wait([this, &context, deadline, again](const ErrorCode&) { WindDown(context, deadline); });
  });
}

}  // namespace

struct Server::Impl {
  Impl(ServerOptions options, Handler handler, ErrorResponder error_responder)
      : core(std::move(options), std::move(handler), std::move(error_responder)) {}
  Core core;
};

Server::Server(ServerOptions options, Handler handler, ErrorResponder error_responder)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler), std::move(error_responder))) {}

Server::~Server() = default;

Status Server::Listen() { return impl_->core.Listen(); }

std::uint16_t Server::port() const { return impl_->core.port(); }

void Server::Run(std::function<void()> on_stopping) { impl_->core.Run(std::move(on_stopping)); }

void Server::Stop() { impl_->core.Stop(); }

std::uint64_t RaiseOpenFileLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur;
}

}  // namespace imgsvc::server
