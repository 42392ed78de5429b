// Everything between a transport and the stores, built the same way for the
// standalone server, the Lambda runtime and `imgsvc invoke`: the storage
// backend (embedded or AWS), the token source, authentication, the cursor
// codec, the use cases and the router.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "app/aws_backend.h"
#include "app/config.h"
#include "core/auth.h"
#include "core/cursor.h"
#include "core/ports.h"
#include "core/service.h"
#include "http/router.h"

namespace imgsvc::app {

// Where the API token comes from, decided before anything is opened.
struct TokenPlan {
  std::optional<std::string> configured;  // flag, environment or token file
  bool local_default = false;             // the documented token (embedded, loopback, shared)
};

// The plan for `config`, or the reason the service must not start (embedded
// without a token off loopback, per-user without a master key).
StatusOr<TokenPlan> PlanToken(const Config& config, bool loopback);

struct ServiceStack {
  std::unique_ptr<core::BlobStore> blobs;
  std::unique_ptr<core::MetadataStore> records;
  std::unique_ptr<core::TokenSource> tokens;
  std::optional<AwsBackend> aws;  // its clients, for the start-up log
  core::MonotonicWallClock clock;
  core::RandomIdGenerator ids;
  std::unique_ptr<core::Authenticator> auth;
  std::unique_ptr<core::CursorCodec> cursors;
  std::unique_ptr<core::ImageService> service;
  std::unique_ptr<http::Router> router;
};

// Opens the backend and builds the rest. `public_url` is the base of the
// embedded backend's download URLs (unused on AWS). No network call is made
// here: on AWS the token, and the cursor key derived from it, are fetched at
// their first use.
StatusOr<std::unique_ptr<ServiceStack>> OpenServiceStack(const Config& config, const TokenPlan& plan,
                                                         const std::string& public_url);

// http://{host}:{port}, the host bracketed when IPv6.
std::string DefaultPublicUrl(const std::string& host, std::uint16_t port);

}  // namespace imgsvc::app
