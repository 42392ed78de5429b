// A clock that moves only when told to, for URL expiry tests.
#pragma once

#include <atomic>
#include <chrono>

#include "core/ports.h"

namespace imgsvc::storage::testing {

class ManualClock final : public core::Clock {
 public:
  explicit ManualClock(core::Micros now) : now_(now) {}
  core::Micros Now() override { return now_.load(); }
  void Set(core::Micros now) { now_ = now; }
  void Advance(std::chrono::microseconds by) { now_ += by.count(); }

 private:
  std::atomic<core::Micros> now_;
};

}  // namespace imgsvc::storage::testing
