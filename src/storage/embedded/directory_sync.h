// Group commit for the syncs of directories that uploads link files into.
//
// One fsync of a directory makes durable every entry linked into it before
// the call. So an upload that links while another's sync of the same
// directory runs need not make its own: it waits for the next sync, which
// serves every upload that linked meanwhile. Whoever finds no sync running
// makes the next one for the whole group (the leader/follower scheme of a
// database's group commit). Under concurrent uploads into one directory (a
// user's), that saves most of their directory syncs: each is a flush of the
// disk's cache and two waits on the disk.
//
// Blocks the calling thread (a worker's): not for code that may run on a
// fiber of an io thread.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/status.h"
#include "storage/embedded/wake_once.h"

namespace imgsvc::storage {

class DirectorySync {
 public:
  // Makes the directory durable (an fsync); must not throw.
  using SyncFn = std::function<Status(const std::string& dir)>;

  explicit DirectorySync(SyncFn sync);

  // Returns once a sync of `dir` that began after this call has ended, with
  // that sync's status: on success, every entry the caller linked into `dir`
  // before calling is durable.
  Status SyncAfterLink(const std::string& dir);

 private:
  // The callers one sync serves.
  struct Round {
    Status status;  // written before `ended` is set
    WakeOnce ended;
  };
  struct Dir {
    // Only the leader of the gathering round waits here, for the running sync.
    std::condition_variable idle;
    bool syncing = false;
    std::shared_ptr<Round> gathering;  // the round the next sync serves
  };

  SyncFn sync_;
  std::mutex mutex_;
  std::unordered_map<std::string, Dir> dirs_;  // the entry goes when no round is left
};

}  // namespace imgsvc::storage
