#include "core/image.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace imgsvc::core {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

const Loc kLoc = {"body", "field"};

FieldError OnlyError(const Status& status) {
  EXPECT_EQ(status.code(), Code::kUnprocessable);
  EXPECT_EQ(status.field_errors().size(), 1u);
  return status.field_errors().empty() ? FieldError{} : status.field_errors()[0];
}

template <typename T>
FieldError OnlyError(const StatusOr<T>& result) {
  EXPECT_FALSE(result.ok());
  return OnlyError(result.status());
}

std::string Repeat(std::string_view unit, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += unit;
  return out;
}

// Formats -------------------------------------------------------------------

TEST(ImageFormatTest, NamesContentTypesAndExtensions) {
  struct Expected {
    ImageFormat format;
    std::string_view name, content_type, extension;
  };
  const Expected all[] = {
      {ImageFormat::kJpeg, "jpeg", "image/jpeg", ".jpg"}, {ImageFormat::kPng, "png", "image/png", ".png"},
      {ImageFormat::kGif, "gif", "image/gif", ".gif"},     {ImageFormat::kWebp, "webp", "image/webp", ".webp"},
      {ImageFormat::kAvif, "avif", "image/avif", ".avif"}, {ImageFormat::kHeic, "heic", "image/heic", ".heic"},
      {ImageFormat::kTiff, "tiff", "image/tiff", ".tiff"},
  };
  for (const auto& e : all) {
    EXPECT_EQ(FormatName(e.format), e.name);
    EXPECT_EQ(FormatContentType(e.format), e.content_type);
    EXPECT_EQ(FormatExtension(e.format), e.extension);
    EXPECT_EQ(FormatFromExtension(e.extension), e.format);
  }
  EXPECT_EQ(FormatFromExtension(".jpeg"), std::nullopt);
  EXPECT_EQ(FormatFromExtension(".JPG"), std::nullopt);
  EXPECT_EQ(FormatFromExtension("png"), std::nullopt);
  EXPECT_EQ(FormatFromExtension(""), std::nullopt);
}

TEST(ImageFormatTest, VisibilityNames) {
  EXPECT_EQ(VisibilityName(Visibility::kPublic), "public");
  EXPECT_EQ(VisibilityName(Visibility::kPrivate), "private");
}

TEST(StorageKeyTest, BuiltFromUserIdAndFormat) {
  const std::string id = "0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a11";
  EXPECT_EQ(StorageKeyFor("alice", id, ImageFormat::kPng), "images/alice/" + id + ".png");
  ImageRecord record;
  record.user_id = "bob@example.com";
  record.image_id = id;
  record.format = ImageFormat::kJpeg;
  record.filename = "../../etc/passwd";
  EXPECT_EQ(record.StorageKey(), "images/bob@example.com/" + id + ".jpg");
}

TEST(StorageKeyTest, AssignedIntoABufferReplacingWhatItHeld) {
  ImageRecord record;
  record.user_id = "alice";
  record.image_id = "0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a11";
  record.format = ImageFormat::kWebp;
  std::string key = "images/a-much-longer-user-id-from-the-record-before/ffffffff.gif";
  AssignStorageKey(key, record);
  EXPECT_EQ(key, record.StorageKey());
  record.user_id = "b";
  AssignStorageKey(key, record);
  EXPECT_EQ(key, record.StorageKey());
}

// user_id -------------------------------------------------------------------

TEST(ValidateUserIdTest, AcceptsTheAllowedCharacterSet) {
  EXPECT_TRUE(ValidateUserId("alice", kLoc).ok());
  EXPECT_TRUE(ValidateUserId("A.b_c@d-9", kLoc).ok());
  EXPECT_TRUE(ValidateUserId(std::string(kMaxUserIdChars, 'x'), kLoc).ok());
}

TEST(ValidateUserIdTest, RejectsLengthAndCharacters) {
  FieldError e = OnlyError(ValidateUserId("", kLoc));
  EXPECT_EQ(e.type, "string_too_short");
  EXPECT_EQ(e.loc, kLoc);

  e = OnlyError(ValidateUserId(std::string(kMaxUserIdChars + 1, 'x'), kLoc));
  EXPECT_EQ(e.type, "string_too_long");
  EXPECT_EQ(e.msg, "String should have at most 128 characters");

  for (const std::string_view bad :
       std::initializer_list<std::string_view>{"a:b", "a b", "a/b", "é", "a\nb", "a+b", std::string_view("a\0b", 3)}) {
    e = OnlyError(ValidateUserId(bad, kLoc));
    EXPECT_EQ(e.type, "string_pattern_mismatch") << bad;
  }
}

