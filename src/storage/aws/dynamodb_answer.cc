#include "storage/aws/dynamodb_answer.h"

#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <boost/json/basic_parser_impl.hpp>

#include "core/image.h"

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

// Readies `answer` to be read into: what it held goes to its spare items,
// and its text can hold `body_size` bytes (unescaped strings are never
// longer than their JSON text).
void Recycle(std::size_t body_size, ItemAnswer& answer) {
  const auto keep = [&](std::optional<Item>& item) {
    if (item) answer.spare_items.push_back(std::move(*item));
    item.reset();
  };
  keep(answer.item);
  keep(answer.last_evaluated_key);
  for (Item& item : answer.items) answer.spare_items.push_back(std::move(item));
  answer.items.clear();
  if (answer.text_capacity < body_size || !answer.text) {
    answer.text_capacity = body_size == 0 ? 1 : body_size;
    answer.text = std::make_unique_for_overwrite<char[]>(answer.text_capacity);
  }
}

// An emptied item of an earlier answer, for its capacity.
Item TakeSpare(ItemAnswer& answer) {
  if (answer.spare_items.empty()) return Item();
  Item item = std::move(answer.spare_items.back());
  answer.spare_items.pop_back();
  item.clear();
  return item;
}

class Reader {
 public:
  static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);

  Reader(std::size_t body_size, ItemAnswer& answer) : answer_(answer) {
    Recycle(body_size, answer_);
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
            item_ = &slot.emplace(TakeSpare(answer_));
            next = Frame::kItem;
          } else if (!object && section_ == Section::kItems) {
            next = Frame::kItemList;
          }
          break;
        case Frame::kItemList:
          if (object) {
            item_ = &answer_.items.emplace_back(TakeSpare(answer_));
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


// DynamoDB writes its answers in one regular shape: items of attributes,
// each a one-key object of a type and its value. ShapedReader reads that
// shape straight into the answer, expecting at each step what comes next,
// where Reader takes the events of a general JSON parser (BM_ReadQueryAnswer:
// a page of 20 items in 8 µs with Reader). It reads only part of JSON and
// of DynamoDB's types, and gives up on the rest: a \u escape, ill-formed
// UTF-8, a number with an exponent or more than 18 digits, a map (M), a
// list holding anything but strings (an L: anything but {"S": ...}), a typed
// value that is not one key, a section twice, nesting deeper than 16, and
// anything that is not JSON. Reader then reads the body again and has the
// last word. What it accepts is JSON that Reader accepts, read into the same
// answer; the fuzz target checks the two against each other.
class ShapedReader {
 public:
  explicit ShapedReader(ItemAnswer& answer) : answer_(answer) {}

  // False: gave up; what the answer holds is to be read again.
  bool Read(std::string_view body) {
    Recycle(body.size(), answer_);
    text_ = answer_.text.get();
    capacity_ = answer_.text_capacity;
    end_ = body.data() + body.size();
    const char* at = Expect(body.data(), '{');
    if (at == nullptr) return false;
    at = Answer(at);
    return at != nullptr && Space(at) == end_;
  }

 private:
  static constexpr int kMaxDepth = 16;

  const char* Space(const char* at) const {
    while (at != end_ && (*at == ' ' || *at == '\n' || *at == '\r' || *at == '\t')) ++at;
    return at;
  }

  // Past `c`, after whitespace; nullptr when something else comes.
  const char* Expect(const char* at, char c) const {
    at = Space(at);
    return at != end_ && *at == c ? at + 1 : nullptr;
  }

  // Past the ',' before the next member, or the closing `close`, which sets
  // `closed`; nullptr when neither comes.
  const char* Next(const char* at, char close, bool& closed) const {
    at = Space(at);
    if (at == end_) return nullptr;
    closed = *at == close;
    return closed || *at == ',' ? at + 1 : nullptr;
  }

  // After the answer's '{'.
  const char* Answer(const char* at) {
    at = Space(at);
    if (at != end_ && *at == '}') return at + 1;
    bool seen_item = false;
    bool seen_items = false;
    bool seen_key = false;
    for (bool closed = false; !closed;) {
      std::string_view section;
      at = Expect(at, '"');
      if (at != nullptr) at = String(at, section, /*keep=*/false);
      if (at != nullptr) at = Expect(at, ':');
      if (at == nullptr) return nullptr;
      at = Space(at);
      if (section == "Items") {
        if (std::exchange(seen_items, true)) return nullptr;
        at = Items(at);
      } else if (section == "Item" || section == "Attributes") {
        if (std::exchange(seen_item, true)) return nullptr;
        at = ItemInto(at, answer_.item.emplace(TakeSpare(answer_)));
      } else if (section == "LastEvaluatedKey") {
        if (std::exchange(seen_key, true)) return nullptr;
        at = ItemInto(at, answer_.last_evaluated_key.emplace(TakeSpare(answer_)));
      } else {
        at = Skip(at, 1);
      }
      if (at == nullptr || (at = Next(at, '}', closed)) == nullptr) return nullptr;
    }
    return at;
  }

  // At the '[' of "Items".
  const char* Items(const char* at) {
    if (at == end_ || *at != '[') return nullptr;
    at = Space(at + 1);
    if (at != end_ && *at == ']') return at + 1;
    for (bool closed = false; !closed;) {
      at = ItemInto(Space(at), answer_.items.emplace_back(TakeSpare(answer_)));
      if (at == nullptr || (at = Next(at, ']', closed)) == nullptr) return nullptr;
    }
    return at;
  }

  // At an item's '{': its attributes, each {"TYPE": value}.
  const char* ItemInto(const char* at, Item& item) {
    if (at == end_ || *at != '{') return nullptr;
    at = Space(at + 1);
    if (at != end_ && *at == '}') return at + 1;
    for (bool closed = false; !closed;) {
      Attribute& attribute = item.emplace_back();
      at = Expect(at, '"');
      if (at != nullptr) at = String(at, attribute.name, /*keep=*/true);
      if (at != nullptr) at = Expect(at, ':');
      if (at != nullptr) at = Expect(at, '{');
      if (at != nullptr) at = Expect(at, '"');
      if (at != nullptr) at = String(at, attribute.type, /*keep=*/true);
      if (at != nullptr) at = Expect(at, ':');
      if (at != nullptr) at = TypedValue(Space(at), attribute);
      if (at != nullptr) at = Expect(at, '}');
      if (at == nullptr || (at = Next(at, '}', closed)) == nullptr) return nullptr;
    }
    return at;
  }

  const char* TypedValue(const char* at, Attribute& attribute) {
    if (at == end_) return nullptr;
    switch (*at) {
      case '"': return String(at + 1, attribute.value, /*keep=*/true);
      case '[': attribute.is_list = true; return List(at + 1, attribute);
      case 't': return Word(at, "true");
      case 'f': return Word(at, "false");
      case 'n': return Word(at, "null");
      default: return nullptr;
    }
  }

  // After the '[' of an L (elements {"S": "..."}) or an SS, NS or BS
  // (elements "...").
  const char* List(const char* at, Attribute& attribute) {
    at = Space(at);
    if (at != end_ && *at == ']') return at + 1;
    const bool typed_elements = attribute.type == "L";
    for (bool closed = false; !closed;) {
      std::string_view element;
      if (typed_elements) {
        std::string_view type;
        at = Expect(at, '{');
        if (at != nullptr) at = Expect(at, '"');
        if (at != nullptr) at = String(at, type, /*keep=*/false);
        if (at != nullptr && type != "S") return nullptr;
        if (at != nullptr) at = Expect(at, ':');
        if (at != nullptr) at = Expect(at, '"');
        if (at != nullptr) at = String(at, element, /*keep=*/true);
        if (at != nullptr) at = Expect(at, '}');
      } else {
        at = Expect(at, '"');
        if (at != nullptr) at = String(at, element, /*keep=*/true);
      }
      if (at == nullptr) return nullptr;
      attribute.elements.push_back(element);
      if ((at = Next(at, ']', closed)) == nullptr) return nullptr;
    }
    return at;
  }

  // A value the store does not read (Count, ConsumedCapacity, ...), checked
  // as JSON.
  const char* Skip(const char* at, int depth) {
    if (at == end_) return nullptr;
    std::string_view ignored;
    switch (*at) {
      case '"': return String(at + 1, ignored, /*keep=*/false);
      case 't': return Word(at, "true");
      case 'f': return Word(at, "false");
      case 'n': return Word(at, "null");
      case '{':
      case '[': {
        if (depth >= kMaxDepth) return nullptr;
        const bool object = *at == '{';
        const char close = object ? '}' : ']';
        at = Space(at + 1);
        if (at != end_ && *at == close) return at + 1;
        for (bool closed = false; !closed;) {
          if (object) {
            at = Expect(at, '"');
            if (at != nullptr) at = String(at, ignored, /*keep=*/false);
            if (at != nullptr) at = Expect(at, ':');
            if (at == nullptr) return nullptr;
          }
          at = Skip(Space(at), depth + 1);
          if (at == nullptr || (at = Next(at, close, closed)) == nullptr) return nullptr;
        }
        return at;
      }
      default: return Number(at);
    }
  }

  const char* Word(const char* at, std::string_view word) const {
    if (static_cast<std::size_t>(end_ - at) < word.size() || std::memcmp(at, word.data(), word.size()) != 0) {
      return nullptr;
    }
    return at + word.size();
  }

  // -?(0|[1-9][0-9]*)(.[0-9]+)?, 18 digits at most. What follows must be
  // what may follow a value, which the caller checks.
  const char* Number(const char* at) const {
    const auto digit = [this](const char* p) { return p != end_ && *p >= '0' && *p <= '9'; };
    if (at != end_ && *at == '-') ++at;
    if (!digit(at)) return nullptr;
    const char* const first = at;
    if (*at == '0') {
      ++at;
    } else {
      while (digit(at)) ++at;
    }
    std::ptrdiff_t digits = at - first;
    if (at != end_ && *at == '.') {
      const char* const fraction = ++at;
      while (digit(at)) ++at;
      if (at == fraction) return nullptr;
      digits += at - fraction;
    }
    if (digits > 18 || digit(at) || (at != end_ && (*at == 'e' || *at == 'E'))) return nullptr;
    return at;
  }

  // Where the run from `at` of bytes a string holds as they are ends: at
  // '"', '\\', a control character or a byte of 0x80 and above. Sixteen at
  // a time with SSE2, which every x86-64 has. The log's writer has its own
  // (log.cc): it stops at DEL too, and works on indexes; shared, one cost the
  // other 10 % (BM_ReadQueryAnswer 6.1 -> 6.9 µs, or BM_ListPageJson 2.7 ->
  // 3.0 µs, depending on the form).
  const char* PlainEnd(const char* at) const {
#if defined(__SSE2__)
    const __m128i space = _mm_set1_epi8(0x20);
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    while (end_ - at >= 16) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
      // Signed compares: bytes of 0x80 and above are negative, so below 0x20.
      const __m128i special = _mm_or_si128(_mm_cmplt_epi8(bytes, space),
                                           _mm_or_si128(_mm_cmpeq_epi8(bytes, quote), _mm_cmpeq_epi8(bytes, backslash)));
      if (const int mask = _mm_movemask_epi8(special); mask != 0) return at + __builtin_ctz(mask);
      at += 16;
    }
#endif
    while (at != end_) {
      const auto byte = static_cast<unsigned char>(*at);
      if (byte < 0x20 || byte >= 0x80 || byte == '"' || byte == '\\') break;
      ++at;
    }
    return at;
  }

  // After a string's opening '"': past its closing one, with `out` its
  // text, unescaped into the answer's when `keep` (else only valid until
  // the next string).
  const char* String(const char* at, std::string_view& out, bool keep) {
    const char* run = at;
    const std::size_t start = used_;
    for (;;) {
      at = PlainEnd(at);
      if (at == end_ || static_cast<unsigned char>(*at) < 0x20) return nullptr;
      if (static_cast<unsigned char>(*at) >= 0x80) {  // text in any language: kept as it is, if well formed
        const std::size_t length = core::Utf8SequenceLength(std::string_view(at, static_cast<std::size_t>(end_ - at)));
        if (length == 0) return nullptr;
        at += length;
        continue;
      }
      if (*at == '"' && used_ == start && !keep) {  // nothing copied: the body's own bytes
        out = std::string_view(run, static_cast<std::size_t>(at - run));
        return at + 1;
      }
      if (!Append(run, at)) return nullptr;
      if (*at == '"') break;
      if (end_ - at < 2) return nullptr;
      char unescaped;
      switch (at[1]) {
        case '"': unescaped = '"'; break;
        case '\\': unescaped = '\\'; break;
        case '/': unescaped = '/'; break;
        case 'b': unescaped = '\b'; break;
        case 'f': unescaped = '\f'; break;
        case 'n': unescaped = '\n'; break;
        case 'r': unescaped = '\r'; break;
        case 't': unescaped = '\t'; break;
        default: return nullptr;  // \u, or not an escape
      }
      if (!Append(&unescaped, &unescaped + 1)) return nullptr;
      at += 2;
      run = at;
    }
    out = std::string_view(text_ + start, used_ - start);
    if (!keep) used_ = start;
    return at + 1;
  }

  bool Append(const char* from, const char* to) {
    const auto size = static_cast<std::size_t>(to - from);
    if (size > capacity_ - used_) return false;
    std::memcpy(text_ + used_, from, size);
    used_ += size;
    return true;
  }

  ItemAnswer& answer_;
  const char* end_ = nullptr;
  char* text_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t used_ = 0;
};

}  // namespace

const Attribute* Find(const Item& item, std::string_view name) {
  for (const Attribute& attribute : item) {
    if (attribute.name == name) return &attribute;
  }
  return nullptr;
}

Status ReadItemAnswerInto(std::string_view body, ItemAnswer& answer) {
  if (ShapedReader(answer).Read(body)) return Status::Ok();
  return ReadItemAnswerWithBoostInto(body, answer);
}

Status ReadItemAnswerWithBoostInto(std::string_view body, ItemAnswer& answer) {
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
