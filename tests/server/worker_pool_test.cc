#include "server/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <vector>

namespace imgsvc::server {
namespace {

using std::chrono::seconds;

TEST(WorkerPoolTest, StartsNoThreadUntilATaskArrives) {
  WorkerPool pool(32);
  EXPECT_EQ(pool.started_threads(), 0u);
  std::promise<void> ran;
  pool.Post([&ran] { ran.set_value(); });
  EXPECT_EQ(ran.get_future().wait_for(seconds(10)), std::future_status::ready);
  EXPECT_EQ(pool.started_threads(), 1u);
}

// Waits until every started thread waits for work again.
bool WaitUntilAllIdle(const WorkerPool& pool) {
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (pool.idle_threads() != pool.started_threads()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

TEST(WorkerPoolTest, ReusesAnIdleThreadForTasksOneAfterAnother) {
  WorkerPool pool(32);
  for (int i = 0; i < 50; ++i) {
    std::promise<void> ran;
    pool.Post([&ran] { ran.set_value(); });
    ASSERT_EQ(ran.get_future().wait_for(seconds(10)), std::future_status::ready);
    ASSERT_TRUE(WaitUntilAllIdle(pool));
  }
  EXPECT_EQ(pool.started_threads(), 1u);
}

// Tasks that block until all of them run at once need one thread each.
TEST(WorkerPoolTest, GrowsToTheConcurrencyAsked) {
  constexpr int kTasks = 6;
  WorkerPool pool(32);
  std::atomic<int> arrived{0};
  std::promise<void> all_arrived;
  std::shared_future<void> release = all_arrived.get_future().share();
  std::vector<std::future<void>> done;
  for (int i = 0; i < kTasks; ++i) {
    auto finished = std::make_shared<std::promise<void>>();
    done.push_back(finished->get_future());
    pool.Post([&arrived, &all_arrived, release, finished] {
      if (++arrived == kTasks) all_arrived.set_value();
      release.wait();
      finished->set_value();
    });
  }
  for (auto& future : done) ASSERT_EQ(future.wait_for(seconds(10)), std::future_status::ready);
  EXPECT_EQ(pool.started_threads(), static_cast<std::size_t>(kTasks));
}

TEST(WorkerPoolTest, QueuesBeyondTheBoundAndRunsEveryTaskInOrder) {
  WorkerPool pool(2);
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  std::mutex mutex;
  std::vector<int> order;
  std::vector<std::future<void>> done;
  for (int i = 0; i < 20; ++i) {
    auto finished = std::make_shared<std::promise<void>>();
    done.push_back(finished->get_future());
    pool.Post([i, open, &mutex, &order, finished] {
      open.wait();
      {
        std::lock_guard lock(mutex);
        order.push_back(i);
      }
      finished->set_value();
    });
  }
  EXPECT_EQ(pool.started_threads(), 2u);
  gate.set_value();
  for (auto& future : done) ASSERT_EQ(future.wait_for(seconds(10)), std::future_status::ready);
  EXPECT_EQ(pool.started_threads(), 2u);
  ASSERT_EQ(order.size(), 20u);
  // Two threads take tasks from one queue: each task starts after every
  // task posted two places before it was taken, so no task overtakes by more.
  for (std::size_t i = 0; i < order.size(); ++i) {
    EXPECT_LE(order[i], static_cast<int>(i) + 1) << "task " << order[i] << " ran at position " << i;
  }
}

TEST(WorkerPoolTest, DestructionFinishesRunningTasksAndDropsQueuedOnes) {
  auto queued_alive = std::make_shared<int>(0);
  std::weak_ptr<int> queued_watch = queued_alive;
  std::atomic<bool> running_finished{false};
  std::atomic<bool> queued_ran{false};
  {
    WorkerPool pool(1);
    std::promise<void> started;
    // Long enough that the pool's destruction (right after `started`)
    // begins before this task ends, even on a loaded machine.
    pool.Post([&started, &running_finished] {
      started.set_value();
      std::this_thread::sleep_for(std::chrono::milliseconds(1000));
      running_finished = true;
    });
    pool.Post([held = std::move(queued_alive), &queued_ran] { queued_ran = true; });
    ASSERT_EQ(started.get_future().wait_for(seconds(10)), std::future_status::ready);
  }
  EXPECT_TRUE(running_finished);
  EXPECT_FALSE(queued_ran);
  EXPECT_TRUE(queued_watch.expired()) << "the queued task was not destroyed";
}

}  // namespace
}  // namespace imgsvc::server
