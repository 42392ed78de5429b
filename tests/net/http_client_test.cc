// Tests of the outbound HTTP client against real loopback servers: a scripted
// POSIX-socket server that records the bytes it receives, an asio::ssl server
// whose certificates come from a throwaway CA made here with OpenSSL, and a
// CONNECT proxy in front of it.
#include "net/http_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "support/early_answer_peer.h"
#include "support/loopback_socket.h"

namespace imgsvc::net {
namespace http_client_test {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// A scripted plain-HTTP server.

struct Received {
  std::size_t connection = 0;  // which accepted connection, counted from 0
  std::string raw;             // request line, headers and body as they arrived
};

struct Reply {
  std::string bytes;                   // written as they are
  bool close_after = false;            // close the connection once written
  bool never = false;                  // never answer; hold the connection open
  std::chrono::milliseconds delay{0};  // wait this long before answering
};

Reply Answer(std::string_view body, std::string_view extra_headers = "") {
  Reply reply;
  reply.bytes = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
                std::string(extra_headers) + "\r\n" + std::string(body);
  return reply;
}

std::size_t ContentLengthOf(std::string_view head) {
  std::string lower(head);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::size_t at = lower.find("\r\ncontent-length:");
  if (at == std::string::npos) return 0;
  return std::strtoul(lower.c_str() + at + 17, nullptr, 10);
}

// A listening socket on the loopback address of `family` with an ephemeral
// port, or -1.
int ListenOnLoopback(int family, std::uint16_t& port) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_storage address{};
  socklen_t length = 0;
  if (family == AF_INET6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    v6->sin6_family = AF_INET6;
    v6->sin6_addr = in6addr_loopback;
    length = sizeof(sockaddr_in6);
  } else {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
    v4->sin_family = AF_INET;
    v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    length = sizeof(sockaddr_in);
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    return -1;
  }
  port = ntohs(family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&address)->sin6_port
                                  : reinterpret_cast<sockaddr_in*>(&address)->sin_port);
  return fd;
}

// Waits (polling, so a stopping flag is seen) until `fd` is readable; false
// when `stopping` became true first.
bool WaitReadable(int fd, const std::atomic<bool>& stopping) {
  while (!stopping) {
    pollfd waiter{fd, POLLIN, 0};
    if (::poll(&waiter, 1, 50) > 0) return true;
  }
  return false;
}

bool SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Listens on the loopback address of `family`; each connection is served on
// its own thread, one request at a time, as the script says.
class ScriptedServer {
 public:
  using Script = std::function<Reply(const Received&)>;

  explicit ScriptedServer(Script script, int family = AF_INET)
      : script_(std::move(script)), family_(family), listen_fd_(ListenOnLoopback(family, port_)) {
    if (listen_fd_ >= 0) acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~ScriptedServer() {
    stopping_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    for (std::thread& thread : connection_threads_) thread.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }

  ScriptedServer(const ScriptedServer&) = delete;
  ScriptedServer& operator=(const ScriptedServer&) = delete;

  bool listening() const { return listen_fd_ >= 0; }
  std::uint16_t port() const { return port_; }
  std::string Url() const {
    return std::string(family_ == AF_INET6 ? "http://[::1]:" : "http://127.0.0.1:") + std::to_string(port_);
  }
  Endpoint endpoint() const { return Endpoint::Parse(Url()).value(); }
  std::string authority() const { return endpoint().Authority(); }

  std::vector<Received> received() const {
    std::lock_guard lock(mutex_);
    return received_;
  }
  std::size_t accepted() const {
    std::lock_guard lock(mutex_);
    return accepted_;
  }
  // Waits (bounded) until `count` connections have ended on the server side.
  bool WaitForClosed(std::size_t count) {
    std::unique_lock lock(mutex_);
    return closed_changed_.wait_for(lock, 20s, [&] { return closed_ >= count; });
  }

 private:
  // False once stopping, or when the peer closed or failed.
  bool ReadMore(int fd, std::string& pending) {
    if (!WaitReadable(fd, stopping_)) return false;
    char chunk[16384];
    const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    pending.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  std::optional<std::string> NextRequest(int fd, std::string& pending) {
    std::size_t head_end = std::string::npos;
    while ((head_end = pending.find("\r\n\r\n")) == std::string::npos) {
      if (!ReadMore(fd, pending)) return std::nullopt;
    }
    const std::size_t total = head_end + 4 + ContentLengthOf(std::string_view(pending).substr(0, head_end + 2));
    while (pending.size() < total) {
      if (!ReadMore(fd, pending)) return std::nullopt;
    }
    std::string request = pending.substr(0, total);
    pending.erase(0, total);
    return request;
  }

  void Serve(int fd, std::size_t index) {
    std::string pending;
    while (std::optional<std::string> raw = NextRequest(fd, pending)) {
      Received request{index, std::move(*raw)};
      {
        std::lock_guard lock(mutex_);
        received_.push_back(request);
      }
      const Reply reply = script_(request);
      if (reply.never) {
        // Held open until the client gives up and closes, or the server stops.
        while (ReadMore(fd, pending)) {
        }
        break;
      }
      std::this_thread::sleep_for(reply.delay);
      if (!SendAll(fd, reply.bytes) || reply.close_after) break;
    }
    ::close(fd);
    std::lock_guard lock(mutex_);
    ++closed_;
    closed_changed_.notify_all();
  }

  void AcceptLoop() {
    while (WaitReadable(listen_fd_, stopping_)) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::size_t index = 0;
      {
        std::lock_guard lock(mutex_);
        index = accepted_++;
      }
      connection_threads_.emplace_back([this, fd, index] { Serve(fd, index); });
    }
  }

  Script script_;
  int family_;
  std::uint16_t port_ = 0;  // set by ListenOnLoopback, hence before listen_fd_
  int listen_fd_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::condition_variable closed_changed_;
  std::vector<Received> received_;
  std::size_t accepted_ = 0;
  std::size_t closed_ = 0;
  std::thread acceptor_;
  std::vector<std::thread> connection_threads_;  // touched by the acceptor only, until it is joined
};

ClientRequest Get(std::string target) {
  ClientRequest request;
  request.target = std::move(target);
  return request;
}

// ---------------------------------------------------------------------------
// A throwaway PKI and a TLS server.

[[noreturn]] void OpenSslFailed(const char* what) { throw std::runtime_error(std::string("OpenSSL: ") + what); }

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

KeyPtr NewKey() {
  KeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), EVP_PKEY_free);
  if (!key) OpenSslFailed("EC key generation");
  return key;
}

// Signed by `issuer` (self-signed when null) with `signing_key`.
CertPtr NewCertificate(EVP_PKEY* subject_key, const std::string& common_name, X509* issuer, EVP_PKEY* signing_key,
                       const std::vector<std::pair<int, std::string>>& extensions, long serial) {
  CertPtr cert(X509_new(), X509_free);
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600) == nullptr ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    OpenSslFailed("certificate fields");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                                 -1, -1, 0) != 1 ||
      X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name) != 1) {
    OpenSslFailed("certificate names");
  }
  X509V3_CTX context{};
  X509V3_set_ctx(&context, issuer != nullptr ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : extensions) {
    X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str());
    if (extension == nullptr) OpenSslFailed("certificate extension");
    const int added = X509_add_ext(cert.get(), extension, -1);
    X509_EXTENSION_free(extension);
    if (added != 1) OpenSslFailed("adding a certificate extension");
  }
  if (X509_sign(cert.get(), signing_key, EVP_sha256()) == 0) OpenSslFailed("signing");
  return cert;
}

template <class Write>
std::string ToPem(Write write) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || write(bio.get()) != 1) OpenSslFailed("PEM encoding");
  std::string pem(BIO_ctrl_pending(bio.get()), '\0');
  if (BIO_read(bio.get(), pem.data(), static_cast<int>(pem.size())) != static_cast<int>(pem.size())) {
    OpenSslFailed("PEM read back");
  }
  return pem;
}

