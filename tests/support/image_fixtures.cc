#include "image_fixtures.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string_view>
#include <vector>

namespace imgsvc::testing {
namespace {

void Require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "image_fixtures: %s\n", what);
    std::abort();
  }
}

// Deterministic, never 0xFF (so it cannot form a JPEG marker in scan data).
std::string Filler(std::size_t n) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>((i * 37 + 11) % 255);
  return out;
}

// Appends integers in one byte order.
class Writer {
 public:
  explicit Writer(bool little_endian = false) : little_(little_endian) {}
  Writer& U8(std::uint64_t v) {
    out_.push_back(static_cast<char>(v & 0xFF));
    return *this;
  }
  Writer& U16(std::uint64_t v) { return Int(v, 2); }
  Writer& U24(std::uint64_t v) { return Int(v, 3); }
  Writer& U32(std::uint64_t v) { return Int(v, 4); }
  Writer& U64(std::uint64_t v) { return Int(v, 8); }
  Writer& Bytes(std::string_view s) {
    out_.append(s);
    return *this;
  }
  std::string& str() { return out_; }

 private:
  Writer& Int(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) {
      const int shift = 8 * (little_ ? i : n - 1 - i);
      out_.push_back(static_cast<char>(v >> shift & 0xFF));
    }
    return *this;
  }
  bool little_;
  std::string out_;
};

// JPEG ------------------------------------------------------------------------

std::string JpegSegment(std::uint8_t marker, std::string_view payload) {
  Require(payload.size() <= 65533, "JPEG segment payload over 65533 bytes");
  Writer w;
  w.U8(0xFF).U8(marker).U16(payload.size() + 2).Bytes(payload);
  return w.str();
}

// PNG -------------------------------------------------------------------------

std::uint32_t Crc32(std::string_view data) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (const char ch : data) {
    c ^= static_cast<std::uint8_t>(ch);
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

std::string PngChunk(std::string_view type, std::string_view data) {
  Writer w;
  w.U32(data.size()).Bytes(type).Bytes(data);
  w.U32(Crc32(std::string(type).append(data)));
  return w.str();
}

// GIF -------------------------------------------------------------------------

// Exactly `total` bytes of data sub-blocks (length byte + 1..255 data bytes
// each), total >= 2, not counting the terminator.
std::string GifSubBlocks(std::size_t total) {
  const std::size_t blocks = (total + 255) / 256;
  const std::size_t data = total - blocks;
  std::string out;
  std::size_t filled = 0;
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::size_t size = data * (b + 1) / blocks - data * b / blocks;
    out.push_back(static_cast<char>(size));
    out.append(Filler(size));
    filled += size;
  }
  Require(filled == data && out.size() == total, "GIF sub-block arithmetic");
  return out;
}

// WebP ------------------------------------------------------------------------

std::string Riff(std::initializer_list<std::string_view> chunks) {
  std::string body = "WEBP";
  for (const std::string_view chunk : chunks) body.append(chunk);
  Writer w(true);
  w.Bytes("RIFF").U32(body.size()).Bytes(body);
  return w.str();
}

std::string RiffChunk(std::string_view fourcc, std::string_view payload, bool pad_odd) {
  Writer w(true);
  w.Bytes(fourcc).U32(payload.size()).Bytes(payload);
  if (pad_odd && payload.size() % 2 != 0) w.U8(0);
  return w.str();
}

std::string Vp8lPayload(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes) {
  Writer w(true);
  w.U8(0x2F).U32((width - 1) | (height - 1) << 14);  // alpha hint 0, version 0
  w.Bytes(Filler(1 + padding_bytes));
  return w.str();
}

// ISOBMFF ---------------------------------------------------------------------

std::string Box(std::string_view type, std::string_view payload) {
  Writer w;
  w.U32(payload.size() + 8).Bytes(type).Bytes(payload);
  return w.str();
}

std::string FullBox(std::string_view type, std::uint8_t version, std::uint32_t flags,
                    std::string_view payload) {
  Writer w;
  w.U8(version).U24(flags).Bytes(payload);
  return Box(type, w.str());
}

struct HeifBrand {
  std::string_view major;
  std::vector<std::string_view> compatible;
  std::string_view item_type;
  std::string_view codec_config;  // property box type
};

