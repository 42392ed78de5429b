// What SigV4 costs on the request path of the AWS backend: presigning the
// download URL every GET /api/v1/images/{id} returns, and signing the one
// DynamoDB GetItem that GET makes; and reading the Query answer a list-20
// gets back. The requests and answers have the shape and size of the real
// ones (virtual-hosted S3 URL, a UUID key, a GetItem body, a page of 20
// items as DynamoDB returns them); nothing goes on the wire. Figures and the command line: docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aws/aws_client.h"
#include "aws/credentials.h"
#include "aws/sigv4.h"
#include "crypto/crypto.h"
#include "net/http_client.h"
#include "storage/aws/dynamodb_answer.h"
#include "storage/aws/s3_blob_store.h"

namespace imgsvc::aws {
namespace {

const Credentials kCredentials{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "", std::nullopt};
const SigningScope kS3Scope{"us-east-1", "s3"};
const SigningScope kDynamoDbScope{"us-east-1", "dynamodb"};
constexpr std::chrono::seconds kUrlLifetime{3600};  // the API's default expires_in
constexpr const char* kBucketHost = "image-storage-bucket.s3.us-east-1.amazonaws.com";
constexpr const char* kImageKey = "images/alice/0b7c4a1e-9d5f-4c2b-8e3a-6f1d2c9b8a74.png";

std::chrono::system_clock::time_point FixedTime() {
  return std::chrono::sys_days{std::chrono::year{2026} / 11 / 26} + std::chrono::hours{12};
}

// Temporary credentials, what a Lambda or ECS role signs with: the session
// token (about 1,100 base64 characters from STS, '+' and '/' included) goes
// into every presigned URL, percent-encoded for the canonical request and
// again for the URL itself.
Credentials SessionCredentials() {
  constexpr std::string_view kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string token = "IQoJb3JpZ2luX2VjE";
  for (std::size_t i = 0; token.size() < 1100; ++i) token.push_back(kBase64[i * 37 % kBase64.size()]);
  token += "=";
  return {"ASIAQ3EGQZ7XEXAMPLE5", kCredentials.secret_access_key, std::move(token),
          std::chrono::system_clock::now() + std::chrono::hours{6}};
}

// A presigned URL (or its query) carries the session token exactly when the
// credentials have one.
bool TokenAsExpected(std::string_view url, const Credentials& credentials) {
  return (url.find("X-Amz-Security-Token=") != std::string_view::npos) != credentials.session_token.empty();
}

SignableRequest S3Get() {
  return SignableRequest{"GET", std::string("/") + kImageKey, {}, {{"host", kBucketHost}}, {}};
}

// The steady state: one signing key per day, derived once and cached.
void BM_PresignGet(benchmark::State& state, const Credentials& credentials) {
  Signer signer(PathRule::kAsIs);
  const SignableRequest request = S3Get();
  const StatusOr<std::string> check = signer.PresignQuery(request, credentials, kS3Scope, FixedTime(), kUrlLifetime);
  if (!check.ok() || !TokenAsExpected(*check, credentials)) return state.SkipWithError("presigning fails");
  for (auto _ : state) {
    StatusOr<std::string> query = signer.PresignQuery(request, credentials, kS3Scope, FixedTime(), kUrlLifetime);
    benchmark::DoNotOptimize(query);
  }
}
BENCHMARK_CAPTURE(BM_PresignGet, long_term_keys, kCredentials)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PresignGet, session_token, SessionCredentials())->Unit(benchmark::kMicrosecond);

// A new date every time, so the four chained HMACs of the signing key are
// derived on each call: the first presign of a day.
void BM_PresignGetColdKey(benchmark::State& state) {
  Signer signer(PathRule::kAsIs);
  const SignableRequest request = S3Get();
  auto when = FixedTime();
  for (auto _ : state) {
    when += std::chrono::days{1};
    StatusOr<std::string> query = signer.PresignQuery(request, kCredentials, kS3Scope, when, kUrlLifetime);
    benchmark::DoNotOptimize(query);
  }
}
BENCHMARK(BM_PresignGetColdKey)->Unit(benchmark::kMicrosecond);

// The headers AwsClient::Send puts on a DynamoDB call, and the body hash it
// takes before signing; the GetItem body is the one a GET sends.
void BM_SignDynamoDbRequest(benchmark::State& state) {
  Signer signer(PathRule::kNormaliseAndEncode);
  const std::string body =
      R"({"TableName":"ImageMetadata","Key":{"image_id":{"S":"0b7c4a1e-9d5f-4c2b-8e3a-6f1d2c9b8a74"}},)"
      R"("ConsistentRead":true})";
  for (auto _ : state) {
    SignableRequest request{"POST", "/", {}, {}, crypto::HexEncode(crypto::Sha256Of(body))};
    request.headers = {{"content-type", "application/x-amz-json-1.0"},
                       {"x-amz-target", "DynamoDB_20120810.GetItem"},
                       {"host", "dynamodb.us-east-1.amazonaws.com"},
                       {"amz-sdk-invocation-id", "3f2c7d0e-5b1a-4c8e-9f6d-2a7b1c0e4d59"},
                       {"amz-sdk-request", "attempt=1; max=3"}};
    signer.Sign(request, kCredentials, kDynamoDbScope, FixedTime());
    benchmark::DoNotOptimize(request);
  }
}
BENCHMARK(BM_SignDynamoDbRequest)->Unit(benchmark::kMicrosecond);

std::shared_ptr<AwsClient> OfflineClient(const Credentials& credentials) {
  // The HTTP client is never used: presigning makes no call.
  return std::make_shared<AwsClient>(std::make_shared<net::HttpClient>(),
                                     std::make_shared<StaticCredentialsProvider>(credentials));
}

// Keys enough that a thread presigning them in turn has signed none of them
// in the same second (AwsClient remembers the last 128 URLs of a second).
std::vector<std::string> DistinctKeys() {
  std::vector<std::string> keys;
  for (int i = 0; i < 65536; ++i) keys.push_back("images/user/" + std::to_string(i) + "-" + kImageKey);
  return keys;
}

// End to end in the client: credentials, the clock, the URL string; each
// URL signed afresh.
void BM_AwsClientPresignGet(benchmark::State& state) {
  const std::shared_ptr<AwsClient> client = OfflineClient(kCredentials);
  const ServiceTarget target{net::Endpoint{"https", kBucketHost, 443}, "us-east-1", "s3"};
  std::vector<std::string> paths = DistinctKeys();
  for (std::string& path : paths) path.insert(0, "/");
  std::size_t next = 0;
  for (auto _ : state) {
    StatusOr<AwsClient::Presigned> presigned = client->PresignGet(target, paths[next], kUrlLifetime);
    next = (next + 1) % paths.size();
    benchmark::DoNotOptimize(presigned);
  }
}
BENCHMARK(BM_AwsClientPresignGet)->Unit(benchmark::kMicrosecond);

// What the GET handler calls: the store's key check and encoding on top.
// `again`: the same key each time, as a listing repeated within the second
// asks; otherwise each URL is signed afresh.
void BM_S3BlobStorePresignGet(benchmark::State& state, const Credentials& credentials, bool again) {
  storage::S3Options options;
  options.bucket = "image-storage-bucket";
  options.addressing = storage::S3Addressing::kVirtual;
  storage::S3BlobStore store(OfflineClient(credentials),
                             ServiceTarget{net::Endpoint{"https", "s3.us-east-1.amazonaws.com", 443}, "us-east-1", "s3"},
                             std::move(options));
  const StatusOr<core::PresignedUrl> check = store.PresignGet(kImageKey, kUrlLifetime);
  if (!check.ok() || !TokenAsExpected(check->url, credentials)) return state.SkipWithError("presigning fails");
  const std::vector<std::string> keys = again ? std::vector<std::string>{kImageKey} : DistinctKeys();
  std::size_t next = 0;
  for (auto _ : state) {
    StatusOr<core::PresignedUrl> url = store.PresignGet(keys[next], kUrlLifetime);
    next = (next + 1) % keys.size();
    benchmark::DoNotOptimize(url);
  }
}
BENCHMARK_CAPTURE(BM_S3BlobStorePresignGet, long_term_keys, kCredentials, false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_S3BlobStorePresignGet, session_token, SessionCredentials(), false)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_S3BlobStorePresignGet, again_session_token, SessionCredentials(), true)
    ->Unit(benchmark::kMicrosecond);

