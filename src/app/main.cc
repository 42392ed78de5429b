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

// Registers each setting as an option of `command`, read from its
// environment variable when the flag is absent.
class CliSettings final : public imgsvc::app::SettingVisitor {
 public:
  explicit CliSettings(CLI::App& command) : command_(command) {}

  void Text(const char* flag, const char* env, const char* help, std::string& value) override {
    Add(flag, env, help, value);
  }
  void Choice(const char* flag, const char* env, const char* help, std::string& value,
              std::initializer_list<const char*> choices) override {
    Add(flag, env, help, value)->check(CLI::IsMember(std::vector<std::string>(choices.begin(), choices.end())));
  }
  void Port(const char* flag, const char* env, const char* help, std::uint16_t& value) override {
    Add(flag, env, help, value);
  }
  void Int(const char* flag, const char* env, const char* help, int& value, int min, int max) override {
    Add(flag, env, help, value)->check(CLI::Range(min, max));
  }
  void Count(const char* flag, const char* env, const char* help, std::uint64_t& value, std::uint64_t min,
             std::uint64_t max) override {
    Add(flag, env, help, value)->check(CLI::Range(min, max));
  }

 private:
  template <class T>
  CLI::Option* Add(const char* flag, const char* env, const char* help, T& value) {
    return command_.add_option(flag, value, help)->envname(env)->capture_default_str();
  }

  CLI::App& command_;
};

void AddSettings(CLI::App& command, Config& config) {
  CliSettings settings(command);
  imgsvc::app::VisitSettings(config, settings);
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
    const imgsvc::Status settings = imgsvc::app::ReadSettingsFromEnvironment(config);
    imgsvc::log::Level level;
    if (settings.ok() && imgsvc::log::ParseLevel(config.log_level, level)) imgsvc::log::SetLevel(level);
    return imgsvc::app::RunLambdaRuntime(config, runtime_api, settings);
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
