#include "imaging/probe.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "support/image_fixtures.h"

namespace imgsvc::imaging {
namespace {

using core::ImageFormat;
using State = ImageProbe::State;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace fx = imgsvc::testing;

std::span<const std::byte> AsBytes(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

// A comparable summary of a probe's verdict.
struct Verdict {
  State state;
  std::optional<ImageFormat> format;
  std::optional<std::pair<std::uint32_t, std::uint32_t>> size;
  std::string error;
  friend bool operator==(const Verdict&, const Verdict&) = default;
  friend std::ostream& operator<<(std::ostream& os, const Verdict& v) {
    os << "{state " << static_cast<int>(v.state) << ", format "
       << (v.format ? static_cast<int>(*v.format) : -1);
    if (v.size) os << ", " << v.size->first << "x" << v.size->second;
    return os << ", error '" << v.error << "'}";
  }
};

Verdict Summary(const ImageProbe& p) {
  Verdict v{p.state(), p.format(), std::nullopt, std::string(p.error())};
  if (const auto d = p.dimensions()) v.size = std::pair(d->width, d->height);
  return v;
}

Verdict ProbeWhole(std::string_view file) {
  const ProbeResult r = ProbeBuffer(AsBytes(file));
  Verdict v{r.state, r.format, std::nullopt, std::string(r.error)};
  if (r.dimensions) v.size = std::pair(r.dimensions->width, r.dimensions->height);
  return v;
}

Verdict ProbeInChunks(std::string_view file, const std::vector<std::size_t>& cuts) {
  ImageProbe probe;
  std::size_t from = 0;
  for (const std::size_t cut : cuts) {
    probe.Feed(AsBytes(file.substr(from, cut - from)));
    from = cut;
  }
  probe.Feed(AsBytes(file.substr(from)));
  probe.Finish();
  EXPECT_EQ(probe.bytes_fed(), file.size());
  return Summary(probe);
}

Verdict Done(ImageFormat format, std::uint32_t w, std::uint32_t h) {
  return {State::kDone, format, std::pair(w, h), ""};
}

// Builders for hand-made (often broken) structures.
std::string Be(std::uint64_t v, int n) {
  std::string out;
  for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i) & 0xFF));
  return out;
}
std::string Le(std::uint64_t v, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out.push_back(static_cast<char>(v >> (8 * i) & 0xFF));
  return out;
}
std::string Box(std::string_view type, std::string_view payload) {
  return Be(payload.size() + 8, 4) + std::string(type) + std::string(payload);
}
std::string FullBox(std::string_view type, std::string_view payload, std::uint8_t version = 0,
                    std::uint32_t flags = 0) {
  return Box(type, Be(version, 1) + Be(flags, 3) + std::string(payload));
}
std::string Ftyp(std::string_view major, std::vector<std::string_view> compatible) {
  std::string payload = std::string(major) + Be(0, 4);
  for (const auto b : compatible) payload += b;
  return Box("ftyp", payload);
}
std::uint32_t Crc32(std::string_view data) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (const char ch : data) {
    c ^= static_cast<std::uint8_t>(ch);
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}
std::string Ispe(std::uint32_t w, std::uint32_t h) { return FullBox("ispe", Be(w, 4) + Be(h, 4)); }
std::string JpegSegment(std::uint8_t marker, std::string_view payload) {
  return std::string("\xFF") + static_cast<char>(marker) + Be(payload.size() + 2, 2) + std::string(payload);
}
std::string JpegSof(std::uint8_t marker, std::uint16_t w, std::uint16_t h) {
  return JpegSegment(marker, "\x08" + Be(h, 2) + Be(w, 2) + std::string("\x01\x01\x11\x00", 4));
}
const std::string kSoi = "\xFF\xD8";

// Every fixture builder, with what the probe must find ----------------------

struct Case {
  std::string name;
  std::function<std::string(std::size_t padding_bytes)> make;
  Verdict expected;
  std::string file() const { return make(0); }
};