struct Identity {
  std::string cert_pem;
  std::string key_pem;
};

class TestCa {
 public:
  // Self-signed, or an intermediate CA signed by `parent`.
  explicit TestCa(const std::string& common_name = "imgsvc test CA", TestCa* parent = nullptr)
      : key_(NewKey()),
        cert_(NewCertificate(key_.get(), common_name, parent != nullptr ? parent->cert_.get() : nullptr,
                             parent != nullptr ? parent->key_.get() : key_.get(),
                             {{NID_basic_constraints, "critical,CA:TRUE"},
                              {NID_key_usage, "critical,keyCertSign,cRLSign"},
                              {NID_subject_key_identifier, "hash"}},
                             parent != nullptr ? ++parent->serial_ : 1)) {
    if (parent != nullptr) intermediates_pem_ = cert_pem() + parent->intermediates_pem_;
  }

  std::string cert_pem() const {
    return ToPem([&](BIO* bio) { return PEM_write_bio_X509(bio, cert_.get()); });
  }

  // alt_names as in openssl.cnf: "DNS:localhost,IP:127.0.0.1". The
  // certificate comes with the intermediate CAs up to the root, as servers
  // send it.
  Identity Issue(const std::string& common_name, const std::string& alt_names) {
    KeyPtr key = NewKey();
    CertPtr cert = NewCertificate(key.get(), common_name, cert_.get(), key_.get(),
                                  {{NID_basic_constraints, "critical,CA:FALSE"},
                                   {NID_key_usage, "critical,digitalSignature"},
                                   {NID_ext_key_usage, "serverAuth"},
                                   {NID_subject_alt_name, alt_names},
                                   {NID_authority_key_identifier, "keyid:always"}},
                                  ++serial_);
    return {ToPem([&](BIO* bio) { return PEM_write_bio_X509(bio, cert.get()); }) + intermediates_pem_,
            ToPem([&](BIO* bio) {
              return PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
            })};
  }

 private:
  KeyPtr key_;
  CertPtr cert_;
  long serial_ = 1;
  std::string intermediates_pem_;
};

// The CA certificate as a file, for HttpClientOptions::ca_file.
class TempFile {
 public:
  explicit TempFile(const std::string& content)
      : path_(std::filesystem::temp_directory_path() /
              ("imgsvc_http_client_test_" + std::to_string(::getpid()) + "_" + std::to_string(next_++) + ".pem")) {
    std::ofstream(path_) << content;
  }
  ~TempFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  std::string path() const { return path_.string(); }

 private:
  static inline std::atomic<int> next_{0};
  std::filesystem::path path_;
};

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using ErrorCode = boost::system::error_code;

constexpr std::string_view kTlsAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure";

// Answers every request on 127.0.0.1 with kTlsAnswer; records handshakes.
class TlsServer {
 public:
  explicit TlsServer(const Identity& identity, bool tls11_only = false)
      : context_(ssl::context::tls_server),
        acceptor_(io_, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    context_.use_certificate_chain(asio::buffer(identity.cert_pem));
    context_.use_private_key(asio::buffer(identity.key_pem), ssl::context::pem);
    if (tls11_only) {
      SSL_CTX* native = context_.native_handle();
      // OpenSSL 3 refuses TLS 1.1 above security level 0.
      SSL_CTX_set_security_level(native, 0);
      SSL_CTX_set_min_proto_version(native, TLS1_1_VERSION);
      SSL_CTX_set_max_proto_version(native, TLS1_1_VERSION);
    }
    Accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TlsServer() {
    io_.stop();
    thread_.join();
  }
  TlsServer(const TlsServer&) = delete;
  TlsServer& operator=(const TlsServer&) = delete;

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int handshakes() const { return handshakes_; }
  std::string last_server_name() const {
    std::lock_guard lock(mutex_);
    return last_server_name_;
  }

 private:
  using Stream = ssl::stream<asio::ip::tcp::socket>;

  void Accept() {
    acceptor_.async_accept([this](const ErrorCode& error, asio::ip::tcp::socket socket) {
      if (error) return;
      auto stream = std::make_shared<Stream>(std::move(socket), context_);
      stream->async_handshake(ssl::stream_base::server, [this, stream](const ErrorCode& handshake_error) {
        OnHandshake(stream, handshake_error);
      });
      Accept();
    });
  }

  void OnHandshake(const std::shared_ptr<Stream>& stream, const ErrorCode& handshake_error) {
    if (handshake_error) return;
    ++handshakes_;
    {
      const char* name = SSL_get_servername(stream->native_handle(), TLSEXT_NAMETYPE_host_name);
      std::lock_guard lock(mutex_);
      last_server_name_ = name != nullptr ? name : "";
    }
    auto request = std::make_shared<std::string>();
    asio::async_read_until(*stream, asio::dynamic_buffer(*request), "\r\n\r\n",
                           [this, stream, request](const ErrorCode& read_error, std::size_t) {
                             if (read_error) return;
                             // Kept open once answered: closing with a request's body
                             // unread resets the connection, which can discard the
                             // answer before the client has read it.
                             asio::async_write(*stream, asio::buffer(kTlsAnswer),
                                               [this, stream](const ErrorCode&, std::size_t) {
                                                 answered_.push_back(stream);
                                               });
                           });
  }

  ssl::context context_;  // outlives io_, whose pending handlers hold streams made from it
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  std::vector<std::shared_ptr<Stream>> answered_;  // touched on io_'s thread only, until it is joined
  std::atomic<int> handshakes_{0};
  mutable std::mutex mutex_;
  std::string last_server_name_;
  std::thread thread_;
};

// Whether a client willing to speak TLS 1.1 gets through: proves the server
// really offers TLS 1.1, so a refusal by HttpClient is the client's doing.
bool PermissiveTls11ClientConnects(std::uint16_t port) {
  asio::io_context io;
  ssl::context context(ssl::context::tls_client);
  SSL_CTX* native = context.native_handle();
  SSL_CTX_set_security_level(native, 0);
  SSL_CTX_set_min_proto_version(native, TLS1_1_VERSION);
  SSL_CTX_set_max_proto_version(native, TLS1_1_VERSION);
  context.set_verify_mode(ssl::verify_none);
  ssl::stream<asio::ip::tcp::socket> stream(io, context);
  ErrorCode error;
  stream.lowest_layer().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), error);
  if (!error) stream.handshake(ssl::stream_base::client, error);
  return !error;
}

Endpoint HttpsEndpoint(const std::string& host, std::uint16_t port) {
  return Endpoint::Parse("https://" + host + ":" + std::to_string(port)).value();
}

