// TLS end to end, as CI runs it: Debian's nginx, with a certificate from a
// throwaway CA made by the openssl CLI, terminates TLS in front of the
// SigV4-verifying DynamoDB front of the local peers. The store's requests
// are signed for "localhost:PORT" and nginx forwards that Host unchanged, so
// every call crosses TLS, our certificate verification and the independent
// signature check. A client trusting another CA must refuse the handshake.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "aws/aws_client.h"
#include "aws/credentials.h"
#include "net/http_client.h"
#include "storage/aws/dynamodb_metadata_store.h"
#include "storage/aws_peers.h"
#include "storage/temp_dir.h"
#include "support/local_aws.h"
#include "support/process.h"

namespace imgsvc::storage {
namespace aws_tls_test {

using ::testing::HasSubstr;

constexpr core::Micros kEpoch = 1'767'225'600'000'000;  // 2026-01-01T00:00:00Z
constexpr auto kCommandTimeout = std::chrono::seconds(60);
constexpr auto kStartTimeout = std::chrono::seconds(30);
constexpr int kStartAttempts = 5;

// Extensions as a public CA would set them: the CA may only sign, the server
// certificate only serves and names both ways the tests reach it.
constexpr char kOpensslConfig[] = R"([req]
distinguished_name = subject
prompt = no
[subject]
CN = imgsvc test
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
)";

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status(Code::kInternal, "cannot write " + path);
  return Status::Ok();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

Status Openssl(const std::vector<std::string>& args) {
  IMGSVC_ASSIGN_OR_RETURN(imgsvc::testing::CommandResult result,
                          imgsvc::testing::RunCommand(IMGSVC_OPENSSL, args, {}, kCommandTimeout));
  if (!result.exit.exited || result.exit.code != 0) {
    std::string command = "openssl";
    for (const std::string& arg : args) command += " " + arg;
    return Status(Code::kInternal, command + " failed (exit " + std::to_string(result.exit.code) + ", signal " +
                                       std::to_string(result.exit.signal) + ")");
  }
  return Status::Ok();
}

// A self-signed CA certificate (P-256) at dir/name.crt, its key at dir/name.key.
Status MakeCa(const std::string& dir, const std::string& name, const std::string& config) {
  return Openssl({"req", "-x509", "-config", config, "-extensions", "ca_ext", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/" + name + ".key", "-out",
                  dir + "/" + name + ".crt", "-days", "2", "-subj", "/CN=imgsvc " + name});
}

// dir/server.crt for localhost and 127.0.0.1, signed by dir/ca.
Status MakeServerCertificate(const std::string& dir, const std::string& config) {
  IMGSVC_RETURN_IF_ERROR(Openssl({"req", "-new", "-config", config, "-newkey", "ec", "-pkeyopt",
                                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/server.key", "-out",
                                  dir + "/server.csr", "-subj", "/CN=localhost"}));
  return Openssl({"x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/ca.crt", "-CAkey", dir + "/ca.key",
                  "-set_serial", "2", "-days", "2", "-extfile", config, "-extensions", "server_ext", "-out",
                  dir + "/server.crt"});
}

// A port nothing listens on right now; nginx may still lose it to a racing
// process, which Start() handles by trying again.
StatusOr<std::uint16_t> FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status(Code::kInternal, "socket failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  const bool bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0 &&
                     ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  ::close(fd);
  if (!bound) return Status(Code::kInternal, "cannot bind a loopback port");
  return ntohs(address.sin_port);
}

bool AcceptsConnections(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  const bool connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return connected;
}

// nginx terminating TLS on 127.0.0.1:port and proxying to `upstream`.
class TlsFront {
 public:
  // Makes the CAs and certificates, then starts nginx.
  static StatusOr<std::unique_ptr<TlsFront>> Start(const std::string& upstream) {
    std::unique_ptr<TlsFront> front(new TlsFront());
    const std::string& dir = front->dir_.path();
    if (dir.empty()) return Status(Code::kInternal, "cannot create a temp dir");
    const std::string config = dir + "/openssl.cnf";
    IMGSVC_RETURN_IF_ERROR(WriteFile(config, kOpensslConfig));
    IMGSVC_RETURN_IF_ERROR(MakeCa(dir, "ca", config));
    IMGSVC_RETURN_IF_ERROR(MakeServerCertificate(dir, config));
    IMGSVC_RETURN_IF_ERROR(MakeCa(dir, "other-ca", config));
    Status started;
    for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
      started = front->StartNginx(upstream);
      if (started.ok()) return front;
    }
    return started;
  }

