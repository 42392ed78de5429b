// Our SigV4 signer against the AWS SDK for JavaScript v3's (@smithy/signature-v4,
// pinned in package.json): a table of the requests our AWS adapters send (S3
// object and bucket calls with awkward keys, presigned GETs, DynamoDB and
// Secrets Manager JSON calls), with and without a session token, is signed by
// both; canonical request, string to sign, signature and the headers or query
// parameters added must be equal byte for byte. sigv4_crosscheck.mjs signs
// the table with the SDK; it runs once, on a temporary JSON file.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "aws/sigv4.h"
#include "crypto/crypto.h"

namespace imgsvc::aws {
namespace sigv4_crosscheck_test {

using Clock = std::chrono::system_clock;
namespace json = boost::json;

enum class Form { kHeaders, kPresign };

struct CrossCheckCase {
  std::string name;
  Form form = Form::kHeaders;
  SigningScope scope;
  // Before signing: the wire path and query, and the headers AwsClient
  // puts in (host included); the signer adds the rest.
  SignableRequest request;
  std::string body;
  Credentials credentials;
  Clock::time_point when;
  std::chrono::seconds expires{0};  // presign only
};

Clock::time_point Utc(int year, unsigned month, unsigned day, int hour, int minute, int second) {
  return std::chrono::sys_days{std::chrono::year{year} / std::chrono::month{month} / std::chrono::day{day}} +
         std::chrono::hours{hour} + std::chrono::minutes{minute} + std::chrono::seconds{second};
}

const Clock::time_point kLeapDayMidnight = Utc(2024, 2, 29, 23, 59, 59);
const Clock::time_point kNewYear = Utc(2025, 1, 1, 0, 0, 0);

Credentials LongTermKeys() {
  return Credentials{.access_key_id = "AKIAIOSFODNN7EXAMPLE",
                     .secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                     .session_token = {},
                     .expiration = std::nullopt};
}

// Session tokens are base64: `/`, `+` and `=` must be encoded in a query.
Credentials TemporaryKeys() {
  return Credentials{.access_key_id = "ASIAIOSFODNN7EXAMPLE",
                     .secret_access_key = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
                     .session_token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQC+fake/token+with=pad==",
                     .expiration = std::nullopt};
}

const SigningScope kS3{.region = "eu-west-3", .service = "s3"};
const SigningScope kDynamoDb{.region = "eu-west-3", .service = "dynamodb"};
const SigningScope kSecretsManager{.region = "us-east-1", .service = "secretsmanager"};

constexpr std::string_view kBucket = "imgsvc-images";
constexpr std::string_view kPathStyleHost = "s3.eu-west-3.amazonaws.com";
constexpr std::string_view kVirtualHost = "imgsvc-images.s3.eu-west-3.amazonaws.com";
constexpr std::string_view kLocalHost = "127.0.0.1:4569";

// The wire paths of S3BlobStore: each key segment encoded once, `/` kept.
std::string PathStyle(std::string_view key) {
  return "/" + UriEncode(kBucket, false) + "/" + UriEncode(key, true);
}
std::string VirtualHosted(std::string_view key) { return "/" + UriEncode(key, true); }

// The headers AwsClient adds to every call before signing.
std::vector<NameValue> ClientHeaders(std::string_view host, std::vector<NameValue> own = {}) {
  own.emplace_back("host", std::string(host));
  own.emplace_back("amz-sdk-invocation-id", "0b4a5c3e-6f1d-4e8a-9b2c-7d3e4f5a6b7c");
  own.emplace_back("amz-sdk-request", "attempt=1; max=3");
  return own;
}

CrossCheckCase HeadersCase(std::string name, SigningScope scope, std::string method, std::string path,
                           std::vector<NameValue> query, std::vector<NameValue> headers, std::string body,
                           Credentials credentials, Clock::time_point when = kLeapDayMidnight) {
  return CrossCheckCase{.name = std::move(name),
                        .form = Form::kHeaders,
                        .scope = std::move(scope),
                        .request = SignableRequest{.method = std::move(method),
                                                   .path = std::move(path),
                                                   .query = std::move(query),
                                                   .headers = std::move(headers),
                                                   .payload_hash = {}},
                        .body = std::move(body),
                        .credentials = std::move(credentials),
                        .when = when,
                        .expires = std::chrono::seconds{0}};
}

CrossCheckCase PresignCase(std::string name, std::string_view host, std::string path, Credentials credentials,
                           std::chrono::seconds expires, Clock::time_point when = kLeapDayMidnight) {
  return CrossCheckCase{.name = std::move(name),
                        .form = Form::kPresign,
                        .scope = kS3,
                        .request = SignableRequest{.method = "GET",
                                                   .path = std::move(path),
                                                   .query = {},
                                                   .headers = {{"host", std::string(host)}},
                                                   .payload_hash = {}},
                        .body = {},
                        .credentials = std::move(credentials),
                        .when = when,
                        .expires = expires};
}

std::vector<CrossCheckCase> Table() {
  const std::string binary_body("\x00\xff\xd8\xff\xe0 JFIF \r\n\x7f", 14);
  const std::string upload_id = "VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRz/+=~.-_";
  return {
      HeadersCase("s3 GET, spaces in the key", kS3, "GET", PathStyle("images/user 42/my photo (1).jpg"), {},
                  ClientHeaders(kPathStyleHost), {}, LongTermKeys()),
      HeadersCase("s3 GET, unicode key, virtual-hosted, session token", kS3, "GET",
                  VirtualHosted("ünïcødé/写真 😀.png"), {}, ClientHeaders(kVirtualHost), {}, TemporaryKeys()),
      HeadersCase("s3 PUT, + = @ in the key, binary body, unsigned and untrimmed headers", kS3, "PUT",
                  PathStyle("a+b=c@d/e+f=g@h.webp"), {},
                  ClientHeaders(kPathStyleHost, {{"Content-Type", "image/webp"},
                                                 {"X-Amz-Meta-Caption", "  two   spaces\tand a tab  "},
                                                 {"Expect", "100-continue"},
                                                 {"User-Agent", "imgsvc/1.0"}}),
                  binary_body, LongTermKeys()),
      HeadersCase("s3 DELETE, empty and dot segments kept as is, session token", kS3, "DELETE",
                  PathStyle("dir//sub/./x@y+z=w/../v.gif"), {}, ClientHeaders(kPathStyleHost), {},
                  TemporaryKeys()),
      HeadersCase("s3 PUT UploadPart, query values to encode", kS3, "PUT", PathStyle("big/image 9.tiff"),
                  {{"partNumber", "3"}, {"uploadId", upload_id}}, ClientHeaders(kLocalHost), binary_body,
                  LongTermKeys()),
      HeadersCase("s3 POST CreateMultipartUpload, empty query value", kS3, "POST", PathStyle("@home/+1=2.png"),
                  {{"uploads", ""}}, ClientHeaders(kLocalHost, {{"Content-Type", "image/png"}}), {},
                  TemporaryKeys()),
      HeadersCase("s3 POST DeleteObjects, virtual-hosted", kS3, "POST", "/", {{"delete", ""}},
                  ClientHeaders(kVirtualHost, {{"Content-Type", "application/xml"},
                                               {"Content-MD5", crypto::Md5Base64("<Delete/>")}}),
                  "<Delete/>", TemporaryKeys()),
      HeadersCase("s3 GET ListObjectsV2, query to sort and encode", kS3, "GET", PathStyle(""),
                  {{"prefix", "user 42/ü+=@!*'()"},
                   {"list-type", "2"},
                   {"continuation-token", "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="},
                   {"max-keys", "1000"}},
                  ClientHeaders(kPathStyleHost), {}, LongTermKeys(), kNewYear),
      HeadersCase("s3 HEAD bucket, local endpoint", kS3, "HEAD", "/" + std::string(kBucket), {},
                  ClientHeaders(kLocalHost), {}, LongTermKeys()),
      HeadersCase("dynamodb Query, session token", kDynamoDb, "POST", "/", {},
                  ClientHeaders("dynamodb.eu-west-3.amazonaws.com",
                                {{"content-type", "application/x-amz-json-1.0"},
                                 {"x-amz-target", "DynamoDB_20120810.Query"}}),
                  R"json({"TableName":"ImageMetadata","IndexName":"UserIdIndex",)json"
                  R"json("KeyConditionExpression":"user_id = :u","ExpressionAttributeValues":)json"
                  R"json({":u":{"S":"zoë+été@example.com"}},"Limit":21,"ScanIndexForward":false})json",
                  TemporaryKeys()),
      HeadersCase("dynamodb PutItem", kDynamoDb, "POST", "/", {},
                  ClientHeaders("dynamodb.eu-west-3.amazonaws.com",
                                {{"content-type", "application/x-amz-json-1.0"},
                                 {"x-amz-target", "DynamoDB_20120810.PutItem"}}),
                  R"json({"TableName":"ImageMetadata","Item":{"image_id":{"S":"img_1"}},)json"
                  R"json("ConditionExpression":"attribute_not_exists(image_id)"})json",
                  LongTermKeys(), kNewYear),
      HeadersCase("secretsmanager GetSecretValue", kSecretsManager, "POST", "/", {},
                  ClientHeaders("secretsmanager.us-east-1.amazonaws.com",
                                {{"content-type", "application/x-amz-json-1.1"},
                                 {"x-amz-target", "secretsmanager.GetSecretValue"}}),
                  R"json({"SecretId":"imgsvc/api-key"})json", LongTermKeys()),
      HeadersCase("secretsmanager GetSecretValue, local endpoint, session token", kSecretsManager, "POST", "/", {},
                  ClientHeaders("localhost:4566", {{"content-type", "application/x-amz-json-1.1"},
                                                   {"x-amz-target", "secretsmanager.GetSecretValue"}}),
                  R"json({"SecretId":"arn:aws:secretsmanager:us-east-1:123456789012:secret:imgsvc/api-key-AbCdEf"})json",
                  TemporaryKeys()),
      PresignCase("presigned GET, path-style, no session token", kPathStyleHost,
                  PathStyle("user 42/é+=@ photo.jpg"), LongTermKeys(), std::chrono::seconds{900}),
      PresignCase("presigned GET, virtual-hosted, session token, 7 days", kVirtualHost,
                  VirtualHosted("ünïcødé/写真 😀.png"), TemporaryKeys(), kMaxPresignExpiry),
      PresignCase("presigned GET, local endpoint, session token", kLocalHost, PathStyle("a+b=c@d/e f.gif"),
                  TemporaryKeys(), std::chrono::seconds{3600}, kNewYear),
  };
}

std::string BodyHash(const std::string& body) { return crypto::HexEncode(crypto::Sha256Of(body)); }

json::array PairsToJson(const std::vector<NameValue>& pairs) {
  json::array out;
  for (const auto& [name, value] : pairs) out.push_back(json::array{json::string(name), json::string(value)});
  return out;
}

json::object CaseToJson(const CrossCheckCase& check) {
  json::object out;
  out["name"] = check.name;
  out["form"] = check.form == Form::kPresign ? "presign" : "headers";
  out["service"] = check.scope.service;
  out["region"] = check.scope.region;
  out["method"] = check.request.method;
  out["path"] = check.request.path;
  out["query"] = PairsToJson(check.request.query);
  out["headers"] = PairsToJson(check.request.headers);
  if (!check.body.empty()) out["body_base64"] = crypto::Base64Encode(check.body);
  out["credentials"] = json::object{{"access_key_id", check.credentials.access_key_id},
                                    {"secret_access_key", check.credentials.secret_access_key},
                                    {"session_token", check.credentials.session_token}};
  out["signing_date"] = std::chrono::duration_cast<std::chrono::seconds>(check.when.time_since_epoch()).count();
  out["expires"] = check.expires.count();
  return out;
}

std::string ShellQuote(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

// The SDK's answer for the table (its stdout), or nullopt after a failure
// reported to the test.
std::optional<json::array> SignWithSdk(const std::vector<CrossCheckCase>& table) {
  json::array cases;
  for (const CrossCheckCase& check : table) cases.push_back(CaseToJson(check));
  const std::filesystem::path table_file = std::filesystem::path(::testing::TempDir()) /
                                           ("sigv4_crosscheck_" + std::to_string(::getpid()) + ".json");
  {
    std::ofstream out(table_file, std::ios::binary);
    out << json::serialize(json::object{{"cases", std::move(cases)}});
    if (!out) {
      ADD_FAILURE() << "cannot write " << table_file;
      return std::nullopt;
    }
  }
  const std::string command =
      ShellQuote(IMGSVC_NODE) + " " + ShellQuote(IMGSVC_SIGV4_CROSSCHECK) + " " + ShellQuote(table_file.string());
  std::string answer;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run " << command;
    return std::nullopt;
  }
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) answer.append(buffer, n);
  const int status = ::pclose(pipe);
  std::error_code ignored;
  std::filesystem::remove(table_file, ignored);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    ADD_FAILURE() << command << " failed (status " << status << "); its stderr is above";
    return std::nullopt;
  }
  boost::system::error_code parse_error;
  json::value parsed = json::parse(answer, parse_error);
  if (parse_error || !parsed.is_object() || !parsed.as_object().contains("results")) {
    ADD_FAILURE() << "unexpected answer from the SDK script: " << answer;
    return std::nullopt;
  }
  return parsed.as_object()["results"].as_array();
}

