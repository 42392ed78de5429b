#include "storage/embedded/sqlite_metadata_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <iterator>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "core/log.h"
#include "storage/embedded/wake_once.h"

namespace imgsvc::storage {
namespace {

constexpr int kSchemaVersion = 2;
constexpr std::size_t kMaxReaders = 8;
constexpr int kBusyTimeoutMs = 5000;
constexpr std::size_t kMaxFetch = 1'000'000;

// A user's listing reads its page from images_listed_by_user alone: after
// the key it orders by (user, newest first) the index holds every other
// column, so no row is looked up in the table, at the price of a second copy
// of each record on disk.
constexpr char kSchema[] = R"sql(
CREATE TABLE images (
  image_id   TEXT PRIMARY KEY NOT NULL,
  user_id    TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  filename   TEXT NOT NULL,
  format     TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  width      INTEGER NOT NULL,
  height     INTEGER NOT NULL,
  sha256     TEXT NOT NULL,
  category   TEXT,
  tags       TEXT NOT NULL,
  tag_set    TEXT NOT NULL,
  visibility TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX images_listed_by_user ON images (user_id, created_at, image_id, updated_at, filename, format,
  size_bytes, width, height, sha256, category, tags, tag_set, visibility);
PRAGMA user_version = 2;
)sql";

// Schema upgrades, kMigrations[v - 1] taking version v to v + 1, each run in
// one transaction when the writer opens the file.
constexpr const char* kMigrations[] = {
    // 1 -> 2: the listing's index becomes covering; its key columns are the
    // old index's, which it replaces.
    R"sql(
CREATE INDEX images_listed_by_user ON images (user_id, created_at, image_id, updated_at, filename, format,
  size_bytes, width, height, sha256, category, tags, tag_set, visibility);
DROP INDEX images_by_user;
PRAGMA user_version = 2;
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion - 1);

// The record's columns, in the order ReadRecord expects them.
constexpr char kColumns[] =
    "image_id, user_id, created_at, updated_at, filename, format, size_bytes, width, height, sha256, "
    "category, tags, visibility";

// Parameter numbers of the listing statement; fixed whatever the shape, so
// binding does not depend on which filters are present.
enum ListParam : int {
  kParamUser = 1,
  kParamFrom,
  kParamTo,
  kParamStartCreated,
  kParamStartId,
  kParamCategory,
  kParamVisibility,
  kParamViewer,
  kParamLimit,
  kParamFirstTag,
};

struct DbClose {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalize {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using Db = std::unique_ptr<sqlite3, DbClose>;
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFinalize>;

Status SqliteStatus(sqlite3* db, int rc, std::string_view what) {
  const int primary = rc & 0xff;
  const bool transient = primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_FULL ||
                         primary == SQLITE_IOERR;
  std::string message = "metadata store: ";
  message += what;
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return Status(transient ? Code::kUnavailable : Code::kInternal, std::move(message));
}

StatusOr<Stmt> Prepare(sqlite3* db, std::string_view sql) {
  sqlite3_stmt* raw = nullptr;
  const int rc =
      sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  Stmt stmt(raw);
  if (rc != SQLITE_OK) return SqliteStatus(db, rc, "prepare");
  return stmt;
}

Status Exec(sqlite3* db, const char* sql) {
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteStatus(db, rc, "exec");
  return Status::Ok();
}

// The first column of the first row of a one-off statement.
StatusOr<std::string> QueryText(sqlite3* db, const char* sql) {
  IMGSVC_ASSIGN_OR_RETURN(Stmt stmt, Prepare(db, sql));
  const int rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) return SqliteStatus(db, rc, sql);
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
  return std::string(text != nullptr ? text : "");
}

// Leaves a cached statement reset when a use ends, so it never holds a read
// snapshot (or a stale binding) between uses.
class StmtUse {
 public:
  explicit StmtUse(sqlite3_stmt* stmt) : stmt_(stmt) {}
  StmtUse(const StmtUse&) = delete;
  StmtUse& operator=(const StmtUse&) = delete;
  ~StmtUse() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  sqlite3_stmt* stmt_;
};

// Binds parameters, remembering the first failure. Text is bound without a
// copy: callers keep it alive until the statement is reset.
class Binder {
 public:
  explicit Binder(sqlite3_stmt* stmt) : stmt_(stmt) {}
  Binder& Text(int index, std::string_view value) {
    static constexpr char kEmpty[] = "";
    Check(sqlite3_bind_text(stmt_, index, value.empty() ? kEmpty : value.data(), static_cast<int>(value.size()),
                            nullptr));
    return *this;
  }
  Binder& Int(int index, std::int64_t value) {
    Check(sqlite3_bind_int64(stmt_, index, value));
    return *this;
  }
  Binder& Null(int index) {
    Check(sqlite3_bind_null(stmt_, index));
    return *this;
  }
  int rc() const { return rc_; }

