#include "aws/aws_client.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <unordered_map>
#include <utility>

#include <boost/json.hpp>

#include "aws/xml.h"
#include "core/blocking.h"
#include "core/image.h"
#include "core/log.h"
#include "core/ports.h"
#include "crypto/crypto.h"

namespace imgsvc::aws {
namespace {

using std::chrono::milliseconds;

constexpr std::string_view kUserAgent = "imgsvc/0.1";
// A presigned URL must stop working before the credentials that signed it,
// or its last seconds would answer ExpiredToken instead of the object.
constexpr std::chrono::seconds kPresignCredentialMargin{30};
// Seconds a client is told to wait after AWS throttled us. AWS's limits are
// per-second token buckets (DynamoDB partitions, S3 prefixes) and Send already
// backed off, so capacity is usually back within a second; a longer hint
// would only idle clients.
constexpr int kThrottleRetryAfterSeconds = 1;
// The innermost ScopedDeadline of this thread, if any.
thread_local std::optional<std::chrono::steady_clock::time_point> t_call_deadline;

std::optional<milliseconds> TimeLeftBeforeDeadline() {
  if (!t_call_deadline) return std::nullopt;
  return std::chrono::duration_cast<milliseconds>(*t_call_deadline - std::chrono::steady_clock::now());
}

bool RetryFitsTheDeadline(milliseconds delay, const ServiceTarget& target, int attempt) {
  const std::optional<milliseconds> left = TimeLeftBeforeDeadline();
  if (!left || delay + kMinimumAttemptTime <= *left) return true;
  log::Info("AWS call not retried: too close to the invocation's deadline",
            {{"service", target.service}, {"attempt", attempt}, {"time_left_ms", left->count()}});
  return false;
}

std::string_view FindHeader(const std::vector<net::Header>& headers, std::string_view name) {
  for (const net::Header& header : headers) {
    if (core::EqualsIgnoreAsciiCase(header.name, name)) return header.value;
  }
  return {};
}

std::string_view TrimWhitespace(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r\n");
  return text.substr(first, last - first + 1);
}

// "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException" and
// "ValidationException:http://internal.amazon.com/..." both name their code
// the way the SDKs read it: before any ':' and after the last '#'.
std::string SanitizeErrorCode(std::string_view raw) {
  raw = raw.substr(0, raw.find(':'));
  if (const auto hash = raw.rfind('#'); hash != std::string_view::npos) raw = raw.substr(hash + 1);
  return std::string(TrimWhitespace(raw));
}

std::string JsonString(const boost::json::object& object, std::string_view key) {
  const boost::json::value* value = object.if_contains(key);
  if (value == nullptr || !value->is_string()) return {};
  return std::string(value->get_string());
}

void ParseJsonError(std::string_view body, AwsError& error) {
  boost::system::error_code ec;
  const boost::json::value parsed = boost::json::parse(body, ec);
  if (ec || !parsed.is_object()) return;
  const boost::json::object& object = parsed.get_object();
  std::string type = JsonString(object, "__type");
  if (type.empty()) type = JsonString(object, "code");
  error.code = SanitizeErrorCode(type);
  error.message = JsonString(object, "message");
  if (error.message.empty()) error.message = JsonString(object, "Message");
}

// Answers without a body (HEAD, some proxies) still need a code to act on.
std::string CodeForStatus(int status) {
  switch (status) {
    case 400: return "BadRequest";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 409: return "Conflict";
    case 412: return "PreconditionFailed";
    case 500: return "InternalError";
    case 503: return "ServiceUnavailable";
    default: return "Http" + std::to_string(status);
  }
}

bool IsOneOf(std::string_view code, std::initializer_list<std::string_view> codes) {
  return std::find(codes.begin(), codes.end(), code) != codes.end();
}

std::uint64_t RandomBelow(std::uint64_t bound) {
  thread_local std::mt19937_64 engine = [] {
    std::array<std::uint8_t, sizeof(std::uint64_t)> seed_bytes{};
    crypto::RandomBytes(seed_bytes);
    std::uint64_t seed = 0;
    std::memcpy(&seed, seed_bytes.data(), sizeof seed);
    return std::mt19937_64(seed);
  }();
  return std::uniform_int_distribution<std::uint64_t>(0, bound - 1)(engine);
}

AwsRequest JsonRequest(std::string_view amz_target, std::string_view json_version, std::string body) {
  AwsRequest request;
  request.method = "POST";
  request.path = "/";
  request.headers = {{"content-type", "application/x-amz-json-" + std::string(json_version)},
                     {"x-amz-target", std::string(amz_target)}};
  request.body = std::move(body);
  return request;
}

std::string WireTarget(const AwsRequest& request) {
  std::string target = request.path;
  char separator = '?';
  for (const auto& [name, value] : request.query) {
    target += separator;
    target += UriEncode(name, false);
    target += '=';
    target += UriEncode(value, false);
    separator = '&';
  }
  return target;
}

}  // namespace

ScopedDeadline::ScopedDeadline(std::chrono::system_clock::time_point deadline) : previous_(t_call_deadline) {
  const auto steady_deadline =
      std::chrono::steady_clock::now() +
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(deadline - std::chrono::system_clock::now());
  t_call_deadline = previous_ ? std::min(*previous_, steady_deadline) : steady_deadline;
}

ScopedDeadline::~ScopedDeadline() { t_call_deadline = previous_; }

std::optional<std::chrono::system_clock::time_point> ScopedDeadline::Current() {
  if (!t_call_deadline) return std::nullopt;
  return std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                *t_call_deadline - std::chrono::steady_clock::now());
}

