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

// What an answer holds, item by item, for comparing two readings.
std::vector<std::string> Flattened(const ItemAnswer& answer) {
  std::vector<std::string> flat;
  const auto add = [&flat](std::string_view label, const Item& item) {
    flat.emplace_back(label);
    for (std::string& line : Flattened(item)) flat.push_back(std::move(line));
  };
  if (answer.item) add("item", *answer.item);
  for (const Item& item : answer.items) add("items[]", item);
  if (answer.last_evaluated_key) add("last_evaluated_key", *answer.last_evaluated_key);
  return flat;
}

// The reader made for DynamoDB's shape gives what Boost.JSON's parser gives,
// on the answers it reads and on those it leaves to the parser, into a
// fresh answer and into one read before.
TEST(DynamoDbAnswerTest, TheShapedReaderReadsWhatBoostJsonReads) {
  const std::vector<std::string> bodies = {
      // DynamoDB's own shapes, and whitespace anywhere JSON allows it.
      R"({"Count":2,"Items":[{"image_id":{"S":"a"},"size_bytes":{"N":"48213"},"tags":{"L":[{"S":"cat"},{"S":"dog"}]},"category":{"NULL":true},"public":{"BOOL":false},"legacy":{"SS":["x","y"]},"sizes":{"NS":["1","2"]},"empty":{"L":[]}},{}],"ScannedCount":2,"LastEvaluatedKey":{"image_id":{"S":"a"}}})",
      " \n{ \"Items\" : [ { \"a\" : { \"S\" : \"b\" } , \"t\" : { \"L\" : [ { \"S\" : \"c\" } ] } } ] ,\r\n \"Count\" : 1 }\t",
      R"({"Item":{"image_id":{"S":"id-1"}},"ConsumedCapacity":{"TableName":"T","CapacityUnits":0.5,"Table":{"CapacityUnits":-1}}})",
      R"({"Attributes":{"na\"me":{"S":"a\"b\\c\/d\b\f\n\r\t"},"tags":{"L":[{"S":"t\tab"}]}}})",
      R"({"Items":[],"Count":0,"Other":[[],{},[{"a":[null,true,false,-0,0,12,"s"]}]]})",
      "{\"Item\":{\"del\":{\"S\":\"\x7f\"},\"x\":{\"B\":\"AAEC\"}}}",
      R"({})",
      // UTF-8 text, well formed (2, 3 and 4 bytes; the highest code point).
      "{\"Item\":{\"f\xc3\xa9\":{\"S\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"},"
      "\"t\":{\"L\":[{\"S\":\"\xe6\x97\xa5\xe6\x9c\xac\"}]}}}",
      // Left to Boost.JSON: \u escapes, exponents, long numbers, maps,
      // lists of other things, typed values that are not one key, sections twice.
      R"({"Item":{"a":{"S":"caf\u00e9 \ud83d\ude00"}}})",
      R"({"Count":1e3,"Items":[{"a":{"S":"b"}}]})",
      R"({"Count":1234567890123456789012,"Items":[]})",
      R"({"Item":{"m":{"M":{"k":{"S":"v"}}},"n":{"N":5}}})",
      R"({"Item":{"l":{"L":["bare",[1],{}]},"e":{"L":[{"S":"kept"},{}]},"two":{"L":[{"S":"x","N":"1"}]}}})",
      R"({"Item":{"none":{},"pair":{"S":"a","N":"1"},"bare":"x"}})",
      R"({"Items":[{"a":{"S":"1"}}],"Items":[{"a":{"S":"2"}}]})",
      R"({"Item":{"a":{"S":"1"}},"Attributes":{"a":{"S":"2"}}})",
      R"({"Item":[],"Items":{},"LastEvaluatedKey":null})",
      // Refused by both.
      "", "[]", "{", R"({"Items": [})", "{} x", R"({"Count": 01})", R"({"Count": 1.})", R"({"Count": -})",
      R"({"Item":{"a":{"S":"bad \x escape"}}})", "{\"Item\":{\"a\":{\"S\":\"tab\tinside\"}}}",
      "{\"Item\":{\"a\":{\"S\":\"\xff\"}}}", R"({"Item":{"a":{"S":"cut \)", R"({"a":tru})",
      // Ill-formed UTF-8: overlong, a surrogate, above U+10FFFF, cut short,
      // a lone continuation byte, a lead byte at the very end.
      "{\"Item\":{\"a\":{\"S\":\"\xc0\xaf\"}}}", "{\"Item\":{\"a\":{\"S\":\"\xed\xa0\x80\"}}}",
      "{\"Item\":{\"a\":{\"S\":\"\xf4\x90\x80\x80\"}}}", "{\"Item\":{\"a\":{\"S\":\"\xe2\x82\"}}}",
      "{\"Item\":{\"a\":{\"S\":\"\x80\"}}}", "{\"Item\":{\"a\":{\"S\":\"\xe0\x80\xaf\"}}}", "{\"a\":\"\xf0",
  };
  const std::string earlier = bodies[0];
  for (const std::string& body : bodies) {
    for (const bool reused : {false, true}) {
      ItemAnswer shaped;
      ItemAnswer reference;
      if (reused) {
        ASSERT_TRUE(ReadItemAnswerInto(earlier, shaped).ok());
        ASSERT_TRUE(ReadItemAnswerWithBoostInto(earlier, reference).ok());
      }
      const Status by_shape = ReadItemAnswerInto(body, shaped);
      const Status by_boost = ReadItemAnswerWithBoostInto(body, reference);
      ASSERT_EQ(by_shape.ok(), by_boost.ok()) << body;
      if (!by_boost.ok()) {
        EXPECT_EQ(by_shape.code(), Code::kInternal) << body;
        continue;
      }
      EXPECT_EQ(Flattened(shaped), Flattened(reference)) << body;
    }
  }
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
