// Fuzzes dynamodb::ReadItemAnswer, which reads DynamoDB's answers in one
// pass: any input must read or fail with the one kInternal, never crash or
// hang. It must accept exactly what Boost.JSON parses into an object, every
// string it returns must lie in the text the answer owns, and what it reads
// must be what Boost.JSON's parser alone reads (ReadItemAnswerWithBoostInto:
// the reader made for DynamoDB's shape answers most inputs first), into a
// fresh answer and into one that held another answer before.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

#include <boost/json.hpp>

#include "core/status.h"
#include "storage/aws/dynamodb_answer.h"

namespace {

using imgsvc::storage::dynamodb::Attribute;
using imgsvc::storage::dynamodb::Item;
using imgsvc::storage::dynamodb::ItemAnswer;

void Check(bool condition) {
  if (!condition) std::abort();
}

void CheckOwned(std::string_view view, const char* text, std::size_t size) {
  Check(view.empty() || (view.data() >= text && view.data() + view.size() <= text + size));
}

void CheckItem(const Item& item, const char* text, std::size_t size) {
  for (const auto& attribute : item) {
    CheckOwned(attribute.name, text, size);
    CheckOwned(attribute.type, text, size);
    CheckOwned(attribute.value, text, size);
    for (const std::string_view element : attribute.elements) CheckOwned(element, text, size);
    Check(imgsvc::storage::dynamodb::Find(item, attribute.name) != nullptr);
  }
}

bool SameAttribute(const Attribute& a, const Attribute& b) {
  return a.name == b.name && a.type == b.type && a.value == b.value && a.elements == b.elements &&
         a.is_list == b.is_list && a.other_elements == b.other_elements;
}

bool SameItem(const Item& a, const Item& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!SameAttribute(a[i], b[i])) return false;
  }
  return true;
}

bool SameOptionalItem(const std::optional<Item>& a, const std::optional<Item>& b) {
  return a.has_value() == b.has_value() && (!a || SameItem(*a, *b));
}

void CheckSameAnswer(const ItemAnswer& a, const ItemAnswer& b) {
  Check(SameOptionalItem(a.item, b.item));
  Check(SameOptionalItem(a.last_evaluated_key, b.last_evaluated_key));
  Check(a.items.size() == b.items.size());
  for (std::size_t i = 0; i < a.items.size(); ++i) Check(SameItem(a.items[i], b.items[i]));
}

// A page of the usual shape, read into an answer before the input.
constexpr std::string_view kEarlierAnswer =
    R"({"Items":[{"image_id":{"S":"a"},"tags":{"L":[{"S":"cat"}]}},{"b":{"SS":["x"]}}],)"
    R"("LastEvaluatedKey":{"image_id":{"S":"a"}}})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto answer = imgsvc::storage::dynamodb::ReadItemAnswer(input);
  boost::system::error_code error;
  const boost::json::value document = boost::json::parse(boost::json::string_view(input.data(), input.size()), error);
  Check(answer.ok() == (!error && document.is_object()));
  if (!answer.ok()) {
    Check(answer.status().code() == imgsvc::Code::kInternal);
    return 0;
  }
  // Unescaped strings never outgrow their JSON text.
  const char* text = answer->text.get();
  if (answer->item) CheckItem(*answer->item, text, size);
  if (answer->last_evaluated_key) CheckItem(*answer->last_evaluated_key, text, size);
  for (const Item& item : answer->items) CheckItem(item, text, size);

  ItemAnswer reference;
  Check(imgsvc::storage::dynamodb::ReadItemAnswerWithBoostInto(input, reference).ok());
  CheckSameAnswer(*answer, reference);
  ItemAnswer reused;
  Check(imgsvc::storage::dynamodb::ReadItemAnswerInto(kEarlierAnswer, reused).ok());
  Check(imgsvc::storage::dynamodb::ReadItemAnswerInto(input, reused).ok());
  CheckSameAnswer(reused, reference);
  return 0;
}