std::string Text(const json::object& result, std::string_view field) {
  const json::value* value = result.if_contains(field);
  if (value == nullptr || !value->is_string()) {
    ADD_FAILURE() << "no string " << field << " in " << json::serialize(result);
    return {};
  }
  return std::string(value->as_string());
}

std::vector<std::string> TextList(const json::object& result, std::string_view field) {
  std::vector<std::string> out;
  const json::value* value = result.if_contains(field);
  if (value == nullptr || !value->is_array()) {
    ADD_FAILURE() << "no list " << field << " in " << json::serialize(result);
    return out;
  }
  for (const json::value& item : value->as_array()) {
    out.push_back(item.is_string() ? std::string(item.as_string()) : json::serialize(item));
  }
  return out;
}

// The script's [[name, value], ...].
std::vector<NameValue> PairList(const json::object& result, std::string_view field) {
  std::vector<NameValue> out;
  const json::value* value = result.if_contains(field);
  if (value == nullptr || !value->is_array()) {
    ADD_FAILURE() << "no list " << field << " in " << json::serialize(result);
    return out;
  }
  for (const json::value& item : value->as_array()) {
    const json::array* pair = item.if_array();
    if (pair == nullptr || pair->size() != 2 || !(*pair)[0].is_string() || !(*pair)[1].is_string()) {
      ADD_FAILURE() << "not a [name, value] pair: " << json::serialize(item);
      continue;
    }
    out.emplace_back(std::string((*pair)[0].as_string()), std::string((*pair)[1].as_string()));
  }
  return out;
}

