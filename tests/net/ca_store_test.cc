// CaStore against OpenSSL's eager loading: the same verdicts from the same
// bundles, with only the certificates of the subjects asked for parsed.
#include "net/ca_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace imgsvc::net {
namespace ca_store_test {

using ::testing::HasSubstr;

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;
using NamePtr = std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)>;
using StorePtr = std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)>;
using Extensions = std::vector<std::pair<int, std::string>>;

void Check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("OpenSSL: ") + what);
}

KeyPtr NewKey() {
  KeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), EVP_PKEY_free);
  Check(key != nullptr, "EC key generation");
  return key;
}

// `type`: MBSTRING_ASC (OpenSSL picks the string type) or an ASN.1 string
// type used as it is.
NamePtr Name(const std::string& common_name, int type = MBSTRING_ASC) {
  NamePtr name(X509_NAME_new(), X509_NAME_free);
  Check(name != nullptr && X509_NAME_add_entry_by_txt(name.get(), "CN", type,
                                                      reinterpret_cast<const unsigned char*>(common_name.data()),
                                                      static_cast<int>(common_name.size()), -1, 0) == 1,
        "name");
  return name;
}

struct CertificateSpec {
  const X509_NAME* subject = nullptr;
  EVP_PKEY* subject_key = nullptr;
  const X509* issuer = nullptr;  // null: self-signed
  EVP_PKEY* issuer_key = nullptr;
  const X509_NAME* issuer_name = nullptr;  // null: the issuer's subject
  Extensions extensions;
  long version = X509_VERSION_3;
  long not_after_seconds = 24 * 3600;
};

CertPtr Sign(const CertificateSpec& spec) {
  static std::atomic<long> serial{1};
  CertPtr cert(X509_new(), X509_free);
  const X509_NAME* issuer_name = spec.issuer_name != nullptr ? spec.issuer_name
                                 : spec.issuer != nullptr    ? X509_get_subject_name(spec.issuer)
                                                             : spec.subject;
  Check(cert != nullptr && X509_set_version(cert.get(), spec.version) == 1 &&
            ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), ++serial) == 1 &&
            X509_gmtime_adj(X509_getm_notBefore(cert.get()), -7200) != nullptr &&
            X509_gmtime_adj(X509_getm_notAfter(cert.get()), spec.not_after_seconds) != nullptr &&
            X509_set_pubkey(cert.get(), spec.subject_key) == 1 &&
            X509_set_subject_name(cert.get(), spec.subject) == 1 && X509_set_issuer_name(cert.get(), issuer_name) == 1,
        "certificate fields");
  X509V3_CTX context{};
  X509V3_set_ctx(&context, spec.issuer != nullptr ? const_cast<X509*>(spec.issuer) : cert.get(), cert.get(), nullptr,
                 nullptr, 0);
  for (const auto& [nid, value] : spec.extensions) {
    X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str());
    Check(extension != nullptr, "extension");
    const int added = X509_add_ext(cert.get(), extension, -1);
    X509_EXTENSION_free(extension);
    Check(added == 1, "adding an extension");
  }
  Check(X509_sign(cert.get(), spec.issuer_key != nullptr ? spec.issuer_key : spec.subject_key, EVP_sha256()) > 0,
        "signing");
  return cert;
}

std::string Pem(const X509* cert) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  Check(bio != nullptr && PEM_write_bio_X509(bio.get(), cert) == 1, "PEM");
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(length));
}

std::string Der(const X509* cert) {
  unsigned char* out = nullptr;
  const int length = i2d_X509(cert, &out);
  Check(length > 0, "DER");
  std::string der(reinterpret_cast<const char*>(out), static_cast<std::size_t>(length));
  OPENSSL_free(out);
  return der;
}

std::string Der(const X509_NAME* name) {
  const unsigned char* der = nullptr;
  std::size_t length = 0;
  Check(X509_NAME_get0_der(name, &der, &length) == 1, "name DER");
  return std::string(reinterpret_cast<const char*>(der), length);
}

struct Ca {
  KeyPtr key;
  CertPtr cert;
};

