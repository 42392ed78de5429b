// Small, exact wrappers over OpenSSL 3: hashing, MACs, randomness, AEAD, KDF
// and the encodings they travel in. Nothing here allocates secrets on the
// heap longer than needed; comparisons of secrets are constant-time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace imgsvc::crypto {

using Sha256Digest = std::array<std::uint8_t, 32>;

// Called first thing in main, before any other OpenSSL use: OpenSSL then
// skips reading openssl.cnf (the system's file must not change how we sign
// or what TLS we accept, and Lambda's static build would look for Debian's
// path anyway) and building its legacy cipher table (we fetch ciphers from
// providers by name). That takes the first hash of a process from about
// 0.7 ms to 0.45 ms, which a Lambda cold start pays.
void InitializeOpenSsl();

// Incremental SHA-256 (uploads are hashed as they stream). Holds its state
// inline: no allocation, and copying it forks the hash (HmacSha256Key keeps
// its keyed states that way).
class Sha256 {
 public:
  Sha256();
  void Update(std::span<const std::byte> data);
  void Update(std::string_view data);
  Sha256Digest Finish();  // the object may not be updated afterwards

 private:
  // OpenSSL's SHA256_CTX (112 bytes), kept opaque so that no OpenSSL header
  // reaches our headers; crypto.cc checks the size.
  alignas(8) std::array<std::byte, 128> state_;
};

Sha256Digest Sha256Of(std::string_view data);

// HMAC-SHA256 under one key, for keys that sign many messages (a signing key
// of a day, the download-URL key): the key's inner and outer states are
// computed once, and each message then costs its own blocks and the outer
// block only, with no allocation. Immutable once built, so one instance may
// be shared by threads. The states are wiped on destruction.
class HmacSha256Key {
 public:
  explicit HmacSha256Key(std::span<const std::uint8_t> key);
  explicit HmacSha256Key(std::string_view key);
  HmacSha256Key(const HmacSha256Key&) = default;
  HmacSha256Key& operator=(const HmacSha256Key&) = default;
  ~HmacSha256Key();

  Sha256Digest Mac(std::string_view message) const;
  // The MAC of the parts' concatenation, without building it.
  Sha256Digest Mac(std::initializer_list<std::string_view> parts) const;

 private:
  Sha256 inner_;  // after the key XOR ipad block
  Sha256 outer_;  // after the key XOR opad block
};

Sha256Digest HmacSha256(std::span<const std::uint8_t> key, std::string_view message);
Sha256Digest HmacSha256(std::string_view key, std::string_view message);

// MD5 (S3's Content-MD5), base64 of the 16-byte digest.
std::string Md5Base64(std::string_view data);

// Cryptographically secure random bytes: the kernel's CSPRNG (getrandom),
// else OpenSSL's RAND_bytes. Draws of up to 64 bytes come from a per-thread
// batch of that output (refilled after a fork), so ids and nonces cost no
// syscall each. Aborts if neither source can produce them: nothing sensible
// can continue without it.
void RandomBytes(std::span<std::uint8_t> out);

// HKDF-SHA256 (RFC 5869).
std::array<std::uint8_t, 32> HkdfSha256(std::string_view secret, std::string_view salt,
                                        std::string_view info);

// AES-256-GCM with a random 96-bit nonce. Output: nonce || ciphertext || tag.
std::string Aes256GcmSeal(std::span<const std::uint8_t, 32> key, std::string_view plaintext,
                          std::string_view associated_data);
// nullopt when the input is short, tampered, or was sealed with other AAD/key.
std::optional<std::string> Aes256GcmOpen(std::span<const std::uint8_t, 32> key,
                                         std::string_view sealed, std::string_view associated_data);

bool ConstantTimeEqual(std::string_view a, std::string_view b);

std::string HexEncode(std::span<const std::uint8_t> data);
std::string HexEncode(std::string_view data);
// Appends the lower-case hex of `data` to `out`.
void AppendHex(std::string& out, std::span<const std::uint8_t> data);
std::optional<std::string> HexDecode(std::string_view hex);
std::string Base64Encode(std::string_view data);
std::optional<std::string> Base64Decode(std::string_view text);  // standard alphabet, padding optional
std::string Base64UrlEncode(std::string_view data);                // no padding
std::optional<std::string> Base64UrlDecode(std::string_view text);  // rejects padding and '+' '/'

}  // namespace imgsvc::crypto
