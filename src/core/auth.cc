#include "core/auth.h"

#include "core/blocking.h"
#include "core/image.h"
#include "crypto/crypto.h"

namespace imgsvc::core {
namespace {

// The message never echoes the key: it may be a real token with a typo.
Status InvalidKey() { return Status(Code::kUnauthenticated, "Invalid API key"); }

// Whatever failed, the caller may retry: 503 (504 when the invocation ran out
// of time). The message keeps the cause, which names the token source's
// dependency first, for the 5xx detail and the request's log line.
Status Unavailable(const Status& cause) {
  Status status(cause.code() == Code::kDeadlineExceeded ? Code::kDeadlineExceeded : Code::kUnavailable,
                cause.message());
  if (cause.retry_after()) status.set_retry_after(*cause.retry_after());
  return status;
}

}  // namespace

std::string PerUserToken(std::string_view master, std::string_view user_id) {
  return crypto::HexEncode(crypto::HmacSha256(master, user_id));
}

Authenticator::Authenticator(TokenSource& tokens, AuthMode mode, std::chrono::seconds refresh_interval,
                             Clock& clock)
    : tokens_(tokens),
      mode_(mode),
      refresh_interval_(std::chrono::duration_cast<std::chrono::microseconds>(refresh_interval).count()),
      clock_(clock) {}

bool Authenticator::RefreshedWithinInterval(Micros last_refresh, Micros now) const {
  return last_refresh != kNeverRefreshed && now - last_refresh < refresh_interval_;
}

bool Authenticator::Matches(std::string_view secret, std::string_view user_id, std::string_view token) const {
  if (mode_ == AuthMode::kShared) return crypto::ConstantTimeEqual(token, secret);
  return crypto::ConstantTimeEqual(token, PerUserToken(secret, user_id));
}

StatusOr<std::optional<std::string>> Authenticator::Authenticate(std::optional<std::string_view> api_key) {
  if (!api_key) return std::optional<std::string>();
  const std::size_t colon = api_key->find(':');
  if (colon == std::string_view::npos) return InvalidKey();
  const std::string_view user_id = api_key->substr(0, colon);
  const std::string_view token = api_key->substr(colon + 1);
  if (token.empty() || !ValidateUserId(user_id, {}).ok()) return InvalidKey();

  // Read before the cached secret, in the order opposite to their writes: if
  // no refetch is under way now and none is due by the time of a mismatch,
  // none began after this read either, and one that ended before it left its
  // secret where Current() finds it. Either way, the mismatch stands.
  const Micros last_refresh = last_refresh_.load();
  const bool refreshing = refreshing_.load();
  const StatusOr<std::string> current = tokens_.Current();
  if (!current.ok()) return Unavailable(current.status());
  if (Matches(*current, user_id, token)) return std::optional<std::string>(user_id);
  if (!refreshing && RefreshedWithinInterval(last_refresh, clock_.Now())) return InvalidKey();

  // A mismatch may mean the secret rotated. Refetch at most once per interval;
  // requests that queued behind a refetch compare against its result. The
  // lock is held across the fetch, hence RunBlocking (never on a fiber).
  const StatusOr<std::string> secret = RunBlocking([&] { return RefreshOrCurrent(); });
  if (!secret.ok()) return Unavailable(secret.status());
  if (Matches(*secret, user_id, token)) return std::optional<std::string>(user_id);
  return InvalidKey();
}

StatusOr<std::string> Authenticator::RefreshOrCurrent() {
  std::lock_guard lock(mutex_);
  const Micros now = clock_.Now();
  if (RefreshedWithinInterval(last_refresh_.load(), now)) return tokens_.Current();
  refreshing_.store(true);
  last_refresh_.store(now);
  StatusOr<std::string> secret = tokens_.Refresh();
  refreshing_.store(false);
  return secret;
}

}  // namespace imgsvc::core
