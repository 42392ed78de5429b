#include "aws/credentials.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include "core/blocking.h"
#include "core/image.h"
#include "core/log.h"
#include "net/http_client.h"

namespace imgsvc::aws {
namespace {

using std::chrono::system_clock;

// Temporary credentials are replaced this long before they expire, as the
// SDKs do, so a request signed just before expiry still reaches AWS in time.
constexpr std::chrono::minutes kRefreshAhead{5};
constexpr std::string_view kEcsHost = "169.254.170.2";
constexpr std::string_view kImdsDefaultEndpoint = "http://169.254.169.254";
constexpr std::string_view kImdsIpv6Endpoint = "http://[fd00:ec2::254]";
constexpr std::string_view kImdsTokenTtlSeconds = "21600";
// Off EC2 nothing answers at the metadata address; a short default keeps
// start-up quick there (AWS_METADATA_SERVICE_TIMEOUT overrides it, as in the SDKs).
constexpr std::chrono::seconds kImdsDefaultTimeout{1};
// The SDKs' for the container endpoint, a local agent: the first fetch, and
// one after the cached credentials expired, make every caller wait for it.
constexpr std::chrono::seconds kContainerTimeout{2};

std::string Trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(first, last - first + 1));
}

std::optional<std::string> NonEmpty(const Environment& env, const std::string& name) {
  std::optional<std::string> value = env(name);
  if (!value || value->empty()) return std::nullopt;
  return value;
}

Status Unavailable(std::string message) { return Status(Code::kUnavailable, std::move(message)); }

// --- the shared INI files -------------------------------------------------

using IniSection = std::map<std::string, std::string>;

// An inline comment starts at a '#' or ';' that follows whitespace (keys
// and secrets never contain one).
std::string_view WithoutInlineComment(std::string_view value) {
  for (std::size_t i = 1; i < value.size(); ++i) {
    if ((value[i] == '#' || value[i] == ';') && (value[i - 1] == ' ' || value[i - 1] == '\t')) {
      return value.substr(0, i);
    }
  }
  return value;
}

// The keys of `[section]` in the INI file at `path`; nullopt when the file
// cannot be read or has no such section. Section names are compared with
// their inner whitespace normalised ("[ profile  work ]" is "profile work");
// full-line and whitespace-preceded '#' / ';' comments are ignored, and so
// are the indented sub-settings of a nested key ("s3 =\n  addressing_style = path").
std::optional<IniSection> ReadIniSection(const std::string& path, std::string_view section) {
  std::ifstream file(path);
  if (!file) return std::nullopt;
  std::optional<IniSection> found;
  bool in_section = false;
  bool in_nested_key = false;
  std::string line;
  while (std::getline(file, line)) {
    const bool indented = !line.empty() && (line[0] == ' ' || line[0] == '\t');
    std::string text = Trim(line);
    if (text.empty() || text[0] == '#' || text[0] == ';') continue;
    if (text[0] == '[') {
      const auto close = text.find(']');
      std::istringstream words(text.substr(1, close == std::string::npos ? std::string::npos : close - 1));
      std::string name;
      for (std::string word; words >> word;) name += (name.empty() ? "" : " ") + word;
      in_section = name == section;
      in_nested_key = false;
      if (in_section && !found) found.emplace();
      continue;
    }
    if (!in_section) continue;
    if (indented && in_nested_key) continue;
    const auto equals = text.find('=');
    if (equals == std::string::npos) continue;
    std::string key = Trim(text.substr(0, equals));
    // Keys are case-insensitive in the SDKs' parsers.
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = Trim(WithoutInlineComment(std::string_view(text).substr(equals + 1)));
    in_nested_key = value.empty();
    (*found)[std::move(key)] = std::move(value);
  }
  return found;
}

std::optional<std::string> HomePath(const Environment& env, std::string_view relative) {
  std::optional<std::string> home = NonEmpty(env, "HOME");
  if (!home) return std::nullopt;
  return *home + "/" + std::string(relative);
}