// A proxy that only tunnels: records each request head, answers 200 and pipes
// bytes both ways between the client and 127.0.0.1 at the port the CONNECT
// line names (whatever its host). Given a `refusal`, sends that instead and
// closes.
class ConnectProxy {
 public:
  explicit ConnectProxy(std::string refusal = "")
      : refusal_(std::move(refusal)), listen_fd_(ListenOnLoopback(AF_INET, port_)) {
    if (listen_fd_ >= 0) acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~ConnectProxy() {
    stopping_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    for (std::thread& thread : tunnels_) thread.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  ConnectProxy(const ConnectProxy&) = delete;
  ConnectProxy& operator=(const ConnectProxy&) = delete;

  bool listening() const { return listen_fd_ >= 0; }
  // userinfo: "" or "user:pass@".
  std::string Url(const std::string& userinfo = "") const {
    return "http://" + userinfo + "127.0.0.1:" + std::to_string(port_);
  }
  std::size_t accepted() const { return accepted_; }
  std::vector<std::string> heads() const {
    std::lock_guard lock(mutex_);
    return heads_;
  }

 private:
  void AcceptLoop() {
    while (WaitReadable(listen_fd_, stopping_)) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++accepted_;
      tunnels_.emplace_back([this, fd] {
        Serve(fd);
        ::close(fd);
      });
    }
  }

  void Serve(int client) {
    std::string head;
    char chunk[16384];
    while (head.find("\r\n\r\n") == std::string::npos) {
      if (!WaitReadable(client, stopping_)) return;
      const ssize_t n = ::recv(client, chunk, sizeof(chunk), 0);
      if (n <= 0) return;
      head.append(chunk, static_cast<std::size_t>(n));
    }
    {
      std::lock_guard lock(mutex_);
      heads_.push_back(head);
    }
    if (!refusal_.empty()) {
      SendAll(client, refusal_);
      return;
    }
    const int upstream = ConnectUpstream(head);
    if (upstream < 0) {
      SendAll(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    if (SendAll(client, "HTTP/1.1 200 Connection established\r\n\r\n")) Pipe(client, upstream);
    ::close(upstream);
  }

  static int ConnectUpstream(const std::string& head) {
    const std::size_t target_end = head.find(" HTTP/");
    const std::size_t colon = head.rfind(':', target_end);
    if (!head.starts_with("CONNECT ") || target_end == std::string::npos || colon == std::string::npos) return -1;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(std::strtoul(head.c_str() + colon + 1, nullptr, 10)));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  // Until either side closes, or the proxy stops.
  void Pipe(int client, int upstream) {
    char chunk[16384];
    while (!stopping_) {
      std::array<pollfd, 2> waiters = {pollfd{client, POLLIN, 0}, pollfd{upstream, POLLIN, 0}};
      if (::poll(waiters.data(), waiters.size(), 50) <= 0) continue;
      for (std::size_t i = 0; i < waiters.size(); ++i) {
        if (waiters[i].revents == 0) continue;
        const ssize_t n = ::recv(waiters[i].fd, chunk, sizeof(chunk), 0);
        if (n <= 0 || !SendAll(waiters[1 - i].fd, std::string_view(chunk, static_cast<std::size_t>(n)))) return;
      }
    }
  }

  std::string refusal_;
  std::uint16_t port_ = 0;  // set by ListenOnLoopback, hence before listen_fd_
  int listen_fd_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> accepted_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> heads_;
  std::thread acceptor_;
  std::vector<std::thread> tunnels_;  // touched by the acceptor only, until it is joined
};

HttpClientOptions TrustingCa(const TempFile& ca_file) {
  HttpClientOptions options;
  options.ca_file = ca_file.path();
  return options;
}

// ---------------------------------------------------------------------------

TEST(EndpointTest, ParsesOriginsAndFormsAuthority) {
  const StatusOr<Endpoint> plain = Endpoint::Parse("http://example.com");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->scheme, "http");
  EXPECT_EQ(plain->host, "example.com");
  EXPECT_EQ(plain->port, 80);
  EXPECT_EQ(plain->Authority(), "example.com");
  EXPECT_EQ(plain->Origin(), "http://example.com");
  EXPECT_FALSE(plain->IsIpLiteralOrLocalhost());

  const StatusOr<Endpoint> custom = Endpoint::Parse("HTTPS://S3.Example.COM:8443/");
  ASSERT_TRUE(custom.ok()) << custom.status().ToString();
  EXPECT_EQ(custom->scheme, "https");
  EXPECT_EQ(custom->host, "s3.example.com");
  EXPECT_EQ(custom->port, 8443);
  EXPECT_EQ(custom->Authority(), "s3.example.com:8443");
  EXPECT_EQ(custom->Origin(), "https://s3.example.com:8443");

  const StatusOr<Endpoint> default_port = Endpoint::Parse("https://s3.amazonaws.com:443");
  ASSERT_TRUE(default_port.ok());
  EXPECT_EQ(default_port->port, 443);
  EXPECT_EQ(default_port->Authority(), "s3.amazonaws.com");
  EXPECT_EQ((Endpoint{"http", "host", 443}).Authority(), "host:443");

  const StatusOr<Endpoint> v6 = Endpoint::Parse("http://[::1]:4566");
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 4566);
  EXPECT_EQ(v6->Authority(), "[::1]:4566");
  EXPECT_EQ(Endpoint::Parse("https://[2001:db8::1]")->Authority(), "[2001:db8::1]");

  EXPECT_TRUE(v6->IsIpLiteralOrLocalhost());
  EXPECT_TRUE(Endpoint::Parse("http://127.0.0.1:9000")->IsIpLiteralOrLocalhost());
  EXPECT_TRUE(Endpoint::Parse("http://localhost:4566")->IsIpLiteralOrLocalhost());
  EXPECT_TRUE((Endpoint{"http", "LocalHost", 80}).IsIpLiteralOrLocalhost());
  EXPECT_FALSE(Endpoint::Parse("https://localhost.example.com")->IsIpLiteralOrLocalhost());

  for (const char* bad :
       {"ftp://host", "host:80", "http://", "http://host/path", "http://host/?q=1", "http://host?q", "http://host//",
        "http://host:0", "http://host:65536", "http://host:", "http://host:80x", "http://user@host", "http://[::1",
        "http://[zz]:1", "http://[::1]x", "http://[::1]:", "http://ho st", "http://host#frag"}) {
    const StatusOr<Endpoint> parsed = Endpoint::Parse(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), Code::kBadRequest) << bad;
  }
}

TEST(HttpClientTest, SendsRequestsByteExactWithHostAndContentLength) {
  ScriptedServer server([](const Received&) { return Answer("ok", "X-Reply: yes\r\nx-second: 2\r\n"); });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  const std::string host = server.authority();

  ClientRequest get = Get("/path/a%20b?q=1&r=2");
  get.headers = {{"X-Custom", "Value"}, {"x-lower", "v"}};
  const StatusOr<ClientResponse> got = client.Send(server.endpoint(), get);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body, "ok");
  ASSERT_EQ(got->headers.size(), 3u);
  EXPECT_EQ(got->headers[0].name, "Content-Length");
  EXPECT_EQ(got->headers[1].name, "X-Reply");
  EXPECT_EQ(got->headers[2].name, "x-second");
  EXPECT_EQ(got->HeaderValue("x-reply"), "yes");
  EXPECT_EQ(got->HeaderValue("X-SECOND"), "2");
  EXPECT_EQ(got->HeaderValue("absent"), "");

  ClientRequest post;
  post.method = "POST";
  post.target = "/upload";
  post.headers = {{"Content-Type", "text/plain"}};
  post.body = "hello";
  ASSERT_TRUE(client.Send(server.endpoint(), post).ok());

  ClientRequest empty_put;
  empty_put.method = "PUT";
  empty_put.target = "/empty";
  ASSERT_TRUE(client.Send(server.endpoint(), empty_put).ok());

  ClientRequest own_host = Get("/");
  own_host.headers = {{"host", "custom.example"}, {"content-length", "0"}};
  ASSERT_TRUE(client.Send(server.endpoint(), own_host).ok());

  const std::vector<Received> received = server.received();
  ASSERT_EQ(received.size(), 4u);
  EXPECT_EQ(received[0].raw,
            "GET /path/a%20b?q=1&r=2 HTTP/1.1\r\nHost: " + host + "\r\nX-Custom: Value\r\nx-lower: v\r\n\r\n");
  EXPECT_EQ(received[1].raw, "POST /upload HTTP/1.1\r\nHost: " + host +
                                 "\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(received[2].raw, "PUT /empty HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(received[3].raw, "GET / HTTP/1.1\r\nhost: custom.example\r\ncontent-length: 0\r\n\r\n");
}

