// The store contracts, run against the embedded backend (files + SQLite).

#include <atomic>
#include <fstream>
#include <iterator>

#include "storage/blob_store_contract.h"
#include "storage/embedded/file_blob_store.h"
#include "storage/embedded/sqlite_metadata_store.h"
#include "storage/manual_clock.h"
#include "storage/metadata_store_contract.h"
#include "storage/temp_dir.h"

namespace imgsvc::storage::testing {
namespace {

constexpr char kPublicUrl[] = "http://127.0.0.1:8000";

// What the HTTP transport does with /files/{key}?expires=..&signature=..
StatusOr<std::string> FetchThroughStore(FileBlobStore& store, const std::string& url) {
  const std::string prefix = std::string(kPublicUrl) + "/files/";
  const std::size_t query = url.find('?');
  if (!url.starts_with(prefix) || query == std::string::npos) return Status(Code::kNotFound, "not a download URL");
  const std::string key = url.substr(prefix.size(), query - prefix.size());
  std::string expires;
  std::string signature;
  std::string_view rest = std::string_view(url).substr(query + 1);
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos) continue;
    if (pair.substr(0, eq) == "expires") expires = pair.substr(eq + 1);
    if (pair.substr(0, eq) == "signature") signature = pair.substr(eq + 1);
  }
  IMGSVC_ASSIGN_OR_RETURN(LocalFile file, store.OpenSigned(key, expires, signature));
  std::ifstream in(file.path, std::ios::binary);
  if (!in) return Status(Code::kNotFound, "file vanished");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() != file.size) return Status(Code::kInternal, "size differs from the stat");
  return bytes;
}

BlobStoreHarness MakeFileBlobStore() {
  struct Resources {
    TempDir dir;
    ManualClock clock{1'767'225'600'123'456};
  };
  auto resources = std::make_shared<Resources>();
  StatusOr<std::unique_ptr<FileBlobStore>> store = FileBlobStore::Open(resources->dir.path(), kPublicUrl,
                                                                       resources->clock);
  if (!store.ok()) {
    ADD_FAILURE() << store.status().ToString();
    return {};
  }
  FileBlobStore* raw = store->get();
  BlobStoreHarness harness;
  harness.store = std::move(*store);
  harness.fetch = [raw](const std::string& url) { return FetchThroughStore(*raw, url); };
  harness.now = [clock = &resources->clock] { return clock->Now(); };
  harness.advance = [clock = &resources->clock](std::chrono::seconds by) { clock->Advance(by); };
  harness.resources = std::move(resources);
  return harness;
}

// The parent of every metadata store's directory, removed at exit.
std::string NewDatabasePath() {
  static TempDir root;
  static std::atomic<int> next{0};
  return root.path() + "/metadata-" + std::to_string(next++) + ".sqlite3";
}

std::unique_ptr<core::MetadataStore> MakeSqliteMetadataStore() {
  StatusOr<std::unique_ptr<SqliteMetadataStore>> store = SqliteMetadataStore::Open(NewDatabasePath());
  if (!store.ok()) {
    ADD_FAILURE() << store.status().ToString();
    return nullptr;
  }
  return std::move(*store);
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Embedded, BlobStoreContract,
                         ::testing::Values(BlobStoreBackend{"files", MakeFileBlobStore}), BlobStoreBackendName);

INSTANTIATE_TEST_SUITE_P(Embedded, MetadataStoreContract,
                         ::testing::Values(MetadataStoreBackend{"sqlite", MakeSqliteMetadataStore, {}}),
                         MetadataStoreBackendName);

}  // namespace imgsvc::storage::testing
