#include "lambda/events.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/image.h"
#include "core/log.h"
#include "crypto/crypto.h"
#include "http/router.h"

namespace imgsvc::lambda {
namespace {

namespace json = boost::json;

// Lambda refuses response payloads above 6 MB; reading a larger file would
// only spend memory on a response that can never be delivered.
constexpr std::uint64_t kMaxFileBodyBytes = 6 * 1024 * 1024;

Status Malformed(std::string_view what) {
  return Status(Code::kBadRequest, "Lambda event: " + std::string(what));
}

// API Gateway sends null for empty maps and bodies, so null reads as absent.
const json::value* Field(const json::object& object, std::string_view key) {
  const json::value* value = object.if_contains(key);
  return value == nullptr || value->is_null() ? nullptr : value;
}

// nullptr when absent.
StatusOr<const json::object*> ObjectField(const json::object& object, std::string_view key,
                                          std::string_view name) {
  const json::value* value = Field(object, key);
  if (value == nullptr) return static_cast<const json::object*>(nullptr);
  if (!value->is_object()) return Malformed(std::string(name) + " is not an object");
  return &value->get_object();
}

// Empty when absent.
StatusOr<std::string_view> StringField(const json::object& object, std::string_view key,
                                       std::string_view name) {
  const json::value* value = Field(object, key);
  if (value == nullptr) return std::string_view();
  if (!value->is_string()) return Malformed(std::string(name) + " is not a string");
  return std::string_view(value->get_string());
}

StatusOr<bool> BoolField(const json::object& object, std::string_view key, std::string_view name) {
  const json::value* value = Field(object, key);
  if (value == nullptr) return false;
  if (!value->is_bool()) return Malformed(std::string(name) + " is not a boolean");
  return value->get_bool();
}

char AsciiUpper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

std::string Upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = AsciiUpper(c);
  return out;
}

// RFC 3986 unreserved characters stay; everything else is escaped, so a name
// or value holding '&', '=', '+' or '%' reads back as it was decoded.
void AppendPercentEncoded(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0x0f]);
    }
  }
}

void AppendQueryPair(std::string& query, std::string_view name, std::string_view value) {
  if (!query.empty()) query.push_back('&');
  AppendPercentEncoded(query, name);
  query.push_back('=');
  AppendPercentEncoded(query, value);
}

// Walks a map of single values (`single_key`) or, preferred when present, of
// value lists (`multi_key`): the shape REST API events use for both headers
// and query parameters.
template <typename Visit>
Status ForEachRestValue(const json::object& event, std::string_view single_key,
                        std::string_view multi_key, Visit visit) {
  IMGSVC_ASSIGN_OR_RETURN(const json::object* multi, ObjectField(event, multi_key, multi_key));
  if (multi != nullptr) {
    for (const json::key_value_pair& entry : *multi) {
      if (entry.value().is_null()) continue;
      const json::array* values = entry.value().if_array();
      if (values == nullptr) return Malformed(std::string(multi_key) + " holds a value that is not an array");
      for (const json::value& value : *values) {
        if (!value.is_string()) return Malformed(std::string(multi_key) + " holds a value that is not a string");
        visit(entry.key(), std::string_view(value.get_string()));
      }
    }
    return Status::Ok();
  }
  IMGSVC_ASSIGN_OR_RETURN(const json::object* single, ObjectField(event, single_key, single_key));
  if (single == nullptr) return Status::Ok();
  for (const json::key_value_pair& entry : *single) {
    if (entry.value().is_null()) continue;
    if (!entry.value().is_string()) return Malformed(std::string(single_key) + " holds a value that is not a string");
    visit(entry.key(), std::string_view(entry.value().get_string()));
  }
  return Status::Ok();
}

StatusOr<std::string> DecodeBody(const json::object& event) {
  IMGSVC_ASSIGN_OR_RETURN(std::string_view body, StringField(event, "body", "body"));
  IMGSVC_ASSIGN_OR_RETURN(bool base64, BoolField(event, "isBase64Encoded", "isBase64Encoded"));
  if (!base64) return std::string(body);
  std::optional<std::string> decoded = crypto::Base64Decode(body);
  if (!decoded) return Malformed("body is not valid base64 although isBase64Encoded is true");
  return std::move(*decoded);
}

Status CheckPath(std::string_view path, std::string_view name) {
  if (path.empty()) return Malformed(std::string(name) + " is missing");
  if (path.front() != '/') return Malformed(std::string(name) + " does not start with '/'");
  return Status::Ok();
}

