#include "http/assets/assets.h"

#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace imgsvc::http::assets {
namespace {

namespace json = boost::json;

// Each URL path and the file it must serve, named independently of the build.
const std::map<std::string, std::string>& ExpectedSources() {
  static const std::map<std::string, std::string> sources = {
      {"/openapi.json", IMGSVC_ASSETS_SOURCE_DIR "/openapi.json"},
      {"/docs", IMGSVC_ASSETS_SOURCE_DIR "/docs.html"},
      {"/docs/swagger-initializer.js", IMGSVC_ASSETS_SOURCE_DIR "/swagger-initializer.js"},
      {"/docs/swagger-ui-bundle.js", IMGSVC_SWAGGER_UI_DIR "/swagger-ui-bundle.js"},
      {"/docs/swagger-ui.css", IMGSVC_SWAGGER_UI_DIR "/swagger-ui.css"},
      {"/docs/index.css", IMGSVC_SWAGGER_UI_DIR "/index.css"},
      {"/docs/favicon-32x32.png", IMGSVC_SWAGGER_UI_DIR "/favicon-32x32.png"},
      {"/docs/favicon-16x16.png", IMGSVC_SWAGGER_UI_DIR "/favicon-16x16.png"},
      {"/docs/LICENSE", IMGSVC_SWAGGER_UI_DIR "/LICENSE"},
      {"/docs/NOTICE", IMGSVC_SWAGGER_UI_DIR "/NOTICE"},
      {"/docs/swagger-ui-bundle.js.LICENSE.txt", IMGSVC_SWAGGER_UI_DIR "/swagger-ui-bundle.js.LICENSE.txt"},
  };
  return sources;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string Identity(std::string_view url_path) {
  const Asset* asset = FindAsset(url_path);
  if (asset == nullptr) {
    ADD_FAILURE() << "no asset " << url_path;
    return {};
  }
  auto bytes = Inflate(*asset);
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  return bytes.ok() ? *bytes : std::string();
}

json::value OpenApi() {
  boost::system::error_code ec;
  json::value doc = json::parse(Identity("/openapi.json"), ec);
  EXPECT_FALSE(ec) << ec.message();
  return doc;
}

// Follows a local "$ref" (if any) to the object it names.
const json::object& Deref(const json::value& root, const json::value& node) {
  const json::object& object = node.as_object();
  const json::value* ref = object.if_contains("$ref");
  if (ref == nullptr) return object;
  const std::string_view target = ref->as_string();
  return root.at_pointer(target.substr(1)).as_object();
}

TEST(AssetsTest, ServesExactlyTheExpectedPaths) {
  std::set<std::string> served;
  for (const Asset& asset : AllAssets()) {
    EXPECT_TRUE(served.insert(std::string(asset.path)).second) << "duplicate " << asset.path;
  }
  std::set<std::string> expected;
  for (const auto& [path, source] : ExpectedSources()) expected.insert(path);
  EXPECT_EQ(served, expected);
}

TEST(AssetsTest, EveryAssetInflatesToItsSourceFile) {
  for (const auto& [path, source] : ExpectedSources()) {
    const std::string bytes = Identity(path);
    EXPECT_FALSE(bytes.empty()) << path;
    EXPECT_TRUE(bytes == ReadFile(source)) << path << " differs from " << source;
  }
}

TEST(AssetsTest, GzipIsSmallerThanTheIdentityForText) {
  for (const Asset& asset : AllAssets()) {
    // gzip's 18 bytes of framing outweigh what it saves on a few dozen bytes (NOTICE).
    if (asset.content_type.starts_with("image/") || Identity(asset.path).size() < 1024) continue;
    EXPECT_LT(asset.gzip.size(), Identity(asset.path).size()) << asset.path;
  }
}

TEST(AssetsTest, ContentTypesFollowTheFileKind) {
  EXPECT_EQ(FindAsset("/openapi.json")->content_type, "application/json; charset=utf-8");
  EXPECT_EQ(FindAsset("/docs")->content_type, "text/html; charset=utf-8");
  EXPECT_EQ(FindAsset("/docs/swagger-ui-bundle.js")->content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(FindAsset("/docs/swagger-ui.css")->content_type, "text/css; charset=utf-8");
  EXPECT_EQ(FindAsset("/docs/favicon-32x32.png")->content_type, "image/png");
  EXPECT_EQ(FindAsset("/docs/LICENSE")->content_type, "text/plain; charset=utf-8");
}

TEST(AssetsTest, EtagsAreQuotedAndDistinctPerRepresentation) {
  const std::regex strong_etag("\"[0-9a-f]{32}\"");
  std::set<std::string_view> seen;
  for (const Asset& asset : AllAssets()) {
    EXPECT_TRUE(std::regex_match(std::string(asset.etag), strong_etag)) << asset.etag;
    EXPECT_TRUE(std::regex_match(std::string(asset.identity_etag), strong_etag)) << asset.identity_etag;
    EXPECT_TRUE(seen.insert(asset.etag).second) << asset.path;
    EXPECT_TRUE(seen.insert(asset.identity_etag).second) << asset.path;
  }
}

TEST(AssetsTest, FindsOnlyExactPaths) {
  EXPECT_EQ(FindAsset("/nope"), nullptr);
  EXPECT_EQ(FindAsset("/docs/"), nullptr);
  EXPECT_EQ(FindAsset("/docs/swagger-ui.css.map"), nullptr);
  EXPECT_EQ(FindAsset("/DOCS"), nullptr);
  EXPECT_EQ(FindAsset(""), nullptr);
  const Asset* asset = FindAsset("/docs/swagger-ui.css");
  ASSERT_NE(asset, nullptr);
  EXPECT_EQ(asset->path, "/docs/swagger-ui.css");
}

// An asset whose gzip bytes are `gzip` (the views must outlive it).
Asset WithGzip(const Asset& original, const std::string& gzip) {
  Asset asset = original;
  asset.gzip = gzip;
  return asset;
}

TEST(InflateTest, SkipsOptionalHeaderFields) {
  const Asset& original = *FindAsset("/docs");
  std::string gz(original.gzip);
  ASSERT_EQ(gz[3], '\0') << "built with gzip -n: no optional fields";
  // FHCRC | FEXTRA | FNAME | FCOMMENT, in the order RFC 1952 lays them out.
  gz[3] = 0x02 | 0x04 | 0x08 | 0x10;
  const std::string fields = std::string("\x03\x00" "abc", 5) + std::string("docs.html\0", 10) +
                             std::string("a comment\0", 10) + std::string("\x12\x34", 2);
  gz.insert(10, fields);
  auto bytes = Inflate(WithGzip(original, gz));
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  EXPECT_EQ(*bytes, ReadFile(ExpectedSources().at("/docs")));
}

TEST(InflateTest, RefusesCorruptData) {
  const Asset& original = *FindAsset("/openapi.json");
  const std::string good(original.gzip);
  auto expect_corrupt = [&original](const std::string& gz, std::string_view what) {
    auto bytes = Inflate(WithGzip(original, gz));
    ASSERT_FALSE(bytes.ok()) << what;
    EXPECT_EQ(bytes.status().code(), Code::kInternal) << what;
    EXPECT_THAT(bytes.status().message(), testing::HasSubstr("/openapi.json")) << what;
  };
  std::string bad_magic = good;
  bad_magic[1] = 'x';
  expect_corrupt(bad_magic, "magic");
  std::string reserved_flag = good;
  reserved_flag[3] = static_cast<char>(0x20);
  expect_corrupt(reserved_flag, "reserved flag");
  std::string bad_crc = good;
  bad_crc[bad_crc.size() - 8] = static_cast<char>(bad_crc[bad_crc.size() - 8] ^ 1);
  expect_corrupt(bad_crc, "crc");
  std::string bad_size = good;
  bad_size[bad_size.size() - 4] = static_cast<char>(bad_size[bad_size.size() - 4] ^ 1);
  expect_corrupt(bad_size, "isize");
  std::string truncated = good;
  truncated.erase(truncated.size() / 2, 100);
  expect_corrupt(truncated, "truncated");
  expect_corrupt(good.substr(0, 12), "header only");
}

TEST(OpenApiTest, IsOpenApi31WithEveryOperation) {
  const json::value doc = OpenApi();
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc.at("openapi"), "3.1.0");
  EXPECT_EQ(doc.at("info").at("title"), "imgsvc image service");
  EXPECT_EQ(doc.at("info").at("version"), "1.0.0");
  const std::map<std::string, std::set<std::string>> expected = {
      {"/api/v1/images", {"post", "get", "delete"}},
      {"/api/v1/images/{image_id}", {"get", "patch", "delete"}},
      {"/api/v1/images/{image_id}/content", {"get"}},
      {"/health", {"get"}},
      {"/ready", {"get"}},
      {"/files/{key}", {"get", "head"}},
      {"/openapi.json", {"get"}},
      {"/docs", {"get"}},
      {"/docs/{file}", {"get"}},
  };
  const std::set<std::string> methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"};
  std::map<std::string, std::set<std::string>> documented;
  for (const auto& [path, item] : doc.at("paths").as_object()) {
    for (const auto& [key, value] : item.as_object()) {
      if (methods.contains(std::string(key))) documented[std::string(path)].insert(std::string(key));
    }
  }
  EXPECT_EQ(documented, expected);
}

void CollectRefs(const json::value& node, std::vector<std::string>& refs) {
  if (node.is_object()) {
    for (const auto& [key, value] : node.as_object()) {
      if (key == "$ref" && value.is_string()) refs.emplace_back(value.as_string());
      else CollectRefs(value, refs);
    }
  } else if (node.is_array()) {
    for (const auto& value : node.as_array()) CollectRefs(value, refs);
  }
}

TEST(OpenApiTest, EveryRefResolvesWithinTheDocument) {
  const json::value doc = OpenApi();
  std::vector<std::string> refs;
  CollectRefs(doc, refs);
  ASSERT_GT(refs.size(), 50u);
  for (const std::string& ref : refs) {
    ASSERT_TRUE(ref.starts_with("#/")) << ref;
    boost::system::error_code ec;
    EXPECT_NE(doc.find_pointer(std::string_view(ref).substr(1), ec), nullptr) << ref;
  }
}

TEST(OpenApiTest, EveryResponseCarriesTheRequestIdAndEvery401TheChallenge) {
  const json::value doc = OpenApi();
  int responses = 0;
  for (const auto& [path, item] : doc.at("paths").as_object()) {
    for (const auto& [method, operation] : item.as_object()) {
      if (!operation.is_object() || !operation.as_object().contains("responses")) continue;
      for (const auto& [status, response_ref] : operation.at("responses").as_object()) {
        ++responses;
        const json::object& response = Deref(doc, response_ref);
        const std::string where = std::string(method) + " " + std::string(path) + " " + std::string(status);
        const json::value* headers = response.if_contains("headers");
        ASSERT_NE(headers, nullptr) << where;
        EXPECT_TRUE(headers->as_object().contains("x-request-id")) << where;
        if (status == "401") {
          EXPECT_TRUE(headers->as_object().contains("www-authenticate")) << where;
        }
      }
    }
  }
  EXPECT_GT(responses, 60);
}

TEST(OpenApiTest, KeysAreRequiredOnWritesAndOptionalOnReads) {
  const json::value doc = OpenApi();
  const json::value required = json::parse(R"([{"ApiKey": []}])");
  const json::value optional = json::parse(R"([{}, {"ApiKey": []}])");
  const json::value& images = doc.at("paths").at("/api/v1/images");
  const json::value& one = doc.at("paths").at("/api/v1/images/{image_id}");
  EXPECT_EQ(images.at("post").at("security"), required);
  EXPECT_EQ(images.at("delete").at("security"), required);
  EXPECT_EQ(one.at("patch").at("security"), required);
  EXPECT_EQ(one.at("delete").at("security"), required);
  EXPECT_EQ(images.at("get").at("security"), optional);
  EXPECT_EQ(one.at("get").at("security"), optional);
  EXPECT_EQ(doc.at("paths").at("/api/v1/images/{image_id}/content").at("get").at("security"), optional);
  const json::value& scheme = doc.at("components").at("securitySchemes").at("ApiKey");
  EXPECT_EQ(scheme.at("type"), "apiKey");
  EXPECT_EQ(scheme.at("in"), "header");
  EXPECT_EQ(scheme.at("name"), "x-api-key");
}

TEST(OpenApiTest, DocumentsExactlyTheEmbeddedDocsFiles) {
  const json::value doc = OpenApi();
  std::set<std::string> documented;
  const json::value& file_param = doc.at("paths").at("/docs/{file}").at("get").at("parameters").at(0);
  for (const auto& name : file_param.at("schema").at("enum").as_array()) {
    documented.insert("/docs/" + std::string(name.as_string()));
  }
  std::set<std::string> embedded;
  for (const Asset& asset : AllAssets()) {
    if (asset.path.starts_with("/docs/")) embedded.insert(std::string(asset.path));
  }
  EXPECT_EQ(documented, embedded);
}

// RFC 3986 resolution of a relative-path reference against "/docs" (or any
// base whose last segment is "docs"): the reference replaces that segment.
std::string ResolveAgainstDocs(std::string_view ref) {
  std::string resolved = "/" + std::string(ref);
  if (resolved.starts_with("/./")) resolved.erase(0, 2);
  return resolved;
}

TEST(DocsPageTest, LoadsOnlyRelativeEmbeddedAssets) {
  const std::string html = Identity("/docs");
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("//"), std::string::npos) << "no network-path references";
  const std::regex reference(R"re(\b(src|href)\s*=\s*"([^"]*)")re");
  std::set<std::string> loaded;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), reference); it != std::sregex_iterator(); ++it) {
    const std::string ref = (*it)[2];
    EXPECT_FALSE(ref.empty());
    EXPECT_NE(ref.front(), '/') << ref << " would not work under a stage prefix";
    EXPECT_EQ(ref.find(':'), std::string::npos) << ref << " has a scheme";
    const std::string resolved = ResolveAgainstDocs(ref);
    EXPECT_NE(FindAsset(resolved), nullptr) << ref << " -> " << resolved;
    loaded.insert(resolved);
  }
  EXPECT_TRUE(loaded.contains("/docs/swagger-ui-bundle.js"));
  EXPECT_TRUE(loaded.contains("/docs/swagger-initializer.js"));
  EXPECT_TRUE(loaded.contains("/docs/swagger-ui.css"));
}

TEST(DocsPageTest, InitializerLoadsTheLocalDocumentWithoutTheOnlineValidator) {
  const std::string script = Identity("/docs/swagger-initializer.js");
  EXPECT_THAT(script, testing::HasSubstr("validatorUrl: null"));
  EXPECT_THAT(script, testing::HasSubstr(R"(url: "openapi.json")"));
  EXPECT_EQ(script.find("http"), std::string::npos);
  // "openapi.json" relative to /docs is the embedded document.
  EXPECT_NE(FindAsset(ResolveAgainstDocs("openapi.json")), nullptr);
}

}  // namespace
}  // namespace imgsvc::http::assets
