// The Runtime API client and loop against the fake Runtime API on loopback.
#include "lambda/runtime.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/fake_runtime_api.h"

namespace imgsvc::lambda {
namespace runtime_test {

using std::chrono::milliseconds;
using Fake = imgsvc::testing::FakeRuntimeApi;
using imgsvc::testing::FakeEvent;
using imgsvc::testing::RuntimePost;

// Generous: the VM is slow and noisy; waits end as soon as the fact holds.
constexpr milliseconds kWait{20000};

FakeEvent Event(std::string body) {
  FakeEvent event;
  event.event = std::move(body);
  return event;
}

std::optional<std::string> Environment(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::nullopt : std::optional<std::string>(value);
}

class RuntimeLoopTest : public ::testing::Test {
 protected:
  void StartFake(imgsvc::testing::FakeRuntimeOptions options = {}) {
    auto fake = Fake::Start(std::move(options));
    ASSERT_TRUE(fake.ok()) << fake.status().ToString();
    fake_ = std::move(*fake);
    client_ = std::make_unique<RuntimeClient>(fake_->address(), std::make_shared<net::HttpClient>());
  }

  void SetUp() override { StartFake(); }

  // Runs RunLoop on a thread; loop_result_ becomes ready when it returns.
  void StartLoop(std::function<InvocationResult(const Invocation&)> handler) {
    std::packaged_task<Status()> task(
        [this, handler = std::move(handler)] { return RunLoop(*client_, handler); });
    loop_result_ = task.get_future();
    loop_ = std::thread(std::move(task));
  }

  void TearDown() override {
    if (fake_) fake_->Shutdown();
    if (loop_.joinable()) loop_.join();
    ::unsetenv("_X_AMZN_TRACE_ID");
  }

  std::vector<RuntimePost> PostsFor(const std::string& request_id) const {
    std::vector<RuntimePost> found;
    for (RuntimePost& post : fake_->Posts()) {
      if (post.request_id == request_id) found.push_back(std::move(post));
    }
    return found;
  }

