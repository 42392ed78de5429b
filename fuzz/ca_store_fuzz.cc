// Fuzzes the two hand-written readers of net/ca_store.h against OpenSSL's:
//  - FindSubject: whenever d2i_X509 accepts the bytes, it finds the very
//    element the subject was decoded from;
//  - SplitPlainPemBundle: whenever it takes the text as a bundle, OpenSSL's
//    PEM reader (PEM_X509_INFO_read_bio, as X509_STORE_load_file uses it)
//    reads the same certificates from it, or refuses it only for a block
//    d2i_X509 rejects (the one difference ca_store.h admits).
// The input is tried both as DER and as PEM text.
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/ca_store.h"

namespace {

using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

void Check(bool condition) {
  if (!condition) std::abort();
}

CertPtr Parse(std::string_view der) {
  const auto* at = reinterpret_cast<const unsigned char*>(der.data());
  return CertPtr(d2i_X509(nullptr, &at, static_cast<long>(der.size())), X509_free);
}

// FindSubject's promise for bytes d2i_X509 made `parsed` of (or refused).
void CheckSubject(std::string_view der, const X509* parsed) {
  const std::optional<std::string_view> found = imgsvc::net::FindSubject(der);
  if (parsed == nullptr) return;
  Check(found.has_value());
  const unsigned char* subject = nullptr;
  std::size_t length = 0;
  Check(X509_NAME_get0_der(X509_get_subject_name(parsed), &subject, &length) == 1);
  Check(*found == std::string_view(reinterpret_cast<const char*>(subject), length));
}

void CheckBundle(std::string_view text) {
  const std::optional<std::vector<std::string>> blocks = imgsvc::net::SplitPlainPemBundle(text);
  if (!blocks) return;
  std::vector<CertPtr> parsed;
  bool rejected = false;
  for (const std::string& block : *blocks) {
    parsed.push_back(Parse(block));
    CheckSubject(block, parsed.back().get());
    rejected = rejected || parsed.back() == nullptr;
  }

  const std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())),
                                                      BIO_free);
  Check(bio != nullptr);
  const std::unique_ptr<STACK_OF(X509_INFO), void (*)(STACK_OF(X509_INFO)*)> infos(
      PEM_X509_INFO_read_bio(bio.get(), nullptr, nullptr, nullptr),
      [](STACK_OF(X509_INFO)* stack) { sk_X509_INFO_pop_free(stack, X509_INFO_free); });
  if (infos == nullptr) {
    Check(rejected);
    return;
  }
  Check(!rejected);
  Check(static_cast<std::size_t>(sk_X509_INFO_num(infos.get())) == parsed.size());
  for (std::size_t i = 0; i < parsed.size(); ++i) {
    const X509_INFO* info = sk_X509_INFO_value(infos.get(), static_cast<int>(i));
    Check(info->x509 != nullptr && info->crl == nullptr && info->x_pkey == nullptr);
    Check(X509_cmp(info->x509, parsed[i].get()) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckSubject(input, Parse(input).get());
  CheckBundle(input);
  return 0;
}
