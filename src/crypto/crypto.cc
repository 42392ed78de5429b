#include "crypto/crypto.h"

// SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, but
// EVP cannot copy a digest state without allocating, nor run without a
// provider lookup and a heap context per hash: with them, an HMAC of a
// presigned URL cost three times its compression rounds. They run the same
// assembly (SHA-NI where the CPU has it) and stay in every OpenSSL 3 build
// but "no-deprecated" ones, which Debian's is not.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <pthread.h>
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace imgsvc::crypto {
namespace {

// OpenSSL calls that cannot fail short of memory exhaustion or a broken
// library: there is no meaningful way to continue, and returning a bogus
// digest or ciphertext would be worse than stopping.
void Check(int ok, const char* what) {
  if (ok != 1) {
    std::fprintf(stderr, "fatal: OpenSSL %s failed\n", what);
    std::abort();
  }
}

template <typename T>
T* CheckPtr(T* p, const char* what) {
  Check(p != nullptr ? 1 : 0, what);
  return p;
}

// Algorithms are fetched once: an implicit fetch per call (EVP_sha256() and
// friends in OpenSSL 3) costs a provider lookup each time.
const EVP_MD* Md5Md() {
  static const EVP_MD* md = CheckPtr(EVP_MD_fetch(nullptr, "MD5", nullptr), "MD5 fetch");
  return md;
}

const EVP_CIPHER* Aes256Gcm() {
  static const EVP_CIPHER* cipher =
      CheckPtr(EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr), "AES-256-GCM fetch");
  return cipher;
}

const unsigned char* Bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// EVP update functions take int lengths; larger inputs go in slices.
constexpr std::size_t kMaxSlice = 1 << 30;

// The kernel's CSPRNG first, which OpenSSL's DRBG is itself seeded from:
// instantiating that DRBG costs about 1 ms of CPU at the first use in a
// process (a cold start's first request, which needs a request id).
void FillFromKernel(std::span<std::uint8_t> out) {
  while (!out.empty()) {
    const ssize_t got = ::getrandom(out.data(), out.size(), 0);
    if (got > 0) {
      out = out.subspan(static_cast<std::size_t>(got));
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    break;  // no getrandom (ENOSYS): OpenSSL's own below
  }
  while (!out.empty()) {
    const std::size_t n = std::min<std::size_t>(out.size(), kMaxSlice);
    if (RAND_bytes(out.data(), static_cast<int>(n)) != 1) {
      std::fprintf(stderr, "fatal: the OpenSSL CSPRNG failed\n");
      std::abort();
    }
    out = out.subspan(n);
  }
}

// Small draws (request ids, GCM nonces, invocation ids: one or more per
// request) come from a per-thread batch, one getrandom per 4 KiB instead of
// one syscall per draw. Bytes handed out are wiped from the batch. A forked
// child must not hand out what its parent's batch still holds, so a fork
// bumps a generation that discards every batch.
constexpr std::size_t kMaxPooledDraw = 64;
std::atomic<std::uint64_t> g_fork_generation{0};

void OnForkChild() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }

class RandomPool {
 public:
  RandomPool() {
    static const bool registered = ::pthread_atfork(nullptr, nullptr, &OnForkChild) == 0;
    static_cast<void>(registered);
  }
  ~RandomPool() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }
  RandomPool(const RandomPool&) = delete;
  RandomPool& operator=(const RandomPool&) = delete;

  void Take(std::span<std::uint8_t> out) {
    const std::uint64_t generation = g_fork_generation.load(std::memory_order_relaxed);
    if (used_ + out.size() > bytes_.size() || generation_ != generation) {
      FillFromKernel(bytes_);
      used_ = 0;
      generation_ = generation;
    }
    std::uint8_t* drawn = bytes_.data() + used_;
    std::copy_n(drawn, out.size(), out.begin());
    OPENSSL_cleanse(drawn, out.size());
    used_ += out.size();
  }

 private:
  std::array<std::uint8_t, 4096> bytes_;
  std::size_t used_ = bytes_.size();
  std::uint64_t generation_ = 0;
};

