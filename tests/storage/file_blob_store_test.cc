// The embedded blob store's own mechanics: staging (unnamed and named),
// durability layout, the signing key, key validation and download URL
// verification. Every test runs with both stagings.

#include "storage/embedded/file_blob_store.h"

#include <gmock/gmock.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "crypto/crypto.h"
#include "storage/manual_clock.h"
#include "storage/temp_dir.h"

namespace imgsvc::storage {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;

constexpr char kPublicUrl[] = "http://127.0.0.1:8000";
constexpr core::Micros kStart = 1'767'225'600'250'000;  // 2026-01-01T00:00:00.25Z

std::span<const std::byte> AsBytes(std::string_view text) { return std::as_bytes(std::span(text.data(), text.size())); }

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> Entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  return names;
}

unsigned ModeOf(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

std::string Query(const std::string& url, const std::string& name) {
  const std::size_t at = url.find(name + "=");
  if (at == std::string::npos) return {};
  const std::size_t begin = at + name.size() + 1;
  return url.substr(begin, url.find('&', begin) - begin);
}

// How many of the file's pages are in the page cache, or -1 if unknown.
long ResidentPages(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st {};
  void* map = ::fstat(fd, &st) == 0 && st.st_size > 0
                  ? ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0)
                  : MAP_FAILED;
  ::close(fd);
  if (map == MAP_FAILED) return -1;
  const long page = ::sysconf(_SC_PAGESIZE);
  std::vector<unsigned char> resident(static_cast<std::size_t>((st.st_size + page - 1) / page));
  const bool known = ::mincore(map, static_cast<std::size_t>(st.st_size), resident.data()) == 0;
  ::munmap(map, static_cast<std::size_t>(st.st_size));
  if (!known) return -1;
  return static_cast<long>(std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return r & 1; }));
}

using Staging = FileBlobStore::Staging;

class FileBlobStoreTest : public ::testing::TestWithParam<Staging> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    Reopen();
    if (store_ && store_->staging() != GetParam()) GTEST_SKIP() << "this filesystem cannot stage unnamed files";
  }

  void Reopen() {
    store_.reset();
    auto opened = FileBlobStore::Open(dir_.path(), kPublicUrl, clock_, GetParam());
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(*opened);
  }

  // Paths to the files of uploads in progress: tmp/'s entries, or for
  // unnamed files this process's descriptors of them (".../tmp/#123 (deleted)").
  std::vector<fs::path> InProgress() const {
    if (GetParam() == Staging::kNamed) {
      std::vector<fs::path> paths;
      for (const std::string& name : Entries(Tmp())) paths.push_back(Tmp() / name);
      return paths;
    }
    std::vector<fs::path> paths;
    const std::string prefix = Tmp().string() + "/#";
    for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      const fs::path target = fs::read_symlink(entry.path(), ec);
      if (!ec && target.string().starts_with(prefix)) paths.push_back(entry.path());
    }
    return paths;
  }

  Status Put(const std::string& key, std::string_view bytes) {
    IMGSVC_ASSIGN_OR_RETURN(auto upload, store_->StartUpload(key, "image/png"));
    IMGSVC_RETURN_IF_ERROR(upload->Append(AsBytes(bytes)));
    return upload->Commit(crypto::HexEncode(crypto::Sha256Of(bytes)));
  }

  std::string SignFor(std::string_view key, std::string_view expires) const {
    const crypto::Sha256Digest mac =
        crypto::HmacSha256(store_->signing_key(), "GET\n" + std::string(key) + "\n" + std::string(expires));
    return crypto::HexEncode(std::span<const std::uint8_t>(mac));
  }

  fs::path Blobs() const { return fs::path(dir_.path()) / "blobs"; }
  fs::path Tmp() const { return fs::path(dir_.path()) / "tmp"; }

  testing::TempDir dir_;
  testing::ManualClock clock_{kStart};
  std::unique_ptr<FileBlobStore> store_;
};

