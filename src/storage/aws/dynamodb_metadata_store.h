// The AWS metadata store: the ImageMetadata table of API.md "Storage layout"
// (partition key image_id, GSI UserIdIndex on user_id + created_at), reached
// through our own SigV4 client.
//
// Writes: PutNew puts each record with an "id unused" condition and, when a
// later record fails, deletes the ones it wrote (compensation): all-or-nothing
// without paying for transactions. A put whose answer was lost may already be
// applied when its retry finds the id taken, so a failed condition is checked
// against the stored item: our own record counts as written. The check runs
// on every failed condition, not only after a counted retry, because the HTTP
// client also replays a request on a stale connection below the retry count.
//
// Listing: a Query on UserIdIndex (newest first) or a Scan, filtered by
// DynamoDB. Limit counts items before filtering, so filtered reads ask for at
// least 100. A Query cannot filter on user_id (the index key there), and its
// viewer rule needs no such filter: the owner sees everything of theirs,
// anyone else only public images. Positions carry the key values as stored,
// so items with other timestamp formats resume exactly.
//
// Items written by the original Python service are read leniently: no
// visibility means private, content_type stands in for a missing format,
// tags may be a string set, timestamps are normalised (core/image.h).
//
// Holds no state beyond the client's: safe to share between threads.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "aws/aws_client.h"
#include "core/ports.h"

namespace imgsvc::storage {

class DynamoDbMetadataStore final : public core::MetadataStore {
 public:
  DynamoDbMetadataStore(std::shared_ptr<aws::AwsClient> client, aws::ServiceTarget target, std::string table);

  // Creates the table and its index (on-demand capacity) unless the table
  // exists, then waits until both are ACTIVE (polling every 200 ms, at most
  // 120 s). An existing table without UserIdIndex is an error.
  Status CreateTableIfMissing();

  Status PutNew(std::span<const core::ImageRecord> records) override;
  StatusOr<core::ImageRecord> Get(std::string_view image_id) override;
  StatusOr<core::ImageRecord> Update(std::string_view image_id, std::string_view owner,
                                     const core::RecordPatch& patch, std::string_view updated_at) override;
  std::vector<core::DeleteOutcome> DeleteOwned(std::string_view owner,
                                               std::span<const std::string> image_ids) override;
  Status ListInto(const core::ListQuery& query, const std::optional<core::Position>& start, std::size_t limit,
                  std::size_t max_reads, core::ListPage& page) override;
  // DescribeTable: ready while the table is ACTIVE (or UPDATING, which still
  // serves); anything else is kUnavailable naming DynamoDB.
  Status CheckReady() override;

 private:
  std::shared_ptr<aws::AwsClient> client_;
  aws::ServiceTarget target_;
  std::string table_;
};

}  // namespace imgsvc::storage
