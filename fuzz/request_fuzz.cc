// Fuzzes http::Router::Handle over the real embedded stores: the routing,
// query parsing, ids, cursors, filters, JSON bodies, multipart uploads,
// authentication and signed downloads, everything below the Beast socket.
//
// The stack is opened once per process by app::OpenServiceStack (the same
// code the server and Lambda use) over a temp directory (under /dev/shm when
// there is one, so fsync is cheap), and seeded with three images: alice's
// public and private ones and bob's public one. Every input starts from that
// state: uploads a request made are deleted again, and after a successful
// PATCH or DELETE the seed is rebuilt.
//
// Input (text, so corpus files read like requests):
//   METHOD\n
//   TARGET\n                  path, then '?' and the raw query
//   name: value\n ...         headers (name lower-cased), up to a blank line
//   \n
//   body                      the rest (at most 64 KiB)
// In the target, header values and the body these placeholders expand:
//   {id0} {id1} {id2}   alice's public, alice's private, bob's public image
//   {key} {bobkey}      valid x-api-key values for alice and bob
//   {dl0}               (target only) path and query of a valid signed
//                       download URL of {id0}
// A content-length header sets Request::content_length; the body is then cut
// to it, or, when shorter, ends with the error the server's body gives.
//
// REQUEST_FUZZ_VERBOSE=1 prints each request's status and body to stderr.
//
// Checked: Handle neither crashes nor throws, never answers 5xx, and a JSON
// content type comes with a body that parses as JSON.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include "app/config.h"
#include "app/service_stack.h"
#include "core/log.h"
#include "http/message.h"
#include "http/router.h"

