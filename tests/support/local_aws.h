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
#pragma once

#include <string>

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
};

// Starts the peers on first use (later calls return the same endpoints).
StatusOr<LocalAws> StartLocalAws();

}  // namespace imgsvc::testing
