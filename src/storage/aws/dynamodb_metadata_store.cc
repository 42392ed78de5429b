#include "storage/aws/dynamodb_metadata_store.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <limits>
#include <thread>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include "core/log.h"
#include "core/scratch_pool.h"
#include "storage/aws/dynamodb_answer.h"

namespace imgsvc::storage {
namespace {

namespace json = boost::json;

constexpr char kUserIndex[] = "UserIdIndex";
constexpr char kConditionFailed[] = "ConditionalCheckFailedException";
// Limit counts the items a read evaluates, not those that pass the filter:
// filtered reads ask for at least kMinFilteredRead so a sparse match does not
// cost one round trip per item.
constexpr std::size_t kMaxRead = 1000;
constexpr std::size_t kMinFilteredRead = 100;
constexpr std::chrono::milliseconds kPollInterval{200};
constexpr std::chrono::seconds kActiveTimeout{120};

constexpr std::array kAllFormats = {core::ImageFormat::kJpeg, core::ImageFormat::kPng,  core::ImageFormat::kGif,
                                    core::ImageFormat::kWebp, core::ImageFormat::kAvif, core::ImageFormat::kHeic,
                                    core::ImageFormat::kTiff};

json::string_view Js(std::string_view text) { return {text.data(), text.size()}; }

Status NotFound() { return Status(Code::kNotFound, "Image not found"); }

// Request bodies --------------------------------------------------------------

// Memory for the JSON of one call's body, on the stack. Built on the heap, a
// listing's Query took some 40 allocations, a record's PutItem 35, and
// freeing them walked the tree again; a monotonic resource frees nothing.
// What does not fit goes to the heap in blocks.
class RequestMemory {
 public:
  RequestMemory() = default;
  RequestMemory(const RequestMemory&) = delete;
  RequestMemory& operator=(const RequestMemory&) = delete;
  // For values made with it; they must not outlive it.
  json::storage_ptr storage() { return json::storage_ptr(&resource_); }

 private:
  std::array<unsigned char, 4096> buffer_;
  json::monotonic_resource resource_{buffer_.data(), buffer_.size()};
};

// Attribute values, each made with `storage` (the default heap when none).
json::value StringValue(std::string_view text, const json::storage_ptr& storage = {}) {
  json::object attribute(storage);
  attribute["S"] = Js(text);
  return attribute;
}

json::value NumberValue(std::uint64_t number, const json::storage_ptr& storage = {}) {
  json::object attribute(storage);
  attribute["N"] = Js(std::to_string(number));
  return attribute;
}

json::value TagsValue(const std::vector<std::string>& tags, const json::storage_ptr& storage = {}) {
  json::array list(storage);
  list.reserve(tags.size());
  for (const std::string& tag : tags) list.push_back(StringValue(tag, storage));
  json::object attribute(storage);
  attribute["L"] = std::move(list);
  return attribute;
}

json::object KeyOf(std::string_view image_id, const json::storage_ptr& storage = {}) {
  json::object key(storage);
  key["image_id"] = StringValue(image_id, storage);
  return key;
}

json::object ItemOf(const core::ImageRecord& record, const json::storage_ptr& storage) {
  json::object item(storage);
  const auto string = [&storage](std::string_view text) { return StringValue(text, storage); };
  const auto number = [&storage](std::uint64_t value) { return NumberValue(value, storage); };
  item["image_id"] = string(record.image_id);
  item["user_id"] = string(record.user_id);
  item["filename"] = string(record.filename);
  item["format"] = string(core::FormatName(record.format));
  // What the original service stored and read: items stay readable by it.
  item["content_type"] = string(core::FormatContentType(record.format));
  item["size_bytes"] = number(record.size_bytes);
  item["width"] = number(record.width);
  item["height"] = number(record.height);
  item["sha256"] = string(record.sha256);
  if (record.category) item["category"] = string(*record.category);
  item["tags"] = TagsValue(record.tags, storage);
  item["visibility"] = string(core::VisibilityName(record.visibility));
  item["created_at"] = string(record.created_at);
  item["updated_at"] = string(record.updated_at);
  return item;
}

// Reading items ---------------------------------------------------------------

Status Malformed(std::string_view image_id, std::string_view what) {
  return Status(Code::kInternal, "DynamoDB: malformed item " + std::string(image_id) + ": " + std::string(what));
}

// The value of `attribute` when it is a string (S).
std::optional<std::string_view> StringValue(const dynamodb::Attribute* attribute) {
  if (attribute == nullptr || attribute->type != "S") return std::nullopt;
  return attribute->value;
}

// The value of attribute `name` when it is a string (S).
std::optional<std::string_view> StringAttribute(const dynamodb::Item& item, std::string_view name) {
  return StringValue(dynamodb::Find(item, name));
}

// The attributes an image's item may have, found in one pass over it. An
// item has about a dozen, and looking each field up by name walked the item
// once per field: with the string comparisons, 7% of the instructions of
// listing 20 images.
class ImageAttributes {
 public:
  enum Name : std::uint8_t {
    kImageId, kUserId, kCreatedAt, kUpdatedAt, kFilename, kFormat, kContentType,
    kSizeBytes, kWidth, kHeight, kSha256, kCategory, kTags, kVisibility, kNameCount,
  };

