// function.zip as Lambda runs it (issue 4): the zip is unpacked at /var/task
// of an otherwise empty root, and its bootstrap is started chrooted there
// against the fake Runtime API, with the environment Lambda gives a
// provided.al2023 function. The root holds only the zip's files (the
// bootstrap is static: no loader, no shared library), /etc/hosts so
// "localhost" resolves, an /etc/nsswitch.conf naming a lookup module the
// static binary must not load, an empty /tmp, and a test CA at
// /etc/pki/tls/certs/ca-bundle.crt, where Amazon Linux keeps its bundle.
// There is no /etc/ssl and no OPENSSLDIR, so the only CA the binary can
// trust is that file.
//
// DynamoDB is reached over HTTPS through Debian's nginx (a certificate for
// localhost from the test CA) in front of the SigV4-verifying DynamoDB peer;
// nginx's access log records the TLS version of every request it forwarded.
// S3, Secrets Manager and the Runtime API stay plain HTTP on 127.0.0.1.
// With another CA in the bundle, every DynamoDB call fails certificate
// verification before reaching nginx's access log.
//
// chroot(2) needs CAP_SYS_CHROOT: where it is refused the tests skip.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "crypto/crypto.h"
#include "lambda/function_harness.h"
#include "support/fake_runtime_api.h"
#include "support/http_client.h"
#include "support/image_fixtures.h"
#include "support/local_aws.h"
#include "support/process.h"
#include "support/tls_peers.h"

