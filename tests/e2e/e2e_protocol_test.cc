// End-to-end: the service endpoints, request ids, CORS, HTTP robustness,
// token modes and graceful shutdown, against the real `imgsvc` binary.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <regex>
#include <thread>

#include "crypto/crypto.h"
#include "e2e_harness.h"
#include "support/image_fixtures.h"

namespace imgsvc::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::regex kSaneRequestId("^[A-Za-z0-9._:-]{1,128}$");

std::string Lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

class ServiceEndpointsTest : public ServerSuite {};

TEST_F(ServiceEndpointsTest, HealthIsOk) {
  HttpResponse r = Get(server(), "/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.header("content-type").value_or(""), StartsWith("application/json"));
  EXPECT_EQ(Json(r), boost::json::parse(R"({"status":"ok"})"));
}

TEST_F(ServiceEndpointsTest, ReadyWhenStoresAnswer) {
  HttpResponse r = Get(server(), "/ready");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r), boost::json::parse(R"({"status":"ready"})"));
}

TEST_F(ServiceEndpointsTest, OpenApiDescribesTheImageEndpoints) {
  HttpResponse r = Get(server(), "/openapi.json");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.header("content-type").value_or(""), StartsWith("application/json"));
  auto doc = Json(r);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(Str(doc, "openapi"), "3.1.0");
  const auto* paths = doc.as_object().if_contains("paths");
  ASSERT_NE(paths, nullptr);
  ASSERT_TRUE(paths->is_object());
  for (const char* path : {"/api/v1/images", "/api/v1/images/{image_id}",
                           "/api/v1/images/{image_id}/content", "/health", "/ready"}) {
    EXPECT_TRUE(paths->as_object().contains(path)) << path;
  }
}

TEST_F(ServiceEndpointsTest, DocsAreHtmlWithOnlySameHostAssets) {
  HttpResponse r = Get(server(), "/docs");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.header("content-type").value_or(""), StartsWith("text/html"));
  const std::regex kReference(R"re((?:src|href)\s*=\s*["']([^"']*)["'])re", std::regex::icase);
  int references = 0;
  for (std::sregex_iterator it(r.body.begin(), r.body.end(), kReference), end; it != end; ++it) {
    const std::string target = Lower((*it)[1].str());
    ++references;
    EXPECT_FALSE(target.starts_with("http:") || target.starts_with("https:") || target.starts_with("//"))
        << "off-host reference in /docs: " << target;
  }
  // Every asset the page references must be served by the binary itself.
  for (std::sregex_iterator it(r.body.begin(), r.body.end(), kReference), end; it != end; ++it) {
    std::string target = (*it)[1].str();
    if (target.empty() || target[0] == '#' || target.starts_with("data:")) continue;
    if (target[0] != '/') target = "/" + target;
    EXPECT_EQ(Get(server(), target).status, 200) << target;
  }
  EXPECT_GT(references, 0) << "an interactive page loads its script";
}

TEST_F(ServiceEndpointsTest, UnknownPathIs404NotFound) {
  HttpResponse r = Get(server(), "/nope/nothing");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Json(r), boost::json::parse(R"({"detail":"Not Found"})"));
}

TEST_F(ServiceEndpointsTest, WrongMethodIs405) {
  HttpRequest put;
  put.method = "PUT";
  put.target = "/api/v1/images";
  HttpResponse r = Call(server(), put);
  EXPECT_EQ(r.status, 405);
  EXPECT_FALSE(DetailMessage(r).empty()) << r.body;

  HttpRequest post_health;
  post_health.method = "POST";
  post_health.target = "/health";
  EXPECT_EQ(Call(server(), post_health).status, 405);
}

TEST_F(ServiceEndpointsTest, KeepAliveConnectionServesSeveralRequests) {
  auto connection = testing::HttpConnection::Open(server().host(), server().port());
  ASSERT_TRUE(connection.ok()) << connection.status().ToString();
  for (int i = 0; i < 3; ++i) {
    HttpRequest request;
    request.target = "/health";
    auto r = connection->Send(request);
    ASSERT_TRUE(r.ok()) << "request " << i << ": " << r.status().ToString();
    EXPECT_EQ(r->status, 200);
  }
}

