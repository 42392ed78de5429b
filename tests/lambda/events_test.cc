#include "lambda/events.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "crypto/crypto.h"
#include "http/query.h"

namespace imgsvc::lambda {
namespace events_test {

namespace json = boost::json;

// A valid 1x1 RGBA PNG, the file part of rest_api_multipart_base64.json.
const std::string kPixelPng = *crypto::HexDecode(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f00050001ff56c72f0d0000000049454e44ae426082");
constexpr std::string_view kBoundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";

std::string ExpectedMultipartBody() {
  const std::string dash = "--" + std::string(kBoundary);
  return dash + "\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nalice\r\n" + dash +
         "\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\nsunset,beach\r\n" + dash +
         "\r\nContent-Disposition: form-data; name=\"files\"; filename=\"pixel.png\"\r\n"
         "Content-Type: image/png\r\n\r\n" +
         kPixelPng + "\r\n" + dash + "--\r\n";
}

std::string ReadFixture(std::string_view name) {
  std::ifstream in(std::filesystem::path(IMGSVC_LAMBDA_EVENTS) / name, std::ios::binary);
  EXPECT_TRUE(in) << name;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

json::object FixtureObject(std::string_view name) { return json::parse(ReadFixture(name)).as_object(); }

StatusOr<DecodedEvent> Decode(const json::object& event) { return DecodeEvent(json::serialize(event)); }

std::string BodyOf(DecodedEvent& event) {
  auto body = http::ReadAll(*event.request.body, 1 << 20);
  EXPECT_TRUE(body.ok()) << body.status().ToString();
  return body.ok() ? *body : std::string();
}

std::vector<std::string> Values(const http::Headers& headers, std::string_view name) {
  std::vector<std::string> values;
  for (const auto& h : headers) {
    if (h.name == name) values.push_back(h.value);
  }
  return values;
}

void ExpectLowerCaseNames(const http::Headers& headers) {
  for (const auto& h : headers) {
    for (const char c : h.name) EXPECT_FALSE(c >= 'A' && c <= 'Z') << h.name;
  }
}

json::object Encoded(EventShape shape, const http::Response& response) {
  return json::parse(EncodeResponse(shape, response)).as_object();
}

std::string StringAt(const json::object& object, std::string_view key) {
  const json::value* value = object.if_contains(key);
  return value != nullptr && value->is_string() ? std::string(value->get_string()) : std::string("<missing>");
}

// The body as the client receives it once API Gateway undoes any base64.
std::string DeliveredBody(const json::object& encoded) {
  const std::string body = StringAt(encoded, "body");
  if (!encoded.at("isBase64Encoded").as_bool()) return body;
  auto decoded = crypto::Base64Decode(body);
  EXPECT_TRUE(decoded.has_value());
  return decoded.value_or("<bad base64>");
}

constexpr EventShape kAllShapes[] = {EventShape::kRestApi, EventShape::kHttpApi, EventShape::kFunctionUrl};

// ---- decoding ----

TEST(EventsRestApi, DecodesGetPreferringMultiValueMaps) {
  auto event = DecodeEvent(ReadFixture("rest_api_get.json"));
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  EXPECT_EQ(event->shape, EventShape::kRestApi);
  EXPECT_EQ(event->request.method, "GET");
  EXPECT_EQ(event->request.path, "/api/v1/images");  // no "/Prod" stage prefix
  // Rebuilt from the decoded multi-value parameters, escaping what they hold.
  EXPECT_EQ(event->request.query, "limit=5&tags=a%2Bb&tags=b%26c&user_id=al%20ice");
  http::QueryParams params(event->request.query);
  EXPECT_EQ(params.Get("tags"), "b&c");
  EXPECT_EQ(params.Get("user_id"), "al ice");
  ExpectLowerCaseNames(event->request.headers);
  EXPECT_EQ(event->request.header("host"), "r3pmxmplak.execute-api.us-east-2.amazonaws.com");
  EXPECT_EQ(event->request.header("x-api-key"), "sk-test-alice");
  EXPECT_EQ(Values(event->request.headers, "x-debug-tag"), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(event->request.remote_address, "203.0.113.24");
  EXPECT_EQ(event->request_id, "77375676-xmpl-4b79-853a-f982474efe18");
  EXPECT_EQ(event->request.content_length, 0u);
  EXPECT_EQ(event->request.body, event->body.get());
  EXPECT_EQ(BodyOf(*event), "");
}

TEST(EventsRestApi, FallsBackToSingleValueMaps) {
  json::object fixture = FixtureObject("rest_api_get.json");
  fixture.erase("multiValueHeaders");
  fixture["multiValueQueryStringParameters"] = nullptr;
  auto event = Decode(fixture);
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  EXPECT_EQ(event->request.query, "limit=5&tags=b%26c&user_id=al%20ice");
  ExpectLowerCaseNames(event->request.headers);
  EXPECT_EQ(Values(event->request.headers, "x-debug-tag"), (std::vector<std::string>{"two"}));
  EXPECT_EQ(event->request.header("x-api-key"), "sk-test-alice");
}

TEST(EventsRestApi, DecodesBase64MultipartBody) {
  auto event = DecodeEvent(ReadFixture("rest_api_multipart_base64.json"));
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  EXPECT_EQ(event->request.method, "POST");
  EXPECT_EQ(event->request.path, "/api/v1/images");
  EXPECT_EQ(event->request.query, "");  // null parameter maps
  EXPECT_EQ(event->request.header("content-type"), "multipart/form-data; boundary=" + std::string(kBoundary));
  const std::string expected = ExpectedMultipartBody();
  EXPECT_EQ(event->request.content_length, expected.size());
  const std::string body = BodyOf(*event);
  EXPECT_EQ(body, expected);
  EXPECT_NE(body.find(kPixelPng), std::string::npos);
  EXPECT_EQ(event->request.remote_address, "198.51.100.9");
  EXPECT_EQ(event->request_id, "c6af9ac6-xmpl-4b79-853a-f982474efe19");
}

TEST(EventsHttpApi, DecodesGetWithCookiesAndRawQuery) {
  auto event = DecodeEvent(ReadFixture("http_api_get.json"));
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  EXPECT_EQ(event->shape, EventShape::kHttpApi);
  EXPECT_EQ(event->request.method, "GET");
  EXPECT_EQ(event->request.path, "/api/v1/images/img_01HQ3Z8V9K");
  EXPECT_EQ(event->request.query, "download=1&next=a%2Fb&next=c");
  EXPECT_EQ(Values(event->request.headers, "cookie"), (std::vector<std::string>{"session=abc123; theme=dark"}));
  EXPECT_EQ(event->request.header("x-debug-tag"), "one,two");
  EXPECT_EQ(event->request.header("host"), "r3pmxmplak.execute-api.us-east-2.amazonaws.com");
  EXPECT_EQ(event->request.remote_address, "198.51.100.7");
  EXPECT_EQ(event->request_id, "JKJaXmPLvHcESHA=");
  EXPECT_EQ(event->request.content_length, 0u);
  EXPECT_EQ(BodyOf(*event), "");
}

TEST(EventsHttpApi, CookiesArrayReplacesAnyCookieHeader) {
  json::object fixture = FixtureObject("http_api_get.json");
  fixture["headers"].as_object()["cookie"] = "stale=1";
  auto event = Decode(fixture);
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  EXPECT_EQ(Values(event->request.headers, "cookie"), (std::vector<std::string>{"session=abc123; theme=dark"}));
}

TEST(EventsHttpApi, StripsNonDefaultStagePrefix) {
  auto event = DecodeEvent(ReadFixture("http_api_stage_prefix.json"));
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  EXPECT_EQ(event->request.method, "PATCH");
  EXPECT_EQ(event->request.path, "/api/v1/images/img_01HQ3Z8V9K");
  EXPECT_EQ(event->request.query, "");
  const std::string expected = R"({"tags": ["sunset", "beach"]})";
  EXPECT_EQ(event->request.content_length, expected.size());
  EXPECT_EQ(BodyOf(*event), expected);
}

TEST(EventsHttpApi, StripsTheStageOnlyAsAWholeSegmentOnTheApiEndpoint) {
  json::object fixture = FixtureObject("http_api_stage_prefix.json");
  const auto path_for = [&](std::string_view raw_path, std::string_view domain) {
    fixture["rawPath"] = raw_path;
    fixture["requestContext"].as_object()["domainName"] = domain;
    auto event = Decode(fixture);
    EXPECT_TRUE(event.ok()) << event.status().ToString();
    return event.ok() ? event->request.path : std::string();
  };
  const std::string api = "r3pmxmplak.execute-api.us-east-2.amazonaws.com";
  EXPECT_EQ(path_for("/prod", api), "/");
  EXPECT_EQ(path_for("/production/x", api), "/production/x");
  EXPECT_EQ(path_for("/health", api), "/health");
  // A custom domain's API mapping already removed the stage.
  EXPECT_EQ(path_for("/prod/api/v1/images", "images.example.com"), "/prod/api/v1/images");
}

TEST(EventsHttpApi, DecodesBase64BinaryBody) {
  json::object fixture = FixtureObject("http_api_get.json");
  const std::string bytes("\x00\xff\x10 binary\r\n", 11);
  fixture["body"] = crypto::Base64Encode(bytes);
  fixture["isBase64Encoded"] = true;
  auto event = Decode(fixture);
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  EXPECT_EQ(event->request.content_length, bytes.size());
  EXPECT_EQ(BodyOf(*event), bytes);
}

TEST(EventsFunctionUrl, DecodesGet) {
  auto event = DecodeEvent(ReadFixture("function_url_get.json"));
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  EXPECT_EQ(event->shape, EventShape::kFunctionUrl);
  EXPECT_EQ(event->request.method, "GET");
  EXPECT_EQ(event->request.path, "/api/v1/images");
  EXPECT_EQ(event->request.query, "limit=2&user_id=alice");
  EXPECT_EQ(event->request.header("cookie"), "session=xyz");
  EXPECT_EQ(event->request.header("x-api-key"), "sk-test-alice");
  EXPECT_EQ(event->request.remote_address, "192.0.2.44");
  EXPECT_EQ(event->request_id, "0fd6d43a-xmpl-4c6f-a8b0-ee7d3d4bc5ec");
}

TEST(EventsDecode, TakesHostFromDomainNameWhenAbsent) {
  json::object fixture = FixtureObject("function_url_get.json");
  fixture["headers"].as_object().erase("host");
  auto event = Decode(fixture);
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  EXPECT_EQ(Values(event->request.headers, "host"),
            (std::vector<std::string>{"abcdefghij2xmplexample3kl4mnopq.lambda-url.us-east-2.on.aws"}));
}

TEST(EventsDecode, RefusesMalformedFixturesNamingTheProblem) {
  const std::pair<const char*, const char*> cases[] = {
      {"malformed_truncated.json", "JSON"},
      {"malformed_array.json", "not a JSON object"},
      {"malformed_s3_event.json", "no known shape"},
      {"malformed_bad_base64.json", "base64"},
      {"malformed_headers_array.json", "headers"},
  };
  for (const auto& [name, mention] : cases) {
    auto event = DecodeEvent(ReadFixture(name));
    ASSERT_FALSE(event.ok()) << name;
    EXPECT_EQ(event.status().code(), Code::kBadRequest) << name;
    EXPECT_NE(event.status().message().find(mention), std::string::npos) << name << ": " << event.status().message();
  }
}

TEST(EventsDecode, RefusesWrongTypesAndMissingFields) {
  const std::string cases[] = {
      "",
      "null",
      "42",
      "\"GET /\"",
      "{}",
      R"({"version": "2.0"})",
      R"({"version": "2.0", "requestContext": {}})",
      R"({"version": "2.0", "requestContext": {"http": "GET"}})",
      R"({"version": "2.0", "requestContext": {"http": {"method": "GET"}}})",
      R"({"version": "2.0", "rawPath": "/", "requestContext": {"http": {}}})",
      R"({"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": 1}}})",
      R"({"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "GET"}}, "cookies": "a=b"})",
      R"({"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "GET"}}, "cookies": [1]})",
      R"({"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "GET"}}, "headers": {"a": 1}})",
      R"({"version": 2, "httpMethod": 7})",
      R"({"httpMethod": "GET"})",
      R"({"httpMethod": "GET", "path": "relative"})",
      R"({"httpMethod": "GET", "path": "/", "requestContext": []})",
      R"({"httpMethod": "GET", "path": "/", "multiValueHeaders": {"a": "b"}})",
      R"({"httpMethod": "GET", "path": "/", "multiValueHeaders": {"a": [1]}})",
      R"({"httpMethod": "GET", "path": "/", "queryStringParameters": {"a": ["b"]}})",
      R"({"httpMethod": "GET", "path": "/", "body": {"a": 1}})",
      R"({"httpMethod": "GET", "path": "/", "body": "x", "isBase64Encoded": "true"})",
      R"({"httpMethod": "GET", "path": "/", "body": "=abc", "isBase64Encoded": true})",
      "{\"httpMethod\": \"GET\", \"path\": \"/\xff\"}",  // not UTF-8
      std::string(100000, '[') + std::string(100000, ']'),
      std::string(100000, '{'),
  };
  for (const std::string& text : cases) {
    auto event = DecodeEvent(text);
    ASSERT_FALSE(event.ok()) << text.substr(0, 120);
    EXPECT_EQ(event.status().code(), Code::kBadRequest) << text.substr(0, 120);
  }
}

