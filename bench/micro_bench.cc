// The CPU cost of the request-path pieces other than SigV4 (aws_bench): the
// listing cursor, the response JSON of records, multipart parsing of an
// upload, and image header probing. Inputs have the shape and size of real
// traffic; each benchmark checks its result once before timing, so a broken
// path is reported as an error rather than as a fast number. Figures and the
// command line: docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/cursor.h"
#include "core/image.h"
#include "core/ports.h"
#include "core/service.h"
#include "http/json_writer.h"
#include "http/message.h"
#include "http/multipart.h"
#include "imaging/probe.h"
#include "support/image_fixtures.h"

namespace imgsvc {
namespace {

namespace fx = imgsvc::testing;

constexpr core::Micros kCreatedAt = 1'795'694'400'123'456;  // 2026-11-26T12:00:00.123456Z

// Cursor -------------------------------------------------------------------

// 32 bytes, like the embedded store's signing.key.
constexpr std::string_view kServiceSecret = "k5Qv8Zr2Lw9Xc4Tn7Hb1Jm6Pd3Sg0Fa!";

// GET /api/v1/images?user_id=alice&category=pets&tags=cat,cute&created_from=2026-01-01
// by alice: the filters a client pages through.
core::ListQuery FilteredQuery() {
  core::ListQuery query;
  query.user_id = "alice";
  query.viewer = "alice";
  query.created_from = core::FormatTimestamp(*core::ParseDateBound("2026-01-01", core::Bound::kLower));
  query.category = "pets";
  query.tags = {"cat", "cute"};
  return query;
}

// Where a page of alice's images stopped: the last record's index key.
core::Position LastOfPage() {
  return {"alice", core::FormatTimestamp(kCreatedAt), "0b7c4a1e-9d5f-4c2b-8e3a-6f1d2c9b8a74"};
}

void BM_CursorSeal(benchmark::State& state) {
  const core::CursorCodec codec(kServiceSecret);
  const std::string binding = core::CursorCodec::BindingFor(FilteredQuery());
  const core::Position position = LastOfPage();
  const StatusOr<std::string> sealed = codec.Seal(position, binding);
  if (!sealed.ok()) return state.SkipWithError(sealed.status().ToString().c_str());
  const StatusOr<core::Position> opened = codec.Open(*sealed, binding);
  if (!opened.ok() || *opened != position) return state.SkipWithError("the sealed cursor does not open");
  state.counters["cursor_chars"] = static_cast<double>(sealed->size());
  for (auto _ : state) {
    StatusOr<std::string> cursor = codec.Seal(position, binding);
    benchmark::DoNotOptimize(cursor);
  }
}
BENCHMARK(BM_CursorSeal);

void BM_CursorOpen(benchmark::State& state) {
  const core::CursorCodec codec(kServiceSecret);
  const std::string binding = core::CursorCodec::BindingFor(FilteredQuery());
  const StatusOr<std::string> cursor = codec.Seal(LastOfPage(), binding);
  if (!cursor.ok()) return state.SkipWithError(cursor.status().ToString().c_str());
  const StatusOr<core::Position> check = codec.Open(*cursor, binding);
  if (!check.ok() || *check != LastOfPage()) return state.SkipWithError("the sealed cursor does not open");
  for (auto _ : state) {
    StatusOr<core::Position> position = codec.Open(*cursor, binding);
    benchmark::DoNotOptimize(position);
  }
}
BENCHMARK(BM_CursorOpen);

// Record -> JSON -----------------------------------------------------------

// A phone photo of alice's, the index-th of a page (ids and names differ so
// no two records share strings).
core::ImageRecord PhotoRecord(int index) {
  core::ImageRecord record;
  record.image_id = "0b7c4a1e-9d5f-4c2b-8e3a-6f1d2c9b8a" + std::to_string(10 + index);
  record.user_id = "alice";
  record.filename = "IMG_" + std::to_string(2043 + index) + ".jpg";
  record.format = core::ImageFormat::kJpeg;
  record.size_bytes = 3'271'904 + static_cast<std::uint64_t>(index) * 4099;
  record.width = 4032;
  record.height = 3024;
  record.sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  record.category = "pets";
  record.tags = {"cat", "cute", "sofa"};
  record.visibility = core::Visibility::kPublic;
  record.created_at = core::FormatTimestamp(kCreatedAt - std::int64_t{index} * 60'000'000);
  record.updated_at = record.created_at;
  return record;
}

// The embedded store's /files/ URL: key, expiry, hex HMAC.
std::string EmbeddedUrl(const core::ImageRecord& record) {
  return "http://127.0.0.1:8000/files/" + record.StorageKey() +
         "?expires=1795698000&signature=3b1f0c7a9e5d2846b1c0f9e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8";
}

// S3 presigned under a role's temporary credentials (Lambda, ECS), whose
// session token makes up most of the URL: STS tokens run to about 1,100
// characters.
std::string S3SessionUrl(const core::ImageRecord& record) {
  constexpr std::string_view kTokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string token = "IQoJb3JpZ2luX2VjE";
  for (std::size_t i = 0; token.size() < 1100; ++i) token.push_back(kTokenAlphabet[i * 7 % kTokenAlphabet.size()]);
  return "https://image-storage-bucket.s3.us-east-1.amazonaws.com/" + record.StorageKey() +
         "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
         "&X-Amz-Credential=ASIAQ3EGQZ7XEXAMPLE5%2F20261126%2Fus-east-1%2Fs3%2Faws4_request"
         "&X-Amz-Date=20261126T120000Z&X-Amz-Expires=3600&X-Amz-Security-Token=" +
         token +
         "&X-Amz-SignedHeaders=host"
         "&X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
}

using UrlFor = std::string (*)(const core::ImageRecord&);

core::ImageWithUrl PhotoWithUrl(int index, UrlFor url_for) {
  core::ImageRecord record = PhotoRecord(index);
  core::PresignedUrl url{url_for(record), kCreatedAt + 3'600'000'000};
  return {std::move(record), std::move(url)};
}

// The body GET /api/v1/images/{id} sends.
void BM_ImageJson(benchmark::State& state, UrlFor url_for) {
  const core::ImageWithUrl image = PhotoWithUrl(0, url_for);
  const std::string json = http::ImageWithUrlJson(image);
  if (json.find(image.url.url) == std::string::npos || json.find("\"width\":4032") == std::string::npos) {
    return state.SkipWithError("the JSON lacks the record's fields");
  }
  for (auto _ : state) {
    std::string body = http::ImageWithUrlJson(image);
    benchmark::DoNotOptimize(body);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(json.size()));
  state.counters["json_bytes"] = static_cast<double>(json.size());
}
BENCHMARK_CAPTURE(BM_ImageJson, embedded_url, &EmbeddedUrl);
BENCHMARK_CAPTURE(BM_ImageJson, s3_session_url, &S3SessionUrl);

// The body of GET /api/v1/images with the default page size (20) and a
// cursor to the next page.
void BM_ListPageJson(benchmark::State& state, UrlFor url_for) {
  constexpr int kPageSize = 20;
  core::ListResult page;
  for (int i = 0; i < kPageSize; ++i) {
    core::ImageWithUrl photo = PhotoWithUrl(i, url_for);
    page.page.items.push_back(std::move(photo.record));
    page.urls.push_back(std::move(photo.url));
  }
  const StatusOr<std::string> cursor =
      core::CursorCodec(kServiceSecret).Seal(LastOfPage(), core::CursorCodec::BindingFor(FilteredQuery()));
  if (!cursor.ok()) return state.SkipWithError(cursor.status().ToString().c_str());
  page.cursor = *cursor;
  const std::string json = http::ListResponseJson(page);
  if (json.find("\"count\":20") == std::string::npos || json.find(*cursor) == std::string::npos ||
      json.find(page.urls.back().url) == std::string::npos) {
    return state.SkipWithError("the JSON lacks the page's fields");
  }
  for (auto _ : state) {
    std::string body = http::ListResponseJson(page);
    benchmark::DoNotOptimize(body);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(json.size()));
  state.counters["json_bytes"] = static_cast<double>(json.size());
}
BENCHMARK_CAPTURE(BM_ListPageJson, embedded_url, &EmbeddedUrl);
BENCHMARK_CAPTURE(BM_ListPageJson, s3_session_url, &S3SessionUrl);

// Multipart ----------------------------------------------------------------

// The body as the server hands it over: the caller's span filled from memory,
// at most one 64 KiB socket read at a time. Over a view, unlike MemoryBody,
// so a 4 MiB body is not copied per iteration before the parsing starts.
class SocketLikeBody final : public http::BodySource {
 public:
  static constexpr std::size_t kReadBytes = 64 * 1024;

  explicit SocketLikeBody(std::string_view data) : rest_(data) {}
  StatusOr<std::size_t> Read(std::span<std::byte> out) override {
    const std::size_t n = std::min({out.size(), rest_.size(), kReadBytes});
    std::memcpy(out.data(), rest_.data(), n);
    rest_.remove_prefix(n);
    return n;
  }

 private:
  std::string_view rest_;
};

// What curl -F user_id=alice -F tags=cat,cute -F files=@small.png -F files=@photo.jpg sends.
constexpr std::string_view kUploadContentType =
    "multipart/form-data; boundary=------------------------d74496d66958873e";
constexpr std::string_view kUploadDelimiter = "--------------------------d74496d66958873e";
constexpr std::size_t kSmallFileBytes = 64 * 1024;
constexpr std::size_t kPhotoBytes = 4 * 1024 * 1024;

std::string UploadBody() {
  const auto field = [](std::string_view name, std::string_view value) {
    return std::string(kUploadDelimiter) + "\r\nContent-Disposition: form-data; name=\"" + std::string(name) +
           "\"\r\n\r\n" + std::string(value) + "\r\n";
  };
  const auto file = [](std::string_view filename, std::string_view type, const std::string& data) {
    return std::string(kUploadDelimiter) + "\r\nContent-Disposition: form-data; name=\"files\"; filename=\"" +
           std::string(filename) + "\"\r\nContent-Type: " + std::string(type) + "\r\n\r\n" + data + "\r\n";
  };
  return field("user_id", "alice") + field("tags", "cat,cute") +
         file("small.png", "image/png", fx::MakeImageOfSize(core::ImageFormat::kPng, 256, 256, kSmallFileBytes)) +
         file("photo.jpg", "image/jpeg", fx::MakeImageOfSize(core::ImageFormat::kJpeg, 4032, 3024, kPhotoBytes)) +
         std::string(kUploadDelimiter) + "--\r\n";
}

struct PartRead {
  std::string name;
  std::size_t bytes = 0;
};

// Pulls every part through MultipartForm the way the upload use case does
// and returns the sizes read.
StatusOr<std::vector<PartRead>> ReadForm(std::string_view body, const std::string& boundary) {
  SocketLikeBody source(body);
  http::MultipartForm form(source, boundary);
  std::vector<PartRead> parts;
  for (;;) {
    IMGSVC_ASSIGN_OR_RETURN(std::optional<core::FormPart> part, form.NextPart());
    if (!part) return parts;
    PartRead read{std::move(part->name)};
    for (;;) {
      IMGSVC_ASSIGN_OR_RETURN(const std::span<const std::byte> data, form.ReadPart());
      if (data.empty()) break;
      read.bytes += data.size();
    }
    parts.push_back(std::move(read));
  }
}

void BM_MultipartUpload(benchmark::State& state) {
  const std::string body = UploadBody();
  const StatusOr<std::string> boundary = http::MultipartBoundary(kUploadContentType);
  if (!boundary.ok()) return state.SkipWithError(boundary.status().ToString().c_str());
  const StatusOr<std::vector<PartRead>> parts = ReadForm(body, *boundary);
  if (!parts.ok()) return state.SkipWithError(parts.status().ToString().c_str());
  const std::vector<std::pair<std::string, std::size_t>> expected = {
      {"user_id", 5}, {"tags", 8}, {"files", kSmallFileBytes}, {"files", kPhotoBytes}};
  std::vector<std::pair<std::string, std::size_t>> got;
  for (const PartRead& part : *parts) got.emplace_back(part.name, part.bytes);
  if (got != expected) return state.SkipWithError("the form's parts were not read back whole");
  for (auto _ : state) {
    StatusOr<std::vector<PartRead>> read = ReadForm(body, *boundary);
    benchmark::DoNotOptimize(read);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(body.size()));
}
BENCHMARK(BM_MultipartUpload)->Unit(benchmark::kMicrosecond);

// Image header probing -----------------------------------------------------

std::string BigEndian16(std::size_t value) {
  return {static_cast<char>(value >> 8 & 0xFF), static_cast<char>(value & 0xFF)};
}

std::string JpegSegment(std::uint8_t marker, std::string_view payload) {
  return std::string("\xFF") + static_cast<char>(marker) + BigEndian16(payload.size() + 2) + std::string(payload);
}

// A phone camera's JPEG up to its frame header, with the metadata segments
// such files carry before it and the probe has to skip: JFIF, Exif (with a
// thumbnail: the largest), XMP, an ICC profile (sRGB: 3,144 bytes) and the
// quantisation tables.
std::string CameraJpegHeader(std::uint16_t width, std::uint16_t height) {
  std::string out = "\xFF\xD8";
  out += JpegSegment(0xE0, std::string_view("JFIF\0\x01\x01\x00\x00\x48\x00\x48\x00\x00", 14));
  out += JpegSegment(0xE1, std::string("Exif\0\0", 6) + std::string(12 * 1024, 'e'));
  out += JpegSegment(0xE1, std::string("http://ns.adobe.com/xap/1.0/\0", 29) + std::string(2500, 'x'));
  out += JpegSegment(0xE2, std::string("ICC_PROFILE\0\x01\x01", 14) + std::string(3144, 'i'));
  out += JpegSegment(0xDB, std::string(1, '\x00') + std::string(64, '\x02'));
  out += JpegSegment(0xDB, std::string(1, '\x01') + std::string(64, '\x03'));
  const std::string components("\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", 10);  // YCbCr 4:2:0
  out += JpegSegment(0xC0, "\x08" + BigEndian16(height) + BigEndian16(width) + components);
  return out;
}

// Feeds the header in one piece, as the upload use case feeds its first 64 KiB
// read; the probe is done within it.
void BM_Probe(benchmark::State& state, std::string file, imaging::Dimensions expected) {
  const auto bytes = std::as_bytes(std::span(file.data(), file.size()));
  imaging::ImageProbe check;
  if (check.Feed(bytes) != imaging::ImageProbe::State::kDone || !check.dimensions() ||
      check.dimensions()->width != expected.width || check.dimensions()->height != expected.height) {
    return state.SkipWithError("the probe does not find the header's dimensions");
  }
  for (auto _ : state) {
    imaging::ImageProbe probe;
    imaging::ImageProbe::State verdict = probe.Feed(bytes);
    std::optional<imaging::Dimensions> dimensions = probe.dimensions();
    benchmark::DoNotOptimize(verdict);
    benchmark::DoNotOptimize(dimensions);
  }
  state.counters["header_bytes"] = static_cast<double>(file.size());
}
BENCHMARK_CAPTURE(BM_Probe, png, fx::MakePng(1920, 1080), {1920, 1080});
BENCHMARK_CAPTURE(BM_Probe, jpeg_camera, CameraJpegHeader(4032, 3024), {4032, 3024});
BENCHMARK_CAPTURE(BM_Probe, gif, fx::MakeGif(480, 270), {480, 270});
BENCHMARK_CAPTURE(BM_Probe, webp_lossy, fx::MakeWebpVp8(1600, 900), {1600, 900});
BENCHMARK_CAPTURE(BM_Probe, webp_extended, fx::MakeWebpVp8x(1600, 900), {1600, 900});

}  // namespace
}  // namespace imgsvc