  TlsFront(const TlsFront&) = delete;
  TlsFront& operator=(const TlsFront&) = delete;
  ~TlsFront() {
    if (nginx_ == nullptr) return;
    (void)nginx_->Signal(SIGTERM);
    (void)nginx_->Wait(std::chrono::seconds(10));  // else the Process destructor kills it
  }

  std::uint16_t port() const { return port_; }
  std::string ca_file() const { return dir_.path() + "/ca.crt"; }
  std::string other_ca_file() const { return dir_.path() + "/other-ca.crt"; }

 private:
  TlsFront() = default;

  Status StartNginx(const std::string& upstream) {
    nginx_.reset();
    IMGSVC_ASSIGN_OR_RETURN(port_, FreeLoopbackPort());
    const std::string& dir = dir_.path();
    const std::string error_log = dir + "/error.log";
    // One process (no master), so it can be stopped by pid and keeps the
    // rights it starts with. Every path nginx writes is in the temp dir.
    std::ostringstream config;
    config << "master_process off;\n"
           << "pid " << dir << "/nginx.pid;\n"
           << "error_log " << error_log << " warn;\n"
           << "events { worker_connections 64; }\n"
           << "http {\n"
           << "  access_log off;\n"
           << "  client_body_temp_path " << dir << "/client_body;\n"
           << "  proxy_temp_path " << dir << "/proxy;\n"
           << "  fastcgi_temp_path " << dir << "/fastcgi;\n"
           << "  uwsgi_temp_path " << dir << "/uwsgi;\n"
           << "  scgi_temp_path " << dir << "/scgi;\n"
           // Far beyond any test's length: the keep-alive assertion must not
           // depend on how slow the machine is.
           << "  keepalive_timeout 600s;\n"
           << "  server {\n"
           << "    listen 127.0.0.1:" << port_ << " ssl;\n"
           << "    ssl_certificate " << dir << "/server.crt;\n"
           << "    ssl_certificate_key " << dir << "/server.key;\n"
           << "    ssl_protocols TLSv1.2 TLSv1.3;\n"
           << "    client_max_body_size 64m;\n"
           << "    client_body_buffer_size 1m;\n"
           << "    location / {\n"
           << "      proxy_pass " << upstream << ";\n"
           << "      proxy_http_version 1.1;\n"
           // The signature covers Host: the client signed localhost:PORT.
           << "      proxy_set_header Host $http_host;\n"
           << "      proxy_set_header Connection \"\";\n"
           << "      proxy_buffer_size 64k;\n"
           << "      proxy_buffers 16 64k;\n"
           << "      proxy_read_timeout 120s;\n"
           << "    }\n"
           << "  }\n"
           << "}\n";
    const std::string config_path = dir + "/nginx.conf";
    IMGSVC_RETURN_IF_ERROR(WriteFile(config_path, config.str()));
    IMGSVC_ASSIGN_OR_RETURN(nginx_, imgsvc::testing::Process::Start(
                                        IMGSVC_NGINX, {"-e", "stderr", "-p", dir, "-c", config_path, "-g",
                                                       "daemon off;"}));
    const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (AcceptsConnections(port_)) return Status::Ok();
      if (std::optional<imgsvc::testing::ExitStatus> exit = nginx_->Wait(std::chrono::milliseconds(50))) {
        nginx_.reset();
        return Status(Code::kUnavailable, "nginx exited (code " + std::to_string(exit->code) + "): " +
                                              ReadFile(error_log));
      }
    }
    nginx_.reset();
    return Status(Code::kDeadlineExceeded, "nginx did not listen on port " + std::to_string(port_) + ": " +
                                               ReadFile(error_log));
  }

  storage::testing::TempDir dir_;
  std::uint16_t port_ = 0;
  std::unique_ptr<imgsvc::testing::Process> nginx_;
};

core::ImageRecord MakeRecord(const std::string& user, int second) {
  static core::RandomIdGenerator ids;
  core::ImageRecord record;
  record.image_id = ids.NewId();
  record.user_id = user;
  record.filename = "photo.png";
  record.format = core::ImageFormat::kPng;
  record.size_bytes = 1234;
  record.width = 640;
  record.height = 480;
  record.sha256 = std::string(64, 'a');
  record.created_at = core::FormatTimestamp(kEpoch + std::int64_t{second} * 1'000'000);
  record.updated_at = record.created_at;
  return record;
}

class AwsTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const storage::testing::AwsPeers* peers = storage::testing::Peers();
    if (peers == nullptr) return;
    StatusOr<std::unique_ptr<TlsFront>> front = TlsFront::Start(peers->dynamodb.endpoint.Origin());
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
    const std::vector<core::ImageRecord> records{MakeRecord(user, 1), MakeRecord(user, 2)};
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
