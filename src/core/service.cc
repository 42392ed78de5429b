#include "core/service.h"

#include <algorithm>
#include <memory>
#include <unordered_set>

#include "core/log.h"
#include "core/stream_hasher.h"
#include "crypto/crypto.h"
#include "imaging/probe.h"

namespace imgsvc::core {
namespace {

// Any accepted format is recognised within this many bytes (see ImageProbe).
constexpr std::size_t kMaxSniffBytes = 4096;
// Text fields are short (the longest valid one, tags, is ~1.3 KB).
constexpr std::size_t kMaxFieldBytes = 16 * 1024;

Status NotFound() { return Status(Code::kNotFound, "Image not found"); }

Status RequireCaller(const Caller& caller) {
  if (!caller.user_id) return Status(Code::kUnauthenticated, "Missing API key");
  return Status::Ok();
}

std::string Quoted(std::string_view name) { return "'" + std::string(name) + "'"; }

StatusOr<std::string> ReadField(FormSource& form, std::string_view name) {
  std::string value;
  for (;;) {
    IMGSVC_ASSIGN_OR_RETURN(const std::span<const std::byte> data, form.ReadPart());
    if (data.empty()) return value;
    if (value.size() + data.size() > kMaxFieldBytes) {
      return Status::Invalid(FieldError{{"body", std::string(name)}, "Value is too long", "string_too_long"});
    }
    value.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
}

}  // namespace

struct ImageService::StoredFile {
  ImageRecord record;
  std::unique_ptr<BlobUpload> upload;
};

ImageService::ImageService(BlobStore& blobs, MetadataStore& records, Clock& clock, IdGenerator& ids,
                           const CursorCodec& cursors, ServiceLimits limits)
    : blobs_(blobs), records_(records), clock_(clock), ids_(ids), cursors_(cursors),
      limits_(std::move(limits)) {}

StatusOr<ImageService::StoredFile> ImageService::StoreFile(const std::string& user_id,
                                                           const FormPart& part, FormSource& form,
                                                           std::size_t index) {
  StoredFile file;
  ImageRecord& record = file.record;
  record.image_id = ids_.NewId();
  record.user_id = user_id;
  record.filename = SanitiseFilename(part.filename.value_or(""));
  const std::string shown_name = Quoted(record.filename);

  imaging::ImageProbe probe;
  StreamHasher hash;
  std::vector<std::byte> sniffed;  // bytes seen before the format (and key) is known
  std::uint64_t total = 0;

  auto refuse_unsupported = [&]() {
    return Status(Code::kUnsupportedMediaType,
                  "File " + shown_name + " is not a supported image: " + std::string(probe.error()));
  };
  auto check_pixels = [&]() -> Status {
    const auto dims = probe.dimensions();
    if (dims && std::uint64_t{dims->width} * dims->height > limits_.max_pixels) {
      return Status(Code::kPayloadTooLarge,
                    "File " + shown_name + " has " + std::to_string(dims->width) + "x" +
                        std::to_string(dims->height) + " pixels, over the limit of " +
                        std::to_string(limits_.max_pixels));
    }
    return Status::Ok();
  };
  auto append = [&](std::span<const std::byte> data) -> Status {
    if (file.upload) return file.upload->Append(data);
    sniffed.insert(sniffed.end(), data.begin(), data.end());
    const auto format = probe.format();
    if (!format) {
      if (sniffed.size() >= kMaxSniffBytes) return refuse_unsupported();
      return Status::Ok();
    }
    record.format = *format;
    IMGSVC_ASSIGN_OR_RETURN(file.upload, blobs_.StartUpload(record.StorageKey(), FormatContentType(*format)));
    Status st = file.upload->Append(sniffed);
    sniffed = {};
    return st;
  };

  for (;;) {
    IMGSVC_ASSIGN_OR_RETURN(const std::span<const std::byte> chunk, form.ReadPart());
    if (chunk.empty()) break;
    total += chunk.size();
    if (total > limits_.max_file_bytes) {
      std::string detail = "File " + shown_name + " exceeds the size limit of " +
                           std::to_string(limits_.max_file_bytes >> 20) + " MiB";
      if (!limits_.file_too_large_hint.empty()) detail += " (" + limits_.file_too_large_hint + ")";
      return Status(Code::kPayloadTooLarge, std::move(detail));
    }
    if (probe.state() == imaging::ImageProbe::State::kNeedMore) {
      if (probe.Feed(chunk) == imaging::ImageProbe::State::kInvalid) return refuse_unsupported();
      IMGSVC_RETURN_IF_ERROR(check_pixels());
    }
    hash.Update(chunk);
    IMGSVC_RETURN_IF_ERROR(append(chunk));
  }
  if (probe.Finish() != imaging::ImageProbe::State::kDone || !file.upload) {
    return refuse_unsupported();
  }
  const auto dims = *probe.dimensions();
  record.width = dims.width;
  record.height = dims.height;
  record.size_bytes = total;
  record.sha256 = crypto::HexEncode(hash.Finish());
  log::Debug("file stored", {{"image_id", record.image_id}, {"part", static_cast<std::uint64_t>(index)},
                             {"bytes", total}, {"hashed_beside", hash.offloaded()}});
  return file;
}

void ImageService::DiscardBlobs(std::span<StoredFile const* const> files) {
  std::vector<std::string> keys;
  for (const StoredFile* f : files) keys.push_back(f->record.StorageKey());
  const auto results = blobs_.Delete(keys);
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (!results[i].ok()) {
      log::Error("orphan blob left after a failed upload",
                 {{"key", keys[i]}, {"cause", results[i].ToString()}});
    }
  }
}

StatusOr<std::vector<ImageRecord>> ImageService::Upload(const Caller& caller, FormSource& form) {
  IMGSVC_RETURN_IF_ERROR(RequireCaller(caller));
  const std::string& owner = *caller.user_id;

  std::vector<StoredFile> files;
  std::optional<std::string> user_id, category, tags, visibility;
  auto check_owner = [&]() -> Status {
    if (user_id && ValidateUserId(*user_id, {"body", "user_id"}).ok() && *user_id != owner) {
      return Status(Code::kForbidden, "The API key's user may not upload images for another user");
    }
    return Status::Ok();
  };

  for (;;) {
    IMGSVC_ASSIGN_OR_RETURN(std::optional<FormPart> part, form.NextPart());
    if (!part) break;
    if (part->name == "files") {
      if (files.size() == limits_.max_files) {
        return Status(Code::kPayloadTooLarge,
                      "Too many files: at most " + std::to_string(limits_.max_files) + " per request");
      }
      IMGSVC_ASSIGN_OR_RETURN(StoredFile file, StoreFile(owner, *part, form, files.size()));
      files.push_back(std::move(file));
      continue;
    }
    std::optional<std::string>* field = nullptr;
    if (part->name == "user_id") field = &user_id;
    else if (part->name == "category") field = &category;
    else if (part->name == "tags") field = &tags;
    else if (part->name == "visibility") field = &visibility;
    if (field == nullptr) continue;  // unknown form fields are ignored
    IMGSVC_ASSIGN_OR_RETURN(*field, ReadField(form, part->name));
    IMGSVC_RETURN_IF_ERROR(check_owner());
  }

  // Every field is known now: validate them all before anything is committed.
  std::vector<FieldError> errors;
  auto collect = [&errors](const Status& st) {
    errors.insert(errors.end(), st.field_errors().begin(), st.field_errors().end());
  };
  if (files.empty()) errors.push_back({{"body", "files"}, "Field required", "missing"});
  if (!user_id) {
    errors.push_back({{"body", "user_id"}, "Field required", "missing"});
  } else {
    collect(ValidateUserId(*user_id, {"body", "user_id"}));
  }
  if (category) collect(ValidateCategory(*category, {"body", "category"}));
  std::vector<std::string> tag_list;
  if (tags) {
    auto parsed = ParseTags(*tags, {"body", "tags"});
    if (parsed.ok()) tag_list = std::move(*parsed);
    else collect(parsed.status());
  }
  Visibility vis = Visibility::kPrivate;
  if (visibility) {
    auto parsed = ParseVisibility(*visibility, {"body", "visibility"});
    if (parsed.ok()) vis = *parsed;
    else collect(parsed.status());
  }
  if (!errors.empty()) return Status::Invalid(std::move(errors));
  IMGSVC_RETURN_IF_ERROR(check_owner());

  // Commit the bytes, then the records; undo the bytes if the records fail.
  std::vector<ImageRecord> records;
  for (auto& file : files) {
    ImageRecord& r = file.record;
    r.category = category;
    r.tags = tag_list;
    r.visibility = vis;
    r.created_at = FormatTimestamp(clock_.Now());
    r.updated_at = r.created_at;
    records.push_back(r);
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (Status st = files[i].upload->Commit(files[i].record.sha256); !st.ok()) {
      // The uncommitted ones clean themselves up when destroyed.
      std::vector<StoredFile const*> committed;
      for (std::size_t j = 0; j < i; ++j) committed.push_back(&files[j]);
      DiscardBlobs(committed);
      return st;
    }
  }
  if (Status st = records_.PutNew(records); !st.ok()) {
    return RecordsFailed(std::move(st), files, std::move(records));
  }
  return records;
}

StatusOr<std::vector<ImageRecord>> ImageService::RecordsFailed(Status failure, std::span<const StoredFile> files,
                                                              std::vector<ImageRecord> records) {
  // A failed write may still have stored records (an answer lost on the way
  // back, a compensation that failed in turn), so before any bytes are
  // deleted a strongly consistent read decides what is true. Bytes are kept
  // when their record exists or its fate is unknown: a record without its
  // bytes breaks a download, bytes without a record only cost space (a
  // repair sweep finds them).
  std::size_t ours = 0;
  std::vector<StoredFile const*> unrecorded;
  for (const StoredFile& file : files) {
    StatusOr<ImageRecord> stored = records_.Get(file.record.image_id);
    if (!stored.ok() && stored.status().code() == Code::kNotFound) {
      unrecorded.push_back(&file);
    } else if (stored.ok() && *stored == file.record) {
      ++ours;
    } else {
      log::Warn("bytes kept after a failed record write: the record's state is not known",
                {{"image_id", file.record.image_id},
                 {"cause", stored.ok() ? std::string("another record holds the id") : stored.status().ToString()}});
    }
  }
  if (ours == files.size()) {
    log::Info("record write reported a failure but every record is stored as written",
              {{"cause", failure.ToString()}});
    return records;
  }
  DiscardBlobs(unrecorded);
  if (failure.code() == Code::kConflict) return Status(Code::kInternal, "Image id collision");
  return failure;
}

StatusOr<ImageWithUrl> ImageService::Get(const Caller& caller, std::string_view image_id,
                                         std::chrono::seconds url_expires_in) {
  auto record = records_.Get(image_id);
  if (!record.ok()) {
    return record.status().code() == Code::kNotFound ? NotFound() : record.status();
  }
  if (record->visibility != Visibility::kPublic && caller.user_id != record->user_id) {
    return NotFound();
  }
  IMGSVC_ASSIGN_OR_RETURN(PresignedUrl url, blobs_.PresignGet(record->StorageKey(), url_expires_in));
  return ImageWithUrl{std::move(*record), std::move(url)};
}

Status ImageService::ListInto(const Caller& caller, ListRequest request, ListResult& result) {
  ListQuery& query = request.query;
  query.viewer = caller.user_id;
  result.cursor.reset();
  const bool others_private =
      query.visibility == Visibility::kPrivate &&
      (!caller.user_id || (query.user_id && *query.user_id != *caller.user_id));
  if (others_private) {  // nobody else's private images are visible
    result.page.items.clear();
    result.page.next.reset();
    result.urls.clear();
    return Status::Ok();
  }

  const std::string binding = CursorCodec::BindingFor(query);
  std::optional<Position> start;
  if (request.cursor) {
    IMGSVC_ASSIGN_OR_RETURN(start, cursors_.Open(*request.cursor, binding));
  }
  IMGSVC_RETURN_IF_ERROR(records_.ListInto(query, start, request.limit, limits_.list_max_reads, result.page));
  result.keys.resize(result.page.items.size());
  for (std::size_t i = 0; i < result.page.items.size(); ++i) AssignStorageKey(result.keys[i], result.page.items[i]);
  IMGSVC_RETURN_IF_ERROR(blobs_.PresignGets(result.keys, request.url_expires_in, result.urls));
  if (result.page.next) {
    IMGSVC_ASSIGN_OR_RETURN(result.cursor, cursors_.Seal(*result.page.next, binding));
  }
  return Status::Ok();
}

StatusOr<ImageRecord> ImageService::Update(const Caller& caller, std::string_view image_id,
                                           const RecordPatch& patch) {
  IMGSVC_RETURN_IF_ERROR(RequireCaller(caller));
  auto updated = records_.Update(image_id, *caller.user_id, patch, FormatTimestamp(clock_.Now()));
  if (!updated.ok() && updated.status().code() == Code::kNotFound) return NotFound();
  return updated;
}

Status ImageService::Delete(const Caller& caller, std::string_view image_id) {
  IMGSVC_RETURN_IF_ERROR(RequireCaller(caller));
  const std::string id(image_id);
  auto outcomes = records_.DeleteOwned(*caller.user_id, std::span<const std::string>(&id, 1));
  if (outcomes.size() != 1) return Status(Code::kInternal, "Store returned no delete outcome");
  auto& outcome = outcomes.front();
  switch (outcome.result) {
    case DeleteResult::kNotFound:
      return NotFound();
    case DeleteResult::kFailed:
      return Status(Code::kUnavailable, "Could not delete the image: " + outcome.detail);
    case DeleteResult::kDeleted:
      break;
  }
  const std::string key = outcome.record->StorageKey();
  if (Status st = blobs_.Delete(std::span<const std::string>(&key, 1)).front(); !st.ok()) {
    // The record is gone, so the image is deleted; the bytes await `imgsvc fsck`.
    log::Error("blob left after delete", {{"key", key}, {"cause", st.ToString()}});
  }
  return Status::Ok();
}

StatusOr<BulkDeleteResult> ImageService::BulkDelete(const Caller& caller, std::string_view user_id,
                                                    const std::vector<std::string>& image_ids) {
  IMGSVC_RETURN_IF_ERROR(RequireCaller(caller));
  if (*caller.user_id != user_id) {
    return Status(Code::kForbidden, "The API key's user may not delete another user's images");
  }
  std::vector<std::string> unique_ids;
  std::unordered_set<std::string> seen;
  for (const auto& id : image_ids) {
    if (seen.insert(id).second) unique_ids.push_back(id);
  }
  BulkDeleteResult result;
  std::vector<std::string> keys;
  for (auto& outcome : records_.DeleteOwned(user_id, unique_ids)) {
    switch (outcome.result) {
      case DeleteResult::kDeleted:
        keys.push_back(outcome.record->StorageKey());
        result.deleted.push_back(std::move(outcome.image_id));
        break;
      case DeleteResult::kNotFound:
        result.not_found.push_back(std::move(outcome.image_id));
        break;
      case DeleteResult::kFailed:
        result.failed.push_back({std::move(outcome.image_id), std::move(outcome.detail)});
        break;
    }
  }
  if (!keys.empty()) {
    const auto statuses = blobs_.Delete(keys);
    for (std::size_t i = 0; i < statuses.size(); ++i) {
      if (!statuses[i].ok()) {
        log::Error("blob left after delete", {{"key", keys[i]}, {"cause", statuses[i].ToString()}});
      }
    }
  }
  return result;
}

Status ImageService::CheckReady() {
  if (Status st = blobs_.CheckReady(); !st.ok()) return st.WithContext("blob store");
  if (Status st = records_.CheckReady(); !st.ok()) return st.WithContext("metadata store");
  return Status::Ok();
}

}  // namespace imgsvc::core
