#include "http/multipart.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace imgsvc::http {
namespace {

constexpr std::string_view kBoundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";

// Hands out a string at most `chunk` bytes per read, then an optional error
// instead of the end of the body.
class ChunkedBody final : public BodySource {
 public:
  ChunkedBody(std::string data, std::size_t chunk, Status error_at_end = Status::Ok())
      : data_(std::move(data)), chunk_(chunk), error_at_end_(std::move(error_at_end)) {}
  StatusOr<std::size_t> Read(std::span<std::byte> out) override {
    if (offset_ == data_.size() && !error_at_end_.ok()) return error_at_end_;
    const std::size_t n = std::min({out.size(), chunk_, data_.size() - offset_});
    std::memcpy(out.data(), data_.data() + offset_, n);
    offset_ += n;
    return n;
  }

 private:
  std::string data_;
  std::size_t chunk_;
  std::size_t offset_ = 0;
  Status error_at_end_;
};

struct ParsedPart {
  core::FormPart part;
  std::string data;
};

struct ParsedForm {
  Status status;
  std::vector<ParsedPart> parts;
};

// Reads every part completely.
ParsedForm ParseForm(BodySource& body, MultipartLimits limits = {}, std::string_view boundary = kBoundary) {
  MultipartForm form(body, std::string(boundary), limits);
  ParsedForm result;
  for (;;) {
    auto part = form.NextPart();
    if (!part.ok()) {
      result.status = part.status();
      return result;
    }
    if (!part->has_value()) return result;
    ParsedPart parsed{**part, {}};
    for (;;) {
      auto data = form.ReadPart();
      if (!data.ok()) {
        result.status = data.status();
        return result;
      }
      if (data->empty()) break;
      parsed.data.append(reinterpret_cast<const char*>(data->data()), data->size());
    }
    result.parts.push_back(std::move(parsed));
  }
}

ParsedForm ParseString(std::string body, std::size_t chunk = 64 * 1024, MultipartLimits limits = {}) {
  ChunkedBody source(std::move(body), chunk);
  return ParseForm(source, limits);
}

// One part as clients write it.
std::string Part(std::string_view headers, std::string_view data) {
  return "--" + std::string(kBoundary) + "\r\n" + std::string(headers) + "\r\n\r\n" + std::string(data) + "\r\n";
}
std::string Close() { return "--" + std::string(kBoundary) + "--\r\n"; }

std::string Field(std::string_view name, std::string_view value) {
  return Part("Content-Disposition: form-data; name=\"" + std::string(name) + "\"", value);
}
std::string File(std::string_view name, std::string_view filename, std::string_view type, std::string_view data) {
  return Part("Content-Disposition: form-data; name=\"" + std::string(name) + "\"; filename=\"" +
                  std::string(filename) + "\"\r\nContent-Type: " + std::string(type),
              data);
}

void ExpectBadRequest(const ParsedForm& form, std::string_view message) {
  EXPECT_EQ(form.status.code(), Code::kBadRequest) << form.status.ToString();
  EXPECT_EQ(form.status.message(), message);
}

// --- MultipartBoundary -------------------------------------------------------

TEST(MultipartBoundary, AcceptsTokenAndQuotedForms) {
  EXPECT_EQ(MultipartBoundary("multipart/form-data; boundary=abc123").value(), "abc123");
  EXPECT_EQ(MultipartBoundary("multipart/form-data;boundary=\"a b:c?\"").value(), "a b:c?");
  EXPECT_EQ(MultipartBoundary("Multipart/Form-Data ; charset=utf-8 ;\tBOUNDARY=x-y ; foo=\"bar\"").value(), "x-y");
  EXPECT_EQ(MultipartBoundary("multipart/form-data; boundary=\"a\\bc\"").value(), "abc");
  EXPECT_EQ(MultipartBoundary("multipart/form-data; boundary=" + std::string(70, 'b')).value(), std::string(70, 'b'));
}

TEST(MultipartBoundary, RejectsOtherMediaTypes) {
  for (std::string_view type : {"text/plain; boundary=x", "multipart/mixed; boundary=x", "", "multipart/form-data2"}) {
    auto boundary = MultipartBoundary(type);
    ASSERT_FALSE(boundary.ok()) << type;
    EXPECT_EQ(boundary.status().code(), Code::kBadRequest);
    EXPECT_EQ(boundary.status().message(), "Expected multipart/form-data");
  }
}

TEST(MultipartBoundary, RejectsMissingBoundary) {
  for (std::string_view type : {"multipart/form-data", "multipart/form-data;", "multipart/form-data; charset=utf-8"}) {
    auto boundary = MultipartBoundary(type);
    ASSERT_FALSE(boundary.ok()) << type;
    EXPECT_EQ(boundary.status().code(), Code::kBadRequest);
    EXPECT_EQ(boundary.status().message(), "Missing multipart boundary");
  }
}

TEST(MultipartBoundary, RejectsInvalidBoundary) {
  for (std::string type : {std::string("multipart/form-data; boundary="),
                           std::string("multipart/form-data; boundary=\"\""),
                           "multipart/form-data; boundary=" + std::string(71, 'b'),
                           std::string("multipart/form-data; boundary=\"ends with space \""),
                           std::string("multipart/form-data; boundary=\"semi;colon\""),
                           std::string("multipart/form-data; boundary=\"unterminated"),
                           std::string("multipart/form-data; boundary=a; boundary=b"),
                           std::string("multipart/form-data; boundary=a b")}) {
    auto boundary = MultipartBoundary(type);
    ASSERT_FALSE(boundary.ok()) << type;
    EXPECT_EQ(boundary.status().code(), Code::kBadRequest);
    EXPECT_EQ(boundary.status().message(), "Invalid multipart boundary") << type;
  }
}

// --- Body structure ----------------------------------------------------------

std::string SampleBody() {
  return "This is a preamble.\r\n" + Field("user_id", "alice") +
         File("files", "a.jpg", "image/jpeg", "\xff\xd8\r\n\r\n--not-the-boundary\r\r\n-") +
         File("files", "b.png", "image/png", "") + Field("tags", "x,y") + Field("empty", "") + Close() +
         "epilogue --" + std::string(kBoundary) + "\r\n garbage";
}

void ExpectSampleParts(const ParsedForm& form) {
  ASSERT_TRUE(form.status.ok()) << form.status.ToString();
  ASSERT_EQ(form.parts.size(), 5u);
  EXPECT_EQ(form.parts[0].part.name, "user_id");
  EXPECT_FALSE(form.parts[0].part.filename.has_value());
  EXPECT_EQ(form.parts[0].part.content_type, "text/plain");
  EXPECT_EQ(form.parts[0].data, "alice");
  EXPECT_EQ(form.parts[1].part.name, "files");
  EXPECT_EQ(form.parts[1].part.filename, "a.jpg");
  EXPECT_EQ(form.parts[1].part.content_type, "image/jpeg");
  EXPECT_EQ(form.parts[1].data, "\xff\xd8\r\n\r\n--not-the-boundary\r\r\n-");
  EXPECT_EQ(form.parts[2].part.filename, "b.png");
  EXPECT_EQ(form.parts[2].data, "");
  EXPECT_EQ(form.parts[3].part.name, "tags");
  EXPECT_EQ(form.parts[3].data, "x,y");
  EXPECT_EQ(form.parts[4].part.name, "empty");
  EXPECT_EQ(form.parts[4].data, "");
}

TEST(MultipartForm, ParsesFieldsAndFilesWithPreambleAndEpilogue) { ExpectSampleParts(ParseString(SampleBody())); }

TEST(MultipartForm, SameResultForEveryReadSplit) {
  for (std::size_t chunk : {1, 2, 3, 7, 64 * 1024}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    ExpectSampleParts(ParseString(SampleBody(), chunk));
  }
}

TEST(MultipartForm, DelimiterSplitAtEveryOffsetOfAFullRead) {
  // The first 64 KiB read of the body ends at every offset of the closing delimiter.
  const std::string head = Part("Content-Disposition: form-data; name=\"f\"", "");
  const std::string head_without_crlf = head.substr(0, head.size() - 2);
  const std::string tail = "\r\n" + Close();
  for (std::size_t cut = 0; cut <= tail.size(); ++cut) {
    const std::size_t size = MultipartForm::kReadSize - head_without_crlf.size() - cut;
    auto form = ParseString(head_without_crlf + std::string(size, 'd') + tail);
    ASSERT_TRUE(form.status.ok()) << form.status.ToString();
    ASSERT_EQ(form.parts.size(), 1u);
    EXPECT_EQ(form.parts[0].data, std::string(size, 'd'));
  }
}

TEST(MultipartForm, DataMayLookLikeADelimiterWithoutBeingOne) {
  const std::string b(kBoundary);
  const std::vector<std::string> tricky = {
      "x--" + b + "\r\n",                  // not preceded by CRLF
      "\n--" + b + "\n",                   // bare LF is data
      "\r\n--" + b.substr(0, b.size() - 1),  // cut short
      "\r\n-" + b,                         // one dash
      "ends with CR\r",
      "ends with CRLF dash\r\n-",
      "ends with CRLF dash dash\r\n--",
      "\r\r\r\n\r\n\r\n--",
  };
  for (const std::string& data : tricky) {
    for (std::size_t chunk : {1, 3, 64 * 1024}) {
      auto form = ParseString(Field("a", data) + Field("b", data) + Close(), chunk);
      ASSERT_TRUE(form.status.ok()) << form.status.ToString();
      ASSERT_EQ(form.parts.size(), 2u);
      EXPECT_EQ(form.parts[0].data, data);
      EXPECT_EQ(form.parts[1].data, data);
    }
  }
}

TEST(MultipartForm, BodyMayStartWithoutPreambleOrCrlf) {
  auto form = ParseString(Field("a", "1") + Close());
  ASSERT_TRUE(form.status.ok());
  ASSERT_EQ(form.parts.size(), 1u);
  EXPECT_EQ(form.parts[0].data, "1");
}

TEST(MultipartForm, AcceptsTransportPaddingAndBareLfAfterBoundaries) {
  const std::string b(kBoundary);
  const std::string body = "--" + b + " \t \r\nContent-Disposition: form-data; name=\"a\"\n\n1\r\n--" + b +
                           "\t\ncontent-disposition: form-data; name=b\r\n\r\n2\r\n--" + b + "--";
  for (std::size_t chunk : {1, 64 * 1024}) {
    auto form = ParseString(body, chunk);
    ASSERT_TRUE(form.status.ok()) << form.status.ToString();
    ASSERT_EQ(form.parts.size(), 2u);
    EXPECT_EQ(form.parts[0].data, "1");
    EXPECT_EQ(form.parts[1].part.name, "b");
    EXPECT_EQ(form.parts[1].data, "2");
  }
}

TEST(MultipartForm, RejectsGarbageAfterBoundary) {
  const std::string b(kBoundary);
  for (std::string body : {"--" + b + "x\r\n", "--" + b + "-x", "--" + b + " --", "--" + b + "\rx"}) {
    for (std::size_t chunk : {1, 64 * 1024}) {
      ExpectBadRequest(ParseString(body + Close(), chunk), "Malformed multipart boundary line");
    }
  }
}

TEST(MultipartForm, TruncatedAtEveryPositionIsBadRequest) {
  const std::string body = SampleBody();
  const std::size_t complete = body.find(Close()) + Close().size() - 2;  // "--boundary--" seen
  for (std::size_t length = 0; length < complete; ++length) {
    for (std::size_t chunk : {1, 64 * 1024}) {
      SCOPED_TRACE("length " + std::to_string(length) + " chunk " + std::to_string(chunk));
      ExpectBadRequest(ParseString(body.substr(0, length), chunk), "Truncated multipart body");
    }
  }
  EXPECT_TRUE(ParseString(body.substr(0, complete)).status.ok());
}

TEST(MultipartForm, BodyWithoutBoundaryIsTruncated) {
  ExpectBadRequest(ParseString("just some text\r\n--other--\r\n"), "Truncated multipart body");
}

// --- Part headers ------------------------------------------------------------

TEST(MultipartForm, HeaderNamesAndParametersAreCaseInsensitive) {
  auto form = ParseString(Part("CONTENT-DISPOSITION: Form-Data; NAME=\"n\"; FileName=\"f.gif\"\r\n"
                               "content-TYPE:image/gif\r\nX-Other: ignored",
                               "GIF") +
                          Close());
  ASSERT_TRUE(form.status.ok()) << form.status.ToString();
  ASSERT_EQ(form.parts.size(), 1u);
  EXPECT_EQ(form.parts[0].part.name, "n");
  EXPECT_EQ(form.parts[0].part.filename, "f.gif");
  EXPECT_EQ(form.parts[0].part.content_type, "image/gif");
}

TEST(MultipartForm, QuotedAndTokenValues) {
  auto form = ParseString(Part("Content-Disposition: form-data; name=plain; filename=\"C:\\photos\\say \\\"hi\\\".jpg\"",
                               "") +
                          Part("Content-Disposition: form-data ; name = \"x;y\" ;", "") + Close());
  ASSERT_TRUE(form.status.ok()) << form.status.ToString();
  ASSERT_EQ(form.parts.size(), 2u);
  EXPECT_EQ(form.parts[0].part.name, "plain");
  EXPECT_EQ(form.parts[0].part.filename, "C:\\photos\\say \"hi\".jpg");
  EXPECT_EQ(form.parts[1].part.name, "x;y");
}

TEST(MultipartForm, FileContentTypeDefaultsToOctetStream) {
  auto form = ParseString(Part("Content-Disposition: form-data; name=\"f\"; filename=\"\"", "") +
                          Part("Content-Disposition: form-data; name=\"t\"\r\nContent-Type: text/csv", "a,b") +
                          Close());
  ASSERT_TRUE(form.status.ok()) << form.status.ToString();
  ASSERT_EQ(form.parts.size(), 2u);
  EXPECT_EQ(form.parts[0].part.filename, "");
  EXPECT_EQ(form.parts[0].part.content_type, "application/octet-stream");
  EXPECT_EQ(form.parts[1].part.content_type, "text/csv");
}

TEST(MultipartForm, ExtendedFilenameIsDecodedAndPreferred) {
  auto form = ParseString(
      Part("Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''%E2%82%AC%20rates.jpg; filename=\"EUR.jpg\"",
           "") +
      Part("Content-Disposition: form-data; name=\"g\"; filename*=iso-8859-1'de'%E4pfel.png", "") +
      Part("Content-Disposition: form-data; name=\"h\"; filename=\"only.png\"", "") + Close());
  ASSERT_TRUE(form.status.ok()) << form.status.ToString();
  ASSERT_EQ(form.parts.size(), 3u);
  EXPECT_EQ(form.parts[0].part.filename, "\xE2\x82\xAC rates.jpg");
  EXPECT_EQ(form.parts[1].part.filename, "\xC3\xA4pfel.png");
  EXPECT_EQ(form.parts[2].part.filename, "only.png");
}

TEST(MultipartForm, RejectsInvalidExtendedFilename) {
  for (std::string_view value : {"UTF-8''%E2%8", "UTF-8''%zz", "koi8-r''abc", "no-quotes"}) {
    ExpectBadRequest(
        ParseString(Part("Content-Disposition: form-data; name=\"f\"; filename*=" + std::string(value), "") + Close()),
        "Invalid filename* in multipart Content-Disposition");
  }
}

TEST(MultipartForm, RejectsPartsThatAreNotNamedFormData) {
  ExpectBadRequest(ParseString(Part("Content-Type: text/plain", "x") + Close()),
                   "Multipart part without Content-Disposition: form-data");
  ExpectBadRequest(ParseString("--" + std::string(kBoundary) + "\r\n\r\nx\r\n" + Close()),
                   "Multipart part without Content-Disposition: form-data");
  ExpectBadRequest(ParseString(Part("Content-Disposition: attachment; name=\"a\"", "x") + Close()),
                   "Multipart part is not form-data");
  ExpectBadRequest(ParseString(Part("Content-Disposition: form-data; filename=\"a.jpg\"", "x") + Close()),
                   "Multipart part without a name");
  ExpectBadRequest(ParseString(Part("Content-Disposition: form-data", "x") + Close()),
                   "Multipart part without a name");
}

TEST(MultipartForm, RejectsMalformedHeaders) {
  ExpectBadRequest(ParseString(Part("Content-Disposition: form-data; name=\"a\"\r\nno colon", "") + Close()),
                   "Malformed multipart part header");
  ExpectBadRequest(ParseString(Part("Content-Disposition: form-data; name=\"a\r\"", "") + Close()),
                   "Malformed multipart part header");
  ExpectBadRequest(ParseString(Part("Content-Disposition: form-data; name=\"a", "") + Close()),
                   "Malformed multipart Content-Disposition");
  ExpectBadRequest(ParseString(Part("Content-Disposition: form-data; name=\"a\"; name=\"b\"", "") + Close()),
                   "Malformed multipart Content-Disposition");
  ExpectBadRequest(ParseString(Part("Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; "
                                    "name=b",
                                    "") +
                               Close()),
                   "Duplicate Content-Disposition in multipart part");
}

TEST(MultipartForm, HeaderSectionIsLimited) {
  const std::string disposition = "Content-Disposition: form-data; name=\"a\"\r\nX-Pad: ";
  const std::size_t limit = 200;
  // The header section counts every byte from after the boundary line through the blank line.
  const std::string fits = disposition + std::string(limit - disposition.size() - 4, 'p');
  const std::string too_large = fits + "p";
  for (std::size_t chunk : {1, 64 * 1024}) {
    auto ok = ParseString(Part(fits, "x") + Close(), chunk, {.max_part_header_bytes = limit});
    EXPECT_TRUE(ok.status.ok()) << ok.status.ToString();
    ExpectBadRequest(ParseString(Part(too_large, "x") + Close(), chunk, {.max_part_header_bytes = limit}),
                     "Multipart part headers too large");
  }
  // An endless header line fails without being buffered.
  ExpectBadRequest(ParseString("--" + std::string(kBoundary) + "\r\n" + std::string(1 << 20, 'h')),
                   "Multipart part headers too large");
}

TEST(MultipartForm, PartCountIsLimited) {
  std::string body;
  for (int i = 0; i < 3; ++i) body += Field("f", "v");
  EXPECT_TRUE(ParseString(body + Close(), 64 * 1024, {.max_parts = 3}).status.ok());
  ExpectBadRequest(ParseString(body + Field("f", "v") + Close(), 64 * 1024, {.max_parts = 3}),
                   "Too many multipart parts");
}

// --- FormSource behaviour ----------------------------------------------------

TEST(MultipartForm, NextPartSkipsUnreadData) {
  const std::string big(300 * 1024, 'z');
  ChunkedBody body(Field("a", big) + File("b", "b.bin", "x/y", "BBB") + Field("c", "C") + Close(), 5000);
  MultipartForm form(body, std::string(kBoundary));
  auto a = form.NextPart();
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->name, "a");
  ASSERT_FALSE(form.ReadPart().value().empty());  // partly read
  auto b = form.NextPart();
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ((*b)->name, "b");
  auto c = form.NextPart();  // b not read at all
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->name, "c");
  const auto c_data = form.ReadPart().value();
  ASSERT_EQ(c_data.size(), 1u);
  EXPECT_EQ(static_cast<char>(c_data[0]), 'C');
  EXPECT_TRUE(form.ReadPart().value().empty());
  EXPECT_TRUE(form.ReadPart().value().empty());
  for (int i = 0; i < 2; ++i) {
    auto end = form.NextPart();
    ASSERT_TRUE(end.ok());
    EXPECT_FALSE(end->has_value());
    EXPECT_TRUE(form.ReadPart().value().empty());
  }
}