Status DecodeRestApi(const json::object& event, DecodedEvent& out) {
  http::Request& request = out.request;
  IMGSVC_ASSIGN_OR_RETURN(std::string_view method, StringField(event, "httpMethod", "httpMethod"));
  if (method.empty()) return Malformed("httpMethod is missing");
  request.method = Upper(method);
  // `path` has no stage prefix (requestContext.path has one).
  IMGSVC_ASSIGN_OR_RETURN(std::string_view path, StringField(event, "path", "path"));
  IMGSVC_RETURN_IF_ERROR(CheckPath(path, "path"));
  request.path = std::string(path);

  IMGSVC_RETURN_IF_ERROR(ForEachRestValue(
      event, "headers", "multiValueHeaders", [&](std::string_view name, std::string_view value) {
        request.headers.push_back({core::LowerAscii(name), std::string(value)});
      }));
  IMGSVC_RETURN_IF_ERROR(ForEachRestValue(
      event, "queryStringParameters", "multiValueQueryStringParameters",
      [&](std::string_view name, std::string_view value) { AppendQueryPair(request.query, name, value); }));

  IMGSVC_ASSIGN_OR_RETURN(const json::object* context, ObjectField(event, "requestContext", "requestContext"));
  if (context != nullptr) {
    IMGSVC_ASSIGN_OR_RETURN(std::string_view id, StringField(*context, "requestId", "requestContext.requestId"));
    out.request_id = std::string(id);
    IMGSVC_ASSIGN_OR_RETURN(const json::object* identity,
                            ObjectField(*context, "identity", "requestContext.identity"));
    if (identity != nullptr) {
      IMGSVC_ASSIGN_OR_RETURN(std::string_view ip,
                              StringField(*identity, "sourceIp", "requestContext.identity.sourceIp"));
      request.remote_address = std::string(ip);
    }
  }
  return Status::Ok();
}

// On the execute-api endpoint an HTTP API's rawPath starts with "/{stage}"
// unless the stage is $default; through a custom domain's API mapping it does
// not, and a path that merely looks like the stage must stay.
std::string_view StripStage(std::string_view raw_path, std::string_view stage, std::string_view domain) {
  if (stage.empty() || stage == "$default") return raw_path;
  if (!domain.empty() && domain.find(".execute-api.") == std::string_view::npos) return raw_path;
  if (raw_path.size() < stage.size() + 1 || raw_path[0] != '/' || raw_path.substr(1, stage.size()) != stage) {
    return raw_path;
  }
  const std::string_view rest = raw_path.substr(stage.size() + 1);
  if (rest.empty()) return "/";
  return rest.front() == '/' ? rest : raw_path;
}

Status DecodePayload2(const json::object& event, const json::object& context, const json::object& http_context,
                      DecodedEvent& out) {
  http::Request& request = out.request;
  IMGSVC_ASSIGN_OR_RETURN(std::string_view method,
                          StringField(http_context, "method", "requestContext.http.method"));
  if (method.empty()) return Malformed("requestContext.http.method is missing");
  request.method = Upper(method);

  IMGSVC_ASSIGN_OR_RETURN(std::string_view raw_path, StringField(event, "rawPath", "rawPath"));
  IMGSVC_RETURN_IF_ERROR(CheckPath(raw_path, "rawPath"));
  IMGSVC_ASSIGN_OR_RETURN(std::string_view stage, StringField(context, "stage", "requestContext.stage"));
  IMGSVC_ASSIGN_OR_RETURN(std::string_view domain,
                          StringField(context, "domainName", "requestContext.domainName"));
  request.path = std::string(out.shape == EventShape::kHttpApi ? StripStage(raw_path, stage, domain) : raw_path);

  IMGSVC_ASSIGN_OR_RETURN(std::string_view query, StringField(event, "rawQueryString", "rawQueryString"));
  request.query = std::string(query);

  IMGSVC_ASSIGN_OR_RETURN(const json::object* headers, ObjectField(event, "headers", "headers"));
  if (headers != nullptr) {
    for (const json::key_value_pair& entry : *headers) {
      if (entry.value().is_null()) continue;
      if (!entry.value().is_string()) return Malformed("headers holds a value that is not a string");
      request.headers.push_back({core::LowerAscii(entry.key()), std::string(entry.value().get_string())});
    }
  }

  // Payload 2.0 moves the Cookie header into `cookies`; the router reads one
  // header, as a server would receive it.
  const json::value* cookies = Field(event, "cookies");
  if (cookies != nullptr) {
    const json::array* list = cookies->if_array();
    if (list == nullptr) return Malformed("cookies is not an array");
    std::string joined;
    for (const json::value& cookie : *list) {
      if (!cookie.is_string()) return Malformed("cookies holds a value that is not a string");
      if (!joined.empty()) joined.append("; ");
      joined.append(cookie.get_string());
    }
    if (!joined.empty()) {
      std::erase_if(request.headers, [](const http::Header& h) { return h.name == "cookie"; });
      request.headers.push_back({"cookie", std::move(joined)});
    }
  }

  IMGSVC_ASSIGN_OR_RETURN(std::string_view ip,
                          StringField(http_context, "sourceIp", "requestContext.http.sourceIp"));
  request.remote_address = std::string(ip);
  IMGSVC_ASSIGN_OR_RETURN(std::string_view id, StringField(context, "requestId", "requestContext.requestId"));
  out.request_id = std::string(id);
  return Status::Ok();
}