// A Query page of 20 items as the metadata store writes them (attribute
// names and value types of ItemOf), with the LastEvaluatedKey and counts
// DynamoDB puts around them: about 9.5 KB.
std::string QueryAnswer() {
  std::string answer = R"({"ScannedCount":20,"LastEvaluatedKey":{"image_id":{"S":"3355885c-18ef-4a1b-849f-b4d67cef585e"},)"
                       R"("user_id":{"S":"alice"},"created_at":{"S":"2026-11-27T18:33:33.397990Z"}},"Count":20,"Items":[)";
  for (int i = 0; i < 20; ++i) {
    const std::string id = std::to_string(10 + i) + "005f6f-e101-4820-9a01-0d21821069e7";
    const std::string at = "2026-11-27T18:33:33.4376" + std::to_string(10 + i) + "Z";
    if (i > 0) answer += ',';
    answer += R"({"image_id":{"S":")" + id + R"("},"user_id":{"S":"alice"},"filename":{"S":"holiday-)" +
              std::to_string(i) + R"(.png"},"format":{"S":"png"},"content_type":{"S":"image/png"},)"
              R"("size_bytes":{"N":"4129"},"width":{"N":"64"},"height":{"N":"64"},)"
              R"("sha256":{"S":"b53482da85c83de06ff44004a2102d4e51a07adc9ac67ba2d0ced0004d75f69f"},)"
              R"("tags":{"L":[{"S":"cat"},{"S":"dog"}]},"category":{"S":"animals"},"visibility":{"S":"public"},)"
              R"("created_at":{"S":")" + at + R"("},"updated_at":{"S":")" + at + R"("}})";
  }
  return answer + "]}";
}

// Reading it into an answer kept from the page before, as each worker
// thread does.
void BM_ReadQueryAnswer(benchmark::State& state) {
  const std::string body = QueryAnswer();
  storage::dynamodb::ItemAnswer answer;
  if (!storage::dynamodb::ReadItemAnswerInto(body, answer).ok() || answer.items.size() != 20) {
    return state.SkipWithError("the answer does not read");
  }
  for (auto _ : state) {
    Status status = storage::dynamodb::ReadItemAnswerInto(body, answer);
    benchmark::DoNotOptimize(status);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ReadQueryAnswer)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace imgsvc::aws
