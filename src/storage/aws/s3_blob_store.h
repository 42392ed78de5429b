// The S3 adapter of core::BlobStore: image bytes as objects in one bucket,
// reached through our own SigV4 client (aws::AwsClient).
//
// Uploads buffer up to one part (S3Options::part_size). An object that fits
// in one part is a single PutObject at Commit; a larger one becomes a
// multipart upload (CreateMultipartUpload, one UploadPart per full part, the
// rest at Commit, CompleteMultipartUpload). Nothing is visible under the key
// before Commit succeeds; an upload destroyed uncommitted, or one that fails,
// aborts its multipart upload so no parts are left behind (and billed). The
// abort is best effort: whatever a failed one leaves is for the bucket's
// AbortIncompleteMultipartUpload lifecycle rule.
//
// Memory and integrity, decided together: every part is sent with its
// SHA-256 in the signature (not UNSIGNED-PAYLOAD), so S3 checks each byte it
// stores against what we signed. Hashing needs the whole part before the
// request goes out, hence a part buffer per upload. To keep RSS flat however
// many uploads arrive, an upload buffers its first MiB freely (small images,
// the common case, never wait) and needs one of `max_large_uploads` slots to
// grow past it (kUnreservedUploadBytes). A large upload holds two parts: one
// being sent while the next fills (so at most 2 x workers x 1 MiB +
// max_large_uploads x 2 x part_size are buffered: 64 MiB + 4 x 16 MiB with
// the defaults, the standalone server running up to `workers` uploads on its
// workers, and on its fibers uploads of at most 1 MiB holding at most
// `workers` MiB between them). An upload that waits
// longer than `large_upload_wait` for a slot fails with kUnavailable (503,
// Retry-After) instead of queueing without bound. part_size must be at least
// 5 MiB for real S3 (its minimum part size; emulators accept less).
//
// Addressing: virtual-hosted ("{bucket}.{host}/{key}") as AWS prefers, or
// path-style ("{host}/{bucket}/{key}") for emulators and local endpoints,
// where a bucket subdomain does not resolve; kAuto chooses path-style for an
// IP literal or localhost, and for a bucket name with dots (which would not
// match S3's wildcard TLS certificate). Presigned URLs may point at a public
// endpoint other than the one the service uses (S3Options::public_endpoint),
// e.g. when the service reaches S3 through an internal address.
//
// The store keeps no mutable state: calls from many threads are safe, each
// upload is used by one thread at a time. Errors are mapped with
// aws::ToStatus; the client logs the requests, the store does not.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aws/aws_client.h"
#include "core/ports.h"
#include "core/status.h"
#include "net/http_client.h"

namespace imgsvc::storage {

enum class S3Addressing { kAuto, kPath, kVirtual };

// "auto", "path" or "virtual" (the --s3-addressing values).
StatusOr<S3Addressing> ParseS3Addressing(std::string_view text);

struct S3Options {
  std::string bucket;
  S3Addressing addressing = S3Addressing::kAuto;
  // Where presigned URLs point; unset: the endpoint the service uses.
  std::optional<net::Endpoint> public_endpoint;
  std::size_t part_size = 8u << 20;
  // Uploads allowed to buffer more than their first MiB at once (see above).
  std::size_t max_large_uploads = 4;
  std::chrono::milliseconds large_upload_wait{30000};
};

// Bounds how many uploads may hold a buffer larger than kUnreservedBytes.
class LargeUploadSlots;

class S3BlobStore final : public core::BlobStore {
 public:
  // What an upload may buffer without a large-upload slot. An upload whose
  // object stays within it waits on no other thread (no slot, no part sent
  // beside the stream).
  static constexpr std::size_t kUnreservedUploadBytes = std::size_t{1} << 20;

  S3BlobStore(std::shared_ptr<aws::AwsClient> client, aws::ServiceTarget target, S3Options options);

  // Creates the bucket unless it exists (HeadBucket first: some emulators
  // refuse to create a bucket their caller already owns). Used by `init` and
  // by tests; the server only checks readiness.
  Status CreateBucketIfMissing();

  StatusOr<std::unique_ptr<core::BlobUpload>> StartUpload(std::string_view key,
                                                          std::string_view content_type) override;
  // DeleteObjects in batches of 1000 (S3's limit per call).
  std::vector<Status> Delete(std::span<const std::string> keys) override;
  StatusOr<core::PresignedUrl> PresignGet(std::string_view key, std::chrono::seconds expires_in) override;
  Status PresignGets(std::span<const std::string> keys, std::chrono::seconds expires_in,
                     std::vector<core::PresignedUrl>& urls) override;
  // HeadBucket. kUnavailable otherwise; the message names S3, never the
  // endpoint (it ends up in /ready answers).
  Status CheckReady() override;

 private:
  std::shared_ptr<aws::AwsClient> client_;
  std::size_t part_size_;
  std::shared_ptr<LargeUploadSlots> large_uploads_;
  // Each target carries the bucket's host when virtual-hosted; the prefix
  // is "/{bucket}" path-style, "" virtual-hosted.
  aws::ServiceTarget target_;
  std::string path_prefix_;
  aws::ServiceTarget presign_target_;
  std::string presign_path_prefix_;
};

}  // namespace imgsvc::storage