// Media types whose bodies API Gateway passes through as text.
bool IsTextual(std::string_view content_type) {
  const std::size_t end = content_type.find(';');
  std::string media = core::LowerAscii(content_type.substr(0, end));
  while (!media.empty() && (media.back() == ' ' || media.back() == '\t')) media.pop_back();
  const auto ends_with = [&](std::string_view suffix) {
    return media.size() >= suffix.size() && media.compare(media.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return media.starts_with("text/") || media == "application/json" || media == "application/xml" ||
         media == "application/javascript" || media == "application/x-www-form-urlencoded" ||
         ends_with("+json") || ends_with("+xml");
}

// Length of the UTF-8 sequence a lead byte opens, 0 for a byte that cannot lead.
std::size_t Utf8SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xe0) == 0xc0) return 2;
  if ((lead & 0xf0) == 0xe0) return 3;
  if ((lead & 0xf8) == 0xf0) return 4;
  return 0;
}

bool IsValidUtf8(std::string_view text) {
  static constexpr std::uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
  static constexpr unsigned char kLeadBits[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const std::size_t length = Utf8SequenceLength(lead);
    if (length == 0 || text.size() - i < length) return false;
    std::uint32_t code_point = lead & kLeadBits[length];
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3fu);
    }
    // Overlong forms, UTF-16 surrogates and values beyond Unicode are not UTF-8.
    if (code_point < kSmallest[length] || code_point > 0x10ffff ||
        (code_point >= 0xd800 && code_point <= 0xdfff)) {
      return false;
    }
    i += length;
  }
  return true;
}

bool SendsAsText(const http::Response& response, std::string_view body) {
  if (body.empty()) return true;
  const auto encoding = response.header("content-encoding");
  if (encoding && !encoding->empty() && core::LowerAscii(*encoding) != "identity") return false;
  const auto content_type = response.header("content-type");
  return content_type && IsTextual(*content_type) && IsValidUtf8(body);
}

// API Gateway frames the response itself; CR, LF or NUL would corrupt a header.
bool ShouldSendHeader(const http::Header& header) {
  static constexpr std::string_view kForbidden("\r\n\0", 3);
  const std::string name = core::LowerAscii(header.name);
  if (name == "content-length" || name == "connection" || name == "transfer-encoding") return false;
  return header.name.find_first_of(kForbidden) == std::string::npos &&
         header.value.find_first_of(kForbidden) == std::string::npos;
}

StatusOr<std::string> ReadFileRange(const http::FileBody& file) {
  if (file.length > kMaxFileBodyBytes) {
    return Status(Code::kInternal, "file body of " + std::to_string(file.length) +
                                       " bytes exceeds Lambda's response limit: " + file.path);
  }
  std::ifstream in(file.path, std::ios::binary);
  if (!in) return Status(Code::kInternal, "cannot open file body " + file.path);
  in.seekg(static_cast<std::streamoff>(file.offset));
  std::string data(static_cast<std::size_t>(file.length), '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (static_cast<std::uint64_t>(in.gcount()) != file.length) {
    return Status(Code::kInternal, "file body shorter than its range: " + file.path);
  }
  return data;
}

// Headers in first-appearance order, each with all of its values.
std::vector<std::pair<std::string, std::vector<std::string>>> GroupHeaders(const http::Headers& headers) {
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;
  for (const http::Header& header : headers) {
    if (!ShouldSendHeader(header)) continue;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == header.name; });
    if (it == groups.end()) {
      groups.push_back({header.name, {header.value}});
    } else {
      it->second.push_back(header.value);
    }
  }
  return groups;
}

