// The real imgsvc binary as an AWS Lambda function (issue 4).
//
// The binary runs as the custom runtime's bootstrap (no arguments,
// AWS_LAMBDA_RUNTIME_API set) against the fake Runtime API, with its stores on
// the local AWS peers (S3, DynamoDB and Secrets Manager behind SigV4-verifying
// fronts), provisioned by `imgsvc init`. The tests feed it API Gateway REST
// API (payload 1.0), HTTP API (payload 2.0) and Function URL events built
// here in the shapes of AWS's sample events, for every endpoint of API.md,
// and check the response payloads and the /error reports. Presigned URLs are
// fetched with plain HTTP through the S3 front, so their signatures are
// checked by an independent implementation.
//
// Also: a non-aws storage is an init error, and `imgsvc invoke --event FILE`.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "crypto/crypto.h"
#include "lambda/function_harness.h"
#include "support/fake_runtime_api.h"
#include "support/http_client.h"
#include "support/image_fixtures.h"
#include "support/local_aws.h"
#include "support/loopback_socket.h"
#include "support/process.h"

namespace imgsvc::lambda {
namespace lambda_binary_test {

namespace json = boost::json;
namespace harness = function_harness;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::FakeEvent;
using testing::FakeRuntimeApi;
using testing::RuntimePost;

constexpr std::string_view kToken = "lambda-binary-test-token-7c1e4f0a9d";
// A well-formed image id no test creates.
constexpr std::string_view kUnknownId = "0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a11";
constexpr std::string_view kPngSignature("\x89PNG\r\n\x1a\n", 8);

std::string KeyFor(std::string_view user) { return std::string(user) + ":" + std::string(kToken); }

std::string Fixture(std::string_view name) {
  return harness::ReadFile(std::string(IMGSVC_LAMBDA_EVENTS) + "/" + std::string(name));
}

json::value ParseJson(std::string_view text, std::string_view what) {
  boost::system::error_code ec;
  json::value value = json::parse(text, ec);
  if (ec) {
    ADD_FAILURE() << what << " is not JSON: " << text.substr(0, 400);
    return nullptr;
  }
  return value;
}

std::string Str(const json::value& v, std::string_view key) {
  const json::object* object = v.if_object();
  const json::value* field = object == nullptr ? nullptr : object->if_contains(key);
  return field != nullptr && field->is_string() ? std::string(field->get_string()) : std::string();
}

std::vector<std::string> Strings(const json::value& v, std::string_view key) {
  std::vector<std::string> out;
  const json::object* object = v.if_object();
  const json::value* field = object == nullptr ? nullptr : object->if_contains(key);
  if (field == nullptr || !field->is_array()) return out;
  for (const json::value& item : field->get_array()) {
    out.push_back(item.is_string() ? std::string(item.get_string()) : json::serialize(item));
  }
  return out;
}

// The `loc` paths of a 422 body, each as "a/b".
std::vector<std::string> ErrorLocs(const json::value& body) {
  std::vector<std::string> locs;
  const json::object* object = body.if_object();
  const json::value* detail = object == nullptr ? nullptr : object->if_contains("detail");
  if (detail == nullptr || !detail->is_array()) return locs;
  for (const json::value& entry : detail->get_array()) {
    std::string loc;
    for (const std::string& part : Strings(entry, "loc")) {
      if (!loc.empty()) loc += "/";
      loc += part;
    }
    locs.push_back(loc);
  }
  return locs;
}

std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                            c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 15]);
    }
  }
  return out;
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  return out;
}

using Pairs = std::vector<std::pair<std::string, std::string>>;

// What a client sent to API Gateway or the Function URL.
struct ApiRequest {
  std::string method = "GET";
  std::string path = "/";
  Pairs query;    // decoded names and values, in order
  Pairs headers;  // as the client spelled them
  std::string body;
  bool base64 = false;  // delivered base64-encoded, as the gateways do for binary media
  std::string stage;    // empty: $default (HTTP API) / "Prod" (REST API)
};

ApiRequest Get(std::string path, Pairs query = {}, std::optional<std::string> key = {}) {
  ApiRequest request;
  request.path = std::move(path);
  request.query = std::move(query);
  if (key) request.headers.emplace_back("X-Api-Key", *key);
  return request;
}

ApiRequest JsonRequest(std::string method, std::string path, std::optional<std::string> key, const json::value& body) {
  ApiRequest request;
  request.method = std::move(method);
  request.path = std::move(path);
  request.headers.emplace_back("Content-Type", "application/json");
  if (key) request.headers.emplace_back("X-Api-Key", *key);
  request.body = json::serialize(body);
  return request;
}

ApiRequest DeleteRequest(std::string path, std::optional<std::string> key) {
  ApiRequest request;
  request.method = "DELETE";
  request.path = std::move(path);
  if (key) request.headers.emplace_back("X-Api-Key", *key);
  return request;
}

struct UploadFile {
  std::string filename;
  std::string content_type;
  std::string data;
};

ApiRequest UploadRequest(const std::string& user, const std::vector<UploadFile>& files,
                         std::optional<std::string> key, std::optional<std::string> tags = {},
                         std::optional<std::string> visibility = {}) {
  testing::MultipartBuilder form;
  form.AddField("user_id", user);
  if (tags) form.AddField("tags", *tags);
  if (visibility) form.AddField("visibility", *visibility);
  for (const UploadFile& file : files) form.AddFile("files", file.filename, file.content_type, file.data);
  ApiRequest request;
  request.method = "POST";
  request.path = "/api/v1/images";
  request.headers.emplace_back("Content-Type", form.ContentType());
  if (key) request.headers.emplace_back("X-Api-Key", *key);
  request.body = form.Build();
  request.base64 = true;
  return request;
}

enum class Shape { kRestApi, kHttpApi, kFunctionUrl };

constexpr Shape kAllShapes[] = {Shape::kRestApi, Shape::kHttpApi, Shape::kFunctionUrl};

const char* ShapeName(Shape shape) {
  switch (shape) {
    case Shape::kRestApi: return "REST API";
    case Shape::kHttpApi: return "HTTP API";
    case Shape::kFunctionUrl: return "Function URL";
  }
  return "?";
}

json::value BodyField(const ApiRequest& request) {
  if (request.body.empty()) return nullptr;
  return json::string(request.base64 ? crypto::Base64Encode(request.body) : request.body);
}

