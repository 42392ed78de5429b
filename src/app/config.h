// Configuration of `imgsvc serve` and the other commands.
//
// One name per setting, as a flag and as an environment variable
// (CONFIG.md). Precedence: flag > environment > .env file (working directory,
// or --env-file) > default. `imgsvc serve --help` lists every setting.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "core/auth.h"
#include "core/log.h"
#include "core/status.h"

namespace imgsvc::app {

struct Config {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8000;
  std::string storage = "embedded";
  std::string data_dir = "./data";
  std::string bucket = "image-storage-bucket";
  std::string table = "ImageMetadata";
  std::string token_secret = "image_service_api_token";
  std::string auth_mode = "shared";
  std::string api_token_file;
  std::string api_token;
  bool api_token_from_flag = false;  // visible in `ps`: warn
  std::string public_url;
  std::string cors_origins;
  int token_refresh_interval = 30;
  int list_max_reads = 10;
  int token_cache_ttl = 300;
  std::uint64_t max_upload_mb = 20;
  int max_files = 10;
  std::uint64_t max_pixels = 100'000'000;
  std::string s3_public_endpoint;
  std::string s3_addressing = "auto";
  std::string log_level = "info";
  int shutdown_grace = 20;
  int io_threads = 1;
  int workers = 32;
  std::string aws_requests = "fibers";  // where AWS-backed requests run: fibers or workers
  int aws_concurrency = 256;  // AWS requests without a body on fibers at once

  core::AuthMode mode() const {
    return auth_mode == "per-user" ? core::AuthMode::kPerUser : core::AuthMode::kShared;
  }
};

// Every setting shared by the commands, once: its flag, environment variable,
// help text and bounds. main registers them with CLI11 (flags, which also
// read the environment); the Lambda bootstrap, which takes no arguments,
// reads the environment alone (ReadSettingsFromEnvironment) instead of
// building a command-line parser at every cold start.
class SettingVisitor {
 public:
  virtual ~SettingVisitor() = default;
  virtual void Text(const char* flag, const char* env, const char* help, std::string& value) = 0;
  // One of `choices`.
  virtual void Choice(const char* flag, const char* env, const char* help, std::string& value,
                      std::initializer_list<const char*> choices) = 0;
  virtual void Port(const char* flag, const char* env, const char* help, std::uint16_t& value) = 0;
  // Within [min, max].
  virtual void Int(const char* flag, const char* env, const char* help, int& value, int min, int max) = 0;
  virtual void Count(const char* flag, const char* env, const char* help, std::uint64_t& value, std::uint64_t min,
                     std::uint64_t max) = 0;
};
void VisitSettings(Config& config, SettingVisitor& visitor);

// Sets what the IMGSVC_* environment variables say (an empty one counts as
// unset); kBadRequest naming the variable when one is not a decimal number,
// is out of bounds, or is not one of its choices.
Status ReadSettingsFromEnvironment(Config& config);

// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopback(const std::string& host);

// Loads KEY=VALUE lines of a .env file into the environment, without
// overriding variables that are already set. A missing file is fine unless
// `required`.
Status LoadEnvFile(const std::string& path, bool required);

// The secret in force: --api-token/IMGSVC_API_TOKEN, else the contents of
// --api-token-file, else {data_dir}/api-token if present; nullopt if none.
StatusOr<std::optional<std::string>> ConfiguredSecret(const Config& config);

}  // namespace imgsvc::app
