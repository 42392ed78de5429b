// The router: from a plain http::Request to a plain http::Response.
//
// It owns everything HTTP-shaped that both transports share: paths and
// methods, request ids, authentication of `x-api-key`, validation of query
// parameters and JSON bodies (FastAPI-shaped 422s), the JSON of responses,
// CORS, /health and /ready, the documentation assets, the embedded store's
// signed downloads, and one access-log line per request. It calls the use
// cases in core::ImageService and knows nothing of sockets or Lambda.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/auth.h"
#include "core/service.h"
#include "http/message.h"

namespace imgsvc::http {

// A file behind a verified download URL of the embedded blob store.
struct LocalDownload {
  std::string path;
  std::uint64_t size = 0;
  std::string content_type;
  std::string etag;
};
// Verifies (key, expires, signature) of a /files/ URL: kForbidden when the
// signature is bad or expired, kNotFound when the bytes are gone.
using DownloadResolver = std::function<StatusOr<LocalDownload>(
    std::string_view key, std::string_view expires, std::string_view signature)>;

struct RouterOptions {
  // Allowed CORS origins; empty disables CORS; {"*"} allows any.
  std::vector<std::string> cors_origins;
  std::uint64_t max_json_body_bytes = 64 * 1024;
  // Declared upload bodies above this are refused before reading (413).
  std::uint64_t max_upload_body_bytes = 0;
  std::chrono::milliseconds ready_cache{2000};
  // Set only for the embedded backend, which serves its own downloads.
  DownloadResolver downloads;
  // Checks the token source for /ready.
  std::function<Status()> token_ready;
};

// Whether a caller's x-request-id is adopted: 1-128 characters of
// A-Z a-z 0-9 - _ . : (API.md); anything else gets a fresh id.
bool IsSaneRequestId(std::string_view id);

class Router {
 public:
  Router(core::ImageService& service, core::Authenticator& auth, core::IdGenerator& ids,
         RouterOptions options);

  Response Handle(Request& request);
  // The response for errors found outside the router (by the transport).
  Response ErrorResponse(int status, std::string_view detail);
  // From now on /ready answers 503 (SIGTERM arrived).
  void BeginShutdown() { stopping_.store(true); }

 private:
  struct Context;
  Response Route(Context& ctx);
  Response Upload(Context& ctx);
  Response List(Context& ctx);
  Response GetOne(Context& ctx, std::string_view id);
  Response Content(Context& ctx, std::string_view id);
  Response Patch(Context& ctx, std::string_view id);
  Response DeleteOne(Context& ctx, std::string_view id);
  Response BulkDelete(Context& ctx);
  Response Ready();
  Response Download(Context& ctx, std::string_view key);
  Response Asset(Context& ctx);
  StatusOr<core::Caller> Authenticate(Context& ctx, bool required);
  void ApplyCors(const Request& request, Response& response) const;
  std::optional<Response> Preflight(const Request& request) const;

  core::ImageService& service_;
  core::Authenticator& auth_;
  core::IdGenerator& ids_;
  RouterOptions options_;
  std::atomic<bool> stopping_{false};

  std::mutex ready_mutex_;
  std::chrono::steady_clock::time_point ready_checked_at_;
  Status ready_status_;
  bool ready_known_ = false;
};

// {"detail": "..."} or the 422 list form, with the matching status.
Response ErrorFromStatus(const Status& status);

}  // namespace imgsvc::http
