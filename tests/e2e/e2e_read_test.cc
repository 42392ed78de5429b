// End-to-end: reading images — GET one, presigned downloads, /content, and
// listing with filters, visibility rules and cursors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "e2e_harness.h"
#include "support/image_fixtures.h"

namespace imgsvc::e2e {
namespace {

using core::ImageFormat;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;


// An uploaded image and its bytes.
struct Stored {
  boost::json::object record;
  std::string bytes;
  std::string id() const { return Str(record, "image_id"); }
};

Stored UploadPng(const TestServer& server, const std::string& user, std::string_view visibility,
                 std::uint32_t w = 12, std::uint32_t h = 9) {
  Stored out;
  out.bytes = testing::MakeImage(ImageFormat::kPng, w, h, 300);
  UploadForm form;
  form.user_id = user;
  form.visibility = std::string(visibility);
  form.files.push_back({"pic.png", "image/png", out.bytes});
  HttpResponse r = Upload(server, form, KeyFor(user));
  EXPECT_EQ(r.status, 201) << r.body;
  auto body = Json(r);
  if (r.status == 201 && body.is_object()) out.record = body.as_object().at("images").as_array()[0].as_object();
  return out;
}

// Replaces the value of query parameter `name` in `url` by `edit(value)`.
std::string EditParam(const std::string& url, const std::string& name,
                      const std::function<std::string(const std::string&)>& edit) {
  for (const char sep : {'?', '&'}) {
    const std::string needle = std::string(1, sep) + name + "=";
    std::size_t at = url.find(needle);
    if (at == std::string::npos) continue;
    const std::size_t start = at + needle.size();
    const std::size_t end = std::min(url.find('&', start), url.size());
    return url.substr(0, start) + edit(url.substr(start, end - start)) + url.substr(end);
  }
  ADD_FAILURE() << "no parameter " << name << " in " << url;
  return url;
}

bool IsEmbeddedUrl(const std::string& url) { return url.find("/files/") != std::string::npos; }

class GetImageTest : public ServerSuite {
 protected:
  HttpResponse GetImage(const std::string& id, std::optional<std::string> key, std::string query = "") {
    return Get(server(), "/api/v1/images/" + id + (query.empty() ? "" : "?" + query), std::move(key));
  }
};

TEST_F(GetImageTest, OwnerSeesPrivateRecordWithPresignedUrl) {
  const std::string user = UniqueUser("alice");
  Stored img = UploadPng(server(), user, "private");
  HttpResponse r = GetImage(img.id(), KeyFor(user));
  ASSERT_EQ(r.status, 200) << r.body;
  auto body = Json(r).as_object();
  for (const auto& kv : img.record) EXPECT_EQ(body.at(kv.key()), kv.value()) << kv.key();
  const std::string url = Str(body, "presigned_url");
  EXPECT_THAT(url, StartsWith("http"));
  EXPECT_TRUE(std::regex_match(Str(body, "presigned_url_expires_at"), kTimestamp));
  // Storage layout: images/{user_id}/{image_id}.png
  EXPECT_THAT(url.substr(0, url.find('?')), EndsWith("images/" + user + "/" + img.id() + ".png"));
  if (IsEmbeddedUrl(url)) {
    EXPECT_THAT(url, StartsWith("http://127.0.0.1:" + std::to_string(server().port()) + "/files/images/"));
    EXPECT_THAT(url, HasSubstr("expires="));
    EXPECT_THAT(url, HasSubstr("signature="));
  }
}

TEST_F(GetImageTest, PresignedUrlDownloadsExactlyTheBytes) {
  const std::string user = UniqueUser("alice");
  Stored img = UploadPng(server(), user, "private");
  const std::string url = Str(Json(GetImage(img.id(), KeyFor(user))), "presigned_url");
  HttpResponse download = FetchUrl(url);
  ASSERT_EQ(download.status, 200) << download.body.substr(0, 300);
  EXPECT_EQ(download.body, img.bytes);
  EXPECT_THAT(download.header("content-type").value_or(""), StartsWith("image/png"));
  EXPECT_FALSE(download.header("etag").value_or("").empty());
  EXPECT_EQ(FetchUrl(url).header("etag"), download.header("etag")) << "etag is stable";
}

TEST_F(GetImageTest, PresignedUrlServesRanges) {
  const std::string user = UniqueUser("alice");
  Stored img = UploadPng(server(), user, "private");
  const std::string url = Str(Json(GetImage(img.id(), KeyFor(user))), "presigned_url");
  HttpResponse part = FetchUrl(url, {{"Range", "bytes=0-9"}});
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.body, img.bytes.substr(0, 10));
  EXPECT_EQ(part.header("content-range"), "bytes 0-9/" + std::to_string(img.bytes.size()));
  // Suffix ranges only where we serve the bytes ourselves: s3rver 3.7.1
  // reads "bytes=-5" as "bytes=0-5" (controllers/object.js); real S3 and
  // our /files/ route answer the last 5 bytes.
  if (!IsEmbeddedUrl(url)) return;
  HttpResponse tail = FetchUrl(url, {{"Range", "bytes=-5"}});
  EXPECT_EQ(tail.status, 206);
  EXPECT_EQ(tail.body, img.bytes.substr(img.bytes.size() - 5));
}

TEST_F(GetImageTest, TamperedPresignedUrlIs403) {
  const std::string user = UniqueUser("alice");
  Stored img = UploadPng(server(), user, "private");
  const std::string url = Str(Json(GetImage(img.id(), KeyFor(user))), "presigned_url");
  const bool embedded = IsEmbeddedUrl(url);
  const std::string sig_name = embedded ? "signature" : "X-Amz-Signature";
  auto flip_first = [](const std::string& v) { return (v.empty() || v[0] != '0' ? "0" : "1") + v.substr(1); };
  HttpResponse bad_sig = FetchUrl(EditParam(url, sig_name, flip_first));
  EXPECT_EQ(bad_sig.status, 403);
  if (embedded) {
    EXPECT_FALSE(DetailMessage(bad_sig).empty()) << bad_sig.body;
    HttpResponse later = FetchUrl(EditParam(url, "expires", [](const std::string& v) {
      return std::to_string(std::stoll(v) + 1000);
    }));
    EXPECT_EQ(later.status, 403);
    EXPECT_FALSE(DetailMessage(later).empty()) << later.body;
    // Another image's key with this signature.
    Stored other = UploadPng(server(), user, "private");
    std::string swapped = url;
    swapped.replace(swapped.find(img.id()), img.id().size(), other.id());
    EXPECT_EQ(FetchUrl(swapped).status, 403);
  }
}

TEST_F(GetImageTest, ExpiredPresignedUrlIs403) {
  const std::string user = UniqueUser("alice");
  Stored img = UploadPng(server(), user, "private");
  HttpResponse r = GetImage(img.id(), KeyFor(user), "expires_in=1");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string url = Str(Json(r), "presigned_url");
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  HttpResponse expired = FetchUrl(url);
  EXPECT_EQ(expired.status, 403);
  if (IsEmbeddedUrl(url)) {
    EXPECT_FALSE(DetailMessage(expired).empty()) << expired.body;
  }
}

TEST_F(GetImageTest, ExpiresInOutOfRangeIs422) {
  const std::string user = UniqueUser("alice");
  Stored img = UploadPng(server(), user, "private");
  for (const char* bad : {"0", "604801", "abc", "-1", "1.5", ""}) {
    HttpResponse r = GetImage(img.id(), KeyFor(user), std::string("expires_in=") + bad);
    EXPECT_EQ(r.status, 422) << bad << ": " << r.body;
    EXPECT_THAT(ErrorLocs(r), ElementsAre("query/expires_in")) << bad;
  }
  for (const char* good : {"1", "604800"}) {
    EXPECT_EQ(GetImage(img.id(), KeyFor(user), std::string("expires_in=") + good).status, 200) << good;
  }
}

TEST_F(GetImageTest, ExpiresAtIsNowPlusExpiresIn) {
  const std::string user = UniqueUser("alice");
  Stored img = UploadPng(server(), user, "private");
  for (const auto& [query, seconds] : std::vector<std::pair<std::string, std::int64_t>>{
           {"expires_in=600", 600}, {"", 3600}, {"expires_in=604800", 604800}}) {
    const auto before = NowMicros();
    HttpResponse r = GetImage(img.id(), KeyFor(user), query);
    const auto after = NowMicros();
    ASSERT_EQ(r.status, 200);
    auto expires_at = ParseMicros(Str(Json(r), "presigned_url_expires_at"));
    ASSERT_TRUE(expires_at.has_value());
    EXPECT_GE(*expires_at, before + seconds * 1'000'000 - 2'000'000) << query;
    EXPECT_LE(*expires_at, after + seconds * 1'000'000 + 1'000'000) << query;
  }
}

TEST_F(GetImageTest, PrivateImageDoesNotExistForOthers) {
  const std::string alice = UniqueUser("alice");
  const std::string bob = UniqueUser("bob");
  Stored img = UploadPng(server(), alice, "private");
  for (const auto& key : {std::optional<std::string>(KeyFor(bob)), std::optional<std::string>()}) {
    HttpResponse r = GetImage(img.id(), key);
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(Json(r), boost::json::parse(R"({"detail":"Image not found"})"));
  }
}

TEST_F(GetImageTest, PublicImageIsReadableByAnyone) {
  const std::string alice = UniqueUser("alice");
  Stored img = UploadPng(server(), alice, "public");
  for (const auto& key : {std::optional<std::string>(KeyFor(UniqueUser("bob"))), std::optional<std::string>()}) {
    HttpResponse r = GetImage(img.id(), key);
    ASSERT_EQ(r.status, 200) << r.body;
    auto body = Json(r);
    EXPECT_EQ(Str(body, "image_id"), img.id());
    EXPECT_EQ(FetchUrl(Str(body, "presigned_url")).body, img.bytes);
  }
}

TEST_F(GetImageTest, NotAUuidIs422AndUnknownIs404) {
  const std::string user = UniqueUser("alice");
  HttpResponse bad = GetImage("not-a-uuid", KeyFor(user));
  EXPECT_EQ(bad.status, 422) << bad.body;
  EXPECT_THAT(ErrorLocs(bad), ElementsAre("path/image_id"));
  HttpResponse unknown = GetImage(std::string(kUnknownId), KeyFor(user));
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(DetailMessage(unknown), "Image not found");
}

TEST_F(GetImageTest, SentButBadKeyIs401OnReads) {
  const std::string alice = UniqueUser("alice");
  Stored img = UploadPng(server(), alice, "public");
  for (const std::string& key : {alice + ":wrong-token", alice, std::string(":") + std::string(kLocalToken)}) {
    for (const std::string& target : {"/api/v1/images/" + img.id(), "/api/v1/images/" + img.id() + "/content",
                                     "/api/v1/images?user_id=" + alice, std::string("/api/v1/images")}) {
      HttpResponse r = Get(server(), target, key);
      EXPECT_EQ(r.status, 401) << target << " with " << key;
      EXPECT_THAT(r.header("www-authenticate").value_or(""), StartsWith("ApiKey"));
    }
  }
}

TEST_F(GetImageTest, ContentRedirectsToTheBytes) {
  const std::string alice = UniqueUser("alice");
  Stored pub = UploadPng(server(), alice, "public");
  Stored priv = UploadPng(server(), alice, "private");

  HttpResponse r = Get(server(), "/api/v1/images/" + pub.id() + "/content");
  ASSERT_EQ(r.status, 302);
  ASSERT_TRUE(r.header("location").has_value());
  HttpResponse followed = FetchUrl(*r.header("location"));
  EXPECT_EQ(followed.status, 200);
  EXPECT_EQ(followed.body, pub.bytes);

  HttpResponse own = Get(server(), "/api/v1/images/" + priv.id() + "/content", KeyFor(alice));
  ASSERT_EQ(own.status, 302);
  EXPECT_EQ(FetchUrl(own.header("location").value_or("")).body, priv.bytes);

  for (const auto& key : {std::optional<std::string>(KeyFor(UniqueUser("bob"))), std::optional<std::string>()}) {
    HttpResponse hidden = Get(server(), "/api/v1/images/" + priv.id() + "/content", key);
    EXPECT_EQ(hidden.status, 404);
    EXPECT_EQ(DetailMessage(hidden), "Image not found");
  }
  EXPECT_EQ(Get(server(), "/api/v1/images/" + std::string(kUnknownId) + "/content").status, 404);
}

// Listing --------------------------------------------------------------------

// Alice's seven images (uploaded in this order) and two of Bob's.
struct Seed {
  const char* visibility;
  std::optional<std::string> category;
  std::optional<std::string> tags;
};
const std::vector<Seed> kAliceSeeds = {
    {"public", "animals", "cat,cute"}, {"private", "animals", "dog"}, {"public", "food", "cake,cute"},
    {"private", std::nullopt, std::nullopt}, {"public", "animals", "cat"}, {"private", "food", "Cat, CUTE"},
    {"public", std::nullopt, "cute"},
};

class ListTest : public ServerSuite {
 public:
  static void SetUpTestSuite() {
    ServerSuite::SetUpTestSuite();
    alice_ = UniqueUser("alice");
    bob_ = UniqueUser("bob");
    alice_records_.clear();
    bob_records_.clear();
    if (!HasServer()) return;
    for (const auto& seed : kAliceSeeds) {
      alice_records_.push_back(UploadOne(server(), alice_, seed.visibility, seed.category, seed.tags));
    }
    bob_records_.push_back(UploadOne(server(), bob_, "public", std::string("animals"), std::string("cat")));
    bob_records_.push_back(UploadOne(server(), bob_, "private", std::string("animals"), std::string("cat")));
  }

