// End-to-end: POST /api/v1/images — formats, record fields, normalisation,
// all-or-nothing, limits, validation, bad bodies and authorisation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <set>

#include "e2e_harness.h"
#include "support/image_fixtures.h"

namespace imgsvc::e2e {
namespace {

using core::ImageFormat;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::regex kUuidV4("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$");

std::string Png(std::uint32_t w = 3, std::uint32_t h = 2) { return testing::MakeImage(ImageFormat::kPng, w, h); }

boost::json::array Images(const HttpResponse& r) {
  auto body = Json(r);
  if (!body.is_object() || !body.as_object().contains("images") || !body.as_object().at("images").is_array()) {
    ADD_FAILURE() << "no images array: " << r.body;
    return {};
  }
  return body.as_object().at("images").as_array();
}

std::vector<std::string> Tags(const boost::json::value& record) {
  std::vector<std::string> out;
  for (const auto& t : record.as_object().at("tags").as_array()) out.emplace_back(t.as_string());
  return out;
}

class UploadTest : public ServerSuite {
 protected:
  void ExpectNothingStored(const std::string& user) {
    EXPECT_TRUE(ListAllIds(server(), "user_id=" + user, KeyFor(user)).empty()) << "images of " << user
                                                                                 << " were stored";
  }
  // The single record of a one-file upload that must succeed.
  boost::json::value UploadSingle(const std::string& user, const std::string& filename,
                                  const std::string& data, std::optional<std::string> tags = {},
                                  std::optional<std::string> category = {}) {
    UploadForm form;
    form.user_id = user;
    form.tags = std::move(tags);
    form.category = std::move(category);
    form.files.push_back({filename, "image/png", data});
    HttpResponse r = Upload(server(), form, KeyFor(user));
    EXPECT_EQ(r.status, 201) << r.body;
    auto images = Images(r);
    if (images.size() != 1) return nullptr;
    return images[0];
  }
};

struct FormatCase {
  ImageFormat format;
  std::string name;
  std::string content_type;
};

TEST_F(UploadTest, EachFormatIsRecordedFromItsBytes) {
  const std::vector<FormatCase> cases = {
      {ImageFormat::kJpeg, "jpeg", "image/jpeg"}, {ImageFormat::kPng, "png", "image/png"},
      {ImageFormat::kGif, "gif", "image/gif"},    {ImageFormat::kWebp, "webp", "image/webp"},
      {ImageFormat::kAvif, "avif", "image/avif"}, {ImageFormat::kHeic, "heic", "image/heic"},
      {ImageFormat::kTiff, "tiff", "image/tiff"},
  };
  const std::string user = UniqueUser("alice");
  std::uint32_t w = 31;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::uint32_t h = w / 2 + 3;
    const std::string data = testing::MakeImage(c.format, w, h);
    UploadForm form;
    form.user_id = user;
    form.files.push_back({"picture." + c.name, "application/octet-stream", data});
    const auto before = NowMicros();
    HttpResponse r = Upload(server(), form, KeyFor(user));
    ASSERT_EQ(r.status, 201) << r.body;
    auto images = Images(r);
    ASSERT_EQ(images.size(), 1u);
    const auto& rec = images[0].as_object();

    std::set<std::string> keys;
    for (const auto& kv : rec) keys.insert(std::string(kv.key()));
    EXPECT_EQ(keys, (std::set<std::string>{"image_id", "user_id", "filename", "content_type", "format",
                                           "size_bytes", "width", "height", "sha256", "category", "tags",
                                           "visibility", "created_at", "updated_at"}));
    EXPECT_TRUE(std::regex_match(Str(rec, "image_id"), kUuidV4)) << Str(rec, "image_id");
    EXPECT_EQ(Str(rec, "user_id"), user);
    EXPECT_EQ(Str(rec, "filename"), "picture." + c.name);
    EXPECT_EQ(Str(rec, "format"), c.name);
    EXPECT_EQ(Str(rec, "content_type"), c.content_type);
    EXPECT_EQ(rec.at("width"), static_cast<std::int64_t>(w));
    EXPECT_EQ(rec.at("height"), static_cast<std::int64_t>(h));
    EXPECT_EQ(rec.at("size_bytes"), static_cast<std::int64_t>(data.size()));
    EXPECT_EQ(Str(rec, "sha256"), Sha256Hex(data));
    EXPECT_TRUE(rec.at("category").is_null());
    EXPECT_TRUE(rec.at("tags").is_array() && rec.at("tags").as_array().empty());
    EXPECT_EQ(Str(rec, "visibility"), "private");
    EXPECT_TRUE(std::regex_match(Str(rec, "created_at"), kTimestamp)) << Str(rec, "created_at");
    EXPECT_TRUE(std::regex_match(Str(rec, "updated_at"), kTimestamp)) << Str(rec, "updated_at");
    EXPECT_EQ(Str(rec, "updated_at"), Str(rec, "created_at"));
    auto created = ParseMicros(Str(rec, "created_at"));
    ASSERT_TRUE(created.has_value());
    EXPECT_GE(*created, before - 2'000'000);
    EXPECT_LE(*created, NowMicros() + 2'000'000);
    w += 7;
  }
}

TEST_F(UploadTest, FilenameIsReducedToItsLastComponentWithoutControlCharacters) {
  const std::string user = UniqueUser("alice");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"../../etc/passwd", "passwd"},
      {"C:\\x\\y.png", "y.png"},
      {"a\x01" "b\x7f" "c.png", "abc.png"},
      {"dir/caf\xc3\xa9 \xe2\x98\x95.png", "caf\xc3\xa9 \xe2\x98\x95.png"},
  };
  for (const auto& [sent, expected] : cases) {
    auto rec = UploadSingle(user, sent, Png());
    EXPECT_EQ(Str(rec, "filename"), expected) << ::testing::PrintToString(sent);
  }
}