TEST(HttpClientTest, RefusesRequestsThatWouldCorruptTheConnection) {
  ScriptedServer server([](const Received&) { return Answer("ok"); });
  ASSERT_TRUE(server.listening());
  HttpClient client;

  std::vector<ClientRequest> bad(9, Get("/"));
  bad[0].method = "GE T";
  bad[1].target = "no-slash";
  bad[2].target = "/a b";
  bad[3].headers = {{"X-Injected", "a\r\nEvil: 1"}};
  bad[4].headers = {{"Bad Name", "v"}};
  bad[5].headers = {{"Content-Length", "3"}};
  bad[5].body = "four";
  bad[6].headers = {{"Transfer-Encoding", "chunked"}};
  bad[7].headers = {{"X-Lone-Lf", "a\nEvil: 1"}};
  bad[8].headers = {{"X-Nul", std::string("a\0b", 3)}};
  for (std::size_t i = 0; i < bad.size(); ++i) {
    const StatusOr<ClientResponse> result = client.Send(server.endpoint(), bad[i]);
    ASSERT_FALSE(result.ok()) << i;
    EXPECT_EQ(result.status().code(), Code::kBadRequest) << i;
  }
  for (const Endpoint& endpoint : {Endpoint{"ftp", "127.0.0.1", server.port()}, Endpoint{"http", "", server.port()},
                                   Endpoint{"http", "a/b", server.port()}}) {
    const StatusOr<ClientResponse> result = client.Send(endpoint, Get("/"));
    ASSERT_FALSE(result.ok()) << endpoint.scheme << "://" << endpoint.host;
    EXPECT_EQ(result.status().code(), Code::kBadRequest);
  }
  EXPECT_EQ(server.accepted(), 0u);
  EXPECT_EQ(client.stats().requests, 12u);
}

TEST(HttpClientTest, KeepAliveReusesOneConnection) {
  ScriptedServer server([](const Received&) { return Answer("same"); });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  for (int i = 0; i < 3; ++i) {
    const StatusOr<ClientResponse> result = client.Send(server.endpoint(), Get("/" + std::to_string(i)));
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_EQ(result->body, "same");
  }
  EXPECT_EQ(client.stats().requests, 3u);
  EXPECT_EQ(client.stats().connections_opened, 1u);
  EXPECT_EQ(server.accepted(), 1u);
}

TEST(HttpClientTest, PreconnectLeavesAConnectionTheNextCallUses) {
  ScriptedServer server([](const Received&) { return Answer("warm"); });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  ASSERT_TRUE(client.Preconnect(server.endpoint()).ok());
  EXPECT_EQ(client.stats().connections_opened, 1u);
  EXPECT_EQ(client.stats().requests, 0u);
  const StatusOr<ClientResponse> result = client.Send(server.endpoint(), Get("/"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "warm");
  EXPECT_EQ(client.stats().connections_opened, 1u);
  EXPECT_EQ(server.accepted(), 1u);
}

TEST(HttpClientTest, PreconnectToNothingIsUnavailable) {
  const testing::LoopbackSocket refusing(/*listening=*/false);
  ASSERT_TRUE(refusing.ok());
  HttpClient client;
  EXPECT_EQ(client.Preconnect(Endpoint{"http", "127.0.0.1", refusing.port()}).code(), Code::kUnavailable);
  EXPECT_EQ(client.stats().connections_opened, 0u);
}

// Begin puts the request on the wire before it returns; Finish reads the
// answer, and the connection then serves the next call.
TEST(HttpClientTest, BeginSendsNowAndFinishReadsTheAnswerLater) {
  ScriptedServer server([](const Received& request) {
    return Answer(request.raw.starts_with("GET /early") ? "early answer" : "next answer");
  });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  StatusOr<PendingExchange> pending = client.Begin(server.endpoint(), Get("/early"));
  ASSERT_TRUE(pending.ok()) << pending.status().ToString();
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (server.received().empty() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(server.received().size(), 1u) << "the request waited for Finish";
  EXPECT_TRUE(server.received()[0].raw.starts_with("GET /early HTTP/1.1\r\n"));

  const StatusOr<ClientResponse> answer = std::move(*pending).Finish();
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->body, "early answer");
  const StatusOr<ClientResponse> next = client.Send(server.endpoint(), Get("/next"));
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->body, "next answer");
  EXPECT_EQ(client.stats().requests, 2u);
  EXPECT_EQ(client.stats().connections_opened, 1u);
}

// An answer that came, connection closed behind it, long before Finish is
// still read; the closed connection is not pooled.
TEST(HttpClientTest, FinishReadsAnAnswerThatCameLongBefore) {
  ScriptedServer server([](const Received&) {
    Reply reply = Answer("kept", "Connection: close\r\n");
    reply.close_after = true;
    return reply;
  });
  ASSERT_TRUE(server.listening());
  HttpClientOptions options;
  options.total_timeout = 200ms;  // shorter than the wait before Finish
  HttpClient client(options);
  StatusOr<PendingExchange> pending = client.Begin(server.endpoint(), Get("/"));
  ASSERT_TRUE(pending.ok()) << pending.status().ToString();
  ASSERT_TRUE(server.WaitForClosed(1));
  std::this_thread::sleep_for(300ms);

  const StatusOr<ClientResponse> answer = std::move(*pending).Finish();
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->body, "kept");
  ASSERT_TRUE(client.Send(server.endpoint(), Get("/again")).ok());
  EXPECT_EQ(client.stats().connections_opened, 2u);
}

TEST(HttpClientTest, FinishWaitsAtMostItsTimeout) {
  ScriptedServer server([](const Received&) {
    Reply reply;
    reply.never = true;
    return reply;
  });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  StatusOr<PendingExchange> pending = client.Begin(server.endpoint(), Get("/slow"));
  ASSERT_TRUE(pending.ok()) << pending.status().ToString();
  const StatusOr<ClientResponse> answer = std::move(*pending).Finish(300ms);
  EXPECT_EQ(answer.status().code(), Code::kDeadlineExceeded);
}

TEST(HttpClientTest, BeginToNothingIsUnavailable) {
  const testing::LoopbackSocket refusing(/*listening=*/false);
  ASSERT_TRUE(refusing.ok());
  HttpClient client;
  EXPECT_EQ(client.Begin(Endpoint{"http", "127.0.0.1", refusing.port()}, Get("/")).status().code(),
            Code::kUnavailable);
}

TEST(HttpClientTest, ConnectionCloseAnswerIsNotReused) {
  ScriptedServer server([](const Received&) {
    Reply reply = Answer("bye", "Connection: close\r\n");
    reply.close_after = true;
    return reply;
  });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  ASSERT_TRUE(client.Send(server.endpoint(), Get("/1")).ok());
  ASSERT_TRUE(client.Send(server.endpoint(), Get("/2")).ok());
  EXPECT_EQ(client.stats().connections_opened, 2u);
  EXPECT_EQ(client.stats().stale_replays, 0u);
}

TEST(HttpClientTest, NoIdleConnectionsKeptWhenThePoolBoundIsZero) {
  ScriptedServer server([](const Received&) { return Answer("ok"); });
  ASSERT_TRUE(server.listening());
  HttpClientOptions options;
  options.max_idle_per_endpoint = 0;
  HttpClient client(options);
  ASSERT_TRUE(client.Send(server.endpoint(), Get("/1")).ok());
  ASSERT_TRUE(client.Send(server.endpoint(), Get("/2")).ok());
  EXPECT_EQ(client.stats().connections_opened, 2u);
}

// The first answer claims keep-alive but the server closes right after, as an
// idle timeout would; the pooled connection is dead when the next call comes.
Reply CloseFirstConnection(const Received& request) {
  Reply reply = Answer(request.connection == 0 ? "first" : "second");
  reply.close_after = request.connection == 0;
  return reply;
}

TEST(HttpClientTest, StaleConnectionIsReplayedWhenReplayable) {
  ScriptedServer server(CloseFirstConnection);
  ASSERT_TRUE(server.listening());
  HttpClient client;
  ASSERT_TRUE(client.Send(server.endpoint(), Get("/a")).ok());
  ASSERT_TRUE(server.WaitForClosed(1));

  const StatusOr<ClientResponse> replayed = client.Send(server.endpoint(), Get("/b"));
  ASSERT_TRUE(replayed.ok()) << replayed.status().ToString();
  EXPECT_EQ(replayed->body, "second");
  EXPECT_EQ(client.stats().stale_replays, 1u);
  EXPECT_EQ(client.stats().connections_opened, 2u);
  const std::vector<Received> received = server.received();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[1].connection, 1u);
  EXPECT_THAT(received[1].raw, ::testing::StartsWith("GET /b "));
}

