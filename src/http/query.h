// Query string parameters (application/x-www-form-urlencoded, as Starlette
// reads them): '&'-separated name=value pairs, percent-decoded, '+' as space.
// A repeated name keeps its last value; names without '=' have empty values.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace imgsvc::http {

class QueryParams {
 public:
  explicit QueryParams(std::string_view raw_query);
  std::optional<std::string_view> Get(std::string_view name) const;

 private:
  std::vector<std::pair<std::string, std::string>> params_;
};

// Percent-decodes `text`; '+' becomes ' ' when plus_is_space. Malformed
// escapes are kept literally.
std::string PercentDecode(std::string_view text, bool plus_is_space);

}  // namespace imgsvc::http