TEST(MultipartForm, BodySourceErrorsPassThroughUnchanged) {
  for (Code code : {Code::kRequestTimeout, Code::kPayloadTooLarge}) {
    const std::string full = SampleBody();
    ChunkedBody body(full.substr(0, full.size() / 2), 7, Status(code, "from the body"));
    auto form = ParseForm(body);
    EXPECT_EQ(form.status.code(), code);
    EXPECT_EQ(form.status.message(), "from the body");
  }
}

TEST(MultipartForm, ErrorsAreFinal) {
  ChunkedBody body(Field("a", "1") + "--" + std::string(kBoundary) + "\r\nbad header\r\n\r\n", 64 * 1024);
  MultipartForm form(body, std::string(kBoundary));
  ASSERT_TRUE(form.NextPart().ok());
  auto second = form.NextPart();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(form.NextPart().status().message(), second.status().message());
  EXPECT_EQ(form.ReadPart().status().code(), Code::kBadRequest);
}

// The bytes of a generated file: a block with delimiter-like sequences,
// repeated at an odd period so they cross every read edge.
const std::string& FilePattern() {
  static const std::string pattern = [] {
    std::string p = "\r\n--" + std::string(kBoundary.substr(0, 20)) + "\r\r\n-\r\n--";
    for (int i = 0; p.size() < 4093; ++i) p.push_back(static_cast<char>(i * 31 % 251));
    return p;
  }();
  return pattern;
}