 private:
  void Check(int rc) {
    if (rc_ == SQLITE_OK) rc_ = rc;
  }
  sqlite3_stmt* stmt_;
  int rc_ = SQLITE_OK;
};

constexpr std::array kAllFormats = {core::ImageFormat::kJpeg, core::ImageFormat::kPng,  core::ImageFormat::kGif,
                                    core::ImageFormat::kWebp, core::ImageFormat::kAvif, core::ImageFormat::kHeic,
                                    core::ImageFormat::kTiff};

std::optional<core::ImageFormat> FormatFromName(std::string_view name) {
  for (const core::ImageFormat format : kAllFormats) {
    if (core::FormatName(format) == name) return format;
  }
  return std::nullopt;
}

std::string TagsJson(const std::vector<std::string>& tags) {
  boost::json::array array;
  array.reserve(tags.size());
  for (const std::string& tag : tags) array.emplace_back(boost::json::string_view(tag.data(), tag.size()));
  return boost::json::serialize(array);
}

// The common shape, ["a","b"] with no escape inside (what TagsJson writes
// for tags without quotes, backslashes or control characters), read without
// building a JSON document: a listed page reads 20 of them. nullopt when the
// text is not of that shape.
std::optional<std::vector<std::string>> PlainTagsFromJson(std::string_view json) {
  if (json.size() < 2 || json.front() != '[' || json.back() != ']') return std::nullopt;
  std::vector<std::string> tags;
  std::string_view rest = json.substr(1, json.size() - 2);
  while (!rest.empty()) {
    if (rest.front() != '"') return std::nullopt;
    const std::size_t close = rest.find('"', 1);
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view tag = rest.substr(1, close - 1);
    if (tag.find('\\') != std::string_view::npos) return std::nullopt;
    for (const char c : tag) {
      if (static_cast<unsigned char>(c) < 0x20) return std::nullopt;
    }
    tags.emplace_back(tag);
    rest.remove_prefix(close + 1);
    if (rest.empty()) break;
    if (rest.front() != ',' || rest.size() == 1) return std::nullopt;
    rest.remove_prefix(1);
  }
  return tags;
}

std::optional<std::vector<std::string>> TagsFromJson(std::string_view json) {
  if (std::optional<std::vector<std::string>> plain = PlainTagsFromJson(json)) return plain;
  boost::system::error_code ec;
  boost::json::parse_options options;
  options.allow_invalid_utf8 = true;  // whatever bytes were stored come back
  const boost::json::value value =
      boost::json::parse(boost::json::string_view(json.data(), json.size()), ec, {}, options);
  if (ec || !value.is_array()) return std::nullopt;
  std::vector<std::string> tags;
  tags.reserve(value.get_array().size());
  for (const boost::json::value& tag : value.get_array()) {
    if (!tag.is_string()) return std::nullopt;
    tags.emplace_back(tag.get_string().data(), tag.get_string().size());
  }
  return tags;
}

// ",a,b," : a tag t is present iff instr(tag_set, ",t,") > 0 (tags never
// contain commas: the API splits them on commas).
std::string TagSet(const std::vector<std::string>& tags) {
  std::string set = ",";
  for (const std::string& tag : tags) {
    set += tag;
    set += ',';
  }
  return set;
}

std::string TagNeedle(std::string_view tag) {
  std::string needle = ",";
  needle += tag;
  needle += ',';
  return needle;
}

// A view valid until the statement steps or resets.
std::string_view ColumnView(sqlite3_stmt* stmt, int column) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, column));
  if (text == nullptr) return {};
  return std::string_view(text, static_cast<std::size_t>(sqlite3_column_bytes(stmt, column)));
}

// Reads a row selected with kColumns into `record`, overwriting every field
// in place: a listing reuses the records (and their strings' capacity) of
// the page it is given.
Status ReadRecordInto(sqlite3_stmt* stmt, core::ImageRecord& record) {
  record.image_id.assign(ColumnView(stmt, 0));
  record.user_id.assign(ColumnView(stmt, 1));
  record.created_at.assign(ColumnView(stmt, 2));
  record.updated_at.assign(ColumnView(stmt, 3));
  record.filename.assign(ColumnView(stmt, 4));
  const std::optional<core::ImageFormat> format = FormatFromName(ColumnView(stmt, 5));
  if (!format) return Status(Code::kInternal, "metadata store: unknown format in record " + record.image_id);
  record.format = *format;
  record.size_bytes = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 6));
  record.width = static_cast<std::uint32_t>(sqlite3_column_int64(stmt, 7));
  record.height = static_cast<std::uint32_t>(sqlite3_column_int64(stmt, 8));
  record.sha256.assign(ColumnView(stmt, 9));
  if (sqlite3_column_type(stmt, 10) == SQLITE_NULL) {
    record.category.reset();
  } else {
    record.category = ColumnView(stmt, 10);  // assigns into a held string, keeping its capacity
  }
  std::optional<std::vector<std::string>> tags = TagsFromJson(ColumnView(stmt, 11));
  if (!tags) return Status(Code::kInternal, "metadata store: malformed tags in record " + record.image_id);
  record.tags = std::move(*tags);
  record.visibility = ColumnView(stmt, 12) == "public" ? core::Visibility::kPublic : core::Visibility::kPrivate;
  return Status::Ok();
}

