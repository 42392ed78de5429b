#include "core/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>

namespace imgsvc {
namespace {

TEST(StatusTest, DefaultIsOk) {
  const Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.code(), Code::kOk);
  EXPECT_EQ(ok.ToString(), "ok");
  EXPECT_TRUE(Status::Ok().ok());
}

TEST(StatusTest, EveryCodeMapsToItsHttpStatusAndAUniqueName) {
  const std::pair<Code, int> expected[] = {
      {Code::kOk, 200},
      {Code::kBadRequest, 400},
      {Code::kUnauthenticated, 401},
      {Code::kForbidden, 403},
      {Code::kNotFound, 404},
      {Code::kConflict, 409},
      {Code::kRequestTimeout, 408},
      {Code::kPayloadTooLarge, 413},
      {Code::kRangeNotSatisfiable, 416},
      {Code::kUnsupportedMediaType, 415},
      {Code::kUnprocessable, 422},
      {Code::kHeadersTooLarge, 431},
      {Code::kTooManyRequests, 429},
      {Code::kInternal, 500},
      {Code::kUnavailable, 503},
      {Code::kDeadlineExceeded, 504},
  };
  std::set<std::string> names;
  for (const auto& [code, http] : expected) {
    EXPECT_EQ(HttpStatusOf(code), http) << CodeName(code);
    names.insert(CodeName(code));
  }
  EXPECT_EQ(names.size(), std::size(expected));
  EXPECT_STREQ(CodeName(Code::kNotFound), "not_found");
  EXPECT_STREQ(CodeName(Code::kUnavailable), "unavailable");
}

TEST(StatusTest, CarriesCodeMessageAndRetryAfter) {
  Status s(Code::kUnavailable, "store down");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "store down");
  EXPECT_EQ(s.retry_after(), std::nullopt);
  s.set_retry_after(3);
  EXPECT_EQ(s.retry_after(), 3);
  EXPECT_EQ(Status(Code::kTooManyRequests, "slow down").set_retry_after(7).retry_after(), 7);
  EXPECT_EQ(s.ToString(), "unavailable: store down");
}

TEST(StatusTest, InvalidCarriesFieldErrorsAndSummarisesThem) {
  const Status s = Status::Invalid({FieldError{{"query", "limit"}, "Input should be less than or equal to 100",
                                               "less_than_equal"},
                                    FieldError{{"body", "image_ids", 3}, "Input should be a valid UUID",
                                               "uuid_parsing"}});
  EXPECT_EQ(s.code(), Code::kUnprocessable);
  ASSERT_EQ(s.field_errors().size(), 2u);
  EXPECT_EQ(s.field_errors()[1].loc, (std::vector<std::variant<std::string, int>>{"body", "image_ids", 3}));
  EXPECT_EQ(s.message(),
            "query.limit: Input should be less than or equal to 100; body.image_ids.3: Input should be a valid UUID");
  const Status single = Status::Invalid(FieldError{{"body", "user_id"}, "Field required", "missing"});
  EXPECT_EQ(single.field_errors().size(), 1u);
  EXPECT_EQ(single.message(), "body.user_id: Field required");
}

TEST(StatusTest, WithContextKeepsCodeAndDetails) {
  const Status base = Status::Invalid(FieldError{{"body", "tags"}, "too many", "too_long"});
  const Status wrapped = base.WithContext("upload");
  EXPECT_EQ(wrapped.code(), Code::kUnprocessable);
  EXPECT_EQ(wrapped.message(), "upload: " + base.message());
  EXPECT_EQ(wrapped.field_errors(), base.field_errors());
  Status retry = Status(Code::kUnavailable, "x").set_retry_after(2);
  EXPECT_EQ(retry.WithContext("s3").retry_after(), 2);
}

TEST(StatusTest, ACopyOwnsItsDetails) {
  Status original(Code::kUnavailable, "store down");
  Status copy = original;
  copy.set_retry_after(5);
  copy = copy.WithContext("s3");
  EXPECT_EQ(original.retry_after(), std::nullopt);
  EXPECT_EQ(original.message(), "store down");
  EXPECT_EQ(copy.message(), "s3: store down");
  EXPECT_EQ(copy.retry_after(), 5);

  Status assigned;
  assigned = original;
  original = Status::Ok();
  EXPECT_EQ(assigned.code(), Code::kUnavailable);
  EXPECT_EQ(assigned.message(), "store down");
  EXPECT_TRUE(original.ok());
  EXPECT_EQ(original.message(), "");
  EXPECT_TRUE(original.field_errors().empty());
}

// Every call returns a Status: an OK one is a code and a null pointer, so
// returning it costs no memory access (it was 80 bytes with a string, a
// vector and an optional inline).
TEST(StatusTest, AnOkStatusIsTwoWords) {
  EXPECT_LE(sizeof(Status), 2 * sizeof(void*));
}

TEST(StatusOrTest, HoldsAValueOrAnError) {
  StatusOr<std::string> value(std::string("hello"));
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, "hello");
  EXPECT_EQ(value->size(), 5u);
  EXPECT_TRUE(value.status().ok());

  StatusOr<std::string> error(Status(Code::kNotFound, "Image not found"));
  EXPECT_FALSE(error.ok());
  EXPECT_EQ(error.status().code(), Code::kNotFound);

  StatusOr<std::unique_ptr<int>> move_only(std::make_unique<int>(7));
  std::unique_ptr<int> taken = std::move(move_only).value();
  EXPECT_EQ(*taken, 7);
}

Status FailIf(bool fail) { return fail ? Status(Code::kConflict, "exists") : Status::Ok(); }
StatusOr<int> Half(int n) {
  if (n % 2 != 0) return Status(Code::kBadRequest, "odd");
  return n / 2;
}

Status Chain(bool fail, int& reached) {
  IMGSVC_RETURN_IF_ERROR(FailIf(fail));
  reached = 1;
  return Status::Ok();
}

StatusOr<int> Quarter(int n) {
  IMGSVC_ASSIGN_OR_RETURN(const int half, Half(n));
  IMGSVC_ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

TEST(StatusMacrosTest, ReturnEarlyWithTheError) {
  int reached = 0;
  EXPECT_EQ(Chain(true, reached).code(), Code::kConflict);
  EXPECT_EQ(reached, 0);
  EXPECT_TRUE(Chain(false, reached).ok());
  EXPECT_EQ(reached, 1);

  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), Code::kBadRequest);
  EXPECT_EQ(Quarter(7).status().message(), "odd");
}

}  // namespace
}  // namespace imgsvc
