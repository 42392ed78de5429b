#include "aws/aws_client.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aws/scripted_server.h"
#include "core/log.h"
#include "crypto/crypto.h"
#include "net/http_client.h"

namespace imgsvc::aws {
namespace aws_client_test {

using namespace std::chrono_literals;
using scripted_server::RecordedRequest;
using scripted_server::Response;
using scripted_server::ScriptedServer;
using std::chrono::milliseconds;
using std::chrono::system_clock;

Credentials LongTermCredentials() {
  return {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", std::nullopt};
}

std::string JsonError(const std::string& type) {
  return R"({"__type":"com.amazonaws.dynamodb.v20120810#)" + type + R"("})";
}

// A client against a scripted server; the delays it would sleep are recorded.
class Harness {
 public:
  explicit Harness(RetryOptions retry = {}, Credentials credentials = LongTermCredentials(),
                   net::HttpClientOptions http_options = {})
      : http_(std::make_shared<net::HttpClient>(http_options)),
        client_(http_, std::make_shared<StaticCredentialsProvider>(std::move(credentials)), retry,
                [this](milliseconds delay) { delays_.push_back(delay); }) {}

  ServiceTarget Target(const std::string& service) const { return {server_.endpoint(), "us-east-1", service}; }

  ScriptedServer server_;
  std::vector<milliseconds> delays_;
  std::shared_ptr<net::HttpClient> http_;
  AwsClient client_;
};

AwsRequest Request(std::string body = "{}") {
  AwsRequest request;
  request.body = std::move(body);
  return request;
}

system_clock::time_point ParseAmzDate(std::string_view text) {  // "20150830T123600Z"
  const auto number = [&](std::size_t pos, std::size_t count) {
    return std::stoi(std::string(text.substr(pos, count)));
  };
  const std::chrono::year_month_day date{std::chrono::year{number(0, 4)},
                                         std::chrono::month{static_cast<unsigned>(number(4, 2))},
                                         std::chrono::day{static_cast<unsigned>(number(6, 2))}};
  return std::chrono::sys_days{date} + std::chrono::hours{number(9, 2)} + std::chrono::minutes{number(11, 2)} +
         std::chrono::seconds{number(13, 2)};
}

std::vector<std::string> SignedHeaderNames(std::string_view authorization) {
  const auto start = authorization.find("SignedHeaders=") + std::string_view("SignedHeaders=").size();
  std::istringstream list(std::string(authorization.substr(start, authorization.find(',', start) - start)));
  std::vector<std::string> names;
  for (std::string name; std::getline(list, name, ';');) names.push_back(name);
  return names;
}

// Signs again what the server received (every signed header with its wire
// value, the wire path, the body) at the request's own x-amz-date: equal
// Authorization values prove the wire request is exactly what was signed.
std::string ResignAsReceived(const RecordedRequest& received, const std::vector<NameValue>& query, PathRule rule,
                             const Credentials& credentials, const SigningScope& scope) {
  SignableRequest request{received.method, received.target.substr(0, received.target.find('?')), query, {},
                          crypto::HexEncode(crypto::Sha256Of(received.body))};
  for (const std::string& name : SignedHeaderNames(received.Header("authorization"))) {
    // Sign() adds these itself.
    if (name == "x-amz-date" || name == "x-amz-security-token" || name == "x-amz-content-sha256") continue;
    request.headers.emplace_back(name, std::string(received.Header(name)));
  }
  Signer signer(rule);
  signer.Sign(request, credentials, scope, ParseAmzDate(received.Header("x-amz-date")));
  for (const auto& [name, value] : request.headers) {
    if (name == "authorization") return value;
  }
  return "(no authorization)";
}

long ExpiresParameter(const std::string& url) {
  const auto start = url.find("X-Amz-Expires=");
  if (start == std::string::npos) return -1;
  return std::stol(url.substr(start + std::string_view("X-Amz-Expires=").size()));
}

// --- error parsing ----------------------------------------------------------

TEST(AwsErrorParsingTest, S3XmlWithDeclarationAndEntities) {
  const std::string body =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>"
      "<Message>The key &lt;a&amp;b&gt; &quot;x&quot; &apos;y&apos; is missing</Message>"
      "<Key>a&amp;b</Key><RequestId>4442587FB7D0A2F9</RequestId><HostId>h</HostId></Error>";
  const AwsError error = ParseAwsError(404, {}, body);
  EXPECT_EQ(error.code, "NoSuchKey");
  EXPECT_EQ(error.message, "The key <a&b> \"x\" 'y' is missing");
  EXPECT_EQ(error.request_id, "4442587FB7D0A2F9");
}

TEST(AwsErrorParsingTest, JsonTypeAfterTheLastHash) {
  const AwsError error =
      ParseAwsError(400, {{"x-amzn-RequestId", "RID-1"}},
                    R"({"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",)"
                    R"("message":"The conditional request failed"})");
  EXPECT_EQ(error.code, "ConditionalCheckFailedException");
  EXPECT_EQ(error.message, "The conditional request failed");
  EXPECT_EQ(error.request_id, "RID-1");

  const AwsError capitalised =
      ParseAwsError(400, {}, R"({"__type":"ResourceNotFoundException","Message":"Secret not found"})");
  EXPECT_EQ(capitalised.code, "ResourceNotFoundException");
  EXPECT_EQ(capitalised.message, "Secret not found");
}

TEST(AwsErrorParsingTest, ErrorTypeHeaderWinsAndLosesItsSuffix) {
  const AwsError error = ParseAwsError(
      400,
      {{"X-Amzn-ErrorType", "ValidationException:http://internal.amazon.com/coral/com.amazon.coral.validate/"}},
      R"({"__type":"com.amazonaws.dynamodb.v20120810#SerializationException","message":"bad"})");
  EXPECT_EQ(error.code, "ValidationException");
  EXPECT_EQ(error.message, "bad");
}

TEST(AwsErrorParsingTest, HeadErrorWithoutBodyTakesItsCodeFromTheStatus) {
  const AwsError missing = ParseAwsError(404, {{"x-amz-request-id", "REQ404"}}, "");
  EXPECT_EQ(missing.code, "NotFound");
  EXPECT_EQ(missing.request_id, "REQ404");
  EXPECT_EQ(ParseAwsError(403, {}, "").code, "Forbidden");
}

TEST(AwsErrorParsingTest, ThrottlingAndRetryableCodes) {
  for (const char* code : {"ThrottlingException", "ProvisionedThroughputExceededException", "SlowDown",
                           "RequestLimitExceeded", "TooManyRequestsException"}) {
    EXPECT_TRUE(IsThrottling({code, "", ""})) << code;
    EXPECT_TRUE(IsRetryable(400, {code, "", ""})) << code;
  }
  EXPECT_FALSE(IsThrottling({"ValidationException", "", ""}));
  EXPECT_TRUE(IsRetryable(400, {"RequestTimeout", "", ""}));
  EXPECT_TRUE(IsRetryable(500, {"InternalError", "", ""}));
  EXPECT_TRUE(IsRetryable(502, {"Http502", "", ""}));
  EXPECT_FALSE(IsRetryable(400, {"ValidationException", "", ""}));
  EXPECT_FALSE(IsRetryable(404, {"NoSuchKey", "", ""}));
}

// --- signing and the wire request --------------------------------------------

TEST(AwsClientTest, JsonCallIsSignedWithoutContentHash) {
  Harness harness;
  harness.server_.Push(Response(200, "{}", {{"x-amzn-RequestId", "R-OK"}}));
  auto response = harness.client_.CallJson(harness.Target("dynamodb"), "DynamoDB_20120810.GetItem", "1.0",
                                           R"({"TableName":"t"})");
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_TRUE(response->ok());
  EXPECT_EQ(response->attempts, 1);
  EXPECT_EQ(response->HeaderValue("X-AMZN-REQUESTID"), "R-OK");

  const auto requests = harness.server_.requests();
  ASSERT_EQ(requests.size(), 1u);
  const RecordedRequest& sent = requests[0];
  EXPECT_EQ(sent.method, "POST");
  EXPECT_EQ(sent.target, "/");
  EXPECT_EQ(sent.body, R"({"TableName":"t"})");
  EXPECT_EQ(sent.Header("x-amz-target"), "DynamoDB_20120810.GetItem");
  EXPECT_EQ(sent.Header("content-type"), "application/x-amz-json-1.0");
  EXPECT_EQ(sent.Header("user-agent"), "imgsvc/0.1");
  EXPECT_EQ(sent.Header("amz-sdk-request"), "attempt=1; max=3");
  EXPECT_FALSE(sent.Header("amz-sdk-invocation-id").empty());
  EXPECT_FALSE(sent.Header("x-amz-date").empty());
  EXPECT_TRUE(sent.Header("x-amz-content-sha256").empty());
  EXPECT_TRUE(sent.Header("x-amz-security-token").empty());
  EXPECT_TRUE(sent.Header("authorization").starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
  EXPECT_NE(sent.Header("authorization").find("/us-east-1/dynamodb/aws4_request"), std::string_view::npos);
  EXPECT_EQ(ResignAsReceived(sent, {}, PathRule::kNormaliseAndEncode, LongTermCredentials(),
                             {"us-east-1", "dynamodb"}),
            sent.Header("authorization"));
}

TEST(AwsClientTest, LambdasTraceHeaderFollowsTheCallUnsigned) {
  Harness harness;
  harness.server_.Push(Response(200, "{}"));
  harness.server_.Push(Response(200, "{}"));
  ::setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1", 1);
  ASSERT_TRUE(harness.client_.CallJson(harness.Target("dynamodb"), "DynamoDB_20120810.GetItem", "1.0", "{}").ok());
  ::unsetenv("_X_AMZN_TRACE_ID");
  ASSERT_TRUE(harness.client_.CallJson(harness.Target("dynamodb"), "DynamoDB_20120810.GetItem", "1.0", "{}").ok());

  const auto requests = harness.server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].Header("x-amzn-trace-id"),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1");
  EXPECT_EQ(requests[0].Header("authorization").find("x-amzn-trace-id"), std::string_view::npos);
  EXPECT_TRUE(requests[1].Header("x-amzn-trace-id").empty());
}

TEST(AwsClientTest, S3RequestCarriesContentHashQueryAndSessionToken) {
  Credentials temporary = LongTermCredentials();
  temporary.session_token = "SESSION/TOKEN";
  Harness harness({}, temporary);
  harness.server_.Push(Response(200));
  AwsRequest request;
  request.method = "PUT";
  request.path = "/bucket/images/key%20name.png";
  request.query = {{"partNumber", "1"}, {"uploadId", "a b/c"}};
  request.headers = {{"content-type", "image/png"}};
  request.body = "png-bytes";
  const std::vector<NameValue> query = request.query;
  auto response = harness.client_.Send(harness.Target("s3"), request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();

  const auto requests = harness.server_.requests();
  ASSERT_EQ(requests.size(), 1u);
  const RecordedRequest& sent = requests[0];
  EXPECT_EQ(sent.method, "PUT");
  EXPECT_EQ(sent.target, "/bucket/images/key%20name.png?partNumber=1&uploadId=a%20b%2Fc");
  EXPECT_EQ(sent.Header("x-amz-content-sha256"), crypto::HexEncode(crypto::Sha256Of("png-bytes")));
  EXPECT_EQ(sent.Header("x-amz-security-token"), "SESSION/TOKEN");
  EXPECT_NE(sent.Header("authorization").find("/us-east-1/s3/aws4_request"), std::string_view::npos);
  EXPECT_EQ(ResignAsReceived(sent, query, PathRule::kAsIs, temporary, {"us-east-1", "s3"}),
            sent.Header("authorization"));
}

// --- retries ------------------------------------------------------------------

TEST(AwsClientTest, ThrottlingRetriedWithJitteredBackoffThenSucceeds) {
  Harness harness;
  harness.server_.Push(Response(400, JsonError("ThrottlingException")));
  harness.server_.Push(Response(400, JsonError("ProvisionedThroughputExceededException")));
  harness.server_.Push(Response(200, "{}"));
  auto response = harness.client_.Send(harness.Target("dynamodb"), Request());
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_TRUE(response->ok());
  EXPECT_EQ(response->attempts, 3);

  // Full jitter below the ceiling: 500 ms after throttling, doubled per attempt.
  ASSERT_EQ(harness.delays_.size(), 2u);
  EXPECT_LT(harness.delays_[0], 500ms);
  EXPECT_LT(harness.delays_[1], 1000ms);

  const auto requests = harness.server_.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[1].Header("amz-sdk-request"), "attempt=2; max=3");
  EXPECT_EQ(requests[2].Header("amz-sdk-request"), "attempt=3; max=3");
  EXPECT_EQ(requests[0].Header("amz-sdk-invocation-id"), requests[2].Header("amz-sdk-invocation-id"));
  EXPECT_NE(requests[0].Header("x-amz-date").size(), 0u);

  const AwsClient::Stats stats = harness.client_.stats();
  EXPECT_EQ(stats.calls, 1u);
  EXPECT_EQ(stats.attempts, 3u);
  EXPECT_EQ(stats.quota_left, 500 - 2 * 5 + 1);
}

TEST(AwsClientTest, ThrottlingBacksOffFromTheLongerBase) {
  RetryOptions retry;
  retry.max_attempts = 6;
  retry.base_delay = 0ms;  // other errors: no wait at all
  Harness harness(retry);
  for (int i = 0; i < 5; ++i) harness.server_.Push(Response(503, JsonError("ServiceUnavailableException")));
  harness.server_.Push(Response(200, "{}"));
  ASSERT_TRUE(harness.client_.Send(harness.Target("dynamodb"), Request()).ok());
  ASSERT_EQ(harness.delays_.size(), 5u);
  for (milliseconds delay : harness.delays_) EXPECT_EQ(delay, 0ms);

  harness.delays_.clear();
  for (int i = 0; i < 5; ++i) harness.server_.Push(Response(400, JsonError("ThrottlingException")));
  harness.server_.Push(Response(200, "{}"));
  ASSERT_TRUE(harness.client_.Send(harness.Target("dynamodb"), Request()).ok());
  ASSERT_EQ(harness.delays_.size(), 5u);
  milliseconds ceiling = 500ms;
  for (milliseconds delay : harness.delays_) {
    EXPECT_LT(delay, ceiling);
    ceiling *= 2;
  }
  // Five draws from [0, 500 ms), [0, 1 s), ... are not all zero unless the
  // throttling base was ignored.
  EXPECT_GT(*std::max_element(harness.delays_.begin(), harness.delays_.end()), 0ms);
}

TEST(AwsClientTest, GivesUpAfterThreeAttemptsWithTheLastAnswer) {
  Harness harness;
  for (const char* id : {"R1", "R2", "R3"}) {
    harness.server_.Push(Response(503, JsonError("InternalServerError"), {{"x-amzn-RequestId", id}}));
  }
  auto response = harness.client_.Send(harness.Target("dynamodb"), Request());
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_FALSE(response->ok());
  EXPECT_EQ(response->status, 503);
  EXPECT_EQ(response->attempts, 3);
  EXPECT_EQ(response->error.code, "InternalServerError");
  EXPECT_EQ(response->error.request_id, "R3");
  EXPECT_EQ(harness.server_.requests().size(), 3u);
  EXPECT_EQ(harness.delays_.size(), 2u);
}

TEST(AwsClientTest, ClientErrorIsNotRetried) {
  Harness harness;
  harness.server_.Push(Response(400, JsonError("ValidationException")));
  auto response = harness.client_.Send(harness.Target("dynamodb"), Request());
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->status, 400);
  EXPECT_EQ(response->error.code, "ValidationException");
  EXPECT_EQ(response->attempts, 1);
  EXPECT_EQ(harness.server_.requests().size(), 1u);
  EXPECT_TRUE(harness.delays_.empty());
}

TEST(AwsClientTest, ExhaustedRetryQuotaStopsRetries) {
  RetryOptions retry;
  retry.quota = 5;  // one retry's worth
  Harness harness(retry);
  harness.server_.Push(Response(503, JsonError("ServiceUnavailableException")));
  harness.server_.Push(Response(503, JsonError("ServiceUnavailableException")));
  auto first = harness.client_.Send(harness.Target("dynamodb"), Request());
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->attempts, 2);
  EXPECT_EQ(harness.client_.stats().quota_left, 0);

  harness.server_.Push(Response(503, JsonError("ServiceUnavailableException")));
  auto second = harness.client_.Send(harness.Target("dynamodb"), Request());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->attempts, 1);