std::vector<Case> Fixtures() {
  fx::TiffOptions be;
  be.big_endian = true;
  fx::TiffOptions big;
  big.big_tiff = true;
  fx::TiffOptions big_be = big;
  big_be.big_endian = true;
  fx::JpegOptions progressive;
  progressive.progressive = true;
  fx::JpegOptions exif;
  exif.app1_bytes = 300;
  using P = std::size_t;
  return {
      {"jpeg", [](P p) { return fx::MakeJpeg(640, 480, p); }, Done(ImageFormat::kJpeg, 640, 480)},
      {"jpeg_progressive", [=](P p) { return fx::MakeJpeg(1, 65535, p, progressive); },
       Done(ImageFormat::kJpeg, 1, 65535)},
      {"jpeg_exif", [=](P p) { return fx::MakeJpeg(65535, 2, p, exif); }, Done(ImageFormat::kJpeg, 65535, 2)},
      {"png", [](P p) { return fx::MakePng(1920, 1080, p); }, Done(ImageFormat::kPng, 1920, 1080)},
      {"gif", [](P p) { return fx::MakeGif(320, 200, p); }, Done(ImageFormat::kGif, 320, 200)},
      {"webp_vp8", [](P p) { return fx::MakeWebpVp8(1000, 750, p); }, Done(ImageFormat::kWebp, 1000, 750)},
      {"webp_vp8l", [](P p) { return fx::MakeWebpVp8l(16384, 3, p); }, Done(ImageFormat::kWebp, 16384, 3)},
      {"webp_vp8x", [](P p) { return fx::MakeWebpVp8x(20000, 7, p); }, Done(ImageFormat::kWebp, 20000, 7)},
      {"tiff_le_short", [](P p) { return fx::MakeTiff(640, 480, p); }, Done(ImageFormat::kTiff, 640, 480)},
      {"tiff_be_long", [=](P p) { return fx::MakeTiff(70000, 5, p, be); }, Done(ImageFormat::kTiff, 70000, 5)},
      {"bigtiff_le", [=](P p) { return fx::MakeTiff(123, 456, p, big); }, Done(ImageFormat::kTiff, 123, 456)},
      {"bigtiff_be", [=](P p) { return fx::MakeTiff(100000, 2, p, big_be); },
       Done(ImageFormat::kTiff, 100000, 2)},
      {"avif", [](P p) { return fx::MakeAvif(4000, 3000, p); }, Done(ImageFormat::kAvif, 4000, 3000)},
      {"heic", [](P p) { return fx::MakeHeic(4032, 3024, p); }, Done(ImageFormat::kHeic, 4032, 3024)},
  };
}

class FixtureTest : public ::testing::TestWithParam<Case> {};

TEST_P(FixtureTest, WholeBufferGivesFormatAndDimensions) {
  EXPECT_EQ(ProbeWhole(GetParam().file()), GetParam().expected);
}

TEST_P(FixtureTest, ByteByByteGivesTheSameResult) {
  const std::string file = GetParam().file();
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < file.size(); ++i) cuts.push_back(i);
  EXPECT_EQ(ProbeInChunks(file, cuts), GetParam().expected);
}

TEST_P(FixtureTest, EverySplitPointGivesTheSameResult) {
  const std::string file = GetParam().file();
  for (std::size_t cut = 0; cut <= file.size(); ++cut) {
    ASSERT_EQ(ProbeInChunks(file, {cut}), GetParam().expected) << "split at " << cut;
  }
  for (std::size_t a = 0; a <= file.size(); a += 7) {
    for (std::size_t b = a; b <= file.size(); b += 5) {
      ASSERT_EQ(ProbeInChunks(file, {a, b}), GetParam().expected) << "split at " << a << ", " << b;
    }
  }
}

// Stopping anywhere before the header is complete is a truncated header.
TEST_P(FixtureTest, EveryTruncationBeforeTheDecisionIsInvalid) {
  const std::string file = GetParam().file();
  ImageProbe probe;
  std::size_t decided_at = 0;
  while (probe.state() == State::kNeedMore) probe.Feed(AsBytes(file.substr(decided_at++, 1)));
  ASSERT_EQ(probe.state(), State::kDone);
  for (std::size_t length = 0; length < decided_at; ++length) {
    const Verdict v = ProbeWhole(file.substr(0, length));
    ASSERT_EQ(v.state, State::kInvalid) << "prefix " << length;
    ASSERT_FALSE(v.size);
    if (length == 0) {
      EXPECT_EQ(v.error, "empty file");
    } else if (v.format) {
      EXPECT_THAT(v.error, StartsWith("truncated ")) << "prefix " << length;
    } else {
      EXPECT_THAT(v.error, AnyOf(StartsWith("truncated "), StartsWith("not a recognised image format")))
          << "prefix " << length;
    }
  }
  EXPECT_EQ(ProbeWhole(file.substr(0, decided_at)), GetParam().expected);
}

