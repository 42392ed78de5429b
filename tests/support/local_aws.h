// The local AWS peers every AWS test runs against, started once per test
// process by `node tests/support/local_aws.mjs` and stopped at exit:
//  - s3rver (S3) and dynalite (DynamoDB), the pinned npm emulators;
//  - a Secrets Manager stand-in speaking AWS's documented JSON protocol;
//  - in front of each, a proxy that verifies the SigV4 signature of every
//    request (headers or presigned query) with the AWS SDK for JavaScript's
//    own signer and answers as AWS does when it does not match (S3: 403
//    SignatureDoesNotMatch; the JSON services: 400 InvalidSignatureException),
//    so our signer is checked against an independent implementation on every
//    call.
// Everything listens on 127.0.0.1 ports chosen by the kernel. The script also
// exits by itself when the test process dies, so no peer outlives a crash.
//
// For fault tests, the fronts can be told (through a control port no AWS
// request reaches) to answer the next requests with a throttling or 5xx error
// or a dropped connection, to stop listening and listen again on the same
// port, and to report how many requests of each operation they saw.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace imgsvc::testing {

inline constexpr char kLocalAwsAccessKeyId[] = "test";
inline constexpr char kLocalAwsSecretAccessKey[] = "test-secret";
inline constexpr char kLocalAwsRegion[] = "us-east-1";

// Base URLs ("http://127.0.0.1:PORT").
struct LocalAws {
  std::string s3;              // S3 through the verifying front
  std::string dynamodb;        // DynamoDB through the verifying front
  std::string secretsmanager;  // the stand-in (verifies signatures itself)
  std::string s3_direct;       // s3rver itself, unverified
  std::string dynamodb_direct; // dynalite itself, unverified
  std::string control;         // fault injection and counts (below)
};

// Starts the peers on first use (later calls return the same endpoints).
StatusOr<LocalAws> StartLocalAws();

// What an injected fault answers, as the real service would:
//  - kThrottle: S3 503 SlowDown; DynamoDB 400
//    ProvisionedThroughputExceededException; Secrets Manager 400
//    ThrottlingException;
//  - kError500: 500 InternalError (S3) / InternalServerError (DynamoDB) /
//    InternalServiceError (Secrets Manager);
//  - kClose: the connection is dropped without an answer.
// kClose drops the connection unanswered, the request unseen by the
// emulator; kLoseAnswer (DynamoDB only) lets the emulator act on the request
// and then drops the connection, as when an answer is lost in transit;
// kHold (DynamoDB only) keeps the request, unanswered, until ReleaseHeld,
// as a slow call does.
enum class AwsFault { kThrottle, kError500, kClose, kLoseAnswer, kHold };

// The functions below act on the peers StartLocalAws() runs (starting them if
// needed). `service` is "s3", "dynamodb" or "secretsmanager"; `operation` is
// AWS's name for it ("PutItem", "PutObject", "UploadPart", "DeleteObjects",
// "GetSecretValue", ...), empty for every operation of the service.

// After letting `after` through, the next `count` requests of `operation`
// that pass the signature check get `fault` instead of the emulator's answer
// (queued behind the faults already pending for that operation).
Status InjectFault(std::string_view service, AwsFault fault, int count, std::string_view operation = "",
                   int after = 0);
// The service's front stops listening and drops its open connections, so
// connecting is refused, until StartService (the same port again).
Status StopService(std::string_view service);
Status StartService(std::string_view service);
// The DynamoDB requests held by kHold go on to the emulator.
Status ReleaseHeld();
// Drops pending faults, releases held requests, zeroes the counts and restarts stopped services, so a
// failed test leaves nothing behind for the next one.
Status ResetFaults();
// Requests the service's front received for `operation` since the last reset
// (including failed and faulted ones, each stale-connection replay too).
StatusOr<int> RequestCount(std::string_view service, std::string_view operation = "");

// The keys under `prefix` in `bucket`, read from s3rver directly (neither
// counted nor subject to faults). Refuses a listing of more than 1000 keys.
StatusOr<std::vector<std::string>> ListObjectKeys(std::string_view bucket, std::string_view prefix);

}  // namespace imgsvc::testing
