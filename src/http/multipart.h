// Incremental multipart/form-data (RFC 7578) parsing.
//
// MultipartParser is push-based and keeps a bounded state: part headers are
// limited in size, data is handed out as it arrives without buffering a part.
// MultipartForm adapts it to core::FormSource, pulling from a BodySource, so
// uploads stream from the socket (or a Lambda event body) to the blob store.
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
  enum class EventKind { kPartBegin, kData, kPartEnd, kEnd };
  struct Event {
    EventKind kind;
    const core::FormPart* part = nullptr;  // kPartBegin: valid until the next Feed
    std::span<const std::byte> data;       // kData: valid until the next Feed
  };

  MultipartParser(std::string boundary, MultipartLimits limits = {});
  ~MultipartParser();
  MultipartParser(const MultipartParser&) = delete;
  MultipartParser& operator=(const MultipartParser&) = delete;

  // Consumes input and invokes `on_event` for each event, in order. Returns
  // kBadRequest for malformed input (the parser then stays failed). Data
  // events may be split anywhere.
  template <typename F>
  Status Feed(std::span<const std::byte> input, F&& on_event) {
    return FeedImpl(input, [](void* ctx, const Event& e) -> Status {
      return (*static_cast<std::remove_reference_t<F>*>(ctx))(e);
    }, &on_event);
  }
  // Declares end of input: kBadRequest if the closing boundary was not seen.
  Status Finish();
  bool done() const;  // closing boundary seen

 private:
  using Callback = Status (*)(void*, const Event&);
  Status FeedImpl(std::span<const std::byte> input, Callback cb, void* ctx);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// core::FormSource over a request body.
class MultipartForm final : public core::FormSource {
 public:
  MultipartForm(BodySource& body, std::string boundary, MultipartLimits limits = {});
  ~MultipartForm() override;
  StatusOr<std::optional<core::FormPart>> NextPart() override;
  StatusOr<std::size_t> ReadPart(std::span<std::byte> out) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace imgsvc::http
