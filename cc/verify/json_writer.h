// A minimal streaming JSON writer for the verifier's `--json` report.
//
// Produces compact, valid JSON (RFC 8259): strings are escaped, commas and
// colons are inserted automatically, non-finite numbers become `null`.
// Misuse (a value where a key is expected, unbalanced End*) is a programming
// error and aborts with a message rather than producing invalid output.
//
//   JsonWriter w;
//   w.BeginObject();
//   w.Key("ok").Bool(true);
//   w.Key("errors").BeginArray().String("a \"b\"").EndArray();
//   w.EndObject();
//   w.str();  // {"ok":true,"errors":["a \"b\""]}

#ifndef TF_SERVING_MERGE_CC_VERIFY_JSON_WRITER_H_
#define TF_SERVING_MERGE_CC_VERIFY_JSON_WRITER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tf_serving_merge {
namespace verify {

// Returns `text` as a quoted JSON string literal. Control characters are
// written as \uXXXX; bytes >= 0x80 are copied unchanged (UTF-8 passes through).
std::string JsonQuote(std::string_view text);

class JsonWriter {
 public:
  JsonWriter() = default;

  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  // Writes an object key; the next call must write its value.
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Double(double value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();

  // The document written so far; complete once every Begin* has its End*.
  const std::string& str() const { return out_; }

 private:
  enum class Scope { kObject, kArray };
  // Emits the separator a new value needs and checks a value is allowed here.
  void BeforeValue();

  std::string out_;
  std::vector<Scope> scopes_;
  bool first_in_scope_ = true;
  bool after_key_ = false;
};

}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_JSON_WRITER_H_
