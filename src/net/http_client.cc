#include "net/http_client.h"

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/system_error.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <ctime>
#include <exception>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <variant>

#include "core/blocking.h"
#include "core/image.h"
#include "net/ca_store.h"

namespace imgsvc::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;
using Clock = std::chrono::steady_clock;
// No value: no deadline (a zero timeout).
using Deadline = std::optional<Clock::time_point>;

thread_local WaitHook* t_wait_hook = nullptr;

// AWS answers carry a handful of headers; this only stops a runaway peer.
constexpr std::uint32_t kResponseHeaderLimit = 64 * 1024;

bool IsIpLiteral(const std::string& host) {
  ErrorCode not_an_address;
  asio::ip::make_address(host, not_an_address);
  return !not_an_address;
}

// A DNS name or an IP literal; anything else ('@', '/', spaces...) would
// change the meaning of the URL or of the Host header.
bool IsValidHost(const std::string& host) {
  if (host.empty()) return false;
  if (IsIpLiteral(host)) return true;
  for (const char c : host) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
  }
  return true;
}

std::uint16_t DefaultPort(std::string_view scheme) { return scheme == "https" ? 443 : 80; }

// 1-65535, digits only.
std::optional<std::uint16_t> ParsePort(std::string_view text) {
  unsigned port = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || port == 0 || port > 65535) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(port);
}

std::string_view TrimBlanks(std::string_view text) {
  const std::size_t first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

std::optional<std::string> PercentDecode(std::string_view text) {
  std::string decoded;
  decoded.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      decoded.push_back(text[i]);
      continue;
    }
    unsigned byte = 0;
    const char* const digits = text.data() + i + 1;
    if (i + 3 > text.size()) return std::nullopt;
    const auto [end, error] = std::from_chars(digits, digits + 2, byte, 16);
    if (error != std::errc() || end != digits + 2) return std::nullopt;
    decoded.push_back(static_cast<char>(byte));
    i += 2;
  }
  return decoded;
}

std::string Base64(std::string_view data) {
  std::string encoded(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int length = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(encoded.data()),
                                     reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  encoded.resize(static_cast<std::size_t>(length));
  return encoded;
}

struct Proxy {
  Endpoint endpoint;          // where the connections go; always plain http
  std::string authorization;  // "Basic ..." from the URL's credentials, or empty
};

// No value for an empty URL. Messages never quote the URL: it may carry a
// password, and they end up in logs.
StatusOr<std::optional<Proxy>> ParseProxy(std::string_view option, std::string_view url) {
  if (url.empty()) return std::optional<Proxy>();
  const auto refuse = [&](std::string_view why) {
    return Status(Code::kBadRequest, std::string(option) + " is unusable: " + std::string(why));
  };
  std::string_view rest = url;
  std::string scheme = "http";  // curl's reading of "host:port"
  if (const std::size_t scheme_end = rest.find("://"); scheme_end != std::string_view::npos) {
    scheme = core::LowerAscii(rest.substr(0, scheme_end));
    rest.remove_prefix(scheme_end + 3);
  }
  if (scheme != "http") return refuse("only http:// proxies are supported, not " + scheme + "://");
  const std::size_t authority_end = rest.find('/');
  if (authority_end != std::string_view::npos && rest.substr(authority_end) != "/") {
    return refuse("a proxy URL has no path or query");
  }
  std::string_view authority = rest.substr(0, authority_end);

  Proxy proxy;
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    const std::size_t colon = userinfo.find(':');
    const std::optional<std::string> user = PercentDecode(userinfo.substr(0, colon));
    const std::optional<std::string> password =
        colon == std::string_view::npos ? std::string() : PercentDecode(userinfo.substr(colon + 1));
    if (!user || !password) return refuse("bad percent-encoding in the credentials");
    proxy.authorization = "Basic " + Base64(*user + ":" + *password);
  }
  StatusOr<Endpoint> endpoint = Endpoint::Parse("http://" + std::string(authority));
  if (!endpoint.ok()) return refuse("invalid proxy host or port");
  proxy.endpoint = std::move(*endpoint);
  return std::optional<Proxy>(std::move(proxy));
}

// Whether `address` lies in network/prefix_bits.
bool InBlock(const asio::ip::address& address, const asio::ip::address& network, unsigned prefix_bits) {
  if (address.is_v4() != network.is_v4()) return false;
  const auto compare = [prefix_bits](const auto& a, const auto& b) {
    const std::size_t whole = prefix_bits / 8;
    if (!std::equal(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(whole), b.begin())) return false;
    const unsigned rest = prefix_bits % 8;
    if (rest == 0) return true;
    const unsigned mask = (0xffu << (8 - rest)) & 0xffu;
    return (a[whole] & mask) == (b[whole] & mask);
  };
  if (address.is_v4()) return compare(address.to_v4().to_bytes(), network.to_v4().to_bytes());
  return compare(address.to_v6().to_bytes(), network.to_v6().to_bytes());
}