std::string_view AwsResponse::HeaderValue(std::string_view name) const { return FindHeader(headers, name); }

AwsError ParseAwsError(int status, const std::vector<net::Header>& headers, std::string_view body) {
  AwsError error;
  const std::string_view trimmed = TrimWhitespace(body);
  if (trimmed.starts_with('<')) {
    error.code = ElementText(trimmed, "Code").value_or("");
    error.message = ElementText(trimmed, "Message").value_or("");
    error.request_id = ElementText(trimmed, "RequestId").value_or("");
  } else if (trimmed.starts_with('{')) {
    ParseJsonError(trimmed, error);
  }
  if (const std::string_view type = FindHeader(headers, "x-amzn-ErrorType"); !type.empty()) {
    error.code = SanitizeErrorCode(type);
  }
  if (error.code.empty()) error.code = CodeForStatus(status);
  for (std::string_view header : {"x-amzn-RequestId", "x-amz-request-id"}) {
    if (const std::string_view id = FindHeader(headers, header); !id.empty()) {
      error.request_id = std::string(id);
      break;
    }
  }
  return error;
}

bool IsThrottling(const AwsError& error) {
  return IsOneOf(error.code, {"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
                              "TooManyRequestsException", "ProvisionedThroughputExceededException",
                              "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
                              "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
                              "EC2ThrottledException"});
}

bool IsRetryable(int status, const AwsError& error) {
  if (IsThrottling(error)) return true;
  if (IsOneOf(error.code, {"RequestTimeout", "RequestTimeoutException", "InternalError", "InternalServerError",
                           "InternalFailure", "ServiceUnavailable", "IDPCommunicationError"})) {
    return true;
  }
  return status == 500 || status == 502 || status == 503 || status == 504;
}

Status ToStatus(std::string_view operation, const AwsResponse& response) {
  const AwsError& error = response.error;
  const std::string answered =
      std::string(operation) + ": AWS answered " + std::to_string(response.status) + " " + error.code;
  if (IsThrottling(error)) {
    return Status(Code::kUnavailable, answered + " (throttled)").set_retry_after(kThrottleRetryAfterSeconds);
  }
  if (response.status >= 500 || IsRetryable(response.status, error)) return Status(Code::kUnavailable, answered);
  log::Warn("unexpected AWS error", {{"operation", operation},
                                     {"aws_code", error.code},
                                     {"http_status", response.status},
                                     {"aws_request_id", error.request_id},
                                     {"aws_message", error.message}});
  return Status(Code::kInternal, answered + " (request id " + error.request_id + ")");
}

