#include "core/image.h"

#include <algorithm>
#include <array>

namespace imgsvc::core {
namespace {

struct FormatInfo {
  std::string_view name;
  std::string_view content_type;
  std::string_view extension;
};

constexpr std::array<FormatInfo, 7> kFormats = {{
    {"jpeg", "image/jpeg", ".jpg"},
    {"png", "image/png", ".png"},
    {"gif", "image/gif", ".gif"},
    {"webp", "image/webp", ".webp"},
    {"avif", "image/avif", ".avif"},
    {"heic", "image/heic", ".heic"},
    {"tiff", "image/tiff", ".tiff"},
}};

const FormatInfo& InfoOf(ImageFormat format) { return kFormats[static_cast<std::size_t>(format)]; }

// UTF-8 ------------------------------------------------------------------

// One step of strict UTF-8 decoding at the start of `s` (non-empty). A valid
// sequence yields its length and code point; an invalid one yields the length
// of its maximal subpart (Unicode's "substitution of maximal subparts", as
// Python's errors="replace" does), at least 1.
struct Utf8Step {
  std::size_t length;
  bool valid;
  char32_t code_point;
};

Utf8Step DecodeUtf8(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return {1, true, b0};
  std::size_t need;
  unsigned char lo = 0x80, hi = 0xbf;  // range of the second byte
  char32_t cp;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    need = 2;
    cp = b0 & 0x1f;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    need = 3;
    cp = b0 & 0x0f;
    if (b0 == 0xe0) lo = 0xa0;  // no overlongs
    if (b0 == 0xed) hi = 0x9f;  // no surrogates
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    need = 4;
    cp = b0 & 0x07;
    if (b0 == 0xf0) lo = 0x90;  // no overlongs
    if (b0 == 0xf4) hi = 0x8f;  // nothing above U+10FFFF
  } else {
    return {1, false, 0};
  }
  for (std::size_t k = 1; k < need; ++k) {
    if (k >= s.size()) return {k, false, 0};
    const auto b = static_cast<unsigned char>(s[k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return {k, false, 0};
    cp = (cp << 6) | (b & 0x3f);
  }
  return {need, true, cp};
}

// Validation errors --------------------------------------------------------

Loc Append(const Loc& loc, std::variant<std::string, int> part) {
  Loc out = loc;
  out.push_back(std::move(part));
  return out;
}

FieldError Unicode(const Loc& loc) {
  return {loc, "Input should be a valid string, unable to parse raw data as a unicode string", "string_unicode"};
}

FieldError TooShort(const Loc& loc) { return {loc, "String should have at least 1 character", "string_too_short"}; }

FieldError TooLong(const Loc& loc, std::size_t max) {
  return {loc, "String should have at most " + std::to_string(max) + " characters", "string_too_long"};
}

FieldError TooManyTags(const Loc& loc) {
  return {loc, "List should have at most " + std::to_string(kMaxTags) + " items after validation", "too_long"};
}

bool IsAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

std::string_view TrimAscii(std::string_view s) {
  while (!s.empty() && IsAsciiSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsAsciiSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Collects normalised tags in order of first appearance. Only up to one past
// the limit is kept, so a hostile list costs O(n) comparisons, not O(n^2).
class TagCollector {
 public:
  // Returns the length error for an over-long tag, if any.
  std::optional<FieldError> Add(std::string_view raw, const Loc& loc) {
    const std::string_view trimmed = TrimAscii(raw);
    if (trimmed.empty()) return std::nullopt;
    // Valid UTF-8 was checked by the caller; ASCII lower-casing keeps it valid.
    if (*Utf8Length(trimmed) > kMaxTagChars) return TooLong(loc, kMaxTagChars);
    if (tags_.size() > kMaxTags) return std::nullopt;
    std::string tag = LowerAscii(trimmed);
    if (std::find(tags_.begin(), tags_.end(), tag) == tags_.end()) tags_.push_back(std::move(tag));
    return std::nullopt;
  }
  bool TooMany() const { return tags_.size() > kMaxTags; }
  std::vector<std::string> Take() { return std::move(tags_); }

 private:
  std::vector<std::string> tags_;
};

// Timestamps -------------------------------------------------------------

constexpr Micros kMicrosPerSecond = 1'000'000;
constexpr Micros kMicrosPerDay = 86'400 * kMicrosPerSecond;

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian).
constexpr std::int64_t DaysFromCivil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t year;
  unsigned month;
  unsigned day;
};

constexpr Civil CivilFromDays(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2), m, d};
}

// The representable range of the fixed-width format: years 0000..9999.
constexpr Micros kMinMicros = DaysFromCivil(0, 1, 1) * kMicrosPerDay;
constexpr Micros kMaxMicros = DaysFromCivil(10000, 1, 1) * kMicrosPerDay - 1;

constexpr bool IsLeapYear(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

constexpr int DaysInMonth(int y, int m) {
  constexpr std::array<int, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeapYear(y) ? 29 : kDays[static_cast<std::size_t>(m - 1)];
}

void WriteDigits(char* out, unsigned value, int width) {
  for (int i = width - 1; i >= 0; --i) {
    out[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
}

class Scanner {
 public:
  explicit Scanner(std::string_view text) : text_(text) {}

  bool Digits(int count, int& out) {
    if (text_.size() - pos_ < static_cast<std::size_t>(count)) return false;
    int value = 0;
    for (int i = 0; i < count; ++i) {
      const char c = text_[pos_++];
      if (c < '0' || c > '9') return false;
      value = value * 10 + (c - '0');
    }
    out = value;
    return true;
  }
  bool Char(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  std::optional<char> Peek() const {
    if (pos_ < text_.size()) return text_[pos_];
    return std::nullopt;
  }
  bool AtEnd() const { return pos_ == text_.size(); }

 private:
  std::string_view text_;
  std::size_t pos_ = 0;
};

struct Date {
  int year = 0, month = 0, day = 0;
};

bool ScanDate(Scanner& in, Date& date) {
  return in.Digits(4, date.year) && in.Char('-') && in.Digits(2, date.month) && in.Char('-') &&
         in.Digits(2, date.day) && date.month >= 1 && date.month <= 12 && date.day >= 1 &&
         date.day <= DaysInMonth(date.year, date.month);
}

Micros StartOfDay(const Date& date) {
  return DaysFromCivil(date.year, static_cast<unsigned>(date.month), static_cast<unsigned>(date.day)) *
         kMicrosPerDay;
}

// The shape of FormatTimestamp's output, "2026-11-25T18:00:00.123456Z",
// whatever the digits.
bool HasOwnTimestampShape(std::string_view text) {
  constexpr std::string_view kShape = "0000-00-00T00:00:00.000000Z";
  if (text.size() != kShape.size()) return false;
  for (std::size_t i = 0; i < kShape.size(); ++i) {
    const bool matches = kShape[i] == '0' ? text[i] >= '0' && text[i] <= '9' : text[i] == kShape[i];
    if (!matches) return false;
  }
  return true;
}

// RFC 3339 date-time; with `naive_is_utc` a missing zone means UTC (how the
// original service's Python isoformat() strings were written).
std::optional<Micros> ParseDateTime(std::string_view text, bool naive_is_utc) {
  Scanner in(text);
  Date date;
  int hour = 0, minute = 0, second = 0;
  if (!ScanDate(in, date)) return std::nullopt;
  if (!(in.Char('T') || in.Char('t') || in.Char(' '))) return std::nullopt;
  if (!(in.Digits(2, hour) && in.Char(':') && in.Digits(2, minute) && in.Char(':') && in.Digits(2, second))) {
    return std::nullopt;
  }
  if (hour > 23 || minute > 59 || second > 59) return std::nullopt;

  Micros fraction = 0;
  if (in.Char('.')) {
    int digits = 0;
    int digit = 0;
    while (in.Peek() && *in.Peek() >= '0' && *in.Peek() <= '9') {
      in.Digits(1, digit);
      if (++digits > 9) return std::nullopt;
      if (digits <= 6) fraction = fraction * 10 + digit;
    }
    if (digits == 0) return std::nullopt;
    for (int i = digits; i < 6; ++i) fraction *= 10;
  }

  int offset_seconds = 0;
  if (in.AtEnd()) {
    if (!naive_is_utc) return std::nullopt;
  } else if (!(in.Char('Z') || in.Char('z'))) {
    const bool negative = in.Peek() == '-';
    if (!(in.Char('+') || in.Char('-'))) return std::nullopt;
    int offset_hours = 0, offset_minutes = 0;
    if (!(in.Digits(2, offset_hours) && in.Char(':') && in.Digits(2, offset_minutes))) return std::nullopt;
    if (offset_hours > 23 || offset_minutes > 59) return std::nullopt;
    offset_seconds = (offset_hours * 3600 + offset_minutes * 60) * (negative ? -1 : 1);
  }
  if (!in.AtEnd()) return std::nullopt;

  const Micros micros = StartOfDay(date) +
                        (hour * 3600 + minute * 60 + second - offset_seconds) * kMicrosPerSecond + fraction;
  if (micros < kMinMicros || micros > kMaxMicros) return std::nullopt;
  return micros;
}

}  // namespace

std::string_view FormatName(ImageFormat format) { return InfoOf(format).name; }
std::string_view FormatContentType(ImageFormat format) { return InfoOf(format).content_type; }
std::string_view FormatExtension(ImageFormat format) { return InfoOf(format).extension; }

std::optional<ImageFormat> FormatFromExtension(std::string_view ext) {
  for (std::size_t i = 0; i < kFormats.size(); ++i) {
    if (kFormats[i].extension == ext) return static_cast<ImageFormat>(i);
  }
  return std::nullopt;
}

std::string_view VisibilityName(Visibility v) { return v == Visibility::kPublic ? "public" : "private"; }

namespace {

void AssignKey(std::string& key, std::string_view user_id, std::string_view image_id, ImageFormat format) {
  const std::string_view ext = FormatExtension(format);
  key.clear();
  key.reserve(7 + user_id.size() + 1 + image_id.size() + ext.size());
  key += "images/";
  key += user_id;
  key += '/';
  key += image_id;
  key += ext;
}

}  // namespace

std::string ImageRecord::StorageKey() const { return StorageKeyFor(user_id, image_id, format); }

std::string StorageKeyFor(std::string_view user_id, std::string_view image_id, ImageFormat format) {
  std::string key;
  AssignKey(key, user_id, image_id, format);
  return key;
}

void AssignStorageKey(std::string& out, const ImageRecord& record) {
  AssignKey(out, record.user_id, record.image_id, record.format);
}

Status ValidateUserId(std::string_view user_id, const Loc& loc) {
  if (user_id.empty()) return Status::Invalid(TooShort(loc));
  const bool allowed = std::all_of(user_id.begin(), user_id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '@' || c == '-';
  });
  // Lengths are code points: an over-long id of non-ASCII text is reported as
  // too long, like Pydantic checks length before pattern.
  const std::size_t length = Utf8Length(user_id).value_or(user_id.size());
  if (length > kMaxUserIdChars) return Status::Invalid(TooLong(loc, kMaxUserIdChars));
  if (!allowed) {
    return Status::Invalid(
        FieldError{loc, "String should match pattern '^[A-Za-z0-9._@-]+$'", "string_pattern_mismatch"});
  }
  return Status::Ok();
}

Status ValidateCategory(std::string_view category, const Loc& loc) {
  const auto length = Utf8Length(category);
  if (!length) return Status::Invalid(Unicode(loc));
  if (*length == 0) return Status::Invalid(TooShort(loc));
  if (*length > kMaxCategoryChars) return Status::Invalid(TooLong(loc, kMaxCategoryChars));
  return Status::Ok();
}

StatusOr<std::vector<std::string>> ParseTags(std::string_view comma_separated, const Loc& loc) {
  if (!Utf8Length(comma_separated)) return Status::Invalid(Unicode(loc));
  TagCollector tags;
  for (;;) {
    const std::size_t comma = comma_separated.find(',');
    if (auto error = tags.Add(comma_separated.substr(0, comma), loc)) return Status::Invalid(std::move(*error));
    if (comma == std::string_view::npos) break;
    comma_separated.remove_prefix(comma + 1);
  }
  if (tags.TooMany()) return Status::Invalid(TooManyTags(loc));
  return tags.Take();
}

StatusOr<std::vector<std::string>> NormaliseTagList(const std::vector<std::string>& tags, const Loc& loc) {
  std::vector<FieldError> errors;
  TagCollector collector;
  for (std::size_t i = 0; i < tags.size(); ++i) {
    const Loc item_loc = Append(loc, static_cast<int>(i));
    if (!Utf8Length(tags[i])) {
      errors.push_back(Unicode(item_loc));
    } else if (tags[i].find(',') != std::string::npos) {
      errors.push_back({item_loc, "Value error, a tag must not contain ','", "value_error"});
    } else if (auto error = collector.Add(tags[i], item_loc)) {
      errors.push_back(std::move(*error));
    }
  }
  if (collector.TooMany()) errors.push_back(TooManyTags(loc));
  if (!errors.empty()) return Status::Invalid(std::move(errors));
  return collector.Take();
}

StatusOr<Visibility> ParseVisibility(std::string_view text, const Loc& loc) {
  if (text == "private") return Visibility::kPrivate;
  if (text == "public") return Visibility::kPublic;
  return Status::Invalid(FieldError{loc, "Input should be 'private' or 'public'", "enum"});
}

bool IsUuid(std::string_view text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

std::string LowerAscii(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = LowerAsciiChar(c);
  return out;
}

bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](char x, char y) { return LowerAsciiChar(x) == LowerAsciiChar(y); });
}

std::string SanitiseFilename(std::string_view client_name) {
  if (const std::size_t slash = client_name.find_last_of("/\\"); slash != std::string_view::npos) {
    client_name.remove_prefix(slash + 1);
  }
  std::string out;
  out.reserve(std::min(client_name.size(), kMaxFilenameBytes + 3));
  while (!client_name.empty() && out.size() <= kMaxFilenameBytes) {
    const Utf8Step step = DecodeUtf8(client_name);
    if (!step.valid) {
      out += "\xEF\xBF\xBD";  // U+FFFD
    } else if (const char32_t cp = step.code_point; !(cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))) {
      out.append(client_name.substr(0, step.length));
    }
    client_name.remove_prefix(step.length);
  }
  if (out.size() > kMaxFilenameBytes) {
    std::size_t cut = kMaxFilenameBytes;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xc0) == 0x80) --cut;
    out.resize(cut);
  }
  if (out.empty()) return "upload";
  return out;
}

