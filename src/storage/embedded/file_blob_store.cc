#include "storage/embedded/file_blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <utility>

#include "core/log.h"
#include "crypto/crypto.h"
#include "storage/embedded/directory_sync.h"

namespace imgsvc::storage {
namespace {

constexpr std::uint64_t kMinFreeBytes = std::uint64_t{64} << 20;
constexpr std::size_t kMaxKeyBytes = 1024;
constexpr std::size_t kMaxSegmentBytes = 255;  // NAME_MAX
constexpr std::size_t kSigningKeyBytes = 32;
constexpr std::size_t kMaxExpiresDigits = 12;
constexpr mode_t kDirMode = 0750;
constexpr mode_t kBlobMode = 0640;
constexpr mode_t kSecretMode = 0600;
constexpr char kSigningKeyName[] = "signing.key";
constexpr char kBadSignature[] = "Invalid download signature";

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes and reports the result: on some filesystems close is where a
  // deferred write error surfaces.
  int Close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_ = -1;
};

Status ErrnoStatus(Code code, std::string_view what, int err) {
  std::string message = "blob store: ";
  message += what;
  message += ": ";
  message += std::strerror(err);
  return Status(code, std::move(message));
}

// Disk full is a condition to retry later, not a bug.
Status WriteErrorStatus(std::string_view what, int err) {
  const bool no_space = err == ENOSPC || err == EDQUOT;
  return ErrnoStatus(no_space ? Code::kUnavailable : Code::kInternal, what, err);
}

// A table, not a chain of ranges: every listed image's key is checked when
// its URL is signed.
constexpr std::array<bool, 256> kKeyChars = [] {
  std::array<bool, 256> allowed{};
  for (const char c : std::string_view("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@-")) {
    allowed[static_cast<unsigned char>(c)] = true;
  }
  return allowed;
}();

// Relative paths of safe segments only, so a key can never leave blobs/ nor
// need escaping in a URL.
bool IsValidKey(std::string_view key) {
  if (key.empty() || key.size() > kMaxKeyBytes) return false;
  std::size_t segment_start = 0;
  for (std::size_t i = 0; i <= key.size(); ++i) {
    if (i == key.size() || key[i] == '/') {
      const std::string_view segment = key.substr(segment_start, i - segment_start);
      if (segment.empty() || segment == "." || segment == ".." || segment.size() > kMaxSegmentBytes) {
        return false;
      }
      segment_start = i + 1;
    } else if (!kKeyChars[static_cast<unsigned char>(key[i])]) {
      return false;
    }
  }
  return true;
}

std::string RandomHex(std::size_t bytes) {
  std::array<std::uint8_t, 32> buffer{};
  const std::span<std::uint8_t> out(buffer.data(), std::min(bytes, buffer.size()));
  crypto::RandomBytes(out);
  return crypto::HexEncode(std::span<const std::uint8_t>(out));
}

std::string Hex(std::uint64_t value) {
  std::array<char, 16> buffer{};
  const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value, 16);
  return std::string(buffer.data(), result.ptr);
}

Status WriteAll(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return WriteErrorStatus("write failed", errno);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return Status::Ok();
}

// Directory of `path` relative to a directory fd: "." for a top-level name.
std::string ParentOf(std::string_view path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string(".") : std::string(path.substr(0, slash));
}

