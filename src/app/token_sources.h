// Token sources of the embedded backend: the secret comes from the
// configuration (flag, environment, a token file) and is reloaded from its
// file on a mismatch, so a rotated file is picked up without a restart.
#pragma once

#include <functional>
#include <mutex>
#include <string>

#include "core/ports.h"

namespace imgsvc::app {

class ConfiguredTokenSource final : public core::TokenSource {
 public:
  using Loader = std::function<StatusOr<std::string>()>;
  // `initial` is the secret read at start; `reload` fetches it again.
  ConfiguredTokenSource(std::string initial, Loader reload);

  StatusOr<std::string> Current() override;
  StatusOr<std::string> Refresh() override;
  Status CheckReady() override { return Status::Ok(); }

 private:
  std::mutex mutex_;
  std::string secret_;
  Loader reload_;
};

}  // namespace imgsvc::app