  harness.server_.Push(Response(200, "{}"));
  ASSERT_TRUE(harness.client_.Send(harness.Target("dynamodb"), Request()).ok());
  const AwsClient::Stats stats = harness.client_.stats();
  EXPECT_EQ(stats.quota_left, 1);  // a success gives one token back
  EXPECT_EQ(stats.calls, 3u);
  EXPECT_EQ(stats.attempts, 4u);
}

TEST(AwsClientTest, TransportFailureRetriedOnlyWhenReplayable) {
  Harness harness;
  const ServiceTarget closed{{"http", "127.0.0.1", scripted_server::ClosedPort()}, "us-east-1", "dynamodb"};
  auto replayable = harness.client_.Send(closed, Request());
  ASSERT_FALSE(replayable.ok());
  EXPECT_EQ(replayable.status().code(), Code::kUnavailable);
  EXPECT_EQ(harness.client_.stats().attempts, 3u);
  EXPECT_EQ(harness.delays_.size(), 2u);

  AwsRequest once = Request();
  once.replayable = false;
  auto not_replayable = harness.client_.Send(closed, once);
  ASSERT_FALSE(not_replayable.ok());
  EXPECT_EQ(harness.client_.stats().attempts, 4u);
  EXPECT_EQ(harness.delays_.size(), 2u);
}

TEST(AwsClientTest, TimeoutCostsMoreRetryQuota) {
  RetryOptions retry;
  retry.quota = 10;  // two ordinary retries, or one after a timeout
  net::HttpClientOptions http_options;
  http_options.total_timeout = 300ms;
  Harness harness(retry, LongTermCredentials(), http_options);
  for (int i = 0; i < 3; ++i) harness.server_.PushSilence();
  auto response = harness.client_.Send(harness.Target("dynamodb"), Request());
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), Code::kDeadlineExceeded);
  EXPECT_EQ(harness.client_.stats().attempts, 2u);
  EXPECT_EQ(harness.client_.stats().quota_left, 0);
}

