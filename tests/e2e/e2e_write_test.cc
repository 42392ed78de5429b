// End-to-end: changing and deleting images — PATCH, DELETE one, bulk DELETE.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <thread>

#include "e2e_harness.h"

namespace imgsvc::e2e {
namespace {

using ::testing::ElementsAre;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAreArray;


std::vector<std::string> Strings(const boost::json::value& array) {
  std::vector<std::string> out;
  if (!array.is_array()) return out;
  for (const auto& v : array.as_array()) out.emplace_back(v.is_string() ? std::string(v.as_string()) : "?");
  return out;
}

class PatchTest : public ServerSuite {
 protected:
  HttpResponse Patch(const std::string& id, std::optional<std::string> key, std::string body) {
    return SendJson(server(), "PATCH", "/api/v1/images/" + id, std::move(key), std::move(body));
  }
};

TEST_F(PatchTest, OwnerUpdatesFieldsAndUpdatedAtMoves) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user, "private", std::string("old"), std::string("a,b"));
  const std::string id = Str(rec, "image_id");
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  HttpResponse r = Patch(id, KeyFor(user), R"({"category":"new","tags":["X"," y ","x"],"visibility":"public"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto updated = Json(r).as_object();
  EXPECT_EQ(Str(updated, "category"), "new");
  EXPECT_EQ(Strings(updated.at("tags")), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(Str(updated, "visibility"), "public");
  EXPECT_GT(Str(updated, "updated_at"), Str(updated, "created_at"));
  for (const char* same : {"image_id", "user_id", "filename", "content_type", "format", "size_bytes", "width",
                           "height", "sha256", "created_at"}) {
    EXPECT_EQ(updated.at(same), rec.at(same)) << same;
  }
  // The change is stored: now public, anyone reads it.
  HttpResponse anonymous = Get(server(), "/api/v1/images/" + id);
  ASSERT_EQ(anonymous.status, 200);
  EXPECT_EQ(Str(Json(anonymous), "category"), "new");
  EXPECT_EQ(Str(Json(anonymous), "updated_at"), Str(updated, "updated_at"));
}

TEST_F(PatchTest, PartialUpdateKeepsOtherFields) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user, "public", std::string("keep"), std::string("t1,t2"));
  HttpResponse r = Patch(Str(rec, "image_id"), KeyFor(user), R"({"tags":" A,b ,a"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto updated = Json(r);
  EXPECT_EQ(Strings(updated.as_object().at("tags")), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(Str(updated, "category"), "keep");
  EXPECT_EQ(Str(updated, "visibility"), "public");
}

TEST_F(PatchTest, NullCategoryClearsIt) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user, "private", std::string("gone"));
  HttpResponse r = Patch(Str(rec, "image_id"), KeyFor(user), R"({"category":null})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(Json(r).as_object().at("category").is_null());
  HttpResponse again = Get(server(), "/api/v1/images/" + Str(rec, "image_id"), KeyFor(user));
  EXPECT_TRUE(Json(again).as_object().at("category").is_null());
}

TEST_F(PatchTest, UnknownFieldIs422ExtraForbidden) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user);
  HttpResponse r = Patch(Str(rec, "image_id"), KeyFor(user), R"({"categroy":"typo"})");
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_THAT(ErrorLocs(r), ElementsAre("body/categroy"));
  EXPECT_THAT(ErrorTypes(r), ElementsAre("extra_forbidden"));
}

TEST_F(PatchTest, MalformedJsonIs422JsonInvalid) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user);
  for (const char* body : {R"({"category": )", "not json", "[1,2"}) {
    HttpResponse r = Patch(Str(rec, "image_id"), KeyFor(user), body);
    EXPECT_EQ(r.status, 422) << body << ": " << r.body;
    EXPECT_THAT(ErrorTypes(r), ElementsAre("json_invalid")) << body;
  }
}