// category ------------------------------------------------------------------

TEST(ValidateCategoryTest, CountsCodePoints) {
  EXPECT_TRUE(ValidateCategory("animals", kLoc).ok());
  EXPECT_TRUE(ValidateCategory(Repeat("é", 64), kLoc).ok());  // 128 bytes, 64 characters
  const FieldError e = OnlyError(ValidateCategory(Repeat("é", 65), kLoc));
  EXPECT_EQ(e.type, "string_too_long");
  EXPECT_EQ(e.msg, "String should have at most 64 characters");
  EXPECT_EQ(e.loc, kLoc);
}

TEST(ValidateCategoryTest, RejectsEmptyAndInvalidUtf8) {
  EXPECT_EQ(OnlyError(ValidateCategory("", kLoc)).type, "string_too_short");
  EXPECT_EQ(OnlyError(ValidateCategory("caf\xc3", kLoc)).type, "string_unicode");
}

// tags ----------------------------------------------------------------------

TEST(ParseTagsTest, TrimsLowerCasesDropsEmptyAndDuplicates) {
  const auto tags = ParseTags(" Cat, cute ,CAT,,\tdog\n, ,cute", kLoc);
  ASSERT_TRUE(tags.ok());
  EXPECT_THAT(*tags, ElementsAre("cat", "cute", "dog"));
}

TEST(ParseTagsTest, EmptyInputsGiveNoTags) {
  EXPECT_THAT(*ParseTags("", kLoc), IsEmpty());
  EXPECT_THAT(*ParseTags(" , ,, ", kLoc), IsEmpty());
}

TEST(ParseTagsTest, LowerCasingIsAsciiOnly) {
  EXPECT_THAT(*ParseTags("ÄBC,ÉcoLE", kLoc), ElementsAre("Äbc", "École"));
}

TEST(ParseTagsTest, TwentyDistinctTagsAfterDeduplication) {
  std::string twenty, duplicated;
  for (int i = 0; i < 20; ++i) twenty += "t" + std::to_string(i) + ",";
  duplicated = twenty + twenty + "T0";
  EXPECT_EQ(ParseTags(twenty, kLoc)->size(), 20u);
  EXPECT_EQ(ParseTags(duplicated, kLoc)->size(), 20u);

  const FieldError e = OnlyError(ParseTags(twenty + "one-more", kLoc));
  EXPECT_EQ(e.type, "too_long");
  EXPECT_EQ(e.loc, kLoc);
}

TEST(ParseTagsTest, TagLengthIsCheckedInCodePointsNeverCut) {
  EXPECT_THAT(*ParseTags(std::string(64, 'a'), kLoc), ElementsAre(std::string(64, 'a')));
  EXPECT_THAT(*ParseTags(Repeat("ß", 64), kLoc), ElementsAre(Repeat("ß", 64)));
  EXPECT_EQ(OnlyError(ParseTags("ok," + std::string(65, 'a'), kLoc)).type, "string_too_long");
  // Trimming happens before the length check.
  EXPECT_TRUE(ParseTags("  " + std::string(64, 'a') + "  ", kLoc).ok());
}

TEST(ParseTagsTest, RejectsInvalidUtf8) {
  EXPECT_EQ(OnlyError(ParseTags("cat,\xff", kLoc)).type, "string_unicode");
}

TEST(NormaliseTagListTest, SameRulesAsCommaSeparated) {
  const auto tags = NormaliseTagList({" Cat ", "cat", "", "  ", "Dog"}, kLoc);
  ASSERT_TRUE(tags.ok());
  EXPECT_THAT(*tags, ElementsAre("cat", "dog"));
  EXPECT_THAT(*NormaliseTagList({}, kLoc), IsEmpty());
}

TEST(NormaliseTagListTest, ReportsBadItemsByIndex) {
  const auto result = NormaliseTagList({"ok", "a,b", std::string(65, 'x'), "\xc0\xaf"}, kLoc);
  ASSERT_FALSE(result.ok());
  const auto& errors = result.status().field_errors();
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].loc, (Loc{"body", "field", 1}));
  EXPECT_EQ(errors[0].type, "value_error");
  EXPECT_EQ(errors[1].loc, (Loc{"body", "field", 2}));
  EXPECT_EQ(errors[1].type, "string_too_long");
  EXPECT_EQ(errors[2].loc, (Loc{"body", "field", 3}));
  EXPECT_EQ(errors[2].type, "string_unicode");
}

