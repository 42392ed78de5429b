// The commands of the imgsvc binary, each returning a process exit code.
#pragma once

#include <string>

#include "app/config.h"

namespace imgsvc::app {

// `imgsvc serve`: the standalone HTTP server until SIGTERM/SIGINT.
int Serve(const Config& config);
// `imgsvc init`: creates the S3 bucket, the DynamoDB table (with its index)
// and the Secrets Manager secret where missing; safe to run again.
int Init(const Config& config);
// Started by Lambda (AWS_LAMBDA_RUNTIME_API set): the custom runtime's loop.
// `settings` is how reading them from the environment went; a failure is
// reported to Lambda as an init error.
int RunLambdaRuntime(const Config& config, const std::string& runtime_api, const Status& settings);
// `imgsvc invoke --event FILE`: one Lambda event through the same code; prints
// the Lambda response JSON.
int InvokeEvent(const Config& config, const std::string& event_file);
// `imgsvc token USER`: prints USER's per-user token from the master key.
int PrintUserToken(const Config& config, const std::string& user_id);

// The documented local token, accepted only while bound to loopback.
inline constexpr const char* kLocalDefaultToken = "6f0ced3f-5028-4b1c-8294-3d894c48c645";

}  // namespace imgsvc::app
