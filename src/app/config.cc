#include "app/config.h"

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>

namespace imgsvc::app {
namespace {

std::string Trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

StatusOr<std::optional<std::string>> ReadSecretFile(const std::string& path, bool required) {
  std::ifstream in(path);
  if (!in) {
    if (!required) return std::optional<std::string>();
    return Status(Code::kUnavailable, "cannot read token file " + path);
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string secret = Trim(buffer.str());
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.empty()) return Status(Code::kUnavailable, "token file " + path + " is empty");
  return std::optional<std::string>(std::move(secret));
}

// Reads each setting's environment variable into it; the first failure wins.
class EnvironmentReader final : public SettingVisitor {
 public:
  void Text(const char*, const char* env, const char*, std::string& value) override {
    if (const char* text = Lookup(env)) value = text;
  }

  void Choice(const char*, const char* env, const char*, std::string& value,
              std::initializer_list<const char*> choices) override {
    const char* text = Lookup(env);
    if (text == nullptr) return;
    std::string listed;
    for (const char* choice : choices) {
      if (std::string_view(text) == choice) {
        value = text;
        return;
      }
      listed += listed.empty() ? "" : ", ";
      listed += choice;
    }
    Fail(env, text, "is not one of " + listed);
  }

  void Port(const char*, const char* env, const char*, std::uint16_t& value) override {
    Number(env, value, std::uint16_t{0}, std::numeric_limits<std::uint16_t>::max());
  }

  void Int(const char*, const char* env, const char*, int& value, int min, int max) override {
    Number(env, value, min, max);
  }

  void Count(const char*, const char* env, const char*, std::uint64_t& value, std::uint64_t min,
             std::uint64_t max) override {
    Number(env, value, min, max);
  }

  const Status& status() const { return status_; }

 private:
  // The variable's value, or nullptr when it is unset or empty (or a setting
  // before it failed).
  const char* Lookup(const char* env) const {
    if (!status_.ok()) return nullptr;
    const char* text = std::getenv(env);
    return text != nullptr && *text != '\0' ? text : nullptr;
  }

  template <class T>
  void Number(const char* env, T& value, T min, T max) {
    const char* text = Lookup(env);
    if (text == nullptr) return;
    const std::string_view digits(text);
    T parsed{};
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), parsed);
    if (error == std::errc::result_out_of_range || (error == std::errc() && (parsed < min || parsed > max))) {
      Fail(env, text, "is not between " + std::to_string(min) + " and " + std::to_string(max));
    } else if (error != std::errc() || end != digits.data() + digits.size()) {
      Fail(env, text, "is not a decimal number");
    } else {
      value = parsed;
    }
  }

  void Fail(const char* env, const char* text, const std::string& why) {
    status_ = Status(Code::kBadRequest, std::string(env) + ": \"" + text + "\" " + why);
  }

  Status status_;
};

}  // namespace

