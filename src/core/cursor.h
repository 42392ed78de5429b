// The opaque pagination cursor of GET /api/v1/images.
//
// A cursor is a store Position sealed with AES-256-GCM under a key derived
// (HKDF-SHA256) from the service secret, carrying a key id so the secret can
// rotate. On AWS the key comes from the Secrets Manager secret, fetched at
// the first cursor rather than at start, so a cold start that lists nothing
// (a Lambda `/health`, a GET) never waits for it. The caller and every filter are bound as associated data, so a
// cursor edited, truncated, replayed with other filters or by another caller
// fails to open. Encoded as base64url without padding: URL-safe as is.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "core/ports.h"
#include "core/status.h"

namespace imgsvc::core {

class CursorCodec {
 public:
  // `service_secret` is high-entropy key material (the embedded store's
  // signing key, or the Secrets Manager secret on AWS).
  explicit CursorCodec(std::string_view service_secret);
  // The secret is asked for at the first Seal or Open and, once it is had, the
  // key stays for the process's life. Until then its errors are returned.
  using SecretSource = std::function<StatusOr<std::string>()>;
  explicit CursorCodec(SecretSource secret);

  // `binding` identifies caller + filters; see BindingFor(). Fails only while
  // the secret cannot be had.
  StatusOr<std::string> Seal(const Position& position, std::string_view binding) const;
  // kBadRequest "Invalid pagination cursor" for anything that does not open.
  StatusOr<Position> Open(std::string_view cursor, std::string_view binding) const;

  // A canonical, unambiguous encoding of the viewer and the filters of a query
  // (everything except limit), used as the binding.
  static std::string BindingFor(const ListQuery& query);

 private:
  struct Key {
    explicit Key(std::string_view service_secret);
    std::array<std::uint8_t, 32> bytes;
    std::array<std::uint8_t, 4> id;
  };
  StatusOr<const Key*> GetKey() const;

  SecretSource secret_;
  mutable std::mutex mutex_;             // guards key_ until ready_
  mutable std::optional<Key> key_;
  mutable std::atomic<bool> ready_{false};
};

}  // namespace imgsvc::core
