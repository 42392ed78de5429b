// One signed, retried call to an AWS service: what the S3, DynamoDB and
// Secrets Manager adapters are built on.
//
// Send() signs the request with SigV4 (S3's path rule for service "s3"),
// sends it through the shared net::HttpClient and retries as the AWS SDKs'
// "standard" retry mode does:
//  - at most 3 attempts; transient errors only: 5xx, throttling codes
//    (ThrottlingException, ProvisionedThroughputExceededException, SlowDown,
//    RequestLimitExceeded, ...), transient codes (RequestTimeout,
//    InternalError, ...), and transport failures of replayable requests;
//  - full-jitter exponential backoff: random in [0, min(20 s, base * 2^n)),
//    base 100 ms, 500 ms after a throttling answer;
//  - a retry quota shared by every call of the client (500 tokens; a retry
//    costs 5, 10 after a timeout; a success returns 1), so a failing
//    dependency is not hammered.
// Under a ScopedDeadline (below), Send() also stops in time for it.
// AWS's error answers are parsed (S3's XML <Error>, the JSON protocols'
// `__type`, the x-amzn-ErrorType header) into AwsError; ToStatus maps them
// onto our codes: throttling -> 503 with Retry-After, 5xx and transport
// failures -> 503, anything unexpected -> 500 naming the AWS code and
// request id (which is also logged).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aws/credentials.h"
#include "aws/sigv4.h"
#include "core/status.h"
#include "net/http_client.h"

namespace imgsvc::aws {

// Where a service is reached and how it is signed.
struct ServiceTarget {
  net::Endpoint endpoint;
  std::string region;
  std::string service;  // signing name: "s3", "dynamodb", "secretsmanager"
};

struct AwsRequest {
  std::string method = "POST";
  std::string path = "/";        // wire path, percent-encoded where needed
  std::vector<NameValue> query;  // decoded names and values
  std::vector<net::Header> headers;
  std::string body;
  // The lower-case hex SHA-256 of body when the caller already has it (an
  // S3 object the service hashed as it streamed); computed when empty. A
  // wrong one is the caller's bug, and S3 refuses the request for it.
  std::string payload_sha256;
  bool replayable = true;
};

struct AwsError {
  std::string code;  // "ConditionalCheckFailedException", "NoSuchKey", ...
  std::string message;
  std::string request_id;
};

struct AwsResponse {
  int status = 0;
  std::vector<net::Header> headers;
  std::string body;
  AwsError error;    // set when status is not 2xx
  int attempts = 0;  // how many times the request was sent
  bool ok() const { return status >= 200 && status < 300; }
  std::string_view HeaderValue(std::string_view name) const;
};

struct RetryOptions {
  int max_attempts = 3;
  std::chrono::milliseconds base_delay{100};
  std::chrono::milliseconds throttle_base_delay{500};
  std::chrono::milliseconds max_delay{20000};
  int quota = 500;
  int retry_cost = 5;
  int timeout_retry_cost = 10;
  int success_refund = 1;
};

// Waits between attempts; tests record the delays instead of sleeping.
using SleepFunction = std::function<void(std::chrono::milliseconds)>;

// Less time than this left before a ScopedDeadline and Send() starts no
// attempt: even over a pooled connection a DynamoDB or S3 call takes tens of
// milliseconds, a new TLS connection several round trips more, and an attempt
// cut short by the deadline leaves its outcome unknown (a write may have
// happened) while answering nothing.
inline constexpr std::chrono::milliseconds kMinimumAttemptTime{100};

// Bounds the AWS calls of the current thread by a deadline: the Lambda
// invocation's, so that a slow or hanging AWS ends in a 504 the function
// still has time to answer rather than in Lambda killing it. While one is
// alive, AwsClient::Send() on this thread never starts an attempt it cannot
// finish in time:
//  - with less than kMinimumAttemptTime left before an attempt, it returns
//    kDeadlineExceeded ("dynamodb POST: out of time for the invocation's
//    deadline") without sending anything;
//  - each attempt's HTTP timeout is the time left when that is shorter than
//    the HTTP client's default total timeout;
//  - a backoff that would leave less than kMinimumAttemptTime for the next
//    attempt is not slept: Send() gives up as when its attempts run out,
//    with the last answer or transport failure (no retry quota is spent).
// Scopes nest: the earlier deadline applies inside, and the outer one again
// when the inner scope ends. Per thread, so never set where a fiber may park
// inside the scope (server/fiber.h): the standalone server sets none and
// keeps the plain retry behaviour; Lambda has no fibers. Measured on the steady clock from
// construction, so a wall-clock step does not move it.
class ScopedDeadline {
 public:
  explicit ScopedDeadline(std::chrono::system_clock::time_point deadline);
  ~ScopedDeadline();
  ScopedDeadline(const ScopedDeadline&) = delete;
  ScopedDeadline& operator=(const ScopedDeadline&) = delete;