std::string MakeHeif(const HeifBrand& brand, std::uint32_t width, std::uint32_t height,
                     std::size_t padding_bytes, const HeifOptions& o) {
  Require(width > 0 && height > 0, "HEIF dimensions must be positive");
  const std::uint32_t thumb_w = o.thumbnail_width != 0 ? o.thumbnail_width : std::max(1u, width / 4);
  const std::uint32_t thumb_h = o.thumbnail_height != 0 ? o.thumbnail_height : std::max(1u, height / 4);
  const std::size_t primary_bytes = 16 + padding_bytes;
  const std::size_t thumb_bytes = o.thumbnail ? 8 : 0;

  Writer ftyp_payload;
  ftyp_payload.Bytes(brand.major).U32(0);
  for (const std::string_view b : brand.compatible) ftyp_payload.Bytes(b);
  const std::string ftyp = Box("ftyp", ftyp_payload.str());

  const std::uint16_t item_count = o.thumbnail ? 2 : 1;
  // The meta box has the same size whatever the mdat offset, so build it
  // once to measure and once with the real item locations.
  const auto build_meta = [&](std::uint64_t mdat_payload_start) {
    Writer hdlr;
    hdlr.U32(0).Bytes("pict").U32(0).U32(0).U32(0).U8(0);
    Writer pitm;
    if (o.pitm_version == 0) {
      pitm.U16(1);
    } else {
      pitm.U32(1);
    }
    Writer iloc;
    iloc.U8(0x44).U8(0x00).U16(item_count);  // 4-byte offsets and lengths
    iloc.U16(1).U16(0).U16(1).U32(mdat_payload_start).U32(primary_bytes);
    if (o.thumbnail) iloc.U16(2).U16(0).U16(1).U32(mdat_payload_start + primary_bytes).U32(thumb_bytes);
    Writer iinf;
    iinf.U16(item_count);
    for (std::uint16_t id = 1; id <= item_count; ++id) {
      Writer infe;
      infe.U16(id).U16(0).Bytes(brand.item_type).U8(0);
      iinf.Bytes(FullBox("infe", 2, 0, infe.str()));
    }
    Writer thmb;
    thmb.U16(2).U16(1).U16(1);  // item 2 is a thumbnail of item 1
    const std::string iref = FullBox("iref", 0, 0, Box("thmb", thmb.str()));

    // Property 1 is the codec configuration; then the thumbnail's ispe (if
    // any), then the primary's.
    Writer ipco;
    ipco.Bytes(Box(brand.codec_config, Filler(4)));
    const auto ispe = [](std::uint32_t w, std::uint32_t h) {
      Writer p;
      p.U32(w).U32(h);
      return FullBox("ispe", 0, 0, p.str());
    };
    if (o.thumbnail) ipco.Bytes(ispe(thumb_w, thumb_h));
    ipco.Bytes(ispe(width, height));
    const std::uint16_t primary_ispe = o.thumbnail ? 3 : 2;
    const std::uint16_t thumb_ispe = 2;

    Writer ipma;
    ipma.U32(item_count);
    const auto entry = [&](std::uint32_t item, std::uint16_t ispe_index) {
      if (o.ipma_version == 0) {
        ipma.U16(item);
      } else {
        ipma.U32(item);
      }
      ipma.U8(2);
      if (o.ipma_wide_indices) {
        ipma.U16(0x8000 | 1).U16(ispe_index);
      } else {
        ipma.U8(0x80 | 1).U8(ispe_index);
      }
    };
    entry(1, primary_ispe);
    if (o.thumbnail) entry(2, thumb_ispe);
    const std::string iprp =
        Box("iprp", Box("ipco", ipco.str()) +
                        FullBox("ipma", o.ipma_version, o.ipma_wide_indices ? 1 : 0, ipma.str()));

    const std::string pitm_box = o.with_pitm ? FullBox("pitm", o.pitm_version, 0, pitm.str()) : "";
    std::string children = FullBox("hdlr", 0, 0, hdlr.str());
    if (!o.pitm_after_iprp) children += pitm_box;
    children += FullBox("iloc", 0, 0, iloc.str());
    children += FullBox("iinf", 0, 0, iinf.str());
    if (o.thumbnail) children += iref;
    children += iprp;
    if (o.pitm_after_iprp) children += pitm_box;
    return FullBox("meta", 0, 0, children);
  };
  const std::size_t meta_size = build_meta(0).size();
  const std::string meta = build_meta(ftyp.size() + meta_size + 8);
  return ftyp + meta + Box("mdat", Filler(primary_bytes + thumb_bytes));
}

}  // namespace

