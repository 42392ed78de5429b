#include <cstdio>

#include "app/commands.h"
#include "core/auth.h"
#include "core/image.h"

namespace imgsvc::app {

int PrintUserToken(const Config& config, const std::string& user_id) {
  if (Status st = core::ValidateUserId(user_id, {"user_id"}); !st.ok()) {
    std::fprintf(stderr, "invalid user id: %s\n", st.message().c_str());
    return 2;
  }
  auto master = ConfiguredSecret(config);
  if (!master.ok()) {
    std::fprintf(stderr, "%s\n", master.status().message().c_str());
    return 1;
  }
  if (!*master) {
    std::fprintf(stderr,
                 "no master key: set IMGSVC_API_TOKEN, --api-token-file or {data_dir}/api-token\n");
    return 1;
  }
  std::printf("%s\n", core::PerUserToken(**master, user_id).c_str());
  return 0;
}

}  // namespace imgsvc::app
