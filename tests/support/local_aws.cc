#include "local_aws.h"

#include <signal.h>

#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "aws/xml.h"
#include "http_client.h"
#include "process.h"

namespace imgsvc::testing {
namespace local_aws_detail {

// Generous: on a loaded two-core machine node alone can take seconds to start.
constexpr std::chrono::seconds kStartTimeout{60};
constexpr std::chrono::seconds kStopTimeout{10};

// Keeps the peers running until the test process exits, then stops them with
// SIGTERM so the script removes its S3 directory (the SIGKILL of Process's
// destructor would leave it behind).
class RunningPeers {
 public:
  explicit RunningPeers(std::unique_ptr<Process> process) : process_(std::move(process)) {}
  ~RunningPeers() {
    if (process_->Signal(SIGTERM).ok()) (void)process_->Wait(kStopTimeout);
  }
  RunningPeers(const RunningPeers&) = delete;
  RunningPeers& operator=(const RunningPeers&) = delete;

 private:
  std::unique_ptr<Process> process_;
};

StatusOr<LocalAws> ParseReadyLine(const std::string& line) {
  boost::system::error_code error;
  const boost::json::value parsed = boost::json::parse(line, error);
  if (error || !parsed.is_object()) return Status(Code::kInternal, "local_aws.mjs printed no JSON object: " + line);
  const boost::json::object& urls = parsed.as_object();
  LocalAws out;
  const std::pair<const char*, std::string*> fields[] = {
      {"s3", &out.s3},
      {"dynamodb", &out.dynamodb},
      {"secretsmanager", &out.secretsmanager},
      {"s3_direct", &out.s3_direct},
      {"dynamodb_direct", &out.dynamodb_direct},
      {"control", &out.control},
  };
  for (const auto& [name, target] : fields) {
    const boost::json::value* url = urls.if_contains(name);
    if (url == nullptr || !url->is_string()) {
      return Status(Code::kInternal, std::string("local_aws.mjs did not report ") + name + ": " + line);
    }
    *target = std::string(url->as_string());
  }
  return out;
}

StatusOr<LocalAws> Start(std::unique_ptr<RunningPeers>& running) {
  IMGSVC_ASSIGN_OR_RETURN(std::unique_ptr<Process> process, Process::Start(IMGSVC_NODE, {"--openssl-legacy-provider", IMGSVC_LOCAL_AWS}));
  const std::optional<std::string> line =
      process->WaitForLine([](const std::string& text) { return text.starts_with("{"); }, kStartTimeout);
  if (!line) {
    return Status(Code::kUnavailable,
                  std::string("node ") + IMGSVC_LOCAL_AWS +
                      " did not report its ports (its errors are on stderr; are the npm packages installed? "
                      "scripts/install-deps runs npm ci)");
  }
  IMGSVC_ASSIGN_OR_RETURN(LocalAws peers, ParseReadyLine(*line));
  running = std::make_unique<RunningPeers>(std::move(process));
  return peers;
}

// Sends `request` to the origin of `url` ("http://127.0.0.1:PORT").
StatusOr<HttpResponse> SendTo(std::string_view url, const HttpRequest& request) {
  const auto origin = boost::urls::parse_absolute_uri(url);
  if (!origin || !origin->has_port()) {
    return Status(Code::kInternal, "local_aws: not an http://host:port URL: " + std::string(url));
  }
  return HttpClient(std::string(origin->host()), origin->port_number()).Send(request);
}

// One call to local_aws.mjs's control port; its JSON answer.
StatusOr<boost::json::object> Control(std::string method, std::string target, const boost::json::object& input = {}) {
  IMGSVC_ASSIGN_OR_RETURN(const LocalAws peers, StartLocalAws());
  HttpRequest request;
  request.method = std::move(method);
  request.target = std::move(target);
  if (request.method != "GET") {
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = boost::json::serialize(input);
  }
  IMGSVC_ASSIGN_OR_RETURN(const HttpResponse response, SendTo(peers.control, request));
  const std::string what = "local_aws control " + request.method + " " + request.target;
  boost::system::error_code error;
  boost::json::value answer = boost::json::parse(response.body, error);
  if (error || !answer.is_object()) return Status(Code::kInternal, what + ": no JSON answer: " + response.body);
  if (response.status != 200) return Status(Code::kInternal, what + ": " + response.body);
  return std::move(answer.as_object());
}

std::string_view FaultName(AwsFault fault) {
  switch (fault) {
    case AwsFault::kThrottle: return "throttle";
    case AwsFault::kError500: return "error500";
    case AwsFault::kClose: return "close";
    case AwsFault::kLoseAnswer: return "lose_answer";
    case AwsFault::kHold: return "hold";
  }
  return "?";
}

}  // namespace local_aws_detail

StatusOr<LocalAws> StartLocalAws() {
  static std::mutex mutex;
  static std::unique_ptr<local_aws_detail::RunningPeers> running;
  // A failure is remembered too: every test would otherwise wait out the timeout again.
  static std::optional<StatusOr<LocalAws>> started;
  std::lock_guard lock(mutex);
  if (!started) started = local_aws_detail::Start(running);
  return *started;
}

Status InjectFault(std::string_view service, AwsFault fault, int count, std::string_view operation, int after) {
  boost::json::object input{
      {"service", service}, {"kind", local_aws_detail::FaultName(fault)}, {"count", count}, {"after", after}};
  if (!operation.empty()) input["operation"] = operation;
  return local_aws_detail::Control("POST", "/fault", input).status();
}

Status StopService(std::string_view service) {
  return local_aws_detail::Control("POST", "/stop", {{"service", service}}).status();
}

Status StartService(std::string_view service) {
  return local_aws_detail::Control("POST", "/start", {{"service", service}}).status();
}

Status ReleaseHeld() { return local_aws_detail::Control("POST", "/release").status(); }

Status ResetFaults() { return local_aws_detail::Control("POST", "/reset").status(); }

StatusOr<int> RequestCount(std::string_view service, std::string_view operation) {
  boost::urls::url target("/count");
  target.params().append({"service", service});
  if (!operation.empty()) target.params().append({"operation", operation});
  IMGSVC_ASSIGN_OR_RETURN(const boost::json::object answer,
                          local_aws_detail::Control("GET", std::string(target.buffer())));
  const boost::json::value* count = answer.if_contains("count");
  if (count == nullptr || !count->is_int64()) {
    return Status(Code::kInternal, "local_aws control: no count in " + boost::json::serialize(answer));
  }
  return static_cast<int>(count->as_int64());
}

StatusOr<std::vector<std::string>> ListObjectKeys(std::string_view bucket, std::string_view prefix) {
  IMGSVC_ASSIGN_OR_RETURN(const LocalAws peers, StartLocalAws());
  boost::urls::url target("/" + std::string(bucket));
  target.params().append({"prefix", prefix});
  HttpRequest request;
  request.target = std::string(target.buffer());
  IMGSVC_ASSIGN_OR_RETURN(const HttpResponse response, local_aws_detail::SendTo(peers.s3_direct, request));
  const std::string what = "listing s3://" + std::string(bucket) + "/" + std::string(prefix);
  if (response.status != 200) {
    return Status(Code::kInternal, what + ": " + std::to_string(response.status) + " " + response.body);
  }
  if (response.body.find("<IsTruncated>true</IsTruncated>") != std::string::npos) {
    return Status(Code::kInternal, what + ": more than one page of keys");
  }
  // A ListBucketResult names each object in one flat <Key> element.
  std::vector<std::string> keys;
  constexpr std::string_view kOpen = "<Key>", kClose = "</Key>";
  for (std::size_t at = response.body.find(kOpen); at != std::string::npos; at = response.body.find(kOpen, at)) {
    const std::size_t start = at + kOpen.size();
    const std::size_t end = response.body.find(kClose, start);
    if (end == std::string::npos) return Status(Code::kInternal, what + ": malformed XML: " + response.body);
    keys.push_back(aws::XmlUnescape(std::string_view(response.body).substr(start, end - start)));
    at = end + kClose.size();
  }
  return keys;
}

}  // namespace imgsvc::testing
