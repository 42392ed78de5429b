// The S3 adapter's own mechanics, on the local peers (s3rver behind a
// SigV4-verifying front): PutObject versus multipart, aborts, batched
// deletes, bucket creation and readiness, and the shape of presigned URLs.
// What every blob store shares is the contract suite's (aws_contract_test.cc).

#include "storage/aws/s3_blob_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <utility>

#include "aws/credentials.h"
#include "aws/sigv4.h"
#include "core/blocking.h"
#include "crypto/crypto.h"
#include "storage/aws_peers.h"
#include "support/parking.h"

namespace imgsvc::storage {
namespace s3_blob_store_test {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr std::size_t kPartSize = 5u << 20;  // S3's smallest part size
constexpr std::size_t kPiece = 64 * 1024;    // what the service appends at a time

std::span<const std::byte> AsBytes(std::string_view text) { return std::as_bytes(std::span(text.data(), text.size())); }

std::string Bytes(std::size_t size, unsigned seed) {
  std::mt19937 random(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(random() & 0xff);
  return bytes;
}

Status AppendInPieces(core::BlobUpload& upload, std::string_view bytes) {
  for (std::size_t at = 0; at < bytes.size(); at += kPiece) {
    IMGSVC_RETURN_IF_ERROR(upload.Append(AsBytes(bytes.substr(at, kPiece))));
  }
  return Status::Ok();
}

Status Put(core::BlobStore& store, const std::string& key, std::string_view bytes,
           std::string_view content_type = "image/png") {
  IMGSVC_ASSIGN_OR_RETURN(auto upload, store.StartUpload(key, content_type));
  IMGSVC_RETURN_IF_ERROR(AppendInPieces(*upload, bytes));
  return upload->Commit(crypto::HexEncode(crypto::Sha256Of(bytes)));
}

// GETs an absolute URL as a browser would, unsigned.
StatusOr<net::ClientResponse> Fetch(net::HttpClient& http, const std::string& url) {
  const std::size_t scheme_end = url.find("://");
  const std::size_t path_start = scheme_end == std::string::npos ? scheme_end : url.find('/', scheme_end + 3);
  if (path_start == std::string::npos) return Status(Code::kBadRequest, "not an absolute URL: " + url);
  IMGSVC_ASSIGN_OR_RETURN(net::Endpoint endpoint, net::Endpoint::Parse(url.substr(0, path_start)));
  net::ClientRequest request;
  request.method = "GET";
  request.target = url.substr(path_start);
  return http.Send(endpoint, request);
}

class S3BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    peers_ = testing::Peers();
    ASSERT_NE(peers_, nullptr);
    bucket_ = testing::UniqueName("s3blob");
  }

  std::unique_ptr<S3BlobStore> NewStore(std::size_t part_size = kPartSize) const {
    S3Options options;
    options.bucket = bucket_;
    options.part_size = part_size;
    return std::make_unique<S3BlobStore>(peers_->client, peers_->s3, std::move(options));
  }

  // A store on the test's own bucket, created.
  std::unique_ptr<S3BlobStore> OpenStore(std::size_t part_size = kPartSize) const {
    std::unique_ptr<S3BlobStore> store = NewStore(part_size);
    const Status created = store->CreateBucketIfMissing();
    EXPECT_TRUE(created.ok()) << created.ToString();
    return store;
  }

  // A request on the test's bucket, path-style as the peers need.
  StatusOr<aws::AwsResponse> Call(std::string method, std::string_view key,
                                  std::vector<aws::NameValue> query = {}) const {
    aws::AwsRequest request;
    request.method = std::move(method);
    request.path = "/" + bucket_;
    if (!key.empty()) request.path += "/" + aws::UriEncode(key, /*keep_slash=*/true);
    request.query = std::move(query);
    return peers_->client->Send(peers_->s3, std::move(request));
  }

  std::uint64_t Calls() const { return peers_->client->stats().calls; }

  const testing::AwsPeers* peers_ = nullptr;
  std::string bucket_;
};

TEST_F(S3BlobStoreTest, ASmallObjectIsOnePutObjectServedWithItsContentType) {
  const auto store = OpenStore();
  const std::uint64_t before = Calls();
  ASSERT_TRUE(Put(*store, "images/u1/small.webp", "RIFF....WEBP", "image/webp").ok());
  EXPECT_EQ(Calls() - before, 1u);

  const auto head = Call("HEAD", "images/u1/small.webp");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->HeaderValue("Content-Type"), "image/webp");
  EXPECT_EQ(head->HeaderValue("Content-Length"), "12");
}

