#include <algorithm>
#include <chrono>
#include <memory>

#include "app/commands.h"
#include "app/service_stack.h"
#include "core/log.h"
#include "core/stream_hasher.h"
#include "server/server.h"
#include "storage/aws/s3_blob_store.h"

namespace imgsvc::app {
namespace {

int Fail(std::string_view message, const Status& status = Status::Ok()) {
  if (status.ok()) log::Error(message);
  else log::Error(message, {{"cause", status.ToString()}});
  return 1;
}

}  // namespace

int Serve(const Config& config) {
  const bool embedded = config.storage == "embedded";
  const bool loopback = IsLoopback(config.host);
  if (config.api_token_from_flag) {
    log::Warn("--api-token on the command line is visible to other local users in `ps`; "
              "prefer IMGSVC_API_TOKEN or --api-token-file");
  }
  auto plan = PlanToken(config, loopback);
  if (!plan.ok()) return Fail("cannot start", plan.status());
  if (embedded && !loopback && config.public_url.empty()) {
    return Fail("--public-url (IMGSVC_PUBLIC_URL) is required when bound to a non-loopback address");
  }

  // Request lines are written together, at most this long after the first
  // of them: one write(2) per request was a sixth of the CPU of /health.
  const log::AccessLineGathering gathering(std::chrono::milliseconds(100));
  const std::uint64_t open_files = server::RaiseOpenFileLimit();
  http::Router* router = nullptr;  // set once the stores exist; requests wait for Listen anyway
  server::ServerOptions options;
  options.host = config.host;
  options.port = config.port;
  options.io_threads = static_cast<std::size_t>(config.io_threads);
  options.worker_threads = static_cast<std::size_t>(config.workers);
  options.shutdown_grace = std::chrono::seconds(config.shutdown_grace);
  if (embedded) {
    // Reads of the embedded store (files, SQLite in WAL mode) never wait on
    // a writer or the network, so they are answered on the io thread; /ready
    // writes and syncs a probe file and stays on the workers.
    options.answer_inline = [](std::string_view method, std::string_view target) {
      return (method == "GET" || method == "HEAD") && !target.starts_with("/ready");
    };
  } else {
    // On AWS every store call is a network call. What touches no store
    // (liveness, the API description and its viewer) is answered on the io
    // thread, so a load balancer's health checks are answered even while
    // every request in flight waits on AWS. The rest run on fibers of the io
    // threads (server/fiber.h), unless --aws-requests=workers: each parks
    // while AWS answers, or while its body arrives. A larger body goes to a
    // worker: within the bound, an upload stays below where the S3 store (a
    // large-upload slot, parts sent beside the stream) and the hasher (a
    // helper thread) would wait on another thread, which would hold the io
    // thread.
    options.answer_inline = [](std::string_view method, std::string_view target) {
      if (method != "GET" && method != "HEAD") return false;
      const std::string_view path = target.substr(0, target.find('?'));
      return path == "/health" || path == "/openapi.json" || path == "/docs" || path.starts_with("/docs/");
    };
    if (config.aws_requests == "fibers") {
      options.answer_on_fiber = [](std::string_view, std::string_view) { return true; };
      options.max_fibers_without_body = static_cast<std::size_t>(config.aws_concurrency);
      options.max_fiber_body_bytes =
          std::min(core::StreamHasher::kInlineBytes, storage::S3BlobStore::kUnreservedUploadBytes);
      // An upload waits on AWS as long as a read does, so as many may wait
      // at once; but it holds its body meanwhile: at most as many bytes of
      // bodies as the workers held when uploads ran there, one of the
      // largest each.
      options.max_fibers_with_body = static_cast<std::size_t>(config.aws_concurrency);
      options.max_fiber_body_bytes_in_flight =
          static_cast<std::uint64_t>(config.workers) * options.max_fiber_body_bytes;
    }
  }
  // Declared before the server, so destroyed after it: its workers, joined
  // as it goes, may still be in a handler (or in blocking work a fiber
  // handed them) when the grace period ends.
  std::unique_ptr<ServiceStack> stack;
  server::Server server(
      options, [&router](http::Request& request) { return router->Handle(request); },
      [&router](int status, std::string_view detail) { return router->ErrorResponse(status, detail); });
  if (Status st = server.Listen(); !st.ok()) return Fail("cannot listen", st);

  const std::string public_url =
      config.public_url.empty() ? DefaultPublicUrl(config.host, server.port()) : config.public_url;
  auto opened = OpenServiceStack(config, *plan, public_url);
  if (!opened.ok()) return Fail("cannot open the storage backend", opened.status());
  stack = std::move(*opened);
  router = stack->router.get();

  if (embedded) {
    log::Info("listening", {{"host", config.host},
                            {"port", static_cast<int>(server.port())},
                            {"url", public_url},
                            {"storage", config.storage},
                            {"data_dir", config.data_dir},
                            {"auth_mode", config.auth_mode},
                            {"open_files_limit", open_files}});
  } else {
    const AwsBackend& aws = *stack->aws;
    log::Info("listening", {{"host", config.host},
                            {"port", static_cast<int>(server.port())},
                            {"url", public_url},
                            {"storage", config.storage},
                            {"bucket", config.bucket},
                            {"table", config.table},
                            {"aws_region", aws.region},
                            {"aws_credentials", aws.credentials_source},
                            {"auth_mode", config.auth_mode},
                            {"open_files_limit", open_files}});
  }
  server.Run([router] {
    log::Info("shutting down: finishing in-flight requests");
    router->BeginShutdown();
  });
  log::Info("stopped");
  return 0;
}

}  // namespace imgsvc::app