// --- the invocation's deadline ------------------------------------------------------

// Only the deadline can end these calls early: the HTTP total timeout is long.
// BeginJson puts the first attempt on the wire at once; Finish takes its
// answer as CallJson would have.
TEST(AwsClientTest, BeginJsonSendsAtOnceAndFinishTakesTheAnswer) {
  Harness harness;
  harness.server_.Push(Response(200, R"({"SecretString":"s"})"));
  AwsClient::PendingCall pending = harness.client_.BeginJson(harness.Target("secretsmanager"),
                                                             "secretsmanager.GetSecretValue", "1.1", "{}");
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (harness.server_.requests().empty() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  ASSERT_EQ(harness.server_.requests().size(), 1u) << "nothing sent before Finish";
  const auto request = harness.server_.requests()[0];
  EXPECT_EQ(request.Header("x-amz-target"), "secretsmanager.GetSecretValue");
  EXPECT_EQ(request.Header("content-type"), "application/x-amz-json-1.1");
  EXPECT_EQ(request.Header("amz-sdk-request"), "attempt=1; max=3");
  EXPECT_NE(request.Header("authorization").find("/secretsmanager/aws4_request"), std::string_view::npos);

  auto response = harness.client_.Finish(std::move(pending));
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_TRUE(response->ok());
  EXPECT_EQ(response->body, R"({"SecretString":"s"})");
  EXPECT_EQ(response->attempts, 1);
  EXPECT_EQ(harness.client_.stats().calls, 1u);
  EXPECT_EQ(harness.client_.stats().attempts, 1u);
}

TEST(AwsClientTest, FinishRetriesARetryableFirstAnswerFromTheSecondAttempt) {
  Harness harness;
  harness.server_.Push(Response(400, JsonError("ThrottlingException")));
  harness.server_.Push(Response(200, "{}"));
  AwsClient::PendingCall pending =
      harness.client_.BeginJson(harness.Target("dynamodb"), "DynamoDB_20120810.GetItem", "1.0", "{}");
  auto response = harness.client_.Finish(std::move(pending));
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_TRUE(response->ok());
  EXPECT_EQ(response->attempts, 2);
  ASSERT_EQ(harness.delays_.size(), 1u);
  EXPECT_LT(harness.delays_[0], 500ms);
  const auto requests = harness.server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].Header("amz-sdk-request"), "attempt=2; max=3");
  EXPECT_EQ(requests[0].Header("amz-sdk-invocation-id"), requests[1].Header("amz-sdk-invocation-id"));
  EXPECT_EQ(harness.client_.stats().attempts, 2u);
}