TEST_F(ServiceEndpointsTest, NoCorsHeadersWhenCorsIsOff) {
  HttpResponse r = Get(server(), "/health", {}, {{"Origin", "http://a.example"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.header("access-control-allow-origin").has_value());

  HttpRequest preflight;
  preflight.method = "OPTIONS";
  preflight.target = "/api/v1/images";
  preflight.headers = {{"Origin", "http://a.example"}, {"Access-Control-Request-Method", "POST"}};
  HttpResponse p = Call(server(), preflight);
  EXPECT_FALSE(p.header("access-control-allow-origin").has_value());
  EXPECT_FALSE(p.header("access-control-allow-headers").has_value());
}

// Request ids --------------------------------------------------------------

class RequestIdTest : public ServerSuite {};

TEST_F(RequestIdTest, SaneIdIsEchoed) {
  for (const std::string& id : {std::string("e2e-Trace_1.2:3"), std::string("x"), std::string(128, 'a')}) {
    HttpResponse r = Get(server(), "/health", {}, {{"x-request-id", id}});
    EXPECT_EQ(r.header("x-request-id"), id);
  }
}

TEST_F(RequestIdTest, InsaneIdIsReplacedWithASaneOne) {
  for (const std::string& id : {std::string(129, 'a'), std::string("bad id"), std::string("a/b"),
                               std::string("semi;colon"), std::string("\xc3\xa9t\xc3\xa9")}) {
    HttpResponse r = Get(server(), "/health", {}, {{"x-request-id", id}});
    auto echoed = r.header("x-request-id");
    ASSERT_TRUE(echoed.has_value()) << id;
    EXPECT_NE(*echoed, id);
    EXPECT_TRUE(std::regex_match(*echoed, kSaneRequestId)) << *echoed;
  }
}

TEST_F(RequestIdTest, FreshIdsAreUnique) {
  auto a = Get(server(), "/health").header("x-request-id");
  auto b = Get(server(), "/health").header("x-request-id");
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value());
  EXPECT_NE(*a, *b);
  EXPECT_TRUE(std::regex_match(*a, kSaneRequestId)) << *a;
}

TEST_F(RequestIdTest, PresentOnErrorResponses) {
  std::vector<HttpResponse> errors;
  errors.push_back(Get(server(), "/nope"));                                                // 404
  errors.push_back(Get(server(), "/api/v1/images?limit=0"));                               // 422
  errors.push_back(Get(server(), "/api/v1/images", std::string("alice:wrong-token")));    // 401
  errors.push_back(Delete(server(), "/api/v1/images/" + std::string(36, 'x'), {}));         // 401/422
  HttpRequest put;
  put.method = "PUT";
  put.target = "/health";
  errors.push_back(Call(server(), put));  // 405
  for (const auto& r : errors) {
    EXPECT_GE(r.status, 400);
    auto id = r.header("x-request-id");
    ASSERT_TRUE(id.has_value()) << "status " << r.status;
    EXPECT_TRUE(std::regex_match(*id, kSaneRequestId));
  }
  HttpResponse echoed = Get(server(), "/nope", {}, {{"x-request-id", "err-id-42"}});
  EXPECT_EQ(echoed.status, 404);
  EXPECT_EQ(echoed.header("x-request-id"), "err-id-42");
}

TEST_F(RequestIdTest, TheIdIsInTheRequestsLogLines) {
  const std::string id = UniqueUser("e2e-log");
  HttpResponse r = Get(server(), "/api/v1/images/00000000-0000-4000-8000-000000000000", {},
                       {{"x-request-id", id}});
  EXPECT_EQ(r.status, 404);
  auto line = server().process().WaitForLine(
      [&](const std::string& l) { return l.find("\"" + id + "\"") != std::string::npos; },
      std::chrono::seconds(3));
  EXPECT_TRUE(line.has_value()) << "no log line carries request id " << id;

  // A replaced id is the one logged.
  HttpResponse replaced = Get(server(), "/health", {}, {{"x-request-id", "no spaces allowed"}});
  auto fresh = replaced.header("x-request-id");
  ASSERT_TRUE(fresh.has_value());
  auto fresh_line = server().process().WaitForLine(
      [&](const std::string& l) { return l.find("\"" + *fresh + "\"") != std::string::npos; },
      std::chrono::seconds(3));
  EXPECT_TRUE(fresh_line.has_value()) << "no log line carries the generated id " << *fresh;
}

// Raw-socket robustness --------------------------------------------------

class RobustnessTest : public ServerSuite {};

TEST_F(RobustnessTest, HugeHeaderIs431AndServerKeepsServing) {
  const std::string request = "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 * 1024, 'a') +
                              "\r\n\r\n";
  auto raw = testing::RawExchange(server().host(), server().port(), request);
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  auto r = testing::ParseResponse(*raw);
  ASSERT_TRUE(r.ok()) << r.status().ToString() << " raw: " << raw->substr(0, 200);
  EXPECT_EQ(r->status, 431);
  EXPECT_TRUE(r->header("x-request-id").has_value());
  EXPECT_EQ(Get(server(), "/health").status, 200);
}

TEST_F(RobustnessTest, GarbageRequestLineIs400AndServerKeepsServing) {
  for (const std::string& garbage : {std::string("HELLO THERE\r\n\r\n"), std::string("GET\r\n\r\n"),
                                    std::string("\x01\x02\x03 / HTTP/1.1\r\n\r\n")}) {
    auto raw = testing::RawExchange(server().host(), server().port(), garbage);
    ASSERT_TRUE(raw.ok()) << raw.status().ToString();
    auto r = testing::ParseResponse(*raw);
    ASSERT_TRUE(r.ok()) << "for " << ::testing::PrintToString(garbage) << ": " << r.status().ToString();
    EXPECT_EQ(r->status, 400) << ::testing::PrintToString(garbage);
  }
  EXPECT_EQ(Get(server(), "/health").status, 200);
}

TEST_F(RobustnessTest, ExpectContinueWithBadKeyIs401WithoutContinue) {
  for (const std::string& key_header : {std::string("x-api-key: alice:wrong-token\r\n"), std::string()}) {
    auto connection = testing::HttpConnection::Open(server().host(), server().port(),
                                                    std::chrono::milliseconds(5000));
    ASSERT_TRUE(connection.ok());
    const std::string head =
        "POST /api/v1/images HTTP/1.1\r\nHost: x\r\n" + key_header +
        "Content-Type: multipart/form-data; boundary=abc\r\nContent-Length: 1000000\r\n"
        "Expect: 100-continue\r\n\r\n";
    ASSERT_TRUE(connection->Write(head).ok());
    auto r = connection->ReadResponse();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 401) << "the first response must be the final 401, not 100 Continue";
    EXPECT_THAT(r->header("www-authenticate").value_or(""), StartsWith("ApiKey"));
  }
}

