#include "aws/credentials.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "aws/scripted_server.h"
#include "net/http_client.h"

namespace imgsvc::aws {
namespace credentials_test {

using namespace std::chrono_literals;
using scripted_server::Response;
using scripted_server::ScriptedServer;
using std::chrono::system_clock;

std::string Rfc3339(system_clock::time_point when) {
  const std::time_t seconds = system_clock::to_time_t(when);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string CredentialsJson(const std::string& key, const std::string& expiration) {
  return R"({"Code":"Success","Type":"AWS-HMAC","AccessKeyId":")" + key +
         R"(","SecretAccessKey":"secret-)" + key + R"(","Token":"token-)" + key + R"(","Expiration":")" +
         expiration + R"("})";
}

class CredentialsChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "imgsvc-credentials-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    home_ = pattern;
    // HOME points at the empty temp dir so the developer's ~/.aws is never
    // read; instance metadata stays off unless a test turns it on.
    vars_ = {{"HOME", home_}, {"AWS_EC2_METADATA_DISABLED", "true"}};
  }
  void TearDown() override { std::filesystem::remove_all(home_); }

  Environment env() const {
    return [vars = vars_](const std::string& name) -> std::optional<std::string> {
      const auto found = vars.find(name);
      if (found == vars.end()) return std::nullopt;
      return found->second;
    };
  }

  std::string WriteFile(const std::string& relative, const std::string& content) {
    const std::filesystem::path path = std::filesystem::path(home_) / relative;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << content;
    return path.string();
  }

  StatusOr<std::shared_ptr<CredentialsProvider>> Chain() { return DefaultCredentialsChain(env(), http_); }

  std::string home_;
  std::map<std::string, std::string> vars_;
  std::shared_ptr<net::HttpClient> http_ = std::make_shared<net::HttpClient>();
};

constexpr const char* kCredentialsFile = R"(# shared credentials
; written by hand
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key=DEFAULTSECRET   # rotated yearly

[ work ]
  aws_access_key_id   =   WORKKEY
aws_secret_access_key = WORKSECRET
aws_session_token = WORKTOKEN
)";

TEST_F(CredentialsChainTest, EnvironmentWinsOverTheSharedFiles) {
  WriteFile(".aws/credentials", kCredentialsFile);
  vars_["AWS_ACCESS_KEY_ID"] = "ENVKEY";
  vars_["AWS_SECRET_ACCESS_KEY"] = "ENVSECRET";
  vars_["AWS_SESSION_TOKEN"] = "ENVTOKEN";
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ((*provider)->Source(), "environment");
  auto credentials = (*provider)->Get();
  ASSERT_TRUE(credentials.ok());
  EXPECT_EQ(credentials->access_key_id, "ENVKEY");
  EXPECT_EQ(credentials->secret_access_key, "ENVSECRET");
  EXPECT_EQ(credentials->session_token, "ENVTOKEN");
  EXPECT_FALSE(credentials->expiration.has_value());
}

TEST_F(CredentialsChainTest, HalfAnEnvironmentPairFallsThroughToTheProfile) {
  WriteFile(".aws/credentials", kCredentialsFile);
  vars_["AWS_ACCESS_KEY_ID"] = "ENVKEY";
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ((*provider)->Source(), "profile:default");
  EXPECT_EQ((*provider)->Get()->access_key_id, "DEFAULTKEY");
}

TEST_F(CredentialsChainTest, DefaultProfileFromTheCredentialsFileUnderHome) {
  WriteFile(".aws/credentials", kCredentialsFile);
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ((*provider)->Source(), "profile:default");
  auto credentials = (*provider)->Get();
  ASSERT_TRUE(credentials.ok());
  EXPECT_EQ(credentials->access_key_id, "DEFAULTKEY");
  EXPECT_EQ(credentials->secret_access_key, "DEFAULTSECRET");  // inline comment dropped
  EXPECT_EQ(credentials->session_token, "");
}

