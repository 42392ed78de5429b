// A plausible image record for the AWS store tests, which check what the
// stores keep (item shapes, TLS round trips) rather than listing order.
#pragma once

#include <cstdint>
#include <string>

#include "core/image.h"
#include "core/ports.h"

namespace imgsvc::storage::testing {

inline constexpr core::Micros kSampleEpoch = 1'767'225'600'000'000;  // 2026-01-01T00:00:00Z

// `user`'s PNG, created `second` seconds after kSampleEpoch, with a fresh id.
inline core::ImageRecord SampleRecord(const std::string& user, int second) {
  static core::RandomIdGenerator ids;
  core::ImageRecord record;
  record.image_id = ids.NewId();
  record.user_id = user;
  record.filename = "photo.png";
  record.format = core::ImageFormat::kPng;
  record.size_bytes = 1234;
  record.width = 640;
  record.height = 480;
  record.sha256 = std::string(64, 'a');
  record.created_at = core::FormatTimestamp(kSampleEpoch + std::int64_t{second} * 1'000'000);
  record.updated_at = record.created_at;
  return record;
}

}  // namespace imgsvc::storage::testing