TEST_F(RobustnessTest, ClientVanishingMidBodyStoresNothing) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"a.png", "image/png", testing::MakeImage(core::ImageFormat::kPng, 5, 5)});
  const MultipartBuilder builder = BuildForm(form);
  const std::string body = builder.Build();
  {
    auto connection = testing::HttpConnection::Open(server().host(), server().port());
    ASSERT_TRUE(connection.ok());
    // Declares 100 bytes more than it sends, then closes the connection.
    ASSERT_TRUE(connection
                    ->Write("POST /api/v1/images HTTP/1.1\r\nHost: x\r\nx-api-key: " + KeyFor(user) +
                            "\r\nContent-Type: " + builder.ContentType() +
                            "\r\nContent-Length: " + std::to_string(body.size() + 100) + "\r\n\r\n" +
                            body)
                    .ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(ListAllIds(server(), "user_id=" + user, KeyFor(user)).empty());
  EXPECT_EQ(Get(server(), "/health").status, 200);
}

// A health check never waits for a worker: with the only worker held by an
// upload whose body has stalled (for up to the 30 s body timeout), /health
// is still answered. On AWS it used to queue behind the upload.
TEST(HealthTest, AnsweredWhileEveryWorkerIsBusy) {
  auto server = TestServer::Start({"--workers", "1"});
  ASSERT_NE(server, nullptr);
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"a.png", "image/png", testing::MakeImage(core::ImageFormat::kPng, 5, 5, 256 * 1024)});
  const MultipartBuilder builder = BuildForm(form);
  const std::string body = builder.Build();
  auto stalled = testing::HttpConnection::Open(server->host(), server->port());
  ASSERT_TRUE(stalled.ok());
  ASSERT_TRUE(stalled
                  ->Write("POST /api/v1/images HTTP/1.1\r\nHost: x\r\nx-api-key: " + KeyFor(user) +
                          "\r\nContent-Type: " + builder.ContentType() +
                          "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                          body.substr(0, body.size() / 2))
                  .ok());
  // The upload's handler takes the worker before the health check arrives.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  const auto health =
      testing::HttpClient(server->host(), server->port(), std::chrono::milliseconds(5000)).Get("/health");
  ASSERT_TRUE(health.ok()) << health.status().ToString() << "\n" << server->LogTail(10);
  EXPECT_EQ(health->status, 200);
}

