#include "storage/aws/secrets_manager_token_source.h"

#include <boost/json.hpp>

#include "core/blocking.h"
#include "core/log.h"

namespace imgsvc::storage {
namespace {

constexpr std::string_view kJsonVersion = "1.1";

std::string_view TrimAsciiWhitespace(std::string_view text) {
  constexpr std::string_view kWhitespace = " \t\r\n\f\v";
  const std::size_t first = text.find_first_not_of(kWhitespace);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kWhitespace) - first + 1);
}

Status Refused(std::string_view why) {
  return Status(Code::kInternal, "SecretString " + std::string(why));
}

// An answer that says nothing about the secret itself: what we hold is still
// the best knowledge there is.
bool IsOutage(const Status& status) {
  return status.code() == Code::kUnavailable || status.code() == Code::kDeadlineExceeded;
}

}  // namespace

StatusOr<std::string> TokenFromSecretString(std::string_view secret_string) {
  const std::string_view text = TrimAsciiWhitespace(secret_string);
  if (text.empty()) return Refused("is empty");
  if (text.front() != '{') return std::string(text);

  // Text that looks like JSON but is malformed is an operator's mistake;
  // taking it as a bare token would fail every key without saying why.
  boost::system::error_code error;
  const boost::json::value parsed = boost::json::parse(text, error);
  if (error || !parsed.is_object()) return Refused("starts with '{' but is not a JSON object");
  const boost::json::object& object = parsed.get_object();

  const boost::json::value* field = object.if_contains("api_token");
  if (field == nullptr) field = object.if_contains("token");
  if (field == nullptr) {
    if (object.size() != 1) {
      return Refused("is a JSON object without an \"api_token\" or \"token\" field and not of one field");
    }
    field = &object.begin()->value();
  }
  if (!field->is_string()) return Refused("holds a token field that is not a JSON string");
  if (field->get_string().empty()) return Refused("holds an empty token");
  return std::string(field->get_string());
}

SecretsManagerTokenSource::SecretsManagerTokenSource(std::shared_ptr<aws::AwsClient> client,
                                                     aws::ServiceTarget target, std::string secret_id,
                                                     std::chrono::seconds cache_ttl,
                                                     std::shared_ptr<core::Clock> clock)
    : client_(std::move(client)),
      target_(std::move(target)),
      secret_id_(std::move(secret_id)),
      cache_ttl_(std::chrono::duration_cast<std::chrono::microseconds>(cache_ttl).count()),
      clock_(std::move(clock)) {}

StatusOr<std::string> SecretsManagerTokenSource::Current() {
  std::uint64_t seen = 0;
  {
    std::lock_guard lock(mutex_);
    const core::Micros now = clock_->Now();
    if (token_ && (now - fetched_at_ < cache_ttl_ || now < outage_until_ || fetching_)) return *token_;
    seen = completed_;
  }
  return core::RunBlocking([&]() -> StatusOr<std::string> {
    std::lock_guard fetching(fetch_mutex_);
    {
      std::lock_guard lock(mutex_);
      // A fetch ended while we waited: it is as fresh as ours would be.
      if (completed_ != seen) {
        if (token_) return *token_;
        return *last_failure_;
      }
    }
    return FetchAndRemember();
  });
}

StatusOr<std::string> SecretsManagerTokenSource::Refresh() {
  return core::RunBlocking([&]() -> StatusOr<std::string> {
    std::lock_guard fetching(fetch_mutex_);
    {
      std::lock_guard lock(mutex_);
      if (token_ && clock_->Now() < outage_until_) return *token_;
    }
    return FetchAndRemember();
  });
}

Status SecretsManagerTokenSource::CheckReady() { return Current().status(); }

void SecretsManagerTokenSource::Prefetch() {
  std::lock_guard fetching(fetch_mutex_);
  if (prefetched_) return;
  prefetched_at_ = clock_->Now();
  prefetched_ = client_->BeginJson(target_, "secretsmanager.GetSecretValue", kJsonVersion, GetSecretValueRequest());
}

std::string SecretsManagerTokenSource::GetSecretValueRequest() const {
  return boost::json::serialize(boost::json::object{{"SecretId", secret_id_}});
}