TEST(HttpClientTest, StaleConnectionIsNotReplayedWhenNotReplayable) {
  ScriptedServer server(CloseFirstConnection);
  ASSERT_TRUE(server.listening());
  HttpClient client;
  ASSERT_TRUE(client.Send(server.endpoint(), Get("/a")).ok());
  ASSERT_TRUE(server.WaitForClosed(1));

  ClientRequest once;
  once.method = "POST";
  once.target = "/once";
  once.body = "x";
  once.replayable = false;
  const StatusOr<ClientResponse> result = client.Send(server.endpoint(), once);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
  EXPECT_EQ(client.stats().stale_replays, 0u);
  EXPECT_EQ(client.stats().connections_opened, 1u);
  EXPECT_EQ(server.received().size(), 1u);
}

TEST(HttpClientTest, ReadsChunkedAnswersAndKeepsTheConnection) {
  ScriptedServer server([](const Received&) {
    Reply reply;
    reply.bytes = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    return reply;
  });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  for (int i = 0; i < 2; ++i) {
    const StatusOr<ClientResponse> result = client.Send(server.endpoint(), Get("/chunked"));
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_EQ(result->body, "hello world");
  }
  EXPECT_EQ(client.stats().connections_opened, 1u);
}

TEST(HttpClientTest, HeadAnswerHasNoBodyDespiteContentLength) {
  ScriptedServer server([](const Received& request) {
    if (request.raw.starts_with("HEAD ")) {
      Reply reply;
      reply.bytes = "HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n";
      return reply;
    }
    return Answer("after");
  });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  ClientRequest head = Get("/object");
  head.method = "HEAD";
  head.timeout = 20s;  // waiting for the 12345 bytes would end here
  const StatusOr<ClientResponse> result = client.Send(server.endpoint(), head);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, "");
  EXPECT_EQ(result->HeaderValue("content-length"), "12345");
  EXPECT_EQ(server.received()[0].raw, "HEAD /object HTTP/1.1\r\nHost: " + server.authority() + "\r\n\r\n");

  const StatusOr<ClientResponse> after = client.Send(server.endpoint(), Get("/next"));
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->body, "after");
  EXPECT_EQ(client.stats().connections_opened, 1u);
}

TEST(HttpClientTest, TotalTimeoutWhenTheServerNeverAnswers) {
  ScriptedServer server([](const Received&) {
    Reply reply;
    reply.never = true;
    return reply;
  });
  ASSERT_TRUE(server.listening());

  HttpClient per_request;
  ClientRequest request = Get("/slow");
  request.timeout = 300ms;
  const StatusOr<ClientResponse> overridden = per_request.Send(server.endpoint(), request);
  ASSERT_FALSE(overridden.ok());
  EXPECT_EQ(overridden.status().code(), Code::kDeadlineExceeded);

  HttpClientOptions options;
  options.total_timeout = 300ms;
  HttpClient from_options(options);
  const StatusOr<ClientResponse> defaulted = from_options.Send(server.endpoint(), Get("/slow"));
  ASSERT_FALSE(defaulted.ok());
  EXPECT_EQ(defaulted.status().code(), Code::kDeadlineExceeded);
}

// Waits in poll() itself, counting them, as a fiber scheduler's hook would
// wait in its reactor; or reports the deadline passed without waiting.
class CountingWaitHook final : public WaitHook {
 public:
  explicit CountingWaitHook(bool time_out = false) : time_out_(time_out) {}
  short Wait(int fd, short events, std::optional<std::chrono::steady_clock::time_point> deadline,
             bool& timed_out) override {
    ++waits;
    had_deadline = deadline.has_value();
    timed_out = time_out_;
    if (time_out_) return 0;
    pollfd waiter{fd, events, 0};
    return ::poll(&waiter, 1, -1) == 1 ? waiter.revents : short(POLLERR);
  }
  int waits = 0;
  bool had_deadline = false;

 private:
  bool time_out_;
};

TEST(HttpClientWaitHookTest, ACallWaitsThroughTheThreadsHook) {
  ScriptedServer server([](const Received&) { return Answer("hooked"); });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  CountingWaitHook hook;
  SetThreadWaitHook(&hook);
  const StatusOr<ClientResponse> result = client.Send(server.endpoint(), Get("/"));
  SetThreadWaitHook(nullptr);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "hooked");
  EXPECT_GE(hook.waits, 1);  // at least for the answer
  EXPECT_TRUE(hook.had_deadline);  // the client's total timeout

  const int waits_before = hook.waits;
  ASSERT_TRUE(client.Send(server.endpoint(), Get("/")).ok());  // without the hook: poll
  EXPECT_EQ(hook.waits, waits_before);
}

TEST(HttpClientWaitHookTest, ADeadlineTheHookReportsFailsTheCall) {
  ScriptedServer server([](const Received&) { return Answer("late"); });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  CountingWaitHook hook(/*time_out=*/true);
  SetThreadWaitHook(&hook);
  const StatusOr<ClientResponse> result = client.Send(server.endpoint(), Get("/"));
  SetThreadWaitHook(nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kDeadlineExceeded);
}

TEST(HttpClientTest, ZeroTimeoutWaitsAsLongAsItTakes) {
  ScriptedServer server([](const Received&) {
    Reply reply = Answer("late");
    reply.delay = 800ms;
    return reply;
  });
  ASSERT_TRUE(server.listening());
  HttpClientOptions options;
  options.total_timeout = 200ms;
  HttpClient client(options);
  ClientRequest request = Get("/next");
  request.timeout = 0ms;
  const StatusOr<ClientResponse> result = client.Send(server.endpoint(), request);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "late");
}