StatusOr<core::ImageRecord> ReadRecord(sqlite3_stmt* stmt) {
  core::ImageRecord record;
  IMGSVC_RETURN_IF_ERROR(ReadRecordInto(stmt, record));
  return record;
}

core::Position PositionOf(const core::ImageRecord& record) {
  return core::Position{record.user_id, record.created_at, record.image_id};
}

StatusOr<Db> OpenConnection(const std::string& path, int flags) {
  // SQLite keeps memory statistics under a global mutex taken on every one
  // of its allocations, by every connection: a few percent of a GET's CPU
  // with two io threads reading at once. Nothing here reads them. Only
  // possible before SQLite initialises, hence at the first open.
  static const int memory_statistics_off = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  static_cast<void>(memory_statistics_off);
  // No bulk page-cache allocation per connection: SQLite would carve 20
  // cache lines (87 KB) out of one allocation at open, writing a header into
  // each, so every connection touched ~21 fresh pages at the start; pages
  // are now allocated as the cache fills.
  static const int no_bulk_page_cache = sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0);
  static_cast<void>(no_bulk_page_cache);
  // unix-excl: the process holds the database file's lock for as long as it
  // has the file open, and keeps the WAL index in its own memory. With the
  // default VFS, every read transaction's begin and end took fcntl locks on
  // the -shm file under a process-wide SQLite mutex, which the io threads
  // then queued on: A/B at 64 connections, CPU per GET 14.4 -> 13.1 us and
  // per list-20 43.7 -> 42.2 us. Other processes cannot open the database
  // meanwhile, which the data directory's one-owner rule asks anyway.
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, "unix-excl");
  Db db(raw);
  if (rc != SQLITE_OK) return SqliteStatus(db.get(), rc, "cannot open the database");
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  // The WAL file outlives a clean close, emptied (journal_size_limit, set by
  // the writer), rather than being deleted and created again: a file created
  // at every start costs the start an inode allocation, which on ext4 after
  // many deletes took milliseconds (the allocator passes over recently freed
  // inodes).
  int persist_wal = 1;
  sqlite3_file_control(db.get(), "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
  return db;
}

// The writer connection and the statements the writer thread runs.
struct WriterConn {
  Db db;
  Stmt begin, commit, rollback, savepoint, release, rollback_to;
  Stmt insert, select_one, update, delete_owned;
  SqliteMetadataStore::Durability durability;  // read once, at open

  // Runs a statement that returns no rows.
  Status Step(sqlite3_stmt* stmt, std::string_view what) const {
    const int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE) return SqliteStatus(db.get(), rc, what);
    return Status::Ok();
  }
};

// Runs `sql` in a write transaction if the schema is still at `version` once
// the lock is held: another connection may have created or upgraded it while
// this one waited.
Status InTransactionIfVersion(sqlite3* db, std::string_view version, const char* sql) {
  IMGSVC_RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE"));
  auto current = QueryText(db, "PRAGMA user_version");
  Status done = current.ok() ? Status::Ok() : current.status();
  if (done.ok() && *current == version) done = Exec(db, sql);
  if (done.ok()) done = Exec(db, "COMMIT");
  if (!done.ok()) (void)Exec(db, "ROLLBACK");
  return done;
}

// Under unix-excl (OpenConnection) a database that another process has open
// refuses every statement: say so at once, not after the busy timeout.
Status CheckNotOpenElsewhere(sqlite3* db) {
  sqlite3_busy_timeout(db, 0);
  const int rc = sqlite3_exec(db, "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  if ((rc & 0xff) == SQLITE_BUSY) {
    return Status(Code::kUnavailable,
                  "metadata store: the database is open in another process (a data directory belongs to one "
                  "imgsvc at a time)");
  }
  if (rc != SQLITE_OK) return SqliteStatus(db, rc, "read the schema");
  return Status::Ok();
}