Status FsyncDirAt(int dir_fd, const std::string& path) {
  Fd dir(::openat(dir_fd, path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return ErrnoStatus(Code::kInternal, "cannot open a directory to sync", errno);
  if (::fsync(dir.get()) != 0) return WriteErrorStatus("directory fsync failed", errno);
  return Status::Ok();
}

// mkdir -p for the parents of `key` under `blobs_fd`. Each directory made is
// recorded durably in its parent before anything is renamed into it.
Status MakeParents(int blobs_fd, std::string_view key) {
  for (std::size_t slash = key.find('/'); slash != std::string_view::npos; slash = key.find('/', slash + 1)) {
    const std::string dir(key.substr(0, slash));
    if (::mkdirat(blobs_fd, dir.c_str(), kDirMode) == 0) {
      IMGSVC_RETURN_IF_ERROR(FsyncDirAt(blobs_fd, ParentOf(dir)));
    } else if (errno != EEXIST) {
      return WriteErrorStatus("cannot create a directory", errno);
    }
  }
  return Status::Ok();
}

Status MakeDirAt(int parent_fd, const char* name, bool& created) {
  if (::mkdirat(parent_fd, name, kDirMode) == 0) {
    created = true;
  } else if (errno != EEXIST) {
    return ErrnoStatus(Code::kInternal, std::string("cannot create ") + name, errno);
  }
  return Status::Ok();
}

StatusOr<Fd> OpenDirAt(int parent_fd, const char* name) {
  Fd dir(::openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return ErrnoStatus(Code::kInternal, std::string("cannot open ") + name, errno);
  return dir;
}

// Whatever is in tmp/ when the store opens was left by a crashed process:
// the data directory belongs to one process at a time.
std::size_t RemoveStaleUploads(int tmp_fd) {
  DIR* dir = ::fdopendir(::dup(tmp_fd));
  if (dir == nullptr) return 0;
  std::size_t removed = 0;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    if (::unlinkat(tmp_fd, entry->d_name, 0) == 0) ++removed;
  }
  ::closedir(dir);
  return removed;
}

StatusOr<std::string> ReadSigningKey(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus(Code::kInternal, "cannot stat signing.key", errno);
  if (!S_ISREG(st.st_mode)) return Status(Code::kInternal, "blob store: signing.key is not a regular file");
  // Anyone who can read the key can forge download URLs (and cursors).
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status(Code::kInternal, std::string("blob store: signing.key is accessible to group or others (mode ") +
                                       mode + "); restrict it with chmod 600");
  }
  std::array<char, 256> buffer{};
  std::size_t size = 0;
  while (size < buffer.size()) {
    const ssize_t n = ::read(fd, buffer.data() + size, buffer.size() - size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(Code::kInternal, "cannot read signing.key", errno);
    }
    if (n == 0) break;
    size += static_cast<std::size_t>(n);
  }
  std::string_view text(buffer.data(), size);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.remove_suffix(1);
  }
  std::optional<std::string> key = crypto::HexDecode(text);
  if (!key || key->size() != kSigningKeyBytes) {
    return Status(Code::kInternal, "blob store: signing.key is malformed (expected 64 hex characters)");
  }
  return std::move(*key);
}

// Written in tmp/ and linked into place, so a crash never leaves a partial
// key and two processes starting at once agree on one key.
StatusOr<std::optional<std::string>> CreateSigningKey(int data_fd, int tmp_fd) {
  std::array<std::uint8_t, kSigningKeyBytes> key{};
  crypto::RandomBytes(key);
  const std::string text = crypto::HexEncode(std::span<const std::uint8_t>(key)) + "\n";
  const std::string temp_name = "signing-" + RandomHex(16) + ".key";
  Fd fd(::openat(tmp_fd, temp_name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kSecretMode));
  if (!fd) return ErrnoStatus(Code::kInternal, "cannot create signing.key", errno);
  Status written = WriteAll(fd.get(), text.data(), text.size());
  if (written.ok() && ::fsync(fd.get()) != 0) written = WriteErrorStatus("cannot sync signing.key", errno);
  if (written.ok() && fd.Close() != 0) written = WriteErrorStatus("cannot write signing.key", errno);
  int link_error = 0;
  if (written.ok() && ::linkat(tmp_fd, temp_name.c_str(), data_fd, kSigningKeyName, 0) != 0) link_error = errno;
  ::unlinkat(tmp_fd, temp_name.c_str(), 0);
  IMGSVC_RETURN_IF_ERROR(written);
  if (link_error == EEXIST) return std::optional<std::string>();  // another process won; read theirs
  if (link_error != 0) return ErrnoStatus(Code::kInternal, "cannot install signing.key", link_error);
  if (::fsync(data_fd) != 0) return WriteErrorStatus("cannot sync the data directory", errno);
  return std::optional<std::string>(std::string(key.begin(), key.end()));
}