std::string Encode(EventShape shape, const http::Response& response, std::string_view body) {
  json::object out;
  out["statusCode"] = response.status >= 100 && response.status <= 999 ? response.status : 500;
  json::object headers;
  if (shape == EventShape::kRestApi) {
    json::object multi_value_headers;
    for (auto& [name, values] : GroupHeaders(response.headers)) {
      if (values.size() == 1) {
        headers[name] = values.front();
      } else {
        json::array list;
        for (std::string& value : values) list.emplace_back(std::move(value));
        multi_value_headers[name] = std::move(list);
      }
    }
    out["headers"] = std::move(headers);
    out["multiValueHeaders"] = std::move(multi_value_headers);
  } else {
    json::array cookies;
    for (auto& [name, values] : GroupHeaders(response.headers)) {
      if (name == "set-cookie") {
        for (std::string& value : values) cookies.emplace_back(std::move(value));
        continue;
      }
      std::string joined;
      for (const std::string& value : values) {
        if (!joined.empty()) joined.push_back(',');
        joined.append(value);
      }
      headers[name] = std::move(joined);
    }
    out["headers"] = std::move(headers);
    if (!cookies.empty()) out["cookies"] = std::move(cookies);
  }
  const bool text = SendsAsText(response, body);
  out["body"] = text ? std::string(body) : crypto::Base64Encode(body);
  out["isBase64Encoded"] = !text;
  return json::serialize(out);
}

}  // namespace

StatusOr<DecodedEvent> DecodeEvent(std::string_view event_json) {
  boost::system::error_code error;
  const json::value parsed = json::parse(event_json, error);
  if (error) return Malformed("not valid JSON (" + error.message() + ")");
  const json::object* event = parsed.if_object();
  if (event == nullptr) return Malformed("not a JSON object");

  DecodedEvent out;
  IMGSVC_ASSIGN_OR_RETURN(std::string_view version, StringField(*event, "version", "version"));
  IMGSVC_ASSIGN_OR_RETURN(const json::object* context, ObjectField(*event, "requestContext", "requestContext"));
  if (version == "2.0") {
    if (context == nullptr) return Malformed("requestContext is missing");
    IMGSVC_ASSIGN_OR_RETURN(const json::object* http_context,
                            ObjectField(*context, "http", "requestContext.http"));
    if (http_context == nullptr) return Malformed("requestContext.http is missing");
    // Both 2.0 sources carry apiId and stage; only the domain tells them apart.
    IMGSVC_ASSIGN_OR_RETURN(std::string_view domain,
                            StringField(*context, "domainName", "requestContext.domainName"));
    out.shape = domain.find(".lambda-url.") != std::string_view::npos ? EventShape::kFunctionUrl
                                                                      : EventShape::kHttpApi;
    IMGSVC_RETURN_IF_ERROR(DecodePayload2(*event, *context, *http_context, out));
  } else if (Field(*event, "httpMethod") != nullptr) {
    out.shape = EventShape::kRestApi;
    IMGSVC_RETURN_IF_ERROR(DecodeRestApi(*event, out));
  } else {
    return Malformed(
        "no known shape (expected an API Gateway REST API or HTTP API event, or a Function URL event)");
  }

  // Clients always send Host; an event built by hand may leave it out, and
  // the router expects it.
  if (!out.request.header("host") && context != nullptr) {
    IMGSVC_ASSIGN_OR_RETURN(std::string_view domain,
                            StringField(*context, "domainName", "requestContext.domainName"));
    if (!domain.empty()) out.request.headers.push_back({"host", std::string(domain)});
  }

  IMGSVC_ASSIGN_OR_RETURN(std::string body, DecodeBody(*event));
  out.request.content_length = body.size();
  out.body = std::make_unique<http::MemoryBody>(std::move(body));
  out.request.body = out.body.get();
  return out;
}

std::string EncodeResponse(EventShape shape, const http::Response& response) {
  if (!response.file) return Encode(shape, response, response.body);
  StatusOr<std::string> contents = ReadFileRange(*response.file);
  if (contents.ok()) return Encode(shape, response, *contents);

  log::Error("lambda response body unreadable", {{"cause", contents.status().ToString()}});
  http::Response failure = http::ErrorFromStatus(Status(Code::kInternal, "response body unreadable"));
  // The request id and CORS headers still belong to this response.
  for (const http::Header& header : response.headers) {
    if (header.name == "x-request-id" || header.name.starts_with("access-control-")) {
      failure.headers.push_back(header);
    }
  }
  return Encode(shape, failure, failure.body);
}

}  // namespace imgsvc::lambda
