// Cold start of imgsvc as an AWS Lambda function (issue 4): from exec of the
// packaged bootstrap to the first response it posts to the Runtime API,
// beside a static hello world's exec-to-exit time measured in the same run
// (a ratio survives the drift of a shared machine; absolute times do not).
//
// Run by bench/lambda_cold.sh, which starts the local AWS peers, provisions
// them and puts their endpoints, the credentials and the IMGSVC_* settings in
// this driver's environment; the function gets that environment plus
// AWS_LAMBDA_RUNTIME_API. Every function instance gets a fresh fake Runtime
// API with its first event already queued, so /next answers at once, as on
// Lambda when an invocation is what causes the cold start.
//
// Setup (not measured): one instance uploads a public PNG, a second runs
// warm GETs of it, so the emulators, the page cache and the hello world are
// warm before the first measured round. Each round then measures, in an
// order that alternates between rounds:
//   hello world, then a cold GET /health;
//   hello world, then a cold GET /api/v1/images/{id};
// where a cold start is split into init (exec to the first /next: process
// start, configuration, the service stack with its AWS clients) and the
// first invocation (the request is handled; the GET first fetches the API
// token from Secrets Manager, which /health never needs). The fake stamps
// each /next as it arrives, so no thread of this driver wakes to watch for
// it while the function runs. VmRSS/VmHWM are read right after the
// first response; then `warm` more invocations of the same event run one at
// a time (enqueue to response), and the instance is killed as Lambda does.
//
// Output: one JSON line per cold start, then a JSON summary and a table.
// Usage: lambda_cold --bootstrap=PATH --hello=PATH --zip=PATH --api-key=USER:TOKEN
//                    [--user=alice] [--rounds=20] [--warm=200] [--log=PATH]
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"
#include "crypto/crypto.h"
#include "support/fake_runtime_api.h"
#include "support/http_client.h"
#include "support/image_fixtures.h"
#include "bench_util.h"

extern char** environ;

namespace imgsvc::bench {
namespace {

namespace json = boost::json;
using testing::FakeRuntimeApi;

// Generous: a stalled shared machine must fail the run, not hang it.
constexpr std::chrono::milliseconds kWait{60000};
constexpr int kSetupWarmGets = 50;
constexpr int kSetupHellos = 5;

struct Options {
  std::string bootstrap;
  std::string hello;
  std::string zip;
  std::string api_key;
  std::string user = "alice";
  std::string log = "/dev/null";
  int rounds = 20;
  int warm = 200;
};

std::optional<Options> ParseOptions(int argc, char** argv) {
  Options options;
  std::map<std::string, std::string*> strings{{"bootstrap", &options.bootstrap}, {"hello", &options.hello},
                                              {"zip", &options.zip},             {"api-key", &options.api_key},
                                              {"user", &options.user},           {"log", &options.log}};
  std::map<std::string, int*> numbers{{"rounds", &options.rounds}, {"warm", &options.warm}};
  if (!ParseFlags(argc, argv, strings, numbers)) return std::nullopt;
  if (options.bootstrap.empty() || options.hello.empty() || options.zip.empty() || options.api_key.empty() ||
      options.rounds < 1 || options.warm < 1) {
    return std::nullopt;
  }
  return options;
}

// This process's environment, plus AWS_LAMBDA_RUNTIME_API when given.
CStrings Environment(const std::string& runtime_api) {
  std::vector<std::string> entries;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (std::string_view(*entry).starts_with("AWS_LAMBDA_RUNTIME_API=")) continue;
    entries.emplace_back(*entry);
  }
  if (!runtime_api.empty()) entries.push_back("AWS_LAMBDA_RUNTIME_API=" + runtime_api);
  return CStrings(std::move(entries));
}

// Kills the function instance when its measurement ends, as Lambda does.
class Instance {
 public:
  explicit Instance(pid_t pid) : pid_(pid) {}
  ~Instance() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

