// What the Lambda end-to-end tests (the binary, the package) share to build
// their events and the function's surroundings: names no other test or run
// shares (request ids, buckets, tables, users), a scratch directory, file
// contents, the local AWS peers as the function's environment, and how long
// to wait for the function. Header-only, as each test is its own executable.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "support/local_aws.h"

namespace imgsvc::lambda::function_harness {

// Generous bounds for a slow, noisy VM; every wait ends as soon as its fact holds.
inline constexpr std::chrono::milliseconds kInvokeWait{90000};
inline constexpr std::chrono::milliseconds kStartWait{90000};
inline constexpr std::chrono::milliseconds kCommandWait{120000};

inline std::string RandomHex() {
  static std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::uint64_t bits = rng(), i = 0; i < 16; ++i, bits >>= 4) out.push_back(kHex[bits & 15]);
  return out;
}

// "alice" -> "alice-3f9a0c1e5b7d2e4f".
inline std::string Unique(std::string_view base) { return std::string(base) + "-" + RandomHex(); }

// A new directory $TMPDIR/<prefix>-XXXXXX (or under /tmp); "" if it cannot be made.
inline std::string MakeTempDir(std::string_view prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/" + std::string(prefix) + "-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) return {};
  return pattern;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The local peers' endpoints and credentials, as Lambda would set them.
inline std::vector<std::string> AwsEnvironment(const imgsvc::testing::LocalAws& peers) {
  return {std::string("AWS_ACCESS_KEY_ID=") + imgsvc::testing::kLocalAwsAccessKeyId,
          std::string("AWS_SECRET_ACCESS_KEY=") + imgsvc::testing::kLocalAwsSecretAccessKey,
          std::string("AWS_REGION=") + imgsvc::testing::kLocalAwsRegion,
          "AWS_EC2_METADATA_DISABLED=true",
          "AWS_ENDPOINT_URL_S3=" + peers.s3,
          "AWS_ENDPOINT_URL_DYNAMODB=" + peers.dynamodb,
          "AWS_ENDPOINT_URL_SECRETS_MANAGER=" + peers.secretsmanager};
}

}  // namespace imgsvc::lambda::function_harness