// The PutObject is signed with the caller's hash of the content instead of
// one computed again: a hash that does not match the bytes is refused, as S3
// refuses it, and nothing is stored.
TEST_F(S3BlobStoreTest, APutObjectCarriesTheCallersHashAndAMismatchStoresNothing) {
  const auto store = OpenStore();
  const std::string bytes = Bytes(4096, 7);
  auto upload = store->StartUpload("images/u1/mismatch.png", "image/png");
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE(AppendInPieces(**upload, bytes).ok());
  const Status refused = (*upload)->Commit(crypto::HexEncode(crypto::Sha256Of(bytes + "x")));
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.ToString().find("XAmzContentSHA256Mismatch"), std::string::npos) << refused.ToString();
  upload->reset();
  const auto head = Call("HEAD", "images/u1/mismatch.png");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->status, 404);
}

TEST_F(S3BlobStoreTest, AnObjectOfExactlyOnePartIsStillOnePutObject) {
  const auto store = OpenStore();
  const std::uint64_t before = Calls();
  ASSERT_TRUE(Put(*store, "images/u1/one-part.png", Bytes(kPartSize, 3)).ok());
  EXPECT_EQ(Calls() - before, 1u);

  const auto head = Call("HEAD", "images/u1/one-part.png");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->HeaderValue("Content-Length"), std::to_string(kPartSize));
}

TEST_F(S3BlobStoreTest, ALargeObjectGoesUpInPartsAndDownloadsExactly) {
  const auto store = OpenStore();
  const std::string key = "images/u1/large photo.jpg";  // the space must be encoded in every URL
  const std::string bytes = Bytes(10u << 20, 7);
  const std::uint64_t before = Calls();
  const Status put = Put(*store, key, bytes, "image/jpeg");
  ASSERT_TRUE(put.ok()) << put.ToString();
  // CreateMultipartUpload, two UploadParts, CompleteMultipartUpload. (s3rver
  // gives multipart objects a plain MD5 ETag, without S3's "-2" suffix.)
  EXPECT_EQ(Calls() - before, 4u);

  const auto url = store->PresignGet(key, std::chrono::seconds(300));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  const auto download = Fetch(*peers_->http, url->url);
  ASSERT_TRUE(download.ok()) << download.status().ToString();
  ASSERT_EQ(download->status, 200) << download->body;
  EXPECT_EQ(download->HeaderValue("Content-Type"), "image/jpeg");  // given at CreateMultipartUpload
  ASSERT_EQ(download->body.size(), bytes.size());
  EXPECT_TRUE(download->body == bytes) << "the downloaded bytes differ";
}

// Parts go out while the next one fills: a part that fails on its way is
// reported by the Append or Commit after it, and the upload is aborted.
TEST_F(S3BlobStoreTest, APartFailingInFlightFailsTheUploadAndLeavesNoObject) {
  const auto store = OpenStore();
  const std::string key = "images/u1/part-fails.png";
  // Every attempt at the first part gets a 500 (3 attempts, standard retries).
  ASSERT_TRUE(imgsvc::testing::InjectFault("s3", imgsvc::testing::AwsFault::kError500, 3, "UploadPart").ok());
  auto upload = store->StartUpload(key, "image/png");
  ASSERT_TRUE(upload.ok());
  const std::string bytes = Bytes(3 * kPartSize, 6);
  Status outcome = AppendInPieces(**upload, bytes);
  if (outcome.ok()) outcome = (*upload)->Commit(crypto::HexEncode(crypto::Sha256Of(bytes)));
  ASSERT_FALSE(outcome.ok());
  EXPECT_EQ(outcome.code(), Code::kUnavailable) << outcome.ToString();
  EXPECT_NE(outcome.message().find("S3 UploadPart"), std::string::npos) << outcome.ToString();
  upload->reset();

  const auto head = Call("HEAD", key);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->status, 404);
  ASSERT_TRUE(imgsvc::testing::ResetFaults().ok());
}