namespace imgsvc::lambda {
namespace lambda_package_test {

namespace fs = std::filesystem;
namespace json = boost::json;
namespace harness = function_harness;
using std::chrono::milliseconds;
using testing::FakeEvent;
using testing::FakeRuntimeApi;
using testing::TlsFront;

// Generous, as the waits in function_harness.h.
constexpr milliseconds kExitWait{30000};

constexpr std::string_view kToken = "lambda-package-test-token-4b8d2e6f1a";
// A well-formed image id no test creates.
constexpr std::string_view kUnknownId = "5d0c7a3e-9b1f-4e26-8c4d-2f7a6b1e9c03";
constexpr char kTaskRoot[] = "/var/task";
constexpr char kCaBundle[] = "etc/pki/tls/certs/ca-bundle.crt";  // in the root

std::string KeyFor(std::string_view user) { return std::string(user) + ":" + std::string(kToken); }

Status WriteFile(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status(Code::kInternal, "cannot write " + path);
  return Status::Ok();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string Tail(const std::string& path, std::size_t count) {
  const std::vector<std::string> lines = Lines(harness::ReadFile(path));
  std::string out;
  for (std::size_t i = lines.size() > count ? lines.size() - count : 0; i < lines.size(); ++i) out += lines[i] + "\n";
  return out;
}

// Tools run by absolute path (RunCommand does not search PATH).
StatusOr<std::string> FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return Status(Code::kNotFound, name + " is not on PATH");
}

StatusOr<std::string> RunTool(const std::string& binary, const std::vector<std::string>& args) {
  IMGSVC_ASSIGN_OR_RETURN(testing::CommandResult result, testing::RunCommand(binary, args, {}, harness::kCommandWait));
  if (!result.exit.exited || result.exit.code != 0) {
    std::string command = binary;
    for (const std::string& arg : args) command += " " + arg;
    return Status(Code::kInternal, command + " failed (exit " + std::to_string(result.exit.code) + ", signal " +
                                       std::to_string(result.exit.signal) + "): " + result.stdout_text);
  }
  return result.stdout_text;
}

// --- The root -----------------------------------------------------------

// `root` as Lambda's sandbox would hold the package: function.zip unpacked at
// /var/task; `ca_file` as the system CA bundle; localhost in /etc/hosts, and
// host lookups configured to go through systemd-resolved's module; /tmp.
Status BuildRoot(const std::string& root, const std::string& ca_file) {
  const std::string task = root + kTaskRoot;
  std::error_code error;
  for (const std::string& dir : {task, root + "/etc/pki/tls/certs", root + "/tmp"}) {
    if (!fs::create_directories(dir, error)) return Status(Code::kInternal, "cannot create " + dir);
  }
  fs::permissions(root + "/tmp", fs::perms::all | fs::perms::sticky_bit, error);

  IMGSVC_ASSIGN_OR_RETURN(const std::string cmake, FindOnPath("cmake"));
  IMGSVC_RETURN_IF_ERROR(
      RunTool(cmake, {"-E", "chdir", task, cmake, "-E", "tar", "xf", IMGSVC_FUNCTION_ZIP}).status());
  std::vector<std::string> unpacked;
  for (const fs::directory_entry& entry : fs::directory_iterator(task, error)) {
    unpacked.push_back(entry.path().filename().string());
  }
  if (unpacked != std::vector<std::string>{"bootstrap"}) {
    return Status(Code::kInternal, "function.zip does not hold bootstrap alone");
  }
  const std::string bootstrap = task + "/bootstrap";
  if (!fs::is_regular_file(bootstrap, error) || ::access(bootstrap.c_str(), X_OK) != 0) {
    return Status(Code::kInternal, "the unpacked bootstrap is not an executable file");
  }

  if (!fs::copy_file(ca_file, root + "/" + kCaBundle, error)) {
    return Status(Code::kInternal, "cannot install the CA bundle: " + error.message());
  }
  IMGSVC_RETURN_IF_ERROR(WriteFile(root + "/etc/hosts", "127.0.0.1 localhost\n"));
  // The static glibc would have to dlopen libnss_resolve.so.2, absent here
  // (and a crash risk where it belongs to another glibc), and "localhost",
  // DynamoDB's host, would not resolve. The bootstrap looks up host names in
  // /etc/hosts and DNS only (src/app/static_glibc.cc).
  return WriteFile(root + "/etc/nsswitch.conf", "hosts: resolve\n");
}

std::string ListTree(const std::string& root) {
  std::string out;
  std::error_code error;
  for (auto it = fs::recursive_directory_iterator(root, error); it != fs::recursive_directory_iterator();
       it.increment(error)) {
    if (error) break;
    out += "  /" + fs::relative(it->path(), root, error).string() + (it->is_directory(error) ? "/" : "") + "\n";
  }
  return out;
}

// Whether this process may chroot(2) (root or CAP_SYS_CHROOT), tried in a
// child so the test process keeps its own root.
StatusOr<bool> MayChroot(const std::string& dir) {
  const pid_t pid = ::fork();
  if (pid < 0) return Status(Code::kInternal, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (::chroot(dir.c_str()) == 0) ::_exit(0);
    ::_exit(errno == EPERM ? 1 : 2);
  }
  int wait_status = 0;
  if (::waitpid(pid, &wait_status, 0) != pid || !WIFEXITED(wait_status) || WEXITSTATUS(wait_status) == 2) {
    return Status(Code::kInternal, "chroot to " + dir + " failed other than with EPERM");
  }
  return WEXITSTATUS(wait_status) == 0;
}

// A program started inside a root with chroot(2), with exactly the given
// environment (nothing inherited), its stdout and stderr appended to a log
// file outside the root. Killed on destruction if still running.
class ChrootedProcess {
 public:
  static StatusOr<std::unique_ptr<ChrootedProcess>> Start(const std::string& root, const std::string& cwd,
                                                          const std::string& program, std::vector<std::string> env,
                                                          const std::string& log_path) {
    const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return Status(Code::kInternal, "cannot open " + log_path);
    // The child reports a failed step through this pipe; exec closes it.
    int report[2];
    if (::pipe2(report, O_CLOEXEC) != 0) {
      ::close(log_fd);
      return Status(Code::kInternal, std::string("pipe: ") + std::strerror(errno));
    }
    // Everything the child uses is prepared here: between fork and exec of a
    // threaded process only async-signal-safe calls are allowed.
    std::string program_copy = program;
    std::vector<char*> argv{program_copy.data(), nullptr};
    std::vector<char*> envp;
    for (std::string& entry : env) envp.push_back(entry.data());
    envp.push_back(nullptr);

    const pid_t pid = ::fork();
    if (pid == 0) {
      int failure[2] = {0, 0};
      if (::dup2(log_fd, STDOUT_FILENO) < 0 || ::dup2(log_fd, STDERR_FILENO) < 0) {
        failure[0] = 1;
      } else if (::chroot(root.c_str()) != 0) {
        failure[0] = 2;
      } else if (::chdir(cwd.c_str()) != 0) {
        failure[0] = 3;
      } else {
        ::execve(argv[0], argv.data(), envp.data());
        failure[0] = 4;
      }
      failure[1] = errno;
      (void)!::write(report[1], failure, sizeof failure);
      ::_exit(127);
    }
    const int fork_errno = errno;
    ::close(log_fd);
    ::close(report[1]);
    if (pid < 0) {
      ::close(report[0]);
      return Status(Code::kInternal, std::string("fork: ") + std::strerror(fork_errno));
    }
    int failure[2] = {0, 0};
    ssize_t got = 0;
    do {
      got = ::read(report[0], failure, sizeof failure);
    } while (got < 0 && errno == EINTR);
    ::close(report[0]);
    std::unique_ptr<ChrootedProcess> process(new ChrootedProcess(pid));
    if (got > 0) {
      static constexpr const char* kSteps[] = {"", "dup2", "chroot", "chdir", "execve"};
      const int step = failure[0] >= 1 && failure[0] <= 4 ? failure[0] : 0;
      return Status(Code::kInternal, std::string(kSteps[step]) + " in the child failed: " + std::strerror(failure[1]));
    }
    return process;
  }

