// Trust anchors from PEM CA bundles, each certificate parsed only when
// verification asks for its subject. OpenSSL 3.0 takes ~17 ms to parse a
// 140-certificate system bundle (mostly decoding public keys), which every
// Lambda cold start paid at its first AWS call, while a handshake needs one
// or two of those certificates. A CaStore reads and base64-decodes the bundle
// (cheap), finds each certificate's subject by walking a few DER headers,
// and registers an X509_LOOKUP with the X509_STORE that parses and adds the
// certificates of a subject when the chain builder first asks for it, as
// OpenSSL's own hashed-directory lookup does.
//
// The trust is what X509_STORE_load_file gives for the same files: the same
// certificates, found by the same canonical name comparison (X509_NAME_cmp),
// all of them when several share a subject. A file not in the plain shape
// that bundle generators write (SplitPlainPemBundle), or with a block not
// shaped like a certificate, goes to X509_STORE_load_file itself, so its
// rules and errors apply unchanged: a malformed block fails the whole file,
// as before. One difference remains: a certificate that is shaped right but that d2i_X509 still
// rejects is only found out when its subject is first asked for, and is then
// left out, where X509_STORE_load_file would have refused the whole file.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace imgsvc::net {

// The subject Name element (its DER, a view into `certificate`) of a DER or
// BER certificate, found from the element headers alone. Whenever d2i_X509
// accepts `certificate` (trailing bytes and all), this finds the element its
// subject was decoded from (fuzz/ca_store_fuzz.cc checks it); nothing when
// `certificate` is not even shaped like one.
std::optional<std::string_view> FindSubject(std::string_view certificate);

// The decoded blocks of a bundle in the plain shape: '\n' line ends, lines of
// at most 253 bytes, "-----BEGIN CERTIFICATE-----" blocks of base64 lines
// (no PEM headers) and any text between them. For such text OpenSSL's PEM
// reader yields exactly these blocks (fuzz/ca_store_fuzz.cc checks it);
// nothing for any other shape, which is then left to that reader.
std::optional<std::vector<std::string>> SplitPlainPemBundle(std::string_view text);

// The CA files the HTTP client trusts by default, each existing file once
// (Debian's default file is a link to its bundle): OpenSSL's default file
// (SSL_CERT_FILE, else its compiled-in path) and the distributions' bundles.
// The project links Debian's static libcrypto, whose compiled-in
// /usr/lib/ssl does not exist on Amazon Linux (Lambda), hence the list.
std::vector<std::string> DefaultCaFiles();

class CaStore {
 public:
  // Registers a lookup with `store` that finds certificates in the files
  // added later. The store owns the CaStore: the pointer is valid while the
  // store lives. One CaStore per store.
  static StatusOr<CaStore*> AttachTo(X509_STORE* store);

  CaStore(const CaStore&) = delete;
  CaStore& operator=(const CaStore&) = delete;

  // Reads a PEM file. The plain shape is indexed for later; any other goes
  // to X509_STORE_load_file now. Fails (trusting nothing from the file) when
  // it cannot be read or when X509_STORE_load_file refuses it.
  Status AddFile(const std::string& path);

  // Certificates indexed for on-demand parsing, parsed or not.
  std::size_t indexed_certificates() const;
  // Those parsed so far (what laziness saves is the difference).
  std::size_t parsed_certificates() const;

 private:
  struct Entry;
  struct Lookup;  // the X509_LOOKUP_METHOD's callbacks
  explicit CaStore(X509_STORE* store);
  ~CaStore();
  int Find(const X509_NAME* name, X509_OBJECT* ret);
  void Parse(Entry& entry);

  X509_STORE* const store_;
  mutable std::mutex mutex_;
  std::vector<Entry> entries_;  // sorted by subject (X509_NAME_cmp)
  // A file went to X509_STORE_load_file. The chain builder asks lookups only
  // about subjects the store holds nothing for, so from then on indexed
  // certificates go into the store at once, lest one be shadowed by an
  // eagerly loaded certificate of the same subject.
  bool eager_ = false;
  std::size_t parsed_ = 0;
};

}  // namespace imgsvc::net