TEST_P(FixtureTest, BytesAfterDoneAreIgnored) {
  ImageProbe probe;
  probe.Feed(AsBytes(GetParam().file()));
  ASSERT_EQ(probe.state(), State::kDone);
  const std::string garbage(100000, '\xFF');
  EXPECT_EQ(probe.Feed(AsBytes(garbage)), State::kDone);
  EXPECT_EQ(probe.Finish(), State::kDone);
  EXPECT_EQ(Summary(probe), GetParam().expected);
  EXPECT_EQ(probe.bytes_fed(), GetParam().file().size() + garbage.size());
}

TEST_P(FixtureTest, PaddingGrowsTheFileExactlyAndKeepsTheHeader) {
  const std::size_t base = GetParam().file().size();
  for (const std::size_t padding : {1u, 2u, 3u, 255u, 256u, 257u, 70000u}) {
    const std::string padded = GetParam().make(padding);
    EXPECT_EQ(padded.size(), base + padding);
    EXPECT_EQ(ProbeWhole(padded), GetParam().expected) << padding;
  }
}

TEST(ImageFixturesTest, MakeImageOfSizeIsExact) {
  for (const ImageFormat format : {ImageFormat::kJpeg, ImageFormat::kPng, ImageFormat::kGif, ImageFormat::kWebp,
                                   ImageFormat::kAvif, ImageFormat::kHeic, ImageFormat::kTiff}) {
    for (const std::size_t size : {1000u, 1001u, 123457u}) {
      const std::string file = fx::MakeImageOfSize(format, 40, 30, size);
      EXPECT_EQ(file.size(), size);
      EXPECT_EQ(ProbeWhole(file), Done(format, 40, 30));
    }
  }
  EXPECT_EQ(ProbeWhole(fx::MakeImage(ImageFormat::kWebp, 20000, 10)), Done(ImageFormat::kWebp, 20000, 10));
}

INSTANTIATE_TEST_SUITE_P(AllFormats, FixtureTest, ::testing::ValuesIn(Fixtures()),
                         [](const auto& test_info) { return test_info.param.name; });

// Streaming --------------------------------------------------------------

TEST(ImageProbeTest, FormatIsKnownFromTheMagicNumberAlone) {
  ImageProbe probe;
  const std::string png = fx::MakePng(10, 10);
  EXPECT_EQ(probe.Feed(AsBytes(png.substr(0, 7))), State::kNeedMore);
  EXPECT_EQ(probe.format(), std::nullopt);
  EXPECT_EQ(probe.Feed(AsBytes(png.substr(7, 1))), State::kNeedMore);
  EXPECT_EQ(probe.format(), ImageFormat::kPng);
  EXPECT_EQ(probe.dimensions(), std::nullopt);
}

TEST(ImageProbeTest, JpegStreamsPastLargeApp1Segment) {
  fx::JpegOptions options;
  options.app1_bytes = 60 * 1024;
  const std::string jpeg = fx::MakeJpeg(3000, 2000, 0, options);
  const std::size_t sof = jpeg.find("\xFF\xC0");
  ASSERT_GT(sof, options.app1_bytes);
  ImageProbe probe;
  // Everything up to the last byte of the frame header's width...
  EXPECT_EQ(probe.Feed(AsBytes(jpeg.substr(0, sof + 9))), State::kNeedMore);
  // ...then that byte and the component count decide.
  EXPECT_EQ(probe.Feed(AsBytes(jpeg.substr(sof + 9, 2))), State::kDone);
  ASSERT_TRUE(probe.dimensions());
  EXPECT_EQ(probe.dimensions()->width, 3000u);
  EXPECT_EQ(probe.dimensions()->height, 2000u);
}