// API Gateway REST API, payload format 1.0 (the shape of AWS's sample
// "apigateway-aws-proxy" event).
json::object RestApiEvent(const ApiRequest& request) {
  const std::string stage = request.stage.empty() ? "Prod" : request.stage;
  const std::string domain = "r3pmxmplak.execute-api.us-east-1.amazonaws.com";
  Pairs headers{{"Accept", "*/*"},
                {"Host", domain},
                {"User-Agent", "lambda-binary-test"},
                {"X-Amzn-Trace-Id", "Root=1-5e66d96f-7491f09xmpl79d18acf3d050"},
                {"X-Forwarded-For", "198.51.100.9"},
                {"X-Forwarded-Port", "443"},
                {"X-Forwarded-Proto", "https"}};
  if (!request.body.empty()) headers.emplace_back("Content-Length", std::to_string(request.body.size()));
  headers.insert(headers.end(), request.headers.begin(), request.headers.end());
  json::object single_headers, multi_headers;
  for (const auto& [name, value] : headers) {
    single_headers[name] = value;
    json::value& list = multi_headers[name];
    if (!list.is_array()) list.emplace_array();
    list.get_array().emplace_back(value);
  }
  json::value single_query = nullptr, multi_query = nullptr;
  if (!request.query.empty()) {
    json::object single, multi;
    for (const auto& [name, value] : request.query) {
      single[name] = value;
      json::value& list = multi[name];
      if (!list.is_array()) list.emplace_array();
      list.get_array().emplace_back(value);
    }
    single_query = std::move(single);
    multi_query = std::move(multi);
  }
  return json::object{
      {"resource", "/{proxy+}"},
      {"path", request.path},
      {"httpMethod", request.method},
      {"headers", std::move(single_headers)},
      {"multiValueHeaders", std::move(multi_headers)},
      {"queryStringParameters", std::move(single_query)},
      {"multiValueQueryStringParameters", std::move(multi_query)},
      {"pathParameters", {{"proxy", request.path.substr(1)}}},
      {"stageVariables", nullptr},
      {"requestContext",
       {{"resourceId", "2gxmpl"},
        {"resourcePath", "/{proxy+}"},
        {"httpMethod", request.method},
        {"extendedRequestId", "JJbxmplHYosFVYQ="},
        {"requestTime", "10/Mar/2020:00:03:59 +0000"},
        {"path", "/" + stage + request.path},
        {"accountId", "123456789012"},
        {"protocol", "HTTP/1.1"},
        {"stage", stage},
        {"domainPrefix", "r3pmxmplak"},
        {"requestTimeEpoch", 1583798639428},
        {"requestId", harness::Unique("rest")},
        {"identity",
         {{"cognitoIdentityPoolId", nullptr},
          {"accountId", nullptr},
          {"cognitoIdentityId", nullptr},
          {"caller", nullptr},
          {"sourceIp", "198.51.100.9"},
          {"principalOrgId", nullptr},
          {"accessKey", nullptr},
          {"cognitoAuthenticationType", nullptr},
          {"cognitoAuthenticationProvider", nullptr},
          {"userArn", nullptr},
          {"userAgent", "lambda-binary-test"},
          {"user", nullptr}}},
        {"domainName", domain},
        {"apiId", "r3pmxmplak"}}},
      {"body", BodyField(request)},
      {"isBase64Encoded", request.base64 && !request.body.empty()},
  };
}

// Payload format 2.0: an HTTP API (execute-api domain, rawPath with the stage
// unless it is $default) or a Function URL (lambda-url domain).
json::object Payload2Event(const ApiRequest& request, bool function_url) {
  const std::string domain = function_url ? "abcdefghij2xmplexample3kl4mnopq.lambda-url.us-east-1.on.aws"
                                          : "r3pmxmplak.execute-api.us-east-1.amazonaws.com";
  const std::string stage = function_url || request.stage.empty() ? "$default" : request.stage;
  const std::string raw_path = stage == "$default" ? request.path : "/" + stage + request.path;
  Pairs headers{{"accept", "*/*"},
                {"host", domain},
                {"user-agent", "lambda-binary-test"},
                {"x-amzn-trace-id", "Root=1-5e9f0c65-1de4d666d4dd26aced652b6c"},
                {"x-forwarded-for", "198.51.100.7"},
                {"x-forwarded-port", "443"},
                {"x-forwarded-proto", "https"}};
  if (!request.body.empty()) headers.emplace_back("content-length", std::to_string(request.body.size()));
  for (const auto& [name, value] : request.headers) headers.emplace_back(Lower(name), value);
  json::object header_map;
  for (const auto& [name, value] : headers) {
    json::value& joined = header_map[name];
    joined = joined.is_string() ? json::string(std::string(joined.get_string()) + "," + value) : json::string(value);
  }
  std::string raw_query;
  json::object query_map;
  for (const auto& [name, value] : request.query) {
    if (!raw_query.empty()) raw_query += "&";
    raw_query += PercentEncode(name) + "=" + PercentEncode(value);
    json::value& joined = query_map[name];
    joined = joined.is_string() ? json::string(std::string(joined.get_string()) + "," + value) : json::string(value);
  }
  json::object context{
      {"accountId", function_url ? "anonymous" : "123456789012"},
      {"apiId", function_url ? "abcdefghij2xmplexample3kl4mnopq" : "r3pmxmplak"},
      {"domainName", domain},
      {"domainPrefix", function_url ? "abcdefghij2xmplexample3kl4mnopq" : "r3pmxmplak"},
      {"http",
       {{"method", request.method},
        {"path", raw_path},
        {"protocol", "HTTP/1.1"},
        {"sourceIp", "198.51.100.7"},
        {"userAgent", "lambda-binary-test"}}},
      {"requestId", harness::Unique(function_url ? "url" : "http")},
      {"routeKey", function_url ? "$default" : "ANY /{proxy+}"},
      {"stage", stage},
      {"time", "21/Apr/2020:15:08:21 +0000"},
      {"timeEpoch", 1587481701067},
  };
  if (function_url) context["authentication"] = nullptr;
  json::object event{
      {"version", "2.0"},
      {"routeKey", function_url ? "$default" : "ANY /{proxy+}"},
      {"rawPath", raw_path},
      {"rawQueryString", raw_query},
      {"headers", std::move(header_map)},
      {"requestContext", std::move(context)},
      {"isBase64Encoded", request.base64 && !request.body.empty()},
  };
  if (!query_map.empty()) event["queryStringParameters"] = std::move(query_map);
  if (!function_url) event["pathParameters"] = {{"proxy", request.path.substr(1)}};
  if (!request.body.empty()) event["body"] = BodyField(request);
  return event;
}

std::string EventFor(Shape shape, const ApiRequest& request) {
  switch (shape) {
    case Shape::kRestApi: return json::serialize(RestApiEvent(request));
    case Shape::kHttpApi: return json::serialize(Payload2Event(request, false));
    case Shape::kFunctionUrl: return json::serialize(Payload2Event(request, true));
  }
  return {};
}

// A Lambda response payload, read back.
struct LambdaResponse {
  std::string request_id;  // the invocation's
  int status = 0;
  Pairs headers;  // lower-cased names, one entry per value
  std::string body;  // decoded when it came base64-encoded
  bool base64 = false;

  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (n == Lower(name)) return v;
    }
    return std::nullopt;
  }
  json::value Json() const { return ParseJson(body, "response body (status " + std::to_string(status) + ")"); }
};

// Checks the payload is the response shape of `shape` and reads it.
LambdaResponse ReadResponse(Shape shape, const std::string& payload) {
  LambdaResponse out;
  const json::value parsed = ParseJson(payload, "Lambda response payload");
  const json::object* object = parsed.if_object();
  if (object == nullptr) {
    ADD_FAILURE() << "response payload is not an object: " << payload.substr(0, 400);
    return out;
  }
  const json::value* status = object->if_contains("statusCode");
  const json::value* headers = object->if_contains("headers");
  const json::value* body = object->if_contains("body");
  const json::value* base64 = object->if_contains("isBase64Encoded");
  if (status == nullptr || !status->is_int64() || headers == nullptr || !headers->is_object() || body == nullptr ||
      !body->is_string() || base64 == nullptr || !base64->is_bool()) {
    ADD_FAILURE() << "response payload without statusCode/headers/body/isBase64Encoded: " << payload.substr(0, 400);
    return out;
  }
  out.status = static_cast<int>(status->get_int64());
  for (const auto& entry : headers->get_object()) {
    out.headers.emplace_back(Lower(entry.key()), std::string(entry.value().as_string()));
  }
  const json::value* multi = object->if_contains("multiValueHeaders");
  if (shape == Shape::kRestApi) {
    EXPECT_TRUE(multi != nullptr && multi->is_object()) << "REST API response without multiValueHeaders";
    if (multi != nullptr && multi->is_object()) {
      for (const auto& entry : multi->get_object()) {
        for (const json::value& value : entry.value().as_array()) {
          out.headers.emplace_back(Lower(entry.key()), std::string(value.as_string()));
        }
      }
    }
  } else {
    EXPECT_EQ(multi, nullptr) << "payload 2.0 response with multiValueHeaders";
  }
  out.base64 = base64->get_bool();
  if (out.base64) {
    std::optional<std::string> decoded = crypto::Base64Decode(body->get_string());
    EXPECT_TRUE(decoded.has_value()) << "isBase64Encoded but the body is not base64";
    out.body = decoded.value_or("");
  } else {
    out.body = std::string(body->get_string());
  }
  return out;
}

