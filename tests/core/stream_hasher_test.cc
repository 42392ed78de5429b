// StreamHasher: the digest of any stream, fed in any chunks, is SHA-256 of
// its bytes whether a helper hashes or not; helpers start only past the
// inline bytes, only while a slot is free, and give their slot back.

#include "core/stream_hasher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>

namespace imgsvc::core {
namespace {

std::string Bytes(std::size_t size) {
  std::string bytes(size, '\0');
  std::uint32_t state = 2463534242u;  // xorshift: not a repeating pattern
  for (char& c : bytes) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    c = static_cast<char>(state);
  }
  return bytes;
}

std::span<const std::byte> AsBytes(std::string_view text) { return std::as_bytes(std::span(text.data(), text.size())); }

// Feeds `bytes` in chunks of `chunk` bytes (all at once when 0).
crypto::Sha256Digest Digest(StreamHasher& hasher, std::string_view bytes, std::size_t chunk) {
  if (chunk == 0) chunk = std::max<std::size_t>(bytes.size(), 1);
  for (std::size_t at = 0; at < bytes.size(); at += chunk) hasher.Update(AsBytes(bytes.substr(at, chunk)));
  return hasher.Finish();
}

constexpr std::size_t kInline = StreamHasher::kInlineBytes;
constexpr std::size_t kBlock = StreamHasher::kBlockBytes;

TEST(StreamHasherTest, DigestIsTheBytesSha256WhateverTheSizeAndChunks) {
  for (const std::size_t size : {std::size_t{0}, std::size_t{1}, kInline - 1, kInline, kInline + 1, kInline + kBlock,
                                  kInline + 3 * kBlock + 123}) {
    const std::string bytes = Bytes(size);
    for (const std::size_t chunk : {std::size_t{0}, std::size_t{65'521}, kBlock + 7}) {
      HashingSlots slots(1);
      StreamHasher hasher(slots);
      EXPECT_EQ(Digest(hasher, bytes, chunk), crypto::Sha256Of(bytes)) << size << " bytes in chunks of " << chunk;
      EXPECT_EQ(hasher.offloaded(), size > kInline) << size << " bytes in chunks of " << chunk;
    }
  }
}

TEST(StreamHasherTest, WithoutAFreeSlotHashesInline) {
  const std::string bytes = Bytes(kInline + 2 * kBlock + 5);
  HashingSlots none(0);
  StreamHasher hasher(none);
  EXPECT_EQ(Digest(hasher, bytes, 65'521), crypto::Sha256Of(bytes));
  EXPECT_FALSE(hasher.offloaded());
}

TEST(StreamHasherTest, AHelperHoldsItsSlotUntilFinishedOrDestroyed) {
  const std::string bytes = Bytes(kInline + kBlock);
  HashingSlots slots(1);
  {
    StreamHasher first(slots);
    first.Update(AsBytes(bytes));
    ASSERT_TRUE(first.offloaded());
    StreamHasher second(slots);
    EXPECT_EQ(Digest(second, bytes, 0), crypto::Sha256Of(bytes));
    EXPECT_FALSE(second.offloaded());
    EXPECT_EQ(first.Finish(), crypto::Sha256Of(bytes));
  }
  {
    StreamHasher after_finish(slots);
    after_finish.Update(AsBytes(bytes));
    EXPECT_TRUE(after_finish.offloaded());
  }  // destroyed without Finish: the helper ends, the slot comes back
  StreamHasher after_destruction(slots);
  EXPECT_EQ(Digest(after_destruction, bytes, 0), crypto::Sha256Of(bytes));
  EXPECT_TRUE(after_destruction.offloaded());
}

}  // namespace
}  // namespace imgsvc::core
