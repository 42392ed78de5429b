#include "tls_peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <system_error>
#include <utility>

namespace imgsvc::testing {
namespace tls_peers_detail {

// Generous bounds for a slow, noisy VM; every wait ends as soon as its fact holds.
constexpr std::chrono::milliseconds kCommandTimeout{120000};
constexpr std::chrono::milliseconds kStartTimeout{90000};
constexpr int kStartAttempts = 5;

// Extensions as a public CA would set them: the CA may only sign, the server
// certificate only serves, under the names the caller asks for.
std::string OpensslConfig(const std::string& subject_alt_names) {
  return "[req]\n"
         "distinguished_name = subject\n"
         "prompt = no\n"
         "[subject]\n"
         "CN = imgsvc test\n"
         "[ca_ext]\n"
         "basicConstraints = critical, CA:TRUE\n"
         "keyUsage = critical, keyCertSign, cRLSign\n"
         "subjectKeyIdentifier = hash\n"
         "[server_ext]\n"
         "basicConstraints = critical, CA:FALSE\n"
         "keyUsage = critical, digitalSignature\n"
         "extendedKeyUsage = serverAuth\n"
         "subjectAltName = " +
         subject_alt_names +
         "\n"
         "subjectKeyIdentifier = hash\n"
         "authorityKeyIdentifier = keyid\n";
}

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status(Code::kInternal, "cannot write " + path);
  return Status::Ok();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string MakeTempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/imgsvc-tls-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) return {};
  return pattern;
}

Status Openssl(const std::vector<std::string>& args) {
  IMGSVC_ASSIGN_OR_RETURN(CommandResult result, RunCommand(IMGSVC_OPENSSL, args, {}, kCommandTimeout));
  if (!result.exit.exited || result.exit.code != 0) {
    std::string command = "openssl";
    for (const std::string& arg : args) command += " " + arg;
    return Status(Code::kInternal, command + " failed (exit " + std::to_string(result.exit.code) + ", signal " +
                                       std::to_string(result.exit.signal) + "): " + result.stdout_text);
  }
  return Status::Ok();
}

// A self-signed CA certificate (P-256) at dir/name.crt, its key at dir/name.key.
Status MakeCa(const std::string& dir, const std::string& name, const std::string& config) {
  return Openssl({"req", "-x509", "-config", config, "-extensions", "ca_ext", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/" + name + ".key", "-out",
                  dir + "/" + name + ".crt", "-days", "2", "-subj", "/CN=imgsvc " + name});
}

// dir/server.crt, signed by dir/ca, for the names in the config's server_ext.
Status MakeServerCertificate(const std::string& dir, const std::string& config) {
  IMGSVC_RETURN_IF_ERROR(Openssl({"req", "-new", "-config", config, "-newkey", "ec", "-pkeyopt",
                                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/server.key", "-out",
                                  dir + "/server.csr", "-subj", "/CN=localhost"}));
  return Openssl({"x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/ca.crt", "-CAkey", dir + "/ca.key",
                  "-set_serial", "2", "-days", "2", "-extfile", config, "-extensions", "server_ext", "-out",
                  dir + "/server.crt"});
}

// A port nothing listens on right now; nginx may still lose it to a racing
// process, which TlsFront::Start handles by trying again.
StatusOr<std::uint16_t> FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status(Code::kInternal, "socket failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  const bool bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0 &&
                     ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  ::close(fd);
  if (!bound) return Status(Code::kInternal, "cannot bind a loopback port");
  return ntohs(address.sin_port);
}

bool AcceptsConnections(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  const bool connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return connected;
}

}  // namespace tls_peers_detail

StatusOr<std::unique_ptr<TlsFront>> TlsFront::Start(const TlsFrontOptions& options) {
  const std::string dir = tls_peers_detail::MakeTempDir();
  if (dir.empty()) return Status(Code::kInternal, "cannot create a temp dir");
  std::unique_ptr<TlsFront> front(new TlsFront(dir));
  const std::string config = dir + "/openssl.cnf";
  IMGSVC_RETURN_IF_ERROR(
      tls_peers_detail::WriteFile(config, tls_peers_detail::OpensslConfig(options.subject_alt_names)));
  IMGSVC_RETURN_IF_ERROR(tls_peers_detail::MakeCa(dir, "ca", config));
  IMGSVC_RETURN_IF_ERROR(tls_peers_detail::MakeServerCertificate(dir, config));
  IMGSVC_RETURN_IF_ERROR(tls_peers_detail::MakeCa(dir, "other-ca", config));
  Status started;
  for (int attempt = 0; attempt < tls_peers_detail::kStartAttempts; ++attempt) {
    started = front->StartNginx(options);
    if (started.ok()) return front;
  }
  return started;
}

