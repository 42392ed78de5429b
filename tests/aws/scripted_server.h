// A loopback HTTP/1.1 server for the AWS tests: it answers each request with
// the next canned raw response, in order, and records every request it read.
// Plain POSIX sockets and one thread per connection (keep-alive connections
// of the real net::HttpClient stay open between requests). A request arriving
// when the script is empty is answered 599, which no retry logic repeats.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "net/http_client.h"

namespace imgsvc::aws::scripted_server {

struct RecordedRequest {
  std::string method;
  std::string target;
  std::vector<net::Header> headers;
  std::string body;

  // The first value of a header (case-insensitive), or "" when absent.
  std::string_view Header(std::string_view name) const {
    for (const net::Header& header : headers) {
      if (std::equal(header.name.begin(), header.name.end(), name.begin(), name.end(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
          })) {
        return header.value;
      }
    }
    return {};
  }
};

// A complete raw response with a Content-Length.
inline std::string Response(int status, std::string_view body = {}, const std::vector<net::Header>& headers = {}) {
  std::string raw = "HTTP/1.1 " + std::to_string(status) + " Scripted\r\n";
  for (const net::Header& header : headers) raw += header.name + ": " + header.value + "\r\n";
  raw += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  raw += body;
  return raw;
}

// A loopback port nothing listens on (bound, then released): connecting to
// it is refused at once.
inline std::uint16_t ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

class ScriptedServer {
 public:
  ScriptedServer() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    const int reuse = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address);
    ::listen(listen_fd_, 16);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  ScriptedServer(const ScriptedServer&) = delete;
  ScriptedServer& operator=(const ScriptedServer&) = delete;

  ~ScriptedServer() {
    stopping_ = true;
    accept_thread_.join();
    ::close(listen_fd_);
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mutex_);
      for (int fd : connection_fds_) ::shutdown(fd, SHUT_RDWR);
      threads.swap(connection_threads_);
    }
    for (std::thread& thread : threads) thread.join();
    for (int fd : connection_fds_) ::close(fd);
  }

  // Answers the next unanswered request with `raw_response`.
  void Push(std::string raw_response) {
    std::lock_guard lock(mutex_);
    script_.push_back(std::move(raw_response));
  }
  // Reads the next request and never answers it (a timeout for the client).
  void PushSilence() {
    std::lock_guard lock(mutex_);
    script_.push_back(std::nullopt);
  }

  net::Endpoint endpoint() const { return net::Endpoint{"http", "127.0.0.1", port_}; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  std::vector<RecordedRequest> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void AcceptLoop() {
    while (!stopping_) {
      pollfd waiting{listen_fd_, POLLIN, 0};
      if (::poll(&waiting, 1, 50) <= 0) continue;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      std::lock_guard lock(mutex_);
      connection_fds_.push_back(fd);
      connection_threads_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    std::string buffer;
    while (true) {
      std::optional<RecordedRequest> request = ReadRequest(fd, buffer);
      if (!request) return;
      std::optional<std::string> answer = Response(599, "unscripted request");
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(std::move(*request));
        if (!script_.empty()) {
          answer = std::move(script_.front());
          script_.pop_front();
        }
      }
      if (answer && !WriteAll(fd, *answer)) return;
    }
  }

  static bool ReadMore(int fd, std::string& buffer) {
    char chunk[4096];
    const ssize_t got = ::recv(fd, chunk, sizeof chunk, 0);
    if (got <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(got));
    return true;
  }

  static std::optional<RecordedRequest> ReadRequest(int fd, std::string& buffer) {
    std::size_t header_end;
    while ((header_end = buffer.find("\r\n\r\n")) == std::string::npos) {
      if (!ReadMore(fd, buffer)) return std::nullopt;
    }
    RecordedRequest request;
    const std::string head = buffer.substr(0, header_end);
    std::size_t line_end = head.find("\r\n");
    const std::string request_line = head.substr(0, line_end);
    const std::size_t first_space = request_line.find(' ');
    const std::size_t second_space = request_line.find(' ', first_space + 1);
    request.method = request_line.substr(0, first_space);
    request.target = request_line.substr(first_space + 1, second_space - first_space - 1);
    std::size_t content_length = 0;
    while (line_end != std::string::npos && line_end < head.size()) {
      const std::size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      const std::string line = head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
      const std::size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      net::Header header{line.substr(0, colon), std::move(value)};
      if (EqualsContentLength(header.name)) content_length = std::stoul(header.value);
      request.headers.push_back(std::move(header));
    }
    buffer.erase(0, header_end + 4);
    while (buffer.size() < content_length) {
      if (!ReadMore(fd, buffer)) return std::nullopt;
    }
    request.body = buffer.substr(0, content_length);
    buffer.erase(0, content_length);
    return request;
  }

  static bool EqualsContentLength(std::string_view name) {
    constexpr std::string_view kName = "content-length";
    return std::equal(name.begin(), name.end(), kName.begin(), kName.end(),
                      [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
  }

  static bool WriteAll(int fd, std::string_view data) {
    while (!data.empty()) {
      const ssize_t sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (sent <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
  }

  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  mutable std::mutex mutex_;
  std::deque<std::optional<std::string>> script_;
  std::vector<RecordedRequest> requests_;
  std::vector<int> connection_fds_;
  std::vector<std::thread> connection_threads_;
};

}  // namespace imgsvc::aws::scripted_server