StatusOr<WriterConn> OpenWriter(const std::string& path) {
  WriterConn conn;
  IMGSVC_ASSIGN_OR_RETURN(conn.db, OpenConnection(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  sqlite3* db = conn.db.get();
  IMGSVC_RETURN_IF_ERROR(CheckNotOpenElsewhere(db));
  IMGSVC_ASSIGN_OR_RETURN(const std::string journal_mode, QueryText(db, "PRAGMA journal_mode = WAL"));
  if (journal_mode != "wal") {
    return Status(Code::kInternal, "metadata store: cannot enable WAL (journal_mode is " + journal_mode + ")");
  }
  IMGSVC_RETURN_IF_ERROR(Exec(db,
                              "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; "
                              "PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY; "
                              "PRAGMA journal_size_limit = 16777216"));
  IMGSVC_ASSIGN_OR_RETURN(const std::string synchronous, QueryText(db, "PRAGMA synchronous"));
  conn.durability = {journal_mode, std::atoi(synchronous.c_str())};

  IMGSVC_ASSIGN_OR_RETURN(std::string version, QueryText(db, "PRAGMA user_version"));
  if (version == "0") {
    IMGSVC_RETURN_IF_ERROR(InTransactionIfVersion(db, "0", kSchema));
    IMGSVC_ASSIGN_OR_RETURN(version, QueryText(db, "PRAGMA user_version"));
  }
  for (int from = 1; from < kSchemaVersion && version == std::to_string(from); ++from) {
    IMGSVC_RETURN_IF_ERROR(InTransactionIfVersion(db, version, kMigrations[from - 1]));
    IMGSVC_ASSIGN_OR_RETURN(version, QueryText(db, "PRAGMA user_version"));
    log::Info("metadata store: schema upgraded", {{"from", std::int64_t{from}}, {"to", version}});
  }
  if (version != std::to_string(kSchemaVersion)) {
    return Status(Code::kInternal, "metadata store: unsupported schema version " + version + " (this build knows " +
                                       std::to_string(kSchemaVersion) + ")");
  }

  IMGSVC_ASSIGN_OR_RETURN(conn.begin, Prepare(db, "BEGIN IMMEDIATE"));
  IMGSVC_ASSIGN_OR_RETURN(conn.commit, Prepare(db, "COMMIT"));
  IMGSVC_ASSIGN_OR_RETURN(conn.rollback, Prepare(db, "ROLLBACK"));
  IMGSVC_ASSIGN_OR_RETURN(conn.savepoint, Prepare(db, "SAVEPOINT job"));
  IMGSVC_ASSIGN_OR_RETURN(conn.release, Prepare(db, "RELEASE job"));
  IMGSVC_ASSIGN_OR_RETURN(conn.rollback_to, Prepare(db, "ROLLBACK TO job"));
  IMGSVC_ASSIGN_OR_RETURN(conn.insert,
                          Prepare(db,
                                  "INSERT INTO images (image_id, user_id, created_at, updated_at, filename, format, "
                                  "size_bytes, width, height, sha256, category, tags, tag_set, visibility) "
                                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"));
  IMGSVC_ASSIGN_OR_RETURN(conn.select_one,
                          Prepare(db, std::string("SELECT ") + kColumns + " FROM images WHERE image_id = ?1"));
  IMGSVC_ASSIGN_OR_RETURN(conn.update, Prepare(db,
                                               "UPDATE images SET category = ?1, tags = ?2, tag_set = ?3, "
                                               "visibility = ?4, updated_at = ?5 WHERE image_id = ?6"));
  IMGSVC_ASSIGN_OR_RETURN(
      conn.delete_owned,
      Prepare(db, std::string("DELETE FROM images WHERE image_id = ?1 AND user_id = ?2 RETURNING ") + kColumns));
  return conn;
}

// A unit of work for the writer thread, run inside its own savepoint of the
// batch's transaction.
class WriteJob {
 public:
  virtual ~WriteJob() = default;
  // Returns false to roll the job's savepoint back (its result says why).
  virtual bool Run(WriterConn& conn) = 0;
  // The batch's transaction failed: nothing of the job was written.
  virtual void Fail(const Status& status) = 0;

  // Set by the writer once the job's batch has committed or failed: the
  // job's own caller alone is woken, not those queued for the next batch.
  WakeOnce done;
};

Status Insert(WriterConn& conn, const core::ImageRecord& record) {
  sqlite3_stmt* stmt = conn.insert.get();
  StmtUse use(stmt);
  const std::string tags = TagsJson(record.tags);
  const std::string tag_set = TagSet(record.tags);
  Binder bind(stmt);
  bind.Text(1, record.image_id)
      .Text(2, record.user_id)
      .Text(3, record.created_at)
      .Text(4, record.updated_at)
      .Text(5, record.filename)
      .Text(6, core::FormatName(record.format))
      .Int(7, static_cast<std::int64_t>(record.size_bytes))
      .Int(8, record.width)
      .Int(9, record.height)
      .Text(10, record.sha256)
      .Text(12, tags)
      .Text(13, tag_set)
      .Text(14, core::VisibilityName(record.visibility));
  if (record.category) {
    bind.Text(11, *record.category);
  } else {
    bind.Null(11);
  }
  if (bind.rc() != SQLITE_OK) return SqliteStatus(conn.db.get(), bind.rc(), "bind");
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE) return Status::Ok();
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return Status(Code::kConflict, "metadata store: image " + record.image_id + " already exists");
  }
  return SqliteStatus(conn.db.get(), rc, "insert");
}

class PutJob final : public WriteJob {
 public:
  explicit PutJob(std::span<const core::ImageRecord> records) : records_(records) {}
  bool Run(WriterConn& conn) override {
    for (const core::ImageRecord& record : records_) {
      result = Insert(conn, record);
      if (!result.ok()) return false;
    }
    return true;
  }
  void Fail(const Status& status) override { result = status; }

  Status result;

 private:
  std::span<const core::ImageRecord> records_;
};

class UpdateJob final : public WriteJob {
 public:
  UpdateJob(std::string_view image_id, std::string_view owner, const core::RecordPatch& patch,
            std::string_view updated_at)
      : image_id_(image_id), owner_(owner), patch_(patch), updated_at_(updated_at) {}

  bool Run(WriterConn& conn) override {
    StatusOr<core::ImageRecord> current = Select(conn);
    if (!current.ok()) {
      result = current.status();
      return false;
    }
    core::ImageRecord record = std::move(*current);
    if (record.user_id != owner_) {
      result = Status(Code::kNotFound, "Image not found");
      return false;
    }
    if (patch_.category) record.category = *patch_.category;
    if (patch_.tags) record.tags = *patch_.tags;
    if (patch_.visibility) record.visibility = *patch_.visibility;
    record.updated_at = std::string(updated_at_);

    sqlite3_stmt* stmt = conn.update.get();
    StmtUse use(stmt);
    const std::string tags = TagsJson(record.tags);
    const std::string tag_set = TagSet(record.tags);
    Binder bind(stmt);
    bind.Text(2, tags).Text(3, tag_set).Text(4, core::VisibilityName(record.visibility));
    bind.Text(5, record.updated_at).Text(6, record.image_id);
    if (record.category) {
      bind.Text(1, *record.category);
    } else {
      bind.Null(1);
    }
    const int rc = bind.rc() != SQLITE_OK ? bind.rc() : sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
      result = SqliteStatus(conn.db.get(), rc, "update");
      return false;
    }
    result = std::move(record);
    return true;
  }
  void Fail(const Status& status) override { result = status; }

  StatusOr<core::ImageRecord> result = Status(Code::kInternal, "metadata store: update not run");

 private:
  StatusOr<core::ImageRecord> Select(WriterConn& conn) const {
    sqlite3_stmt* stmt = conn.select_one.get();
    StmtUse use(stmt);
    Binder bind(stmt);
    bind.Text(1, image_id_);
    const int rc = bind.rc() != SQLITE_OK ? bind.rc() : sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return Status(Code::kNotFound, "Image not found");
    if (rc != SQLITE_ROW) return SqliteStatus(conn.db.get(), rc, "select");
    return ReadRecord(stmt);
  }

  std::string_view image_id_;
  std::string_view owner_;
  const core::RecordPatch& patch_;
  std::string_view updated_at_;
};

class DeleteJob final : public WriteJob {
 public:
  DeleteJob(std::string_view owner, std::span<const std::string> image_ids) : owner_(owner), image_ids_(image_ids) {}

  // Each id stands alone: one that cannot be deleted does not undo the others.
  bool Run(WriterConn& conn) override {
    result.clear();
    result.reserve(image_ids_.size());
    for (const std::string& image_id : image_ids_) result.push_back(DeleteOne(conn, image_id));
    return true;
  }
  void Fail(const Status& status) override {
    result.clear();
    for (const std::string& image_id : image_ids_) {
      core::DeleteOutcome outcome;
      outcome.image_id = image_id;
      outcome.result = core::DeleteResult::kFailed;
      outcome.detail = status.message();
      result.push_back(std::move(outcome));
    }
  }

  std::vector<core::DeleteOutcome> result;

 private:
  core::DeleteOutcome DeleteOne(WriterConn& conn, const std::string& image_id) const {
    core::DeleteOutcome outcome;
    outcome.image_id = image_id;
    sqlite3_stmt* stmt = conn.delete_owned.get();
    StmtUse use(stmt);
    Binder bind(stmt);
    bind.Text(1, image_id).Text(2, owner_);
    int rc = bind.rc() != SQLITE_OK ? bind.rc() : sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
      outcome.result = core::DeleteResult::kNotFound;
      return outcome;
    }
    StatusOr<core::ImageRecord> record = Status(Code::kInternal, "metadata store: delete failed");
    if (rc == SQLITE_ROW) {
      record = ReadRecord(stmt);
      rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_DONE) record = SqliteStatus(conn.db.get(), rc, "delete");
    if (!record.ok()) {
      outcome.result = core::DeleteResult::kFailed;
      outcome.detail = record.status().message();
      return outcome;
    }
    outcome.result = core::DeleteResult::kDeleted;
    outcome.record = std::move(*record);
    return outcome;
  }

  std::string_view owner_;
  std::span<const std::string> image_ids_;
};