TEST_P(FileBlobStoreTest, NothingAppearsUnderTheKeyBeforeCommit) {
  const std::string key = "images/alice/one.png";
  auto upload = store_->StartUpload(key, "image/png");
  ASSERT_TRUE(upload.ok()) << upload.status().ToString();
  ASSERT_TRUE((*upload)->Append(AsBytes("hello ")).ok());
  ASSERT_TRUE((*upload)->Append(AsBytes("world")).ok());

  EXPECT_FALSE(fs::exists(Blobs() / key));
  const std::vector<fs::path> in_progress = InProgress();
  ASSERT_EQ(in_progress.size(), 1u);
  EXPECT_EQ(ReadFile(in_progress[0]), "hello world");
  EXPECT_EQ(ModeOf(in_progress[0]) & ~0640u, 0u);
  EXPECT_EQ(Entries(Tmp()).size(), GetParam() == Staging::kNamed ? 1u : 0u);

  const std::string sha256 = crypto::HexEncode(crypto::Sha256Of("hello world"));
  ASSERT_TRUE((*upload)->Commit(sha256).ok());
  EXPECT_EQ(ReadFile(Blobs() / key), "hello world");
  EXPECT_EQ(ModeOf(Blobs() / key), 0640u);
  EXPECT_THAT(Entries(Tmp()), IsEmpty());
  EXPECT_THAT(InProgress(), IsEmpty());
  EXPECT_FALSE((*upload)->Append(AsBytes("more")).ok());
  EXPECT_FALSE((*upload)->Commit(sha256).ok());
}

TEST_P(FileBlobStoreTest, ACommittedBlobLeavesThePageCache) {
  struct statfs fs_info {};
  ASSERT_EQ(::statfs(dir_.path().c_str(), &fs_info), 0);
  // tmpfs pages are the file itself; no hint can drop them.
  if (fs_info.f_type == TMPFS_MAGIC) GTEST_SKIP() << "the test directory is on tmpfs";

  const std::string key = "images/alice/cold.png";
  const std::string bytes(1 << 20, 'x');
  auto upload = store_->StartUpload(key, "image/png");
  ASSERT_TRUE(upload.ok()) << upload.status().ToString();
  ASSERT_TRUE((*upload)->Append(AsBytes(bytes)).ok());
  const std::vector<fs::path> in_progress = InProgress();
  ASSERT_EQ(in_progress.size(), 1u);
  EXPECT_GT(ResidentPages(in_progress[0]), 0) << "written pages are cached until the commit";

  ASSERT_TRUE((*upload)->Commit(crypto::HexEncode(crypto::Sha256Of(bytes))).ok());
  EXPECT_EQ(ResidentPages(Blobs() / key), 0);
  EXPECT_EQ(ReadFile(Blobs() / key), bytes);
}

TEST_P(FileBlobStoreTest, DestroyingAnUncommittedUploadRemovesItsTempFile) {
  {
    auto upload = store_->StartUpload("images/alice/two.png", "image/png");
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append(AsBytes("partial")).ok());
    ASSERT_EQ(InProgress().size(), 1u);
  }
  EXPECT_THAT(InProgress(), IsEmpty());
  EXPECT_THAT(Entries(Tmp()), IsEmpty());
  EXPECT_FALSE(fs::exists(Blobs() / "images/alice/two.png"));
}

TEST_P(FileBlobStoreTest, AnUploadMayOutliveItsStore) {
  auto upload = store_->StartUpload("images/alice/late.png", "image/png");
  ASSERT_TRUE(upload.ok());
  store_.reset();
  ASSERT_TRUE((*upload)->Append(AsBytes("late")).ok());
  ASSERT_TRUE((*upload)->Commit(crypto::HexEncode(crypto::Sha256Of("late"))).ok());
  EXPECT_EQ(ReadFile(Blobs() / "images/alice/late.png"), "late");
}

TEST_P(FileBlobStoreTest, CommittingToAnExistingKeyIsConflictAndKeepsTheOriginal) {
  const std::string key = "images/alice/same.png";
  ASSERT_TRUE(Put(key, "first").ok());
  const Status second = Put(key, "second");
  EXPECT_EQ(second.code(), Code::kConflict) << second.ToString();
  EXPECT_EQ(ReadFile(Blobs() / key), "first");
  EXPECT_THAT(Entries(Tmp()), IsEmpty());
}

TEST_P(FileBlobStoreTest, CommitCreatesMissingParentDirectories) {
  ASSERT_TRUE(Put("renditions/abc/deep/er/thumb.webp", "t").ok());
  EXPECT_EQ(ReadFile(Blobs() / "renditions/abc/deep/er/thumb.webp"), "t");
}

