#include "aws/sigv4.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <span>

#include "core/image.h"
#include "crypto/crypto.h"

namespace imgsvc::aws {
namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
constexpr std::string_view kUnsignedPayload = "UNSIGNED-PAYLOAD";
constexpr std::string_view kEmptyBodyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr std::size_t kMaxCachedKeys = 8;

// Headers a proxy, load balancer or the transport may add, drop or rewrite:
// signing them would break the signature in transit for no gain.
constexpr std::string_view kUnsignedHeaders[] = {
    "authorization", "connection", "expect",  "keep-alive", "proxy-authorization", "te",
    "trailer",       "transfer-encoding",     "upgrade",    "user-agent",          "x-amzn-trace-id",
};

constexpr bool IsUnreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Trimmed, with every run of whitespace inside reduced to one space (an
// obsolete folded value included), appended to `out`.
void AppendCanonicalHeaderValue(std::string& out, std::string_view value) {
  const std::size_t start = out.size();
  bool pending_space = false;
  for (char c : value) {
    if (IsSpace(c)) {
      pending_space = out.size() > start;
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
}

// Whether a value is its own canonical form: no whitespace but single
// spaces between words, as the values this client sends are.
bool IsCanonicalHeaderValue(std::string_view value) {
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] == ' ') {
      if (i == 0 || i + 1 == value.size() || value[i + 1] == ' ') return false;
    } else if (IsSpace(value[i])) {
      return false;
    }
  }
  return true;
}

bool IsSigned(std::string_view lower_name) {
  return std::find(std::begin(kUnsignedHeaders), std::end(kUnsignedHeaders), lower_name) ==
         std::end(kUnsignedHeaders);
}

// RFC 3986 dot-segment removal plus the collapsing of empty segments that AWS
// services apply; a trailing slash survives unless nothing is left.
std::string NormalisePath(std::string_view path) {
  std::vector<std::string_view> segments;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view segment = path.substr(start, end - start);
    if (segment == "..") {
      if (!segments.empty()) segments.pop_back();
    } else if (!segment.empty() && segment != ".") {
      segments.push_back(segment);
    }
    start = end + 1;
  }
  std::string out = "/";
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (i > 0) out.push_back('/');
    out.append(segments[i]);
  }
  if (!segments.empty() && path.ends_with('/')) out.push_back('/');
  return out;
}

std::string_view EffectivePayloadHash(const SignableRequest& request) {
  return request.payload_hash.empty() ? kEmptyBodyHash : std::string_view(request.payload_hash);
}

constexpr std::string_view kScopeTerminator = "/aws4_request";

void AppendCredentialScope(std::string& out, std::string_view date, const SigningScope& scope) {
  out.append(date).append("/").append(scope.region).append("/").append(scope.service).append(kScopeTerminator);
}

std::string CredentialScope(std::string_view date, const SigningScope& scope) {
  std::string out;
  out.reserve(date.size() + scope.region.size() + scope.service.size() + 2 + kScopeTerminator.size());
  AppendCredentialScope(out, date, scope);
  return out;
}

