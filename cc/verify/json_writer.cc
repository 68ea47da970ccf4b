#include "cc/verify/json_writer.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace tf_serving_merge {
namespace verify {
namespace {

[[noreturn]] void Die(const char* what) {
  std::cerr << "JsonWriter misuse: " << what << std::endl;
  std::abort();
}

}  // namespace

std::string JsonQuote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x",
                        static_cast<unsigned char>(c));
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

void JsonWriter::BeforeValue() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!scopes_.empty() && scopes_.back() == Scope::kObject) {
    Die("a value inside an object needs a Key() first");
  }
  if (scopes_.empty() && !out_.empty()) Die("a second top-level value");
  if (!scopes_.empty() && !first_in_scope_) out_.push_back(',');
  first_in_scope_ = false;
}

JsonWriter& JsonWriter::BeginObject() {
  BeforeValue();
  out_.push_back('{');
  scopes_.push_back(Scope::kObject);
  first_in_scope_ = true;
  return *this;
}

JsonWriter& JsonWriter::EndObject() {
  if (scopes_.empty() || scopes_.back() != Scope::kObject || after_key_) {
    Die("EndObject() without a matching BeginObject() or after a Key()");
  }
  scopes_.pop_back();
  out_.push_back('}');
  first_in_scope_ = false;
  return *this;
}

JsonWriter& JsonWriter::BeginArray() {
  BeforeValue();
  out_.push_back('[');
  scopes_.push_back(Scope::kArray);
  first_in_scope_ = true;
  return *this;
}

JsonWriter& JsonWriter::EndArray() {
  if (scopes_.empty() || scopes_.back() != Scope::kArray) {
    Die("EndArray() without a matching BeginArray()");
  }
  scopes_.pop_back();
  out_.push_back(']');
  first_in_scope_ = false;
  return *this;
}

JsonWriter& JsonWriter::Key(std::string_view key) {
  if (scopes_.empty() || scopes_.back() != Scope::kObject || after_key_) {
    Die("Key() outside an object or twice in a row");
  }
  if (!first_in_scope_) out_.push_back(',');
  first_in_scope_ = false;
  out_ += JsonQuote(key);
  out_.push_back(':');
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::String(std::string_view value) {
  BeforeValue();
  out_ += JsonQuote(value);
  return *this;
}

JsonWriter& JsonWriter::Int(int64_t value) {
  BeforeValue();
  out_ += std::to_string(value);
  return *this;
}

JsonWriter& JsonWriter::Double(double value) {
  BeforeValue();
  if (!std::isfinite(value)) {
    out_ += "null";
    return *this;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f", value);
  out_ += buf;
  return *this;
}

JsonWriter& JsonWriter::Bool(bool value) {
  BeforeValue();
  out_ += value ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::Null() {
  BeforeValue();
  out_ += "null";
  return *this;
}

}  // namespace verify
}  // namespace tf_serving_merge