  explicit ImageAttributes(const dynamodb::Item& item) {
    for (const dynamodb::Attribute& attribute : item) {
      const std::optional<Name> name = NameOf(attribute.name);
      if (name && found_[*name] == nullptr) found_[*name] = &attribute;
    }
  }

  const dynamodb::Attribute* operator[](Name name) const { return found_[name]; }
  std::optional<std::string_view> String(Name name) const { return StringValue(found_[name]); }
  static std::string_view Text(Name name) { return kNames[name]; }

 private:
  static constexpr std::array<std::string_view, kNameCount> kNames{
      "image_id",   "user_id", "created_at", "updated_at", "filename", "format", "content_type",
      "size_bytes", "width",   "height",     "sha256",     "category", "tags",   "visibility"};

  // The length and the first byte tell the names apart; one comparison
  // confirms the candidate.
  static std::optional<Name> NameOf(std::string_view name) {
    if (name.empty()) return std::nullopt;
    const char first = name.front();
    Name candidate;
    switch (name.size()) {
      case 4: candidate = kTags; break;
      case 5: candidate = kWidth; break;
      case 6: candidate = first == 'f' ? kFormat : first == 'h' ? kHeight : kSha256; break;
      case 7: candidate = kUserId; break;
      case 8: candidate = first == 'i' ? kImageId : first == 'f' ? kFilename : kCategory; break;
      case 10:
        candidate = first == 'c' ? kCreatedAt : first == 'u' ? kUpdatedAt : first == 's' ? kSizeBytes : kVisibility;
        break;
      case 12: candidate = kContentType; break;
      default: return std::nullopt;
    }
    if (name != kNames[candidate]) return std::nullopt;
    return candidate;
  }

  std::array<const dynamodb::Attribute*, kNameCount> found_{};
};

// A non-negative integer at most `max`; 0 when absent (items of the original
// service may lack the dimensions).
StatusOr<std::uint64_t> CountAttribute(const ImageAttributes& item, ImageAttributes::Name name,
                                       std::string_view image_id, std::uint64_t max) {
  const dynamodb::Attribute* number = item[name];
  if (number == nullptr) return std::uint64_t{0};
  if (number->type != "N") return Malformed(image_id, std::string(ImageAttributes::Text(name)) + " is not a number");
  const std::string_view text = number->value;
  std::uint64_t count = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), count);
  if (error != std::errc() || end != text.data() + text.size() || count > max) {
    return Malformed(image_id, std::string(ImageAttributes::Text(name)) + " is out of range");
  }
  return count;
}

// A list of strings (ours) or a string set (the original service's), into
// `tags` (whose strings' storage a listing reuses).
Status TagsAttribute(const ImageAttributes& item, std::string_view image_id, std::vector<std::string>& tags) {
  const dynamodb::Attribute* attribute = item[ImageAttributes::kTags];
  if (attribute == nullptr || attribute->type == "NULL") {
    tags.clear();
    return Status::Ok();
  }
  if ((attribute->type != "L" && attribute->type != "SS") || !attribute->is_list) return Malformed(image_id, "tags");
  if (attribute->other_elements) return Malformed(image_id, "a tag is not a string");
  tags.resize(attribute->elements.size());
  for (std::size_t i = 0; i < tags.size(); ++i) tags[i] = attribute->elements[i];
  return Status::Ok();
}

// "png", "JPEG", "jpg" (an extension), ...
std::optional<core::ImageFormat> FormatNamed(std::string_view name) {
  for (const core::ImageFormat format : kAllFormats) {
    if (core::FormatName(format) == name) return format;  // as this service writes it
  }
  const std::string lower = core::LowerAscii(name);
  for (const core::ImageFormat format : kAllFormats) {
    if (core::FormatName(format) == lower) return format;
  }
  return core::FormatFromExtension("." + lower);
}

// `format`, else the original service's `content_type` ("image/png").
std::optional<core::ImageFormat> FormatAttribute(const ImageAttributes& item) {
  if (const std::optional<std::string_view> name = item.String(ImageAttributes::kFormat)) return FormatNamed(*name);
  const std::optional<std::string_view> content_type = item.String(ImageAttributes::kContentType);
  if (!content_type) return std::nullopt;
  std::string_view media = *content_type;
  media = media.substr(0, media.find(';'));
  constexpr std::string_view kImage = "image/";
  if (media.size() <= kImage.size() || core::LowerAscii(media.substr(0, kImage.size())) != kImage) {
    return std::nullopt;
  }
  return FormatNamed(media.substr(kImage.size()));
}

