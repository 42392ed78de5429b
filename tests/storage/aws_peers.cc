#include "storage/aws_peers.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <optional>

#include "aws/credentials.h"
#include "support/local_aws.h"

namespace imgsvc::storage::testing {
namespace aws_peers_detail {

StatusOr<aws::ServiceTarget> TargetFor(const std::string& url, std::string service) {
  IMGSVC_ASSIGN_OR_RETURN(net::Endpoint endpoint, net::Endpoint::Parse(url));
  return aws::ServiceTarget{std::move(endpoint), imgsvc::testing::kLocalAwsRegion, std::move(service)};
}

StatusOr<AwsPeers> Build() {
  IMGSVC_ASSIGN_OR_RETURN(imgsvc::testing::LocalAws local, imgsvc::testing::StartLocalAws());
  AwsPeers peers;
  peers.http = std::make_shared<net::HttpClient>();
  peers.client = std::make_shared<aws::AwsClient>(
      peers.http, std::make_shared<aws::StaticCredentialsProvider>(
                      aws::Credentials{imgsvc::testing::kLocalAwsAccessKeyId,
                                       imgsvc::testing::kLocalAwsSecretAccessKey, "", std::nullopt}));
  IMGSVC_ASSIGN_OR_RETURN(peers.s3, TargetFor(local.s3, "s3"));
  IMGSVC_ASSIGN_OR_RETURN(peers.dynamodb, TargetFor(local.dynamodb, "dynamodb"));
  IMGSVC_ASSIGN_OR_RETURN(peers.secretsmanager, TargetFor(local.secretsmanager, "secretsmanager"));
  IMGSVC_ASSIGN_OR_RETURN(peers.dynamodb_direct, net::Endpoint::Parse(local.dynamodb_direct));
  return peers;
}

}  // namespace aws_peers_detail

const AwsPeers* Peers() {
  static const StatusOr<AwsPeers> peers = aws_peers_detail::Build();
  if (!peers.ok()) {
    ADD_FAILURE() << "local AWS peers: " << peers.status().ToString();
    return nullptr;
  }
  return &*peers;
}

std::string UniqueName(std::string_view prefix) {
  static std::atomic<int> next{0};
  return std::string(prefix) + "-" + std::to_string(::getpid()) + "-" + std::to_string(next++);
}

}  // namespace imgsvc::storage::testing