// Self-signed, or signed by `parent`; with the extensions of a public CA.
Ca NewCa(const std::string& common_name, const Ca* parent = nullptr) {
  Ca ca{NewKey(), CertPtr(nullptr, X509_free)};
  const NamePtr subject = Name(common_name);
  CertificateSpec spec;
  spec.subject = subject.get();
  spec.subject_key = ca.key.get();
  spec.issuer = parent != nullptr ? parent->cert.get() : nullptr;
  spec.issuer_key = parent != nullptr ? parent->key.get() : nullptr;
  spec.extensions = {{NID_basic_constraints, "critical,CA:TRUE"},
                     {NID_key_usage, "critical,keyCertSign,cRLSign"},
                     {NID_subject_key_identifier, "hash"}};
  if (parent != nullptr) spec.extensions.emplace_back(NID_authority_key_identifier, "keyid:always");
  ca.cert = Sign(spec);
  return ca;
}

// The key identifier ties a leaf to its CA's key, as in real chains: CAs
// sharing a subject are then told apart.
CertPtr NewLeaf(const Ca& issuer, long not_after_seconds = 24 * 3600) {
  const KeyPtr key = NewKey();
  const NamePtr subject = Name("leaf.imgsvc.test");
  CertificateSpec spec;
  spec.subject = subject.get();
  spec.subject_key = key.get();
  spec.issuer = issuer.cert.get();
  spec.issuer_key = issuer.key.get();
  spec.extensions = {{NID_basic_constraints, "critical,CA:FALSE"},
                     {NID_authority_key_identifier, "keyid:always"}};
  spec.not_after_seconds = not_after_seconds;
  return Sign(spec);
}

// Many CAs of other names, made once: the rest of a system bundle.
const std::vector<Ca>& Strangers() {
  static const std::vector<Ca> strangers = [] {
    std::vector<Ca> made;
    for (int i = 0; i < 60; ++i) made.push_back(NewCa("imgsvc stranger CA " + std::to_string(i)));
    return made;
  }();
  return strangers;
}

// The strangers with `cas` in the middle.
std::string Bundle(const std::vector<const Ca*>& cas = {}) {
  std::string bundle;
  const std::vector<Ca>& strangers = Strangers();
  for (std::size_t i = 0; i < strangers.size(); ++i) {
    if (i == strangers.size() / 2) {
      for (const Ca* ca : cas) bundle += Pem(ca->cert.get());
    }
    bundle += Pem(strangers[i].cert.get());
  }
  return bundle;
}

