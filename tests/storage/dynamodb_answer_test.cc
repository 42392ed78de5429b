#include "storage/aws/dynamodb_answer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace imgsvc::storage::dynamodb {
namespace dynamodb_answer_test {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

const Attribute& Named(const Item& item, std::string_view name) {
  static const Attribute kMissing{};
  const Attribute* attribute = Find(item, name);
  EXPECT_NE(attribute, nullptr) << name;
  return attribute != nullptr ? *attribute : kMissing;
}

TEST(DynamoDbAnswerTest, ReadsAQueryPageWithEveryAttributeShape) {
  const StatusOr<ItemAnswer> answer = ReadItemAnswer(R"({
    "Count": 2, "ScannedCount": 2, "ConsumedCapacity": {"TableName": "T", "CapacityUnits": 0.5},
    "Items": [
      {"image_id": {"S": "a"}, "size_bytes": {"N": "48213"}, "tags": {"L": [{"S": "cat"}, {"S": "dog"}]},
       "category": {"NULL": true}, "public": {"BOOL": false}, "legacy_tags": {"SS": ["x", "y"]},
       "sizes": {"NS": ["1", "2"]}, "meta": {"M": {"Items": {"L": [{"S": "not an item"}]}}}},
      {"image_id": {"S": "b"}, "tags": {"L": [{"S": "ok"}, {"N": "1"}]}}
    ],
    "LastEvaluatedKey": {"image_id": {"S": "b"}, "user_id": {"S": "u"}, "created_at": {"S": "2026-01-01"}}
  })");
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_FALSE(answer->item.has_value());
  ASSERT_EQ(answer->items.size(), 2u);

  const Item& first = answer->items[0];
  EXPECT_EQ(first.size(), 8u);
  EXPECT_EQ(Named(first, "image_id").type, "S");
  EXPECT_EQ(Named(first, "image_id").value, "a");
  EXPECT_EQ(Named(first, "size_bytes").type, "N");
  EXPECT_EQ(Named(first, "size_bytes").value, "48213");
  EXPECT_EQ(Named(first, "tags").type, "L");
  EXPECT_TRUE(Named(first, "tags").is_list);
  EXPECT_FALSE(Named(first, "image_id").is_list);
  EXPECT_THAT(Named(first, "tags").elements, ElementsAre("cat", "dog"));
  EXPECT_FALSE(Named(first, "tags").other_elements);
  EXPECT_EQ(Named(first, "category").type, "NULL");
  EXPECT_EQ(Named(first, "public").type, "BOOL");
  EXPECT_THAT(Named(first, "legacy_tags").elements, ElementsAre("x", "y"));
  EXPECT_EQ(Named(first, "legacy_tags").type, "SS");
  EXPECT_THAT(Named(first, "sizes").elements, ElementsAre("1", "2"));
  // A map is kept as its type; what it holds is no item of the answer.
  EXPECT_EQ(Named(first, "meta").type, "M");
  EXPECT_THAT(Named(first, "meta").elements, IsEmpty());

  const Item& second = answer->items[1];
  EXPECT_THAT(Named(second, "tags").elements, ElementsAre("ok"));
  EXPECT_TRUE(Named(second, "tags").other_elements);
  EXPECT_EQ(Find(second, "size_bytes"), nullptr);

  ASSERT_TRUE(answer->last_evaluated_key.has_value());
  EXPECT_EQ(Named(*answer->last_evaluated_key, "user_id").value, "u");
  EXPECT_EQ(Named(*answer->last_evaluated_key, "created_at").value, "2026-01-01");
}

TEST(DynamoDbAnswerTest, ReadsTheItemOfGetItemAndTheAttributesOfAnUpdate) {
  for (const std::string key : {"Item", "Attributes"}) {
    const StatusOr<ItemAnswer> answer =
        ReadItemAnswer("{\"" + key + "\": {\"image_id\": {\"S\": \"id-1\"}}, \"ConsumedCapacity\": null}");
    ASSERT_TRUE(answer.ok()) << key << ": " << answer.status().ToString();
    ASSERT_TRUE(answer->item.has_value()) << key;
    EXPECT_EQ(Named(*answer->item, "image_id").value, "id-1");
    EXPECT_THAT(answer->items, IsEmpty());
    EXPECT_FALSE(answer->last_evaluated_key.has_value());
  }
  // GetItem of an absent key answers {} (and an Item that is no object is none).
  for (const char* body : {"{}", R"({"Item": []})", R"({"Item": "x"})"}) {
    const StatusOr<ItemAnswer> answer = ReadItemAnswer(body);
    ASSERT_TRUE(answer.ok()) << body;
    EXPECT_FALSE(answer->item.has_value()) << body;
  }
}

TEST(DynamoDbAnswerTest, UnescapesStringsThatStayValidAfterTheAnswerMoves) {
  StatusOr<ItemAnswer> read = ReadItemAnswer(
      R"({"Item": {"na\"me": {"S": "a\"b\\c\/d\u00e9\ud83d\ude00\n"}, "tags": {"L": [{"S": "t\tab"}]}}})");
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  const ItemAnswer moved = std::move(*read);
  ASSERT_TRUE(moved.item.has_value());
  EXPECT_EQ(Named(*moved.item, "na\"me").value, "a\"b\\c/d\xc3\xa9\xf0\x9f\x98\x80\n");
  EXPECT_THAT(Named(*moved.item, "tags").elements, ElementsAre("t\tab"));
}