 protected:
  static bool HasServer() { return ServerSuite::Running(); }
  // Alice's image ids for seed indexes, newest first.
  static std::vector<std::string> AliceIds(std::vector<int> indexes) {
    std::sort(indexes.rbegin(), indexes.rend());
    std::vector<std::string> out;
    for (int i : indexes) out.push_back(Str(alice_records_[static_cast<std::size_t>(i)], "image_id"));
    return out;
  }
  static std::vector<std::string> AllAliceIds() { return AliceIds({0, 1, 2, 3, 4, 5, 6}); }
  std::vector<std::string> ListIds(const std::string& query, std::optional<std::string> key) {
    return ListAllIds(server(), query, std::move(key));
  }
  boost::json::object Page(const std::string& query, std::optional<std::string> key) {
    HttpResponse r = Get(server(), "/api/v1/images?" + query, std::move(key));
    EXPECT_EQ(r.status, 200) << query << ": " << r.body;
    auto body = Json(r);
    return body.is_object() ? body.as_object() : boost::json::object{};
  }

  static inline std::string alice_;
  static inline std::string bob_;
  static inline std::vector<boost::json::object> alice_records_;
  static inline std::vector<boost::json::object> bob_records_;
};

TEST_F(ListTest, OwnImagesNewestFirstWithPresignedUrls) {
  auto page = Page("user_id=" + alice_ + "&limit=100", KeyFor(alice_));
  ASSERT_TRUE(page.contains("items"));
  const auto& items = page.at("items").as_array();
  std::vector<std::string> ids;
  for (const auto& item : items) {
    ids.push_back(Str(item, "image_id"));
    EXPECT_THAT(Str(item, "presigned_url"), StartsWith("http"));
    EXPECT_EQ(Str(item, "user_id"), alice_);
  }
  EXPECT_THAT(ids, ElementsAreArray(AllAliceIds()));
  EXPECT_EQ(page.at("count"), 7);
  EXPECT_TRUE(page.at("last_evaluated_key").is_null());
  // Items are whole records.
  ASSERT_FALSE(items.empty());
  const auto& newest = items[0].as_object();
  for (const auto& kv : alice_records_.back()) EXPECT_EQ(newest.at(kv.key()), kv.value()) << kv.key();
}

TEST_F(ListTest, DefaultLimitIs20) {
  const std::string user = UniqueUser("many");
  UploadForm form;
  form.user_id = user;
  for (int i = 0; i < 10; ++i) form.files.push_back({"m.png", "image/png", testing::MakeImage(ImageFormat::kPng, 1, 1)});
  ASSERT_EQ(Upload(server(), form, KeyFor(user)).status, 201);
  ASSERT_EQ(Upload(server(), form, KeyFor(user)).status, 201);
  ASSERT_EQ(Upload(server(), form, KeyFor(user)).status, 201);
  auto page = Page("user_id=" + user, KeyFor(user));
  EXPECT_EQ(page.at("count"), 20);
  EXPECT_FALSE(page.at("last_evaluated_key").is_null());
}

TEST_F(ListTest, FilterByCategory) {
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&category=animals", KeyFor(alice_)),
              ElementsAreArray(AliceIds({0, 1, 4})));
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&category=Animals", KeyFor(alice_)), ElementsAre());
}

