// The behaviour every core::MetadataStore must show, written once and run
// against each backend (embedded SQLite; DynamoDB later).
//
// A backend instantiates the suite with a factory that returns a fresh, empty
// store per test:
//   INSTANTIATE_TEST_SUITE_P(Sqlite, MetadataStoreContract,
//                            ::testing::Values(MetadataStoreBackend{"sqlite", make, {}}),
//                            MetadataStoreBackendName);
// Link the object library imgsvc_store_contract directly into the test binary
// (an object library, so the linker cannot drop the registered tests).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "core/ports.h"

namespace imgsvc::storage::testing {

struct MetadataStoreBackend {
  std::string name;  // part of the test names: letters, digits and '_'
  std::function<std::unique_ptr<core::MetadataStore>()> make;
  // Called after writes and before listing, to wait out eventual consistency
  // (DynamoDB's GSIs). Empty for stores that list what they wrote at once.
  std::function<void()> settle;
};

std::string MetadataStoreBackendName(const ::testing::TestParamInfo<MetadataStoreBackend>& info);
void PrintTo(const MetadataStoreBackend& backend, std::ostream* os);

class MetadataStoreContract : public ::testing::TestWithParam<MetadataStoreBackend> {
 protected:
  void SetUp() override;
  void Settle() const;

  std::unique_ptr<core::MetadataStore> store_;
};

}  // namespace imgsvc::storage::testing