// They share the directory's syncs (DirectorySync); each still lands whole.
TEST_P(FileBlobStoreTest, ConcurrentCommitsIntoOneDirectoryAllLand) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string name = std::to_string(t) + "-" + std::to_string(i);
        const Status put = Put("images/alice/" + name + ".png", "bytes of " + name);
        EXPECT_TRUE(put.ok()) << put.ToString();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(Entries(Blobs() / "images/alice").size(), std::size_t{kThreads * kPerThread});
  EXPECT_EQ(ReadFile(Blobs() / "images/alice/7-19.png"), "bytes of 7-19");
}

TEST_P(FileBlobStoreTest, OpenRemovesUploadsLeftByACrash) {
  ASSERT_TRUE(Put("images/alice/kept.png", "kept").ok());
  std::ofstream(Tmp() / "0123abcd.part") << "half an upload";
  std::ofstream(Tmp() / "signing-dead.key") << "half a key";
  Reopen();
  EXPECT_THAT(Entries(Tmp()), IsEmpty());
  EXPECT_EQ(ReadFile(Blobs() / "images/alice/kept.png"), "kept");
}

TEST_P(FileBlobStoreTest, TheSigningKeyIsPrivateAndSurvivesReopening) {
  const fs::path key_file = fs::path(dir_.path()) / "signing.key";
  EXPECT_EQ(ModeOf(key_file), 0600u);
  const std::string key = store_->signing_key();
  ASSERT_EQ(key.size(), 32u);
  std::string text = ReadFile(key_file);
  ASSERT_EQ(text.size(), 65u);
  EXPECT_EQ(crypto::HexDecode(text.substr(0, 64)), key);

  ASSERT_TRUE(Put("images/alice/a.png", "a").ok());
  auto url = store_->PresignGet("images/alice/a.png", 60s);
  ASSERT_TRUE(url.ok());
  Reopen();
  EXPECT_EQ(store_->signing_key(), key);
  EXPECT_TRUE(store_->OpenSigned("images/alice/a.png", Query(url->url, "expires"), Query(url->url, "signature")).ok());

  testing::TempDir other;
  auto elsewhere = FileBlobStore::Open(other.path(), kPublicUrl, clock_);
  ASSERT_TRUE(elsewhere.ok());
  EXPECT_NE((*elsewhere)->signing_key(), key);
}

TEST_P(FileBlobStoreTest, RefusesASigningKeyOthersCanRead) {
  store_.reset();
  fs::permissions(fs::path(dir_.path()) / "signing.key", fs::perms(0644));
  auto opened = FileBlobStore::Open(dir_.path(), kPublicUrl, clock_);
  ASSERT_FALSE(opened.ok());
  EXPECT_THAT(opened.status().message(), HasSubstr("chmod 600"));
}

TEST_P(FileBlobStoreTest, RefusesAMalformedSigningKey) {
  store_.reset();
  const fs::path key_file = fs::path(dir_.path()) / "signing.key";
  std::ofstream(key_file, std::ios::trunc) << "abc\n";
  auto opened = FileBlobStore::Open(dir_.path(), kPublicUrl, clock_);
  EXPECT_FALSE(opened.ok());
}

TEST_P(FileBlobStoreTest, RejectsKeysThatCouldEscapeOrNeedEscaping) {
  ASSERT_TRUE(Put("images/u@x.y_z-1/ok.png", "ok").ok());
  for (const std::string& key : std::vector<std::string>{"", "/etc/passwd", "../signing.key", "images/../../signing.key", "a/./b", "a//b",
                                "a/", ".", "..", "a b", "a\\b", "a?b", "caf\xc3\xa9", std::string("a\0b", 3),
                                std::string(1100, 'a')}) {
    SCOPED_TRACE(key);
    EXPECT_EQ(store_->StartUpload(key, "image/png").status().code(), Code::kBadRequest);
    EXPECT_EQ(store_->PresignGet(key, 60s).status().code(), Code::kBadRequest);
    EXPECT_EQ(store_->Delete(std::vector{key})[0].code(), Code::kBadRequest);
    // Even a correct signature does not open a malformed key.
    EXPECT_EQ(store_->OpenSigned(key, "9999999999", SignFor(key, "9999999999")).status().code(), Code::kForbidden);
  }
  EXPECT_TRUE(fs::exists(fs::path(dir_.path()) / "signing.key"));
}

