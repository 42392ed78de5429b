// Authentication of `x-api-key: <user_id>:<token>` (API.md "Authentication").
//
// Two modes: `shared` (one service token; the user id is self-asserted) and
// `per-user` (the secret is a master key; user U's token is
// hex(HMAC-SHA256(master, U))). Tokens are compared in constant time. On a
// mismatch the secret is refetched at most once per refresh interval, so a
// rotation is picked up without a restart and a flood of bad keys cannot
// hammer the secret's source. Between refetches a mismatch is answered where
// it arrived: a flood of bad keys costs what good keys do, and does not queue
// on the threads that run blocking work.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "core/ports.h"
#include "core/status.h"

namespace imgsvc::core {

enum class AuthMode { kShared, kPerUser };

// hex(HMAC-SHA256(master, user_id)): a user's token in per-user mode.
std::string PerUserToken(std::string_view master, std::string_view user_id);

class Authenticator {
 public:
  Authenticator(TokenSource& tokens, AuthMode mode, std::chrono::seconds refresh_interval,
                Clock& clock);

  // No header: nullopt (anonymous). A header that is malformed (no ':', user
  // id invalid, empty token) or whose token is wrong: kUnauthenticated. A
  // valid key: the user id. kUnavailable when the token source fails.
  StatusOr<std::optional<std::string>> Authenticate(std::optional<std::string_view> api_key);

 private:
  bool Matches(std::string_view secret, std::string_view user_id, std::string_view token) const;
  bool RefreshedWithinInterval(Micros last_refresh, Micros now) const;
  // Refetches unless one began within the interval; then the cached secret.
  StatusOr<std::string> RefreshOrCurrent();

  static constexpr Micros kNeverRefreshed = -1;

  TokenSource& tokens_;
  AuthMode mode_;
  Micros refresh_interval_;
  Clock& clock_;
  std::mutex mutex_;  // held by the one refetch under way, and by those waiting for it
  // When the last refetch began, and whether it is still under way: written
  // under mutex_, refreshing_ first; read without it, last_refresh_ first
  // (auth.cc says why).
  std::atomic<Micros> last_refresh_{kNeverRefreshed};
  std::atomic<bool> refreshing_{false};
};

}  // namespace imgsvc::core
