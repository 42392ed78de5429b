// What the cold-start drivers (lambda_cold.cc, server_cold.cc) share: start a
// program the same way for the service and for the static hello world it is
// compared with, read a process's memory, and print JSON lines.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace imgsvc::bench {

using Clock = std::chrono::steady_clock;

inline double Ms(Clock::duration duration) { return std::chrono::duration<double, std::milli>(duration).count(); }

inline double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// Nearest rank.
inline double Percentile(std::vector<double> values, double fraction) {
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(values.size())));
  return values[std::max<std::size_t>(rank, 1) - 1];
}

// A JSON line with numbers printed as people read them (Boost.JSON would
// print 1.5E0).
class JsonLine {
 public:
  JsonLine& Add(std::string_view name, std::string_view value) {
    return Raw(name, boost::json::serialize(boost::json::string(value)));
  }
  JsonLine& Add(std::string_view name, double value, int decimals = 3) {
    char text[64];
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
    return Raw(name, text);
  }
  JsonLine& Add(std::string_view name, std::uint64_t value) { return Raw(name, std::to_string(value)); }
  JsonLine& Add(std::string_view name, int value) { return Raw(name, std::to_string(value)); }
  // Not an Add overload: a string literal would convert to bool first.
  JsonLine& Flag(std::string_view name) { return Raw(name, "true"); }
  void Print() const { std::printf("{%s}\n", text_.c_str()); }

 private:
  JsonLine& Raw(std::string_view name, std::string_view value) {
    if (!text_.empty()) text_ += ',';
    text_ += '"';
    text_ += name;
    text_ += "\":";
    text_ += value;
    return *this;
  }

  std::string text_;
};

// Strings and the null-terminated pointer array execve wants.
class CStrings {
 public:
  explicit CStrings(std::vector<std::string> strings) : strings_(std::move(strings)) {
    for (std::string& s : strings_) pointers_.push_back(s.data());
    pointers_.push_back(nullptr);
  }
  char** data() { return pointers_.data(); }

 private:
  std::vector<std::string> strings_;
  std::vector<char*> pointers_;
};

// posix_spawn for the service and the hello world alike, so the two exec
// paths cost the same (glibc's is a vfork-style clone: no copy of this
// process's page tables). Output goes to `output_fd`.
inline StatusOr<pid_t> Spawn(const std::string& path, std::vector<std::string> args, char** envp, int output_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, output_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, output_fd, STDERR_FILENO);
  args.insert(args.begin(), path);
  CStrings argv(std::move(args));
  pid_t pid = -1;
  const int error = posix_spawn(&pid, path.c_str(), &actions, nullptr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) return Status(Code::kInternal, "cannot start " + path + ": " + std::to_string(error));
  return pid;
}

// Reads `--name=value` arguments into the strings and numbers named; false
// for anything else, which the caller answers with its usage line.
inline bool ParseFlags(int argc, char** argv, const std::map<std::string, std::string*>& strings,
                       const std::map<std::string, int*>& numbers) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const std::size_t equals = arg.find('=');
    if (arg.substr(0, 2) != "--" || equals == std::string_view::npos) return false;
    const std::string name(arg.substr(2, equals - 2));
    const std::string value(arg.substr(equals + 1));
    if (auto string = strings.find(name); string != strings.end()) {
      *string->second = value;
    } else if (auto number = numbers.find(name); number != numbers.end()) {
      *number->second = std::atoi(value.c_str());
    } else {
      return false;
    }
  }
  return true;
}

struct Memory {
  std::uint64_t rss_kib = 0;
  std::uint64_t hwm_kib = 0;
  // VmRSS's two main parts: the process's own memory, and the files (the
  // binary's code and data) mapped in, which a page cache holding large
  // folios may count whole.
  std::uint64_t rss_anon_kib = 0;
  std::uint64_t rss_file_kib = 0;
  // Minor faults since exec, as the kernel counts them: pages made present,
  // by a trap (which on a machine trapping to a hypervisor is much of a
  // start's cost; bench/machine_costs prices one) or by madvise populating
  // them, which imgsvc's entry does without a trap per page.
  std::uint64_t minor_faults = 0;
};

inline Memory ReadMemory(pid_t pid) {
  Memory memory;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) memory.rss_kib = std::strtoull(line.c_str() + 6, nullptr, 10);
    if (line.starts_with("VmHWM:")) memory.hwm_kib = std::strtoull(line.c_str() + 6, nullptr, 10);
    if (line.starts_with("RssAnon:")) memory.rss_anon_kib = std::strtoull(line.c_str() + 8, nullptr, 10);
    if (line.starts_with("RssFile:")) memory.rss_file_kib = std::strtoull(line.c_str() + 8, nullptr, 10);
  }
  // /proc/PID/stat: minflt follows seven fields after the ")" ending the name.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::getline(stat, line);
  if (const std::size_t end = line.rfind(')'); end != std::string::npos) {
    std::istringstream fields(line.substr(end + 1));
    std::string state, ppid, pgrp, session, tty, tpgid, flags;
    fields >> state >> ppid >> pgrp >> session >> tty >> tpgid >> flags >> memory.minor_faults;
  }
  return memory;
}

// The static hello world's exec-to-exit time, the yardstick of a cold start.
inline StatusOr<double> RunHello(const std::string& hello, char** envp, int output_fd) {
  const Clock::time_point start = Clock::now();
  IMGSVC_ASSIGN_OR_RETURN(const pid_t pid, Spawn(hello, {}, envp, output_fd));
  int wait_status = 0;
  ::waitpid(pid, &wait_status, 0);
  const Clock::time_point end = Clock::now();
  if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) return Status(Code::kInternal, "hello world failed");
  return Ms(end - start);
}

}  // namespace imgsvc::bench
