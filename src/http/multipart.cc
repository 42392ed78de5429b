#include "http/multipart.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <utility>

#include "core/image.h"

namespace imgsvc::http {
namespace {

constexpr std::size_t kMaxBoundaryLength = 70;

bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// RFC 2046 bchars; a space may not end the boundary.
bool IsBoundaryChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("'()+_,-./:=? ").find(c) != std::string_view::npos;
}

bool IsSpaceOrTab(char c) { return c == ' ' || c == '\t'; }

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && IsSpaceOrTab(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpaceOrTab(s.back())) s.remove_suffix(1);
  return s;
}

// How backslashes inside a quoted-string are read. Content-Type follows RFC
// 9110 (any escaped character stands for itself). In Content-Disposition only
// \" and \\ are escapes: browsers send backslashes of file names unescaped
// (they percent-encode '"' instead), so "C:\photos\a.jpg" must survive.
enum class Unescape { kAll, kQuoteAndBackslash };

// Calls on_param(name, value) for each `; name=value` of an RFC 9110
// parameter list (value a token or a quoted-string, empty parameters
// allowed). False on a syntax error or when on_param returns false.
template <typename F>
bool ParseParameters(std::string_view s, Unescape unescape, F&& on_param) {
  std::size_t i = 0;
  const auto skip_spaces = [&] {
    while (i < s.size() && IsSpaceOrTab(s[i])) ++i;
  };
  std::string value;
  for (;;) {
    skip_spaces();
    if (i == s.size()) return true;
    if (s[i] != ';') return false;
    ++i;
    skip_spaces();
    if (i == s.size() || s[i] == ';') continue;
    const std::size_t name_begin = i;
    while (i < s.size() && IsTokenChar(s[i])) ++i;
    const std::string_view name = s.substr(name_begin, i - name_begin);
    skip_spaces();
    if (name.empty() || i == s.size() || s[i] != '=') return false;
    ++i;
    skip_spaces();
    value.clear();
    if (i < s.size() && s[i] == '"') {
      for (++i;; ++i) {
        if (i == s.size()) return false;
        if (s[i] == '"') break;
        if (s[i] == '\\' && i + 1 < s.size() &&
            (unescape == Unescape::kAll || s[i + 1] == '"' || s[i + 1] == '\\')) {
          ++i;
        }
        value.push_back(s[i]);
      }
      ++i;
    } else {
      const std::size_t value_begin = i;
      while (i < s.size() && IsTokenChar(s[i])) ++i;
      if (i == value_begin) return false;
      value.assign(s.substr(value_begin, i - value_begin));
    }
    if (!on_param(name, std::move(value))) return false;
  }
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = core::LowerAsciiChar(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// An RFC 5987 ext-value (charset'language'percent-encoded) as UTF-8;
// nullopt for a malformed value or a charset other than UTF-8/ISO-8859-1.
std::optional<std::string> DecodeExtValue(std::string_view ext) {
  const std::size_t charset_end = ext.find('\'');
  if (charset_end == std::string_view::npos) return std::nullopt;
  const std::size_t language_end = ext.find('\'', charset_end + 1);
  if (language_end == std::string_view::npos) return std::nullopt;
  const std::string_view charset = ext.substr(0, charset_end);
  const bool latin1 = core::EqualsIgnoreAsciiCase(charset, "iso-8859-1");
  if (!latin1 && !core::EqualsIgnoreAsciiCase(charset, "utf-8")) return std::nullopt;
  const std::string_view encoded = ext.substr(language_end + 1);
  std::string decoded;
  decoded.reserve(encoded.size());
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    unsigned char byte = static_cast<unsigned char>(encoded[i]);
    if (byte == '%') {
      if (i + 2 >= encoded.size()) return std::nullopt;
      const int high = HexValue(encoded[i + 1]);
      const int low = HexValue(encoded[i + 2]);
      if (high < 0 || low < 0) return std::nullopt;
      byte = static_cast<unsigned char>(high * 16 + low);
      i += 2;
    }
    if (latin1 && byte >= 0x80) {
      decoded.push_back(static_cast<char>(0xC0 | (byte >> 6)));
      decoded.push_back(static_cast<char>(0x80 | (byte & 0x3F)));
    } else {
      decoded.push_back(static_cast<char>(byte));
    }
  }
  return decoded;
}

struct DelimiterScan {
  std::size_t position;  // of the delimiter or its cut-off start; input size if none
  bool complete;
};

// Finds the first delimiter in `input`, or else a delimiter start that the
// end of `input` cuts off. memchr skips to each CR, so scanning runs at
// memory speed on file data.
DelimiterScan FindDelimiter(std::span<const std::byte> input, std::string_view delimiter) {
  const char* const begin = reinterpret_cast<const char*>(input.data());
  const char* const end = begin + input.size();
  const char* cr = begin;
  while (cr != end && (cr = static_cast<const char*>(std::memchr(cr, '\r', static_cast<std::size_t>(end - cr))))) {
    const auto available = static_cast<std::size_t>(end - cr);
    const auto position = static_cast<std::size_t>(cr - begin);
    if (available >= delimiter.size()) {
      if (std::memcmp(cr, delimiter.data(), delimiter.size()) == 0) return {position, true};
    } else if (std::memcmp(cr, delimiter.data(), available) == 0) {
      return {position, false};
    }
    ++cr;
  }
  return {input.size(), false};
}

char CharAt(std::span<const std::byte> input, std::size_t i) { return static_cast<char>(input[i]); }

}  // namespace

