#include "net/ca_store.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <utility>

namespace imgsvc::net {
namespace {

constexpr std::array<const char*, 2> kCaBundles = {
    "/etc/ssl/certs/ca-certificates.crt",  // Debian, Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",    // Amazon Linux, Fedora
};

// OpenSSL's decoders leave errors on the thread's queue even where a failure
// is an answer (not a certificate, no such subject); a stale one would then
// be reported as the cause of a later TLS failure.
class ErrorMark {
 public:
  ErrorMark() { ERR_set_mark(); }
  ~ErrorMark() { ERR_pop_to_mark(); }
  ErrorMark(const ErrorMark&) = delete;
  ErrorMark& operator=(const ErrorMark&) = delete;
};

const unsigned char* Bytes(const char* text) { return reinterpret_cast<const unsigned char*>(text); }

// An element header as OpenSSL's decoder reads it (ASN1_get_object, so long
// forms with leading zeros and indefinite lengths are taken as d2i takes them).
struct Header {
  const unsigned char* content;
  long length;  // 0 when indefinite
  int tag;
  int tag_class;
  bool constructed;
  bool indefinite;
};

std::optional<Header> ReadHeader(const unsigned char* at, const unsigned char* end) {
  Header header{at, 0, 0, 0, false, false};
  const int flags = ASN1_get_object(&header.content, &header.length, &header.tag, &header.tag_class, end - at);
  if ((flags & 0x80) != 0) return std::nullopt;  // malformed, or longer than what is left
  header.constructed = (flags & V_ASN1_CONSTRUCTED) != 0;
  header.indefinite = (flags & 1) != 0;
  return header;
}

bool IsSequence(const Header& header) {
  return header.tag == V_ASN1_SEQUENCE && header.tag_class == V_ASN1_UNIVERSAL && header.constructed;
}

// Where the element at `at` ends, or null. Iterative, counting the
// indefinite lengths still open, as OpenSSL's asn1_find_end does: any depth
// d2i accepts is accepted here.
const unsigned char* SkipElement(const unsigned char* at, const unsigned char* end) {
  std::size_t open = 0;
  do {
    if (open > 0 && end - at >= 2 && at[0] == 0 && at[1] == 0) {  // end-of-contents
      at += 2;
      --open;
      continue;
    }
    const std::optional<Header> header = ReadHeader(at, end);
    if (!header) return nullptr;
    if (header->indefinite) {
      ++open;
      at = header->content;
    } else {
      at = header->content + header->length;
    }
  } while (open > 0);
  return at;
}

// The content's end of a definite element; for an indefinite one, `outer`.
const unsigned char* ContentEnd(const Header& header, const unsigned char* outer) {
  return header.indefinite ? outer : header.content + header.length;
}

constexpr std::array<bool, 256> kBase64 = [] {
  std::array<bool, 256> table{};
  for (const char c : std::string_view("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")) {
    table[static_cast<unsigned char>(c)] = true;
  }
  return table;
}();

bool IsBase64Line(std::string_view line) {
  return !line.empty() &&
         std::all_of(line.begin(), line.end(), [](char c) { return kBase64[static_cast<unsigned char>(c)]; });
}

// The bytes of base64 lines, '\n' after each, decoded as PEM_read_bio
// decodes them; nothing when that fails or yields nothing (it fails then too).
std::optional<std::string> DecodeBase64Lines(EVP_ENCODE_CTX* context, std::string_view lines) {
  std::string decoded(lines.size(), '\0');
  int length = 0;
  int tail = 0;
  EVP_DecodeInit(context);
  unsigned char* const out = reinterpret_cast<unsigned char*>(decoded.data());
  if (EVP_DecodeUpdate(context, out, &length, Bytes(lines.data()), static_cast<int>(lines.size())) < 0 ||
      EVP_DecodeFinal(context, out + length, &tail) < 0 || length + tail == 0) {
    return std::nullopt;
  }
  decoded.resize(static_cast<std::size_t>(length + tail));
  return decoded;
}

StatusOr<std::string> ReadFile(const std::string& path) {
  const std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "rbe"), &std::fclose);
  if (!file) return Status(Code::kUnavailable, "cannot open " + path + ": " + std::strerror(errno));
  std::string text;
  std::array<char, 64 * 1024> chunk;
  while (const std::size_t got = std::fread(chunk.data(), 1, chunk.size(), file.get())) text.append(chunk.data(), got);
  if (std::ferror(file.get())) return Status(Code::kUnavailable, "cannot read " + path + ": " + std::strerror(errno));
  return text;
}