  ChrootedProcess(const ChrootedProcess&) = delete;
  ChrootedProcess& operator=(const ChrootedProcess&) = delete;
  ~ChrootedProcess() {
    if (exit_) return;
    ::kill(pid_, SIGKILL);
    int ignored = 0;
    ::waitpid(pid_, &ignored, 0);
  }

  // The exit status once the process has ended, or nullopt after `timeout`.
  std::optional<testing::ExitStatus> Wait(milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!exit_) {
      int wait_status = 0;
      const pid_t reaped = ::waitpid(pid_, &wait_status, WNOHANG);
      if (reaped == pid_) {
        testing::ExitStatus status;
        status.exited = WIFEXITED(wait_status);
        status.code = status.exited ? WEXITSTATUS(wait_status) : -1;
        status.signal = WIFSIGNALED(wait_status) ? WTERMSIG(wait_status) : 0;
        exit_ = status;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(milliseconds(50));
    }
    return exit_;
  }

 private:
  explicit ChrootedProcess(pid_t pid) : pid_(pid) {}

  pid_t pid_;
  std::optional<testing::ExitStatus> exit_;
};

// --- Events -------------------------------------------------------------

struct ApiRequest {
  std::string method = "GET";
  std::string path = "/";
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names
  std::string body;  // sent base64-encoded, as HTTP APIs do for binary media
};

ApiRequest Get(std::string path, std::optional<std::string> key = {}) {
  ApiRequest request;
  request.path = std::move(path);
  if (key) request.headers.emplace_back("x-api-key", *key);
  return request;
}

ApiRequest UploadPng(const std::string& user, const std::string& png) {
  testing::MultipartBuilder form;
  form.AddField("user_id", user);
  form.AddFile("files", "tiny.png", "image/png", png);
  ApiRequest request;
  request.method = "POST";
  request.path = "/api/v1/images";
  request.headers = {{"content-type", form.ContentType()}, {"x-api-key", KeyFor(user)}};
  request.body = form.Build();
  return request;
}

// An HTTP API (payload format 2.0) event on the $default stage.
std::string HttpApiEvent(const ApiRequest& request) {
  json::object headers{{"accept", "*/*"},
                       {"host", "r3pmxmplak.execute-api.us-east-1.amazonaws.com"},
                       {"user-agent", "lambda-package-test"},
                       {"x-forwarded-proto", "https"}};
  for (const auto& [name, value] : request.headers) headers[name] = value;
  if (!request.body.empty()) headers["content-length"] = std::to_string(request.body.size());
  json::object event{
      {"version", "2.0"},
      {"routeKey", "$default"},
      {"rawPath", request.path},
      {"rawQueryString", ""},
      {"headers", std::move(headers)},
      {"requestContext",
       {{"accountId", "123456789012"},
        {"apiId", "r3pmxmplak"},
        {"domainName", "r3pmxmplak.execute-api.us-east-1.amazonaws.com"},
        {"domainPrefix", "r3pmxmplak"},
        {"http",
         {{"method", request.method},
          {"path", request.path},
          {"protocol", "HTTP/1.1"},
          {"sourceIp", "198.51.100.7"},
          {"userAgent", "lambda-package-test"}}},
        {"requestId", harness::Unique("http")},
        {"routeKey", "$default"},
        {"stage", "$default"},
        {"time", "21/Apr/2020:15:08:21 +0000"},
        {"timeEpoch", 1587481701067}}},
      {"isBase64Encoded", !request.body.empty()},
  };
  if (!request.body.empty()) event["body"] = crypto::Base64Encode(request.body);
  return json::serialize(event);
}

struct LambdaResponse {
  int status = 0;
  std::string body;