TEST_F(S3BlobStoreTest, OnlyMaxLargeUploadsBufferPastTheFirstMiBAndTheRestGet503) {
  S3Options options;
  options.bucket = bucket_;
  options.part_size = kPartSize;
  options.max_large_uploads = 1;
  options.large_upload_wait = std::chrono::milliseconds(300);
  S3BlobStore store(peers_->client, peers_->s3, std::move(options));
  ASSERT_TRUE(store.CreateBucketIfMissing().ok());

  auto large = store.StartUpload("images/u1/large.png", "image/png");
  ASSERT_TRUE(large.ok());
  const std::string large_bytes = Bytes(2u << 20, 1);
  ASSERT_TRUE(AppendInPieces(**large, large_bytes).ok());  // holds the one slot

  // Small images never wait for a slot.
  ASSERT_TRUE(Put(store, "images/u1/small.png", Bytes(512u << 10, 2)).ok());
  // A second large one waits, then gives up with a retryable 503.
  {
    auto waiting = store.StartUpload("images/u1/waiting.png", "image/png");
    ASSERT_TRUE(waiting.ok());
    const Status refused = AppendInPieces(**waiting, Bytes(2u << 20, 3));
    EXPECT_EQ(refused.code(), Code::kUnavailable) << refused.ToString();
    EXPECT_TRUE(refused.retry_after().has_value());
  }
  // Committing frees the slot; so does dropping an upload.
  ASSERT_TRUE((*large)->Commit(crypto::HexEncode(crypto::Sha256Of(large_bytes))).ok());
  {
    auto dropped = store.StartUpload("images/u1/dropped-large.png", "image/png");
    ASSERT_TRUE(dropped.ok());
    ASSERT_TRUE(AppendInPieces(**dropped, Bytes(2u << 20, 4)).ok());
  }
  EXPECT_TRUE(Put(store, "images/u1/after.png", Bytes(2u << 20, 5)).ok());
}

TEST_F(S3BlobStoreTest, ADroppedUploadAbortsItsPartsAndLeavesNoObject) {
  const auto store = OpenStore();
  const std::string key = "images/u1/dropped.png";
  const std::uint64_t before = Calls();
  {
    auto upload = store->StartUpload(key, "image/png");
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE(AppendInPieces(**upload, Bytes(kPartSize + 1, 5)).ok());
    // CreateMultipartUpload, and the first part unless it is still on its way.
    EXPECT_GE(Calls() - before, 1u);
    EXPECT_LE(Calls() - before, 2u);
  }
  EXPECT_EQ(Calls() - before, 3u);  // the part awaited, then AbortMultipartUpload when dropped

  const auto head = Call("HEAD", key);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->status, 404);

  // s3rver implements neither ListMultipartUploads nor AbortMultipartUpload,
  // so there the abort is only seen being sent (above); S3 lists nothing.
  const auto uploads = Call("GET", "", {{"uploads", ""}});
  ASSERT_TRUE(uploads.ok()) << uploads.status().ToString();
  if (uploads->ok()) {
    EXPECT_THAT(uploads->body, Not(HasSubstr("<Upload>")));
  } else {
    EXPECT_EQ(uploads->error.code, "NotImplemented");
  }
}

TEST_F(S3BlobStoreTest, DeleteReportsEachKeyAcrossBatchesOf1000) {
  const auto store = OpenStore();
  std::vector<std::string> keys;
  keys.push_back("images/u1/a&b <c>.png");  // XML-escaped in the request, URI-encoded in the path
  for (int i = 1; i < 1000; ++i) keys.push_back("images/u1/" + std::to_string(i) + ".png");

  // Tiny objects, put by a few threads to keep the test short.
  std::atomic<int> failed_puts{0};
  std::vector<std::thread> writers;
  constexpr std::size_t kWriters = 4;
  for (std::size_t w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (std::size_t i = w; i < keys.size(); i += kWriters) {
        if (!Put(*store, keys[i], "x").ok()) ++failed_puts;
      }
    });
  }
  for (std::thread& writer : writers) writer.join();
  ASSERT_EQ(failed_puts.load(), 0);

  keys.push_back("images/u1/never-written.png");  // the 1001st, alone in the second batch
  const std::uint64_t before = Calls();
  const std::vector<Status> results = store->Delete(keys);
  EXPECT_EQ(Calls() - before, 2u);
  ASSERT_EQ(results.size(), keys.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    EXPECT_TRUE(results[i].ok()) << keys[i] << ": " << results[i].ToString();
  }

  const auto listing = Call("GET", "", {{"list-type", "2"}});
  ASSERT_TRUE(listing.ok()) << listing.status().ToString();
  ASSERT_TRUE(listing->ok()) << listing->body;
  EXPECT_THAT(listing->body, Not(HasSubstr("<Contents>")));
}