// Lower-case names, sorted by name and value.
std::vector<NameValue> Normalised(std::vector<NameValue> headers) {
  for (auto& [name, value] : headers) {
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  std::sort(headers.begin(), headers.end());
  return headers;
}

std::vector<std::string> SplitQuery(std::string_view query) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= query.size()) {
    std::size_t end = query.find('&', start);
    if (end == std::string_view::npos) end = query.size();
    out.emplace_back(query.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string PercentDecode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && HexDigit(text[i + 1]) >= 0 && HexDigit(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexDigit(text[i + 1]) * 16 + HexDigit(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::string SignatureOf(std::string_view authorization) {
  constexpr std::string_view kMarker = "Signature=";
  const std::size_t at = authorization.rfind(kMarker);
  return at == std::string_view::npos ? std::string() : std::string(authorization.substr(at + kMarker.size()));
}

std::string HeaderValue(const std::vector<NameValue>& headers, std::string_view name) {
  for (const auto& [header_name, value] : headers) {
    if (header_name == name) return value;
  }
  return {};
}

void CheckHeadersForm(Signer& signer, const CrossCheckCase& check, const json::object& sdk) {
  SignableRequest request = check.request;
  request.payload_hash = BodyHash(check.body);
  signer.Sign(request, check.credentials, check.scope, check.when);
  const std::string authorization = HeaderValue(request.headers, "authorization");

  EXPECT_EQ(signer.CanonicalRequest(request), Text(sdk, "canonical_request"));
  EXPECT_EQ(signer.StringToSign(request, check.scope, check.when), Text(sdk, "string_to_sign"));
  EXPECT_EQ(SignatureOf(authorization), Text(sdk, "signature"));
  EXPECT_EQ(authorization, Text(sdk, "authorization"));
  EXPECT_EQ(Normalised(request.headers), Normalised(PairList(sdk, "headers")));
}

void CheckPresignForm(Signer& signer, const CrossCheckCase& check, const json::object& sdk) {
  const StatusOr<std::string> query =
      signer.PresignQuery(check.request, check.credentials, check.scope, check.when, check.expires);
  ASSERT_TRUE(query.ok()) << query.status().message();
  std::vector<std::string> parameters = SplitQuery(*query);
  std::sort(parameters.begin(), parameters.end());
  EXPECT_EQ(parameters, TextList(sdk, "presigned_query"));

  // The request PresignQuery signed: ours plus every parameter it added but
  // the signature, with S3's unsigned payload.
  SignableRequest signed_request = check.request;
  signed_request.payload_hash = "UNSIGNED-PAYLOAD";
  std::string signature;
  for (const std::string& parameter : parameters) {
    const std::size_t equals = parameter.find('=');
    std::string name = parameter.substr(0, equals);
    std::string value = PercentDecode(parameter.substr(equals + 1));
    if (name == "X-Amz-Signature") {
      signature = std::move(value);
    } else {
      signed_request.query.emplace_back(std::move(name), std::move(value));
    }
  }
  EXPECT_EQ(signer.CanonicalRequest(signed_request), Text(sdk, "canonical_request"));
  EXPECT_EQ(signer.StringToSign(signed_request, check.scope, check.when), Text(sdk, "string_to_sign"));
  EXPECT_EQ(signature, Text(sdk, "signature"));
}

TEST(Sigv4CrossCheck, EqualsTheAwsSdkForJavaScriptByteForByte) {
  const std::vector<CrossCheckCase> table = Table();
  const std::optional<json::array> results = SignWithSdk(table);
  ASSERT_TRUE(results.has_value());
  ASSERT_EQ(results->size(), table.size());

  // Shared across cases, as AwsClient shares them: the key cache is exercised.
  Signer s3_signer(PathRule::kAsIs);
  Signer json_signer(PathRule::kNormaliseAndEncode);
  for (std::size_t i = 0; i < table.size(); ++i) {
    const CrossCheckCase& check = table[i];
    SCOPED_TRACE(check.name);
    ASSERT_TRUE((*results)[i].is_object());
    const json::object& sdk = (*results)[i].as_object();
    ASSERT_EQ(Text(sdk, "name"), check.name);
    Signer& signer = check.scope.service == "s3" ? s3_signer : json_signer;
    if (check.form == Form::kPresign) {
      CheckPresignForm(signer, check, sdk);
    } else {
      CheckHeadersForm(signer, check, sdk);
    }
  }
}

}  // namespace sigv4_crosscheck_test
}  // namespace imgsvc::aws
