// Minimal, structurally valid image files of every accepted format, for tests.
//
// Each builder returns the bytes of a file whose header declares the chosen
// dimensions, laid out as the format prescribes (markers, chunks, IFDs, boxes
// with consistent sizes and checksums). The pixel data is filler and does not
// decode: nothing in the service decodes pixels, it only reads headers.
//
// `padding_bytes` grows a file by exactly that many bytes, inside the format's
// own pixel-data structure (PNG IDAT, JPEG scan data, GIF image sub-blocks,
// WebP image chunk, trailing TIFF data, ISOBMFF mdat), so
//   Make...(w, h, n).size() == Make...(w, h, 0).size() + n
// and MakeImageOfSize builds a file of an exact total size.
//
// Misuse (dimensions the format cannot express) aborts: it is a test bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/image.h"

namespace imgsvc::testing {

// JPEG: SOI, APP0 (JFIF), optional APP1, DQT, SOF0/SOF2, DHT, SOS, scan data,
// EOI. 1 <= w, h <= 65535.
struct JpegOptions {
  // Payload bytes of an APP1 "Exif" segment placed before the frame header
  // (0: none, else 6..65533), to make a probe stream past a large segment.
  std::size_t app1_bytes = 0;
  bool progressive = false;  // SOF2 instead of SOF0
};
std::string MakeJpeg(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes = 0,
                     const JpegOptions& options = {});

// PNG: signature, IHDR (8-bit RGB), IDAT, IEND; 1 <= w, h <= 2^31-1.
std::string MakePng(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes = 0);

// GIF89a with a two-colour global table and one image; 1 <= w, h <= 65535.
std::string MakeGif(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes = 0);

// WebP, one builder per first chunk. The image chunk is the last chunk and
// its payload may have odd length (its RIFF pad byte is then left out, which
// decoders accept), so that padding stays exact.
// Lossy "VP8 " key frame: 1 <= w, h <= 16383.
std::string MakeWebpVp8(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes = 0);
// Lossless "VP8L": 1 <= w, h <= 16384.
std::string MakeWebpVp8l(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes = 0);
// Extended "VP8X" canvas (1 <= w, h <= 2^24) followed by a VP8L chunk whose
// own size is the canvas clamped to VP8L's limits.
std::string MakeWebpVp8x(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes = 0);

// TIFF: header, one uncompressed 8-bit grey strip, then IFD0 (ImageWidth and
// ImageLength as SHORT when they fit in 16 bits, else LONG), then padding.
struct TiffOptions {
  bool big_endian = false;  // "MM" instead of "II"
  bool big_tiff = false;    // BigTIFF (version 43, 64-bit offsets)
  // Strip bytes between the header and IFD0, i.e. how far a streaming reader
  // must skip to reach the IFD.
  std::size_t pixel_bytes_before_ifd = 64;
};
std::string MakeTiff(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes = 0,
                     const TiffOptions& options = {});

// AVIF and HEIC (HEIF): ftyp, meta (hdlr, pitm, iloc, iinf, iref, iprp with
// ipco and ipma), mdat. Item 1 is the primary image; item 2, when present, is
// its thumbnail, whose ispe comes first in ipco.
struct HeifOptions {
  bool thumbnail = true;
  // Thumbnail size; 0 means a quarter of the primary's (at least 1).
  std::uint32_t thumbnail_width = 0;
  std::uint32_t thumbnail_height = 0;
  bool with_pitm = true;          // without pitm a reader cannot tell the primary
  bool pitm_after_iprp = false;   // pitm is usually before iprp; both are legal
  std::uint8_t pitm_version = 0;  // 0: 16-bit item id, 1: 32-bit
  std::uint8_t ipma_version = 0;  // 0: 16-bit item ids, 1: 32-bit
  bool ipma_wide_indices = false;  // ipma flags bit 0: 15-bit property indices
};
// ftyp "avif", compatible avif, mif1, miaf; item type av01.
std::string MakeAvif(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes = 0,
                     const HeifOptions& options = {});
// ftyp "heic", compatible mif1, heic; item type hvc1.
std::string MakeHeic(std::uint32_t width, std::uint32_t height, std::size_t padding_bytes = 0,
                     const HeifOptions& options = {});

// One file of the format with default options (WebP: VP8L when the size fits,
// else VP8X; TIFF: little-endian classic).
std::string MakeImage(core::ImageFormat format, std::uint32_t width, std::uint32_t height,
                      std::size_t padding_bytes = 0);
// Like MakeImage, exactly total_bytes long; aborts if that is smaller than
// the unpadded file.
std::string MakeImageOfSize(core::ImageFormat format, std::uint32_t width, std::uint32_t height,
                            std::size_t total_bytes);

}  // namespace imgsvc::testing
