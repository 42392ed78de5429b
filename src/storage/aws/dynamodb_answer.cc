#include "storage/aws/dynamodb_answer.h"

#include <cstdint>
#include <cstring>

#include <boost/json/basic_parser_impl.hpp>

namespace imgsvc::storage::dynamodb {
namespace {

namespace json = boost::json;
using ErrorCode = boost::system::error_code;

// What the value being read is, from where it sits in the answer.
enum class Frame : std::uint8_t {
  kAnswer,      // the top-level object
  kItemList,    // the array of "Items"
  kItem,        // an item: attribute name -> typed value
  kTypedValue,  // {"S": "..."}
  kList,        // the array of an L, SS or NS
  kListValue,   // an L's element: {"S": "..."}
  kSkipped,     // anything the store does not read
};

enum class Section : std::uint8_t { kOther, kItem, kItems, kLastEvaluatedKey };

Section SectionNamed(std::string_view key) {
  if (key == "Item" || key == "Attributes") return Section::kItem;
  if (key == "Items") return Section::kItems;
  if (key == "LastEvaluatedKey") return Section::kLastEvaluatedKey;
  return Section::kOther;
}

class Reader {
 public:
  static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);

  Reader(std::size_t body_size, ItemAnswer& answer) : answer_(answer) {
    const auto keep = [&](std::optional<Item>& item) {
      if (item) answer_.spare_items.push_back(std::move(*item));
      item.reset();
    };
    keep(answer_.item);
    keep(answer_.last_evaluated_key);
    for (Item& item : answer_.items) answer_.spare_items.push_back(std::move(item));
    answer_.items.clear();
    if (answer_.text_capacity < body_size || !answer_.text) {
      answer_.text_capacity = body_size == 0 ? 1 : body_size;
      answer_.text = std::make_unique_for_overwrite<char[]>(answer_.text_capacity);
    }
    text_ = answer_.text.get();
    capacity_ = answer_.text_capacity;
    frames_.reserve(8);
  }

  bool on_document_begin(ErrorCode&) { return true; }
  bool on_document_end(ErrorCode&) { return true; }

  bool on_object_begin(ErrorCode& ec) { return Enter(/*object=*/true, ec); }
  bool on_object_end(std::size_t, ErrorCode&) { return Leave(); }
  bool on_array_begin(ErrorCode& ec) { return Enter(/*object=*/false, ec); }
  bool on_array_end(std::size_t, ErrorCode&) { return Leave(); }

  bool on_key_part(json::string_view part, std::size_t, ErrorCode& ec) { return Append(part, ec); }
  bool on_key(json::string_view last, std::size_t, ErrorCode& ec) {
    if (!Append(last, ec)) return false;
    OnKey(Take());
    return true;
  }
  bool on_string_part(json::string_view part, std::size_t, ErrorCode& ec) { return Append(part, ec); }
  bool on_string(json::string_view last, std::size_t, ErrorCode& ec) {
    if (!Append(last, ec)) return false;
    OnString(Take());
    return true;
  }

  bool on_number_part(json::string_view, ErrorCode&) { return true; }
  bool on_int64(std::int64_t, json::string_view, ErrorCode&) { return OnScalar(); }
  bool on_uint64(std::uint64_t, json::string_view, ErrorCode&) { return OnScalar(); }
  bool on_double(double, json::string_view, ErrorCode&) { return OnScalar(); }
  bool on_bool(bool, ErrorCode&) { return OnScalar(); }
  bool on_null(ErrorCode&) { return OnScalar(); }
  bool on_comment_part(json::string_view, ErrorCode&) { return true; }
  bool on_comment(json::string_view, ErrorCode&) { return true; }

  // Whether the document was an object (and not an array or a scalar).
  bool is_object() const { return is_object_; }

 private:
  Frame Current() const { return frames_.empty() ? Frame::kSkipped : frames_.back(); }

  Item TakeSpare() {
    if (answer_.spare_items.empty()) return Item();
    Item item = std::move(answer_.spare_items.back());
    answer_.spare_items.pop_back();
    item.clear();
    return item;
  }

