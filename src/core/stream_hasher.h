// SHA-256 of an upload's bytes, hashed beside the upload's stream once it
// is long, rather than in its path.
//
// The thread that streams an upload also receives, parses and writes it, and
// SHA-256 is about a third of that work (a 200 MiB upload: 0.1 s of 0.32 s
// of CPU). The first kInlineBytes are hashed inline: most uploads are
// smaller, and for them a helper thread would cost more than it saves.
// Beyond those, the bytes are copied into blocks that a helper thread hashes
// in order while the stream goes on (the copy costs a tenth of the hash).
// Helpers are bounded by HashingSlots, one per processor by default; an
// upload that finds none free hashes inline throughout.
//
// Update blocks while the helper is a whole block behind: for worker
// threads, not for fibers of an io thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "crypto/crypto.h"

namespace imgsvc::core {

// How many helper threads may hash at once.
class HashingSlots {
 public:
  explicit HashingSlots(int count);
  // One per processor, shared by the process's uploads.
  static HashingSlots& OnePerProcessor();

  bool TryTake();
  void Give();

 private:
  std::atomic<int> free_;
};

class StreamHasher {
 public:
  static constexpr std::size_t kInlineBytes = std::size_t{1} << 20;
  static constexpr std::size_t kBlockBytes = std::size_t{1} << 20;

  explicit StreamHasher(HashingSlots& slots = HashingSlots::OnePerProcessor());
  StreamHasher(const StreamHasher&) = delete;
  StreamHasher& operator=(const StreamHasher&) = delete;
  ~StreamHasher();

  void Update(std::span<const std::byte> data);
  crypto::Sha256Digest Finish();  // the hasher may not be updated afterwards

  // Whether a helper thread took part (for the upload's log line).
  bool offloaded() const { return took_slot_; }

 private:
  void Buffer(std::span<const std::byte> data);
  bool StartHelper();
  void HandOff();
  void HashHandedBlocks();
  void StopHelper();

  HashingSlots& slots_;
  crypto::Sha256 hash_;  // the caller's until the helper starts, then the helper's
  std::size_t inlined_ = 0;         // of the first kInlineBytes
  bool took_slot_ = false;
  bool inline_only_ = false;       // no slot was free
  std::vector<std::byte> filling_;  // the caller's block
  std::vector<std::byte> handed_;   // the helper's, while block_handed_

  std::mutex mutex_;
  std::condition_variable changed_;
  bool block_handed_ = false;
  bool stopping_ = false;
  std::thread helper_;
};

}  // namespace imgsvc::core
