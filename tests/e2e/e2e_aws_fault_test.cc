// End-to-end on the AWS backend with faults injected into the local peers
// (tests/support/local_aws.h): throttling and 5xx answers are retried within
// the SDKs' three attempts and give a 503 with Retry-After beyond them; a
// dependency that stops gives a clear 503 and the service recovers when it is
// back; and a record write that fails after the bytes were stored leaves no
// object behind; and with DynamoDB holding its answers, --aws-concurrency
// (not --workers) bounds the requests waiting on it. Skipped unless
// IMGSVC_E2E_BACKEND=aws.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "core/image.h"
#include "e2e_harness.h"
#include "support/image_fixtures.h"
#include "support/local_aws.h"

namespace imgsvc::e2e {
namespace aws_fault_test {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using testing::AwsFault;

// The SDKs' standard retry mode: one attempt and two retries.
constexpr int kAttempts = 3;
// How long a state change may take to show in /ready (cached for 2 s) on a
// slow, loaded machine.
constexpr std::chrono::seconds kReadyDeadline{60};

bool AwsBackend() {
  const char* backend = std::getenv("IMGSVC_E2E_BACKEND");
  return backend != nullptr && std::string_view(backend) == "aws";
}

// The bucket `imgsvc init` provisioned for this server, from its "listening" line.
std::string BucketOf(TestServer& server) {
  for (const std::string& line : server.process().Lines()) {
    boost::system::error_code error;
    const boost::json::value parsed = boost::json::parse(line, error);
    if (!error && Str(parsed, "msg") == "listening") return Str(parsed, "bucket");
  }
  return {};
}

UploadForm Pngs(const std::string& user, int count) {
  UploadForm form;
  form.user_id = user;
  for (int i = 0; i < count; ++i) {
    form.files.push_back({"f" + std::to_string(i) + ".png", "image/png",
                          testing::MakeImage(core::ImageFormat::kPng, 4 + static_cast<std::uint32_t>(i), 3)});
  }
  return form;
}

int Requests(std::string_view service, std::string_view operation) {
  auto count = testing::RequestCount(service, operation);
  EXPECT_TRUE(count.ok()) << count.status().ToString();
  return count.ok() ? *count : -1;
}

void Inject(std::string_view service, AwsFault fault, int count, std::string_view operation, int after = 0) {
  const Status injected = testing::InjectFault(service, fault, count, operation, after);
  ASSERT_TRUE(injected.ok()) << injected.ToString();
}

// /ready's answer once it has the wanted status, or its last answer at the deadline.
HttpResponse PollReady(const TestServer& server, int wanted) {
  const auto deadline = std::chrono::steady_clock::now() + kReadyDeadline;
  for (;;) {
    HttpResponse ready = Get(server, "/ready");
    if (ready.status == wanted || std::chrono::steady_clock::now() >= deadline) return ready;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

// Each suite has its own server, hence its own bucket, table and retry quota.
class AwsFaultSuite : public ServerSuite {
 public:
  static void SetUpTestSuite() {
    if (AwsBackend()) Launch({});
  }

 protected:
  void SetUp() override {
    if (!AwsBackend()) GTEST_SKIP() << "fault tests run on the AWS backend (IMGSVC_E2E_BACKEND=aws)";
    ServerSuite::SetUp();
    const Status reset = testing::ResetFaults();
    ASSERT_TRUE(reset.ok()) << reset.ToString();
    bucket_ = BucketOf(server());
    ASSERT_FALSE(bucket_.empty()) << "no bucket in the server's \"listening\" line";
  }

  void TearDown() override {
    if (AwsBackend()) {
      const Status reset = testing::ResetFaults();
      EXPECT_TRUE(reset.ok()) << reset.ToString();
    }
    ServerSuite::TearDown();
  }

  // The S3 objects stored for `user`, read from s3rver itself.
  std::vector<std::string> StoredKeys(const std::string& user) {
    auto keys = testing::ListObjectKeys(bucket_, "images/" + user + "/");
    EXPECT_TRUE(keys.ok()) << keys.status().ToString();
    return keys.ok() ? *keys : std::vector<std::string>{"<listing failed>"};
  }

  std::string bucket_;
};

class AwsFaultRetryTest : public AwsFaultSuite {};

TEST_F(AwsFaultRetryTest, ThrottledRecordWriteIsRetriedWithinTheAttempts) {
  const std::string user = UniqueUser("throttled");
  Inject("dynamodb", AwsFault::kThrottle, kAttempts - 1, "PutItem");
  const boost::json::object record = UploadOne(server(), user);
  ASSERT_FALSE(record.empty());
  EXPECT_EQ(Requests("dynamodb", "PutItem"), kAttempts);
  EXPECT_THAT(ListAllIds(server(), "user_id=" + user, KeyFor(user)), ElementsAre(Str(record, "image_id")));
  EXPECT_THAT(StoredKeys(user), ElementsAre("images/" + user + "/" + Str(record, "image_id") + ".png"));
}

TEST_F(AwsFaultRetryTest, ThrottlingBeyondTheAttemptsIs503WithRetryAfterAndLeavesNoObject) {
  const std::string user = UniqueUser("throttled");
  Inject("dynamodb", AwsFault::kThrottle, 5, "PutItem");
  const HttpResponse response = Upload(server(), Pngs(user, 1), KeyFor(user));
  EXPECT_EQ(response.status, 503) << response.body;
  const std::optional<std::string> retry_after = response.header("retry-after");
  ASSERT_TRUE(retry_after.has_value()) << "a throttled answer tells the client when to come back";
  EXPECT_GT(std::atoi(retry_after->c_str()), 0) << *retry_after;
  EXPECT_THAT(DetailMessage(response), HasSubstr("DynamoDB")) << response.body;
  EXPECT_EQ(Requests("dynamodb", "PutItem"), kAttempts);

  ASSERT_TRUE(testing::ResetFaults().ok());
  EXPECT_THAT(StoredKeys(user), IsEmpty()) << "the object stored before the record write was not removed";
  EXPECT_THAT(ListAllIds(server(), "user_id=" + user, KeyFor(user)), IsEmpty());
}

TEST_F(AwsFaultRetryTest, LaterRecordWriteFailingRemovesTheEarlierRecordsAndEveryObject) {
  const std::string user = UniqueUser("halfway");
  // The first file's record is written; the second's is refused every time.
  Inject("dynamodb", AwsFault::kThrottle, kAttempts, "PutItem", /*after=*/1);
  const HttpResponse response = Upload(server(), Pngs(user, 2), KeyFor(user));
  EXPECT_EQ(response.status, 503) << response.body;
  EXPECT_EQ(Requests("dynamodb", "PutItem"), 1 + kAttempts);
  EXPECT_GE(Requests("dynamodb", "DeleteItem"), 1) << "the first record was not compensated";

  EXPECT_THAT(ListAllIds(server(), "user_id=" + user, KeyFor(user)), IsEmpty());
  EXPECT_THAT(StoredKeys(user), IsEmpty());
}

TEST_F(AwsFaultRetryTest, DroppedConnectionsOnRecordWriteAre503AndLeaveNoObject) {
  const std::string user = UniqueUser("dropped");
  // Each attempt may be sent twice (a dropped pooled connection is replayed
  // once on a fresh one), so this many drops defeat every attempt.
  Inject("dynamodb", AwsFault::kClose, 2 * kAttempts, "PutItem");
  const HttpResponse response = Upload(server(), Pngs(user, 1), KeyFor(user));
  EXPECT_EQ(response.status, 503) << response.body;
  EXPECT_THAT(DetailMessage(response), HasSubstr("DynamoDB")) << response.body;
  EXPECT_GE(Requests("dynamodb", "PutItem"), kAttempts);

  ASSERT_TRUE(testing::ResetFaults().ok());
  EXPECT_THAT(StoredKeys(user), IsEmpty());
  EXPECT_THAT(ListAllIds(server(), "user_id=" + user, KeyFor(user)), IsEmpty());
}

// Every answer of the record write is lost although the first attempt
// stored the record, and the compensating delete never gets through: the
// strongly consistent read that decides what is true finds the record as
// written, so the upload is a success and its bytes stay.
TEST_F(AwsFaultRetryTest, ARecordStoredWhoseAnswersWereAllLostIsASuccess) {
  const std::string user = UniqueUser("lost");
  Inject("dynamodb", AwsFault::kLoseAnswer, 2 * kAttempts, "PutItem");
  Inject("dynamodb", AwsFault::kClose, 2 * kAttempts, "DeleteItem");
  const HttpResponse response = Upload(server(), Pngs(user, 1), KeyFor(user));
  ASSERT_EQ(response.status, 201) << response.body;
  const std::string id = Str(Json(response).as_object().at("images").as_array().at(0), "image_id");

  ASSERT_TRUE(testing::ResetFaults().ok());
  EXPECT_EQ(Get(server(), "/api/v1/images/" + id, KeyFor(user)).status, 200);
  EXPECT_THAT(StoredKeys(user), ElementsAre("images/" + user + "/" + id + ".png"));
}

// The same lost answers, but the compensating delete does get through: the
// record is gone, so are the bytes, and the client gets a 503 to retry.
TEST_F(AwsFaultRetryTest, ARecordWriteUndoneAfterLostAnswersLeavesNoObject) {
  const std::string user = UniqueUser("undone");
  Inject("dynamodb", AwsFault::kLoseAnswer, 2 * kAttempts, "PutItem");
  const HttpResponse response = Upload(server(), Pngs(user, 1), KeyFor(user));
  EXPECT_EQ(response.status, 503) << response.body;

  ASSERT_TRUE(testing::ResetFaults().ok());
  EXPECT_THAT(StoredKeys(user), IsEmpty());
  EXPECT_THAT(ListAllIds(server(), "user_id=" + user, KeyFor(user)), IsEmpty());
}

TEST_F(AwsFaultRetryTest, ServerErrorsFromS3AreRetriedWithinTheAttempts) {
  const std::string user = UniqueUser("s3-500");
  Inject("s3", AwsFault::kError500, kAttempts - 1, "PutObject");
  const boost::json::object record = UploadOne(server(), user);
  ASSERT_FALSE(record.empty());
  EXPECT_EQ(Requests("s3", "PutObject"), kAttempts);
  EXPECT_THAT(StoredKeys(user), ElementsAre("images/" + user + "/" + Str(record, "image_id") + ".png"));
}

TEST_F(AwsFaultRetryTest, SlowDownFromS3IsRetriedWithinTheAttempts) {
  const std::string user = UniqueUser("s3-slow");
  Inject("s3", AwsFault::kThrottle, kAttempts - 1, "PutObject");
  const boost::json::object record = UploadOne(server(), user);
  ASSERT_FALSE(record.empty());
  EXPECT_EQ(Requests("s3", "PutObject"), kAttempts);
}

TEST_F(AwsFaultRetryTest, ServerErrorsFromS3BeyondTheAttemptsAre503AndLeaveNoRecord) {
  const std::string user = UniqueUser("s3-down");
  Inject("s3", AwsFault::kError500, kAttempts, "PutObject");
  const HttpResponse response = Upload(server(), Pngs(user, 1), KeyFor(user));
  EXPECT_EQ(response.status, 503) << response.body;
  EXPECT_THAT(DetailMessage(response), HasSubstr("S3")) << response.body;
  EXPECT_EQ(Requests("s3", "PutObject"), kAttempts);
  EXPECT_EQ(Requests("dynamodb", "PutItem"), 0);
  EXPECT_THAT(StoredKeys(user), IsEmpty());
}

class AwsFaultOutageTest : public AwsFaultSuite {};

TEST_F(AwsFaultOutageTest, StoppedDynamoDbIs503AndTheServiceRecoversWhenItIsBack) {
  const std::string user = UniqueUser("outage");
  const boost::json::object record = UploadOne(server(), user);
  ASSERT_FALSE(record.empty());
  const std::string target = "/api/v1/images/" + Str(record, "image_id");
  ASSERT_EQ(Get(server(), target, KeyFor(user)).status, 200);

  ASSERT_TRUE(testing::StopService("dynamodb").ok());
  // Each answer comes within the client's timeout (a hang fails Call).
  const HttpResponse read = Get(server(), target, KeyFor(user));
  EXPECT_EQ(read.status, 503) << read.body;
  EXPECT_THAT(DetailMessage(read), HasSubstr("DynamoDB")) << read.body;
  // The client learns which dependency failed, not where it lives; the
  // request's log line has the whole cause.
  EXPECT_THAT(read.body, Not(HasSubstr("127.0.0.1"))) << read.body;
  const std::string read_id(read.header("x-request-id").value_or(""));
  const auto logged = server().process().WaitForLine(
      [&read_id](const std::string& line) {
        return line.find("\"request_id\":\"" + read_id + "\"") != std::string::npos &&
               line.find("\"cause\":") != std::string::npos && line.find("127.0.0.1") != std::string::npos;
      },
      std::chrono::seconds(10));
  EXPECT_TRUE(logged.has_value()) << "no request log line with the cause for " << read_id;
  const HttpResponse upload = Upload(server(), Pngs(user, 1), KeyFor(user));
  EXPECT_EQ(upload.status, 503) << upload.body;
  EXPECT_THAT(DetailMessage(upload), HasSubstr("DynamoDB")) << upload.body;
  const HttpResponse not_ready = PollReady(server(), 503);
  EXPECT_EQ(not_ready.status, 503) << not_ready.body;
  EXPECT_THAT(DetailMessage(not_ready), HasSubstr("metadata store")) << not_ready.body;

  ASSERT_TRUE(testing::StartService("dynamodb").ok());
  // The first call after the restart already works: connections pooled
  // before the outage are dead, and must not fail it.
  const HttpResponse again = Get(server(), target, KeyFor(user));
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(PollReady(server(), 200).status, 200);
  EXPECT_FALSE(UploadOne(server(), user).empty());
  EXPECT_EQ(ListAllIds(server(), "user_id=" + user, KeyFor(user)).size(), 2u);
  // The upload refused during the outage kept its object: with DynamoDB
  // down, the read that decides whether its record was written could not be
  // made, and a record without its bytes is worse than bytes without a
  // record (left for a repair sweep, and said in the log).
  EXPECT_EQ(StoredKeys(user).size(), 3u);
  EXPECT_TRUE(server().process().WaitForLine(
      [](const std::string& line) { return line.find("bytes kept after a failed record write") != std::string::npos; },
      std::chrono::seconds(5)));
}

TEST_F(AwsFaultOutageTest, StoppedS3Is503LeavesNoRecordAndTheServiceRecovers) {
  const std::string user = UniqueUser("s3-outage");
  ASSERT_TRUE(testing::StopService("s3").ok());
  const HttpResponse upload = Upload(server(), Pngs(user, 1), KeyFor(user));
  EXPECT_EQ(upload.status, 503) << upload.body;
  EXPECT_THAT(DetailMessage(upload), HasSubstr("S3")) << upload.body;
  EXPECT_THAT(ListAllIds(server(), "user_id=" + user, KeyFor(user)), IsEmpty());
  EXPECT_EQ(Requests("dynamodb", "PutItem"), 0);
  const HttpResponse not_ready = PollReady(server(), 503);
  EXPECT_EQ(not_ready.status, 503) << not_ready.body;
  EXPECT_THAT(DetailMessage(not_ready), HasSubstr("blob store")) << not_ready.body;

  ASSERT_TRUE(testing::StartService("s3").ok());
  const boost::json::object record = UploadOne(server(), user);
  ASSERT_FALSE(record.empty());
  EXPECT_THAT(ListAllIds(server(), "user_id=" + user, KeyFor(user)), ElementsAre(Str(record, "image_id")));
  EXPECT_THAT(StoredKeys(user), ElementsAre("images/" + user + "/" + Str(record, "image_id") + ".png"));
  EXPECT_EQ(PollReady(server(), 200).status, 200);
}

// How many requests wait on AWS at once: --aws-concurrency, not --workers.
class AwsConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!AwsBackend()) GTEST_SKIP() << "runs on the AWS backend (IMGSVC_E2E_BACKEND=aws)";
    const Status reset = testing::ResetFaults();
    ASSERT_TRUE(reset.ok()) << reset.ToString();
  }
  void TearDown() override {
    if (AwsBackend()) {
      const Status reset = testing::ResetFaults();
      EXPECT_TRUE(reset.ok()) << reset.ToString();
    }
  }

