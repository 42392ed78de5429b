#include "core/blocking.h"

#include <thread>

namespace imgsvc::core {
namespace {
thread_local BlockingHook* t_hook = nullptr;
}  // namespace

void RunBlocking(const std::function<void()>& work) {
  if (t_hook != nullptr) return t_hook->Run(work);
  work();
}

void SleepFor(std::chrono::milliseconds pause) {
  if (t_hook != nullptr) return t_hook->Sleep(pause);
  std::this_thread::sleep_for(pause);
}

void SetThreadBlockingHook(BlockingHook* hook) { t_hook = hook; }

}  // namespace imgsvc::core
