#include "core/scratch_pool.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace imgsvc::core {
namespace {

TEST(ScratchPoolTest, LendsTheObjectReturnedLastFirst) {
  ScratchPool<std::string> pool;
  const std::string* first = nullptr;
  const std::string* second = nullptr;
  {
    ScratchPool<std::string>::Lease a = pool.Take();
    ScratchPool<std::string>::Lease b = pool.Take();
    first = &*a;
    second = &*b;
    EXPECT_NE(first, second);
    a->assign(100, 'a');  // memory kept for the next borrower
  }  // b goes back first, then a
  EXPECT_EQ(pool.idle(), 2u);
  ScratchPool<std::string>::Lease again = pool.Take();
  EXPECT_EQ(&*again, first);
  EXPECT_GE(again->capacity(), 100u);
  ScratchPool<std::string>::Lease then = pool.Take();
  EXPECT_EQ(&*then, second);
  EXPECT_EQ(pool.idle(), 0u);
}

TEST(ScratchPoolTest, AMovedLeaseReturnsItsObjectOnce) {
  ScratchPool<int> pool;
  {
    ScratchPool<int>::Lease lease = pool.Take();
    ScratchPool<int>::Lease moved = std::move(lease);
    *moved = 7;
    ScratchPool<int>::Lease other = pool.Take();
    other = std::move(moved);  // other's own object goes back now
    EXPECT_EQ(*other, 7);
    EXPECT_EQ(pool.idle(), 1u);
  }
  EXPECT_EQ(pool.idle(), 2u);
}

// No object is lent to two borrowers at once, whatever the threads do.
TEST(ScratchPoolTest, NoObjectIsLentTwiceAtOnce) {
  ScratchPool<int> pool;
  constexpr int kThreads = 4;
  constexpr int kRounds = 20'000;
  std::vector<std::thread> threads;
  std::vector<int> clashes(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&pool, &clashes, t] {
      for (int round = 0; round < kRounds; ++round) {
        ScratchPool<int>::Lease lease = pool.Take();
        if (*lease != 0) ++clashes[t];
        *lease = t + 1;
        std::this_thread::yield();
        if (*lease != t + 1) ++clashes[t];
        *lease = 0;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(clashes[t], 0) << "thread " << t;
  EXPECT_LE(pool.idle(), static_cast<std::size_t>(kThreads));
}

}  // namespace
}  // namespace imgsvc::core
