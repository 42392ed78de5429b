#include "core/blocking.h"

namespace imgsvc::core {
namespace {
thread_local BlockingHook* t_hook = nullptr;
}  // namespace

void RunBlocking(const std::function<void()>& work) {
  if (t_hook != nullptr) return t_hook->Run(work);
  work();
}

void SetThreadBlockingHook(BlockingHook* hook) { t_hook = hook; }

}  // namespace imgsvc::core