TEST(HttpClientTest, ConnectRefusedIsUnavailable) {
  const testing::LoopbackSocket refusing(/*listening=*/false);
  ASSERT_TRUE(refusing.ok());
  HttpClient client;
  const StatusOr<ClientResponse> result = client.Send(Endpoint{"http", "127.0.0.1", refusing.port()}, Get("/"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
  EXPECT_EQ(client.stats().connections_opened, 0u);
}

TEST(HttpClientTest, AnswerThatIsNotHttpIsUnavailable) {
  ScriptedServer server([](const Received&) {
    Reply reply;
    reply.bytes = "SSH-2.0-OpenSSH_9.2\r\n\r\n";
    reply.close_after = true;
    return reply;
  });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  const StatusOr<ClientResponse> result = client.Send(server.endpoint(), Get("/"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
}

TEST(HttpClientTest, AnswerBodyOverTheCapIsRefusedAndTheConnectionDropped) {
  ScriptedServer server([](const Received& request) {
    if (request.raw.starts_with("GET /big ")) return Answer(std::string(1000, 'x'));
    if (request.raw.starts_with("GET /chunked ")) {
      const std::string chunk(80, 'y');
      Reply reply;
      reply.bytes = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n" + chunk + "\r\n50\r\n" + chunk +
                    "\r\n0\r\n\r\n";
      return reply;
    }
    return Answer(std::string(100, 'z'));
  });
  ASSERT_TRUE(server.listening());
  HttpClientOptions options;
  options.max_response_body = 100;
  HttpClient client(options);

  for (const char* target : {"/big", "/chunked"}) {
    const StatusOr<ClientResponse> result = client.Send(server.endpoint(), Get(target));
    ASSERT_FALSE(result.ok()) << target;
    EXPECT_EQ(result.status().code(), Code::kUnavailable) << target;
  }
  const StatusOr<ClientResponse> at_cap = client.Send(server.endpoint(), Get("/at-cap"));
  ASSERT_TRUE(at_cap.ok()) << at_cap.status().ToString();
  EXPECT_EQ(at_cap->body.size(), 100u);
  EXPECT_EQ(client.stats().connections_opened, 3u);
  EXPECT_EQ(client.stats().stale_replays, 0u);
}

// More than the loopback socket buffers of both ends hold, so the request
// cannot be sent while the peer reads nothing.
constexpr std::size_t kBodyPastTheSocketBuffers = 32u << 20;

ClientRequest LargePut() {
  ClientRequest request;
  request.method = "PUT";
  request.target = "/object";
  request.body.assign(kBodyPastTheSocketBuffers, 'b');
  return request;
}

TEST(HttpClientTest, AnswerBeforeTheBodyWasReadIsTaken) {
  imgsvc::testing::EarlyAnswerPeer peer("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!");
  ASSERT_TRUE(peer.ok());
  HttpClientOptions options;
  options.total_timeout = 10s;
  HttpClient client(options);
  const StatusOr<ClientResponse> result = client.Send(Endpoint{"http", "127.0.0.1", peer.port()}, LargePut());
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->status, 413);
  EXPECT_EQ(result->body, "too big!");
}

TEST(HttpClientTest, WorksOverIpv6Loopback) {
  ScriptedServer server([](const Received&) { return Answer("v6"); }, AF_INET6);
  if (!server.listening()) GTEST_SKIP() << "::1 is not available here";
  HttpClient client;
  const StatusOr<ClientResponse> result = client.Send(server.endpoint(), Get("/"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "v6");
  EXPECT_EQ(server.received()[0].raw, "GET / HTTP/1.1\r\nHost: [::1]:" + std::to_string(server.port()) + "\r\n\r\n");
}

TEST(HttpClientTest, ParallelCallsFromEightThreads) {
  ScriptedServer server([](const Received& request) {
    const std::size_t target_start = request.raw.find(' ') + 1;
    return Answer(request.raw.substr(target_start, request.raw.find(' ', target_start) - target_start));
  });
  ASSERT_TRUE(server.listening());
  HttpClient client;
  constexpr int kThreads = 8;
  constexpr int kCallsPerThread = 25;
  std::atomic<int> correct{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        const std::string target = "/t" + std::to_string(t) + "/" + std::to_string(i);
        const StatusOr<ClientResponse> result = client.Send(server.endpoint(), Get(target));
        if (result.ok() && result->status == 200 && result->body == target) ++correct;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(correct.load(), kThreads * kCallsPerThread);
  EXPECT_EQ(client.stats().requests, static_cast<std::uint64_t>(kThreads * kCallsPerThread));
  // A connection is opened only when none is idle: never more than the callers.
  EXPECT_LE(client.stats().connections_opened, static_cast<std::uint64_t>(kThreads));
  EXPECT_EQ(client.stats().stale_replays, 0u);
}

TEST(HttpClientTlsTest, VerifiesTheServerAgainstTheGivenCa) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost,IP:127.0.0.1"));
  const TempFile ca_file(ca.cert_pem());
  HttpClientOptions options;
  options.ca_file = ca_file.path();
  HttpClient client(options);

  const StatusOr<ClientResponse> by_name = client.Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_TRUE(by_name.ok()) << by_name.status().ToString();
  EXPECT_EQ(by_name->status, 200);
  EXPECT_EQ(by_name->body, "secure");
  EXPECT_EQ(server.last_server_name(), "localhost");

  const StatusOr<ClientResponse> by_address = client.Send(HttpsEndpoint("127.0.0.1", server.port()), Get("/"));
  ASSERT_TRUE(by_address.ok()) << by_address.status().ToString();
  EXPECT_EQ(by_address->body, "secure");
  EXPECT_EQ(server.last_server_name(), "");  // no SNI for an address
  EXPECT_EQ(client.stats().connections_opened, 2u);
}

// The handshake, SNI included, happens at Preconnect; the call reuses it.
TEST(HttpClientTlsTest, PreconnectMakesTheHandshakeBeforeTheCall) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost"));
  const TempFile ca_file(ca.cert_pem());
  HttpClient client(TrustingCa(ca_file));
  ASSERT_TRUE(client.Preconnect(HttpsEndpoint("localhost", server.port())).ok());
  // The server completes its side when the client's last handshake message
  // arrives, which may be just after Preconnect returns.
  for (int i = 0; i < 500 && server.handshakes() == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(server.handshakes(), 1) << "no handshake before the call";
  EXPECT_EQ(server.last_server_name(), "localhost");
  const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "secure");
  EXPECT_EQ(server.handshakes(), 1);
  EXPECT_EQ(client.stats().connections_opened, 1u);
}

TEST(HttpClientTlsTest, AnswerBeforeTheBodyWasReadIsTaken) {
  // The server answers once it has the head, reads nothing more and closes.
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost"));
  const TempFile ca_file(ca.cert_pem());
  HttpClientOptions options = TrustingCa(ca_file);
  options.total_timeout = 10s;
  HttpClient client(options);
  const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint("localhost", server.port()), LargePut());
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "secure");
}

TEST(HttpClientTlsTest, UnknownIssuerFailsWithTheSystemCas) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost,IP:127.0.0.1"));
  HttpClient client;
  const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("verify"));
}

TEST(HttpClientTlsTest, CertificateForAnotherNameFails) {
  TestCa ca;
  TlsServer server(ca.Issue("other.example", "DNS:other.example,IP:10.9.8.7"));
  const TempFile ca_file(ca.cert_pem());
  HttpClientOptions options;
  options.ca_file = ca_file.path();
  HttpClient client(options);
  for (const char* host : {"localhost", "127.0.0.1"}) {
    const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint(host, server.port()), Get("/"));
    ASSERT_FALSE(result.ok()) << host;
    EXPECT_EQ(result.status().code(), Code::kUnavailable) << host;
    EXPECT_THAT(result.status().message(), HasSubstr("verify")) << host;
  }
  EXPECT_EQ(server.handshakes(), 0);
}

TEST(HttpClientTlsTest, MissingCaFileIsUnavailable) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost"));
  HttpClientOptions options;
  options.ca_file = "/nonexistent/imgsvc-ca.pem";
  HttpClient client(options);
  const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("/nonexistent/imgsvc-ca.pem"));
}

TEST(HttpClientTlsTest, RefusesTls11) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost,IP:127.0.0.1"), /*tls11_only=*/true);
  if (!PermissiveTls11ClientConnects(server.port())) {
    GTEST_SKIP() << "this OpenSSL cannot negotiate TLS 1.1 even at security level 0";
  }
  const TempFile ca_file(ca.cert_pem());
  HttpClientOptions options;
  options.ca_file = ca_file.path();
  HttpClient client(options);
  const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
}

// A system-like bundle: many CAs of other names, `middle` half way through.
std::string BundleAround(const std::string& middle) {
  static const std::vector<std::string> strangers = [] {
    std::vector<std::string> pems;
    for (int i = 0; i < 40; ++i) pems.push_back(TestCa("imgsvc stranger CA " + std::to_string(i)).cert_pem());
    return pems;
  }();
  std::string bundle;
  for (std::size_t i = 0; i < strangers.size(); ++i) {
    if (i == strangers.size() / 2) bundle += middle;
    bundle += strangers[i];
  }
  return bundle;
}

TEST(HttpClientTlsTest, TrustsTheOneCaOfALargeBundleThatSignedTheServer) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost,IP:127.0.0.1"));
  const TempFile with_ca(BundleAround(ca.cert_pem()));
  const StatusOr<ClientResponse> trusted =
      HttpClient(TrustingCa(with_ca)).Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_TRUE(trusted.ok()) << trusted.status().ToString();
  EXPECT_EQ(trusted->body, "secure");

  const TempFile without_ca(BundleAround(""));
  const StatusOr<ClientResponse> refused =
      HttpClient(TrustingCa(without_ca)).Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("certificate verify failed"));
}