TEST_F(UploadTest, LongFilenameIsCutTo255BytesOnACharacterBoundary) {
  const std::string user = UniqueUser("alice");
  std::string name;
  for (int i = 0; i < 150; ++i) name += "\xc3\xa9";  // 300 bytes of 2-byte characters
  name += ".png";
  auto rec = UploadSingle(user, name, Png());
  const std::string stored = Str(rec, "filename");
  EXPECT_LE(stored.size(), 255u);
  EXPECT_GE(stored.size(), 254u);
  EXPECT_EQ(stored.size() % 2, 0u) << "cut inside a character";
  EXPECT_EQ(name.substr(0, stored.size()), stored);
}

TEST_F(UploadTest, TagsAreNormalisedAndCategoryKeptAsGiven) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadSingle(user, "a.png", Png(), " Cat, cute,CAT,, ", "Animals & Pets");
  EXPECT_THAT(Tags(rec), ElementsAre("cat", "cute"));
  EXPECT_EQ(Str(rec, "category"), "Animals & Pets");
}

TEST_F(UploadTest, LimitsOfTagsAndCategoryCountCodePoints) {
  const std::string user = UniqueUser("alice");
  std::string twenty;
  for (int i = 0; i < 20; ++i) twenty += "t" + std::to_string(i) + ",";
  std::string long_tag;
  for (int i = 0; i < 64; ++i) long_tag += "\xc3\xa9";  // 64 code points, 128 bytes
  std::string category(64, 'c');
  auto rec = UploadSingle(user, "a.png", Png(), twenty, category);
  EXPECT_EQ(Tags(rec).size(), 20u);
  auto rec2 = UploadSingle(user, "b.png", Png(), long_tag, long_tag);
  EXPECT_THAT(Tags(rec2), ElementsAre(long_tag));
  EXPECT_EQ(Str(rec2, "category"), long_tag);
}

TEST_F(UploadTest, PublicVisibilityIsKept) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadOne(server(), user, "public");
  EXPECT_EQ(Str(rec, "visibility"), "public");
}

TEST_F(UploadTest, SeveralFilesKeepPartOrderWithIncreasingCreatedAt) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"first.png", "image/png", Png(5, 5)});
  form.files.push_back({"second.gif", "image/gif", testing::MakeImage(ImageFormat::kGif, 6, 6)});
  form.files.push_back({"third.jpg", "image/jpeg", testing::MakeImage(ImageFormat::kJpeg, 7, 7)});
  form.files.push_back({"fourth.png", "image/png", Png(8, 8)});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  ASSERT_EQ(r.status, 201) << r.body;
  auto images = Images(r);
  ASSERT_EQ(images.size(), 4u);
  std::vector<std::string> names;
  for (const auto& img : images) names.push_back(Str(img, "filename"));
  EXPECT_THAT(names, ElementsAre("first.png", "second.gif", "third.jpg", "fourth.png"));
  for (std::size_t i = 1; i < images.size(); ++i) {
    EXPECT_LT(Str(images[i - 1], "created_at"), Str(images[i], "created_at"));
  }
  std::set<std::string> ids;
  for (const auto& img : images) ids.insert(Str(img, "image_id"));
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(ListAllIds(server(), "user_id=" + user, KeyFor(user)).size(), 4u);
}