TEST_F(PatchTest, ValidationFailuresAre422) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user, "private", std::string("same"));
  std::string many_tags = "[";
  for (int i = 0; i < 21; ++i) many_tags += (i ? ",\"t" : "\"t") + std::to_string(i) + "\"";
  many_tags += "]";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"category":")" + std::string(65, 'c') + "\"}", "body/category"},
      {R"({"tags":)" + many_tags + "}", "body/tags"},
      {R"({"tags":")" + std::string(65, 't') + "\"}", "body/tags"},
      {R"({"visibility":"secret"})", "body/visibility"},
      {R"({"category":5})", "body/category"},
  };
  for (const auto& [body, loc] : cases) {
    HttpResponse r = Patch(Str(rec, "image_id"), KeyFor(user), body);
    EXPECT_EQ(r.status, 422) << body << ": " << r.body;
    ASSERT_FALSE(ErrorLocs(r).empty()) << body;
    EXPECT_THAT(ErrorLocs(r)[0], StartsWith(loc)) << body;
  }
  HttpResponse unchanged = Get(server(), "/api/v1/images/" + Str(rec, "image_id"), KeyFor(user));
  EXPECT_EQ(Str(Json(unchanged), "category"), "same");
  EXPECT_EQ(Str(Json(unchanged), "updated_at"), Str(rec, "updated_at"));
}

TEST_F(PatchTest, SomeoneElsesImageIs404) {
  const std::string alice = UniqueUser("alice");
  const std::string bob = UniqueUser("bob");
  for (const char* visibility : {"private", "public"}) {
    auto rec = UploadOne(server(), alice, visibility, std::string("mine"));
    HttpResponse r = Patch(Str(rec, "image_id"), KeyFor(bob), R"({"category":"stolen"})");
    EXPECT_EQ(r.status, 404) << visibility;
    EXPECT_EQ(DetailMessage(r), "Image not found");
    HttpResponse check = Get(server(), "/api/v1/images/" + Str(rec, "image_id"), KeyFor(alice));
    EXPECT_EQ(Str(Json(check), "category"), "mine");
  }
  EXPECT_EQ(Patch(std::string(kUnknownId), KeyFor(bob), R"({"category":"x"})").status, 404);
}

TEST_F(PatchTest, MissingOrWrongKeyIs401) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user, "public");
  for (const auto& key : {std::optional<std::string>(), std::optional<std::string>(user + ":nope")}) {
    HttpResponse r = Patch(Str(rec, "image_id"), key, R"({"category":"x"})");
    EXPECT_EQ(r.status, 401);
    EXPECT_THAT(r.header("www-authenticate").value_or(""), StartsWith("ApiKey"));
  }
}

// DELETE one -------------------------------------------------------------------

class DeleteTest : public ServerSuite {};

TEST_F(DeleteTest, OwnerDeletesRecordAndBytes) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user, "public");
  const std::string id = Str(rec, "image_id");
  HttpResponse before = Get(server(), "/api/v1/images/" + id, KeyFor(user));
  const std::string url = Str(Json(before), "presigned_url");
  ASSERT_EQ(FetchUrl(url).status, 200);

  HttpResponse r = Delete(server(), "/api/v1/images/" + id, KeyFor(user));
  EXPECT_EQ(r.status, 204);
  EXPECT_TRUE(r.body.empty());
  HttpResponse gone = Get(server(), "/api/v1/images/" + id, KeyFor(user));
  EXPECT_EQ(gone.status, 404);
  EXPECT_EQ(DetailMessage(gone), "Image not found");
  EXPECT_EQ(FetchUrl(url).status, 404) << "the bytes must be gone";
  EXPECT_TRUE(ListAllIds(server(), "user_id=" + user, KeyFor(user)).empty());
  EXPECT_EQ(Delete(server(), "/api/v1/images/" + id, KeyFor(user)).status, 404);
}

TEST_F(DeleteTest, SomeoneElsesOrUnknownImageIs404) {
  const std::string alice = UniqueUser("alice");
  const std::string bob = UniqueUser("bob");
  auto rec = UploadOne(server(), alice, "public");
  HttpResponse r = Delete(server(), "/api/v1/images/" + Str(rec, "image_id"), KeyFor(bob));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(DetailMessage(r), "Image not found");
  EXPECT_EQ(Get(server(), "/api/v1/images/" + Str(rec, "image_id")).status, 200);
  EXPECT_EQ(Delete(server(), "/api/v1/images/" + std::string(kUnknownId), KeyFor(bob)).status, 404);
}