std::optional<std::size_t> Utf8Length(std::string_view text) {
  std::size_t count = 0;
  while (!text.empty()) {
    if (static_cast<unsigned char>(text[0]) < 0x80) {
      text.remove_prefix(1);
    } else {
      const Utf8Step step = DecodeUtf8(text);
      if (!step.valid) return std::nullopt;
      text.remove_prefix(step.length);
    }
    ++count;
  }
  return count;
}

std::size_t Utf8SequenceLength(std::string_view text) {
  const Utf8Step step = DecodeUtf8(text);
  return step.valid ? step.length : 0;
}

std::string FormatTimestamp(Micros micros) {
  std::string out;
  AppendTimestamp(out, micros);
  return out;
}

void AppendTimestamp(std::string& out, Micros micros) {
  micros = std::clamp(micros, kMinMicros, kMaxMicros);
  std::int64_t days = micros / kMicrosPerDay;
  Micros in_day = micros % kMicrosPerDay;
  if (in_day < 0) {
    in_day += kMicrosPerDay;
    --days;
  }
  const Civil civil = CivilFromDays(days);
  const auto seconds = static_cast<unsigned>(in_day / kMicrosPerSecond);
  const auto fraction = static_cast<unsigned>(in_day % kMicrosPerSecond);

  const std::size_t at = out.size();
  out.resize(at + 27);  // YYYY-MM-DDTHH:MM:SS.ffffffZ
  char* p = out.data() + at;
  WriteDigits(p, static_cast<unsigned>(civil.year), 4);
  p[4] = '-';
  WriteDigits(p + 5, civil.month, 2);
  p[7] = '-';
  WriteDigits(p + 8, civil.day, 2);
  p[10] = 'T';
  WriteDigits(p + 11, seconds / 3600, 2);
  p[13] = ':';
  WriteDigits(p + 14, seconds / 60 % 60, 2);
  p[16] = ':';
  WriteDigits(p + 17, seconds % 60, 2);
  p[19] = '.';
  WriteDigits(p + 20, fraction, 6);
  p[26] = 'Z';
}

std::optional<Micros> ParseTimestamp(std::string_view text) { return ParseDateTime(text, false); }

std::optional<Micros> ParseDateBound(std::string_view text, Bound bound) {
  if (text.size() != 10) return ParseTimestamp(text);
  Scanner in(text);
  Date date;
  if (!ScanDate(in, date) || !in.AtEnd()) return std::nullopt;
  const Micros start = StartOfDay(date);
  return bound == Bound::kLower ? start : start + kMicrosPerDay - 1;
}

void NormaliseStoredTimestampInto(std::string_view text, std::string& out) {
  // Every record this service wrote is in its own format, which normalising
  // gives back unchanged (a valid timestamp formats to itself, an invalid one
  // is returned as it is): not parsed and formatted again, twice per listed item.
  if (!HasOwnTimestampShape(text)) {
    if (const auto micros = ParseDateTime(text, true)) {
      out = FormatTimestamp(*micros);
      return;
    }
  }
  out = text;
}

}  // namespace imgsvc::core
