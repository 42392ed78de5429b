// The streaming input of an upload: a sequence of named form parts whose data
// is pulled piece by piece. The HTTP layer implements it over multipart/
// form-data; the use cases see only parts, never the wire format.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>

#include "core/status.h"

namespace imgsvc::core {

struct FormPart {
  std::string name;                     // the form field name
  std::optional<std::string> filename;  // set for file parts (may be empty)
  std::string content_type;             // as declared by the client; informative only
};

class FormSource {
 public:
  virtual ~FormSource() = default;
  // Advances to the next part, skipping unread data of the current one.
  // nullopt after the last part. kBadRequest for a malformed or truncated form.
  virtual StatusOr<std::optional<FormPart>> NextPart() = 0;
  // The current part's next bytes, as a view of the source's own buffer:
  // valid until the next call of either method, empty at the end of the part.
  // A view rather than a copy, since an upload passes every byte on once.
  virtual StatusOr<std::span<const std::byte>> ReadPart() = 0;
};

}  // namespace imgsvc::core