void DigestOf(const EVP_MD* md, std::string_view data, unsigned char* out) {
  unsigned int len = 0;
  Check(EVP_Digest(data.data(), data.size(), out, &len, md, nullptr), "EVP_Digest");
}

constexpr char kHexDigits[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr char kBase64Std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kBase64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

using DecodeTable = std::array<std::int8_t, 256>;

constexpr DecodeTable MakeDecodeTable(const char* alphabet) {
  DecodeTable table{};
  for (auto& v : table) v = -1;
  for (int i = 0; i < 64; ++i) table[static_cast<unsigned char>(alphabet[i])] = static_cast<std::int8_t>(i);
  return table;
}

constexpr DecodeTable kDecodeStd = MakeDecodeTable(kBase64Std);
constexpr DecodeTable kDecodeUrl = MakeDecodeTable(kBase64Url);

std::string EncodeBase64(std::string_view data, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  const auto* in = Bytes(data);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) | in[i + 2];
    out.push_back(alphabet[v >> 18]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    out.push_back(alphabet[v & 63]);
  }
  const std::size_t rest = data.size() - i;
  if (rest == 1) {
    const std::uint32_t v = std::uint32_t{in[i]} << 16;
    out.push_back(alphabet[v >> 18]);
    out.push_back(alphabet[(v >> 12) & 63]);
    if (pad) out += "==";
  } else if (rest == 2) {
    const std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8);
    out.push_back(alphabet[v >> 18]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    if (pad) out.push_back('=');
  }
  return out;
}

// Strict: only alphabet characters, and the unused low bits of the last
// character must be zero, so every byte string has exactly one encoding.
std::optional<std::string> DecodeBase64(std::string_view text, const DecodeTable& table) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : text) {
    const int v = table[static_cast<unsigned char>(c)];
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

}  // namespace

void InitializeOpenSsl() {
  // The legacy digest table stays: certificate checks look signature
  // digests up in it to rate their strength.
  Check(OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG | OPENSSL_INIT_NO_ADD_ALL_CIPHERS, nullptr),
        "OpenSSL initialisation");
}

Sha256::Sha256() {
  static_assert(sizeof(SHA256_CTX) <= sizeof(state_) && alignof(SHA256_CTX) <= alignof(Sha256));
  Check(SHA256_Init(reinterpret_cast<SHA256_CTX*>(state_.data())), "SHA256_Init");
}

void Sha256::Update(std::span<const std::byte> data) {
  Check(SHA256_Update(reinterpret_cast<SHA256_CTX*>(state_.data()), data.data(), data.size()), "SHA256_Update");
}

void Sha256::Update(std::string_view data) { Update(std::as_bytes(std::span(data.data(), data.size()))); }

Sha256Digest Sha256::Finish() {
  Sha256Digest digest;
  Check(SHA256_Final(digest.data(), reinterpret_cast<SHA256_CTX*>(state_.data())), "SHA256_Final");
  return digest;
}

Sha256Digest Sha256Of(std::string_view data) {
  Sha256 hash;
  hash.Update(data);
  return hash.Finish();
}

HmacSha256Key::HmacSha256Key(std::span<const std::uint8_t> key) {
  // RFC 2104: a key longer than the block is hashed first, a shorter one
  // padded with zeros.
  constexpr std::size_t kBlock = 64;
  std::array<std::uint8_t, kBlock> block{};
  if (key.size() > kBlock) {
    const Sha256Digest hashed = Sha256Of(std::string_view(reinterpret_cast<const char*>(key.data()), key.size()));
    std::copy(hashed.begin(), hashed.end(), block.begin());
  } else {
    std::copy(key.begin(), key.end(), block.begin());
  }
  std::array<std::uint8_t, kBlock> pad;
  for (std::size_t i = 0; i < kBlock; ++i) pad[i] = block[i] ^ 0x36;
  inner_.Update(std::as_bytes(std::span(pad)));
  for (std::size_t i = 0; i < kBlock; ++i) pad[i] = block[i] ^ 0x5c;
  outer_.Update(std::as_bytes(std::span(pad)));
  OPENSSL_cleanse(block.data(), block.size());
  OPENSSL_cleanse(pad.data(), pad.size());
}