AwsClient::AwsClient(std::shared_ptr<net::HttpClient> http, std::shared_ptr<CredentialsProvider> credentials,
                     RetryOptions retry, SleepFunction sleep)
    : http_(std::move(http)),
      credentials_(std::move(credentials)),
      retry_(retry),
      sleep_(sleep ? std::move(sleep) : SleepFunction([](milliseconds delay) { core::SleepFor(delay); })),
      quota_left_(retry.quota) {}

Signer& AwsClient::SignerFor(const std::string& service) { return service == "s3" ? s3_signer_ : default_signer_; }

std::chrono::milliseconds AwsClient::Backoff(int attempt, bool throttled) {
  milliseconds ceiling = throttled ? retry_.throttle_base_delay : retry_.base_delay;
  for (int doubled = 1; doubled < attempt && ceiling < retry_.max_delay; ++doubled) ceiling *= 2;
  ceiling = std::min(ceiling, retry_.max_delay);
  if (ceiling.count() <= 0) return milliseconds{0};
  return milliseconds{static_cast<milliseconds::rep>(RandomBelow(static_cast<std::uint64_t>(ceiling.count())))};
}

bool AwsClient::TakeRetryQuota(int cost) {
  std::lock_guard lock(quota_mutex_);
  if (quota_left_ < cost) return false;
  quota_left_ -= cost;
  return true;
}

void AwsClient::RefundRetryQuota() {
  std::lock_guard lock(quota_mutex_);
  quota_left_ = std::min(retry_.quota, quota_left_ + retry_.success_refund);
}

AwsClient::Call AwsClient::Prepare(const ServiceTarget& target, AwsRequest& request) {
  ++calls_;
  Call call;
  call.target = &target;
  call.request = &request;
  // The SDKs' amz-sdk-invocation-id (a random UUID): it ties the attempts of
  // one call together in AWS's logs.
  call.invocation_id = core::RandomIdGenerator().NewId();
  call.wire_target = WireTarget(request);
  call.payload_hash =
      request.payload_sha256.empty() ? crypto::HexEncode(crypto::Sha256Of(request.body)) : request.payload_sha256;
  return call;
}

Status AwsClient::SignAttempt(Call& call, int attempt, net::ClientRequest& wire) {
  const ServiceTarget& target = *call.target;
  AwsRequest& request = *call.request;
  const std::optional<milliseconds> time_left = TimeLeftBeforeDeadline();
  if (time_left && *time_left < kMinimumAttemptTime) {
    return Status(Code::kDeadlineExceeded,
                  target.service + " " + request.method + ": out of time for the invocation's deadline");
  }
  // Asked per attempt: temporary credentials may be refreshed in between.
  IMGSVC_ASSIGN_OR_RETURN(const Credentials credentials, credentials_->Get());

  SignableRequest signable{request.method, request.path, request.query, {}, call.payload_hash};
  signable.headers.reserve(request.headers.size() + 3);
  for (const net::Header& header : request.headers) signable.headers.emplace_back(header.name, header.value);
  signable.headers.emplace_back("host", target.endpoint.Authority());
  signable.headers.emplace_back("amz-sdk-invocation-id", call.invocation_id);
  signable.headers.emplace_back("amz-sdk-request", "attempt=" + std::to_string(attempt) +
                                                       "; max=" + std::to_string(retry_.max_attempts));
  SignerFor(target.service)
      .Sign(signable, credentials, SigningScope{target.region, target.service}, std::chrono::system_clock::now());

  wire.method = request.method;
  wire.target = call.wire_target;
  // Lent to the wire request and taken back after the attempt: an 8 MiB
  // part is never copied, however many attempts it takes.
  wire.body = std::move(request.body);
  wire.replayable = request.replayable;
  // A request's timeout replaces the client's: under a deadline, the shorter.
  wire.timeout.reset();
  if (time_left && *time_left < http_->total_timeout()) wire.timeout = *time_left;
  wire.headers.clear();
  wire.headers.reserve(signable.headers.size() + 1);
  for (auto& [name, value] : signable.headers) wire.headers.push_back({std::move(name), std::move(value)});
  // Not signed, as in the SDKs: proxies may rewrite it.
  wire.headers.push_back({"user-agent", std::string(kUserAgent)});
  // On Lambda the runtime loop sets the invocation's X-Ray trace; it
  // follows the call to AWS (unsigned, as the SDKs send it).
  if (const char* trace = std::getenv("_X_AMZN_TRACE_ID"); trace != nullptr && *trace != '\0') {
    wire.headers.push_back({"x-amzn-trace-id", trace});
  }
  ++attempts_;
  return Status::Ok();
}