  // This thread's deadline, if any: work handed to another thread takes it
  // along by opening a ScopedDeadline there.
  static std::optional<std::chrono::system_clock::time_point> Current();

 private:
  std::optional<std::chrono::steady_clock::time_point> previous_;
};

AwsError ParseAwsError(int status, const std::vector<net::Header>& headers, std::string_view body);
bool IsThrottling(const AwsError& error);
// Whether an answer with this status and error is worth another attempt.
bool IsRetryable(int status, const AwsError& error);
// The Status for a failed answer of `operation` ("DynamoDB PutItem").
Status ToStatus(std::string_view operation, const AwsResponse& response);

class AwsClient {
 public:
  AwsClient(std::shared_ptr<net::HttpClient> http, std::shared_ptr<CredentialsProvider> credentials,
            RetryOptions retry = {}, SleepFunction sleep = {});

  // Signs and sends `request`, retrying as above. An AWS error answer is a
  // response (check ok()); a Status is returned only when no answer came
  // (transport failure, timeout, credentials unavailable).
  StatusOr<AwsResponse> Send(const ServiceTarget& target, AwsRequest request);

  // The JSON protocols (DynamoDB: "DynamoDB_20120810.PutItem", version
  // "1.0"; Secrets Manager: "secretsmanager.GetSecretValue", "1.1").
  StatusOr<AwsResponse> CallJson(const ServiceTarget& target, std::string_view amz_target,
                                 std::string_view json_version, std::string body);

  // A JSON call whose first attempt is sent by BeginJson and whose answer
  // is taken by Finish, on the same thread or another, one at a time: a
  // Lambda function's init sends its first call before it waits for its
  // first event (net::PendingExchange). Finish gives what CallJson would:
  // a retryable answer or failure of the first attempt is retried as Send
  // does from the second attempt on; if nothing could be sent, Finish makes
  // the call with all its attempts. The client must outlive it.
  class PendingCall {
   public:
    PendingCall(PendingCall&&) noexcept;
    PendingCall& operator=(PendingCall&&) noexcept;
    ~PendingCall();

   private:
    friend class AwsClient;
    struct State;  // its own target and request, and the call on them
    PendingCall();
    std::unique_ptr<State> state_;
  };
  PendingCall BeginJson(const ServiceTarget& target, std::string_view amz_target, std::string_view json_version,
                        std::string body);
  StatusOr<AwsResponse> Finish(PendingCall pending);