HmacSha256Key::HmacSha256Key(std::string_view key)
    : HmacSha256Key(std::span<const std::uint8_t>(Bytes(key), key.size())) {}

HmacSha256Key::~HmacSha256Key() {
  OPENSSL_cleanse(static_cast<void*>(&inner_), sizeof(inner_));
  OPENSSL_cleanse(static_cast<void*>(&outer_), sizeof(outer_));
}

Sha256Digest HmacSha256Key::Mac(std::string_view message) const { return Mac({message}); }

Sha256Digest HmacSha256Key::Mac(std::initializer_list<std::string_view> parts) const {
  Sha256 inner = inner_;
  for (const std::string_view part : parts) inner.Update(part);
  const Sha256Digest inner_digest = inner.Finish();
  Sha256 outer = outer_;
  outer.Update(std::as_bytes(std::span(inner_digest)));
  return outer.Finish();
}

Sha256Digest HmacSha256(std::span<const std::uint8_t> key, std::string_view message) {
  return HmacSha256Key(key).Mac(message);
}

Sha256Digest HmacSha256(std::string_view key, std::string_view message) {
  return HmacSha256Key(key).Mac(message);
}

std::string Md5Base64(std::string_view data) {
  unsigned char digest[16];
  DigestOf(Md5Md(), data, digest);
  return Base64Encode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

void RandomBytes(std::span<std::uint8_t> out) {
  if (out.size() <= kMaxPooledDraw) {
    thread_local RandomPool pool;
    pool.Take(out);
    return;
  }
  FillFromKernel(out);
}

std::array<std::uint8_t, 32> HkdfSha256(std::string_view secret, std::string_view salt,
                                        std::string_view info) {
  static EVP_KDF* kdf = CheckPtr(EVP_KDF_fetch(nullptr, "HKDF", nullptr), "HKDF fetch");
  std::unique_ptr<EVP_KDF_CTX, decltype(&EVP_KDF_CTX_free)> ctx(
      CheckPtr(EVP_KDF_CTX_new(kdf), "EVP_KDF_CTX_new"), &EVP_KDF_CTX_free);
  char digest[] = "SHA256";
  // OSSL_PARAM wants mutable pointers but only reads these buffers.
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<char*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(salt.data()), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size()),
      OSSL_PARAM_construct_end()};
  std::array<std::uint8_t, 32> out;
  Check(EVP_KDF_derive(ctx.get(), out.data(), out.size(), params), "HKDF derive");
  return out;
}

namespace {

constexpr std::size_t kGcmNonceBytes = 12;
constexpr std::size_t kGcmTagBytes = 16;

// Runs `in` through an initialised cipher context into `out` (same length:
// GCM is a stream mode).
bool CipherUpdate(EVP_CIPHER_CTX* ctx, std::string_view in, unsigned char* out) {
  while (!in.empty()) {
    const std::size_t n = std::min(in.size(), kMaxSlice);
    int written = 0;
    if (EVP_CipherUpdate(ctx, out, &written, Bytes(in), static_cast<int>(n)) != 1) return false;
    out += written;
    in.remove_prefix(n);
  }
  return true;
}

bool AddAad(EVP_CIPHER_CTX* ctx, std::string_view aad) {
  while (!aad.empty()) {
    const std::size_t n = std::min(aad.size(), kMaxSlice);
    int written = 0;
    if (EVP_CipherUpdate(ctx, nullptr, &written, Bytes(aad), static_cast<int>(n)) != 1) return false;
    aad.remove_prefix(n);
  }
  return true;
}

}  // namespace

std::string Aes256GcmSeal(std::span<const std::uint8_t, 32> key, std::string_view plaintext,
                          std::string_view associated_data) {
  std::string out(kGcmNonceBytes + plaintext.size() + kGcmTagBytes, '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(out.data());
  RandomBytes(std::span<std::uint8_t>(nonce, kGcmNonceBytes));
  CipherCtx ctx(CheckPtr(EVP_CIPHER_CTX_new(), "EVP_CIPHER_CTX_new"));
  Check(EVP_EncryptInit_ex2(ctx.get(), Aes256Gcm(), key.data(), nonce, nullptr), "GCM init");
  Check(AddAad(ctx.get(), associated_data) ? 1 : 0, "GCM aad");
  Check(CipherUpdate(ctx.get(), plaintext, nonce + kGcmNonceBytes) ? 1 : 0, "GCM encrypt");
  int final_len = 0;
  Check(EVP_EncryptFinal_ex(ctx.get(), nullptr, &final_len), "GCM final");
  Check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kGcmTagBytes),
                            nonce + kGcmNonceBytes + plaintext.size()),
        "GCM tag");
  return out;
}