TEST(ImageProbeTest, TiffIfdOneMebibyteIn) {
  for (const bool big_endian : {false, true}) {
    for (const bool big_tiff : {false, true}) {
      fx::TiffOptions options;
      options.big_endian = big_endian;
      options.big_tiff = big_tiff;
      options.pixel_bytes_before_ifd = 1 << 20;
      const std::string tiff = fx::MakeTiff(5000, 4000, 0, options);
      ImageProbe probe;
      std::size_t fed = 0;
      for (; fed < tiff.size() && probe.state() == State::kNeedMore; fed += 65536) {
        probe.Feed(AsBytes(std::string_view(tiff).substr(fed, 65536)));
      }
      EXPECT_GT(fed, std::size_t{1} << 20);
      EXPECT_EQ(Summary(probe), Done(ImageFormat::kTiff, 5000, 4000)) << big_endian << big_tiff;
    }
  }
}

TEST(ImageProbeTest, CopiesContinueIndependently) {
  const std::string avif = fx::MakeAvif(300, 200);
  ImageProbe first;
  first.Feed(AsBytes(avif.substr(0, avif.size() / 2)));
  ImageProbe second(first);
  first.Feed(AsBytes(avif.substr(avif.size() / 2)));
  EXPECT_EQ(Summary(first), Done(ImageFormat::kAvif, 300, 200));
  EXPECT_EQ(second.state(), State::kNeedMore);
  EXPECT_EQ(second.Finish(), State::kInvalid);
  second = first;
  EXPECT_EQ(Summary(second), Done(ImageFormat::kAvif, 300, 200));
}

// AVIF / HEIC ------------------------------------------------------------

TEST(ImageProbeTest, HeifReportsThePrimaryItemNotALargerThumbnail) {
  fx::HeifOptions options;
  options.thumbnail_width = 800;  // larger than the primary: only pitm/ipma can tell
  options.thumbnail_height = 600;
  EXPECT_EQ(ProbeWhole(fx::MakeHeic(640, 480, 0, options)), Done(ImageFormat::kHeic, 640, 480));
  EXPECT_EQ(ProbeWhole(fx::MakeAvif(640, 480, 0, options)), Done(ImageFormat::kAvif, 640, 480));

  options.pitm_after_iprp = true;
  EXPECT_EQ(ProbeWhole(fx::MakeHeic(640, 480, 0, options)), Done(ImageFormat::kHeic, 640, 480));

  options.pitm_version = 1;
  options.ipma_version = 1;
  options.ipma_wide_indices = true;
  EXPECT_EQ(ProbeWhole(fx::MakeAvif(640, 480, 0, options)), Done(ImageFormat::kAvif, 640, 480));
  options.pitm_after_iprp = false;
  EXPECT_EQ(ProbeWhole(fx::MakeAvif(640, 480, 0, options)), Done(ImageFormat::kAvif, 640, 480));
}

TEST(ImageProbeTest, HeifWithoutPrimaryItemTakesTheLargestIspe) {
  fx::HeifOptions options;
  options.thumbnail_width = 800;
  options.thumbnail_height = 600;
  options.with_pitm = false;
  EXPECT_EQ(ProbeWhole(fx::MakeHeic(640, 480, 0, options)), Done(ImageFormat::kHeic, 800, 600));
  options.thumbnail_width = 64;
  options.thumbnail_height = 48;
  EXPECT_EQ(ProbeWhole(fx::MakeAvif(640, 480, 0, options)), Done(ImageFormat::kAvif, 640, 480));
}

TEST(ImageProbeTest, HeifIsDecidedWhenMetaEndsNotAtEndOfFile) {
  const std::string heic = fx::MakeHeic(200, 100, 1 << 20);
  const std::size_t mdat = heic.find("mdat") - 4;
  ImageProbe probe;
  EXPECT_EQ(probe.Feed(AsBytes(heic.substr(0, mdat - 1))), State::kNeedMore);
  EXPECT_EQ(probe.Feed(AsBytes(heic.substr(mdat - 1, 1))), State::kDone);
}

// Top-level boxes of an ISOBMFF file, in order.
std::vector<std::string> TopLevelBoxes(const std::string& file) {
  std::vector<std::string> boxes;
  for (std::size_t at = 0; at < file.size();) {
    const auto size = static_cast<std::size_t>(static_cast<std::uint8_t>(file[at]) << 24 |
                                               static_cast<std::uint8_t>(file[at + 1]) << 16 |
                                               static_cast<std::uint8_t>(file[at + 2]) << 8 |
                                               static_cast<std::uint8_t>(file[at + 3]));
    boxes.push_back(file.substr(at, size));
    at += size;
  }
  return boxes;
}

