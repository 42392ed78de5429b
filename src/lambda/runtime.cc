#include "lambda/runtime.h"

#include <boost/json.hpp>
#include <charconv>
#include <cstdlib>
#include <exception>
#include <string_view>
#include <thread>
#include <utility>

#include "core/log.h"

namespace imgsvc::lambda {
namespace {

constexpr std::string_view kRuntimePath = "/2018-06-01/runtime";
// Lambda's longest function timeout: no invocation outlives it.
constexpr std::chrono::minutes kLongestTimeout{15};
// Beyond this a deadline is garbage (and would overflow the clock's range).
constexpr long long kLatestDeadlineMs = 4102444800000;  // 2100-01-01
// A pooled connection can die between two /next calls; three failures in a
// row, with pauses, mean nobody is listening any more.
constexpr int kNextAttempts = 3;
constexpr std::chrono::milliseconds kNextRetryPause{100};

StatusOr<net::Endpoint> ParseRuntimeApi(const std::string& runtime_api) {
  StatusOr<net::Endpoint> endpoint = net::Endpoint::Parse("http://" + runtime_api);
  if (runtime_api.empty() || !endpoint.ok()) {
    return Status(Code::kBadRequest, "AWS_LAMBDA_RUNTIME_API \"" + runtime_api + "\" is not host:port");
  }
  return endpoint;
}

// "errorType: errorMessage" of a Runtime API error document, else the body's start.
std::string DescribeAnswer(const net::ClientResponse& answer) {
  boost::system::error_code error;
  const boost::json::value parsed = boost::json::parse(answer.body, error);
  if (!error && parsed.is_object()) {
    const boost::json::value* type = parsed.get_object().if_contains("errorType");
    const boost::json::value* message = parsed.get_object().if_contains("errorMessage");
    if (type != nullptr && type->is_string() && message != nullptr && message->is_string()) {
      return std::string(type->get_string()) + ": " + std::string(message->get_string());
    }
  }
  return answer.body.substr(0, 256);
}

Status AnswerStatus(const net::ClientResponse& answer, std::string_view call) {
  Code code = Code::kInternal;
  if (answer.status == 400) code = Code::kBadRequest;
  if (answer.status == 403) code = Code::kForbidden;
  if (answer.status == 413) code = Code::kPayloadTooLarge;
  return Status(code, "Runtime API answered " + std::to_string(answer.status) + " to " + std::string(call) +
                          ": " + DescribeAnswer(answer));
}

std::chrono::system_clock::time_point ParseDeadline(std::string_view text, const std::string& request_id) {
  long long epoch_ms = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, epoch_ms);
  if (text.empty() || error != std::errc() || stop != end || epoch_ms <= 0 || epoch_ms > kLatestDeadlineMs) {
    log::Warn("invocation without a usable Lambda-Runtime-Deadline-Ms; assuming Lambda's longest timeout",
              {{"request_id", request_id}, {"deadline_ms", text}});
    return std::chrono::system_clock::now() + kLongestTimeout;
  }
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(epoch_ms));
}

std::string ErrorDocument(const std::string& type, const std::string& message) {
  boost::json::object document;
  document["errorMessage"] = message;
  document["errorType"] = type;
  document["stackTrace"] = boost::json::array();
  return boost::json::serialize(document);
}

bool IsTransportFailure(const Status& status) {
  return status.code() == Code::kUnavailable || status.code() == Code::kDeadlineExceeded;
}

// AWS's SDKs and X-Ray read the trace header from the environment. The loop
// is the only code running between invocations, so nothing reads the
// environment while it changes.
void ExportTraceId(const std::string& trace_id) {
  if (trace_id.empty()) {
    ::unsetenv("_X_AMZN_TRACE_ID");
  } else {
    ::setenv("_X_AMZN_TRACE_ID", trace_id.c_str(), 1);
  }
}

InvocationResult Handle(const std::function<InvocationResult(const Invocation&)>& handler,
                        const Invocation& invocation) {
  try {
    return handler(invocation);
  } catch (const std::exception& e) {
    log::Error("handler threw", {{"request_id", invocation.request_id}, {"error", e.what()}});
    return InvocationResult::Error("Runtime.UnhandledError", e.what());
  } catch (...) {
    log::Error("handler threw", {{"request_id", invocation.request_id}, {"error", "not a std::exception"}});
    return InvocationResult::Error("Runtime.UnhandledError", "the handler threw a non-standard exception");
  }
}

}  // namespace

InvocationResult InvocationResult::Response(std::string payload) {
  return InvocationResult{.ok = true, .payload = std::move(payload), .error_type = {}, .error_message = {}};
}

