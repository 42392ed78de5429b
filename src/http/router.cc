#include "http/router.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>

#include <boost/json.hpp>

#include "core/blocking.h"
#include "core/log.h"
#include "core/scratch_pool.h"
#include "http/assets/assets.h"
#include "http/json_writer.h"
#include "http/multipart.h"
#include "http/query.h"

namespace imgsvc::http {
namespace {

constexpr std::string_view kJson = "application/json; charset=utf-8";
constexpr std::string_view kImagesPath = "/api/v1/images";
constexpr std::int64_t kMaxExpiresIn = 604800;  // S3's 7-day presign maximum
constexpr std::int64_t kDefaultExpiresIn = 3600;
// Room for multipart framing and text fields beside the files themselves.
constexpr std::uint64_t kUploadOverheadBytes = 1 << 20;

Response JsonResponse(int status, std::string body) {
  Response r;
  r.status = status;
  r.headers.push_back({"content-type", std::string(kJson)});
  r.body = std::move(body);
  return r;
}

Status InvalidQuery(std::string_view name, std::string msg, std::string type) {
  return Status::Invalid(FieldError{{"query", std::string(name)}, std::move(msg), std::move(type)});
}

// An integer query parameter within [min, max], or `fallback` when absent.
StatusOr<std::int64_t> IntParam(const QueryParams& params, std::string_view name, std::int64_t min,
                                std::int64_t max, std::int64_t fallback) {
  const auto text = params.Get(name);
  if (!text) return fallback;
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size()) {
    return InvalidQuery(name, "Input should be a valid integer", "int_parsing");
  }
  if (value < min) {
    return InvalidQuery(name, "Input should be greater than or equal to " + std::to_string(min),
                        "greater_than_equal");
  }
  if (value > max) {
    return InvalidQuery(name, "Input should be less than or equal to " + std::to_string(max),
                        "less_than_equal");
  }
  return value;
}

Status InvalidImageId() {
  return Status::Invalid(FieldError{{"path", "image_id"}, "Input should be a valid UUID", "uuid_parsing"});
}

Response MethodNotAllowed(std::string allow) {
  Response r = JsonResponse(405, R"({"detail":"Method Not Allowed"})");
  r.headers.push_back({"allow", std::move(allow)});
  return r;
}

Response NoContent(int status) {
  Response r;
  r.status = status;
  return r;
}

// Parses a JSON object body; 422 json_invalid when it is not one.
StatusOr<boost::json::object> ParseJsonObject(const std::string& body) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(body, ec);
  if (ec) {
    return Status::Invalid(FieldError{{"body", 0}, "JSON decode error: " + ec.message(), "json_invalid"});
  }
  if (!value.is_object()) {
    return Status::Invalid(FieldError{{"body"}, "Input should be a valid dictionary", "model_attributes_type"});
  }
  return std::move(value.as_object());
}

std::optional<std::string_view> StringOf(const boost::json::value& v) {
  if (!v.is_string()) return std::nullopt;
  const auto& s = v.get_string();
  return std::string_view(s.data(), s.size());
}

FieldError StringTypeError(core::Loc loc) {
  return FieldError{std::move(loc), "Input should be a valid string", "string_type"};
}

struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t length = 0;
};

