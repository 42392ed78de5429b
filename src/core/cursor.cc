#include "core/cursor.h"

#include <algorithm>
#include <span>

#include "crypto/crypto.h"

namespace imgsvc::core {
namespace {

constexpr char kVersion = 0x01;
constexpr std::size_t kHeaderBytes = 1 + 4;  // version, key id
// Far above any real cursor (about 150 characters); bounds the work a hostile
// one can cause.
constexpr std::size_t kMaxCursorChars = 1024;

Status InvalidCursor() { return Status(Code::kBadRequest, "Invalid pagination cursor"); }

void AppendVarint(std::string& out, std::size_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void AppendString(std::string& out, std::string_view s) {
  AppendVarint(out, s.size());
  out += s;
}

// Absent and empty must bind differently: 0 marks absent, 1 precedes a value.
void AppendOptional(std::string& out, const std::optional<std::string_view>& s) {
  if (!s) {
    out.push_back('\0');
    return;
  }
  out.push_back('\1');
  AppendString(out, *s);
}

std::optional<std::string_view> Optional(const std::optional<std::string>& s) {
  if (!s) return std::nullopt;
  return std::string_view(*s);
}

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  std::optional<std::string> String() {
    std::size_t length = 0;
    // A cursor payload is under 1 KiB: two varint bytes cover every length.
    for (int shift = 0;; shift += 7) {
      if (data_.empty() || shift > 7) return std::nullopt;
      const auto byte = static_cast<unsigned char>(data_.front());
      data_.remove_prefix(1);
      length |= static_cast<std::size_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) break;
    }
    if (length > data_.size()) return std::nullopt;
    std::string out(data_.substr(0, length));
    data_.remove_prefix(length);
    return out;
  }
  bool AtEnd() const { return data_.empty(); }

 private:
  std::string_view data_;
};

std::string AssociatedData(std::string_view header, std::string_view binding) {
  std::string aad;
  aad.reserve(header.size() + binding.size());
  aad += header;
  aad += binding;
  return aad;
}

}  // namespace

CursorCodec::Key::Key(std::string_view service_secret)
    : bytes(crypto::HkdfSha256(service_secret, "imgsvc-cursor", "v1")) {
  const crypto::Sha256Digest digest =
      crypto::Sha256Of(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  std::copy_n(digest.begin(), id.size(), id.begin());
}

CursorCodec::CursorCodec(std::string_view service_secret) : key_(std::in_place, service_secret), ready_(true) {}

CursorCodec::CursorCodec(SecretSource secret) : secret_(std::move(secret)) {}

StatusOr<const CursorCodec::Key*> CursorCodec::GetKey() const {
  if (ready_.load(std::memory_order_acquire)) return &*key_;
  // Asked for outside the lock: the secret may come over the network (the
  // API token from Secrets Manager), where a request on a fiber parks, and
  // no lock is held across a park (server/fiber.h). Callers that meet here
  // may each ask; the first key made is kept.
  IMGSVC_ASSIGN_OR_RETURN(const std::string secret, secret_());
  std::lock_guard lock(mutex_);
  if (!key_) {
    key_.emplace(secret);
    ready_.store(true, std::memory_order_release);
  }
  return &*key_;
}

StatusOr<std::string> CursorCodec::Seal(const Position& position, std::string_view binding) const {
  IMGSVC_ASSIGN_OR_RETURN(const Key* key, GetKey());
  std::string payload;
  payload.reserve(position.user_id.size() + position.created_at.size() + position.image_id.size() + 6);
  AppendString(payload, position.user_id);
  AppendString(payload, position.created_at);
  AppendString(payload, position.image_id);

  std::string header(1, kVersion);
  header.append(reinterpret_cast<const char*>(key->id.data()), key->id.size());
  std::string wire = header + crypto::Aes256GcmSeal(key->bytes, payload, AssociatedData(header, binding));
  return crypto::Base64UrlEncode(wire);
}

StatusOr<Position> CursorCodec::Open(std::string_view cursor, std::string_view binding) const {
  if (cursor.size() > kMaxCursorChars) return InvalidCursor();
  IMGSVC_ASSIGN_OR_RETURN(const Key* key, GetKey());
  const std::optional<std::string> wire = crypto::Base64UrlDecode(cursor);
  if (!wire || wire->size() < kHeaderBytes) return InvalidCursor();
  const std::string_view header = std::string_view(*wire).substr(0, kHeaderBytes);
  const std::string_view key_id(reinterpret_cast<const char*>(key->id.data()), key->id.size());
  if (header[0] != kVersion || header.substr(1) != key_id) return InvalidCursor();

  const std::optional<std::string> payload =
      crypto::Aes256GcmOpen(key->bytes, std::string_view(*wire).substr(kHeaderBytes), AssociatedData(header, binding));
  if (!payload) return InvalidCursor();
  Reader reader(*payload);
  auto user_id = reader.String();
  auto created_at = reader.String();
  auto image_id = reader.String();
  if (!user_id || !created_at || !image_id || !reader.AtEnd()) return InvalidCursor();
  return Position{std::move(*user_id), std::move(*created_at), std::move(*image_id)};
}

std::string CursorCodec::BindingFor(const ListQuery& query) {
  std::string out = "list-v1";
  AppendOptional(out, Optional(query.viewer));
  AppendOptional(out, Optional(query.user_id));
  AppendOptional(out, Optional(query.created_from));
  AppendOptional(out, Optional(query.created_to));
  AppendOptional(out, Optional(query.category));
  // The same filter set binds the same, whatever order the tags came in.
  std::vector<std::string_view> tags(query.tags.begin(), query.tags.end());
  std::sort(tags.begin(), tags.end());
  AppendVarint(out, tags.size());
  for (const std::string_view tag : tags) AppendString(out, tag);
  AppendOptional(out, query.visibility ? std::optional(VisibilityName(*query.visibility)) : std::nullopt);
  return out;
}

}  // namespace imgsvc::core