InvocationResult InvocationResult::Error(std::string type, std::string message) {
  return InvocationResult{
      .ok = false, .payload = {}, .error_type = std::move(type), .error_message = std::move(message)};
}

RuntimeClient::RuntimeClient(std::string runtime_api, std::shared_ptr<net::HttpClient> http)
    : endpoint_(ParseRuntimeApi(runtime_api)), http_(std::move(http)) {}

StatusOr<Invocation> RuntimeClient::Next() {
  IMGSVC_RETURN_IF_ERROR(endpoint_.status());
  net::ClientRequest request;
  request.target = std::string(kRuntimePath) + "/invocation/next";
  request.timeout = std::chrono::milliseconds(0);
  IMGSVC_ASSIGN_OR_RETURN(net::ClientResponse answer, http_->Send(*endpoint_, request));
  if (answer.status != 200) return AnswerStatus(answer, "/next");

  Invocation invocation;
  invocation.request_id = std::string(answer.HeaderValue("Lambda-Runtime-Aws-Request-Id"));
  if (invocation.request_id.empty()) {
    return Status(Code::kInternal, "Runtime API answered /next without Lambda-Runtime-Aws-Request-Id");
  }
  invocation.deadline = ParseDeadline(answer.HeaderValue("Lambda-Runtime-Deadline-Ms"), invocation.request_id);
  invocation.trace_id = std::string(answer.HeaderValue("Lambda-Runtime-Trace-Id"));
  invocation.function_arn = std::string(answer.HeaderValue("Lambda-Runtime-Invoked-Function-Arn"));
  invocation.event = std::move(answer.body);
  return invocation;
}

Status RuntimeClient::PostResponse(const std::string& request_id, const std::string& payload) {
  IMGSVC_RETURN_IF_ERROR(endpoint_.status());
  net::ClientRequest request;
  request.method = "POST";
  request.target = std::string(kRuntimePath) + "/invocation/" + request_id + "/response";
  request.headers.push_back({"Content-Type", "application/json"});
  request.body = payload;
  IMGSVC_ASSIGN_OR_RETURN(net::ClientResponse answer, http_->Send(*endpoint_, request));
  if (answer.status / 100 != 2) return AnswerStatus(answer, "/response");
  return Status::Ok();
}

Status RuntimeClient::PostError(const std::string& request_id, const std::string& type,
                                const std::string& message) {
  return PostErrorDocument(std::string(kRuntimePath) + "/invocation/" + request_id + "/error", type, message);
}

Status RuntimeClient::PostInitError(const std::string& type, const std::string& message) {
  return PostErrorDocument(std::string(kRuntimePath) + "/init/error", type, message);
}

Status RuntimeClient::PostErrorDocument(const std::string& target, const std::string& type,
                                        const std::string& message) {
  IMGSVC_RETURN_IF_ERROR(endpoint_.status());
  net::ClientRequest request;
  request.method = "POST";
  request.target = target;
  request.headers.push_back({"Lambda-Runtime-Function-Error-Type", type});
  request.headers.push_back({"Content-Type", "application/vnd.aws.lambda.error+json"});
  request.body = ErrorDocument(type, message);
  IMGSVC_ASSIGN_OR_RETURN(net::ClientResponse answer, http_->Send(*endpoint_, request));
  if (answer.status / 100 != 2) return AnswerStatus(answer, target.substr(kRuntimePath.size()));
  return Status::Ok();
}

Status RunLoop(RuntimeClient& client, const std::function<InvocationResult(const Invocation&)>& handler) {
  int failed_polls = 0;
  for (;;) {
    StatusOr<Invocation> next = client.Next();
    if (!next.ok()) {
      if (!IsTransportFailure(next.status()) || ++failed_polls >= kNextAttempts) {
        log::Warn("runtime loop ends", {{"error", next.status().ToString()}});
        return next.status();
      }
      log::Warn("Runtime API unreachable; polling again", {{"error", next.status().ToString()}});
      std::this_thread::sleep_for(kNextRetryPause * failed_polls);
      continue;
    }
    failed_polls = 0;

    const Invocation& invocation = *next;
    ExportTraceId(invocation.trace_id);
    const InvocationResult result = Handle(handler, invocation);
    const Status posted = result.ok
                              ? client.PostResponse(invocation.request_id, result.payload)
                              : client.PostError(invocation.request_id, result.error_type, result.error_message);
    if (posted.ok()) continue;
    // A refused post (a 413 included: Lambda then reports the invocation as
    // failed itself) leaves nothing to retry; a lost one shows at /next.
    log::Error("the invocation's result was not accepted",
               {{"request_id", invocation.request_id}, {"error", posted.ToString()}});
    if (posted.code() == Code::kInternal) return posted;
  }
}

}  // namespace imgsvc::lambda