// A single "bytes=" range against a file of `size` bytes. nullopt: ignore the
// header (absent, multiple ranges or not bytes); kRangeNotSatisfiable when
// it does not overlap the file.
StatusOr<std::optional<ByteRange>> ParseRange(std::optional<std::string_view> header, std::uint64_t size) {
  if (!header || !header->starts_with("bytes=")) return std::optional<ByteRange>();
  std::string_view spec = header->substr(6);
  if (spec.find(',') != std::string_view::npos) return std::optional<ByteRange>();
  const auto dash = spec.find('-');
  if (dash == std::string_view::npos) return std::optional<ByteRange>();
  auto parse = [](std::string_view text, std::uint64_t& out) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return !text.empty() && ec == std::errc() && end == text.data() + text.size();
  };
  const std::string_view first_text = spec.substr(0, dash), last_text = spec.substr(dash + 1);
  std::uint64_t first = 0, last = 0;
  const Status unsatisfiable(Code::kRangeNotSatisfiable, "Requested range not satisfiable");
  if (first_text.empty()) {  // suffix range: the last N bytes
    if (!parse(last_text, last)) return std::optional<ByteRange>();
    if (last == 0 || size == 0) return unsatisfiable;
    const std::uint64_t n = std::min(last, size);
    return std::optional<ByteRange>(ByteRange{size - n, n});
  }
  if (!parse(first_text, first)) return std::optional<ByteRange>();
  if (last_text.empty()) {
    last = size == 0 ? 0 : size - 1;
  } else if (!parse(last_text, last) || last < first) {
    return std::optional<ByteRange>();
  }
  if (first >= size) return unsatisfiable;
  last = std::min(last, size - 1);
  return std::optional<ByteRange>(ByteRange{first, last - first + 1});
}

}  // namespace

// A 5xx names the failing dependency and operation (the message up to its
// first ':', e.g. "DynamoDB GetItem"), never the address, the attempts or
// AWS's own words: those go to the request's log line with its id.
std::string ServerErrorDetail(const Status& status) {
  const std::string_view message = status.message();
  const std::string_view what = message.substr(0, message.find(':'));
  switch (status.code()) {
    case Code::kUnavailable: return std::string(what) + ": temporarily unavailable, retry later";
    case Code::kDeadlineExceeded: return std::string(what) + ": timed out";
    default: return std::string(what) + ": internal error";
  }
}

Response ErrorFromStatus(const Status& status) {
  const int code = HttpStatusOf(status.code());
  std::string body;
  std::string logged_cause;
  if (status.code() == Code::kUnprocessable && !status.field_errors().empty()) {
    body = ValidationErrorJson(status.field_errors());
  } else if (code >= 500) {
    body = DetailJson(ServerErrorDetail(status));
    logged_cause = status.ToString();
  } else {
    body = DetailJson(status.message());
  }
  Response r = JsonResponse(code, std::move(body));
  r.logged_cause = std::move(logged_cause);
  if (status.code() == Code::kUnauthenticated) r.headers.push_back({"www-authenticate", "ApiKey"});
  if (status.retry_after()) r.headers.push_back({"retry-after", std::to_string(*status.retry_after())});
  return r;
}

struct Router::Context {
  Request& request;
  QueryParams params;
  std::string request_id;
  std::optional<std::string> user_id;  // once authenticated
};

bool IsSaneRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == ':';
  });
}

Router::Router(core::ImageService& service, core::Authenticator& auth, core::IdGenerator& ids,
               RouterOptions options)
    : service_(service), auth_(auth), ids_(ids), options_(std::move(options)) {}

Response Router::ErrorResponse(int status, std::string_view detail) {
  Response r = JsonResponse(status, DetailJson(detail));
  r.headers.push_back({"x-request-id", ids_.NewId()});
  return r;
}