// Nothing could be sent ahead (the service was unreachable then): Finish
// makes the call afresh, with all its attempts, when its answer is needed.
TEST(AwsClientTest, CallNotSentAheadIsMadeAfreshByFinish) {
  Harness harness;
  const ServiceTarget closed{{"http", "127.0.0.1", scripted_server::ClosedPort()}, "us-east-1", "dynamodb"};
  AwsClient::PendingCall pending = harness.client_.BeginJson(closed, "DynamoDB_20120810.GetItem", "1.0", "{}");
  EXPECT_EQ(harness.client_.stats().attempts, 1u);
  EXPECT_TRUE(harness.delays_.empty());
  auto response = harness.client_.Finish(std::move(pending));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), Code::kUnavailable);
  EXPECT_EQ(harness.client_.stats().attempts, 4u);
  EXPECT_EQ(harness.delays_.size(), 2u);
}

net::HttpClientOptions LongHttpTimeout() {
  net::HttpClientOptions options;
  options.total_timeout = 30s;
  return options;
}

TEST(AwsDeadlineTest, HangingServiceEndsAtTheDeadlineWithoutRetrying) {
  Harness harness({}, LongTermCredentials(), LongHttpTimeout());
  for (int i = 0; i < 3; ++i) harness.server_.PushSilence();
  const auto started = std::chrono::steady_clock::now();
  StatusOr<AwsResponse> response = [&] {
    const ScopedDeadline deadline(system_clock::now() + 2s);
    return harness.client_.Send(harness.Target("dynamodb"), Request());
  }();
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), Code::kDeadlineExceeded) << response.status().ToString();
  // Far below the 30 s the attempt could otherwise wait (a slow VM adds seconds, not tens).
  EXPECT_LT(std::chrono::steady_clock::now() - started, 20s);
  EXPECT_EQ(harness.client_.stats().attempts, 1u);
  EXPECT_TRUE(harness.delays_.empty());
  EXPECT_EQ(harness.client_.stats().quota_left, 500);
}