TEST(EventsDecode, EveryTruncationOfEveryFixtureIsRefused) {
  for (const char* name : {"rest_api_get.json", "rest_api_multipart_base64.json", "http_api_get.json",
                           "http_api_stage_prefix.json", "function_url_get.json"}) {
    const std::string text = ReadFixture(name);
    const std::size_t end = text.rfind('}');
    ASSERT_NE(end, std::string::npos);
    for (std::size_t length = 0; length < end; ++length) {
      auto event = DecodeEvent(std::string_view(text).substr(0, length));
      ASSERT_FALSE(event.ok()) << name << " cut at " << length;
      ASSERT_EQ(event.status().code(), Code::kBadRequest);
    }
    EXPECT_TRUE(DecodeEvent(text).ok()) << name;
  }
}

TEST(EventsDecode, MovedEventKeepsItsBody) {
  auto event = DecodeEvent(ReadFixture("http_api_stage_prefix.json"));
  ASSERT_TRUE(event.ok());
  DecodedEvent moved = std::move(*event);
  EXPECT_EQ(moved.request.body, moved.body.get());
  EXPECT_EQ(BodyOf(moved), R"({"tags": ["sunset", "beach"]})");
}

// ---- encoding ----

TEST(EventsEncode, JsonBodyTravelsAsText) {
  http::Response response;
  response.status = 201;
  response.headers.push_back({"content-type", "application/json"});
  response.body = "{\"name\":\"caf\xc3\xa9\"}";
  for (const EventShape shape : kAllShapes) {
    const json::object out = Encoded(shape, response);
    EXPECT_EQ(out.at("statusCode").as_int64(), 201);
    EXPECT_FALSE(out.at("isBase64Encoded").as_bool());
    EXPECT_EQ(StringAt(out, "body"), response.body);
    EXPECT_EQ(StringAt(out.at("headers").as_object(), "content-type"), "application/json");
  }
}