  json::value Json() const {
    boost::system::error_code error;
    json::value value = json::parse(body, error);
    return error ? json::value(nullptr) : value;
  }
  std::string Field(std::string_view key) const {
    const json::value value = Json();
    const json::value* field = value.is_object() ? value.get_object().if_contains(key) : nullptr;
    return field != nullptr && field->is_string() ? std::string(field->get_string()) : std::string();
  }
};

// The access log lines of DynamoDB requests from index `from` on.
std::vector<std::string> DynamoDbLines(const std::vector<std::string>& log, std::size_t from) {
  std::vector<std::string> lines;
  for (std::size_t i = from; i < log.size(); ++i) {
    if (log[i].find("DynamoDB_20120810.") != std::string::npos) lines.push_back(log[i]);
  }
  return lines;
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& line : lines) out += "  " + line + "\n";
  return out;
}

// One peer set, bucket/table/secret and TLS front for the suite; each test
// builds its own root and starts its own function in it.
class LambdaPackageTest : public ::testing::Test {
 public:
  static void SetUpTestSuite() { setup_error_ = Prepare(); }

  static void TearDownTestSuite() {
    front_.reset();
    std::error_code ignored;
    if (!work_dir_.empty()) fs::remove_all(work_dir_, ignored);
  }

 protected:
  void SetUp() override {
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    if (!may_chroot_) GTEST_SKIP() << "chroot(2) refused with EPERM: needs root or CAP_SYS_CHROOT";
  }

  void TearDown() override {
    if (fake_ != nullptr) fake_->Shutdown();
    // Without its Runtime API the loop ends by itself; else the destructor kills it.
    if (function_ != nullptr && !function_->Wait(kExitWait)) ADD_FAILURE() << "the function outlived its Runtime API";
    if (HasFailure() && !root_.empty()) {
      std::cerr << "root:\n" << ListTree(root_) << "function log tail:\n" << Tail(log_path_, 40);
    }
    function_.reset();
    fake_.reset();
    std::error_code ignored;
    if (!root_.empty()) fs::remove_all(root_, ignored);
  }

  // Builds a root trusting `ca_file` and starts the packaged bootstrap in it;
  // "" once the function polls the fake Runtime API, else what went wrong.
  std::string StartFunction(const std::string& name, const std::string& ca_file) {
    root_ = work_dir_ + "/" + name;
    log_path_ = work_dir_ + "/" + name + ".log";
    if (Status built = BuildRoot(root_, ca_file); !built.ok()) return "building the root: " + built.ToString();
    auto fake = FakeRuntimeApi::Start();
    if (!fake.ok()) return "fake Runtime API: " + fake.status().ToString();
    fake_ = std::move(*fake);

    // What Lambda sets for a provided.al2023 function, plus the function's own settings.
    std::vector<std::string> env{"AWS_LAMBDA_RUNTIME_API=" + fake_->address(),
                                 std::string("LAMBDA_TASK_ROOT=") + kTaskRoot,
                                 "LAMBDA_RUNTIME_DIR=/var/runtime",
                                 "PATH=/usr/local/bin:/usr/bin/:/bin:/opt/bin",
                                 "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:"
                                 "/var/task:/var/task/lib:/opt/lib",
                                 "LANG=en_US.UTF-8",
                                 "TZ=:UTC",
                                 "AWS_LAMBDA_FUNCTION_NAME=imgsvc",
                                 "AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
                                 "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512",
                                 std::string("AWS_DEFAULT_REGION=") + testing::kLocalAwsRegion,
                                 "IMGSVC_STORAGE=aws",
                                 "IMGSVC_BUCKET=" + name_,
                                 "IMGSVC_TABLE=" + name_,
                                 "IMGSVC_TOKEN_SECRET=" + name_,
                                 "IMGSVC_AUTH_MODE=shared"};
    // The peers as they are, but DynamoDB through the TLS front.
    for (std::string& entry : harness::AwsEnvironment(peers_)) {
      if (entry.rfind("AWS_ENDPOINT_URL_DYNAMODB=", 0) == 0) {
        entry = "AWS_ENDPOINT_URL_DYNAMODB=https://localhost:" + std::to_string(front_->port());
      }
      env.push_back(std::move(entry));
    }
    auto function =
        ChrootedProcess::Start(root_, kTaskRoot, std::string(kTaskRoot) + "/bootstrap", std::move(env), log_path_);
    if (!function.ok()) return "starting the bootstrap: " + function.status().ToString();
    function_ = std::move(*function);
    if (!fake_->WaitForNextCalls(1, harness::kStartWait)) {
      return "the bootstrap never asked for /next; log:\n" + Tail(log_path_, 40);
    }
    return {};
  }