CanonicalHeaders BuildCanonicalHeaders(const std::vector<NameValue>& headers) {
  // Names already lower case and values already canonical (all this client
  // sends) are used where they are; only the others are rewritten, into
  // `rewritten`, reserved once so the views into it stay valid. Each
  // request is signed, and a copy per header was a tenth of a GET's
  // allocations.
  std::size_t room = 0;
  for (const auto& [name, value] : headers) room += name.size() + value.size();
  std::string rewritten;
  struct Header {
    std::string_view name;
    std::string_view value;
  };
  std::vector<Header> signed_headers;
  signed_headers.reserve(headers.size());
  // What `write` appends to `rewritten`, as a view.
  const auto rewrite = [&rewritten, room](const auto& write) {
    if (rewritten.capacity() < room) rewritten.reserve(room);
    const std::size_t at = rewritten.size();
    write(rewritten);
    return std::string_view(rewritten).substr(at);
  };
  for (const auto& [name, value] : headers) {
    std::string_view lower = name;
    if (std::any_of(name.begin(), name.end(), [](char c) { return core::LowerAsciiChar(c) != c; })) {
      lower = rewrite([&name](std::string& out) {
        std::transform(name.begin(), name.end(), std::back_inserter(out), core::LowerAsciiChar);
      });
    }
    if (!IsSigned(lower)) continue;
    std::string_view canonical = value;
    if (!IsCanonicalHeaderValue(value)) {
      canonical = rewrite([&value](std::string& out) { AppendCanonicalHeaderValue(out, value); });
    }
    signed_headers.push_back({lower, canonical});
  }
  // Stable: repeated headers keep the order they are sent in.
  std::stable_sort(signed_headers.begin(), signed_headers.end(),
                   [](const Header& a, const Header& b) { return a.name < b.name; });
  CanonicalHeaders out;
  std::size_t lines_size = 0;
  std::size_t names_size = 0;
  for (const Header& header : signed_headers) {
    lines_size += header.name.size() + header.value.size() + 2;
    names_size += header.name.size() + 1;
  }
  out.lines.reserve(lines_size);
  out.signed_headers.reserve(names_size);
  for (std::size_t i = 0; i < signed_headers.size(); ++i) {
    const bool same_as_previous = i > 0 && signed_headers[i].name == signed_headers[i - 1].name;
    if (same_as_previous) {
      out.lines.back() = ',';
    } else {
      if (!out.signed_headers.empty()) out.signed_headers.push_back(';');
      out.signed_headers.append(signed_headers[i].name);
      out.lines.append(signed_headers[i].name).push_back(':');
    }
    out.lines.append(signed_headers[i].value).push_back('\n');
  }
  return out;
}

// "name=value&name=value" from pairs already encoded.
template <class Pairs>
std::string JoinQuery(const Pairs& pairs) {
  std::size_t size = 0;
  for (const auto& [name, value] : pairs) size += name.size() + value.size() + 2;
  std::string out;
  out.reserve(size);
  for (const auto& [name, value] : pairs) {
    if (!out.empty()) out.push_back('&');
    out.append(name).append("=").append(value);
  }
  return out;
}

// `encoded_extra` holds pairs already percent-encoded (a presign's own);
// they are sorted in place by reference, never copied (one may be a
// kilobyte-long session token).
std::string CanonicalQuery(const std::vector<NameValue>& query, std::span<const NameValue> encoded_extra = {}) {
  std::vector<NameValue> encoded;
  encoded.reserve(query.size());
  for (const auto& [name, value] : query) encoded.emplace_back(UriEncode(name, false), UriEncode(value, false));
  std::vector<std::pair<std::string_view, std::string_view>> pairs;
  pairs.reserve(encoded.size() + encoded_extra.size());
  for (const std::span<const NameValue> part : {std::span<const NameValue>(encoded), encoded_extra}) {
    for (const auto& [name, value] : part) pairs.emplace_back(name, value);
  }
  std::sort(pairs.begin(), pairs.end());
  return JoinQuery(pairs);
}

std::string CanonicalPath(PathRule rule, std::string_view wire_path) {
  if (rule == PathRule::kNormaliseAndEncode) return UriEncode(NormalisePath(wire_path), true);
  return wire_path.empty() ? std::string("/") : std::string(wire_path);
}

// The canonical request after its path line: the same for every presigned
// GET of one host at one instant.
std::string CanonicalRequestTail(std::string_view canonical_query, const CanonicalHeaders& headers,
                                 std::string_view payload_hash) {
  std::string out;
  out.reserve(canonical_query.size() + headers.lines.size() + headers.signed_headers.size() +
              payload_hash.size() + 4);
  out.push_back('\n');
  out.append(canonical_query).push_back('\n');
  out.append(headers.lines).push_back('\n');
  out.append(headers.signed_headers).push_back('\n');
  out.append(payload_hash);
  return out;
}

// The string to sign without its last line, the canonical request's hash.
std::string StringToSignHead(const SigningScope& scope, std::string_view amz_date) {
  std::string out;
  // Room for the canonical request's hash too, appended by the caller.
  out.reserve(kAlgorithm.size() + amz_date.size() + scope.region.size() + scope.service.size() + 32 +
              2 * std::tuple_size_v<crypto::Sha256Digest>);
  out.append(kAlgorithm).push_back('\n');
  out.append(amz_date).push_back('\n');
  AppendCredentialScope(out, amz_date.substr(0, 8), scope);
  out.push_back('\n');
  return out;
}