StatusOr<std::string> MultipartBoundary(std::string_view content_type) {
  const std::size_t semicolon = content_type.find(';');
  const std::string_view media_type = TrimSpaces(content_type.substr(0, semicolon));
  if (!core::EqualsIgnoreAsciiCase(media_type, "multipart/form-data")) {
    return Status(Code::kBadRequest, "Expected multipart/form-data");
  }
  if (semicolon == std::string_view::npos) return Status(Code::kBadRequest, "Missing multipart boundary");
  std::optional<std::string> boundary;
  const bool well_formed = ParseParameters(content_type.substr(semicolon), Unescape::kAll,
                                           [&](std::string_view name, std::string value) {
                                             if (!core::EqualsIgnoreAsciiCase(name, "boundary")) return true;
                                             if (boundary) return false;  // ambiguous
                                             boundary = std::move(value);
                                             return true;
                                           });
  if (!well_formed) return Status(Code::kBadRequest, "Invalid multipart boundary");
  if (!boundary) return Status(Code::kBadRequest, "Missing multipart boundary");
  if (boundary->empty() || boundary->size() > kMaxBoundaryLength || boundary->back() == ' ' ||
      !std::all_of(boundary->begin(), boundary->end(), IsBoundaryChar)) {
    return Status(Code::kBadRequest, "Invalid multipart boundary");
  }
  return *std::move(boundary);
}

MultipartParser::MultipartParser(std::string_view boundary, MultipartLimits limits)
    : delimiter_("\r\n--"), limits_(limits) {
  delimiter_.append(boundary);
}

Status MultipartParser::Fail(std::string message) {
  error_ = Status(Code::kBadRequest, std::move(message));
  return error_;
}

StatusOr<MultipartParser::Event> MultipartParser::NeedInput(std::size_t consumed, bool end_of_input) {
  if (end_of_input) return Fail("Truncated multipart body");
  return Event{EventKind::kNeedInput, consumed};
}

StatusOr<MultipartParser::Event> MultipartParser::Next(std::span<const std::byte> input, bool end_of_input) {
  if (!error_.ok()) return error_;
  std::size_t used = 0;
  for (;;) {
    const std::span<const std::byte> rest = input.subspan(used);
    if (rest.empty() && state_ != State::kDone) return NeedInput(used, end_of_input);
    switch (state_) {
      case State::kPreamble: {
        if (at_body_start_) {
          const std::string_view first = std::string_view(delimiter_).substr(2);
          const std::size_t compared = std::min(first.size(), rest.size());
          if (std::memcmp(rest.data(), first.data(), compared) == 0) {
            if (compared < first.size()) return NeedInput(used, end_of_input);
            used += first.size();
            at_body_start_ = false;
            EnterBoundaryTail();
            break;
          }
          at_body_start_ = false;
        }
        const DelimiterScan scan = FindDelimiter(rest, delimiter_);
        if (!scan.complete) return NeedInput(used + scan.position, end_of_input);
        used += scan.position + delimiter_.size();
        EnterBoundaryTail();
        break;
      }
      case State::kBoundaryTail: {
        std::size_t i = 0;
        while (i < rest.size() && IsSpaceOrTab(CharAt(rest, i))) ++i;
        boundary_padded_ = boundary_padded_ || i > 0;
        if (i == rest.size()) return NeedInput(used + i, end_of_input);
        const char c = CharAt(rest, i);
        if (c == '\n') {
          used += i + 1;
          IMGSVC_RETURN_IF_ERROR(BeginPart());
          break;
        }
        if (c == '\r' || (c == '-' && !boundary_padded_)) {
          if (i + 1 == rest.size()) return NeedInput(used + i, end_of_input);
          const char second = CharAt(rest, i + 1);
          if (c == '\r' && second == '\n') {
            used += i + 2;
            IMGSVC_RETURN_IF_ERROR(BeginPart());
            break;
          }
          if (c == '-' && second == '-') {
            state_ = State::kDone;
            return Event{EventKind::kEnd, input.size()};
          }
        }
        return Fail("Malformed multipart boundary line");
      }
      case State::kHeaders: {
        const void* newline = std::memchr(rest.data(), '\n', rest.size());
        const std::size_t take =
            newline ? static_cast<std::size_t>(static_cast<const std::byte*>(newline) - rest.data()) + 1 : rest.size();
        if (take > limits_.max_part_header_bytes - header_bytes_) return Fail("Multipart part headers too large");
        header_bytes_ += take;
        used += take;
        const auto* chars = reinterpret_cast<const char*>(rest.data());
        if (!newline) {
          header_line_.append(chars, take);
          return NeedInput(used, end_of_input);
        }
        header_line_.append(chars, take - 1);
        if (!header_line_.empty() && header_line_.back() == '\r') header_line_.pop_back();
        if (header_line_.empty()) {
          IMGSVC_RETURN_IF_ERROR(EndHeaders());
          state_ = State::kData;
          return Event{EventKind::kPartBegin, used};
        }
        IMGSVC_RETURN_IF_ERROR(ParseHeaderLine(header_line_));
        header_line_.clear();
        break;
      }
      case State::kData: {
        assert(used == 0);  // data is always the first thing reported by a call
        const DelimiterScan scan = FindDelimiter(rest, delimiter_);
        if (scan.position > 0) return Event{EventKind::kData, scan.position};
        if (!scan.complete) return NeedInput(0, end_of_input);
        EnterBoundaryTail();
        return Event{EventKind::kPartEnd, delimiter_.size()};
      }
      case State::kDone:
        return Event{EventKind::kEnd, input.size()};
    }
  }
}

