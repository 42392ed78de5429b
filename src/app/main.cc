// imgsvc: image upload, retrieval and metadata service.
//
// Commands: serve, init, invoke, token; started by Lambda (AWS_LAMBDA_RUNTIME_API
// set, no arguments) it runs the custom runtime's loop. Settings follow CONFIG.md: every flag has an
// IMGSVC_* environment variable, and a .env file fills in what neither sets.
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "app/commands.h"
#include "app/config.h"
#include "core/log.h"
#include "crypto/crypto.h"

namespace {

using imgsvc::app::Config;

// The .env file must be loaded before CLI11 reads the environment.
std::string EnvFileArgument(int argc, char** argv, bool& explicit_file) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--env-file") == 0 && i + 1 < argc) {
      explicit_file = true;
      return argv[i + 1];
    }
    if (std::strncmp(argv[i], "--env-file=", 11) == 0) {
      explicit_file = true;
      return argv[i] + 11;
    }
  }
  return ".env";
}

void AddSettings(CLI::App& cmd, Config& c) {
  auto opt = [&cmd](const std::string& flag, auto& value, const std::string& env, const std::string& help) {
    return cmd.add_option(flag, value, help)->envname(env)->capture_default_str();
  };
  opt("--host", c.host, "IMGSVC_HOST", "bind address (0.0.0.0 in containers)");
  opt("--port", c.port, "IMGSVC_PORT", "listen port (0: any free port)");
  opt("--storage", c.storage, "IMGSVC_STORAGE", "embedded (files + SQLite) or aws")
      ->check(CLI::IsMember({"embedded", "aws"}));
  opt("--data-dir", c.data_dir, "IMGSVC_DATA_DIR", "embedded backend's directory");
  opt("--bucket", c.bucket, "IMGSVC_BUCKET", "S3 bucket");
  opt("--table", c.table, "IMGSVC_TABLE", "DynamoDB table (GSI UserIdIndex)");
  opt("--token-secret", c.token_secret, "IMGSVC_TOKEN_SECRET", "Secrets Manager secret name");
  opt("--auth-mode", c.auth_mode, "IMGSVC_AUTH_MODE", "shared or per-user")
      ->check(CLI::IsMember({"shared", "per-user"}));
  opt("--api-token-file", c.api_token_file, "IMGSVC_API_TOKEN_FILE",
      "file holding the token (shared) or master key (per-user)");
  opt("--api-token", c.api_token, "IMGSVC_API_TOKEN", "the token or master key itself");
  opt("--public-url", c.public_url, "IMGSVC_PUBLIC_URL",
      "base of download URLs (default http://{host}:{port} on loopback)");
  opt("--cors-origins", c.cors_origins, "IMGSVC_CORS_ORIGINS", "comma-separated allowed origins, or *");
  opt("--token-refresh-interval", c.token_refresh_interval, "IMGSVC_TOKEN_REFRESH_INTERVAL",
      "at most one secret refetch per this many seconds on a key mismatch")
      ->check(CLI::Range(1, 86400));
  opt("--list-max-reads", c.list_max_reads, "IMGSVC_LIST_MAX_READS",
      "store reads one listing request may make to fill a page")
      ->check(CLI::Range(1, 1000));
  opt("--token-cache-ttl", c.token_cache_ttl, "IMGSVC_TOKEN_CACHE_TTL", "seconds a fetched secret stays cached")
      ->check(CLI::Range(1, 86400));
  opt("--max-upload-mb", c.max_upload_mb, "IMGSVC_MAX_UPLOAD_MB", "per-file size limit, MiB")
      ->check(CLI::Range(1, 1 << 20));
  opt("--max-files", c.max_files, "IMGSVC_MAX_FILES", "files per upload request")->check(CLI::Range(1, 1000));
  opt("--max-pixels", c.max_pixels, "IMGSVC_MAX_PIXELS", "width x height limit")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
  opt("--s3-public-endpoint", c.s3_public_endpoint, "IMGSVC_S3_PUBLIC_ENDPOINT",
      "host presigned URLs point to");
  opt("--s3-addressing", c.s3_addressing, "IMGSVC_S3_ADDRESSING", "virtual, path, or auto")
      ->check(CLI::IsMember({"virtual", "path", "auto"}));
  opt("--log-level", c.log_level, "IMGSVC_LOG_LEVEL", "debug, info, warn, error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  opt("--shutdown-grace", c.shutdown_grace, "IMGSVC_SHUTDOWN_GRACE",
      "seconds in-flight requests get after SIGTERM")
      ->check(CLI::Range(0, 3600));
  opt("--io-threads", c.io_threads, "IMGSVC_IO_THREADS", "threads doing network I/O")
      ->check(CLI::Range(1, 64));
  opt("--workers", c.workers, "IMGSVC_WORKERS", "threads running requests (bounds concurrent store work)")
      ->check(CLI::Range(1, 1024));
}

