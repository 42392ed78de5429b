// Fibers switch with _setjmp/_longjmp, which jump between stacks. With
// _FORTIFY_SOURCE, glibc turns _longjmp into __longjmp_chk, which aborts on
// a jump to a frame below the current one on another stack: this file is
// built without it, whatever a packager's flags ask for.
#undef _FORTIFY_SOURCE

#include "server/fiber.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csetjmp>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/error.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/blocking.h"
#include "net/http_client.h"

// AddressSanitizer keeps a shadow of each stack and must be told which one runs.
#if defined(__SANITIZE_ADDRESS__)
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, std::size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                                std::size_t* size_old);
// LeakSanitizer scans only the stacks it knows of.
extern "C" void __lsan_register_root_region(const void* begin, std::size_t size);
#endif

namespace imgsvc::server {
namespace {

namespace asio = boost::asio;
using ErrorCode = boost::system::error_code;

// A handler's deepest calls (TLS handshakes, JSON) use a few tens of KiB;
// only the pages touched take memory.
constexpr std::size_t kStackBytes = 256 * 1024;
// The stack's lowest page, mapped without access: an overflow faults
// instead of overwriting another fiber's memory.
constexpr std::size_t kGuardBytes = 4096;

// A fiber runs one body after another on its stack. ucontext's switches
// each make a system call (they save and restore the signal mask, which
// fibers never change), so ucontext only enters a new fiber's stack, once;
// every later switch is a _setjmp/_longjmp pair, which makes none.
struct Fiber {
  std::jmp_buf self;       // where the fiber goes on when switched in
  std::jmp_buf io_thread;  // where the io thread goes on when the fiber parks
  ucontext_t entry{};      // FiberMain on the fiber's stack, before the first switch in
  bool entered = false;
  void* stack = nullptr;
  asio::any_io_executor executor;
  WorkerPool* blocking_work = nullptr;
  std::function<void()> body;
  std::function<void()> then;
  bool finished = false;  // the body has returned; the fiber waits for the next
  // The io thread's stack, for AddressSanitizer.
  const void* io_stack_bottom = nullptr;
  std::size_t io_stack_size = 0;
};

// Null when no memory could be mapped.
void* MapStack() {
  void* stack = ::mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return nullptr;
  if (::mprotect(stack, kGuardBytes, PROT_NONE) != 0) {
    ::munmap(stack, kStackBytes);
    return nullptr;
  }
  return stack;
}

// The fibers of a thread whose bodies have returned, kept for the next ones.
// They go with the thread: parked between bodies, none holds anything else.
class IdleFibers {
 public:
  ~IdleFibers() {
    for (Fiber* fiber : idle_) {
      ::munmap(fiber->stack, kStackBytes);
      delete fiber;
    }
  }
  Fiber* Take() {
    if (idle_.empty()) return nullptr;
    Fiber* fiber = idle_.back();
    idle_.pop_back();
    return fiber;
  }
  void Give(Fiber* fiber) { idle_.push_back(fiber); }

 private:
  std::vector<Fiber*> idle_;
};

thread_local Fiber* t_running = nullptr;
thread_local IdleFibers t_idle;
// The fibers of this thread running a body (parked or not).
thread_local std::vector<Fiber*> t_busy;

void* StackBottom(const Fiber& fiber) { return static_cast<char*>(fiber.stack) + kGuardBytes; }

// From the io thread's stack into the fiber.
void SwitchIn(Fiber& fiber) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, StackBottom(fiber), kStackBytes - kGuardBytes);
#endif
  if (_setjmp(fiber.io_thread) == 0) {
    if (fiber.entered) _longjmp(fiber.self, 1);
    fiber.entered = true;
    ::setcontext(&fiber.entry);  // returns only on failure, which a made context does not have
    std::abort();
  }
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}

// From the fiber back to the io thread's stack.
void SwitchOut(Fiber& fiber) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, fiber.io_stack_bottom, fiber.io_stack_size);
#endif
  if (_setjmp(fiber.self) == 0) _longjmp(fiber.io_thread, 1);
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, &fiber.io_stack_bottom, &fiber.io_stack_size);
#endif
}

void Resume(Fiber* fiber);

// The socket waits of one io_context's fibers (an io_context run by one
// thread, as each of the server's is). They go through an epoll instance of
// their own, which the io_context's reactor watches as one descriptor: a
// socket is added to it once, then re-armed at each wait, one epoll_ctl a
// wait, where a descriptor of the reactor's own cost three and an ioctl
// (add, change, remove, and the non-blocking flag). Arming is one-shot and
// level-triggered, so a wait sees what came while nobody watched (an answer
// before the request was written, a peer's close while the connection was
// pooled). A closed socket leaves the instance by itself, so a number the
// kernel reuses is added anew. A socket stays armed in the instance of
// another io thread that waited on it before, harmlessly: nobody waits there.
class FiberPoller final : public asio::execution_context::service {
 public:
  // One fiber's wait; lives in its frame until the fiber is resumed.
  struct Waiter {
    Fiber* fiber = nullptr;
    short got = 0;
  };