TEST_F(CredentialsChainTest, AwsProfileSelectsTheSection) {
  vars_["AWS_SHARED_CREDENTIALS_FILE"] = WriteFile("elsewhere/creds.ini", kCredentialsFile);
  vars_["AWS_PROFILE"] = "work";
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ((*provider)->Source(), "profile:work");
  auto credentials = (*provider)->Get();
  ASSERT_TRUE(credentials.ok());
  EXPECT_EQ(credentials->access_key_id, "WORKKEY");
  EXPECT_EQ(credentials->secret_access_key, "WORKSECRET");
  EXPECT_EQ(credentials->session_token, "WORKTOKEN");
}

TEST_F(CredentialsChainTest, ConfigFileProfileSectionHoldsKeysToo) {
  vars_["AWS_SHARED_CREDENTIALS_FILE"] = WriteFile("creds.ini", "[other]\naws_access_key_id = X\n");
  vars_["AWS_CONFIG_FILE"] = WriteFile("config.ini",
                                       "[ci]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n"
                                       "[profile ci]\nregion = eu-west-1\n"
                                       "AWS_Access_Key_ID = CIKEY\naws_secret_access_key = CISECRET\n");
  vars_["AWS_PROFILE"] = "ci";
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ((*provider)->Source(), "profile:ci");
  EXPECT_EQ((*provider)->Get()->access_key_id, "CIKEY");
}

TEST_F(CredentialsChainTest, CredentialsFileWinsOverConfigFile) {
  WriteFile(".aws/credentials", kCredentialsFile);
  WriteFile(".aws/config", "[default]\naws_access_key_id = CONFIGKEY\naws_secret_access_key = CONFIGSECRET\n");
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ((*provider)->Get()->access_key_id, "DEFAULTKEY");
}

TEST_F(CredentialsChainTest, RegionFromVariablesThenProfile) {
  // The indented line is a sub-setting of `s3`, not the profile's region.
  WriteFile(".aws/config", "[default]\nregion = us-west-2\ns3 =\n  region = nested-wrong\n"
                           "[profile x]\nregion = eu-west-3\n");
  EXPECT_EQ(*ResolveRegion(env()), "us-west-2");
  vars_["AWS_PROFILE"] = "x";
  EXPECT_EQ(*ResolveRegion(env()), "eu-west-3");
  vars_["AWS_DEFAULT_REGION"] = "eu-west-2";
  EXPECT_EQ(*ResolveRegion(env()), "eu-west-2");
  vars_["AWS_REGION"] = "eu-west-1";
  EXPECT_EQ(*ResolveRegion(env()), "eu-west-1");
}

TEST_F(CredentialsChainTest, NoRegionNamesTheVariable) {
  WriteFile(".aws/config", "[default]\noutput = json\n");
  auto region = ResolveRegion(env());
  ASSERT_FALSE(region.ok());
  EXPECT_EQ(region.status().code(), Code::kUnavailable);
  EXPECT_NE(region.status().message().find("AWS_REGION"), std::string::npos);
}

TEST_F(CredentialsChainTest, ProfileNameDefaultsToDefault) {
  EXPECT_EQ(ProfileName(env()), "default");
  vars_["AWS_PROFILE"] = "work";
  EXPECT_EQ(ProfileName(env()), "work");
}