TEST(DynamoDbAnswerTest, ATypedValueThatIsNoStringKeepsNoValue) {
  const StatusOr<ItemAnswer> answer =
      ReadItemAnswer(R"({"Item": {"n": {"N": 5}, "l": {"L": ["bare", [1], {}]}, "s": {"S": {"x": "y"}},
                          "e": {"L": [{"S": "kept"}, {}]}, "m": {"L": [{"M": {"S": {"S": "inner"}}}]},
                          "t": {"L": "not a list"}}})");
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(Named(*answer->item, "n").value, "");
  EXPECT_TRUE(Named(*answer->item, "l").other_elements);
  EXPECT_THAT(Named(*answer->item, "l").elements, IsEmpty());
  EXPECT_EQ(Named(*answer->item, "s").value, "");
  EXPECT_FALSE(Named(*answer->item, "s").is_list);
  EXPECT_THAT(Named(*answer->item, "e").elements, ElementsAre("kept"));
  EXPECT_TRUE(Named(*answer->item, "e").other_elements);  // {} is no string
  EXPECT_THAT(Named(*answer->item, "m").elements, IsEmpty());
  EXPECT_TRUE(Named(*answer->item, "m").other_elements);
  EXPECT_EQ(Named(*answer->item, "t").type, "L");
  EXPECT_FALSE(Named(*answer->item, "t").is_list);  // the store calls such tags malformed
  EXPECT_THAT(Named(*answer->item, "t").elements, IsEmpty());
}

TEST(DynamoDbAnswerTest, RefusesWhatIsNotOneJsonObject) {
  for (const char* body : {"", "[]", "\"Item\"", "null", "{", R"({"Items": [})", "{} {}", "{} x",
                           R"({"Item": {"a": {"S": "unterminated}}})"}) {
    const StatusOr<ItemAnswer> answer = ReadItemAnswer(body);
    ASSERT_FALSE(answer.ok()) << body;
    EXPECT_EQ(answer.status().code(), Code::kInternal) << body;
  }
  EXPECT_TRUE(ReadItemAnswer(" {}\n").ok());
}

// Everything an attribute holds, for comparing answers.
std::vector<std::string> Flattened(const Item& item) {
  std::vector<std::string> flat;
  for (const Attribute& attribute : item) {
    std::string line = std::string(attribute.name) + "|" + std::string(attribute.type) + "|" +
                       std::string(attribute.value) + "|" + (attribute.is_list ? "list" : "") + "|" +
                       (attribute.other_elements ? "other" : "");
    for (const std::string_view element : attribute.elements) line += "|" + std::string(element);
    flat.push_back(std::move(line));
  }
  return flat;
}

TEST(DynamoDbAnswerTest, AnAnswerReadIntoAgainHoldsOnlyTheNewAnswer) {
  const std::string long_page = R"({"Items": [
      {"image_id": {"S": "a"}, "tags": {"L": [{"S": "cat"}, {"S": "dog"}]}, "size_bytes": {"N": "1"},
       "category": {"S": "pets"}, "extra": {"SS": ["x"]}},
      {"image_id": {"S": "b"}, "tags": {"L": [{"S": "ok"}, {"N": "1"}]}},
      {"image_id": {"S": "c"}}],
    "LastEvaluatedKey": {"image_id": {"S": "c"}}})";
  const std::vector<std::string> answers = {
      R"({"Items": [{"image_id": {"S": "z"}, "tags": {"L": []}}, {"other": {"N": "7"}}]})",
      R"({"Item": {"image_id": {"S": "one"}, "tags": {"SS": ["q"]}}})",
      R"({})",
  };
  for (const std::string& body : answers) {
    ItemAnswer reused;
    ASSERT_TRUE(ReadItemAnswerInto(long_page, reused).ok());
    ASSERT_TRUE(ReadItemAnswerInto(body, reused).ok()) << body;
    const StatusOr<ItemAnswer> fresh = ReadItemAnswer(body);
    ASSERT_TRUE(fresh.ok()) << body;
    ASSERT_EQ(reused.items.size(), fresh->items.size()) << body;
    for (std::size_t i = 0; i < fresh->items.size(); ++i) {
      EXPECT_EQ(Flattened(reused.items[i]), Flattened(fresh->items[i])) << body;
    }
    ASSERT_EQ(reused.item.has_value(), fresh->item.has_value()) << body;
    if (fresh->item) {
      EXPECT_EQ(Flattened(*reused.item), Flattened(*fresh->item)) << body;
    }
    EXPECT_EQ(reused.last_evaluated_key.has_value(), fresh->last_evaluated_key.has_value()) << body;
  }

  ItemAnswer failed;
  ASSERT_TRUE(ReadItemAnswerInto(long_page, failed).ok());
  EXPECT_EQ(ReadItemAnswerInto(R"({"Items": [{"a": {"S": "b"}})", failed).code(), Code::kInternal);
  EXPECT_THAT(failed.items, IsEmpty());
  EXPECT_FALSE(failed.last_evaluated_key.has_value());
}

TEST(DynamoDbAnswerTest, RefusesNestingDeeperThanThirtyTwo) {
  std::string deep = R"({"Item": {"m": {"M": )";
  for (int i = 0; i < 40; ++i) deep += R"({"k": {"M": )";
  deep += "{}";
  for (int i = 0; i < 40; ++i) deep += "}}";
  deep += "}}}";
  const StatusOr<ItemAnswer> answer = ReadItemAnswer(deep);
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), Code::kInternal);
}

}  // namespace dynamodb_answer_test
}  // namespace imgsvc::storage::dynamodb