StatusOr<std::string> LoadOrCreateSigningKey(int data_fd, int tmp_fd) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    Fd fd(::openat(data_fd, kSigningKeyName, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd) return ReadSigningKey(fd.get());
    if (errno != ENOENT) return ErrnoStatus(Code::kInternal, "cannot open signing.key", errno);
    IMGSVC_ASSIGN_OR_RETURN(std::optional<std::string> created, CreateSigningKey(data_fd, tmp_fd));
    if (created) return std::move(*created);
  }
  return Status(Code::kInternal, "blob store: signing.key keeps disappearing");
}

std::string_view ContentTypeOf(std::string_view key) {
  const std::size_t dot = key.rfind('.');
  const std::size_t slash = key.rfind('/');
  if (dot != std::string_view::npos && (slash == std::string_view::npos || dot > slash)) {
    if (auto format = core::FormatFromExtension(key.substr(dot))) return core::FormatContentType(*format);
  }
  return "application/octet-stream";
}

// Directory handles shared by the store and its uploads, so an upload that
// outlives the store still cleans up after itself.
struct Dirs {
  Fd data;
  Fd blobs;
  Fd tmp;
  std::string blobs_path;
  // Shared by the uploads that commit at once into a directory of blobs/.
  mutable DirectorySync blob_dirs{[this](const std::string& dir) { return FsyncDirAt(blobs.get(), dir); }};
};

constexpr std::uint64_t kWriteBehindBytes = 8u << 20;

// A file with no name yet in `dir_fd`'s filesystem, for an upload.
Fd OpenUnnamed(int dir_fd) { return Fd(::openat(dir_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, kBlobMode)); }

// Links an unnamed (O_TMPFILE) file under `name`; 0 or an errno. Through
// /proc because linkat's AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH.
int LinkUnnamed(int fd, int dir_fd, const char* name) {
  std::array<char, 32> path{};
  std::snprintf(path.data(), path.size(), "/proc/self/fd/%d", fd);
  return ::linkat(AT_FDCWD, path.data(), dir_fd, name, AT_SYMLINK_FOLLOW) == 0 ? 0 : errno;
}

// O_TMPFILE needs the filesystem's support, and linking the file needs /proc.
bool CanStageUnnamed(int tmp_fd) {
  Fd fd = OpenUnnamed(tmp_fd);
  if (!fd) return false;
  const std::string probe = "staging-" + RandomHex(8) + ".probe";
  if (LinkUnnamed(fd.get(), tmp_fd, probe.c_str()) != 0) return false;
  ::unlinkat(tmp_fd, probe.c_str(), 0);
  return true;
}

// An upload staged as tmp/{temp_name}, or unnamed when temp_name is empty.
class FileUpload final : public core::BlobUpload {
 public:
  FileUpload(std::shared_ptr<const Dirs> dirs, std::string key, std::string temp_name, Fd fd)
      : dirs_(std::move(dirs)), key_(std::move(key)), temp_name_(std::move(temp_name)), fd_(std::move(fd)) {}

  ~FileUpload() override {
    if (committed_) return;
    fd_.Reset();
    if (placed_) {
      ::unlinkat(dirs_->blobs.get(), key_.c_str(), 0);
    } else if (!temp_name_.empty()) {
      ::unlinkat(dirs_->tmp.get(), temp_name_.c_str(), 0);
    }
  }

  Status Append(std::span<const std::byte> data) override {
    if (!fd_) return Status(Code::kInternal, "blob store: upload already finished");
    IMGSVC_RETURN_IF_ERROR(WriteAll(fd_.get(), reinterpret_cast<const char*>(data.data()), data.size()));
    written_ += data.size();
    // Write-behind: the disk starts on what is written while the rest still
    // arrives, so Commit's sync waits for the tail only, not for the whole
    // file (a 200 MiB upload otherwise pays its full writeback at the end).
    // A hint: a filesystem that cannot is left to the sync.
    if (written_ - writeback_started_ >= kWriteBehindBytes) {
      ::sync_file_range(fd_.get(), static_cast<off_t>(writeback_started_),
                        static_cast<off_t>(written_ - writeback_started_), SYNC_FILE_RANGE_WRITE);
      writeback_started_ = written_;
    }
    return Status::Ok();
  }

