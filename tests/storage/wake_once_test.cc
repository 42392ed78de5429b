// WakeOnce: waiters return only once it is set, every one of them then, and
// at once when it already was.
#include "storage/embedded/wake_once.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace imgsvc::storage {
namespace {

using namespace std::chrono_literals;

TEST(WakeOnceTest, WaitReturnsAtOnceWhenAlreadySet) {
  WakeOnce event;
  EXPECT_FALSE(event.is_set());
  event.Set();
  EXPECT_TRUE(event.is_set());
  event.Wait();
  event.Wait();
}

TEST(WakeOnceTest, WaitersSleepUntilSetThenAllReturn) {
  WakeOnce event;
  std::atomic<int> returned{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 8; ++i) {
    waiters.emplace_back([&] {
      event.Wait();
      returned.fetch_add(1);
    });
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(returned.load(), 0) << "a waiter returned before Set";
  event.Set();
  for (std::thread& waiter : waiters) waiter.join();
  EXPECT_EQ(returned.load(), 8);
}

// The setter's wake-up may come after the waiter has returned and destroyed
// the event (the pattern of a job on its caller's stack).
TEST(WakeOnceTest, TheWaiterMayDestroyTheEventAsSoonAsItReturns) {
  for (int round = 0; round < 2000; ++round) {
    auto* event = new WakeOnce;
    std::thread setter([event] { event->Set(); });
    event->Wait();
    delete event;
    setter.join();
  }
}

}  // namespace
}  // namespace imgsvc::storage
