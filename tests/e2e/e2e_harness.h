// What every end-to-end test needs: a running `imgsvc serve` on a loopback
// port with a fresh data directory, clients for it, and helpers for the
// contract's shapes (keys, uploads, JSON bodies, timestamps).
//
// The binary is the build's `imgsvc` (IMGSVC_E2E_DEFAULT_BINARY, set by
// CMake) unless IMGSVC_E2E_BINARY names another. IMGSVC_E2E_SERVER_ARGS holds
// extra space-separated server arguments and the environment passes through,
// so the same tests run against the AWS backend (S3/DynamoDB emulators). For
// that reason tests never assume an empty store: each uses fresh user ids.
#pragma once

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "support/http_client.h"
#include "support/process.h"

namespace imgsvc::e2e {

using testing::HeaderList;
using testing::HttpRequest;
using testing::HttpResponse;
using testing::MultipartBuilder;

// The documented local token, accepted while bound to loopback (shared mode).
inline constexpr std::string_view kLocalToken = "6f0ced3f-5028-4b1c-8294-3d894c48c645";
// A well-formed image id that no test ever creates.
inline constexpr std::string_view kUnknownId = "0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a11";
// RFC 3339 UTC with microseconds, fixed width.
inline const std::regex kTimestamp(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$)");

std::string BinaryPath();
// IMGSVC_E2E_BACKEND=aws: the servers run on the AWS peers instead of a data directory.
bool UseAwsBackend();
// "alice" -> "alice-3f9a0c1e": user ids no other test (or run) shares.
std::string UniqueUser(std::string_view base);
std::string KeyFor(std::string_view user, std::string_view token = kLocalToken);

class TestServer {
 public:
  // Starts `imgsvc serve` with `args` after the standard ones and waits for
  // its "listening" line. nullptr (and a test failure) when it does not start.
  static std::unique_ptr<TestServer> Start(const std::vector<std::string>& args = {},
                                           const std::vector<std::string>& env = {});
  ~TestServer();

  std::uint16_t port() const { return port_; }
  const std::string& host() const { return host_; }
  const std::string& data_dir() const { return data_dir_; }
  testing::Process& process() { return *process_; }
  testing::HttpClient client() const { return testing::HttpClient(host_, port_); }

  // SIGTERM, then the exit status (nullopt if still running after `timeout`).
  std::optional<testing::ExitStatus> Stop(std::chrono::milliseconds timeout);
  // The server's log lines, for a failing test's output.
  std::string LogTail(std::size_t lines) const;

 private:
  TestServer() = default;

  std::string host_ = "127.0.0.1";
  std::uint16_t port_ = 0;
  std::string data_dir_;
  std::unique_ptr<testing::Process> process_;
};

// A test suite sharing one server (tests keep apart by their user ids).
// Suites needing other server flags override SetUpTestSuite with Launch(args).
class ServerSuite : public ::testing::Test {
 public:
  static void SetUpTestSuite() { Launch({}); }
  static void TearDownTestSuite() { shared_.reset(); }

 protected:
  static void Launch(const std::vector<std::string>& args) { shared_ = TestServer::Start(args); }
  static TestServer& server() { return *shared_; }
  static bool Running() { return shared_ != nullptr; }
  void SetUp() override { ASSERT_NE(shared_, nullptr) << "the server did not start"; }
  void TearDown() override {
    if (HasFailure() && shared_ != nullptr) std::cerr << "server log tail:\n" << shared_->LogTail(30);
  }

 private:
  static inline std::unique_ptr<TestServer> shared_;
};

// Sends `request`; on a transport failure records a test failure and returns
// a response with status 0, so the caller's status check fails visibly too.
HttpResponse Call(const TestServer& server, const HttpRequest& request);
HttpResponse Get(const TestServer& server, std::string target, std::optional<std::string> key = {},
                 HeaderList headers = {});
HttpResponse SendJson(const TestServer& server, std::string method, std::string target,
                      std::optional<std::string> key, std::string json_body);
HttpResponse Delete(const TestServer& server, std::string target, std::optional<std::string> key);
HttpResponse PostMultipart(const TestServer& server, const MultipartBuilder& form,
                           std::optional<std::string> key);

// Downloads an absolute http:// URL (a presigned URL).
HttpResponse FetchUrl(std::string_view url, HeaderList headers = {});

// The body as JSON (a test failure and null when it is not JSON).
boost::json::value Json(const HttpResponse& response);
// {"detail": "<message>"} -> message; "" when the body is not that shape.
std::string DetailMessage(const HttpResponse& response);
// The `loc` arrays of a 422 body, each as "a/b/c" ("body/files").
std::vector<std::string> ErrorLocs(const HttpResponse& response);
std::vector<std::string> ErrorTypes(const HttpResponse& response);
std::string Str(const boost::json::value& v, std::string_view key);

// One image to upload.
struct UploadFile {
  std::string filename;
  std::string content_type;
  std::string data;
};
struct UploadForm {
  std::string user_id;
  std::vector<UploadFile> files;
  std::optional<std::string> category;
  std::optional<std::string> tags;
  std::optional<std::string> visibility;
};
MultipartBuilder BuildForm(const UploadForm& form);
// Uploads and returns the response.
HttpResponse Upload(const TestServer& server, const UploadForm& form, std::optional<std::string> key);
// Uploads one small PNG for `user`; the created record (null on failure).
boost::json::object UploadOne(const TestServer& server, const std::string& user,
                              std::string_view visibility = "private",
                              std::optional<std::string> category = {},
                              std::optional<std::string> tags = {});

// Lists `query` (e.g. "user_id=alice&limit=2") following every cursor; the
// image ids in order. A test failure when a page fails.
std::vector<std::string> ListAllIds(const TestServer& server, const std::string& query,
                                    std::optional<std::string> key, int* pages = nullptr);

// Lower-case hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);
// RFC 3339 "YYYY-MM-DDTHH:MM:SS.ffffffZ" -> microseconds since the epoch.
std::optional<std::int64_t> ParseMicros(std::string_view text);
std::int64_t NowMicros();
// Percent-encodes a query value.
std::string UrlEncode(std::string_view text);

}  // namespace imgsvc::e2e