// A path from a variable ("~/" expanded, as the SDKs do) or under $HOME.
std::optional<std::string> SharedFilePath(const Environment& env, const std::string& variable,
                                          std::string_view default_relative) {
  std::optional<std::string> path = NonEmpty(env, variable);
  if (!path) return HomePath(env, default_relative);
  if (path->starts_with("~/")) {
    std::optional<std::string> home = NonEmpty(env, "HOME");
    if (home) return *home + path->substr(1);
  }
  return path;
}

std::optional<std::string> ConfigFilePath(const Environment& env) {
  return SharedFilePath(env, "AWS_CONFIG_FILE", ".aws/config");
}

std::optional<std::string> CredentialsFilePath(const Environment& env) {
  return SharedFilePath(env, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
}

// The config file names profiles "[profile NAME]", except the default one,
// which is "[default]" (the SDKs accept "[profile default]" too).
std::optional<IniSection> ReadConfigProfile(const Environment& env, const std::string& profile) {
  std::optional<std::string> path = ConfigFilePath(env);
  if (!path) return std::nullopt;
  if (profile == "default") {
    if (std::optional<IniSection> section = ReadIniSection(*path, "default")) return section;
  }
  return ReadIniSection(*path, "profile " + profile);
}

std::optional<Credentials> KeysOf(const IniSection& section) {
  const auto key = section.find("aws_access_key_id");
  const auto secret = section.find("aws_secret_access_key");
  if (key == section.end() || secret == section.end() || key->second.empty() || secret->second.empty()) {
    return std::nullopt;
  }
  const auto token = section.find("aws_session_token");
  return Credentials{key->second, secret->second, token == section.end() ? "" : token->second, std::nullopt};
}

// --- temporary credentials from HTTP endpoints ------------------------------

bool ParseDigits(std::string_view text, std::size_t pos, std::size_t count, int& out) {
  if (pos + count > text.size()) return false;
  const char* first = text.data() + pos;
  if (!std::all_of(first, first + count, [](char c) { return c >= '0' && c <= '9'; })) return false;
  return std::from_chars(first, first + count, out).ec == std::errc{};
}

// RFC 3339 ("2026-11-26T12:00:00Z", fractional seconds and a numeric offset
// allowed): how the container and instance metadata endpoints write Expiration.
std::optional<system_clock::time_point> ParseRfc3339(std::string_view text) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!ParseDigits(text, 0, 4, year) || text.size() < 20 || text[4] != '-' || !ParseDigits(text, 5, 2, month) ||
      text[7] != '-' || !ParseDigits(text, 8, 2, day) || (text[10] != 'T' && text[10] != 't') ||
      !ParseDigits(text, 11, 2, hour) || text[13] != ':' || !ParseDigits(text, 14, 2, minute) || text[16] != ':' ||
      !ParseDigits(text, 17, 2, second)) {
    return std::nullopt;
  }
  const std::chrono::year_month_day date{std::chrono::year{year}, std::chrono::month{static_cast<unsigned>(month)},
                                         std::chrono::day{static_cast<unsigned>(day)}};
  if (!date.ok() || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  system_clock::time_point when = std::chrono::sys_days{date} + std::chrono::hours{hour} +
                                  std::chrono::minutes{minute} + std::chrono::seconds{second};
  std::size_t pos = 19;
  if (text[pos] == '.') {
    std::chrono::nanoseconds fraction{0};
    std::chrono::nanoseconds unit{100'000'000};
    for (++pos; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos) {
      fraction += unit * (text[pos] - '0');
      unit /= 10;
    }
    when += std::chrono::duration_cast<system_clock::duration>(fraction);
  }
  const std::string_view zone = text.substr(std::min(pos, text.size()));
  if (zone == "Z" || zone == "z") return when;
  int offset_hours = 0, offset_minutes = 0;
  if (zone.size() != 6 || (zone[0] != '+' && zone[0] != '-') || !ParseDigits(zone, 1, 2, offset_hours) ||
      zone[3] != ':' || !ParseDigits(zone, 4, 2, offset_minutes)) {
    return std::nullopt;
  }
  const auto offset = std::chrono::hours{offset_hours} + std::chrono::minutes{offset_minutes};
  return zone[0] == '+' ? when - offset : when + offset;
}