// `entry`: one lower-case, trimmed NO_PROXY entry; `host`: the endpoint's
// host in lower case; `host_address`: the host when it is an IP literal.
bool NoProxyEntryMatches(std::string_view entry, const std::string& host,
                         const std::optional<asio::ip::address>& host_address, std::uint16_t port) {
  if (entry == "*") return true;
  ErrorCode not_an_address;
  if (const std::size_t slash = entry.find('/'); slash != std::string_view::npos) {
    if (!host_address) return false;
    const asio::ip::address network = asio::ip::make_address(std::string(entry.substr(0, slash)), not_an_address);
    if (not_an_address) return false;
    const std::string_view bits_text = entry.substr(slash + 1);
    unsigned bits = 0;
    const auto [end, error] = std::from_chars(bits_text.data(), bits_text.data() + bits_text.size(), bits);
    if (bits_text.empty() || error != std::errc() || end != bits_text.data() + bits_text.size() ||
        bits > (network.is_v4() ? 32u : 128u)) {
      return false;
    }
    return InBlock(*host_address, network, bits);
  }

  std::string_view name = entry;
  std::optional<std::uint16_t> entry_port;
  if (entry.starts_with('[')) {
    const std::size_t close = entry.find(']');
    if (close == std::string_view::npos) return false;
    name = entry.substr(1, close - 1);
    const std::string_view after = entry.substr(close + 1);
    if (!after.empty() && (!after.starts_with(':') || !(entry_port = ParsePort(after.substr(1))))) return false;
  } else if (const std::size_t colon = entry.find(':');
             colon != std::string_view::npos && entry.find(':', colon + 1) == std::string_view::npos) {
    name = entry.substr(0, colon);
    if (!(entry_port = ParsePort(entry.substr(colon + 1)))) return false;
  }  // more than one ':' is an IPv6 address without a port
  if (entry_port && *entry_port != port) return false;

  const asio::ip::address address = asio::ip::make_address(std::string(name), not_an_address);
  if (!not_an_address) return host_address == address;
  // A name never covers an address: "3.4" is not a suffix of 1.2.3.4.
  if (host_address) return false;
  if (name.starts_with("*.")) {
    name.remove_prefix(2);
  } else if (name.starts_with('.')) {
    name.remove_prefix(1);
  }
  if (name.empty() || !host.ends_with(name)) return false;
  return host.size() == name.size() || host[host.size() - name.size() - 1] == '.';
}

Status CheckEndpoint(const Endpoint& endpoint) {
  if (endpoint.scheme != "http" && endpoint.scheme != "https") {
    return Status(Code::kBadRequest, "unsupported scheme \"" + endpoint.scheme + "\" (http or https)");
  }
  if (!IsValidHost(endpoint.host)) return Status(Code::kBadRequest, "invalid host \"" + endpoint.host + "\"");
  if (endpoint.port == 0) return Status(Code::kBadRequest, "port 0 in endpoint");
  return Status::Ok();
}

// RFC 9110 token characters: methods and header names.
bool IsToken(std::string_view text) {
  if (text.empty()) return false;
  for (const char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c))) continue;
    if (std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) return false;
  }
  return true;
}

bool HasControlOrSpace(std::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return true;
  }
  return false;
}

// A loop, not find_first_of, which makes one memchr call per character:
// every header of every AWS call passes here.
bool HasLineBreakOrNul(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

// The request line and headers. The body travels after it, framed by
// Content-Length only: whatever could make the peer read the message
// differently from how it is sent (header injection, a length that lies,
// another framing) is refused, since on a kept-alive connection it would
// corrupt the next exchange too. Through a forwarding proxy (plain http) the
// target is in absolute form and the proxy's credentials are added.
StatusOr<std::string> SerializeHead(const Endpoint& endpoint, const ClientRequest& request,
                                    const Proxy* forwarding_proxy) {
  if (!IsToken(request.method)) return Status(Code::kBadRequest, "invalid method \"" + request.method + "\"");
  if (request.target.empty() || request.target.front() != '/' || HasControlOrSpace(request.target)) {
    return Status(Code::kBadRequest, "invalid request target \"" + request.target + "\"");
  }
  bool has_host = false;
  bool has_content_length = false;
  for (const Header& header : request.headers) {
    if (!IsToken(header.name) || HasLineBreakOrNul(header.value)) {
      return Status(Code::kBadRequest, "invalid header \"" + header.name + "\"");
    }
    if (core::EqualsIgnoreAsciiCase(header.name, "host")) has_host = true;
    if (core::EqualsIgnoreAsciiCase(header.name, "transfer-encoding")) {
      return Status(Code::kBadRequest, "Transfer-Encoding is not supported for requests");
    }
    if (core::EqualsIgnoreAsciiCase(header.name, "content-length")) {
      if (header.value != std::to_string(request.body.size())) {
        return Status(Code::kBadRequest, "Content-Length " + header.value + " does not match the body (" +
                                             std::to_string(request.body.size()) + " bytes)");
      }
      has_content_length = true;
    }
  }

  std::size_t head_size = request.method.size() + request.target.size() + endpoint.host.size() + 96;
  for (const Header& header : request.headers) head_size += header.name.size() + header.value.size() + 4;
  std::string head;
  head.reserve(head_size);
  head.append(request.method).append(" ");
  if (forwarding_proxy != nullptr) head.append(endpoint.Origin());
  head.append(request.target).append(" HTTP/1.1\r\n");
  if (!has_host) head.append("Host: ").append(endpoint.Authority()).append("\r\n");
  for (const Header& header : request.headers)
    head.append(header.name).append(": ").append(header.value).append("\r\n");
  if (forwarding_proxy != nullptr && !forwarding_proxy->authorization.empty()) {
    head.append("Proxy-Authorization: ").append(forwarding_proxy->authorization).append("\r\n");
  }
  const bool needs_length = !request.body.empty() || request.method == "POST" || request.method == "PUT";
  if (needs_length && !has_content_length) {
    head.append("Content-Length: ").append(std::to_string(request.body.size())).append("\r\n");
  }
  head.append("\r\n");
  return head;
}

Deadline DeadlineAfter(std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) return std::nullopt;
  return Clock::now() + timeout;
}

