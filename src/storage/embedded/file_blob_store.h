// The embedded blob store: image bytes as files under a data directory.
//
// Layout: {data_dir}/blobs/{key} for objects, {data_dir}/tmp/ for uploads in
// progress (same filesystem, so an upload moves under its key without a
// copy). An upload is an unnamed file (O_TMPFILE) where the filesystem and
// /proc allow it, else tmp/{random}.part. Commit is durable: the file and
// its directory entry under the key are synced before it returns (uploads
// committing at once into one directory share its sync). A refused
// upload never leaves a file under its key, and a crash never leaves a half
// file that metadata refers to (the upload's Commit says how). Download URLs
// are served by imgsvc itself under /files/{key}, signed like S3 presigned
// URLs: HMAC-SHA256 over the key and expiry, with a 32-byte key generated on
// first run and kept in {data_dir}/signing.key (mode 0600; the store refuses
// to open when the file is accessible to group or others).
//
// Keys are relative paths of segments made of [A-Za-z0-9._@-] (no empty, "."
// or ".." segments), so a key never leaves blobs/ nor needs URL escaping.
// Objects are never overwritten: committing to an existing key is kConflict.
// Directories left empty by Delete are kept (they are per user and reused;
// removing them would race with commits creating files in them). The data
// directory belongs to one process at a time: Open removes whatever is left
// in tmp/ as debris of a crash.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/ports.h"

namespace imgsvc::storage {

// A file the transport serves for a verified download URL.
struct LocalFile {
  std::string path;
  std::uint64_t size = 0;
  std::string content_type;
  std::string etag;           // quoted, derived from size and mtime
  std::int64_t mtime_seconds = 0;
};

class FileBlobStore final : public core::BlobStore {
 public:
  // Where an upload lives until Commit gives it its key.
  enum class Staging {
    // An unnamed file, linked under the key at commit: no directory entry in
    // tmp/ to create and remove, and on ext4 without a journal no sync of
    // tmp/ (fsync of a newly named file syncs its directory there).
    kUnnamed,
    // tmp/{random}.part, renamed under the key at commit.
    kNamed,
  };

  // Creates directories and the signing key as needed. public_url is the base
  // of download URLs, e.g. "http://127.0.0.1:8000" (no trailing slash).
  // kUnnamed staging falls back to kNamed where it is not available, which
  // the first upload (or staging()) finds out, not Open.
  static StatusOr<std::unique_ptr<FileBlobStore>> Open(std::string data_dir, std::string public_url,
                                                       core::Clock& clock, Staging preferred = Staging::kUnnamed);
  ~FileBlobStore() override;

  // content_type is not stored: downloads are served with the content type of
  // the key's extension (keys end with the detected format's extension).
  StatusOr<std::unique_ptr<core::BlobUpload>> StartUpload(std::string_view key,
                                                          std::string_view content_type) override;
  std::vector<Status> Delete(std::span<const std::string> keys) override;
  StatusOr<core::PresignedUrl> PresignGet(std::string_view key, std::chrono::seconds expires_in) override;
  Status CheckReady() override;

  // Verifies a download URL's query values for `key` (the path after
  // "/files/"). kForbidden when the signature is wrong or expired, or the key
  // is malformed; kNotFound when the file is gone.
  StatusOr<LocalFile> OpenSigned(std::string_view key, std::string_view expires,
                                 std::string_view signature);

  // The 32 raw bytes of secret key material (also used to derive the cursor key).
  const std::string& signing_key() const;

  // The staging in effect (deciding it, if no upload has yet).
  Staging staging() const;

 private:
  struct Impl;
  explicit FileBlobStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace imgsvc::storage
