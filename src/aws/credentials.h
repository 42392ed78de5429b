// Where AWS credentials and the region come from, in the AWS SDKs' order and
// with their variable names:
//  1. environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN;
//  2. shared files: ~/.aws/credentials and ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE,
//     AWS_CONFIG_FILE), profile AWS_PROFILE or "default";
//  3. container credentials (ECS, EKS Pod Identity, Lambda SnapStart): AWS_CONTAINER_CREDENTIALS_FULL_URI /
//     _RELATIVE_URI with AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE];
//  4. EC2 instance metadata (IMDSv2 token first), unless AWS_EC2_METADATA_DISABLED=true.
// Temporary credentials are refreshed before they expire. Region:
// AWS_REGION, AWS_DEFAULT_REGION, then the profile's `region`.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "aws/sigv4.h"
#include "core/status.h"

namespace imgsvc::net {
class HttpClient;
}

namespace imgsvc::aws {

class CredentialsProvider {
 public:
  virtual ~CredentialsProvider() = default;
  // Current credentials; kUnavailable when none can be had. Cached and
  // refreshed by the provider; callers may ask on every request.
  virtual StatusOr<Credentials> Get() = 0;
  // A short name for logs: "environment", "profile:NAME", "container", "imds", "static".
  virtual std::string Source() const = 0;
};

class StaticCredentialsProvider final : public CredentialsProvider {
 public:
  explicit StaticCredentialsProvider(Credentials credentials) : credentials_(std::move(credentials)) {}
  StatusOr<Credentials> Get() override { return credentials_; }
  std::string Source() const override { return "static"; }

 private:
  Credentials credentials_;
};

// Reads a variable; tests inject their own environment.
using Environment = std::function<std::optional<std::string>(const std::string& name)>;
Environment ProcessEnvironment();

// The profile name in force: AWS_PROFILE or "default".
std::string ProfileName(const Environment& env);

// The region, or kUnavailable naming the variables to set.
StatusOr<std::string> ResolveRegion(const Environment& env);

// The SDKs' default chain (above). `http` is used for the container and
// instance metadata endpoints; the first source that has credentials wins,
// and it is remembered.
StatusOr<std::shared_ptr<CredentialsProvider>> DefaultCredentialsChain(
    const Environment& env, std::shared_ptr<net::HttpClient> http);

}  // namespace imgsvc::aws