Deadline Earlier(Deadline a, Deadline b) {
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

// The peer began its answer before it had read the whole request (an early
// error, such as S3's for a bad signature) and reads no more: the rest of the
// request is not sent, and the answer is read all the same.
ErrorCode AnsweredEarly() {
  // A standard category: Boost's has no virtual destructor (-Wnon-virtual-dtor).
  class Category final : public std::error_category {
   public:
    const char* name() const noexcept override { return "imgsvc.http_client"; }
    std::string message(int) const override { return "the peer answered before it read the whole request"; }
  };
  static const Category category;
  return ErrorCode(std::error_code(1, category));
}

// A connection's TCP socket, in non-blocking mode, whose reads and writes
// wait in poll() until a deadline. A call blocks its thread anyway, so a
// request and its answer cost a send, a poll and a read; driven through an
// io_context they also took a read that would block, a timer armed for the
// deadline, epoll_wait and the io_context's bookkeeping, on every AWS call.
// It is also the next layer under TLS, hence the members Asio's stream
// concepts name.
class DeadlineSocket {
 public:
  using executor_type = tcp::socket::executor_type;
  using lowest_layer_type = tcp::socket::lowest_layer_type;

  explicit DeadlineSocket(asio::io_context& io) : socket_(io) {}

  executor_type get_executor() { return socket_.get_executor(); }
  lowest_layer_type& lowest_layer() { return socket_; }

  // No value: operations wait as long as it takes.
  void set_deadline(Deadline deadline) { deadline_ = deadline; }
  // Right after a request its answer is never there yet: the next read
  // waits first instead of trying a read that would block.
  void WaitBeforeNextRead() { wait_before_read_ = true; }

  // Tries each address in turn (IPv6 and IPv4 alike) until one accepts.
  ErrorCode Connect(const std::vector<tcp::endpoint>& addresses) {
    ErrorCode error = asio::error::host_not_found;
    for (const tcp::endpoint& address : addresses) {
      ErrorCode ignored;
      socket_.close(ignored);
      if (socket_.open(address.protocol(), error); error) continue;
      if (socket_.non_blocking(true, error); error) continue;
      // Asio's own connect waits without a limit.
      if (::connect(socket_.native_handle(), address.data(), address.size()) == 0) return {};
      if (errno != EINPROGRESS) {
        error = ErrorCode(errno, boost::system::system_category());
        continue;
      }
      if (Wait(POLLOUT, error); error == beast::error::timeout) return error;
      if (error) continue;
      int result = 0;
      socklen_t length = sizeof(result);
      if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_ERROR, &result, &length) != 0) result = errno;
      if (result == 0) return {};
      error = ErrorCode(result, boost::system::system_category());
    }
    return error;
  }

  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers, ErrorCode& error) {
    if (std::exchange(wait_before_read_, false)) {
      Wait(POLLIN, error);
      if (error) return 0;
    }
    while (true) {
      const std::size_t read = socket_.read_some(buffers, error);
      if (error != asio::error::would_block) return read;
      if (Wait(POLLIN, error); error) return 0;
    }
  }

  template <class ConstBuffers>
  std::size_t write_some(const ConstBuffers& buffers, ErrorCode& error) {
    while (true) {
      const std::size_t written = socket_.write_some(buffers, error);
      if (error != asio::error::would_block) return written;
      const short ready = Wait(POLLOUT | POLLIN, error);
      if (error) return 0;
      if ((ready & POLLIN) != 0 && (ready & POLLOUT) == 0) {
        error = AnsweredEarly();
        return 0;
      }
    }
  }

  // The stream concepts ask for the throwing forms as well.
  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers) {
    ErrorCode error;
    const std::size_t read = read_some(buffers, error);
    if (error) throw boost::system::system_error(error);
    return read;
  }
  template <class ConstBuffers>
  std::size_t write_some(const ConstBuffers& buffers) {
    ErrorCode error;
    const std::size_t written = write_some(buffers, error);
    if (error) throw boost::system::system_error(error);
    return written;
  }

 private:
  // Waits until one of poll's `events` or the deadline (beast::error::timeout);
  // the events that came.
  short Wait(short events, ErrorCode& error) {
    if (t_wait_hook != nullptr) {
      bool timed_out = false;
      const short got = t_wait_hook->Wait(socket_.native_handle(), events, deadline_, timed_out);
      error = timed_out ? ErrorCode(beast::error::timeout) : ErrorCode();
      return got;
    }
    pollfd waiter{socket_.native_handle(), events, 0};
    while (true) {
      timespec limit{};
      const timespec* timeout = nullptr;
      if (deadline_) {
        const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(*deadline_ - Clock::now()).count();
        if (left <= 0) {
          error = beast::error::timeout;
          return 0;
        }
        limit.tv_sec = static_cast<std::time_t>(left / 1'000'000'000);
        limit.tv_nsec = static_cast<long>(left % 1'000'000'000);
        timeout = &limit;
      }
      const int ready = ::ppoll(&waiter, 1, timeout, nullptr);
      if (ready > 0) {
        error = {};
        return waiter.revents;
      }
      if (ready < 0 && errno != EINTR) {
        error = ErrorCode(errno, boost::system::system_category());
        return 0;
      }
    }
  }

  tcp::socket socket_;
  Deadline deadline_;
  bool wait_before_read_ = false;
};

using TlsStream = ssl::stream<DeadlineSocket>;

// One keep-alive connection, used by one call at a time.
class Connection {
 public:
  Connection(asio::io_context& io, ssl::context* tls) : stream_(std::in_place_type<DeadlineSocket>, io) {
    if (tls != nullptr) stream_.emplace<TlsStream>(io, *tls);
  }

  DeadlineSocket& socket() {
    if (TlsStream* tls_stream = tls()) return tls_stream->next_layer();
    return std::get<DeadlineSocket>(stream_);
  }
  TlsStream* tls() { return std::get_if<TlsStream>(&stream_); }
  std::variant<DeadlineSocket, TlsStream>& stream() { return stream_; }

  // Where answers are read, kept with the connection: Beast reads into what
  // the buffer has room for (at least 512 bytes), and room for 64 KiB reads
  // a Lambda event of megabytes (or an S3 answer) in a few hundred reads
  // instead of thousands. Allocated per exchange, 64 KiB also made malloc
  // consolidate its free lists on every AWS call.
  beast::flat_buffer& read_buffer() {
    if (read_buffer_.capacity() == 0) read_buffer_.reserve(kReadBufferBytes);
    read_buffer_.clear();
    return read_buffer_;
  }

 private:
  static constexpr std::size_t kReadBufferBytes = 64 * 1024;

  std::variant<DeadlineSocket, TlsStream> stream_;
  beast::flat_buffer read_buffer_;
};

// getaddrinfo has no timeout and cannot be cancelled, so it runs on a thread
// of its own that the caller stops waiting for at the deadline; the thread
// ends when the lookup does and keeps the shared state alive until then.
struct Lookup {
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  ErrorCode error;
  std::vector<tcp::endpoint> addresses;

  void Run(const std::string& host, std::uint16_t port) {
    asio::io_context io{1};
    tcp::resolver resolver(io);
    ErrorCode lookup_error;
    // No AI_ADDRCONFIG (asio's default): in a container with loopback only it
    // can hide "localhost"; an unreachable family just fails over at connect.
    const auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, lookup_error);
    std::lock_guard lock(mutex);
    error = lookup_error;
    for (const auto& entry : results) addresses.push_back(entry.endpoint());
    done = true;
    finished.notify_all();
  }
};