TEST_F(CredentialsChainTest, ContainerFullUriWithAuthorizationToken) {
  ScriptedServer server;
  server.Push(Response(200, CredentialsJson("CONTAINERKEY", "2030-01-02T03:04:05.250Z")));
  vars_["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = server.url() + "/v1/credentials?id=7";
  vars_["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "secret-token";
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ((*provider)->Source(), "container");
  EXPECT_TRUE(server.requests().empty());  // chosen by its variables, asked on first use

  auto credentials = (*provider)->Get();
  ASSERT_TRUE(credentials.ok()) << credentials.status().ToString();
  EXPECT_EQ(credentials->access_key_id, "CONTAINERKEY");
  EXPECT_EQ(credentials->secret_access_key, "secret-CONTAINERKEY");
  EXPECT_EQ(credentials->session_token, "token-CONTAINERKEY");
  const system_clock::time_point expected = std::chrono::sys_days{std::chrono::year{2030} / 1 / 2} + 3h + 4min + 5s +
                                            250ms;
  EXPECT_EQ(credentials->expiration, expected);

  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].target, "/v1/credentials?id=7");
  EXPECT_EQ(requests[0].Header("authorization"), "secret-token");

  // Far from expiry: served from the cache.
  ASSERT_TRUE((*provider)->Get().ok());
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST_F(CredentialsChainTest, ContainerTokenFileWinsOverTheVariable) {
  ScriptedServer server;
  server.Push(Response(200, CredentialsJson("K", Rfc3339(system_clock::now() + 1h))));
  vars_["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = server.url() + "/creds";
  vars_["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "variable-token";
  vars_["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = WriteFile("eks/token", "file-token\n");
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  ASSERT_TRUE((*provider)->Get().ok());
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].Header("authorization"), "file-token");
}

TEST_F(CredentialsChainTest, ContainerCredentialsRefreshedNearExpiryAndKeptWhenRefreshFails) {
  ScriptedServer server;
  // Two minutes ahead is inside the five-minute refresh window.
  server.Push(Response(200, CredentialsJson("FIRST", Rfc3339(system_clock::now() + 2min))));
  server.Push(Response(200, CredentialsJson("SECOND", Rfc3339(system_clock::now() + 2min))));
  server.Push(Response(500, "agent restarting"));
  vars_["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = server.url() + "/creds";
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();

  EXPECT_EQ((*provider)->Get()->access_key_id, "FIRST");
  EXPECT_EQ((*provider)->Get()->access_key_id, "SECOND");
  EXPECT_EQ(server.requests().size(), 2u);
  auto kept = (*provider)->Get();  // refresh fails; SECOND is still valid
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(kept->access_key_id, "SECOND");
  EXPECT_EQ(server.requests().size(), 3u);
}

// Credentials inside the refresh window are still valid: while one caller's
// fetch hangs, another signs with them at once instead of queueing behind it.
TEST_F(CredentialsChainTest, WhileOneCallerRefreshesOthersUseTheValidCachedCredentials) {
  net::HttpClientOptions options;
  options.total_timeout = 2000ms;
  http_ = std::make_shared<net::HttpClient>(options);
  ScriptedServer server;
  server.Push(Response(200, CredentialsJson("FIRST", Rfc3339(system_clock::now() + 2min))));
  server.PushSilence();
  vars_["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = server.url() + "/creds";
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  ASSERT_EQ((*provider)->Get()->access_key_id, "FIRST");

  std::thread refreshing([&] { EXPECT_EQ((*provider)->Get()->access_key_id, "FIRST"); });
  while (server.requests().size() < 2) std::this_thread::sleep_for(1ms);
  const auto start = std::chrono::steady_clock::now();
  const auto meanwhile = (*provider)->Get();
  const auto waited = std::chrono::steady_clock::now() - start;
  refreshing.join();
  ASSERT_TRUE(meanwhile.ok()) << meanwhile.status().ToString();
  EXPECT_EQ(meanwhile->access_key_id, "FIRST");
  EXPECT_LT(waited, 1000ms) << "waited for the other caller's fetch";
  EXPECT_EQ(server.requests().size(), 2u);
}

// After a failed refresh, the valid cached credentials are used for a while
// without asking again: each caller would otherwise wait for its own attempt.
TEST_F(CredentialsChainTest, AFailedRefreshIsNotRetriedByEveryCaller) {
  ScriptedServer server;
  server.Push(Response(200, CredentialsJson("FIRST", Rfc3339(system_clock::now() + 2min))));
  server.Push(Response(500, "agent restarting"));
  vars_["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = server.url() + "/creds";
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  for (int i = 0; i < 5; ++i) {
    const auto credentials = (*provider)->Get();
    ASSERT_TRUE(credentials.ok()) << credentials.status().ToString();
    EXPECT_EQ(credentials->access_key_id, "FIRST");
  }
  EXPECT_EQ(server.requests().size(), 2u);
}

// A container agent that never answers fails the fetch in the SDKs' 2 s,
// not the HTTP client's 30.
TEST_F(CredentialsChainTest, ContainerEndpointThatHangsFailsWithinItsTimeout) {
  ScriptedServer server;
  server.PushSilence();
  vars_["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = server.url() + "/creds";
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  const auto start = std::chrono::steady_clock::now();
  const auto credentials = (*provider)->Get();
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(credentials.ok());
  EXPECT_EQ(credentials.status().code(), Code::kUnavailable);
  EXPECT_GE(waited, 1500ms);
  EXPECT_LT(waited, 10s);
}

TEST_F(CredentialsChainTest, ContainerPlainHttpToAnotherHostRefused) {
  vars_["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = "http://credentials.example.com/creds";
  auto provider = Chain();
  ASSERT_FALSE(provider.ok());
  EXPECT_EQ(provider.status().code(), Code::kUnavailable);
}

TEST_F(CredentialsChainTest, InstanceMetadataV2TokenFirst) {
  ScriptedServer server;
  server.Push(Response(200, "IMDS-TOKEN"));
  server.Push(Response(200, "imgsvc-role\n"));
  server.Push(Response(200, CredentialsJson("IMDSKEY", Rfc3339(system_clock::now() + 6h))));
  vars_.erase("AWS_EC2_METADATA_DISABLED");
  vars_["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = server.url();
  vars_["AWS_METADATA_SERVICE_TIMEOUT"] = "30";  // a slow test VM, not the 1 s default
  auto provider = Chain();
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ((*provider)->Source(), "imds");
  auto credentials = (*provider)->Get();
  ASSERT_TRUE(credentials.ok()) << credentials.status().ToString();
  EXPECT_EQ(credentials->access_key_id, "IMDSKEY");
  EXPECT_EQ(credentials->session_token, "token-IMDSKEY");
  EXPECT_TRUE(credentials->expiration.has_value());

  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 3u);  // the chain's fetch is reused by Get()
  EXPECT_EQ(requests[0].method, "PUT");
  EXPECT_EQ(requests[0].target, "/latest/api/token");
  EXPECT_EQ(requests[0].Header("x-aws-ec2-metadata-token-ttl-seconds"), "21600");
  EXPECT_EQ(requests[1].method, "GET");
  EXPECT_EQ(requests[1].target, "/latest/meta-data/iam/security-credentials/");
  EXPECT_EQ(requests[1].Header("x-aws-ec2-metadata-token"), "IMDS-TOKEN");
  EXPECT_EQ(requests[2].target, "/latest/meta-data/iam/security-credentials/imgsvc-role");
  EXPECT_EQ(requests[2].Header("x-aws-ec2-metadata-token"), "IMDS-TOKEN");
}

TEST_F(CredentialsChainTest, InstanceMetadataDisabled) {
  ScriptedServer server;
  vars_["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = server.url();
  auto provider = Chain();
  ASSERT_FALSE(provider.ok());
  EXPECT_EQ(provider.status().code(), Code::kUnavailable);
  EXPECT_NE(provider.status().message().find("AWS_EC2_METADATA_DISABLED"), std::string::npos);
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(CredentialsChainTest, NothingFoundListsWhatWasTried) {
  vars_.erase("AWS_EC2_METADATA_DISABLED");
  vars_["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = "http://127.0.0.1:" + std::to_string(scripted_server::ClosedPort());
  auto provider = Chain();
  ASSERT_FALSE(provider.ok());
  EXPECT_EQ(provider.status().code(), Code::kUnavailable);
  const std::string& message = provider.status().message();
  for (const char* source : {"environment", "profile default", "container", "instance metadata"}) {
    EXPECT_NE(message.find(source), std::string::npos) << source << " missing from: " << message;
  }
}

}  // namespace credentials_test
}  // namespace imgsvc::aws