  using key_type = FiberPoller;
  static asio::execution_context::id id;

  explicit FiberPoller(asio::execution_context& context) : asio::execution_context::service(context) {}

  // Registers `waiter` for `events` (poll's) on `fd`; false (errno set) when
  // the socket cannot be watched.
  bool Arm(const asio::any_io_executor& executor, int fd, short events, Waiter& waiter) {
    if (!instance_) {
      const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
      if (epoll_fd < 0) return false;
      instance_.emplace(executor, epoll_fd);
    }
    epoll_event armed{};
    armed.events = EPOLLONESHOT | ((events & POLLIN) != 0 ? EPOLLIN : 0u) | ((events & POLLOUT) != 0 ? EPOLLOUT : 0u);
    armed.data.fd = fd;
    const int epoll_fd = instance_->native_handle();
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &armed) != 0 &&
        (errno != ENOENT || ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &armed) != 0)) {
      return false;
    }
    waiters_[fd] = &waiter;
    Watch();
    return true;
  }

  // Ends the wait on `fd` as failed (POLLERR), resuming its fiber; false
  // when nobody waits on it.
  bool Wake(int fd) {
    const auto found = waiters_.find(fd);
    if (found == waiters_.end()) return false;
    Waiter* waiter = found->second;
    Forget(fd);
    waiter->got = POLLERR;
    Resume(waiter->fiber);
    return true;
  }

  // The wait on `fd` ended otherwise (its deadline): a readiness that comes
  // later finds nobody and is dropped. When nobody else waits, the watch
  // ends, so that it does not keep the io_context's run() from returning.
  void Forget(int fd) {
    waiters_.erase(fd);
    if (waiters_.empty() && watching_) instance_->cancel();
  }

 private:
  void shutdown() override {
    waiters_.clear();
    instance_.reset();
  }

  void Watch() {
    if (watching_ || waiters_.empty()) return;
    watching_ = true;
    instance_->async_wait(asio::posix::stream_descriptor::wait_read, [this](const ErrorCode& error) {
      watching_ = false;
      if (!error) {
        ResumeReady();
      } else if (error == asio::error::operation_aborted) {
        Watch();  // for whoever armed between the cancel and now
      } else {
        FailAll();
      }
    });
  }

  // The instance cannot be watched: the waits end as failed calls, not hangs.
  void FailAll() {
    std::vector<Waiter*> failed;
    for (const auto& [fd, waiter] : waiters_) failed.push_back(waiter);
    waiters_.clear();
    for (Waiter* waiter : failed) {
      waiter->got = POLLERR;
      Resume(waiter->fiber);
    }
  }

  void ResumeReady() {
    std::array<epoll_event, 64> ready{};
    const int count = ::epoll_wait(instance_->native_handle(), ready.data(), static_cast<int>(ready.size()), 0);
    // The waiters are taken first: a resumed fiber may arm again.
    std::array<Waiter*, ready.size()> resumed{};
    std::size_t resuming = 0;
    for (int i = 0; i < count; ++i) {
      const auto found = waiters_.find(ready[i].data.fd);
      if (found == waiters_.end()) continue;
      Waiter* waiter = found->second;
      waiters_.erase(found);
      const std::uint32_t came = ready[i].events;
      waiter->got = static_cast<short>(((came & EPOLLIN) != 0 ? POLLIN : 0) | ((came & EPOLLOUT) != 0 ? POLLOUT : 0) |
                                       ((came & EPOLLERR) != 0 ? POLLERR : 0) | ((came & EPOLLHUP) != 0 ? POLLHUP : 0));
      resumed[resuming++] = waiter;
    }
    Watch();
    for (std::size_t i = 0; i < resuming; ++i) Resume(resumed[i]->fiber);
  }

  std::optional<asio::posix::stream_descriptor> instance_;
  std::unordered_map<int, Waiter*> waiters_;
  bool watching_ = false;
};

asio::execution_context::id FiberPoller::id;

// A wait the io thread's epoll instance cannot take (none could be made, or
// it has no room): made in poll on the io thread itself, which stalls its
// other connections meanwhile but neither spins nor fails the call. A poll
// that fails too ends the wait as if its deadline had passed.
short PollHere(int fd, short events, std::optional<std::chrono::steady_clock::time_point> deadline,
               bool& timed_out) {
  pollfd waiter{fd, events, 0};
  for (;;) {
    int timeout_ms = -1;
    if (deadline) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) {
        timed_out = true;
        return 0;
      }
      timeout_ms = static_cast<int>(std::min<std::int64_t>(left, INT32_MAX));
    }
    const int ready = ::poll(&waiter, 1, timeout_ms);
    if (ready > 0) return waiter.revents;
    if (ready < 0 && errno != EINTR) {
      timed_out = true;
      return 0;
    }
  }
}

