// The store contracts, run against the AWS backend: S3 and DynamoDB reached
// through the local peers' fronts, which refuse any request whose SigV4
// signature the AWS SDK for JavaScript computes differently. Also checks
// that the fronts (and the Secrets Manager stand-in) do refuse a wrong
// signature, since every other AWS test relies on it.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "aws/credentials.h"
#include "storage/aws/dynamodb_metadata_store.h"
#include "storage/aws/s3_blob_store.h"
#include "storage/aws_peers.h"
#include "storage/blob_store_contract.h"
#include "storage/metadata_store_contract.h"

namespace imgsvc::storage::testing {
namespace aws_contract_test {

// A plain HTTP GET of a presigned URL, as a browser would send it.
StatusOr<std::string> FetchPresigned(net::HttpClient& http, const std::string& url) {
  const std::size_t scheme_end = url.find("://");
  const std::size_t target_start = scheme_end == std::string::npos ? std::string::npos : url.find('/', scheme_end + 3);
  if (target_start == std::string::npos) return Status(Code::kBadRequest, "not an absolute URL: " + url);
  IMGSVC_ASSIGN_OR_RETURN(net::Endpoint endpoint, net::Endpoint::Parse(url.substr(0, target_start)));
  net::ClientRequest request;
  request.method = "GET";
  request.target = url.substr(target_start);
  IMGSVC_ASSIGN_OR_RETURN(net::ClientResponse response, http.Send(endpoint, request));
  if (response.status >= 200 && response.status < 300) return std::move(response.body);
  const std::string detail = "GET " + request.target + ": " + std::to_string(response.status) + " " + response.body;
  if (response.status == 403) return Status(Code::kForbidden, detail);
  if (response.status == 404) return Status(Code::kNotFound, detail);
  return Status(Code::kInternal, detail);
}

core::Micros SystemNow() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Each test gets a bucket of its own. Presigned URLs are checked by the front
// against the real clock, so time passes by sleeping.
BlobStoreHarness MakeS3BlobStore() {
  const AwsPeers* peers = Peers();
  if (peers == nullptr) return {};
  S3Options options;
  options.bucket = UniqueName("contract");
  auto store = std::make_unique<S3BlobStore>(peers->client, peers->s3, options);
  if (Status created = store->CreateBucketIfMissing(); !created.ok()) {
    ADD_FAILURE() << "bucket " << options.bucket << ": " << created.ToString();
    return {};
  }
  BlobStoreHarness harness;
  harness.store = std::move(store);
  harness.fetch = [http = peers->http](const std::string& url) { return FetchPresigned(*http, url); };
  harness.now = SystemNow;
  harness.advance = [](std::chrono::seconds by) { std::this_thread::sleep_for(by); };
  return harness;
}

// Each test gets a table of its own. dynalite updates its indexes with the
// item, so listings need no settling.
std::unique_ptr<core::MetadataStore> MakeDynamoDbMetadataStore() {
  const AwsPeers* peers = Peers();
  if (peers == nullptr) return nullptr;
  const std::string table = UniqueName("contract");
  auto store = std::make_unique<DynamoDbMetadataStore>(peers->client, peers->dynamodb, table);
  if (Status created = store->CreateTableIfMissing(); !created.ok()) {
    ADD_FAILURE() << "table " << table << ": " << created.ToString();
    return nullptr;
  }
  return store;
}

// A client signing with the right key id and the wrong secret.
aws::AwsClient WrongSecretClient(const AwsPeers& peers) {
  return aws::AwsClient(peers.http, std::make_shared<aws::StaticCredentialsProvider>(
                                        aws::Credentials{"test", "not-the-secret", "", std::nullopt}));
}

TEST(LocalAwsPeers, TheS3FrontAcceptsOurSignatureAndRefusesAWrongOne) {
  const AwsPeers* peers = Peers();
  ASSERT_NE(peers, nullptr);
  aws::AwsRequest list_buckets;
  list_buckets.method = "GET";

  StatusOr<aws::AwsResponse> accepted = peers->client->Send(peers->s3, list_buckets);
  ASSERT_TRUE(accepted.ok()) << accepted.status().ToString();
  EXPECT_EQ(accepted->status, 200) << accepted->body;

  aws::AwsClient wrong = WrongSecretClient(*peers);
  StatusOr<aws::AwsResponse> refused = wrong.Send(peers->s3, list_buckets);
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  EXPECT_EQ(refused->status, 403);
  EXPECT_EQ(refused->error.code, "SignatureDoesNotMatch") << refused->body;
}

// DynamoDB, like the other JSON services, answers a bad signature with 400.
TEST(LocalAwsPeers, TheDynamoDbFrontAcceptsOurSignatureAndRefusesAWrongOne) {
  const AwsPeers* peers = Peers();
  ASSERT_NE(peers, nullptr);
  StatusOr<aws::AwsResponse> accepted =
      peers->client->CallJson(peers->dynamodb, "DynamoDB_20120810.ListTables", "1.0", "{}");
  ASSERT_TRUE(accepted.ok()) << accepted.status().ToString();
  EXPECT_EQ(accepted->status, 200) << accepted->body;

  aws::AwsClient wrong = WrongSecretClient(*peers);
  StatusOr<aws::AwsResponse> refused = wrong.CallJson(peers->dynamodb, "DynamoDB_20120810.ListTables", "1.0", "{}");
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  EXPECT_EQ(refused->status, 400);
  EXPECT_EQ(refused->error.code, "InvalidSignatureException") << refused->body;
}

TEST(LocalAwsPeers, TheSecretsManagerStandInAcceptsOurSignatureAndRefusesAWrongOne) {
  const AwsPeers* peers = Peers();
  ASSERT_NE(peers, nullptr);
  const std::string body = R"({"SecretId":")" + UniqueName("absent") + R"("})";
  // Past the signature check, the stand-in looks the secret up.
  StatusOr<aws::AwsResponse> accepted =
      peers->client->CallJson(peers->secretsmanager, "secretsmanager.GetSecretValue", "1.1", body);
  ASSERT_TRUE(accepted.ok()) << accepted.status().ToString();
  EXPECT_EQ(accepted->error.code, "ResourceNotFoundException") << accepted->body;

  aws::AwsClient wrong = WrongSecretClient(*peers);
  StatusOr<aws::AwsResponse> refused =
      wrong.CallJson(peers->secretsmanager, "secretsmanager.GetSecretValue", "1.1", body);
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  EXPECT_EQ(refused->status, 400);
  EXPECT_EQ(refused->error.code, "InvalidSignatureException") << refused->body;
}

// DynamoDB's GSIs are eventually consistent, so the service promises no
// read-your-writes on listings. dynalite's index is immediate; against real
// DynamoDB set IMGSVC_TEST_GSI_SETTLE_MS (e.g. 2000) so listings are read
// after the index has caught up.
void SettleIndex() {
  const char* settle = std::getenv("IMGSVC_TEST_GSI_SETTLE_MS");
  if (settle == nullptr || *settle == '\0') return;
  std::this_thread::sleep_for(std::chrono::milliseconds(std::strtol(settle, nullptr, 10)));
}

}  // namespace aws_contract_test

INSTANTIATE_TEST_SUITE_P(Aws, BlobStoreContract,
                         ::testing::Values(BlobStoreBackend{"s3", aws_contract_test::MakeS3BlobStore}),
                         BlobStoreBackendName);

INSTANTIATE_TEST_SUITE_P(Aws, MetadataStoreContract,
                         ::testing::Values(MetadataStoreBackend{"dynamodb",
                                                                aws_contract_test::MakeDynamoDbMetadataStore,
                                                                aws_contract_test::SettleIndex}),
                         MetadataStoreBackendName);

}  // namespace imgsvc::storage::testing
