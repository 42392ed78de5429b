// The AWS Lambda Runtime API client and the invocation loop of the custom
// runtime (provided.al2023): the imgsvc binary is the bootstrap and asks the
// Runtime API (AWS_LAMBDA_RUNTIME_API, plain http on the sandbox's loopback)
// for work itself.
//
// Protocol (API version 2018-06-01):
//  - GET  /runtime/invocation/next: blocks until an invocation arrives; sent
//    without a timeout because Lambda freezes the process between invocations
//    and the wait may span any time. The event is the body; the headers carry
//    the request id, the deadline (epoch ms), the invoked ARN, the X-Ray trace
//    header.
//  - POST /runtime/invocation/{id}/response: 202. 413 when the payload is over
//    Lambda's limit: Lambda then fails the invocation itself
//    (Function.ResponseSizeTooLarge) and refuses a later /error for it with a
//    403, so the loop only logs it.
//  - POST /runtime/invocation/{id}/error and /runtime/init/error: header
//    Lambda-Runtime-Function-Error-Type and the standard error document
//    {"errorMessage", "errorType", "stackTrace": []}.
//  - A 500 from any of them means the environment is broken and the runtime
//    should exit promptly.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "core/status.h"
#include "net/http_client.h"

namespace imgsvc::lambda {

struct Invocation {
  std::string request_id;
  std::string event;  // the event JSON as Lambda delivered it
  // When Lambda stops the invocation. Lambda always sends it; if it is absent
  // or unreadable, now plus Lambda's longest timeout (15 min) stands in.
  std::chrono::system_clock::time_point deadline;
  std::string trace_id;  // the X-Ray header; empty when not sent
  std::string function_arn;
};

// What handling one invocation gave: a response payload (JSON text) or an
// error to report (error type like "InvalidEvent" / "Runtime.UnhandledError"
// and a message).
struct InvocationResult {
  bool ok = true;
  std::string payload;
  std::string error_type;
  std::string error_message;

  static InvocationResult Response(std::string payload);
  static InvocationResult Error(std::string type, std::string message);
};

// Errors of the calls below:
//  - kUnavailable / kDeadlineExceeded: the Runtime API could not be reached
//    or closed without answering (from net::HttpClient);
//  - an answer other than the documented success, by status: 400 kBadRequest
//    (unknown or already answered request id), 403 kForbidden (call not
//    allowed in the runtime's state), 413 kPayloadTooLarge, anything else
//    (500: the environment is broken) kInternal; the message carries the
//    Runtime API's errorType and errorMessage;
//  - Next(): kInternal too for an answer without a request id.
class RuntimeClient {
 public:
  // `runtime_api` is AWS_LAMBDA_RUNTIME_API's value, "host:port". One client
  // serves the whole process lifetime so its pooled connection survives warm
  // invocations.
  RuntimeClient(std::string runtime_api, std::shared_ptr<net::HttpClient> http);

  StatusOr<Invocation> Next();
  Status PostResponse(const std::string& request_id, const std::string& payload);
  Status PostError(const std::string& request_id, const std::string& type, const std::string& message);
  // For configuration or credentials unusable at start; the process should
  // exit after it (Lambda reports the error to the first invocation).
  Status PostInitError(const std::string& type, const std::string& message);

 private:
  Status PostErrorDocument(const std::string& target, const std::string& type, const std::string& message);

  StatusOr<net::Endpoint> endpoint_;
  std::shared_ptr<net::HttpClient> http_;
};

// Runs until the Runtime API is gone (unreachable, or closing without an
// answer, three times in a row), answers /next with an error, or answers a
// post with a 500 (the runtime should exit), returning that Status. A handler
// that throws or returns an error never ends it (reported via /error, as
// "Runtime.UnhandledError" or the handler's type); neither does a post
// refused with a 4xx or lost in transit (logged). Sets _X_AMZN_TRACE_ID
// (setenv) from Lambda-Runtime-Trace-Id before calling the handler, as AWS
// documents, and unsets it for an invocation without one.
Status RunLoop(RuntimeClient& client, const std::function<InvocationResult(const Invocation&)>& handler);

}  // namespace imgsvc::lambda
