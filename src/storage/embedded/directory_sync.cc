#include "storage/embedded/directory_sync.h"

#include <utility>

namespace imgsvc::storage {

DirectorySync::DirectorySync(SyncFn sync) : sync_(std::move(sync)) {}

// Each caller sleeps at most once: a follower until its round's sync ends
// (without the mutex, so waking a round is not a stampede on it), a leader
// until the sync before its own ends.
Status DirectorySync::SyncAfterLink(const std::string& dir) {
  std::unique_lock lock(mutex_);
  Dir& entry = dirs_[dir];  // a node of the map: stays put until erased
  if (std::shared_ptr<Round> round = entry.gathering) {
    lock.unlock();
    round->ended.Wait();
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
  round->ended.Set();
  return round->status;
}

}  // namespace imgsvc::storage