// Proves the writer thread answers and can take the write lock.
class ProbeJob final : public WriteJob {
 public:
  bool Run(WriterConn&) override { return true; }
  void Fail(const Status& status) override { result = status; }
  Status result;
};

// A read-only connection with its statements, used by one thread at a time.
struct ReaderConn {
  Db db;
  Stmt get;
  Stmt ping;
  std::unordered_map<std::uint64_t, Stmt> lists;  // by ListShape
};

StatusOr<std::unique_ptr<ReaderConn>> OpenReader(const std::string& path) {
  auto conn = std::make_unique<ReaderConn>();
  IMGSVC_ASSIGN_OR_RETURN(conn->db, OpenConnection(path, SQLITE_OPEN_READONLY));
  IMGSVC_RETURN_IF_ERROR(Exec(conn->db.get(), "PRAGMA cache_size = -8192"));
  IMGSVC_ASSIGN_OR_RETURN(conn->get, Prepare(conn->db.get(),
                                             std::string("SELECT ") + kColumns + " FROM images WHERE image_id = ?1"));
  IMGSVC_ASSIGN_OR_RETURN(conn->ping, Prepare(conn->db.get(), "SELECT 1"));
  return conn;
}

// Which optional clauses a listing has: the SQL text depends on nothing else.
std::uint64_t ListShape(const core::ListQuery& query, bool resumes) {
  std::uint64_t shape = 0;
  shape |= query.user_id ? 1u : 0u;
  shape |= query.created_from ? 2u : 0u;
  shape |= query.created_to ? 4u : 0u;
  shape |= resumes ? 8u : 0u;
  shape |= query.category ? 16u : 0u;
  shape |= query.visibility ? 32u : 0u;
  shape |= query.viewer ? 64u : 0u;
  return shape | (std::uint64_t{query.tags.size()} << 7);
}

}  // namespace

