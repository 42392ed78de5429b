#include "core/auth.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <thread>

#include "support/parking.h"

namespace imgsvc::core {
namespace {

using std::chrono::seconds;

// A secret source whose cache (`current`) only changes when refreshed, like
// the Secrets Manager source between TTL expiries.
class FakeTokenSource final : public TokenSource {
 public:
  explicit FakeTokenSource(std::string secret) : current_(std::move(secret)), upstream_(current_) {}

  // Both the cache and upstream hold `secret`.
  void Set(std::string secret) {
    std::lock_guard lock(mutex_);
    current_ = upstream_ = std::move(secret);
  }
  // The secret rotates upstream; Current() keeps returning the cached one.
  void Rotate(std::string secret) {
    std::lock_guard lock(mutex_);
    upstream_ = std::move(secret);
  }
  void FailWith(std::optional<Status> failure) {
    std::lock_guard lock(mutex_);
    failure_ = std::move(failure);
  }
  // Makes Refresh() wait until Release() (to order concurrent requests).
  void HoldRefreshes() {
    std::lock_guard lock(mutex_);
    hold_ = true;
  }
  void Release() {
    std::lock_guard lock(mutex_);
    hold_ = false;
    cv_.notify_all();
  }
  void WaitUntilRefreshing() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return refreshes_ > 0; });
  }
  void WaitForCurrentCalls(int n) {
    while (current_calls_.load() < n) std::this_thread::yield();
  }

  StatusOr<std::string> Current() override {
    std::lock_guard lock(mutex_);
    // Counted once the answer is fixed, so a waiter knows what was seen.
    ++current_calls_;
    if (failure_) return *failure_;
    return current_;
  }
  StatusOr<std::string> Refresh() override {
    std::unique_lock lock(mutex_);
    ++refreshes_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return !hold_; });
    if (failure_) return *failure_;
    current_ = upstream_;
    return current_;
  }
  Status CheckReady() override { return Status::Ok(); }

  int refreshes() {
    std::lock_guard lock(mutex_);
    return refreshes_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::string current_;
  std::string upstream_;
  std::optional<Status> failure_;
  bool hold_ = false;
  int refreshes_ = 0;
  std::atomic<int> current_calls_{0};
};

class FakeClock final : public Clock {
 public:
  Micros Now() override { return now_.load(); }
  void Advance(seconds s) { now_ += std::chrono::duration_cast<std::chrono::microseconds>(s).count(); }

 private:
  std::atomic<Micros> now_{1'700'000'000'000'000};
};

std::optional<std::string> UserOf(const StatusOr<std::optional<std::string>>& result) {
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  return result.ok() ? *result : std::nullopt;
}

void ExpectUnauthenticated(const StatusOr<std::optional<std::string>>& result, std::string_view key) {
  ASSERT_FALSE(result.ok()) << key;
  EXPECT_EQ(result.status().code(), Code::kUnauthenticated) << key;
  EXPECT_EQ(result.status().message(), "Invalid API key");
}

// Refreshes park, as the Secrets Manager source's fetch does on a fiber
// (through RunBlocking).
class ParkingTokenSource final : public TokenSource {
 public:
  explicit ParkingTokenSource(TokenSource& inner) : inner_(inner) {}
  StatusOr<std::string> Current() override { return inner_.Current(); }
  StatusOr<std::string> Refresh() override {
    return RunBlocking([this] { return inner_.Refresh(); });
  }
  Status CheckReady() override { return inner_.CheckReady(); }