// net::HttpClient's socket waits, while a fiber runs.
class ReactorWait final : public net::WaitHook {
 public:
  short Wait(int fd, short events, std::optional<std::chrono::steady_clock::time_point> deadline,
             bool& timed_out) override {
    Fiber& fiber = *t_running;
    auto& poller = asio::use_service<FiberPoller>(asio::query(fiber.executor, asio::execution::context));
    FiberPoller::Waiter waiter{&fiber};
    timed_out = false;
    if (!poller.Arm(fiber.executor, fd, events, waiter)) return PollHere(fd, events, deadline, timed_out);
    if (!deadline) {
      SwitchOut(fiber);
      return waiter.got;
    }
    // Shared with the timer's handler, which may run after this frame is
    // gone (its cancellation queued behind the socket's readiness).
    struct Deadline {
      explicit Deadline(const asio::any_io_executor& executor) : timer(executor) {}
      asio::steady_timer timer;
      bool ended = false;  // the wait is over, whichever way
    };
    auto limit = std::make_shared<Deadline>(fiber.executor);
    limit->timer.expires_at(*deadline);
    limit->timer.async_wait([limit, &poller, fd, &waiter, &timed_out](const ErrorCode& error) {
      if (error || limit->ended) return;
      limit->ended = true;
      poller.Forget(fd);
      timed_out = true;
      Resume(waiter.fiber);
    });
    SwitchOut(fiber);
    limit->ended = true;
    limit->timer.cancel();
    return waiter.got;
  }
};

// core::RunBlocking's work and core::SleepFor's pause, while a fiber runs.
class OnAWorker final : public core::BlockingHook {
 public:
  void Run(const std::function<void()>& work) override {
    Fiber* fiber = t_running;
    // Counted as the io thread's work meanwhile, so that its run() does not
    // return with a fiber parked here.
    auto io_thread = asio::prefer(fiber->executor, asio::execution::outstanding_work.tracked);
    std::exception_ptr failure;
    fiber->blocking_work->Post([&work, &failure, fiber, io_thread = std::move(io_thread)] {
      try {
        work();
      } catch (...) {  // thrown on the fiber, as it would be without one
        failure = std::current_exception();
      }
      asio::post(io_thread, [fiber] { Resume(fiber); });
    });
    SwitchOut(*fiber);
    if (failure) std::rethrow_exception(failure);
  }

  // A timer of the io thread: no thread is held for the pause (a retry's
  // backoff can last seconds).
  void Sleep(std::chrono::milliseconds pause) override {
    Fiber* fiber = t_running;
    auto timer = std::make_shared<asio::steady_timer>(fiber->executor, pause);
    timer->async_wait([fiber, timer](const ErrorCode&) { Resume(fiber); });
    SwitchOut(*fiber);
  }
};

thread_local ReactorWait t_reactor_wait;
thread_local OnAWorker t_on_a_worker;

void FiberMain(unsigned int high, unsigned int low) {
  Fiber& fiber = *reinterpret_cast<Fiber*>((static_cast<std::uintptr_t>(high) << 32) | low);
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &fiber.io_stack_bottom, &fiber.io_stack_size);
#endif
  for (;;) {
    {
      const std::function<void()> body = std::move(fiber.body);
      body();
    }
    fiber.finished = true;
    SwitchOut(fiber);
  }
}

// On the io thread: runs the fiber until it parks or its body returns.
void Resume(Fiber* fiber) {
  t_running = fiber;
  net::SetThreadWaitHook(&t_reactor_wait);
  core::SetThreadBlockingHook(&t_on_a_worker);
  SwitchIn(*fiber);
  core::SetThreadBlockingHook(nullptr);
  net::SetThreadWaitHook(nullptr);
  t_running = nullptr;
  if (!fiber->finished) return;
  const std::function<void()> then = std::move(fiber->then);
  fiber->finished = false;
  fiber->executor = {};
  std::erase(t_busy, fiber);
  t_idle.Give(fiber);
  then();
}

// A fiber whose stack enters FiberMain at its first switch in; null when no
// memory could be mapped.
Fiber* NewFiber() {
  void* stack = MapStack();
  if (stack == nullptr) return nullptr;
  auto* fiber = new Fiber;
  fiber->stack = stack;
  ::getcontext(&fiber->entry);
  fiber->entry.uc_stack.ss_sp = StackBottom(*fiber);
  fiber->entry.uc_stack.ss_size = kStackBytes - kGuardBytes;
  fiber->entry.uc_link = nullptr;
  // makecontext passes int arguments only: the pointer goes in two halves.
  const auto address = reinterpret_cast<std::uintptr_t>(fiber);
  ::makecontext(&fiber->entry, reinterpret_cast<void (*)()>(FiberMain), 2, static_cast<unsigned int>(address >> 32),
                static_cast<unsigned int>(address & 0xffffffffu));
  return fiber;
}

