// AWS Signature Version 4: header signing and query presigning.
//
// Exact to AWS's published algorithm and checked against the official test
// vectors (tests/aws/testdata/sigv4). The canonical request is built from the
// request as it goes on the wire; two service rules differ:
//  - most services: the path is normalised (RFC 3986 dot segments, repeated
//    slashes) and each segment is URI-encoded once more (the wire path is
//    already encoded once, so the canonical path is encoded twice);
//  - S3: the wire path is used as is (each key segment encoded once, `/`
//    kept, no normalisation) and `x-amz-content-sha256` is signed on every
//    request; presigned S3 URLs use `UNSIGNED-PAYLOAD`.
// Every header of the request is signed except those a hop may add, drop or
// rewrite on the way (authorization itself, user-agent, expect, the
// hop-by-hop headers, x-amzn-trace-id), as the AWS SDKs do.
// The signing key (four chained HMACs) is derived once per day, region and
// service and cached; a Signer is safe to share between threads.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"
#include "crypto/crypto.h"

namespace imgsvc::aws {

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // empty for long-term keys
  // When temporary credentials stop working; nullopt for long-term keys.
  std::optional<std::chrono::system_clock::time_point> expiration;
};

struct SigningScope {
  std::string region;   // "us-east-1"
  std::string service;  // "s3", "dynamodb", "secretsmanager"
};

enum class PathRule {
  kNormaliseAndEncode,  // every service but S3
  kAsIs,                // S3
};

using NameValue = std::pair<std::string, std::string>;

// A request as it will be sent. `path` is the wire path (percent-encoded
// where needed); `query` holds decoded names and values; `headers` must
// include `host`. Header names are matched case-insensitively.
struct SignableRequest {
  std::string method;
  std::string path = "/";
  std::vector<NameValue> query;
  std::vector<NameValue> headers;
  // Lower-case hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"; empty stands
  // for the hash of an empty body.
  std::string payload_hash;
};

// RFC 3986 percent-encoding of everything but unreserved characters
// (A-Z a-z 0-9 - _ . ~); `/` is kept when keep_slash.
std::string UriEncode(std::string_view text, bool keep_slash);
// The same, appended to `out`.
void AppendUriEncoded(std::string& out, std::string_view text, bool keep_slash);

// "20150830T123600Z" for a time point (UTC); its first 8 characters,
// "20150830", are the date of the credential scope.
std::string AmzDate(std::chrono::system_clock::time_point when);

// The longest a presigned URL may live (seven days).
inline constexpr std::chrono::seconds kMaxPresignExpiry{7 * 24 * 3600};

// The signed headers of a request in canonical form.
struct CanonicalHeaders {
  std::string lines;           // "name:value\n" per header, sorted
  std::string signed_headers;  // "name;name"
};

// Presigned GETs of paths on one host with no query of their own and only
// the host header signed (S3 object URLs), for one set of credentials, scope,
// signing instant and lifetime. Everything but the path is prepared once (a
// listed page presigns one URL per image), so each URL costs one SHA-256 of
// its canonical request and one HMAC. Query(path) is exactly what
// Signer::PresignQuery returns for that GET. Immutable: threads may share one.
class GetPresigner {
 public:
  std::string Query(std::string_view path) const;

 private:
  friend class Signer;
  GetPresigner(PathRule path_rule, std::string canonical_rest, std::string string_to_sign_head,
               std::string query_head, crypto::HmacSha256Key key);

  PathRule path_rule_;
  std::string canonical_rest_;       // the canonical request after its path
  std::string string_to_sign_head_;  // algorithm, date and scope lines
  std::string query_head_;           // the wire query up to the signature's value
  crypto::HmacSha256Key key_;
};

class Signer {
 public:
  explicit Signer(PathRule path_rule) : path_rule_(path_rule) {}

  // The canonical request and string to sign (exposed for the test vectors
  // and for debugging signature mismatches).
  std::string CanonicalRequest(const SignableRequest& request) const;
  std::string StringToSign(const SignableRequest& request, const SigningScope& scope,
                           std::chrono::system_clock::time_point when) const;

  // The hex signature of the request exactly as it is: adds no header (the
  // caller has put x-amz-date and any token in). Sign() is built on it; the
  // test vectors use it for requests signed in other ways.
  std::string Signature(const SignableRequest& request, const Credentials& credentials,
                        const SigningScope& scope, std::chrono::system_clock::time_point when);

  // Adds `x-amz-date`, `x-amz-security-token` (when the credentials carry
  // one), `x-amz-content-sha256` (S3 only) and `authorization` to the request,
  // replacing any left from an earlier signing (a retry re-signs).
  void Sign(SignableRequest& request, const Credentials& credentials, const SigningScope& scope,
            std::chrono::system_clock::time_point when);

  // The query parameters a presigned URL for `request` adds, in wire order
  // and already percent-encoded: "X-Amz-Algorithm=...&...&X-Amz-Signature=...";
  // they go after the request's own query, which is signed too. The payload
  // is UNSIGNED-PAYLOAD for S3, request.payload_hash for other services.
  // kBadRequest when expires is not in [1 s, 7 days].
  StatusOr<std::string> PresignQuery(const SignableRequest& request, const Credentials& credentials,
                                     const SigningScope& scope, std::chrono::system_clock::time_point when,
                                     std::chrono::seconds expires);
  // The GetPresigner for GETs on `host` signed at `when` (same rules and
  // errors as PresignQuery).
  StatusOr<GetPresigner> PrepareGetPresign(std::string_view host, const Credentials& credentials,
                                           const SigningScope& scope, std::chrono::system_clock::time_point when,
                                           std::chrono::seconds expires);

 private:
  // The query parameters a presign adds, but the signature, in wire order
  // and percent-encoded.
  StatusOr<std::vector<NameValue>> PresignParameters(const Credentials& credentials, const SigningScope& scope,
                                                     std::string_view amz_date, std::chrono::seconds expires,
                                                     std::string_view signed_headers) const;
  std::string_view PresignPayloadHash(const SignableRequest& request) const;
  crypto::HmacSha256Key SigningKey(const Credentials& credentials, const SigningScope& scope, std::string_view date);
  // The pieces of the above, from a canonical request already built (a
  // presign builds its query once, already encoded).
  std::string CanonicalRequestWith(const SignableRequest& request, const CanonicalHeaders& headers,
                                   std::string_view canonical_query, std::string_view payload_hash) const;
  static std::string StringToSignOf(std::string_view canonical_request, const SigningScope& scope,
                                    std::string_view amz_date);
  std::string SignatureOf(std::string_view canonical_request, const Credentials& credentials,
                          const SigningScope& scope, std::string_view amz_date);

  PathRule path_rule_;
  std::mutex cache_mutex_;
  struct CachedKey {
    std::string secret_access_key;
    std::string date;
    std::string region;
    std::string service;
    crypto::HmacSha256Key key;  // keyed once: a listed page presigns 20 URLs
  };
  // A few keys, not one: a Signer serves several services (DynamoDB and
  // Secrets Manager share one), and around midnight requests of both days
  // may interleave. The oldest entry goes first.
  std::vector<CachedKey> cached_keys_;
};

}  // namespace imgsvc::aws