// Whether `flag` itself (not its environment variable, which CLI11 counts
// alike) is among the arguments.
bool OnCommandLine(int argc, char** argv, std::string_view flag) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.starts_with(flag) && (arg.size() == flag.size() || arg[flag.size()] == '=')) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  imgsvc::crypto::InitializeOpenSsl();
  bool explicit_env_file = false;
  const std::string env_file = EnvFileArgument(argc, argv, explicit_env_file);
  if (auto st = imgsvc::app::LoadEnvFile(env_file, explicit_env_file); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.message().c_str());
    return 2;
  }

  Config config;
  // One per core, as nginx's `worker_processes auto`: each runs its own
  // connections, and embedded reads are answered on them.
  config.io_threads = std::max(1u, std::thread::hardware_concurrency());

  // Started by Lambda as the bootstrap (no arguments): the settings come from
  // the environment only, and the upload limit defaults to 4 MiB so our 413
  // comes before Lambda's 6 MB payload limit (base64 adds a third).
  const char* runtime_api = std::getenv("AWS_LAMBDA_RUNTIME_API");
  if (runtime_api != nullptr && *runtime_api != '\0' && argc == 1) {
    config.max_upload_mb = 4;
    CLI::App lambda_app{"imgsvc as an AWS Lambda custom runtime"};
    AddSettings(lambda_app, config);
    CLI11_PARSE(lambda_app, argc, argv);
    imgsvc::log::Level level;
    imgsvc::log::ParseLevel(config.log_level, level);
    imgsvc::log::SetLevel(level);
    return imgsvc::app::RunLambdaRuntime(config, runtime_api);
  }

  CLI::App app{"imgsvc: image upload, retrieval and metadata service"};
  app.require_subcommand(1);
  std::string env_file_flag;
  app.add_option("--env-file", env_file_flag, "a .env file to read settings from (default ./.env)");

  // A command's settings are registered once CLI11 has found it on the
  // command line, before it reads the command's arguments: registering an
  // option compares its names with those of every option before it, and the
  // three commands' full sets were a third of a server's start
  // (1.3 of 3.6 million instructions).
  const auto settings_when_invoked = [&config](CLI::App* command) {
    command->preparse_callback([command, &config](std::size_t) { AddSettings(*command, config); });
  };
  CLI::App* serve = app.add_subcommand("serve", "run the HTTP server");
  settings_when_invoked(serve);

  CLI::App* init = app.add_subcommand(
      "init", "create the S3 bucket, DynamoDB table and Secrets Manager secret where missing");
  settings_when_invoked(init);

  std::string event_file;
  CLI::App* invoke = app.add_subcommand("invoke", "run one Lambda event (API Gateway / Function URL) locally");
  settings_when_invoked(invoke);
  invoke->add_option("--event", event_file, "file holding the event JSON")->required();

  std::string user;
  CLI::App* token = app.add_subcommand("token", "print USER's token in per-user auth mode");
  token->add_option("user", user, "the user id")->required();
  token->add_option("--api-token", config.api_token, "master key")->envname("IMGSVC_API_TOKEN");
  token->add_option("--api-token-file", config.api_token_file, "file holding the master key")
      ->envname("IMGSVC_API_TOKEN_FILE");
  token->add_option("--data-dir", config.data_dir, "data directory holding api-token")
      ->envname("IMGSVC_DATA_DIR")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  imgsvc::log::Level level;
  imgsvc::log::ParseLevel(config.log_level, level);
  imgsvc::log::SetLevel(level);

  if (*serve) {
    config.api_token_from_flag = OnCommandLine(argc, argv, "--api-token");
    return imgsvc::app::Serve(config);
  }
  if (*init) return imgsvc::app::Init(config);
  if (*invoke) return imgsvc::app::InvokeEvent(config, event_file);
  return imgsvc::app::PrintUserToken(config, user);
}