TEST(AwsDeadlineTest, AClientTimeoutShorterThanTheDeadlineStillBoundsEachAttempt) {
  net::HttpClientOptions short_attempts;
  short_attempts.total_timeout = 300ms;
  Harness harness({}, LongTermCredentials(), short_attempts);
  for (int i = 0; i < 3; ++i) harness.server_.PushSilence();
  StatusOr<AwsResponse> response = [&] {
    const ScopedDeadline deadline(system_clock::now() + 60s);
    return harness.client_.Send(harness.Target("dynamodb"), Request());
  }();
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), Code::kDeadlineExceeded) << response.status().ToString();
  // Each attempt timed out on the client's 300 ms, so all three were made
  // long before the deadline (which would have allowed one).
  EXPECT_EQ(harness.client_.stats().attempts, 3u);
}

TEST(AwsDeadlineTest, PassedDeadlineSendsNothing) {
  Harness harness;
  harness.server_.Push(Response(200, "{}"));
  const ScopedDeadline deadline(system_clock::now() - 1s);
  auto response = harness.client_.CallJson(harness.Target("dynamodb"), "DynamoDB_20120810.GetItem", "1.0", "{}");
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), Code::kDeadlineExceeded);
  EXPECT_EQ(response.status().message(), "dynamodb POST: out of time for the invocation's deadline");
  EXPECT_TRUE(harness.server_.requests().empty());
  EXPECT_EQ(harness.client_.stats().attempts, 0u);
}

TEST(AwsDeadlineTest, DeadlineWithinTheMinimumAttemptTimeSendsNothing) {
  Harness harness;
  harness.server_.Push(Response(200, "{}"));
  const ScopedDeadline deadline(system_clock::now() + kMinimumAttemptTime / 2);
  auto response = harness.client_.Send(harness.Target("dynamodb"), Request());
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), Code::kDeadlineExceeded);
  EXPECT_TRUE(harness.server_.requests().empty());
}

TEST(AwsDeadlineTest, BackoffPastTheDeadlineIsNotTakenAndTheLastAnswerReturned) {
  RetryOptions retry;
  // Every draw from [0, 1000 h) but one in a million overruns a 5 s deadline.
  retry.throttle_base_delay = 1000h;
  retry.max_delay = 1000h;
  Harness harness(retry);
  harness.server_.Push(Response(400, JsonError("ThrottlingException"), {{"x-amzn-RequestId", "R-THROTTLED"}}));
  harness.server_.Push(Response(200, "{}"));
  const ScopedDeadline deadline(system_clock::now() + 5s);
  auto response = harness.client_.Send(harness.Target("dynamodb"), Request());
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->status, 400);
  EXPECT_EQ(response->error.code, "ThrottlingException");
  EXPECT_EQ(response->error.request_id, "R-THROTTLED");
  EXPECT_EQ(response->attempts, 1);
  EXPECT_EQ(harness.server_.requests().size(), 1u);
  EXPECT_TRUE(harness.delays_.empty());
  EXPECT_EQ(harness.client_.stats().quota_left, 500);  // no retry paid for
}