TEST(ImageProbeTest, HeifMetaAfterLargeSizeMdat) {
  const auto boxes = TopLevelBoxes(fx::MakeAvif(1234, 567));
  ASSERT_EQ(boxes.size(), 3u);  // ftyp, meta, mdat
  const std::string payload(100000, '\x01');
  const std::string mdat64 = Be(1, 4) + "mdat" + Be(payload.size() + 16, 8) + payload;
  const std::string file = boxes[0] + mdat64 + boxes[1];
  EXPECT_EQ(ProbeWhole(file), Done(ImageFormat::kAvif, 1234, 567));
  EXPECT_EQ(ProbeInChunks(file, {3, 30, 31, 100030}), Done(ImageFormat::kAvif, 1234, 567));
}

TEST(ImageProbeTest, HeifMetaOfSizeZeroIsDecidedAtFinish) {
  const auto boxes = TopLevelBoxes(fx::MakeHeic(77, 88));
  const std::string meta_to_end = Be(0, 4) + boxes[1].substr(4);
  const std::string file = boxes[0] + boxes[2] + meta_to_end;
  ImageProbe probe;
  EXPECT_EQ(probe.Feed(AsBytes(file)), State::kNeedMore);
  EXPECT_EQ(probe.Finish(), State::kDone);
  EXPECT_EQ(Summary(probe), Done(ImageFormat::kHeic, 77, 88));
  // The same file cut inside the meta box is truncated.
  EXPECT_EQ(ProbeWhole(file.substr(0, file.size() - 3)).error, "truncated AVIF/HEIC header");
}

TEST(ImageProbeTest, FtypBrandsDecideAvifOrHeic) {
  const std::string meta =
      FullBox("meta", FullBox("pitm", Be(1, 2)) +
                          Box("iprp", Box("ipco", Ispe(5, 6)) + FullBox("ipma", Be(1, 4) + Be(1, 2) + "\x01\x81")));
  const auto probe = [&](std::string_view major, std::vector<std::string_view> compatible) {
    return ProbeWhole(Ftyp(major, std::move(compatible)) + meta);
  };
  EXPECT_EQ(probe("mif1", {"mif1", "heic"}), Done(ImageFormat::kHeic, 5, 6));
  EXPECT_EQ(probe("msf1", {"msf1", "hevc"}), Done(ImageFormat::kHeic, 5, 6));
  EXPECT_EQ(probe("heix", {}), Done(ImageFormat::kHeic, 5, 6));
  EXPECT_EQ(probe("mif1", {"miaf", "avif"}), Done(ImageFormat::kAvif, 5, 6));
  EXPECT_EQ(probe("avis", {"msf1"}), Done(ImageFormat::kAvif, 5, 6));
  for (const auto& [major, compatible] : std::vector<std::pair<std::string_view, std::vector<std::string_view>>>{
           {"mif1", {"mif1"}}, {"msf1", {}}, {"isom", {"isom", "mp41"}}, {"qt  ", {}}}) {
    const Verdict v = probe(major, compatible);
    EXPECT_EQ(v.state, State::kInvalid) << major;
    EXPECT_EQ(v.format, std::nullopt);
    EXPECT_THAT(v.error, StartsWith("not a recognised image format"));
  }
}

TEST(ImageProbeTest, FtypMustEndWithinFourKibibytes) {
  const auto ftyp_of_size = [](std::size_t size) {
    std::vector<std::string_view> compatible((size - 16) / 4 - 1, "mif1");
    compatible.push_back("heic");
    return Ftyp("mif1", compatible);
  };
  const std::string meta = FullBox("meta", Box("iprp", Box("ipco", Ispe(9, 9))));
  EXPECT_EQ(ProbeWhole(ftyp_of_size(4096) + meta), Done(ImageFormat::kHeic, 9, 9));

  const std::string too_big = ftyp_of_size(4100) + meta;
  ImageProbe probe;
  EXPECT_EQ(probe.Feed(AsBytes(too_big.substr(0, 4))), State::kInvalid);
  EXPECT_EQ(probe.format(), std::nullopt);
}

// Garbage and corruption ---------------------------------------------------