TEST(HttpClientTlsTest, VerifiesAChainThroughAnIntermediateCa) {
  TestCa root("imgsvc test root CA");
  TestCa intermediate("imgsvc test intermediate CA", &root);
  TlsServer server(intermediate.Issue("localhost", "DNS:localhost"));
  const TempFile bundle(BundleAround(root.cert_pem()));
  const StatusOr<ClientResponse> result =
      HttpClient(TrustingCa(bundle)).Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "secure");
}

TEST(HttpClientTlsTest, TextBetweenTheCertificatesOfABundleIsSkipped) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost"));
  const TempFile bundle(BundleAround("# imgsvc test CA\ngarbage: not base64 -----\n" + ca.cert_pem() + "\n\n"));
  const StatusOr<ClientResponse> result =
      HttpClient(TrustingCa(bundle)).Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
}

TEST(HttpClientTlsTest, MalformedCaFileIsUnavailableAsOpenSslRefusesIt) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost"));
  std::string broken = TestCa("imgsvc broken CA").cert_pem();
  broken[broken.find('\n') + 10] = '*';  // not base64
  const TempFile bundle(BundleAround(ca.cert_pem() + broken));
  const StatusOr<ClientResponse> result =
      HttpClient(TrustingCa(bundle)).Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("cannot load the CA file"));
  EXPECT_EQ(server.handshakes(), 0);
}

TEST(HttpClientTlsTest, SystemTrustReadsSslCertFileAsOpenSslDoes) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost"));
  const TempFile bundle(BundleAround(ca.cert_pem()));
  const char* const old = std::getenv("SSL_CERT_FILE");
  const std::optional<std::string> restore = old != nullptr ? std::optional<std::string>(old) : std::nullopt;
  ::setenv("SSL_CERT_FILE", bundle.path().c_str(), 1);
  HttpClient client;
  const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  if (restore) {
    ::setenv("SSL_CERT_FILE", restore->c_str(), 1);
  } else {
    ::unsetenv("SSL_CERT_FILE");
  }
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "secure");
}

// ---------------------------------------------------------------------------
// Proxies.

// "user:p@ss" as Basic credentials.
constexpr std::string_view kProxyAuthorization = "Proxy-Authorization: Basic dXNlcjpwQHNz\r\n";

TEST(NoProxyTest, MatchesAsCurlReadsNoProxy) {
  struct Case {
    const char* no_proxy;
    const char* url;
    bool direct;
  };
  const std::vector<Case> cases = {
      {"", "http://example.com", false},
      {"example.com", "http://example.com", true},
      {"example.com", "http://www.example.com", true},
      {"example.com", "http://a.b.example.com:8080", true},
      {"example.com", "http://notexample.com", false},
      {"example.com", "http://example.com.evil.test", false},
      {".example.com", "http://example.com", true},
      {".example.com", "http://www.example.com", true},
      {"*.example.com", "http://www.example.com", true},
      {"Example.COM", "http://www.example.com", true},
      {"other.test , example.com", "https://www.example.com", true},
      {"other.test,,", "https://www.example.com", false},
      {"*", "https://anything.test:8443", true},
      {"other.test,*", "http://anything.test", true},
      {"example.com:8080", "http://example.com:8080", true},
      {"example.com:8080", "http://example.com", false},
      {"example.com:443", "https://example.com", true},
      {"example.com:x", "http://example.com", false},
      {"127.0.0.1", "http://127.0.0.1:9000", true},
      {"127.0.0.1", "http://127.0.0.2", false},
      {"127.0.0.1:9000", "http://127.0.0.1:9001", false},
      {"169.254.169.254", "http://169.254.169.254", true},
      {"3.4", "http://1.2.3.4", false},
      {"10.0.0.0/8", "http://10.200.3.4", true},
      {"10.0.0.0/8", "http://11.0.0.1", false},
      {"192.168.1.128/25", "http://192.168.1.200", true},
      {"192.168.1.128/25", "http://192.168.1.100", false},
      {"10.0.0.0/33", "http://10.0.0.1", false},
      {"10.0.0.0/8", "http://ten.example", false},
      {"::1", "http://[::1]:4566", true},
      {"0:0::1", "http://[::1]", true},
      {"[::1]:4566", "http://[::1]:4566", true},
      {"[::1]:4566", "http://[::1]:4567", false},
      {"fd00::/8", "http://[fd12:3456::1]", true},
      {"fd00::/8", "http://[fe80::1]", false},
      {"localhost", "http://localhost:4566", true},
      // Nothing is bypassed implicitly, and names are not resolved to match.
      {"", "http://localhost", false},
      {"", "http://127.0.0.1", false},
      {"localhost", "http://127.0.0.1", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(NoProxyMatches(c.no_proxy, Endpoint::Parse(c.url).value()), c.direct)
        << "no_proxy \"" << c.no_proxy << "\", " << c.url;
  }
  EXPECT_TRUE(NoProxyMatches("example.com", Endpoint{"http", "WWW.Example.COM", 80}));
}

TEST(ProxyOptionsFromEnvironmentTest, UpperCaseWinsAndLowerCaseFillsIn) {
  const auto from = [](std::map<std::string, std::string> environment) {
    return ProxyOptionsFromEnvironment([environment](const std::string& name) -> std::optional<std::string> {
      const auto found = environment.find(name);
      if (found == environment.end()) return std::nullopt;
      return found->second;
    });
  };
  const HttpClientOptions mixed = from({{"HTTPS_PROXY", "http://upper:3128"},
                                        {"https_proxy", "http://lower:3128"},
                                        {"HTTP_PROXY", ""},  // set but empty: as if unset
                                        {"http_proxy", "http://lower-http:8080"},
                                        {"no_proxy", "169.254.169.254,.internal"}});
  EXPECT_EQ(mixed.https_proxy, "http://upper:3128");
  EXPECT_EQ(mixed.http_proxy, "http://lower-http:8080");
  EXPECT_EQ(mixed.no_proxy, "169.254.169.254,.internal");
  EXPECT_EQ(mixed.connect_timeout, HttpClientOptions{}.connect_timeout);
  EXPECT_EQ(mixed.ca_file, "");

  const HttpClientOptions upper = from({{"HTTP_PROXY", "http://a:1"}, {"http_proxy", "http://b:1"},
                                        {"NO_PROXY", "upper.test"}, {"no_proxy", "lower.test"}});
  EXPECT_EQ(upper.http_proxy, "http://a:1");
  EXPECT_EQ(upper.https_proxy, "");
  EXPECT_EQ(upper.no_proxy, "upper.test");

  const HttpClientOptions none = from({});
  EXPECT_EQ(none.http_proxy, "");
  EXPECT_EQ(none.https_proxy, "");
  EXPECT_EQ(none.no_proxy, "");
}

// Also shows that loopback is not bypassed implicitly: localhost goes through the proxy.
TEST(HttpClientProxyTest, HttpsGoesThroughAConnectTunnelVerifyingTheOrigin) {
  TestCa ca;
  // Names the origin only: a check against the proxy's address would fail.
  TlsServer server(ca.Issue("localhost", "DNS:localhost"));
  ConnectProxy proxy;
  ASSERT_TRUE(proxy.listening());
  const TempFile ca_file(ca.cert_pem());
  HttpClientOptions options = TrustingCa(ca_file);
  options.https_proxy = proxy.Url("user:p%40ss@");
  HttpClient client(options);

  const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "secure");
  EXPECT_EQ(server.last_server_name(), "localhost");
  const std::string target = "localhost:" + std::to_string(server.port());
  const std::vector<std::string> heads = proxy.heads();
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_EQ(heads[0], "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n" + std::string(kProxyAuthorization) +
                          "\r\n");
}

TEST(HttpClientProxyTest, TunnelledCertificateForAnotherNameFails) {
  TestCa ca;
  TlsServer server(ca.Issue("other.example", "DNS:other.example"));
  ConnectProxy proxy;
  ASSERT_TRUE(proxy.listening());
  const TempFile ca_file(ca.cert_pem());
  HttpClientOptions options = TrustingCa(ca_file);
  options.https_proxy = proxy.Url();
  HttpClient client(options);

  const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("verify"));
  EXPECT_EQ(proxy.heads().size(), 1u);
  EXPECT_EQ(server.handshakes(), 0);
}