  std::unique_ptr<Fake> fake_;
  std::unique_ptr<RuntimeClient> client_;
  std::thread loop_;
  std::future<Status> loop_result_;
};

TEST_F(RuntimeLoopTest, HandlesEventsInOrderAndPostsEachResponseUnderItsRequestId) {
  std::mutex mutex;
  std::vector<std::string> seen;
  StartLoop([&](const Invocation& invocation) {
    std::lock_guard lock(mutex);
    seen.push_back(invocation.event);
    return InvocationResult::Response(R"({"echo":)" + invocation.event + "}");
  });
  const std::vector<std::string> bodies = {R"({"n":1})", R"({"n":2})", R"({"n":3})"};
  std::vector<std::string> ids;
  for (const std::string& body : bodies) ids.push_back(fake_->Enqueue(Event(body)));

  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto outcome = fake_->WaitForOutcome(ids[i], kWait);
    ASSERT_TRUE(outcome.has_value()) << "no outcome for event " << i;
    EXPECT_TRUE(outcome->ok);
    EXPECT_EQ(outcome->payload, R"({"echo":)" + bodies[i] + "}");
    const std::vector<RuntimePost> posts = PostsFor(ids[i]);
    ASSERT_EQ(posts.size(), 1u);
    EXPECT_EQ(posts[0].kind, RuntimePost::Kind::kResponse);
    EXPECT_EQ(posts[0].answered, 202);
  }
  std::lock_guard lock(mutex);
  EXPECT_EQ(seen, bodies);
}

TEST_F(RuntimeLoopTest, HandlerErrorIsPostedWithErrorTypeHeaderAndErrorDocument) {
  StartLoop([](const Invocation&) { return InvocationResult::Error("InvalidEvent", "no known event shape"); });
  const std::string id = fake_->Enqueue(Event(R"({"unknown":true})"));

  auto outcome = fake_->WaitForOutcome(id, kWait);
  ASSERT_TRUE(outcome.has_value());
  EXPECT_FALSE(outcome->ok);
  EXPECT_EQ(outcome->error_type, "InvalidEvent");
  const std::vector<RuntimePost> posts = PostsFor(id);
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(posts[0].kind, RuntimePost::Kind::kError);
  EXPECT_EQ(posts[0].answered, 202);
  EXPECT_EQ(posts[0].header("Lambda-Runtime-Function-Error-Type"), "InvalidEvent");
  const boost::json::value document = boost::json::parse(posts[0].body);
  EXPECT_EQ(document.at("errorType").as_string(), "InvalidEvent");
  EXPECT_EQ(document.at("errorMessage").as_string(), "no known event shape");
  EXPECT_TRUE(document.at("stackTrace").as_array().empty());
}

TEST_F(RuntimeLoopTest, ThrowingHandlerIsReportedAndTheLoopGoesOn) {
  StartLoop([](const Invocation& invocation) {
    if (invocation.event == "\"throw\"") throw std::runtime_error("boom");
    return InvocationResult::Response(R"({"fine":true})");
  });
  const std::string thrown = fake_->Enqueue(Event("\"throw\""));
  const std::string after = fake_->Enqueue(Event("{}"));

  auto failed = fake_->WaitForOutcome(thrown, kWait);
  ASSERT_TRUE(failed.has_value());
  EXPECT_FALSE(failed->ok);
  EXPECT_EQ(failed->error_type, "Runtime.UnhandledError");
  EXPECT_EQ(boost::json::parse(failed->payload).at("errorMessage").as_string(), "boom");
  auto next = fake_->WaitForOutcome(after, kWait);
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(next->ok);
  EXPECT_EQ(next->payload, R"({"fine":true})");
}

TEST_F(RuntimeLoopTest, TraceIdIsExportedForEachInvocationAndClearedWithoutOne) {
  std::mutex mutex;
  std::vector<std::optional<std::string>> seen;
  StartLoop([&](const Invocation&) {
    std::lock_guard lock(mutex);
    seen.push_back(Environment("_X_AMZN_TRACE_ID"));
    return InvocationResult::Response("{}");
  });
  FakeEvent first = Event("{}");
  first.trace_id = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1";
  FakeEvent second = Event("{}");
  second.trace_id = "Root=1-5bef4de8-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0";
  FakeEvent untraced = Event("{}");
  untraced.header_overrides = {{"Lambda-Runtime-Trace-Id", ""}};
  fake_->Enqueue(first);
  fake_->Enqueue(second);
  const std::string untraced_id = fake_->Enqueue(untraced);

  ASSERT_TRUE(fake_->WaitForOutcome(untraced_id, kWait).has_value());
  std::lock_guard lock(mutex);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0], first.trace_id);
  EXPECT_EQ(seen[1], second.trace_id);
  EXPECT_EQ(seen[2], std::nullopt);
}

TEST_F(RuntimeLoopTest, NextParsesTheInvocationHeaders) {
  FakeEvent event = Event(R"({"rawPath":"/health"})");
  event.request_id = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";
  event.deadline = std::chrono::system_clock::time_point(milliseconds(1542409706888));
  event.trace_id = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1";
  event.function_arn = "arn:aws:lambda:us-east-2:123456789012:function:custom-runtime";
  fake_->Enqueue(event);

  StatusOr<Invocation> invocation = client_->Next();
  ASSERT_TRUE(invocation.ok()) << invocation.status().ToString();
  EXPECT_EQ(invocation->request_id, event.request_id);
  EXPECT_EQ(invocation->event, event.event);
  EXPECT_EQ(invocation->deadline, *event.deadline);
  EXPECT_EQ(invocation->trace_id, event.trace_id);
  EXPECT_EQ(invocation->function_arn, event.function_arn);
}

TEST_F(RuntimeLoopTest, DefaultDeadlineIsTheFunctionTimeoutFromHandOut) {
  fake_->Enqueue(Event("{}"));
  const auto before = std::chrono::system_clock::now();
  StatusOr<Invocation> invocation = client_->Next();
  const auto after = std::chrono::system_clock::now();
  ASSERT_TRUE(invocation.ok()) << invocation.status().ToString();
  const milliseconds timeout = imgsvc::testing::FakeRuntimeOptions{}.function_timeout;
  EXPECT_GE(invocation->deadline, before + timeout - milliseconds(1));  // the header has ms precision
  EXPECT_LE(invocation->deadline, after + timeout);
}