std::string JsonString(const boost::json::object& object, std::string_view key) {
  const boost::json::value* value = object.if_contains(key);
  if (value == nullptr || !value->is_string()) return {};
  return std::string(value->get_string());
}

// The JSON both the container and the instance metadata endpoints answer.
StatusOr<Credentials> ParseCredentialsJson(std::string_view body, const std::string& source) {
  boost::system::error_code ec;
  const boost::json::value parsed = boost::json::parse(body, ec);
  if (ec || !parsed.is_object()) return Unavailable(source + ": the answer is not a JSON object");
  const boost::json::object& object = parsed.get_object();
  if (const std::string code = JsonString(object, "Code"); !code.empty() && code != "Success") {
    return Unavailable(source + ": credentials not available (" + code + ")");
  }
  Credentials credentials{JsonString(object, "AccessKeyId"), JsonString(object, "SecretAccessKey"),
                          JsonString(object, "Token"), std::nullopt};
  if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
    return Unavailable(source + ": the answer has no AccessKeyId / SecretAccessKey");
  }
  if (const std::string expiration = JsonString(object, "Expiration"); !expiration.empty()) {
    credentials.expiration = ParseRfc3339(expiration);
    if (!credentials.expiration) return Unavailable(source + ": unreadable Expiration \"" + expiration + "\"");
  }
  return credentials;
}

// Splits "http://host:port/path?query" into the endpoint and the request target.
StatusOr<std::pair<net::Endpoint, std::string>> SplitUrl(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return Status(Code::kBadRequest, "not a URL: " + std::string(url));
  const auto target_start = url.find_first_of("/?", scheme_end + 3);
  std::string target = target_start == std::string_view::npos ? "/" : std::string(url.substr(target_start));
  if (target.starts_with('?')) target.insert(0, "/");
  IMGSVC_ASSIGN_OR_RETURN(net::Endpoint endpoint, net::Endpoint::Parse(url.substr(0, target_start)));
  return std::pair{std::move(endpoint), std::move(target)};
}

// Plain-HTTP credentials may only come from this host or from the addresses
// ECS and EKS serve them on, as the SDKs require; anything else needs https.
bool MayServeCredentialsOverHttp(const std::string& host) {
  return host == "localhost" || host.starts_with("127.") || host == "::1" || host == kEcsHost ||
         host == "169.254.170.23" || host == "fd00:ec2::23";
}