StatusOr<std::string> SecretsManagerTokenSource::FetchAndRemember() {
  {
    std::lock_guard lock(mutex_);
    fetching_ = true;
  }
  Fetched fetched = Fetch();
  std::lock_guard lock(mutex_);
  fetching_ = false;
  const core::Micros now = clock_->Now();
  ++completed_;
  if (fetched.token.ok()) {
    token_ = *fetched.token;
    fetched_at_ = fetched.asked_at;
    outage_until_ = 0;
    last_failure_.reset();
    return fetched.token;
  }
  const Status& failure = fetched.token.status();
  last_failure_ = failure;
  if (fetched.outage && token_) {
    outage_until_ = now + std::chrono::duration_cast<std::chrono::microseconds>(kOutageRetryDelay).count();
    log::Warn("secret fetch failed; serving the cached value",
              {{"secret", secret_id_},
               {"error", failure.ToString()},
               {"retry_in_s", static_cast<std::int64_t>(kOutageRetryDelay.count())}});
    return *token_;
  }
  if (token_) {
    log::Warn("secret unusable; cached value dropped", {{"secret", secret_id_}, {"error", failure.ToString()}});
    token_.reset();
  }
  return failure;
}

SecretsManagerTokenSource::Fetched SecretsManagerTokenSource::Fetch() {
  ++fetches_;
  // The dependency and operation lead, before the first ':', as in every
  // store's errors: a 503's detail names them and not the secret.
  const std::string operation = "Secrets Manager GetSecretValue: secret " + secret_id_;
  const core::Micros asked_at = prefetched_ ? prefetched_at_ : clock_->Now();
  StatusOr<aws::AwsResponse> answer = [&] {
    if (!prefetched_) {
      return client_->CallJson(target_, "secretsmanager.GetSecretValue", kJsonVersion, GetSecretValueRequest());
    }
    aws::AwsClient::PendingCall pending = std::move(*prefetched_);
    prefetched_.reset();
    return client_->Finish(std::move(pending));
  }();
  if (!answer.ok()) {
    const Status failure = answer.status().WithContext(operation);
    return {failure, IsOutage(failure), asked_at};
  }
  if (answer->ok()) return {TokenFromAnswer(answer->body), false, asked_at};
  if (answer->error.code == "ResourceNotFoundException") {
    return {Status(Code::kUnavailable, operation + " not found"), false, asked_at};
  }
  const Status failure = aws::ToStatus(operation, *answer);
  return {failure, IsOutage(failure), asked_at};
}

StatusOr<std::string> SecretsManagerTokenSource::TokenFromAnswer(std::string_view body) const {
  boost::system::error_code error;
  const boost::json::value parsed = boost::json::parse(body, error);
  if (error || !parsed.is_object()) {
    return Status(Code::kInternal, "Secrets Manager GetSecretValue: secret " + secret_id_ + ": unreadable answer");
  }
  const boost::json::object& object = parsed.get_object();
  if (const boost::json::value* text = object.if_contains("SecretString"); text != nullptr && text->is_string()) {
    StatusOr<std::string> token = TokenFromSecretString(text->get_string());
    if (!token.ok()) return token.status().WithContext("Secrets Manager GetSecretValue: secret " + secret_id_);
    return token;
  }
  if (object.contains("SecretBinary")) {
    return Status(Code::kInternal,
                  "Secrets Manager GetSecretValue: secret " + secret_id_ + " holds a SecretBinary; a SecretString is needed");
  }
  return Status(Code::kInternal, "Secrets Manager GetSecretValue: secret " + secret_id_ + ": answer without a SecretString");
}

StatusOr<bool> SecretsManagerTokenSource::CreateIfMissing(const std::string& value) {
  // Outside the SDKs, the caller names the initial version itself.
  const boost::json::object request{{"Name", secret_id_},
                                    {"SecretString", value},
                                    {"ClientRequestToken", core::RandomIdGenerator().NewId()}};
  IMGSVC_ASSIGN_OR_RETURN(const aws::AwsResponse answer,
                          client_->CallJson(target_, "secretsmanager.CreateSecret", kJsonVersion,
                                            boost::json::serialize(request)));
  if (answer.ok()) {
    log::Info("secret created", {{"secret", secret_id_}});
    return true;
  }
  if (answer.error.code == "ResourceExistsException") return false;
  return aws::ToStatus("Secrets Manager CreateSecret " + secret_id_, answer);
}

}  // namespace imgsvc::storage