TEST(ImageProbeTest, UnknownMagicIsRefusedWithinTheFirstBytes) {
  const std::vector<std::pair<std::string, std::size_t>> cases = {
      {"hello world, this is text", 1},
      {"%PDF-1.7\n", 1},
      {"BM6\x00\x00\x00", 1},
      {std::string("PK\x03\x04", 4), 1},
      {"GIF88a....", 5},
      {std::string("RIFF\x10\0\0\0WAVEfmt ", 16), 10},
      {std::string("\xFF\xD9\xFF", 3), 2},
      {std::string("II\x2A\x01", 4), 4},
      {std::string("\x00\x00\x20\x00" "ftyp", 8), 3},   // an 8 KiB "ftyp" cannot be one
      {std::string("\x00\x00\x00\x08" "ftyp", 8), 4},   // nor can an 8-byte one
      {std::string("\x00\x00\x00\x18" "moov", 8), 5},
  };
  for (const auto& [file, refused_after] : cases) {
    ImageProbe probe;
    std::size_t fed = 0;
    while (probe.state() == State::kNeedMore && fed < file.size()) probe.Feed(AsBytes(file.substr(fed++, 1)));
    EXPECT_EQ(probe.state(), State::kInvalid) << file;
    EXPECT_EQ(fed, refused_after) << file;
    EXPECT_EQ(probe.error(),
              "not a recognised image format (accepted: JPEG, PNG, GIF, WebP, AVIF, HEIC, TIFF)");
    EXPECT_EQ(probe.format(), std::nullopt);
  }
}

TEST(ImageProbeTest, FeedAfterInvalidIsANoOp) {
  ImageProbe probe;
  EXPECT_EQ(probe.Feed(AsBytes("nope")), State::kInvalid);
  const std::string error(probe.error());
  const std::string png = fx::MakePng(1, 1);
  EXPECT_EQ(probe.Feed(AsBytes(png)), State::kInvalid);
  EXPECT_EQ(probe.Finish(), State::kInvalid);
  EXPECT_EQ(probe.error(), error);
  EXPECT_EQ(probe.bytes_fed(), 4 + png.size());
}

void ExpectInvalid(const std::string& file, std::string_view error_part, ImageFormat format) {
  const Verdict v = ProbeWhole(file);
  EXPECT_EQ(v.state, State::kInvalid) << error_part;
  EXPECT_EQ(v.format, format) << error_part;
  EXPECT_THAT(v.error, HasSubstr(error_part));
  EXPECT_FALSE(v.size);
  // Corruption is found as soon as it is seen, not only at Finish.
  ImageProbe probe;
  EXPECT_EQ(probe.Feed(AsBytes(file)), State::kInvalid) << error_part;
}

TEST(ImageProbeTest, CorruptPng) {
  std::string png = fx::MakePng(100, 100);
  png[24] = 16;  // bit depth, covered by the IHDR CRC
  ExpectInvalid(png, "IHDR checksum mismatch", ImageFormat::kPng);

  const std::string ihdr_zero_width = "IHDR" + Be(0, 4) + Be(100, 4) + std::string("\x08\x02\0\0\0", 5);
  ExpectInvalid(std::string("\x89PNG\r\n\x1A\n") + Be(13, 4) + ihdr_zero_width + Be(Crc32(ihdr_zero_width), 4),
                "zero or out-of-range dimensions", ImageFormat::kPng);

  std::string not_ihdr = fx::MakePng(100, 100);
  not_ihdr[12] = 'i';
  ExpectInvalid(not_ihdr, "first chunk is not IHDR", ImageFormat::kPng);
}

TEST(ImageProbeTest, JpegMarkerWalk) {
  const std::string app0 = JpegSegment(0xE0, std::string("JFIF\0\x01\x01\0\0\x01\0\x01\0\0", 14));
  // Fill bytes, standalone markers (TEM, RSTn, SOI) and a DHT (C4, not a SOF).
  const std::string busy = kSoi + "\xFF\xFF\xFF" + std::string("\x01", 1) + "\xFF\xD3\xFF\xD8" + app0 +
                           JpegSegment(0xC4, std::string(17, '\0')) + "\xFF\xFF" + JpegSof(0xC1, 9, 7);
  EXPECT_EQ(ProbeWhole(busy), Done(ImageFormat::kJpeg, 9, 7));
  for (const std::uint8_t sof : {0xC0, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}) {
    EXPECT_EQ(ProbeWhole(kSoi + app0 + JpegSof(sof, 300, 200)), Done(ImageFormat::kJpeg, 300, 200)) << +sof;
  }
  // DAC (CC) and JPG (C8) are ordinary segments, not frame headers.
  EXPECT_EQ(ProbeWhole(kSoi + JpegSegment(0xCC, std::string("\x00\x11", 2)) +
                       JpegSegment(0xC8, std::string("\x08\x00\x01\x00\x01\x01\x01\x11\x00", 9)) +
                       JpegSof(0xC0, 1, 2)),
            Done(ImageFormat::kJpeg, 1, 2));
}

