// Fuzzes ImageProbe: the verdict must not depend on how the input is chunked.
// The input goes through ProbeBuffer in one piece, through a probe split at a
// point chosen by the first byte, and byte by byte; all three must agree, and
// a finished probe must ignore further input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "imaging/probe.h"

namespace {

using imgsvc::imaging::ImageProbe;

bool Same(const imgsvc::imaging::ProbeResult& whole, const ImageProbe& probe) {
  const auto dims = probe.dimensions();
  return whole.state == probe.state() && whole.format == probe.format() &&
         whole.dimensions.has_value() == dims.has_value() &&
         (!dims || (whole.dimensions->width == dims->width && whole.dimensions->height == dims->height)) &&
         whole.error == probe.error();
}

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  const auto whole = imgsvc::imaging::ProbeBuffer(input);
  Check(whole.state != ImageProbe::State::kNeedMore);
  Check((whole.state == ImageProbe::State::kDone) == whole.dimensions.has_value());
  Check((whole.state == ImageProbe::State::kInvalid) == !whole.error.empty());

  const std::size_t split = size == 0 ? 0 : size * data[0] / 256;
  ImageProbe split_probe;
  split_probe.Feed(input.first(split));
  split_probe.Feed(input.subspan(split));
  split_probe.Finish();
  Check(Same(whole, split_probe));
  Check(split_probe.bytes_fed() == size);

  ImageProbe byte_probe;
  for (std::size_t i = 0; i < size; ++i) byte_probe.Feed(input.subspan(i, 1));
  byte_probe.Finish();
  Check(Same(whole, byte_probe));

  // Once decided, more input changes nothing.
  const auto state = split_probe.state();
  split_probe.Feed(input);
  Check(split_probe.state() == state && Same(whole, split_probe));
  return 0;
}
