// DirectorySync: callers that link meanwhile share one sync, none is served
// by a sync that began before it called, failures reach the callers of the
// failed sync only, and directories do not wait for each other.

#include "storage/embedded/directory_sync.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace imgsvc::storage {
namespace {

using namespace std::chrono_literals;

TEST(DirectorySyncTest, ConcurrentCallersShareSyncsAndEachGetsOneThatBeganAfterItCalled) {
  constexpr int kThreads = 8;
  constexpr int kCallsPerThread = 50;
  // Syncs of one directory never overlap, so the number of the last ended
  // one only grows.
  std::atomic<int> started{0};
  std::atomic<int> last_ended{0};
  std::atomic<int> overlapping{0};
  std::atomic<bool> syncing{false};
  DirectorySync syncs([&](const std::string&) {
    if (syncing.exchange(true)) ++overlapping;
    const int number = ++started;
    std::this_thread::sleep_for(1ms);  // a disk's flush
    last_ended = number;
    syncing = false;
    return Status::Ok();
  });

  std::atomic<int> served_early{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        const int started_before = started.load();
        EXPECT_TRUE(syncs.SyncAfterLink("images/alice").ok());
        if (last_ended.load() <= started_before) ++served_early;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(served_early.load(), 0);
  EXPECT_EQ(overlapping.load(), 0);
  // One sync per call would be kThreads * kCallsPerThread.
  EXPECT_LE(started.load(), kThreads * kCallsPerThread / 2);
}

TEST(DirectorySyncTest, AFailedSyncFailsItsCallersAndTheNextCallSyncsAgain) {
  int calls = 0;
  DirectorySync syncs([&](const std::string&) {
    ++calls;
    return calls == 1 ? Status(Code::kInternal, "blob store: directory fsync failed: Input/output error")
                      : Status::Ok();
  });

  const Status failed = syncs.SyncAfterLink("images/alice");
  EXPECT_EQ(failed.code(), Code::kInternal);
  EXPECT_EQ(failed.message(), "blob store: directory fsync failed: Input/output error");
  EXPECT_TRUE(syncs.SyncAfterLink("images/alice").ok());
  EXPECT_EQ(calls, 2);
}

TEST(DirectorySyncTest, ADirectoryDoesNotWaitForAnotherDirectorysSync) {
  std::promise<void> release_alice;
  std::shared_future<void> alice_released = release_alice.get_future().share();
  std::promise<void> alice_syncing;
  std::mutex synced_mutex;
  std::vector<std::string> synced;
  DirectorySync syncs([&](const std::string& dir) {
    if (dir == "images/alice") {
      alice_syncing.set_value();
      alice_released.wait();
    }
    std::lock_guard lock(synced_mutex);
    synced.push_back(dir);
    return Status::Ok();
  });

  auto alice = std::async(std::launch::async, [&] { return syncs.SyncAfterLink("images/alice"); });
  alice_syncing.get_future().wait();
  auto bob = std::async(std::launch::async, [&] { return syncs.SyncAfterLink("images/bob"); });
  // A generous bound: only a hang fails it.
  ASSERT_EQ(bob.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(bob.get().ok());
  EXPECT_EQ(alice.wait_for(0s), std::future_status::timeout);
  release_alice.set_value();
  EXPECT_TRUE(alice.get().ok());
  EXPECT_EQ(synced, (std::vector<std::string>{"images/bob", "images/alice"}));
}

}  // namespace
}  // namespace imgsvc::storage