TEST(ImageProbeTest, CorruptJpeg) {
  const std::string sos = JpegSegment(0xDA, std::string("\x01\x01\x00\x00\x3F\x00", 6));
  ExpectInvalid(kSoi + sos + JpegSof(0xC0, 10, 10), "scan before the frame header", ImageFormat::kJpeg);
  ExpectInvalid(kSoi + "\xFF\xD9" + JpegSof(0xC0, 10, 10), "end of image before the frame header",
                ImageFormat::kJpeg);
  ExpectInvalid(kSoi + JpegSof(0xC0, 10, 0), "zero width or height", ImageFormat::kJpeg);
  ExpectInvalid(kSoi + JpegSof(0xC0, 0, 10), "zero width or height", ImageFormat::kJpeg);
  ExpectInvalid(kSoi + JpegSegment(0xE0, "JFIF") + "\x42" + JpegSof(0xC0, 10, 10), "bad marker",
                ImageFormat::kJpeg);
  ExpectInvalid(kSoi + std::string("\xFF\x00", 2) + JpegSof(0xC0, 10, 10), "bad marker", ImageFormat::kJpeg);
  ExpectInvalid(kSoi + std::string("\xFF\xE0\x00\x01", 4), "bad segment length", ImageFormat::kJpeg);
  ExpectInvalid(kSoi + JpegSegment(0xC0, "\x08" + Be(10, 2) + Be(10, 2) + std::string("\x02\x01\x11\x00", 4)),
                "bad frame header", ImageFormat::kJpeg);
  const Verdict truncated = ProbeWhole(kSoi + JpegSegment(0xE1, std::string(100, 'x')));
  EXPECT_EQ(truncated.error, "truncated JPEG header");
}

TEST(ImageProbeTest, CorruptGifAndWebp) {
  std::string gif = fx::MakeGif(5, 5);
  gif[6] = gif[7] = 0;
  ExpectInvalid(gif, "zero width or height", ImageFormat::kGif);

  std::string vp8 = fx::MakeWebpVp8(100, 100);
  vp8[23] = 0x00;  // start code 9d 01 2a at payload offset 3
  ExpectInvalid(vp8, "VP8 start code missing", ImageFormat::kWebp);

  std::string inter = fx::MakeWebpVp8(100, 100);
  inter[20] |= 1;
  ExpectInvalid(inter, "key frame", ImageFormat::kWebp);

  std::string vp8l = fx::MakeWebpVp8l(100, 100);
  vp8l[20] = 0x2E;
  ExpectInvalid(vp8l, "bad VP8L signature", ImageFormat::kWebp);

  const std::string riff_too_small = "RIFF" + Le(12, 4) + "WEBPVP8L" + Le(6, 4) + "\x2f" + Le(0, 4) + "x";
  ExpectInvalid(riff_too_small, "bad chunk size", ImageFormat::kWebp);
  const std::string alph_first = "RIFF" + Le(30, 4) + "WEBPALPH" + Le(6, 4) + "xxxxxx";
  ExpectInvalid(alph_first, "first chunk is not VP8", ImageFormat::kWebp);
}

