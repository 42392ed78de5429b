#include "core/cursor.h"

#include <gtest/gtest.h>

#include <cctype>
#include <set>

#include "core/blocking.h"
#include "crypto/crypto.h"
#include "support/parking.h"

namespace imgsvc::core {
namespace {

constexpr std::string_view kSecret = "0123456789abcdef0123456789abcdef-service-secret";

const Position kPosition{"alice", "2026-11-25T18:00:00.123456Z", "0b6f5c8e-6d2c-4c55-9a37-1f2d8f0c2a11"};

std::string Sealed(const CursorCodec& codec, const Position& position, std::string_view binding) {
  StatusOr<std::string> cursor = codec.Seal(position, binding);
  EXPECT_TRUE(cursor.ok()) << cursor.status().ToString();
  return cursor.ok() ? *cursor : std::string();
}

void ExpectInvalid(const StatusOr<Position>& result, std::string_view what) {
  ASSERT_FALSE(result.ok()) << what;
  EXPECT_EQ(result.status().code(), Code::kBadRequest) << what;
  EXPECT_EQ(result.status().message(), "Invalid pagination cursor") << what;
}

TEST(CursorCodecTest, RoundTripsAcrossInstancesWithTheSameSecret) {
  const CursorCodec sealer(kSecret);
  const CursorCodec opener(kSecret);  // another process or Lambda instance
  const std::string cursor = Sealed(sealer, kPosition, "binding");
  const auto opened = opener.Open(cursor, "binding");
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(*opened, kPosition);
}

TEST(CursorCodecTest, RoundTripsEmptyAndBinaryFields) {
  const CursorCodec codec(kSecret);
  for (const Position& p : {Position{}, Position{"", "", "x"}, Position{std::string(200, 'u'), "t", ""},
                            Position{std::string("a\0b", 3), "\xff\xfe", std::string(130, '\x80')}}) {
    const auto opened = codec.Open(Sealed(codec, p, ""), "");
    ASSERT_TRUE(opened.ok());
    EXPECT_EQ(*opened, p);
  }
}

TEST(CursorCodecTest, IsUrlSafeAndRevealsNoIds) {
  const CursorCodec codec(kSecret);
  const std::string cursor = Sealed(codec, kPosition, "b");
  for (const char c : cursor) {
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << cursor;
  }
  const std::string wire = crypto::Base64UrlDecode(cursor).value();
  EXPECT_EQ(wire.find(kPosition.image_id), std::string::npos);
  EXPECT_EQ(wire.find(kPosition.user_id), std::string::npos);
  EXPECT_EQ(wire.find("2026-11-25"), std::string::npos);
}

TEST(CursorCodecTest, SealingTwiceGivesDifferentCursors) {
  const CursorCodec codec(kSecret);
  EXPECT_NE(Sealed(codec, kPosition, "b"), Sealed(codec, kPosition, "b"));
}

TEST(CursorCodecTest, RejectsOtherBindings) {
  const CursorCodec codec(kSecret);
  const std::string cursor = Sealed(codec, kPosition, "viewer=alice");
  ExpectInvalid(codec.Open(cursor, "viewer=bob"), "other binding");
  ExpectInvalid(codec.Open(cursor, ""), "empty binding");
  ExpectInvalid(codec.Open(cursor, "viewer=alice "), "extended binding");
}

TEST(CursorCodecTest, RejectsOtherSecrets) {
  const std::string cursor = Sealed(CursorCodec(kSecret), kPosition, "b");
  ExpectInvalid(CursorCodec("another secret").Open(cursor, "b"), "rotated secret");
}

TEST(CursorCodecTest, RejectsEveryEditedCharacter) {
  const CursorCodec codec(kSecret);
  const std::string cursor = Sealed(codec, kPosition, "b");
  for (std::size_t i = 0; i < cursor.size(); ++i) {
    for (const char replacement : {'A', 'z', '-', '_', '0'}) {
      if (cursor[i] == replacement) continue;
      std::string edited = cursor;
      edited[i] = replacement;
      ExpectInvalid(codec.Open(edited, "b"), "edited at " + std::to_string(i));
    }
  }
}

TEST(CursorCodecTest, RejectsTruncatedAndExtended) {
  const CursorCodec codec(kSecret);
  const std::string cursor = Sealed(codec, kPosition, "b");
  for (std::size_t len = 0; len < cursor.size(); ++len) {
    ExpectInvalid(codec.Open(cursor.substr(0, len), "b"), "truncated to " + std::to_string(len));
  }
  ExpectInvalid(codec.Open(cursor + "A", "b"), "extended");
  ExpectInvalid(codec.Open(cursor + "AAAA", "b"), "extended by a quantum");
}

TEST(CursorCodecTest, RejectsGarbageAndPaddingAndOtherAlphabets) {
  const CursorCodec codec(kSecret);
  const std::string cursor = Sealed(codec, kPosition, "b");
  ExpectInvalid(codec.Open(cursor + "=", "b"), "padded");
  ExpectInvalid(codec.Open("not a cursor", "b"), "garbage");
  ExpectInvalid(codec.Open("%2F%2F", "b"), "percent-encoded");
  std::string standard_alphabet = cursor;
  for (char& c : standard_alphabet) c = c == '-' ? '+' : c == '_' ? '/' : c;
  if (standard_alphabet != cursor) ExpectInvalid(codec.Open(standard_alphabet, "b"), "standard alphabet");
}

TEST(CursorCodecTest, RejectsAnAuthenticCursorOverTheLengthLimit) {
  const CursorCodec codec(kSecret);
  const Position huge{std::string(900, 'u'), "t", "i"};
  const std::string cursor = Sealed(codec, huge, "b");
  ASSERT_GT(cursor.size(), 1024u);
  ExpectInvalid(codec.Open(cursor, "b"), "over-long");
}

TEST(CursorCodecTest, RejectsWrongVersionAndKeyIdEvenWithAValidSeal) {
  const CursorCodec codec(kSecret);
  std::string wire = crypto::Base64UrlDecode(Sealed(codec, kPosition, "b")).value();
  for (std::size_t i = 0; i < 5; ++i) {
    std::string edited = wire;
    edited[i] = static_cast<char>(edited[i] ^ 0x40);
    ExpectInvalid(codec.Open(crypto::Base64UrlEncode(edited), "b"), "header byte " + std::to_string(i));
  }
}

// BindingFor -------------------------------------------------------------------

TEST(CursorBindingTest, EveryFilterAndTheViewerChangeTheBinding) {
  ListQuery base;
  base.user_id = "alice";
  base.viewer = "alice";
  base.category = "animals";
  base.created_from = "2024-01-01T00:00:00.000000Z";
  base.created_to = "2024-12-31T23:59:59.999999Z";
  base.tags = {"cat", "cute"};
  base.visibility = Visibility::kPublic;

  std::vector<ListQuery> variants(1, base);
  auto vary = [&](auto edit) {
    ListQuery q = base;
    edit(q);
    variants.push_back(q);
  };
  vary([](ListQuery& q) { q.user_id.reset(); });
  vary([](ListQuery& q) { q.user_id = ""; });
  vary([](ListQuery& q) { q.user_id = "bob"; });
  vary([](ListQuery& q) { q.viewer.reset(); });
  vary([](ListQuery& q) { q.viewer = "bob"; });
  vary([](ListQuery& q) { q.category.reset(); });
  vary([](ListQuery& q) { q.category = ""; });
  vary([](ListQuery& q) { q.created_from.reset(); });
  vary([](ListQuery& q) { q.created_from = "2024-01-01T00:00:00.000001Z"; });
  vary([](ListQuery& q) { q.created_to.reset(); });
  vary([](ListQuery& q) { q.created_to = *q.created_from; });
  vary([](ListQuery& q) { q.tags.clear(); });
  vary([](ListQuery& q) { q.tags = {"cat"}; });
  vary([](ListQuery& q) { q.tags = {"catcute"}; });
  vary([](ListQuery& q) { q.tags = {"cat", "cute", ""}; });
  vary([](ListQuery& q) { q.visibility.reset(); });
  vary([](ListQuery& q) { q.visibility = Visibility::kPrivate; });

  std::set<std::string> bindings;
  for (const auto& q : variants) bindings.insert(CursorCodec::BindingFor(q));
  EXPECT_EQ(bindings.size(), variants.size());
}

TEST(CursorBindingTest, IsUnambiguousAcrossFieldBoundaries) {
  ListQuery a, b;
  a.user_id = "ab";
  a.category = "c";
  b.user_id = "a";
  b.category = "bc";
  EXPECT_NE(CursorCodec::BindingFor(a), CursorCodec::BindingFor(b));

  ListQuery viewer_only, user_only;
  viewer_only.viewer = "alice";
  user_only.user_id = "alice";
  EXPECT_NE(CursorCodec::BindingFor(viewer_only), CursorCodec::BindingFor(user_only));
}

TEST(CursorBindingTest, TagOrderDoesNotMatter) {
  ListQuery a, b;
  a.tags = {"cat", "cute", "dog"};
  b.tags = {"dog", "cat", "cute"};
  EXPECT_EQ(CursorCodec::BindingFor(a), CursorCodec::BindingFor(b));
}

TEST(CursorCodecTest, AsksForTheSecretAtFirstUseAndThenNeverAgain) {
  int asked = 0;
  const CursorCodec lazy([&asked]() -> StatusOr<std::string> {
    ++asked;
    return std::string(kSecret);
  });
  EXPECT_EQ(asked, 0);
  const std::string cursor = Sealed(lazy, kPosition, "b");
  EXPECT_EQ(asked, 1);
  EXPECT_TRUE(lazy.Open(cursor, "b").ok());
  EXPECT_TRUE(CursorCodec(kSecret).Open(cursor, "b").ok()) << "the same key as from the secret itself";
  EXPECT_EQ(asked, 1);
}

TEST(CursorCodecTest, ReturnsTheSecretsErrorUntilTheSecretCanBeHad) {
  int asked = 0;
  const CursorCodec lazy([&asked]() -> StatusOr<std::string> {
    if (++asked == 1) return Status(Code::kUnavailable, "Secrets Manager GetSecretValue: timed out");
    return std::string(kSecret);
  });
  const StatusOr<std::string> refused = lazy.Seal(kPosition, "b");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kUnavailable);
  const std::string cursor = Sealed(lazy, kPosition, "b");
  EXPECT_EQ(asked, 2);
  EXPECT_TRUE(CursorCodec(kSecret).Open(cursor, "b").ok());
}

TEST(CursorCodecTest, OpeningAsksForTheSecretAndReportsItsError) {
  const CursorCodec unavailable([]() -> StatusOr<std::string> { return Status(Code::kUnavailable, "down"); });
  const StatusOr<Position> opened = unavailable.Open(Sealed(CursorCodec(kSecret), kPosition, "b"), "b");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), Code::kUnavailable) << "not a 400: the cursor may be fine";
}