TEST_F(DeleteTest, NeedsAValidKeyAndAUuid) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user);
  HttpResponse none = Delete(server(), "/api/v1/images/" + Str(rec, "image_id"), std::nullopt);
  EXPECT_EQ(none.status, 401);
  EXPECT_THAT(none.header("www-authenticate").value_or(""), StartsWith("ApiKey"));
  EXPECT_EQ(Delete(server(), "/api/v1/images/" + Str(rec, "image_id"), user + ":bad").status, 401);
  HttpResponse bad_id = Delete(server(), "/api/v1/images/not-a-uuid", KeyFor(user));
  EXPECT_EQ(bad_id.status, 422);
  EXPECT_THAT(ErrorLocs(bad_id), ElementsAre("path/image_id"));
  EXPECT_EQ(Get(server(), "/api/v1/images/" + Str(rec, "image_id"), KeyFor(user)).status, 200);
}

// Bulk DELETE ------------------------------------------------------------------

class BulkDeleteTest : public ServerSuite {
 protected:
  HttpResponse BulkDelete(std::optional<std::string> key, std::string body) {
    return SendJson(server(), "DELETE", "/api/v1/images", std::move(key), std::move(body));
  }
  static std::string Body(const std::string& user, const std::vector<std::string>& ids) {
    boost::json::object body;
    body["user_id"] = user;
    boost::json::array array;
    for (const auto& id : ids) array.emplace_back(id);
    body["image_ids"] = std::move(array);
    return boost::json::serialize(body);
  }
};

TEST_F(BulkDeleteTest, DeletesOwnAndReportsTheRestNotFound) {
  const std::string alice = UniqueUser("alice");
  const std::string bob = UniqueUser("bob");
  const std::string a1 = Str(UploadOne(server(), alice, "public"), "image_id");
  const std::string a2 = Str(UploadOne(server(), alice, "private"), "image_id");
  const std::string keep = Str(UploadOne(server(), alice, "private"), "image_id");
  const std::string b1 = Str(UploadOne(server(), bob, "public"), "image_id");
  const std::string a1_url = Str(Json(Get(server(), "/api/v1/images/" + a1)), "presigned_url");
  const std::string missing(kUnknownId);

  HttpResponse r = BulkDelete(KeyFor(alice), Body(alice, {a1, b1, missing, a2}));
  ASSERT_EQ(r.status, 200) << r.body;
  auto body = Json(r).as_object();
  EXPECT_THAT(Strings(body.at("deleted")), UnorderedElementsAreArray({a1, a2}));
  EXPECT_THAT(Strings(body.at("not_found")), UnorderedElementsAreArray({b1, missing}));
  ASSERT_TRUE(body.at("failed").is_array());
  EXPECT_TRUE(body.at("failed").as_array().empty());

  EXPECT_EQ(Get(server(), "/api/v1/images/" + b1).status, 200) << "bob's image must be untouched";
  EXPECT_EQ(Get(server(), "/api/v1/images/" + a1, KeyFor(alice)).status, 404);
  EXPECT_EQ(Get(server(), "/api/v1/images/" + a2, KeyFor(alice)).status, 404);
  EXPECT_EQ(FetchUrl(a1_url).status, 404);
  EXPECT_THAT(ListAllIds(server(), "user_id=" + alice, KeyFor(alice)), ElementsAre(keep));

  HttpResponse again = BulkDelete(KeyFor(alice), Body(alice, {a1, b1, missing, a2}));
  ASSERT_EQ(again.status, 200);
  auto again_body = Json(again).as_object();
  EXPECT_TRUE(again_body.at("deleted").as_array().empty());
  EXPECT_THAT(Strings(again_body.at("not_found")), UnorderedElementsAreArray({a1, b1, missing, a2}));
}