void RemoveHeader(std::vector<NameValue>& headers, std::string_view name) {
  std::erase_if(headers, [name](const NameValue& header) { return core::EqualsIgnoreAsciiCase(header.first, name); });
}

}  // namespace

void AppendUriEncoded(std::string& out, std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  // A table: testing each byte's ranges was 12 instructions a byte, and a
  // listed page encodes 20 object keys.
  static constexpr std::array<bool, 256> kUnreserved = [] {
    std::array<bool, 256> unreserved{};
    for (int c = 0; c < 256; ++c) unreserved[static_cast<std::size_t>(c)] = IsUnreserved(static_cast<unsigned char>(c));
    return unreserved;
  }();
  const auto kept = [keep_slash](unsigned char byte) { return kUnreserved[byte] || (keep_slash && byte == '/'); };
  out.reserve(out.size() + text.size() + text.size() / 8);
  std::size_t i = 0;
  while (i < text.size()) {
    // Runs kept as they are go in one append: a session token is over a
    // kilobyte, encoded twice per presigned URL.
    std::size_t run_end = i;
    while (run_end < text.size() && kept(static_cast<unsigned char>(text[run_end]))) ++run_end;
    out.append(text.data() + i, run_end - i);
    if (run_end == text.size()) break;
    const auto byte = static_cast<unsigned char>(text[run_end]);
    out.push_back('%');
    out.push_back(kHex[byte >> 4]);
    out.push_back(kHex[byte & 0x0F]);
    i = run_end + 1;
  }
}

std::string UriEncode(std::string_view text, bool keep_slash) {
  std::string out;
  AppendUriEncoded(out, text, keep_slash);
  return out;
}

std::string AmzDate(std::chrono::system_clock::time_point when) {
  const auto whole_seconds = std::chrono::floor<std::chrono::seconds>(when);
  const auto day = std::chrono::floor<std::chrono::days>(whole_seconds);
  const std::chrono::year_month_day date{day};
  const std::chrono::hh_mm_ss clock_time{whole_seconds - day};
  // Digits by hand: snprintf was a tenth of a presign, which runs 20 times
  // per listed page.
  std::string text = "00000000T000000Z";
  const auto put = [&text](std::size_t end, unsigned value, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i, value /= 10) text[end - i] = static_cast<char>('0' + value % 10);
  };
  put(3, static_cast<unsigned>(static_cast<int>(date.year())), 4);
  put(5, static_cast<unsigned>(date.month()), 2);
  put(7, static_cast<unsigned>(date.day()), 2);
  put(10, static_cast<unsigned>(clock_time.hours().count()), 2);
  put(12, static_cast<unsigned>(clock_time.minutes().count()), 2);
  put(14, static_cast<unsigned>(clock_time.seconds().count()), 2);
  return text;
}

std::string Signer::CanonicalRequest(const SignableRequest& request) const {
  return CanonicalRequestWith(request, BuildCanonicalHeaders(request.headers), CanonicalQuery(request.query),
                              EffectivePayloadHash(request));
}

std::string Signer::CanonicalRequestWith(const SignableRequest& request, const CanonicalHeaders& headers,
                                         std::string_view canonical_query, std::string_view payload_hash) const {
  const std::string path = CanonicalPath(path_rule_, request.path);
  const std::string tail = CanonicalRequestTail(canonical_query, headers, payload_hash);
  std::string out;
  out.reserve(request.method.size() + path.size() + tail.size() + 1);
  out.append(request.method).push_back('\n');
  out.append(path).append(tail);
  return out;
}

std::string Signer::StringToSign(const SignableRequest& request, const SigningScope& scope,
                                 std::chrono::system_clock::time_point when) const {
  return StringToSignOf(CanonicalRequest(request), scope, AmzDate(when));
}

std::string Signer::StringToSignOf(std::string_view canonical_request, const SigningScope& scope,
                                   std::string_view amz_date) {
  const crypto::Sha256Digest hash = crypto::Sha256Of(canonical_request);
  std::string out = StringToSignHead(scope, amz_date);
  crypto::AppendHex(out, std::span<const std::uint8_t>(hash));
  return out;
}