// Overwrites every field of `record`: a listing decodes into the records
// of the page it is given.
Status DecodeInto(const dynamodb::Item& stored, core::ImageRecord& record) {
  using Name = ImageAttributes::Name;
  const ImageAttributes item(stored);
  const std::optional<std::string_view> image_id = item.String(Name::kImageId);
  const std::optional<std::string_view> user_id = item.String(Name::kUserId);
  const std::optional<std::string_view> created_at = item.String(Name::kCreatedAt);
  if (!image_id || !user_id || !created_at) {
    return Malformed(image_id.value_or("?"), "image_id, user_id or created_at is missing");
  }

  record.image_id = *image_id;
  record.user_id = *user_id;
  core::NormaliseStoredTimestampInto(*created_at, record.created_at);
  if (const std::optional<std::string_view> updated_at = item.String(Name::kUpdatedAt)) {
    core::NormaliseStoredTimestampInto(*updated_at, record.updated_at);
  } else {
    record.updated_at = record.created_at;
  }
  record.filename = item.String(Name::kFilename).value_or("");
  const std::optional<core::ImageFormat> format = FormatAttribute(item);
  if (!format) return Malformed(record.image_id, "unknown format");
  record.format = *format;
  IMGSVC_ASSIGN_OR_RETURN(record.size_bytes, CountAttribute(item, Name::kSizeBytes, record.image_id,
                                                            std::numeric_limits<std::uint64_t>::max()));
  constexpr std::uint64_t kMaxDimension = std::numeric_limits<std::uint32_t>::max();
  IMGSVC_ASSIGN_OR_RETURN(const std::uint64_t width, CountAttribute(item, Name::kWidth, record.image_id, kMaxDimension));
  IMGSVC_ASSIGN_OR_RETURN(const std::uint64_t height,
                          CountAttribute(item, Name::kHeight, record.image_id, kMaxDimension));
  record.width = static_cast<std::uint32_t>(width);
  record.height = static_cast<std::uint32_t>(height);
  record.sha256 = item.String(Name::kSha256).value_or("");
  // Absent, or NULL as boto3 writes None.
  if (const std::optional<std::string_view> category = item.String(Name::kCategory)) {
    record.category = *category;
  } else {
    record.category.reset();
  }
  IMGSVC_RETURN_IF_ERROR(TagsAttribute(item, record.image_id, record.tags));
  record.visibility =
      item.String(Name::kVisibility) == "public" ? core::Visibility::kPublic : core::Visibility::kPrivate;
  return Status::Ok();
}

StatusOr<core::ImageRecord> Decode(const dynamodb::Item& item) {
  core::ImageRecord record;
  IMGSVC_RETURN_IF_ERROR(DecodeInto(item, record));
  return record;
}

// Where a listing resumes after `item`: its key as stored (created_at not
// normalised), for ExclusiveStartKey. Only for an item DecodeInto accepted.
core::Position StoredPosition(const dynamodb::Item& item) {
  return core::Position{std::string(StringAttribute(item, "user_id").value_or("")),
                        std::string(StringAttribute(item, "created_at").value_or("")),
                        std::string(StringAttribute(item, "image_id").value_or(""))};
}

// The item an UpdateItem or DeleteItem asked for with ReturnValues.
StatusOr<core::ImageRecord> DecodeReturned(const dynamodb::ItemAnswer& answer) {
  if (!answer.item) return Status(Code::kInternal, "DynamoDB: an answer lacks its item");
  return Decode(*answer.item);
}

// Calls -----------------------------------------------------------------------

// The answers of reads, kept for their storage (an answer read into again
// reuses it, dynamodb_answer.h) and lent most recently returned first: a
// Query page's answer is some 30 KB that the next listing then finds in cache.
using AnswerLease = core::ScratchPool<dynamodb::ItemAnswer>::Lease;

core::ScratchPool<dynamodb::ItemAnswer>& Answers() {
  // Never destroyed: a thread still ending a request at exit may give back.
  static auto& answers = *new core::ScratchPool<dynamodb::ItemAnswer>();
  return answers;
}

// One table's calls through the signed client.
class Table {
 public:
  Table(aws::AwsClient& client, const aws::ServiceTarget& target, const std::string& name)
      : client_(client), target_(target), name_(name) {}

  const std::string& name() const { return name_; }

  // A request body naming the table.
  json::object Body(const json::storage_ptr& storage = {}) const {
    json::object body(storage);
    body["TableName"] = Js(name_);
    return body;
  }