void VisitSettings(Config& c, SettingVisitor& v) {
  v.Text("--host", "IMGSVC_HOST", "bind address (0.0.0.0 in containers)", c.host);
  v.Port("--port", "IMGSVC_PORT", "listen port (0: any free port)", c.port);
  v.Choice("--storage", "IMGSVC_STORAGE", "embedded (files + SQLite) or aws", c.storage, {"embedded", "aws"});
  v.Text("--data-dir", "IMGSVC_DATA_DIR", "embedded backend's directory", c.data_dir);
  v.Text("--bucket", "IMGSVC_BUCKET", "S3 bucket", c.bucket);
  v.Text("--table", "IMGSVC_TABLE", "DynamoDB table (GSI UserIdIndex)", c.table);
  v.Text("--token-secret", "IMGSVC_TOKEN_SECRET", "Secrets Manager secret name", c.token_secret);
  v.Choice("--auth-mode", "IMGSVC_AUTH_MODE", "shared or per-user", c.auth_mode, {"shared", "per-user"});
  v.Text("--api-token-file", "IMGSVC_API_TOKEN_FILE", "file holding the token (shared) or master key (per-user)",
         c.api_token_file);
  v.Text("--api-token", "IMGSVC_API_TOKEN", "the token or master key itself", c.api_token);
  v.Text("--public-url", "IMGSVC_PUBLIC_URL", "base of download URLs (default http://{host}:{port} on loopback)",
         c.public_url);
  v.Text("--cors-origins", "IMGSVC_CORS_ORIGINS", "comma-separated allowed origins, or *", c.cors_origins);
  v.Int("--token-refresh-interval", "IMGSVC_TOKEN_REFRESH_INTERVAL",
        "at most one secret refetch per this many seconds on a key mismatch", c.token_refresh_interval, 1, 86400);
  v.Int("--list-max-reads", "IMGSVC_LIST_MAX_READS", "store reads one listing request may make to fill a page",
        c.list_max_reads, 1, 1000);
  v.Int("--token-cache-ttl", "IMGSVC_TOKEN_CACHE_TTL", "seconds a fetched secret stays cached", c.token_cache_ttl, 1,
        86400);
  v.Count("--max-upload-mb", "IMGSVC_MAX_UPLOAD_MB", "per-file size limit, MiB", c.max_upload_mb, 1, 1 << 20);
  v.Int("--max-files", "IMGSVC_MAX_FILES", "files per upload request", c.max_files, 1, 1000);
  v.Count("--max-pixels", "IMGSVC_MAX_PIXELS", "width x height limit", c.max_pixels, 1, std::uint64_t{1} << 40);
  v.Text("--s3-public-endpoint", "IMGSVC_S3_PUBLIC_ENDPOINT", "host presigned URLs point to", c.s3_public_endpoint);
  v.Choice("--s3-addressing", "IMGSVC_S3_ADDRESSING", "virtual, path, or auto", c.s3_addressing,
           {"virtual", "path", "auto"});
  v.Choice("--log-level", "IMGSVC_LOG_LEVEL", "debug, info, warn, error", c.log_level,
           {"debug", "info", "warn", "error"});
  v.Int("--shutdown-grace", "IMGSVC_SHUTDOWN_GRACE", "seconds in-flight requests get after SIGTERM",
        c.shutdown_grace, 0, 3600);
  v.Int("--io-threads", "IMGSVC_IO_THREADS", "threads doing network I/O", c.io_threads, 1, 64);
  v.Int("--workers", "IMGSVC_WORKERS",
        "threads running requests (bounds concurrent store work; on AWS on fibers, the MiB of upload bodies held)",
        c.workers, 1, 1024);
  v.Choice("--aws-requests", "IMGSVC_AWS_REQUESTS",
           "AWS backend: requests (bodies up to 1 MiB) on fibers of the io threads, parked while AWS answers "
           "or the body arrives, or on the workers",
           c.aws_requests, {"fibers", "workers"});
  v.Int("--aws-concurrency", "IMGSVC_AWS_CONCURRENCY",
        "AWS backend on fibers: requests without a body handled at once, and as many with one within "
        "--workers MiB of bodies (the rest wait); each waits on AWS for milliseconds, so this, not the CPU, "
        "bounds the requests per second",
        c.aws_concurrency, 1, 4096);
}

Status ReadSettingsFromEnvironment(Config& config) {
  EnvironmentReader reader;
  VisitSettings(config, reader);
  return reader.status();
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

Status LoadEnvFile(const std::string& path, bool required) {
  std::ifstream in(path);
  if (!in) {
    if (required) return Status(Code::kBadRequest, "cannot read env file " + path);
    return Status::Ok();
  }
  std::string line;
  while (std::getline(in, line)) {
    std::string text = Trim(line);
    if (text.empty() || text.front() == '#') continue;
    if (text.starts_with("export ")) text = Trim(text.substr(7));
    const auto eq = text.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = Trim(text.substr(0, eq));
    std::string value = Trim(text.substr(eq + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    if (!key.empty()) ::setenv(key.c_str(), value.c_str(), /*overwrite=*/0);
  }
  return Status::Ok();
}

StatusOr<std::optional<std::string>> ConfiguredSecret(const Config& config) {
  if (!config.api_token.empty()) return std::optional<std::string>(config.api_token);
  if (!config.api_token_file.empty()) return ReadSecretFile(config.api_token_file, true);
  return ReadSecretFile(config.data_dir + "/api-token", false);
}

}  // namespace imgsvc::app
