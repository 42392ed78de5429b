// The embedded metadata store: SQLite in WAL mode with the DynamoDB shape.
//
// One table keyed by image_id and an index on (user_id, created_at, image_id)
// mirror the ImageMetadata table and its UserIdIndex GSI, so listings behave
// the same on both backends; like a GSI projecting all attributes, the index
// carries every column, so a user's page is read from it alone. Files of an
// earlier schema are upgraded when opened. synchronous=FULL: an acknowledged write survives
// a power cut. Concurrent writes share commits (group commit): a writer thread
// batches the writes waiting at that moment into one transaction, while each
// write keeps its own savepoint so one failing condition does not fail its
// batch-mates. Reads use a pool of read-only connections with prepared
// statements reused. The process holds the database for as long as the store
// is open (SQLite's unix-excl VFS): Open in another process fails at once
// with kUnavailable, and tools such as the sqlite3 shell can open the file
// only while the service is stopped.
//
// List makes one read per call: it fetches limit+1 rows, so `max_reads` is
// always honoured and `next` is set only when more matches exist.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/ports.h"

namespace imgsvc::storage {

class SqliteMetadataStore final : public core::MetadataStore {
 public:
  // Opens (creating if needed) the database file at `path`. Refuses a schema
  // version newer than this build knows.
  static StatusOr<std::unique_ptr<SqliteMetadataStore>> Open(const std::string& path);
  ~SqliteMetadataStore() override;

  Status PutNew(std::span<const core::ImageRecord> records) override;
  StatusOr<core::ImageRecord> Get(std::string_view image_id) override;
  StatusOr<core::ImageRecord> Update(std::string_view image_id, std::string_view owner,
                                     const core::RecordPatch& patch,
                                     std::string_view updated_at) override;
  std::vector<core::DeleteOutcome> DeleteOwned(std::string_view owner,
                                               std::span<const std::string> image_ids) override;
  Status ListInto(const core::ListQuery& query, const std::optional<core::Position>& start, std::size_t limit,
                  std::size_t max_reads, core::ListPage& page) override;
  // SELECT 1 on a reader, and the last write transaction did not fail on I/O.
  Status CheckReady() override;

  // Write transactions committed so far (concurrent writes share one).
  std::uint64_t commits() const;

  // The settings the writer connection runs with, as it reported them when
  // the store opened (nothing changes them afterwards).
  struct Durability {
    std::string journal_mode;  // "wal"
    int synchronous = 0;       // 2 = FULL
  };
  const Durability& writer_durability() const;

  // The SQL List runs for this query shape (`resumes`: a start position is
  // given), e.g. to check its query plan.
  static std::string ListSql(const core::ListQuery& query, bool resumes);

 private:
  struct Impl;
  explicit SqliteMetadataStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace imgsvc::storage