class TempFile {
 public:
  explicit TempFile(const std::string& content)
      : path_((std::filesystem::temp_directory_path() /
               ("imgsvc_ca_store_test_" + std::to_string(::getpid()) + "_" + std::to_string(next_++) + ".pem"))
                  .string()) {
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  static inline std::atomic<int> next_{0};
  std::string path_;
};

StorePtr NewStore() {
  StorePtr store(X509_STORE_new(), X509_STORE_free);
  Check(store != nullptr, "X509_STORE_new");
  return store;
}

struct LazyStore {
  StorePtr store = NewStore();
  CaStore* ca_store = CaStore::AttachTo(store.get()).value();
};

// What OpenSSL's own loading makes of the same file.
StorePtr EagerStore(const std::string& path) {
  StorePtr store = NewStore();
  Check(X509_STORE_load_file(store.get(), path.c_str()) == 1, "X509_STORE_load_file");
  return store;
}

// X509_V_OK or the verification error.
int Verify(X509_STORE* store, X509* leaf, const std::vector<X509*>& untrusted = {}) {
  const std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> chain(
      sk_X509_new_null(), [](STACK_OF(X509)* stack) { sk_X509_free(stack); });
  for (X509* cert : untrusted) Check(sk_X509_push(chain.get(), cert) > 0, "chain");
  const std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> context(X509_STORE_CTX_new(),
                                                                                X509_STORE_CTX_free);
  Check(context != nullptr && X509_STORE_CTX_init(context.get(), store, leaf, chain.get()) == 1, "verify context");
  return X509_verify_cert(context.get()) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(context.get());
}

// The child elements of a DER element's content.
std::vector<std::string> Children(std::string_view element) {
  const auto* at = reinterpret_cast<const unsigned char*>(element.data());
  const unsigned char* const end = at + element.size();
  long length = 0;
  int tag = 0;
  int tag_class = 0;
  Check((ASN1_get_object(&at, &length, &tag, &tag_class, end - at) & 0x80) == 0, "element header");
  std::vector<std::string> children;
  const unsigned char* const content_end = at + length;
  while (at < content_end) {
    const unsigned char* const start = at;
    Check((ASN1_get_object(&at, &length, &tag, &tag_class, content_end - at) & 0x80) == 0, "child header");
    at += length;
    children.emplace_back(reinterpret_cast<const char*>(start), static_cast<std::size_t>(at - start));
  }
  return children;
}

// A SEQUENCE of `children` in BER's indefinite-length form.
std::string IndefiniteSequence(const std::vector<std::string>& children) {
  std::string element = "\x30\x80";
  for (const std::string& child : children) element += child;
  return element + std::string(2, '\0');
}

// ---------------------------------------------------------------------------

TEST(FindSubjectTest, FindsTheSubjectWithAndWithoutAVersionField) {
  const Ca ca = NewCa("imgsvc issuer CA");
  const KeyPtr key = NewKey();
  const NamePtr subject = Name("imgsvc subject");
  for (const long version : {X509_VERSION_3, X509_VERSION_1}) {
    CertificateSpec spec;
    spec.subject = subject.get();
    spec.subject_key = key.get();
    spec.issuer = ca.cert.get();
    spec.issuer_key = ca.key.get();
    spec.version = version;
    const std::string der = Der(Sign(spec).get());
    const std::optional<std::string_view> found = FindSubject(der);
    ASSERT_TRUE(found.has_value()) << "version " << version;
    EXPECT_EQ(*found, Der(subject.get())) << "version " << version;
    // Bytes after the certificate, which d2i_X509 ignores, change nothing.
    EXPECT_EQ(FindSubject(der + "trailing"), found) << "version " << version;
  }
}

TEST(FindSubjectTest, ReadsIndefiniteLengthsAsD2iDoes) {
  const Ca ca = NewCa("imgsvc issuer CA");
  const CertPtr leaf = NewLeaf(ca);
  const std::vector<std::string> certificate = Children(Der(leaf.get()));
  ASSERT_EQ(certificate.size(), 3u);
  std::vector<std::string> tbs = Children(certificate[0]);
  ASSERT_GE(tbs.size(), 6u);
  tbs[3] = IndefiniteSequence(Children(tbs[3]));  // the issuer, skipped over
  const std::string ber = IndefiniteSequence({IndefiniteSequence(tbs), certificate[1], certificate[2]});

  const auto* at = reinterpret_cast<const unsigned char*>(ber.data());
  const CertPtr parsed(d2i_X509(nullptr, &at, static_cast<long>(ber.size())), X509_free);
  ASSERT_NE(parsed, nullptr) << "d2i_X509 refuses this BER: the test proves nothing";
  const std::optional<std::string_view> found = FindSubject(ber);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(*found, Der(X509_get_subject_name(parsed.get())));
}

TEST(FindSubjectTest, NothingForWhatIsNotShapedLikeACertificate) {
  const std::string der = Der(NewCa("imgsvc CA").cert.get());
  for (const std::string& input : {std::string(), std::string("garbage"), std::string("\x30\x00", 2),
                                   std::string("\x30\x80\x00\x00", 4), der.substr(0, der.size() / 2),
                                   der.substr(0, 40), std::string("\x31") + der.substr(1)}) {
    EXPECT_FALSE(FindSubject(input).has_value()) << input.size() << " bytes";
  }
}

TEST(SplitPlainPemBundleTest, DecodesEachCertificateAndSkipsTheTextBetween) {
  const CertPtr first = NewCa("imgsvc first CA").cert;
  const CertPtr second = NewCa("imgsvc second CA").cert;
  std::string last = Pem(second.get());
  last.pop_back();  // no '\n' after the last line
  const std::optional<std::vector<std::string>> blocks =
      SplitPlainPemBundle("# imgsvc first CA\n" + Pem(first.get()) + "\nfree text -----\n\n" + last);
  ASSERT_TRUE(blocks.has_value());
  EXPECT_EQ(*blocks, (std::vector<std::string>{Der(first.get()), Der(second.get())}));
  EXPECT_EQ(SplitPlainPemBundle("no certificate here\n"), std::vector<std::string>());
}

TEST(SplitPlainPemBundleTest, NothingForTheShapesLeftToOpenSsl) {
  const std::string pem = Pem(NewCa("imgsvc CA").cert.get());
  const std::size_t second_line = pem.find('\n') + 1;
  const auto replaced = [&](std::string_view from, std::string_view to) {
    std::string text = pem;
    text.replace(text.find(from), from.size(), to);
    return text;
  };
  std::string crlf;
  for (const char c : pem) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"CRLF line ends", crlf},
      {"another block type", replaced("CERTIFICATE-----\n", "X509 CRL-----\n")},
      {"trusted certificate", replaced("BEGIN CERTIFICATE", "BEGIN TRUSTED CERTIFICATE")},
      {"trailing blank on the BEGIN line", replaced("CERTIFICATE-----\n", "CERTIFICATE----- \n")},
      {"PEM header", pem.substr(0, second_line) + "Proc-Type: 4,ENCRYPTED\n\n" + pem.substr(second_line)},
      {"blank line in the base64", pem.substr(0, second_line) + "\n" + pem.substr(second_line)},
      {"not base64", pem.substr(0, second_line) + "*" + pem.substr(second_line + 1)},
      {"unterminated", pem.substr(0, pem.find("-----END"))},
      {"line too long for OpenSSL's reader", std::string(300, 'x') + "\n" + pem},
      {"NUL byte", std::string("x\0y\n", 4) + pem},
      {"empty block", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"},
  };
  for (const auto& [what, text] : cases) EXPECT_FALSE(SplitPlainPemBundle(text).has_value()) << what;
}