std::string Signer::Signature(const SignableRequest& request, const Credentials& credentials,
                              const SigningScope& scope, std::chrono::system_clock::time_point when) {
  return SignatureOf(CanonicalRequest(request), credentials, scope, AmzDate(when));
}

std::string Signer::SignatureOf(std::string_view canonical_request, const Credentials& credentials,
                                const SigningScope& scope, std::string_view amz_date) {
  const crypto::HmacSha256Key key = SigningKey(credentials, scope, amz_date.substr(0, 8));
  const crypto::Sha256Digest mac = key.Mac(StringToSignOf(canonical_request, scope, amz_date));
  return crypto::HexEncode(std::span<const std::uint8_t>(mac));
}

void Signer::Sign(SignableRequest& request, const Credentials& credentials, const SigningScope& scope,
                  std::chrono::system_clock::time_point when) {
  const std::string amz_date = AmzDate(when);
  RemoveHeader(request.headers, "authorization");
  RemoveHeader(request.headers, "x-amz-date");
  RemoveHeader(request.headers, "x-amz-security-token");
  request.headers.emplace_back("x-amz-date", amz_date);
  if (!credentials.session_token.empty()) {
    request.headers.emplace_back("x-amz-security-token", credentials.session_token);
  }
  if (path_rule_ == PathRule::kAsIs) {
    RemoveHeader(request.headers, "x-amz-content-sha256");
    request.headers.emplace_back("x-amz-content-sha256", std::string(EffectivePayloadHash(request)));
  }
  const CanonicalHeaders headers = BuildCanonicalHeaders(request.headers);
  const std::string signature = SignatureOf(
      CanonicalRequestWith(request, headers, CanonicalQuery(request.query), EffectivePayloadHash(request)),
      credentials, scope, amz_date);
  std::string authorization;
  authorization.reserve(kAlgorithm.size() + credentials.access_key_id.size() + headers.signed_headers.size() +
                        signature.size() + scope.region.size() + scope.service.size() + 80);
  authorization.append(kAlgorithm).append(" Credential=").append(credentials.access_key_id).append("/");
  AppendCredentialScope(authorization, std::string_view(amz_date).substr(0, 8), scope);
  authorization.append(", SignedHeaders=").append(headers.signed_headers);
  authorization.append(", Signature=").append(signature);
  request.headers.emplace_back("authorization", std::move(authorization));
}

StatusOr<std::vector<NameValue>> Signer::PresignParameters(const Credentials& credentials,
                                                            const SigningScope& scope, std::string_view amz_date,
                                                            std::chrono::seconds expires,
                                                            std::string_view signed_headers) const {
  if (expires < std::chrono::seconds(1) || expires > kMaxPresignExpiry) {
    return Status(Code::kBadRequest, "a presigned URL must expire after 1 second to 7 days, not " +
                                         std::to_string(expires.count()) + " seconds");
  }
  // Wire order; each value is encoded once, for the canonical query and the
  // URL alike.
  std::vector<NameValue> added;
  added.reserve(7);
  added.emplace_back("X-Amz-Algorithm", std::string(kAlgorithm));
  added.emplace_back("X-Amz-Credential",
                     UriEncode(credentials.access_key_id + "/" + CredentialScope(amz_date.substr(0, 8), scope), false));
  added.emplace_back("X-Amz-Date", std::string(amz_date));
  added.emplace_back("X-Amz-Expires", std::to_string(expires.count()));
  added.emplace_back("X-Amz-SignedHeaders", UriEncode(signed_headers, false));
  if (!credentials.session_token.empty()) {
    added.emplace_back("X-Amz-Security-Token", UriEncode(credentials.session_token, false));
  }
  return added;
}

std::string_view Signer::PresignPayloadHash(const SignableRequest& request) const {
  return path_rule_ == PathRule::kAsIs ? kUnsignedPayload : EffectivePayloadHash(request);
}

