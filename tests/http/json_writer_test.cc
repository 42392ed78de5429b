#include "http/json_writer.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace imgsvc::http {
namespace {

core::ImageRecord SampleRecord() {
  core::ImageRecord r;
  r.image_id = "0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a11";
  r.user_id = "alice";
  r.filename = "c\"at\n.png";
  r.format = core::ImageFormat::kPng;
  r.size_bytes = 48213;
  r.width = 640;
  r.height = 480;
  r.sha256 = std::string(64, 'a');
  r.tags = {"cat", "cute"};
  r.created_at = "2026-11-25T18:00:00.123456Z";
  r.updated_at = r.created_at;
  return r;
}

TEST(JsonWriter, RecordHasEveryFieldWithApiTypes) {
  const auto v = boost::json::parse(RecordJson(SampleRecord())).as_object();
  EXPECT_EQ(v.size(), 14u);
  EXPECT_EQ(v.at("image_id").as_string(), "0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a11");
  EXPECT_EQ(v.at("filename").as_string(), "c\"at\n.png");
  EXPECT_EQ(v.at("content_type").as_string(), "image/png");
  EXPECT_EQ(v.at("format").as_string(), "png");
  EXPECT_EQ(v.at("size_bytes").as_int64(), 48213);
  EXPECT_EQ(v.at("width").as_int64(), 640);
  EXPECT_TRUE(v.at("category").is_null());
  EXPECT_EQ(v.at("tags").as_array().size(), 2u);
  EXPECT_EQ(v.at("visibility").as_string(), "private");
}

void Add(core::ListResult& result, core::ImageRecord record, core::PresignedUrl url) {
  result.page.items.push_back(std::move(record));
  result.urls.push_back(std::move(url));
}

TEST(JsonWriter, ListCarriesUrlsCountAndCursor) {
  core::ListResult result;
  Add(result, SampleRecord(), {"http://x/files/k?expires=1&signature=ab", 1'000'000});
  auto v = boost::json::parse(ListResponseJson(result)).as_object();
  EXPECT_EQ(v.at("count").as_int64(), 1);
  EXPECT_TRUE(v.at("last_evaluated_key").is_null());
  const auto& item = v.at("items").as_array().at(0).as_object();
  EXPECT_EQ(item.at("presigned_url").as_string(), "http://x/files/k?expires=1&signature=ab");
  EXPECT_EQ(item.at("presigned_url_expires_at").as_string(), "1970-01-01T00:00:01.000000Z");
  result.cursor = "abc";
  v = boost::json::parse(ListResponseJson(result)).as_object();
  EXPECT_EQ(v.at("last_evaluated_key").as_string(), "abc");
}

// A page's expiries are formatted once when they repeat: each item must
// still carry its own.
TEST(JsonWriter, EachListedUrlCarriesItsOwnExpiry) {
  core::ListResult result;
  const std::vector<core::Micros> expiries = {0, 0, 1'000'000, 1'000'000, 0, 86'400'000'000};
  for (const core::Micros expiry : expiries) Add(result, SampleRecord(), {"http://x/k", expiry});
  const auto v = boost::json::parse(ListResponseJson(result)).as_object();
  const auto& items = v.at("items").as_array();
  ASSERT_EQ(items.size(), expiries.size());
  const std::vector<std::string> expected = {"1970-01-01T00:00:00.000000Z", "1970-01-01T00:00:00.000000Z",
                                             "1970-01-01T00:00:01.000000Z", "1970-01-01T00:00:01.000000Z",
                                             "1970-01-01T00:00:00.000000Z", "1970-01-02T00:00:00.000000Z"};
  for (std::size_t i = 0; i < items.size(); ++i) {
    EXPECT_EQ(items[i].as_object().at("presigned_url_expires_at").as_string(), expected[i]) << "item " << i;
  }
}

// Records are written into room reserved for their worst case: every byte
// of client text taking six bytes escaped. Values at their longest, made of
// such bytes, must come back whole (and the writer aborts if the room was
// short).
TEST(JsonWriter, RecordsOfTheWorstEscapingComeBackWhole) {
  core::ImageRecord r = SampleRecord();
  r.user_id = std::string(128, '\x7f');
  r.filename = std::string(255, '\x01');
  r.category = std::string(64, '\xff');  // not UTF-8: each byte becomes U+FFFD
  r.tags.assign(20, std::string(64, '\x1f'));
  r.sha256 = std::string(64, '"');
  r.created_at = std::string(40, '\\');
  r.updated_at = std::string(40, '\n');
  r.size_bytes = UINT64_MAX;
  r.width = UINT32_MAX;
  r.height = UINT32_MAX;
  core::ListResult result;
  for (int i = 0; i < 3; ++i) Add(result, r, {std::string(2048, '\x02'), 1'000'000});
  const auto v = boost::json::parse(ListResponseJson(result)).as_object();
  ASSERT_EQ(v.at("items").as_array().size(), 3u);
  for (const auto& value : v.at("items").as_array()) {
    const auto& item = value.as_object();
    EXPECT_EQ(item.at("user_id").as_string(), r.user_id);
    EXPECT_EQ(item.at("filename").as_string(), r.filename);
    std::string replaced;
    for (int i = 0; i < 64; ++i) replaced += "\xEF\xBF\xBD";
    EXPECT_EQ(item.at("category").as_string(), replaced);
    ASSERT_EQ(item.at("tags").as_array().size(), 20u);
    EXPECT_EQ(item.at("tags").as_array().at(19).as_string(), r.tags[19]);
    EXPECT_EQ(item.at("sha256").as_string(), r.sha256);
    EXPECT_EQ(item.at("created_at").as_string(), r.created_at);
    EXPECT_EQ(item.at("updated_at").as_string(), r.updated_at);
    EXPECT_EQ(item.at("size_bytes").as_uint64(), UINT64_MAX);
    EXPECT_EQ(item.at("height").as_int64(), std::int64_t{UINT32_MAX});
    EXPECT_EQ(item.at("presigned_url").as_string(), std::string(2048, '\x02'));
  }
  const auto record = boost::json::parse(RecordJson(r)).as_object();
  EXPECT_EQ(record.at("filename").as_string(), r.filename);
}

TEST(JsonWriter, ValidationErrorsKeepLocTypes) {
  const auto v = boost::json::parse(ValidationErrorJson(
                                        {FieldError{{"body", "image_ids", 3}, "bad", "uuid_parsing"}}))
                     .as_object();
  const auto& entry = v.at("detail").as_array().at(0).as_object();
  EXPECT_EQ(entry.at("loc").as_array().at(2).as_int64(), 3);
  EXPECT_EQ(entry.at("loc").as_array().at(0).as_string(), "body");
  EXPECT_EQ(entry.at("type").as_string(), "uuid_parsing");
}

TEST(JsonWriter, BulkDeleteShape) {
  core::BulkDeleteResult r;
  r.deleted = {"a"};
  r.not_found = {"b", "c"};
  r.failed.push_back({"d", "throttled"});
  const auto v = boost::json::parse(BulkDeleteJson(r)).as_object();
  EXPECT_EQ(v.at("deleted").as_array().size(), 1u);
  EXPECT_EQ(v.at("not_found").as_array().size(), 2u);
  EXPECT_EQ(v.at("failed").as_array().at(0).as_object().at("detail").as_string(), "throttled");
}

TEST(JsonWriter, DetailEscapes) {
  EXPECT_EQ(DetailJson("a\"b"), R"({"detail":"a\"b"})");
}

}  // namespace
}  // namespace imgsvc::http
