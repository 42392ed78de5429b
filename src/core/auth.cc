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
    : tokens_(tokens), mode_(mode), refresh_interval_(refresh_interval), clock_(clock) {}

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

  const StatusOr<std::string> current = tokens_.Current();
  if (!current.ok()) return Unavailable(current.status());
  if (Matches(*current, user_id, token)) return std::optional<std::string>(user_id);

  // A mismatch may mean the secret rotated. Refetch at most once per interval;
  // requests that queued behind a refetch compare against its result. The
  // lock is held across the fetch, hence RunBlocking (never on a fiber).
  const StatusOr<std::string> secret = RunBlocking([&] {
    std::lock_guard lock(mutex_);
    const Micros now = clock_.Now();
    const Micros interval = std::chrono::duration_cast<std::chrono::microseconds>(refresh_interval_).count();
    const bool refresh_due = !last_refresh_ || now - *last_refresh_ >= interval;
    if (refresh_due) last_refresh_ = now;
    return refresh_due ? tokens_.Refresh() : tokens_.Current();
  });
  if (!secret.ok()) return Unavailable(secret.status());
  if (Matches(*secret, user_id, token)) return std::optional<std::string>(user_id);
  return InvalidKey();
}

}  // namespace imgsvc::core