TEST_F(ListTest, FilterByTagsNeedsAllOfThem) {
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&tags=cat,cute", KeyFor(alice_)), ElementsAreArray(AliceIds({0, 5})));
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&tags=" + UrlEncode(" CUTE , Cat,"), KeyFor(alice_)),
              ElementsAreArray(AliceIds({0, 5})));
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&tags=cute", KeyFor(alice_)), ElementsAreArray(AliceIds({0, 2, 5, 6})));
}

TEST_F(ListTest, FilterByVisibility) {
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&visibility=public", KeyFor(alice_)),
              ElementsAreArray(AliceIds({0, 2, 4, 6})));
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&visibility=private", KeyFor(alice_)),
              ElementsAreArray(AliceIds({1, 3, 5})));
  HttpResponse bad = Get(server(), "/api/v1/images?visibility=secret");
  EXPECT_EQ(bad.status, 422);
  EXPECT_THAT(ErrorLocs(bad), ElementsAre("query/visibility"));
}

TEST_F(ListTest, CreatedRangeIsInclusive) {
  const std::string from = Str(alice_records_[2], "created_at");
  const std::string to = Str(alice_records_[4], "created_at");
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&created_from=" + UrlEncode(from) + "&created_to=" + UrlEncode(to),
                      KeyFor(alice_)),
              ElementsAreArray(AliceIds({2, 3, 4})));
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&created_from=" + UrlEncode(to), KeyFor(alice_)),
              ElementsAreArray(AliceIds({4, 5, 6})));
  // Any RFC 3339 offset names the same instant.
  const std::string to_offset = to.substr(0, to.size() - 1) + "+00:00";
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&created_to=" + UrlEncode(to_offset), KeyFor(alice_)),
              ElementsAreArray(AliceIds({0, 1, 2, 3, 4})));
}

