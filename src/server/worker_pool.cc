#include "server/worker_pool.h"

#include <algorithm>
#include <utility>

namespace imgsvc::server {

WorkerPool::WorkerPool(std::size_t max_threads) : max_threads_(std::max<std::size_t>(max_threads, 1)) {}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

void WorkerPool::Post(std::function<void()> task) {
  std::unique_lock lock(mutex_);
  tasks_.push_back(std::move(task));
  // Every waiting thread may already be claimed by an earlier task.
  if (tasks_.size() > waiting_ && threads_.size() < max_threads_) {
    threads_.emplace_back([this] { Work(); });
    return;
  }
  lock.unlock();
  wake_.notify_one();
}

std::size_t WorkerPool::started_threads() const {
  std::lock_guard lock(mutex_);
  return threads_.size();
}

std::size_t WorkerPool::idle_threads() const {
  std::lock_guard lock(mutex_);
  return waiting_;
}

void WorkerPool::Work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    ++waiting_;
    wake_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
    --waiting_;
    if (stopping_) return;
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    task = nullptr;  // whatever it holds is released outside the lock
    lock.lock();
  }
}

}  // namespace imgsvc::server