StatusOr<std::vector<tcp::endpoint>> Resolve(const Endpoint& endpoint, Deadline deadline) {
  ErrorCode not_an_address;
  const asio::ip::address address = asio::ip::make_address(endpoint.host, not_an_address);
  if (!not_an_address) return std::vector<tcp::endpoint>{tcp::endpoint(address, endpoint.port)};

  auto lookup = std::make_shared<Lookup>();
  try {
    std::thread([lookup, host = endpoint.host, port = endpoint.port] { lookup->Run(host, port); }).detach();
  } catch (const std::system_error& e) {
    return Status(Code::kUnavailable, "cannot resolve " + endpoint.host + ": " + e.what());
  }
  bool timed_out = false;
  core::RunBlocking([&] {
    std::unique_lock lock(lookup->mutex);
    const auto done = [&] { return lookup->done; };
    if (deadline) {
      timed_out = !lookup->finished.wait_until(lock, *deadline, done);
    } else {
      lookup->finished.wait(lock, done);
    }
  });
  if (timed_out) return Status(Code::kDeadlineExceeded, "resolving " + endpoint.host + " timed out");
  std::unique_lock lock(lookup->mutex);
  if (lookup->error) {
    return Status(Code::kUnavailable, "cannot resolve " + endpoint.host + ": " + lookup->error.message());
  }
  if (lookup->addresses.empty()) return Status(Code::kUnavailable, "no address for " + endpoint.host);
  return std::move(lookup->addresses);
}

// The handshake's error says little ("certificate verify failed"); the
// verification result says why (unknown issuer, hostname mismatch, expired).
std::string TlsFailure(SSL* ssl, const ErrorCode& error) {
  std::string message = error.message();
  const long verify_result = SSL_get_verify_result(ssl);
  if (verify_result != X509_V_OK) message.append(": ").append(X509_verify_cert_error_string(verify_result));
  return message;
}

Status Handshake(Connection& connection, TlsStream& stream, const Endpoint& endpoint, Deadline deadline) {
  SSL* ssl = stream.native_handle();
  if (IsIpLiteral(endpoint.host)) {
    // No SNI for addresses (RFC 6066); the certificate must name the IP.
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), endpoint.host.c_str()) != 1) {
      return Status(Code::kUnavailable, "cannot check the TLS certificate against " + endpoint.host);
    }
  } else {
    // SSL_set_tlsext_host_name is a macro casting away const; same call.
    if (SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(endpoint.host.c_str())) != 1 ||
        SSL_set1_host(ssl, endpoint.host.c_str()) != 1) {
      return Status(Code::kUnavailable, "cannot set the TLS server name " + endpoint.host);
    }
  }
  connection.socket().set_deadline(deadline);
  ErrorCode error;
  stream.handshake(ssl::stream_base::client, error);
  if (error == beast::error::timeout) {
    return Status(Code::kDeadlineExceeded, "TLS handshake with " + endpoint.Authority() + " timed out");
  }
  if (error) {
    return Status(Code::kUnavailable,
                  "TLS handshake with " + endpoint.Authority() + " failed: " + TlsFailure(ssl, error));
  }
  return Status::Ok();
}

// host:port as CONNECT names its target: the port always, IPv6 in brackets.
std::string TunnelTarget(const Endpoint& endpoint) {
  const std::string host = endpoint.host.find(':') != std::string::npos ? "[" + endpoint.host + "]" : endpoint.host;
  return host + ":" + std::to_string(endpoint.port);
}

