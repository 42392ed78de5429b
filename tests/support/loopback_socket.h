// A TCP socket on 127.0.0.1 for tests of what connects where: listening (it
// accepts connections) or bound only (connecting to it gets a reset, and no
// one else can take the port meanwhile). Closed with the object.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace imgsvc::testing {

class LoopbackSocket {
 public:
  explicit LoopbackSocket(bool listening) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) == 0 &&
          ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0 &&
          (!listening || ::listen(fd_, 8) == 0);
    port_ = ntohs(address.sin_port);
  }
  LoopbackSocket(const LoopbackSocket&) = delete;
  LoopbackSocket& operator=(const LoopbackSocket&) = delete;
  ~LoopbackSocket() {
    if (fd_ >= 0) ::close(fd_);
  }

  bool ok() const { return ok_; }
  int fd() const { return fd_; }
  std::uint16_t port() const { return port_; }
  std::string url(std::string_view scheme = "http") const {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(port_);
  }
  // Whether a connection is waiting to be accepted within `timeout`.
  bool Accepts(std::chrono::milliseconds timeout) const {
    pollfd ready{fd_, POLLIN, 0};
    return ::poll(&ready, 1, static_cast<int>(timeout.count())) == 1;
  }

 private:
  int fd_;
  bool ok_ = false;
  std::uint16_t port_ = 0;
};

}  // namespace imgsvc::testing