AwsClient::Verdict AwsClient::Judge(const Call& call, int attempt, StatusOr<net::ClientResponse>& answer) {
  const ServiceTarget& target = *call.target;
  const AwsRequest& request = *call.request;
  const bool last_attempt = attempt >= retry_.max_attempts;
  if (!answer.ok()) {
    const Status& failure = answer.status();
    const int cost = failure.code() == Code::kDeadlineExceeded ? retry_.timeout_retry_cost : retry_.retry_cost;
    const milliseconds delay = Backoff(attempt, false);
    if (!request.replayable || last_attempt || !RetryFitsTheDeadline(delay, target, attempt) ||
        !TakeRetryQuota(cost)) {
      return {failure.WithContext(target.service + " " + request.method + " after " + std::to_string(attempt) +
                                  (attempt == 1 ? " attempt" : " attempts")),
              {}};
    }
    log::Debug("AWS call retried", {{"service", target.service}, {"attempt", attempt}, {"error", failure.message()}});
    return {std::nullopt, delay};
  }

  Verdict verdict{AwsResponse{answer->status, std::move(answer->headers), std::move(answer->body), {}, attempt}, {}};
  AwsResponse& response = verdict.result->value();
  if (response.ok()) {
    RefundRetryQuota();
    return verdict;
  }
  response.error = ParseAwsError(response.status, response.headers, response.body);
  if (!IsRetryable(response.status, response.error) || last_attempt) return verdict;
  const milliseconds delay = Backoff(attempt, IsThrottling(response.error));
  if (!RetryFitsTheDeadline(delay, target, attempt) || !TakeRetryQuota(retry_.retry_cost)) return verdict;
  log::Debug("AWS call retried", {{"service", target.service},
                                  {"attempt", attempt},
                                  {"http_status", response.status},
                                  {"aws_code", response.error.code}});
  return {std::nullopt, delay};
}

StatusOr<AwsResponse> AwsClient::Attempts(Call& call, int first_attempt) {
  net::ClientRequest wire;
  for (int attempt = first_attempt;; ++attempt) {
    IMGSVC_RETURN_IF_ERROR(SignAttempt(call, attempt, wire));
    StatusOr<net::ClientResponse> answer = http_->Send(call.target->endpoint, wire);
    call.request->body = std::move(wire.body);
    Verdict verdict = Judge(call, attempt, answer);
    if (verdict.result) return std::move(*verdict.result);
    sleep_(verdict.delay);
  }
}

StatusOr<AwsResponse> AwsClient::Send(const ServiceTarget& target, AwsRequest request) {
  Call call = Prepare(target, request);
  return Attempts(call, 1);
}

struct AwsClient::PendingCall::State {
  ServiceTarget target;
  AwsRequest request;
  Call call;
  std::unique_ptr<net::PendingExchange> exchange;  // null: nothing sent
};