// Asks the proxy for a tunnel to `origin` (RFC 9110, 9.3.6); after its 2xx
// answer the connection carries the TLS bytes end to end.
Status OpenTunnel(Connection& connection, const Proxy& proxy, const Endpoint& origin, Deadline deadline) {
  const std::string target = TunnelTarget(origin);
  std::string head = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n";
  if (!proxy.authorization.empty()) head.append("Proxy-Authorization: ").append(proxy.authorization).append("\r\n");
  head.append("\r\n");
  const std::string what = "CONNECT " + target + " through proxy " + proxy.endpoint.Authority();

  DeadlineSocket& socket = connection.socket();
  socket.set_deadline(deadline);
  ErrorCode error;
  asio::write(socket, asio::buffer(head), error);
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::empty_body> parser;
  parser.header_limit(kResponseHeaderLimit);
  if (!error) {
    socket.WaitBeforeNextRead();
    bhttp::read_header(socket, buffer, parser, error);
  }
  if (error == beast::error::timeout) return Status(Code::kDeadlineExceeded, what + " timed out");
  if (error) return Status(Code::kUnavailable, what + " failed: " + error.message());
  const auto& answer = parser.get();
  if (answer.result_int() / 100 != 2) {
    return Status(Code::kUnavailable, what + " refused: " + std::to_string(answer.result_int()) + " " +
                                          std::string(answer.reason()));
  }
  // The origin speaks only after the TLS client hello: bytes already here
  // would be the proxy's, and would corrupt the handshake.
  if (buffer.size() != 0) return Status(Code::kUnavailable, what + ": the proxy sent data after its answer");
  return Status::Ok();
}

// What one request/answer exchange on a connection gave.
struct Exchange {
  Status status;
  ClientResponse response;      // when status is OK
  bool answer_started = false;  // a byte of the answer arrived
  bool reusable = false;        // the connection may carry another request
};

ClientResponse ToClientResponse(bhttp::response<bhttp::string_body>&& message) {
  ClientResponse response;
  response.status = static_cast<int>(message.result_int());
  response.headers.reserve(static_cast<std::size_t>(std::distance(message.begin(), message.end())));
  for (const auto& field : message)
    response.headers.push_back({std::string(field.name_string()), std::string(field.value())});
  response.body = std::move(message.body());
  return response;
}

// The request's bytes, sent before `deadline`; the write's error.
template <class Stream>
ErrorCode WriteRequest(Connection& connection, Stream& stream, const std::string& head, const ClientRequest& request,
                       Deadline deadline) {
  connection.socket().set_deadline(deadline);
  const std::array<asio::const_buffer, 2> wire = {asio::buffer(head), asio::buffer(request.body)};
  ErrorCode write_error;
  asio::write(stream, wire, write_error);
  return write_error;
}

// Reads the answer to a request written with `write_error`. A peer may
// answer before it has read the whole request (an early error) and stop
// reading; the answer is then read all the same, and the connection, its
// request half sent, is not reused. `peer` names the other end in messages.
template <class Stream>
Exchange ReadAnswer(Connection& connection, Stream& stream, const std::string& peer, bool head_request,
                    const ErrorCode& write_error, std::size_t max_body, Deadline deadline) {
  DeadlineSocket& socket = connection.socket();
  socket.set_deadline(deadline);
  beast::flat_buffer& buffer = connection.read_buffer();
  bhttp::response_parser<bhttp::string_body> parser;
  parser.header_limit(kResponseHeaderLimit);
  parser.body_limit(max_body);
  // A HEAD answer's Content-Length describes the GET body, which never comes.
  parser.skip(head_request);

  // After a failed write an answer may still have come (the peer answered
  // and closed): it is read unless the deadline has passed.
  ErrorCode read_error = write_error;
  if (write_error != beast::error::timeout) {
    socket.WaitBeforeNextRead();
    bhttp::read(stream, buffer, parser, read_error);
  }

  Exchange exchange;
  exchange.answer_started = parser.got_some();
  if (read_error == beast::error::timeout) {
    exchange.status = Status(Code::kDeadlineExceeded, "no complete answer from " + peer + " in time");
  } else if (read_error == bhttp::error::body_limit) {
    exchange.status =
        Status(Code::kUnavailable, "answer body from " + peer + " exceeds " + std::to_string(max_body) + " bytes");
  } else if (read_error) {
    // A broken pipe says more than the end of stream that follows it.
    const ErrorCode& cause = write_error && write_error != AnsweredEarly() ? write_error : read_error;
    exchange.status = Status(Code::kUnavailable, "HTTP exchange with " + peer + " failed: " + cause.message());
  } else {
    exchange.reusable = !write_error && parser.keep_alive() && buffer.size() == 0;
    exchange.response = ToClientResponse(parser.release());
  }
  return exchange;
}

template <class Stream>
Exchange RunExchange(Connection& connection, Stream& stream, const std::string& peer, const std::string& head,
                     const ClientRequest& request, std::size_t max_body, Deadline deadline) {
  const ErrorCode write_error = WriteRequest(connection, stream, head, request, deadline);
  return ReadAnswer(connection, stream, peer, request.method == "HEAD", write_error, max_body, deadline);
}

// Pooled connections are found by where they lead and how: a tunnel or a
// forwarding connection through a proxy never serves a direct call.
std::string PoolKey(const Endpoint& endpoint, const Proxy* proxy) {
  std::string key = endpoint.Origin();
  if (proxy != nullptr) key.append(" via ").append(proxy->endpoint.Origin());
  return key;
}

std::string PeerName(const Endpoint& endpoint, const Proxy* proxy) {
  std::string name = endpoint.Authority();
  if (proxy != nullptr) name.append(" via proxy ").append(proxy->endpoint.Authority());
  return name;
}

}  // namespace

