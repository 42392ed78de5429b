// DynamoDB's answers that carry items (GetItem; UpdateItem and DeleteItem
// with ReturnValues; Query and Scan), read in one pass without building a JSON
// document. A Query page is hundreds of small objects, and building them
// (Boost.JSON checks every key of an object against the ones before it) was
// a fifth of the CPU of listing 20 images.
//
// Answers in the shape DynamoDB writes them are read by a reader made for
// that shape; anything else (a \u escape, a map, an error) is read again by
// Boost.JSON's parser, which has the last word.
//
// Only what the metadata store reads is kept: each item's attributes with
// their type, the value of an S, N or B, the strings of an SS or NS, and the
// S elements of an L. A map (M), a nested list, or an L element of another
// type is kept as its type alone (an L records that it held one). Everything
// else in the answer (Count, ConsumedCapacity, ...) is skipped. The answer
// owns every string it points to. An answer read into again reuses its
// storage: a Query page read afresh took some 150 allocations.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace imgsvc::storage::dynamodb {

struct Attribute {
  std::string_view name;
  std::string_view type;                   // "S", "N", "L", "SS", "NULL", "BOOL", "M", ...
  std::string_view value;                  // of an S, N or B
  std::vector<std::string_view> elements;  // of an SS or NS, and an L's S elements
  bool is_list = false;                    // the typed value was an array (L, SS, NS, BS)
  bool other_elements = false;             // an L holds an element that is not an S
};

using Item = std::vector<Attribute>;

// The attribute called `name`, or nullptr.
const Attribute* Find(const Item& item, std::string_view name);

struct ItemAnswer {
  std::optional<Item> item;  // "Item" (GetItem) or "Attributes" (UpdateItem, DeleteItem)
  std::vector<Item> items;   // "Items" (Query, Scan)
  std::optional<Item> last_evaluated_key;
  // The unescaped strings the views above point into; never reallocated, so
  // moving the answer keeps them valid.
  std::unique_ptr<char[]> text;
  std::size_t text_capacity = 0;
  // Items of an earlier answer, emptied, kept for their capacity.
  std::vector<Item> spare_items;
};

// kInternal when `body` is not one JSON object (or nests deeper than 32).
StatusOr<ItemAnswer> ReadItemAnswer(std::string_view body);
// The same into `answer`, which it overwrites: views into what it held
// before are invalid afterwards, and on failure it holds no items.
Status ReadItemAnswerInto(std::string_view body, ItemAnswer& answer);
// The same with Boost.JSON's parser alone: the reference the shaped reader
// is tested and fuzzed against.
Status ReadItemAnswerWithBoostInto(std::string_view body, ItemAnswer& answer);

}  // namespace imgsvc::storage::dynamodb
