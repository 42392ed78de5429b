#include "core/ports.h"

#include <array>
#include <atomic>

#include "crypto/crypto.h"

namespace imgsvc::core {
namespace {

std::atomic<Micros> g_last_time{0};

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

StatusOr<ListPage> MetadataStore::List(const ListQuery& query, const std::optional<Position>& start,
                                       std::size_t limit, std::size_t max_reads) {
  ListPage page;
  IMGSVC_RETURN_IF_ERROR(ListInto(query, start, limit, max_reads, page));
  return page;
}

std::string RandomIdGenerator::NewId() {
  std::array<std::uint8_t, 16> b;
  crypto::RandomBytes(b);
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