TEST(CaStoreTest, ParsesOnlyTheCertificatesOfTheSubjectsAskedFor) {
  const Ca ca = NewCa("imgsvc test CA");
  const CertPtr leaf = NewLeaf(ca);
  const TempFile bundle(Bundle({&ca}));
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(bundle.path()).ok());
  EXPECT_EQ(lazy.ca_store->indexed_certificates(), Strangers().size() + 1);
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), 0u);

  EXPECT_EQ(Verify(lazy.store.get(), leaf.get()), X509_V_OK);
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), 1u);
  EXPECT_EQ(Verify(lazy.store.get(), leaf.get()), X509_V_OK);  // from the store now
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), 1u);
}

TEST(CaStoreTest, VerifiesAChainThroughAnIntermediateFromTheBundlesRoot) {
  const Ca root = NewCa("imgsvc test root CA");
  const Ca intermediate = NewCa("imgsvc test intermediate CA", &root);
  const CertPtr leaf = NewLeaf(intermediate);
  const TempFile bundle(Bundle({&root}));
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(bundle.path()).ok());
  EXPECT_EQ(Verify(lazy.store.get(), leaf.get(), {intermediate.cert.get()}), X509_V_OK);
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), 1u);
  EXPECT_EQ(Verify(lazy.store.get(), leaf.get()), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
}

TEST(CaStoreTest, GivesTheVerdictsOfEagerLoading) {
  const Ca ca = NewCa("imgsvc test CA");
  const Ca root = NewCa("imgsvc test root CA");
  const Ca intermediate = NewCa("imgsvc test intermediate CA", &root);
  const Ca unknown = NewCa("imgsvc unknown CA");
  const TempFile bundle(Bundle({&ca, &root}));
  const StorePtr eager = EagerStore(bundle.path());
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(bundle.path()).ok());

  struct Case {
    const char* what;
    CertPtr leaf;
    std::vector<X509*> untrusted;
    int verdict;
  };
  std::vector<Case> cases;
  cases.push_back({"signed by a bundle CA", NewLeaf(ca), {}, X509_V_OK});
  cases.push_back({"expired", NewLeaf(ca, -3600), {}, X509_V_ERR_CERT_HAS_EXPIRED});
  cases.push_back({"through an intermediate", NewLeaf(intermediate), {intermediate.cert.get()}, X509_V_OK});
  cases.push_back({"intermediate missing", NewLeaf(intermediate), {}, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY});
  cases.push_back({"unknown CA", NewLeaf(unknown), {}, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY});
  cases.push_back({"unknown CA's own certificate", CertPtr(X509_dup(unknown.cert.get()), X509_free), {},
                   X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT});
  for (const Case& c : cases) {
    EXPECT_EQ(Verify(eager.get(), c.leaf.get(), c.untrusted), c.verdict) << c.what << " (eager)";
    EXPECT_EQ(Verify(lazy.store.get(), c.leaf.get(), c.untrusted), c.verdict) << c.what;
  }
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), 2u);  // ca and root
}

