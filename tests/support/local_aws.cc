#include "local_aws.h"

#include <signal.h>

#include <boost/json.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>

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
  IMGSVC_ASSIGN_OR_RETURN(std::unique_ptr<Process> process, Process::Start(IMGSVC_NODE, {IMGSVC_LOCAL_AWS}));
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

}  // namespace imgsvc::testing
