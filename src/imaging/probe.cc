#include "imaging/probe.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

namespace imgsvc::imaging {
namespace {

using namespace std::string_view_literals;
using core::ImageFormat;
using State = ImageProbe::State;

// A box whose size is 0 ("to the end of the file") inside such a box ends here.
constexpr std::uint64_t kUnbounded = std::numeric_limits<std::uint64_t>::max();
// Every accepted format is known within this many bytes: the largest magic is
// 12 bytes, and an ISOBMFF ftyp box must end by then.
constexpr std::uint64_t kMaxFtypBytes = 4096;
constexpr std::uint64_t kMaxTiffEntries = 4096;
constexpr std::size_t kMaxIspe = 32;
constexpr std::size_t kMaxAssociations = 32;
constexpr std::size_t kMaxBoxDepth = 3;  // meta > iprp > ipco

constexpr std::string_view kUnrecognised =
    "not a recognised image format (accepted: JPEG, PNG, GIF, WebP, AVIF, HEIC, TIFF)";
constexpr std::string_view kEmpty = "empty file";
constexpr std::string_view kJpegTruncated = "truncated JPEG header";
constexpr std::string_view kJpegBadMarker = "corrupt JPEG header: bad marker";
constexpr std::string_view kJpegBadLength = "corrupt JPEG header: bad segment length";
constexpr std::string_view kJpegEoiFirst = "corrupt JPEG header: end of image before the frame header";
constexpr std::string_view kJpegSosFirst = "corrupt JPEG header: scan before the frame header";
constexpr std::string_view kJpegBadFrame = "corrupt JPEG header: bad frame header";
constexpr std::string_view kJpegZeroSize =
    "JPEG with zero width or height (height defined by DNL) is not supported";
constexpr std::string_view kPngTruncated = "truncated PNG header";
constexpr std::string_view kPngNoIhdr = "corrupt PNG header: first chunk is not IHDR";
constexpr std::string_view kPngBadCrc = "corrupt PNG header: IHDR checksum mismatch";
constexpr std::string_view kPngBadSize = "corrupt PNG header: zero or out-of-range dimensions";
constexpr std::string_view kGifTruncated = "truncated GIF header";
constexpr std::string_view kGifZeroSize = "corrupt GIF header: zero width or height";
constexpr std::string_view kWebpTruncated = "truncated WebP header";
constexpr std::string_view kWebpBadRiff = "corrupt WebP header: bad RIFF size";
constexpr std::string_view kWebpBadChunk = "corrupt WebP header: first chunk is not VP8, VP8L or VP8X";
constexpr std::string_view kWebpChunkSize = "corrupt WebP header: bad chunk size";
constexpr std::string_view kWebpNotKeyFrame = "corrupt WebP header: VP8 data does not start with a key frame";
constexpr std::string_view kWebpNoStartCode = "corrupt WebP header: VP8 start code missing";
constexpr std::string_view kWebpBadVp8l = "corrupt WebP header: bad VP8L signature";
constexpr std::string_view kWebpZeroSize = "corrupt WebP header: zero width or height";
constexpr std::string_view kTiffTruncated = "truncated TIFF header";
constexpr std::string_view kTiffBadHeader = "corrupt TIFF header: bad BigTIFF header";
constexpr std::string_view kTiffBadOffset = "corrupt TIFF header: IFD offset points into the header";
constexpr std::string_view kTiffBadCount = "corrupt TIFF header: IFD entry count is zero or too large";
constexpr std::string_view kTiffBadType = "corrupt TIFF header: ImageWidth/ImageLength of unexpected type";
constexpr std::string_view kTiffZeroSize = "corrupt TIFF header: zero or out-of-range width or height";
constexpr std::string_view kTiffNoSize = "corrupt TIFF header: IFD0 lacks ImageWidth or ImageLength";
constexpr std::string_view kIsoTruncated = "truncated AVIF/HEIC header";
constexpr std::string_view kIsoBadFtyp = "corrupt AVIF/HEIC header: bad ftyp box";
constexpr std::string_view kIsoBadBox = "corrupt AVIF/HEIC header: inconsistent box size";
constexpr std::string_view kIsoNoIspe = "corrupt AVIF/HEIC header: no image size (ispe) property";
constexpr std::string_view kIsoZeroSize = "corrupt AVIF/HEIC header: zero width or height";

constexpr std::uint16_t Be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }
constexpr std::uint32_t Be24(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 16 | std::uint32_t{p[1]} << 8 | p[2];
}
constexpr std::uint32_t Be32(const std::uint8_t* p) { return std::uint32_t{p[0]} << 24 | Be24(p + 1); }
constexpr std::uint64_t Be64(const std::uint8_t* p) { return std::uint64_t{Be32(p)} << 32 | Be32(p + 4); }
constexpr std::uint16_t Le16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[1] << 8 | p[0]); }
constexpr std::uint32_t Le24(const std::uint8_t* p) {
  return std::uint32_t{p[2]} << 16 | std::uint32_t{p[1]} << 8 | p[0];
}
constexpr std::uint32_t Le32(const std::uint8_t* p) { return std::uint32_t{p[3]} << 24 | Le24(p); }
constexpr std::uint64_t Le64(const std::uint8_t* p) { return std::uint64_t{Le32(p + 4)} << 32 | Le32(p); }

