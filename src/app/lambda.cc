// The Lambda transport's wiring: the binary as the bootstrap of a custom
// runtime, and `imgsvc invoke --event FILE` (one event through the same code,
// what `sam local invoke` gives other runtimes).
//
// The service stack is opened at init without network I/O (the configuration
// checked, the AWS clients built with the environment credentials Lambda
// sets), so an unusable configuration is an init error, and it is kept for
// every warm invocation with its HTTP connections, cached token and signing
// keys. The request for the API token goes to Secrets Manager at init,
// before the loop asks for the first event, as AWS advises for secrets, and
// its answer is read by the first request that needs the token
// (core::TokenSource::Prefetch): the call's round trip overlaps the wait for
// the event without a thread, which a function's fraction of a vCPU would
// not run meanwhile anyway, and a cold /health never waits for it. A request
// that could not be sent is made again by that first request: a Secrets
// Manager outage then answers 503 and the next request tries again, without
// a cold start.
//
// Each invocation's AWS calls stop short of its deadline (aws::ScopedDeadline),
// so a slow AWS answers 504 in the event's shape instead of Lambda killing the
// function (the caller would get the gateway's own error, and the execution
// environment would be reset: a cold start).
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <thread>

#include "app/commands.h"
#include "app/service_stack.h"
#include "aws/aws_client.h"
#include "core/log.h"
#include "lambda/events.h"
#include "lambda/runtime.h"
#include "net/http_client.h"