using NamePtr = std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)>;

}  // namespace

std::optional<std::string_view> FindSubject(std::string_view certificate) {
  const ErrorMark mark;
  const unsigned char* const end = Bytes(certificate.data()) + certificate.size();
  const std::optional<Header> outer = ReadHeader(Bytes(certificate.data()), end);
  if (!outer || !IsSequence(*outer)) return std::nullopt;
  const unsigned char* const outer_end = ContentEnd(*outer, end);
  const std::optional<Header> tbs = ReadHeader(outer->content, outer_end);
  if (!tbs || !IsSequence(*tbs)) return std::nullopt;
  const unsigned char* const tbs_end = ContentEnd(*tbs, outer_end);

  // TBSCertificate: [0] version OPTIONAL, serialNumber, signature, issuer,
  // validity, subject, ...
  const unsigned char* field = tbs->content;
  const std::optional<Header> first = ReadHeader(field, tbs_end);
  if (!first) return std::nullopt;
  const int skipped = first->tag_class == V_ASN1_CONTEXT_SPECIFIC && first->tag == 0 ? 5 : 4;
  for (int i = 0; i < skipped && field != nullptr; ++i) field = SkipElement(field, tbs_end);
  if (field == nullptr) return std::nullopt;
  const unsigned char* const subject_end = SkipElement(field, tbs_end);
  if (subject_end == nullptr) return std::nullopt;
  return certificate.substr(static_cast<std::size_t>(field - Bytes(certificate.data())),
                            static_cast<std::size_t>(subject_end - field));
}

std::optional<std::vector<std::string>> SplitPlainPemBundle(std::string_view text) {
  constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  // OpenSSL reads at most 254 bytes a line, '\n' included: a longer line
  // comes in pieces, any of which could open a block.
  constexpr std::size_t kMaxLine = 253;
  // No NUL (fgets-based reading stops at one) and no '\r' (OpenSSL strips
  // it; the base64 taken here must be byte for byte what it decodes).
  if (text.find('\0') != std::string_view::npos || text.find('\r') != std::string_view::npos) return std::nullopt;

  const std::unique_ptr<EVP_ENCODE_CTX, decltype(&EVP_ENCODE_CTX_free)> context(EVP_ENCODE_CTX_new(),
                                                                               &EVP_ENCODE_CTX_free);
  if (!context) return std::nullopt;
  std::vector<std::string> blocks;
  const char* block = nullptr;  // the first base64 line of the open block
  while (!text.empty()) {
    const std::size_t newline = text.find('\n');
    const std::string_view line = text.substr(0, newline);
    if (line.size() > kMaxLine) return std::nullopt;
    if (block == nullptr) {
      if (line == kBegin) {
        block = newline == std::string_view::npos ? text.data() + text.size() : text.data() + newline + 1;
      } else if (line.starts_with("-----BEGIN ")) {
        return std::nullopt;  // another type, or a BEGIN line OpenSSL may read differently
      }
    } else if (line == kEnd) {
      // A ':' would make a PEM header, a blank line end one: neither is
      // possible in base64 lines, so OpenSSL decodes exactly these bytes.
      std::optional<std::string> der =
          DecodeBase64Lines(context.get(), std::string_view(block, static_cast<std::size_t>(line.data() - block)));
      if (!der) return std::nullopt;
      blocks.push_back(std::move(*der));
      block = nullptr;
    } else if (!IsBase64Line(line)) {
      return std::nullopt;
    }
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
  }
  if (block != nullptr) return std::nullopt;  // unterminated
  return blocks;
}