TEST_F(BulkDeleteTest, IdCountMustBe1To100) {
  const std::string alice = UniqueUser("alice");
  HttpResponse none = BulkDelete(KeyFor(alice), Body(alice, {}));
  EXPECT_EQ(none.status, 422) << none.body;
  EXPECT_THAT(ErrorLocs(none), ElementsAre("body/image_ids"));
  std::vector<std::string> many(101, std::string(kUnknownId));
  for (std::size_t i = 0; i < many.size(); ++i) {
    const std::string digits = std::to_string(i);
    many[i] = "0b6f5c8e-6d2c-4c55-9a37-" + std::string(12 - digits.size(), '0') + digits;
  }
  HttpResponse too_many = BulkDelete(KeyFor(alice), Body(alice, many));
  EXPECT_EQ(too_many.status, 422) << too_many.body;
  EXPECT_THAT(ErrorLocs(too_many), ElementsAre("body/image_ids"));
  many.pop_back();
  HttpResponse hundred = BulkDelete(KeyFor(alice), Body(alice, many));
  EXPECT_EQ(hundred.status, 200) << hundred.body;
  EXPECT_EQ(Json(hundred).as_object().at("not_found").as_array().size(), 100u);
}

TEST_F(BulkDeleteTest, InvalidUuidIs422) {
  const std::string alice = UniqueUser("alice");
  const std::string a1 = Str(UploadOne(server(), alice), "image_id");
  HttpResponse r = BulkDelete(KeyFor(alice), Body(alice, {a1, "not-a-uuid"}));
  EXPECT_EQ(r.status, 422) << r.body;
  ASSERT_FALSE(ErrorLocs(r).empty());
  EXPECT_THAT(ErrorLocs(r)[0], StartsWith("body/image_ids"));
  EXPECT_EQ(Get(server(), "/api/v1/images/" + a1, KeyFor(alice)).status, 200) << "nothing deleted";
}

TEST_F(BulkDeleteTest, KeyOfAnotherUserIs403) {
  const std::string alice = UniqueUser("alice");
  const std::string a1 = Str(UploadOne(server(), alice), "image_id");
  HttpResponse r = BulkDelete(KeyFor(UniqueUser("bob")), Body(alice, {a1}));
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_FALSE(DetailMessage(r).empty());
  EXPECT_EQ(Get(server(), "/api/v1/images/" + a1, KeyFor(alice)).status, 200);
}

TEST_F(BulkDeleteTest, MissingOrWrongKeyIs401) {
  const std::string alice = UniqueUser("alice");
  const std::string a1 = Str(UploadOne(server(), alice), "image_id");
  for (const auto& key : {std::optional<std::string>(), std::optional<std::string>(alice + ":nope"),
                          std::optional<std::string>(alice)}) {
    HttpResponse r = BulkDelete(key, Body(alice, {a1}));
    EXPECT_EQ(r.status, 401);
    EXPECT_THAT(r.header("www-authenticate").value_or(""), StartsWith("ApiKey"));
  }
  EXPECT_EQ(Get(server(), "/api/v1/images/" + a1, KeyFor(alice)).status, 200);
}

TEST_F(BulkDeleteTest, UnknownFieldOrBadJsonIs422) {
  const std::string alice = UniqueUser("alice");
  const std::string a1 = Str(UploadOne(server(), alice), "image_id");
  HttpResponse extra = BulkDelete(KeyFor(alice), R"({"user_id":")" + alice + R"(","image_ids":[")" + a1 +
                                                     R"("],"force":true})");
  EXPECT_EQ(extra.status, 422) << extra.body;
  EXPECT_THAT(ErrorLocs(extra), ElementsAre("body/force"));
  EXPECT_THAT(ErrorTypes(extra), ElementsAre("extra_forbidden"));
  HttpResponse broken = BulkDelete(KeyFor(alice), R"({"user_id":)");
  EXPECT_EQ(broken.status, 422);
  EXPECT_THAT(ErrorTypes(broken), ElementsAre("json_invalid"));
  HttpResponse no_user = BulkDelete(KeyFor(alice), R"({"image_ids":[")" + a1 + R"("]})");
  EXPECT_EQ(no_user.status, 422);
  EXPECT_THAT(ErrorLocs(no_user), ElementsAre("body/user_id"));
  EXPECT_EQ(Get(server(), "/api/v1/images/" + a1, KeyFor(alice)).status, 200);
}

}  // namespace
}  // namespace imgsvc::e2e