Response Router::Handle(Request& request) {
  const auto started = std::chrono::steady_clock::now();
  Context ctx{request, QueryParams(request.query), {}, {}};
  const auto sent_id = request.header("x-request-id");
  ctx.request_id = sent_id && IsSaneRequestId(*sent_id) ? std::string(*sent_id) : ids_.NewId();

  Response response;
  if (auto preflight = Preflight(request)) {
    response = std::move(*preflight);
  } else {
    response = Route(ctx);
  }
  ApplyCors(request, response);
  response.headers.push_back({"x-request-id", ctx.request_id});

  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started)
          .count();
  const std::uint64_t bytes_out = response.file ? response.file->length : response.body.size();
  const log::Level level = response.status >= 500 ? log::Level::kError : log::Level::kInfo;
  if (log::Enabled(level)) {
    std::array<log::Field, 10> fields;
    std::size_t count = 0;
    const auto add = [&fields, &count](log::Field field) { fields.at(count++) = field; };
    add({"request_id", ctx.request_id});
    add({"method", request.method});
    add({"path", request.path});
    add({"status", response.status});
    add({"duration_ms", log::Millis{micros}});
    add({"bytes_in", request.content_length.value_or(0)});
    add({"bytes_out", bytes_out});
    if (ctx.user_id) add({"user_id", *ctx.user_id});
    if (!request.invocation_id.empty()) add({"aws_request_id", request.invocation_id});
    if (!response.logged_cause.empty()) add({"cause", response.logged_cause});
    log::WriteAccess(level, "request", std::span(fields.data(), count));
  }
  return response;
}

Response Router::Route(Context& ctx) {
  const std::string_view path = ctx.request.path;
  const std::string& m = ctx.request.method;
  const bool get = m == "GET" || m == "HEAD";

  if (path.starts_with(kImagesPath)) {
    std::string_view rest = path.substr(kImagesPath.size());
    if (rest.empty()) {
      if (get) return List(ctx);
      if (m == "POST") return Upload(ctx);
      if (m == "DELETE") return BulkDelete(ctx);
      return MethodNotAllowed("GET, POST, DELETE");
    }
    if (rest.front() == '/' && rest.size() > 1) {
      rest.remove_prefix(1);
      const auto slash = rest.find('/');
      const std::string_view id = rest.substr(0, slash);
      if (slash == std::string_view::npos) {
        if (get) return GetOne(ctx, id);
        if (m == "PATCH") return Patch(ctx, id);
        if (m == "DELETE") return DeleteOne(ctx, id);
        return MethodNotAllowed("GET, PATCH, DELETE");
      }
      if (rest.substr(slash) == "/content") {
        if (get) return Content(ctx, id);
        return MethodNotAllowed("GET");
      }
    }
  } else if (path == "/health") {
    if (get) return JsonResponse(200, R"({"status":"ok"})");
    return MethodNotAllowed("GET");
  } else if (path == "/ready") {
    if (get) return Ready();
    return MethodNotAllowed("GET");
  } else if (path.starts_with("/files/") && options_.downloads) {
    if (get) return Download(ctx, path.substr(7));
    return MethodNotAllowed("GET");
  } else if (path == "/docs/") {
    Response r = NoContent(301);
    r.headers.push_back({"location", "../docs"});
    return r;
  } else if (assets::FindAsset(path) != nullptr) {
    if (get) return Asset(ctx);
    return MethodNotAllowed("GET");
  }
  return JsonResponse(404, R"({"detail":"Not Found"})");
}

StatusOr<core::Caller> Router::Authenticate(Context& ctx, bool required) {
  IMGSVC_ASSIGN_OR_RETURN(std::optional<std::string> user, auth_.Authenticate(ctx.request.header("x-api-key")));
  if (!user && required) return Status(Code::kUnauthenticated, "Missing API key");
  ctx.user_id = user;
  return core::Caller{std::move(user)};
}

Response Router::Upload(Context& ctx) {
  auto caller = Authenticate(ctx, true);
  if (!caller.ok()) return ErrorFromStatus(caller.status());
  auto boundary = MultipartBoundary(ctx.request.header("content-type").value_or(""));
  if (!boundary.ok()) return ErrorFromStatus(boundary.status());
  if (ctx.request.content_length && options_.max_upload_body_bytes != 0 &&
      *ctx.request.content_length > options_.max_upload_body_bytes + kUploadOverheadBytes) {
    return ErrorFromStatus(Status(Code::kPayloadTooLarge, "Request body too large"));
  }
  MultipartForm form(*ctx.request.body, std::move(*boundary));
  auto records = service_.Upload(*caller, form);
  if (!records.ok()) return ErrorFromStatus(records.status());
  return JsonResponse(201, UploadResponseJson(*records));
}