TEST(AwsDeadlineTest, TransportFailureNotRetriedPastTheDeadline) {
  RetryOptions retry;
  retry.base_delay = 1000h;
  retry.max_delay = 1000h;
  Harness harness(retry);
  const ServiceTarget closed{{"http", "127.0.0.1", scripted_server::ClosedPort()}, "us-east-1", "dynamodb"};
  const ScopedDeadline deadline(system_clock::now() + 5s);
  auto response = harness.client_.Send(closed, Request());
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), Code::kUnavailable);
  EXPECT_EQ(harness.client_.stats().attempts, 1u);
  EXPECT_TRUE(harness.delays_.empty());
}

TEST(AwsDeadlineTest, BackoffThatFitsIsStillTaken) {
  Harness harness;
  harness.server_.Push(Response(400, JsonError("ThrottlingException")));
  harness.server_.Push(Response(200, "{}"));
  const ScopedDeadline deadline(system_clock::now() + 60s);
  auto response = harness.client_.Send(harness.Target("dynamodb"), Request());
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_TRUE(response->ok());
  EXPECT_EQ(response->attempts, 2);
  EXPECT_EQ(harness.delays_.size(), 1u);
}

TEST(AwsDeadlineTest, NestedScopesApplyTheEarlierAndRestoreTheOuter) {
  Harness harness;
  const auto send = [&] { return harness.client_.Send(harness.Target("dynamodb"), Request()); };
  {
    const ScopedDeadline outer(system_clock::now() + 60s);
    {
      const ScopedDeadline inner(system_clock::now() - 1s);
      EXPECT_EQ(send().status().code(), Code::kDeadlineExceeded);
    }
    harness.server_.Push(Response(200, "{}"));
    auto restored = send();
    ASSERT_TRUE(restored.ok()) << restored.status().ToString();
    EXPECT_TRUE(restored->ok());
  }
  {
    const ScopedDeadline outer(system_clock::now() - 1s);
    {
      const ScopedDeadline later(system_clock::now() + 60s);
      EXPECT_EQ(send().status().code(), Code::kDeadlineExceeded);
    }
    EXPECT_EQ(send().status().code(), Code::kDeadlineExceeded);
  }
  harness.server_.Push(Response(200, "{}"));
  auto unbounded = send();
  ASSERT_TRUE(unbounded.ok()) << unbounded.status().ToString();
  EXPECT_TRUE(unbounded->ok());
  EXPECT_EQ(harness.server_.requests().size(), 2u);
}

TEST(AwsDeadlineTest, OtherThreadsAreNotBounded) {
  Harness harness;
  harness.server_.Push(Response(200, "{}"));
  const ScopedDeadline passed(system_clock::now() - 1s);
  StatusOr<AwsResponse> elsewhere = Status(Code::kInternal, "not run");
  std::thread other([&] { elsewhere = harness.client_.Send(harness.Target("dynamodb"), Request()); });
  other.join();
  ASSERT_TRUE(elsewhere.ok()) << elsewhere.status().ToString();
  EXPECT_TRUE(elsewhere->ok());
}

// --- mapping onto our codes -------------------------------------------------------

AwsResponse Answer(int status, const std::string& code, const std::string& request_id) {
  AwsResponse response;
  response.status = status;
  response.error = {code, "details", request_id};
  response.attempts = 3;
  return response;
}

TEST(AwsToStatusTest, ThrottlingIsUnavailableWithRetryAfter) {
  const Status status = ToStatus("DynamoDB PutItem", Answer(400, "ProvisionedThroughputExceededException", "R"));
  EXPECT_EQ(status.code(), Code::kUnavailable);
  EXPECT_EQ(status.retry_after(), 1);
}

TEST(AwsToStatusTest, ServerErrorIsUnavailable) {
  const Status status = ToStatus("S3 PutObject", Answer(500, "InternalError", "R"));
  EXPECT_EQ(status.code(), Code::kUnavailable);
  EXPECT_FALSE(status.retry_after().has_value());
  EXPECT_EQ(ToStatus("S3 PutObject", Answer(501, "NotImplemented", "R")).code(), Code::kUnavailable);
}

