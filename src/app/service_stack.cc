#include "app/service_stack.h"

#include <filesystem>
#include <utility>

#include "app/commands.h"
#include "app/token_sources.h"
#include "core/log.h"
#include "storage/embedded/file_blob_store.h"
#include "storage/embedded/sqlite_metadata_store.h"

namespace imgsvc::app {
namespace {

std::vector<std::string> SplitOrigins(const std::string& text) {
  std::vector<std::string> origins;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    std::string item = text.substr(start, comma - start);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) origins.push_back(std::move(item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return origins;
}

// The stores and what else differs between backends.
struct Backend {
  std::unique_ptr<core::BlobStore> blobs;
  std::unique_ptr<core::MetadataStore> records;
  std::unique_ptr<core::TokenSource> tokens;  // unset: the configured or local secret
  std::string cursor_secret;                   // unset: the token
  http::DownloadResolver downloads;            // embedded only: imgsvc serves /files/
  std::optional<AwsBackend> aws;
};

StatusOr<Backend> OpenEmbedded(const Config& config, const std::string& public_url, core::Clock& clock) {
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) return Status(Code::kInternal, "cannot create the data directory: " + ec.message());
  // The metadata store first: its lock refuses a second process before the
  // blob store's Open clears tmp/ of what it takes for a crash's debris.
  IMGSVC_ASSIGN_OR_RETURN(std::unique_ptr<storage::SqliteMetadataStore> records,
                          storage::SqliteMetadataStore::Open(config.data_dir + "/metadata.sqlite3"));
  IMGSVC_ASSIGN_OR_RETURN(std::unique_ptr<storage::FileBlobStore> files,
                          storage::FileBlobStore::Open(config.data_dir, public_url, clock));
  // Durability as the writer really runs it, for the logs (and the benchmarks,
  // which record it beside each result).
  const storage::SqliteMetadataStore::Durability& durability = records->writer_durability();
  log::Info("embedded store open", {{"data_dir", config.data_dir},
                                    {"sqlite_journal_mode", durability.journal_mode},
                                    {"sqlite_synchronous", durability.synchronous}});
  Backend backend;
  backend.cursor_secret = files->signing_key();
  storage::FileBlobStore* file_store = files.get();
  backend.downloads = [file_store](std::string_view key, std::string_view expires,
                                   std::string_view signature) -> StatusOr<http::LocalDownload> {
    IMGSVC_ASSIGN_OR_RETURN(storage::LocalFile file, file_store->OpenSigned(key, expires, signature));
    return http::LocalDownload{std::move(file.path), file.size, std::move(file.content_type),
                               std::move(file.etag)};
  };
  backend.blobs = std::move(files);
  backend.records = std::move(records);
  return backend;
}

StatusOr<Backend> OpenAws(const Config& config) {
  IMGSVC_ASSIGN_OR_RETURN(AwsBackend aws, OpenAwsBackend(config, aws::ProcessEnvironment()));
  Backend backend;
  backend.blobs = std::move(aws.blobs);
  backend.records = std::move(aws.records);
  backend.tokens = std::move(aws.secret);
  backend.aws = std::move(aws);
  return backend;
}

}  // namespace

StatusOr<TokenPlan> PlanToken(const Config& config, bool loopback) {
  IMGSVC_ASSIGN_OR_RETURN(std::optional<std::string> configured, ConfiguredSecret(config));
  const bool embedded = config.storage == "embedded";
  TokenPlan plan;
  plan.configured = std::move(configured);
  plan.local_default = !plan.configured && embedded && config.mode() == core::AuthMode::kShared && loopback;
  if (!plan.configured && !plan.local_default && embedded) {
    if (config.mode() == core::AuthMode::kShared) {
      return Status(Code::kUnavailable,
                    "bound to a non-loopback address without a configured API token: set IMGSVC_API_TOKEN or "
                    "--api-token-file");
    }
    return Status(Code::kUnavailable,
                  "per-user auth mode needs a master key: set IMGSVC_API_TOKEN, --api-token-file or put one in "
                  "{data_dir}/api-token");
  }
  if (plan.local_default) log::Warn("using the documented local API token; it is accepted only on loopback");
  if (config.mode() == core::AuthMode::kShared) {
    log::Warn("shared auth mode: any holder of the token can act as any user; use "
              "--auth-mode per-user for anything exposed");
  }
  return plan;
}

StatusOr<std::unique_ptr<ServiceStack>> OpenServiceStack(const Config& config, const TokenPlan& plan,
                                                         const std::string& public_url) {
  auto stack = std::make_unique<ServiceStack>();
  IMGSVC_ASSIGN_OR_RETURN(Backend backend, config.storage == "embedded"
                                               ? OpenEmbedded(config, public_url, stack->clock)
                                               : OpenAws(config));
  // A configured token wins over Secrets Manager (CONFIG.md).
  if (plan.configured || plan.local_default) {
    const std::string secret = plan.local_default ? std::string(kLocalDefaultToken) : *plan.configured;
    // The re-read keeps its own copy of the settings: the stack may outlive
    // the Config it was opened from.
    backend.tokens = std::make_unique<ConfiguredTokenSource>(secret, [config]() -> StatusOr<std::string> {
      auto again = ConfiguredSecret(config);
      if (!again.ok()) return again.status();
      if (!*again) return Status(Code::kUnavailable, "no token configured");
      return **again;
    });
  }
  stack->blobs = std::move(backend.blobs);
  stack->records = std::move(backend.records);
  stack->tokens = std::move(backend.tokens);
  stack->aws = std::move(backend.aws);
  stack->auth = std::make_unique<core::Authenticator>(
      *stack->tokens, config.mode(), std::chrono::seconds(config.token_refresh_interval), stack->clock);
  // The cursor key is derived at the first cursor, not at start: deriving it
  // (HKDF) is OpenSSL's first KDF use of the process, most of a millisecond.
  if (backend.cursor_secret.empty()) {
    // Every instance derives the same cursor key from the shared secret, so a
    // cursor minted by one opens in all (behind a load balancer, on Lambda).
    stack->cursors = std::make_unique<core::CursorCodec>([tokens = stack->tokens.get()] {
      auto secret = tokens->Current();
      if (!secret.ok()) return StatusOr<std::string>(secret.status().WithContext("cannot fetch the API token"));
      return secret;
    });
  } else {
    stack->cursors = std::make_unique<core::CursorCodec>(
        [secret = std::move(backend.cursor_secret)]() -> StatusOr<std::string> { return secret; });
  }
  core::ServiceLimits limits;
  limits.max_file_bytes = config.max_upload_mb << 20;
  limits.max_files = static_cast<std::size_t>(config.max_files);
  limits.max_pixels = config.max_pixels;
  limits.list_max_reads = static_cast<std::size_t>(config.list_max_reads);
  stack->service = std::make_unique<core::ImageService>(*stack->blobs, *stack->records, stack->clock, stack->ids,
                                                        *stack->cursors, limits);

  http::RouterOptions router_options;
  router_options.cors_origins = SplitOrigins(config.cors_origins);
  router_options.max_upload_body_bytes = limits.max_file_bytes * limits.max_files;
  router_options.token_ready = [tokens = stack->tokens.get()] { return tokens->CheckReady(); };
  router_options.downloads = std::move(backend.downloads);
  stack->router = std::make_unique<http::Router>(*stack->service, *stack->auth, stack->ids, std::move(router_options));
  return stack;
}

std::string DefaultPublicUrl(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace imgsvc::app