TEST_F(UploadTest, FieldsAfterTheFilesApply) {
  const std::string user = UniqueUser("alice");
  MultipartBuilder form;
  form.AddFile("files", "late.png", "image/png", Png());
  form.AddField("user_id", user);
  form.AddField("category", "late");
  form.AddField("tags", "x,y");
  form.AddField("visibility", "public");
  form.AddField("unknown_field", "ignored");
  HttpResponse r = PostMultipart(server(), form, KeyFor(user));
  ASSERT_EQ(r.status, 201) << r.body;
  auto images = Images(r);
  ASSERT_EQ(images.size(), 1u);
  EXPECT_EQ(Str(images[0], "user_id"), user);
  EXPECT_EQ(Str(images[0], "category"), "late");
  EXPECT_THAT(Tags(images[0]), ElementsAre("x", "y"));
  EXPECT_EQ(Str(images[0], "visibility"), "public");
}

TEST_F(UploadTest, ClaimedContentTypeIsIgnored) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"liar.gif", "image/gif", Png(9, 4)});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  ASSERT_EQ(r.status, 201) << r.body;
  auto images = Images(r);
  ASSERT_EQ(images.size(), 1u);
  EXPECT_EQ(Str(images[0], "format"), "png");
  EXPECT_EQ(Str(images[0], "content_type"), "image/png");
  EXPECT_EQ(images[0].as_object().at("width"), 9);
}

TEST_F(UploadTest, NonImageIs415NamingTheFileAndStoresNothing) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"notes.txt", "image/png", "hello, this is not an image at all\n"});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 415) << r.body;
  EXPECT_THAT(DetailMessage(r), HasSubstr("notes.txt"));
  ExpectNothingStored(user);
}

TEST_F(UploadTest, OneBadFileAmongGoodOnesStoresNone) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"good1.png", "image/png", Png()});
  form.files.push_back({"bad.bin", "image/png", std::string(200, '\x42')});
  form.files.push_back({"good2.gif", "image/gif", testing::MakeImage(ImageFormat::kGif, 3, 3)});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 415) << r.body;
  EXPECT_THAT(DetailMessage(r), HasSubstr("bad.bin"));
  ExpectNothingStored(user);
}

TEST_F(UploadTest, MoreFilesThanTheDefaultLimitIs413) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  for (int i = 0; i < 11; ++i) form.files.push_back({"f" + std::to_string(i) + ".png", "image/png", Png()});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_FALSE(DetailMessage(r).empty()) << r.body;
  ExpectNothingStored(user);
}

TEST_F(UploadTest, DecompressionBombIsRefusedFromTheHeader) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"bomb.png", "image/png", testing::MakeImage(ImageFormat::kPng, 100000, 100000)});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 413) << r.body;
  ExpectNothingStored(user);
}

// Validation (422) -------------------------------------------------------

TEST_F(UploadTest, MissingFilesIs422AtBodyFiles) {
  const std::string user = UniqueUser("alice");
  MultipartBuilder form;
  form.AddField("user_id", user);
  HttpResponse r = PostMultipart(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_THAT(ErrorLocs(r), ElementsAre("body/files"));
}

TEST_F(UploadTest, MissingUserIdIs422) {
  const std::string user = UniqueUser("alice");
  MultipartBuilder form;
  form.AddFile("files", "a.png", "image/png", Png());
  HttpResponse r = PostMultipart(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_THAT(ErrorLocs(r), ElementsAre("body/user_id"));
  ExpectNothingStored(user);
}

TEST_F(UploadTest, MalformedUserIdIs422) {
  const std::string user = UniqueUser("alice");
  for (const std::string& bad : {user + ":x", std::string(129, 'a'), std::string("al ice"), std::string("")}) {
    UploadForm form;
    form.user_id = bad;
    form.files.push_back({"a.png", "image/png", Png()});
    HttpResponse r = Upload(server(), form, KeyFor(user));
    EXPECT_EQ(r.status, 422) << ::testing::PrintToString(bad) << ": " << r.body;
    EXPECT_THAT(ErrorLocs(r), ElementsAre("body/user_id")) << r.body;
  }
  ExpectNothingStored(user);
}

TEST_F(UploadTest, UserIdOf128AllowedCharactersIsAccepted) {
  std::string user = UniqueUser("A.b_c@d-");
  user += std::string(128 - user.size(), 'z');
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"a.png", "image/png", Png()});
  EXPECT_EQ(Upload(server(), form, KeyFor(user)).status, 201);
}

