#include "e2e_harness.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <boost/url/parse.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <random>
#include <regex>
#include <sstream>

#include "crypto/crypto.h"
#include "support/image_fixtures.h"
#include "support/local_aws.h"

namespace imgsvc::e2e {
namespace {

std::vector<std::string> SplitSpaces(const char* text) {
  std::vector<std::string> out;
  if (text == nullptr) return out;
  std::istringstream in(text);
  std::string word;
  while (in >> word) out.push_back(word);
  return out;
}

std::string MakeTempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/imgsvc-e2e-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) return {};
  return pattern;
}

std::string LocString(const boost::json::value& loc) {
  std::string out;
  if (!loc.is_array()) return out;
  for (const auto& part : loc.as_array()) {
    if (!out.empty()) out += "/";
    if (part.is_string()) {
      out += std::string(part.as_string());
    } else if (part.is_int64()) {
      out += std::to_string(part.as_int64());
    } else {
      out += boost::json::serialize(part);
    }
  }
  return out;
}

// IMGSVC_E2E_BACKEND=aws: each server gets its own bucket, table and secret
// on the local AWS peers, provisioned by `imgsvc init` with the local token
// as the secret, so every test runs unchanged against S3 + DynamoDB +
// Secrets Manager. Returns false (with a test failure) when that fails.
bool ProvisionAws(std::vector<std::string>& argv, std::vector<std::string>& env) {
  auto peers = testing::StartLocalAws();
  if (!peers.ok()) {
    ADD_FAILURE() << "local AWS peers: " << peers.status().ToString();
    return false;
  }
  static int next = 0;
  const std::string name = "e2e-" + std::to_string(::getpid()) + "-" + std::to_string(next++);
  env.insert(env.end(), {std::string("AWS_ACCESS_KEY_ID=") + testing::kLocalAwsAccessKeyId,
                         std::string("AWS_SECRET_ACCESS_KEY=") + testing::kLocalAwsSecretAccessKey,
                         std::string("AWS_REGION=") + testing::kLocalAwsRegion,
                         "AWS_EC2_METADATA_DISABLED=true",
                         "AWS_ENDPOINT_URL_S3=" + peers->s3,
                         "AWS_ENDPOINT_URL_DYNAMODB=" + peers->dynamodb,
                         "AWS_ENDPOINT_URL_SECRETS_MANAGER=" + peers->secretsmanager});
  const std::vector<std::string> names{"--bucket", name, "--table", name, "--token-secret", name};
  std::vector<std::string> init{"init", "--api-token", std::string(kLocalToken)};
  init.insert(init.end(), names.begin(), names.end());
  auto done = testing::RunCommand(BinaryPath(), init, env, std::chrono::seconds(120));
  if (!done.ok() || !done->exit.exited || done->exit.code != 0) {
    ADD_FAILURE() << "imgsvc init failed: " << (done.ok() ? done->stdout_text : done.status().ToString());
    return false;
  }
  argv.insert(argv.end(), {"--storage", "aws"});
  argv.insert(argv.end(), names.begin(), names.end());
  return true;
}

}  // namespace

bool UseAwsBackend() {
  const char* backend = std::getenv("IMGSVC_E2E_BACKEND");
  return backend != nullptr && std::string_view(backend) == "aws";
}

std::string BinaryPath() {
  if (const char* path = std::getenv("IMGSVC_E2E_BINARY"); path != nullptr && *path != '\0') return path;
  return IMGSVC_E2E_DEFAULT_BINARY;
}

std::string UniqueUser(std::string_view base) {
  static std::mt19937_64 rng{std::random_device{}()};
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(base) + "-" + suffix;
}

std::string KeyFor(std::string_view user, std::string_view token) {
  return std::string(user) + ":" + std::string(token);
}

std::unique_ptr<TestServer> TestServer::Start(const std::vector<std::string>& args,
                                              const std::vector<std::string>& env) {
  std::unique_ptr<TestServer> server(new TestServer());
  server->data_dir_ = MakeTempDir();
  if (server->data_dir_.empty()) {
    ADD_FAILURE() << "cannot create a temporary data directory";
    return nullptr;
  }
  std::vector<std::string> argv{"serve",      "--host",     server->host_, "--port",
                                "0",          "--data-dir", server->data_dir_, "--log-level",
                                "debug"};
  std::vector<std::string> server_env = env;
  if (UseAwsBackend() && !ProvisionAws(argv, server_env)) return nullptr;
  argv.insert(argv.end(), args.begin(), args.end());
  for (auto& extra : SplitSpaces(std::getenv("IMGSVC_E2E_SERVER_ARGS"))) argv.push_back(extra);

  auto process = testing::Process::Start(BinaryPath(), argv, server_env);
  if (!process.ok()) {
    ADD_FAILURE() << "cannot start " << BinaryPath() << ": " << process.status().ToString();
    return nullptr;
  }
  server->process_ = std::move(*process);
  auto listening = server->process_->WaitForLine(
      [](const std::string& line) {
        boost::system::error_code ec;
        auto v = boost::json::parse(line, ec);
        return !ec && Str(v, "msg") == "listening";
      },
      std::chrono::seconds(20));
  if (!listening) {
    ADD_FAILURE() << "server did not log \"listening\"; log:\n" << server->LogTail(40);
    return nullptr;
  }
  const boost::json::value line = boost::json::parse(*listening);
  const auto* port = line.as_object().if_contains("port");
  if (port == nullptr || !port->is_int64() || port->as_int64() <= 0 || port->as_int64() > 65535) {
    ADD_FAILURE() << "\"listening\" line without an integer port: " << *listening;
    return nullptr;
  }
  server->port_ = static_cast<std::uint16_t>(port->as_int64());
  return server;
}