Response Router::List(Context& ctx) {
  auto caller = Authenticate(ctx, false);
  if (!caller.ok()) return ErrorFromStatus(caller.status());

  const QueryParams& p = ctx.params;
  std::vector<FieldError> errors;
  auto collect = [&errors](const Status& st) {
    errors.insert(errors.end(), st.field_errors().begin(), st.field_errors().end());
  };
  core::ListRequest request;
  core::ListQuery& q = request.query;
  if (auto v = p.Get("user_id")) {
    collect(core::ValidateUserId(*v, {"query", "user_id"}));
    q.user_id = std::string(*v);
  }
  if (auto v = p.Get("category")) {
    collect(core::ValidateCategory(*v, {"query", "category"}));
    q.category = std::string(*v);
  }
  if (auto v = p.Get("tags")) {
    auto tags = core::ParseTags(*v, {"query", "tags"});
    if (tags.ok()) q.tags = std::move(*tags);
    else collect(tags.status());
  }
  if (auto v = p.Get("visibility")) {
    auto vis = core::ParseVisibility(*v, {"query", "visibility"});
    if (vis.ok()) q.visibility = *vis;
    else collect(vis.status());
  }
  std::optional<core::Micros> from, to;
  for (auto [name, bound, out] : {std::tuple{"created_from", core::Bound::kLower, &from},
                                  std::tuple{"created_to", core::Bound::kUpper, &to}}) {
    if (auto v = p.Get(name)) {
      *out = core::ParseDateBound(*v, bound);
      if (!*out) {
        errors.push_back({{"query", name}, "Input should be a valid datetime or date",
                          "datetime_from_date_parsing"});
      }
    }
  }
  if (from && to && *from > *to) {
    errors.push_back({{"query", "created_to"}, "created_to must not be before created_from", "value_error"});
  }
  if (from) q.created_from = core::FormatTimestamp(*from);
  if (to) q.created_to = core::FormatTimestamp(*to);
  auto limit = IntParam(p, "limit", 1, 100, 20);
  if (!limit.ok()) collect(limit.status());
  if (!errors.empty()) return ErrorFromStatus(Status::Invalid(std::move(errors)));
  request.limit = static_cast<std::size_t>(*limit);
  if (auto cursor = p.Get("last_evaluated_key"); cursor && !cursor->empty()) {
    request.cursor = std::string(*cursor);
  }
  request.url_expires_in = std::chrono::seconds(kDefaultExpiresIn);

  // Lent from a pool, so that its records' strings keep their capacity from
  // one listing to the next (about 80 allocations fewer per page of 20). Not
  // kept per thread: on a fiber the listing parks in the store while another
  // request of its thread lists. Never destroyed: a thread still ending a
  // request at exit may give back.
  static auto& pages = *new core::ScratchPool<core::ListResult>();
  auto result = pages.Take();
  if (Status listed = service_.ListInto(*caller, std::move(request), *result); !listed.ok()) {
    return ErrorFromStatus(listed);
  }
  return JsonResponse(200, ListResponseJson(*result));
}

Response Router::GetOne(Context& ctx, std::string_view id) {
  if (!core::IsUuid(id)) return ErrorFromStatus(InvalidImageId());
  auto expires = IntParam(ctx.params, "expires_in", 1, kMaxExpiresIn, kDefaultExpiresIn);
  if (!expires.ok()) return ErrorFromStatus(expires.status());
  auto caller = Authenticate(ctx, false);
  if (!caller.ok()) return ErrorFromStatus(caller.status());
  auto image = service_.Get(*caller, core::LowerAscii(id), std::chrono::seconds(*expires));
  if (!image.ok()) return ErrorFromStatus(image.status());
  return JsonResponse(200, ImageWithUrlJson(*image));
}