TEST_F(ListTest, DateBoundsMeanWholeUtcDays) {
  const std::string first_day = Str(alice_records_.front(), "created_at").substr(0, 10);
  const std::string last_day = Str(alice_records_.back(), "created_at").substr(0, 10);
  if (first_day != last_day) GTEST_SKIP() << "seeded across UTC midnight";
  const std::int64_t day = 86400LL * 1'000'000;
  const auto micros = *ParseMicros(first_day + "T00:00:00.000000Z");
  auto date_of = [](std::int64_t m) {
    std::time_t t = static_cast<std::time_t>(m / 1'000'000);
    char buf[16];
    std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
    return std::string(buf);
  };
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&created_from=" + first_day + "&created_to=" + first_day, KeyFor(alice_)),
              ElementsAreArray(AllAliceIds()));
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&created_to=" + date_of(micros - day), KeyFor(alice_)), ElementsAre());
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&created_from=" + date_of(micros + day), KeyFor(alice_)),
              ElementsAre());
  for (const char* bad : {"yesterday", "2026-13-01", "2026-01-01T25:00:00Z"}) {
    HttpResponse r = Get(server(), "/api/v1/images?user_id=" + alice_ + "&created_from=" + UrlEncode(bad),
                         KeyFor(alice_));
    EXPECT_EQ(r.status, 422) << bad;
    EXPECT_THAT(ErrorLocs(r), ElementsAre("query/created_from")) << bad;
  }
}