TEST(EventsEncode, BinaryBodyTravelsAsBase64) {
  http::Response response;
  response.headers.push_back({"content-type", "image/png"});
  response.body = kPixelPng;
  for (const EventShape shape : kAllShapes) {
    const json::object out = Encoded(shape, response);
    EXPECT_EQ(out.at("statusCode").as_int64(), 200);
    EXPECT_TRUE(out.at("isBase64Encoded").as_bool());
    EXPECT_EQ(StringAt(out, "body"), crypto::Base64Encode(kPixelPng));
  }
}

TEST(EventsEncode, ChoosesBase64FromTypeEncodingAndUtf8) {
  struct Case {
    std::string content_type;
    std::string content_encoding;
    std::string body;
    bool base64;
  };
  const Case cases[] = {
      {"text/html; charset=utf-8", "", "<p>ok</p>", false},
      {"application/problem+json", "", "{}", false},
      {"application/xml", "", "<a/>", false},
      {"image/svg+xml", "", "<svg/>", false},
      {"text/plain", "", "\xff\xfe", true},             // not UTF-8
      {"text/plain", "", "\xc0\xaf", true},             // overlong
      {"text/plain", "", "\xed\xa0\x80", true},         // surrogate
      {"text/plain", "", "\xe2\x82", true},             // truncated sequence
      {"text/plain", "", "\xf0\x9f\x98\x80 ok", false},  // 4-byte sequence
      {"text/html", "gzip", "\x1f\x8b", true},
      {"text/html", "identity", "ok", false},
      {"", "", "no type", true},
      {"", "", "", false},
      {"application/octet-stream", "", "plain ascii", true},
  };
  for (const Case& c : cases) {
    http::Response response;
    if (!c.content_type.empty()) response.headers.push_back({"content-type", c.content_type});
    if (!c.content_encoding.empty()) response.headers.push_back({"content-encoding", c.content_encoding});
    response.body = c.body;
    const json::object out = Encoded(EventShape::kHttpApi, response);
    EXPECT_EQ(out.at("isBase64Encoded").as_bool(), c.base64) << c.content_type << " " << c.content_encoding;
    EXPECT_EQ(DeliveredBody(out), c.body) << c.content_type;
  }
}