// Downloads an absolute http:// URL (a presigned URL) with a plain GET.
testing::HttpResponse FetchUrl(std::string_view url) {
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed || parsed->scheme() != "http") {
    ADD_FAILURE() << "not an http URL: " << url;
    return {};
  }
  testing::HttpRequest request;
  request.target = std::string(parsed->encoded_path());
  if (request.target.empty()) request.target = "/";
  if (parsed->has_query()) request.target += "?" + std::string(parsed->encoded_query());
  request.headers.emplace_back("Host", std::string(parsed->encoded_host_and_port()));
  const std::uint16_t port = parsed->has_port() ? parsed->port_number() : 80;
  auto response = testing::HttpClient(std::string(parsed->host()), port).Send(request);
  if (!response.ok()) {
    ADD_FAILURE() << "GET " << url << ": " << response.status().ToString();
    return {};
  }
  return std::move(*response);
}

std::string Sha256Hex(std::string_view data) { return crypto::HexEncode(crypto::Sha256Of(data)); }

std::string Tail(const testing::Process& process, std::size_t count) {
  const std::vector<std::string> lines = process.Lines();
  std::string out;
  for (std::size_t i = lines.size() > count ? lines.size() - count : 0; i < lines.size(); ++i) out += lines[i] + "\n";
  return out;
}

// One function instance for the whole suite: the peers, a bucket, table and
// secret of its own (the secret holds kToken; shared auth mode), the fake
// Runtime API and the binary polling it. Tests keep apart by their user ids.
class LambdaFunctionTest : public ::testing::Test {
 public:
  static void SetUpTestSuite() { setup_error_ = Launch(); }

  static void TearDownTestSuite() {
    if (fake_ != nullptr) fake_->Shutdown();
    // Without its Runtime API the loop ends by itself; the destructor kills it otherwise.
    if (process_ != nullptr) (void)process_->Wait(seconds(30));
    process_.reset();
    fake_.reset();
    std::error_code ignored;
    if (!data_dir_.empty()) std::filesystem::remove_all(data_dir_, ignored);
  }

 protected:
  void SetUp() override { ASSERT_TRUE(setup_error_.empty()) << setup_error_; }

  void TearDown() override {
    if (HasFailure() && process_ != nullptr) std::cerr << "function log tail:\n" << Tail(*process_, 40);
  }

  // Runs one invocation and reads its response (a test failure and status 0
  // when the function reports an error or does not answer).
  static LambdaResponse Invoke(Shape shape, const ApiRequest& request, std::string invocation_id = {}) {
    FakeEvent event;
    event.event = EventFor(shape, request);
    event.request_id = std::move(invocation_id);
    const std::string id = fake_->Enqueue(std::move(event));
    const std::optional<testing::InvocationOutcome> outcome = fake_->WaitForOutcome(id, harness::kInvokeWait);
    if (!outcome) {
      ADD_FAILURE() << ShapeName(shape) << " " << request.method << " " << request.path << ": no outcome";
      return {};
    }
    if (!outcome->ok) {
      ADD_FAILURE() << ShapeName(shape) << " " << request.method << " " << request.path << ": invocation failed with "
                    << outcome->error_type << ": " << outcome->payload;
      return {};
    }
    LambdaResponse response = ReadResponse(shape, outcome->payload);
    response.request_id = id;
    return response;
  }

  // Uploads `files` for `user` (with the user's key); the records.
  static std::vector<json::object> Upload(Shape shape, const std::string& user, const std::vector<UploadFile>& files,
                                          std::string visibility = "private") {
    const LambdaResponse response =
        Invoke(shape, UploadRequest(user, files, KeyFor(user), std::nullopt, std::move(visibility)));
    std::vector<json::object> records;
    if (response.status != 201) {
      ADD_FAILURE() << "upload for " << user << ": " << response.status << " " << response.body;
      return records;
    }
    const json::value body = response.Json();
    const json::value* images = body.is_object() ? body.get_object().if_contains("images") : nullptr;
    if (images == nullptr || !images->is_array() || images->get_array().size() != files.size()) {
      ADD_FAILURE() << "upload body without " << files.size() << " images: " << response.body;
      return records;
    }
    for (const json::value& image : images->get_array()) records.push_back(image.as_object());
    return records;
  }

  static std::vector<UploadFile> Pngs(int count) {
    std::vector<UploadFile> files;
    for (int i = 0; i < count; ++i) {
      files.push_back({"img" + std::to_string(i) + ".png", "image/png",
                       testing::MakePng(static_cast<std::uint32_t>(10 + i), 7, static_cast<std::size_t>(i))});
    }
    return files;
  }

  static const testing::LocalAws& peers() { return peers_; }
  static const std::string& bucket() { return name_; }

 private:
  // "" when the function is up and polling, else what went wrong.
  static std::string Launch() {
    auto peers = testing::StartLocalAws();
    if (!peers.ok()) return "local AWS peers: " + peers.status().ToString();
    peers_ = *peers;
    name_ = harness::Unique("lambda");
    data_dir_ = harness::MakeTempDir("imgsvc-lambda-binary");
    if (data_dir_.empty()) return "cannot create a temporary directory";
    const std::vector<std::string> aws_env = harness::AwsEnvironment(peers_);
    auto init = testing::RunCommand(IMGSVC_BINARY,
                                    {"init", "--api-token", std::string(kToken), "--bucket", name_, "--table", name_,
                                     "--token-secret", name_},
                                    aws_env, harness::kCommandWait);
    if (!init.ok()) return "imgsvc init: " + init.status().ToString();
    if (!init->exit.exited || init->exit.code != 0) return "imgsvc init failed: " + init->stdout_text;

    auto fake = FakeRuntimeApi::Start();
    if (!fake.ok()) return "fake Runtime API: " + fake.status().ToString();
    fake_ = std::move(*fake);
    std::vector<std::string> env = aws_env;
    env.insert(env.end(), {"AWS_LAMBDA_RUNTIME_API=" + fake_->address(), "IMGSVC_STORAGE=aws",
                           "IMGSVC_BUCKET=" + name_, "IMGSVC_TABLE=" + name_, "IMGSVC_TOKEN_SECRET=" + name_,
                           "IMGSVC_AUTH_MODE=shared", "IMGSVC_DATA_DIR=" + data_dir_});
    auto process = testing::Process::Start(IMGSVC_BINARY, {}, env);
    if (!process.ok()) return "cannot start " IMGSVC_BINARY ": " + process.status().ToString();
    process_ = std::move(*process);
    if (!fake_->WaitForNextCalls(1, harness::kStartWait)) {
      return "the function never asked for /next; log:\n" + Tail(*process_, 40);
    }
    return {};
  }

  static inline std::string setup_error_;
  static inline testing::LocalAws peers_;
  static inline std::string name_;  // of the bucket, the table and the secret
  static inline std::string data_dir_;
  static inline std::unique_ptr<FakeRuntimeApi> fake_;
  static inline std::unique_ptr<testing::Process> process_;

 protected:
  static FakeRuntimeApi& fake() { return *fake_; }
  static testing::Process& function_process() { return *process_; }
};