TEST(AwsToStatusTest, UnexpectedClientErrorIsInternalAndLogged) {
  char path[] = "/tmp/imgsvc-aws-log-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  log::SetFd(fd);
  const Status status = ToStatus("DynamoDB Query", Answer(400, "UnrecognizedClientException", "RID-400"));
  log::SetFd(STDOUT_FILENO);
  ::close(fd);
  std::ifstream file(path);
  const std::string logged{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  ::unlink(path);

  EXPECT_EQ(status.code(), Code::kInternal);
  EXPECT_NE(status.message().find("UnrecognizedClientException"), std::string::npos);
  EXPECT_NE(status.message().find("RID-400"), std::string::npos);
  EXPECT_NE(logged.find("RID-400"), std::string::npos) << logged;
  EXPECT_NE(logged.find("DynamoDB Query"), std::string::npos) << logged;
  EXPECT_NE(logged.find("UnrecognizedClientException"), std::string::npos) << logged;
}

// --- presigning -----------------------------------------------------------------

const ServiceTarget kS3Target{{"https", "examplebucket.s3.amazonaws.com", 443}, "us-east-1", "s3"};

TEST(AwsPresignTest, LongTermCredentialsGiveTheFullExpiry) {
  Harness harness;
  const auto before = system_clock::now();
  auto presigned = harness.client_.PresignGet(kS3Target, "/images/a%20b.png", 3600s);
  ASSERT_TRUE(presigned.ok()) << presigned.status().ToString();
  EXPECT_TRUE(presigned->url.starts_with("https://examplebucket.s3.amazonaws.com/images/a%20b.png?X-Amz-"))
      << presigned->url;
  EXPECT_EQ(ExpiresParameter(presigned->url), 3600);
  EXPECT_GE(presigned->expires_at, before + 3600s - 1s);
  EXPECT_LE(presigned->expires_at, system_clock::now() + 3600s);
}

TEST(AwsPresignTest, ExpiryClampedToTheCredentials) {
  Credentials temporary = LongTermCredentials();
  temporary.session_token = "TOKEN";
  temporary.expiration = system_clock::now() + 10min;
  Harness harness({}, temporary);
  auto presigned = harness.client_.PresignGet(kS3Target, "/images/a.png", 3600s);
  ASSERT_TRUE(presigned.ok()) << presigned.status().ToString();
  EXPECT_LE(presigned->expires_at, *temporary.expiration);
  const long expires = ExpiresParameter(presigned->url);
  EXPECT_LT(expires, 600);
  EXPECT_GT(expires, 300);  // only a small safety margin (and a slow VM) is taken off
  EXPECT_NE(presigned->url.find("X-Amz-Security-Token="), std::string::npos);
}

TEST(AwsPresignTest, ExpiredCredentialsCannotPresign) {
  Credentials expired = LongTermCredentials();
  expired.session_token = "TOKEN";
  expired.expiration = system_clock::now() - 1s;
  Harness harness({}, expired);
  auto presigned = harness.client_.PresignGet(kS3Target, "/images/a.png", 60s);
  ASSERT_FALSE(presigned.ok());
  EXPECT_EQ(presigned.status().code(), Code::kUnavailable);
}

// Credentials that a test replaces between calls, as a refresh would.
class SwitchableCredentials final : public CredentialsProvider {
 public:
  explicit SwitchableCredentials(Credentials credentials) : credentials_(std::move(credentials)) {}
  StatusOr<Credentials> Get() override { return credentials_; }
  std::string Source() const override { return "test"; }
  void Set(Credentials credentials) { credentials_ = std::move(credentials); }

 private:
  Credentials credentials_;
};

// What the signer alone gives for a GET of `path` on kS3Target at the
// instant the URL names (X-Amz-Date) with `credentials`.
std::string ExpectedQuery(const std::string& url, std::string_view path, const Credentials& credentials,
                          const ServiceTarget& target) {
  const std::size_t date = url.find("X-Amz-Date=");
  const system_clock::time_point when = ParseAmzDate(std::string_view(url).substr(date + 11, 16));
  Signer signer(PathRule::kAsIs);
  const SignableRequest get{"GET", std::string(path), {}, {{"host", target.endpoint.Authority()}}, {}};
  const StatusOr<std::string> query = signer.PresignQuery(get, credentials, {target.region, target.service}, when,
                                                          std::chrono::seconds(ExpiresParameter(url)));
  return query.ok() ? *query : query.status().ToString();
}

std::string QueryOf(const std::string& url) { return url.substr(url.find('?') + 1); }

TEST(AwsPresignTest, URLsFollowRefreshedCredentialsAndTheirTarget) {
  const Credentials first = LongTermCredentials();
  Credentials refreshed = LongTermCredentials();
  refreshed.secret_access_key = "a-rotated-secret";
  auto credentials = std::make_shared<SwitchableCredentials>(first);
  AwsClient client(std::make_shared<net::HttpClient>(), credentials);
  const ServiceTarget other_bucket{{"https", "otherbucket.s3.amazonaws.com", 443}, "us-east-1", "s3"};

  // Within one second the client reuses what it prepared for the first URL;
  // none of these may be signed with what an earlier call left behind.
  const auto presign = [&](const ServiceTarget& target, std::string_view path) {
    StatusOr<AwsClient::Presigned> presigned = client.PresignGet(target, path, 3600s);
    return presigned.ok() ? presigned->url : presigned.status().ToString();
  };
  const std::string a = presign(kS3Target, "/images/a.png");
  const std::string b = presign(kS3Target, "/images/b.png");
  credentials->Set(refreshed);
  const std::string d = presign(kS3Target, "/images/b.png");
  const Credentials rotated = refreshed;
  refreshed.session_token = "a-session-token";
  credentials->Set(refreshed);
  const std::string e = presign(kS3Target, "/images/b.png");
  const std::string f = presign(kS3Target, "/images/c.png");
  const std::string c = presign(other_bucket, "/images/b.png");

  EXPECT_EQ(QueryOf(a), ExpectedQuery(a, "/images/a.png", first, kS3Target));
  EXPECT_EQ(QueryOf(b), ExpectedQuery(b, "/images/b.png", first, kS3Target));
  EXPECT_TRUE(c.starts_with("https://otherbucket.s3.amazonaws.com/images/b.png?")) << c;
  EXPECT_EQ(QueryOf(c), ExpectedQuery(c, "/images/b.png", refreshed, other_bucket));
  EXPECT_EQ(QueryOf(d), ExpectedQuery(d, "/images/b.png", rotated, kS3Target));
  EXPECT_EQ(QueryOf(e), ExpectedQuery(e, "/images/b.png", refreshed, kS3Target));
  EXPECT_EQ(QueryOf(f), ExpectedQuery(f, "/images/c.png", refreshed, kS3Target));
  EXPECT_NE(e.find("X-Amz-Security-Token=a-session-token"), std::string::npos) << e;
}

TEST(AwsPresignTest, PathsSignedAgainGetTheirOwnUrlsBeyondWhatAThreadRemembers) {
  Harness harness;
  std::vector<std::string> paths;
  for (int i = 0; i < 300; ++i) paths.push_back("/images/" + std::to_string(i) + ".png");
  for (int pass = 0; pass < 2; ++pass) {
    for (const std::string& path : paths) {
      const auto presigned = harness.client_.PresignGet(kS3Target, path, 3600s);
      ASSERT_TRUE(presigned.ok()) << presigned.status().ToString();
      ASSERT_TRUE(presigned->url.starts_with("https://examplebucket.s3.amazonaws.com" + path + "?")) << path;
      ASSERT_EQ(QueryOf(presigned->url), ExpectedQuery(presigned->url, path, LongTermCredentials(), kS3Target))
          << path << " in pass " << pass;
    }
  }
}

// A page's URLs in one call, more of them than a thread remembers: each is
// its own path's, as the signer alone gives it.
TEST(AwsPresignTest, APagesPathsEachGetTheirOwnUrl) {
  Harness harness;
  std::vector<std::string> paths;
  for (int i = 0; i < 300; ++i) paths.push_back("/images/page-" + std::to_string(i) + ".png");
  std::vector<std::string> urls(paths.size());
  std::vector<int> taken(paths.size(), 0);
  const auto before = system_clock::now();
  const auto expires_at = harness.client_.PresignGets(kS3Target, paths, 3600s, [&](std::size_t i, std::string_view url) {
    urls.at(i) = url;
    ++taken.at(i);
  });
  ASSERT_TRUE(expires_at.ok()) << expires_at.status().ToString();
  EXPECT_GE(*expires_at, before + 3600s - 1s);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    ASSERT_EQ(taken[i], 1) << paths[i];
    ASSERT_TRUE(urls[i].starts_with("https://examplebucket.s3.amazonaws.com" + paths[i] + "?")) << urls[i];
    ASSERT_EQ(QueryOf(urls[i]), ExpectedQuery(urls[i], paths[i], LongTermCredentials(), kS3Target)) << paths[i];
  }
}