std::vector<std::string> DefaultCaFiles() {
  const char* const configured = secure_getenv(X509_get_default_cert_file_env());
  std::vector<std::string> candidates = {configured != nullptr ? configured : X509_get_default_cert_file()};
  candidates.insert(candidates.end(), kCaBundles.begin(), kCaBundles.end());
  std::vector<std::string> files;
  for (const std::string& candidate : candidates) {
    std::error_code error;
    if (!std::filesystem::exists(candidate, error)) continue;
    const bool seen = std::any_of(files.begin(), files.end(), [&](const std::string& file) {
      return std::filesystem::equivalent(file, candidate, error);
    });
    if (!seen) files.push_back(candidate);
  }
  return files;
}

struct CaStore::Entry {
  std::string der;  // the certificate as the bundle had it
  NamePtr subject;
  bool parsed = false;  // tried: parsed and added to the store, or found broken
};

namespace {

// Orders entries as the X509_STORE orders its objects; finds them by a name.
// Templates, as CaStore::Entry is private.
struct SubjectLess {
  template <class Entry>
  bool operator()(const Entry& a, const Entry& b) const {
    return X509_NAME_cmp(a.subject.get(), b.subject.get()) < 0;
  }
  template <class Entry>
  bool operator()(const Entry& a, const X509_NAME* b) const {
    return X509_NAME_cmp(a.subject.get(), b) < 0;
  }
  template <class Entry>
  bool operator()(const X509_NAME* a, const Entry& b) const {
    return X509_NAME_cmp(a, b.subject.get()) < 0;
  }
};

}  // namespace

struct CaStore::Lookup {
  static int GetBySubject(X509_LOOKUP* lookup, X509_LOOKUP_TYPE type, const X509_NAME* name, X509_OBJECT* ret) {
    if (type != X509_LU_X509) return 0;  // CRLs: revocation is never checked
    return static_cast<CaStore*>(X509_LOOKUP_get_method_data(lookup))->Find(name, ret);
  }

  static void Free(X509_LOOKUP* lookup) { delete static_cast<CaStore*>(X509_LOOKUP_get_method_data(lookup)); }

  // One method for the process, as OpenSSL's own are static.
  static X509_LOOKUP_METHOD* Method() {
    static X509_LOOKUP_METHOD* const method = [] {
      X509_LOOKUP_METHOD* made = X509_LOOKUP_meth_new("imgsvc lazy CA bundle");
      if (made != nullptr && (X509_LOOKUP_meth_set_get_by_subject(made, &GetBySubject) != 1 ||
                              X509_LOOKUP_meth_set_free(made, &Free) != 1)) {
        X509_LOOKUP_meth_free(made);
        made = nullptr;
      }
      return made;
    }();
    return method;
  }
};

StatusOr<CaStore*> CaStore::AttachTo(X509_STORE* store) {
  X509_LOOKUP_METHOD* const method = Lookup::Method();
  // X509_STORE_add_lookup hands back the store's lookup of that method if it has one.
  X509_LOOKUP* const lookup = method != nullptr ? X509_STORE_add_lookup(store, method) : nullptr;
  if (lookup == nullptr) return Status(Code::kInternal, "cannot add a CA lookup to the X509 store");
  if (X509_LOOKUP_get_method_data(lookup) != nullptr) {
    return Status(Code::kInternal, "the X509 store already has a CA store");
  }
  auto* const ca_store = new CaStore(store);
  X509_LOOKUP_set_method_data(lookup, ca_store);
  return ca_store;
}

CaStore::CaStore(X509_STORE* store) : store_(store) {}

CaStore::~CaStore() = default;