TEST_F(ListTest, LimitBounds) {
  for (const char* bad : {"0", "101", "abc", "-1"}) {
    HttpResponse r = Get(server(), std::string("/api/v1/images?limit=") + bad);
    EXPECT_EQ(r.status, 422) << bad;
    EXPECT_THAT(ErrorLocs(r), ElementsAre("query/limit")) << bad;
  }
  EXPECT_EQ(Page("user_id=" + alice_ + "&limit=1", KeyFor(alice_)).at("count"), 1);
  EXPECT_EQ(Page("user_id=" + alice_ + "&limit=100", KeyFor(alice_)).at("count"), 7);
}

TEST_F(ListTest, PagesOfTwoYieldEveryImageOnce) {
  std::vector<std::string> ids;
  std::optional<std::string> cursor;
  std::vector<std::int64_t> counts;
  for (int guard = 0; guard < 10; ++guard) {
    std::string query = "user_id=" + alice_ + "&limit=2";
    if (cursor) query += "&last_evaluated_key=" + UrlEncode(*cursor);
    auto page = Page(query, KeyFor(alice_));
    ASSERT_TRUE(page.contains("items"));
    counts.push_back(page.at("count").as_int64());
    for (const auto& item : page.at("items").as_array()) ids.push_back(Str(item, "image_id"));
    if (page.at("last_evaluated_key").is_null()) break;
    cursor = std::string(page.at("last_evaluated_key").as_string());
    EXPECT_TRUE(std::all_of(cursor->begin(), cursor->end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.' || c == '~';
    })) << "cursor is not URL-safe: " << *cursor;
  }
  EXPECT_THAT(ids, ElementsAreArray(AllAliceIds()));
  EXPECT_THAT(counts, ElementsAre(2, 2, 2, 1)) << "pages must be full";
}