http::Response ResponseWithRepeatedHeaders() {
  http::Response response;
  response.status = 200;
  response.headers.push_back({"content-type", "application/json"});
  response.headers.push_back({"set-cookie", "a=1; Path=/"});
  response.headers.push_back({"vary", "origin"});
  response.headers.push_back({"set-cookie", "b=2; Path=/"});
  response.headers.push_back({"vary", "accept-encoding"});
  response.headers.push_back({"x-request-id", "req-1"});
  response.body = "{}";
  return response;
}

TEST(EventsEncode, RestApiPutsRepeatedHeadersInMultiValueHeaders) {
  const json::object out = Encoded(EventShape::kRestApi, ResponseWithRepeatedHeaders());
  const json::object& headers = out.at("headers").as_object();
  EXPECT_EQ(StringAt(headers, "x-request-id"), "req-1");
  EXPECT_EQ(StringAt(headers, "content-type"), "application/json");
  EXPECT_FALSE(headers.contains("set-cookie"));
  EXPECT_FALSE(headers.contains("vary"));
  const json::object& multi = out.at("multiValueHeaders").as_object();
  EXPECT_EQ(multi.at("set-cookie"), json::parse(R"(["a=1; Path=/", "b=2; Path=/"])"));
  EXPECT_EQ(multi.at("vary"), json::parse(R"(["origin", "accept-encoding"])"));
  EXPECT_FALSE(multi.contains("x-request-id"));
  EXPECT_FALSE(out.contains("cookies"));
}