Response Router::Content(Context& ctx, std::string_view id) {
  if (!core::IsUuid(id)) return ErrorFromStatus(InvalidImageId());
  auto expires = IntParam(ctx.params, "expires_in", 1, kMaxExpiresIn, kDefaultExpiresIn);
  if (!expires.ok()) return ErrorFromStatus(expires.status());
  auto caller = Authenticate(ctx, false);
  if (!caller.ok()) return ErrorFromStatus(caller.status());
  auto image = service_.Get(*caller, core::LowerAscii(id), std::chrono::seconds(*expires));
  if (!image.ok()) return ErrorFromStatus(image.status());
  Response r = NoContent(302);
  r.headers.push_back({"location", image->url.url});
  // The URL expires; a cached redirect must not outlive it.
  r.headers.push_back({"cache-control", "private, no-store"});
  return r;
}

Response Router::Patch(Context& ctx, std::string_view id) {
  if (!core::IsUuid(id)) return ErrorFromStatus(InvalidImageId());
  auto caller = Authenticate(ctx, true);
  if (!caller.ok()) return ErrorFromStatus(caller.status());
  auto body = ReadAll(*ctx.request.body, options_.max_json_body_bytes);
  if (!body.ok()) return ErrorFromStatus(body.status());
  auto object = ParseJsonObject(*body);
  if (!object.ok()) return ErrorFromStatus(object.status());

  core::RecordPatch patch;
  std::vector<FieldError> errors;
  auto collect = [&errors](const Status& st) {
    errors.insert(errors.end(), st.field_errors().begin(), st.field_errors().end());
  };
  for (const auto& [key, value] : *object) {
    const std::string name(key);
    if (name == "category") {
      if (value.is_null()) {
        patch.category = std::optional<std::string>();
      } else if (auto s = StringOf(value)) {
        collect(core::ValidateCategory(*s, {"body", "category"}));
        patch.category = std::optional<std::string>(std::string(*s));
      } else {
        errors.push_back(StringTypeError({"body", "category"}));
      }
    } else if (name == "tags") {
      if (auto s = StringOf(value)) {
        auto tags = core::ParseTags(*s, {"body", "tags"});
        if (tags.ok()) patch.tags = std::move(*tags);
        else collect(tags.status());
      } else if (value.is_array()) {
        std::vector<std::string> raw;
        int index = 0;
        for (const auto& item : value.get_array()) {
          if (auto tag = StringOf(item)) raw.emplace_back(*tag);
          else errors.push_back(StringTypeError({"body", "tags", index}));
          ++index;
        }
        auto tags = core::NormaliseTagList(raw, {"body", "tags"});
        if (tags.ok()) patch.tags = std::move(*tags);
        else collect(tags.status());
      } else {
        errors.push_back({{"body", "tags"}, "Input should be a valid list or string", "list_type"});
      }
    } else if (name == "visibility") {
      if (auto s = StringOf(value)) {
        auto vis = core::ParseVisibility(*s, {"body", "visibility"});
        if (vis.ok()) patch.visibility = *vis;
        else collect(vis.status());
      } else {
        errors.push_back(StringTypeError({"body", "visibility"}));
      }
    } else {
      errors.push_back({{"body", name}, "Extra inputs are not permitted", "extra_forbidden"});
    }
  }
  if (errors.empty() && !patch.category && !patch.tags && !patch.visibility) {
    errors.push_back({{"body"}, "At least one of category, tags, visibility is required", "missing"});
  }
  if (!errors.empty()) return ErrorFromStatus(Status::Invalid(std::move(errors)));
  auto updated = service_.Update(*caller, core::LowerAscii(id), patch);
  if (!updated.ok()) return ErrorFromStatus(updated.status());
  return JsonResponse(200, RecordJson(*updated));
}

