// Structured logging: one JSON object per line on stdout, CloudWatch-ready.
//
// Each line has "time" (RFC 3339 UTC, microseconds), "level", "msg" and the
// fields given. Lines are written with one write(2) call so concurrent lines
// never interleave. Secrets must never be passed as fields.
//
// A busy server's request lines (WriteAccess) may be gathered and written
// together (AccessLineGathering): a write per request was a sixth of the
// CPU of answering /health.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace imgsvc::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug", "info", "warn", "error".
bool ParseLevel(std::string_view text, Level& out);
void SetLevel(Level level);
bool Enabled(Level level);
// Where lines go (default: stdout). Used by tests and benchmarks.
void SetFd(int fd);

// A duration written in milliseconds with up to three decimals, as the
// double micros / 1000.0 would be, without formatting a double.
struct Millis {
  std::int64_t micros = 0;
};

// A field's name: a string literal of the code's own, checked when the code
// is compiled to need no JSON escaping, so that a line takes it as it is.
class FieldKey {
 public:
  FieldKey() = default;
  template <std::size_t N>
  consteval FieldKey(const char (&text)[N]) : text_(text, N - 1) {  // NOLINT: implicit on purpose
    for (const char c : text_) {
      const auto byte = static_cast<unsigned char>(c);
      if (byte < 0x20 || byte >= 0x7f || c == '"' || c == '\\') {
        throw "a log field's name must need no JSON escaping";  // not a constant: compiling fails
      }
    }
  }
  std::string_view text() const { return text_; }

 private:
  std::string_view text_;
};

struct Field {
  using Value = std::variant<std::string_view, std::int64_t, double, bool, Millis>;
  FieldKey key;
  Value value;
  Field() = default;  // for arrays of fields filled as they are known
  Field(FieldKey k, std::string_view v) : key(k), value(v) {}
  Field(FieldKey k, const std::string& v) : key(k), value(std::string_view(v)) {}
  Field(FieldKey k, const char* v) : key(k), value(std::string_view(v)) {}
  Field(FieldKey k, std::int64_t v) : key(k), value(v) {}
  Field(FieldKey k, int v) : key(k), value(std::int64_t{v}) {}
  Field(FieldKey k, unsigned v) : key(k), value(std::int64_t{v}) {}
  Field(FieldKey k, std::uint64_t v) : key(k), value(static_cast<std::int64_t>(v)) {}
  Field(FieldKey k, double v) : key(k), value(v) {}
  Field(FieldKey k, bool v) : key(k), value(v) {}
  Field(FieldKey k, Millis v) : key(k), value(v) {}
};

void Write(Level level, std::string_view message, std::initializer_list<Field> fields = {});
// The same with fields chosen at run time.
void Write(Level level, std::string_view message, std::span<const Field> fields);

// A request line (the access log). While an AccessLineGathering lives, one
// below warn is gathered rather than written at once.
void WriteAccess(Level level, std::string_view message, std::span<const Field> fields);

// While it lives, request lines are gathered and written together by a
// thread of its own, at most `delay` after the first of them, or at once
// when 64 KiB are waiting. Every other line is written at once, after what
// was gathered, so the order of lines is kept; its call returns once it is
// written. Its end writes what is left. An output that blocks holds up
// request lines only once 1 MiB of them wait: from then on each waits for
// room, so none is dropped. A crash loses the request lines not yet
// written: at most `delay`'s (or 64 KiB) while the output keeps up, up to
// 1 MiB while it blocks. One at a time; for the standalone server only, as
// a frozen Lambda instance would hold its lines until it thaws.
class AccessLineGathering {
 public:
  explicit AccessLineGathering(std::chrono::milliseconds delay);
  ~AccessLineGathering();
  AccessLineGathering(const AccessLineGathering&) = delete;
  AccessLineGathering& operator=(const AccessLineGathering&) = delete;
};

inline void Debug(std::string_view m, std::initializer_list<Field> f = {}) { Write(Level::kDebug, m, f); }
inline void Info(std::string_view m, std::initializer_list<Field> f = {}) { Write(Level::kInfo, m, f); }
inline void Warn(std::string_view m, std::initializer_list<Field> f = {}) { Write(Level::kWarn, m, f); }
inline void Error(std::string_view m, std::initializer_list<Field> f = {}) { Write(Level::kError, m, f); }

// Appends `text` to `out` as a JSON string literal (with quotes).
void AppendJsonString(std::string& out, std::string_view text);
// Appends `value` in decimal (a JSON number, a status code, a length),
// with no temporary string.
void AppendDecimal(std::string& out, std::uint64_t value);

}  // namespace imgsvc::log