TlsFront::TlsFront(std::string dir) : dir_(std::move(dir)) {}

TlsFront::~TlsFront() {
  if (nginx_ != nullptr) {
    (void)nginx_->Signal(SIGTERM);
    (void)nginx_->Wait(std::chrono::seconds(10));  // else the Process destructor kills it
    nginx_.reset();
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::vector<std::string> TlsFront::AccessLog() const {
  std::vector<std::string> lines;
  std::istringstream in(tls_peers_detail::ReadFile(dir_ + "/access.log"));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

Status TlsFront::StartNginx(const TlsFrontOptions& options) {
  nginx_.reset();
  IMGSVC_ASSIGN_OR_RETURN(port_, tls_peers_detail::FreeLoopbackPort());
  const std::string error_log = dir_ + "/error.log";
  // One process (no master), so it can be stopped by pid and keeps the
  // rights it starts with. Every path nginx writes is in the temp dir.
  std::ostringstream config;
  config << "master_process off;\n"
         << "pid " << dir_ << "/nginx.pid;\n"
         << "error_log " << error_log << " warn;\n"
         << "events { worker_connections 64; }\n"
         << "http {\n";
  if (options.access_log_format.empty()) {
    config << "  access_log off;\n";
  } else {
    config << "  log_format front '" << options.access_log_format << "';\n"
           << "  access_log " << dir_ << "/access.log front;\n";
  }
  config << "  client_body_temp_path " << dir_ << "/client_body;\n"
         << "  proxy_temp_path " << dir_ << "/proxy;\n"
         << "  fastcgi_temp_path " << dir_ << "/fastcgi;\n"
         << "  uwsgi_temp_path " << dir_ << "/uwsgi;\n"
         << "  scgi_temp_path " << dir_ << "/scgi;\n"
         // Far beyond any test's length: a keep-alive assertion must not
         // depend on how slow the machine is.
         << "  keepalive_timeout 600s;\n"
         << "  server {\n"
         << "    listen 127.0.0.1:" << port_ << " ssl;\n"
         << "    ssl_certificate " << dir_ << "/server.crt;\n"
         << "    ssl_certificate_key " << dir_ << "/server.key;\n"
         << "    ssl_protocols TLSv1.2 TLSv1.3;\n"
         << "    client_max_body_size 64m;\n"
         << "    client_body_buffer_size 1m;\n"
         << "    location / {\n"
         << "      proxy_pass " << options.upstream << ";\n"
         << "      proxy_http_version 1.1;\n"
         // SigV4 covers Host: the client signed what it connected to.
         << "      proxy_set_header Host $http_host;\n"
         << "      proxy_set_header Connection \"\";\n"
         << "      proxy_buffer_size 64k;\n"
         << "      proxy_buffers 16 64k;\n"
         << "      proxy_read_timeout 120s;\n"
         << "    }\n"
         << "  }\n"
         << "}\n";
  const std::string config_path = dir_ + "/nginx.conf";
  IMGSVC_RETURN_IF_ERROR(tls_peers_detail::WriteFile(config_path, config.str()));
  IMGSVC_ASSIGN_OR_RETURN(nginx_, Process::Start(IMGSVC_NGINX, {"-e", "stderr", "-p", dir_, "-c", config_path, "-g",
                                                                "daemon off;"}));
  const auto deadline = std::chrono::steady_clock::now() + tls_peers_detail::kStartTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (tls_peers_detail::AcceptsConnections(port_)) return Status::Ok();
    if (std::optional<ExitStatus> exit = nginx_->Wait(std::chrono::milliseconds(50))) {
      nginx_.reset();
      return Status(Code::kUnavailable,
                    "nginx exited (code " + std::to_string(exit->code) + "): " + tls_peers_detail::ReadFile(error_log));
    }
  }
  nginx_.reset();
  return Status(Code::kDeadlineExceeded,
                "nginx did not listen on port " + std::to_string(port_) + ": " + tls_peers_detail::ReadFile(error_log));
}

}  // namespace imgsvc::testing