namespace {

namespace http = imgsvc::http;
using imgsvc::Code;
using imgsvc::Status;
using imgsvc::StatusOr;

constexpr std::string_view kToken = "fuzz-shared-token-0123456789";
constexpr std::size_t kMaxBody = 64 * 1024;
constexpr std::size_t kMaxHeaders = 16;

// A 1x1 RGBA PNG.
constexpr unsigned char kPng[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

[[noreturn]] void Fail(const std::string& what, const std::string& detail = {}) {
  std::fprintf(stderr, "request_fuzz: %s\n%s\n", what.c_str(), detail.c_str());
  std::abort();
}

// Body bytes handed out in chunks of varying size; when the declared length
// is longer than the bytes, the last read fails as the server's would.
class FuzzBody final : public http::BodySource {
 public:
  FuzzBody(std::string data, bool truncated, std::uint64_t seed)
      : data_(std::move(data)), truncated_(truncated), state_(seed | 1) {}
  StatusOr<std::size_t> Read(std::span<std::byte> out) override {
    if (offset_ == data_.size()) {
      if (truncated_) return Status(Code::kBadRequest, "Connection closed before the request body was complete");
      return std::size_t{0};
    }
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    std::size_t n = std::min<std::size_t>(out.size(), data_.size() - offset_);
    if (state_ & 1) n = std::min<std::size_t>(n, 1 + (state_ >> 8) % 512);
    std::memcpy(out.data(), data_.data() + offset_, n);
    offset_ += n;
    return n;
  }

 private:
  std::string data_;
  std::size_t offset_ = 0;
  bool truncated_;
  std::uint64_t state_;
};

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

void ReplaceAll(std::string& text, std::string_view from, std::string_view to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

struct Seeded {
  std::string id;
  std::string owner;
  std::string key;  // storage key
};

class Fixture {
 public:
  Fixture() {
    const std::filesystem::path base =
        std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    std::string pattern = (base / "imgsvc-request-fuzz-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) Fail("mkdtemp failed");
    dir_ = pattern;
    // Request log lines (and the store's start-up lines) go nowhere.
    null_fd_ = open("/dev/null", O_WRONLY | O_CLOEXEC);
    imgsvc::log::SetFd(null_fd_);

    // The stack keeps a reference to the config (the token source re-reads
    // it), so it lives as long as the stack.
    imgsvc::app::Config& config = config_;
    config.data_dir = dir_;
    config.api_token = std::string(kToken);
    config.cors_origins = "https://app.example";
    config.max_upload_mb = 1;
    config.max_files = 3;
    config.max_pixels = 1 << 20;
    config.list_max_reads = 3;
    imgsvc::app::TokenPlan plan;
    plan.configured = std::string(kToken);
    auto stack = imgsvc::app::OpenServiceStack(config, plan, "http://127.0.0.1:8000");
    if (!stack.ok()) Fail("cannot open the service stack", stack.status().ToString());
    stack_ = std::move(*stack);
    Seed();
  }
  ~Fixture() {
    stack_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  http::Router& router() { return *stack_->router; }
  const std::vector<Seeded>& seeded() const { return seeded_; }
  const std::string& download() const { return download_; }

  // Removes what a 201 upload created.
  void RemoveUploaded(const std::string& body) {
    boost::system::error_code ec;
    const boost::json::value json = boost::json::parse(body, ec);
    if (ec || !json.is_object()) Fail("upload 201 without a JSON object", body);
    const auto* images = json.as_object().if_contains("images");
    if (images == nullptr || !images->is_array()) Fail("upload 201 without images", body);
    for (const auto& image : images->as_array()) {
      const auto& object = image.as_object();
      Remove(std::string(object.at("user_id").as_string()), std::string(object.at("image_id").as_string()));
    }
  }

  // Back to the seeded state after a request that may have changed it.
  void Reseed() {
    for (const Seeded& s : seeded_) Remove(s.owner, s.id);
    Seed();
  }

 private:
  void Remove(const std::string& owner, const std::string& id) {
    const std::string ids[] = {id};
    for (const auto& outcome : stack_->records->DeleteOwned(owner, ids)) {
      if (outcome.result == imgsvc::core::DeleteResult::kFailed) Fail("cleanup delete failed", outcome.detail);
      if (outcome.record) {
        const std::string keys[] = {outcome.record->StorageKey()};
        for (const Status& st : stack_->blobs->Delete(keys)) {
          if (!st.ok()) Fail("cleanup blob delete failed", st.ToString());
        }
      }
    }
  }

  Seeded Upload(const std::string& user, const std::string& fields) {
    std::string body;
    body += "--B\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\n" + user + "\r\n";
    body += fields;
    body += "--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"dot.png\"\r\n"
            "Content-Type: image/png\r\n\r\n";
    body.append(reinterpret_cast<const char*>(kPng), sizeof kPng);
    body += "\r\n--B--\r\n";
    http::MemoryBody source(body);
    http::Request request;
    request.method = "POST";
    request.path = "/api/v1/images";
    request.headers = {{"x-api-key", user + ":" + std::string(kToken)},
                       {"content-type", "multipart/form-data; boundary=B"}};
    request.content_length = body.size();
    request.body = &source;
    const http::Response response = router().Handle(request);
    if (response.status != 201) Fail("seed upload failed: " + std::to_string(response.status), response.body);
    const boost::json::value json = boost::json::parse(response.body);
    const auto& image = json.at("images").at(0).as_object();
    Seeded s;
    s.id = std::string(image.at("image_id").as_string());
    s.owner = user;
    auto record = stack_->records->Get(s.id);
    if (!record.ok()) Fail("seeded record missing", record.status().ToString());
    s.key = record->StorageKey();
    return s;
  }

  void Seed() {
    seeded_.clear();
    auto field = [](std::string_view name, std::string_view value) {
      return "--B\r\nContent-Disposition: form-data; name=\"" + std::string(name) + "\"\r\n\r\n" +
             std::string(value) + "\r\n";
    };
    seeded_.push_back(Upload("alice", field("visibility", "public") + field("category", "animals") +
                                          field("tags", "cat,cute")));
    seeded_.push_back(Upload("alice", field("visibility", "private") + field("tags", "secret")));
    seeded_.push_back(Upload("bob", field("visibility", "public") + field("category", "Bob's")));
    // A signed download URL of the first image, valid for 7 days.
    auto url = stack_->blobs->PresignGet(seeded_[0].key, std::chrono::seconds(604800));
    if (!url.ok()) Fail("presign failed", url.status().ToString());
    const std::string_view full = url->url;
    const auto path = full.find("/files/");
    if (path == std::string_view::npos) Fail("unexpected download URL", url->url);
    download_ = std::string(full.substr(path));
  }

  std::string dir_;
  int null_fd_ = -1;
  imgsvc::app::Config config_;
  std::unique_ptr<imgsvc::app::ServiceStack> stack_;
  std::vector<Seeded> seeded_;
  std::string download_;
};

Fixture& TheFixture() {
  static Fixture* fixture = new Fixture();  // left for the process exit: no teardown races
  static const bool cleanup = [] {
    std::atexit([] { delete fixture; });
    return true;
  }();
  (void)cleanup;
  return *fixture;
}

std::string Expand(std::string text, const Fixture& f, bool target) {
  if (text.find('{') == std::string::npos) return text;
  if (target) ReplaceAll(text, "{dl0}", f.download());
  ReplaceAll(text, "{id0}", f.seeded()[0].id);
  ReplaceAll(text, "{id1}", f.seeded()[1].id);
  ReplaceAll(text, "{id2}", f.seeded()[2].id);
  ReplaceAll(text, "{key}", "alice:" + std::string(kToken));
  ReplaceAll(text, "{bobkey}", "bob:" + std::string(kToken));
  return text;
}

std::string_view NextLine(std::string_view& input) {
  const std::size_t newline = input.find('\n');
  std::string_view line = input.substr(0, newline);
  input = newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

std::string Describe(const http::Request& request, const http::Response& response) {
  std::string out = request.method + " " + request.path + (request.query.empty() ? "" : "?" + request.query) +
                    " -> " + std::to_string(response.status) + "\nbody: " + response.body.substr(0, 2000);
  if (!response.logged_cause.empty()) out += "\ncause: " + response.logged_cause;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Fixture& fixture = TheFixture();
  std::string_view input(reinterpret_cast<const char*>(data), size);

  std::uint64_t seed = 14695981039346656037ull;  // FNV-1a of the input: read sizes
  for (const char c : input) seed = (seed ^ static_cast<unsigned char>(c)) * 1099511628211ull;

  http::Request request;
  request.method = std::string(NextLine(input).substr(0, 16));
  std::string target = Expand(std::string(NextLine(input)), fixture, true);
  const std::size_t question = target.find('?');
  request.path = target.substr(0, question);
  if (question != std::string::npos) request.query = target.substr(question + 1);
  request.remote_address = "127.0.0.1";
  while (!input.empty()) {
    const std::string_view line = NextLine(input);
    if (line.empty()) break;
    if (request.headers.size() == kMaxHeaders) continue;
    const std::size_t colon = line.find(':');
    std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    request.headers.push_back({Lower(line.substr(0, colon)), Expand(std::string(value), fixture, false)});
  }
  std::string body = Expand(std::string(input.substr(0, kMaxBody)), fixture, false);
  bool truncated = false;
  if (auto declared = request.header("content-length")) {
    std::uint64_t length = 0;
    const auto [end, ec] = std::from_chars(declared->data(), declared->data() + declared->size(), length);
    if (ec == std::errc() && end == declared->data() + declared->size()) {
      request.content_length = length;
      if (length < body.size()) body.resize(length);
      truncated = length > body.size();
    }
  }
  FuzzBody source(std::move(body), truncated, seed);
  request.body = &source;

  http::Response response;
  try {
    response = fixture.router().Handle(request);
  } catch (const std::exception& e) {
    Fail(std::string("Handle threw: ") + e.what(), request.method + " " + request.path + "?" + request.query);
  } catch (...) {
    Fail("Handle threw a non-std exception", request.method + " " + request.path + "?" + request.query);
  }

  static const bool verbose = std::getenv("REQUEST_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s\n\n", Describe(request, response).c_str());

  if (response.status < 100 || response.status >= 500) Fail("server error", Describe(request, response));
  const auto content_type = response.header("content-type");
  const bool encoded = response.header("content-encoding").has_value();
  if (content_type && Lower(*content_type).starts_with("application/json") && !encoded && !response.file &&
      response.status != 204 && response.status != 304) {
    boost::system::error_code ec;
    boost::json::parse(response.body, ec);
    if (ec) Fail("invalid JSON body (" + ec.message() + ")", Describe(request, response));
  }
  if (response.file && !response.body.empty()) Fail("both a file and a body", Describe(request, response));

  // Back to the seeded state.
  const bool ok = response.status >= 200 && response.status < 300;
  const bool reading = request.method == "GET" || request.method == "HEAD" || request.method == "OPTIONS";
  if (ok && request.method == "POST" && response.status == 201) {
    fixture.RemoveUploaded(response.body);
  } else if (ok && !reading) {
    fixture.Reseed();
  }
  return 0;
}