// A fiber still parked when its thread's loop ends for good is never
// resumed: it is kept, with what its stack holds, until the process ends
// (and shown to LeakSanitizer as such).
void KeepFrozen(Fiber* fiber) {
  static std::mutex mutex;
  static auto* const frozen = new std::vector<Fiber*>;
  std::lock_guard lock(mutex);
  frozen->push_back(fiber);
#if defined(__SANITIZE_ADDRESS__)
  __lsan_register_root_region(StackBottom(*fiber), kStackBytes - kGuardBytes);
#endif
}

struct WaitingStart {
  std::uint64_t weight;
  std::function<void()> start;
};
struct FiberSlots {
  std::uint64_t taken = 0;  // the weights of the fibers in flight
  std::size_t running = 0;
  std::deque<WaitingStart> waiting;

  bool Fits(std::uint64_t bound, std::uint64_t weight) const { return running == 0 || taken + weight <= bound; }
  void Take(std::uint64_t weight) {
    taken += weight;
    ++running;
  }
};
thread_local std::array<FiberSlots, 2> t_lanes;

// The fibers of this thread parked in ParkUntilReady, by socket.
struct ClientWait {
  int fd;
  Fiber* fiber;
};
thread_local std::vector<ClientWait> t_client_waits;

FiberSlots& Slots(FiberLane lane) { return t_lanes[lane == FiberLane::kBodiless ? 0 : 1]; }

}  // namespace

void StartFiber(const asio::any_io_executor& executor, WorkerPool& blocking_work, std::function<void()> body,
                std::function<void()> then) {
  Fiber* fiber = t_idle.Take();
  if (fiber == nullptr) fiber = NewFiber();
  if (fiber == nullptr) {
    // No memory for a stack: the request runs as it would without fibers.
    auto io_thread = asio::prefer(executor, asio::execution::outstanding_work.tracked);
    blocking_work.Post([io_thread = std::move(io_thread), body = std::move(body), then = std::move(then)] {
      body();
      asio::post(io_thread, then);
    });
    return;
  }
  fiber->executor = executor;
  fiber->blocking_work = &blocking_work;
  fiber->body = std::move(body);
  fiber->then = std::move(then);
  t_busy.push_back(fiber);
  Resume(fiber);
}

short ParkUntilReady(int fd, short events, std::chrono::steady_clock::time_point deadline, bool& timed_out) {
  t_client_waits.push_back({fd, t_running});
  const short came = t_reactor_wait.Wait(fd, events, deadline, timed_out);
  std::erase_if(t_client_waits, [fd](const ClientWait& wait) { return wait.fd == fd; });
  return came;
}

bool TakeFiberSlotOrQueue(FiberLane lane, std::uint64_t bound, std::uint64_t weight, std::function<void()> start) {
  FiberSlots& slots = Slots(lane);
  // Behind a waiting start even when this one would fit: first come, first served.
  if (slots.waiting.empty() && slots.Fits(bound, weight)) {
    slots.Take(weight);
    return true;
  }
  slots.waiting.push_back({weight, std::move(start)});
  return false;
}

void DropWaitingFibers() {
  for (FiberSlots& slots : t_lanes) slots = FiberSlots();
  for (Fiber* fiber : t_busy) KeepFrozen(fiber);
  t_busy.clear();
}

void DropWaitingStartsAndWakeClientWaits() {
  for (FiberSlots& slots : t_lanes) slots.waiting.clear();
  // Copied: each fiber woken leaves the list as it returns from its wait.
  const std::vector<ClientWait> waits = t_client_waits;
  for (const ClientWait& wait : waits) {
    auto& poller = asio::use_service<FiberPoller>(asio::query(wait.fiber->executor, asio::execution::context));
    poller.Wake(wait.fd);
  }
}

std::size_t FibersInFlight() { return t_lanes[0].running + t_lanes[1].running; }

void ReturnFiberSlot(FiberLane lane, std::uint64_t bound, std::uint64_t weight) {
  FiberSlots& slots = Slots(lane);
  slots.taken -= weight;
  --slots.running;
  while (!slots.waiting.empty() && slots.Fits(bound, slots.waiting.front().weight)) {
    const WaitingStart next = std::move(slots.waiting.front());
    slots.waiting.pop_front();
    slots.Take(next.weight);
    next.start();
  }
}

bool RunningOnAFiber() { return t_running != nullptr; }

}  // namespace imgsvc::server