TEST_F(LambdaFunctionTest, HealthAndReadyAnswerInEveryShape) {
  for (const Shape shape : kAllShapes) {
    SCOPED_TRACE(ShapeName(shape));
    const LambdaResponse health = Invoke(shape, Get("/health"));
    EXPECT_EQ(health.status, 200);
    EXPECT_FALSE(health.base64);
    EXPECT_EQ(health.Json(), json::parse(R"({"status":"ok"})"));
    EXPECT_EQ(health.header("content-type").value_or("").rfind("application/json", 0), 0u);

    // Ready asks every AWS dependency: HeadBucket, DescribeTable, the secret.
    const LambdaResponse ready = Invoke(shape, Get("/ready"));
    EXPECT_EQ(ready.status, 200) << ready.body;
    EXPECT_EQ(ready.Json(), json::parse(R"({"status":"ready"})"));
  }
}

TEST_F(LambdaFunctionTest, StageOtherThanDefaultIsNotPartOfTheRoutedPath) {
  for (const Shape shape : {Shape::kRestApi, Shape::kHttpApi}) {
    SCOPED_TRACE(ShapeName(shape));
    ApiRequest request = Get("/health");
    request.stage = "prod";
    const LambdaResponse health = Invoke(shape, request);
    EXPECT_EQ(health.status, 200) << health.body;
  }
}

TEST_F(LambdaFunctionTest, Base64MultipartUploadCreatesRecordsWhosePresignedUrlsDownloadTheBytes) {
  const std::string user = harness::Unique("upload");
  const std::string png = testing::MakePng(64, 48, 300);
  const std::string jpeg = testing::MakeJpeg(20, 10, 100);
  const std::vector<UploadFile> files{{"dir/sunset.png", "application/octet-stream", png},
                                      {"b.jpg", "image/jpeg", jpeg}};
  const LambdaResponse created =
      Invoke(Shape::kRestApi, UploadRequest(user, files, KeyFor(user), " Sunset,beach,,sunset", "public"));
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_FALSE(created.base64);
  const json::value body = created.Json();
  ASSERT_TRUE(body.is_object() && body.get_object().contains("images")) << created.body;
  const json::array& images = body.get_object().at("images").as_array();
  ASSERT_EQ(images.size(), 2u);

  const json::value& first = images[0];
  EXPECT_EQ(Str(first, "user_id"), user);
  EXPECT_EQ(Str(first, "filename"), "sunset.png");
  EXPECT_EQ(Str(first, "content_type"), "image/png");  // from the bytes, not the claim
  EXPECT_EQ(Str(first, "format"), "png");
  EXPECT_EQ(first.at("size_bytes"), static_cast<std::int64_t>(png.size()));
  EXPECT_EQ(first.at("width"), 64);
  EXPECT_EQ(first.at("height"), 48);
  EXPECT_EQ(Str(first, "sha256"), Sha256Hex(png));
  EXPECT_TRUE(first.at("category").is_null());
  EXPECT_EQ(Strings(first, "tags"), (std::vector<std::string>{"sunset", "beach"}));
  EXPECT_EQ(Str(first, "visibility"), "public");
  EXPECT_EQ(Str(first, "created_at"), Str(first, "updated_at"));
  const json::value& second = images[1];
  EXPECT_EQ(Str(second, "format"), "jpeg");
  EXPECT_EQ(Str(second, "sha256"), Sha256Hex(jpeg));
  EXPECT_LT(Str(first, "created_at"), Str(second, "created_at"));

  // The owner reads it through an HTTP API; anyone reads the public one through a Function URL.
  const struct {
    Shape shape;
    std::optional<std::string> key;
    const json::value& record;
    const std::string& bytes;
    const char* content_type;
  } reads[] = {{Shape::kHttpApi, KeyFor(user), first, png, "image/png"},
               {Shape::kFunctionUrl, std::nullopt, second, jpeg, "image/jpeg"}};
  for (const auto& read : reads) {
    SCOPED_TRACE(ShapeName(read.shape));
    const std::string id = Str(read.record, "image_id");
    const LambdaResponse got = Invoke(read.shape, Get("/api/v1/images/" + id, {}, read.key));
    ASSERT_EQ(got.status, 200) << got.body;
    json::value record = got.Json();
    const std::string url = Str(record, "presigned_url");
    EXPECT_FALSE(Str(record, "presigned_url_expires_at").empty());
    record.as_object().erase("presigned_url");
    record.as_object().erase("presigned_url_expires_at");
    EXPECT_EQ(record, read.record);
    ASSERT_EQ(url.rfind(peers().s3 + "/", 0), 0u) << url;
    const testing::HttpResponse download = FetchUrl(url);
    EXPECT_EQ(download.status, 200) << download.body.substr(0, 300);
    EXPECT_TRUE(download.body == read.bytes) << "downloaded " << download.body.size() << " bytes";
    EXPECT_EQ(download.header("content-type").value_or(""), read.content_type);
  }
}

TEST_F(LambdaFunctionTest, ListingFollowsTheCursorToTheEndAcrossShapes) {
  const std::string user = harness::Unique("lister");
  const std::vector<json::object> records = Upload(Shape::kFunctionUrl, user, Pngs(5));
  ASSERT_EQ(records.size(), 5u);
  std::vector<std::string> newest_first;
  for (auto it = records.rbegin(); it != records.rend(); ++it) newest_first.push_back(Str(*it, "image_id"));

  // The cursor is opaque text; each shape carries it in its own query encoding.
  std::vector<std::string> listed;
  std::vector<std::size_t> page_sizes;
  std::optional<std::string> cursor;
  for (int page = 0; page < 10; ++page) {
    const Shape shape = kAllShapes[page % 3];
    Pairs query{{"user_id", user}, {"limit", "2"}};
    if (cursor) query.emplace_back("last_evaluated_key", *cursor);
    const LambdaResponse response = Invoke(shape, Get("/api/v1/images", query, KeyFor(user)));
    ASSERT_EQ(response.status, 200) << ShapeName(shape) << ": " << response.body;
    const json::value body = response.Json();
    const json::array& items = body.at("items").as_array();
    EXPECT_EQ(body.at("count"), static_cast<std::int64_t>(items.size()));
    page_sizes.push_back(items.size());
    for (const json::value& item : items) {
      listed.push_back(Str(item, "image_id"));
      EXPECT_FALSE(Str(item, "presigned_url").empty());
    }
    const json::value& next = body.at("last_evaluated_key");
    if (next.is_null()) break;
    cursor = std::string(next.as_string());
  }
  EXPECT_EQ(listed, newest_first);
  ASSERT_GE(page_sizes.size(), 3u);
  EXPECT_EQ(page_sizes[0], 2u);
  EXPECT_EQ(page_sizes[1], 2u);

  // Private images: without the key the same listing is empty, not an error.
  const LambdaResponse anonymous = Invoke(Shape::kHttpApi, Get("/api/v1/images", {{"user_id", user}}));
  ASSERT_EQ(anonymous.status, 200) << anonymous.body;
  EXPECT_EQ(anonymous.Json().at("count"), 0);
}