TEST_F(S3BlobStoreTest, CreateBucketIfMissingTwiceIsOk) {
  const auto store = NewStore();
  const Status first = store->CreateBucketIfMissing();
  EXPECT_TRUE(first.ok()) << first.ToString();
  const Status second = store->CreateBucketIfMissing();
  EXPECT_TRUE(second.ok()) << second.ToString();
  const Status ready = store->CheckReady();
  EXPECT_TRUE(ready.ok()) << ready.ToString();
}

TEST_F(S3BlobStoreTest, CheckReadyOnAMissingBucketIsUnavailableNamingS3NotTheAddress) {
  const auto store = NewStore();
  const Status ready = store->CheckReady();
  EXPECT_EQ(ready.code(), Code::kUnavailable);
  EXPECT_THAT(ready.message(), HasSubstr("S3"));
  EXPECT_THAT(ready.message(), Not(HasSubstr(peers_->s3.endpoint.host)));
}

TEST(S3AddressingTest, ParsesTheThreeSettingsAndRefusesOthers) {
  EXPECT_EQ(ParseS3Addressing("auto").value(), S3Addressing::kAuto);
  EXPECT_EQ(ParseS3Addressing("path").value(), S3Addressing::kPath);
  EXPECT_EQ(ParseS3Addressing("virtual").value(), S3Addressing::kVirtual);
  for (const std::string_view bad : {"", "Path", "virtual-hosted"}) {
    const auto parsed = ParseS3Addressing(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), Code::kBadRequest);
  }
}

// Presigning needs credentials only: these stores are never sent a request.
class S3PresignedUrlTest : public ::testing::Test {
 protected:
  static net::Endpoint EndpointOf(std::string_view url) {
    auto endpoint = net::Endpoint::Parse(url);
    EXPECT_TRUE(endpoint.ok()) << url;
    return endpoint.ok() ? *endpoint : net::Endpoint{};
  }

  std::string UrlFor(std::string_view endpoint, std::string bucket, S3Addressing addressing,
                     std::optional<std::string_view> public_endpoint = std::nullopt) const {
    S3Options options;
    options.bucket = std::move(bucket);
    options.addressing = addressing;
    if (public_endpoint) options.public_endpoint = EndpointOf(*public_endpoint);
    S3BlobStore store(client_, aws::ServiceTarget{EndpointOf(endpoint), "eu-west-1", "s3"}, std::move(options));
    const auto url = store.PresignGet("images/u1/a b.png", std::chrono::seconds(900));
    EXPECT_TRUE(url.ok()) << url.status().ToString();
    return url.ok() ? url->url : std::string();
  }

  std::shared_ptr<aws::AwsClient> client_ = std::make_shared<aws::AwsClient>(
      std::make_shared<net::HttpClient>(),
      std::make_shared<aws::StaticCredentialsProvider>(aws::Credentials{"AKIDEXAMPLE", "secret", "", std::nullopt}));
};

TEST_F(S3PresignedUrlTest, VirtualHostedPutsTheBucketInTheHost) {
  EXPECT_THAT(UrlFor("http://s3.example.com", "shots", S3Addressing::kVirtual),
              StartsWith("http://shots.s3.example.com/images/u1/a%20b.png?"));
  EXPECT_THAT(UrlFor("http://s3.example.com", "shots", S3Addressing::kAuto),
              StartsWith("http://shots.s3.example.com/images/u1/a%20b.png?"));
}

TEST_F(S3PresignedUrlTest, PathStylePutsTheBucketInThePath) {
  EXPECT_THAT(UrlFor("http://s3.example.com", "shots", S3Addressing::kPath),
              StartsWith("http://s3.example.com/shots/images/u1/a%20b.png?"));
  // Auto: IP literals and localhost have no bucket subdomains; a dotted
  // bucket would not match S3's wildcard certificate.
  EXPECT_THAT(UrlFor("http://127.0.0.1:9000", "shots", S3Addressing::kAuto),
              StartsWith("http://127.0.0.1:9000/shots/images/u1/a%20b.png?"));
  EXPECT_THAT(UrlFor("http://localhost:9000", "shots", S3Addressing::kAuto),
              StartsWith("http://localhost:9000/shots/images/u1/a%20b.png?"));
  EXPECT_THAT(UrlFor("https://s3.example.com", "my.shots", S3Addressing::kAuto),
              StartsWith("https://s3.example.com/my.shots/images/u1/a%20b.png?"));
}