// Calls visit(pattern_bytes, length) over generated file bytes [offset, offset + n).
template <typename F>
void ForFileBytes(std::size_t offset, std::size_t n, F&& visit) {
  const std::string& pattern = FilePattern();
  while (n > 0) {
    const std::size_t at = offset % pattern.size();
    const std::size_t length = std::min(n, pattern.size() - at);
    visit(pattern.data() + at, length);
    offset += length;
    n -= length;
  }
}

// Serves a form with a field and one `size`-byte generated file.
class GeneratedBody final : public BodySource {
 public:
  explicit GeneratedBody(std::size_t size)
      : head_(Field("user_id", "u") +
              Part("Content-Disposition: form-data; name=\"files\"; filename=\"big.bin\"", "")),
        tail_("\r\n" + Close()),
        size_(size) {
    head_.resize(head_.size() - 2);  // Part() ended the (empty) data with CRLF
  }
  StatusOr<std::size_t> Read(std::span<std::byte> out) override {
    auto* dest = reinterpret_cast<char*>(out.data());
    const auto copy = [&](const char* source, std::size_t length) {
      std::memcpy(dest, source, length);
      dest += length;
    };
    std::size_t n = std::min(out.size(), head_.size() + size_ + tail_.size() - position_);
    const std::size_t result = n;
    if (position_ < head_.size()) {
      const std::size_t length = std::min(n, head_.size() - position_);
      copy(head_.data() + position_, length);
      position_ += length;
      n -= length;
    }
    if (position_ < head_.size() + size_) {
      const std::size_t length = std::min(n, head_.size() + size_ - position_);
      ForFileBytes(position_ - head_.size(), length, copy);
      position_ += length;
      n -= length;
    }
    if (n > 0) {  // only past the file bytes: before them the offset below would be negative
      copy(tail_.data() + (position_ - head_.size() - size_), n);
      position_ += n;
    }
    return result;
  }