StatusOr<std::string> Signer::PresignQuery(const SignableRequest& request, const Credentials& credentials,
                                           const SigningScope& scope,
                                           std::chrono::system_clock::time_point when,
                                           std::chrono::seconds expires) {
  const std::string amz_date = AmzDate(when);
  const CanonicalHeaders headers = BuildCanonicalHeaders(request.headers);
  IMGSVC_ASSIGN_OR_RETURN(std::vector<NameValue> added,
                          PresignParameters(credentials, scope, amz_date, expires, headers.signed_headers));
  const std::string canonical =
      CanonicalRequestWith(request, headers, CanonicalQuery(request.query, added), PresignPayloadHash(request));
  added.emplace_back("X-Amz-Signature", SignatureOf(canonical, credentials, scope, amz_date));
  return JoinQuery(added);
}

StatusOr<GetPresigner> Signer::PrepareGetPresign(std::string_view host, const Credentials& credentials,
                                                 const SigningScope& scope,
                                                 std::chrono::system_clock::time_point when,
                                                 std::chrono::seconds expires) {
  const std::string amz_date = AmzDate(when);
  const SignableRequest get{"GET", "/", {}, {{"host", std::string(host)}}, {}};
  const CanonicalHeaders headers = BuildCanonicalHeaders(get.headers);
  IMGSVC_ASSIGN_OR_RETURN(const std::vector<NameValue> added,
                          PresignParameters(credentials, scope, amz_date, expires, headers.signed_headers));
  return GetPresigner(path_rule_,
                      CanonicalRequestTail(CanonicalQuery({}, added), headers, PresignPayloadHash(get)),
                      StringToSignHead(scope, amz_date), JoinQuery(added) + "&X-Amz-Signature=",
                      SigningKey(credentials, scope, std::string_view(amz_date).substr(0, 8)));
}

GetPresigner::GetPresigner(PathRule path_rule, std::string canonical_rest, std::string string_to_sign_head,
                           std::string query_head, crypto::HmacSha256Key key)
    : path_rule_(path_rule),
      canonical_rest_(std::move(canonical_rest)),
      string_to_sign_head_(std::move(string_to_sign_head)),
      query_head_(std::move(query_head)),
      key_(std::move(key)) {}

std::string GetPresigner::Query(std::string_view path) const {
  crypto::Sha256 canonical_request;
  canonical_request.Update("GET\n");
  canonical_request.Update(CanonicalPath(path_rule_, path));
  canonical_request.Update(canonical_rest_);
  const crypto::Sha256Digest hash = canonical_request.Finish();
  std::string string_to_sign;
  string_to_sign.reserve(string_to_sign_head_.size() + 2 * hash.size());
  string_to_sign.append(string_to_sign_head_).append(crypto::HexEncode(std::span<const std::uint8_t>(hash)));
  const crypto::Sha256Digest mac = key_.Mac(string_to_sign);
  std::string query;
  query.reserve(query_head_.size() + 2 * mac.size());
  query.append(query_head_).append(crypto::HexEncode(std::span<const std::uint8_t>(mac)));
  return query;
}

crypto::HmacSha256Key Signer::SigningKey(const Credentials& credentials, const SigningScope& scope,
                                         std::string_view date) {
  std::lock_guard lock(cache_mutex_);
  for (const CachedKey& cached : cached_keys_) {
    if (cached.date == date && cached.region == scope.region && cached.service == scope.service &&
        cached.secret_access_key == credentials.secret_access_key) {
      return cached.key;
    }
  }
  std::string key = "AWS4" + credentials.secret_access_key;
  for (std::string_view part : {date, std::string_view(scope.region), std::string_view(scope.service),
                                std::string_view("aws4_request")}) {
    const crypto::Sha256Digest digest = crypto::HmacSha256(key, part);
    key.assign(reinterpret_cast<const char*>(digest.data()), digest.size());
  }
  if (cached_keys_.size() >= kMaxCachedKeys) cached_keys_.erase(cached_keys_.begin());
  cached_keys_.push_back(CachedKey{.secret_access_key = credentials.secret_access_key,
                                   .date = std::string(date),
                                   .region = scope.region,
                                   .service = scope.service,
                                   .key = crypto::HmacSha256Key(key)});
  return cached_keys_.back().key;
}

}  // namespace imgsvc::aws
