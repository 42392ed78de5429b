// The service's embedded documentation assets: /openapi.json, the /docs page
// and the Swagger UI files it loads.
//
// Every asset is gzip-compressed at build time and linked into the binary, so
// the service needs no files at run time and serves the common case (a client
// that accepts gzip) straight from read-only memory. Inflate() recovers the
// identity bytes for the rare client that does not accept gzip.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

namespace imgsvc::http::assets {

struct Asset {
  std::string_view path;          // URL path: "/openapi.json", "/docs", "/docs/swagger-ui.css", ...
  std::string_view content_type;  // text types carry "; charset=utf-8"
  std::string_view gzip;          // the gzip (RFC 1952) bytes
  // Quoted strong ETags: a content coding makes a different representation,
  // so the gzip bytes and the identity bytes each have their own.
  std::string_view etag;           // of `gzip`, sent with content-encoding: gzip
  std::string_view identity_etag;  // of the bytes Inflate() returns
};

// The asset served at `url_path` (exact match), or nullptr.
const Asset* FindAsset(std::string_view url_path);
std::span<const Asset> AllAssets();

// The identity bytes of `asset`. kInternal if the embedded data is corrupt
// (bad gzip header, deflate stream, CRC-32 or length).
StatusOr<std::string> Inflate(const Asset& asset);

}  // namespace imgsvc::http::assets
