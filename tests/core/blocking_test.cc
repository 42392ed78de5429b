#include "core/blocking.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace imgsvc::core {
namespace {

// Runs the work on a thread of its own, as the server's hook runs it on a
// worker while the fiber parks.
class OnAnotherThread final : public BlockingHook {
 public:
  void Run(const std::function<void()>& work) override {
    ++runs;
    std::thread(work).join();
  }
  void Sleep(std::chrono::milliseconds pause) override { pauses.push_back(pause); }
  int runs = 0;
  std::vector<std::chrono::milliseconds> pauses;
};

TEST(RunBlockingTest, WithoutAHookTheWorkRunsAtOnceOnTheCallersThread) {
  std::thread::id ran_on;
  RunBlocking([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(RunBlockingTest, WithAHookTheWorkGoesThroughItUntilItIsCleared) {
  OnAnotherThread hook;
  std::thread::id ran_on;
  SetThreadBlockingHook(&hook);
  RunBlocking([&] { ran_on = std::this_thread::get_id(); });
  SetThreadBlockingHook(nullptr);
  EXPECT_EQ(hook.runs, 1);
  EXPECT_NE(ran_on, std::this_thread::get_id());

  RunBlocking([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(hook.runs, 1);
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(RunBlockingTest, AHookIsTheSettingThreadsOnly) {
  OnAnotherThread hook;
  SetThreadBlockingHook(&hook);
  std::thread([] { RunBlocking([] {}); }).join();
  SetThreadBlockingHook(nullptr);
  EXPECT_EQ(hook.runs, 0);
}

TEST(RunBlockingTest, WorkThatReturnsAValueGivesItBackThroughTheHook) {
  EXPECT_EQ(RunBlocking([] { return std::string("at once"); }), "at once");
  OnAnotherThread hook;
  SetThreadBlockingHook(&hook);
  const std::thread::id ran_on = RunBlocking([] { return std::this_thread::get_id(); });
  SetThreadBlockingHook(nullptr);
  EXPECT_EQ(hook.runs, 1);
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(SleepForTest, WithAHookThePauseGoesThroughIt) {
  OnAnotherThread hook;
  SetThreadBlockingHook(&hook);
  SleepFor(std::chrono::milliseconds(250));
  SetThreadBlockingHook(nullptr);
  EXPECT_EQ(hook.pauses, std::vector<std::chrono::milliseconds>{std::chrono::milliseconds(250)});
}

TEST(SleepForTest, WithoutAHookTheThreadSleeps) {
  const auto before = std::chrono::steady_clock::now();
  SleepFor(std::chrono::milliseconds(20));
  EXPECT_GE(std::chrono::steady_clock::now() - before, std::chrono::milliseconds(20));
}

}  // namespace
}  // namespace imgsvc::core