Response Router::DeleteOne(Context& ctx, std::string_view id) {
  if (!core::IsUuid(id)) return ErrorFromStatus(InvalidImageId());
  auto caller = Authenticate(ctx, true);
  if (!caller.ok()) return ErrorFromStatus(caller.status());
  if (Status st = service_.Delete(*caller, core::LowerAscii(id)); !st.ok()) return ErrorFromStatus(st);
  return NoContent(204);
}

Response Router::BulkDelete(Context& ctx) {
  auto caller = Authenticate(ctx, true);
  if (!caller.ok()) return ErrorFromStatus(caller.status());
  auto body = ReadAll(*ctx.request.body, options_.max_json_body_bytes);
  if (!body.ok()) return ErrorFromStatus(body.status());
  auto object = ParseJsonObject(*body);
  if (!object.ok()) return ErrorFromStatus(object.status());

  std::vector<FieldError> errors;
  std::optional<std::string> user_id;
  std::vector<std::string> ids;
  bool ids_seen = false;
  for (const auto& [key, value] : *object) {
    const std::string name(key);
    if (name == "user_id") {
      if (auto s = StringOf(value)) {
        user_id = std::string(*s);
        Status st = core::ValidateUserId(*user_id, {"body", "user_id"});
        errors.insert(errors.end(), st.field_errors().begin(), st.field_errors().end());
      } else {
        errors.push_back(StringTypeError({"body", "user_id"}));
      }
    } else if (name == "image_ids") {
      ids_seen = true;
      if (!value.is_array()) {
        errors.push_back({{"body", "image_ids"}, "Input should be a valid list", "list_type"});
        continue;
      }
      const auto& array = value.get_array();
      if (array.empty()) {
        errors.push_back({{"body", "image_ids"}, "List should have at least 1 item after validation, not 0",
                          "too_short"});
      } else if (array.size() > 100) {
        errors.push_back({{"body", "image_ids"},
                          "List should have at most 100 items after validation, not " +
                              std::to_string(array.size()),
                          "too_long"});
      }
      int index = 0;
      for (const auto& item : array) {
        auto s = StringOf(item);
        if (!s || !core::IsUuid(*s)) {
          errors.push_back({{"body", "image_ids", index}, "Input should be a valid UUID", "uuid_parsing"});
        } else {
          ids.push_back(core::LowerAscii(*s));
        }
        ++index;
      }
    } else {
      errors.push_back({{"body", name}, "Extra inputs are not permitted", "extra_forbidden"});
    }
  }
  if (!user_id && errors.empty()) errors.push_back({{"body", "user_id"}, "Field required", "missing"});
  if (!ids_seen) errors.push_back({{"body", "image_ids"}, "Field required", "missing"});
  if (!errors.empty()) return ErrorFromStatus(Status::Invalid(std::move(errors)));

  auto result = service_.BulkDelete(*caller, *user_id, ids);
  if (!result.ok()) return ErrorFromStatus(result.status());
  return JsonResponse(200, BulkDeleteJson(*result));
}

Response Router::Ready() {
  if (stopping_.load()) return JsonResponse(503, DetailJson("Not ready: shutting down"));
  const auto fresh = [this](std::chrono::steady_clock::time_point now) {
    return ready_known_ && now - ready_checked_at_ < options_.ready_cache;
  };
  const Status status = [&] {
    {
      // A check in progress holds the lock across its network calls: only
      // a fresh result is read here without waiting.
      std::unique_lock lock(ready_mutex_, std::try_to_lock);
      if (lock.owns_lock() && fresh(std::chrono::steady_clock::now())) return ready_status_;
    }
    return core::RunBlocking([&] {
      std::lock_guard lock(ready_mutex_);
      const auto now = std::chrono::steady_clock::now();
      if (!fresh(now)) {
        ready_status_ = service_.CheckReady();
        if (ready_status_.ok() && options_.token_ready) {
          if (Status st = options_.token_ready(); !st.ok()) ready_status_ = st.WithContext("token source");
        }
        ready_checked_at_ = now;
        ready_known_ = true;
      }
      return ready_status_;
    });
  }();
  if (status.ok()) return JsonResponse(200, R"({"status":"ready"})");
  log::Warn("not ready", {{"cause", status.ToString()}});
  // Name the component, not its address or the underlying error.
  const std::string& message = status.message();
  return JsonResponse(503, DetailJson("Not ready: " + message.substr(0, message.find(':')) + " unavailable"));
}