TEST(NormaliseTagListTest, RejectsMoreThanTwentyDistinct) {
  std::vector<std::string> tags;
  for (int i = 0; i < 21; ++i) tags.push_back("tag" + std::to_string(i));
  const FieldError e = OnlyError(NormaliseTagList(tags, kLoc));
  EXPECT_EQ(e.type, "too_long");
  EXPECT_EQ(e.loc, kLoc);
  tags.back() = "TAG0";
  EXPECT_TRUE(NormaliseTagList(tags, kLoc).ok());
}

// visibility, ids, text -------------------------------------------------------

TEST(ParseVisibilityTest, ExactNamesOnly) {
  EXPECT_EQ(*ParseVisibility("public", kLoc), Visibility::kPublic);
  EXPECT_EQ(*ParseVisibility("private", kLoc), Visibility::kPrivate);
  for (const std::string_view bad : {"Public", "PRIVATE", " public", "", "shared"}) {
    EXPECT_EQ(OnlyError(ParseVisibility(bad, kLoc)).type, "enum") << bad;
  }
}

TEST(IsUuidTest, CanonicalFormEitherCase) {
  EXPECT_TRUE(IsUuid("0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a11"));
  EXPECT_TRUE(IsUuid("0B6F5C8E-6D2C-4C55-9A37-1F2D8F0C2A11"));
  EXPECT_FALSE(IsUuid(""));
  EXPECT_FALSE(IsUuid("0b6f5c8e6d2c4c559a371f2d8f0c2a11"));
  EXPECT_FALSE(IsUuid("{0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a11}"));
  EXPECT_FALSE(IsUuid("0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a1"));
  EXPECT_FALSE(IsUuid("0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a111"));
  EXPECT_FALSE(IsUuid("0b6f5c8e-6d2c-4c55-9a37_1f2d8f0c2a11"));
  EXPECT_FALSE(IsUuid("0b6f5c8g-6d2c-4c55-9a37-1f2d8f0c2a11"));
  EXPECT_FALSE(IsUuid("0b6f5c8-e6d2c-4c55-9a37-1f2d8f0c2a11"));
}

TEST(LowerAsciiTest, OnlyAsciiLetters) {
  EXPECT_EQ(LowerAscii("AbC-Z_09"), "abc-z_09");
  EXPECT_EQ(LowerAscii("ÉÀ"), "ÉÀ");
  EXPECT_EQ(LowerAscii(""), "");
}

TEST(LowerAsciiTest, ComparesIgnoringAsciiCaseOnly) {
  static_assert(LowerAsciiChar('Q') == 'q' && LowerAsciiChar('q') == 'q' && LowerAsciiChar('@') == '@');
  EXPECT_TRUE(EqualsIgnoreAsciiCase("Content-Type", "content-TYPE"));
  EXPECT_TRUE(EqualsIgnoreAsciiCase("", ""));
  EXPECT_FALSE(EqualsIgnoreAsciiCase("Host", "Hosts"));
  EXPECT_FALSE(EqualsIgnoreAsciiCase("É", "é"));  // UTF-8 letters are not folded
  EXPECT_FALSE(EqualsIgnoreAsciiCase("a[", "A{"));
}

TEST(Utf8LengthTest, CountsCodePoints) {
  EXPECT_EQ(Utf8Length(""), 0u);
  EXPECT_EQ(Utf8Length("abc"), 3u);
  EXPECT_EQ(Utf8Length("é"), 1u);
  EXPECT_EQ(Utf8Length("日本"), 2u);
  EXPECT_EQ(Utf8Length("😀x"), 2u);
  EXPECT_EQ(Utf8Length("\xed\x9f\xbf"), 1u);      // U+D7FF, last before surrogates
  EXPECT_EQ(Utf8Length("\xee\x80\x80"), 1u);      // U+E000, first after
  EXPECT_EQ(Utf8Length("\xf4\x8f\xbf\xbf"), 1u);  // U+10FFFF
  EXPECT_EQ(Utf8Length(std::string_view("\0", 1)), 1u);
}

