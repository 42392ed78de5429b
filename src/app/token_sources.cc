#include "app/token_sources.h"

namespace imgsvc::app {

ConfiguredTokenSource::ConfiguredTokenSource(std::string initial, Loader reload)
    : secret_(std::move(initial)), reload_(std::move(reload)) {}

StatusOr<std::string> ConfiguredTokenSource::Current() {
  std::lock_guard lock(mutex_);
  return secret_;
}

StatusOr<std::string> ConfiguredTokenSource::Refresh() {
  auto fresh = reload_();
  std::lock_guard lock(mutex_);
  if (fresh.ok()) secret_ = std::move(*fresh);
  return secret_;  // a failed reload keeps the secret we have
}

}  // namespace imgsvc::app
