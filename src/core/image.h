// The image record and the validation of everything a client may send.
//
// The record is the API's unit (see API.md "The image record"). Validation
// functions turn raw client text into normalised values or a 422 Status whose
// FieldError carries the `loc` the caller passes in, so the same rules serve
// multipart fields, JSON bodies and query parameters.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/status.h"

namespace imgsvc::core {

enum class ImageFormat { kJpeg, kPng, kGif, kWebp, kAvif, kHeic, kTiff };

// "jpeg", "png", ... as used in the record's `format` field.
std::string_view FormatName(ImageFormat format);
// "image/jpeg", ... the content type served for the format.
std::string_view FormatContentType(ImageFormat format);
// ".jpg", ".png", ".gif", ".webp", ".avif", ".heic", ".tiff": storage key suffix.
std::string_view FormatExtension(ImageFormat format);
// The format whose extension (with dot) is `ext`, e.g. for serving a key.
std::optional<ImageFormat> FormatFromExtension(std::string_view ext);

enum class Visibility { kPrivate, kPublic };
std::string_view VisibilityName(Visibility v);  // "private" / "public"

struct ImageRecord {
  std::string image_id;  // UUIDv4, lower-case canonical form
  std::string user_id;
  std::string filename;
  ImageFormat format = ImageFormat::kJpeg;
  std::uint64_t size_bytes = 0;
  std::uint32_t width = 0;
  std::uint32_t height = 0;
  std::string sha256;  // 64 lower-case hex chars
  std::optional<std::string> category;
  std::vector<std::string> tags;
  Visibility visibility = Visibility::kPrivate;
  std::string created_at;  // RFC 3339 UTC, microseconds, "...Z" (fixed width)
  std::string updated_at;

  // images/{user_id}/{image_id}{.ext}
  std::string StorageKey() const;
  friend bool operator==(const ImageRecord&, const ImageRecord&) = default;
};

// The storage key of an image (API.md "Storage layout").
std::string StorageKeyFor(std::string_view user_id, std::string_view image_id, ImageFormat format);
// The same key in `out`, replacing its contents: a loop over a page's
// records reuses one buffer instead of allocating a key per record.
void AssignStorageKey(std::string& out, const ImageRecord& record);

// A `loc` path for FieldError, e.g. {"body", "user_id"}.
using Loc = std::vector<std::variant<std::string, int>>;

// Limits from API.md.
inline constexpr std::size_t kMaxUserIdChars = 128;
inline constexpr std::size_t kMaxCategoryChars = 64;
inline constexpr std::size_t kMaxTags = 20;
inline constexpr std::size_t kMaxTagChars = 64;
inline constexpr std::size_t kMaxFilenameBytes = 255;

// 1-128 characters of A-Z a-z 0-9 . _ @ -
Status ValidateUserId(std::string_view user_id, const Loc& loc);
// 1-64 code points of valid UTF-8, stored as given.
Status ValidateCategory(std::string_view category, const Loc& loc);
// Comma-separated tags: each trimmed (ASCII whitespace), ASCII-lower-cased,
// empty ones dropped, duplicates dropped keeping the first; more than 20 tags
// or a tag over 64 code points is 422. Invalid UTF-8 is 422.
StatusOr<std::vector<std::string>> ParseTags(std::string_view comma_separated, const Loc& loc);
// The same rules for a JSON array of tags; a tag containing ',' is 422
// (it could never be filtered by the comma-separated `tags` query).
StatusOr<std::vector<std::string>> NormaliseTagList(const std::vector<std::string>& tags, const Loc& loc);
// "public" / "private" (exact), else 422.
StatusOr<Visibility> ParseVisibility(std::string_view text, const Loc& loc);
// True for a canonical UUID (8-4-4-4-12 hex, either case); Normalised form is lower-case.
bool IsUuid(std::string_view text);
// 'A'-'Z' as 'a'-'z', every other byte as it is (never the locale's rules):
// header names, schemes, host names, media types.
constexpr char LowerAsciiChar(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
std::string LowerAscii(std::string_view text);
// Equal but for ASCII letter case.
bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b);
// Last path component after '/' and '\', control characters (C0, DEL, C1)
// removed, invalid UTF-8 sequences replaced by U+FFFD, cut to at most 255
// bytes on a character boundary. Empty results become "upload".
std::string SanitiseFilename(std::string_view client_name);
// Number of code points in valid UTF-8, nullopt if invalid.
std::optional<std::size_t> Utf8Length(std::string_view text);
// The length of the well-formed UTF-8 sequence `text` starts with (no
// overlong forms, no surrogates, nothing above U+10FFFF), or 0; `text` must
// not be empty.
std::size_t Utf8SequenceLength(std::string_view text);

// Timestamps ---------------------------------------------------------------

// Microseconds since the Unix epoch, UTC.
using Micros = std::int64_t;
// "2026-11-25T18:00:00.123456Z"
std::string FormatTimestamp(Micros micros);
// The same, appended to `out` (a log line, a JSON document).
void AppendTimestamp(std::string& out, Micros micros);
// Parses RFC 3339 date-times (any offset, optional fraction up to 9 digits,
// 'T' or 't' or ' ' separator, 'Z' or 'z' or +hh:mm) into UTC micros.
std::optional<Micros> ParseTimestamp(std::string_view text);
// A listing bound: RFC 3339 date-time, or YYYY-MM-DD meaning the whole UTC day
// (start of day for a lower bound, its last microsecond for an upper bound).
enum class Bound { kLower, kUpper };
std::optional<Micros> ParseDateBound(std::string_view text, Bound bound);
// Normalises timestamps written by the original service (other formats, e.g.
// "2024-01-02T03:04:05.123456" without zone, "+00:00" offsets) to our format;
// gives the input unchanged when it cannot be parsed. Into `out`, which it
// overwrites (a listing reuses its records' strings).
void NormaliseStoredTimestampInto(std::string_view text, std::string& out);

}  // namespace imgsvc::core