 private:
  std::string head_;
  std::string tail_;
  std::size_t size_;
  std::size_t position_ = 0;
};

// Heap bytes in use (glibc), mapped chunks included.
std::size_t HeapInUse() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

TEST(MultipartForm, StreamsA50MiBPartInConstantMemory) {
  constexpr std::size_t kSize = 50 * 1024 * 1024;
  GeneratedBody body(kSize);
  MultipartForm form(body, std::string(kBoundary));
  ASSERT_EQ(form.NextPart().value()->name, "user_id");
  auto file = form.NextPart();
  ASSERT_TRUE(file.ok() && file->has_value());
  EXPECT_EQ((*file)->filename, "big.bin");
  std::size_t total = 0;
  std::size_t mismatches = 0;
  const std::size_t heap_before = HeapInUse();
  std::size_t heap_peak = heap_before;
  Status status;
  for (;;) {
    auto data = form.ReadPart();
    if (!data.ok()) status = data.status();
    if (!data.ok() || data->empty()) break;
    heap_peak = std::max(heap_peak, HeapInUse());
    const char* got = reinterpret_cast<const char*>(data->data());
    ForFileBytes(total, data->size(), [&](const char* expected, std::size_t length) {
      mismatches += std::memcmp(got, expected, length) != 0;
      got += length;
    });
    total += data->size();
  }
  EXPECT_EQ(heap_peak, heap_before);
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(total, kSize);
  EXPECT_EQ(mismatches, 0u);
  auto end = form.NextPart();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
}

