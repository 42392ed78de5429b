// Settings (app/config.h): the one list of them, and reading it from the
// environment as the Lambda bootstrap does.

#include "app/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

namespace imgsvc::app {
namespace {

using ::testing::HasSubstr;

// Sets environment variables for one test and removes them afterwards.
class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> variables) {
    for (const auto& [name, value] : variables) {
      ::setenv(name, value, 1);
      names_.push_back(name);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    for (const char* name : names_) ::unsetenv(name);
  }

 private:
  std::vector<const char*> names_;
};

// Records what VisitSettings declares.
class Recorder final : public SettingVisitor {
 public:
  void Text(const char* flag, const char* env, const char*, std::string&) override { Add(flag, env); }
  void Choice(const char* flag, const char* env, const char*, std::string&,
              std::initializer_list<const char*>) override {
    Add(flag, env);
  }
  void Port(const char* flag, const char* env, const char*, std::uint16_t&) override { Add(flag, env); }
  void Int(const char* flag, const char* env, const char*, int&, int, int) override { Add(flag, env); }
  void Count(const char* flag, const char* env, const char*, std::uint64_t&, std::uint64_t, std::uint64_t) override {
    Add(flag, env);
  }

  std::vector<std::pair<std::string, std::string>> settings;

 private:
  void Add(const char* flag, const char* env) { settings.emplace_back(flag, env); }
};

// CONFIG.md's rule: --some-name is IMGSVC_SOME_NAME, and each appears once.
TEST(SettingsTest, EachFlagHasTheEnvironmentVariableOfItsName) {
  Config config;
  Recorder recorder;
  VisitSettings(config, recorder);
  ASSERT_EQ(recorder.settings.size(), 26u);
  std::set<std::string> flags;
  for (const auto& [flag, env] : recorder.settings) {
    ASSERT_TRUE(flag.starts_with("--")) << flag;
    std::string expected = "IMGSVC_";
    for (const char c : flag.substr(2)) expected += c == '-' ? '_' : static_cast<char>(std::toupper(c));
    EXPECT_EQ(env, expected) << flag;
    EXPECT_TRUE(flags.insert(flag).second) << flag << " twice";
  }
}

TEST(SettingsTest, ReadsEachKindFromTheEnvironment) {
  ScopedEnv env{{"IMGSVC_STORAGE", "aws"},          {"IMGSVC_BUCKET", "photos"},
                {"IMGSVC_PORT", "9000"},            {"IMGSVC_LIST_MAX_READS", "7"},
                {"IMGSVC_MAX_PIXELS", "1099511627776"}, {"IMGSVC_LOG_LEVEL", "warn"}};
  Config config;
  ASSERT_TRUE(ReadSettingsFromEnvironment(config).ok());
  EXPECT_EQ(config.storage, "aws");
  EXPECT_EQ(config.bucket, "photos");
  EXPECT_EQ(config.port, 9000);
  EXPECT_EQ(config.list_max_reads, 7);
  EXPECT_EQ(config.max_pixels, std::uint64_t{1} << 40);
  EXPECT_EQ(config.log_level, "warn");
  EXPECT_EQ(config.table, Config().table);  // unset: the default stays
}

TEST(SettingsTest, AnEmptyVariableCountsAsUnset) {
  ScopedEnv env{{"IMGSVC_TABLE", ""}, {"IMGSVC_WORKERS", ""}};
  Config config;
  ASSERT_TRUE(ReadSettingsFromEnvironment(config).ok());
  EXPECT_EQ(config.table, Config().table);
  EXPECT_EQ(config.workers, Config().workers);
}

struct BadValue {
  const char* name;
  const char* value;
  const char* why;
};

class SettingsRefuseTest : public ::testing::TestWithParam<BadValue> {};

TEST_P(SettingsRefuseTest, NamesTheVariableAndWhy) {
  const BadValue& bad = GetParam();
  ScopedEnv env{{bad.name, bad.value}};
  Config config;
  const Config defaults;
  const Status read = ReadSettingsFromEnvironment(config);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.code(), Code::kBadRequest);
  EXPECT_THAT(read.message(), HasSubstr(bad.name));
  EXPECT_THAT(read.message(), HasSubstr(bad.why));
  EXPECT_EQ(config.port, defaults.port);
  EXPECT_EQ(config.workers, defaults.workers);
  EXPECT_EQ(config.log_level, defaults.log_level);
}

INSTANTIATE_TEST_SUITE_P(
    Values, SettingsRefuseTest,
    ::testing::Values(BadValue{"IMGSVC_PORT", "65536", "between 0 and 65535"},
                      BadValue{"IMGSVC_PORT", "80a", "not a decimal number"},
                      BadValue{"IMGSVC_PORT", "0x50", "not a decimal number"},
                      BadValue{"IMGSVC_PORT", "-1", "not a decimal number"},
                      BadValue{"IMGSVC_WORKERS", "0", "between 1 and 1024"},
                      BadValue{"IMGSVC_WORKERS", " 4", "not a decimal number"},
                      BadValue{"IMGSVC_MAX_UPLOAD_MB", "99999999999999999999", "between 1 and 1048576"},
                      BadValue{"IMGSVC_LOG_LEVEL", "loud", "not one of debug, info, warn, error"},
                      BadValue{"IMGSVC_STORAGE", "Aws", "not one of embedded, aws"}));

}  // namespace
}  // namespace imgsvc::app
