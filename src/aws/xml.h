// Just enough XML for AWS's documents (S3 answers and error bodies, the
// requests we build): elements without CDATA or namespaces prefixes, the
// entities XML defines and character references. No XML parser is linked:
// these documents are flat and small.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace imgsvc::aws {

// Appends `text` escaped for element content or an attribute value.
void AppendXmlEscaped(std::string& out, std::string_view text);
// Resolves the five XML entities and character references; anything else
// that starts with '&' is kept as it came.
std::string XmlUnescape(std::string_view text);
// The raw content of the next <name> element at or after `pos`, which is
// moved past it. Matches the name exactly (<Key> is not <KeyMarker>); an
// empty element (<name/>) has empty content.
std::optional<std::string_view> NextElement(std::string_view xml, std::string_view name, std::size_t& pos);
// The unescaped text of the first <name> element.
std::optional<std::string> ElementText(std::string_view xml, std::string_view name);
// The name of the document's root element ("" when there is none), past the
// XML declaration and comments.
std::string_view RootElement(std::string_view xml);

}  // namespace imgsvc::aws