TEST_F(UploadTest, TooManyOrTooLongTagsAre422) {
  const std::string user = UniqueUser("alice");
  std::string twenty_one;
  for (int i = 0; i < 21; ++i) twenty_one += "t" + std::to_string(i) + ",";
  for (const std::string& tags : {twenty_one, "ok," + std::string(65, 'x')}) {
    UploadForm form;
    form.user_id = user;
    form.tags = tags;
    form.files.push_back({"a.png", "image/png", Png()});
    HttpResponse r = Upload(server(), form, KeyFor(user));
    EXPECT_EQ(r.status, 422) << r.body;
    EXPECT_THAT(ErrorLocs(r), ElementsAre("body/tags"));
  }
  ExpectNothingStored(user);
}

TEST_F(UploadTest, CategoryOver64CharactersIs422) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.category = std::string(65, 'c');
  form.files.push_back({"a.png", "image/png", Png()});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_THAT(ErrorLocs(r), ElementsAre("body/category"));
  ExpectNothingStored(user);
}

TEST_F(UploadTest, UnknownVisibilityIs422) {
  const std::string user = UniqueUser("alice");
  for (const std::string v : {"secret", "PUBLIC"}) {
    UploadForm form;
    form.user_id = user;
    form.visibility = v;
    form.files.push_back({"a.png", "image/png", Png()});
    HttpResponse r = Upload(server(), form, KeyFor(user));
    EXPECT_EQ(r.status, 422) << ::testing::PrintToString(v) << ": " << r.body;
    EXPECT_THAT(ErrorLocs(r), ElementsAre("body/visibility"));
  }
  ExpectNothingStored(user);
}

TEST_F(UploadTest, SeveralBadFieldsGiveOneEntryEach) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.category = std::string(65, 'c');
  form.visibility = "secret";
  form.files.push_back({"a.png", "image/png", Png()});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_THAT(ErrorLocs(r), ::testing::UnorderedElementsAre("body/category", "body/visibility"));
}

// Bad bodies (400) -------------------------------------------------------

TEST_F(UploadTest, NonMultipartBodyIs400) {
  const std::string user = UniqueUser("alice");
  HttpResponse r = SendJson(server(), "POST", "/api/v1/images", KeyFor(user),
                            R"({"user_id":")" + user + R"("})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_FALSE(DetailMessage(r).empty()) << r.body;
}

TEST_F(UploadTest, MultipartWithoutBoundaryIs400) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"a.png", "image/png", Png()});
  HttpRequest request;
  request.method = "POST";
  request.target = "/api/v1/images";
  request.headers = {{"Content-Type", "multipart/form-data"}, {"x-api-key", KeyFor(user)}};
  request.body = BuildForm(form).Build();
  HttpResponse r = Call(server(), request);
  EXPECT_EQ(r.status, 400) << r.body;
  ExpectNothingStored(user);
}

TEST_F(UploadTest, TruncatedMultipartIs400AndStoresNothing) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"whole.png", "image/png", Png()});
  form.files.push_back({"cut.png", "image/png", testing::MakeImage(ImageFormat::kPng, 4, 4, 4096)});
  MultipartBuilder builder = BuildForm(form);
  std::string body = builder.Build();
  body.resize(body.size() - 2000);  // inside the second file: no closing delimiter
  HttpRequest request;
  request.method = "POST";
  request.target = "/api/v1/images";
  request.headers = {{"Content-Type", builder.ContentType()}, {"x-api-key", KeyFor(user)}};
  request.body = body;
  HttpResponse r = Call(server(), request);
  EXPECT_EQ(r.status, 400) << r.body;
  ExpectNothingStored(user);
}

// Authentication and authorisation ---------------------------------------

TEST_F(UploadTest, MissingWrongOrMalformedKeyIs401) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"a.png", "image/png", Png()});
  for (const std::optional<std::string>& key :
       {std::optional<std::string>(), std::optional<std::string>(user + ":wrong-token"),
        std::optional<std::string>(std::string(kLocalToken)), std::optional<std::string>(user),
        std::optional<std::string>(user + ":"), std::optional<std::string>(""),
        std::optional<std::string>(user + ":" + std::string(kLocalToken) + "x")}) {
    HttpResponse r = Upload(server(), form, key);
    EXPECT_EQ(r.status, 401) << "key " << ::testing::PrintToString(key) << ": " << r.body;
    EXPECT_THAT(r.header("www-authenticate").value_or(""), StartsWith("ApiKey"));
    EXPECT_FALSE(DetailMessage(r).empty());
  }
  ExpectNothingStored(user);
}