  // A presigned GET URL for `path` on `target` (S3), valid for `expires`,
  // never beyond the signing credentials' expiration (it is shortened to
  // fit). Returns the URL and when it really expires.
  struct Presigned {
    std::string url;
    std::chrono::system_clock::time_point expires_at;
  };
  StatusOr<Presigned> PresignGet(const ServiceTarget& target, std::string_view path,
                                 std::chrono::seconds expires);
  // The same for the URLs of a listed page: the credentials, the clock and
  // the presigner are looked at once for all of them (per URL, that was a
  // tenth of a list's CPU). Gives take(i, url) the URL of paths[i]; returns
  // when they all expire.
  using TakeUrl = std::function<void(std::size_t index, std::string_view url)>;
  StatusOr<std::chrono::system_clock::time_point> PresignGets(const ServiceTarget& target,
                                                              std::span<const std::string> paths,
                                                              std::chrono::seconds expires, const TakeUrl& take);

  CredentialsProvider& credentials() { return *credentials_; }

  struct Stats {
    std::uint64_t calls = 0;     // Send() and BeginJson()
    std::uint64_t attempts = 0;  // requests put on the wire
    int quota_left = 0;
  };
  Stats stats() const;

 private:
  // One call, across its attempts; the target and the request are the
  // caller's (Send's arguments, or a PendingCall's own copies).
  struct Call {
    const ServiceTarget* target = nullptr;
    AwsRequest* request = nullptr;
    std::string invocation_id;
    std::string wire_target;
    std::string payload_hash;
  };
  // What an attempt's outcome leads to: the call's result, or another
  // attempt after `delay`.
  struct Verdict {
    std::optional<StatusOr<AwsResponse>> result;
    std::chrono::milliseconds delay{0};
  };
  Call Prepare(const ServiceTarget& target, AwsRequest& request);
  // Fills `wire` with the signed request of `attempt`, its body lent from
  // the call's request (given back by the caller); kDeadlineExceeded when
  // the invocation's deadline leaves no time for it.
  Status SignAttempt(Call& call, int attempt, net::ClientRequest& wire);
  Verdict Judge(const Call& call, int attempt, StatusOr<net::ClientResponse>& answer);
  StatusOr<AwsResponse> Attempts(Call& call, int first_attempt);

  Signer& SignerFor(const std::string& service);
  std::chrono::milliseconds Backoff(int attempt, bool throttled);
  // Takes `cost` tokens from the shared retry quota; false when too few are left.
  bool TakeRetryQuota(int cost);
  void RefundRetryQuota();

  struct RememberedUrls;
  // The GetPresigner of the latest presign: the URLs of a listed page are
  // signed in the same second with the same credentials, and share it.
  struct CachedPresigner {
    ServiceTarget target;
    Credentials credentials;
    std::chrono::system_clock::time_point when;
    std::chrono::seconds expires;
    std::string origin;
    GetPresigner presigner;
    // The URLs it signed, by path.
    std::unique_ptr<RememberedUrls> remembered;
    bool Serves(const ServiceTarget& other_target, const Credentials& other_credentials,
                std::chrono::system_clock::time_point other_when, std::chrono::seconds other_expires) const;
    // Gives take(i, url) the URL of paths[i], remembered or signed now.
    template <class Path>
    void UrlsOf(std::span<const Path> paths, const TakeUrl& take) const;
  };
  // What presigning now needs: the presigner and the lifetime the
  // credentials allow.
  struct Presigning {
    std::shared_ptr<const CachedPresigner> presigner;
    std::chrono::system_clock::time_point expires_at;
  };
  StatusOr<Presigning> StartPresigning(const ServiceTarget& target, std::chrono::seconds expires);

  std::shared_ptr<net::HttpClient> http_;
  std::shared_ptr<CredentialsProvider> credentials_;
  RetryOptions retry_;
  SleepFunction sleep_;
  Signer s3_signer_{PathRule::kAsIs};
  Signer default_signer_{PathRule::kNormaliseAndEncode};
  std::mutex presigner_mutex_;
  std::shared_ptr<const CachedPresigner> presigner_;
  mutable std::mutex quota_mutex_;
  int quota_left_;
  std::atomic<std::uint64_t> calls_{0};
  std::atomic<std::uint64_t> attempts_{0};
};

}  // namespace imgsvc::aws