TEST_F(LambdaFunctionTest, PatchUpdatesTheRecord) {
  const std::string user = harness::Unique("patcher");
  const std::vector<json::object> records = Upload(Shape::kRestApi, user, Pngs(1));
  ASSERT_EQ(records.size(), 1u);
  const std::string id = Str(records[0], "image_id");
  const std::string path = "/api/v1/images/" + id;

  const LambdaResponse patched =
      Invoke(Shape::kHttpApi, JsonRequest("PATCH", path, KeyFor(user),
                                          {{"category", "animals"}, {"tags", "Cat, cute"}, {"visibility", "public"}}));
  ASSERT_EQ(patched.status, 200) << patched.body;
  const json::value record = patched.Json();
  EXPECT_EQ(Str(record, "image_id"), id);
  EXPECT_EQ(Str(record, "category"), "animals");
  EXPECT_EQ(Strings(record, "tags"), (std::vector<std::string>{"cat", "cute"}));
  EXPECT_EQ(Str(record, "visibility"), "public");
  EXPECT_EQ(Str(record, "created_at"), Str(records[0], "created_at"));
  EXPECT_GT(Str(record, "updated_at"), Str(record, "created_at"));

  // Now public: readable without a key.
  const LambdaResponse read = Invoke(Shape::kFunctionUrl, Get(path));
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(Str(read.Json(), "category"), "animals");

  const LambdaResponse invalid =
      Invoke(Shape::kRestApi, JsonRequest("PATCH", path, KeyFor(user), {{"visibility", "secret"}, {"colour", "red"}}));
  EXPECT_EQ(invalid.status, 422) << invalid.body;
  const std::vector<std::string> locs = ErrorLocs(invalid.Json());
  EXPECT_NE(std::find(locs.begin(), locs.end(), "body/visibility"), locs.end()) << invalid.body;
  EXPECT_NE(std::find(locs.begin(), locs.end(), "body/colour"), locs.end()) << invalid.body;

  const std::string stranger = harness::Unique("stranger");
  const LambdaResponse foreign =
      Invoke(Shape::kHttpApi, JsonRequest("PATCH", path, KeyFor(stranger), {{"category", "mine"}}));
  EXPECT_EQ(foreign.status, 404) << foreign.body;
}

TEST_F(LambdaFunctionTest, ContentRedirectsToThePresignedUrl) {
  const std::string user = harness::Unique("content");
  const std::vector<UploadFile> files = Pngs(1);
  const std::vector<json::object> records = Upload(Shape::kHttpApi, user, files, "public");
  ASSERT_EQ(records.size(), 1u);

  const LambdaResponse redirect =
      Invoke(Shape::kRestApi, Get("/api/v1/images/" + Str(records[0], "image_id") + "/content"));
  ASSERT_EQ(redirect.status, 302) << redirect.body;
  EXPECT_TRUE(redirect.body.empty());
  EXPECT_EQ(redirect.header("cache-control").value_or(""), "private, no-store");
  const std::string location = redirect.header("location").value_or("");
  ASSERT_EQ(location.rfind(peers().s3 + "/", 0), 0u) << location;
  const testing::HttpResponse download = FetchUrl(location);
  EXPECT_EQ(download.status, 200);
  EXPECT_TRUE(download.body == files[0].data);
}

TEST_F(LambdaFunctionTest, BinaryResponsesAreBase64EncodedAndTextIsNot) {
  for (const Shape shape : kAllShapes) {
    SCOPED_TRACE(ShapeName(shape));
    const LambdaResponse icon = Invoke(shape, Get("/docs/favicon-32x32.png"));
    ASSERT_EQ(icon.status, 200) << icon.body;
    EXPECT_TRUE(icon.base64);
    EXPECT_EQ(icon.header("content-type").value_or(""), "image/png");
    EXPECT_GT(icon.body.size(), kPngSignature.size());
    EXPECT_EQ(icon.body.substr(0, kPngSignature.size()), kPngSignature);

    ApiRequest gzip_request = Get("/docs/favicon-32x32.png");
    gzip_request.headers.emplace_back("Accept-Encoding", "gzip, deflate, br");
    const LambdaResponse gzipped = Invoke(shape, gzip_request);
    ASSERT_EQ(gzipped.status, 200);
    EXPECT_TRUE(gzipped.base64);
    EXPECT_EQ(gzipped.header("content-encoding").value_or(""), "gzip");
    EXPECT_EQ(gzipped.body.substr(0, 2), "\x1f\x8b");

    const LambdaResponse openapi = Invoke(shape, Get("/openapi.json"));
    ASSERT_EQ(openapi.status, 200);
    EXPECT_FALSE(openapi.base64);
    EXPECT_FALSE(Str(openapi.Json(), "openapi").empty());
  }
}

TEST_F(LambdaFunctionTest, DeletesOneImageAndInBulk) {
  const std::string user = harness::Unique("deleter");
  const std::vector<json::object> records = Upload(Shape::kHttpApi, user, Pngs(3));
  ASSERT_EQ(records.size(), 3u);
  const std::string first = Str(records[0], "image_id");
  const LambdaResponse before = Invoke(Shape::kRestApi, Get("/api/v1/images/" + first, {}, KeyFor(user)));
  ASSERT_EQ(before.status, 200) << before.body;
  const std::string url = Str(before.Json(), "presigned_url");
  ASSERT_EQ(FetchUrl(url).status, 200);

  const LambdaResponse deleted = Invoke(Shape::kFunctionUrl, DeleteRequest("/api/v1/images/" + first, KeyFor(user)));
  EXPECT_EQ(deleted.status, 204) << deleted.body;
  EXPECT_TRUE(deleted.body.empty());
  EXPECT_EQ(Invoke(Shape::kHttpApi, Get("/api/v1/images/" + first, {}, KeyFor(user))).status, 404);
  EXPECT_NE(FetchUrl(url).status, 200) << "the presigned URL still downloads after the delete";

  const std::string second = Str(records[1], "image_id");
  const std::string third = Str(records[2], "image_id");
  const LambdaResponse bulk = Invoke(
      Shape::kRestApi,
      JsonRequest("DELETE", "/api/v1/images", KeyFor(user),
                  {{"user_id", user}, {"image_ids", {second, third, std::string(kUnknownId), first}}}));
  ASSERT_EQ(bulk.status, 200) << bulk.body;
  const json::value result = bulk.Json();
  std::vector<std::string> gone = Strings(result, "deleted");
  std::sort(gone.begin(), gone.end());
  std::vector<std::string> expected_gone{second, third};
  std::sort(expected_gone.begin(), expected_gone.end());
  EXPECT_EQ(gone, expected_gone);
  std::vector<std::string> not_found = Strings(result, "not_found");
  std::sort(not_found.begin(), not_found.end());
  std::vector<std::string> expected_not_found{std::string(kUnknownId), first};
  std::sort(expected_not_found.begin(), expected_not_found.end());
  EXPECT_EQ(not_found, expected_not_found);
  EXPECT_TRUE(Strings(result, "failed").empty());

  const LambdaResponse listing = Invoke(Shape::kFunctionUrl, Get("/api/v1/images", {{"user_id", user}}, KeyFor(user)));
  ASSERT_EQ(listing.status, 200);
  EXPECT_EQ(listing.Json().at("count"), 0);
  auto keys = testing::ListObjectKeys(bucket(), "images/" + user + "/");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_TRUE(keys->empty()) << keys->size() << " objects left in S3";
}