TEST_F(UploadTest, KeyOfAnotherUserIs403WhereverUserIdComes) {
  const std::string alice = UniqueUser("alice");
  const std::string bob = UniqueUser("bob");
  MultipartBuilder before;
  before.AddField("user_id", alice);
  before.AddFile("files", "a.png", "image/png", Png());
  HttpResponse r1 = PostMultipart(server(), before, KeyFor(bob));
  EXPECT_EQ(r1.status, 403) << r1.body;

  MultipartBuilder after;
  after.AddFile("files", "a.png", "image/png", Png());
  after.AddFile("files", "b.png", "image/png", Png());
  after.AddField("user_id", alice);
  HttpResponse r2 = PostMultipart(server(), after, KeyFor(bob));
  EXPECT_EQ(r2.status, 403) << r2.body;

  ExpectNothingStored(alice);
  ExpectNothingStored(bob);
}

// Limits configured on the command line ----------------------------------

class UploadLimitsTest : public UploadTest {
 public:
  static void SetUpTestSuite() {
    Launch({"--max-upload-mb", "1", "--max-files", "3", "--max-pixels", "1000000"});
  }

 protected:
  static std::string PngOfSize(std::size_t size) {
    return testing::MakeImageOfSize(ImageFormat::kPng, 4, 4, size);
  }
};

TEST_F(UploadLimitsTest, FileOfExactlyTheLimitIsAccepted) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadSingle(user, "max.png", PngOfSize(1024 * 1024));
  EXPECT_EQ(rec.as_object().at("size_bytes"), 1024 * 1024);
}

TEST_F(UploadLimitsTest, FileOverTheLimitIs413AndStoresNothing) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"ok.png", "image/png", Png()});
  form.files.push_back({"big.png", "image/png", PngOfSize(1024 * 1024 + 1)});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_FALSE(DetailMessage(r).empty());
  ExpectNothingStored(user);
}

TEST_F(UploadLimitsTest, FileCountLimit) {
  const std::string user = UniqueUser("alice");
  UploadForm form;
  form.user_id = user;
  for (int i = 0; i < 3; ++i) form.files.push_back({"f.png", "image/png", Png()});
  EXPECT_EQ(Upload(server(), form, KeyFor(user)).status, 201);
  form.files.push_back({"f.png", "image/png", Png()});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_EQ(ListAllIds(server(), "user_id=" + user, KeyFor(user)).size(), 3u);
}

TEST_F(UploadLimitsTest, PixelLimit) {
  const std::string user = UniqueUser("alice");
  auto rec = UploadSingle(user, "ok.png", Png(1000, 1000));
  EXPECT_EQ(rec.as_object().at("width"), 1000);
  UploadForm form;
  form.user_id = user;
  form.files.push_back({"big.png", "image/png", Png(1001, 1000)});
  HttpResponse r = Upload(server(), form, KeyFor(user));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_EQ(ListAllIds(server(), "user_id=" + user, KeyFor(user)).size(), 1u);
}


// The embedded data directory belongs to one process. A second server on it
// must stop at once, before it touches what the first one is using (the blob
// store's Open clears tmp/ of what it takes for a crash's debris).
TEST(DataDirectoryTest, ASecondServerOnItStopsAtOnceAndTheFirstCarriesOn) {
  if (UseAwsBackend()) GTEST_SKIP() << "the AWS backend has no data directory";
  auto first = TestServer::Start();
  ASSERT_NE(first, nullptr);
  const std::string user = UniqueUser("alice");
  const std::string before = Str(UploadOne(*first, user), "image_id");
  ASSERT_FALSE(before.empty());

  auto second = testing::Process::Start(BinaryPath(), {"serve", "--host", "127.0.0.1", "--port", "0", "--data-dir",
                                                       first->data_dir(), "--log-level", "debug"});
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  // Sooner than SQLite's busy timeout (5 s), which a wait for the lock would take.
  const std::optional<testing::ExitStatus> exit = (*second)->Wait(std::chrono::seconds(3));
  ASSERT_TRUE(exit.has_value()) << "a second server kept running on the same data directory";
  EXPECT_TRUE(exit->exited && exit->code != 0);
  const std::vector<std::string> lines = (*second)->Lines();
  EXPECT_TRUE(std::any_of(lines.begin(), lines.end(),
                          [](const std::string& line) { return line.find("open in another process") != std::string::npos; }))
      << "log:\n" << ::testing::PrintToString(lines);

  EXPECT_EQ(Get(*first, "/api/v1/images/" + before, KeyFor(user)).status, 200);
  EXPECT_FALSE(Str(UploadOne(*first, user), "image_id").empty());
}

}  // namespace
}  // namespace imgsvc::e2e