AwsClient::PendingCall AwsClient::BeginJson(const ServiceTarget& target, std::string_view amz_target,
                                            std::string_view json_version, std::string body) {
  PendingCall handle;
  handle.state_ = std::make_unique<PendingCall::State>();
  PendingCall::State& pending = *handle.state_;
  pending.target = target;
  pending.request = JsonRequest(amz_target, json_version, std::move(body));
  pending.call = Prepare(pending.target, pending.request);
  net::ClientRequest wire;
  if (const Status signed_now = SignAttempt(pending.call, 1, wire); !signed_now.ok()) {
    log::Warn("AWS call not sent ahead; made when its answer is needed",
              {{"service", target.service}, {"error", signed_now.message()}});
    return handle;
  }
  StatusOr<net::PendingExchange> exchange = http_->Begin(target.endpoint, wire);
  pending.request.body = std::move(wire.body);
  if (exchange.ok()) {
    pending.exchange = std::make_unique<net::PendingExchange>(std::move(*exchange));
  } else {
    // Finish makes the call afresh, with all its attempts.
    log::Warn("AWS call not sent ahead; made when its answer is needed",
              {{"service", target.service}, {"error", exchange.status().message()}});
  }
  return handle;
}

StatusOr<AwsResponse> AwsClient::Finish(PendingCall handle) {
  if (!handle.state_) return Status(Code::kInternal, "no AWS call pending");
  PendingCall::State& pending = *handle.state_;
  if (!pending.exchange) return Attempts(pending.call, 1);
  // The answer may have come long ago: it is read however little time the
  // deadline leaves (a zero timeout would mean none).
  std::optional<milliseconds> timeout = TimeLeftBeforeDeadline();
  if (timeout && *timeout >= http_->total_timeout()) timeout.reset();
  if (timeout) timeout = std::max(*timeout, milliseconds(1));
  StatusOr<net::ClientResponse> answer = std::move(*pending.exchange).Finish(timeout);
  Verdict verdict = Judge(pending.call, 1, answer);
  if (verdict.result) return std::move(*verdict.result);
  sleep_(verdict.delay);
  return Attempts(pending.call, 2);
}

AwsClient::PendingCall::PendingCall() = default;
AwsClient::PendingCall::PendingCall(PendingCall&&) noexcept = default;
AwsClient::PendingCall& AwsClient::PendingCall::operator=(PendingCall&&) noexcept = default;
AwsClient::PendingCall::~PendingCall() = default;

StatusOr<AwsResponse> AwsClient::CallJson(const ServiceTarget& target, std::string_view amz_target,
                                          std::string_view json_version, std::string body) {
  return Send(target, JsonRequest(amz_target, json_version, std::move(body)));
}

namespace {

struct StringViewHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
};

}  // namespace

// A URL is a function of its path and of what the presigner was made for
// (target, credentials, signing second, expiry), so a path signed again with
// it (a listing repeated within the second) is given the URL signed before:
// the same bytes, without the SHA-256 and the HMAC. At most kRememberedUrls
// are kept (a page holds up to 100), some 100 KB, dropped with the
// presigner. They are the process's, not a thread's: with 32 worker threads
// taking turns, a thread's own copies had left the CPU's caches by its next
// listing (and each thread signed each URL again).
struct AwsClient::RememberedUrls {
  static constexpr std::size_t kRememberedUrls = 128;
  std::mutex mutex;
  std::unordered_map<std::string, std::string, StringViewHash, std::equal_to<>> by_path;
};

StatusOr<AwsClient::Presigning> AwsClient::StartPresigning(const ServiceTarget& target, std::chrono::seconds expires) {
  IMGSVC_ASSIGN_OR_RETURN(const Credentials credentials, credentials_->Get());
  // X-Amz-Date has whole seconds; the URL lives `expires` from that instant.
  const auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  if (credentials.expiration) {
    const auto usable =
        std::chrono::floor<std::chrono::seconds>(*credentials.expiration - kPresignCredentialMargin - now);
    if (usable < std::chrono::seconds{1}) {
      return Status(Code::kUnavailable, "AWS credentials (" + credentials_->Source() +
                                            ") expire too soon to presign a URL");
    }
    expires = std::min(expires, usable);
  }
  std::shared_ptr<const CachedPresigner> cached;
  {
    std::lock_guard lock(presigner_mutex_);
    cached = presigner_;
  }
  if (!cached || !cached->Serves(target, credentials, now, expires)) {
    IMGSVC_ASSIGN_OR_RETURN(GetPresigner presigner,
                            SignerFor(target.service)
                                .PrepareGetPresign(target.endpoint.Authority(), credentials,
                                                   {target.region, target.service}, now, expires));
    cached = std::make_shared<const CachedPresigner>(CachedPresigner{target, credentials, now, expires,
                                                                     target.endpoint.Origin(), std::move(presigner),
                                                                     std::make_unique<RememberedUrls>()});
    std::lock_guard lock(presigner_mutex_);
    presigner_ = cached;
  }
  return Presigning{std::move(cached), now + expires};
}

