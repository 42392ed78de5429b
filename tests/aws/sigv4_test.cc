// SigV4 against every applicable vector of AWS's two published suites (read
// from testdata/sigv4, never listed by hand), against the worked S3 examples
// of AWS's documentation, and the signer's own rules: the signing-key cache,
// presign expiry bounds, re-signing, unsigned headers, UriEncode, AmzDate.
#include "aws/sigv4.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "crypto/crypto.h"

namespace imgsvc::aws {
namespace sigv4_test {

namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

// How many cases each suite holds; fewer found means a wrong path or a
// broken copy, which must not pass as "nothing to test".
constexpr std::size_t kSuite2015Cases = 31;
constexpr std::size_t kCrtCases = 38;

fs::path VectorsDir() { return fs::path(IMGSVC_SIGV4_VECTORS); }

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return {};
  }
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

Clock::time_point Utc(int year, unsigned month, unsigned day, int hour = 0, int minute = 0, int second = 0) {
  return std::chrono::sys_days{std::chrono::year{year} / std::chrono::month{month} / std::chrono::day{day}} +
         std::chrono::hours{hour} + std::chrono::minutes{minute} + std::chrono::seconds{second};
}

// "2015-08-30T12:36:00Z"
Clock::time_point ParseTimestamp(const std::string& text) {
  int year = 0, hour = 0, minute = 0, second = 0;
  unsigned month = 0, day = 0;
  if (std::sscanf(text.c_str(), "%d-%u-%uT%d:%d:%dZ", &year, &month, &day, &hour, &minute, &second) != 6) {
    ADD_FAILURE() << "bad timestamp " << text;
  }
  return Utc(year, month, day, hour, minute, second);
}

std::vector<std::string_view> Split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

std::string PercentDecode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      const auto byte = crypto::HexDecode(text.substr(i + 1, 2));
      if (byte && byte->size() == 1) {
        out.append(*byte);
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

// A request as the vector files write it: request line, headers (a line
// starting with whitespace continues the previous value: RFC 7230 obs-fold,
// read as one space), blank line, body.
struct HttpText {
  std::string method;
  std::string path;       // as on the request line
  std::string raw_query;  // as on the request line, still encoded
  std::vector<NameValue> query;
  std::vector<NameValue> headers;
  std::string body;
};

// How a .req file's continuation lines (obs-fold) are read. The two suites
// disagree: AWS's 2015 suite expects each line as another value of the header
// (canonical "value1,value2,value3"), aws-c-auth unfolds them into one value
// (RFC 7230: "value1 value2 value3"). Folding is a property of the request
// text, not of the signer, which sees the header values either way.
enum class Folding { kAnotherValue, kUnfold };

HttpText ParseHttp(std::string_view text, Folding folding = Folding::kUnfold) {
  HttpText out;
  std::string_view head = text;
  if (const std::size_t blank = text.find("\n\n"); blank != std::string_view::npos) {
    head = text.substr(0, blank);
    out.body = text.substr(blank + 2);
  }
  const std::vector<std::string_view> lines = Split(head, '\n');
  // The target may hold a space ("/example space/"): the method ends at the
  // first space, the version starts after the last.
  const std::string_view request_line = lines.front();
  const std::size_t first_space = request_line.find(' ');
  const std::size_t last_space = request_line.rfind(' ');
  out.method = request_line.substr(0, first_space);
  const std::string_view target = request_line.substr(first_space + 1, last_space - first_space - 1);
  const std::size_t question = target.find('?');
  out.path = target.substr(0, question);
  if (question != std::string_view::npos) out.raw_query = target.substr(question + 1);
  for (std::string_view pair : Split(out.raw_query, '&')) {
    if (pair.empty()) continue;
    const std::size_t equals = pair.find('=');
    out.query.emplace_back(PercentDecode(pair.substr(0, equals)),
                           equals == std::string_view::npos ? "" : PercentDecode(pair.substr(equals + 1)));
  }
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    if (line.empty()) continue;
    if (line.front() == ' ' || line.front() == '\t') {
      if (out.headers.empty()) {
        ADD_FAILURE() << "continuation line before any header";
        continue;
      }
      if (folding == Folding::kAnotherValue) {
        out.headers.emplace_back(out.headers.back().first, std::string(line));
      } else {
        out.headers.back().second.append(" ").append(line);
      }
      continue;
    }
    const std::size_t colon = line.find(':');
    out.headers.emplace_back(std::string(line.substr(0, colon)), std::string(line.substr(colon + 1)));
  }
  return out;
}

// S3 keeps the wire path as is, so it must be sent encoded once; the other
// services' rule encodes the path itself, so it gets the request-line text.
SignableRequest ToSignable(const HttpText& http, PathRule rule) {
  return SignableRequest{
      .method = http.method,
      .path = rule == PathRule::kAsIs ? UriEncode(http.path, true) : http.path,
      .query = http.query,
      .headers = http.headers,
      .payload_hash = crypto::HexEncode(crypto::Sha256Of(http.body)),
  };
}

std::string Lower(std::string_view text) {
  std::string lower(text);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return lower;
}

// The first value of a header (name matched case-insensitively), "" if none.
std::string HeaderValue(const std::vector<NameValue>& headers, std::string_view name) {
  for (const auto& [header_name, value] : headers) {
    if (Lower(header_name) == Lower(name)) return value;
  }
  return {};
}

std::size_t HeaderCount(const std::vector<NameValue>& headers, std::string_view name) {
  return static_cast<std::size_t>(std::count_if(headers.begin(), headers.end(), [name](const NameValue& header) {
    return Lower(header.first) == Lower(name);
  }));
}

// The X-Amz-* parameters of a query string, still encoded, sorted.
std::vector<std::string> PresignParameters(std::string_view raw_query) {
  std::vector<std::string> out;
  for (std::string_view pair : Split(raw_query, '&')) {
    if (pair.starts_with("X-Amz-")) out.emplace_back(pair);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> ParameterNames(std::string_view raw_query) {
  std::vector<std::string> names;
  for (std::string_view pair : Split(raw_query, '&')) names.emplace_back(pair.substr(0, pair.find('=')));
  return names;
}

// The documented key derivation, written out independently of the signer:
// the oracle for signatures no vector lists (other days, regions, secrets).
std::string IndependentSignature(const std::string& secret, std::string_view date, std::string_view region,
                                 std::string_view service, std::string_view string_to_sign) {
  crypto::Sha256Digest key = crypto::HmacSha256("AWS4" + secret, date);
  key = crypto::HmacSha256(key, region);
  key = crypto::HmacSha256(key, service);
  key = crypto::HmacSha256(key, "aws4_request");
  return crypto::HexEncode(crypto::HmacSha256(key, string_to_sign));
}

// Both suites share these inputs.
constexpr std::string_view kSuiteAccessKey = "AKIDEXAMPLE";
constexpr std::string_view kSuiteSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SigningScope kSuiteScope{.region = "us-east-1", .service = "service"};

Credentials SuiteCredentials(std::string session_token = {}) {
  return Credentials{.access_key_id = std::string(kSuiteAccessKey),
                     .secret_access_key = std::string(kSuiteSecret),
                     .session_token = std::move(session_token),
                     .expiration = std::nullopt};
}

struct VectorCase {
  std::string name;
  fs::path dir;
};

void PrintTo(const VectorCase& vector_case, std::ostream* out) { *out << vector_case.name; }

std::string TestNameOf(const testing::TestParamInfo<VectorCase>& info) {
  std::string name = info.param.name;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

std::vector<VectorCase> SortedCases(std::vector<VectorCase> cases) {
  std::sort(cases.begin(), cases.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return cases;
}

// ---------------------------------------------------------------------------
// AWS's 2015 suite: <case>/<case>.{req,creq,sts,authz}; two cases sit one
// level deeper (normalize-path/, post-sts-token/).

std::vector<VectorCase> Suite2015Cases() {
  const fs::path root = VectorsDir() / "aws-sig-v4-test-suite";
  std::vector<VectorCase> cases;
  if (!fs::is_directory(root)) return cases;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file() && entry.path().extension() == ".req") {
      cases.push_back({.name = entry.path().stem().string(), .dir = entry.path().parent_path()});
    }
  }
  return SortedCases(std::move(cases));
}

class Sigv4Suite2015Test : public testing::TestWithParam<VectorCase> {};

TEST_P(Sigv4Suite2015Test, CanonicalRequestStringToSignAndAuthorization) {
  const VectorCase& vector_case = GetParam();
  const fs::path base = vector_case.dir / vector_case.name;
  SignableRequest request = ToSignable(ParseHttp(ReadFile(base.string() + ".req"), Folding::kAnotherValue),
                                       PathRule::kNormaliseAndEncode);
  const Clock::time_point when = Utc(2015, 8, 30, 12, 36);
  Signer signer(PathRule::kNormaliseAndEncode);

  // The .req carries X-Amz-Date (and the token, for post-sts-header-before).
  EXPECT_EQ(signer.CanonicalRequest(request), ReadFile(base.string() + ".creq"));
  EXPECT_EQ(signer.StringToSign(request, kSuiteScope, when), ReadFile(base.string() + ".sts"));

  signer.Sign(request, SuiteCredentials(HeaderValue(request.headers, "x-amz-security-token")), kSuiteScope,
              when);
  EXPECT_EQ(HeaderValue(request.headers, "authorization"), ReadFile(base.string() + ".authz"));
  EXPECT_EQ(HeaderCount(request.headers, "x-amz-date"), 1u);
  EXPECT_EQ(HeaderValue(request.headers, "x-amz-date"), "20150830T123600Z");
  // Non-S3: no payload hash header is added.
  EXPECT_EQ(HeaderCount(request.headers, "x-amz-content-sha256"), 0u);
}

INSTANTIATE_TEST_SUITE_P(Vectors, Sigv4Suite2015Test, testing::ValuesIn(Suite2015Cases()), TestNameOf);

// ---------------------------------------------------------------------------
// aws-c-auth's suite: <case>/{context.json, request.txt, header-*, query-*}.

std::vector<VectorCase> CrtCases() {
  const fs::path root = VectorsDir() / "aws-c-auth" / "v4";
  std::vector<VectorCase> cases;
  if (!fs::is_directory(root)) return cases;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory() && fs::exists(entry.path() / "context.json")) {
      cases.push_back({.name = entry.path().filename().string(), .dir = entry.path()});
    }
  }
  return SortedCases(std::move(cases));
}

struct CrtContext {
  Credentials credentials;
  SigningScope scope;
  Clock::time_point when;
  std::chrono::seconds expires{0};
  bool normalize = true;
  bool sign_body = false;
  bool omit_session_token = false;
};

CrtContext LoadContext(const fs::path& dir) {
  const boost::json::object context = boost::json::parse(ReadFile(dir / "context.json")).as_object();
  const boost::json::object& credentials = context.at("credentials").as_object();
  CrtContext out;
  out.credentials.access_key_id = std::string(credentials.at("access_key_id").as_string());
  out.credentials.secret_access_key = std::string(credentials.at("secret_access_key").as_string());
  if (const auto* token = credentials.if_contains("token")) {
    out.credentials.session_token = std::string(token->as_string());
  }
  out.scope.region = std::string(context.at("region").as_string());
  out.scope.service = std::string(context.at("service").as_string());
  out.when = ParseTimestamp(std::string(context.at("timestamp").as_string()));
  out.expires = std::chrono::seconds(context.at("expiration_in_seconds").to_number<std::int64_t>());
  out.normalize = context.at("normalize").as_bool();
  out.sign_body = context.at("sign_body").as_bool();
  if (const auto* omit = context.if_contains("omit_session_token")) out.omit_session_token = omit->as_bool();
  return out;
}

std::string AuthorizationLine(std::string_view signed_request) {
  for (std::string_view line : Split(signed_request, '\n')) {
    if (line.starts_with("Authorization:")) return std::string(line.substr(std::string_view("Authorization:").size()));
  }
  ADD_FAILURE() << "no Authorization line";
  return {};
}

class Sigv4CrtVectorTest : public testing::TestWithParam<VectorCase> {
 protected:
  void SetUp() override {
    context_ = LoadContext(GetParam().dir);
    // normalize=false keeps the path as sent, encoded once: S3's rule.
    rule_ = context_.normalize ? PathRule::kNormaliseAndEncode : PathRule::kAsIs;
  }
  std::string Read(std::string_view file) const { return ReadFile(GetParam().dir / file); }