// Threads listing overlapping pages at once: each URL is its own path's,
// whether remembered, signed by this thread or by another meanwhile.
TEST(AwsPresignTest, ConcurrentPagesEachGetTheirOwnUrls) {
  Harness harness;
  constexpr int kThreads = 4;
  std::vector<std::string> paths;
  for (int i = 0; i < 200; ++i) paths.push_back("/images/shared-" + std::to_string(i) + ".png");
  std::vector<int> wrong(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 30; ++round) {
        const std::size_t first = static_cast<std::size_t>((t * 17 + round * 11) % 160);
        const std::span<const std::string> page(paths.data() + first, 40);
        std::vector<std::string> urls(page.size());
        const auto expires_at = harness.client_.PresignGets(
            kS3Target, page, 3600s, [&urls](std::size_t i, std::string_view url) { urls.at(i) = url; });
        if (!expires_at.ok()) {
          ++wrong[t];
          continue;
        }
        for (std::size_t i = 0; i < page.size(); ++i) {
          const bool signed_url = urls[i].find("X-Amz-Date=") != std::string::npos;
          if (!signed_url || QueryOf(urls[i]) != ExpectedQuery(urls[i], page[i], LongTermCredentials(), kS3Target)) {
            ++wrong[t];
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(wrong[t], 0) << "thread " << t;
}

TEST(AwsPresignTest, ExpiredCredentialsPresignNoPage) {
  Credentials expired = LongTermCredentials();
  expired.session_token = "TOKEN";
  expired.expiration = system_clock::now() - 1s;
  Harness harness({}, expired);
  const std::vector<std::string> paths = {"/images/a.png", "/images/b.png"};
  int taken = 0;
  const auto expires_at =
      harness.client_.PresignGets(kS3Target, paths, 60s, [&](std::size_t, std::string_view) { ++taken; });
  ASSERT_FALSE(expires_at.ok());
  EXPECT_EQ(expires_at.status().code(), Code::kUnavailable);
  EXPECT_EQ(taken, 0);
}

TEST(AwsPresignTest, AnotherLifetimeIsSignedAsSuch) {
  Harness harness;
  const auto hour = harness.client_.PresignGet(kS3Target, "/images/a.png", 3600s);
  const auto minute = harness.client_.PresignGet(kS3Target, "/images/a.png", 60s);
  ASSERT_TRUE(hour.ok() && minute.ok());
  EXPECT_EQ(ExpiresParameter(hour->url), 3600);
  EXPECT_EQ(ExpiresParameter(minute->url), 60);
  EXPECT_EQ(QueryOf(minute->url), ExpectedQuery(minute->url, "/images/a.png", LongTermCredentials(), kS3Target));
}

}  // namespace aws_client_test
}  // namespace imgsvc::aws