std::string MakeJpeg(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes,
                     const JpegOptions& options) {
  Require(width >= 1 && width <= 65535 && height >= 1 && height <= 65535, "JPEG dimensions out of range");
  Require(options.app1_bytes == 0 || (options.app1_bytes >= 6 && options.app1_bytes <= 65533),
          "JPEG APP1 payload must be 6..65533 bytes");
  std::string out = "\xFF\xD8";
  out += JpegSegment(0xE0, std::string_view("JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00", 14));
  if (options.app1_bytes != 0) {
    out += JpegSegment(0xE1, std::string("Exif\0\0", 6) + Filler(options.app1_bytes - 6));
  }
  out += JpegSegment(0xDB, std::string(1, '\0') + std::string(64, '\x01'));  // table 0, all ones
  Writer sof;
  sof.U8(8).U16(height).U16(width).U8(1).U8(1).U8(0x11).U8(0);  // one grey component
  out += JpegSegment(options.progressive ? 0xC2 : 0xC0, sof.str());
  // DC table 0 with a single 1-bit code for category 0.
  out += JpegSegment(0xC4, std::string(1, '\0') + std::string("\x01", 1) + std::string(15, '\0') +
                               std::string(1, '\0'));
  out += JpegSegment(0xDA, std::string("\x01\x01\x00\x00\x3F\x00", 6));
  out += Filler(2 + padding_bytes);
  out += "\xFF\xD9";
  return out;
}

std::string MakePng(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes) {
  Require(width >= 1 && width <= 0x7FFFFFFF && height >= 1 && height <= 0x7FFFFFFF,
          "PNG dimensions out of range");
  Writer ihdr;
  ihdr.U32(width).U32(height).U8(8).U8(2).U8(0).U8(0).U8(0);  // 8-bit RGB, not interlaced
  return std::string("\x89PNG\r\n\x1A\n") + PngChunk("IHDR", ihdr.str()) +
         PngChunk("IDAT", Filler(4 + padding_bytes)) + PngChunk("IEND", "");
}

std::string MakeGif(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes) {
  Require(width >= 1 && width <= 65535 && height >= 1 && height <= 65535, "GIF dimensions out of range");
  Writer w(true);
  w.Bytes("GIF89a").U16(width).U16(height).U8(0x80).U8(0).U8(0);  // 2-colour global table
  w.U8(0).U8(0).U8(0).U8(0xFF).U8(0xFF).U8(0xFF);
  w.U8(0x2C).U16(0).U16(0).U16(width).U16(height).U8(0);  // image descriptor
  w.U8(2).Bytes(GifSubBlocks(2 + padding_bytes)).U8(0);   // LZW data
  w.U8(0x3B);
  return w.str();
}

std::string MakeWebpVp8(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes) {
  Require(width >= 1 && width <= 16383 && height >= 1 && height <= 16383, "VP8 dimensions out of range");
  const std::size_t partition = 10 + padding_bytes;
  Writer frame(true);
  frame.U24(0 | 1 << 4 | partition << 5);  // key frame, version 0, shown
  frame.U8(0x9D).U8(0x01).U8(0x2A).U16(width).U16(height);
  frame.Bytes(Filler(partition));
  return Riff({RiffChunk("VP8 ", frame.str(), false)});
}

std::string MakeWebpVp8l(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes) {
  Require(width >= 1 && width <= 16384 && height >= 1 && height <= 16384, "VP8L dimensions out of range");
  return Riff({RiffChunk("VP8L", Vp8lPayload(width, height, padding_bytes), false)});
}

std::string MakeWebpVp8x(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes) {
  Require(width >= 1 && width <= (1u << 24) && height >= 1 && height <= (1u << 24),
          "VP8X dimensions out of range");
  Writer vp8x(true);
  vp8x.U8(0).U24(0).U24(width - 1).U24(height - 1);
  const std::string image =
      Vp8lPayload(std::min(width, 16384u), std::min(height, 16384u), padding_bytes);
  return Riff({RiffChunk("VP8X", vp8x.str(), true), RiffChunk("VP8L", image, false)});
}

