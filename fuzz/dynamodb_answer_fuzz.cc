// Fuzzes dynamodb::ReadItemAnswer, which reads DynamoDB's answers in one
// pass: any input must read or fail with the one kInternal, never crash or
// hang. It must accept exactly what Boost.JSON parses into an object (the
// same parser, without the document), and every string it returns must lie
// in the text the answer owns.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <boost/json.hpp>

#include "core/status.h"
#include "storage/aws/dynamodb_answer.h"

namespace {

using imgsvc::storage::dynamodb::Item;

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
  return 0;
}
