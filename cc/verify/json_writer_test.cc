#include "cc/verify/json_writer.h"

#include <cmath>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace tf_serving_merge {
namespace verify {
namespace {

TEST(JsonQuoteTest, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\"");
  EXPECT_EQ(JsonQuote("line\nnext\ttab\r"), "\"line\\nnext\\ttab\\r\"");
  EXPECT_EQ(JsonQuote(std::string("nul\0x\x1f", 6)), "\"nul\\u0000x\\u001f\"");
  EXPECT_EQ(JsonQuote("caf\xc3\xa9"), "\"caf\xc3\xa9\"");  // UTF-8 unchanged.
}

TEST(JsonWriterTest, WritesNestedDocumentWithSeparators) {
  JsonWriter json;
  json.BeginObject();
  json.Key("ok").Bool(false);
  json.Key("n").Int(-3);
  json.Key("ms").Double(1.23456);
  json.Key("none").Null();
  json.Key("list").BeginArray().String("a").Int(1).BeginObject().EndObject();
  json.BeginArray().EndArray().EndArray();
  json.Key("nested").BeginObject().Key("k\"ey").String("v").EndObject();
  json.EndObject();
  EXPECT_EQ(json.str(),
            "{\"ok\":false,\"n\":-3,\"ms\":1.235,\"none\":null,"
            "\"list\":[\"a\",1,{},[]],\"nested\":{\"k\\\"ey\":\"v\"}}");
}

TEST(JsonWriterTest, NonFiniteNumbersBecomeNull) {
  JsonWriter json;
  json.BeginArray();
  json.Double(std::numeric_limits<double>::infinity());
  json.Double(std::nan(""));
  json.Double(0);
  json.EndArray();
  EXPECT_EQ(json.str(), "[null,null,0.000]");
}

TEST(JsonWriterDeathTest, MisuseAborts) {
  EXPECT_DEATH(
      {
        JsonWriter json;
        json.BeginObject().String("value without key");
      },
      "needs a Key");
  EXPECT_DEATH(
      {
        JsonWriter json;
        json.BeginArray().EndObject();
      },
      "EndObject");
}

}  // namespace
}  // namespace verify
}  // namespace tf_serving_merge