 private:
  TokenSource& inner_;
};

class AuthTest : public ::testing::Test {
 protected:
  FakeTokenSource tokens_{"s3cret-token"};
  FakeClock clock_;
};

TEST_F(AuthTest, NoHeaderIsAnonymous) {
  Authenticator auth(tokens_, AuthMode::kShared, seconds(30), clock_);
  const auto result = auth.Authenticate(std::nullopt);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(*result, std::nullopt);
}

TEST_F(AuthTest, SharedModeAcceptsAnyValidUserWithTheToken) {
  Authenticator auth(tokens_, AuthMode::kShared, seconds(30), clock_);
  EXPECT_EQ(UserOf(auth.Authenticate("alice:s3cret-token")), "alice");
  EXPECT_EQ(UserOf(auth.Authenticate("bob@example.com:s3cret-token")), "bob@example.com");
  EXPECT_EQ(tokens_.refreshes(), 0);
}

TEST_F(AuthTest, UserIdEndsAtTheFirstColon) {
  tokens_.Set("to:ken");
  Authenticator auth(tokens_, AuthMode::kShared, seconds(30), clock_);
  EXPECT_EQ(UserOf(auth.Authenticate("alice:to:ken")), "alice");
}

TEST_F(AuthTest, MalformedKeysAreRejectedWithoutEchoingThem) {
  Authenticator auth(tokens_, AuthMode::kShared, seconds(30), clock_);
  for (const std::string_view key :
       {"", "s3cret-token", ":s3cret-token", "alice:", "al ice:s3cret-token", "al/ice:s3cret-token",
        "alice:s3cret-tokeN", "alice:s3cret-token ", "alice:s3cret-toke"}) {
    const auto result = auth.Authenticate(key);
    ExpectUnauthenticated(result, key);
    if (!result.ok()) {
      EXPECT_EQ(result.status().message().find("s3cret"), std::string::npos);
    }
  }
  EXPECT_EQ(auth.Authenticate(std::string(129, 'a') + ":s3cret-token").status().code(), Code::kUnauthenticated);
}

TEST_F(AuthTest, PerUserTokenIsHexHmacOfTheUserId) {
  // hex(HMAC-SHA256("master-key", "alice")), computed independently.
  EXPECT_EQ(PerUserToken("master-key", "alice"), "d16cca2f680341faff196ab829f857a2512234d60ec8db5cf5848eec09afff64");
  EXPECT_NE(PerUserToken("master-key", "bob"), PerUserToken("master-key", "alice"));
  EXPECT_NE(PerUserToken("other-master", "alice"), PerUserToken("master-key", "alice"));
}

TEST_F(AuthTest, PerUserModeBindsTheTokenToItsUser) {
  tokens_.Set("master-key");
  Authenticator auth(tokens_, AuthMode::kPerUser, seconds(30), clock_);
  const std::string alice_token = PerUserToken("master-key", "alice");
  EXPECT_EQ(UserOf(auth.Authenticate("alice:" + alice_token)), "alice");
  ExpectUnauthenticated(auth.Authenticate("bob:" + alice_token), "bob with alice's token");
  ExpectUnauthenticated(auth.Authenticate("alice:master-key"), "the master key itself");
}

TEST_F(AuthTest, RotationIsPickedUpByOneRefresh) {
  Authenticator auth(tokens_, AuthMode::kShared, seconds(30), clock_);
  tokens_.Rotate("rotated-token");
  EXPECT_EQ(UserOf(auth.Authenticate("alice:rotated-token")), "alice");
  EXPECT_EQ(tokens_.refreshes(), 1);
  EXPECT_EQ(UserOf(auth.Authenticate("alice:rotated-token")), "alice");
  EXPECT_EQ(tokens_.refreshes(), 1);
  ExpectUnauthenticated(auth.Authenticate("alice:s3cret-token"), "old token");
}

TEST_F(AuthTest, AFloodOfBadKeysRefreshesOncePerInterval) {
  Authenticator auth(tokens_, AuthMode::kShared, seconds(30), clock_);
  for (int i = 0; i < 100; ++i) ExpectUnauthenticated(auth.Authenticate("alice:wrong"), "wrong");
  EXPECT_EQ(tokens_.refreshes(), 1);
  clock_.Advance(seconds(29));
  ExpectUnauthenticated(auth.Authenticate("alice:wrong"), "wrong");
  EXPECT_EQ(tokens_.refreshes(), 1);
  clock_.Advance(seconds(1));
  ExpectUnauthenticated(auth.Authenticate("alice:wrong"), "wrong");
  EXPECT_EQ(tokens_.refreshes(), 2);
}

// Counts what would leave a fiber's io thread for a worker.
class CountingHook final : public BlockingHook {
 public:
  void Run(const std::function<void()>& work) override {
    ++runs;
    work();
  }
  void Sleep(std::chrono::milliseconds pause) override { std::this_thread::sleep_for(pause); }
  int runs = 0;
};

TEST_F(AuthTest, BadKeysBetweenRefreshesAreRefusedWithoutBlockingWork) {
  Authenticator auth(tokens_, AuthMode::kPerUser, seconds(30), clock_);
  CountingHook hook;
  SetThreadBlockingHook(&hook);
  ExpectUnauthenticated(auth.Authenticate("alice:wrong"), "wrong");
  const int runs_of_the_refresh = hook.runs;
  for (int i = 0; i < 100; ++i) ExpectUnauthenticated(auth.Authenticate("alice:wrong"), "wrong");
  const int runs_within_the_interval = hook.runs - runs_of_the_refresh;
  clock_.Advance(seconds(30));
  ExpectUnauthenticated(auth.Authenticate("alice:wrong"), "wrong");
  const int runs_once_due = hook.runs - runs_of_the_refresh - runs_within_the_interval;
  SetThreadBlockingHook(nullptr);
  EXPECT_EQ(runs_of_the_refresh, 1);
  EXPECT_EQ(runs_within_the_interval, 0);
  EXPECT_EQ(runs_once_due, 1);
  EXPECT_EQ(tokens_.refreshes(), 2);
  EXPECT_EQ(UserOf(auth.Authenticate("alice:" + PerUserToken("s3cret-token", "alice"))), "alice");
}

TEST_F(AuthTest, RotationWithinTheIntervalWaitsForTheNextOne) {
  Authenticator auth(tokens_, AuthMode::kShared, seconds(30), clock_);
  ExpectUnauthenticated(auth.Authenticate("alice:wrong"), "wrong");
  tokens_.Rotate("rotated-token");
  ExpectUnauthenticated(auth.Authenticate("alice:rotated-token"), "too soon");
  clock_.Advance(seconds(30));
  EXPECT_EQ(UserOf(auth.Authenticate("alice:rotated-token")), "alice");
}

TEST_F(AuthTest, RequestsQueuedBehindARefreshUseItsResult) {
  Authenticator auth(tokens_, AuthMode::kShared, seconds(30), clock_);
  tokens_.Rotate("rotated-token");
  tokens_.HoldRefreshes();
  StatusOr<std::optional<std::string>> first = Status(Code::kInternal, "not run");
  StatusOr<std::optional<std::string>> second = Status(Code::kInternal, "not run");
  std::thread a([&] { first = auth.Authenticate("alice:rotated-token"); });
  tokens_.WaitUntilRefreshing();
  std::thread b([&] { second = auth.Authenticate("bob:rotated-token"); });
  tokens_.WaitForCurrentCalls(2);  // b saw the stale secret before the refresh finished
  tokens_.Release();
  a.join();
  b.join();
  EXPECT_EQ(UserOf(first), "alice");
  EXPECT_EQ(UserOf(second), "bob");
  EXPECT_EQ(tokens_.refreshes(), 1);
}

TEST_F(AuthTest, TokenSourceFailuresAreUnavailable) {
  Authenticator auth(tokens_, AuthMode::kShared, seconds(30), clock_);
  tokens_.FailWith(Status(Code::kUnavailable, "secretsmanager: timeout").set_retry_after(5));
  const auto result = auth.Authenticate("alice:s3cret-token");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kUnavailable);
  EXPECT_EQ(result.status().message(), "secretsmanager: timeout") << "the cause names the dependency";
  EXPECT_EQ(result.status().retry_after(), 5);