TEST(CaStoreTest, FindsEveryCertificateOfASubject) {
  // A CA re-keyed under the same name, both in the bundle (as roots
  // sometimes are): each one's leaves verify.
  const Ca old_key = NewCa("imgsvc test CA");
  const Ca new_key = NewCa("imgsvc test CA");
  const TempFile bundle(Bundle({&old_key, &new_key}));
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(bundle.path()).ok());
  EXPECT_EQ(Verify(lazy.store.get(), NewLeaf(new_key).get()), X509_V_OK);
  EXPECT_EQ(Verify(lazy.store.get(), NewLeaf(old_key).get()), X509_V_OK);
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), 2u);
}

TEST(CaStoreTest, MatchesNamesAsOpenSslDoesNotByteForByte) {
  // The CA's name as a PrintableString; the leaf's issuer as a UTF8String
  // in another case and spacing. OpenSSL compares canonical forms: equal.
  const KeyPtr ca_key = NewKey();
  const NamePtr ca_name = Name("Imgsvc  Test CA", V_ASN1_PRINTABLESTRING);
  CertificateSpec ca_spec;
  ca_spec.subject = ca_name.get();
  ca_spec.subject_key = ca_key.get();
  ca_spec.extensions = {{NID_basic_constraints, "critical,CA:TRUE"}, {NID_key_usage, "critical,keyCertSign"}};
  const CertPtr ca_cert = Sign(ca_spec);
  const KeyPtr leaf_key = NewKey();
  const NamePtr leaf_name = Name("leaf.imgsvc.test");
  const NamePtr issuer_name = Name("imgsvc test ca", V_ASN1_UTF8STRING);
  ASSERT_NE(Der(issuer_name.get()), Der(ca_name.get()));
  CertificateSpec leaf_spec;
  leaf_spec.subject = leaf_name.get();
  leaf_spec.subject_key = leaf_key.get();
  leaf_spec.issuer_key = ca_key.get();
  leaf_spec.issuer_name = issuer_name.get();
  const CertPtr leaf = Sign(leaf_spec);

  const TempFile bundle(Bundle() + Pem(ca_cert.get()));
  ASSERT_EQ(Verify(EagerStore(bundle.path()).get(), leaf.get()), X509_V_OK);
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(bundle.path()).ok());
  EXPECT_EQ(Verify(lazy.store.get(), leaf.get()), X509_V_OK);
}

TEST(CaStoreTest, TextBetweenCertificatesIsSkipped) {
  const Ca ca = NewCa("imgsvc test CA");
  const TempFile bundle("# A comment, as Amazon Linux's bundle has\n" + Pem(Strangers()[0].cert.get()) +
                        "garbage: not a certificate -----\n\n" + Pem(ca.cert.get()) + "trailing words");
  ASSERT_EQ(Verify(EagerStore(bundle.path()).get(), NewLeaf(ca).get()), X509_V_OK);
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(bundle.path()).ok());
  EXPECT_EQ(lazy.ca_store->indexed_certificates(), 2u);
  EXPECT_EQ(Verify(lazy.store.get(), NewLeaf(ca).get()), X509_V_OK);
}

TEST(CaStoreTest, MalformedBlockFailsTheFileAsOpenSslDoes) {
  const Ca ca = NewCa("imgsvc test CA");
  std::string broken = Pem(Strangers()[1].cert.get());
  broken[broken.find('\n') + 10] = '*';
  const std::string not_a_certificate = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
  for (const std::string& bad : {broken, not_a_certificate}) {
    const TempFile bundle(Pem(ca.cert.get()) + bad + Bundle());
    const StorePtr eager = NewStore();
    ASSERT_EQ(X509_STORE_load_file(eager.get(), bundle.path().c_str()), 0) << bad;
    LazyStore lazy;
    const Status added = lazy.ca_store->AddFile(bundle.path());
    EXPECT_FALSE(added.ok()) << bad;
    EXPECT_THAT(added.message(), HasSubstr(bundle.path()));
    EXPECT_EQ(Verify(lazy.store.get(), NewLeaf(ca).get()), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY) << bad;
  }
}

