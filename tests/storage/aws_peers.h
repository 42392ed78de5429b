// What the AWS store tests share: one AwsClient signing with the local
// peers' credentials, and where each service is (tests/support/local_aws.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "aws/aws_client.h"
#include "net/http_client.h"

namespace imgsvc::storage::testing {

struct AwsPeers {
  std::shared_ptr<net::HttpClient> http;
  std::shared_ptr<aws::AwsClient> client;
  aws::ServiceTarget s3;              // through the SigV4-verifying front
  aws::ServiceTarget dynamodb;        // through the SigV4-verifying front
  aws::ServiceTarget secretsmanager;  // the stand-in
  net::Endpoint dynamodb_direct;      // dynalite itself (for fault-injecting proxies)
};

// Starts the peers once per process. nullptr, with a test failure recorded,
// when they cannot start.
const AwsPeers* Peers();

// A name no other test of this run uses (prefix, pid, counter), valid as an
// S3 bucket, a DynamoDB table and a secret name: lower case, digits and '-'.
std::string UniqueName(std::string_view prefix);

}  // namespace imgsvc::storage::testing