TEST_F(S3PresignedUrlTest, APublicEndpointHostsTheUrlAddressedForItself) {
  EXPECT_THAT(UrlFor("http://127.0.0.1:9000", "shots", S3Addressing::kAuto, "https://files.example.com:8443"),
              StartsWith("https://shots.files.example.com:8443/images/u1/a%20b.png?"));
  EXPECT_THAT(UrlFor("http://s3.internal.example", "shots", S3Addressing::kAuto, "http://192.0.2.10:9000"),
              StartsWith("http://192.0.2.10:9000/shots/images/u1/a%20b.png?"));
}

TEST_F(S3PresignedUrlTest, TheExpiryIsTheOneSigned) {
  S3Options options;
  options.bucket = "shots";
  S3BlobStore store(client_, aws::ServiceTarget{EndpointOf("http://s3.example.com"), "eu-west-1", "s3"},
                    std::move(options));
  const auto micros = [](std::chrono::system_clock::time_point when) {
    return std::chrono::duration_cast<std::chrono::microseconds>(when.time_since_epoch()).count();
  };
  const core::Micros before = micros(std::chrono::system_clock::now());
  const auto url = store.PresignGet("images/u1/a.png", std::chrono::seconds(900));
  const core::Micros after = micros(std::chrono::system_clock::now());
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  EXPECT_THAT(url->url, HasSubstr("X-Amz-Expires=900"));
  // Signing time has whole seconds, hence a second of slack on each side.
  EXPECT_GE(url->expires_at, before + 899'000'000);
  EXPECT_LE(url->expires_at, after + 901'000'000);
}

// Credentials whose every fetch parks, as a refresh through RunBlocking
// does on a fiber of the standalone server.
class ParkingCredentialsProvider final : public aws::CredentialsProvider {
 public:
  StatusOr<aws::Credentials> Get() override {
    core::RunBlocking([] {});
    return aws::Credentials{"AKIDEXAMPLE", "secret", "", std::nullopt};
  }
  std::string Source() const override { return "parking"; }
};

TEST(S3PresignParkTest, APageSignedWhileAnotherParksKeepsItsOwnKeys) {
  auto client = std::make_shared<aws::AwsClient>(std::make_shared<net::HttpClient>(),
                                                 std::make_shared<ParkingCredentialsProvider>());
  S3Options options;
  options.bucket = "shots";
  const auto endpoint = net::Endpoint::Parse("http://s3.example.com");
  ASSERT_TRUE(endpoint.ok());
  S3BlobStore store(client, aws::ServiceTarget{*endpoint, "eu-west-1", "s3"}, std::move(options));
  const std::vector<std::string> alice = {"images/alice/a.png", "images/alice/b.png"};
  const std::vector<std::string> bob = {"images/bob/x.png", "images/bob/y.png"};
  std::vector<core::PresignedUrl> alice_urls;
  std::vector<core::PresignedUrl> bob_urls;
  imgsvc::testing::MeanwhileOnThisThread hook([&] { ASSERT_TRUE(store.PresignGets(bob, std::chrono::seconds(900), bob_urls).ok()); });
  core::SetThreadBlockingHook(&hook);
  const Status signed_alice = store.PresignGets(alice, std::chrono::seconds(900), alice_urls);
  core::SetThreadBlockingHook(nullptr);
  ASSERT_TRUE(signed_alice.ok()) << signed_alice.ToString();
  ASSERT_EQ(alice_urls.size(), 2u);
  ASSERT_EQ(bob_urls.size(), 2u);
  EXPECT_THAT(alice_urls[0].url, HasSubstr("/images/alice/a.png?"));
  EXPECT_THAT(alice_urls[1].url, HasSubstr("/images/alice/b.png?"));
  EXPECT_THAT(bob_urls[0].url, HasSubstr("/images/bob/x.png?"));
  EXPECT_THAT(bob_urls[1].url, HasSubstr("/images/bob/y.png?"));
}

}  // namespace s3_blob_store_test
}  // namespace imgsvc::storage