std::string MakeTiff(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes,
                     const TiffOptions& options) {
  Require(width >= 1 && height >= 1, "TIFF dimensions must be positive");
  constexpr std::uint16_t kShort = 3;
  constexpr std::uint16_t kLong = 4;
  const bool big = options.big_tiff;
  const std::size_t header_size = big ? 16 : 8;
  const std::size_t strip_bytes = options.pixel_bytes_before_ifd;
  const std::uint64_t ifd_offset = header_size + strip_bytes + strip_bytes % 2;  // word aligned

  Writer w(!options.big_endian);
  w.Bytes(options.big_endian ? "MM" : "II");
  if (big) {
    w.U16(43).U16(8).U16(0).U64(ifd_offset);
  } else {
    w.U16(42).U32(ifd_offset);
  }
  w.Bytes(Filler(strip_bytes + strip_bytes % 2));

  struct Entry {
    std::uint16_t tag;
    std::uint16_t type;
    std::uint32_t value;
  };
  const auto type_for = [](std::uint32_t v) { return v <= 0xFFFF ? kShort : kLong; };
  const std::vector<Entry> entries = {
      {256, type_for(width), width},
      {257, type_for(height), height},
      {258, kShort, 8},    // BitsPerSample
      {259, kShort, 1},    // Compression: none
      {262, kShort, 1},    // PhotometricInterpretation: black is zero
      {273, kLong, static_cast<std::uint32_t>(header_size)},  // StripOffsets
      {277, kShort, 1},    // SamplesPerPixel
      {278, kLong, height},  // RowsPerStrip
      {279, kLong, static_cast<std::uint32_t>(strip_bytes)},  // StripByteCounts
  };
  if (big) {
    w.U64(entries.size());
  } else {
    w.U16(entries.size());
  }
  for (const Entry& e : entries) {
    w.U16(e.tag).U16(e.type);
    if (big) {
      w.U64(1);
    } else {
      w.U32(1);
    }
    // Inline values are left-justified in the value field.
    if (e.type == kShort) {
      w.U16(e.value).U16(0);
    } else {
      w.U32(e.value);
    }
    if (big) w.U32(0);
  }
  if (big) {
    w.U64(0);  // no next IFD
  } else {
    w.U32(0);
  }
  w.Bytes(Filler(padding_bytes));
  return w.str();
}

std::string MakeAvif(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes,
                     const HeifOptions& options) {
  return MakeHeif({"avif", {"avif", "mif1", "miaf"}, "av01", "av1C"}, width, height, padding_bytes, options);
}

std::string MakeHeic(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes,
                     const HeifOptions& options) {
  return MakeHeif({"heic", {"mif1", "heic"}, "hvc1", "hvcC"}, width, height, padding_bytes, options);
}

std::string MakeImage(core::ImageFormat format, std::uint32_t width, std::uint32_t height,
                      std::size_t padding_bytes) {
  switch (format) {
    case core::ImageFormat::kJpeg:
      return MakeJpeg(width, height, padding_bytes);
    case core::ImageFormat::kPng:
      return MakePng(width, height, padding_bytes);
    case core::ImageFormat::kGif:
      return MakeGif(width, height, padding_bytes);
    case core::ImageFormat::kWebp:
      return width <= 16384 && height <= 16384 ? MakeWebpVp8l(width, height, padding_bytes)
                                               : MakeWebpVp8x(width, height, padding_bytes);
    case core::ImageFormat::kAvif:
      return MakeAvif(width, height, padding_bytes);
    case core::ImageFormat::kHeic:
      return MakeHeic(width, height, padding_bytes);
    case core::ImageFormat::kTiff:
      return MakeTiff(width, height, padding_bytes);
  }
  Require(false, "unknown image format");
  return {};
}

std::string MakeImageOfSize(core::ImageFormat format, std::uint32_t width, std::uint32_t height,
                            std::size_t total_bytes) {
  const std::size_t base = MakeImage(format, width, height).size();
  Require(total_bytes >= base, "requested size is below the format's minimal file");
  return MakeImage(format, width, height, total_bytes - base);
}

}  // namespace imgsvc::testing