constexpr std::uint32_t FourCc(std::string_view s) {
  return std::uint32_t{static_cast<std::uint8_t>(s[0])} << 24 |
         std::uint32_t{static_cast<std::uint8_t>(s[1])} << 16 |
         std::uint32_t{static_cast<std::uint8_t>(s[2])} << 8 | static_cast<std::uint8_t>(s[3]);
}

constexpr std::array<std::uint32_t, 256> kCrcTable = [] {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    std::uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[n] = c;
  }
  return table;
}();

std::uint32_t Crc32(const std::uint8_t* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = kCrcTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

enum class Family : std::uint8_t { kUnknown, kJpeg, kPng, kGif, kWebp, kTiff, kIsobmff };

struct Signature {
  Family family;
  std::string_view magic;
  std::uint16_t wildcards = 0;  // bit i set: byte i may be anything
};

// ISOBMFF is not listed: its magic starts with a size (see IsobmffPrefix).
constexpr std::array kSignatures = {
    Signature{Family::kJpeg, "\xFF\xD8\xFF"sv},
    Signature{Family::kPng, "\x89PNG\r\n\x1A\n"sv},
    Signature{Family::kGif, "GIF87a"sv},
    Signature{Family::kGif, "GIF89a"sv},
    Signature{Family::kWebp, "RIFF\0\0\0\0WEBP"sv, 0xF0},
    Signature{Family::kTiff, "II*\0"sv},
    Signature{Family::kTiff, "MM\0*"sv},
    Signature{Family::kTiff, "II+\0"sv},
    Signature{Family::kTiff, "MM\0+"sv},
};
constexpr std::size_t kSniffBytes = 12;

bool MatchesPrefix(const Signature& sig, const std::uint8_t* s, std::size_t n) {
  for (std::size_t i = 0; i < n && i < sig.magic.size(); ++i) {
    if ((sig.wildcards >> i & 1) == 0 && s[i] != static_cast<std::uint8_t>(sig.magic[i])) return false;
  }
  return true;
}

// "....ftyp" where the size is 1 (64-bit size follows) or a plausible ftyp
// size, so that ordinary text or binary garbage is refused after a few bytes.
bool IsobmffPrefix(const std::uint8_t* s, std::size_t n) {
  if (n >= 1 && s[0] != 0) return false;
  if (n >= 2 && s[1] != 0) return false;
  if (n >= 3 && s[2] > (kMaxFtypBytes >> 8)) return false;
  if (n >= 4) {
    const std::uint32_t size = Be32(s);
    if (size != 1 && (size < 16 || size > kMaxFtypBytes)) return false;
  }
  constexpr std::string_view kFtyp = "ftyp";
  for (std::size_t i = 4; i < n && i < 8; ++i) {
    if (s[i] != static_cast<std::uint8_t>(kFtyp[i - 4])) return false;
  }
  return true;
}

std::optional<ImageFormat> BrandFormat(std::uint32_t brand) {
  switch (brand) {
    case FourCc("avif"):
    case FourCc("avis"):
      return ImageFormat::kAvif;
    case FourCc("heic"):
    case FourCc("heix"):
    case FourCc("heim"):
    case FourCc("heis"):
    case FourCc("hevc"):
    case FourCc("hevx"):
      return ImageFormat::kHeic;
    default:
      return std::nullopt;
  }
}

bool IsJpegStartOfFrame(std::uint8_t marker) {
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

// What to do once `need` bytes are in the buffer (or, for need 0, as soon as
// the pending skip is done).
enum class Step : std::uint8_t {
  kSniff,
  kJpegMarkerStart,
  kJpegMarker,
  kJpegSegmentLength,
  kJpegFrameHeader,
  kPngHeader,
  kGifScreen,
  kWebpChunkHeader,
  kWebpVp8,
  kWebpVp8l,
  kWebpVp8x,
  kTiffHeader,
  kTiffEntryCount,
  kTiffEntry,
  kFtypLargeSize,
  kFtypMajorBrand,
  kFtypCompatibleBrand,
  kBoxBoundary,
  kBoxHeader,
  kBoxLargeSize,
  kMetaFullBox,
  kPitmFullBox,
  kPitmItem,
  kIpmaHeader,
  kIpmaEntry,
  kIpmaAssociation,
  kIspe,
};

enum class Container : std::uint8_t { kMeta, kIprp, kIpco };

struct Ispe {
  std::uint32_t property_index;  // 1-based, within ipco
  std::uint32_t width;
  std::uint32_t height;
};

struct Association {
  std::uint32_t item;
  std::uint8_t ispe_slot;
};

}  // namespace

struct ImageProbe::Impl {
  // Input bookkeeping.
  std::uint64_t fed = 0;   // bytes passed to Feed
  std::uint64_t pos = 0;   // bytes consumed by the parser
  std::uint64_t skip = 0;  // bytes to pass over before collecting
  State state = State::kNeedMore;
  Step step = Step::kSniff;
  std::uint8_t need = 1;
  std::uint8_t have = 0;
  std::uint8_t buf[32] = {};
  std::string_view error;

  Family family = Family::kUnknown;
  bool has_format = false;
  ImageFormat format = ImageFormat::kJpeg;
  Dimensions dims;

  std::uint8_t sniff[kSniffBytes] = {};
  std::uint8_t sniff_len = 0;

  // WebP
  std::uint32_t riff_size = 0;

  // TIFF
  bool little_endian = false;
  bool big_tiff = false;
  std::uint64_t tiff_entries_left = 0;
  std::uint32_t tiff_width = 0;
  std::uint32_t tiff_height = 0;

  // ISOBMFF
  std::uint64_t box_start = 0;
  std::uint64_t box_end = 0;  // of the current box (ftyp while in it)
  std::uint32_t box_type = 0;
  std::uint8_t depth = 0;
  Container open_type[kMaxBoxDepth] = {};
  std::uint64_t open_end[kMaxBoxDepth] = {};
  bool meta_seen = false;
  bool iprp_seen = false;
  bool ipco_seen = false;
  bool primary_known = false;
  std::uint32_t primary_item = 0;
  std::uint32_t property_index = 0;
  std::uint8_t ipma_version = 0;
  std::uint32_t ipma_flags = 0;
  std::uint32_t ipma_entries_left = 0;
  std::uint32_t ipma_item = 0;
  std::uint8_t ipma_associations_left = 0;
  std::uint8_t ispe_count = 0;
  std::uint8_t association_count = 0;
  Ispe ispe[kMaxIspe] = {};
  Association associations[kMaxAssociations] = {};

  void Consume(const std::uint8_t* p, std::size_t n);
  void Finish();

 private:
  void Expect(std::size_t n, Step next) {
    need = static_cast<std::uint8_t>(n);
    step = next;
  }
  void Fail(std::string_view why) {
    state = State::kInvalid;
    error = why;
  }
  void Succeed(std::uint32_t width, std::uint32_t height) {
    dims = {width, height};
    state = State::kDone;
  }
  void SetFormat(ImageFormat f) {
    format = f;
    has_format = true;
  }
  std::uint16_t U16(const std::uint8_t* p) const { return little_endian ? Le16(p) : Be16(p); }
  std::uint32_t U32(const std::uint8_t* p) const { return little_endian ? Le32(p) : Be32(p); }
  std::uint64_t U64(const std::uint8_t* p) const { return little_endian ? Le64(p) : Be64(p); }

  void RunStep();
  void Sniff();
  void Start(Family f);
  void JpegMarker();
  void JpegFrameHeader();
  void PngHeader();
  void WebpChunkHeader();
  void WebpVp8();
  void WebpVp8l();
  void TiffHeader();
  void TiffEntryCount();
  void TiffEntry();
  void FtypBrand();
  void BoxBoundary();
  void BoxHeader();
  void SetBoxEnd(std::uint64_t size);
  void EnterBox();
  bool RequireRoom(std::size_t n);
  void SkipRestOfBox();
  void NextIpmaEntry();
  void NextIpmaAssociation();
  void Associate(std::uint32_t item, std::uint32_t index);
  void ConcludeMeta();
  bool MetaEndsWithFile() const;
  std::uint64_t ParentEnd() const { return depth == 0 ? kUnbounded : open_end[depth - 1]; }
};

void ImageProbe::Impl::Consume(const std::uint8_t* p, std::size_t n) {
  const std::uint8_t* const end = p + n;
  for (;;) {
    if (skip != 0) {
      const std::uint64_t k = std::min<std::uint64_t>(skip, static_cast<std::uint64_t>(end - p));
      p += k;
      pos += k;
      skip -= k;
      if (skip != 0) return;
    }
    if (have < need) {
      if (p == end) return;
      const std::size_t k = std::min<std::size_t>(need - have, static_cast<std::size_t>(end - p));
      std::memcpy(buf + have, p, k);
      have = static_cast<std::uint8_t>(have + k);
      p += k;
      pos += k;
      if (have < need) return;
    }
    have = 0;
    RunStep();
    if (state != State::kNeedMore) return;
  }
}

void ImageProbe::Impl::RunStep() {
  switch (step) {
    case Step::kSniff:
      return Sniff();
    case Step::kJpegMarkerStart:
      if (buf[0] != 0xFF) return Fail(kJpegBadMarker);
      return Expect(1, Step::kJpegMarker);
    case Step::kJpegMarker:
      return JpegMarker();
    case Step::kJpegSegmentLength: {
      const std::uint16_t length = Be16(buf);
      if (length < 2) return Fail(kJpegBadLength);
      skip = length - 2u;
      return Expect(1, Step::kJpegMarkerStart);
    }
    case Step::kJpegFrameHeader:
      return JpegFrameHeader();
    case Step::kPngHeader:
      return PngHeader();
    case Step::kGifScreen: {
      const std::uint16_t width = Le16(buf);
      const std::uint16_t height = Le16(buf + 2);
      if (width == 0 || height == 0) return Fail(kGifZeroSize);
      return Succeed(width, height);
    }
    case Step::kWebpChunkHeader:
      return WebpChunkHeader();
    case Step::kWebpVp8:
      return WebpVp8();
    case Step::kWebpVp8l:
      return WebpVp8l();
    case Step::kWebpVp8x:
      return Succeed(Le24(buf + 4) + 1, Le24(buf + 7) + 1);
    case Step::kTiffHeader:
      return TiffHeader();
    case Step::kTiffEntryCount:
      return TiffEntryCount();
    case Step::kTiffEntry:
      return TiffEntry();
    case Step::kFtypLargeSize: {
      const std::uint64_t size = Be64(buf);
      if (size < 24 || size > kMaxFtypBytes || (size - 24) % 4 != 0) return Fail(kIsoBadFtyp);
      box_end = size;
      return Expect(8, Step::kFtypMajorBrand);
    }
    case Step::kFtypMajorBrand:
      return FtypBrand();  // major brand and minor version
    case Step::kFtypCompatibleBrand:
      return FtypBrand();
    case Step::kBoxBoundary:
      return BoxBoundary();
    case Step::kBoxHeader:
      return BoxHeader();
    case Step::kBoxLargeSize: {
      const std::uint64_t size = Be64(buf);
      if (size < 16) return Fail(kIsoBadBox);
      SetBoxEnd(size);
      if (state == State::kNeedMore) EnterBox();
      return;
    }
    case Step::kMetaFullBox:
      return Expect(0, Step::kBoxBoundary);
    case Step::kPitmFullBox: {
      const std::size_t id_bytes = buf[0] == 0 ? 2 : 4;
      if (RequireRoom(id_bytes)) Expect(id_bytes, Step::kPitmItem);
      return;
    }
    case Step::kPitmItem:
      primary_item = need == 2 ? Be16(buf) : Be32(buf);
      primary_known = true;
      return SkipRestOfBox();
    case Step::kIpmaHeader:
      ipma_version = buf[0];
      ipma_flags = Be24(buf + 1);
      ipma_entries_left = Be32(buf + 4);
      return NextIpmaEntry();
    case Step::kIpmaEntry:
      ipma_item = need == 3 ? Be16(buf) : Be32(buf);
      ipma_associations_left = buf[need - 1];
      return NextIpmaAssociation();
    case Step::kIpmaAssociation:
      Associate(ipma_item, need == 2 ? Be16(buf) & 0x7FFFu : buf[0] & 0x7Fu);
      return NextIpmaAssociation();
    case Step::kIspe:
      if (ispe_count < kMaxIspe) ispe[ispe_count++] = {property_index, Be32(buf + 4), Be32(buf + 8)};
      return SkipRestOfBox();
  }
}

void ImageProbe::Impl::Sniff() {
  sniff[sniff_len++] = buf[0];
  bool viable = false;
  for (const Signature& sig : kSignatures) {
    if (!MatchesPrefix(sig, sniff, sniff_len)) continue;
    if (sniff_len == sig.magic.size()) return Start(sig.family);
    viable = true;
  }
  if (IsobmffPrefix(sniff, sniff_len)) {
    if (sniff_len == 8) return Start(Family::kIsobmff);
    viable = true;
  }
  if (!viable) return Fail(kUnrecognised);
  Expect(1, Step::kSniff);
}

void ImageProbe::Impl::Start(Family f) {
  family = f;
  switch (f) {
    case Family::kJpeg:
      SetFormat(ImageFormat::kJpeg);
      return Expect(1, Step::kJpegMarker);  // the magic's last 0xFF opens a marker
    case Family::kPng:
      SetFormat(ImageFormat::kPng);
      return Expect(25, Step::kPngHeader);  // IHDR: length, type, 13 bytes, CRC
    case Family::kGif:
      SetFormat(ImageFormat::kGif);
      return Expect(4, Step::kGifScreen);
    case Family::kWebp:
      SetFormat(ImageFormat::kWebp);
      riff_size = Le32(sniff + 4);
      if (riff_size < 4 + 8) return Fail(kWebpBadRiff);
      return Expect(8, Step::kWebpChunkHeader);
    case Family::kTiff:
      SetFormat(ImageFormat::kTiff);
      little_endian = sniff[0] == 'I';
      big_tiff = sniff[little_endian ? 2 : 3] == 0x2B;
      return Expect(big_tiff ? 12 : 4, Step::kTiffHeader);
    case Family::kIsobmff: {
      const std::uint32_t size = Be32(sniff);
      if (size == 1) return Expect(8, Step::kFtypLargeSize);
      if ((size - 16) % 4 != 0) return Fail(kIsoBadFtyp);
      box_end = size;
      return Expect(8, Step::kFtypMajorBrand);
    }
    case Family::kUnknown:
      return Fail(kUnrecognised);
  }
}

// JPEG ------------------------------------------------------------------------

void ImageProbe::Impl::JpegMarker() {
  const std::uint8_t marker = buf[0];
  if (marker == 0xFF) return Expect(1, Step::kJpegMarker);  // fill byte
  if (marker == 0x00) return Fail(kJpegBadMarker);
  if (marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) {
    return Expect(1, Step::kJpegMarkerStart);  // TEM, SOI, RSTn: no length
  }
  if (marker == 0xD9) return Fail(kJpegEoiFirst);
  if (marker == 0xDA) return Fail(kJpegSosFirst);
  // SOFn: length, precision, height, width, component count.
  if (IsJpegStartOfFrame(marker)) return Expect(8, Step::kJpegFrameHeader);
  Expect(2, Step::kJpegSegmentLength);
}

void ImageProbe::Impl::JpegFrameHeader() {
  const std::uint16_t length = Be16(buf);
  const std::uint16_t height = Be16(buf + 3);
  const std::uint16_t width = Be16(buf + 5);
  const std::uint8_t components = buf[7];
  if (components == 0 || length != 8 + 3 * components) return Fail(kJpegBadFrame);
  if (width == 0 || height == 0) return Fail(kJpegZeroSize);
  Succeed(width, height);
}

// PNG -------------------------------------------------------------------------

void ImageProbe::Impl::PngHeader() {
  if (Be32(buf) != 13 || Be32(buf + 4) != FourCc("IHDR")) return Fail(kPngNoIhdr);
  if (Crc32(buf + 4, 17) != Be32(buf + 21)) return Fail(kPngBadCrc);
  const std::uint32_t width = Be32(buf + 8);
  const std::uint32_t height = Be32(buf + 12);
  constexpr std::uint32_t kMax = 0x7FFFFFFF;  // PNG's own limit
  if (width == 0 || height == 0 || width > kMax || height > kMax) return Fail(kPngBadSize);
  Succeed(width, height);
}

// WebP ------------------------------------------------------------------------

void ImageProbe::Impl::WebpChunkHeader() {
  const std::uint32_t fourcc = Be32(buf);
  const std::uint64_t size = Le32(buf + 4);
  if (size + 4 + 8 > riff_size) return Fail(kWebpChunkSize);
  switch (fourcc) {
    case FourCc("VP8 "):
      if (size < 10) return Fail(kWebpChunkSize);
      return Expect(10, Step::kWebpVp8);  // frame tag, start code, sizes
    case FourCc("VP8L"):
      if (size < 5) return Fail(kWebpChunkSize);
      return Expect(5, Step::kWebpVp8l);  // signature, packed sizes
    case FourCc("VP8X"):
      if (size < 10) return Fail(kWebpChunkSize);
      return Expect(10, Step::kWebpVp8x);  // flags, reserved, canvas size
    default:
      return Fail(kWebpBadChunk);
  }
}

void ImageProbe::Impl::WebpVp8() {
  if ((buf[0] & 1) != 0) return Fail(kWebpNotKeyFrame);
  if (buf[3] != 0x9D || buf[4] != 0x01 || buf[5] != 0x2A) return Fail(kWebpNoStartCode);
  const std::uint32_t width = Le16(buf + 6) & 0x3FFFu;
  const std::uint32_t height = Le16(buf + 8) & 0x3FFFu;
  if (width == 0 || height == 0) return Fail(kWebpZeroSize);
  Succeed(width, height);
}

void ImageProbe::Impl::WebpVp8l() {
  const std::uint32_t bits = Le32(buf + 1);
  if (buf[0] != 0x2F || bits >> 29 != 0) return Fail(kWebpBadVp8l);
  Succeed((bits & 0x3FFFu) + 1, (bits >> 14 & 0x3FFFu) + 1);
}

// TIFF ------------------------------------------------------------------------

void ImageProbe::Impl::TiffHeader() {
  std::uint64_t offset = 0;
  std::uint64_t header_size = 0;
  if (big_tiff) {
    if (U16(buf) != 8 || U16(buf + 2) != 0) return Fail(kTiffBadHeader);
    offset = U64(buf + 4);
    header_size = 16;
  } else {
    offset = U32(buf);
    header_size = 8;
  }
  if (offset < header_size) return Fail(kTiffBadOffset);
  skip = offset - header_size;
  Expect(big_tiff ? 8 : 2, Step::kTiffEntryCount);
}

void ImageProbe::Impl::TiffEntryCount() {
  tiff_entries_left = big_tiff ? U64(buf) : U16(buf);
  if (tiff_entries_left == 0 || tiff_entries_left > kMaxTiffEntries) return Fail(kTiffBadCount);
  Expect(big_tiff ? 20 : 12, Step::kTiffEntry);
}

void ImageProbe::Impl::TiffEntry() {
  constexpr std::uint16_t kImageWidth = 256;
  constexpr std::uint16_t kImageLength = 257;
  constexpr std::uint16_t kShort = 3;
  constexpr std::uint16_t kLong = 4;
  constexpr std::uint16_t kLong8 = 16;
  const std::uint16_t tag = U16(buf);
  if (tag == kImageWidth || tag == kImageLength) {
    const std::uint16_t type = U16(buf + 2);
    const std::uint64_t count = big_tiff ? U64(buf + 4) : U32(buf + 4);
    const std::uint8_t* value = buf + (big_tiff ? 12 : 8);
    std::uint64_t n = 0;
    if (type == kShort) {
      n = U16(value);
    } else if (type == kLong) {
      n = U32(value);
    } else if (type == kLong8 && big_tiff) {
      n = U64(value);
    } else {
      return Fail(kTiffBadType);
    }
    if (count == 0) return Fail(kTiffBadType);
    if (n == 0 || n > std::numeric_limits<std::uint32_t>::max()) return Fail(kTiffZeroSize);
    (tag == kImageWidth ? tiff_width : tiff_height) = static_cast<std::uint32_t>(n);
    if (tiff_width != 0 && tiff_height != 0) return Succeed(tiff_width, tiff_height);
  }
  if (--tiff_entries_left == 0) return Fail(kTiffNoSize);
  Expect(big_tiff ? 20 : 12, Step::kTiffEntry);
}

// ISOBMFF (AVIF, HEIC) --------------------------------------------------------

// The major brand decides if it names a format; otherwise the first
// compatible brand that does (mif1, msf1, miaf alone decide nothing).
void ImageProbe::Impl::FtypBrand() {
  if (const auto brand_format = BrandFormat(Be32(buf))) {
    SetFormat(*brand_format);
    skip = box_end - pos;
    return Expect(0, Step::kBoxBoundary);
  }
  if (pos == box_end) return Fail(kUnrecognised);
  Expect(4, Step::kFtypCompatibleBrand);
}

void ImageProbe::Impl::BoxBoundary() {
  while (depth > 0 && pos == open_end[depth - 1]) {
    --depth;
    if (open_type[depth] == Container::kMeta) return ConcludeMeta();
  }
  const std::uint64_t parent_end = ParentEnd();
  if (parent_end != kUnbounded && parent_end - pos < 8) return Fail(kIsoBadBox);
  box_start = pos;
  Expect(8, Step::kBoxHeader);
}

void ImageProbe::Impl::BoxHeader() {
  const std::uint32_t size = Be32(buf);
  box_type = Be32(buf + 4);
  if (size == 1) return Expect(8, Step::kBoxLargeSize);
  if (size == 0) {
    box_end = ParentEnd();
  } else {
    if (size < 8) return Fail(kIsoBadBox);
    SetBoxEnd(size);
    if (state != State::kNeedMore) return;
  }
  EnterBox();
}

void ImageProbe::Impl::SetBoxEnd(std::uint64_t size) {
  if (size > ParentEnd() - box_start) return Fail(kIsoBadBox);
  box_end = box_start + size;
}

bool ImageProbe::Impl::RequireRoom(std::size_t n) {
  if (box_end - pos >= n) return true;
  Fail(kIsoBadBox);
  return false;
}

void ImageProbe::Impl::SkipRestOfBox() {
  skip = box_end - pos;
  Expect(0, Step::kBoxBoundary);
}

void ImageProbe::Impl::EnterBox() {
  const bool in_meta = depth == 1 && open_type[0] == Container::kMeta;
  const bool in_iprp = depth == 2 && open_type[1] == Container::kIprp;
  const bool in_ipco = depth == 3 && open_type[2] == Container::kIpco;
  if (in_ipco) ++property_index;
  const auto open_container = [this](Container c) {
    open_type[depth] = c;
    open_end[depth] = box_end;
    ++depth;
  };
  if (depth == 0 && box_type == FourCc("meta") && !meta_seen) {
    meta_seen = true;
    if (!RequireRoom(4)) return;  // FullBox version and flags
    open_container(Container::kMeta);
    return Expect(4, Step::kMetaFullBox);
  }
  if (in_meta && box_type == FourCc("iprp") && !iprp_seen) {
    iprp_seen = true;
    open_container(Container::kIprp);
    return Expect(0, Step::kBoxBoundary);
  }
  if (in_iprp && box_type == FourCc("ipco") && !ipco_seen) {
    ipco_seen = true;
    open_container(Container::kIpco);
    return Expect(0, Step::kBoxBoundary);
  }
  if (in_meta && box_type == FourCc("pitm")) {
    if (RequireRoom(4)) Expect(4, Step::kPitmFullBox);
    return;
  }
  if (in_iprp && box_type == FourCc("ipma")) {
    if (RequireRoom(8)) Expect(8, Step::kIpmaHeader);  // FullBox, entry count
    return;
  }
  if (in_ipco && box_type == FourCc("ispe")) {
    if (RequireRoom(12)) Expect(12, Step::kIspe);  // FullBox, width, height
    return;
  }
  SkipRestOfBox();
}

void ImageProbe::Impl::NextIpmaEntry() {
  if (ipma_entries_left == 0) return SkipRestOfBox();
  --ipma_entries_left;
  const std::size_t n = (ipma_version < 1 ? 2 : 4) + 1;  // item id, association count
  if (RequireRoom(n)) Expect(n, Step::kIpmaEntry);
}

void ImageProbe::Impl::NextIpmaAssociation() {
  if (ipma_associations_left == 0) return NextIpmaEntry();
  --ipma_associations_left;
  const std::size_t n = (ipma_flags & 1) != 0 ? 2 : 1;
  if (RequireRoom(n)) Expect(n, Step::kIpmaAssociation);
}

void ImageProbe::Impl::Associate(std::uint32_t item, std::uint32_t index) {
  if (primary_known && item != primary_item) return;
  if (association_count == kMaxAssociations) return;
  // ispe entries are recorded in ipco order, so their indices ascend.
  const Ispe* const first = ispe;
  const Ispe* const last = ispe + ispe_count;
  const Ispe* found = std::lower_bound(
      first, last, index, [](const Ispe& e, std::uint32_t i) { return e.property_index < i; });
  if (found == last || found->property_index != index) return;
  associations[association_count++] = {item, static_cast<std::uint8_t>(found - first)};
}

void ImageProbe::Impl::ConcludeMeta() {
  const Ispe* chosen = nullptr;
  if (primary_known) {
    for (std::size_t i = 0; i < association_count && chosen == nullptr; ++i) {
      if (associations[i].item == primary_item) chosen = &ispe[associations[i].ispe_slot];
    }
  }
  if (chosen == nullptr) {
    // No usable primary item: the largest image is the one that costs most.
    for (std::size_t i = 0; i < ispe_count; ++i) {
      const auto area = [](const Ispe& e) { return std::uint64_t{e.width} * e.height; };
      if (chosen == nullptr || area(ispe[i]) > area(*chosen)) chosen = &ispe[i];
    }
  }
  if (chosen == nullptr) return Fail(kIsoNoIspe);
  if (chosen->width == 0 || chosen->height == 0) return Fail(kIsoZeroSize);
  Succeed(chosen->width, chosen->height);
}

// A meta box of size 0 (or with such children) ends with the file: if nothing
// but "the rest of the file" is pending, the file ending completes it.
bool ImageProbe::Impl::MetaEndsWithFile() const {
  if (depth == 0 || open_type[0] != Container::kMeta) return false;
  for (std::size_t i = 0; i < depth; ++i) {
    if (open_end[i] != kUnbounded) return false;
  }
  const bool at_boundary = step == Step::kBoxHeader && have == 0 && skip == 0;
  const bool skipping_to_end = skip != 0 && pos + skip == kUnbounded;
  return at_boundary || skipping_to_end;
}

void ImageProbe::Impl::Finish() {
  if (state != State::kNeedMore) return;
  switch (family) {
    case Family::kUnknown:
      return Fail(fed == 0 ? kEmpty : kUnrecognised);
    case Family::kJpeg:
      return Fail(kJpegTruncated);
    case Family::kPng:
      return Fail(kPngTruncated);
    case Family::kGif:
      return Fail(kGifTruncated);
    case Family::kWebp:
      return Fail(kWebpTruncated);
    case Family::kTiff:
      return Fail(kTiffTruncated);
    case Family::kIsobmff:
      if (MetaEndsWithFile()) return ConcludeMeta();
      return Fail(kIsoTruncated);
  }
}

// ImageProbe ------------------------------------------------------------------

ImageProbe::ImageProbe() {
  static_assert(sizeof(Impl) <= sizeof(storage_), "grow ImageProbe::storage_");
  static_assert(alignof(Impl) <= 8, "storage_ is alignas(8)");
  // Copies are plain byte copies and no destructor is needed.
  static_assert(std::is_trivially_copyable_v<Impl> && std::is_trivially_destructible_v<Impl>);
  new (storage_) Impl();
}
ImageProbe::ImageProbe(const ImageProbe& other) { new (storage_) Impl(other.impl()); }
ImageProbe& ImageProbe::operator=(const ImageProbe& other) {
  impl() = other.impl();
  return *this;
}

ImageProbe::Impl& ImageProbe::impl() { return *std::launder(reinterpret_cast<Impl*>(storage_)); }
const ImageProbe::Impl& ImageProbe::impl() const {
  return *std::launder(reinterpret_cast<const Impl*>(storage_));
}

ImageProbe::State ImageProbe::Feed(std::span<const std::byte> data) {
  Impl& s = impl();
  s.fed += data.size();
  if (s.state == State::kNeedMore) {
    s.Consume(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
  }
  return s.state;
}

ImageProbe::State ImageProbe::Finish() {
  impl().Finish();
  return impl().state;
}

ImageProbe::State ImageProbe::state() const { return impl().state; }

std::optional<core::ImageFormat> ImageProbe::format() const {
  if (!impl().has_format) return std::nullopt;
  return impl().format;
}

std::optional<Dimensions> ImageProbe::dimensions() const {
  if (impl().state != State::kDone) return std::nullopt;
  return impl().dims;
}

std::string_view ImageProbe::error() const { return impl().error; }

std::uint64_t ImageProbe::bytes_fed() const { return impl().fed; }

ProbeResult ProbeBuffer(std::span<const std::byte> data) {
  ImageProbe probe;
  probe.Feed(data);
  probe.Finish();
  return {probe.state(), probe.format(), probe.dimensions(), probe.error()};
}

}  // namespace imgsvc::imaging
