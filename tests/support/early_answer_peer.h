// A peer on 127.0.0.1 that answers a request once it has the request's head
// and reads nothing more, as a server refusing a request may (S3 with a bad
// signature, say): a client still sending the body must take the answer.
// Serves one connection; stops with the object. Header-only.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "support/loopback_socket.h"

namespace imgsvc::testing {

class EarlyAnswerPeer {
 public:
  explicit EarlyAnswerPeer(std::string answer) : answer_(std::move(answer)), thread_([this] { Serve(); }) {}
  ~EarlyAnswerPeer() {
    stopping_ = true;
    thread_.join();
  }
  EarlyAnswerPeer(const EarlyAnswerPeer&) = delete;
  EarlyAnswerPeer& operator=(const EarlyAnswerPeer&) = delete;

  bool ok() const { return listener_.ok(); }
  std::uint16_t port() const { return listener_.port(); }

 private:
  // Until the object stops.
  bool WaitReadable(int fd) const {
    while (!stopping_) {
      pollfd waiter{fd, POLLIN, 0};
      if (::poll(&waiter, 1, 50) > 0) return true;
    }
    return false;
  }

  void Serve() {
    if (!WaitReadable(listener_.fd())) return;
    const int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    std::string head;
    char chunk[4096];
    while (head.find("\r\n\r\n") == std::string::npos && WaitReadable(fd)) {
      const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n <= 0) break;
      head.append(chunk, static_cast<std::size_t>(n));
    }
    for (std::string_view rest = answer_; !rest.empty();) {
      const ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    while (!stopping_) std::this_thread::sleep_for(std::chrono::milliseconds(10));  // reads nothing more
    ::close(fd);
  }

  LoopbackSocket listener_{/*listening=*/true};
  std::string answer_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: started once the rest exists
};

}  // namespace imgsvc::testing