TEST_F(LambdaFunctionTest, ErrorsAreAnsweredInTheEventsShape) {
  const std::string user = harness::Unique("errors");
  const std::vector<UploadFile> one = Pngs(1);

  const LambdaResponse no_key = Invoke(Shape::kHttpApi, UploadRequest(user, one, std::nullopt));
  EXPECT_EQ(no_key.status, 401) << no_key.body;
  EXPECT_EQ(no_key.header("www-authenticate").value_or(""), "ApiKey");
  EXPECT_FALSE(Str(no_key.Json(), "detail").empty());

  const LambdaResponse wrong_token =
      Invoke(Shape::kRestApi, Get("/api/v1/images", {{"user_id", user}}, user + ":not-the-token"));
  EXPECT_EQ(wrong_token.status, 401) << wrong_token.body;

  const LambdaResponse other_user =
      Invoke(Shape::kFunctionUrl, UploadRequest(user, one, KeyFor(harness::Unique("mallory"))));
  EXPECT_EQ(other_user.status, 403) << other_user.body;

  const LambdaResponse unknown =
      Invoke(Shape::kHttpApi, Get("/api/v1/images/" + std::string(kUnknownId), {}, KeyFor(user)));
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(Str(unknown.Json(), "detail"), "Image not found");

  const LambdaResponse not_uuid = Invoke(Shape::kRestApi, Get("/api/v1/images/not-a-uuid"));
  EXPECT_EQ(not_uuid.status, 422);
  EXPECT_EQ(ErrorLocs(not_uuid.Json()), std::vector<std::string>{"path/image_id"});

  const LambdaResponse bad_query =
      Invoke(Shape::kFunctionUrl, Get("/api/v1/images", {{"user_id", "no spaces allowed"}, {"limit", "0"}}));
  EXPECT_EQ(bad_query.status, 422) << bad_query.body;
  std::vector<std::string> locs = ErrorLocs(bad_query.Json());
  std::sort(locs.begin(), locs.end());
  EXPECT_EQ(locs, (std::vector<std::string>{"query/limit", "query/user_id"}));

  const LambdaResponse no_files = Invoke(Shape::kHttpApi, UploadRequest(user, {}, KeyFor(user)));
  EXPECT_EQ(no_files.status, 422) << no_files.body;
  EXPECT_EQ(ErrorLocs(no_files.Json()), std::vector<std::string>{"body/files"});

  const LambdaResponse not_image =
      Invoke(Shape::kRestApi, UploadRequest(user, {{"notes.txt", "image/png", "just some text"}}, KeyFor(user)));
  EXPECT_EQ(not_image.status, 415) << not_image.body;

  const LambdaResponse no_route = Invoke(Shape::kHttpApi, Get("/nowhere"));
  EXPECT_EQ(no_route.status, 404);

  // Nothing of the refused uploads was stored.
  auto keys = testing::ListObjectKeys(bucket(), "images/" + user + "/");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_TRUE(keys->empty());
}

// On Lambda the per-file limit defaults to 4 MiB (server mode: 20 MiB), so
// our 413 comes before API Gateway's own limits.
TEST_F(LambdaFunctionTest, UploadLimitDefaultsToFourMebibytes) {
  const std::string user = harness::Unique("big");
  const std::string too_big = testing::MakeImageOfSize(core::ImageFormat::kPng, 100, 100, 5u << 20);
  const LambdaResponse refused =
      Invoke(Shape::kHttpApi, UploadRequest(user, {{"big.png", "image/png", too_big}}, KeyFor(user)));
  EXPECT_EQ(refused.status, 413) << refused.body.substr(0, 300);
  EXPECT_FALSE(Str(refused.Json(), "detail").empty());
  auto keys = testing::ListObjectKeys(bucket(), "images/" + user + "/");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_TRUE(keys->empty());

  const std::string fits = testing::MakeImageOfSize(core::ImageFormat::kPng, 100, 100, 3u << 20);
  const std::vector<json::object> records = Upload(Shape::kRestApi, user, {{"fits.png", "image/png", fits}});
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].at("size_bytes"), static_cast<std::int64_t>(fits.size()));
}

TEST_F(LambdaFunctionTest, MalformedEventsAreReportedAsInvalidEventAndTheLoopGoesOn) {
  const std::string events[] = {"this is not JSON", "[1, 2, 3]", Fixture("malformed_s3_event.json"),
                                Fixture("malformed_bad_base64.json"), Fixture("malformed_truncated.json")};
  for (const std::string& body : events) {
    SCOPED_TRACE(body.substr(0, 60));
    FakeEvent event;
    event.event = body;
    const std::string id = fake().Enqueue(std::move(event));
    const std::optional<testing::InvocationOutcome> outcome = fake().WaitForOutcome(id, harness::kInvokeWait);
    ASSERT_TRUE(outcome.has_value()) << "no outcome";
    EXPECT_FALSE(outcome->ok);
    EXPECT_EQ(outcome->error_type, "InvalidEvent");
    const json::value document = ParseJson(outcome->payload, "error document");
    EXPECT_EQ(Str(document, "errorType"), "InvalidEvent");
    EXPECT_FALSE(Str(document, "errorMessage").empty());

    std::vector<RuntimePost> errors;
    for (RuntimePost& post : fake().Posts()) {
      if (post.request_id == id) errors.push_back(std::move(post));
    }
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0].kind, RuntimePost::Kind::kError);
    EXPECT_EQ(errors[0].header("Lambda-Runtime-Function-Error-Type").value_or(""), "InvalidEvent");
    EXPECT_EQ(errors[0].answered, 202);
  }
  const LambdaResponse after = Invoke(Shape::kHttpApi, Get("/health"));
  EXPECT_EQ(after.status, 200);
}

TEST_F(LambdaFunctionTest, RequestIdIsTheCallersOrElseTheInvocations) {
  for (const Shape shape : kAllShapes) {
    SCOPED_TRACE(ShapeName(shape));
    const std::string invocation_id = harness::Unique("invocation");
    const LambdaResponse adopted = Invoke(shape, Get("/health"), invocation_id);
    EXPECT_EQ(adopted.request_id, invocation_id);
    EXPECT_EQ(adopted.header("x-request-id").value_or(""), invocation_id);

    const std::string caller_id = harness::Unique("caller.req:1");
    ApiRequest request = Get("/api/v1/images/" + std::string(kUnknownId));
    request.headers.emplace_back("X-Request-Id", caller_id);
    const std::string invocation_of_kept = harness::Unique("invocation");
    const LambdaResponse kept = Invoke(shape, request, invocation_of_kept);
    EXPECT_EQ(kept.status, 404);
    EXPECT_EQ(kept.header("x-request-id").value_or(""), caller_id);
    // The request's log line carries both ids.
    EXPECT_TRUE(function_process().WaitForLine(
        [&](const std::string& line) {
          return line.find("\"request_id\":\"" + caller_id + "\"") != std::string::npos &&
                 line.find("\"aws_request_id\":\"" + invocation_of_kept + "\"") != std::string::npos;
        },
        seconds(10)))
        << "no request log line with both ids";

    // An id the API would not adopt gives way to the invocation's.
    const std::string replacing_id = harness::Unique("invocation");
    ApiRequest insane = Get("/health");
    insane.headers.emplace_back("X-Request-Id", "not sane: spaces & symbols!");
    const LambdaResponse replaced = Invoke(shape, insane, replacing_id);
    EXPECT_EQ(replaced.header("x-request-id").value_or(""), replacing_id);
  }
}

// An invocation whose deadline is too close for another AWS call (within
// the half second the runtime keeps back to answer) gets a 504 in its event's
// shape, posted as its response, instead of the function being killed; the
// next invocation is served as usual.
TEST_F(LambdaFunctionTest, InvocationOutOfTimeForAwsAnswers504InItsShape) {
  const ApiRequest read_unknown = Get("/api/v1/images/" + std::string(kUnknownId));
  // Opens the service stack when this test runs alone.
  ASSERT_EQ(Invoke(Shape::kHttpApi, read_unknown).status, 404);

  for (const Shape shape : kAllShapes) {
    SCOPED_TRACE(ShapeName(shape));
    FakeEvent event;
    event.event = EventFor(shape, read_unknown);
    event.deadline = std::chrono::system_clock::now() + milliseconds(200);
    const std::string id = fake().Enqueue(std::move(event));
    const std::optional<testing::InvocationOutcome> outcome = fake().WaitForOutcome(id, harness::kInvokeWait);
    ASSERT_TRUE(outcome.has_value()) << "no outcome";
    ASSERT_TRUE(outcome->ok) << outcome->error_type << ": " << outcome->payload;
    const LambdaResponse late = ReadResponse(shape, outcome->payload);
    EXPECT_EQ(late.status, 504) << late.body;
    EXPECT_EQ(Str(late.Json(), "detail"), "DynamoDB GetItem: timed out");
    for (const RuntimePost& post : fake().Posts()) {
      if (post.request_id == id) {
        EXPECT_EQ(post.kind, RuntimePost::Kind::kResponse);
      }
    }

    const LambdaResponse next = Invoke(shape, read_unknown);
    EXPECT_EQ(next.status, 404) << next.body;
  }
}