std::optional<std::string> Aes256GcmOpen(std::span<const std::uint8_t, 32> key, std::string_view sealed,
                                         std::string_view associated_data) {
  if (sealed.size() < kGcmNonceBytes + kGcmTagBytes) return std::nullopt;
  const std::string_view nonce = sealed.substr(0, kGcmNonceBytes);
  const std::string_view ciphertext = sealed.substr(kGcmNonceBytes, sealed.size() - kGcmNonceBytes - kGcmTagBytes);
  std::array<unsigned char, kGcmTagBytes> tag;
  std::copy_n(Bytes(sealed.substr(sealed.size() - kGcmTagBytes)), kGcmTagBytes, tag.begin());

  CipherCtx ctx(CheckPtr(EVP_CIPHER_CTX_new(), "EVP_CIPHER_CTX_new"));
  if (EVP_DecryptInit_ex2(ctx.get(), Aes256Gcm(), key.data(), Bytes(nonce), nullptr) != 1) return std::nullopt;
  if (!AddAad(ctx.get(), associated_data)) return std::nullopt;
  std::string plaintext(ciphertext.size(), '\0');
  if (!CipherUpdate(ctx.get(), ciphertext, reinterpret_cast<unsigned char*>(plaintext.data()))) {
    return std::nullopt;
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kGcmTagBytes), tag.data()) != 1) return std::nullopt;
  int final_len = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), nullptr, &final_len) != 1) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return std::nullopt;
  }
  return plaintext;
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  // With unequal lengths `a` is compared with itself, so the time taken still
  // depends only on a's length, never on where the contents differ.
  const bool same_length = a.size() == b.size();
  const std::string_view other = same_length ? b : a;
  const int diff = CRYPTO_memcmp(a.data(), other.data(), a.size());
  return same_length && diff == 0;
}

// Both digits of each byte value, so a byte is one two-byte copy: every
// signed URL of a listed page carries a hex signature.
constexpr std::array<char, 512> kHexPairs = [] {
  std::array<char, 512> pairs{};
  for (std::size_t i = 0; i < 256; ++i) {
    pairs[2 * i] = kHexDigits[i >> 4];
    pairs[2 * i + 1] = kHexDigits[i & 0xf];
  }
  return pairs;
}();

void AppendHex(std::string& out, std::span<const std::uint8_t> data) {
  const std::size_t at = out.size();
  out.resize(at + data.size() * 2);
  char* to = out.data() + at;
  for (const std::uint8_t byte : data) {
    std::memcpy(to, &kHexPairs[2 * std::size_t{byte}], 2);
    to += 2;
  }
}

std::string HexEncode(std::span<const std::uint8_t> data) {
  std::string out;
  AppendHex(out, data);
  return out;
}

std::string HexEncode(std::string_view data) {
  return HexEncode(std::span<const std::uint8_t>(Bytes(data), data.size()));
}

std::optional<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = HexValue(hex[2 * i]);
    const int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return out;
}

std::string Base64Encode(std::string_view data) { return EncodeBase64(data, kBase64Std, true); }

std::optional<std::string> Base64Decode(std::string_view text) {
  // Padding is optional, but when present it must complete the last quantum.
  if (!text.empty() && text.back() == '=') {
    if (text.size() % 4 != 0) return std::nullopt;
    text.remove_suffix(1);
    if (!text.empty() && text.back() == '=') text.remove_suffix(1);
  }
  return DecodeBase64(text, kDecodeStd);
}

std::string Base64UrlEncode(std::string_view data) { return EncodeBase64(data, kBase64Url, false); }

std::optional<std::string> Base64UrlDecode(std::string_view text) { return DecodeBase64(text, kDecodeUrl); }

}  // namespace imgsvc::crypto
