#include <filesystem>
#include <memory>
#include <optional>

#include "app/aws_backend.h"
#include "app/commands.h"
#include "app/token_sources.h"
#include "core/auth.h"
#include "core/cursor.h"
#include "core/log.h"
#include "core/service.h"
#include "http/router.h"
#include "server/server.h"
#include "storage/embedded/file_blob_store.h"
#include "storage/embedded/sqlite_metadata_store.h"

namespace imgsvc::app {
namespace {

int Fail(std::string_view message, const Status& status = Status::Ok()) {
  if (status.ok()) log::Error(message);
  else log::Error(message, {{"cause", status.ToString()}});
  return 1;
}

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

std::string DefaultPublicUrl(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// The stores, the token source and what else differs between backends.
struct Backend {
  std::unique_ptr<core::BlobStore> blobs;
  std::unique_ptr<core::MetadataStore> records;
  std::unique_ptr<core::TokenSource> tokens;  // unset: the configured or local secret
  std::string cursor_secret;                   // unset: the token
  http::DownloadResolver downloads;            // embedded only: imgsvc serves /files/
  std::optional<AwsBackend> aws;               // keeps the AWS clients for the log line
};

StatusOr<Backend> OpenEmbedded(const Config& config, const std::string& public_url, core::Clock& clock) {
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) return Status(Code::kInternal, "cannot create the data directory: " + ec.message());
  IMGSVC_ASSIGN_OR_RETURN(std::unique_ptr<storage::FileBlobStore> files,
                          storage::FileBlobStore::Open(config.data_dir, public_url, clock));
  IMGSVC_ASSIGN_OR_RETURN(std::unique_ptr<storage::SqliteMetadataStore> records,
                          storage::SqliteMetadataStore::Open(config.data_dir + "/metadata.sqlite3"));
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

int Serve(const Config& config) {
  const bool embedded = config.storage == "embedded";
  const bool loopback = IsLoopback(config.host);
  if (config.api_token_from_flag) {
    log::Warn("--api-token on the command line is visible to other local users in `ps`; "
              "prefer IMGSVC_API_TOKEN or --api-token-file");
  }
  auto configured = ConfiguredSecret(config);
  if (!configured.ok()) return Fail("cannot read the API token", configured.status());
  const bool local_token = !*configured && embedded && config.mode() == core::AuthMode::kShared && loopback;
  if (!*configured && !local_token && embedded) {
    if (config.mode() == core::AuthMode::kShared) {
      return Fail("bound to a non-loopback address without a configured API token: set "
                  "IMGSVC_API_TOKEN or --api-token-file");
    }
    return Fail("per-user auth mode needs a master key: set IMGSVC_API_TOKEN, --api-token-file "
                "or put one in {data_dir}/api-token");
  }
  if (local_token) log::Warn("using the documented local API token; it is accepted only on loopback");
  if (config.mode() == core::AuthMode::kShared) {
    log::Warn("shared auth mode: any holder of the token can act as any user; use "
              "--auth-mode per-user for anything exposed");
  }
  if (embedded && !loopback && config.public_url.empty()) {
    return Fail("--public-url (IMGSVC_PUBLIC_URL) is required when bound to a non-loopback address");
  }

  const std::uint64_t open_files = server::RaiseOpenFileLimit();
  core::MonotonicWallClock clock;
  core::RandomIdGenerator ids;
  http::Router* router = nullptr;  // set once the stores exist; requests wait for Listen anyway
  server::ServerOptions options;
  options.host = config.host;
  options.port = config.port;
  options.io_threads = static_cast<std::size_t>(config.io_threads);
  options.worker_threads = static_cast<std::size_t>(config.workers);
  options.shutdown_grace = std::chrono::seconds(config.shutdown_grace);
  if (embedded) {
    // Reads of the embedded store (files, SQLite in WAL mode) never wait on
    // a writer or the network, so they are answered on the io thread; /ready
    // writes and syncs a probe file and stays on the workers. On AWS every
    // read is a network call and goes to the workers.
    options.answer_inline = [](std::string_view method, std::string_view target) {
      return (method == "GET" || method == "HEAD") && !target.starts_with("/ready");
    };
  }
  server::Server server(
      options, [&router](http::Request& request) { return router->Handle(request); },
      [&router](int status, std::string_view detail) { return router->ErrorResponse(status, detail); });
  if (Status st = server.Listen(); !st.ok()) return Fail("cannot listen", st);

  const std::string public_url =
      config.public_url.empty() ? DefaultPublicUrl(config.host, server.port()) : config.public_url;
  auto opened = embedded ? OpenEmbedded(config, public_url, clock) : OpenAws(config);
  if (!opened.ok()) return Fail("cannot open the storage backend", opened.status());
  Backend& backend = *opened;

  // A configured token wins over Secrets Manager (CONFIG.md).
  if (*configured || local_token) backend.tokens.reset();
  if (!backend.tokens) {
    const std::string secret = local_token ? std::string(kLocalDefaultToken) : **configured;
    backend.tokens = std::make_unique<ConfiguredTokenSource>(secret, [&config]() -> StatusOr<std::string> {
      auto again = ConfiguredSecret(config);
      if (!again.ok()) return again.status();
      if (!*again) return Status(Code::kUnavailable, "no token configured");
      return **again;
    });
  }
  if (backend.cursor_secret.empty()) {
    // Every instance derives the same cursor key from the shared secret, so a
    // cursor minted by one opens in all (behind a load balancer, on Lambda).
    auto secret = backend.tokens->Current();
    if (!secret.ok()) return Fail("cannot fetch the API token", secret.status());
    backend.cursor_secret = *secret;
  }

  core::Authenticator auth(*backend.tokens, config.mode(), std::chrono::seconds(config.token_refresh_interval),
                           clock);
  const core::CursorCodec cursors(backend.cursor_secret);
  core::ServiceLimits limits;
  limits.max_file_bytes = config.max_upload_mb << 20;
  limits.max_files = static_cast<std::size_t>(config.max_files);
  limits.max_pixels = config.max_pixels;
  limits.list_max_reads = static_cast<std::size_t>(config.list_max_reads);
  core::ImageService service(*backend.blobs, *backend.records, clock, ids, cursors, limits);

  http::RouterOptions router_options;
  router_options.cors_origins = SplitOrigins(config.cors_origins);
  router_options.max_upload_body_bytes = limits.max_file_bytes * limits.max_files;
  router_options.token_ready = [tokens = backend.tokens.get()] { return tokens->CheckReady(); };
  router_options.downloads = backend.downloads;
  http::Router http_router(service, auth, ids, std::move(router_options));
  router = &http_router;

  if (embedded) {
    log::Info("listening", {{"host", config.host},
                            {"port", static_cast<int>(server.port())},
                            {"url", public_url},
                            {"storage", config.storage},
                            {"data_dir", config.data_dir},
                            {"auth_mode", config.auth_mode},
                            {"open_files_limit", open_files}});
  } else {
    log::Info("listening", {{"host", config.host},
                            {"port", static_cast<int>(server.port())},
                            {"url", public_url},
                            {"storage", config.storage},
                            {"bucket", config.bucket},
                            {"table", config.table},
                            {"aws_region", backend.aws->region},
                            {"aws_credentials", backend.aws->credentials_source},
                            {"auth_mode", config.auth_mode},
                            {"open_files_limit", open_files}});
  }
  server.Run([&http_router] {
    log::Info("shutting down: finishing in-flight requests");
    http_router.BeginShutdown();
  });
  log::Info("stopped");
  return 0;
}

}  // namespace imgsvc::app