TEST(EventsEncode, Payload2PutsSetCookieInCookiesAndJoinsRepeatedHeaders) {
  for (const EventShape shape : {EventShape::kHttpApi, EventShape::kFunctionUrl}) {
    const json::object out = Encoded(shape, ResponseWithRepeatedHeaders());
    EXPECT_EQ(out.at("cookies"), json::parse(R"(["a=1; Path=/", "b=2; Path=/"])"));
    const json::object& headers = out.at("headers").as_object();
    EXPECT_FALSE(headers.contains("set-cookie"));
    EXPECT_EQ(StringAt(headers, "vary"), "origin,accept-encoding");
    EXPECT_EQ(StringAt(headers, "x-request-id"), "req-1");
    EXPECT_FALSE(out.contains("multiValueHeaders"));
  }
}

TEST(EventsEncode, LeavesFramingAndBrokenHeadersOut) {
  http::Response response;
  response.headers.push_back({"content-type", "text/plain"});
  response.headers.push_back({"content-length", "2"});
  response.headers.push_back({"connection", "close"});
  response.headers.push_back({"transfer-encoding", "chunked"});
  response.headers.push_back({"x-evil", "a\r\nset-cookie: b"});
  response.body = "ok";
  for (const EventShape shape : kAllShapes) {
    const json::object out = Encoded(shape, response);
    const json::object& headers = out.at("headers").as_object();
    EXPECT_EQ(headers.size(), 1u) << json::serialize(headers);
    EXPECT_EQ(StringAt(headers, "content-type"), "text/plain");
  }
}