  tokens_.FailWith(Status(Code::kInternal, "access denied"));
  EXPECT_EQ(auth.Authenticate("alice:s3cret-token").status().code(), Code::kUnavailable);
  tokens_.FailWith(Status(Code::kDeadlineExceeded, "out of time"));
  EXPECT_EQ(auth.Authenticate("alice:s3cret-token").status().code(), Code::kDeadlineExceeded);
  tokens_.FailWith(std::nullopt);
  EXPECT_EQ(UserOf(auth.Authenticate("alice:s3cret-token")), "alice");
}

// Current() answers from cache but the refetch fails: still unavailable, and
// the failing refetch is rate-limited like a successful one.
class FailingRefreshSource final : public TokenSource {
 public:
  StatusOr<std::string> Current() override { return std::string("cached"); }
  StatusOr<std::string> Refresh() override {
    ++refreshes;
    return Status(Code::kUnavailable, "down");
  }
  Status CheckReady() override { return Status::Ok(); }
  int refreshes = 0;
};

TEST_F(AuthTest, FailingRefreshIsUnavailableAndRateLimited) {
  FailingRefreshSource source;
  Authenticator auth(source, AuthMode::kShared, seconds(30), clock_);
  EXPECT_EQ(auth.Authenticate("alice:other").status().code(), Code::kUnavailable);
  ExpectUnauthenticated(auth.Authenticate("alice:other"), "within the interval");
  EXPECT_EQ(source.refreshes, 1);
  EXPECT_EQ(UserOf(auth.Authenticate("alice:cached")), "alice");
}

TEST_F(AuthTest, NoLockIsHeldWhileARefreshParks) {
  ParkingTokenSource parking(tokens_);
  Authenticator auth(parking, AuthMode::kShared, seconds(60), clock_);
  StatusOr<std::optional<std::string>> other = Status(Code::kInternal, "not run");
  {
    // On a fiber, both requests would run on one io thread: a lock held by
    // the parked one would block the thread that must resume it.
    imgsvc::testing::MeanwhileOnAnotherThread hook([&] { other = auth.Authenticate("bob:wrong-token"); });
    SetThreadBlockingHook(&hook);
    const auto first = auth.Authenticate("alice:wrong-token");
    SetThreadBlockingHook(nullptr);
    EXPECT_TRUE(hook.finished_in_time()) << "the second request waited for the parked one's lock";
    ExpectUnauthenticated(first, "alice:wrong-token");
  }
  ExpectUnauthenticated(other, "bob:wrong-token");
  EXPECT_EQ(tokens_.refreshes(), 1);  // one refresh per interval, still
}

}  // namespace
}  // namespace imgsvc::core
