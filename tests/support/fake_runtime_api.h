// A fake AWS Lambda Runtime API on loopback, for tests that run the runtime
// loop (in process, or the real imgsvc binary as a Lambda function).
//
// It speaks the documented protocol (API version 2018-06-01) with the status
// codes and error documents ({"errorMessage", "errorType"}) AWS's own
// implementation answers:
//  - GET  /2018-06-01/runtime/invocation/next blocks until a test enqueues an
//    event (or the fake shuts down: the connection then closes without an
//    answer, as when the sandbox goes away), then answers 200 with the event
//    as body and the Lambda-Runtime-* headers.
//  - POST .../invocation/{id}/response: 202 {"status":"OK"}; 400
//    InvalidRequestID for an id not handed out or already answered; 413
//    RequestEntityTooLarge for a payload over the limit, after which the
//    invocation has failed with Lambda's own Function.ResponseSizeTooLarge
//    error and further posts for it get 403 InvalidStateTransition (what
//    Lambda answers there).
//  - POST .../invocation/{id}/error: 202, or 400 / 403 as above.
//  - POST /2018-06-01/runtime/init/error: 202 before the first /next, 403
//    InvalidStateTransition after it.
//  - anything else: 404 (unknown path) or 405 (wrong method).
// Every POST is recorded with its headers and body, accepted or not; each
// invocation's outcome (what the invoker would get) can be awaited. All
// methods are thread-safe, and every wait is bounded by a timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace imgsvc::testing {

struct FakeRuntimeOptions {
  // Lambda's limit for a synchronous response (6 MB plus some slack).
  std::size_t max_response_bytes = 6291556;
  // Deadline of an event that sets none, counted from when /next hands it out.
  std::chrono::milliseconds function_timeout{30000};
  std::string function_arn = "arn:aws:lambda:us-east-1:123456789012:function:imgsvc";
};

struct FakeEvent {
  std::string event;       // the body /next answers with
  std::string request_id;  // empty: a fresh UUID
  // Lambda-Runtime-Deadline-Ms; nullopt: hand-out time + function_timeout.
  std::optional<std::chrono::system_clock::time_point> deadline;
  std::string trace_id;      // empty: a fresh sampled X-Ray header
  std::string function_arn;  // empty: the options' ARN
  std::string client_context;    // sent when not empty
  std::string cognito_identity;  // sent when not empty
  // Replace a header of the /next answer, or remove it with an empty value:
  // to test a runtime against answers Lambda would not send.
  std::vector<std::pair<std::string, std::string>> header_overrides;
};

// One POST the fake received.
struct RuntimePost {
  enum class Kind { kResponse, kError, kInitError };
  Kind kind = Kind::kResponse;
  std::string request_id;  // empty for init errors
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  int answered = 0;  // the status the fake answered with

  std::optional<std::string> header(const std::string& name) const;  // any case
};

// What the invoker of one invocation gets.
struct InvocationOutcome {
  std::string request_id;
  bool ok = false;
  std::string payload;     // the response body, or the error document
  std::string error_type;  // Lambda-Runtime-Function-Error-Type, or Lambda's own
};

class FakeRuntimeApi {
 public:
  static StatusOr<std::unique_ptr<FakeRuntimeApi>> Start(FakeRuntimeOptions options = {});
  ~FakeRuntimeApi();  // Shutdown() and join
  FakeRuntimeApi(const FakeRuntimeApi&) = delete;
  FakeRuntimeApi& operator=(const FakeRuntimeApi&) = delete;

  // "127.0.0.1:PORT", the value for AWS_LAMBDA_RUNTIME_API.
  std::string address() const;

  // Queues an event for /next (FIFO); returns its request id.
  std::string Enqueue(FakeEvent event);

  // The outcome of `request_id` once it has one, or nullopt after `timeout`.
  std::optional<InvocationOutcome> WaitForOutcome(const std::string& request_id,
                                                  std::chrono::milliseconds timeout) const;
  // The first init error posted (accepted or not), or nullopt after `timeout`.
  std::optional<RuntimePost> WaitForInitError(std::chrono::milliseconds timeout) const;
  // True once `count` calls to /next have arrived (answered or still waiting):
  // count 1 means the runtime finished its init.
  bool WaitForNextCalls(std::size_t count, std::chrono::milliseconds timeout) const;
  // When each /next arrived, in order: a benchmark reads them afterwards
  // instead of keeping a thread awake to watch.
  std::vector<std::chrono::steady_clock::time_point> NextCallTimes() const;

  std::vector<RuntimePost> Posts() const;  // every POST, in arrival order

  // Stops listening, closes every connection (a waiting /next gets no
  // answer) and fails later connects. Idempotent.
  void Shutdown();

 private:
  struct Impl;
  explicit FakeRuntimeApi(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace imgsvc::testing