StatusOr<Endpoint> Endpoint::Parse(std::string_view url) {
  const auto refuse = [&](std::string_view why) {
    return Status(Code::kBadRequest, "invalid endpoint \"" + std::string(url) + "\": " + std::string(why));
  };
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return refuse("no scheme");
  Endpoint endpoint;
  endpoint.scheme = core::LowerAscii(url.substr(0, scheme_end));
  if (endpoint.scheme != "http" && endpoint.scheme != "https") return refuse("scheme must be http or https");

  std::string_view rest = url.substr(scheme_end + 3);
  const std::size_t authority_end = rest.find('/');
  std::string_view authority = rest.substr(0, authority_end);
  if (authority_end != std::string_view::npos && rest.substr(authority_end) != "/") {
    return refuse("only a bare origin is accepted (no path or query)");
  }

  std::string_view port_text;
  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return refuse("unterminated IPv6 address");
    endpoint.host = std::string(authority.substr(1, close - 1));
    ErrorCode not_v6;
    asio::ip::make_address_v6(endpoint.host, not_v6);
    if (not_v6) return refuse("invalid IPv6 address");
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(':')) return refuse("garbage after the IPv6 address");
      port_text = after.substr(1);
      if (port_text.empty()) return refuse("empty port");
    }
  } else {
    const std::size_t colon = authority.find(':');
    endpoint.host = core::LowerAscii(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return refuse("empty port");
    }
    if (!IsValidHost(endpoint.host)) return refuse("invalid host");
  }

  endpoint.port = DefaultPort(endpoint.scheme);
  if (!port_text.empty()) {
    const std::optional<std::uint16_t> port = ParsePort(port_text);
    if (!port) return refuse("invalid port");
    endpoint.port = *port;
  }
  return endpoint;
}

std::string Endpoint::Authority() const {
  std::string authority = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != DefaultPort(scheme)) authority.append(":").append(std::to_string(port));
  return authority;
}

std::string Endpoint::Origin() const { return scheme + "://" + Authority(); }

bool Endpoint::IsIpLiteralOrLocalhost() const { return IsIpLiteral(host) || core::EqualsIgnoreAsciiCase(host, "localhost"); }

HttpClientOptions ProxyOptionsFromEnvironment(
    const std::function<std::optional<std::string>(const std::string&)>& getenv) {
  const auto value_of = [&](const std::string& upper_case_name) {
    for (const std::string& name : {upper_case_name, core::LowerAscii(upper_case_name)}) {
      std::optional<std::string> value = getenv(name);
      if (value && !value->empty()) return std::move(*value);
    }
    return std::string();
  };
  HttpClientOptions options;
  options.http_proxy = value_of("HTTP_PROXY");
  options.https_proxy = value_of("HTTPS_PROXY");
  options.no_proxy = value_of("NO_PROXY");
  return options;
}

bool NoProxyMatches(std::string_view no_proxy, const Endpoint& endpoint) {
  const std::string host = core::LowerAscii(endpoint.host);
  ErrorCode not_an_address;
  const asio::ip::address address = asio::ip::make_address(host, not_an_address);
  const std::optional<asio::ip::address> host_address =
      not_an_address ? std::nullopt : std::optional<asio::ip::address>(address);
  while (true) {
    const std::size_t comma = no_proxy.find(',');
    const std::string entry = core::LowerAscii(TrimBlanks(no_proxy.substr(0, comma)));
    if (!entry.empty() && NoProxyEntryMatches(entry, host, host_address, endpoint.port)) return true;
    if (comma == std::string_view::npos) return false;
    no_proxy.remove_prefix(comma + 1);
  }
}

std::string_view ClientResponse::HeaderValue(std::string_view name) const {
  for (const Header& header : headers) {
    if (core::EqualsIgnoreAsciiCase(header.name, name)) return header.value;
  }
  return {};
}

struct HttpClient::Impl {
  explicit Impl(HttpClientOptions client_options)
      : options(std::move(client_options)),
        http_proxy(ParseProxy("http_proxy", options.http_proxy)),
        https_proxy(ParseProxy("https_proxy", options.https_proxy)) {}

  StatusOr<const Proxy*> ProxyFor(const Endpoint& endpoint) const;
  StatusOr<ssl::context*> TlsContext();
  StatusOr<std::unique_ptr<Connection>> Open(const Endpoint& endpoint, const Proxy* proxy, Deadline total_deadline);
  std::unique_ptr<Connection> TakeIdle(const std::string& key);
  void ReturnIdle(const std::string& key, std::unique_ptr<Connection> connection);
  Exchange Run(Connection& connection, const std::string& peer, const std::string& head, const ClientRequest& request,
               Deadline deadline);

  // What a call settles before it touches a connection.
  struct CallPlan {
    const Proxy* proxy = nullptr;
    std::string head;
    Deadline deadline;
    std::string pool_key;
    std::string peer;
  };
  Status Plan(const Endpoint& endpoint, const ClientRequest& request, CallPlan& plan);

  const HttpClientOptions options;
  const StatusOr<std::optional<Proxy>> http_proxy;
  const StatusOr<std::optional<Proxy>> https_proxy;
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> connections_opened{0};
  std::atomic<std::uint64_t> stale_replays{0};

  // Holds the connections' sockets and is never run: a call's I/O blocks
  // its own thread (DeadlineSocket). Declared before the pool.
  asio::io_context io{1};

  std::mutex tls_mutex;
  // Made at the first https call: plain-http deployments (local stacks, the
  // Lambda Runtime API) never pay for reading the CA bundle. Declared before
  // the pool, whose TLS streams were made from it.
  std::unique_ptr<ssl::context> tls_context;

  std::mutex pool_mutex;
  // Idle connections by PoolKey(); the most recently used last.
  std::map<std::string, std::vector<std::unique_ptr<Connection>>> idle;
};

// Null: direct.
StatusOr<const Proxy*> HttpClient::Impl::ProxyFor(const Endpoint& endpoint) const {
  const StatusOr<std::optional<Proxy>>& configured = endpoint.scheme == "https" ? https_proxy : http_proxy;
  const Proxy* const direct = nullptr;
  if (configured.ok() && !configured->has_value()) return direct;
  if (NoProxyMatches(options.no_proxy, endpoint)) return direct;
  if (!configured.ok()) return configured.status();
  return &**configured;
}

