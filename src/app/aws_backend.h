// The AWS backend's wiring: one HTTP connection pool, one credentials chain
// and one retry quota shared by the S3, DynamoDB and Secrets Manager
// adapters, with endpoints, region and credentials found the AWS SDKs' way
// (AWS_REGION, AWS_ENDPOINT_URL_S3 / _DYNAMODB / _SECRETS_MANAGER or
// AWS_ENDPOINT_URL, the default credentials chain; see aws/credentials.h),
// HTTPS_PROXY / HTTP_PROXY / NO_PROXY, and AWS_CA_BUNDLE for a CA file other
// than the system's.
#pragma once

#include <memory>
#include <string>

#include "app/config.h"
#include "aws/aws_client.h"
#include "aws/credentials.h"
#include "core/status.h"
#include "storage/aws/dynamodb_metadata_store.h"
#include "storage/aws/s3_blob_store.h"
#include "storage/aws/secrets_manager_token_source.h"

namespace imgsvc::app {

struct AwsBackend {
  std::string region;
  std::string credentials_source;  // "environment", "profile:NAME", ... (never the keys)
  std::shared_ptr<net::HttpClient> http;
  net::Endpoint dynamodb;  // where the metadata store's calls go
  std::shared_ptr<aws::AwsClient> client;
  std::unique_ptr<storage::S3BlobStore> blobs;
  std::unique_ptr<storage::DynamoDbMetadataStore> records;
  std::unique_ptr<storage::SecretsManagerTokenSource> secret;
};

// Builds the adapters; makes no AWS call except what the credentials chain
// needs (container or instance metadata).
StatusOr<AwsBackend> OpenAwsBackend(const Config& config, const aws::Environment& env);

// The endpoint of a service: AWS_ENDPOINT_URL_<SERVICE>, else
// AWS_ENDPOINT_URL, else the public regional endpoint (https).
// `env_suffix` is "S3", "DYNAMODB" or "SECRETS_MANAGER"; `host_prefix` the
// endpoint's first label ("s3", "dynamodb", "secretsmanager").
StatusOr<net::Endpoint> ServiceEndpoint(const aws::Environment& env, const std::string& env_suffix,
                                        const std::string& host_prefix, const std::string& region);

}  // namespace imgsvc::app
