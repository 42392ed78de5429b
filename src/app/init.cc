#include <array>
#include <cstdint>
#include <cstdio>

#include "app/aws_backend.h"
#include "app/commands.h"
#include "crypto/crypto.h"

namespace imgsvc::app {
namespace {

int Report(const char* what, const std::string& name, const Status& status, bool created) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s %s: %s\n", what, name.c_str(), status.ToString().c_str());
    return 1;
  }
  std::printf("%s %s: %s\n", what, name.c_str(), created ? "created" : "exists");
  return 0;
}

}  // namespace

int Init(const Config& config) {
  auto backend = OpenAwsBackend(config, aws::ProcessEnvironment());
  if (!backend.ok()) {
    std::fprintf(stderr, "cannot reach AWS: %s\n", backend.status().ToString().c_str());
    return 1;
  }
  // What answers its readiness probe exists; anything else is created.
  const bool bucket_found = backend->blobs->CheckReady().ok();
  const Status bucket = bucket_found ? Status::Ok() : backend->blobs->CreateBucketIfMissing();
  if (int rc = Report("bucket", config.bucket, bucket, !bucket_found); rc != 0) return rc;
  const bool table_found = backend->records->CheckReady().ok();
  const Status table = table_found ? Status::Ok() : backend->records->CreateTableIfMissing();
  if (int rc = Report("table", config.table, table, !table_found); rc != 0) return rc;

  std::string token = config.api_token;
  const bool generated = token.empty();
  if (generated) {
    std::array<std::uint8_t, 32> random{};
    crypto::RandomBytes(random);
    token = crypto::HexEncode(random);
  }
  auto created = backend->secret->CreateIfMissing(token);
  if (int rc = Report("secret", config.token_secret, created.ok() ? Status::Ok() : created.status(),
                      created.ok() && *created);
      rc != 0) {
    return rc;
  }
  if (*created && generated) {
    std::printf("api token (shown once; also in the secret): %s\n", token.c_str());
  }
  return 0;
}

}  // namespace imgsvc::app
