#include "core/ports.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <unordered_set>
#include <vector>

namespace imgsvc::core {
namespace {

TEST(MonotonicWallClockTest, FollowsTheWallClock) {
  MonotonicWallClock clock;
  const auto wall = [] {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const Micros before = wall();
  const Micros now = clock.Now();
  const Micros after = wall();
  EXPECT_GE(now, before);
  // Ahead of the wall clock only by the ties broken in this process.
  EXPECT_LE(now, after + 1'000'000);
}

TEST(MonotonicWallClockTest, StrictlyIncreasingAcrossThreadsAndInstances) {
  constexpr int kThreads = 4;
  constexpr int kReadings = 50'000;
  std::vector<std::vector<Micros>> readings(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&readings, t] {
      MonotonicWallClock clock;  // one per thread: the ordering is process-wide
      auto& mine = readings[static_cast<std::size_t>(t)];
      mine.reserve(kReadings);
      for (int i = 0; i < kReadings; ++i) mine.push_back(clock.Now());
    });
  }
  for (auto& thread : threads) thread.join();
  std::unordered_set<Micros> all;
  for (const auto& mine : readings) {
    for (std::size_t i = 1; i < mine.size(); ++i) ASSERT_LT(mine[i - 1], mine[i]);
    all.insert(mine.begin(), mine.end());
  }
  EXPECT_EQ(all.size(), static_cast<std::size_t>(kThreads * kReadings)) << "no two readings are equal";
}

bool IsLowerCaseUuidV4(const std::string& id) {
  if (id.size() != 36) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  const char variant = id[19];
  return id[14] == '4' && (variant == '8' || variant == '9' || variant == 'a' || variant == 'b');
}

TEST(RandomIdGeneratorTest, MakesUniqueLowerCaseV4Uuids) {
  RandomIdGenerator ids;
  std::unordered_set<std::string> seen;
  for (int i = 0; i < 100'000; ++i) {
    std::string id = ids.NewId();
    ASSERT_TRUE(IsLowerCaseUuidV4(id)) << id;
    ASSERT_TRUE(seen.insert(std::move(id)).second) << "duplicate id";
  }
}

TEST(RandomIdGeneratorTest, ThreadsDrawIndependentIds) {
  constexpr int kThreads = 4;
  std::vector<std::vector<std::string>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&made, t] {
      RandomIdGenerator ids;
      for (int i = 0; i < 10'000; ++i) made[static_cast<std::size_t>(t)].push_back(ids.NewId());
    });
  }
  for (auto& thread : threads) thread.join();
  std::unordered_set<std::string> seen;
  for (const auto& mine : made) seen.insert(mine.begin(), mine.end());
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kThreads * 10'000));
}

TEST(RandomIdGeneratorTest, RandomBitsAreSpreadOverEveryHexDigit) {
  // Each of the 30 free hex digits takes all 16 values within a few thousand
  // ids; a stuck position (e.g. a copying bug) would not.
  RandomIdGenerator ids;
  std::vector<std::unordered_set<char>> values(36);
  for (int i = 0; i < 5000; ++i) {
    const std::string id = ids.NewId();
    for (std::size_t p = 0; p < id.size(); ++p) values[p].insert(id[p]);
  }
  for (std::size_t p = 0; p < 36; ++p) {
    if (p == 8 || p == 13 || p == 18 || p == 23 || p == 14 || p == 19) continue;
    EXPECT_EQ(values[p].size(), 16u) << "position " << p;
  }
  EXPECT_EQ(values[19].size(), 4u);
}

}  // namespace
}  // namespace imgsvc::core