StatusOr<ssl::context*> HttpClient::Impl::TlsContext() {
  std::lock_guard lock(tls_mutex);
  if (tls_context) return tls_context.get();
  std::unique_ptr<ssl::context> context;
  try {
    context = std::make_unique<ssl::context>(ssl::context::tls_client);
  } catch (const std::exception& e) {
    return Status(Code::kUnavailable, std::string("cannot create a TLS context: ") + e.what());
  }
  SSL_CTX* native = context->native_handle();
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) {
    return Status(Code::kUnavailable, "cannot require TLS 1.2 or later");
  }
  // 112-bit security at least (RSA/DH of 2048 bits, no SHA-1 signatures):
  // what Debian's and Amazon Linux's system policies ask, set here because
  // openssl.cnf is not read (crypto::InitializeOpenSsl).
  SSL_CTX_set_security_level(native, 2);
  context->set_verify_mode(ssl::verify_peer);
  // Certificates are parsed only when a handshake needs them (ca_store.h).
  X509_STORE* const store = SSL_CTX_get_cert_store(native);
  const StatusOr<CaStore*> attached = CaStore::AttachTo(store);
  if (!attached.ok()) {
    return Status(Code::kUnavailable, "cannot set up the trusted CAs: " + attached.status().message());
  }
  CaStore* const ca_store = *attached;
  if (!options.ca_file.empty()) {
    if (const Status loaded = ca_store->AddFile(options.ca_file); !loaded.ok()) {
      return Status(Code::kUnavailable, "cannot load the CA file: " + loaded.message());
    }
  } else {
    // Failures here leave fewer trusted CAs: the handshake then says which
    // certificate could not be verified, which is the useful message.
    for (const std::string& file : DefaultCaFiles()) (void)ca_store->AddFile(file);
    // What SSL_CTX_set_default_verify_paths adds besides its file (which it
    // would parse at once): the hashed directory (SSL_CERT_DIR, else
    // OPENSSLDIR/certs), read one subject at a time. Its third source, in
    // OpenSSL 3.0 an OSSL_STORE over that same directory, adds nothing.
    X509_LOOKUP* const directory = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
    if (directory != nullptr) X509_LOOKUP_add_dir(directory, nullptr, X509_FILETYPE_DEFAULT);
  }
  tls_context = std::move(context);
  return tls_context.get();
}

// Connects to `endpoint`, or to `proxy` and, for https, through its tunnel.
StatusOr<std::unique_ptr<Connection>> HttpClient::Impl::Open(const Endpoint& endpoint, const Proxy* proxy,
                                                             Deadline total_deadline) {
  const Deadline deadline = Earlier(DeadlineAfter(options.connect_timeout), total_deadline);
  ssl::context* tls = nullptr;
  if (endpoint.scheme == "https") {
    IMGSVC_ASSIGN_OR_RETURN(tls, TlsContext());
  }
  const Endpoint& first_hop = proxy != nullptr ? proxy->endpoint : endpoint;
  const std::string first_hop_name = (proxy != nullptr ? "proxy " : "") + first_hop.Authority();
  IMGSVC_ASSIGN_OR_RETURN(const std::vector<tcp::endpoint> addresses, Resolve(first_hop, deadline));

  auto connection = std::make_unique<Connection>(io, tls);
  DeadlineSocket& socket = connection->socket();
  socket.set_deadline(deadline);
  const ErrorCode error = socket.Connect(addresses);
  if (error == beast::error::timeout) {
    return Status(Code::kDeadlineExceeded, "connecting to " + first_hop_name + " timed out");
  }
  if (error) return Status(Code::kUnavailable, "cannot connect to " + first_hop_name + ": " + error.message());
  ErrorCode ignored;
  // Requests go out in one or two writes; waiting to coalesce them only adds latency.
  socket.lowest_layer().set_option(tcp::no_delay(true), ignored);

  if (TlsStream* tls_stream = connection->tls()) {
    if (proxy != nullptr) IMGSVC_RETURN_IF_ERROR(OpenTunnel(*connection, *proxy, endpoint, deadline));
    IMGSVC_RETURN_IF_ERROR(Handshake(*connection, *tls_stream, endpoint, deadline));
  }
  connections_opened.fetch_add(1, std::memory_order_relaxed);
  return connection;
}

std::unique_ptr<Connection> HttpClient::Impl::TakeIdle(const std::string& key) {
  std::lock_guard lock(pool_mutex);
  const auto found = idle.find(key);
  if (found == idle.end() || found->second.empty()) return nullptr;
  std::unique_ptr<Connection> connection = std::move(found->second.back());
  found->second.pop_back();
  return connection;
}

void HttpClient::Impl::ReturnIdle(const std::string& key, std::unique_ptr<Connection> connection) {
  std::lock_guard lock(pool_mutex);
  std::vector<std::unique_ptr<Connection>>& connections = idle[key];
  if (connections.size() < options.max_idle_per_endpoint) connections.push_back(std::move(connection));
}

Exchange HttpClient::Impl::Run(Connection& connection, const std::string& peer, const std::string& head,
                               const ClientRequest& request, Deadline deadline) {
  return std::visit(
      [&](auto& stream) {
        return RunExchange(connection, stream, peer, head, request, options.max_response_body, deadline);
      },
      connection.stream());
}