// A function of its own (the suite's has read the secret already), on the
// suite's peers, with the invocation helpers of the secret tests below.
class OwnFunction {
 public:
  OwnFunction(const testing::LocalAws& peers, std::string name) : peers_(peers), name_(std::move(name)) {}
  ~OwnFunction() {
    if (runtime_ != nullptr) runtime_->Shutdown();
    if (process_ != nullptr) {
      EXPECT_TRUE(process_->Wait(seconds(30)).has_value());
    }
    std::error_code ignored;
    if (!data_dir_.empty()) std::filesystem::remove_all(data_dir_, ignored);
  }

  // Starts it and waits for its first /next.
  ::testing::AssertionResult Start() {
    auto fake_runtime = FakeRuntimeApi::Start();
    if (!fake_runtime.ok()) return ::testing::AssertionFailure() << fake_runtime.status().ToString();
    runtime_ = std::move(*fake_runtime);
    data_dir_ = harness::MakeTempDir("imgsvc-lambda-binary");
    if (data_dir_.empty()) return ::testing::AssertionFailure() << "no temp dir";
    std::vector<std::string> env = harness::AwsEnvironment(peers_);
    env.insert(env.end(), {"AWS_LAMBDA_RUNTIME_API=" + runtime_->address(), "IMGSVC_STORAGE=aws",
                           "IMGSVC_BUCKET=" + name_, "IMGSVC_TABLE=" + name_, "IMGSVC_TOKEN_SECRET=" + name_,
                           "IMGSVC_AUTH_MODE=shared", "IMGSVC_DATA_DIR=" + data_dir_});
    auto process = testing::Process::Start(IMGSVC_BINARY, {}, env);
    if (!process.ok()) return ::testing::AssertionFailure() << process.status().ToString();
    process_ = std::move(*process);
    if (!runtime_->WaitForNextCalls(1, harness::kStartWait)) {
      return ::testing::AssertionFailure() << "no /next; log:\n" << Tail(*process_, 20);
    }
    return ::testing::AssertionSuccess();
  }

  LambdaResponse Invoke(const ApiRequest& request) {
    FakeEvent event;
    event.event = EventFor(Shape::kHttpApi, request);
    const std::string id = runtime_->Enqueue(std::move(event));
    const std::optional<testing::InvocationOutcome> outcome = runtime_->WaitForOutcome(id, harness::kInvokeWait);
    EXPECT_TRUE(outcome.has_value()) << "no outcome; log:\n" << Tail(*process_, 20);
    if (!outcome) return LambdaResponse{};
    EXPECT_TRUE(outcome->ok) << outcome->error_type << ": " << outcome->payload;
    return ReadResponse(Shape::kHttpApi, outcome->payload);
  }

  static int SecretReads() {
    auto count = testing::RequestCount("secretsmanager", "GetSecretValue");
    EXPECT_TRUE(count.ok()) << count.status().ToString();
    return count.ok() ? *count : -1;
  }

 private:
  const testing::LocalAws& peers_;
  const std::string name_;
  std::unique_ptr<FakeRuntimeApi> runtime_;
  std::unique_ptr<testing::Process> process_;
  std::string data_dir_;
};

// The secret is fetched at init, on a thread of its own while the loop asks
// for the first event: before any invocation arrives, Secrets Manager has
// been asked once, and the first request that needs the token makes no call
// of its own (the token is cached across warm invocations).
TEST_F(LambdaFunctionTest, SecretIsFetchedAtInitAndTheFirstRequestUsesIt) {
  const int reads_before = OwnFunction::SecretReads();
  OwnFunction function(peers(), bucket());
  ASSERT_TRUE(function.Start());
  const auto waited_until = std::chrono::steady_clock::now() + seconds(10);
  while (OwnFunction::SecretReads() == reads_before && std::chrono::steady_clock::now() < waited_until) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(OwnFunction::SecretReads(), reads_before + 1) << "no fetch at init";

  const ApiRequest list = Get("/api/v1/images", {{"limit", "1"}}, KeyFor("alice"));
  EXPECT_EQ(function.Invoke(list).status, 200);
  EXPECT_EQ(function.Invoke(list).status, 200);
  EXPECT_EQ(OwnFunction::SecretReads(), reads_before + 1) << "the first requests fetched the secret again";
}

// When Secrets Manager is down at init, the fetch there fails without
// holding anything up: /health answers, authenticated requests answer 503
// in the event's shape, and the first one after it is back succeeds, with no
// cold start.
TEST_F(LambdaFunctionTest, SecretsManagerDownAtInitIsA503UntilItIsBack) {
  ASSERT_TRUE(testing::StopService("secretsmanager").ok());
  OwnFunction function(peers(), bucket());
  const ::testing::AssertionResult started = function.Start();
  if (!started) {
    EXPECT_TRUE(testing::StartService("secretsmanager").ok());
  }
  ASSERT_TRUE(started);

  EXPECT_EQ(function.Invoke(Get("/health")).status, 200);
  const ApiRequest list = Get("/api/v1/images", {{"limit", "1"}}, KeyFor("alice"));
  const LambdaResponse refused = function.Invoke(list);
  ASSERT_TRUE(testing::StartService("secretsmanager").ok());
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(Str(refused.Json(), "detail").find("Secrets Manager GetSecretValue"), std::string::npos)
      << refused.body;

  const LambdaResponse listed = function.Invoke(list);
  EXPECT_EQ(listed.status, 200) << listed.body;
}

// Expects the bootstrap started with `env` to report an init error whose
// message holds `cause`, through /runtime/init/error, then exit without
// asking for an event.
void ExpectInitError(std::vector<std::string> env, std::string_view cause) {
  auto fake = FakeRuntimeApi::Start();
  ASSERT_TRUE(fake.ok()) << fake.status().ToString();
  const std::string data_dir = harness::MakeTempDir("imgsvc-lambda-binary");
  ASSERT_FALSE(data_dir.empty());
  env.insert(env.end(), {"AWS_LAMBDA_RUNTIME_API=" + (*fake)->address(), "IMGSVC_DATA_DIR=" + data_dir});
  auto process = testing::Process::Start(IMGSVC_BINARY, {}, env);
  ASSERT_TRUE(process.ok()) << process.status().ToString();

  const std::optional<RuntimePost> init_error = (*fake)->WaitForInitError(harness::kStartWait);
  ASSERT_TRUE(init_error.has_value()) << "no init error; log:\n" << Tail(**process, 20);
  EXPECT_EQ(init_error->answered, 202);
  EXPECT_EQ(init_error->header("Lambda-Runtime-Function-Error-Type").value_or(""), "Runtime.InvalidConfiguration");
  const json::value document = ParseJson(init_error->body, "init error document");
  EXPECT_EQ(Str(document, "errorType"), "Runtime.InvalidConfiguration");
  EXPECT_NE(Str(document, "errorMessage").find(cause), std::string::npos) << init_error->body;

  const std::optional<testing::ExitStatus> exit = (*process)->Wait(harness::kStartWait);
  ASSERT_TRUE(exit.has_value()) << "still running after the init error";
  EXPECT_TRUE(exit->exited);
  EXPECT_NE(exit->code, 0);
  EXPECT_FALSE((*fake)->WaitForNextCalls(1, milliseconds(0)));
  std::error_code ignored;
  std::filesystem::remove_all(data_dir, ignored);
}

