// The SQLite store's own mechanics: group commit, query plans, durability
// settings, the on-disk shape and schema versioning.

#include "storage/embedded/sqlite_metadata_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <latch>
#include <thread>

#include "storage/temp_dir.h"

namespace imgsvc::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

core::RandomIdGenerator g_ids;

core::ImageRecord MakeRecord(const std::string& user, int second, std::vector<std::string> tags = {}) {
  core::ImageRecord record;
  record.image_id = g_ids.NewId();
  record.user_id = user;
  record.filename = "a.png";
  record.format = core::ImageFormat::kPng;
  record.size_bytes = 10;
  record.width = 1;
  record.height = 1;
  record.sha256 = std::string(64, 'a');
  record.tags = std::move(tags);
  record.visibility = core::Visibility::kPublic;
  record.created_at = core::FormatTimestamp(1'767'225'600'000'000 + std::int64_t{second} * 1'000'000);
  record.updated_at = record.created_at;
  return record;
}

// A connection of the test's own, to look at the file from outside the store.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  ~RawDb() { sqlite3_close_v2(db_); }

  // Every row of a query, columns joined by '|' (NULL shown as "NULL").
  std::vector<std::string> Rows(const std::string& sql) {
    std::vector<std::string> rows;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sqlite3_errmsg(db_) << " in " << sql;
      return rows;
    }
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      std::string row;
      for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
        if (i > 0) row += '|';
        const unsigned char* text = sqlite3_column_text(stmt, i);
        row += text != nullptr ? reinterpret_cast<const char*>(text) : "NULL";
      }
      rows.push_back(row);
    }
    sqlite3_finalize(stmt);
    return rows;
  }

  std::string Plan(const std::string& sql) {
    std::string plan;
    for (const std::string& row : Rows("EXPLAIN QUERY PLAN " + sql)) plan += row + "\n";
    return plan;
  }

 private:
  sqlite3* db_ = nullptr;
};

class SqliteMetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    Reopen();
  }

  void Reopen() {
    store_.reset();
    auto opened = SqliteMetadataStore::Open(path_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(*opened);
  }

  testing::TempDir dir_;
  std::string path_ = dir_.path() + "/metadata.sqlite3";
  std::unique_ptr<SqliteMetadataStore> store_;
};

TEST_F(SqliteMetadataStoreTest, ConcurrentWritesShareCommits) {
  constexpr int kThreads = 32;
  std::vector<core::ImageRecord> records;
  for (int i = 0; i < kThreads; ++i) records.push_back(MakeRecord("alice", i));
  const std::uint64_t commits_before = store_->commits();

  std::latch start(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      if (!store_->PutNew(std::span(&records[static_cast<std::size_t>(i)], 1)).ok()) ++failures;
    });
  }
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(failures.load(), 0);
  const std::uint64_t commits = store_->commits() - commits_before;
  EXPECT_GE(commits, 1u);
  EXPECT_LT(commits, static_cast<std::uint64_t>(kThreads));
  for (const core::ImageRecord& record : records) EXPECT_TRUE(store_->Get(record.image_id).ok());
}

TEST_F(SqliteMetadataStoreTest, AFailingWriteDoesNotFailItsBatchMates) {
  constexpr int kThreads = 32;
  std::vector<core::ImageRecord> existing;
  for (int i = 0; i < kThreads / 2; ++i) existing.push_back(MakeRecord("alice", i));
  ASSERT_TRUE(store_->PutNew(existing).ok());

  // Odd threads write a fresh record plus a clashing one; even threads a fresh one.
  std::vector<std::vector<core::ImageRecord>> calls(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    calls[i].push_back(MakeRecord("bob", i));
    if (i % 2 == 1) calls[i].push_back(existing[static_cast<std::size_t>(i / 2)]);
  }
  std::vector<Status> results(kThreads);
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[static_cast<std::size_t>(i)] = store_->PutNew(calls[static_cast<std::size_t>(i)]);
    });
  }
  for (std::thread& thread : threads) thread.join();

  for (int i = 0; i < kThreads; ++i) {
    SCOPED_TRACE(i);
    const auto index = static_cast<std::size_t>(i);
    if (i % 2 == 1) {
      EXPECT_EQ(results[index].code(), Code::kConflict);
      EXPECT_EQ(store_->Get(calls[index][0].image_id).status().code(), Code::kNotFound);
    } else {
      EXPECT_TRUE(results[index].ok()) << results[index].ToString();
      EXPECT_TRUE(store_->Get(calls[index][0].image_id).ok());
    }
  }
}

