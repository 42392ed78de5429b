#include "app/aws_backend.h"

#include <chrono>

#include "core/ports.h"
#include "net/http_client.h"

namespace imgsvc::app {

StatusOr<net::Endpoint> ServiceEndpoint(const aws::Environment& env, const std::string& env_suffix,
                                        const std::string& host_prefix, const std::string& region) {
  for (const std::string& name : {"AWS_ENDPOINT_URL_" + env_suffix, std::string("AWS_ENDPOINT_URL")}) {
    if (auto url = env(name); url && !url->empty()) {
      auto endpoint = net::Endpoint::Parse(*url);
      if (!endpoint.ok()) return endpoint.status().WithContext(name);
      return endpoint;
    }
  }
  return net::Endpoint{"https", host_prefix + "." + region + ".amazonaws.com", 443};
}

StatusOr<AwsBackend> OpenAwsBackend(const Config& config, const aws::Environment& env) {
  AwsBackend backend;
  IMGSVC_ASSIGN_OR_RETURN(backend.region, aws::ResolveRegion(env));
  net::HttpClientOptions http_options = net::ProxyOptionsFromEnvironment(env);
  http_options.ca_file = env("AWS_CA_BUNDLE").value_or("");
  // Every worker, and every fiber of either lane (serve.cc), may be in an
  // AWS call at once; fewer idle slots than that would close and reopen
  // connections at steady state.
  int calls_at_once = config.workers;
  if (config.aws_requests == "fibers") calls_at_once += 2 * config.aws_concurrency;
  http_options.max_idle_per_endpoint = static_cast<std::size_t>(calls_at_once);
  backend.http = std::make_shared<net::HttpClient>(std::move(http_options));
  // The container and instance metadata endpoints are link-local: never
  // through HTTPS_PROXY/HTTP_PROXY, whatever NO_PROXY says.
  IMGSVC_ASSIGN_OR_RETURN(std::shared_ptr<aws::CredentialsProvider> credentials,
                          aws::DefaultCredentialsChain(env, std::make_shared<net::HttpClient>()));
  backend.credentials_source = credentials->Source();
  backend.client = std::make_shared<aws::AwsClient>(backend.http, std::move(credentials));

  IMGSVC_ASSIGN_OR_RETURN(net::Endpoint s3, ServiceEndpoint(env, "S3", "s3", backend.region));
  IMGSVC_ASSIGN_OR_RETURN(backend.dynamodb, ServiceEndpoint(env, "DYNAMODB", "dynamodb", backend.region));
  IMGSVC_ASSIGN_OR_RETURN(net::Endpoint secrets,
                          ServiceEndpoint(env, "SECRETS_MANAGER", "secretsmanager", backend.region));

  storage::S3Options s3_options;
  s3_options.bucket = config.bucket;
  IMGSVC_ASSIGN_OR_RETURN(s3_options.addressing, storage::ParseS3Addressing(config.s3_addressing));
  if (!config.s3_public_endpoint.empty()) {
    auto public_endpoint = net::Endpoint::Parse(config.s3_public_endpoint);
    if (!public_endpoint.ok()) return public_endpoint.status().WithContext("--s3-public-endpoint");
    s3_options.public_endpoint = *public_endpoint;
  }
  backend.blobs = std::make_unique<storage::S3BlobStore>(
      backend.client, aws::ServiceTarget{std::move(s3), backend.region, "s3"}, std::move(s3_options));
  backend.records = std::make_unique<storage::DynamoDbMetadataStore>(
      backend.client, aws::ServiceTarget{backend.dynamodb, backend.region, "dynamodb"}, config.table);
  backend.secret = std::make_unique<storage::SecretsManagerTokenSource>(
      backend.client, aws::ServiceTarget{std::move(secrets), backend.region, "secretsmanager"},
      config.token_secret, std::chrono::seconds(config.token_cache_ttl),
      std::make_shared<core::MonotonicWallClock>());
  return backend;
}

}  // namespace imgsvc::app
