// The service secret (shared token or per-user master key) read from AWS
// Secrets Manager with GetSecretValue, as the original service did.
//
// The value is cached for `cache_ttl`, so steady traffic costs one call per
// TTL. Refresh() refetches at once (the Authenticator calls it on a key
// mismatch, at most once per refresh interval), so a rotation is seen
// without a restart. One fetch runs at a time. While it runs, a value
// fetched before is served to the other callers, so that a slow answer holds
// up only the caller that asked; with none, callers queue behind the fetch
// and take its outcome instead of sending their own.
//
// Outages: when Secrets Manager cannot be reached or answers with a 5xx or
// throttling (kUnavailable / kDeadlineExceeded), a value fetched before keeps
// being served, past its TTL, and no fetch is tried again for
// kOutageRetryDelay. A dependency blip then neither locks every client out
// nor turns each request into a call at a service that is already failing.
// Authoritative answers are not outages: a secret that is gone or unusable
// drops the cached value, so deleting or breaking the secret revokes the old
// token. With no value to serve, the failure is returned.
//
// The SecretString is the bare token or JSON (see TokenFromSecretString).
// The value is never logged nor put in a Status.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "aws/aws_client.h"
#include "core/ports.h"
#include "core/status.h"

namespace imgsvc::storage {

// The token inside a SecretString, which is one of:
//  - the bare token (surrounding ASCII whitespace is dropped: a header value
//    never carries it, so it could never match);
//  - a JSON object {"api_token": "..."} (the original service), {"token":
//    "..."}, or with a single field whose value is a string.
// kInternal when the text is empty, or starts with '{' but is not one of
// those objects; messages never include the value.
StatusOr<std::string> TokenFromSecretString(std::string_view secret_string);

class SecretsManagerTokenSource final : public core::TokenSource {
 public:
  // How long an outage suspends fetching while a cached value is served.
  static constexpr std::chrono::seconds kOutageRetryDelay{30};

  // `secret_id` is the secret's name or ARN (CreateIfMissing needs a name).
  SecretsManagerTokenSource(std::shared_ptr<aws::AwsClient> client, aws::ServiceTarget target,
                            std::string secret_id, std::chrono::seconds cache_ttl,
                            std::shared_ptr<core::Clock> clock = std::make_shared<core::MonotonicWallClock>());

  // The cached token; fetched when the TTL ran out (see Outages above).
  // A missing secret is kUnavailable naming it: nobody can be authenticated.
  StatusOr<std::string> Current() override;
  // Fetches now, bypassing the TTL, but not an outage's retry delay.
  StatusOr<std::string> Refresh() override;
  // Whether Current() has a token (fetching it when none is cached).
  Status CheckReady() override;
  // Sends GetSecretValue now; the next fetch reads its answer instead of
  // calling (aws::AwsClient::PendingCall). The token's age counts from now.
  void Prefetch() override;

  // Creates the secret with `value` as its SecretString when it does not
  // exist: true when created, false when it existed (its value untouched).
  StatusOr<bool> CreateIfMissing(const std::string& value);

  // GetSecretValue calls made so far.
  std::uint64_t fetches() const { return fetches_.load(); }

 private:
  struct Fetched {
    StatusOr<std::string> token;
    bool outage = false;  // no usable answer came: what we hold stays valid
    core::Micros asked_at = 0;  // when the request was sent
  };

  // Reads the prefetched answer when there is one, else calls.
  Fetched Fetch();
  StatusOr<std::string> TokenFromAnswer(std::string_view body) const;
  std::string GetSecretValueRequest() const;
  // Fetches and records the outcome; the caller holds fetch_mutex_.
  StatusOr<std::string> FetchAndRemember();

  std::shared_ptr<aws::AwsClient> client_;
  aws::ServiceTarget target_;
  std::string secret_id_;
  core::Micros cache_ttl_;
  std::shared_ptr<core::Clock> clock_;

  // Held across a fetch (a network call), so fetches run one at a time;
  // mutex_ guards the state below and is never held across a call.
  std::mutex fetch_mutex_;
  std::mutex mutex_;
  // Guarded by fetch_mutex_.
  std::optional<aws::AwsClient::PendingCall> prefetched_;
  core::Micros prefetched_at_ = 0;
  std::optional<std::string> token_;
  core::Micros fetched_at_ = 0;
  core::Micros outage_until_ = 0;  // serve token_ without fetching until then
  std::optional<Status> last_failure_;  // of the latest fetch
  std::uint64_t completed_ = 0;         // fetches finished
  bool fetching_ = false;               // a fetch is under way: token_ is served meanwhile
  std::atomic<std::uint64_t> fetches_{0};
};

}  // namespace imgsvc::storage