TEST_F(SqliteMetadataStoreTest, ReadersAndWritersRunConcurrently) {
  constexpr int kThreads = 16;  // more than the reader pool holds
  std::latch start(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      const std::string user = "user" + std::to_string(t);
      for (int i = 0; i < 20; ++i) {
        const core::ImageRecord record = MakeRecord(user, i);
        if (!store_->PutNew(std::span(&record, 1)).ok()) ++failures;
        auto got = store_->Get(record.image_id);
        if (!got.ok() || *got != record) ++failures;
        core::ListQuery query;
        query.user_id = user;
        query.viewer = user;
        auto page = store_->List(query, std::nullopt, 100, 1);
        if (!page.ok() || page->items.size() != static_cast<std::size_t>(i + 1)) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

// A user's page comes from the listing index alone, in its order: no row is
// looked up in the table and nothing is sorted.
TEST_F(SqliteMetadataStoreTest, ListingsByUserReadOnlyTheirIndexInOrder) {
  RawDb db(path_);
  core::ListQuery query;
  query.user_id = "alice";
  query.viewer = "bob";
  for (const bool resumes : {false, true}) {
    const std::string plan = db.Plan(SqliteMetadataStore::ListSql(query, resumes));
    EXPECT_THAT(plan, HasSubstr("USING COVERING INDEX images_listed_by_user (user_id=?"));
    EXPECT_THAT(plan, Not(HasSubstr("TEMP B-TREE")));
  }

  query.created_from = "2026-01-01T00:00:00.000000Z";
  query.created_to = "2026-02-01T00:00:00.000000Z";
  query.category = "cats";
  query.tags = {"a", "b"};
  query.visibility = core::Visibility::kPublic;
  const std::string plan = db.Plan(SqliteMetadataStore::ListSql(query, true));
  EXPECT_THAT(plan,
              HasSubstr("USING COVERING INDEX images_listed_by_user (user_id=? AND created_at>? AND created_at<?)"));
  EXPECT_THAT(plan, Not(HasSubstr("TEMP B-TREE")));
}

TEST_F(SqliteMetadataStoreTest, ScansResumeOnThePrimaryKey) {
  RawDb db(path_);
  core::ListQuery query;
  query.tags = {"a"};
  const std::string plan = db.Plan(SqliteMetadataStore::ListSql(query, true));
  EXPECT_THAT(plan, HasSubstr("USING PRIMARY KEY (image_id>?)"));
  EXPECT_THAT(plan, Not(HasSubstr("TEMP B-TREE")));
}

TEST_F(SqliteMetadataStoreTest, WritesAreDurableWal) {
  const SqliteMetadataStore::Durability& durability = store_->writer_durability();
  EXPECT_EQ(durability.journal_mode, "wal");
  EXPECT_EQ(durability.synchronous, 2);  // FULL
  RawDb db(path_);
  EXPECT_THAT(db.Rows("PRAGMA journal_mode"), ElementsAre("wal"));
}

// A clean close empties the WAL file and keeps it, so the next start opens
// it instead of creating a file (an inode allocation at every start).
TEST_F(SqliteMetadataStoreTest, ACleanCloseKeepsTheWalFileEmpty) {
  const core::ImageRecord record = MakeRecord("alice", 1);
  ASSERT_TRUE(store_->PutNew(std::span(&record, 1)).ok());
  const std::string wal = path_ + "-wal";
  ASSERT_GT(std::filesystem::file_size(wal), 0u);
  store_.reset();
  ASSERT_TRUE(std::filesystem::exists(wal));
  EXPECT_EQ(std::filesystem::file_size(wal), 0u);
  struct stat before {};
  ASSERT_EQ(::stat(wal.c_str(), &before), 0);

  Reopen();
  struct stat after {};
  ASSERT_EQ(::stat(wal.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  auto stored = store_->Get(record.image_id);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(*stored, record);
}

TEST_F(SqliteMetadataStoreTest, RecordsKeepTheTableShape) {
  core::ImageRecord tagged = MakeRecord("alice", 1, {"a", "b\"c"});
  tagged.category = "cats";
  const core::ImageRecord plain = MakeRecord("alice", 2);
  ASSERT_TRUE(store_->PutNew(std::vector{tagged, plain}).ok());

  RawDb db(path_);
  EXPECT_THAT(db.Rows("SELECT format, category, tags, tag_set, visibility, size_bytes FROM images WHERE image_id = '" +
                      tagged.image_id + "'"),
              ElementsAre(R"(png|cats|["a","b\"c"]|,a,b"c,|public|10)"));
  EXPECT_THAT(db.Rows("SELECT category IS NULL, tags, tag_set FROM images WHERE image_id = '" + plain.image_id + "'"),
              ElementsAre("1|[]|,"));
  EXPECT_THAT(db.Rows("PRAGMA user_version"), ElementsAre("2"));
}

TEST_F(SqliteMetadataStoreTest, RecordsSurviveReopening) {
  const core::ImageRecord record = MakeRecord("alice", 1, {"x"});
  ASSERT_TRUE(store_->PutNew(std::span(&record, 1)).ok());
  Reopen();
  auto stored = store_->Get(record.image_id);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(*stored, record);
}

TEST_F(SqliteMetadataStoreTest, RefusesASchemaFromTheFuture) {
  store_.reset();
  {
    RawDb db(path_);
    db.Rows("PRAGMA user_version = 3");
  }
  auto opened = SqliteMetadataStore::Open(path_);
  ASSERT_FALSE(opened.ok());
  EXPECT_THAT(opened.status().message(), HasSubstr("schema version 3"));
}

// A file written by an earlier release (schema 1: the listing index held
// the key columns only) is upgraded when opened, and keeps its records.
TEST_F(SqliteMetadataStoreTest, UpgradesAVersionOneFile) {
  store_.reset();
  const std::string old_path = dir_.path() + "/version1.sqlite3";
  const core::ImageRecord mine = MakeRecord("alice", 1, {"x"});
  std::ofstream(old_path).close();  // an empty file is an empty database
  {
    RawDb db(old_path);
    db.Rows(R"sql(CREATE TABLE images (
      image_id TEXT PRIMARY KEY NOT NULL, user_id TEXT NOT NULL, created_at TEXT NOT NULL,
      updated_at TEXT NOT NULL, filename TEXT NOT NULL, format TEXT NOT NULL, size_bytes INTEGER NOT NULL,
      width INTEGER NOT NULL, height INTEGER NOT NULL, sha256 TEXT NOT NULL, category TEXT, tags TEXT NOT NULL,
      tag_set TEXT NOT NULL, visibility TEXT NOT NULL) WITHOUT ROWID)sql");
    db.Rows("CREATE INDEX images_by_user ON images (user_id, created_at, image_id)");
    db.Rows("INSERT INTO images VALUES ('" + mine.image_id + "', 'alice', '" + mine.created_at + "', '" +
            mine.updated_at + "', 'a.png', 'png', 10, 1, 1, '" + mine.sha256 + "', NULL, '[\"x\"]', ',x,', 'public')");
    db.Rows("PRAGMA user_version = 1");
  }
  auto opened = SqliteMetadataStore::Open(old_path);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();

  RawDb db(old_path);
  EXPECT_THAT(db.Rows("PRAGMA user_version"), ElementsAre("2"));
  EXPECT_THAT(db.Rows("SELECT name FROM sqlite_schema WHERE type = 'index' AND name LIKE 'images_%' ORDER BY name"),
              ElementsAre("images_listed_by_user"));
  auto stored = (*opened)->Get(mine.image_id);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(*stored, mine);
  core::ListQuery query;
  query.user_id = "alice";
  auto page = (*opened)->List(query, std::nullopt, 20, 1);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items.front(), mine);
  opened->reset();
  auto reopened = SqliteMetadataStore::Open(old_path);  // an upgraded file opens as it is
  EXPECT_TRUE(reopened.ok()) << reopened.status().ToString();
}

TEST_F(SqliteMetadataStoreTest, ARepeatedIdIsDeletedOnceThenNotFound) {
  const core::ImageRecord record = MakeRecord("alice", 1);
  ASSERT_TRUE(store_->PutNew(std::span(&record, 1)).ok());
  const std::vector<std::string> ids = {record.image_id, record.image_id};
  const std::vector<core::DeleteOutcome> outcomes = store_->DeleteOwned("alice", ids);
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_EQ(outcomes[0].result, core::DeleteResult::kDeleted);
  EXPECT_EQ(outcomes[1].result, core::DeleteResult::kNotFound);
}

TEST_F(SqliteMetadataStoreTest, NextIsSetOnlyWhenMoreMatchesFollow) {
  std::vector<core::ImageRecord> records = {MakeRecord("alice", 1), MakeRecord("alice", 2), MakeRecord("alice", 3)};
  ASSERT_TRUE(store_->PutNew(records).ok());
  core::ListQuery query;
  query.user_id = "alice";
  query.viewer = "alice";

  auto exact = store_->List(query, std::nullopt, 3, 1);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->items.size(), 3u);
  EXPECT_EQ(exact->next, std::nullopt);

  auto partial = store_->List(query, std::nullopt, 2, 1);
  ASSERT_TRUE(partial.ok());
  ASSERT_EQ(partial->items.size(), 2u);
  EXPECT_EQ(partial->next, (core::Position{"alice", records[1].created_at, records[1].image_id}));

  EXPECT_EQ(store_->List(query, std::nullopt, 0, 1).status().code(), Code::kBadRequest);
}

TEST_F(SqliteMetadataStoreTest, IsReady) { EXPECT_TRUE(store_->CheckReady().ok()); }

}  // namespace
}  // namespace imgsvc::storage
