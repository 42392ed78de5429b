// Incremental multipart/form-data (RFC 7578, RFC 2046) parsing.
//
// MultipartParser is a pull-style state machine over whatever bytes the
// caller holds: it reports one event per call and how many input bytes it is
// done with, and leaves a possibly split delimiter (at most boundary length +
// 4 bytes) unconsumed for the caller to present again with more input. Part
// data is never copied or buffered by the parser, part headers are capped.
// MultipartForm adapts it to core::FormSource, pulling from a BodySource
// through one fixed buffer, so uploads stream from the socket (or a Lambda
// event body) to the blob store.
//
// Wire rules: an optional preamble precedes the first `--boundary`; a
// delimiter inside the body is CRLF `--boundary` only (a bare LF there could
// be part of binary data, so it is data); transport padding (spaces, tabs)
// may follow a boundary; part header lines may end in CRLF or a bare LF; the
// epilogue after `--boundary--` is ignored.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/form.h"
#include "core/status.h"
#include "http/message.h"

namespace imgsvc::http {

// The boundary of a `multipart/form-data; boundary=...` content type
// (quoted or token form, 1-70 chars). kBadRequest for another media type or a
// missing/invalid boundary.
StatusOr<std::string> MultipartBoundary(std::string_view content_type);

struct MultipartLimits {
  std::size_t max_part_header_bytes = 16 * 1024;  // all header lines of one part
  std::size_t max_parts = 1000;                   // parts of any kind
};

class MultipartParser {
 public:
  enum class EventKind {
    kNeedInput,  // present the unconsumed rest again, followed by more input
    kPartBegin,  // headers of a part parsed; see part()
    kData,       // input.first(consumed) is data of the current part
    kPartEnd,    // the delimiter after the current part
    kEnd,        // closing delimiter seen; every later input is epilogue
  };
  struct Event {
    EventKind kind;
    std::size_t consumed;  // bytes at the front of the input now used up
  };

  // `boundary` as returned by MultipartBoundary.
  explicit MultipartParser(std::string_view boundary, MultipartLimits limits = {});

  // Advances over the front of `input`; `end_of_input` says no more bytes
  // will follow it. kBadRequest for malformed or truncated input, after which
  // the parser keeps returning that error. A kData event leaves the state
  // unchanged, so a caller may take only a prefix of the data and present the
  // rest again.
  StatusOr<Event> Next(std::span<const std::byte> input, bool end_of_input);

  // The current part, from its kPartBegin on.
  const core::FormPart& part() const { return part_; }

 private:
  enum class State { kPreamble, kBoundaryTail, kHeaders, kData, kDone };

  StatusOr<Event> NeedInput(std::size_t consumed, bool end_of_input);
  Status Fail(std::string message);
  void EnterBoundaryTail();
  Status BeginPart();
  Status ParseHeaderLine(std::string_view line);
  Status ParseContentDisposition(std::string_view value);
  Status EndHeaders();

  std::string delimiter_;  // CRLF "--" boundary
  MultipartLimits limits_;
  State state_ = State::kPreamble;
  bool at_body_start_ = true;     // the first delimiter may lack its CRLF
  bool boundary_padded_ = false;  // padding rules out a closing "--"
  std::size_t parts_ = 0;
  std::size_t header_bytes_ = 0;
  std::string header_line_;
  bool has_disposition_ = false;
  bool has_content_type_ = false;
  core::FormPart part_;
  Status error_;
};

// core::FormSource over a request body. Reads the body in chunks of
// kReadSize into a buffer allocated once. At the closing boundary it reads
// the body to its end, discarding up to kMaxEpilogue bytes of epilogue, so a
// body cut short there is an error rather than a complete form.
class MultipartForm final : public core::FormSource {
 public:
  static constexpr std::size_t kReadSize = 64 * 1024;
  static constexpr std::size_t kMaxEpilogue = 64 * 1024;

  MultipartForm(BodySource& body, std::string boundary, MultipartLimits limits = {});
  ~MultipartForm() override;
  MultipartForm(const MultipartForm&) = delete;
  MultipartForm& operator=(const MultipartForm&) = delete;

  // Errors: kBadRequest for a malformed or truncated form; errors of the
  // BodySource unchanged. Every error is final.
  StatusOr<std::optional<core::FormPart>> NextPart() override;
  StatusOr<std::span<const std::byte>> ReadPart() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace imgsvc::http