  LambdaResponse Invoke(const ApiRequest& request) {
    FakeEvent event;
    event.event = HttpApiEvent(request);
    const std::string id = fake_->Enqueue(std::move(event));
    const std::optional<testing::InvocationOutcome> outcome = fake_->WaitForOutcome(id, harness::kInvokeWait);
    LambdaResponse response;
    if (!outcome) {
      ADD_FAILURE() << request.method << " " << request.path << ": no outcome";
      return response;
    }
    if (!outcome->ok) {
      ADD_FAILURE() << request.method << " " << request.path << ": invocation failed with " << outcome->error_type
                    << ": " << outcome->payload;
      return response;
    }
    boost::system::error_code error;
    const json::value payload = json::parse(outcome->payload, error);
    const json::object* object = error ? nullptr : payload.if_object();
    const json::value* status = object != nullptr ? object->if_contains("statusCode") : nullptr;
    const json::value* body = object != nullptr ? object->if_contains("body") : nullptr;
    const json::value* base64 = object != nullptr ? object->if_contains("isBase64Encoded") : nullptr;
    if (status == nullptr || !status->is_int64() || body == nullptr || !body->is_string() || base64 == nullptr ||
        !base64->is_bool()) {
      ADD_FAILURE() << "not a Lambda proxy response: " << outcome->payload.substr(0, 400);
      return response;
    }
    response.status = static_cast<int>(status->get_int64());
    response.body = std::string(body->get_string());
    if (base64->get_bool()) response.body = crypto::Base64Decode(response.body).value_or("");
    return response;
  }

  std::string FunctionLog() const { return harness::ReadFile(log_path_); }
  std::string FunctionLogTail() const { return Tail(log_path_, 20); }

  static TlsFront& front() { return *front_; }

 private:
  // "" when the peers are provisioned and nginx listens, or when chroot(2)
  // is refused (nothing to run then); else what went wrong.
  static std::string Prepare() {
    work_dir_ = harness::MakeTempDir("imgsvc-lambda-package");
    if (work_dir_.empty()) return "cannot create a temporary directory";
    StatusOr<bool> may_chroot = MayChroot(work_dir_);
    if (!may_chroot.ok()) return may_chroot.status().ToString();
    may_chroot_ = *may_chroot;
    if (!may_chroot_) return {};
    auto peers = testing::StartLocalAws();
    if (!peers.ok()) return "local AWS peers: " + peers.status().ToString();
    peers_ = *peers;
    name_ = harness::Unique("package");
    auto init = testing::RunCommand(IMGSVC_BINARY,
                                    {"init", "--api-token", std::string(kToken), "--bucket", name_, "--table", name_,
                                     "--token-secret", name_},
                                    harness::AwsEnvironment(peers_), harness::kCommandWait);
    if (!init.ok()) return "imgsvc init: " + init.status().ToString();
    if (!init->exit.exited || init->exit.code != 0) return "imgsvc init failed: " + init->stdout_text;
    testing::TlsFrontOptions options;
    options.upstream = peers_.dynamodb;
    // One line per forwarded request: "<TLS version> <X-Amz-Target> <status>".
    options.access_log_format = "$ssl_protocol $http_x_amz_target $status";
    auto front = TlsFront::Start(options);
    if (!front.ok()) return "TLS front: " + front.status().ToString();
    front_ = std::move(*front);
    return {};
  }

  static inline std::string setup_error_;
  static inline bool may_chroot_ = false;
  static inline testing::LocalAws peers_;
  static inline std::string name_;  // of the bucket, the table and the secret
  static inline std::string work_dir_;
  static inline std::unique_ptr<TlsFront> front_;

