// WakeOnce: a one-shot event that threads wait for in the kernel, on its
// futex word, until one thread sets it.
//
// For waits as long as a disk flush, where std::condition_variable's shared
// wake-ups and std::atomic::wait's spinning cost context switches: libstdc++'s
// atomic wait spins and yields the processor a few times first (about one
// switch per upload, measured), and one condition variable shared by several
// groups of waiters wakes them all for any group's event.
//
// Set() may be the last use of the object by the setter and the waiter's
// Wait() may return and destroy it as soon as the word is set: the wake-up
// that follows only names the word's address, which the kernel does not
// read (a stale address can at worst wake a waiter that then checks again).
#pragma once

#include <atomic>
#include <cstdint>

namespace imgsvc::storage {

class WakeOnce {
 public:
  // Returns once Set() was called (at once if it was already).
  void Wait() const;
  // Sets the event and wakes every waiter.
  void Set();
  bool is_set() const { return word_.load(std::memory_order_acquire) != 0; }

 private:
  std::atomic<std::uint32_t> word_{0};
};

}  // namespace imgsvc::storage