struct SqliteMetadataStore::Impl {
  std::string path;
  WriterConn writer;

  std::mutex queue_mu;
  std::condition_variable queue_cv;  // the writer waits for jobs
  std::vector<WriteJob*> queue;
  bool stopping = false;
  std::thread writer_thread;
  std::atomic<std::uint64_t> commits{0};

  std::mutex pool_mu;
  std::condition_variable pool_cv;
  std::vector<std::unique_ptr<ReaderConn>> idle_readers;
  std::size_t open_readers = 0;

  ~Impl() {
    if (writer_thread.joinable()) {
      {
        std::lock_guard lock(queue_mu);
        stopping = true;
      }
      queue_cv.notify_one();
      writer_thread.join();
    }
  }

  void Submit(WriteJob& job) {
    {
      std::lock_guard lock(queue_mu);
      queue.push_back(&job);
    }
    queue_cv.notify_one();
    job.done.Wait();
  }

  // Takes every job waiting at that moment into one transaction: while one
  // commit syncs, the next batch queues up.
  void WriterLoop() {
    std::vector<WriteJob*> batch;
    for (;;) {
      {
        std::unique_lock lock(queue_mu);
        queue_cv.wait(lock, [this] { return stopping || !queue.empty(); });
        if (queue.empty()) return;
        batch.swap(queue);
      }
      RunBatch(batch);
      // A job's caller may return, and the job go, as soon as it is set.
      for (WriteJob* job : batch) job->done.Set();
      batch.clear();
    }
  }