void MultipartParser::EnterBoundaryTail() {
  state_ = State::kBoundaryTail;
  boundary_padded_ = false;
}

Status MultipartParser::BeginPart() {
  if (++parts_ > limits_.max_parts) return Fail("Too many multipart parts");
  state_ = State::kHeaders;
  header_bytes_ = 0;
  header_line_.clear();
  has_disposition_ = false;
  has_content_type_ = false;
  part_ = {};
  return Status::Ok();
}

// Control characters other than CR and NUL are allowed in a header's value:
// clients send file names as they are, and the service removes them from the
// stored name. A bare CR or a NUL still makes the header malformed.
Status MultipartParser::ParseHeaderLine(std::string_view line) {
  const bool has_cr_or_nul = line.find_first_of(std::string_view("\r\0", 2)) != std::string_view::npos;
  const std::size_t colon = line.find(':');
  const std::string_view name = line.substr(0, colon);
  if (has_cr_or_nul || colon == std::string_view::npos || name.empty() ||
      !std::all_of(name.begin(), name.end(), IsTokenChar)) {
    return Fail("Malformed multipart part header");
  }
  const std::string_view value = TrimSpaces(line.substr(colon + 1));
  if (core::EqualsIgnoreAsciiCase(name, "content-disposition")) {
    if (has_disposition_) return Fail("Duplicate Content-Disposition in multipart part");
    has_disposition_ = true;
    return ParseContentDisposition(value);
  }
  if (core::EqualsIgnoreAsciiCase(name, "content-type")) {
    if (has_content_type_) return Fail("Duplicate Content-Type in multipart part");
    has_content_type_ = true;
    part_.content_type.assign(value);
  }
  return Status::Ok();
}

Status MultipartParser::ParseContentDisposition(std::string_view value) {
  const std::size_t semicolon = value.find(';');
  if (!core::EqualsIgnoreAsciiCase(TrimSpaces(value.substr(0, semicolon)), "form-data")) {
    return Fail("Multipart part is not form-data");
  }
  const std::string_view parameters = semicolon == std::string_view::npos ? "" : value.substr(semicolon);
  bool has_name = false;
  std::optional<std::string> filename;
  std::optional<std::string> extended_filename;
  bool bad_extended_filename = false;
  const bool well_formed = ParseParameters(
      parameters, Unescape::kQuoteAndBackslash, [&](std::string_view name, std::string param) {
        if (core::EqualsIgnoreAsciiCase(name, "name")) {
          if (has_name) return false;
          has_name = true;
          part_.name = std::move(param);
        } else if (core::EqualsIgnoreAsciiCase(name, "filename")) {
          if (filename) return false;
          filename = std::move(param);
        } else if (core::EqualsIgnoreAsciiCase(name, "filename*")) {
          if (extended_filename) return false;
          extended_filename = DecodeExtValue(param);
          bad_extended_filename = !extended_filename;
          return !bad_extended_filename;
        }
        return true;
      });
  if (bad_extended_filename) return Fail("Invalid filename* in multipart Content-Disposition");
  if (!well_formed) return Fail("Malformed multipart Content-Disposition");
  if (!has_name) return Fail("Multipart part without a name");
  if (extended_filename) {
    part_.filename = std::move(extended_filename);
  } else {
    part_.filename = std::move(filename);
  }
  return Status::Ok();
}