// The secret comes from the token source, which may park the caller (on a
// fiber: two requests of one io thread).
TEST(CursorCodecTest, NoLockIsHeldWhileTheSecretIsFetched) {
  const CursorCodec lazy([]() -> StatusOr<std::string> {
    RunBlocking([] {});
    return std::string(kSecret);
  });
  StatusOr<std::string> other = Status(Code::kInternal, "not run");
  {
    imgsvc::testing::MeanwhileOnAnotherThread hook([&] { other = lazy.Seal(kPosition, "b"); });
    SetThreadBlockingHook(&hook);
    const StatusOr<std::string> first = lazy.Seal(kPosition, "b");
    SetThreadBlockingHook(nullptr);
    EXPECT_TRUE(hook.finished_in_time()) << "the second caller waited for the parked one's lock";
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    EXPECT_TRUE(CursorCodec(kSecret).Open(*first, "b").ok());
  }
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_TRUE(lazy.Open(*other, "b").ok());
}

TEST(CursorBindingTest, ACursorFromOneCallerDoesNotOpenForAnother) {
  const CursorCodec codec(kSecret);
  ListQuery alice;
  alice.viewer = "alice";
  ListQuery anonymous;
  const std::string cursor = Sealed(codec, kPosition, CursorCodec::BindingFor(alice));
  EXPECT_TRUE(codec.Open(cursor, CursorCodec::BindingFor(alice)).ok());
  ExpectInvalid(codec.Open(cursor, CursorCodec::BindingFor(anonymous)), "anonymous replay");
}

}  // namespace
}  // namespace imgsvc::core
