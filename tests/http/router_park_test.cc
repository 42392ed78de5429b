// The router stays correct while a request parks (core::RunBlocking) and
// another runs meanwhile: what two fibers of the standalone server's io
// thread do while the first waits on AWS (server/fiber.h).
#include "http/router.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>

#include "core/auth.h"
#include "core/blocking.h"
#include "core/cursor.h"
#include "core/service.h"
#include "storage/embedded/file_blob_store.h"
#include "storage/embedded/sqlite_metadata_store.h"
#include "storage/sample_record.h"
#include "storage/temp_dir.h"
#include "support/parking.h"

namespace imgsvc::http {
namespace {

constexpr std::string_view kToken = "park-test-token-0123456789";

class FixedToken final : public core::TokenSource {
 public:
  StatusOr<std::string> Current() override { return std::string(kToken); }
  StatusOr<std::string> Refresh() override { return Current(); }
  Status CheckReady() override { return Status::Ok(); }
};

// The SQLite store, parking after each listing read and in its readiness
// check (as a DynamoDB call parks on a fiber until its answer comes).
class ParkingStore final : public core::MetadataStore {
 public:
  explicit ParkingStore(core::MetadataStore& inner) : inner_(inner) {}
  Status PutNew(std::span<const core::ImageRecord> records) override { return inner_.PutNew(records); }
  StatusOr<core::ImageRecord> Get(std::string_view image_id) override { return inner_.Get(image_id); }
  StatusOr<core::ImageRecord> Update(std::string_view image_id, std::string_view owner,
                                     const core::RecordPatch& patch, std::string_view updated_at) override {
    return inner_.Update(image_id, owner, patch, updated_at);
  }
  std::vector<core::DeleteOutcome> DeleteOwned(std::string_view owner,
                                               std::span<const std::string> image_ids) override {
    return inner_.DeleteOwned(owner, image_ids);
  }
  Status ListInto(const core::ListQuery& query, const std::optional<core::Position>& start, std::size_t limit,
                  std::size_t max_reads, core::ListPage& page) override {
    Status listed = inner_.ListInto(query, start, limit, max_reads, page);
    core::RunBlocking([] {});
    return listed;
  }
  Status CheckReady() override {
    core::RunBlocking([] {});
    return inner_.CheckReady();
  }

 private:
  core::MetadataStore& inner_;
};

Response Send(Router& router, std::string path, std::string query, const std::string& user) {
  MemoryBody body("");
  Request request;
  request.method = "GET";
  request.path = std::move(path);
  request.query = std::move(query);
  if (!user.empty()) request.headers.push_back({"x-api-key", user + ":" + std::string(kToken)});
  request.body = &body;
  return router.Handle(request);
}

Response ListOf(Router& router, const std::string& user) {
  return Send(router, "/api/v1/images", "user_id=" + user + "&limit=20", user);
}

class RouterParkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened_blobs = storage::FileBlobStore::Open(dir_.path() + "/data", "http://127.0.0.1:8000", clock_);
    ASSERT_TRUE(opened_blobs.ok()) << opened_blobs.status().ToString();
    blobs_ = std::move(*opened_blobs);
    auto opened_records = storage::SqliteMetadataStore::Open(dir_.path() + "/meta.db");
    ASSERT_TRUE(opened_records.ok()) << opened_records.status().ToString();
    records_ = std::move(*opened_records);
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(records_->PutNew(std::vector{storage::testing::SampleRecord("alice", i)}).ok());
      ASSERT_TRUE(records_->PutNew(std::vector{storage::testing::SampleRecord("bob", i)}).ok());
    }
    parking_ = std::make_unique<ParkingStore>(*records_);
    service_ = std::make_unique<core::ImageService>(*blobs_, *parking_, clock_, ids_, cursors_, core::ServiceLimits{});
    router_ = std::make_unique<Router>(*service_, auth_, ids_, RouterOptions{});
  }

  storage::testing::TempDir dir_;
  core::MonotonicWallClock clock_;
  core::RandomIdGenerator ids_;
  const core::CursorCodec cursors_{"park-test-cursor-secret-0123456789abcdef"};
  FixedToken tokens_;
  core::Authenticator auth_{tokens_, core::AuthMode::kShared, std::chrono::seconds(60), clock_};
  std::unique_ptr<storage::FileBlobStore> blobs_;
  std::unique_ptr<storage::SqliteMetadataStore> records_;
  std::unique_ptr<ParkingStore> parking_;
  std::unique_ptr<core::ImageService> service_;
  std::unique_ptr<Router> router_;
};

TEST_F(RouterParkTest, AListingKeepsItsPageWhileAnotherListsMeanwhile) {
  Response bob;
  imgsvc::testing::MeanwhileOnThisThread hook([&] { bob = ListOf(*router_, "bob"); });
  core::SetThreadBlockingHook(&hook);
  const Response alice = ListOf(*router_, "alice");
  core::SetThreadBlockingHook(nullptr);

  ASSERT_EQ(alice.status, 200) << alice.body;
  ASSERT_EQ(bob.status, 200) << bob.body;
  EXPECT_EQ(alice.body.find("\"user_id\":\"bob\""), std::string::npos) << alice.body;
  EXPECT_NE(alice.body.find("\"user_id\":\"alice\""), std::string::npos) << alice.body;
  EXPECT_EQ(bob.body.find("\"user_id\":\"alice\""), std::string::npos) << bob.body;
}

TEST_F(RouterParkTest, NoLockIsHeldWhileAReadinessCheckParks) {
  Response other;
  {
    imgsvc::testing::MeanwhileOnAnotherThread hook([&] { other = Send(*router_, "/ready", "", ""); });
    core::SetThreadBlockingHook(&hook);
    const Response first = Send(*router_, "/ready", "", "");
    core::SetThreadBlockingHook(nullptr);
    EXPECT_TRUE(hook.finished_in_time()) << "the second check waited for the parked one's lock";
    EXPECT_EQ(first.status, 200) << first.body;
  }
  EXPECT_EQ(other.status, 200) << other.body;
}

}  // namespace
}  // namespace imgsvc::http