TEST(Utf8SequenceLengthTest, MeasuresTheFirstSequenceOnlyWhenWellFormed) {
  EXPECT_EQ(Utf8SequenceLength("abc"), 1u);
  EXPECT_EQ(Utf8SequenceLength("\xc3\xa9x"), 2u);       // é, then more
  EXPECT_EQ(Utf8SequenceLength("\xe2\x82\xac"), 3u);   // €
  EXPECT_EQ(Utf8SequenceLength("\xf4\x8f\xbf\xbf"), 4u);  // U+10FFFF
  for (const std::string_view bad : {"\x80", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\xff"}) {
    EXPECT_EQ(Utf8SequenceLength(bad), 0u) << ::testing::PrintToString(std::string(bad));
  }
}

TEST(Utf8LengthTest, RejectsInvalidSequences) {
  for (const std::string_view bad : {
           "\x80",              // lone continuation
           "\xc0\x80",          // overlong NUL
           "\xc1\xbf",          // overlong
           "\xe0\x80\x80",      // overlong 3-byte
           "\xf0\x80\x80\x80",  // overlong 4-byte
           "\xed\xa0\x80",      // surrogate U+D800
           "\xed\xbf\xbf",      // surrogate U+DFFF
           "\xf4\x90\x80\x80",  // U+110000
           "\xf5\x80\x80\x80",  // beyond the range
           "\xff",
           "\xe2\x82",          // truncated
           "a\xe2\x82",         // truncated at the end
           "\xc3\x28",          // bad continuation
       }) {
    EXPECT_EQ(Utf8Length(bad), std::nullopt) << ::testing::PrintToString(bad);
  }
}

// filenames -------------------------------------------------------------------

TEST(SanitiseFilenameTest, KeepsTheLastPathComponent) {
  EXPECT_EQ(SanitiseFilename("cat.png"), "cat.png");
  EXPECT_EQ(SanitiseFilename("dir/sub\\cat.png"), "cat.png");
  EXPECT_EQ(SanitiseFilename("C:\\Users\\me\\a.jpg"), "a.jpg");
  EXPECT_EQ(SanitiseFilename("../../etc/passwd"), "passwd");
  EXPECT_EQ(SanitiseFilename("back\\slash/"), "upload");
  EXPECT_EQ(SanitiseFilename(""), "upload");
}

TEST(SanitiseFilenameTest, RemovesControlCharacters) {
  EXPECT_EQ(SanitiseFilename("a\x01" "b\x7f" "c\n\td\xc2\x85" "e\xc2\x9f.png"), "abcde.png");
  EXPECT_EQ(SanitiseFilename("\x01\x02\x1f"), "upload");
  EXPECT_EQ(SanitiseFilename("\xc2\xa0nbsp\xc3\xa9.png"), "\xc2\xa0nbsp\xc3\xa9.png");  // U+00A0 is not C1
}

TEST(SanitiseFilenameTest, ReplacesInvalidUtf8) {
  EXPECT_EQ(SanitiseFilename("a\xff" "b"), "a\xEF\xBF\xBD" "b");
  // One replacement per maximal subpart, as Python's errors="replace".
  EXPECT_EQ(SanitiseFilename("a\xe2\x82" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(SanitiseFilename("\xc0\xaf"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(SanitiseFilename("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(Utf8Length(SanitiseFilename("\xf0\x9f\x98" "\x80\x80\xfe.png")).has_value());
}

TEST(SanitiseFilenameTest, CutsAtMost255BytesOnACharacterBoundary) {
  EXPECT_EQ(SanitiseFilename(std::string(300, 'a')), std::string(255, 'a'));
  EXPECT_EQ(SanitiseFilename(std::string(254, 'a') + "é"), std::string(254, 'a'));
  EXPECT_EQ(SanitiseFilename(Repeat("日", 85)), Repeat("日", 85));  // exactly 255 bytes
  EXPECT_EQ(SanitiseFilename(Repeat("日", 86)), Repeat("日", 85));
  EXPECT_EQ(SanitiseFilename(std::string(253, 'a') + "😀"), std::string(253, 'a'));
  // Removed control characters do not count.
  EXPECT_EQ(SanitiseFilename(std::string(100, '\x01') + std::string(255, 'b')), std::string(255, 'b'));
}

// Timestamps --------------------------------------------------------------------

// Reference conversion through the standard library's calendar.
std::string ReferenceFormat(Micros micros) {
  using namespace std::chrono;
  const sys_time<microseconds> t{microseconds(micros)};
  const sys_days day = floor<days>(t);
  const year_month_day ymd(day);
  const hh_mm_ss<microseconds> tod(t - day);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02lldZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<long>(tod.hours().count()), static_cast<long>(tod.minutes().count()),
                static_cast<long long>(tod.seconds().count()));
  std::string out(buf);
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%06lld", static_cast<long long>(tod.subseconds().count()));
  out.insert(19, frac);
  return out;
}

TEST(FormatTimestampTest, AppendsAfterWhatIsThere) {
  std::string out = "{\"time\":\"";
  AppendTimestamp(out, 1795629600123456);
  out += "\"";
  AppendTimestamp(out, -1);
  EXPECT_EQ(out, "{\"time\":\"2026-11-25T18:00:00.123456Z\"1969-12-31T23:59:59.999999Z");
}

TEST(FormatTimestampTest, FixedWidthUtcWithMicros) {
  EXPECT_EQ(FormatTimestamp(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(FormatTimestamp(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(FormatTimestamp(1795629600123456), "2026-11-25T18:00:00.123456Z");
  EXPECT_EQ(FormatTimestamp(1709251199999999), "2024-02-29T23:59:59.999999Z");
}

TEST(FormatTimestampTest, MatchesTheStandardCalendarAcrossYears0To9999) {
  std::mt19937_64 rng(42);
  const Micros lo = *ParseTimestamp("0000-01-01T00:00:00Z");
  const Micros hi = *ParseTimestamp("9999-12-31T23:59:59.999999Z");
  std::uniform_int_distribution<Micros> dist(lo, hi);
  for (int i = 0; i < 20000; ++i) {
    const Micros t = dist(rng);
    const std::string formatted = FormatTimestamp(t);
    ASSERT_EQ(formatted, ReferenceFormat(t));
    ASSERT_EQ(ParseTimestamp(formatted), t);
  }
  EXPECT_EQ(FormatTimestamp(lo), "0000-01-01T00:00:00.000000Z");
  EXPECT_EQ(FormatTimestamp(hi), "9999-12-31T23:59:59.999999Z");
}

TEST(ParseTimestampTest, AcceptsRfc3339Variants) {
  const Micros t = *ParseTimestamp("2026-11-25T18:00:00.123456Z");
  EXPECT_EQ(t, 1795629600123456);
  EXPECT_EQ(ParseTimestamp("2026-11-25t18:00:00.123456z"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-25 18:00:00.123456Z"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-25T19:30:00.123456+01:30"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-25T16:00:00.123456-02:00"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-25T18:00:00.123456-00:00"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-25T18:00:00Z"), t - 123456);
  EXPECT_EQ(ParseTimestamp("2026-11-25T18:00:00.1Z"), t - 23456);
  // Beyond microseconds the digits are truncated.
  EXPECT_EQ(ParseTimestamp("2026-11-25T18:00:00.123456999Z"), t);
  EXPECT_EQ(ParseTimestamp("2024-02-29T00:00:00Z").has_value(), true);
  EXPECT_EQ(ParseTimestamp("2000-02-29T00:00:00Z").has_value(), true);
}

TEST(ParseTimestampTest, RejectsEverythingElse) {
  for (const std::string_view bad : {
           "", "2026-11-25", "2026-11-25T18:00Z", "2026-11-25T18:00:00", "2026-11-25T18:00:00.Z",
           "2026-11-25T18:00:00.1234567890Z", "2026-11-25X18:00:00Z", " 2026-11-25T18:00:00Z",
           "2026-11-25T18:00:00Z ", "2026-11-25T18:00:00ZZ", "2026-1-25T18:00:00Z", "26-11-25T18:00:00Z",
           "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-04-31T00:00:00Z", "2026-11-00T00:00:00Z",
           "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2026-11-25T24:00:00Z", "2026-11-25T23:60:00Z",
           "2026-11-25T23:59:60Z", "2026-11-25T18:00:00+24:00", "2026-11-25T18:00:00+05:60",
           "2026-11-25T18:00:00+0500", "2026-11-25T18:00:00+05", "2026-11-25T18:00:00 +05:00",
           "+2026-11-25T18:00:00Z", "2026-11-25T18:00:00.+1Z", "0000-01-01T00:00:00+00:01",
           "2026-11-25T1a:00:00Z",
       }) {
    EXPECT_EQ(ParseTimestamp(bad), std::nullopt) << bad;
  }
}

TEST(ParseDateBoundTest, DatesCoverTheWholeUtcDay) {
  EXPECT_EQ(ParseDateBound("2024-02-29", Bound::kLower), ParseTimestamp("2024-02-29T00:00:00Z"));
  EXPECT_EQ(ParseDateBound("2024-02-29", Bound::kUpper), ParseTimestamp("2024-02-29T23:59:59.999999Z"));
  EXPECT_EQ(ParseDateBound("2024-02-29T12:00:00+02:00", Bound::kUpper), ParseTimestamp("2024-02-29T10:00:00Z"));
  EXPECT_EQ(ParseDateBound("2024-02-29T12:00:00Z", Bound::kLower), ParseTimestamp("2024-02-29T12:00:00Z"));
}

TEST(ParseDateBoundTest, RejectsInvalidDates) {
  for (const std::string_view bad : {"2023-02-29", "2024-1-01", "2024-01-1", "20240101", "2024/01/01", "",
                                     "2024-01-01T", "yesterday", "2024-01-01Z"}) {
    EXPECT_EQ(ParseDateBound(bad, Bound::kLower), std::nullopt) << bad;
  }
}

// Into a string holding something else, as a listing's reused record does.
std::string NormaliseStoredTimestamp(std::string_view text) {
  std::string out = "an earlier record's timestamp";
  NormaliseStoredTimestampInto(text, out);
  return out;
}

TEST(NormaliseStoredTimestampTest, ReadsPythonIsoformatStrings) {
  EXPECT_EQ(NormaliseStoredTimestamp("2024-01-02T03:04:05.123456"), "2024-01-02T03:04:05.123456Z");
  EXPECT_EQ(NormaliseStoredTimestamp("2024-01-02T03:04:05"), "2024-01-02T03:04:05.000000Z");
  EXPECT_EQ(NormaliseStoredTimestamp("2024-01-02T03:04:05.123456+00:00"), "2024-01-02T03:04:05.123456Z");
  EXPECT_EQ(NormaliseStoredTimestamp("2024-01-02T05:04:05.5+02:00"), "2024-01-02T03:04:05.500000Z");
  EXPECT_EQ(NormaliseStoredTimestamp("2024-01-02 03:04:05.123"), "2024-01-02T03:04:05.123000Z");
  EXPECT_EQ(NormaliseStoredTimestamp("2024-01-02T03:04:05.123456Z"), "2024-01-02T03:04:05.123456Z");
}

// Text in the service's own format is returned without parsing. That is
// only right because such text formats to itself when it is valid (and is
// left unchanged when it is not): checked over random digits in every place.
TEST(NormaliseStoredTimestampTest, OwnFormatComesBackUnchangedValidOrNot) {
  std::mt19937 random(20261127);
  std::vector<std::string> samples = {"2024-02-29T23:59:59.999999Z", "2023-02-29T00:00:00.000000Z",
                                      "2024-13-01T00:00:00.000000Z", "2024-01-01T24:00:00.000000Z",
                                      "0000-01-01T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z",
                                      "1970-01-01T00:00:00.000000Z"};
  for (int i = 0; i < 20000; ++i) {
    std::string text = "0000-00-00T00:00:00.000000Z";
    for (char& c : text) {
      if (c == '0') c = static_cast<char>('0' + random() % 10);
    }
    samples.push_back(text);
    // and a valid one, anywhere from 1970 to 2100
    samples.push_back(
        FormatTimestamp(static_cast<Micros>(random() % 4'102'444'800) * 1'000'000 + random() % 1'000'000));
  }
  int valid = 0;
  for (const std::string& text : samples) {
    EXPECT_EQ(NormaliseStoredTimestamp(text), text);
    if (const std::optional<Micros> micros = ParseTimestamp(text)) {
      ++valid;
      EXPECT_EQ(FormatTimestamp(*micros), text);
    }
  }
  EXPECT_GE(valid, 20000) << "the samples should include valid timestamps";
}

TEST(NormaliseStoredTimestampTest, LeavesUnparseableInputUnchanged) {
  EXPECT_EQ(NormaliseStoredTimestamp("not a time"), "not a time");
  EXPECT_EQ(NormaliseStoredTimestamp("2024-02-30T00:00:00"), "2024-02-30T00:00:00");
  EXPECT_EQ(NormaliseStoredTimestamp(""), "");
}

}  // namespace
}  // namespace imgsvc::core