std::string ReadWholeFile(const std::string& path, bool& ok) {
  std::ifstream file(path, std::ios::binary);
  ok = static_cast<bool>(file);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

class FixedCredentialsProvider final : public CredentialsProvider {
 public:
  FixedCredentialsProvider(Credentials credentials, std::string source)
      : credentials_(std::move(credentials)), source_(std::move(source)) {}
  StatusOr<Credentials> Get() override { return credentials_; }
  std::string Source() const override { return source_; }

 private:
  Credentials credentials_;
  std::string source_;
};

// Caches what Fetch() returns and fetches again once the credentials are
// within kRefreshAhead of expiring. One fetch at a time. While the cached
// credentials are still valid, only the caller that fetches waits for it:
// the others sign with the cached ones meanwhile, and after a failed fetch
// for kRetryFetchAfter, so a metadata endpoint that is slow or away does not
// hold up every AWS call behind its timeouts. Once they have expired, every
// caller waits for the one fetch.
class RefreshingCredentialsProvider : public CredentialsProvider {
 public:
  StatusOr<Credentials> Get() final {
    {
      std::lock_guard lock(cache_mutex_);
      if (UseCached(system_clock::now())) return *cached_;
    }
    return core::RunBlocking([this] { return GetOrFetch(); });
  }

 protected:
  virtual StatusOr<Credentials> Fetch() = 0;

 private:
  static constexpr std::chrono::seconds kRetryFetchAfter{10};

  // Under cache_mutex_.
  bool UseCached(system_clock::time_point now) const {
    if (!cached_) return false;
    if (!cached_->expiration || now < *cached_->expiration - kRefreshAhead) return true;
    return now < *cached_->expiration && (fetching_ || now < next_fetch_);
  }

  StatusOr<Credentials> GetOrFetch() {
    std::lock_guard fetching(fetch_mutex_);  // held across the fetch; cache_mutex_ never is
    {
      std::lock_guard lock(cache_mutex_);
      if (UseCached(system_clock::now())) return *cached_;
      fetching_ = true;
    }
    StatusOr<Credentials> fresh = Fetch();
    std::lock_guard lock(cache_mutex_);
    fetching_ = false;
    if (fresh.ok()) {
      cached_ = *fresh;
      log::Debug("AWS credentials fetched", {{"source", Source()}});
      return fresh;
    }
    // The endpoint may be briefly away; credentials that still work beat none.
    const auto now = system_clock::now();
    if (cached_ && now < cached_->expiration.value()) {
      next_fetch_ = now + kRetryFetchAfter;
      log::Warn("AWS credentials refresh failed; the current ones are used until they expire",
                {{"source", Source()}, {"error", fresh.status().message()}});
      return *cached_;
    }
    return fresh;
  }

  std::mutex fetch_mutex_;
  std::mutex cache_mutex_;
  std::optional<Credentials> cached_;
  bool fetching_ = false;
  system_clock::time_point next_fetch_;  // after a failed fetch, none before this while the cached ones last
};

class ContainerCredentialsProvider final : public RefreshingCredentialsProvider {
 public:
  ContainerCredentialsProvider(std::shared_ptr<net::HttpClient> http, net::Endpoint endpoint, std::string target,
                               std::optional<std::string> token, std::optional<std::string> token_file)
      : http_(std::move(http)),
        endpoint_(std::move(endpoint)),
        target_(std::move(target)),
        token_(std::move(token)),
        token_file_(std::move(token_file)) {}

  std::string Source() const override { return "container"; }

 protected:
  StatusOr<Credentials> Fetch() override {
    net::ClientRequest request;
    request.method = "GET";
    request.target = target_;
    request.timeout = kContainerTimeout;
    request.headers.push_back({"accept", "application/json"});
    // The file wins over the variable (SDK rule); EKS rotates the token in
    // it, so it is read again on every fetch.
    if (token_file_) {
      bool read = false;
      std::string token = Trim(ReadWholeFile(*token_file_, read));
      if (!read) return Unavailable("container credentials: cannot read " + *token_file_);
      request.headers.push_back({"authorization", std::move(token)});
    } else if (token_) {
      request.headers.push_back({"authorization", *token_});
    }
    StatusOr<net::ClientResponse> response = http_->Send(endpoint_, request);
    if (!response.ok()) return Unavailable("container credentials: " + response.status().message());
    if (response->status != 200) {
      return Unavailable("container credentials endpoint answered " + std::to_string(response->status));
    }
    return ParseCredentialsJson(response->body, "container credentials");
  }

 private:
  std::shared_ptr<net::HttpClient> http_;
  net::Endpoint endpoint_;
  std::string target_;
  std::optional<std::string> token_;
  std::optional<std::string> token_file_;
};

// EC2 instance metadata, IMDSv2 only: a session token is PUT for first and
// sent with each GET (instances that require IMDSv2 refuse anything else).
class ImdsCredentialsProvider final : public RefreshingCredentialsProvider {
 public:
  ImdsCredentialsProvider(std::shared_ptr<net::HttpClient> http, net::Endpoint endpoint,
                          std::chrono::milliseconds timeout)
      : http_(std::move(http)), endpoint_(std::move(endpoint)), timeout_(timeout) {}

  std::string Source() const override { return "imds"; }

 protected:
  StatusOr<Credentials> Fetch() override {
    IMGSVC_ASSIGN_OR_RETURN(const std::string token,
                            Call("PUT", "/latest/api/token",
                                 {"x-aws-ec2-metadata-token-ttl-seconds", std::string(kImdsTokenTtlSeconds)}));
    const net::Header token_header{"x-aws-ec2-metadata-token", token};
    constexpr std::string_view kRoles = "/latest/meta-data/iam/security-credentials/";
    IMGSVC_ASSIGN_OR_RETURN(const std::string roles, Call("GET", std::string(kRoles), token_header));
    const std::string role = Trim(roles.substr(0, roles.find('\n')));
    if (role.empty()) return Unavailable("instance metadata: no IAM role is attached to this instance");
    IMGSVC_ASSIGN_OR_RETURN(const std::string body, Call("GET", std::string(kRoles) + role, token_header));
    return ParseCredentialsJson(body, "instance metadata");
  }

 private:
  StatusOr<std::string> Call(std::string method, std::string target, net::Header header) {
    net::ClientRequest request;
    request.method = std::move(method);
    request.target = std::move(target);
    request.headers.push_back(std::move(header));
    request.timeout = timeout_;
    StatusOr<net::ClientResponse> response = http_->Send(endpoint_, request);
    if (!response.ok()) return Unavailable("instance metadata: " + response.status().message());
    if (response->status != 200) {
      return Unavailable("instance metadata " + request.method + " " + request.target + " answered " +
                         std::to_string(response->status));
    }
    return std::move(response->body);
  }

  std::shared_ptr<net::HttpClient> http_;
  net::Endpoint endpoint_;
  std::chrono::milliseconds timeout_;
};

std::optional<Credentials> EnvironmentCredentials(const Environment& env, std::vector<std::string>& tried) {
  std::optional<std::string> key = NonEmpty(env, "AWS_ACCESS_KEY_ID");
  std::optional<std::string> secret = NonEmpty(env, "AWS_SECRET_ACCESS_KEY");
  if (key && secret) {
    return Credentials{*key, *secret, NonEmpty(env, "AWS_SESSION_TOKEN").value_or(""), std::nullopt};
  }
  tried.push_back(key || secret ? "environment (only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set)"
                                : "environment (AWS_ACCESS_KEY_ID not set)");
  return std::nullopt;
}

std::optional<Credentials> ProfileCredentials(const Environment& env, const std::string& profile,
                                              std::vector<std::string>& tried) {
  if (std::optional<std::string> path = CredentialsFilePath(env)) {
    if (std::optional<IniSection> section = ReadIniSection(*path, profile)) {
      if (std::optional<Credentials> credentials = KeysOf(*section)) return credentials;
    }
  }
  if (std::optional<IniSection> section = ReadConfigProfile(env, profile)) {
    if (std::optional<Credentials> credentials = KeysOf(*section)) return credentials;
  }
  tried.push_back("profile " + profile + " (no aws_access_key_id and aws_secret_access_key in " +
                  CredentialsFilePath(env).value_or("$HOME/.aws/credentials") + " or " +
                  ConfigFilePath(env).value_or("$HOME/.aws/config") +
                  "; role_arn, SSO and credential_process profiles are not supported)");
  return std::nullopt;
}

// The container provider is chosen by its variables alone; its endpoint is
// first asked at the first Get().
StatusOr<std::shared_ptr<CredentialsProvider>> ContainerProvider(const Environment& env,
                                                                 std::shared_ptr<net::HttpClient> http) {
  std::string url;
  if (std::optional<std::string> relative = NonEmpty(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) {
    url = "http://" + std::string(kEcsHost) + *relative;
  } else {
    url = *NonEmpty(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
  }
  StatusOr<std::pair<net::Endpoint, std::string>> split = SplitUrl(url);
  if (!split.ok()) return Unavailable("container credentials URL: " + split.status().message());
  auto& [endpoint, target] = *split;
  if (endpoint.scheme != "https" && !MayServeCredentialsOverHttp(endpoint.host)) {
    return Unavailable("container credentials URL " + url +
                       ": plain http is allowed only for loopback and the ECS / EKS addresses");
  }
  return std::shared_ptr<CredentialsProvider>(std::make_shared<ContainerCredentialsProvider>(
      std::move(http), std::move(endpoint), std::move(target), NonEmpty(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN"),
      NonEmpty(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")));
}

std::chrono::milliseconds ImdsTimeout(const Environment& env) {
  const std::optional<std::string> text = NonEmpty(env, "AWS_METADATA_SERVICE_TIMEOUT");
  int seconds = 0;
  if (!text || std::from_chars(text->data(), text->data() + text->size(), seconds).ec != std::errc{} ||
      seconds <= 0) {
    return kImdsDefaultTimeout;
  }
  return std::chrono::seconds{seconds};
}

StatusOr<net::Endpoint> ImdsEndpoint(const Environment& env) {
  std::optional<std::string> url = NonEmpty(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
  if (!url) {
    const bool ipv6 = core::EqualsIgnoreAsciiCase(NonEmpty(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE").value_or(""), "IPv6");
    url = std::string(ipv6 ? kImdsIpv6Endpoint : kImdsDefaultEndpoint);
  }
  return net::Endpoint::Parse(*url);
}

std::shared_ptr<CredentialsProvider> Chosen(std::shared_ptr<CredentialsProvider> provider) {
  log::Info("AWS credentials source chosen", {{"source", provider->Source()}});
  return provider;
}

}  // namespace

Environment ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

std::string ProfileName(const Environment& env) { return NonEmpty(env, "AWS_PROFILE").value_or("default"); }

StatusOr<std::string> ResolveRegion(const Environment& env) {
  for (const char* variable : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    if (std::optional<std::string> region = NonEmpty(env, variable)) return *region;
  }
  const std::string profile = ProfileName(env);
  if (std::optional<IniSection> section = ReadConfigProfile(env, profile)) {
    if (const auto region = section->find("region"); region != section->end() && !region->second.empty()) {
      return region->second;
    }
  }
  return Unavailable("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or `region` in profile " + profile +
                     " of " + ConfigFilePath(env).value_or("$HOME/.aws/config") + ")");
}

StatusOr<std::shared_ptr<CredentialsProvider>> DefaultCredentialsChain(const Environment& env,
                                                                       std::shared_ptr<net::HttpClient> http) {
  std::vector<std::string> tried;
  if (std::optional<Credentials> credentials = EnvironmentCredentials(env, tried)) {
    return Chosen(std::make_shared<FixedCredentialsProvider>(std::move(*credentials), "environment"));
  }
  const std::string profile = ProfileName(env);
  if (std::optional<Credentials> credentials = ProfileCredentials(env, profile, tried)) {
    return Chosen(std::make_shared<FixedCredentialsProvider>(std::move(*credentials), "profile:" + profile));
  }
  if (NonEmpty(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") || NonEmpty(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
    IMGSVC_ASSIGN_OR_RETURN(std::shared_ptr<CredentialsProvider> container, ContainerProvider(env, std::move(http)));
    return Chosen(std::move(container));
  }
  tried.push_back("container (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI not set)");
  if (core::EqualsIgnoreAsciiCase(NonEmpty(env, "AWS_EC2_METADATA_DISABLED").value_or(""), "true")) {
    tried.push_back("instance metadata (AWS_EC2_METADATA_DISABLED=true)");
  } else {
    StatusOr<net::Endpoint> endpoint = ImdsEndpoint(env);
    if (!endpoint.ok()) {
      return Unavailable("AWS_EC2_METADATA_SERVICE_ENDPOINT: " + endpoint.status().message());
    }
    // Instance metadata is chosen only if it answers now: off EC2 the chain
    // must end with a clear error instead of a provider that always fails.
    auto imds = std::make_shared<ImdsCredentialsProvider>(std::move(http), std::move(*endpoint), ImdsTimeout(env));
    StatusOr<Credentials> first = imds->Get();
    if (first.ok()) return Chosen(std::move(imds));
    tried.push_back("instance metadata (" + first.status().message() + ")");
  }
  std::string message = "no AWS credentials found; tried";
  for (std::size_t i = 0; i < tried.size(); ++i) message += (i == 0 ? " " : ", ") + tried[i];
  return Unavailable(std::move(message));
}

}  // namespace imgsvc::aws
