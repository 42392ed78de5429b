// aws/xml: the little XML S3 and the error bodies need.

#include "aws/xml.h"

#include <gtest/gtest.h>

namespace imgsvc::aws {
namespace xml_test {

TEST(XmlTest, EscapesAndUnescapesTheFiveEntitiesAndCharacterReferences) {
  std::string escaped;
  AppendXmlEscaped(escaped, "a&b<c>\"d'\r");
  EXPECT_EQ(escaped, "a&amp;b&lt;c&gt;&quot;d&apos;&#13;");
  EXPECT_EQ(XmlUnescape(escaped), "a&b<c>\"d'\r");
  EXPECT_EQ(XmlUnescape("&#38;&#x26;&#xE9;&#x1F600;"), "&&\xC3\xA9\xF0\x9F\x98\x80");
  // Not references: kept as they came.
  EXPECT_EQ(XmlUnescape("&nbsp; & &#xZZ; &#x110000;"), "&nbsp; & &#xZZ; &#x110000;");
}

TEST(XmlTest, NextElementMatchesWholeNamesAndWalksTheDocument) {
  const std::string_view xml =
      "<R><KeyMarker>m</KeyMarker><Key>a&amp;b</Key><Key/><Key attr=\"1\">c</Key></R>";
  std::size_t pos = 0;
  std::vector<std::string> keys;
  while (const auto key = NextElement(xml, "Key", pos)) keys.emplace_back(*key);
  EXPECT_EQ(keys, (std::vector<std::string>{"a&amp;b", "", "c"}));
  EXPECT_EQ(ElementText(xml, "Key"), "a&b");
  EXPECT_EQ(ElementText(xml, "Missing"), std::nullopt);
}

TEST(XmlTest, RootElementSkipsTheDeclarationAndComments) {
  EXPECT_EQ(RootElement("<?xml version=\"1.0\"?>\n<!-- c --><Error><Code>X</Code></Error>"), "Error");
  EXPECT_EQ(RootElement("<CompleteMultipartUploadResult xmlns=\"x\"/>"), "CompleteMultipartUploadResult");
  EXPECT_EQ(RootElement("no markup"), "");
}

}  // namespace xml_test
}  // namespace imgsvc::aws