TestServer::~TestServer() {
  if (process_ != nullptr && !process_->Wait(std::chrono::milliseconds(0))) {
    (void)process_->Signal(SIGTERM);
    (void)process_->Wait(std::chrono::seconds(10));
  }
  process_.reset();  // kills it if it is still there
  std::error_code ignored;
  if (!data_dir_.empty()) std::filesystem::remove_all(data_dir_, ignored);
}

std::optional<testing::ExitStatus> TestServer::Stop(std::chrono::milliseconds timeout) {
  if (auto done = process_->Wait(std::chrono::milliseconds(0))) return done;
  if (Status st = process_->Signal(SIGTERM); !st.ok()) ADD_FAILURE() << st.ToString();
  return process_->Wait(timeout);
}

std::string TestServer::LogTail(std::size_t count) const {
  if (process_ == nullptr) return {};
  auto lines = process_->Lines();
  std::string out;
  for (std::size_t i = lines.size() > count ? lines.size() - count : 0; i < lines.size(); ++i) {
    out += lines[i] + "\n";
  }
  return out;
}

HttpResponse Call(const TestServer& server, const HttpRequest& request) {
  auto response = server.client().Send(request);
  if (!response.ok()) {
    ADD_FAILURE() << request.method << " " << request.target << ": " << response.status().ToString();
    return {};
  }
  return std::move(*response);
}

HttpResponse Get(const TestServer& server, std::string target, std::optional<std::string> key,
                 HeaderList headers) {
  HttpRequest request;
  request.target = std::move(target);
  request.headers = std::move(headers);
  if (key) request.headers.emplace_back("x-api-key", *key);
  return Call(server, request);
}

HttpResponse SendJson(const TestServer& server, std::string method, std::string target,
                      std::optional<std::string> key, std::string json_body) {
  HttpRequest request;
  request.method = std::move(method);
  request.target = std::move(target);
  request.headers.emplace_back("Content-Type", "application/json");
  if (key) request.headers.emplace_back("x-api-key", *key);
  request.body = std::move(json_body);
  return Call(server, request);
}

HttpResponse Delete(const TestServer& server, std::string target, std::optional<std::string> key) {
  HttpRequest request;
  request.method = "DELETE";
  request.target = std::move(target);
  if (key) request.headers.emplace_back("x-api-key", *key);
  return Call(server, request);
}

HttpResponse PostMultipart(const TestServer& server, const MultipartBuilder& form,
                           std::optional<std::string> key) {
  HttpRequest request;
  request.method = "POST";
  request.target = "/api/v1/images";
  request.headers.emplace_back("Content-Type", form.ContentType());
  if (key) request.headers.emplace_back("x-api-key", *key);
  request.body = form.Build();
  return Call(server, request);
}

HttpResponse FetchUrl(std::string_view url, HeaderList headers) {
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed || parsed->scheme() != "http") {
    ADD_FAILURE() << "not an http URL: " << url;
    return {};
  }
  const std::uint16_t port = parsed->has_port() ? parsed->port_number() : 80;
  HttpRequest request;
  request.target = std::string(parsed->encoded_path());
  if (request.target.empty()) request.target = "/";
  if (parsed->has_query()) request.target += "?" + std::string(parsed->encoded_query());
  request.headers = std::move(headers);
  request.headers.emplace_back("Host", std::string(parsed->encoded_host_and_port()));
  auto response = testing::HttpClient(std::string(parsed->host()), port).Send(request);
  if (!response.ok()) {
    ADD_FAILURE() << "GET " << url << ": " << response.status().ToString();
    return {};
  }
  return std::move(*response);
}

boost::json::value Json(const HttpResponse& response) {
  boost::system::error_code ec;
  auto value = boost::json::parse(response.body, ec);
  if (ec) {
    ADD_FAILURE() << "not JSON (status " << response.status << "): " << response.body.substr(0, 300);
    return nullptr;
  }
  return value;
}

std::string DetailMessage(const HttpResponse& response) {
  boost::system::error_code ec;
  auto value = boost::json::parse(response.body, ec);
  if (ec || !value.is_object()) return {};
  const auto* detail = value.as_object().if_contains("detail");
  if (detail == nullptr || !detail->is_string()) return {};
  return std::string(detail->as_string());
}