HttpClient::HttpClient(HttpClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpClient::~HttpClient() = default;

Status HttpClient::Impl::Plan(const Endpoint& endpoint, const ClientRequest& request, CallPlan& plan) {
  requests.fetch_add(1, std::memory_order_relaxed);
  IMGSVC_RETURN_IF_ERROR(CheckEndpoint(endpoint));
  IMGSVC_ASSIGN_OR_RETURN(plan.proxy, ProxyFor(endpoint));
  // An http request is the proxy's to forward; an https one crosses its tunnel unchanged.
  const Proxy* const forwarding_proxy = endpoint.scheme == "http" ? plan.proxy : nullptr;
  IMGSVC_ASSIGN_OR_RETURN(plan.head, SerializeHead(endpoint, request, forwarding_proxy));
  plan.deadline = DeadlineAfter(request.timeout.value_or(options.total_timeout));
  plan.pool_key = PoolKey(endpoint, plan.proxy);
  plan.peer = PeerName(endpoint, plan.proxy);
  return Status::Ok();
}

StatusOr<ClientResponse> HttpClient::Send(const Endpoint& endpoint, const ClientRequest& request) {
  Impl::CallPlan plan;
  IMGSVC_RETURN_IF_ERROR(impl_->Plan(endpoint, request, plan));
  std::unique_ptr<Connection> connection = impl_->TakeIdle(plan.pool_key);
  const bool reused = connection != nullptr;
  if (!reused) {
    IMGSVC_ASSIGN_OR_RETURN(connection, impl_->Open(endpoint, plan.proxy, plan.deadline));
  }
  Exchange exchange = impl_->Run(*connection, plan.peer, plan.head, request, plan.deadline);

  // A pooled connection the peer closed while it sat idle (its idle timer, a
  // Lambda freeze) fails before any byte of the answer; the request may or
  // may not have been seen, so only a replayable one is sent again.
  const bool stale =
      reused && !exchange.status.ok() && !exchange.answer_started && exchange.status.code() != Code::kDeadlineExceeded;
  if (stale) {
    if (!request.replayable) {
      return Status(Code::kUnavailable, "pooled connection to " + plan.peer +
                                            " failed before an answer; request not replayable, not resent (" +
                                            exchange.status.message() + ")");
    }
    impl_->stale_replays.fetch_add(1, std::memory_order_relaxed);
    connection.reset();
    IMGSVC_ASSIGN_OR_RETURN(connection, impl_->Open(endpoint, plan.proxy, plan.deadline));
    exchange = impl_->Run(*connection, plan.peer, plan.head, request, plan.deadline);
  }

  if (!exchange.status.ok()) return exchange.status;
  if (exchange.reusable) impl_->ReturnIdle(plan.pool_key, std::move(connection));
  return std::move(exchange.response);
}

struct PendingExchange::State {
  HttpClient::Impl* client = nullptr;
  std::unique_ptr<Connection> connection;
  std::string pool_key;
  std::string peer;
  bool head_request = false;
  ErrorCode write_error;
};

StatusOr<PendingExchange> HttpClient::Begin(const Endpoint& endpoint, const ClientRequest& request) {
  Impl::CallPlan plan;
  IMGSVC_RETURN_IF_ERROR(impl_->Plan(endpoint, request, plan));
  auto state = std::make_unique<PendingExchange::State>();
  state->client = impl_.get();
  state->pool_key = std::move(plan.pool_key);
  state->peer = std::move(plan.peer);
  state->head_request = request.method == "HEAD";
  // A new connection: a pooled one that died while idle would need the
  // request sent again, which Finish could not do.
  IMGSVC_ASSIGN_OR_RETURN(state->connection, impl_->Open(endpoint, plan.proxy, plan.deadline));
  Connection& connection = *state->connection;
  state->write_error = std::visit(
      [&](auto& stream) { return WriteRequest(connection, stream, plan.head, request, plan.deadline); },
      connection.stream());
  return PendingExchange(std::move(state));
}

PendingExchange::PendingExchange(std::unique_ptr<State> state) : state_(std::move(state)) {}
PendingExchange::PendingExchange(PendingExchange&&) noexcept = default;
PendingExchange& PendingExchange::operator=(PendingExchange&&) noexcept = default;
PendingExchange::~PendingExchange() = default;

StatusOr<ClientResponse> PendingExchange::Finish(std::optional<std::chrono::milliseconds> timeout) && {
  if (state_ == nullptr) return Status(Code::kInternal, "no exchange pending");
  const std::unique_ptr<State> state = std::move(state_);
  const HttpClientOptions& options = state->client->options;
  const Deadline deadline = DeadlineAfter(timeout.value_or(options.total_timeout));
  Connection& connection = *state->connection;
  Exchange exchange = std::visit(
      [&](auto& stream) {
        return ReadAnswer(connection, stream, state->peer, state->head_request, state->write_error,
                          options.max_response_body, deadline);
      },
      connection.stream());
  if (!exchange.status.ok()) return exchange.status;
  if (exchange.reusable) state->client->ReturnIdle(state->pool_key, std::move(state->connection));
  return std::move(exchange.response);
}

Status HttpClient::Preconnect(const Endpoint& endpoint) {
  IMGSVC_RETURN_IF_ERROR(CheckEndpoint(endpoint));
  IMGSVC_ASSIGN_OR_RETURN(const Proxy* const proxy, impl_->ProxyFor(endpoint));
  IMGSVC_ASSIGN_OR_RETURN(std::unique_ptr<Connection> connection,
                          impl_->Open(endpoint, proxy, DeadlineAfter(impl_->options.total_timeout)));
  impl_->ReturnIdle(PoolKey(endpoint, proxy), std::move(connection));
  return Status::Ok();
}

std::chrono::milliseconds HttpClient::total_timeout() const { return impl_->options.total_timeout; }

HttpClient::Stats HttpClient::stats() const {
  Stats stats;
  stats.requests = impl_->requests.load(std::memory_order_relaxed);
  stats.connections_opened = impl_->connections_opened.load(std::memory_order_relaxed);
  stats.stale_replays = impl_->stale_replays.load(std::memory_order_relaxed);
  return stats;
}

void SetThreadWaitHook(WaitHook* hook) { t_wait_hook = hook; }

}  // namespace imgsvc::net
