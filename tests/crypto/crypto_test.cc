#include "crypto/crypto.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace imgsvc::crypto {
namespace {

std::string Hex(const Sha256Digest& d) { return HexEncode(std::span<const std::uint8_t>(d)); }

std::string Unhex(std::string_view hex) {
  auto bytes = HexDecode(hex);
  EXPECT_TRUE(bytes.has_value()) << hex;
  return bytes.value_or("");
}

std::array<std::uint8_t, 32> KeyFromHex(std::string_view hex) {
  const std::string bytes = Unhex(hex);
  std::array<std::uint8_t, 32> key{};
  EXPECT_EQ(bytes.size(), key.size());
  std::copy_n(bytes.begin(), std::min(bytes.size(), key.size()), key.begin());
  return key;
}

// SHA-256 ------------------------------------------------------------------

TEST(Sha256Test, NistVectors) {
  EXPECT_EQ(Hex(Sha256Of("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hex(Sha256Of("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hex(Sha256Of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, IncrementalMatchesNistMillionA) {
  Sha256 hash;
  const std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) {
    if (i % 2 == 0) {
      hash.Update(chunk);
    } else {
      hash.Update(std::as_bytes(std::span(chunk.data(), chunk.size())));
    }
  }
  EXPECT_EQ(Hex(hash.Finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, ByteByByteEqualsOneShot) {
  const std::string text = "The quick brown fox jumps over the lazy dog";
  Sha256 hash;
  for (const char c : text) hash.Update(std::string_view(&c, 1));
  EXPECT_EQ(hash.Finish(), Sha256Of(text));
}

TEST(Sha256Test, ACopyForksTheHash) {
  Sha256 prefix;
  prefix.Update("common prefix, ");
  Sha256 fork = prefix;
  prefix.Update("one ending");
  fork.Update("another ending");
  EXPECT_EQ(prefix.Finish(), Sha256Of("common prefix, one ending"));
  EXPECT_EQ(fork.Finish(), Sha256Of("common prefix, another ending"));
}

// HMAC-SHA256 (RFC 4231) -----------------------------------------------------

TEST(HmacSha256Test, Rfc4231) {
  EXPECT_EQ(Hex(HmacSha256(std::string(20, '\x0b'), "Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(Hex(HmacSha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Test case 6: a key longer than the block size is hashed first.
  const std::string long_key(131, '\xaa');
  const std::span<const std::uint8_t> key_bytes(reinterpret_cast<const std::uint8_t*>(long_key.data()),
                                                long_key.size());
  EXPECT_EQ(Hex(HmacSha256(key_bytes, "Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(HmacSha256Test, RekeyingBetweenCallsGivesIndependentResults) {
  const auto a1 = HmacSha256("key-a", "msg");
  const auto b = HmacSha256("key-b", "msg");
  const auto a2 = HmacSha256("key-a", "msg");
  EXPECT_EQ(a1, a2);
  EXPECT_NE(a1, b);
  EXPECT_NE(HmacSha256("", "msg"), HmacSha256("x", "msg"));
}

std::string Repeat(std::string_view text, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += text;
  return out;
}

// RFC 4231 test cases 1, 2, 3, 4, 6 and 7 (5 truncates the output), through
// one key object that signs its message three times.
TEST(HmacSha256KeyTest, Rfc4231ThroughAReusedKey) {
  struct Case {
    std::string key_hex;
    std::string data;
    std::string mac_hex;
  };
  const std::string long_key_hex(262, 'a');  // 131 bytes of 0xaa
  const std::vector<Case> vectors = {
      {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"4a656665", "what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {std::string(40, 'a'), Unhex(std::string(100, 'd')),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {"0102030405060708090a0b0c0d0e0f10111213141516171819", Unhex(Repeat("cd", 50)),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {long_key_hex, "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {long_key_hex,
       "This is a test using a larger than block-size key and a larger than block-size data. The key needs to "
       "be hashed before being used by the HMAC algorithm.",
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  for (const Case& c : vectors) {
    const HmacSha256Key key(Unhex(c.key_hex));
    for (int i = 0; i < 3; ++i) EXPECT_EQ(Hex(key.Mac(c.data)), c.mac_hex) << c.key_hex << " round " << i;
  }
}

TEST(HmacSha256KeyTest, MatchesTheOneShotForEveryMessageLengthAroundTheBlocks) {
  const HmacSha256Key key("a day's signing key, 32 bytes!!");
  std::string message;
  for (std::size_t length = 0; length <= 200; ++length) {
    EXPECT_EQ(key.Mac(message), HmacSha256("a day's signing key, 32 bytes!!", message)) << length;
    message.push_back(static_cast<char>('a' + length % 26));
  }
}

// A message in parts (a signed URL's "GET\n", key, "\n", expiry) is MACed
// as its concatenation, wherever the parts split it.
TEST(HmacSha256KeyTest, PartsAreMacedAsTheirConcatenation) {
  const HmacSha256Key key("a day's signing key, 32 bytes!!");
  std::string message;
  for (int i = 0; i < 150; ++i) message.push_back(static_cast<char>('a' + i % 26));
  for (std::size_t first = 0; first <= message.size(); first += 7) {
    for (std::size_t second = first; second <= message.size(); second += 13) {
      const std::string_view view(message);
      EXPECT_EQ(key.Mac({view.substr(0, first), view.substr(first, second - first), "", view.substr(second)}),
                key.Mac(message))
          << first << " " << second;
    }
  }
}

TEST(HmacSha256KeyTest, KeysAndCopiesAreIndependent) {
  const HmacSha256Key a("key-a");
  const HmacSha256Key b("key-b");
  const HmacSha256Key copy = a;
  EXPECT_EQ(copy.Mac("msg"), a.Mac("msg"));
  EXPECT_NE(a.Mac("msg"), b.Mac("msg"));
  EXPECT_EQ(HmacSha256Key("").Mac("msg"), HmacSha256("", "msg"));
  EXPECT_NE(HmacSha256Key("").Mac("msg"), HmacSha256Key("x").Mac("msg"));
}

TEST(HmacSha256KeyTest, OneKeySharedByThreadsGivesEveryThreadTheSameMacs) {
  const HmacSha256Key key("shared");
  const Sha256Digest expected = HmacSha256("shared", "message");
  std::atomic<int> mismatches = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        if (key.Mac("message") != expected) ++mismatches;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// MD5 -----------------------------------------------------------------------

TEST(Md5Base64Test, Rfc1321Digests) {
  EXPECT_EQ(Md5Base64(""), Base64Encode(Unhex("d41d8cd98f00b204e9800998ecf8427e")));
  EXPECT_EQ(Md5Base64("abc"), Base64Encode(Unhex("900150983cd24fb0d6963f7d28e17f72")));
  EXPECT_EQ(Md5Base64("abc"), "kAFQmDzST7DWlj99KOF/cg==");
}

// Random --------------------------------------------------------------------

TEST(RandomBytesTest, FillsWithDistinctValues) {
  std::array<std::uint8_t, 32> a{}, b{};
  RandomBytes(a);
  RandomBytes(b);
  EXPECT_NE(a, b);
  EXPECT_NE(a, (std::array<std::uint8_t, 32>{}));
}

TEST(RandomBytesTest, SmallDrawsFromOneThreadNeverRepeat) {
  // Small draws come from a per-thread batch: 1,000 of them span several
  // refills, and none may hand out bytes another already had.
  std::set<std::array<std::uint8_t, 16>> seen;
  for (int i = 0; i < 1000; ++i) {
    std::array<std::uint8_t, 16> draw{};
    RandomBytes(draw);
    EXPECT_TRUE(seen.insert(draw).second) << "draw " << i << " repeated an earlier one";
  }
}

TEST(RandomBytesTest, AForkedChildDoesNotRepeatItsParentsDraws) {
  std::array<std::uint8_t, 16> warm{};
  RandomBytes(warm);  // the parent's batch now holds unused bytes
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::array<std::uint8_t, 16> drawn{};
    RandomBytes(drawn);
    const bool written = ::write(pipe_fds[1], drawn.data(), drawn.size()) == static_cast<ssize_t>(drawn.size());
    ::_exit(written ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  std::array<std::uint8_t, 16> from_child{};
  const ssize_t got = ::read(pipe_fds[0], from_child.data(), from_child.size());
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_EQ(got, static_cast<ssize_t>(from_child.size()));
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::array<std::uint8_t, 16> from_parent{};
  RandomBytes(from_parent);  // what the parent's batch hands out next
  EXPECT_NE(from_child, from_parent);
}

// HKDF (RFC 5869) -----------------------------------------------------------

TEST(HkdfSha256Test, Rfc5869TestCase1) {
  const auto okm = HkdfSha256(std::string(22, '\x0b'), Unhex("000102030405060708090a0b0c"),
                              Unhex("f0f1f2f3f4f5f6f7f8f9"));
  // The first 32 bytes of the 42-byte OKM.
  EXPECT_EQ(HexEncode(okm), "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf");
}

TEST(HkdfSha256Test, Rfc5869TestCase3EmptySaltAndInfo) {
  const auto okm = HkdfSha256(std::string(22, '\x0b'), "", "");
  EXPECT_EQ(HexEncode(okm), "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d");
}

// AES-256-GCM ---------------------------------------------------------------

// "The Galois/Counter Mode of Operation", test case 16 (AES-256, 60-byte
// plaintext, 20-byte AAD).
constexpr std::string_view kGcmKey = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
constexpr std::string_view kGcmIv = "cafebabefacedbaddecaf888";
constexpr std::string_view kGcmPlain =
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de"
    "657ba637b39";
constexpr std::string_view kGcmAad = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
constexpr std::string_view kGcmCipher =
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7"
    "a0abcc9f662";
constexpr std::string_view kGcmTag = "76fc6ece0f4e1768cddf8853bb2d551b";

TEST(Aes256GcmTest, OpensKnownAnswerVector) {
  const auto key = KeyFromHex(kGcmKey);
  const std::string sealed = Unhex(kGcmIv) + Unhex(kGcmCipher) + Unhex(kGcmTag);
  const auto plain = Aes256GcmOpen(key, sealed, Unhex(kGcmAad));
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(HexEncode(*plain), kGcmPlain);
}

TEST(Aes256GcmTest, RoundTripsIncludingEmptyPlaintext) {
  std::array<std::uint8_t, 32> key;
  RandomBytes(key);
  for (const std::string& plain : {std::string(), std::string("x"), std::string(1000, 'q')}) {
    const std::string sealed = Aes256GcmSeal(key, plain, "aad");
    EXPECT_EQ(sealed.size(), 12 + plain.size() + 16);
    EXPECT_EQ(Aes256GcmOpen(key, sealed, "aad"), plain);
  }
}

TEST(Aes256GcmTest, NoncesAreFresh) {
  std::array<std::uint8_t, 32> key{};
  std::set<std::string> nonces;
  for (int i = 0; i < 100; ++i) nonces.insert(Aes256GcmSeal(key, "same", "").substr(0, 12));
  EXPECT_EQ(nonces.size(), 100u);
}

TEST(Aes256GcmTest, EveryTamperedByteIsRejected) {
  std::array<std::uint8_t, 32> key;
  RandomBytes(key);
  const std::string sealed = Aes256GcmSeal(key, "position payload", "binding");
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    std::string tampered = sealed;
    tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
    EXPECT_FALSE(Aes256GcmOpen(key, tampered, "binding").has_value()) << "byte " << i;
  }
}

TEST(Aes256GcmTest, RejectsWrongKeyAadAndTruncation) {
  std::array<std::uint8_t, 32> key;
  RandomBytes(key);
  auto other_key = key;
  other_key[31] ^= 0x80;
  const std::string sealed = Aes256GcmSeal(key, "secret", "aad");
  EXPECT_FALSE(Aes256GcmOpen(other_key, sealed, "aad").has_value());
  EXPECT_FALSE(Aes256GcmOpen(key, sealed, "aae").has_value());
  EXPECT_FALSE(Aes256GcmOpen(key, sealed, "").has_value());
  for (std::size_t len = 0; len < sealed.size(); ++len) {
    EXPECT_FALSE(Aes256GcmOpen(key, sealed.substr(0, len), "aad").has_value()) << "length " << len;
  }
  EXPECT_FALSE(Aes256GcmOpen(key, sealed + "x", "aad").has_value());
}

// Constant-time comparison ----------------------------------------------------

TEST(ConstantTimeEqualTest, ComparesContentAndLength) {
  EXPECT_TRUE(ConstantTimeEqual("", ""));
  EXPECT_TRUE(ConstantTimeEqual("token", "token"));
  EXPECT_FALSE(ConstantTimeEqual("token", "tokem"));
  EXPECT_FALSE(ConstantTimeEqual("token", "Token"));
  EXPECT_FALSE(ConstantTimeEqual("token", "token2"));
  EXPECT_FALSE(ConstantTimeEqual("token2", "token"));
  EXPECT_FALSE(ConstantTimeEqual("", "x"));
  EXPECT_FALSE(ConstantTimeEqual("x", ""));
  EXPECT_TRUE(ConstantTimeEqual(std::string_view("a\0b", 3), std::string_view("a\0b", 3)));
  EXPECT_FALSE(ConstantTimeEqual(std::string_view("a\0b", 3), std::string_view("a\0c", 3)));
}

// Hex -------------------------------------------------------------------------

TEST(HexTest, EncodesLowerCaseDecodesEitherCase) {
  EXPECT_EQ(HexEncode(std::string_view("\x00\xff\x10\xab", 4)), "00ff10ab");
  EXPECT_EQ(HexEncode(std::string_view()), "");
  EXPECT_EQ(HexDecode("00ff10ab"), std::string("\x00\xff\x10\xab", 4));
  EXPECT_EQ(HexDecode("00FF10AB"), std::string("\x00\xff\x10\xab", 4));
  EXPECT_EQ(HexDecode(""), std::string());
}

TEST(HexTest, EncodesEveryByteValue) {
  std::string all;
  std::string expected;
  for (int byte = 0; byte < 256; ++byte) {
    all.push_back(static_cast<char>(byte));
    char pair[3];
    std::snprintf(pair, sizeof pair, "%02x", byte);
    expected += pair;
  }
  EXPECT_EQ(HexEncode(all), expected);
  EXPECT_EQ(HexDecode(expected), all);
  std::string appended = "prefix:";
  AppendHex(appended, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(all.data()), all.size()));
  EXPECT_EQ(appended, "prefix:" + expected);
}

TEST(HexTest, RejectsOddLengthAndNonHex) {
  EXPECT_FALSE(HexDecode("0").has_value());
  EXPECT_FALSE(HexDecode("abc").has_value());
  EXPECT_FALSE(HexDecode("zz").has_value());
  EXPECT_FALSE(HexDecode("0g").has_value());
  EXPECT_FALSE(HexDecode(" 00").has_value());
}

// Base64 (RFC 4648 section 10) ----------------------------------------------------

struct Base64Vector {
  std::string_view plain;
  std::string_view encoded;
};

constexpr Base64Vector kRfc4648[] = {
    {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};

TEST(Base64Test, Rfc4648Vectors) {
  for (const auto& v : kRfc4648) {
    EXPECT_EQ(Base64Encode(v.plain), v.encoded);
    EXPECT_EQ(Base64Decode(v.encoded), std::string(v.plain));
    std::string unpadded(v.encoded);
    while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
    EXPECT_EQ(Base64Decode(unpadded), std::string(v.plain)) << "padding is optional";
    EXPECT_EQ(Base64UrlEncode(v.plain), unpadded);
    EXPECT_EQ(Base64UrlDecode(unpadded), std::string(v.plain));
  }
}

TEST(Base64Test, AlphabetsDifferInTheLastTwoCharacters) {
  const std::string bytes("\xfb\xff\xbf", 3);
  EXPECT_EQ(Base64Encode(bytes), "+/+/");
  EXPECT_EQ(Base64UrlEncode(bytes), "-_-_");
  EXPECT_EQ(Base64Decode("+/+/"), bytes);
  EXPECT_EQ(Base64UrlDecode("-_-_"), bytes);
}

TEST(Base64Test, RoundTripsEveryByteValue) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (std::size_t len = 0; len <= all.size(); len += 37) {
    const std::string data = all.substr(0, len);
    EXPECT_EQ(Base64Decode(Base64Encode(data)), data);
    EXPECT_EQ(Base64UrlDecode(Base64UrlEncode(data)), data);
  }
}

TEST(Base64Test, StandardDecoderIsStrict) {
  for (const std::string_view bad : {"Z", "Zg=", "Zg===", "=", "==", "Zm9v=", "Zh==", "Zm9=", "Zm9v\n", "Zm 9v",
                                     "Zg==Zg==", "Zm-v", "Zm_v", "Z=g="}) {
    EXPECT_FALSE(Base64Decode(bad).has_value()) << bad;
  }
}

TEST(Base64Test, UrlDecoderIsStrict) {
  for (const std::string_view bad : {"Zg==", "Zm8=", "+/+/", "Zm/v", "Z", "Zh", "Zm9vYmF=", "Zm9v\n", "Zm.v"}) {
    EXPECT_FALSE(Base64UrlDecode(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace imgsvc::crypto
