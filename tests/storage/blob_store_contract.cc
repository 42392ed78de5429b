#include "storage/blob_store_contract.h"

#include <gmock/gmock.h>

#include <cstddef>
#include <random>
#include <span>
#include <vector>

#include "crypto/crypto.h"

namespace imgsvc::storage::testing {
namespace {

using namespace std::chrono_literals;

core::RandomIdGenerator g_key_ids;

std::string NewKey(const std::string& user, const std::string& ext = ".png") {
  return "images/" + user + "/" + g_key_ids.NewId() + ext;
}

// Every byte value, in an order that no off-by-one copy reproduces.
std::string Bytes(std::size_t size, unsigned seed) {
  std::mt19937 random(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(random() & 0xff);
  return bytes;
}

std::span<const std::byte> AsBytes(std::string_view text) { return std::as_bytes(std::span(text.data(), text.size())); }

// Uploads `bytes` in uneven pieces (including an empty one) and commits.
Status Put(core::BlobStore& store, const std::string& key, std::string_view bytes) {
  const std::string sha256 = crypto::HexEncode(crypto::Sha256Of(bytes));
  IMGSVC_ASSIGN_OR_RETURN(auto upload, store.StartUpload(key, "image/png"));
  const std::size_t pieces[] = {1, 0, 4095, 65537};
  for (const std::size_t piece : pieces) {
    const std::size_t n = std::min(piece, bytes.size());
    IMGSVC_RETURN_IF_ERROR(upload->Append(AsBytes(bytes.substr(0, n))));
    bytes.remove_prefix(n);
  }
  IMGSVC_RETURN_IF_ERROR(upload->Append(AsBytes(bytes)));
  return upload->Commit(sha256);
}

}  // namespace

std::string BlobStoreBackendName(const ::testing::TestParamInfo<BlobStoreBackend>& info) { return info.param.name; }

void PrintTo(const BlobStoreBackend& backend, std::ostream* os) { *os << backend.name; }

void BlobStoreContract::SetUp() {
  harness_ = GetParam().make();
  ASSERT_NE(harness_.store, nullptr);
  ASSERT_TRUE(harness_.fetch && harness_.now && harness_.advance);
}

TEST_P(BlobStoreContract, ACommittedObjectDownloadsExactly) {
  const std::string key = NewKey("alice");
  const std::string bytes = Bytes(300 * 1024 + 7, 1);
  ASSERT_TRUE(Put(*harness_.store, key, bytes).ok());

  StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(key, 3600s);
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  StatusOr<std::string> fetched = harness_.fetch(url->url);
  ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
  EXPECT_EQ(fetched->size(), bytes.size());
  EXPECT_TRUE(*fetched == bytes);
}

TEST_P(BlobStoreContract, AnEmptyObjectDownloadsEmpty) {
  const std::string key = NewKey("alice");
  ASSERT_TRUE(Put(*harness_.store, key, "").ok());
  StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(key, 60s);
  ASSERT_TRUE(url.ok());
  StatusOr<std::string> fetched = harness_.fetch(url->url);
  ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
  EXPECT_EQ(*fetched, "");
}

TEST_P(BlobStoreContract, ObjectsUnderDifferentKeysStayApart) {
  const std::string id = g_key_ids.NewId();
  const std::string alice_key = "images/alice/" + id + ".png";
  const std::string bob_key = "images/bob/" + id + ".png";
  ASSERT_TRUE(Put(*harness_.store, alice_key, Bytes(1000, 2)).ok());
  ASSERT_TRUE(Put(*harness_.store, bob_key, Bytes(2000, 3)).ok());

  for (const auto& [key, expected] : {std::pair{alice_key, Bytes(1000, 2)}, std::pair{bob_key, Bytes(2000, 3)}}) {
    StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(key, 60s);
    ASSERT_TRUE(url.ok());
    StatusOr<std::string> fetched = harness_.fetch(url->url);
    ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
    EXPECT_TRUE(*fetched == expected) << key;
  }
}

// A listed page's URLs in one call, into a vector used before (longer, and
// holding other URLs): each downloads its own key's bytes.
TEST_P(BlobStoreContract, APagesUrlsEachDownloadTheirOwnObject) {
  std::vector<std::string> keys;
  std::vector<std::string> contents;
  for (int i = 0; i < 3; ++i) {
    keys.push_back(NewKey(i == 1 ? "bob" : "alice"));
    contents.push_back(Bytes(100 + 50 * static_cast<std::size_t>(i), static_cast<unsigned>(i) + 5));
    ASSERT_TRUE(Put(*harness_.store, keys.back(), contents.back()).ok());
  }
  std::vector<core::PresignedUrl> urls(5, core::PresignedUrl{"http://stale.invalid/", 1});
  const core::Micros before = harness_.now();
  const Status presigned = harness_.store->PresignGets(keys, 600s, urls);
  ASSERT_TRUE(presigned.ok()) << presigned.ToString();
  ASSERT_EQ(urls.size(), keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    StatusOr<std::string> fetched = harness_.fetch(urls[i].url);
    ASSERT_TRUE(fetched.ok()) << keys[i] << ": " << fetched.status().ToString();
    EXPECT_TRUE(*fetched == contents[i]) << keys[i];
    EXPECT_GE(urls[i].expires_at, before + 599'000'000) << keys[i];
  }

  ASSERT_TRUE(harness_.store->PresignGets({}, 600s, urls).ok());
  EXPECT_TRUE(urls.empty());
}

TEST_P(BlobStoreContract, PresignedUrlsReportTheirExpiry) {
  const std::string key = NewKey("alice");
  ASSERT_TRUE(Put(*harness_.store, key, "x").ok());
  const core::Micros before = harness_.now();
  StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(key, 600s);
  const core::Micros after = harness_.now();
  ASSERT_TRUE(url.ok());
  // Expiry may be rounded down to the signing second.
  EXPECT_GE(url->expires_at, before + 599'000'000);
  EXPECT_LE(url->expires_at, after + 600'000'000);
}

TEST_P(BlobStoreContract, AnUploadDestroyedBeforeCommitLeavesNothing) {
  const std::string key = NewKey("alice");
  {
    StatusOr<std::unique_ptr<core::BlobUpload>> upload = harness_.store->StartUpload(key, "image/png");
    ASSERT_TRUE(upload.ok()) << upload.status().ToString();
    ASSERT_TRUE((*upload)->Append(AsBytes(Bytes(10000, 4))).ok());
  }
  StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(key, 60s);
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(harness_.fetch(url->url).status().code(), Code::kNotFound);
}

TEST_P(BlobStoreContract, ADeletedObjectIsGone) {
  const std::string key = NewKey("alice");
  ASSERT_TRUE(Put(*harness_.store, key, "bytes").ok());
  StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(key, 60s);
  ASSERT_TRUE(url.ok());
  ASSERT_TRUE(harness_.fetch(url->url).ok());

  const std::vector<Status> results = harness_.store->Delete(std::vector{key});
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].ok()) << results[0].ToString();
  EXPECT_EQ(harness_.fetch(url->url).status().code(), Code::kNotFound);
}