  void RunBatch(const std::vector<WriteJob*>& batch) {
    Status status = writer.Step(writer.begin.get(), "begin");
    for (std::size_t i = 0; status.ok() && i < batch.size(); ++i) {
      status = writer.Step(writer.savepoint.get(), "savepoint");
      if (!status.ok()) break;
      if (!batch[i]->Run(writer)) status = writer.Step(writer.rollback_to.get(), "rollback to savepoint");
      if (status.ok()) status = writer.Step(writer.release.get(), "release savepoint");
    }
    if (status.ok()) status = writer.Step(writer.commit.get(), "commit");
    if (status.ok()) {
      commits.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (sqlite3_get_autocommit(writer.db.get()) == 0) (void)writer.Step(writer.rollback.get(), "rollback");
    log::Error("metadata store: write transaction failed", {{"error", status.message()}});
    for (WriteJob* job : batch) job->Fail(status);
  }

  // A reader connection, returned to the pool when the lease ends.
  class ReaderLease {
   public:
    ReaderLease(Impl* impl, std::unique_ptr<ReaderConn> conn) : impl_(impl), conn_(std::move(conn)) {}
    ReaderLease(ReaderLease&& other) noexcept = default;
    ReaderLease& operator=(ReaderLease&&) = delete;
    ~ReaderLease() {
      if (!conn_) return;
      {
        std::lock_guard lock(impl_->pool_mu);
        impl_->idle_readers.push_back(std::move(conn_));
      }
      impl_->pool_cv.notify_one();
    }
    ReaderConn* operator->() const { return conn_.get(); }

   private:
    Impl* impl_;
    std::unique_ptr<ReaderConn> conn_;
  };

  StatusOr<ReaderLease> AcquireReader() {
    {
      std::unique_lock lock(pool_mu);
      pool_cv.wait(lock, [this] { return !idle_readers.empty() || open_readers < kMaxReaders; });
      if (!idle_readers.empty()) {
        std::unique_ptr<ReaderConn> conn = std::move(idle_readers.back());
        idle_readers.pop_back();
        return ReaderLease(this, std::move(conn));
      }
      ++open_readers;
    }
    StatusOr<std::unique_ptr<ReaderConn>> conn = OpenReader(path);
    if (!conn.ok()) {
      {
        std::lock_guard lock(pool_mu);
        --open_readers;
      }
      pool_cv.notify_one();
      return conn.status();
    }
    return ReaderLease(this, std::move(*conn));
  }
};

SqliteMetadataStore::SqliteMetadataStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqliteMetadataStore::~SqliteMetadataStore() = default;

StatusOr<std::unique_ptr<SqliteMetadataStore>> SqliteMetadataStore::Open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  IMGSVC_ASSIGN_OR_RETURN(impl->writer, OpenWriter(path));
  {
    // Fail now rather than at the first request when readers cannot open.
    IMGSVC_ASSIGN_OR_RETURN(auto reader, impl->AcquireReader());
  }
  try {
    impl->writer_thread = std::thread([raw = impl.get()] { raw->WriterLoop(); });
  } catch (const std::system_error& e) {
    return Status(Code::kInternal, std::string("metadata store: cannot start the writer thread: ") + e.what());
  }
  return std::unique_ptr<SqliteMetadataStore>(new SqliteMetadataStore(std::move(impl)));
}

Status SqliteMetadataStore::PutNew(std::span<const core::ImageRecord> records) {
  if (records.empty()) return Status::Ok();
  PutJob job(records);
  impl_->Submit(job);
  return job.result;
}

StatusOr<core::ImageRecord> SqliteMetadataStore::Get(std::string_view image_id) {
  IMGSVC_ASSIGN_OR_RETURN(auto reader, impl_->AcquireReader());
  sqlite3_stmt* stmt = reader->get.get();
  StmtUse use(stmt);
  Binder bind(stmt);
  bind.Text(1, image_id);
  const int rc = bind.rc() != SQLITE_OK ? bind.rc() : sqlite3_step(stmt);
  if (rc == SQLITE_DONE) return Status(Code::kNotFound, "Image not found");
  if (rc != SQLITE_ROW) return SqliteStatus(reader->db.get(), rc, "get");
  return ReadRecord(stmt);
}

StatusOr<core::ImageRecord> SqliteMetadataStore::Update(std::string_view image_id, std::string_view owner,
                                                        const core::RecordPatch& patch,
                                                        std::string_view updated_at) {
  UpdateJob job(image_id, owner, patch, updated_at);
  impl_->Submit(job);
  return std::move(job.result);
}

std::vector<core::DeleteOutcome> SqliteMetadataStore::DeleteOwned(std::string_view owner,
                                                                  std::span<const std::string> image_ids) {
  if (image_ids.empty()) return {};
  DeleteJob job(owner, image_ids);
  impl_->Submit(job);
  return std::move(job.result);
}