  // The answer, error answers included; a Status only when none came.
  StatusOr<aws::AwsResponse> Send(std::string_view operation, const json::object& body) {
    StatusOr<aws::AwsResponse> response =
        client_.CallJson(target_, "DynamoDB_20120810." + std::string(operation), "1.0", json::serialize(body));
    if (!response.ok()) return response.status().WithContext("DynamoDB " + std::string(operation));
    return response;
  }

  // Send, with an error answer turned into its Status, for the operations
  // whose answers carry items: read into an answer taken from the pool once
  // the answer is in.
  StatusOr<AnswerLease> CallForItems(std::string_view operation, const json::object& body) {
    IMGSVC_ASSIGN_OR_RETURN(const aws::AwsResponse response, Send(operation, body));
    if (!response.ok()) return aws::ToStatus("DynamoDB " + std::string(operation), response);
    AnswerLease answer = Answers().Take();
    IMGSVC_RETURN_IF_ERROR(ReadItemsInto(operation, response, *answer));
    return answer;
  }

  static Status ReadItemsInto(std::string_view operation, const aws::AwsResponse& response,
                              dynamodb::ItemAnswer& answer) {
    const Status read = dynamodb::ReadItemAnswerInto(response.body, answer);
    return read.ok() ? read : read.WithContext("DynamoDB " + std::string(operation));
  }

  static StatusOr<dynamodb::ItemAnswer> ReadItems(std::string_view operation, const aws::AwsResponse& response) {
    StatusOr<dynamodb::ItemAnswer> answer = dynamodb::ReadItemAnswer(response.body);
    if (!answer.ok()) return answer.status().WithContext("DynamoDB " + std::string(operation));
    return answer;
  }

  static StatusOr<json::object> Parse(std::string_view operation, const aws::AwsResponse& response) {
    boost::system::error_code error;
    json::value answer = json::parse(Js(response.body), error);
    if (error || !answer.is_object()) {
      return Status(Code::kInternal, "DynamoDB " + std::string(operation) + ": the answer is not a JSON object");
    }
    return std::move(answer.get_object());
  }

 private:
  aws::AwsClient& client_;
  const aws::ServiceTarget& target_;
  const std::string& name_;
};

// The placeholders of one request's expressions. Every attribute name goes
// through one, so none can collide with DynamoDB's reserved words.
class Placeholders {
 public:
  explicit Placeholders(const json::storage_ptr& storage = {}) : names_(storage), values_(storage) {}

  std::string Name(std::string_view attribute) {
    for (const json::key_value_pair& entry : names_) {
      if (entry.value().as_string() == Js(attribute)) return std::string(entry.key());
    }
    std::string placeholder = "#n" + std::to_string(names_.size());
    names_[Js(placeholder)] = Js(attribute);
    return placeholder;
  }

  std::string Value(json::value attribute_value) {
    std::string placeholder = ":v" + std::to_string(values_.size());
    values_[Js(placeholder)] = std::move(attribute_value);
    return placeholder;
  }

  void AddTo(json::object& body) const {
    if (!names_.empty()) body["ExpressionAttributeNames"] = names_;
    if (!values_.empty()) body["ExpressionAttributeValues"] = values_;
  }

 private:
  json::object names_;
  json::object values_;
};

std::string Join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string joined;
  for (const std::string& part : parts) {
    if (!joined.empty()) joined += separator;
    joined += part;
  }
  return joined;
}

// Reads the stored item (strongly consistent): the answer has no item when
// the image is absent.
StatusOr<AnswerLease> GetItem(Table& table, std::string_view image_id) {
  RequestMemory memory;
  json::object body = table.Body(memory.storage());
  body["Key"] = KeyOf(image_id, memory.storage());
  body["ConsistentRead"] = true;
  return table.CallForItems("GetItem", body);
}

// Writing ---------------------------------------------------------------------

struct PutOutcome {
  Status status;
  // The failed put may have been applied (no answer, a 5xx, an unreadable
  // check): compensation must try to remove it.
  bool maybe_written = false;
};

PutOutcome PutOne(Table& table, const core::ImageRecord& record) {
  RequestMemory memory;
  json::object body = table.Body(memory.storage());
  body["Item"] = ItemOf(record, memory.storage());
  Placeholders placeholders(memory.storage());
  body["ConditionExpression"] = Js("attribute_not_exists(" + placeholders.Name("image_id") + ")");
  placeholders.AddTo(body);
  StatusOr<aws::AwsResponse> response = table.Send("PutItem", body);
  if (!response.ok()) return {response.status(), true};
  if (response->ok()) return {};
  if (response->error.code != kConditionFailed) {
    return {aws::ToStatus("DynamoDB PutItem", *response), response->status >= 500};
  }

  // An earlier attempt whose answer was lost may have written this very
  // record: then the put succeeded. Image ids are random, so an equal record
  // under the id is ours.
  StatusOr<AnswerLease> stored = GetItem(table, record.image_id);
  if (!stored.ok()) return {stored.status(), true};
  if ((*stored)->item) {
    StatusOr<core::ImageRecord> decoded = Decode(*(*stored)->item);
    if (decoded.ok() && *decoded == record) {
      log::Info("DynamoDB PutItem: the id already holds this record (an earlier answer was lost)",
                {{"image_id", record.image_id}, {"attempts", response->attempts}});
      return {};
    }
  }
  return {Status(Code::kConflict, "image id already exists: " + record.image_id), false};
}

