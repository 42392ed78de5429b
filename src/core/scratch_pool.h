// ScratchPool: objects kept for their memory between requests (buffers,
// answers, pages whose strings keep their capacity), lent out most recently
// returned first.
//
// Why not thread_local: the server runs requests on many worker threads
// (32 by default, so that requests waiting on DynamoDB or S3 do not hold
// each other up), and a thread's own copy has left the CPU's caches by the
// time that thread runs again. Lent last-in-first-out, the object a request
// takes is the one the request before it just gave back, still in cache.
// So a request should take its scratch when its CPU work starts (after its
// store call has answered, say) and give it back as soon as that is done.
#pragma once

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace imgsvc::core {

template <class T>
class ScratchPool {
 public:
  // One object, for the lease's lifetime; returned to the pool as it ends.
  class Lease {
   public:
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), object_(std::move(other.object_)) {}
    Lease& operator=(Lease&& other) noexcept {
      if (this != &other) {
        GiveBack();
        pool_ = std::exchange(other.pool_, nullptr);
        object_ = std::move(other.object_);
      }
      return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { GiveBack(); }

    T& operator*() const { return *object_; }
    T* operator->() const { return object_.get(); }

   private:
    friend class ScratchPool;
    Lease(ScratchPool* pool, std::unique_ptr<T> object) : pool_(pool), object_(std::move(object)) {}
    void GiveBack() {
      if (pool_ != nullptr && object_) pool_->Return(std::move(object_));
      pool_ = nullptr;
    }

    ScratchPool* pool_;
    std::unique_ptr<T> object_;
  };

  // The pool must outlive its leases.
  ScratchPool() = default;
  ScratchPool(const ScratchPool&) = delete;
  ScratchPool& operator=(const ScratchPool&) = delete;

  // The most recently returned object, or a new one (value-initialised).
  Lease Take() {
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        std::unique_ptr<T> object = std::move(idle_.back());
        idle_.pop_back();
        return Lease(this, std::move(object));
      }
    }
    return Lease(this, std::make_unique<T>());
  }

  // Objects waiting to be lent again (as many as were ever out at once).
  std::size_t idle() const {
    std::lock_guard lock(mutex_);
    return idle_.size();
  }

 private:
  void Return(std::unique_ptr<T> object) {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(object));
  }

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<T>> idle_;
};

}  // namespace imgsvc::core
