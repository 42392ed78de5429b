// Status and StatusOr<T>: the one result type of the project.
//
// Every fallible operation returns a Status (or a StatusOr<T> carrying a value
// on success). The code set is small and each code maps onto exactly one HTTP
// status, so errors travel from the stores through the use cases to either
// transport without translation tables in between. Validation failures carry
// one FieldError per bad field (FastAPI's 422 shape).
#pragma once

#include <cassert>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace imgsvc {

enum class Code {
  kOk = 0,
  kBadRequest,            // 400 malformed request (multipart, cursor)
  kUnauthenticated,       // 401 missing, malformed or wrong key
  kForbidden,             // 403 valid key, not allowed; bad download signature
  kNotFound,              // 404
  kConflict,              // 409 conditional write failed (already exists)
  kRequestTimeout,        // 408 client too slow sending the request
  kPayloadTooLarge,       // 413 file, pixel or file-count limit
  kRangeNotSatisfiable,   // 416
  kUnsupportedMediaType,  // 415 not an accepted image
  kUnprocessable,         // 422 validation failure (see FieldError)
  kHeadersTooLarge,       // 431
  kTooManyRequests,       // 429
  kInternal,              // 500
  kUnavailable,           // 503 a dependency does not answer; retry later
  kDeadlineExceeded,      // 504
};

// The HTTP status a code maps to.
int HttpStatusOf(Code code);
// A short stable name for logs ("not_found", "unavailable", ...).
const char* CodeName(Code code);

// One entry of a 422 body: {"loc": [...], "msg": "...", "type": "..."}.
// loc holds strings and array indices, e.g. {"body", "image_ids", 3}.
struct FieldError {
  std::vector<std::variant<std::string, int>> loc;
  std::string msg;
  std::string type;
  friend bool operator==(const FieldError&, const FieldError&) = default;
};

// An OK status is its code and a null pointer: made, moved and destroyed
// inline without touching memory, because every call returns one. The
// message and details of an error live behind the pointer.
class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message) : code_(code), detail_(std::make_unique<Detail>(std::move(message))) {}
  Status(const Status& other) : code_(other.code_), detail_(CopyOf(other.detail_)) {}
  Status& operator=(const Status& other) {
    if (this != &other) {
      code_ = other.code_;
      detail_ = CopyOf(other.detail_);
    }
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;
  ~Status() = default;

  static Status Ok() { return {}; }
  // A 422 carrying one or more field errors; message summarises them.
  static Status Invalid(std::vector<FieldError> errors);
  static Status Invalid(FieldError error) { return Invalid(std::vector<FieldError>{std::move(error)}); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const;
  const std::vector<FieldError>& field_errors() const;

  // Seconds a client should wait before retrying (503/429), when known.
  std::optional<int> retry_after() const { return detail_ ? detail_->retry_after : std::nullopt; }
  Status& set_retry_after(int seconds) & {
    MutableDetail().retry_after = seconds;
    return *this;
  }
  Status&& set_retry_after(int seconds) && {
    MutableDetail().retry_after = seconds;
    return std::move(*this);
  }

  // Prefixes the message with context, keeping code and details.
  Status WithContext(std::string_view context) const;

  std::string ToString() const;

 private:
  struct Detail {
    explicit Detail(std::string text) : message(std::move(text)) {}
    std::string message;
    std::vector<FieldError> field_errors;
    std::optional<int> retry_after;
  };
  static std::unique_ptr<Detail> CopyOf(const std::unique_ptr<Detail>& detail) {
    return detail ? std::make_unique<Detail>(*detail) : nullptr;
  }
  Detail& MutableDetail();

  Code code_ = Code::kOk;
  std::unique_ptr<Detail> detail_;  // null for OK
};

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "StatusOr needs a value or an error");
    if (status_.ok()) status_ = Status(Code::kInternal, "StatusOr built from OK status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace imgsvc

// Returns early from the enclosing function with the error of `expr`.
#define IMGSVC_RETURN_IF_ERROR(expr)              \
  do {                                            \
    if (auto _st = (expr); !_st.ok()) return _st; \
  } while (0)

#define IMGSVC_CONCAT_INNER(a, b) a##b
#define IMGSVC_CONCAT(a, b) IMGSVC_CONCAT_INNER(a, b)
// Declares `lhs` from a StatusOr expression or returns its error.
#define IMGSVC_ASSIGN_OR_RETURN(lhs, expr) \
  IMGSVC_ASSIGN_OR_RETURN_IMPL(IMGSVC_CONCAT(_status_or_, __LINE__), lhs, expr)
#define IMGSVC_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()
