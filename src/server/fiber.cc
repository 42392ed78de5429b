#include "server/fiber.h"

#include <poll.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/blocking.h"
#include "net/http_client.h"

// AddressSanitizer keeps a shadow of each stack and must be told which one runs.
#if defined(__SANITIZE_ADDRESS__)
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, std::size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                                std::size_t* size_old);
extern "C" void __asan_unpoison_memory_region(void const volatile* address, std::size_t size);
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

// Stacks of ended fibers, kept for the next ones of their thread.
class StackCache {
 public:
  ~StackCache() {
    for (void* stack : free_) ::munmap(stack, kStackBytes);
  }
  // Null when no memory could be mapped.
  void* Take() {
    if (!free_.empty()) {
      void* stack = free_.back();
      free_.pop_back();
#if defined(__SANITIZE_ADDRESS__)
      // The frames of the fiber that ended here never returned: their
      // redzones are still marked.
      __asan_unpoison_memory_region(static_cast<char*>(stack) + kGuardBytes, kStackBytes - kGuardBytes);
#endif
      return stack;
    }
    void* stack = ::mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return nullptr;
    if (::mprotect(stack, kGuardBytes, PROT_NONE) != 0) {
      ::munmap(stack, kStackBytes);
      return nullptr;
    }
    return stack;
  }
  void Give(void* stack) { free_.push_back(stack); }

 private:
  std::vector<void*> free_;
};

struct Fiber {
  ucontext_t self{};
  ucontext_t io_thread{};
  void* stack = nullptr;
  asio::any_io_executor executor;
  WorkerPool* blocking_work = nullptr;
  std::function<void()> body;
  std::function<void()> then;
  bool finished = false;
  // The io thread's stack, for AddressSanitizer.
  const void* io_stack_bottom = nullptr;
  std::size_t io_stack_size = 0;
};

thread_local Fiber* t_running = nullptr;
thread_local StackCache t_stacks;

void* StackBottom(const Fiber& fiber) { return static_cast<char*>(fiber.stack) + kGuardBytes; }

// From the io thread's stack into the fiber.
void SwitchIn(Fiber& fiber) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, StackBottom(fiber), kStackBytes - kGuardBytes);
  ::swapcontext(&fiber.io_thread, &fiber.self);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  ::swapcontext(&fiber.io_thread, &fiber.self);
#endif
}

// From the fiber back to the io thread's stack, for good once `finished`.
void SwitchOut(Fiber& fiber) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(fiber.finished ? nullptr : &fake_stack, fiber.io_stack_bottom,
                                 fiber.io_stack_size);
  ::swapcontext(&fiber.self, &fiber.io_thread);
  __sanitizer_finish_switch_fiber(fake_stack, &fiber.io_stack_bottom, &fiber.io_stack_size);
#else
  ::swapcontext(&fiber.self, &fiber.io_thread);
#endif
}

void Resume(Fiber* fiber);

// net::HttpClient's socket waits, while a fiber runs.
class ReactorWait final : public net::WaitHook {
 public:
  short Wait(int fd, short events, std::optional<std::chrono::steady_clock::time_point> deadline,
             bool& timed_out) override {
    Fiber& fiber = *t_running;
    // Shared with the handlers, which may run after this frame is gone (a
    // timer's cancellation queued behind the socket's readiness, or the
    // second of a read and a write wait).
    struct State {
      State(const asio::any_io_executor& executor, int fd) : descriptor(executor, fd), timer(executor) {}
      asio::posix::stream_descriptor descriptor;
      asio::steady_timer timer;
      short got = 0;
      bool resumed = false;
      bool expired = false;
    };
    auto state = std::make_shared<State>(fiber.executor, fd);
    if (deadline) {
      state->timer.expires_at(*deadline);
      state->timer.async_wait([state](const ErrorCode& ec) {
        if (ec || state->resumed) return;
        state->expired = true;
        state->descriptor.cancel();
      });
    }
    // The first of the waits asked for resumes the fiber; the other is
    // cancelled. (A write waits for an answer too: the peer may answer
    // before it has read the whole request.)
    const auto on_ready = [fiber = &fiber, state](short event) {
      return [fiber, state, event](const ErrorCode& ec) {
        if (state->resumed) return;
        state->resumed = true;
        if (!ec) state->got = event;
        state->descriptor.cancel();
        Resume(fiber);
      };
    };
    if ((events & POLLOUT) != 0) {
      state->descriptor.async_wait(asio::posix::stream_descriptor::wait_write, on_ready(POLLOUT));
    }
    if ((events & POLLIN) != 0) {
      state->descriptor.async_wait(asio::posix::stream_descriptor::wait_read, on_ready(POLLIN));
    }
    SwitchOut(fiber);
    state->timer.cancel();
    state->descriptor.release();  // the socket stays the client's
    timed_out = state->expired && state->got == 0;
    if (state->got != 0) return state->got;
    return timed_out ? 0 : POLLERR;
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
  fiber.body();
  fiber.finished = true;
  SwitchOut(fiber);
}

// On the io thread: runs the fiber until it parks or finishes.
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
  t_stacks.Give(fiber->stack);
  delete fiber;
  then();
}

struct FiberSlots {
  std::size_t running = 0;
  std::deque<std::function<void()>> waiting;
};
thread_local FiberSlots t_slots;

}  // namespace

void StartFiber(const asio::any_io_executor& executor, WorkerPool& blocking_work, std::function<void()> body,
                std::function<void()> then) {
  void* stack = t_stacks.Take();
  if (stack == nullptr) {
    // No memory for a stack: the request runs as it would without fibers.
    auto io_thread = asio::prefer(executor, asio::execution::outstanding_work.tracked);
    blocking_work.Post([io_thread = std::move(io_thread), body = std::move(body), then = std::move(then)] {
      body();
      asio::post(io_thread, then);
    });
    return;
  }
  auto* fiber = new Fiber;
  fiber->stack = stack;
  fiber->executor = executor;
  fiber->blocking_work = &blocking_work;
  fiber->body = std::move(body);
  fiber->then = std::move(then);
  ::getcontext(&fiber->self);
  fiber->self.uc_stack.ss_sp = StackBottom(*fiber);
  fiber->self.uc_stack.ss_size = kStackBytes - kGuardBytes;
  fiber->self.uc_link = nullptr;
  // makecontext passes int arguments only: the pointer goes in two halves.
  const auto address = reinterpret_cast<std::uintptr_t>(fiber);
  ::makecontext(&fiber->self, reinterpret_cast<void (*)()>(FiberMain), 2, static_cast<unsigned int>(address >> 32),
                static_cast<unsigned int>(address & 0xffffffffu));
  Resume(fiber);
}

bool TakeFiberSlotOrQueue(std::size_t bound, std::function<void()> start) {
  if (t_slots.running < bound) {
    ++t_slots.running;
    return true;
  }
  t_slots.waiting.push_back(std::move(start));
  return false;
}

void DropWaitingFibers() {
  t_slots.waiting.clear();
  t_slots.running = 0;
}

void ReturnFiberSlot() {
  if (t_slots.waiting.empty()) {
    --t_slots.running;
    return;
  }
  const std::function<void()> next = std::move(t_slots.waiting.front());
  t_slots.waiting.pop_front();
  next();
}

}  // namespace imgsvc::server
