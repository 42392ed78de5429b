// Runs a child process for end-to-end tests: the real `imgsvc` binary.
//
// The child's stdout (JSON log lines) is read by a thread into a list of
// lines that tests can wait on ("listening") and search (request ids); its
// stderr goes to the test's stderr. The child is killed on destruction, so a
// failing test never leaves a server behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"

namespace imgsvc::testing {

struct ExitStatus {
  bool exited = false;  // normal exit; else killed by `signal`
  int code = -1;
  int signal = 0;
};

struct MemoryUsage {
  std::uint64_t vm_hwm_kib = 0;  // peak resident set size
  std::uint64_t vm_rss_kib = 0;
};

class Process {
 public:
  // Starts `binary` with `args` (argv[1..]) and the test's environment plus
  // `extra_env` entries ("NAME=value", overriding inherited ones).
  static StatusOr<std::unique_ptr<Process>> Start(const std::string& binary,
                                                  const std::vector<std::string>& args,
                                                  const std::vector<std::string>& extra_env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }

  // The complete stdout lines received so far.
  std::vector<std::string> Lines() const;
  // The first line (received so far or later) that `match` accepts, or
  // nullopt when the timeout passes or stdout closes first.
  std::optional<std::string> WaitForLine(const std::function<bool(const std::string&)>& match,
                                         std::chrono::milliseconds timeout) const;

  Status Signal(int signo) const;
  // The exit status, or nullopt if still running after `timeout`.
  std::optional<ExitStatus> Wait(std::chrono::milliseconds timeout);
  // VmHWM / VmRSS from /proc/<pid>/status (the process must still be running).
  StatusOr<MemoryUsage> Memory() const;

 private:
  Process(pid_t pid, int stdout_fd);
  void ReadStdout(int fd);

  pid_t pid_;
  std::optional<ExitStatus> exit_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::vector<std::string> lines_;
  bool stdout_closed_ = false;
  std::thread reader_;
};

struct CommandResult {
  ExitStatus exit;
  std::string stdout_text;
};

// Runs a command to completion (killing it after `timeout`).
StatusOr<CommandResult> RunCommand(const std::string& binary, const std::vector<std::string>& args,
                                   const std::vector<std::string>& extra_env = {},
                                   std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

}  // namespace imgsvc::testing