Response Router::Download(Context& ctx, std::string_view key) {
  const auto expires = ctx.params.Get("expires").value_or("");
  const auto signature = ctx.params.Get("signature").value_or("");
  auto file = options_.downloads(key, expires, signature);
  if (!file.ok()) return ErrorFromStatus(file.status());

  Response r;
  r.headers.push_back({"content-type", file->content_type});
  r.headers.push_back({"etag", file->etag});
  r.headers.push_back({"accept-ranges", "bytes"});
  r.headers.push_back({"cache-control", "private, max-age=60"});
  if (auto match = ctx.request.header("if-none-match"); match && *match == file->etag) {
    r.status = 304;
    return r;
  }
  auto range = ParseRange(ctx.request.header("range"), file->size);
  if (!range.ok()) {
    Response error = ErrorFromStatus(range.status());
    error.headers.push_back({"content-range", "bytes */" + std::to_string(file->size)});
    return error;
  }
  r.file = FileBody{file->path, 0, file->size};
  if (*range) {
    r.status = 206;
    r.file->offset = (*range)->first;
    r.file->length = (*range)->length;
    r.headers.push_back({"content-range", "bytes " + std::to_string((*range)->first) + "-" +
                                              std::to_string((*range)->first + (*range)->length - 1) +
                                              "/" + std::to_string(file->size)});
  }
  return r;
}

Response Router::Asset(Context& ctx) {
  const assets::Asset* asset = assets::FindAsset(ctx.request.path);
  Response r;
  r.headers.push_back({"content-type", std::string(asset->content_type)});
  r.headers.push_back({"etag", std::string(asset->etag)});
  r.headers.push_back({"vary", "accept-encoding"});
  r.headers.push_back({"cache-control", "public, max-age=3600"});
  if (auto match = ctx.request.header("if-none-match"); match && *match == asset->etag) {
    r.status = 304;
    return r;
  }
  const auto accept = ctx.request.header("accept-encoding").value_or("");
  if (accept.find("gzip") != std::string_view::npos) {
    r.headers.push_back({"content-encoding", "gzip"});
    r.body.assign(asset->gzip);
    return r;
  }
  auto identity = assets::Inflate(*asset);
  if (!identity.ok()) return ErrorFromStatus(identity.status());
  r.body = std::move(*identity);
  return r;
}

void Router::ApplyCors(const Request& request, Response& response) const {
  if (options_.cors_origins.empty()) return;
  const auto origin = request.header("origin");
  if (!origin) return;
  const bool any = options_.cors_origins.front() == "*";
  if (!any && std::find(options_.cors_origins.begin(), options_.cors_origins.end(), *origin) ==
                  options_.cors_origins.end()) {
    return;
  }
  response.set_header("access-control-allow-origin", any ? "*" : std::string(*origin));
  response.set_header("access-control-expose-headers", "x-request-id");
  if (!any) response.headers.push_back({"vary", "origin"});
}

std::optional<Response> Router::Preflight(const Request& request) const {
  if (request.method != "OPTIONS" || options_.cors_origins.empty()) return std::nullopt;
  if (!request.header("origin") || !request.header("access-control-request-method")) return std::nullopt;
  Response r = NoContent(204);
  r.headers.push_back({"access-control-allow-methods", "GET, HEAD, POST, PATCH, DELETE, OPTIONS"});
  r.headers.push_back({"access-control-allow-headers", "x-api-key, content-type, x-request-id"});
  r.headers.push_back({"access-control-max-age", "600"});
  return r;
}

}  // namespace imgsvc::http