std::string SqliteMetadataStore::ListSql(const core::ListQuery& query, bool resumes) {
  std::vector<std::string> where;
  if (query.user_id) {
    // Key condition on the index: user, then the created_at range, then the
    // resume point as a row value so ties on created_at resume by image_id.
    where.push_back("user_id = ?1");
    if (query.created_from) where.push_back("created_at >= ?2");
    if (query.created_to) where.push_back("created_at <= ?3");
    if (resumes) where.push_back("(created_at, image_id) < (?4, ?5)");
  } else {
    if (resumes) where.push_back("image_id > ?5");
    if (query.created_from) where.push_back("created_at >= ?2");
    if (query.created_to) where.push_back("created_at <= ?3");
  }
  if (query.category) where.push_back("category = ?6");
  if (query.visibility) where.push_back("visibility = ?7");
  where.push_back(query.viewer ? "(visibility = 'public' OR user_id = ?8)" : "visibility = 'public'");
  for (std::size_t i = 0; i < query.tags.size(); ++i) {
    where.push_back("instr(tag_set, ?" + std::to_string(kParamFirstTag + static_cast<int>(i)) + ") > 0");
  }

  std::string sql = std::string("SELECT ") + kColumns + " FROM images WHERE ";
  for (std::size_t i = 0; i < where.size(); ++i) {
    if (i > 0) sql += " AND ";
    sql += where[i];
  }
  sql += query.user_id ? " ORDER BY created_at DESC, image_id DESC" : " ORDER BY image_id";
  sql += " LIMIT ?9";
  return sql;
}

Status SqliteMetadataStore::ListInto(const core::ListQuery& query, const std::optional<core::Position>& start,
                                     std::size_t limit, std::size_t /*max_reads: one read always suffices*/,
                                     core::ListPage& page) {
  if (limit == 0) return Status(Code::kBadRequest, "metadata store: limit must be at least 1");
  IMGSVC_ASSIGN_OR_RETURN(auto reader, impl_->AcquireReader());
  const std::uint64_t shape = ListShape(query, start.has_value());
  auto cached = reader->lists.find(shape);
  if (cached == reader->lists.end()) {
    IMGSVC_ASSIGN_OR_RETURN(Stmt prepared, Prepare(reader->db.get(), ListSql(query, start.has_value())));
    cached = reader->lists.emplace(shape, std::move(prepared)).first;
  }
  sqlite3_stmt* stmt = cached->second.get();

  std::vector<std::string> needles;
  needles.reserve(query.tags.size());
  for (const std::string& tag : query.tags) needles.push_back(TagNeedle(tag));

  StmtUse use(stmt);
  Binder bind(stmt);
  if (query.user_id) bind.Text(kParamUser, *query.user_id);
  if (query.created_from) bind.Text(kParamFrom, *query.created_from);
  if (query.created_to) bind.Text(kParamTo, *query.created_to);
  if (start) {
    if (query.user_id) bind.Text(kParamStartCreated, start->created_at);
    bind.Text(kParamStartId, start->image_id);
  }
  if (query.category) bind.Text(kParamCategory, *query.category);
  if (query.visibility) bind.Text(kParamVisibility, core::VisibilityName(*query.visibility));
  if (query.viewer) bind.Text(kParamViewer, *query.viewer);
  for (std::size_t i = 0; i < needles.size(); ++i) bind.Text(kParamFirstTag + static_cast<int>(i), needles[i]);
  // One row more than asked tells whether anything follows the page.
  const std::size_t fetch = std::min(limit, kMaxFetch) + 1;
  bind.Int(kParamLimit, static_cast<std::int64_t>(fetch));
  if (bind.rc() != SQLITE_OK) return SqliteStatus(reader->db.get(), bind.rc(), "bind");

  page.items.reserve(std::min(fetch, std::size_t{128}));
  page.next.reset();
  std::size_t rows = 0;
  for (;; ++rows) {
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqliteStatus(reader->db.get(), rc, "list");
    if (rows == page.items.size()) page.items.emplace_back();
    IMGSVC_RETURN_IF_ERROR(ReadRecordInto(stmt, page.items[rows]));
  }
  page.items.resize(std::min(rows, limit));
  if (rows > limit) page.next = PositionOf(page.items.back());
  return Status::Ok();
}

Status SqliteMetadataStore::CheckReady() {
  {
    IMGSVC_ASSIGN_OR_RETURN(auto reader, impl_->AcquireReader());
    sqlite3_stmt* stmt = reader->ping.get();
    StmtUse use(stmt);
    if (const int rc = sqlite3_step(stmt); rc != SQLITE_ROW) return SqliteStatus(reader->db.get(), rc, "read probe");
  }
  ProbeJob probe;
  impl_->Submit(probe);
  return probe.result;
}

std::uint64_t SqliteMetadataStore::commits() const { return impl_->commits.load(std::memory_order_relaxed); }

const SqliteMetadataStore::Durability& SqliteMetadataStore::writer_durability() const {
  return impl_->writer.durability;
}

}  // namespace imgsvc::storage
