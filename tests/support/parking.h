// Stand-ins for a fiber that parks (core::RunBlocking), for tests of code
// that must stay correct while another request runs during the park: what
// the standalone server's fibers do (server/fiber.h). Header-only.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <thread>
#include <utility>

#include "core/blocking.h"

namespace imgsvc::testing {

// The first time the caller parks, runs `meanwhile` on the caller's own
// thread before the parked work: another fiber of the same io thread.
// State kept per thread across the park is what this catches.
class MeanwhileOnThisThread final : public core::BlockingHook {
 public:
  explicit MeanwhileOnThisThread(std::function<void()> meanwhile) : meanwhile_(std::move(meanwhile)) {}
  void Run(const std::function<void()>& work) override {
    if (std::exchange(first_, false)) meanwhile_();
    work();
  }
  void Sleep(std::chrono::milliseconds pause) override { std::this_thread::sleep_for(pause); }

 private:
  std::function<void()> meanwhile_;
  bool first_ = true;
};

// The first time the caller parks, runs `meanwhile` on another thread and
// gives it `limit` to finish before the parked work goes on. It cannot
// finish when it needs a lock the parked caller holds: on a fiber, where
// both would run on one io thread, that is a deadlock.
class MeanwhileOnAnotherThread final : public core::BlockingHook {
 public:
  explicit MeanwhileOnAnotherThread(std::function<void()> meanwhile,
                                    std::chrono::milliseconds limit = std::chrono::seconds(5))
      : meanwhile_(std::move(meanwhile)), limit_(limit) {}
  // Joined here: it may still wait for a lock the caller released later.
  ~MeanwhileOnAnotherThread() {
    if (thread_.joinable()) thread_.join();
  }
  void Run(const std::function<void()>& work) override {
    if (std::exchange(first_, false)) {
      std::packaged_task<void()> task(meanwhile_);
      std::future<void> done = task.get_future();
      thread_ = std::thread(std::move(task));
      finished_in_time_ = done.wait_for(limit_) == std::future_status::ready;
    }
    work();
  }
  void Sleep(std::chrono::milliseconds pause) override { std::this_thread::sleep_for(pause); }
  bool finished_in_time() const { return finished_in_time_; }

 private:
  std::function<void()> meanwhile_;
  std::chrono::milliseconds limit_;
  bool first_ = true;
  bool finished_in_time_ = false;
  std::thread thread_;
};

}  // namespace imgsvc::testing
