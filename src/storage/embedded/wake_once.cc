#include "storage/embedded/wake_once.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

namespace imgsvc::storage {

void WakeOnce::Wait() const {
  while (word_.load(std::memory_order_acquire) == 0) {
    ::syscall(SYS_futex, &word_, FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
  }
}

void WakeOnce::Set() {
  word_.store(1, std::memory_order_release);
  ::syscall(SYS_futex, &word_, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace imgsvc::storage
