// TLS in front of a plain-HTTP peer, as the tests that cross real TLS need
// it: Debian's nginx terminates TLS on 127.0.0.1 with a server certificate
// from a throwaway CA made by the openssl CLI, and proxies to `upstream` with
// the client's Host header unchanged (so SigV4 signatures made for
// "localhost:PORT" still verify behind it). A second CA that signed nothing
// nginx serves lets a test check that a client trusting it refuses the
// handshake. Everything (keys, certificates, nginx's files) lives in a
// temporary directory removed with the front.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "process.h"

namespace imgsvc::testing {

struct TlsFrontOptions {
  std::string upstream;  // "http://127.0.0.1:PORT"
  // The server certificate's subjectAltName, in openssl's syntax.
  std::string subject_alt_names = "DNS:localhost";
  // An nginx log_format for one access-log line per forwarded request; empty
  // for no access log.
  std::string access_log_format;
};

class TlsFront {
 public:
  // Makes the CAs and the server certificate, then starts nginx (on another
  // port when one is lost to a racing process).
  static StatusOr<std::unique_ptr<TlsFront>> Start(const TlsFrontOptions& options);

  TlsFront(const TlsFront&) = delete;
  TlsFront& operator=(const TlsFront&) = delete;
  ~TlsFront();

  std::uint16_t port() const { return port_; }
  // The CA that signed the server certificate.
  std::string ca_file() const { return dir_ + "/ca.crt"; }
  // A CA that signed nothing nginx serves.
  std::string other_ca_file() const { return dir_ + "/other-ca.crt"; }
  // The access log's lines so far (none without an access_log_format).
  std::vector<std::string> AccessLog() const;

 private:
  explicit TlsFront(std::string dir);
  Status StartNginx(const TlsFrontOptions& options);

  std::string dir_;
  std::uint16_t port_ = 0;
  std::unique_ptr<Process> nginx_;
};

}  // namespace imgsvc::testing