// --- MultipartParser directly ------------------------------------------------

TEST(MultipartParser, KeepsNoMoreThanASplitDelimiterUnconsumed) {
  const std::string body = SampleBody();
  MultipartParser parser(kBoundary, {});
  std::string pending;
  std::string data;
  std::size_t max_pending = 0;
  bool ended = false;
  for (std::size_t i = 0; i <= body.size() && !ended; ++i) {
    if (i < body.size()) pending.push_back(body[i]);
    const bool end_of_input = i == body.size();
    for (;;) {
      auto event = parser.Next(std::as_bytes(std::span(pending)), end_of_input);
      ASSERT_TRUE(event.ok()) << event.status().ToString();
      if (event->kind == MultipartParser::EventKind::kData) data.append(pending, 0, event->consumed);
      pending.erase(0, event->consumed);
      if (event->kind == MultipartParser::EventKind::kEnd) ended = true;
      if (event->kind == MultipartParser::EventKind::kNeedInput || ended) break;
    }
    max_pending = std::max(max_pending, pending.size());
  }
  EXPECT_TRUE(ended);
  EXPECT_LT(max_pending, kBoundary.size() + 4);
  EXPECT_EQ(data, "alice\xff\xd8\r\n\r\n--not-the-boundary\r\r\n-x,y");
}

}  // namespace
}  // namespace imgsvc::http