TEST_F(RuntimeLoopTest, MissingOrMalformedDeadlineMeansLambdasLongestTimeout) {
  for (const std::string value : {"", "soon", "-5", "99999999999999999999"}) {
    FakeEvent event = Event("{}");
    event.header_overrides = {{"Lambda-Runtime-Deadline-Ms", value}};
    fake_->Enqueue(event);
    const auto before = std::chrono::system_clock::now();
    StatusOr<Invocation> invocation = client_->Next();
    ASSERT_TRUE(invocation.ok()) << invocation.status().ToString();
    EXPECT_GE(invocation->deadline, before + std::chrono::minutes(15)) << "deadline header \"" << value << "\"";
    EXPECT_LE(invocation->deadline, std::chrono::system_clock::now() + std::chrono::minutes(15));
  }
}

TEST_F(RuntimeLoopTest, NextWaitsLongerThanTheClientsTimeout) {
  net::HttpClientOptions options;
  options.total_timeout = milliseconds(200);
  RuntimeClient client(fake_->address(), std::make_shared<net::HttpClient>(options));
  std::thread late([&] {
    fake_->WaitForNextCalls(1, kWait);
    std::this_thread::sleep_for(milliseconds(1000));
    fake_->Enqueue(Event(R"({"late":true})"));
  });
  StatusOr<Invocation> invocation = client.Next();
  late.join();
  ASSERT_TRUE(invocation.ok()) << invocation.status().ToString();
  EXPECT_EQ(invocation->event, R"({"late":true})");
}

TEST_F(RuntimeLoopTest, PostInitErrorReachesInitError) {
  ASSERT_TRUE(client_->PostInitError("Runtime.ConfigInvalid", "storage must be aws on Lambda").ok());

  auto posted = fake_->WaitForInitError(kWait);
  ASSERT_TRUE(posted.has_value());
  EXPECT_EQ(posted->answered, 202);
  EXPECT_EQ(posted->header("Lambda-Runtime-Function-Error-Type"), "Runtime.ConfigInvalid");
  const boost::json::value document = boost::json::parse(posted->body);
  EXPECT_EQ(document.at("errorType").as_string(), "Runtime.ConfigInvalid");
  EXPECT_EQ(document.at("errorMessage").as_string(), "storage must be aws on Lambda");
  EXPECT_TRUE(document.at("stackTrace").as_array().empty());
}

TEST_F(RuntimeLoopTest, InitErrorAfterTheFirstNextIsForbidden) {
  fake_->Enqueue(Event("{}"));
  ASSERT_TRUE(client_->Next().ok());

  const Status status = client_->PostInitError("Runtime.ConfigInvalid", "too late");
  EXPECT_EQ(status.code(), Code::kForbidden) << status.ToString();
  EXPECT_NE(status.message().find("InvalidStateTransition"), std::string::npos) << status.message();
}

TEST_F(RuntimeLoopTest, PostsForUnknownOrAnsweredRequestIdsAreRefused) {
  const Status unknown = client_->PostResponse("no-such-id", "{}");
  EXPECT_EQ(unknown.code(), Code::kBadRequest) << unknown.ToString();
  EXPECT_NE(unknown.message().find("InvalidRequestID"), std::string::npos) << unknown.message();

  const std::string id = fake_->Enqueue(Event("{}"));
  ASSERT_TRUE(client_->Next().ok());
  ASSERT_TRUE(client_->PostResponse(id, "{}").ok());
  EXPECT_EQ(client_->PostError(id, "Runtime.UnhandledError", "again").code(), Code::kBadRequest);
}

TEST_F(RuntimeLoopTest, TooLargeResponseFailsTheInvocationAndALaterErrorIsForbidden) {
  StartFake({.max_response_bytes = 1024, .function_timeout = milliseconds(30000), .function_arn = "arn"});
  const std::string id = fake_->Enqueue(Event("{}"));
  ASSERT_TRUE(client_->Next().ok());

  const Status too_large = client_->PostResponse(id, std::string(2000, 'x'));
  EXPECT_EQ(too_large.code(), Code::kPayloadTooLarge) << too_large.ToString();
  EXPECT_NE(too_large.message().find("RequestEntityTooLarge"), std::string::npos) << too_large.message();
  const Status error = client_->PostError(id, "Runtime.ResponseTooLarge", "too large");
  EXPECT_EQ(error.code(), Code::kForbidden) << error.ToString();
}

