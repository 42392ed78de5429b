#include "app/config.h"

#include <cstdlib>
#include <fstream>
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

}  // namespace

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