TEST(EventsEncode, CarriesTheStatusCode) {
  http::Response response;
  response.status = 404;
  EXPECT_EQ(Encoded(EventShape::kRestApi, response).at("statusCode").as_int64(), 404);
  response.status = 42;  // not an HTTP status: answered as the server would
  EXPECT_EQ(Encoded(EventShape::kHttpApi, response).at("statusCode").as_int64(), 500);
}

class EventsEncodeFile : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() / "imgsvc-events-XXXXXX").string();
    const int fd = ::mkstemp(path_.data());
    ASSERT_GE(fd, 0);
    ::close(fd);
    std::ofstream(path_, std::ios::binary) << "0123456789";
  }
  void TearDown() override { std::filesystem::remove(path_); }

  std::string path_;
};

TEST_F(EventsEncodeFile, ReadsTheFileRangeIntoTheBody) {
  http::Response response;
  response.status = 206;
  response.headers.push_back({"content-type", "image/png"});
  response.file = http::FileBody{path_, 2, 5};
  const json::object out = Encoded(EventShape::kRestApi, response);
  EXPECT_EQ(out.at("statusCode").as_int64(), 206);
  EXPECT_TRUE(out.at("isBase64Encoded").as_bool());
  EXPECT_EQ(DeliveredBody(out), "23456");

  response.headers.front().value = "text/plain";
  response.file = http::FileBody{path_, 0, 10};
  EXPECT_EQ(StringAt(Encoded(EventShape::kHttpApi, response), "body"), "0123456789");
}

TEST_F(EventsEncodeFile, UnreadableFileBecomesA500KeepingTheRequestId) {
  for (const http::FileBody& file : {http::FileBody{path_ + ".gone", 0, 1}, http::FileBody{path_, 8, 5}}) {
    http::Response response;
    response.headers.push_back({"content-type", "image/png"});
    response.headers.push_back({"x-request-id", "req-2"});
    response.file = file;
    const json::object out = Encoded(EventShape::kHttpApi, response);
    EXPECT_EQ(out.at("statusCode").as_int64(), 500) << file.path;
    const json::object& headers = out.at("headers").as_object();
    EXPECT_EQ(StringAt(headers, "x-request-id"), "req-2");
    EXPECT_NE(StringAt(headers, "content-type"), "image/png");
    EXPECT_TRUE(json::parse(DeliveredBody(out)).as_object().contains("detail"));
  }
}

// ---- through a router ----

TEST(EventsRoundTrip, MultipartUploadThroughAFakeRouter) {
  const std::function<http::Response(http::Request&)> router = [](http::Request& request) {
    auto body = http::ReadAll(*request.body, *request.content_length);
    http::Response response;
    response.status = body.ok() && *body == ExpectedMultipartBody() ? 201 : 400;
    response.headers.push_back({"content-type", "application/json"});
    response.headers.push_back({"set-cookie", "seen=1"});
    response.headers.push_back({"set-cookie", "upload=1"});
    response.body = json::serialize(json::object{{"method", request.method}, {"path", request.path}});
    return response;
  };
  auto event = DecodeEvent(ReadFixture("rest_api_multipart_base64.json"));
  ASSERT_TRUE(event.ok()) << event.status().ToString();
  const json::object out = json::parse(EncodeResponse(event->shape, router(event->request))).as_object();
  EXPECT_EQ(out.at("statusCode").as_int64(), 201);
  EXPECT_EQ(json::parse(StringAt(out, "body")), json::parse(R"({"method": "POST", "path": "/api/v1/images"})"));
  EXPECT_EQ(out.at("multiValueHeaders").at("set-cookie"), json::parse(R"(["seen=1", "upload=1"])"));
}

}  // namespace events_test
}  // namespace imgsvc::lambda
