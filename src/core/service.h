// The image use cases: upload, get, list, update, delete, bulk delete.
//
// Transport-neutral: inputs are validated values and a FormSource for the
// upload stream; outputs are records or Status. Authorization (who may do
// what, API.md "Authentication and who may do what") is decided here from the
// authenticated caller, so every transport enforces the same rules.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/cursor.h"
#include "core/form.h"
#include "core/image.h"
#include "core/ports.h"
#include "core/status.h"

namespace imgsvc::core {

struct ServiceLimits {
  std::uint64_t max_file_bytes = 20ull << 20;
  std::size_t max_files = 10;
  std::uint64_t max_pixels = 100'000'000;
  std::size_t list_max_reads = 10;
  // Appended to the 413 detail for files over the limit, e.g. where a Lambda
  // deployment explains the API Gateway limit. Empty: nothing appended.
  std::string file_too_large_hint;
};

// The authenticated caller: nullopt user for anonymous requests.
struct Caller {
  std::optional<std::string> user_id;
};

struct ImageWithUrl {
  ImageRecord record;
  PresignedUrl url;
};

struct ListRequest {
  ListQuery query;  // viewer is filled in by the service from the caller
  std::size_t limit = 20;
  std::optional<std::string> cursor;
  std::chrono::seconds url_expires_in{3600};
};

struct ListResult {
  ListPage page;                    // the images in order (and where the store would resume)
  std::vector<PresignedUrl> urls;   // urls[i] is the download URL of page.items[i]
  std::vector<std::string> keys;    // keys[i] is the object key of page.items[i]
  std::optional<std::string> cursor;
};

struct BulkDeleteResult {
  std::vector<std::string> deleted;
  std::vector<std::string> not_found;
  struct Failure {
    std::string image_id;
    std::string detail;
  };
  std::vector<Failure> failed;
};

class ImageService {
 public:
  ImageService(BlobStore& blobs, MetadataStore& records, Clock& clock, IdGenerator& ids,
               const CursorCodec& cursors, ServiceLimits limits);

  // Streams the form's file parts into the blob store and writes the records
  // all-or-nothing. The caller must be authenticated; the form's user_id must
  // be the caller (403 otherwise), wherever the field comes in the form.
  StatusOr<std::vector<ImageRecord>> Upload(const Caller& caller, FormSource& form);

  // 404 for unknown ids and for other users' private images.
  StatusOr<ImageWithUrl> Get(const Caller& caller, std::string_view image_id,
                             std::chrono::seconds url_expires_in);
  // Overwrites `result`, reusing the records it holds: a caller that keeps
  // one result per thread lists without allocating for their fields.
  Status ListInto(const Caller& caller, ListRequest request, ListResult& result);
  StatusOr<ImageRecord> Update(const Caller& caller, std::string_view image_id,
                               const RecordPatch& patch);
  Status Delete(const Caller& caller, std::string_view image_id);
  // `user_id` must be the caller (403); ids are validated UUIDs, 1..100.
  StatusOr<BulkDeleteResult> BulkDelete(const Caller& caller, std::string_view user_id,
                                        const std::vector<std::string>& image_ids);

  // Each component's readiness, for /ready.
  Status CheckReady();

 private:
  struct StoredFile;
  StatusOr<StoredFile> StoreFile(const std::string& user_id, const FormPart& part, FormSource& form,
                                 std::size_t index);
  // After PutNew failed: what is stored decides which bytes go (see .cc).
  StatusOr<std::vector<ImageRecord>> RecordsFailed(Status failure, std::span<const StoredFile> files,
                                                   std::vector<ImageRecord> records);
  void DiscardBlobs(std::span<StoredFile const* const> files);

  BlobStore& blobs_;
  MetadataStore& records_;
  Clock& clock_;
  IdGenerator& ids_;
  const CursorCodec& cursors_;
  ServiceLimits limits_;
};

}  // namespace imgsvc::core