TEST_F(ListTest, CursorRevealsNoIds) {
  auto page = Page("user_id=" + alice_ + "&limit=2", KeyFor(alice_));
  const std::string cursor(page.at("last_evaluated_key").as_string());
  for (const auto& rec : alice_records_) {
    const std::string id = Str(rec, "image_id");
    EXPECT_EQ(cursor.find(id), std::string::npos);
    EXPECT_EQ(cursor.find(id.substr(0, 8)), std::string::npos);
  }
  EXPECT_EQ(cursor.find(alice_), std::string::npos);
}

TEST_F(ListTest, CursorIsBoundToFiltersAndCaller) {
  const std::string base = "user_id=" + alice_ + "&limit=2";
  auto first = Page(base, KeyFor(alice_));
  ASSERT_TRUE(first.at("last_evaluated_key").is_string());
  const std::string cursor(first.at("last_evaluated_key").as_string());
  auto with = [&](const std::string& c) { return "&last_evaluated_key=" + UrlEncode(c); };

  // limit may change between pages.
  auto next = Page("user_id=" + alice_ + "&limit=3" + with(cursor), KeyFor(alice_));
  std::vector<std::string> next_ids;
  for (const auto& item : next.at("items").as_array()) next_ids.push_back(Str(item, "image_id"));
  auto all = AllAliceIds();
  EXPECT_THAT(next_ids, ElementsAre(all[2], all[3], all[4]));

  std::string flipped = cursor;
  flipped[flipped.size() / 2] = flipped[flipped.size() / 2] == 'A' ? 'B' : 'A';
  const std::vector<std::pair<std::string, std::optional<std::string>>> misuses = {
      {base + "&category=animals" + with(cursor), KeyFor(alice_)},
      {base + "&visibility=public" + with(cursor), KeyFor(alice_)},
      {base + "&tags=cat" + with(cursor), KeyFor(alice_)},
      {base + "&created_from=2000-01-01" + with(cursor), KeyFor(alice_)},
      {"limit=2" + with(cursor), KeyFor(alice_)},
      {base + with(cursor), KeyFor(bob_)},
      {base + with(cursor), std::nullopt},
      {base + with(flipped), KeyFor(alice_)},
      {base + with(cursor.substr(0, cursor.size() - 4)), KeyFor(alice_)},
      {base + with("garbage"), KeyFor(alice_)},
  };
  for (const auto& [query, key] : misuses) {
    HttpResponse r = Get(server(), "/api/v1/images?" + query, key);
    EXPECT_EQ(r.status, 400) << query << " key " << key.value_or("(none)");
    EXPECT_EQ(DetailMessage(r), "Invalid pagination cursor") << r.body;
  }
}

