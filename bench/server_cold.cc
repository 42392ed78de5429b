// Cold start of `imgsvc serve` (issue 5): from exec to the first 200 answer
// to GET /health, beside a static hello world's exec-to-exit time measured
// in the same round (a ratio survives the drift of a shared machine), and
// the server's RSS right after that answer (its idle RSS: nothing else has
// been asked of it).
//
// The server runs on the embedded backend with a data directory made once
// before the rounds (an `imgsvc serve` that has already created its SQLite
// file, signing key and blob folders), as a restarted server finds it. Each
// round reads the server's log from a pipe, blocked until the "listening"
// line, then connects, sends the request, and stops the server with SIGTERM
// once it has answered. Blocked, not polling: a loop of connects (each one
// refused until the server listened) took a share of a vCPU, and a start
// that the scheduler placed beside it measured 2.4-2.6 ms instead of
// 1.7-1.9 ms (a run pinned to one vCPU: 2.45 ms; to two: 1.78 ms).
//
// Output: one JSON line per round, then a JSON summary.
// Usage: server_cold --imgsvc=PATH --hello=PATH --data-dir=DIR [--port=18190] [--rounds=20]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench_util.h"

extern char** environ;

namespace imgsvc::bench {
namespace {

// Generous: a stalled shared machine must fail the run, not hang it.
constexpr std::chrono::seconds kWait{30};
constexpr int kSetupHellos = 5;
constexpr double kMaxRatioToHello = 5;
constexpr double kMaxIdleRssKib = 15 * 1024;

struct Options {
  std::string imgsvc;
  std::string hello;
  std::string data_dir;
  int port = 18190;
  int rounds = 20;
};

std::optional<Options> ParseOptions(int argc, char** argv) {
  Options options;
  std::map<std::string, std::string*> strings{
      {"imgsvc", &options.imgsvc}, {"hello", &options.hello}, {"data-dir", &options.data_dir}};
  std::map<std::string, int*> numbers{{"port", &options.port}, {"rounds", &options.rounds}};
  if (!ParseFlags(argc, argv, strings, numbers)) return std::nullopt;
  if (options.imgsvc.empty() || options.hello.empty() || options.data_dir.empty() || options.rounds < 1) {
    return std::nullopt;
  }
  return options;
}

// Reads the server's log from `log` until the line saying it listens; the
// server writes it once its stores are open, just before it starts
// accepting (connections made from then on are answered).
Status AwaitListening(int log, Clock::time_point deadline) {
  std::string seen;
  char chunk[4096];
  while (seen.find("\"msg\":\"listening\"") == std::string::npos) {
    pollfd readable{log, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0 || ::poll(&readable, 1, static_cast<int>(left.count())) <= 0) {
      return Status(Code::kDeadlineExceeded, "the server never listened");
    }
    const ssize_t got = ::read(log, chunk, sizeof chunk);
    if (got <= 0) return Status(Code::kInternal, "the server exited before listening: " + seen);
    seen.append(chunk, static_cast<std::size_t>(got));
  }
  return Status::Ok();
}

StatusOr<int> Connect(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status(Code::kInternal, "socket failed");
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return Status(Code::kInternal, "cannot connect to the listening server");
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Sends GET /health and reads until the status line is complete.
Status ExpectHealthy(int fd) {
  constexpr std::string_view kRequest = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::write(fd, kRequest.data(), kRequest.size()) != static_cast<ssize_t>(kRequest.size())) {
    return Status(Code::kInternal, "cannot send the request");
  }
  std::string answer;
  char chunk[512];
  while (answer.find("\r\n") == std::string::npos) {
    const ssize_t got = ::read(fd, chunk, sizeof chunk);
    if (got <= 0) return Status(Code::kInternal, "connection closed before an answer");
    answer.append(chunk, static_cast<std::size_t>(got));
  }
  if (!answer.starts_with("HTTP/1.1 200")) return Status(Code::kInternal, "not 200: " + answer.substr(0, 40));
  return Status::Ok();
}

// Closes the connection with a reset, so that neither end keeps it in
// TIME_WAIT. The server closes first after a "Connection: close" answer, and
// its TIME_WAIT entries (60 s) are invisible to this side's choice of
// ephemeral port: a later round's connect that drew one of those ports had
// its SYN answered with an ACK, reset it, and resent the SYN one timer later,
// adding ~10 ms to about one round in four.
void CloseWithReset(int fd) {
  const linger reset{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  ::close(fd);
}

struct Run {
  double cold_ms = 0;
  Memory memory;
};

StatusOr<Run> RunServer(const Options& options, char** envp) {
  const std::vector<std::string> args{"serve", "--port", std::to_string(options.port), "--data-dir",
                                      options.data_dir, "--log-level", "info"};
  int log[2];
  if (::pipe2(log, O_CLOEXEC) != 0) return Status(Code::kInternal, "pipe failed");
  const Clock::time_point start = Clock::now();
  StatusOr<pid_t> spawned = Spawn(options.imgsvc, args, envp, log[1]);
  ::close(log[1]);
  if (!spawned.ok()) {
    ::close(log[0]);
    return spawned.status();
  }
  const pid_t pid = *spawned;
  Status listening = AwaitListening(log[0], start + kWait);
  StatusOr<int> fd = listening.ok() ? Connect(options.port) : StatusOr<int>(listening);
  Status healthy = fd.ok() ? ExpectHealthy(*fd) : fd.status();
  const Clock::time_point end = Clock::now();
  Run run;
  run.cold_ms = Ms(end - start);
  run.memory = ReadMemory(pid);
  if (fd.ok()) CloseWithReset(*fd);
  ::kill(pid, SIGTERM);
  int wait_status = 0;
  ::waitpid(pid, &wait_status, 0);
  ::close(log[0]);  // only now: the server logs its shutdown to it
  if (!healthy.ok()) return healthy;
  if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) {
    return Status(Code::kInternal, "the server did not stop cleanly on SIGTERM");
  }
  return run;
}

int Main(int argc, char** argv) {
  const std::optional<Options> options = ParseOptions(argc, argv);
  if (!options) {
    std::fprintf(stderr,
                 "usage: server_cold --imgsvc=PATH --hello=PATH --data-dir=DIR [--port=18190] [--rounds=20]\n");
    return 2;
  }
  const int log_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  CStrings envp = CStrings([] {
    std::vector<std::string> entries;
    for (char** entry = environ; *entry != nullptr; ++entry) entries.emplace_back(*entry);
    return entries;
  }());
  // Setup: the data directory is created, the page cache warm for both.
  for (int i = 0; i < kSetupHellos; ++i) {
    if (auto hello = RunHello(options->hello, envp.data(), log_fd); !hello.ok()) {
      std::fprintf(stderr, "%s\n", hello.status().ToString().c_str());
      return 1;
    }
  }
  if (auto setup = RunServer(*options, envp.data()); !setup.ok()) {
    std::fprintf(stderr, "setup: %s\n", setup.status().ToString().c_str());
    return 1;
  }

  std::vector<double> hellos, colds, ratios, rss, faults;
  std::uint64_t max_hwm = 0;
  for (int round = 1; round <= options->rounds; ++round) {
    const StatusOr<double> hello = RunHello(options->hello, envp.data(), log_fd);
    const StatusOr<Run> run = hello.ok() ? RunServer(*options, envp.data()) : StatusOr<Run>(hello.status());
    if (!run.ok()) {
      std::fprintf(stderr, "round %d: %s\n", round, run.status().ToString().c_str());
      return 1;
    }
    hellos.push_back(*hello);
    colds.push_back(run->cold_ms);
    ratios.push_back(run->cold_ms / *hello);
    rss.push_back(static_cast<double>(run->memory.rss_kib));
    faults.push_back(static_cast<double>(run->memory.minor_faults));
    max_hwm = std::max(max_hwm, run->memory.hwm_kib);
    JsonLine()
        .Add("round", round)
        .Add("measurement", "server_health")
        .Add("hello_ms", *hello)
        .Add("cold_ms", run->cold_ms)
        .Add("ratio_to_hello", run->cold_ms / *hello, 2)
        .Add("vm_rss_kib", run->memory.rss_kib)
        .Add("vm_hwm_kib", run->memory.hwm_kib)
        .Add("rss_anon_kib", run->memory.rss_anon_kib)
        .Add("rss_file_kib", run->memory.rss_file_kib)
        .Add("minor_faults", run->memory.minor_faults)
        .Print();
    std::fflush(stdout);
  }
  const double ratio = Median(ratios);
  const double idle_rss = Median(rss);
  JsonLine()
      .Flag("summary")
      .Add("measurement", "server_health")
      .Add("rounds", options->rounds)
      .Add("median_hello_ms", Median(hellos))
      .Add("median_cold_ms", Median(colds))
      .Add("median_ratio_to_hello", ratio, 2)
      .Add("median_idle_rss_kib", idle_rss, 0)
      .Add("max_hwm_kib", max_hwm)
      .Add("median_minor_faults", Median(faults), 0)
      .Add("ratio_target_met", ratio < kMaxRatioToHello ? 1 : 0)
      .Add("idle_rss_target_met", idle_rss < kMaxIdleRssKib ? 1 : 0)
      .Print();
  ::close(log_fd);
  return 0;
}

}  // namespace
}  // namespace imgsvc::bench

int main(int argc, char** argv) { return imgsvc::bench::Main(argc, argv); }