TEST(ImageProbeTest, CorruptTiff) {
  const auto classic = [](std::uint32_t ifd_offset, std::uint16_t count, const std::string& entries) {
    return std::string("II*\0", 4) + Le(ifd_offset, 4) + Le(count, 2) + entries;
  };
  const auto entry = [](std::uint16_t tag, std::uint16_t type, std::uint32_t value) {
    return Le(tag, 2) + Le(type, 2) + Le(1, 4) + Le(value, 4);
  };
  const std::string both = entry(256, 3, 10) + entry(257, 4, 20);
  EXPECT_EQ(ProbeWhole(classic(8, 2, both)), Done(ImageFormat::kTiff, 10, 20));
  ExpectInvalid(classic(4, 2, both), "IFD offset points into the header", ImageFormat::kTiff);
  ExpectInvalid(classic(8, 0, both), "entry count", ImageFormat::kTiff);
  ExpectInvalid(classic(8, 4097, both), "entry count", ImageFormat::kTiff);
  ExpectInvalid(classic(8, 2, entry(256, 2, 10) + entry(257, 4, 20)), "unexpected type", ImageFormat::kTiff);
  ExpectInvalid(classic(8, 2, entry(256, 3, 0) + entry(257, 4, 20)), "zero", ImageFormat::kTiff);
  ExpectInvalid(classic(8, 2, entry(256, 3, 10) + entry(258, 3, 8)), "lacks ImageWidth or ImageLength",
                ImageFormat::kTiff);
  // The IFD is past the end of the file.
  EXPECT_EQ(ProbeWhole(classic(4000, 2, both)).error, "truncated TIFF header");
}

TEST(ImageProbeTest, InconsistentBoxSizes) {
  const std::string ftyp = Ftyp("avif", {"mif1"});
  const auto file_with_ipco = [&](const std::string& ipco_payload) {
    return ftyp + FullBox("meta", Box("iprp", Box("ipco", ipco_payload)));
  };
  EXPECT_EQ(ProbeWhole(file_with_ipco(Ispe(3, 4))), Done(ImageFormat::kAvif, 3, 4));

  std::string overflowing = Ispe(3, 4);
  overflowing[3] = 40;  // the ispe claims more than its ipco holds
  ExpectInvalid(file_with_ipco(overflowing), "inconsistent box size", ImageFormat::kAvif);
  std::string tiny = Ispe(3, 4);
  tiny[3] = 7;  // smaller than a box header
  ExpectInvalid(file_with_ipco(tiny), "inconsistent box size", ImageFormat::kAvif);
  // An ispe too small for its fields, and a parent with 4 stray bytes.
  ExpectInvalid(file_with_ipco(Box("ispe", std::string(7, '\0') + "\x01")), "inconsistent box size", ImageFormat::kAvif);
  ExpectInvalid(file_with_ipco(Ispe(3, 4) + "abcd"), "inconsistent box size", ImageFormat::kAvif);
  // A 64-bit size that wraps around.
  ExpectInvalid(ftyp + Be(1, 4) + "free" + Be(~std::uint64_t{0} - 5, 8), "inconsistent box size",
                ImageFormat::kAvif);
  // An ipma whose entries run past its end.
  ExpectInvalid(ftyp + FullBox("meta", Box("iprp", Box("ipco", Ispe(3, 4)) +
                                                       FullBox("ipma", Be(2, 4) + Be(1, 2) + "\x01\x81"))),
                "inconsistent box size", ImageFormat::kAvif);
  // Meta without any ispe.
  ExpectInvalid(ftyp + FullBox("meta", FullBox("pitm", Be(1, 2))), "no image size (ispe)", ImageFormat::kAvif);
  // Meta never arrives.
  EXPECT_EQ(ProbeWhole(ftyp + Box("mdat", "xxxx")).error, "truncated AVIF/HEIC header");
}

TEST(ImageProbeTest, HugeDeclaredDimensionsAreReported) {
  EXPECT_EQ(ProbeWhole(fx::MakePng(100000, 100000)), Done(ImageFormat::kPng, 100000, 100000));
  EXPECT_EQ(ProbeWhole(fx::MakeTiff(0xFFFFFFFF, 0xFFFFFFFF)), Done(ImageFormat::kTiff, 0xFFFFFFFF, 0xFFFFFFFF));
  EXPECT_EQ(ProbeWhole(fx::MakeWebpVp8x(1 << 24, 1 << 24)), Done(ImageFormat::kWebp, 1 << 24, 1 << 24));
  EXPECT_EQ(ProbeWhole(fx::MakeHeic(0xFFFFFFFF, 70000)), Done(ImageFormat::kHeic, 0xFFFFFFFF, 70000));
  EXPECT_EQ(ProbeWhole(fx::MakeGif(65535, 65535)), Done(ImageFormat::kGif, 65535, 65535));
}

}  // namespace
}  // namespace imgsvc::imaging