 private:
  pid_t pid_;
};

// An HTTP API (payload 2.0) event, in the shape of AWS's sample event.
std::string HttpApiEvent(std::string_view method, std::string_view path, const std::string& api_key,
                         std::string_view content_type = {}, std::string_view body = {}) {
  json::object headers{{"accept", "*/*"},
                       {"host", "r3pmxmplak.execute-api.us-east-1.amazonaws.com"},
                       {"user-agent", "lambda-cold-bench"},
                       {"x-amzn-trace-id", "Root=1-5e9f0c65-1de4d666d4dd26aced652b6c"},
                       {"x-api-key", api_key},
                       {"x-forwarded-for", "198.51.100.7"},
                       {"x-forwarded-port", "443"},
                       {"x-forwarded-proto", "https"}};
  if (!body.empty()) {
    headers["content-type"] = content_type;
    headers["content-length"] = std::to_string(body.size());
  }
  json::object event{
      {"version", "2.0"},
      {"routeKey", "ANY /{proxy+}"},
      {"rawPath", path},
      {"rawQueryString", ""},
      {"headers", std::move(headers)},
      {"requestContext",
       {{"accountId", "123456789012"},
        {"apiId", "r3pmxmplak"},
        {"domainName", "r3pmxmplak.execute-api.us-east-1.amazonaws.com"},
        {"domainPrefix", "r3pmxmplak"},
        {"http",
         {{"method", method},
          {"path", path},
          {"protocol", "HTTP/1.1"},
          {"sourceIp", "198.51.100.7"},
          {"userAgent", "lambda-cold-bench"}}},
        {"requestId", "JKJaXmPLvHcESHA="},
        {"routeKey", "ANY /{proxy+}"},
        {"stage", "$default"},
        {"time", "21/Apr/2020:15:08:21 +0000"},
        {"timeEpoch", 1587481701067}}},
      {"pathParameters", {{"proxy", path.substr(1)}}},
      {"isBase64Encoded", !body.empty()},
  };
  if (!body.empty()) event["body"] = crypto::Base64Encode(body);
  return json::serialize(event);
}

// The statusCode and body of a response payload.
StatusOr<std::pair<int, std::string>> ReadResponse(const testing::InvocationOutcome& outcome) {
  if (!outcome.ok) return Status(Code::kInternal, "invocation failed: " + outcome.error_type + " " + outcome.payload);
  boost::system::error_code error;
  const json::value payload = json::parse(outcome.payload, error);
  const json::object* object = error ? nullptr : payload.if_object();
  const json::value* status = object == nullptr ? nullptr : object->if_contains("statusCode");
  const json::value* body = object == nullptr ? nullptr : object->if_contains("body");
  if (status == nullptr || !status->is_int64() || body == nullptr || !body->is_string()) {
    return Status(Code::kInternal, "not a payload 2.0 response: " + outcome.payload);
  }
  return std::pair<int, std::string>(static_cast<int>(status->get_int64()), std::string(body->get_string()));
}

struct Run {
  double cold_ms = 0;   // exec to the first response received
  double init_ms = 0;   // exec to the first /next
  Memory memory;        // right after the first response
  std::string first_body;
  std::vector<double> warm_ms;
};

// One function instance: the cold invocation of `event` (which must answer
// `expected_status`), then `warm` more of the same, one at a time.
StatusOr<Run> RunFunction(const Options& options, const std::string& event, int expected_status, int warm,
                          int log_fd) {
  IMGSVC_ASSIGN_OR_RETURN(std::unique_ptr<FakeRuntimeApi> fake, FakeRuntimeApi::Start());
  CStrings envp = Environment(fake->address());
  testing::FakeEvent first;
  first.event = event;
  const std::string first_id = fake->Enqueue(std::move(first));

  const Clock::time_point start = Clock::now();
  IMGSVC_ASSIGN_OR_RETURN(const pid_t pid, Spawn(options.bootstrap, {}, envp.data(), log_fd));
  const Instance instance(pid);
  const std::optional<testing::InvocationOutcome> outcome = fake->WaitForOutcome(first_id, kWait);
  const Clock::time_point end = Clock::now();
  Run run;
  run.memory = ReadMemory(pid);
  if (!outcome) return Status(Code::kInternal, "no response to the first invocation (see --log)");
  const std::vector<Clock::time_point> next_calls = fake->NextCallTimes();
  IMGSVC_ASSIGN_OR_RETURN(auto response, ReadResponse(*outcome));
  if (response.first != expected_status) {
    return Status(Code::kInternal, "first invocation answered " + std::to_string(response.first) + ": " +
                                       response.second);
  }
  run.cold_ms = Ms(end - start);
  run.init_ms = Ms(next_calls.front() - start);
  run.first_body = std::move(response.second);

  for (int i = 0; i < warm; ++i) {
    testing::FakeEvent next;
    next.event = event;
    const Clock::time_point sent = Clock::now();
    const std::string id = fake->Enqueue(std::move(next));
    const std::optional<testing::InvocationOutcome> warm_outcome = fake->WaitForOutcome(id, kWait);
    const Clock::time_point answered = Clock::now();
    if (!warm_outcome) return Status(Code::kInternal, "no response to a warm invocation");
    IMGSVC_ASSIGN_OR_RETURN(auto warm_response, ReadResponse(*warm_outcome));
    if (warm_response.first != expected_status) {
      return Status(Code::kInternal, "warm invocation answered " + std::to_string(warm_response.first));
    }
    run.warm_ms.push_back(Ms(answered - sent));
  }
  return run;
}

// Uploads the image the GETs read; returns its id.
StatusOr<std::string> UploadImage(const Options& options, int log_fd) {
  testing::MultipartBuilder form;
  form.AddField("user_id", options.user);
  form.AddField("visibility", "public");
  form.AddFile("files", "bench.png", "image/png", testing::MakePng(64, 64, 4096));
  const std::string event =
      HttpApiEvent("POST", "/api/v1/images", options.api_key, form.ContentType(), form.Build());
  IMGSVC_ASSIGN_OR_RETURN(const Run run, RunFunction(options, event, 201, 0, log_fd));
  boost::system::error_code error;
  const json::value body = json::parse(run.first_body, error);
  const json::value* images = error || !body.is_object() ? nullptr : body.get_object().if_contains("images");
  if (images == nullptr || !images->is_array() || images->get_array().empty() ||
      !images->get_array()[0].is_object() || !images->get_array()[0].get_object().contains("image_id")) {
    return Status(Code::kInternal, "upload answered no image: " + run.first_body);
  }
  return std::string(images->get_array()[0].get_object().at("image_id").as_string());
}

// What one kind of cold start gave over the rounds.
struct Series {
  std::string name;
  std::string event;
  std::vector<double> cold_ms, init_ms, first_invocation_ms, hello_ms, ratios;
  std::vector<double> rss_kib, hwm_kib;
  std::vector<double> warm_ms;  // every warm invocation of every round
};

Status MeasureRound(const Options& options, int round, Series& series, char** hello_envp, int log_fd) {
  IMGSVC_ASSIGN_OR_RETURN(const double hello_ms, RunHello(options.hello, hello_envp, log_fd));
  IMGSVC_ASSIGN_OR_RETURN(const Run run, RunFunction(options, series.event, 200, options.warm, log_fd));
  series.hello_ms.push_back(hello_ms);
  series.cold_ms.push_back(run.cold_ms);
  series.init_ms.push_back(run.init_ms);
  series.first_invocation_ms.push_back(run.cold_ms - run.init_ms);
  series.ratios.push_back(run.cold_ms / hello_ms);
  series.rss_kib.push_back(static_cast<double>(run.memory.rss_kib));
  series.hwm_kib.push_back(static_cast<double>(run.memory.hwm_kib));
  series.warm_ms.insert(series.warm_ms.end(), run.warm_ms.begin(), run.warm_ms.end());
  JsonLine()
      .Add("round", round)
      .Add("measurement", series.name)
      .Add("hello_ms", hello_ms)
      .Add("cold_ms", run.cold_ms)
      .Add("init_ms", run.init_ms)
      .Add("first_invocation_ms", run.cold_ms - run.init_ms)
      .Add("ratio_to_hello", run.cold_ms / hello_ms, 2)
      .Add("vm_rss_kib", run.memory.rss_kib)
      .Add("vm_hwm_kib", run.memory.hwm_kib)
      .Add("rss_anon_kib", run.memory.rss_anon_kib)
      .Add("rss_file_kib", run.memory.rss_file_kib)
      .Add("warm_p50_ms", Percentile(run.warm_ms, 0.5))
      .Add("warm_p99_ms", Percentile(run.warm_ms, 0.99))
      .Print();
  std::fflush(stdout);
  return Status::Ok();
}

std::uint64_t FileSize(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 ? static_cast<std::uint64_t>(info.st_size) : 0;
}

constexpr double kMaxRatioToHello = 5;
constexpr double kMaxRssKib = 20 * 1024;

void PrintSummary(const Options& options, const std::vector<Series>& all) {
  std::vector<double> hellos;
  for (const Series& series : all) hellos.insert(hellos.end(), series.hello_ms.begin(), series.hello_ms.end());
  JsonLine summary;
  summary.Flag("summary")
      .Add("rounds", options.rounds)
      .Add("warm_per_round", options.warm)
      .Add("median_hello_ms", Median(hellos))
      .Add("zip_bytes", FileSize(options.zip))
      .Add("bootstrap_bytes", FileSize(options.bootstrap));
  for (const Series& series : all) {
    const std::string p = series.name + "_";
    summary.Add(p + "median_cold_ms", Median(series.cold_ms))
        .Add(p + "median_init_ms", Median(series.init_ms))
        .Add(p + "median_first_invocation_ms", Median(series.first_invocation_ms))
        .Add(p + "median_ratio_to_hello", Median(series.ratios), 2)
        .Add(p + "max_ratio_to_hello", *std::max_element(series.ratios.begin(), series.ratios.end()), 2)
        .Add(p + "median_vm_rss_kib", Median(series.rss_kib), 0)
        .Add(p + "max_vm_hwm_kib", *std::max_element(series.hwm_kib.begin(), series.hwm_kib.end()), 0)
        .Add(p + "warm_invocations", static_cast<int>(series.warm_ms.size()))
        .Add(p + "warm_p50_ms", Percentile(series.warm_ms, 0.5))
        .Add(p + "warm_p99_ms", Percentile(series.warm_ms, 0.99));
  }
  summary.Print();

  std::printf("\nLambda cold start, %d rounds (medians); static hello world exec-to-exit: %.2f ms\n",
              options.rounds, Median(hellos));
  std::printf("%-24s %8s %8s %9s %8s %12s %12s %9s %9s\n", "first event", "cold ms", "init ms", "1st inv", "x hello",
              "RSS MiB", "max HWM MiB", "warm p50", "warm p99");
  for (const Series& series : all) {
    const double ratio = Median(series.ratios);
    const double hwm = *std::max_element(series.hwm_kib.begin(), series.hwm_kib.end());
    std::printf("%-24s %8.2f %8.2f %9.2f %7.2f%s %12.2f %11.2f%s %9.3f %9.3f\n", series.name.c_str(),
                Median(series.cold_ms), Median(series.init_ms), Median(series.first_invocation_ms), ratio,
                ratio < kMaxRatioToHello ? " " : "!", Median(series.rss_kib) / 1024, hwm / 1024,
                hwm < kMaxRssKib ? " " : "!", Percentile(series.warm_ms, 0.5), Percentile(series.warm_ms, 0.99));
  }
  std::printf("targets: cold start under %.0fx hello world, RSS under %.0f MiB ('!' marks a miss)\n",
              kMaxRatioToHello, kMaxRssKib / 1024);
  std::printf("function.zip: %llu bytes (bootstrap %llu bytes unpacked)\n",
              static_cast<unsigned long long>(FileSize(options.zip)),
              static_cast<unsigned long long>(FileSize(options.bootstrap)));
}

int Main(int argc, char** argv) {
  const std::optional<Options> options = ParseOptions(argc, argv);
  if (!options) {
    std::fprintf(stderr,
                 "usage: lambda_cold --bootstrap=PATH --hello=PATH --zip=PATH --api-key=USER:TOKEN "
                 "[--user=alice] [--rounds=20] [--warm=200] [--log=PATH]\n");
    return 2;
  }
  const int log_fd = ::open(options->log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    std::perror(options->log.c_str());
    return 1;
  }
  CStrings hello_envp = Environment("");
  for (int i = 0; i < kSetupHellos; ++i) {
    if (auto hello = RunHello(options->hello, hello_envp.data(), log_fd); !hello.ok()) {
      std::fprintf(stderr, "%s\n", hello.status().ToString().c_str());
      return 1;
    }
  }
  const StatusOr<std::string> image_id = UploadImage(*options, log_fd);
  if (!image_id.ok()) {
    std::fprintf(stderr, "setup upload: %s\n", image_id.status().ToString().c_str());
    return 1;
  }
  const std::string get_event = HttpApiEvent("GET", "/api/v1/images/" + *image_id, options->api_key);
  if (auto warmup = RunFunction(*options, get_event, 200, kSetupWarmGets, log_fd); !warmup.ok()) {
    std::fprintf(stderr, "setup GETs: %s\n", warmup.status().ToString().c_str());
    return 1;
  }
  JsonLine().Flag("setup").Add("image_id", *image_id).Print();

  std::vector<Series> all(2);
  all[0].name = "health";
  all[0].event = HttpApiEvent("GET", "/health", options->api_key);
  all[1].name = "get_image";
  all[1].event = get_event;
  for (int round = 1; round <= options->rounds; ++round) {
    // Alternating the order spreads any drift within a round over both kinds.
    for (int i = 0; i < 2; ++i) {
      Series& series = all[static_cast<std::size_t>((round + i) % 2)];
      if (const Status measured = MeasureRound(*options, round, series, hello_envp.data(), log_fd); !measured.ok()) {
        std::fprintf(stderr, "round %d, %s: %s\n", round, series.name.c_str(), measured.ToString().c_str());
        return 1;
      }
    }
  }
  PrintSummary(*options, all);
  ::close(log_fd);
  return 0;
}

}  // namespace
}  // namespace imgsvc::bench

int main(int argc, char** argv) { return imgsvc::bench::Main(argc, argv); }
