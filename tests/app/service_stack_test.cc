// The service stack every transport opens (app/service_stack.h), on the
// embedded backend in a temp directory.

#include "app/service_stack.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "app/config.h"
#include "storage/temp_dir.h"

namespace imgsvc::app {
namespace {

void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// A rotated token file is re-read through the settings the stack was opened
// with, which must not depend on the Config object still existing (the
// stack kept a reference to it once).
TEST(ServiceStackTest, ReReadsTheTokenFileAfterTheConfigItWasOpenedFromIsGone) {
  storage::testing::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::filesystem::path token_file = std::filesystem::path(dir.path()) / "api-token.txt";
  WriteFile(token_file, "first-token-0123456789abcdef0123\n");

  auto config = std::make_unique<Config>();
  config->storage = "embedded";
  config->data_dir = (std::filesystem::path(dir.path()) / "data").string();
  config->api_token_file = token_file.string();
  StatusOr<TokenPlan> plan = PlanToken(*config, /*loopback=*/true);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  auto stack = OpenServiceStack(*config, *plan, "http://127.0.0.1:8000");
  ASSERT_TRUE(stack.ok()) << stack.status().ToString();

  // The Config goes away, and another takes its memory with other settings.
  config.reset();
  auto other = std::make_unique<Config>();
  other->data_dir = "/nonexistent/elsewhere";
  other->api_token_file = "/nonexistent/elsewhere/token";

  WriteFile(token_file, "second-token-0123456789abcdef012\n");
  StatusOr<std::string> refreshed = (*stack)->tokens->Refresh();
  ASSERT_TRUE(refreshed.ok()) << refreshed.status().ToString();
  EXPECT_EQ(*refreshed, "second-token-0123456789abcdef012");
}

}  // namespace
}  // namespace imgsvc::app