  // The bytes were written as they came; nothing here needs their hash.
  Status Commit(std::string_view /*content_sha256*/) override {
    if (!fd_) return Status(Code::kInternal, "blob store: upload already finished");
    const bool unnamed = temp_name_.empty();
    // An unnamed file is linked first, so that one fsync makes its data, its
    // inode and its link count durable together. Until the upload's metadata
    // is committed nothing refers to the key, so a machine crash before that
    // fsync can leave an unreferenced file, never a referenced half one. A
    // named file is synced before the rename, which needs no inode write.
    if (unnamed) IMGSVC_RETURN_IF_ERROR(PlaceUnderKey());
    if ((unnamed ? ::fsync(fd_.get()) : ::fdatasync(fd_.get())) != 0) {
      return WriteErrorStatus("cannot sync the upload", errno);
    }
    // The file's pages are clean now, and the upload will not read them:
    // handing them back lets the next upload's writes reuse them, instead of
    // every upload claiming new page-cache memory and evicting what is read
    // (SQLite's pages, recent downloads). A hint; a download reads the disk.
    ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_DONTNEED);
    if (fd_.Close() != 0) return WriteErrorStatus("close failed", errno);
    if (!unnamed) IMGSVC_RETURN_IF_ERROR(PlaceUnderKey());
    committed_ = true;
    return dirs_->blob_dirs.SyncAfterLink(ParentOf(key_));
  }

 private:
  Status PlaceUnderKey() {
    int error = Place();
    if (error == ENOENT) {  // first object under this prefix
      IMGSVC_RETURN_IF_ERROR(MakeParents(dirs_->blobs.get(), key_));
      error = Place();
    }
    if (error == EEXIST) return Status(Code::kConflict, "blob store: object already exists");
    if (error != 0) return WriteErrorStatus("cannot move the upload into place", error);
    placed_ = true;
    return Status::Ok();
  }

  // Gives the upload its key unless the key exists; 0 or an errno.
  int Place() {
    const int blobs_fd = dirs_->blobs.get();
    if (temp_name_.empty()) return LinkUnnamed(fd_.get(), blobs_fd, key_.c_str());
    const int tmp_fd = dirs_->tmp.get();
    if (::renameat2(tmp_fd, temp_name_.c_str(), blobs_fd, key_.c_str(), RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return errno;
    // Filesystems without RENAME_NOREPLACE: link refuses an existing name too.
    if (::linkat(tmp_fd, temp_name_.c_str(), blobs_fd, key_.c_str(), 0) != 0) return errno;
    ::unlinkat(tmp_fd, temp_name_.c_str(), 0);  // a leftover is removed at the next Open
    return 0;
  }

  std::shared_ptr<const Dirs> dirs_;
  std::string key_;
  std::string temp_name_;
  Fd fd_;
  std::uint64_t written_ = 0;
  std::uint64_t writeback_started_ = 0;  // bytes handed to sync_file_range so far
  bool placed_ = false;                  // under its key, which the destructor removes unless committed
  bool committed_ = false;
};

}  // namespace

struct FileBlobStore::Impl {
  std::shared_ptr<const Dirs> dirs;
  std::string public_url;
  core::Clock& clock;
  std::string signing_key;
  Staging staging;  // preferred until decided, then in effect
  crypto::HmacSha256Key url_mac{signing_key};  // keyed once: a listed page signs 20 URLs
  // Decided at the first upload, not at Open: the check creates a file, and
  // an inode allocated at every start costs the start; on ext4 after many
  // deletes (large uploads, a bulk delete) it took milliseconds, as the
  // allocator passes over recently freed inodes.
  std::once_flag staging_decided{};

  Staging DecideStaging() {
    std::call_once(staging_decided, [this] {
      if (staging == Staging::kUnnamed && !CanStageUnnamed(dirs->tmp.get())) {
        staging = Staging::kNamed;
        log::Info("uploads are staged as named files in tmp/: this filesystem or a missing /proc rules out O_TMPFILE");
      }
    });
    return staging;
  }

  // HMAC-SHA256 of "GET\n{key}\n{expires}".
  crypto::Sha256Digest Sign(std::string_view key, std::string_view expires) const {
    return url_mac.Mac({"GET\n", key, "\n", expires});
  }
};

