// End-to-end: uploads stream. A 200 MiB upload is stored with a small,
// bounded server memory peak, and an oversized upload is refused (413) while
// the client is still sending. The bodies are generated on the fly: neither
// side ever holds them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "crypto/crypto.h"
#include "e2e_harness.h"
#include "support/image_fixtures.h"

namespace imgsvc::e2e {
namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

// A one-file multipart body: form fields, then a TIFF (whose trailing bytes
// may be anything, so zero padding keeps it a valid file) grown to
// file_size, then the closing delimiter. It hashes the
// file's bytes as they go out.
class GeneratedUpload {
 public:
  GeneratedUpload(const std::string& user, std::uint64_t file_size)
      : image_head_(testing::MakeImage(core::ImageFormat::kTiff, 256, 256)), file_size_(file_size) {
    form_.AddField("user_id", user);
    prefix_ = form_.OpenFile("files", "huge.tif", "image/tiff");
    suffix_ = form_.Build();
  }

  std::uint64_t size() const { return prefix_.size() + file_size_ + suffix_.size(); }
  std::string content_type() const { return form_.ContentType(); }

  std::size_t Produce(std::span<char> out, std::uint64_t offset) {
    std::size_t written = 0;
    while (written < out.size() && offset + written < size()) {
      const std::uint64_t at = offset + written;
      const std::size_t room = out.size() - written;
      std::size_t n;
      if (at < prefix_.size()) {
        n = std::min<std::uint64_t>(room, prefix_.size() - at);
        std::memcpy(out.data() + written, prefix_.data() + at, n);
      } else if (at < prefix_.size() + file_size_) {
        const std::uint64_t in_file = at - prefix_.size();
        n = std::min<std::uint64_t>(room, file_size_ - in_file);
        if (in_file < image_head_.size()) {
          n = std::min<std::uint64_t>(n, image_head_.size() - in_file);
          std::memcpy(out.data() + written, image_head_.data() + in_file, n);
        } else {
          std::memset(out.data() + written, 0, n);
        }
        sha_.Update(std::string_view(out.data() + written, n));
      } else {
        const std::uint64_t in_suffix = at - prefix_.size() - file_size_;
        n = std::min<std::uint64_t>(room, suffix_.size() - in_suffix);
        std::memcpy(out.data() + written, suffix_.data() + in_suffix, n);
      }
      written += n;
    }
    return written;
  }

  std::string FileSha256() { return crypto::HexEncode(sha_.Finish()); }

 private:
  MultipartBuilder form_;
  std::string image_head_;
  std::uint64_t file_size_;
  std::string prefix_;
  std::string suffix_;
  crypto::Sha256 sha_;
};

testing::StreamedExchange Send(const TestServer& server, const std::string& user, GeneratedUpload& upload) {
  HttpRequest head;
  head.method = "POST";
  head.target = "/api/v1/images";
  head.headers = {{"Content-Type", upload.content_type()}, {"x-api-key", KeyFor(user)}};
  return testing::StreamRequest(
      server.host(), server.port(), head, upload.size(),
      [&](std::span<char> out, std::uint64_t offset) { return upload.Produce(out, offset); },
      std::chrono::seconds(240));
}

// Whether this build (and so the server it starts) runs under ASan, whose
// shadow memory and quarantine count in the server's RSS.
constexpr bool kUnderAddressSanitizer =
#if defined(__SANITIZE_ADDRESS__)
    true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    true;
#else
    false;
#endif
#else
    false;
#endif

TEST(StreamingTest, Upload200MiBWithServerPeakMemoryUnder64MiB) {
  auto server = TestServer::Start({"--max-upload-mb", "300"});
  ASSERT_NE(server, nullptr);
  const std::string user = UniqueUser("alice");
  GeneratedUpload upload(user, 200 * kMiB);
  auto exchange = Send(*server, user, upload);
  ASSERT_TRUE(exchange.response.has_value()) << exchange.error;
  ASSERT_EQ(exchange.response->status, 201) << exchange.response->body;
  EXPECT_TRUE(exchange.body_complete);

  auto body = Json(*exchange.response);
  const auto& rec = body.as_object().at("images").as_array()[0];
  EXPECT_EQ(rec.as_object().at("size_bytes"), static_cast<std::int64_t>(200 * kMiB));
  EXPECT_EQ(Str(rec, "sha256"), upload.FileSha256());
  EXPECT_EQ(Str(rec, "format"), "tiff");

  auto memory = server->process().Memory();
  ASSERT_TRUE(memory.ok()) << memory.status().ToString();
  if (kUnderAddressSanitizer) GTEST_SKIP() << "peak RSS under ASan: " << memory->vm_hwm_kib << " KiB";
  EXPECT_LT(memory->vm_hwm_kib, 64 * 1024) << "server peak RSS " << memory->vm_hwm_kib << " KiB";
}

TEST(StreamingTest, OversizedUploadIs413WhileTheClientIsStillSending) {
  auto server = TestServer::Start();  // default per-file limit: 20 MiB
  ASSERT_NE(server, nullptr);
  const std::string user = UniqueUser("alice");
  GeneratedUpload upload(user, 30 * kMiB);
  auto exchange = Send(*server, user, upload);
  ASSERT_TRUE(exchange.response.has_value()) << exchange.error;
  EXPECT_EQ(exchange.response->status, 413) << exchange.response->body;
  ASSERT_TRUE(exchange.bytes_sent_at_response.has_value());
  EXPECT_LT(*exchange.bytes_sent_at_response, upload.size()) << "the answer came only after the whole body";
  EXPECT_LT(*exchange.bytes_sent_at_response, 40 * kMiB);
  EXPECT_FALSE(exchange.body_complete);
  EXPECT_TRUE(ListAllIds(*server, "user_id=" + user, KeyFor(user)).empty());
}

}  // namespace
}  // namespace imgsvc::e2e