template <class Path>
void AwsClient::CachedPresigner::UrlsOf(std::span<const Path> paths, const TakeUrl& take) const {
  // Remembered URLs are given out under the lock; the others are signed
  // outside it (a SHA-256 and an HMAC each), so that threads listing other
  // pages do not wait for them, and remembered afterwards.
  thread_local std::vector<std::size_t> unsigned_paths;
  unsigned_paths.clear();
  {
    std::lock_guard lock(remembered->mutex);
    for (std::size_t i = 0; i < paths.size(); ++i) {
      const auto found = remembered->by_path.find(std::string_view(paths[i]));
      if (found == remembered->by_path.end()) {
        unsigned_paths.push_back(i);
      } else {
        take(i, found->second);
      }
    }
  }
  if (unsigned_paths.empty()) return;
  thread_local std::vector<std::string> urls;
  urls.resize(unsigned_paths.size());
  for (std::size_t k = 0; k < unsigned_paths.size(); ++k) {
    const std::string_view path = paths[unsigned_paths[k]];
    const std::string query = presigner.Query(path);
    std::string& url = urls[k];
    url.clear();
    url.reserve(origin.size() + path.size() + 1 + query.size());
    url.append(origin).append(path).append("?").append(query);
    take(unsigned_paths[k], url);
  }
  std::lock_guard lock(remembered->mutex);
  for (std::size_t k = 0; k < unsigned_paths.size(); ++k) {
    if (remembered->by_path.size() >= RememberedUrls::kRememberedUrls) break;
    // Another thread may have signed the same path meanwhile: same URL.
    remembered->by_path.try_emplace(std::string(paths[unsigned_paths[k]]), urls[k]);
  }
}

StatusOr<AwsClient::Presigned> AwsClient::PresignGet(const ServiceTarget& target, std::string_view path,
                                                     std::chrono::seconds expires) {
  IMGSVC_ASSIGN_OR_RETURN(const Presigning presigning, StartPresigning(target, expires));
  Presigned presigned{std::string(), presigning.expires_at};
  presigning.presigner->UrlsOf(std::span<const std::string_view>(&path, 1),
                               [&presigned](std::size_t, std::string_view url) { presigned.url = url; });
  return presigned;
}

StatusOr<std::chrono::system_clock::time_point> AwsClient::PresignGets(const ServiceTarget& target,
                                                                       std::span<const std::string> paths,
                                                                       std::chrono::seconds expires,
                                                                       const TakeUrl& take) {
  IMGSVC_ASSIGN_OR_RETURN(const Presigning presigning, StartPresigning(target, expires));
  presigning.presigner->UrlsOf(paths, take);
  return presigning.expires_at;
}

bool AwsClient::CachedPresigner::Serves(const ServiceTarget& other_target, const Credentials& other_credentials,
                                        std::chrono::system_clock::time_point other_when,
                                        std::chrono::seconds other_expires) const {
  return when == other_when && expires == other_expires && target.endpoint == other_target.endpoint &&
         target.region == other_target.region && target.service == other_target.service &&
         credentials.access_key_id == other_credentials.access_key_id &&
         credentials.secret_access_key == other_credentials.secret_access_key &&
         credentials.session_token == other_credentials.session_token;
}

AwsClient::Stats AwsClient::stats() const {
  std::lock_guard lock(quota_mutex_);
  return {calls_.load(), attempts_.load(), quota_left_};
}

}  // namespace imgsvc::aws
