#include "core/ports.h"

#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "crypto/crypto.h"

namespace imgsvc::core {
namespace {

std::atomic<Micros> g_last_time{0};

// Random bytes are drawn in batches: one RAND_bytes call per 256 ids instead
// of one per id. A forked child must not hand out the ids its parent's buffer
// still holds, so a fork bumps a generation that invalidates every buffer.
std::atomic<std::uint64_t> g_fork_generation{0};

void OnForkChild() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }

struct RandomPool {
  static constexpr std::size_t kBytes = 4096;
  std::array<std::uint8_t, kBytes> bytes;
  std::size_t used = kBytes;
  std::uint64_t generation = 0;

  RandomPool() {
    static const bool registered = pthread_atfork(nullptr, nullptr, &OnForkChild) == 0;
    static_cast<void>(registered);
  }

  // The next `n` (dividing kBytes) unused random bytes.
  const std::uint8_t* Take(std::size_t n) {
    const std::uint64_t current = g_fork_generation.load(std::memory_order_relaxed);
    if (used + n > kBytes || generation != current) {
      crypto::RandomBytes(bytes);
      used = 0;
      generation = current;
    }
    const std::uint8_t* out = bytes.data() + used;
    used += n;
    return out;
  }
};

}  // namespace

Micros MonotonicWallClock::Now() {
  const Micros wall = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  Micros last = g_last_time.load(std::memory_order_relaxed);
  Micros next;
  do {
    next = wall > last ? wall : last + 1;
  } while (!g_last_time.compare_exchange_weak(last, next, std::memory_order_relaxed));
  return next;
}

std::string RandomIdGenerator::NewId() {
  thread_local RandomPool pool;
  std::array<std::uint8_t, 16> b;
  const std::uint8_t* random = pool.Take(b.size());
  std::copy(random, random + b.size(), b.begin());
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant

  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(36, '-');
  std::size_t pos = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
    id[pos++] = kHex[b[i] >> 4];
    id[pos++] = kHex[b[i] & 0xf];
  }
  return id;
}

}  // namespace imgsvc::core