  std::string root_;
  std::string log_path_;
  std::unique_ptr<FakeRuntimeApi> fake_;
  std::unique_ptr<ChrootedProcess> function_;
};

TEST_F(LambdaPackageTest, BootstrapServesFromTheUnpackedZipWithDynamoDbOverTls) {
  const std::size_t log_start = front().AccessLog().size();
  const std::string started = StartFunction("root-trusted", front().ca_file());
  ASSERT_TRUE(started.empty()) << started;

  const LambdaResponse health = Invoke(Get("/health"));
  EXPECT_EQ(health.status, 200) << health.body;
  EXPECT_EQ(health.Field("status"), "ok");

  // HeadBucket, DescribeTable (over TLS) and the secret.
  const LambdaResponse ready = Invoke(Get("/ready"));
  EXPECT_EQ(ready.status, 200) << ready.body;

  const std::string user = harness::Unique("packaged");
  const std::string png = testing::MakePng(16, 8);
  const LambdaResponse created = Invoke(UploadPng(user, png));
  ASSERT_EQ(created.status, 201) << created.body;
  const json::value body = created.Json();
  const json::value* images = body.is_object() ? body.get_object().if_contains("images") : nullptr;
  ASSERT_TRUE(images != nullptr && images->is_array() && images->get_array().size() == 1) << created.body;
  const json::value& record = images->get_array()[0];
  const json::value* id_field = record.is_object() ? record.get_object().if_contains("image_id") : nullptr;
  ASSERT_TRUE(id_field != nullptr && id_field->is_string()) << created.body;
  const std::string image_id(id_field->get_string());

  const std::size_t before_read = front().AccessLog().size();
  const LambdaResponse read = Invoke(Get("/api/v1/images/" + image_id, KeyFor(user)));
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(read.Field("image_id"), image_id);
  EXPECT_EQ(read.Field("sha256"), crypto::HexEncode(crypto::Sha256Of(png)));

  const LambdaResponse unknown = Invoke(Get("/api/v1/images/" + std::string(kUnknownId), KeyFor(user)));
  EXPECT_EQ(unknown.status, 404) << unknown.body;

  // Every DynamoDB call of the function crossed nginx over TLS; the read was a
  // GetItem that DynamoDB answered.
  const std::vector<std::string> log = front().AccessLog();
  const std::vector<std::string> all = DynamoDbLines(log, log_start);
  EXPECT_GE(all.size(), 3u) << "DescribeTable, the upload's write and GetItem:\n" << Joined(all);
  for (const std::string& line : all) EXPECT_EQ(line.rfind("TLSv1.", 0), 0u) << line;
  const std::vector<std::string> read_lines = DynamoDbLines(log, before_read);
  bool served_get_item = false;
  for (const std::string& line : read_lines) {
    served_get_item = served_get_item || line.find(" DynamoDB_20120810.GetItem 200") != std::string::npos;
  }
  EXPECT_TRUE(served_get_item) << "no GetItem through nginx:\n" << Joined(read_lines);
  EXPECT_EQ(FunctionLog().find("certificate verify failed"), std::string::npos);
}

TEST_F(LambdaPackageTest, BundleOfAnotherCaFailsCertificateVerification) {
  const std::size_t log_start = front().AccessLog().size();
  const std::string started = StartFunction("root-untrusted", front().other_ca_file());
  ASSERT_TRUE(started.empty()) << started;

  // No AWS call: served as ever.
  const LambdaResponse health = Invoke(Get("/health"));
  EXPECT_EQ(health.status, 200) << health.body;

  // A GetItem that would find nothing fails before reaching DynamoDB.
  const std::string user = harness::Unique("untrusted");
  const LambdaResponse read = Invoke(Get("/api/v1/images/" + std::string(kUnknownId), KeyFor(user)));
  EXPECT_EQ(read.status, 503) << read.body;
  EXPECT_EQ(read.Field("detail"), "DynamoDB GetItem: temporarily unavailable, retry later");

  const LambdaResponse created = Invoke(UploadPng(user, testing::MakePng(16, 8)));
  EXPECT_EQ(created.status, 503) << created.body;

  const std::string function_log = FunctionLog();
  EXPECT_NE(function_log.find("certificate verify failed"), std::string::npos) << FunctionLogTail();
  const std::vector<std::string> reached = DynamoDbLines(front().AccessLog(), log_start);
  EXPECT_TRUE(reached.empty()) << "DynamoDB requests got through nginx:\n" << Joined(reached);
}

}  // namespace lambda_package_test
}  // namespace imgsvc::lambda
