#include "process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

extern char** environ;

namespace imgsvc::testing {
namespace {

std::string NameOf(const std::string& entry) { return entry.substr(0, entry.find('=')); }

std::vector<std::string> MergedEnvironment(const std::vector<std::string>& extra_env) {
  std::vector<std::string> merged;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    bool overridden = false;
    for (const auto& extra : extra_env) overridden = overridden || NameOf(extra) == NameOf(entry);
    if (!overridden) merged.push_back(entry);
  }
  merged.insert(merged.end(), extra_env.begin(), extra_env.end());
  return merged;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

ExitStatus Decode(int wait_status) {
  ExitStatus out;
  if (WIFEXITED(wait_status)) {
    out.exited = true;
    out.code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    out.signal = WTERMSIG(wait_status);
  }
  return out;
}

}  // namespace

Process::Process(pid_t pid, int stdout_fd) : pid_(pid) {
  reader_ = std::thread([this, stdout_fd] { ReadStdout(stdout_fd); });
}

StatusOr<std::unique_ptr<Process>> Process::Start(const std::string& binary,
                                                  const std::vector<std::string>& args,
                                                  const std::vector<std::string>& extra_env) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return Status(Code::kInternal, std::string("pipe: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);

  std::vector<std::string> argv_strings{binary};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<std::string> env_strings = MergedEnvironment(extra_env);
  auto argv = Pointers(argv_strings);
  auto envp = Pointers(env_strings);

  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    return Status(Code::kInternal, "spawn " + binary + ": " + std::strerror(rc));
  }
  return std::unique_ptr<Process>(new Process(pid, pipe_fds[0]));
}

Process::~Process() {
  if (!exit_) {
    ::kill(pid_, SIGKILL);
    (void)Wait(std::chrono::milliseconds(10000));
  }
  if (reader_.joinable()) reader_.join();
}

void Process::ReadStdout(int fd) {
  std::string partial;
  char buffer[8192];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    partial.append(buffer, static_cast<std::size_t>(n));
    std::size_t newline;
    std::lock_guard lock(mutex_);
    while ((newline = partial.find('\n')) != std::string::npos) {
      lines_.push_back(partial.substr(0, newline));
      partial.erase(0, newline + 1);
    }
    changed_.notify_all();
  }
  ::close(fd);
  std::lock_guard lock(mutex_);
  if (!partial.empty()) lines_.push_back(partial);
  stdout_closed_ = true;
  changed_.notify_all();
}

std::vector<std::string> Process::Lines() const {
  std::lock_guard lock(mutex_);
  return lines_;
}

std::optional<std::string> Process::WaitForLine(const std::function<bool(const std::string&)>& match,
                                                std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mutex_);
  std::size_t checked = 0;
  for (;;) {
    for (; checked < lines_.size(); ++checked) {
      if (match(lines_[checked])) return lines_[checked];
    }
    if (stdout_closed_) return std::nullopt;
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && checked == lines_.size()) {
      return std::nullopt;
    }
  }
}

Status Process::Signal(int signo) const {
  if (::kill(pid_, signo) != 0) return Status(Code::kInternal, std::string("kill: ") + std::strerror(errno));
  return Status::Ok();
}

std::optional<ExitStatus> Process::Wait(std::chrono::milliseconds timeout) {
  if (exit_) return exit_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int wait_status = 0;
    pid_t r = ::waitpid(pid_, &wait_status, WNOHANG);
    if (r == pid_) {
      exit_ = Decode(wait_status);
      return exit_;
    }
    if (r < 0 && errno != EINTR) {
      exit_ = ExitStatus{};  // already reaped elsewhere: nothing more to learn
      return exit_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

StatusOr<MemoryUsage> Process::Memory() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  if (!in) return Status(Code::kNotFound, "no /proc entry for " + std::to_string(pid_));
  MemoryUsage usage;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name;
    std::uint64_t kib = 0;
    fields >> name >> kib;
    if (name == "VmHWM:") usage.vm_hwm_kib = kib;
    if (name == "VmRSS:") usage.vm_rss_kib = kib;
  }
  return usage;
}

StatusOr<CommandResult> RunCommand(const std::string& binary, const std::vector<std::string>& args,
                                   const std::vector<std::string>& extra_env,
                                   std::chrono::milliseconds timeout) {
  IMGSVC_ASSIGN_OR_RETURN(std::unique_ptr<Process> process, Process::Start(binary, args, extra_env));
  std::optional<ExitStatus> exit = process->Wait(timeout);
  if (!exit) return Status(Code::kDeadlineExceeded, binary + " did not finish in time");
  CommandResult result;
  result.exit = *exit;
  // The process has exited; its stdout closes once the reader drained it.
  (void)process->WaitForLine([](const std::string&) { return false; }, timeout);
  for (const auto& line : process->Lines()) result.stdout_text += line + "\n";
  return result;
}

}  // namespace imgsvc::testing
