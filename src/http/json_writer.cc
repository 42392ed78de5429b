#include "http/json_writer.h"

#include "core/log.h"

namespace imgsvc::http {
namespace {

using log::AppendDecimal;
using log::AppendJsonString;

void AppendKey(std::string& out, std::string_view key) {
  AppendJsonString(out, key);
  out.push_back(':');
}

void AppendRecordFields(std::string& out, const core::ImageRecord& r) {
  AppendKey(out, "image_id");
  AppendJsonString(out, r.image_id);
  out += ",\"user_id\":";
  AppendJsonString(out, r.user_id);
  out += ",\"filename\":";
  AppendJsonString(out, r.filename);
  out += ",\"content_type\":";
  AppendJsonString(out, core::FormatContentType(r.format));
  out += ",\"format\":";
  AppendJsonString(out, core::FormatName(r.format));
  out += ",\"size_bytes\":";
  AppendDecimal(out, r.size_bytes);
  out += ",\"width\":";
  AppendDecimal(out, r.width);
  out += ",\"height\":";
  AppendDecimal(out, r.height);
  out += ",\"sha256\":";
  AppendJsonString(out, r.sha256);
  out += ",\"category\":";
  if (r.category) AppendJsonString(out, *r.category);
  else out += "null";
  out += ",\"tags\":[";
  for (std::size_t i = 0; i < r.tags.size(); ++i) {
    if (i) out.push_back(',');
    AppendJsonString(out, r.tags[i]);
  }
  out += "],\"visibility\":";
  AppendJsonString(out, core::VisibilityName(r.visibility));
  out += ",\"created_at\":";
  AppendJsonString(out, r.created_at);
  out += ",\"updated_at\":";
  AppendJsonString(out, r.updated_at);
}

// URL expiries as text. The URLs of a listed page are signed within a second
// or two, so most share their expiry, which is then formatted once.
class ExpiryText {
 public:
  std::string_view Of(core::Micros expires_at) {
    if (text_.empty() || expires_at != formatted_) {
      formatted_ = expires_at;
      text_ = core::FormatTimestamp(expires_at);
    }
    return text_;
  }

 private:
  core::Micros formatted_ = 0;
  std::string text_;
};

void AppendImageWithUrl(std::string& out, const core::ImageRecord& record, const core::PresignedUrl& url,
                        ExpiryText& expiry) {
  out.push_back('{');
  AppendRecordFields(out, record);
  out += ",\"presigned_url\":";
  AppendJsonString(out, url.url);
  out += ",\"presigned_url_expires_at\":";
  AppendJsonString(out, expiry.Of(url.expires_at));
  out.push_back('}');
}

void AppendIdList(std::string& out, const std::vector<std::string>& ids) {
  out.push_back('[');
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) out.push_back(',');
    AppendJsonString(out, ids[i]);
  }
  out.push_back(']');
}

}  // namespace

std::string RecordJson(const core::ImageRecord& record) {
  std::string out;
  out.reserve(512);
  out.push_back('{');
  AppendRecordFields(out, record);
  out.push_back('}');
  return out;
}

// A record with an embedded /files/ URL is about 700 bytes; with an S3 URL
// signed with a session token (Lambda, ECS), about 2 KB.
constexpr std::size_t kImageJsonBytes = 2048;

std::string ImageWithUrlJson(const core::ImageWithUrl& image) {
  std::string out;
  out.reserve(kImageJsonBytes);
  ExpiryText expiry;
  AppendImageWithUrl(out, image.record, image.url, expiry);
  return out;
}

std::string UploadResponseJson(const std::vector<core::ImageRecord>& records) {
  std::string out = "{\"images\":[";
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (i) out.push_back(',');
    out.push_back('{');
    AppendRecordFields(out, records[i]);
    out.push_back('}');
  }
  out += "]}";
  return out;
}

std::string ListResponseJson(const core::ListResult& result) {
  const std::vector<core::ImageRecord>& records = result.page.items;
  std::string out;
  out.reserve(64 + records.size() * kImageJsonBytes);
  out += "{\"items\":[";
  ExpiryText expiry;
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (i) out.push_back(',');
    AppendImageWithUrl(out, records[i], result.urls[i], expiry);
  }
  out += "],\"count\":";
  AppendDecimal(out, records.size());
  out += ",\"last_evaluated_key\":";
  if (result.cursor) AppendJsonString(out, *result.cursor);
  else out += "null";
  out.push_back('}');
  return out;
}

std::string BulkDeleteJson(const core::BulkDeleteResult& result) {
  std::string out = "{\"deleted\":";
  AppendIdList(out, result.deleted);
  out += ",\"not_found\":";
  AppendIdList(out, result.not_found);
  out += ",\"failed\":[";
  for (std::size_t i = 0; i < result.failed.size(); ++i) {
    if (i) out.push_back(',');
    out += "{\"image_id\":";
    AppendJsonString(out, result.failed[i].image_id);
    out += ",\"detail\":";
    AppendJsonString(out, result.failed[i].detail);
    out.push_back('}');
  }
  out += "]}";
  return out;
}

std::string DetailJson(std::string_view message) {
  std::string out = "{\"detail\":";
  AppendJsonString(out, message);
  out.push_back('}');
  return out;
}

std::string ValidationErrorJson(const std::vector<FieldError>& errors) {
  std::string out = "{\"detail\":[";
  for (std::size_t i = 0; i < errors.size(); ++i) {
    if (i) out.push_back(',');
    out += "{\"loc\":[";
    for (std::size_t j = 0; j < errors[i].loc.size(); ++j) {
      if (j) out.push_back(',');
      if (const auto* s = std::get_if<std::string>(&errors[i].loc[j])) AppendJsonString(out, *s);
      else out += std::to_string(std::get<int>(errors[i].loc[j]));
    }
    out += "],\"msg\":";
    AppendJsonString(out, errors[i].msg);
    out += ",\"type\":";
    AppendJsonString(out, errors[i].type);
    out.push_back('}');
  }
  out += "]}";
  return out;
}

}  // namespace imgsvc::http
