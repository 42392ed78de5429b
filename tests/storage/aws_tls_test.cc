// TLS end to end, as CI runs it: Debian's nginx, with a certificate from a
// throwaway CA made by the openssl CLI, terminates TLS in front of the
// SigV4-verifying DynamoDB front of the local peers. The store's requests
// are signed for "localhost:PORT" and nginx forwards that Host unchanged, so
// every call crosses TLS, our certificate verification and the independent
// signature check. A client trusting another CA must refuse the handshake.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "aws/aws_client.h"
#include "aws/credentials.h"
#include "net/http_client.h"
#include "storage/aws/dynamodb_metadata_store.h"
#include "storage/aws_peers.h"
#include "storage/sample_record.h"
#include "support/local_aws.h"
#include "support/tls_peers.h"

namespace imgsvc::storage {
namespace aws_tls_test {

using ::testing::HasSubstr;
using imgsvc::testing::TlsFront;


class AwsTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const storage::testing::AwsPeers* peers = storage::testing::Peers();
    if (peers == nullptr) return;
    imgsvc::testing::TlsFrontOptions options;
    options.upstream = peers->dynamodb.endpoint.Origin();
    // Both ways the tests reach the front.
    options.subject_alt_names = "DNS:localhost, IP:127.0.0.1";
    StatusOr<std::unique_ptr<TlsFront>> front = TlsFront::Start(options);
    if (front.ok()) {
      front_ = std::move(*front).release();
    } else {
      ADD_FAILURE() << "TLS front: " << front.status().ToString();
    }
  }

  static void TearDownTestSuite() {
    delete front_;
    front_ = nullptr;
  }

  void SetUp() override {
    peers_ = storage::testing::Peers();
    ASSERT_NE(peers_, nullptr);
    ASSERT_NE(front_, nullptr) << "the TLS front did not start";
  }

  void TearDown() override {
    for (const std::string& table : tables_) {
      boost::json::object body;
      body["TableName"] = table;
      (void)peers_->client->CallJson(peers_->dynamodb, "DynamoDB_20120810.DeleteTable", "1.0",
                                     boost::json::serialize(body));
    }
  }

  // A client of `host` through nginx, trusting only `ca_file`.
  struct TlsClient {
    std::shared_ptr<net::HttpClient> http;
    std::shared_ptr<aws::AwsClient> aws;
    aws::ServiceTarget target;
  };
  TlsClient ClientFor(const std::string& host, const std::string& ca_file) {
    net::HttpClientOptions options;
    options.ca_file = ca_file;
    TlsClient client;
    client.http = std::make_shared<net::HttpClient>(options);
    client.aws = std::make_shared<aws::AwsClient>(
        client.http, std::make_shared<aws::StaticCredentialsProvider>(
                         aws::Credentials{imgsvc::testing::kLocalAwsAccessKeyId,
                                          imgsvc::testing::kLocalAwsSecretAccessKey, "", std::nullopt}));
    StatusOr<net::Endpoint> endpoint =
        net::Endpoint::Parse("https://" + host + ":" + std::to_string(front_->port()));
    EXPECT_TRUE(endpoint.ok()) << endpoint.status().ToString();
    if (endpoint.ok()) client.target = aws::ServiceTarget{*endpoint, imgsvc::testing::kLocalAwsRegion, "dynamodb"};
    return client;
  }

  std::string NewTable() {
    tables_.push_back(storage::testing::UniqueName("tls"));
    return tables_.back();
  }

  // Whether the table exists, asked over plain HTTP (not through nginx).
  bool TableExists(const std::string& table) {
    boost::json::object body;
    body["TableName"] = table;
    StatusOr<aws::AwsResponse> response = peers_->client->CallJson(
        peers_->dynamodb, "DynamoDB_20120810.DescribeTable", "1.0", boost::json::serialize(body));
    EXPECT_TRUE(response.ok()) << response.status().ToString();
    if (!response.ok()) return false;
    if (response->ok()) return true;
    EXPECT_EQ(response->error.code, "ResourceNotFoundException");
    return false;
  }