TEST(CaStoreTest, CertificateOnlyD2iRejectsIsLeftOutAlone) {
  // Shaped like a certificate (same subject), but its validity is no time:
  // found out when its subject is asked for. Eager loading refuses the
  // whole file for it; here the other certificates still count.
  const Ca ca = NewCa("imgsvc test CA");
  std::string corrupt = Der(ca.cert.get());
  unsigned char* time = nullptr;
  const int time_length = i2d_ASN1_TIME(X509_get0_notBefore(ca.cert.get()), &time);
  ASSERT_GT(time_length, 0);
  const std::size_t at = corrupt.find(std::string(reinterpret_cast<const char*>(time), time_length));
  OPENSSL_free(time);
  ASSERT_NE(at, std::string::npos);
  corrupt[at] = V_ASN1_OCTET_STRING;
  const auto* bytes = reinterpret_cast<const unsigned char*>(corrupt.data());
  ASSERT_EQ(d2i_X509(nullptr, &bytes, static_cast<long>(corrupt.size())), nullptr);
  ASSERT_TRUE(FindSubject(corrupt).has_value());
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  ASSERT_GT(PEM_write_bio(bio.get(), "CERTIFICATE", "", reinterpret_cast<const unsigned char*>(corrupt.data()),
                          static_cast<long>(corrupt.size())),
            0);
  char* data = nullptr;
  const long pem_length = BIO_get_mem_data(bio.get(), &data);
  const std::string corrupt_pem(data, static_cast<std::size_t>(pem_length));

  const TempFile with_good(corrupt_pem + Bundle({&ca}));
  EXPECT_EQ(X509_STORE_load_file(NewStore().get(), with_good.path().c_str()), 0);
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(with_good.path()).ok());
  EXPECT_EQ(Verify(lazy.store.get(), NewLeaf(ca).get()), X509_V_OK);
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), 1u);

  const TempFile alone(corrupt_pem + Bundle());
  LazyStore lazy_alone;
  ASSERT_TRUE(lazy_alone.ca_store->AddFile(alone.path()).ok());
  EXPECT_EQ(Verify(lazy_alone.store.get(), NewLeaf(ca).get()), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  EXPECT_EQ(lazy_alone.ca_store->parsed_certificates(), 0u);
}

TEST(CaStoreTest, OtherShapesAreLoadedByOpenSslItself) {
  const Ca ca = NewCa("imgsvc test CA");
  std::string crlf;
  for (const char c : Bundle({&ca})) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
  const TempFile bundle(crlf);
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(bundle.path()).ok());
  EXPECT_EQ(lazy.ca_store->indexed_certificates(), 0u);
  EXPECT_EQ(Verify(lazy.store.get(), NewLeaf(ca).get()), X509_V_OK);

  const TempFile empty("no certificate here\n");
  EXPECT_FALSE(lazy.ca_store->AddFile(empty.path()).ok());
}

TEST(CaStoreTest, EagerlyLoadedCertificatesDoNotHideIndexedOnesOfTheirSubject) {
  // The chain builder asks lookups only about subjects the store holds
  // nothing for: an eagerly loaded CA must not hide the indexed one of the
  // same name that signed the leaf. Both orders of adding the files.
  const Ca in_odd_file = NewCa("imgsvc test CA");
  const Ca in_plain_file = NewCa("imgsvc test CA");
  std::string crlf;
  for (const char c : Pem(in_odd_file.cert.get())) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
  const TempFile odd(crlf);
  const TempFile plain(Bundle({&in_plain_file}));
  for (const bool odd_first : {true, false}) {
    LazyStore lazy;
    ASSERT_TRUE(lazy.ca_store->AddFile(odd_first ? odd.path() : plain.path()).ok());
    ASSERT_TRUE(lazy.ca_store->AddFile(odd_first ? plain.path() : odd.path()).ok());
    EXPECT_EQ(Verify(lazy.store.get(), NewLeaf(in_plain_file).get()), X509_V_OK) << odd_first;
    EXPECT_EQ(Verify(lazy.store.get(), NewLeaf(in_odd_file).get()), X509_V_OK) << odd_first;
  }
}