// CORS ---------------------------------------------------------------------

class CorsTest : public ServerSuite {
 public:
  static void SetUpTestSuite() { Launch({"--cors-origins", "http://a.example"}); }
};

TEST_F(CorsTest, PreflightFromAllowedOrigin) {
  HttpRequest preflight;
  preflight.method = "OPTIONS";
  preflight.target = "/api/v1/images";
  preflight.headers = {{"Origin", "http://a.example"},
                       {"Access-Control-Request-Method", "POST"},
                       {"Access-Control-Request-Headers", "x-api-key, content-type"}};
  HttpResponse r = Call(server(), preflight);
  EXPECT_TRUE(r.status == 200 || r.status == 204) << r.status;
  EXPECT_EQ(r.header("access-control-allow-origin"), "http://a.example");
  const std::string allowed_headers = Lower(r.header("access-control-allow-headers").value_or(""));
  EXPECT_THAT(allowed_headers, HasSubstr("x-api-key"));
  EXPECT_THAT(allowed_headers, HasSubstr("content-type"));
  EXPECT_THAT(r.header("access-control-allow-methods").value_or(""), HasSubstr("POST"));
}

TEST_F(CorsTest, ResponsesToAllowedOriginExposeRequestId) {
  HttpResponse r = Get(server(), "/health", {}, {{"Origin", "http://a.example"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("access-control-allow-origin"), "http://a.example");
  EXPECT_THAT(Lower(r.header("access-control-expose-headers").value_or("")), HasSubstr("x-request-id"));
}

TEST_F(CorsTest, DisallowedOriginGetsNoAllowOrigin) {
  HttpResponse r = Get(server(), "/health", {}, {{"Origin", "http://b.example"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.header("access-control-allow-origin").has_value());

  HttpRequest preflight;
  preflight.method = "OPTIONS";
  preflight.target = "/api/v1/images";
  preflight.headers = {{"Origin", "http://b.example"}, {"Access-Control-Request-Method", "POST"}};
  EXPECT_FALSE(Call(server(), preflight).header("access-control-allow-origin").has_value());
}

// Per-user token mode ------------------------------------------------------

constexpr std::string_view kMasterKey = "e2e-master-key-0123456789abcdef";

class PerUserAuthTest : public ServerSuite {
 public:
  static void SetUpTestSuite() {
    Launch({"--auth-mode", "per-user", "--api-token", std::string(kMasterKey)});
  }

 protected:
  static std::string MintToken(const std::string& user) {
    auto result = testing::RunCommand(BinaryPath(), {"token", user},
                                      {"IMGSVC_API_TOKEN=" + std::string(kMasterKey)});
    if (!result.ok()) {
      ADD_FAILURE() << result.status().ToString();
      return {};
    }
    EXPECT_TRUE(result->exit.exited && result->exit.code == 0);
    std::string token = result->stdout_text;
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) {
      token.pop_back();
    }
    return token;
  }
};

TEST_F(PerUserAuthTest, TokenCommandPrintsHmacOfTheUser) {
  const std::string user = UniqueUser("alice");
  EXPECT_EQ(MintToken(user), crypto::HexEncode(crypto::HmacSha256(kMasterKey, user)));
}

TEST_F(PerUserAuthTest, UserTokenWorksOnlyForThatUser) {
  const std::string alice = UniqueUser("alice");
  const std::string bob = UniqueUser("bob");
  const std::string token = MintToken(alice);
  ASSERT_FALSE(token.empty());
  UploadForm form;
  form.files.push_back({"a.png", "image/png", testing::MakeImage(core::ImageFormat::kPng, 2, 2)});

  form.user_id = alice;
  EXPECT_EQ(Upload(server(), form, KeyFor(alice, token)).status, 201);

  form.user_id = bob;
  HttpResponse as_bob = Upload(server(), form, KeyFor(bob, token));
  EXPECT_EQ(as_bob.status, 401);
  EXPECT_THAT(as_bob.header("www-authenticate").value_or(""), StartsWith("ApiKey"));
  EXPECT_EQ(Get(server(), "/api/v1/images?user_id=" + bob, KeyFor(bob, token)).status, 401);
}

TEST_F(PerUserAuthTest, SharedStyleTokensAreRefused) {
  const std::string alice = UniqueUser("alice");
  UploadForm form;
  form.user_id = alice;
  form.files.push_back({"a.png", "image/png", testing::MakeImage(core::ImageFormat::kPng, 2, 2)});
  EXPECT_EQ(Upload(server(), form, KeyFor(alice, kLocalToken)).status, 401);
  EXPECT_EQ(Upload(server(), form, KeyFor(alice, kMasterKey)).status, 401);
  EXPECT_TRUE(ListAllIds(server(), "user_id=" + alice, KeyFor(alice, MintToken(alice))).empty());
}

// Graceful shutdown --------------------------------------------------------

bool Logged(TestServer& server, std::string_view text) {
  const std::vector<std::string> lines = server.process().Lines();
  return std::any_of(lines.begin(), lines.end(),
                     [text](const std::string& line) { return line.find(text) != std::string::npos; });
}

// The warning is about `ps`, which shows arguments but not the environment.
TEST(TokenSourceTest, OnlyATokenOnTheCommandLineIsWarnedAbout) {
  if (UseAwsBackend()) GTEST_SKIP() << "the AWS backend's token comes from Secrets Manager";
  const std::string token = "an-api-token-long-enough-0123456789";
  constexpr std::string_view kWarning = "visible to other local users";
  auto from_environment = TestServer::Start({}, {"IMGSVC_API_TOKEN=" + token});
  ASSERT_NE(from_environment, nullptr);
  EXPECT_FALSE(Logged(*from_environment, kWarning)) << from_environment->LogTail(10);
  auto from_flag = TestServer::Start({"--api-token=" + token});
  ASSERT_NE(from_flag, nullptr);
  EXPECT_TRUE(Logged(*from_flag, kWarning)) << from_flag->LogTail(10);
}

TEST(ShutdownTest, SigtermExitsZeroWithinGrace) {
  auto server = TestServer::Start({"--shutdown-grace", "5"});
  ASSERT_NE(server, nullptr);
  ASSERT_EQ(Get(*server, "/health").status, 200);
  const auto started = std::chrono::steady_clock::now();
  auto exit = server->Stop(std::chrono::seconds(8));
  ASSERT_TRUE(exit.has_value()) << "still running 8 s after SIGTERM";
  EXPECT_TRUE(exit->exited) << "killed by signal " << exit->signal;
  EXPECT_EQ(exit->code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(6));
}

TEST(ShutdownTest, UploadInFlightAtSigtermCompletes) {
  auto server = TestServer::Start({"--shutdown-grace", "10"});
  ASSERT_NE(server, nullptr);
  const std::string user = UniqueUser("alice");
  const std::string image = testing::MakeImage(core::ImageFormat::kPng, 8, 8, 2 * 1024 * 1024);

  MultipartBuilder form;
  form.AddField("user_id", user);
  form.AddFile("files", "slow.png", "image/png", image);
  const std::string body = form.Build();

  bool signalled = false;
  int ready_status_after_sigterm = -1;  // -1: connection refused (not accepting any more)
  testing::BodyProducer producer = [&](std::span<char> out, std::uint64_t offset) -> std::size_t {
    if (!signalled && offset >= body.size() / 2) {
      signalled = true;
      EXPECT_TRUE(server->process().Signal(SIGTERM).ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      auto ready = testing::HttpClient(server->host(), server->port(), std::chrono::milliseconds(3000))
                       .Get("/ready");
      if (ready.ok()) ready_status_after_sigterm = ready->status;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    const std::size_t n = std::min<std::size_t>({out.size(), body.size() - offset, 16 * 1024});
    std::copy_n(body.data() + offset, n, out.data());
    return n;
  };
  HttpRequest head;
  head.method = "POST";
  head.target = "/api/v1/images";
  head.headers = {{"Content-Type", form.ContentType()}, {"x-api-key", KeyFor(user)}};
  auto exchange = testing::StreamRequest(server->host(), server->port(), head, body.size(), producer,
                                         std::chrono::seconds(20));
  ASSERT_TRUE(signalled);
  ASSERT_TRUE(exchange.response.has_value()) << exchange.error;
  EXPECT_EQ(exchange.response->status, 201) << exchange.response->body;
  EXPECT_TRUE(exchange.body_complete);
  EXPECT_TRUE(ready_status_after_sigterm == -1 || ready_status_after_sigterm == 503)
      << "/ready after SIGTERM answered " << ready_status_after_sigterm;

  auto exit = server->process().Wait(std::chrono::seconds(12));
  ASSERT_TRUE(exit.has_value()) << "still running after the in-flight upload finished";
  EXPECT_TRUE(exit->exited);
  EXPECT_EQ(exit->code, 0);
}

}  // namespace
}  // namespace imgsvc::e2e