TEST_P(BlobStoreContract, DeleteReportsEveryKeyAndMissingOnesCountAsDeleted) {
  const std::string first = NewKey("alice");
  const std::string second = NewKey("bob");
  const std::string untouched = NewKey("alice");
  for (const std::string& key : {first, second, untouched}) ASSERT_TRUE(Put(*harness_.store, key, key).ok());

  const std::vector<std::string> keys = {first, NewKey("alice"), second, NewKey("nobody")};
  const std::vector<Status> results = harness_.store->Delete(keys);
  ASSERT_EQ(results.size(), keys.size());
  for (const Status& result : results) EXPECT_TRUE(result.ok()) << result.ToString();

  for (const std::string& key : {first, second}) {
    StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(key, 60s);
    ASSERT_TRUE(url.ok());
    EXPECT_EQ(harness_.fetch(url->url).status().code(), Code::kNotFound) << key;
  }
  StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(untouched, 60s);
  ASSERT_TRUE(url.ok());
  StatusOr<std::string> fetched = harness_.fetch(url->url);
  ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
  EXPECT_EQ(*fetched, untouched);
}

TEST_P(BlobStoreContract, AnExpiredUrlIsForbidden) {
  const std::string key = NewKey("alice");
  ASSERT_TRUE(Put(*harness_.store, key, "bytes").ok());
  StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(key, 1s);
  ASSERT_TRUE(url.ok());
  harness_.advance(2s);
  EXPECT_EQ(harness_.fetch(url->url).status().code(), Code::kForbidden);
}

TEST_P(BlobStoreContract, ATamperedSignatureIsForbidden) {
  const std::string key = NewKey("alice");
  ASSERT_TRUE(Put(*harness_.store, key, "bytes").ok());
  StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(key, 60s);
  ASSERT_TRUE(url.ok());
  // Both our URLs and SigV4 query-presigned ones end with the hex signature.
  std::string tampered = url->url;
  tampered.back() = tampered.back() == '0' ? '1' : '0';
  EXPECT_EQ(harness_.fetch(tampered).status().code(), Code::kForbidden);
}

TEST_P(BlobStoreContract, AUrlForOneKeyDoesNotOpenAnother) {
  const std::string id = g_key_ids.NewId();
  const std::string signed_key = "images/alice/" + id + ".png";
  const std::string other_key = "images/bobby/" + id + ".png";
  ASSERT_TRUE(Put(*harness_.store, signed_key, "alice's").ok());
  ASSERT_TRUE(Put(*harness_.store, other_key, "bobby's").ok());
  StatusOr<core::PresignedUrl> url = harness_.store->PresignGet(signed_key, 60s);
  ASSERT_TRUE(url.ok());

  std::string swapped = url->url;
  const std::size_t at = swapped.find(signed_key);
  ASSERT_NE(at, std::string::npos);
  swapped.replace(at, signed_key.size(), other_key);
  EXPECT_EQ(harness_.fetch(swapped).status().code(), Code::kForbidden);
}

TEST_P(BlobStoreContract, IsReady) { EXPECT_TRUE(harness_.store->CheckReady().ok()); }

}  // namespace imgsvc::storage::testing