  CrtContext context_;
  PathRule rule_ = PathRule::kNormaliseAndEncode;
};

TEST_P(Sigv4CrtVectorTest, HeaderForm) {
  Signer signer(rule_);
  SignableRequest request = ToSignable(ParseHttp(Read("request.txt")), rule_);
  if (context_.sign_body) request.headers.emplace_back("x-amz-content-sha256", request.payload_hash);

  // As the vector was signed: x-amz-date and the token in, nothing else.
  SignableRequest dated = request;
  dated.headers.emplace_back("X-Amz-Date", AmzDate(context_.when));
  // (Unless the vector adds the token after signing, unsigned.)
  if (!context_.credentials.session_token.empty() && !context_.omit_session_token) {
    dated.headers.emplace_back("X-Amz-Security-Token", context_.credentials.session_token);
  }
  EXPECT_EQ(signer.CanonicalRequest(dated), Read("header-canonical-request.txt"));
  EXPECT_EQ(signer.StringToSign(dated, context_.scope, context_.when), Read("header-string-to-sign.txt"));
  EXPECT_EQ(signer.Signature(dated, context_.credentials, context_.scope, context_.when),
            Read("header-signature.txt"));
  // Sign() always signs the token, as the AWS SDKs do: such vectors stop here.
  if (context_.omit_session_token) return;

  // Sign() under S3's rule also signs x-amz-content-sha256, which these
  // unnormalised vectors do not: their signature is checked above.
  if (rule_ == PathRule::kAsIs) return;
  signer.Sign(request, context_.credentials, context_.scope, context_.when);
  EXPECT_EQ(HeaderValue(request.headers, "authorization"), AuthorizationLine(Read("header-signed-request.txt")));
  EXPECT_EQ(HeaderValue(request.headers, "x-amz-security-token"), context_.credentials.session_token);
}

TEST_P(Sigv4CrtVectorTest, QueryForm) {
  Signer signer(rule_);

  // The presigned request less its signature is what was signed (less the
  // token too, when the vector adds it after signing).
  const HttpText presigned = ParseHttp(Read("query-signed-request.txt"));
  SignableRequest signed_part = ToSignable(presigned, rule_);
  const bool token_after = context_.omit_session_token;
  std::erase_if(signed_part.query, [token_after](const NameValue& pair) {
    return pair.first == "X-Amz-Signature" || (token_after && pair.first == "X-Amz-Security-Token");
  });
  EXPECT_EQ(signer.CanonicalRequest(signed_part), Read("query-canonical-request.txt"));
  EXPECT_EQ(signer.StringToSign(signed_part, context_.scope, context_.when), Read("query-string-to-sign.txt"));
  EXPECT_EQ(signer.Signature(signed_part, context_.credentials, context_.scope, context_.when),
            Read("query-signature.txt"));

  // PresignQuery() under S3's rule signs UNSIGNED-PAYLOAD, which these
  // unnormalised vectors do not, and always signs the token: such vectors'
  // signatures are checked above.
  if (rule_ == PathRule::kAsIs || token_after) return;
  const SignableRequest request = ToSignable(ParseHttp(Read("request.txt")), rule_);
  const StatusOr<std::string> query =
      signer.PresignQuery(request, context_.credentials, context_.scope, context_.when, context_.expires);
  ASSERT_TRUE(query.ok()) << query.status().ToString();
  EXPECT_EQ(PresignParameters(*query), PresignParameters(presigned.raw_query));
  EXPECT_TRUE(query->ends_with("&X-Amz-Signature=" + Read("query-signature.txt"))) << *query;
}

INSTANTIATE_TEST_SUITE_P(Vectors, Sigv4CrtVectorTest, testing::ValuesIn(CrtCases()), TestNameOf);

TEST(Sigv4Vectors, EveryCaseOfBothSuitesIsFound) {
  EXPECT_GE(Suite2015Cases().size(), kSuite2015Cases) << "under " << VectorsDir();
  EXPECT_GE(CrtCases().size(), kCrtCases) << "under " << VectorsDir();
}

// ---------------------------------------------------------------------------
// The worked examples of AWS's S3 documentation ("Signature Calculations for
// the Authorization Header: Transferring Payload in a Single Chunk" and
// "Authenticating Requests: Using Query Parameters").

constexpr std::string_view kS3Host = "examplebucket.s3.amazonaws.com";
constexpr std::string_view kEmptyBodyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SigningScope kS3Scope{.region = "us-east-1", .service = "s3"};

Credentials S3DocCredentials() {
  return Credentials{.access_key_id = "AKIAIOSFODNN7EXAMPLE",
                     .secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                     .session_token = "",
                     .expiration = std::nullopt};
}

Clock::time_point S3DocTime() { return Utc(2013, 5, 24); }

std::string SignatureOf(const std::string& authorization) {
  const std::size_t at = authorization.find("Signature=");
  return at == std::string::npos ? std::string() : authorization.substr(at + 10);
}

TEST(Sigv4S3Examples, GetObjectWithRange) {
  Signer signer(PathRule::kAsIs);
  SignableRequest request{.method = "GET",
                          .path = "/test.txt",
                          .query = {},
                          .headers = {{"Host", std::string(kS3Host)}, {"Range", "bytes=0-9"}},
                          .payload_hash = std::string(kEmptyBodyHash)};
  signer.Sign(request, S3DocCredentials(), kS3Scope, S3DocTime());

  EXPECT_EQ(HeaderValue(request.headers, "x-amz-content-sha256"), kEmptyBodyHash);
  EXPECT_EQ(signer.CanonicalRequest(request),
            "GET\n"
            "/test.txt\n"
            "\n"
            "host:examplebucket.s3.amazonaws.com\n"
            "range:bytes=0-9\n"
            "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
            "x-amz-date:20130524T000000Z\n"
            "\n"
            "host;range;x-amz-content-sha256;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(signer.StringToSign(request, kS3Scope, S3DocTime()),
            "AWS4-HMAC-SHA256\n"
            "20130524T000000Z\n"
            "20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(HeaderValue(request.headers, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(Sigv4S3Examples, PutObjectKeepsTheEncodedKeyAsIs) {
  const std::string body = "Welcome to Amazon S3.";
  SignableRequest request{.method = "PUT",
                          .path = "/" + UriEncode("test$file.text", false),
                          .query = {},
                          .headers = {{"Host", std::string(kS3Host)},
                                      {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                                      {"x-amz-storage-class", "REDUCED_REDUNDANCY"}},
                          .payload_hash = crypto::HexEncode(crypto::Sha256Of(body))};
  ASSERT_EQ(request.path, "/test%24file.text");
  ASSERT_EQ(request.payload_hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");

  // Any other service would encode the wire path once more.
  EXPECT_EQ(Split(Signer(PathRule::kNormaliseAndEncode).CanonicalRequest(request), '\n')[1],
            "/test%2524file.text");

  Signer signer(PathRule::kAsIs);
  signer.Sign(request, S3DocCredentials(), kS3Scope, S3DocTime());
  EXPECT_EQ(Split(signer.CanonicalRequest(request), '\n')[1], "/test%24file.text");
  EXPECT_EQ(signer.StringToSign(request, kS3Scope, S3DocTime()),
            "AWS4-HMAC-SHA256\n"
            "20130524T000000Z\n"
            "20130524/us-east-1/s3/aws4_request\n"
            "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
  EXPECT_EQ(HeaderValue(request.headers, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
            "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST(Sigv4S3Examples, GetBucketLifecycleWithAnEmptyPayloadHash) {
  Signer signer(PathRule::kAsIs);
  // payload_hash left empty: it stands for the empty body.
  SignableRequest request{.method = "GET",
                          .path = "/",
                          .query = {{"lifecycle", ""}},
                          .headers = {{"Host", std::string(kS3Host)}},
                          .payload_hash = ""};
  signer.Sign(request, S3DocCredentials(), kS3Scope, S3DocTime());
  EXPECT_EQ(Split(signer.CanonicalRequest(request), '\n')[2], "lifecycle=");
  EXPECT_EQ(HeaderValue(request.headers, "x-amz-content-sha256"), kEmptyBodyHash);
  EXPECT_EQ(SignatureOf(HeaderValue(request.headers, "authorization")),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

TEST(Sigv4S3Examples, ListObjectsSortsTheQuery) {
  Signer signer(PathRule::kAsIs);
  SignableRequest request{.method = "GET",
                          .path = "/",
                          .query = {{"prefix", "J"}, {"max-keys", "2"}},
                          .headers = {{"Host", std::string(kS3Host)}},
                          .payload_hash = std::string(kEmptyBodyHash)};
  signer.Sign(request, S3DocCredentials(), kS3Scope, S3DocTime());
  EXPECT_EQ(Split(signer.CanonicalRequest(request), '\n')[2], "max-keys=2&prefix=J");
  EXPECT_EQ(SignatureOf(HeaderValue(request.headers, "authorization")),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

// The query of S3's documented presigned GET of /test.txt (24 hours).
constexpr std::string_view kDocumentedPresignedGetObject =
    "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z"
    "&X-Amz-Expires=86400"
    "&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

TEST(Sigv4S3Examples, PresignedGetObject) {
  Signer signer(PathRule::kAsIs);
  // The body hash is ignored: presigned S3 URLs sign UNSIGNED-PAYLOAD.
  const SignableRequest request{.method = "GET",
                                .path = "/test.txt",
                                .query = {},
                                .headers = {{"Host", std::string(kS3Host)}},
                                .payload_hash = std::string(kEmptyBodyHash)};
  const StatusOr<std::string> query =
      signer.PresignQuery(request, S3DocCredentials(), kS3Scope, S3DocTime(), std::chrono::hours(24));
  ASSERT_TRUE(query.ok()) << query.status().ToString();
  EXPECT_EQ(*query, kDocumentedPresignedGetObject);

  // The documented canonical request and string to sign of that URL.
  SignableRequest signed_part = request;
  signed_part.query = {{"X-Amz-Algorithm", "AWS4-HMAC-SHA256"},
                       {"X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"},
                       {"X-Amz-Date", "20130524T000000Z"},
                       {"X-Amz-Expires", "86400"},
                       {"X-Amz-SignedHeaders", "host"}};
  signed_part.payload_hash = "UNSIGNED-PAYLOAD";
  EXPECT_EQ(signer.CanonicalRequest(signed_part),
            "GET\n"
            "/test.txt\n"
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
            "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n"
            "host:examplebucket.s3.amazonaws.com\n"
            "\n"
            "host\n"
            "UNSIGNED-PAYLOAD");
  EXPECT_EQ(signer.StringToSign(signed_part, kS3Scope, S3DocTime()),
            "AWS4-HMAC-SHA256\n"
            "20130524T000000Z\n"
            "20130524/us-east-1/s3/aws4_request\n"
            "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04");
}

TEST(Sigv4S3Examples, PresignWithSessionTokenPutsItBeforeTheSignature) {
  Signer signer(PathRule::kAsIs);
  Credentials credentials = S3DocCredentials();
  credentials.session_token = "token/with+reserved=";
  const SignableRequest request{.method = "GET",
                                .path = "/test.txt",
                                .query = {},
                                .headers = {{"Host", std::string(kS3Host)}},
                                .payload_hash = ""};
  const StatusOr<std::string> query =
      signer.PresignQuery(request, credentials, kS3Scope, S3DocTime(), std::chrono::seconds(60));
  ASSERT_TRUE(query.ok()) << query.status().ToString();
  EXPECT_EQ(ParameterNames(*query),
            (std::vector<std::string>{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                                      "X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature"}));
  EXPECT_NE(query->find("&X-Amz-Security-Token=token%2Fwith%2Breserved%3D&"), std::string::npos) << *query;
  // The token is signed: the same URL without it has another signature.
  const StatusOr<std::string> without_token =
      signer.PresignQuery(request, S3DocCredentials(), kS3Scope, S3DocTime(), std::chrono::seconds(60));
  ASSERT_TRUE(without_token.ok());
  EXPECT_NE(SignatureOf(*query), SignatureOf(*without_token));
}

// ---------------------------------------------------------------------------
// The signer's own rules.

SignableRequest VanillaRequest() {
  return SignableRequest{.method = "GET",
                         .path = "/",
                         .query = {},
                         .headers = {{"Host", "example.amazonaws.com"}},
                         .payload_hash = ""};
}

// get-vanilla of the 2015 suite.
constexpr std::string_view kVanillaSignature = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

std::string SignedSignature(Signer& signer, const Credentials& credentials, const SigningScope& scope,
                            Clock::time_point when) {
  SignableRequest request = VanillaRequest();
  signer.Sign(request, credentials, scope, when);
  return SignatureOf(HeaderValue(request.headers, "authorization"));
}

std::string ExpectedVanillaSignature(const Credentials& credentials, const SigningScope& scope,
                                     Clock::time_point when) {
  SignableRequest request = VanillaRequest();
  request.headers.emplace_back("x-amz-date", AmzDate(when));
  const std::string string_to_sign = Signer(PathRule::kNormaliseAndEncode).StringToSign(request, scope, when);
  return IndependentSignature(credentials.secret_access_key, AmzDate(when).substr(0, 8), scope.region,
                              scope.service, string_to_sign);
}

TEST(Sigv4SigningKeyCache, EachDayRegionServiceAndSecretGetsItsOwnKey) {
  Signer signer(PathRule::kNormaliseAndEncode);
  const Clock::time_point day1 = Utc(2015, 8, 30, 12, 36);
  const Clock::time_point day2 = Utc(2015, 8, 31, 0, 0, 1);
  ASSERT_EQ(SignedSignature(signer, SuiteCredentials(), kSuiteScope, day1), kVanillaSignature);

  const std::string next_day = SignedSignature(signer, SuiteCredentials(), kSuiteScope, day2);
  EXPECT_NE(next_day, kVanillaSignature);
  EXPECT_EQ(next_day, ExpectedVanillaSignature(SuiteCredentials(), kSuiteScope, day2));

  const SigningScope other_region{.region = "eu-west-1", .service = "service"};
  EXPECT_EQ(SignedSignature(signer, SuiteCredentials(), other_region, day1),
            ExpectedVanillaSignature(SuiteCredentials(), other_region, day1));
  const SigningScope other_service{.region = "us-east-1", .service = "dynamodb"};
  EXPECT_EQ(SignedSignature(signer, SuiteCredentials(), other_service, day1),
            ExpectedVanillaSignature(SuiteCredentials(), other_service, day1));
  Credentials rotated = SuiteCredentials();
  rotated.secret_access_key = "a-rotated-secret";
  EXPECT_EQ(SignedSignature(signer, rotated, kSuiteScope, day1),
            ExpectedVanillaSignature(rotated, kSuiteScope, day1));

  // The first key is still right after the others were cached.
  EXPECT_EQ(SignedSignature(signer, SuiteCredentials(), kSuiteScope, day1), kVanillaSignature);
}

TEST(Sigv4SigningKeyCache, StaysRightPastItsCapacity) {
  Signer signer(PathRule::kNormaliseAndEncode);
  const Clock::time_point day1 = Utc(2015, 8, 30, 12, 36);
  for (int round = 0; round < 2; ++round) {
    for (unsigned day = 1; day <= 20; ++day) {
      const Clock::time_point when = Utc(2015, 9, day, 8);
      EXPECT_EQ(SignedSignature(signer, SuiteCredentials(), kSuiteScope, when),
                ExpectedVanillaSignature(SuiteCredentials(), kSuiteScope, when))
          << "round " << round << " day " << day;
    }
  }
  EXPECT_EQ(SignedSignature(signer, SuiteCredentials(), kSuiteScope, day1), kVanillaSignature);
}

TEST(Sigv4SigningKeyCache, ThreadsSharingOneSignerGetCorrectSignatures) {
  Signer signer(PathRule::kNormaliseAndEncode);
  const std::vector<SigningScope> scopes = {kSuiteScope, {.region = "us-west-2", .service = "service"},
                                            {.region = "us-east-1", .service = "secretsmanager"}};
  const std::vector<Clock::time_point> days = {Utc(2015, 8, 30, 12, 36), Utc(2015, 8, 31, 1)};
  std::vector<std::string> expected;
  for (const auto& scope : scopes) {
    for (const auto when : days) expected.push_back(ExpectedVanillaSignature(SuiteCredentials(), scope, when));
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < mismatches.size(); ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < 60; ++i) {
        const std::size_t pick = (i + t) % expected.size();
        const std::string signature =
            SignedSignature(signer, SuiteCredentials(), scopes[pick / days.size()], days[pick % days.size()]);
        if (signature != expected[pick]) ++mismatches[t];
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(mismatches.size(), 0));
}

TEST(Sigv4Presign, ExpiryMustBeOneSecondToSevenDays) {
  Signer signer(PathRule::kAsIs);
  const SignableRequest request = VanillaRequest();
  const auto presign = [&](std::chrono::seconds expires) {
    return signer.PresignQuery(request, SuiteCredentials(), kS3Scope, S3DocTime(), expires);
  };
  for (const auto expires : {std::chrono::seconds(0), std::chrono::seconds(-1), kMaxPresignExpiry + std::chrono::seconds(1)}) {
    const StatusOr<std::string> query = presign(expires);
    ASSERT_FALSE(query.ok()) << expires.count();
    EXPECT_EQ(query.status().code(), Code::kBadRequest);
  }
  EXPECT_TRUE(presign(std::chrono::seconds(1)).ok());
  const StatusOr<std::string> longest = presign(kMaxPresignExpiry);
  ASSERT_TRUE(longest.ok());
  EXPECT_NE(longest->find("&X-Amz-Expires=604800&"), std::string::npos) << *longest;
}

TEST(Sigv4Presign, SignsEveryHeaderPresent) {
  Signer signer(PathRule::kAsIs);
  SignableRequest request = VanillaRequest();
  request.headers.emplace_back("Content-Type", "image/png");
  const StatusOr<std::string> query = signer.PresignQuery(request, SuiteCredentials(), kS3Scope, S3DocTime(),
                                                          std::chrono::seconds(60));
  ASSERT_TRUE(query.ok());
  EXPECT_NE(query->find("&X-Amz-SignedHeaders=content-type%3Bhost&"), std::string::npos) << *query;
}

// --- GetPresigner ---------------------------------------------------------

TEST(Sigv4GetPresigner, GivesTheDocumentedPresignedGetObject) {
  Signer signer(PathRule::kAsIs);
  const StatusOr<GetPresigner> presigner =
      signer.PrepareGetPresign(kS3Host, S3DocCredentials(), kS3Scope, S3DocTime(), std::chrono::hours(24));
  ASSERT_TRUE(presigner.ok()) << presigner.status().ToString();
  EXPECT_EQ(presigner->Query("/test.txt"), kDocumentedPresignedGetObject);
}

TEST(Sigv4GetPresigner, AgreesWithPresignQueryForEveryPathRuleTokenAndPath) {
  const std::vector<std::string> paths = {
      "/test.txt", "/", "", "/images/alice/0b5f.png", "/a%20b/c%2Bd.jpg", "/x/../y/./z//w", "/dir/", "/%E2%82%AC"};
  for (const PathRule rule : {PathRule::kAsIs, PathRule::kNormaliseAndEncode}) {
    for (const std::string& token : std::vector<std::string>{"", "token/with+reserved=", std::string(1200, 'T')}) {
      Credentials credentials = S3DocCredentials();
      credentials.session_token = token;
      Signer signer(rule);
      const StatusOr<GetPresigner> presigner =
          signer.PrepareGetPresign(kS3Host, credentials, kS3Scope, S3DocTime(), std::chrono::seconds(900));
      ASSERT_TRUE(presigner.ok()) << presigner.status().ToString();
      for (const std::string& path : paths) {
        const SignableRequest get{.method = "GET",
                                  .path = path,
                                  .query = {},
                                  .headers = {{"host", std::string(kS3Host)}},
                                  .payload_hash = ""};
        const StatusOr<std::string> expected =
            signer.PresignQuery(get, credentials, kS3Scope, S3DocTime(), std::chrono::seconds(900));
        ASSERT_TRUE(expected.ok());
        EXPECT_EQ(presigner->Query(path), *expected)
            << "rule " << static_cast<int>(rule) << ", token of " << token.size() << " bytes, path " << path;
      }
    }
  }
}

TEST(Sigv4GetPresigner, RefusesTheExpiriesPresignQueryRefuses) {
  Signer signer(PathRule::kAsIs);
  for (const auto expires : {std::chrono::seconds(0), kMaxPresignExpiry + std::chrono::seconds(1)}) {
    const StatusOr<GetPresigner> presigner =
        signer.PrepareGetPresign(kS3Host, S3DocCredentials(), kS3Scope, S3DocTime(), expires);
    ASSERT_FALSE(presigner.ok()) << expires.count();
    EXPECT_EQ(presigner.status().code(), Code::kBadRequest);
  }
}

TEST(Sigv4Sign, ResigningReplacesTheEarlierSignature) {
  Signer signer(PathRule::kAsIs);
  SignableRequest request = VanillaRequest();
  Credentials with_token = SuiteCredentials("first-token");
  signer.Sign(request, with_token, kS3Scope, Utc(2015, 8, 30, 12, 36));
  // A retry: new time, refreshed credentials without a token.
  const Clock::time_point later = Utc(2015, 8, 30, 12, 37);
  signer.Sign(request, SuiteCredentials(), kS3Scope, later);

  SignableRequest fresh = VanillaRequest();
  Signer(PathRule::kAsIs).Sign(fresh, SuiteCredentials(), kS3Scope, later);
  for (std::string_view name : {"authorization", "x-amz-date", "x-amz-content-sha256"}) {
    EXPECT_EQ(HeaderCount(request.headers, name), 1u) << name;
    EXPECT_EQ(HeaderValue(request.headers, name), HeaderValue(fresh.headers, name)) << name;
  }
  EXPECT_EQ(HeaderCount(request.headers, "x-amz-security-token"), 0u);
}

TEST(Sigv4Sign, LeavesHeadersThatChangeInTransitUnsigned) {
  Signer signer(PathRule::kNormaliseAndEncode);
  SignableRequest request = VanillaRequest();
  request.headers.emplace_back("User-Agent", "imgsvc/1.0");
  request.headers.emplace_back("Expect", "100-continue");
  request.headers.emplace_back("Connection", "keep-alive");
  request.headers.emplace_back("Transfer-Encoding", "chunked");
  request.headers.emplace_back("X-Amzn-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793");
  signer.Sign(request, SuiteCredentials(), kSuiteScope, Utc(2015, 8, 30, 12, 36));
  EXPECT_EQ(SignatureOf(HeaderValue(request.headers, "authorization")), kVanillaSignature);
  EXPECT_NE(HeaderValue(request.headers, "authorization").find("SignedHeaders=host;x-amz-date,"),
            std::string::npos);
}

TEST(Sigv4UriEncode, KeepsOnlyUnreservedCharacters) {
  EXPECT_EQ(UriEncode("AZaz09-_.~", false), "AZaz09-_.~");
  EXPECT_EQ(UriEncode("a b+c=d&e%f*g", false), "a%20b%2Bc%3Dd%26e%25f%2Ag");
  EXPECT_EQ(UriEncode("\xE1\x88\xB4", false), "%E1%88%B4");  // U+1234, upper-case hex
  EXPECT_EQ(UriEncode(std::string_view("\0\xFF", 2), false), "%00%FF");
  EXPECT_EQ(UriEncode("", false), "");
}

// Kept bytes are copied in runs: each byte must encode the same wherever it
// falls in a run (first, inside, last, alone).
TEST(Sigv4UriEncode, EncodesEveryByteTheSameWhereverItFallsInARun) {
  for (int c = 0; c < 256; ++c) {
    const auto byte = static_cast<unsigned char>(c);
    const bool unreserved = std::isalnum(byte) || byte == '-' || byte == '_' || byte == '.' || byte == '~';
    char hex[4];
    std::snprintf(hex, sizeof hex, "%%%02X", c);
    for (const bool keep_slash : {false, true}) {
      const std::string expected = unreserved || (keep_slash && byte == '/') ? std::string(1, static_cast<char>(c)) : hex;
      for (const auto& [before, after] : std::vector<std::pair<std::string, std::string>>{
               {"", ""}, {"ab", ""}, {"", "cd"}, {"key-1.png", "~x"}}) {
        EXPECT_EQ(UriEncode(before + static_cast<char>(c) + after, keep_slash), before + expected + after)
            << "byte " << c << (keep_slash ? " keeping /" : "");
      }
    }
  }
}

TEST(Sigv4UriEncode, SlashIsKeptOnlyWhenAsked) {
  EXPECT_EQ(UriEncode("/photos/a b.png", true), "/photos/a%20b.png");
  EXPECT_EQ(UriEncode("/photos/a b.png", false), "%2Fphotos%2Fa%20b.png");
}

TEST(Sigv4AmzDate, FormatsUtcToTheSecond) {
  EXPECT_EQ(AmzDate(Utc(2015, 8, 30, 12, 36)), "20150830T123600Z");
  EXPECT_EQ(AmzDate(Utc(2015, 8, 30, 12, 36) + std::chrono::milliseconds(999)), "20150830T123600Z");
  EXPECT_EQ(AmzDate(Utc(2016, 2, 29, 23, 59, 59)), "20160229T235959Z");
  EXPECT_EQ(AmzDate(Utc(2100, 1, 1)), "21000101T000000Z");
  EXPECT_EQ(AmzDate(Clock::time_point{}), "19700101T000000Z");
}

}  // namespace sigv4_test
}  // namespace imgsvc::aws