TEST(HttpClientProxyTest, RefusedTunnelIsUnavailableNamingTheProxyStatus) {
  ConnectProxy proxy(
      "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\n"
      "Content-Length: 0\r\n\r\n");
  ASSERT_TRUE(proxy.listening());
  HttpClientOptions options;
  options.https_proxy = proxy.Url("user:secret@");
  HttpClient client(options);

  // The origin's name is never resolved here: only the proxy is.
  const StatusOr<ClientResponse> result = client.Send(Endpoint::Parse("https://origin.example").value(), Get("/"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("407"));
  EXPECT_THAT(result.status().message(), ::testing::Not(HasSubstr("secret")));
  const std::vector<std::string> heads = proxy.heads();
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_THAT(heads[0], ::testing::StartsWith("CONNECT origin.example:443 HTTP/1.1\r\nHost: origin.example:443\r\n"));
  EXPECT_EQ(client.stats().connections_opened, 0u);
}

TEST(HttpClientProxyTest, HttpGoesToTheProxyInAbsoluteFormOnAPooledConnection) {
  ScriptedServer proxy([](const Received&) { return Answer("forwarded"); });
  ASSERT_TRUE(proxy.listening());
  const std::string address = "127.0.0.1:" + std::to_string(proxy.port());
  // With a scheme and a trailing slash, and as curl also takes it: bare.
  for (const std::string& url : {"http://user:p%40ss@" + address + "/", "user:p%40ss@" + address}) {
    HttpClientOptions options;
    options.http_proxy = url;
    HttpClient client(options);
    ClientRequest put;
    put.method = "PUT";
    put.target = "/bucket/key?x=1";
    put.body = "abc";
    for (int i = 0; i < 2; ++i) {
      const StatusOr<ClientResponse> result = client.Send(Endpoint::Parse("http://origin.example:8080").value(), put);
      ASSERT_TRUE(result.ok()) << url << ": " << result.status().ToString();
      EXPECT_EQ(result->body, "forwarded");
    }
    EXPECT_EQ(client.stats().connections_opened, 1u) << url;
  }
  const std::vector<Received> received = proxy.received();
  ASSERT_EQ(received.size(), 4u);
  for (const Received& request : received) {
    EXPECT_EQ(request.raw, "PUT http://origin.example:8080/bucket/key?x=1 HTTP/1.1\r\nHost: origin.example:8080\r\n" +
                               std::string(kProxyAuthorization) + "Content-Length: 3\r\n\r\nabc");
  }
}

TEST(HttpClientProxyTest, StaleProxyConnectionIsReplayedThroughTheProxy) {
  ScriptedServer proxy(CloseFirstConnection);
  ASSERT_TRUE(proxy.listening());
  HttpClientOptions options;
  options.http_proxy = proxy.Url();
  HttpClient client(options);
  const Endpoint origin = Endpoint::Parse("http://origin.example").value();
  ASSERT_TRUE(client.Send(origin, Get("/a")).ok());
  ASSERT_TRUE(proxy.WaitForClosed(1));

  const StatusOr<ClientResponse> replayed = client.Send(origin, Get("/b"));
  ASSERT_TRUE(replayed.ok()) << replayed.status().ToString();
  EXPECT_EQ(replayed->body, "second");
  EXPECT_EQ(client.stats().stale_replays, 1u);
  const std::vector<Received> received = proxy.received();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[1].connection, 1u);
  EXPECT_EQ(received[1].raw, "GET http://origin.example/b HTTP/1.1\r\nHost: origin.example\r\n\r\n");
}

TEST(HttpClientProxyTest, NoProxyHostsGoDirect) {
  ScriptedServer origin([](const Received&) { return Answer("direct"); });
  ScriptedServer forwarding_proxy([](const Received&) { return Answer("proxied"); });
  ConnectProxy tunnelling_proxy;
  TestCa ca;
  TlsServer tls_origin(ca.Issue("localhost", "DNS:localhost"));
  ASSERT_TRUE(origin.listening() && forwarding_proxy.listening() && tunnelling_proxy.listening());
  const TempFile ca_file(ca.cert_pem());
  HttpClientOptions options = TrustingCa(ca_file);
  options.http_proxy = forwarding_proxy.Url();
  options.https_proxy = tunnelling_proxy.Url();
  options.no_proxy = "example.com, 127.0.0.1,LOCALHOST:" + std::to_string(tls_origin.port());
  HttpClient client(options);

  const StatusOr<ClientResponse> plain = client.Send(origin.endpoint(), Get("/"));
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->body, "direct");
  EXPECT_EQ(origin.received()[0].raw, "GET / HTTP/1.1\r\nHost: " + origin.authority() + "\r\n\r\n");
  const StatusOr<ClientResponse> secure = client.Send(HttpsEndpoint("localhost", tls_origin.port()), Get("/"));
  ASSERT_TRUE(secure.ok()) << secure.status().ToString();
  EXPECT_EQ(secure->body, "secure");
  EXPECT_EQ(forwarding_proxy.accepted(), 0u);
  EXPECT_EQ(tunnelling_proxy.accepted(), 0u);

  // A name not listed still goes through the proxy.
  const StatusOr<ClientResponse> unlisted =
      client.Send(Endpoint{"http", "origin.test", origin.port()}, Get("/"));
  ASSERT_TRUE(unlisted.ok()) << unlisted.status().ToString();
  EXPECT_EQ(unlisted->body, "proxied");
}

TEST(HttpClientProxyTest, HttpsDoesNotFallBackToTheHttpProxy) {
  TestCa ca;
  TlsServer server(ca.Issue("localhost", "DNS:localhost"));
  ScriptedServer forwarding_proxy([](const Received&) { return Answer("proxied"); });
  ASSERT_TRUE(forwarding_proxy.listening());
  const TempFile ca_file(ca.cert_pem());
  HttpClientOptions options = TrustingCa(ca_file);
  options.http_proxy = forwarding_proxy.Url();
  HttpClient client(options);
  const StatusOr<ClientResponse> result = client.Send(HttpsEndpoint("localhost", server.port()), Get("/"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->body, "secure");
  EXPECT_EQ(forwarding_proxy.accepted(), 0u);
}

TEST(HttpClientProxyTest, UnusableProxyUrlFailsOnlyTheCallsThatNeedIt) {
  ScriptedServer origin([](const Received&) { return Answer("direct"); });
  ASSERT_TRUE(origin.listening());
  for (const char* url : {"https://user:secret@proxy.example:443", "socks5://user:secret@proxy.example:1080",
                          "http://user:secret@proxy.example:3128/path", "http://user:secret%zz@proxy.example",
                          "http://user:secret@", "http://user:secret@proxy.example:99999"}) {
    HttpClientOptions options;
    options.http_proxy = url;
    options.https_proxy = url;
    options.no_proxy = "127.0.0.1";
    HttpClient client(options);
    const StatusOr<ClientResponse> proxied = client.Send(Endpoint::Parse("https://s3.example").value(), Get("/"));
    ASSERT_FALSE(proxied.ok()) << url;
    EXPECT_EQ(proxied.status().code(), Code::kBadRequest) << url;
    EXPECT_THAT(proxied.status().message(), HasSubstr("https_proxy")) << url;
    EXPECT_THAT(proxied.status().message(), ::testing::Not(HasSubstr("secret"))) << url;

    const StatusOr<ClientResponse> direct = client.Send(origin.endpoint(), Get("/"));
    ASSERT_TRUE(direct.ok()) << url << ": " << direct.status().ToString();
    EXPECT_EQ(direct->body, "direct");
  }
}

}  // namespace http_client_test
}  // namespace imgsvc::net