namespace imgsvc::app {
namespace {

// What is kept back from the invocation's deadline after the last AWS call:
// the router's error answer, encoding the response (up to Lambda's 6 MB,
// base64) and posting it to the Runtime API on loopback. That is milliseconds
// of work, but a small function gets a fraction of a vCPU and may be
// descheduled; 500 ms covers it with room and is 2% of the 25 s timeout
// of deploy/template.yaml.
constexpr std::chrono::milliseconds kAnswerMargin{500};

// The longest sending the token's request at init may take (connect, TLS
// and the write; a cold TLS connection takes tens of milliseconds): init
// must not hang on an unreachable Secrets Manager.
constexpr std::chrono::seconds kTokenPrefetchTime{2};

// The x-request-id the router adopts: the caller's when sane, else the
// invocation's own id, so both ids meet in the logs.
void AdoptRequestId(http::Request& request, const std::string& invocation_id) {
  if (invocation_id.empty()) return;
  const auto sent = request.header("x-request-id");
  if (sent && http::IsSaneRequestId(*sent)) return;
  std::erase_if(request.headers, [](const http::Header& header) { return header.name == "x-request-id"; });
  request.headers.push_back({"x-request-id", invocation_id});
}

// Sends the token's request, bounded by kTokenPrefetchTime.
void PrefetchToken(core::TokenSource& tokens) {
  const aws::ScopedDeadline deadline(std::chrono::system_clock::now() + kTokenPrefetchTime);
  tokens.Prefetch();
}

// Opens the connection the first invocation's DynamoDB call would open
// (every API request but /health reads DynamoDB), so that the function
// waits for its first event with it open. Over https (AWS) the TLS
// handshake takes round trips, made on a thread while the function sends
// the token's request; over plain http (a local emulator) a connect costs
// less than starting a thread and is made at once, and the peer accepts it
// while nothing waits for it (a cold GET on the emulators: 5.1 -> 4.75x
// hello world). The thread is joined when the runtime ends.
std::jthread PreconnectDynamoDb(const AwsBackend& aws) {
  const auto preconnect = [&aws] {
    if (const Status opened = aws.http->Preconnect(aws.dynamodb); !opened.ok()) {
      log::Warn("DynamoDB connection not opened at init", {{"cause", opened.ToString()}});
    }
  };
  if (aws.dynamodb.scheme != "https") {
    preconnect();
    return {};
  }
  return std::jthread(preconnect);
}

lambda::InvocationResult Handle(ServiceStack& stack, const std::string& event, const std::string& invocation_id) {
  auto decoded = lambda::DecodeEvent(event);
  if (!decoded.ok()) return lambda::InvocationResult::Error("InvalidEvent", decoded.status().message());
  AdoptRequestId(decoded->request, invocation_id);
  decoded->request.invocation_id = invocation_id;
  const http::Response response = stack.router->Handle(decoded->request);
  return lambda::InvocationResult::Response(lambda::EncodeResponse(decoded->shape, response));
}

StatusOr<std::unique_ptr<ServiceStack>> OpenForLambda(const Config& config) {
  IMGSVC_ASSIGN_OR_RETURN(const TokenPlan plan, PlanToken(config, /*loopback=*/false));
  return OpenServiceStack(config, plan, config.public_url);
}

}  // namespace

int RunLambdaRuntime(const Config& config, const std::string& runtime_api, const Status& settings) {
  lambda::RuntimeClient runtime(runtime_api, std::make_shared<net::HttpClient>());
  if (!settings.ok()) {
    const Status reported = runtime.PostInitError("Runtime.InvalidConfiguration", settings.message());
    log::Error("invalid setting", {{"cause", settings.message()}, {"init_error_reported", reported.ok()}});
    return 1;
  }
  // An embedded store in a Lambda's /tmp would silently lose data.
  if (config.storage != "aws") {
    const Status reported = runtime.PostInitError(
        "Runtime.InvalidConfiguration", "IMGSVC_STORAGE must be aws on Lambda (is \"" + config.storage + "\")");
    log::Error("IMGSVC_STORAGE must be aws on Lambda", {{"init_error_reported", reported.ok()}});
    return 1;
  }
  auto stack = OpenForLambda(config);
  if (!stack.ok()) {
    const Status reported = runtime.PostInitError("Runtime.InvalidConfiguration", stack.status().ToString());
    log::Error("cannot open the service", {{"cause", stack.status().ToString()}, {"init_error_reported", reported.ok()}});
    return 1;
  }
  // The DynamoDB handshake first, so that it overlaps the token's.
  const std::jthread preconnect = PreconnectDynamoDb(*(*stack)->aws);
  PrefetchToken(*(*stack)->tokens);
  const Status ended = lambda::RunLoop(runtime, [&](const lambda::Invocation& invocation) {
    const aws::ScopedDeadline aws_deadline(invocation.deadline - kAnswerMargin);
    return Handle(**stack, invocation.event, invocation.request_id);
  });
  log::Error("Lambda runtime loop ended", {{"cause", ended.ToString()}});
  return 1;
}

int InvokeEvent(const Config& config, const std::string& event_file) {
  // stdout carries the response JSON alone, so it can be piped into other tools.
  log::SetFd(STDERR_FILENO);
  std::ifstream in(event_file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", event_file.c_str());
    return 2;
  }
  const std::string event((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto plan = PlanToken(config, IsLoopback(config.host));
  if (!plan.ok()) {
    std::fprintf(stderr, "%s\n", plan.status().ToString().c_str());
    return 1;
  }
  const std::string public_url =
      config.public_url.empty() ? DefaultPublicUrl(config.host, config.port) : config.public_url;
  auto stack = OpenServiceStack(config, *plan, public_url);
  if (!stack.ok()) {
    std::fprintf(stderr, "%s\n", stack.status().ToString().c_str());
    return 1;
  }
  const lambda::InvocationResult result = Handle(**stack, event, "");
  if (!result.ok) {
    // What Lambda would report for the invocation.
    std::printf("{\"errorType\":\"%s\",\"errorMessage\":", result.error_type.c_str());
    std::string message;
    log::AppendJsonString(message, result.error_message);
    std::printf("%s}\n", message.c_str());
    return 1;
  }
  std::printf("%s\n", result.payload.c_str());
  return 0;
}

}  // namespace imgsvc::app