Status CaStore::AddFile(const std::string& path) {
  IMGSVC_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  std::optional<std::vector<std::string>> blocks = SplitPlainPemBundle(text);
  // No certificate, or a block that is none: X509_STORE_load_file says what is wrong.
  bool plain = blocks.has_value() && !blocks->empty();
  std::vector<Entry> indexed;
  {
    const ErrorMark mark;
    for (std::size_t i = 0; plain && i < blocks->size(); ++i) {
      std::string& der = (*blocks)[i];
      const std::optional<std::string_view> subject = FindSubject(der);
      const unsigned char* at = subject ? Bytes(subject->data()) : nullptr;
      NamePtr name(subject ? d2i_X509_NAME(nullptr, &at, static_cast<long>(subject->size())) : nullptr,
                   &X509_NAME_free);
      plain = name != nullptr;
      if (plain) indexed.push_back(Entry{std::move(der), std::move(name)});
    }
  }
  if (!plain) indexed.clear();

  const std::lock_guard lock(mutex_);
  if (!plain) {
    // The first error is the cause ("bad base64 decode"), later ones only
    // say which layer gave up.
    ERR_clear_error();
    const bool loaded = X509_STORE_load_file(store_, path.c_str()) == 1;
    const char* const reason = loaded ? nullptr : ERR_reason_error_string(ERR_peek_error());
    ERR_clear_error();
    if (!loaded) {
      return Status(Code::kUnavailable,
                    "cannot load " + path + ": " + (reason != nullptr ? reason : "no reason given"));
    }
    eager_ = true;
  }
  entries_.insert(entries_.end(), std::make_move_iterator(indexed.begin()), std::make_move_iterator(indexed.end()));
  // Stable: certificates of one subject then enter the store in file order,
  // as with X509_STORE_load_file, and the chain builder, which tries them in
  // store order, picks the same one.
  std::stable_sort(entries_.begin(), entries_.end(), SubjectLess());
  if (eager_) {
    for (Entry& entry : entries_) Parse(entry);
  }
  return Status::Ok();
}

std::size_t CaStore::indexed_certificates() const {
  const std::lock_guard lock(mutex_);
  return entries_.size();
}

std::size_t CaStore::parsed_certificates() const {
  const std::lock_guard lock(mutex_);
  return parsed_;
}

void CaStore::Parse(Entry& entry) {
  if (entry.parsed) return;
  entry.parsed = true;
  const ErrorMark mark;
  const unsigned char* at = Bytes(entry.der.data());
  X509* const certificate = d2i_X509(nullptr, &at, static_cast<long>(entry.der.size()));
  if (certificate == nullptr) return;
  ++parsed_;
  // A duplicate (the same certificate in two files) is no failure; any other
  // failure leaves the certificate out, as if it were broken.
  X509_STORE_add_cert(store_, certificate);
  X509_free(certificate);
}

int CaStore::Find(const X509_NAME* name, X509_OBJECT* ret) {
  const std::lock_guard lock(mutex_);
  const auto [first, last] = std::equal_range(entries_.begin(), entries_.end(), name, SubjectLess());
  if (first == last) return 0;
  // Every certificate of that subject: the chain builder, once it finds one
  // in the store, looks no further than the store for the others.
  for (auto entry = first; entry != last; ++entry) Parse(*entry);

  if (X509_STORE_lock(store_) != 1) return 0;
  const X509_OBJECT* const object =
      X509_OBJECT_retrieve_by_subject(X509_STORE_get0_objects(store_), X509_LU_X509, name);
  X509* const found = object != nullptr ? X509_OBJECT_get0_X509(object) : nullptr;
  X509_STORE_unlock(store_);
  // The store keeps its reference; the caller takes one of its own on what
  // it is given, so the one X509_OBJECT_set1_X509 took is dropped (OpenSSL's
  // by_store lookup does the same).
  if (found == nullptr || X509_OBJECT_set1_X509(ret, found) != 1) return 0;
  X509_free(found);
  return 1;
}

}  // namespace imgsvc::net
