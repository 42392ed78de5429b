#include "core/status.h"

namespace imgsvc {

int HttpStatusOf(Code code) {
  switch (code) {
    case Code::kOk: return 200;
    case Code::kBadRequest: return 400;
    case Code::kUnauthenticated: return 401;
    case Code::kForbidden: return 403;
    case Code::kNotFound: return 404;
    case Code::kConflict: return 409;
    case Code::kRequestTimeout: return 408;
    case Code::kPayloadTooLarge: return 413;
    case Code::kRangeNotSatisfiable: return 416;
    case Code::kUnsupportedMediaType: return 415;
    case Code::kUnprocessable: return 422;
    case Code::kHeadersTooLarge: return 431;
    case Code::kTooManyRequests: return 429;
    case Code::kInternal: return 500;
    case Code::kUnavailable: return 503;
    case Code::kDeadlineExceeded: return 504;
  }
  return 500;
}

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kBadRequest: return "bad_request";
    case Code::kUnauthenticated: return "unauthenticated";
    case Code::kForbidden: return "forbidden";
    case Code::kNotFound: return "not_found";
    case Code::kConflict: return "conflict";
    case Code::kRequestTimeout: return "request_timeout";
    case Code::kPayloadTooLarge: return "payload_too_large";
    case Code::kRangeNotSatisfiable: return "range_not_satisfiable";
    case Code::kUnsupportedMediaType: return "unsupported_media_type";
    case Code::kUnprocessable: return "unprocessable";
    case Code::kHeadersTooLarge: return "headers_too_large";
    case Code::kTooManyRequests: return "too_many_requests";
    case Code::kInternal: return "internal";
    case Code::kUnavailable: return "unavailable";
    case Code::kDeadlineExceeded: return "deadline_exceeded";
  }
  return "internal";
}

Status Status::Invalid(std::vector<FieldError> errors) {
  std::string summary;
  for (const auto& e : errors) {
    if (!summary.empty()) summary += "; ";
    for (const auto& part : e.loc) {
      if (const auto* s = std::get_if<std::string>(&part)) {
        summary += *s;
      } else {
        summary += std::to_string(std::get<int>(part));
      }
      summary += '.';
    }
    if (!summary.empty() && summary.back() == '.') summary.back() = ':';
    summary += ' ';
    summary += e.msg;
  }
  Status status(Code::kUnprocessable, std::move(summary));
  status.detail_->field_errors = std::move(errors);
  return status;
}

const std::string& Status::message() const {
  static const std::string kNone;
  return detail_ ? detail_->message : kNone;
}

const std::vector<FieldError>& Status::field_errors() const {
  static const std::vector<FieldError> kNone;
  return detail_ ? detail_->field_errors : kNone;
}

Status::Detail& Status::MutableDetail() {
  if (!detail_) detail_ = std::make_unique<Detail>(std::string());
  return *detail_;
}

Status Status::WithContext(std::string_view context) const {
  Status copy = *this;
  copy.MutableDetail().message = std::string(context) + ": " + message();
  return copy;
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(CodeName(code_)) + ": " + message();
}

}  // namespace imgsvc
