// The Secrets Manager token source: creation, caching, rotation, the
// SecretString forms and a missing secret against the local stand-in; what
// the stand-in cannot do on demand (an outage, a SecretBinary) against a
// scripted loopback server.

#include "storage/aws/secrets_manager_token_source.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cctype>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "aws/aws_client.h"
#include "net/http_client.h"
#include "storage/aws_peers.h"
#include "storage/manual_clock.h"

namespace imgsvc::storage {
namespace secrets_manager_test {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr core::Micros kStart = 1'767'225'600'000'000;  // 2026-01-01T00:00:00Z
constexpr std::chrono::seconds kTtl{60};
constexpr char kScriptedSecret[] = "imgsvc-scripted-secret";

std::shared_ptr<testing::ManualClock> NewClock() { return std::make_shared<testing::ManualClock>(kStart); }

SecretsManagerTokenSource OnStandIn(const testing::AwsPeers& peers, const std::string& name,
                                    std::shared_ptr<core::Clock> clock) {
  return SecretsManagerTokenSource(peers.client, peers.secretsmanager, name, kTtl, std::move(clock));
}

// A new version of the secret, as a rotation would put it.
void Rotate(const testing::AwsPeers& peers, const std::string& name, const std::string& value) {
  const boost::json::object request{{"SecretId", name},
                                    {"SecretString", value},
                                    {"ClientRequestToken", core::RandomIdGenerator().NewId()}};
  const StatusOr<aws::AwsResponse> answer = peers.client->CallJson(
      peers.secretsmanager, "secretsmanager.PutSecretValue", "1.1", boost::json::serialize(request));
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  ASSERT_TRUE(answer->ok()) << answer->status << " " << answer->error.code;
}

struct CannedAnswer {
  int status = 200;
  std::string body;
  std::chrono::milliseconds delay{0};  // between the request and the answer
};

CannedAnswer SecretStringAnswer(std::string_view secret_string) {
  const boost::json::object body{{"Name", kScriptedSecret}, {"SecretString", secret_string}};
  return {200, boost::json::serialize(body)};
}

CannedAnswer ServiceDown() {
  return {503, R"({"__type":"ServiceUnavailableException","message":"down for the test"})"};
}

CannedAnswer SecretGone() {
  return {400, R"({"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."})"};
}

// Answers the requests it receives with the canned answers in order (the last
// one repeats), one request per connection. Signatures are not checked.
class ScriptedSecretsManager {
 public:
  explicit ScriptedSecretsManager(std::vector<CannedAnswer> script) : script_(std::move(script)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(::listen(listen_fd_, 16), 0);
    EXPECT_EQ(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length), 0);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedSecretsManager() {
    stopping_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  ScriptedSecretsManager(const ScriptedSecretsManager&) = delete;
  ScriptedSecretsManager& operator=(const ScriptedSecretsManager&) = delete;

  std::uint16_t port() const { return port_; }
  // Requests answered so far.
  std::size_t answered() const { return answered_.load(); }
  // Requests read so far, answered or not yet.
  std::size_t received() const { return received_.load(); }

 private:
  void Serve() {
    std::size_t answered = 0;
    while (!stopping_) {
      pollfd ready{listen_fd_, POLLIN, 0};
      if (::poll(&ready, 1, 50) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      if (ReadRequest(fd)) {
        ++received_;
        const CannedAnswer& answer = script_[std::min(answered, script_.size() - 1)];
        std::this_thread::sleep_for(answer.delay);
        Reply(fd, answer);
        ++answered;
        answered_ = answered;
      }
      ::close(fd);
    }
  }

  // Reads one request (head and Content-Length body); false when the client
  // went away or stalled first.
  static bool ReadRequest(int fd) {
    timeval timeout{};
    timeout.tv_sec = 10;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    std::string received;
    std::size_t head_end = std::string::npos;
    std::size_t body_length = 0;
    for (;;) {
      if (head_end == std::string::npos && (head_end = received.find("\r\n\r\n")) != std::string::npos) {
        std::string head = received.substr(0, head_end);
        std::transform(head.begin(), head.end(), head.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        const std::size_t field = head.find("\r\ncontent-length:");
        if (field != std::string::npos) body_length = std::stoul(head.substr(field + 17));
      }
      if (head_end != std::string::npos && received.size() >= head_end + 4 + body_length) return true;
      char buffer[4096];
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) return false;
      received.append(buffer, static_cast<std::size_t>(n));
    }
  }

  static void Reply(int fd, const CannedAnswer& answer) {
    std::string response = "HTTP/1.1 " + std::to_string(answer.status) +
                           " Canned\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: " +
                           std::to_string(answer.body.size()) + "\r\nConnection: close\r\n\r\n" + answer.body;
    std::string_view unsent = response;
    while (!unsent.empty()) {
      const ssize_t n = ::send(fd, unsent.data(), unsent.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      unsent.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  std::vector<CannedAnswer> script_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> answered_{0};
  std::atomic<std::size_t> received_{0};
  std::thread thread_;
};

// A loopback port nothing listens on (bound, noted, closed).
std::uint16_t ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

// One attempt per call and no backoff sleeps, so each fetch is one request
// and an outage costs no time.
SecretsManagerTokenSource OnLoopbackPort(std::uint16_t port, std::shared_ptr<core::Clock> clock) {
  net::HttpClientOptions http_options;
  http_options.connect_timeout = 5000ms;
  http_options.total_timeout = 20000ms;
  aws::Credentials credentials;
  credentials.access_key_id = "test";
  credentials.secret_access_key = "test-secret";
  aws::RetryOptions retry;
  retry.max_attempts = 1;
  auto client = std::make_shared<aws::AwsClient>(std::make_shared<net::HttpClient>(http_options),
                                                 std::make_shared<aws::StaticCredentialsProvider>(credentials),
                                                 retry, [](std::chrono::milliseconds) {});
  aws::ServiceTarget target;
  target.endpoint.host = "127.0.0.1";
  target.endpoint.port = port;
  target.region = "us-east-1";
  target.service = "secretsmanager";
  return SecretsManagerTokenSource(std::move(client), std::move(target), kScriptedSecret, kTtl, std::move(clock));
}

// Prefetch's request is answered before anyone asks for the token; the
// first Current() reads that answer instead of calling, and the token's age
// counts from the Prefetch.
TEST(SecretsManagerTokenSource, PrefetchedAnswerIsTheNextFetchAndAgesFromThePrefetch) {
  ScriptedSecretsManager service({SecretStringAnswer("prefetched"), SecretStringAnswer("fetched later")});
  const auto clock = NewClock();
  SecretsManagerTokenSource source = OnLoopbackPort(service.port(), clock);
  source.Prefetch();
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (service.answered() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(service.answered(), 1u) << "nothing sent before the token was asked for";

  clock->Advance(kTtl - 1s);
  EXPECT_EQ(source.Current().value(), "prefetched");
  EXPECT_EQ(source.fetches(), 1u);
  EXPECT_EQ(service.answered(), 1u);
  clock->Advance(2s);  // the TTL counted from the Prefetch is over
  EXPECT_EQ(source.Current().value(), "fetched later");
  EXPECT_EQ(source.fetches(), 2u);
}

TEST(SecretsManagerTokenFromSecretString, ReadsTheBareTokenAndTheJsonForms) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"tok-1", "tok-1"},
      {"  tok-1\n", "tok-1"},
      {"12345", "12345"},
      {R"({"api_token": "a-1"})", "a-1"},
      {R"({"token": "t-1"})", "t-1"},
      {R"({"password": "p-1"})", "p-1"},
      {R"({"user": "u", "token": "t-2"})", "t-2"},
      {R"({"token": "t-3", "api_token": "a-3", "note": 7})", "a-3"},
  };
  for (const auto& [secret_string, token] : cases) {
    const StatusOr<std::string> read = TokenFromSecretString(secret_string);
    ASSERT_TRUE(read.ok()) << secret_string << ": " << read.status().ToString();
    EXPECT_EQ(*read, token) << secret_string;
  }
}

TEST(SecretsManagerTokenFromSecretString, RefusesOtherShapesWithoutEchoingThem) {
  const std::vector<std::string> refused = {
      "",
      " \n\t",
      R"({"first": "s3cr3t-1", "second": "s3cr3t-2"})",
      R"({"api_token": 4242})",
      R"({"token": null})",
      R"({"only": ["s3cr3t"]})",
      R"({})",
      R"({"api_token": ""})",
      R"({"api_token": "s3cr3t")",
  };
  for (const std::string& secret_string : refused) {
    const StatusOr<std::string> read = TokenFromSecretString(secret_string);
    ASSERT_FALSE(read.ok()) << secret_string;
    EXPECT_EQ(read.status().code(), Code::kInternal) << secret_string;
    EXPECT_THAT(read.status().message(), Not(HasSubstr("s3cr3t")));
    EXPECT_THAT(read.status().message(), Not(HasSubstr("4242")));
  }
}

TEST(SecretsManagerTokenSource, CreateIfMissingCreatesOnceAndKeepsTheValue) {
  const testing::AwsPeers* peers = testing::Peers();
  ASSERT_NE(peers, nullptr);
  const std::string name = testing::UniqueName("token-create");
  SecretsManagerTokenSource source = OnStandIn(*peers, name, NewClock());

  const StatusOr<bool> created = source.CreateIfMissing("first-token");
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(*created);
  const StatusOr<bool> again = source.CreateIfMissing("second-token");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(*again);

  const StatusOr<std::string> token = source.Current();
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(*token, "first-token");
}

TEST(SecretsManagerTokenSource, CachesForTheTtlAndSeesRotations) {
  const testing::AwsPeers* peers = testing::Peers();
  ASSERT_NE(peers, nullptr);
  const std::string name = testing::UniqueName("token-cache");
  const auto clock = NewClock();
  SecretsManagerTokenSource source = OnStandIn(*peers, name, clock);
  ASSERT_TRUE(source.CreateIfMissing("one").ok());

  EXPECT_EQ(source.Current().value(), "one");
  clock->Advance(kTtl - 1s);
  EXPECT_EQ(source.Current().value(), "one");
  EXPECT_TRUE(source.CheckReady().ok());
  EXPECT_EQ(source.fetches(), 1u);

  // Within the TTL a rotation is not seen; after it, it is.
  ASSERT_NO_FATAL_FAILURE(Rotate(*peers, name, "two"));
  EXPECT_EQ(source.Current().value(), "one");
  EXPECT_EQ(source.fetches(), 1u);
  clock->Advance(2s);
  EXPECT_EQ(source.Current().value(), "two");
  EXPECT_EQ(source.fetches(), 2u);

  // Refresh sees it at once, and the cache holds what it fetched.
  ASSERT_NO_FATAL_FAILURE(Rotate(*peers, name, R"({"api_token": "three"})"));
  EXPECT_EQ(source.Refresh().value(), "three");
  EXPECT_EQ(source.Current().value(), "three");
  EXPECT_EQ(source.fetches(), 3u);
}

TEST(SecretsManagerTokenSource, ConcurrentCallersShareOneFetch) {
  const testing::AwsPeers* peers = testing::Peers();
  ASSERT_NE(peers, nullptr);
  const std::string name = testing::UniqueName("token-herd");
  SecretsManagerTokenSource source = OnStandIn(*peers, name, NewClock());
  ASSERT_TRUE(source.CreateIfMissing("shared").ok());

  std::vector<std::optional<std::string>> tokens(8);
  std::vector<std::thread> callers;
  for (auto& token : tokens) {
    callers.emplace_back([&source, &token] {
      StatusOr<std::string> current = source.Current();
      if (current.ok()) token = *current;
    });
  }
  for (std::thread& caller : callers) caller.join();
  for (const auto& token : tokens) EXPECT_EQ(token, "shared");
  EXPECT_EQ(source.fetches(), 1u);
}

TEST(SecretsManagerTokenSource, ReadsJsonSecretsAndNamesUnusableOnes) {
  const testing::AwsPeers* peers = testing::Peers();
  ASSERT_NE(peers, nullptr);
  const std::string json_name = testing::UniqueName("token-json");
  SecretsManagerTokenSource json_source = OnStandIn(*peers, json_name, NewClock());
  ASSERT_TRUE(json_source.CreateIfMissing(R"({"api_token": "from-json"})").ok());
  EXPECT_EQ(json_source.Current().value(), "from-json");

  const std::string bad_name = testing::UniqueName("token-bad");
  SecretsManagerTokenSource bad_source = OnStandIn(*peers, bad_name, NewClock());
  ASSERT_TRUE(bad_source.CreateIfMissing(R"({"first": "s3cr3t-1", "second": "s3cr3t-2"})").ok());
  const StatusOr<std::string> token = bad_source.Current();
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.status().code(), Code::kInternal);
  EXPECT_THAT(token.status().message(), HasSubstr(bad_name));
  EXPECT_THAT(token.status().message(), Not(HasSubstr("s3cr3t")));
  EXPECT_EQ(bad_source.CheckReady().code(), Code::kInternal);
}

TEST(SecretsManagerTokenSource, MissingSecretIsUnavailableAndNamed) {
  const testing::AwsPeers* peers = testing::Peers();
  ASSERT_NE(peers, nullptr);
  const std::string name = testing::UniqueName("token-missing");
  SecretsManagerTokenSource source = OnStandIn(*peers, name, NewClock());

  const StatusOr<std::string> token = source.Current();
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.status().code(), Code::kUnavailable);
  EXPECT_THAT(token.status().message(), HasSubstr("secret " + name + " not found"));
  EXPECT_EQ(source.CheckReady().code(), Code::kUnavailable);
}

TEST(SecretsManagerTokenSource, ServesTheCachedValueThroughAnOutageAndRetriesLater) {
  ScriptedSecretsManager server({SecretStringAnswer("first"), ServiceDown(), SecretStringAnswer("second")});
  ASSERT_NE(server.port(), 0);
  const auto clock = NewClock();
  SecretsManagerTokenSource source = OnLoopbackPort(server.port(), clock);

  EXPECT_EQ(source.Current().value(), "first");
  clock->Advance(kTtl + 1s);
  EXPECT_EQ(source.Current().value(), "first");  // the fetch met the outage
  EXPECT_EQ(source.fetches(), 2u);

  // No fetch at all until the retry delay has passed, Refresh included.
  clock->Advance(SecretsManagerTokenSource::kOutageRetryDelay - 1s);
  EXPECT_EQ(source.Current().value(), "first");
  EXPECT_EQ(source.Refresh().value(), "first");
  EXPECT_TRUE(source.CheckReady().ok());
  EXPECT_EQ(source.fetches(), 2u);

  clock->Advance(2s);
  EXPECT_EQ(source.Current().value(), "second");
  EXPECT_EQ(source.fetches(), 3u);
}

TEST(SecretsManagerTokenSource, WhileAFetchRunsOthersAreServedTheValueFetchedBefore) {
  CannedAnswer slow = SecretStringAnswer("second");
  slow.delay = 1500ms;
  ScriptedSecretsManager server({SecretStringAnswer("first"), slow});
  ASSERT_NE(server.port(), 0);
  const auto clock = NewClock();
  SecretsManagerTokenSource source = OnLoopbackPort(server.port(), clock);
  EXPECT_EQ(source.Current().value(), "first");
  clock->Advance(kTtl + 1s);

  std::thread fetching([&] { EXPECT_EQ(source.Current().value(), "second"); });
  while (server.received() < 2) std::this_thread::sleep_for(1ms);
  const auto start = std::chrono::steady_clock::now();
  const StatusOr<std::string> meanwhile = source.Current();
  const auto waited = std::chrono::steady_clock::now() - start;
  fetching.join();
  EXPECT_EQ(meanwhile.value(), "first");
  EXPECT_LT(waited, 1000ms) << "waited for the other caller's fetch";
  EXPECT_EQ(source.fetches(), 2u);
  EXPECT_EQ(source.Current().value(), "second");
}

TEST(SecretsManagerTokenSource, NeverFetchedOutageReturnsTheFailureEachTime) {
  SecretsManagerTokenSource source = OnLoopbackPort(ClosedPort(), NewClock());

  const StatusOr<std::string> first = source.Current();
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), Code::kUnavailable);
  // Nothing to serve, so nothing to wait for: the next call tries again.
  EXPECT_EQ(source.CheckReady().code(), Code::kUnavailable);
  EXPECT_EQ(source.fetches(), 2u);
}

TEST(SecretsManagerTokenSource, DeletedSecretRevokesTheCachedValue) {
  ScriptedSecretsManager server({SecretStringAnswer("first"), SecretGone()});
  ASSERT_NE(server.port(), 0);
  const auto clock = NewClock();
  SecretsManagerTokenSource source = OnLoopbackPort(server.port(), clock);

  EXPECT_EQ(source.Current().value(), "first");
  clock->Advance(kTtl + 1s);
  const StatusOr<std::string> token = source.Current();
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.status().code(), Code::kUnavailable);
  EXPECT_THAT(token.status().message(), HasSubstr(std::string("secret ") + kScriptedSecret + " not found"));
  EXPECT_FALSE(source.CheckReady().ok());
  EXPECT_EQ(source.fetches(), 3u);
}

TEST(SecretsManagerTokenSource, SecretBinaryIsRefused) {
  const boost::json::object body{{"Name", kScriptedSecret}, {"SecretBinary", "AAEC"}};
  ScriptedSecretsManager server({{200, boost::json::serialize(body)}});
  ASSERT_NE(server.port(), 0);
  SecretsManagerTokenSource source = OnLoopbackPort(server.port(), NewClock());

  const StatusOr<std::string> token = source.Current();
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.status().code(), Code::kInternal);
  EXPECT_THAT(token.status().message(), HasSubstr("SecretBinary"));
  EXPECT_THAT(token.status().message(), HasSubstr(kScriptedSecret));
}

}  // namespace secrets_manager_test
}  // namespace imgsvc::storage