  enum class Call { kGet, kUpload };

  // Sends `calls` GETs of one image (or uploads of one small image) at once
  // while DynamoDB holds every GetItem (PutItem) they make, and returns how
  // many reached it before the release: once `expected` have (or 20 s
  // passed), and 300 ms later. All the requests must then succeed.
  static int HeldAtOnce(std::vector<std::string> server_args, Call call, int calls, int expected) {
    server_args.insert(server_args.end(), {"--aws-requests", "fibers"});
    auto server = TestServer::Start(server_args);
    if (server == nullptr) return -1;
    const std::string user = UniqueUser("concurrency");
    const boost::json::object record = UploadOne(*server, user);
    if (record.empty()) return -1;
    const std::string target = "/api/v1/images/" + Str(record, "image_id");
    // The token is fetched and cached, the AWS connections opened.
    EXPECT_EQ(Get(*server, target, KeyFor(user)).status, 200);
    const char* operation = call == Call::kGet ? "GetItem" : "PutItem";
    const int before = Requests("dynamodb", operation);
    Inject("dynamodb", AwsFault::kHold, calls, operation);

    std::vector<bool> succeeded(static_cast<std::size_t>(calls));
    std::atomic<int> answered{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < calls; ++i) {
      clients.emplace_back([&, i] {
        succeeded[static_cast<std::size_t>(i)] = call == Call::kGet
                                                     ? Get(*server, target, KeyFor(user)).status == 200
                                                     : !UploadOne(*server, user).empty();
        ++answered;
      });
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    const auto arrived = [&] { return Requests("dynamodb", operation) - before; };
    while (arrived() < expected && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // for more, were the bound not kept
    const int held = arrived();
    // Those queued behind the bound are held in turn as they arrive.
    while (answered < calls && std::chrono::steady_clock::now() < deadline) {
      EXPECT_TRUE(testing::ReleaseHeld().ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (std::thread& client : clients) client.join();
    EXPECT_THAT(succeeded, ::testing::Each(true));
    return held;
  }
};

TEST_F(AwsConcurrencyTest, RequestsWaitingOnAwsAreBoundedByTheSetting) {
  EXPECT_EQ(HeldAtOnce({"--aws-concurrency", "2", "--io-threads", "1"}, Call::kGet, 5, 2), 2);
}

TEST_F(AwsConcurrencyTest, TheBoundIsNotTheWorkers) {
  EXPECT_EQ(HeldAtOnce({"--workers", "2", "--io-threads", "1"}, Call::kGet, 6, 6), 6);
}

// Small uploads wait on AWS as many at once as reads do: the workers bound
// the bytes of their bodies (2 MiB here), not their number.
TEST_F(AwsConcurrencyTest, UploadsAreBoundedByTheSettingNotTheWorkers) {
  EXPECT_EQ(HeldAtOnce({"--workers", "2", "--io-threads", "1"}, Call::kUpload, 6, 6), 6);
  EXPECT_EQ(HeldAtOnce({"--aws-concurrency", "3", "--io-threads", "1"}, Call::kUpload, 5, 3), 3);
}

}  // namespace aws_fault_test
}  // namespace imgsvc::e2e
