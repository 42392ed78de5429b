#include "aws/xml.h"

#include <charconv>
#include <cstdint>
#include <system_error>

namespace imgsvc::aws {
namespace {

void AppendUtf8(std::string& out, std::uint32_t code_point) {
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
}

// "#38" or "#x26" (without '&' and ';').
std::optional<std::uint32_t> CharacterReference(std::string_view entity) {
  if (entity.size() < 2 || entity[0] != '#') return std::nullopt;
  const bool hex = entity[1] == 'x' || entity[1] == 'X';
  const std::string_view digits = entity.substr(hex ? 2 : 1);
  std::uint32_t value = 0;
  const auto parsed = std::from_chars(digits.data(), digits.data() + digits.size(), value, hex ? 16 : 10);
  if (digits.empty() || parsed.ec != std::errc() || parsed.ptr != digits.data() + digits.size() ||
      value > 0x10FFFF) {
    return std::nullopt;
  }
  return value;
}

bool IsNameEnd(char c) { return c == '>' || c == '/' || c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

}  // namespace

void AppendXmlEscaped(std::string& out, std::string_view text) {
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      case '\r': out += "&#13;"; break;  // a literal CR would be normalised away
      default: out += c;
    }
  }
}

std::string XmlUnescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const std::size_t amp = text.find('&');
    out += text.substr(0, amp);
    if (amp == std::string_view::npos) break;
    text.remove_prefix(amp);
    const std::size_t semicolon = text.find(';');
    const std::string_view entity =
        semicolon == std::string_view::npos ? std::string_view() : text.substr(1, semicolon - 1);
    if (entity == "amp") {
      out += '&';
    } else if (entity == "lt") {
      out += '<';
    } else if (entity == "gt") {
      out += '>';
    } else if (entity == "quot") {
      out += '"';
    } else if (entity == "apos") {
      out += '\'';
    } else if (const auto code_point = CharacterReference(entity)) {
      AppendUtf8(out, *code_point);
    } else {  // not a reference: kept as it came
      out += '&';
      text.remove_prefix(1);
      continue;
    }
    text.remove_prefix(semicolon + 1);
  }
  return out;
}

std::optional<std::string_view> NextElement(std::string_view xml, std::string_view name, std::size_t& pos) {
  const std::string open = "<" + std::string(name);
  const std::string close = "</" + std::string(name) + ">";
  for (std::size_t at = xml.find(open, pos); at != std::string_view::npos; at = xml.find(open, at + 1)) {
    const std::size_t after = at + open.size();
    if (after >= xml.size()) break;
    if (!IsNameEnd(xml[after])) continue;
    const std::size_t tag_end = xml.find('>', after);
    if (tag_end == std::string_view::npos) break;
    if (xml[tag_end - 1] == '/') {  // <name/>
      pos = tag_end + 1;
      return std::string_view();
    }
    const std::size_t end = xml.find(close, tag_end + 1);
    if (end == std::string_view::npos) break;
    pos = end + close.size();
    return xml.substr(tag_end + 1, end - tag_end - 1);
  }
  pos = xml.size();
  return std::nullopt;
}

std::optional<std::string> ElementText(std::string_view xml, std::string_view name) {
  std::size_t pos = 0;
  const std::optional<std::string_view> content = NextElement(xml, name, pos);
  if (!content) return std::nullopt;
  return XmlUnescape(*content);
}

std::string_view RootElement(std::string_view xml) {
  std::size_t pos = 0;
  while (true) {
    pos = xml.find('<', pos);
    if (pos == std::string_view::npos || pos + 1 >= xml.size()) return {};
    if (xml[pos + 1] != '?' && xml[pos + 1] != '!') break;
    pos = xml.find('>', pos);
    if (pos == std::string_view::npos) return {};
  }
  const std::size_t begin = pos + 1;
  std::size_t end = begin;
  while (end < xml.size() && !IsNameEnd(xml[end])) ++end;
  return xml.substr(begin, end - begin);
}

}  // namespace imgsvc::aws
