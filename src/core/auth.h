// Authentication of `x-api-key: <user_id>:<token>` (API.md "Authentication").
//
// Two modes: `shared` (one service token; the user id is self-asserted) and
// `per-user` (the secret is a master key; user U's token is
// hex(HMAC-SHA256(master, U))). Tokens are compared in constant time. On a
// mismatch the secret is refetched at most once per refresh interval, so a
// rotation is picked up without a restart and a flood of bad keys cannot
// hammer the secret's source.
#pragma once

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

  TokenSource& tokens_;
  AuthMode mode_;
  std::chrono::seconds refresh_interval_;
  Clock& clock_;
  std::mutex mutex_;
  std::optional<Micros> last_refresh_;
};

}  // namespace imgsvc::core