FileBlobStore::FileBlobStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FileBlobStore::~FileBlobStore() = default;

StatusOr<std::unique_ptr<FileBlobStore>> FileBlobStore::Open(std::string data_dir, std::string public_url,
                                                             core::Clock& clock, Staging preferred) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return Status(Code::kInternal, "blob store: cannot create the data directory: " + ec.message());

  auto dirs = std::make_shared<Dirs>();
  dirs->data = Fd(::open(data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dirs->data) return ErrnoStatus(Code::kInternal, "cannot open the data directory", errno);
  bool created = false;
  IMGSVC_RETURN_IF_ERROR(MakeDirAt(dirs->data.get(), "blobs", created));
  IMGSVC_RETURN_IF_ERROR(MakeDirAt(dirs->data.get(), "tmp", created));
  if (created && ::fsync(dirs->data.get()) != 0) {
    return WriteErrorStatus("cannot sync the data directory", errno);
  }
  IMGSVC_ASSIGN_OR_RETURN(dirs->blobs, OpenDirAt(dirs->data.get(), "blobs"));
  IMGSVC_ASSIGN_OR_RETURN(dirs->tmp, OpenDirAt(dirs->data.get(), "tmp"));
  dirs->blobs_path = data_dir + "/blobs";

  if (const std::size_t stale = RemoveStaleUploads(dirs->tmp.get()); stale > 0) {
    log::Info("removed unfinished uploads left by an earlier run", {{"count", std::uint64_t{stale}}});
  }
  IMGSVC_ASSIGN_OR_RETURN(std::string signing_key, LoadOrCreateSigningKey(dirs->data.get(), dirs->tmp.get()));

  while (!public_url.empty() && public_url.back() == '/') public_url.pop_back();
  auto impl = std::unique_ptr<Impl>(
      new Impl{std::move(dirs), std::move(public_url), clock, std::move(signing_key), preferred});
  return std::unique_ptr<FileBlobStore>(new FileBlobStore(std::move(impl)));
}

StatusOr<std::unique_ptr<core::BlobUpload>> FileBlobStore::StartUpload(std::string_view key,
                                                                        std::string_view /*content_type*/) {
  if (!IsValidKey(key)) return Status(Code::kBadRequest, "blob store: invalid object key");
  const int tmp_fd = impl_->dirs->tmp.get();
  std::string temp_name;
  Fd fd;
  if (impl_->DecideStaging() == Staging::kUnnamed) {
    fd = OpenUnnamed(tmp_fd);
  } else {
    temp_name = RandomHex(16) + ".part";
    fd = Fd(::openat(tmp_fd, temp_name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kBlobMode));
  }
  if (!fd) return WriteErrorStatus("cannot create an upload file", errno);
  return std::unique_ptr<core::BlobUpload>(
      new FileUpload(impl_->dirs, std::string(key), std::move(temp_name), std::move(fd)));
}

std::vector<Status> FileBlobStore::Delete(std::span<const std::string> keys) {
  std::vector<Status> results(keys.size());
  // Each directory that lost an entry is synced once, however many it lost.
  std::map<std::string, std::vector<std::size_t>> parents;
  const int blobs_fd = impl_->dirs->blobs.get();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!IsValidKey(keys[i])) {
      results[i] = Status(Code::kBadRequest, "blob store: invalid object key");
    } else if (::unlinkat(blobs_fd, keys[i].c_str(), 0) == 0) {
      parents[ParentOf(keys[i])].push_back(i);
    } else if (errno != ENOENT && errno != ENOTDIR) {
      results[i] = ErrnoStatus(Code::kInternal, "cannot delete an object", errno);
    }
  }
  for (const auto& [parent, indices] : parents) {
    if (Status synced = FsyncDirAt(blobs_fd, parent); !synced.ok()) {
      for (const std::size_t i : indices) results[i] = synced;
    }
  }
  return results;
}