// Removes records a failed PutNew wrote. Conditional on the record's own
// fields: a put whose outcome is unknown may have met someone else's item.
void Compensate(Table& table, std::span<const core::ImageRecord* const> records) {
  for (const core::ImageRecord* record : records) {
    json::object body = table.Body();
    body["Key"] = KeyOf(record->image_id);
    Placeholders placeholders;
    const std::vector<std::string> condition = {
        placeholders.Name("user_id") + " = " + placeholders.Value(StringValue(record->user_id)),
        placeholders.Name("sha256") + " = " + placeholders.Value(StringValue(record->sha256)),
        placeholders.Name("created_at") + " = " + placeholders.Value(StringValue(record->created_at)),
    };
    body["ConditionExpression"] = Js(Join(condition, " AND "));
    placeholders.AddTo(body);
    const StatusOr<aws::AwsResponse> response = table.Send("DeleteItem", body);
    if (response.ok() && (response->ok() || response->error.code == kConditionFailed)) continue;
    const Status failure = response.ok() ? aws::ToStatus("DynamoDB DeleteItem", *response) : response.status();
    log::Error("DynamoDB: a record of a failed upload could not be removed",
               {{"image_id", record->image_id}, {"error", failure.message()}});
  }
}

core::DeleteOutcome DeleteOne(Table& table, std::string_view owner, const std::string& image_id) {
  core::DeleteOutcome outcome;
  outcome.image_id = image_id;
  const auto failed = [&outcome](const Status& status) {
    outcome.result = core::DeleteResult::kFailed;
    outcome.detail = status.message();
    return outcome;
  };

  json::object body = table.Body();
  body["Key"] = KeyOf(image_id);
  Placeholders placeholders;
  body["ConditionExpression"] = Js(placeholders.Name("user_id") + " = " + placeholders.Value(StringValue(owner)));
  body["ReturnValues"] = "ALL_OLD";
  placeholders.AddTo(body);
  const StatusOr<aws::AwsResponse> response = table.Send("DeleteItem", body);
  if (!response.ok()) return failed(response.status());
  if (!response->ok()) {
    if (response->error.code != kConditionFailed) return failed(aws::ToStatus("DynamoDB DeleteItem", *response));
    outcome.result = core::DeleteResult::kNotFound;  // absent or someone else's
    return outcome;
  }
  StatusOr<dynamodb::ItemAnswer> answer = Table::ReadItems("DeleteItem", *response);
  if (!answer.ok()) return failed(answer.status());
  StatusOr<core::ImageRecord> deleted = DecodeReturned(*answer);
  if (!deleted.ok()) return failed(deleted.status().WithContext("deleted, but the old record is unreadable"));
  outcome.result = core::DeleteResult::kDeleted;
  outcome.record = std::move(*deleted);
  return outcome;
}

// Listing -----------------------------------------------------------------------

struct ReadPlan {
  std::string operation;  // "Query" or "Scan"
  json::object body;      // all but Limit and ExclusiveStartKey
  bool filtered = false;
  bool by_user = false;
};