// Lambda's /tmp is no place for the embedded store.
TEST(LambdaInitTest, StorageOtherThanAwsIsAnInitErrorAndTheProcessExits) {
  ExpectInitError({"IMGSVC_STORAGE=embedded"}, "IMGSVC_STORAGE");
}

// A setting that does not parse is reported to Lambda like any other bad
// configuration, not by the process exiting on its own.
TEST(LambdaInitTest, AMalformedSettingIsAnInitErrorAndTheProcessExits) {
  ExpectInitError({"IMGSVC_STORAGE=aws", "IMGSVC_LOG_LEVEL=loud"}, "IMGSVC_LOG_LEVEL");
  ExpectInitError({"IMGSVC_STORAGE=aws", "IMGSVC_MAX_FILES=1e3"}, "IMGSVC_MAX_FILES");
}

// Every API request but /health reads DynamoDB, so the connection to it is
// opened at init, on a thread for an https endpoint (AWS's), at once for a
// plain http one (an emulator): here no event ever comes, and DynamoDB still
// gets one (an https handshake then fails; only its start counts).
void ExpectDynamoDbConnectionBeforeAnyEvent(const std::string& scheme) {
  SCOPED_TRACE(scheme);
  const testing::LoopbackSocket dynamodb(/*listening=*/true);
  const testing::LoopbackSocket nothing(/*listening=*/false);
  ASSERT_TRUE(dynamodb.ok() && nothing.ok());
  auto fake = FakeRuntimeApi::Start();
  ASSERT_TRUE(fake.ok()) << fake.status().ToString();
  const std::string data_dir = harness::MakeTempDir("imgsvc-lambda-binary");
  ASSERT_FALSE(data_dir.empty());
  auto process = testing::Process::Start(
      IMGSVC_BINARY, {},
      {"AWS_LAMBDA_RUNTIME_API=" + (*fake)->address(), "IMGSVC_DATA_DIR=" + data_dir, "IMGSVC_STORAGE=aws",
       "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test-secret", "AWS_REGION=us-east-1",
       "AWS_EC2_METADATA_DISABLED=true", "AWS_ENDPOINT_URL_DYNAMODB=" + dynamodb.url(scheme),
       "AWS_ENDPOINT_URL_S3=" + nothing.url(), "AWS_ENDPOINT_URL_SECRETS_MANAGER=" + nothing.url()});
  ASSERT_TRUE(process.ok()) << process.status().ToString();
  EXPECT_TRUE(dynamodb.Accepts(harness::kStartWait)) << "no connection; log:\n" << Tail(**process, 20);
  EXPECT_TRUE((*fake)->WaitForNextCalls(1, harness::kStartWait));
  EXPECT_TRUE((*process)->Signal(SIGKILL).ok());
  std::error_code ignored;
  std::filesystem::remove_all(data_dir, ignored);
}

TEST(LambdaInitTest, TheDynamoDbConnectionIsOpenedBeforeAnyEvent) {
  ExpectDynamoDbConnectionBeforeAnyEvent("https");
  ExpectDynamoDbConnectionBeforeAnyEvent("http");
}

// The service is opened before the first /next, so an unusable setting is
// reported at init rather than by every invocation.
TEST(LambdaInitTest, UnusableAwsSettingIsAnInitErrorAndTheProcessExits) {
  ExpectInitError({"IMGSVC_STORAGE=aws", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test-secret",
                   "AWS_REGION=us-east-1", "AWS_ENDPOINT_URL_DYNAMODB=ftp://dynamodb.invalid"},
                  "AWS_ENDPOINT_URL_DYNAMODB");
}

// `imgsvc invoke --event FILE`: one event through the same code, on the
// embedded backend; stdout is the response JSON alone (logs go elsewhere), so
// it can be piped into other tools.
class LambdaInvokeCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = harness::MakeTempDir("imgsvc-lambda-binary");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  testing::CommandResult InvokeFile(const std::string& event_file) {
    auto result = testing::RunCommand(
        IMGSVC_BINARY, {"invoke", "--event", event_file, "--storage", "embedded", "--data-dir", dir_ + "/data"}, {},
        harness::kCommandWait);
    if (!result.ok()) {
      ADD_FAILURE() << "imgsvc invoke: " << result.status().ToString();
      return {};
    }
    return std::move(*result);
  }

  std::string WriteEvent(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  std::string dir_;
};

TEST_F(LambdaInvokeCommandTest, HttpApiHealthEventPrintsTheResponse) {
  json::value event = ParseJson(Fixture("http_api_get.json"), "fixture");
  ASSERT_TRUE(event.is_object());
  event.as_object()["rawPath"] = "/health";
  event.as_object()["rawQueryString"] = "";
  event.at("requestContext").at("http").as_object()["path"] = "/health";
  const testing::CommandResult result = InvokeFile(WriteEvent("health.json", json::serialize(event)));
  EXPECT_TRUE(result.exit.exited);
  EXPECT_EQ(result.exit.code, 0) << result.stdout_text;
  const json::value response = ParseJson(result.stdout_text, "imgsvc invoke's stdout");
  ASSERT_TRUE(response.is_object()) << result.stdout_text;
  EXPECT_EQ(response.at("statusCode"), 200);
  EXPECT_EQ(response.at("isBase64Encoded"), false);
  EXPECT_EQ(ParseJson(response.at("body").as_string(), "body"), json::parse(R"({"status":"ok"})"));
  EXPECT_FALSE(response.as_object().contains("multiValueHeaders"));
  EXPECT_FALSE(Str(response.at("headers"), "x-request-id").empty());
}

TEST_F(LambdaInvokeCommandTest, RestApiEventGetsTheRestApiResponseShape) {
  // The fixture's key has no "user:" part: a 401, answered (exit 0).
  const testing::CommandResult result = InvokeFile(std::string(IMGSVC_LAMBDA_EVENTS) + "/rest_api_get.json");
  EXPECT_EQ(result.exit.code, 0) << result.stdout_text;
  const json::value response = ParseJson(result.stdout_text, "imgsvc invoke's stdout");
  ASSERT_TRUE(response.is_object()) << result.stdout_text;
  EXPECT_EQ(response.at("statusCode"), 401);
  EXPECT_TRUE(response.at("multiValueHeaders").is_object());
  EXPECT_EQ(Str(response.at("headers"), "www-authenticate"), "ApiKey");
}

TEST_F(LambdaInvokeCommandTest, MalformedEventFileExitsOneWithInvalidEvent) {
  for (const char* fixture : {"malformed_truncated.json", "malformed_s3_event.json"}) {
    SCOPED_TRACE(fixture);
    const testing::CommandResult result = InvokeFile(std::string(IMGSVC_LAMBDA_EVENTS) + "/" + fixture);
    EXPECT_TRUE(result.exit.exited);
    EXPECT_EQ(result.exit.code, 1);
    const json::value error = ParseJson(result.stdout_text, "imgsvc invoke's stdout");
    EXPECT_EQ(Str(error, "errorType"), "InvalidEvent") << result.stdout_text;
    EXPECT_FALSE(Str(error, "errorMessage").empty());
  }
}

}  // namespace lambda_binary_test
}  // namespace imgsvc::lambda
