#include "storage/embedded/directory_sync.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <utility>

namespace imgsvc::storage {
namespace {

// Waits on the futex word itself: std::atomic::wait in libstdc++ first spins
// and yields the processor a few times, which for a wait as long as a disk
// flush only adds context switches (about one per upload, measured).
void WaitWhileZero(const std::atomic<std::uint32_t>& word) {
  while (word.load(std::memory_order_acquire) == 0) {
    ::syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
  }
}

void SetAndWakeAll(std::atomic<std::uint32_t>& word) {
  word.store(1, std::memory_order_release);
  ::syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace

DirectorySync::DirectorySync(SyncFn sync) : sync_(std::move(sync)) {}

// Each caller sleeps at most once: a follower until its round's sync ends
// (without the mutex, so waking a round is not a stampede on it), a leader
// until the sync before its own ends.
Status DirectorySync::SyncAfterLink(const std::string& dir) {
  std::unique_lock lock(mutex_);
  Dir& entry = dirs_[dir];  // a node of the map: stays put until erased
  if (std::shared_ptr<Round> round = entry.gathering) {
    lock.unlock();
    WaitWhileZero(round->ended);
    return round->status;
  }
  const auto round = std::make_shared<Round>();
  entry.gathering = round;
  entry.idle.wait(lock, [&entry] { return !entry.syncing; });
  // Whoever comes from now on may link after the sync has begun, so gathers
  // into a new round.
  entry.syncing = true;
  entry.gathering.reset();
  lock.unlock();
  round->status = sync_(dir);
  lock.lock();
  entry.syncing = false;
  if (entry.gathering) {
    entry.idle.notify_one();
  } else {
    dirs_.erase(dir);
  }
  lock.unlock();
  SetAndWakeAll(round->ended);
  return round->status;
}

}  // namespace imgsvc::storage
