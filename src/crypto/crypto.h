// Small, exact wrappers over OpenSSL 3: hashing, MACs, randomness, AEAD, KDF
// and the encodings they travel in. Nothing here allocates secrets on the
// heap longer than needed; comparisons of secrets are constant-time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
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

// Incremental SHA-256 (uploads are hashed as they stream).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::span<const std::byte> data);
  void Update(std::string_view data);
  Sha256Digest Finish();  // the object may not be updated afterwards

 private:
  void* ctx_;  // EVP_MD_CTX*
};

Sha256Digest Sha256Of(std::string_view data);
Sha256Digest HmacSha256(std::span<const std::uint8_t> key, std::string_view message);
Sha256Digest HmacSha256(std::string_view key, std::string_view message);

// MD5 (S3's Content-MD5), base64 of the 16-byte digest.
std::string Md5Base64(std::string_view data);

// Cryptographically secure random bytes: the kernel's CSPRNG (getrandom),
// else OpenSSL's RAND_bytes. Aborts if neither can produce them: nothing
// sensible can continue without it.
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
std::optional<std::string> HexDecode(std::string_view hex);
std::string Base64Encode(std::string_view data);
std::optional<std::string> Base64Decode(std::string_view text);  // standard alphabet, padding optional
std::string Base64UrlEncode(std::string_view data);                // no padding
std::optional<std::string> Base64UrlDecode(std::string_view text);  // rejects padding and '+' '/'

}  // namespace imgsvc::crypto