StatusOr<core::PresignedUrl> FileBlobStore::PresignGet(std::string_view key, std::chrono::seconds expires_in) {
  if (!IsValidKey(key)) return Status(Code::kBadRequest, "blob store: invalid object key");
  if (expires_in.count() <= 0) return Status(Code::kBadRequest, "blob store: expiry must be in the future");
  const core::Micros now = impl_->clock.Now();
  const std::int64_t now_seconds = now / 1'000'000 - (now % 1'000'000 < 0 ? 1 : 0);
  const std::int64_t expires = now_seconds + expires_in.count();
  const std::string expires_text = std::to_string(expires);
  core::PresignedUrl presigned;
  presigned.url.reserve(impl_->public_url.size() + key.size() + 112);
  presigned.url += impl_->public_url;
  presigned.url += "/files/";
  presigned.url += key;
  presigned.url += "?expires=";
  presigned.url += expires_text;
  presigned.url += "&signature=";
  crypto::AppendHex(presigned.url, impl_->Sign(key, expires_text));
  presigned.expires_at = expires * 1'000'000;
  return presigned;
}

StatusOr<LocalFile> FileBlobStore::OpenSigned(std::string_view key, std::string_view expires,
                                              std::string_view signature) {
  if (!IsValidKey(key)) return Status(Code::kForbidden, kBadSignature);
  const bool digits_only = std::all_of(expires.begin(), expires.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (expires.empty() || expires.size() > kMaxExpiresDigits || !digits_only) {
    return Status(Code::kForbidden, kBadSignature);
  }
  std::int64_t expires_seconds = 0;
  const auto parsed = std::from_chars(expires.data(), expires.data() + expires.size(), expires_seconds);
  if (parsed.ec != std::errc() || parsed.ptr != expires.data() + expires.size()) {
    return Status(Code::kForbidden, kBadSignature);
  }
  // Signed over the text as sent, so "0123" and "123" are different URLs.
  if (!crypto::ConstantTimeEqual(crypto::HexEncode(std::span<const std::uint8_t>(impl_->Sign(key, expires))),
                                 signature)) {
    return Status(Code::kForbidden, kBadSignature);
  }
  if (impl_->clock.Now() > expires_seconds * 1'000'000) return Status(Code::kForbidden, "Download URL expired");

  const std::string relative(key);
  struct stat st {};
  if (::fstatat(impl_->dirs->blobs.get(), relative.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return Status(Code::kNotFound, "File not found");
    return ErrnoStatus(Code::kInternal, "cannot stat an object", errno);
  }
  if (!S_ISREG(st.st_mode)) return Status(Code::kNotFound, "File not found");

  const auto size = static_cast<std::uint64_t>(st.st_size);
  const auto mtime_ns = static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000u +
                        static_cast<std::uint64_t>(st.st_mtim.tv_nsec);
  LocalFile file;
  file.path = impl_->dirs->blobs_path + "/" + relative;
  file.size = size;
  file.content_type = std::string(ContentTypeOf(key));
  file.etag = "\"" + Hex(size) + "-" + Hex(mtime_ns) + "\"";
  file.mtime_seconds = st.st_mtim.tv_sec;
  return file;
}

Status FileBlobStore::CheckReady() {
  const int tmp_fd = impl_->dirs->tmp.get();
  const std::string probe = "ready-" + RandomHex(8) + ".probe";
  Fd fd(::openat(tmp_fd, probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kSecretMode));
  if (!fd) return ErrnoStatus(Code::kUnavailable, "write probe failed", errno);
  Status probed = WriteAll(fd.get(), "1", 1);
  if (probed.ok() && ::fsync(fd.get()) != 0) probed = ErrnoStatus(Code::kUnavailable, "write probe failed", errno);
  fd.Reset();
  ::unlinkat(tmp_fd, probe.c_str(), 0);
  if (!probed.ok()) return Status(Code::kUnavailable, probed.message());

  struct statvfs fs {};
  if (::fstatvfs(tmp_fd, &fs) != 0) return ErrnoStatus(Code::kUnavailable, "cannot read free space", errno);
  const std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (free_bytes < kMinFreeBytes) return Status(Code::kUnavailable, "blob store: less than 64 MiB of free space");
  return Status::Ok();
}

const std::string& FileBlobStore::signing_key() const { return impl_->signing_key; }

FileBlobStore::Staging FileBlobStore::staging() const { return impl_->DecideStaging(); }

}  // namespace imgsvc::storage