TEST_F(ListTest, OthersSeeOnlyPublicImages) {
  const auto public_ids = AliceIds({0, 2, 4, 6});
  EXPECT_THAT(ListIds("user_id=" + alice_, std::nullopt), ElementsAreArray(public_ids));
  EXPECT_THAT(ListIds("user_id=" + alice_, KeyFor(bob_)), ElementsAreArray(public_ids));
  EXPECT_THAT(ListIds("user_id=" + alice_, KeyFor(alice_)), ElementsAreArray(AllAliceIds()));
}

TEST_F(ListTest, AskingForOthersPrivateImagesGivesAnEmptyPage) {
  for (const auto& key : {std::optional<std::string>(KeyFor(bob_)), std::optional<std::string>()}) {
    auto page = Page("user_id=" + alice_ + "&visibility=private", key);
    EXPECT_EQ(page.at("count"), 0);
    EXPECT_TRUE(page.at("items").as_array().empty());
  }
  auto anonymous_private = Page("visibility=private&limit=100", std::nullopt);
  EXPECT_EQ(anonymous_private.at("count"), 0);
}

TEST_F(ListTest, ListingAcrossUsersShowsPublicPlusOwnPrivateOnce) {
  int pages = 0;
  auto ids = ListAllIds(server(), "limit=3", KeyFor(alice_), &pages);
  std::map<std::string, int> seen;
  for (const auto& id : ids) ++seen[id];
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << id << " listed " << n << " times";
  for (const auto& id : AllAliceIds()) EXPECT_EQ(seen.count(id), 1u) << "missing alice's " << id;
  EXPECT_EQ(seen.count(Str(bob_records_[0], "image_id")), 1u) << "missing bob's public image";
  EXPECT_EQ(seen.count(Str(bob_records_[1], "image_id")), 0u) << "bob's private image leaked";
  // Full pages: only the last may be short (or empty, when the matches end
  // exactly at a page boundary), so three per page needs ceil(n/3) pages.
  EXPECT_GE(pages, 3);
  EXPECT_GE(static_cast<std::size_t>(pages), (ids.size() + 2) / 3);
  EXPECT_LE(static_cast<std::size_t>(pages), ids.size() / 3 + 1);

  auto anonymous = ListAllIds(server(), "limit=50", std::nullopt);
  std::set<std::string> anon_seen(anonymous.begin(), anonymous.end());
  EXPECT_EQ(anon_seen.size(), anonymous.size());
  for (int i : {1, 3, 5}) EXPECT_EQ(anon_seen.count(Str(alice_records_[static_cast<std::size_t>(i)], "image_id")), 0u);
  for (int i : {0, 2, 4, 6}) EXPECT_EQ(anon_seen.count(Str(alice_records_[static_cast<std::size_t>(i)], "image_id")), 1u);

  // Every item of a cross-user page is public or the caller's own.
  auto page = Page("limit=100", KeyFor(bob_));
  for (const auto& item : page.at("items").as_array()) {
    EXPECT_TRUE(Str(item, "visibility") == "public" || Str(item, "user_id") == bob_) << Str(item, "image_id");
  }
}

TEST_F(ListTest, UnknownQueryParametersAreIgnored) {
  EXPECT_THAT(ListIds("user_id=" + alice_ + "&colour=blue&limit=100&x", KeyFor(alice_)),
              ElementsAreArray(AllAliceIds()));
}

}  // namespace
}  // namespace imgsvc::e2e