// The read for `query`; nullopt when nothing can match (an empty date range,
// someone else's private images).
// Its JSON is made with `storage`.
std::optional<ReadPlan> PlanRead(const Table& table, const core::ListQuery& query, const json::storage_ptr& storage) {
  if (query.created_from && query.created_to && *query.created_from > *query.created_to) return std::nullopt;
  Placeholders placeholders(storage);
  const auto name = [&placeholders](std::string_view attribute) { return placeholders.Name(attribute); };
  const auto value = [&](std::string_view text) { return placeholders.Value(StringValue(text, storage)); };

  std::string range;
  if (query.created_from && query.created_to) {
    range = name("created_at") + " BETWEEN " + value(*query.created_from) + " AND " + value(*query.created_to);
  } else if (query.created_from) {
    range = name("created_at") + " >= " + value(*query.created_from);
  } else if (query.created_to) {
    range = name("created_at") + " <= " + value(*query.created_to);
  }
  const auto is_public = [&] { return name("visibility") + " = " + value("public"); };
  // Items of the original service have no visibility: private.
  const auto is_private = [&] {
    const std::string visibility = name("visibility");
    return "(attribute_not_exists(" + visibility + ") OR " + visibility + " <> " + value("public") + ")";
  };

  // Constructed with the body: assigning to a json::object keeps its own storage.
  ReadPlan plan{.operation = {}, .body = table.Body(storage)};
  plan.by_user = query.user_id.has_value();
  std::vector<std::string> filters;
  if (plan.by_user) {
    // user_id is the index key here, so it cannot be filtered on; the viewer
    // rule needs no filter on it: the owner sees all of theirs, others public.
    const bool owner_views = query.viewer == query.user_id;
    if (query.visibility == core::Visibility::kPrivate && !owner_views) return std::nullopt;
    if (query.visibility == core::Visibility::kPublic || !owner_views) {
      filters.push_back(is_public());
    } else if (query.visibility == core::Visibility::kPrivate) {
      filters.push_back(is_private());
    }
    std::string key = name("user_id") + " = " + value(*query.user_id);
    if (!range.empty()) key += " AND " + range;
    plan.operation = "Query";
    plan.body["IndexName"] = kUserIndex;
    plan.body["KeyConditionExpression"] = Js(key);
    plan.body["ScanIndexForward"] = false;  // newest first
  } else {
    if (!range.empty()) filters.push_back(range);
    if (query.visibility == core::Visibility::kPublic) {
      filters.push_back(is_public());
    } else if (query.visibility == core::Visibility::kPrivate) {
      if (!query.viewer) return std::nullopt;
      filters.push_back(is_private());
      filters.push_back(name("user_id") + " = " + value(*query.viewer));
    } else if (query.viewer) {
      filters.push_back("(" + is_public() + " OR " + name("user_id") + " = " + value(*query.viewer) + ")");
    } else {
      filters.push_back(is_public());
    }
    plan.operation = "Scan";
  }
  if (query.category) filters.push_back(name("category") + " = " + value(*query.category));
  for (const std::string& tag : query.tags) filters.push_back("contains(" + name("tags") + ", " + value(tag) + ")");

  plan.filtered = !filters.empty();
  if (plan.filtered) plan.body["FilterExpression"] = Js(Join(filters, " AND "));
  placeholders.AddTo(plan.body);
  return plan;
}

// A Query on the index resumes from the table key and the index key; a Scan
// from the table key alone.
json::object StartKey(const core::Position& position, bool by_user, const json::storage_ptr& storage) {
  json::object key = KeyOf(position.image_id, storage);
  if (by_user) {
    key["user_id"] = StringValue(position.user_id, storage);
    key["created_at"] = StringValue(position.created_at, storage);
  }
  return key;
}

StatusOr<core::Position> PositionOfKey(const dynamodb::Item& key) {
  const std::optional<std::string_view> image_id = StringAttribute(key, "image_id");
  if (!image_id) return Status(Code::kInternal, "DynamoDB: LastEvaluatedKey lacks image_id");
  return core::Position{std::string(StringAttribute(key, "user_id").value_or("")),
                        std::string(StringAttribute(key, "created_at").value_or("")), std::string(*image_id)};
}

json::value KeyElement(std::string_view attribute, std::string_view key_type) {
  json::object element;
  element["AttributeName"] = Js(attribute);
  element["KeyType"] = Js(key_type);
  return element;
}

json::object CreateTableBody(const Table& table) {
  json::object body = table.Body();
  body["BillingMode"] = "PAY_PER_REQUEST";
  json::array definitions;
  for (const std::string_view attribute : {"image_id", "user_id", "created_at"}) {
    json::object definition;
    definition["AttributeName"] = Js(attribute);
    definition["AttributeType"] = "S";
    definitions.push_back(std::move(definition));
  }
  body["AttributeDefinitions"] = std::move(definitions);
  json::array table_key;
  table_key.push_back(KeyElement("image_id", "HASH"));
  body["KeySchema"] = std::move(table_key);

  json::object index;
  index["IndexName"] = kUserIndex;
  json::array index_key;
  index_key.push_back(KeyElement("user_id", "HASH"));
  index_key.push_back(KeyElement("created_at", "RANGE"));
  index["KeySchema"] = std::move(index_key);
  json::object projection;
  projection["ProjectionType"] = "ALL";
  index["Projection"] = std::move(projection);
  json::array indexes;
  indexes.push_back(std::move(index));
  body["GlobalSecondaryIndexes"] = std::move(indexes);
  return body;
}

// The table's description; kNotFound when it does not exist.
StatusOr<json::object> Describe(Table& table) {
  IMGSVC_ASSIGN_OR_RETURN(const aws::AwsResponse response, table.Send("DescribeTable", table.Body()));
  if (!response.ok()) {
    if (response.error.code == "ResourceNotFoundException") {
      return Status(Code::kNotFound, "DynamoDB table " + table.name() + " does not exist");
    }
    return aws::ToStatus("DynamoDB DescribeTable", response);
  }
  IMGSVC_ASSIGN_OR_RETURN(json::object answer, Table::Parse("DescribeTable", response));
  json::value* description = answer.if_contains("Table");
  if (description == nullptr || !description->is_object()) {
    return Status(Code::kInternal, "DynamoDB DescribeTable: the answer has no Table");
  }
  return std::move(description->get_object());
}

