#include "http/assets/assets.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

#include <boost/beast/zlib/inflate_stream.hpp>
#include <boost/crc.hpp>

// The gzip bytes, between symbols defined by the generated assets.S.
#define IMGSVC_ASSET(symbol, path, content_type) \
  extern "C" const char symbol##_start[];        \
  extern "C" const char symbol##_end[];
#include "assets_list.inc"
#undef IMGSVC_ASSET

namespace imgsvc::http::assets {
namespace {

constexpr std::pair<std::string_view, std::string_view> kEtags[] = {
#define IMGSVC_ASSET_ETAGS(gzip, identity) {gzip, identity},
#include "assets_etags.inc"
#undef IMGSVC_ASSET_ETAGS
};

// Not constexpr: the gzip views span linker-placed symbols.
const auto& Table() {
  static const auto table = [] {
    std::size_t index = 0;
    auto make = [&index](std::string_view path, std::string_view content_type, const char* start,
                         const char* end) {
      const auto& [etag, identity_etag] = kEtags[index++];
      return Asset{path, content_type, std::string_view(start, static_cast<std::size_t>(end - start)),
                   etag, identity_etag};
    };
    return std::array{
#define IMGSVC_ASSET(symbol, path, content_type) make(path, content_type, symbol##_start, symbol##_end),
#include "assets_list.inc"
#undef IMGSVC_ASSET
    };
  }();
  static_assert(std::size(kEtags) == table.size(), "assets_etags.inc and assets_list.inc disagree");
  return table;
}

std::uint32_t LittleEndian32(std::string_view bytes) {
  std::uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  return value;
}

Status Corrupt(const Asset& asset, std::string_view why) {
  return Status(Code::kInternal, "embedded asset " + std::string(asset.path) + " is corrupt: " + std::string(why));
}

// Offset of the deflate stream after the RFC 1952 member header, or 0.
std::size_t DeflateOffset(std::string_view gz) {
  constexpr unsigned kFhcrc = 0x02, kFextra = 0x04, kFname = 0x08, kFcomment = 0x10, kReserved = 0xE0;
  constexpr unsigned char kDeflate = 8;
  if (gz.size() < 18 || static_cast<unsigned char>(gz[0]) != 0x1f || static_cast<unsigned char>(gz[1]) != 0x8b ||
      static_cast<unsigned char>(gz[2]) != kDeflate) {
    return 0;
  }
  const unsigned flags = static_cast<unsigned char>(gz[3]);
  if (flags & kReserved) return 0;
  std::size_t offset = 10;
  const std::size_t body_end = gz.size() - 8;  // the trailer: CRC-32, ISIZE
  if (flags & kFextra) {
    if (offset + 2 > body_end) return 0;
    offset += 2 + (static_cast<unsigned char>(gz[offset]) | (static_cast<std::size_t>(static_cast<unsigned char>(gz[offset + 1])) << 8));
  }
  for (const unsigned zero_terminated : {kFname, kFcomment}) {
    if (!(flags & zero_terminated)) continue;
    const std::size_t nul = gz.find('\0', offset);
    if (nul == std::string_view::npos) return 0;
    offset = nul + 1;
  }
  if (flags & kFhcrc) offset += 2;
  return offset < body_end ? offset : 0;
}

}  // namespace

std::span<const Asset> AllAssets() { return Table(); }

const Asset* FindAsset(std::string_view url_path) {
  for (const Asset& asset : Table()) {
    if (asset.path == url_path) return &asset;
  }
  return nullptr;
}

StatusOr<std::string> Inflate(const Asset& asset) {
  const std::string_view gz = asset.gzip;
  const std::size_t offset = DeflateOffset(gz);
  if (offset == 0) return Corrupt(asset, "bad gzip header");
  const std::string_view trailer = gz.substr(gz.size() - 8);
  const std::uint32_t expected_crc = LittleEndian32(trailer.substr(0, 4));
  const std::uint32_t expected_size = LittleEndian32(trailer.substr(4));  // size mod 2^32

  // One spare byte of output, so that a stream that would overrun the trailer's
  // length is caught rather than cut. Beast's inflater reads ahead of the final
  // end code, so it is given the trailer too (it may consume some of it) and
  // fed until it reports the end of the stream or stops making progress.
  std::string out(std::size_t{expected_size} + 1, '\0');
  boost::beast::zlib::z_params zs;
  zs.next_in = gz.data() + offset;
  zs.avail_in = gz.size() - offset;
  zs.next_out = out.data();
  zs.avail_out = out.size();
  boost::beast::zlib::inflate_stream inflater;
  for (;;) {
    const std::size_t in_before = zs.avail_in, out_before = zs.avail_out;
    boost::beast::error_code ec;
    inflater.write(zs, boost::beast::zlib::Flush::none, ec);
    if (ec == boost::beast::zlib::error::end_of_stream) break;
    if (ec && ec != boost::beast::zlib::error::need_buffers) return Corrupt(asset, "bad deflate stream: " + ec.message());
    if (zs.avail_in == in_before && zs.avail_out == out_before) return Corrupt(asset, "truncated deflate stream");
  }
  if (zs.avail_in > 8 || zs.avail_out != 1) return Corrupt(asset, "length differs from the trailer");
  out.pop_back();

  boost::crc_32_type crc;
  crc.process_bytes(out.data(), out.size());
  if (crc.checksum() != expected_crc) return Corrupt(asset, "CRC-32 mismatch");
  return out;
}

}  // namespace imgsvc::http::assets
