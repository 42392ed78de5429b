#include "http_client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cerrno>
#include <cstring>
#include <limits>
#include <thread>

namespace imgsvc::testing {
namespace {

namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string ErrnoText(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

StatusOr<int> Connect(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return Status(Code::kUnavailable, "resolve " + host + ": " + ::gai_strerror(rc));
  }
  std::string last_error = "no address for " + host;
  int fd = -1;
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    last_error = ErrnoText("connect");
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(found);
  if (fd < 0) return Status(Code::kUnavailable, last_error);
  // Blocking sends give up after the timeout instead of hanging a test.
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

Status SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status(Code::kUnavailable, ErrnoText("send"));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return Status::Ok();
}

constexpr long kReceiveError = -1;
constexpr long kReceiveTimeout = -2;

// Appends what arrives to `pending`: the byte count, 0 on EOF, or a negative kReceive*.
long ReceiveInto(int fd, std::string& pending, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return kReceiveTimeout;
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return kReceiveError;
    if (ready == 0) return kReceiveTimeout;
    char buffer[64 * 1024];
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == ECONNRESET ? 0 : kReceiveError;
    pending.append(buffer, static_cast<std::size_t>(n));
    return n;
  }
}

HttpResponse ToResponse(http::response<http::string_body>& message) {
  HttpResponse out;
  out.status = static_cast<int>(message.result_int());
  for (const auto& field : message) {
    out.headers.emplace_back(Lower(field.name_string()), std::string(field.value()));
  }
  out.body = std::move(message.body());
  return out;
}

// Parses one response from `pending`, receiving more from `fd` (when >= 0)
// as needed. on_first_byte runs when the first byte of the response is seen.
StatusOr<HttpResponse> ReadResponseFrom(int fd, std::string& pending, Clock::time_point deadline,
                                        const std::function<void()>& on_first_byte = {}) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  parser.header_limit(1024 * 1024);
  parser.eager(true);
  bool first_byte_seen = false;
  while (!parser.is_done()) {
    if (!pending.empty()) {
      if (!first_byte_seen && on_first_byte) on_first_byte();
      first_byte_seen = true;
      boost::system::error_code ec;
      std::size_t used = parser.put(boost::asio::buffer(pending.data(), pending.size()), ec);
      pending.erase(0, used);
      if (ec && ec != http::error::need_more) {
        return Status(Code::kInternal, "unparsable response: " + ec.message());
      }
      if (!ec && used > 0) continue;
    }
    long n = fd >= 0 ? ReceiveInto(fd, pending, deadline) : 0;
    if (n == kReceiveTimeout) return Status(Code::kDeadlineExceeded, "timed out waiting for the response");
    if (n == kReceiveError) return Status(Code::kUnavailable, ErrnoText("recv"));
    if (n == 0) {
      boost::system::error_code ec;
      parser.put_eof(ec);
      if (ec) {
        return Status(Code::kUnavailable, "connection closed before a complete response (" +
                                              std::to_string(pending.size()) + " bytes unparsed)");
      }
      break;
    }
  }
  return ToResponse(parser.get());
}

bool MethodHasBody(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
}

}  // namespace

std::optional<std::string> HttpResponse::header(std::string_view name) const {
  const std::string wanted = Lower(name);
  for (const auto& [key, value] : headers) {
    if (key == wanted) return value;
  }
  return std::nullopt;
}

std::string SerializeRequest(const HttpRequest& request, std::string_view host_header) {
  std::string out = request.method + " " + request.target + " HTTP/1.1\r\n";
  bool has_host = false;
  bool has_length = false;
  for (const auto& [name, value] : request.headers) {
    const std::string lower = Lower(name);
    has_host = has_host || lower == "host";
    has_length = has_length || lower == "content-length" || lower == "transfer-encoding";
    out += name + ": " + value + "\r\n";
  }
  if (!has_host) out += "Host: " + std::string(host_header) + "\r\n";
  if (!has_length && (!request.body.empty() || MethodHasBody(request.method))) {
    out += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
  }
  out += "\r\n";
  out += request.body;
  return out;
}

HttpConnection::HttpConnection(int fd, std::string host_header, std::chrono::milliseconds timeout)
    : fd_(fd), host_header_(std::move(host_header)), timeout_(timeout) {}

HttpConnection::HttpConnection(HttpConnection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      host_header_(std::move(other.host_header_)),
      timeout_(other.timeout_),
      pending_(std::move(other.pending_)) {}

HttpConnection& HttpConnection::operator=(HttpConnection&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    host_header_ = std::move(other.host_header_);
    timeout_ = other.timeout_;
    pending_ = std::move(other.pending_);
  }
  return *this;
}

HttpConnection::~HttpConnection() {
  if (fd_ >= 0) ::close(fd_);
}

StatusOr<HttpConnection> HttpConnection::Open(const std::string& host, std::uint16_t port,
                                              std::chrono::milliseconds timeout) {
  IMGSVC_ASSIGN_OR_RETURN(int fd, Connect(host, port, timeout));
  return HttpConnection(fd, host + ":" + std::to_string(port), timeout);
}

Status HttpConnection::Write(std::string_view bytes) { return SendAll(fd_, bytes); }

StatusOr<HttpResponse> HttpConnection::ReadResponse() {
  return ReadResponseFrom(fd_, pending_, Clock::now() + timeout_);
}