std::string_view StatusField(const json::object& object, std::string_view field) {
  const json::value* status = object.if_contains(Js(field));
  if (status == nullptr || !status->is_string()) return {};
  return {status->get_string().data(), status->get_string().size()};
}

// Whether table and index serve; an error when the table has no UserIdIndex.
StatusOr<bool> TableAndIndexActive(const Table& table, const json::object& description) {
  const json::value* indexes = description.if_contains("GlobalSecondaryIndexes");
  if (indexes != nullptr && indexes->is_array()) {
    for (const json::value& index : indexes->get_array()) {
      if (!index.is_object() || StatusField(index.get_object(), "IndexName") != kUserIndex) continue;
      return StatusField(description, "TableStatus") == "ACTIVE" &&
             StatusField(index.get_object(), "IndexStatus") == "ACTIVE";
    }
  }
  return Status(Code::kInternal, "DynamoDB table " + table.name() + " has no index " + kUserIndex +
                                     " (see the storage layout in API.md)");
}

}  // namespace

DynamoDbMetadataStore::DynamoDbMetadataStore(std::shared_ptr<aws::AwsClient> client, aws::ServiceTarget target,
                                             std::string table)
    : client_(std::move(client)), target_(std::move(target)), table_(std::move(table)) {}

Status DynamoDbMetadataStore::CreateTableIfMissing() {
  Table table(*client_, target_, table_);
  StatusOr<json::object> description = Describe(table);
  if (!description.ok()) {
    if (description.status().code() != Code::kNotFound) return description.status();
    IMGSVC_ASSIGN_OR_RETURN(const aws::AwsResponse created, table.Send("CreateTable", CreateTableBody(table)));
    if (created.ok()) {
      log::Info("DynamoDB table created", {{"table", table_}});
    } else if (created.error.code != "ResourceInUseException") {  // someone else just created it
      return aws::ToStatus("DynamoDB CreateTable", created);
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + kActiveTimeout;
  for (;;) {
    if (description.ok()) {
      IMGSVC_ASSIGN_OR_RETURN(const bool active, TableAndIndexActive(table, *description));
      if (active) return Status::Ok();
    } else if (description.status().code() != Code::kNotFound) {  // a new table may not be visible at once
      return description.status();
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status(Code::kUnavailable, "DynamoDB table " + table_ + " did not become ACTIVE within " +
                                            std::to_string(kActiveTimeout.count()) + " s");
    }
    std::this_thread::sleep_for(kPollInterval);
    description = Describe(table);
  }
}

Status DynamoDbMetadataStore::PutNew(std::span<const core::ImageRecord> records) {
  Table table(*client_, target_, table_);
  std::vector<const core::ImageRecord*> written;
  written.reserve(records.size());
  for (const core::ImageRecord& record : records) {
    PutOutcome outcome = PutOne(table, record);
    if (outcome.status.ok()) {
      written.push_back(&record);
      continue;
    }
    if (outcome.maybe_written) written.push_back(&record);
    Compensate(table, written);
    return outcome.status;
  }
  return Status::Ok();
}

StatusOr<core::ImageRecord> DynamoDbMetadataStore::Get(std::string_view image_id) {
  Table table(*client_, target_, table_);
  IMGSVC_ASSIGN_OR_RETURN(const AnswerLease answer, GetItem(table, image_id));
  if (!answer->item) return NotFound();
  return Decode(*answer->item);
}

StatusOr<core::ImageRecord> DynamoDbMetadataStore::Update(std::string_view image_id, std::string_view owner,
                                                          const core::RecordPatch& patch,
                                                          std::string_view updated_at) {
  Table table(*client_, target_, table_);
  Placeholders placeholders;
  std::vector<std::string> assignments = {placeholders.Name("updated_at") + " = " +
                                          placeholders.Value(StringValue(updated_at))};
  std::string removal;
  if (patch.category && *patch.category) {
    assignments.push_back(placeholders.Name("category") + " = " + placeholders.Value(StringValue(**patch.category)));
  } else if (patch.category) {
    removal = " REMOVE " + placeholders.Name("category");  // null is stored as absent
  }
  if (patch.tags) {
    assignments.push_back(placeholders.Name("tags") + " = " + placeholders.Value(TagsValue(*patch.tags)));
  }
  if (patch.visibility) {
    assignments.push_back(placeholders.Name("visibility") + " = " +
                          placeholders.Value(StringValue(core::VisibilityName(*patch.visibility))));
  }

  json::object body = table.Body();
  body["Key"] = KeyOf(image_id);
  body["UpdateExpression"] = Js("SET " + Join(assignments, ", ") + removal);
  // attribute_exists: an update must never create an item.
  body["ConditionExpression"] = Js("attribute_exists(" + placeholders.Name("image_id") + ") AND " +
                                   placeholders.Name("user_id") + " = " + placeholders.Value(StringValue(owner)));
  body["ReturnValues"] = "ALL_NEW";
  placeholders.AddTo(body);
  IMGSVC_ASSIGN_OR_RETURN(const aws::AwsResponse response, table.Send("UpdateItem", body));
  if (!response.ok()) {
    if (response.error.code == kConditionFailed) return NotFound();
    return aws::ToStatus("DynamoDB UpdateItem", response);
  }
  IMGSVC_ASSIGN_OR_RETURN(const dynamodb::ItemAnswer answer, Table::ReadItems("UpdateItem", response));
  return DecodeReturned(answer);
}

std::vector<core::DeleteOutcome> DynamoDbMetadataStore::DeleteOwned(std::string_view owner,
                                                                    std::span<const std::string> image_ids) {
  Table table(*client_, target_, table_);
  std::vector<core::DeleteOutcome> outcomes;
  outcomes.reserve(image_ids.size());
  for (const std::string& image_id : image_ids) outcomes.push_back(DeleteOne(table, owner, image_id));
  return outcomes;
}

Status DynamoDbMetadataStore::ListInto(const core::ListQuery& query, const std::optional<core::Position>& start,
                                       std::size_t limit, std::size_t max_reads, core::ListPage& page) {
  if (limit == 0) return Status(Code::kBadRequest, "metadata store: limit must be at least 1");
  if (start && query.user_id && start->user_id != *query.user_id) {
    return Status(Code::kBadRequest, "metadata store: the position belongs to another listing");
  }
  Table table(*client_, target_, table_);
  // The page's records are decoded into in place; `filled` of them are this
  // listing's, and the page is cut to them when it is done.
  std::size_t filled = 0;
  const auto done = [&](std::optional<core::Position> next) {
    page.items.resize(filled);
    page.next = std::move(next);
    return Status::Ok();
  };
  RequestMemory memory;
  std::optional<ReadPlan> plan = PlanRead(table, query, memory.storage());
  if (!plan) return done(std::nullopt);

  std::optional<core::Position> position = start;
  std::optional<core::Position> last_returned;  // of the reads before this one
  for (std::size_t reads = 1;; ++reads) {
    // One item more than the page still needs tells whether the page ends
    // the listing (no trailing empty page).
    std::size_t read_limit = std::min(limit - filled, kMaxRead - 1) + 1;
    if (plan->filtered) read_limit = std::max(read_limit, kMinFilteredRead);
    // Each read sets these two anew; a position, once there, stays.
    json::object& body = plan->body;
    body["Limit"] = read_limit;
    if (position) body["ExclusiveStartKey"] = StartKey(*position, plan->by_user, memory.storage());
    IMGSVC_ASSIGN_OR_RETURN(const AnswerLease answer, table.CallForItems(plan->operation, body));

    const dynamodb::Item* last_of_this_read = nullptr;
    for (const dynamodb::Item& item : answer->items) {
      if (filled == limit) {  // more follows; the rest of this read is dropped
        return done(last_of_this_read ? StoredPosition(*last_of_this_read) : std::move(last_returned));
      }
      if (filled == page.items.size()) page.items.emplace_back();
      IMGSVC_RETURN_IF_ERROR(DecodeInto(item, page.items[filled]));
      ++filled;
      last_of_this_read = &item;
    }
    if (last_of_this_read) last_returned = StoredPosition(*last_of_this_read);
    const std::optional<dynamodb::Item>& last_evaluated = answer->last_evaluated_key;
    if (!last_evaluated) return done(std::nullopt);  // exhausted
    if (filled == limit) return done(std::move(last_returned));
    IMGSVC_ASSIGN_OR_RETURN(position, PositionOfKey(*last_evaluated));
    if (reads >= max_reads) return done(std::move(position));  // the budget is spent: resume after what was read
  }
}

Status DynamoDbMetadataStore::CheckReady() {
  Table table(*client_, target_, table_);
  StatusOr<json::object> description = Describe(table);
  if (!description.ok()) {
    return Status(Code::kUnavailable, "DynamoDB is not ready: " + description.status().message());
  }
  const std::string_view status = StatusField(*description, "TableStatus");
  if (status == "ACTIVE" || status == "UPDATING") return Status::Ok();
  return Status(Code::kUnavailable, "DynamoDB table " + table_ + " is " + std::string(status));
}

}  // namespace imgsvc::storage