Status MultipartParser::EndHeaders() {
  if (!has_disposition_) return Fail("Multipart part without Content-Disposition: form-data");
  if (!has_content_type_) part_.content_type = part_.filename ? "application/octet-stream" : "text/plain";
  return Status::Ok();
}

struct MultipartForm::Impl {
  Impl(BodySource& body_source, std::string_view boundary, MultipartLimits limits)
      : body(body_source),
        parser(boundary, limits),
        capacity(kReadSize + boundary.size() + 4),
        buffer(std::make_unique_for_overwrite<std::byte[]>(capacity)) {}

  std::span<const std::byte> Window() const { return {buffer.get() + begin, end - begin}; }

  // The next event other than kNeedInput, reading the body as needed.
  StatusOr<MultipartParser::Event> Pull() {
    for (;;) {
      IMGSVC_ASSIGN_OR_RETURN(const MultipartParser::Event event, parser.Next(Window(), end_of_body));
      if (event.kind != MultipartParser::EventKind::kNeedInput) return event;
      begin += event.consumed;
      IMGSVC_RETURN_IF_ERROR(Refill());
    }
  }

  // Keeps the unconsumed rest (a split delimiter, shorter than the delimiter)
  // and appends one read of the body behind it.
  Status Refill() {
    const std::size_t kept = end - begin;
    assert(kept + kReadSize <= capacity);
    std::memmove(buffer.get(), buffer.get() + begin, kept);
    begin = 0;
    end = kept;
    IMGSVC_ASSIGN_OR_RETURN(const std::size_t n, body.Read({buffer.get() + end, kReadSize}));
    end += n;
    end_of_body = n == 0;
    return Status::Ok();
  }

  // Reads and discards the rest of the body, up to kMaxEpilogue bytes.
  Status DrainEpilogue() {
    std::size_t epilogue = 0;
    while (!end_of_body) {
      begin = end = 0;
      IMGSVC_ASSIGN_OR_RETURN(const std::size_t n, body.Read({buffer.get(), capacity}));
      end_of_body = n == 0;
      epilogue += n;
      if (epilogue > kMaxEpilogue) return Status(Code::kBadRequest, "Multipart epilogue too large");
    }
    begin = end = 0;
    return Status::Ok();
  }

  Status Fail(Status status) {
    error = std::move(status);
    return error;
  }

  BodySource& body;
  MultipartParser parser;
  const std::size_t capacity;
  const std::unique_ptr<std::byte[]> buffer;
  std::size_t begin = 0;
  std::size_t end = 0;
  bool end_of_body = false;
  bool in_part = false;
  bool finished = false;
  Status error;
};

MultipartForm::MultipartForm(BodySource& body, std::string boundary, MultipartLimits limits)
    : impl_(std::make_unique<Impl>(body, boundary, limits)) {}

MultipartForm::~MultipartForm() = default;

StatusOr<std::optional<core::FormPart>> MultipartForm::NextPart() {
  Impl& m = *impl_;
  if (!m.error.ok()) return m.error;
  if (m.finished) return std::optional<core::FormPart>();
  for (;;) {
    StatusOr<MultipartParser::Event> event = m.Pull();
    if (!event.ok()) return m.Fail(event.status());
    m.begin += event->consumed;
    switch (event->kind) {
      case MultipartParser::EventKind::kPartBegin:
        m.in_part = true;
        return std::optional<core::FormPart>(m.parser.part());
      case MultipartParser::EventKind::kEnd: {
        m.in_part = false;
        // The form is whole only if the body is: a body cut short after the
        // closing delimiter (less than its Content-Length) must store nothing.
        if (Status whole = m.DrainEpilogue(); !whole.ok()) return m.Fail(std::move(whole));
        m.finished = true;
        return std::optional<core::FormPart>();
      }
      case MultipartParser::EventKind::kPartEnd:
        m.in_part = false;
        break;
      case MultipartParser::EventKind::kData:
      case MultipartParser::EventKind::kNeedInput:
        break;
    }
  }
}

StatusOr<std::span<const std::byte>> MultipartForm::ReadPart() {
  Impl& m = *impl_;
  if (!m.error.ok()) return m.error;
  if (!m.in_part) return std::span<const std::byte>();
  StatusOr<MultipartParser::Event> event = m.Pull();
  if (!event.ok()) return m.Fail(event.status());
  if (event->kind == MultipartParser::EventKind::kPartEnd) {
    m.begin += event->consumed;
    m.in_part = false;
    return std::span<const std::byte>();
  }
  // kData: only data or the part's end follow a part's data.
  const std::span<const std::byte> data(m.buffer.get() + m.begin, event->consumed);
  m.begin += event->consumed;
  return data;
}

}  // namespace imgsvc::http