TEST_P(FileBlobStoreTest, PresignedUrlsHaveTheDocumentedShape) {
  store_.reset();
  auto opened = FileBlobStore::Open(dir_.path(), std::string(kPublicUrl) + "/", clock_);
  ASSERT_TRUE(opened.ok());
  store_ = std::move(*opened);

  auto url = store_->PresignGet("images/alice/a.png", 100s);
  ASSERT_TRUE(url.ok());
  const std::int64_t expires = kStart / 1'000'000 + 100;
  EXPECT_EQ(url->url, std::string(kPublicUrl) + "/files/images/alice/a.png?expires=" + std::to_string(expires) +
                          "&signature=" + SignFor("images/alice/a.png", std::to_string(expires)));
  EXPECT_EQ(url->expires_at, expires * 1'000'000);
}

TEST_P(FileBlobStoreTest, OpenSignedDescribesTheFile) {
  ASSERT_TRUE(Put("images/alice/pic.png", "0123456789").ok());
  ASSERT_TRUE(Put("images/alice/blob.bin", "x").ok());
  ASSERT_TRUE(Put("images/alice/noext", "x").ok());

  auto url = store_->PresignGet("images/alice/pic.png", 60s);
  ASSERT_TRUE(url.ok());
  auto file = store_->OpenSigned("images/alice/pic.png", Query(url->url, "expires"), Query(url->url, "signature"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(fs::path(file->path), Blobs() / "images/alice/pic.png");
  EXPECT_EQ(file->size, 10u);
  EXPECT_EQ(file->content_type, "image/png");
  struct stat st {};
  ASSERT_EQ(::stat(file->path.c_str(), &st), 0);
  EXPECT_EQ(file->mtime_seconds, st.st_mtim.tv_sec);
  char etag[64];
  std::snprintf(etag, sizeof etag, "\"a-%llx\"",
                static_cast<unsigned long long>(st.st_mtim.tv_sec) * 1'000'000'000ull +
                    static_cast<unsigned long long>(st.st_mtim.tv_nsec));
  EXPECT_EQ(file->etag, etag);

  for (const std::string key : {"images/alice/blob.bin", "images/alice/noext"}) {
    auto other = store_->PresignGet(key, 60s);
    ASSERT_TRUE(other.ok());
    auto opened = store_->OpenSigned(key, Query(other->url, "expires"), Query(other->url, "signature"));
    ASSERT_TRUE(opened.ok());
    EXPECT_EQ(opened->content_type, "application/octet-stream");
  }
}

TEST_P(FileBlobStoreTest, AUrlIsValidThroughItsExpirySecond) {
  ASSERT_TRUE(Put("images/alice/a.png", "a").ok());
  auto url = store_->PresignGet("images/alice/a.png", 10s);
  ASSERT_TRUE(url.ok());
  const std::string expires = Query(url->url, "expires");
  const std::string signature = Query(url->url, "signature");

  clock_.Set(url->expires_at);
  EXPECT_TRUE(store_->OpenSigned("images/alice/a.png", expires, signature).ok());
  clock_.Set(url->expires_at + 1);
  const Status expired = store_->OpenSigned("images/alice/a.png", expires, signature).status();
  EXPECT_EQ(expired.code(), Code::kForbidden);
  EXPECT_EQ(expired.message(), "Download URL expired");
}

TEST_P(FileBlobStoreTest, RefusesMalformedOrAlteredSignatures) {
  const std::string key = "images/alice/a.png";
  ASSERT_TRUE(Put(key, "a").ok());
  auto url = store_->PresignGet(key, 60s);
  ASSERT_TRUE(url.ok());
  const std::string expires = Query(url->url, "expires");
  const std::string signature = Query(url->url, "signature");
  std::string upper = signature;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  ASSERT_NE(upper, signature);
  const std::string later = std::to_string(std::stoll(expires) + 1000);

  const std::pair<std::string, std::string> attempts[] = {
      {expires, ""},          {expires, upper},       {expires, signature.substr(1)},
      {later, signature},     {"0" + expires, signature}, {"", signature},
      {expires + "x", signature}, {"-" + expires, signature}, {"1234567890123", SignFor(key, "1234567890123")},
  };
  for (const auto& [expires_text, signature_text] : attempts) {
    SCOPED_TRACE(expires_text + " " + signature_text);
    const Status refused = store_->OpenSigned(key, expires_text, signature_text).status();
    EXPECT_EQ(refused.code(), Code::kForbidden);
    EXPECT_EQ(refused.message(), "Invalid download signature");
  }
}

TEST_P(FileBlobStoreTest, AValidUrlForAMissingFileIsNotFound) {
  const std::string key = "images/alice/never.png";
  auto url = store_->PresignGet(key, 60s);
  ASSERT_TRUE(url.ok());
  const Status missing = store_->OpenSigned(key, Query(url->url, "expires"), Query(url->url, "signature")).status();
  EXPECT_EQ(missing.code(), Code::kNotFound);
  EXPECT_EQ(missing.message(), "File not found");
}

TEST_P(FileBlobStoreTest, DeleteRemovesTheFileAndKeepsItsDirectory) {
  ASSERT_TRUE(Put("images/alice/a.png", "a").ok());
  const std::vector<Status> results = store_->Delete(std::vector<std::string>{"images/alice/a.png"});
  ASSERT_TRUE(results[0].ok());
  EXPECT_FALSE(fs::exists(Blobs() / "images/alice/a.png"));
  EXPECT_TRUE(fs::is_directory(Blobs() / "images/alice"));
  EXPECT_TRUE(Put("images/alice/b.png", "b").ok());
}

TEST_P(FileBlobStoreTest, ReadinessNeedsAWritableTmpDirectory) {
  EXPECT_TRUE(store_->CheckReady().ok());
  EXPECT_THAT(Entries(Tmp()), IsEmpty());  // the probe cleans up
  fs::remove_all(Tmp());
  const Status ready = store_->CheckReady();
  EXPECT_EQ(ready.code(), Code::kUnavailable);
  EXPECT_THAT(ready.message(), MatchesRegex("blob store: .*"));
  EXPECT_THAT(ready.message(), ::testing::Not(HasSubstr(dir_.path())));
}

INSTANTIATE_TEST_SUITE_P(Stagings, FileBlobStoreTest, ::testing::Values(Staging::kUnnamed, Staging::kNamed),
                         [](const ::testing::TestParamInfo<Staging>& param) {
                           return param.param == Staging::kUnnamed ? std::string("Unnamed") : std::string("Named");
                         });

// The filesystems this runs on (ext4, xfs, btrfs, tmpfs) all allow unnamed
// files, so the default must not quietly fall back to named ones.
TEST(FileBlobStoreStagingTest, UnnamedIsTheDefaultWhereTheFilesystemAllowsIt) {
  testing::TempDir dir;
  struct statfs fs_info {};
  ASSERT_EQ(::statfs(dir.path().c_str(), &fs_info), 0);
  const bool known = fs_info.f_type == EXT4_SUPER_MAGIC || fs_info.f_type == XFS_SUPER_MAGIC ||
                     fs_info.f_type == BTRFS_SUPER_MAGIC || fs_info.f_type == TMPFS_MAGIC;
  if (!known) GTEST_SKIP() << "not a filesystem known to support O_TMPFILE";
  testing::ManualClock clock{kStart};
  auto opened = FileBlobStore::Open(dir.path(), kPublicUrl, clock);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ((*opened)->staging(), Staging::kUnnamed);
}

// A restart opens what the first run made and creates nothing: a file
// created at every start costs the start an inode allocation.
TEST(FileBlobStoreStagingTest, ReopeningCreatesNoFile) {
  testing::TempDir dir;
  testing::ManualClock clock{kStart};
  ASSERT_TRUE(FileBlobStore::Open(dir.path(), kPublicUrl, clock).ok());

  const int watch = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(watch, 0);
  for (const std::string sub : {"", "/blobs", "/tmp"}) {
    ASSERT_GE(::inotify_add_watch(watch, (dir.path() + sub).c_str(), IN_CREATE), 0) << sub;
  }
  auto reopened = FileBlobStore::Open(dir.path(), kPublicUrl, clock);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  alignas(inotify_event) char events[4096];
  const ssize_t got = ::read(watch, events, sizeof events);
  const int read_error = errno;
  ::close(watch);
  EXPECT_EQ(got, -1) << "created: " << (got > 0 ? reinterpret_cast<const inotify_event*>(events)->name : "");
  EXPECT_EQ(read_error, EAGAIN);
}

}  // namespace
}  // namespace imgsvc::storage