StatusOr<HttpResponse> HttpConnection::Send(const HttpRequest& request) {
  IMGSVC_RETURN_IF_ERROR(Write(SerializeRequest(request, host_header_)));
  return ReadResponse();
}

std::string HttpConnection::ReadUntilClose() {
  const auto deadline = Clock::now() + timeout_;
  while (ReceiveInto(fd_, pending_, deadline) > 0) {
  }
  return std::exchange(pending_, {});
}

StatusOr<HttpResponse> HttpClient::Send(const HttpRequest& request) const {
  IMGSVC_ASSIGN_OR_RETURN(HttpConnection connection, HttpConnection::Open(host_, port_, timeout_));
  return connection.Send(request);
}

StatusOr<HttpResponse> HttpClient::Get(std::string target, HeaderList headers) const {
  HttpRequest request;
  request.target = std::move(target);
  request.headers = std::move(headers);
  return Send(request);
}

StatusOr<std::string> RawExchange(const std::string& host, std::uint16_t port, std::string_view bytes,
                                  std::chrono::milliseconds timeout) {
  IMGSVC_ASSIGN_OR_RETURN(HttpConnection connection, HttpConnection::Open(host, port, timeout));
  (void)connection.Write(bytes);  // the server may answer and close before reading it all
  return connection.ReadUntilClose();
}

StatusOr<HttpResponse> ParseResponse(std::string_view raw) {
  std::string pending(raw);
  return ReadResponseFrom(-1, pending, Clock::now());
}

MultipartBuilder::MultipartBuilder(std::string boundary) : boundary_(std::move(boundary)) {}

void MultipartBuilder::StartPart() {
  // A delimiter is CRLF "--" boundary, except at the very start of the body.
  body_ += started_ ? "\r\n--" : "--";
  body_ += boundary_ + "\r\n";
  started_ = true;
}

MultipartBuilder& MultipartBuilder::AddField(std::string_view name, std::string_view value) {
  StartPart();
  body_ += "Content-Disposition: form-data; name=\"" + std::string(name) + "\"\r\n\r\n";
  body_ += value;
  return *this;
}

MultipartBuilder& MultipartBuilder::AddFile(std::string_view name, std::string_view filename,
                                            std::string_view content_type, std::string_view data) {
  body_ += OpenFile(name, filename, content_type);
  body_ += data;
  return *this;
}

std::string MultipartBuilder::OpenFile(std::string_view name, std::string_view filename,
                                       std::string_view content_type) {
  StartPart();
  body_ += "Content-Disposition: form-data; name=\"" + std::string(name) + "\"; filename=\"" +
           std::string(filename) + "\"\r\n";
  body_ += "Content-Type: " + std::string(content_type) + "\r\n\r\n";
  return std::exchange(body_, {});
}

std::string MultipartBuilder::Build() const {
  return body_ + (started_ ? "\r\n--" : "--") + boundary_ + "--\r\n";
}

std::string MultipartBuilder::ContentType() const {
  return "multipart/form-data; boundary=" + boundary_;
}

StreamedExchange StreamRequest(const std::string& host, std::uint16_t port, const HttpRequest& head,
                               std::uint64_t content_length, const BodyProducer& producer,
                               std::chrono::milliseconds timeout) {
  StreamedExchange result;
  auto fd_or = Connect(host, port, timeout);
  if (!fd_or.ok()) {
    result.error = fd_or.status().ToString();
    return result;
  }
  const int fd = *fd_or;

  HttpRequest with_length = head;
  with_length.body.clear();
  with_length.headers.emplace_back("Content-Length", std::to_string(content_length));
  const std::string head_bytes = SerializeRequest(with_length, host + ":" + std::to_string(port));

  std::atomic<std::uint64_t> sent{0};
  std::atomic<bool> stop{false};
  std::string write_error;
  bool complete = false;
  std::thread writer([&] {
    if (Status st = SendAll(fd, head_bytes); !st.ok()) {
      write_error = st.ToString();
      return;
    }
    std::vector<char> buffer(64 * 1024);
    std::uint64_t offset = 0;
    while (!stop.load()) {
      const std::size_t n = producer(std::span<char>(buffer), offset);
      if (n == 0) {
        complete = true;
        return;
      }
      std::size_t done = 0;
      while (done < n) {
        if (stop.load()) return;
        ssize_t w = ::send(fd, buffer.data() + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
          write_error = ErrnoText("send");
          return;
        }
        done += static_cast<std::size_t>(w);
        sent.fetch_add(static_cast<std::uint64_t>(w));
      }
      offset += n;
    }
  });

  std::string pending;
  std::optional<std::uint64_t> at_response;
  auto response = ReadResponseFrom(fd, pending, Clock::now() + timeout,
                                   [&] { at_response = sent.load(); });
  stop.store(true);
  ::shutdown(fd, SHUT_RDWR);  // wakes a writer blocked on a peer that stopped reading
  writer.join();
  ::close(fd);

  if (response.ok()) {
    result.response = std::move(*response);
  } else {
    result.error = response.status().ToString() + (write_error.empty() ? "" : "; writer: " + write_error);
  }
  result.bytes_sent = sent.load();
  result.bytes_sent_at_response = at_response;
  result.body_complete = complete;
  return result;
}

}  // namespace imgsvc::testing