TEST_F(RuntimeLoopTest, TooLargeResponseIsReportedAsAnErrorAndTheLoopGoesOn) {
  StartFake({.max_response_bytes = 1024, .function_timeout = milliseconds(30000), .function_arn = "arn"});
  StartLoop([](const Invocation& invocation) {
    return InvocationResult::Response(invocation.event == "\"big\"" ? std::string(2000, 'x') : "{}");
  });
  const std::string big = fake_->Enqueue(Event("\"big\""));
  const std::string small = fake_->Enqueue(Event("\"small\""));

  auto failed = fake_->WaitForOutcome(big, kWait);
  ASSERT_TRUE(failed.has_value());
  EXPECT_FALSE(failed->ok);
  EXPECT_EQ(failed->error_type, "Function.ResponseSizeTooLarge");
  auto next = fake_->WaitForOutcome(small, kWait);
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(next->ok);
  // Lambda refuses (403) an /error after its 413, so the loop sends none.
  const std::vector<RuntimePost> posts = PostsFor(big);
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(posts[0].answered, 413);
}

TEST_F(RuntimeLoopTest, LoopReturnsOnceTheRuntimeApiIsGone) {
  StartLoop([](const Invocation&) { return InvocationResult::Response("{}"); });
  const std::string id = fake_->Enqueue(Event("{}"));
  ASSERT_TRUE(fake_->WaitForOutcome(id, kWait).has_value());
  ASSERT_TRUE(fake_->WaitForNextCalls(2, kWait));  // polling again, on the pooled connection

  fake_->Shutdown();
  ASSERT_EQ(loop_result_.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(loop_result_.get().code(), Code::kUnavailable);
}

TEST_F(RuntimeLoopTest, NextWithoutRequestIdEndsTheLoopWithoutCallingTheHandler) {
  bool called = false;
  StartLoop([&](const Invocation&) {
    called = true;
    return InvocationResult::Response("{}");
  });
  FakeEvent event = Event("{}");
  event.header_overrides = {{"Lambda-Runtime-Aws-Request-Id", ""}};
  fake_->Enqueue(event);

  ASSERT_EQ(loop_result_.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(loop_result_.get().code(), Code::kInternal);
  loop_.join();
  EXPECT_FALSE(called);
}

// The fake itself: each connection has a thread ready for it, however many
// are open at once, and it stamps each /next when it arrives.
TEST_F(RuntimeLoopTest, FakeAnswersOtherConnectionsWhileOnesNextWaits) {
  std::thread waiting([&] { EXPECT_TRUE(client_->Next().ok()); });
  ASSERT_TRUE(fake_->WaitForNextCalls(1, kWait));

  net::HttpClientOptions options;
  options.total_timeout = milliseconds(5000);  // a connection nobody accepts fails the test, not hangs it
  for (int connection = 0; connection < 3; ++connection) {
    RuntimeClient other(fake_->address(), std::make_shared<net::HttpClient>(options));
    EXPECT_EQ(other.PostResponse("no-such-id", "{}").code(), Code::kBadRequest) << "connection " << connection;
  }
  fake_->Enqueue(Event("{}"));
  waiting.join();
}

TEST_F(RuntimeLoopTest, FakeStampsEachNextOnArrival) {
  fake_->Enqueue(Event("{}"));
  fake_->Enqueue(Event("{}"));
  const auto before = std::chrono::steady_clock::now();
  ASSERT_TRUE(client_->Next().ok());
  const auto between = std::chrono::steady_clock::now();
  ASSERT_TRUE(client_->Next().ok());
  const auto after = std::chrono::steady_clock::now();

  const std::vector<std::chrono::steady_clock::time_point> times = fake_->NextCallTimes();
  ASSERT_EQ(times.size(), 2u);
  EXPECT_GE(times[0], before);
  EXPECT_LE(times[0], between);
  EXPECT_GE(times[1], between);
  EXPECT_LE(times[1], after);
}

TEST_F(RuntimeLoopTest, UnusableRuntimeApiAddressFailsEveryCall) {
  RuntimeClient client("", std::make_shared<net::HttpClient>());
  EXPECT_EQ(client.Next().status().code(), Code::kBadRequest);
  EXPECT_EQ(client.PostInitError("Runtime.ConfigInvalid", "x").code(), Code::kBadRequest);
  EXPECT_EQ(RunLoop(client, [](const Invocation&) { return InvocationResult::Response("{}"); }).code(),
            Code::kBadRequest);
}

}  // namespace runtime_test
}  // namespace imgsvc::lambda
