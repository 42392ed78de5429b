#include "http/query.h"

#include <gtest/gtest.h>

namespace imgsvc::http {
namespace {

TEST(QueryParams, DecodesPercentAndPlus) {
  QueryParams p("tags=a%2Cb+c&user_id=al%40ice");
  EXPECT_EQ(p.Get("tags"), "a,b c");
  EXPECT_EQ(p.Get("user_id"), "al@ice");
}

TEST(QueryParams, LastValueWinsAndMissingIsNullopt) {
  QueryParams p("limit=1&limit=5&flag&=x&&");
  EXPECT_EQ(p.Get("limit"), "5");
  EXPECT_EQ(p.Get("flag"), "");
  EXPECT_FALSE(p.Get("other").has_value());
}

TEST(QueryParams, DecodesNames) {
  QueryParams p("created%5Ffrom=2026-01-01");
  EXPECT_EQ(p.Get("created_from"), "2026-01-01");
}

TEST(PercentDecode, KeepsMalformedEscapesLiterally) {
  EXPECT_EQ(PercentDecode("100%", true), "100%");
  EXPECT_EQ(PercentDecode("%zz%4", true), "%zz%4");
  EXPECT_EQ(PercentDecode("a+b", false), "a+b");
  EXPECT_EQ(PercentDecode("%41%62", false), "Ab");
}

}  // namespace
}  // namespace imgsvc::http