  // The round trip every request path of the store takes, over `client`.
  void ExpectStoreWorks(const TlsClient& client) {
    const std::string table = NewTable();
    DynamoDbMetadataStore store(client.aws, client.target, table);
    const Status created = store.CreateTableIfMissing();
    ASSERT_TRUE(created.ok()) << created.ToString();
    ASSERT_TRUE(store.CheckReady().ok());

    const std::string user = storage::testing::UniqueName("tls-user");
    const std::vector<core::ImageRecord> records{testing::SampleRecord(user, 1), testing::SampleRecord(user, 2)};
    const Status put = store.PutNew(records);
    ASSERT_TRUE(put.ok()) << put.ToString();

    StatusOr<core::ImageRecord> got = store.Get(records[0].image_id);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, records[0]);
    // The same emulator is behind nginx: the record is there over plain HTTP.
    StatusOr<core::ImageRecord> direct =
        DynamoDbMetadataStore(peers_->client, peers_->dynamodb, table).Get(records[1].image_id);
    ASSERT_TRUE(direct.ok()) << direct.status().ToString();
    EXPECT_EQ(*direct, records[1]);

    core::ListQuery query;
    query.user_id = user;
    query.viewer = user;
    StatusOr<core::ListPage> page = store.List(query, std::nullopt, 10, 10);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    ASSERT_EQ(page->items.size(), 2u);
    EXPECT_EQ(page->items[0].image_id, records[1].image_id);  // newest first
    EXPECT_EQ(page->items[1].image_id, records[0].image_id);

    const std::vector<std::string> ids{records[0].image_id, records[1].image_id};
    const std::vector<core::DeleteOutcome> deleted = store.DeleteOwned(user, ids);
    ASSERT_EQ(deleted.size(), 2u);
    for (const core::DeleteOutcome& outcome : deleted) {
      EXPECT_EQ(outcome.result, core::DeleteResult::kDeleted) << outcome.image_id << ": " << outcome.detail;
    }
    EXPECT_EQ(store.Get(records[0].image_id).status().code(), Code::kNotFound);
  }

  static TlsFront* front_;
  const storage::testing::AwsPeers* peers_ = nullptr;
  std::vector<std::string> tables_;
};

TlsFront* AwsTlsTest::front_ = nullptr;

TEST_F(AwsTlsTest, StoreWorksThroughTlsFrontOnOneKeptAliveConnection) {
  const TlsClient client = ClientFor("localhost", front_->ca_file());
  ExpectStoreWorks(client);
  if (HasFatalFailure()) return;

  const net::HttpClient::Stats stats = client.http->stats();
  EXPECT_GE(stats.requests, 8u);
  EXPECT_EQ(stats.connections_opened, 1u) << "nginx keeps the connection alive for " << stats.requests
                                          << " requests";
}

TEST_F(AwsTlsTest, CertificateFromAnotherCaIsRefusedBeforeAnyRequest) {
  const TlsClient client = ClientFor("localhost", front_->other_ca_file());
  const std::string table = NewTable();
  DynamoDbMetadataStore store(client.aws, client.target, table);

  const Status ready = store.CheckReady();
  EXPECT_EQ(ready.code(), Code::kUnavailable) << ready.ToString();
  const Status created = store.CreateTableIfMissing();
  EXPECT_EQ(created.code(), Code::kUnavailable) << created.ToString();
  EXPECT_THAT(created.message(), HasSubstr("certificate verify failed"));
  EXPECT_THAT(created.message(), HasSubstr("unable to get local issuer certificate"));

  EXPECT_FALSE(TableExists(table)) << "CreateTable reached DynamoDB";
}

TEST_F(AwsTlsTest, IpAddressSubjectAltNameIsAccepted) {
  const TlsClient client = ClientFor("127.0.0.1", front_->ca_file());
  ExpectStoreWorks(client);
}

}  // namespace aws_tls_test
}  // namespace imgsvc::storage
