// The ports the use cases depend on: where bytes go, where records go, where
// the API token comes from, and what time and ids are.
//
// The shapes follow what DynamoDB and S3 can do, so the embedded adapters
// (files + SQLite) and the AWS adapters (S3 + DynamoDB + Secrets Manager) slot
// in behind the same interfaces and pass the same contract tests:
//  - records are written with a condition (never overwrite) and all-or-nothing
//    across one upload; DynamoDB does that with conditional puts and
//    compensation, SQLite with one transaction;
//  - listings read a bounded number of store pages and resume from a Position
//    (DynamoDB's LastEvaluatedKey: table key + index key of an item);
//  - deletes report per id, like BatchWriteItem / DeleteObjects results.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/image.h"
#include "core/status.h"

namespace imgsvc::core {

// Blob store ---------------------------------------------------------------

// One object being written. Append bytes in order, then Commit to make the
// object visible (durably) under its key. Destroying an upload that was not
// committed removes everything it wrote: a refused upload leaves nothing.
class BlobUpload {
 public:
  virtual ~BlobUpload() = default;
  virtual Status Append(std::span<const std::byte> data) = 0;
  // `content_sha256` is the lower-case hex SHA-256 of every byte appended,
  // which the caller computed as they streamed. A store that sends an object
  // with its hash takes it from here instead of hashing the bytes again: S3
  // signs a PutObject's payload hash, and refuses a body that does not match.
  virtual Status Commit(std::string_view content_sha256) = 0;
};

struct PresignedUrl {
  std::string url;
  Micros expires_at = 0;  // the true expiry (never after the signing credentials')
};

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  // Starts writing `key`. content_type is what downloads are served with.
  virtual StatusOr<std::unique_ptr<BlobUpload>> StartUpload(std::string_view key,
                                                            std::string_view content_type) = 0;
  // Removes objects; a missing object counts as removed. Returns one Status
  // per key, in order (S3 DeleteObjects reports per key).
  virtual std::vector<Status> Delete(std::span<const std::string> keys) = 0;
  // A time-limited GET URL for `key`.
  virtual StatusOr<PresignedUrl> PresignGet(std::string_view key, std::chrono::seconds expires_in) = 0;
  // The URLs of a listed page: urls[i] for keys[i]. `urls` is resized to
  // fit and its strings are assigned, so a vector used again keeps their
  // memory. A store may share its work between them; by default each is
  // presigned on its own.
  virtual Status PresignGets(std::span<const std::string> keys, std::chrono::seconds expires_in,
                             std::vector<PresignedUrl>& urls) {
    urls.resize(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      IMGSVC_ASSIGN_OR_RETURN(urls[i], PresignGet(keys[i], expires_in));
    }
    return Status::Ok();
  }
  // Ready probe for /ready (embedded: write probe + free space; S3: HeadBucket).
  virtual Status CheckReady() = 0;
};

// Metadata store -----------------------------------------------------------

// A position in a listing: the key of the last item returned. For a Query on
// the user index it is (user_id, created_at, image_id); for a Scan, image_id
// alone is enough but all three are kept (DynamoDB needs the index key too).
struct Position {
  std::string user_id;
  std::string created_at;
  std::string image_id;
  friend bool operator==(const Position&, const Position&) = default;
};

struct ListQuery {
  // Set: the user's images newest first (Query on UserIdIndex), with the date
  // range as key condition. Unset: a Scan across users, unspecified order.
  std::optional<std::string> user_id;
  std::optional<std::string> created_from;  // inclusive, normalised timestamp
  std::optional<std::string> created_to;    // inclusive, normalised timestamp
  std::optional<std::string> category;      // exact match
  std::vector<std::string> tags;            // the image must carry all of them
  std::optional<Visibility> visibility;
  // Who is looking: private images are returned only when their owner is the
  // viewer (filter `visibility = public OR user_id = viewer`).
  std::optional<std::string> viewer;
};

struct ListPage {
  std::vector<ImageRecord> items;
  // Where to resume; nullopt when the store is exhausted. When `items` holds
  // `limit` records it is the position of the last one; when the read budget
  // ran out first it is the position after the last record read.
  std::optional<Position> next;
};

enum class DeleteResult { kDeleted, kNotFound, kFailed };

struct DeleteOutcome {
  std::string image_id;
  DeleteResult result = DeleteResult::kFailed;
  std::optional<ImageRecord> record;  // the deleted record (kDeleted only)
  std::string detail;                 // why (kFailed only)
};

// Fields a PATCH may change; unset ones are kept.
struct RecordPatch {
  std::optional<std::optional<std::string>> category;  // set to nullopt clears it
  std::optional<std::vector<std::string>> tags;
  std::optional<Visibility> visibility;
};

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;
  // Writes new records all-or-nothing, each only if its image_id is unused.
  // kConflict when an id exists (nothing written).
  virtual Status PutNew(std::span<const ImageRecord> records) = 0;
  // kNotFound when absent. Strongly consistent.
  virtual StatusOr<ImageRecord> Get(std::string_view image_id) = 0;
  // Applies the patch if the record exists and belongs to `owner`; else
  // kNotFound. Sets updated_at. Returns the updated record.
  virtual StatusOr<ImageRecord> Update(std::string_view image_id, std::string_view owner,
                                       const RecordPatch& patch, std::string_view updated_at) = 0;
  // Deletes each record that belongs to `owner`; per-id outcome in order.
  // An id that is absent or someone else's is kNotFound and left untouched.
  virtual std::vector<DeleteOutcome> DeleteOwned(std::string_view owner,
                                                 std::span<const std::string> image_ids) = 0;
  // Reads pages until `limit` matches are found, the store is exhausted, or
  // `max_reads` store reads were made. See ListPage::next.
  StatusOr<ListPage> List(const ListQuery& query, const std::optional<Position>& start, std::size_t limit,
                          std::size_t max_reads);
  // List into `page`, which it overwrites; the records `page` holds may be
  // reused, so that a caller keeping one page per thread lists without
  // allocating for their fields. On error `page` holds no useful result.
  virtual Status ListInto(const ListQuery& query, const std::optional<Position>& start, std::size_t limit,
                          std::size_t max_reads, ListPage& page) = 0;
  virtual Status CheckReady() = 0;
};

// Token source -------------------------------------------------------------

// Where the service secret comes from (shared token or per-user master key).
class TokenSource {
 public:
  virtual ~TokenSource() = default;
  // The current secret, possibly cached.
  virtual StatusOr<std::string> Current() = 0;
  // Fetches the secret again, bypassing any cache (used on a key mismatch,
  // rate-limited by the caller). Sources that cannot change return Current().
  virtual StatusOr<std::string> Refresh() = 0;
  virtual Status CheckReady() = 0;
  // Starts fetching the secret without waiting for it, where fetching is a
  // call to another service: the next Current() or Refresh() that fetches
  // takes its answer. For a Lambda function's init. No-op by default.
  virtual void Prefetch() {}
};

// Time and ids -------------------------------------------------------------

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Micros Now() = 0;
};

// Wall clock whose readings strictly increase within the process (ties are
// broken by bumping a microsecond), so records keep their upload order.
class MonotonicWallClock final : public Clock {
 public:
  Micros Now() override;
};

class IdGenerator {
 public:
  virtual ~IdGenerator() = default;
  virtual std::string NewId() = 0;  // lower-case UUIDv4
};

// UUIDv4 from the OpenSSL CSPRNG.
class RandomIdGenerator final : public IdGenerator {
 public:
  std::string NewId() override;
};

}  // namespace imgsvc::core
