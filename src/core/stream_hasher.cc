#include "core/stream_hasher.h"

#include <algorithm>
#include <utility>

namespace imgsvc::core {

HashingSlots::HashingSlots(int count) : free_(count) {}

HashingSlots& HashingSlots::OnePerProcessor() {
  static HashingSlots slots(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return slots;
}

bool HashingSlots::TryTake() {
  int free = free_.load(std::memory_order_relaxed);
  while (free > 0) {
    if (free_.compare_exchange_weak(free, free - 1, std::memory_order_acquire)) return true;
  }
  return false;
}

void HashingSlots::Give() { free_.fetch_add(1, std::memory_order_release); }

StreamHasher::StreamHasher(HashingSlots& slots) : slots_(slots) {}

StreamHasher::~StreamHasher() { StopHelper(); }

void StreamHasher::Update(std::span<const std::byte> data) {
  if (!took_slot_) {
    const std::size_t now = inline_only_ ? data.size() : std::min(data.size(), kInlineBytes - inlined_);
    hash_.Update(data.first(now));
    inlined_ += now;
    data = data.subspan(now);
    if (data.empty()) return;
    if (!StartHelper()) {  // no helper: inline throughout
      inline_only_ = true;
      hash_.Update(data);
      return;
    }
  }
  Buffer(data);
}

// Fills blocks and hands each full one to the helper.
void StreamHasher::Buffer(std::span<const std::byte> data) {
  while (!data.empty()) {
    const std::size_t n = std::min(data.size(), kBlockBytes - filling_.size());
    filling_.insert(filling_.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(n));
    data = data.subspan(n);
    if (filling_.size() == kBlockBytes) HandOff();
  }
}

bool StreamHasher::StartHelper() {
  if (!slots_.TryTake()) return false;
  try {
    filling_.reserve(kBlockBytes);
    handed_.reserve(kBlockBytes);
    helper_ = std::thread([this] { HashHandedBlocks(); });
  } catch (const std::exception&) {  // no memory or no thread: hash inline
    slots_.Give();
    return false;
  }
  took_slot_ = true;
  return true;
}

void StreamHasher::HandOff() {
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return !block_handed_; });
    std::swap(filling_, handed_);
    block_handed_ = true;
  }
  changed_.notify_all();
  filling_.clear();
}

void StreamHasher::HashHandedBlocks() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return block_handed_ || stopping_; });
    if (!block_handed_) return;
    lock.unlock();
    hash_.Update(handed_);
    lock.lock();
    block_handed_ = false;
    changed_.notify_all();
  }
}

// The helper hashes what it was handed, then ends.
void StreamHasher::StopHelper() {
  if (!helper_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  helper_.join();
  slots_.Give();
}

crypto::Sha256Digest StreamHasher::Finish() {
  if (!filling_.empty()) HandOff();
  StopHelper();
  return hash_.Finish();
}

}  // namespace imgsvc::core