TEST(CaStoreTest, ConcurrentFirstVerificationsParseOnce) {
  const Ca ca = NewCa("imgsvc test CA");
  const CertPtr leaf = NewLeaf(ca);
  const TempFile bundle(Bundle({&ca}));
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(bundle.path()).ok());
  std::atomic<int> verified{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (Verify(lazy.store.get(), leaf.get()) == X509_V_OK) ++verified;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(verified, 8);
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), 1u);
}

TEST(CaStoreTest, UnreadableFileFailsNamingIt) {
  LazyStore lazy;
  const Status added = lazy.ca_store->AddFile("/nonexistent/imgsvc-ca.pem");
  EXPECT_FALSE(added.ok());
  EXPECT_THAT(added.message(), HasSubstr("/nonexistent/imgsvc-ca.pem"));
}

TEST(CaStoreTest, OneCaStorePerStore) {
  LazyStore lazy;
  EXPECT_FALSE(CaStore::AttachTo(lazy.store.get()).ok());
}

TEST(CaStoreTest, ReadsTheSystemBundleLazily) {
  const std::string system_bundle = "/etc/ssl/certs/ca-certificates.crt";
  if (!std::filesystem::exists(system_bundle)) GTEST_SKIP() << "no " << system_bundle << " here";
  LazyStore lazy;
  ASSERT_TRUE(lazy.ca_store->AddFile(system_bundle).ok());
  const StorePtr eager = EagerStore(system_bundle);
  EXPECT_EQ(lazy.ca_store->indexed_certificates(),
            static_cast<std::size_t>(sk_X509_OBJECT_num(X509_STORE_get0_objects(eager.get()))));
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), 0u);
  // Each root verifies itself: every subject is found, all of them parsed.
  const std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> roots(
      X509_STORE_get1_all_certs(eager.get()), [](STACK_OF(X509)* stack) { sk_X509_pop_free(stack, X509_free); });
  for (int i = 0; i < sk_X509_num(roots.get()); ++i) {
    X509* const root = sk_X509_value(roots.get(), i);
    EXPECT_EQ(Verify(lazy.store.get(), root), Verify(eager.get(), root)) << i;
  }
  EXPECT_EQ(lazy.ca_store->parsed_certificates(), lazy.ca_store->indexed_certificates());
}

// Sets (or with no value, unsets) a variable for the scope.
class ScopedEnvironment {
 public:
  ScopedEnvironment(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnvironment() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnvironment(const ScopedEnvironment&) = delete;
  ScopedEnvironment& operator=(const ScopedEnvironment&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(DefaultCaFilesTest, ListsEachFileOnceStartingWithSslCertFile) {
  const TempFile configured(Pem(Strangers()[0].cert.get()));
  const ScopedEnvironment environment("SSL_CERT_FILE", configured.path());
  const std::vector<std::string> files = DefaultCaFiles();
  ASSERT_FALSE(files.empty());
  EXPECT_EQ(files[0], configured.path());
  for (std::size_t i = 0; i < files.size(); ++i) {
    for (std::size_t j = i + 1; j < files.size(); ++j) {
      EXPECT_FALSE(std::filesystem::equivalent(files[i], files[j])) << files[i] << " " << files[j];
    }
  }
  const std::string system_bundle = "/etc/ssl/certs/ca-certificates.crt";
  if (std::filesystem::exists(system_bundle)) {
    EXPECT_THAT(files, ::testing::Contains(system_bundle));
  }
}

TEST(DefaultCaFilesTest, OpenSslsDefaultFileStandsForTheBundleItLinksTo) {
  const std::string system_bundle = "/etc/ssl/certs/ca-certificates.crt";
  const std::string openssl_default = X509_get_default_cert_file();
  if (!std::filesystem::exists(openssl_default) || !std::filesystem::exists(system_bundle) ||
      !std::filesystem::equivalent(openssl_default, system_bundle)) {
    GTEST_SKIP() << openssl_default << " is not a link to " << system_bundle << " here";
  }
  const ScopedEnvironment environment("SSL_CERT_FILE", std::nullopt);
  EXPECT_EQ(DefaultCaFiles(), std::vector<std::string>{openssl_default});
}

}  // namespace ca_store_test
}  // namespace imgsvc::net
