// Image format sniffing and header probing, fed incrementally.
//
// An ImageProbe is fed consecutive chunks of a file as they stream in and
// decides, from the bytes alone, the format (magic numbers) and the pixel
// dimensions (JPEG SOFn, PNG IHDR, GIF logical screen, WebP VP8/VP8L/VP8X,
// TIFF IFD0, AVIF/HEIC `ispe` of the primary item). It never decodes pixels,
// never allocates, and keeps a fixed-size state, so a decompression bomb is
// refused from its header and a hostile header costs nothing. Structures may
// be split across chunk boundaries arbitrarily.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "core/image.h"

namespace imgsvc::imaging {

struct Dimensions {
  std::uint32_t width = 0;
  std::uint32_t height = 0;
};

class ImageProbe {
 public:
  enum class State {
    kNeedMore,  // keep feeding
    kDone,      // format and dimensions known; further input is ignored
    kInvalid,   // not an accepted image, or a corrupt header
  };

  ImageProbe();
  // Copies continue independently from the same point (e.g. to try two
  // continuations of a stream).
  ImageProbe(const ImageProbe& other);
  ImageProbe& operator=(const ImageProbe& other);
  // Feeds the next bytes of the file. Returns the state after consuming them.
  State Feed(std::span<const std::byte> data);
  // Declares the end of the file: kNeedMore becomes kInvalid.
  State Finish();

  State state() const;
  // Known once the magic number and, for ISOBMFF, the ftyp box were seen
  // (within the first 4 KiB of any accepted file).
  std::optional<core::ImageFormat> format() const;
  std::optional<Dimensions> dimensions() const;  // known in state kDone
  // Why the state is kInvalid (static text, safe to show to clients).
  std::string_view error() const;
  std::uint64_t bytes_fed() const;

 private:
  // Implementation state: fixed-size members only (no heap), kept out of the
  // header; probe.cc static_asserts that it fits.
  struct Impl;
  alignas(8) std::byte storage_[1024];
  Impl& impl();
  const Impl& impl() const;
};

// Convenience for whole buffers (tests, small inputs): feeds and finishes.
struct ProbeResult {
  ImageProbe::State state;
  std::optional<core::ImageFormat> format;
  std::optional<Dimensions> dimensions;
  std::string_view error;
};
ProbeResult ProbeBuffer(std::span<const std::byte> data);

}  // namespace imgsvc::imaging
