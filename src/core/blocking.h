// RunBlocking: work that may hold its thread for long (a network call made
// under a lock, a wait for another thread). SleepFor: a pause.
//
// The standalone server runs AWS reads on fibers of its io threads
// (server/fiber.h): a fiber parks where it would wait on a socket, and the
// io thread runs other fibers meanwhile. Work that blocks in any other way
// would stall every fiber of that thread, and a lock held across a parked
// fiber's network call deadlocks the next fiber of the thread that wants
// it. Such work goes through RunBlocking: on a fiber it runs on another
// thread while the fiber parks; elsewhere (worker threads, Lambda, tools)
// it runs at once, on the caller's thread. Likewise SleepFor parks a fiber
// on a timer, and sleeps elsewhere.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

namespace imgsvc::core {

// What RunBlocking and SleepFor do on a thread that has a hook (see
// SetThreadBlockingHook).
class BlockingHook {
 public:
  virtual ~BlockingHook() = default;
  // Runs `work` to completion, then returns; what `work` throws is thrown
  // here.
  virtual void Run(const std::function<void()>& work) = 0;
  // Returns once `pause` has passed.
  virtual void Sleep(std::chrono::milliseconds pause) = 0;
};

// Runs `work` through the thread's hook, or at once without one.
void RunBlocking(const std::function<void()>& work);

// The same for work that returns a value: returns it.
template <class Work>
  requires(!std::is_void_v<std::invoke_result_t<Work&>>)
std::invoke_result_t<Work&> RunBlocking(Work&& work) {
  std::optional<std::invoke_result_t<Work&>> result;
  RunBlocking(std::function<void()>([&] { result.emplace(work()); }));
  return std::move(*result);
}

// Pauses through the thread's hook, or sleeps without one.
void SleepFor(std::chrono::milliseconds pause);

// The calling thread's hook, until replaced; null: none. The server sets it
// while a fiber runs.
void SetThreadBlockingHook(BlockingHook* hook);

}  // namespace imgsvc::core