  bool Enter(bool object, ErrorCode&) {
    Frame next = Frame::kSkipped;
    if (frames_.empty()) {
      next = object ? Frame::kAnswer : Frame::kSkipped;
      is_object_ = object;
    } else {
      switch (frames_.back()) {
        case Frame::kAnswer:
          if (object && (section_ == Section::kItem || section_ == Section::kLastEvaluatedKey)) {
            std::optional<Item>& slot = section_ == Section::kItem ? answer_.item : answer_.last_evaluated_key;
            item_ = &slot.emplace(TakeSpare());
            next = Frame::kItem;
          } else if (!object && section_ == Section::kItems) {
            next = Frame::kItemList;
          }
          break;
        case Frame::kItemList:
          if (object) {
            item_ = &answer_.items.emplace_back(TakeSpare());
            next = Frame::kItem;
          }
          break;
        case Frame::kItem:
          if (object && attribute_ != nullptr) next = Frame::kTypedValue;
          break;
        case Frame::kTypedValue:
          if (!object && attribute_ != nullptr) {
            attribute_->is_list = true;
            next = Frame::kList;
          }
          break;
        case Frame::kList:
          if (object && attribute_ != nullptr && attribute_->type == "L") {
            list_value_is_string_ = false;
            next = Frame::kListValue;
          } else if (attribute_ != nullptr) {
            attribute_->other_elements = true;
          }
          break;
        case Frame::kListValue:
          if (attribute_ != nullptr) attribute_->other_elements = true;
          break;
        case Frame::kSkipped:
          break;
      }
    }
    frames_.push_back(next);
    return true;
  }

  bool Leave() {
    const Frame left = Current();
    if (!frames_.empty()) frames_.pop_back();
    switch (left) {
      case Frame::kItem:
        item_ = nullptr;
        attribute_ = nullptr;
        break;
      case Frame::kTypedValue:
        attribute_ = nullptr;
        break;
      case Frame::kListValue:
        // {} or {"N": "1"} in an L: not a string element.
        if (!list_value_is_string_ && attribute_ != nullptr) attribute_->other_elements = true;
        break;
      default:
        break;
    }
    return true;
  }

  void OnKey(std::string_view key) {
    switch (Current()) {
      case Frame::kAnswer:
        section_ = SectionNamed(key);
        break;
      case Frame::kItem:
        attribute_ = &item_->emplace_back();
        attribute_->name = key;
        break;
      case Frame::kTypedValue:
        attribute_->type = key;
        break;
      case Frame::kListValue:
        list_value_key_ = key;
        break;
      default:
        break;
    }
  }

  void OnString(std::string_view value) {
    switch (Current()) {
      case Frame::kTypedValue:
        attribute_->value = value;
        break;
      case Frame::kList:
        if (attribute_->type == "L") {
          attribute_->other_elements = true;
        } else {
          attribute_->elements.push_back(value);
        }
        break;
      case Frame::kListValue:
        if (list_value_key_ == "S" && !list_value_is_string_) {
          attribute_->elements.push_back(value);
          list_value_is_string_ = true;
        } else {
          attribute_->other_elements = true;
        }
        break;
      default:
        break;
    }
  }

  bool OnScalar() {
    const Frame frame = Current();
    if ((frame == Frame::kList || frame == Frame::kListValue) && attribute_ != nullptr) {
      attribute_->other_elements = true;
    }
    return true;
  }

  // Unescaped strings are never longer than their JSON text, so the body's
  // size always suffices; the check keeps that an invariant, not a hope.
  bool Append(json::string_view part, ErrorCode& ec) {
    if (part.size() > capacity_ - used_) {
      ec = json::error::string_too_large;
      return false;
    }
    std::memcpy(text_ + used_, part.data(), part.size());
    used_ += part.size();
    return true;
  }

  std::string_view Take() {
    const std::string_view taken(text_ + taken_, used_ - taken_);
    taken_ = used_;
    return taken;
  }

  ItemAnswer& answer_;
  char* text_ = nullptr;  // the answer's
  std::size_t capacity_ = 0;
  std::size_t used_ = 0;
  std::size_t taken_ = 0;
  std::vector<Frame> frames_;
  Section section_ = Section::kOther;
  Item* item_ = nullptr;
  Attribute* attribute_ = nullptr;
  std::string_view list_value_key_;
  bool list_value_is_string_ = false;
  bool is_object_ = false;
};

}  // namespace

const Attribute* Find(const Item& item, std::string_view name) {
  for (const Attribute& attribute : item) {
    if (attribute.name == name) return &attribute;
  }
  return nullptr;
}

Status ReadItemAnswerInto(std::string_view body, ItemAnswer& answer) {
  json::basic_parser<Reader> parser(json::parse_options{}, body.size(), answer);
  ErrorCode error;
  const std::size_t used = parser.write_some(false, body.data(), body.size(), error);
  // Whitespace after the object is read as part of it; anything else is left over.
  if (error || !parser.done() || used != body.size() || !parser.handler().is_object()) {
    answer.item.reset();
    answer.items.clear();
    answer.last_evaluated_key.reset();
    return Status(Code::kInternal, "the answer is not a JSON object");
  }
  return Status::Ok();
}

StatusOr<ItemAnswer> ReadItemAnswer(std::string_view body) {
  ItemAnswer answer;
  IMGSVC_RETURN_IF_ERROR(ReadItemAnswerInto(body, answer));
  return answer;
}

}  // namespace imgsvc::storage::dynamodb
