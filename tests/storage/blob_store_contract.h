// The behaviour every core::BlobStore must show, written once and run against
// each backend (embedded files; S3 later).
//
// Downloads are checked end to end through the presigned URL, so each backend
// brings its own way to fetch one (the embedded store verifies the URL
// itself; S3 answers an HTTP GET). Overwriting an existing key is left out:
// S3 cannot refuse it, the embedded store does (tested on its own).
//
//   INSTANTIATE_TEST_SUITE_P(Files, BlobStoreContract,
//                            ::testing::Values(BlobStoreBackend{"files", make}),
//                            BlobStoreBackendName);
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "core/ports.h"

namespace imgsvc::storage::testing {

// One fresh store and what the contract needs around it.
struct BlobStoreHarness {
  // Whatever the members below rely on (clock, temp directory); declared
  // first so it is destroyed last.
  std::shared_ptr<void> resources;
  std::unique_ptr<core::BlobStore> store;
  // Downloads through a presigned URL. Refusals surface as Status codes:
  // kForbidden for a bad or expired URL, kNotFound for a missing object.
  std::function<StatusOr<std::string>(const std::string& url)> fetch;
  // The time URLs are signed and checked against.
  std::function<core::Micros()> now;
  // Lets time pass for the store (a fake clock moves; a real one is slept on).
  std::function<void(std::chrono::seconds)> advance;
};

struct BlobStoreBackend {
  std::string name;  // part of the test names: letters, digits and '_'
  std::function<BlobStoreHarness()> make;
};

std::string BlobStoreBackendName(const ::testing::TestParamInfo<BlobStoreBackend>& info);
void PrintTo(const BlobStoreBackend& backend, std::ostream* os);

class BlobStoreContract : public ::testing::TestWithParam<BlobStoreBackend> {
 protected:
  void SetUp() override;

  BlobStoreHarness harness_;
};

}  // namespace imgsvc::storage::testing