std::vector<std::string> ErrorLocs(const HttpResponse& response) {
  std::vector<std::string> locs;
  boost::system::error_code ec;
  auto value = boost::json::parse(response.body, ec);
  if (ec || !value.is_object()) return locs;
  const auto* detail = value.as_object().if_contains("detail");
  if (detail == nullptr || !detail->is_array()) return locs;
  for (const auto& entry : detail->as_array()) {
    if (entry.is_object() && entry.as_object().contains("loc")) {
      locs.push_back(LocString(entry.as_object().at("loc")));
    }
  }
  return locs;
}

std::vector<std::string> ErrorTypes(const HttpResponse& response) {
  std::vector<std::string> types;
  boost::system::error_code ec;
  auto value = boost::json::parse(response.body, ec);
  if (ec || !value.is_object()) return types;
  const auto* detail = value.as_object().if_contains("detail");
  if (detail == nullptr || !detail->is_array()) return types;
  for (const auto& entry : detail->as_array()) {
    const auto* type = entry.is_object() ? entry.as_object().if_contains("type") : nullptr;
    if (type != nullptr && type->is_string()) types.emplace_back(type->as_string());
  }
  return types;
}

std::string Str(const boost::json::value& v, std::string_view key) {
  if (!v.is_object()) return {};
  const auto* field = v.as_object().if_contains(key);
  if (field == nullptr || !field->is_string()) return {};
  return std::string(field->as_string());
}

MultipartBuilder BuildForm(const UploadForm& form) {
  MultipartBuilder builder;
  builder.AddField("user_id", form.user_id);
  if (form.category) builder.AddField("category", *form.category);
  if (form.tags) builder.AddField("tags", *form.tags);
  if (form.visibility) builder.AddField("visibility", *form.visibility);
  for (const auto& file : form.files) builder.AddFile("files", file.filename, file.content_type, file.data);
  return builder;
}

HttpResponse Upload(const TestServer& server, const UploadForm& form, std::optional<std::string> key) {
  return PostMultipart(server, BuildForm(form), std::move(key));
}

boost::json::object UploadOne(const TestServer& server, const std::string& user, std::string_view visibility,
                              std::optional<std::string> category, std::optional<std::string> tags) {
  UploadForm form;
  form.user_id = user;
  form.visibility = std::string(visibility);
  form.category = std::move(category);
  form.tags = std::move(tags);
  form.files.push_back({"one.png", "image/png", testing::MakeImage(core::ImageFormat::kPng, 4, 3)});
  HttpResponse response = Upload(server, form, KeyFor(user));
  if (response.status != 201) {
    ADD_FAILURE() << "upload for " << user << ": " << response.status << " " << response.body;
    return {};
  }
  auto body = Json(response);
  if (!body.is_object() || !body.as_object().contains("images") ||
      !body.as_object().at("images").is_array() || body.as_object().at("images").as_array().size() != 1) {
    ADD_FAILURE() << "upload body without one image: " << response.body;
    return {};
  }
  return body.as_object().at("images").as_array()[0].as_object();
}

std::vector<std::string> ListAllIds(const TestServer& server, const std::string& query,
                                    std::optional<std::string> key, int* pages) {
  std::vector<std::string> ids;
  std::optional<std::string> cursor;
  int page_count = 0;
  for (; page_count < 10000; ++page_count) {
    std::string target = "/api/v1/images?" + query;
    if (cursor) target += "&last_evaluated_key=" + UrlEncode(*cursor);
    HttpResponse page = Get(server, target, key);
    if (page.status != 200) {
      ADD_FAILURE() << "GET " << target << ": " << page.status << " " << page.body;
      break;
    }
    auto body = Json(page);
    if (!body.is_object()) break;
    const auto& items = body.as_object().at("items").as_array();
    EXPECT_EQ(body.as_object().at("count"), static_cast<std::int64_t>(items.size()));
    for (const auto& item : items) ids.push_back(Str(item, "image_id"));
    const auto& next = body.as_object().at("last_evaluated_key");
    if (next.is_null()) {
      ++page_count;
      break;
    }
    cursor = std::string(next.as_string());
  }
  if (pages != nullptr) *pages = page_count;
  return ids;
}

std::string Sha256Hex(std::string_view data) { return crypto::HexEncode(crypto::Sha256Of(data)); }

std::optional<std::int64_t> ParseMicros(std::string_view text) {
  static const std::regex kFormat(R"(^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})Z$)");
  std::match_results<std::string_view::const_iterator> m;
  if (!std::regex_match(text.begin(), text.end(), m, kFormat)) return std::nullopt;
  std::tm tm{};
  tm.tm_year = std::stoi(m[1].str()) - 1900;
  tm.tm_mon = std::stoi(m[2].str()) - 1;
  tm.tm_mday = std::stoi(m[3].str());
  tm.tm_hour = std::stoi(m[4].str());
  tm.tm_min = std::stoi(m[5].str());
  tm.tm_sec = std::stoi(m[6].str());
  return static_cast<std::int64_t>(::timegm(&tm)) * 1000000 + std::stoll(m[7].str());
}

std::int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string UrlEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace imgsvc::e2e
