#include "cc/verify/prediction_log.h"

#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::google::protobuf::io::CodedInputStream;

// Wire types (https://protobuf.dev/programming-guides/encoding/).
constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLengthDelimited = 2;
constexpr int kFixed32 = 5;

// One field of a message: number, wire type and, for length-delimited fields,
// the payload (a view into the decoded buffer).
struct Field {
  int number;
  int wire_type;
  std::string_view bytes;
};

absl::Status Malformed(std::string_view message, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed ", message, ": ", what));
}

// Splits `bytes` into its top-level fields. `message` names the proto type
// for error messages.
absl::StatusOr<std::vector<Field>> SplitFields(std::string_view bytes,
                                               std::string_view message) {
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return Malformed(message, "larger than 2 GiB");
  }
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                      static_cast<int>(bytes.size()));
  std::vector<Field> fields;
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) {
      if (in.CurrentPosition() != static_cast<int>(bytes.size())) {
        return Malformed(message, absl::StrCat("invalid tag at byte ",
                                               in.CurrentPosition()));
      }
      break;
    }
    Field field{static_cast<int>(tag >> 3), static_cast<int>(tag & 7), {}};
    if (field.number == 0) return Malformed(message, "field number 0");
    switch (field.wire_type) {
      case kVarint: {
        uint64_t ignored;
        if (!in.ReadVarint64(&ignored)) {
          return Malformed(message, "truncated varint");
        }
        break;
      }
      case kFixed64:
        if (!in.Skip(8)) return Malformed(message, "truncated fixed64");
        break;
      case kFixed32:
        if (!in.Skip(4)) return Malformed(message, "truncated fixed32");
        break;
      case kLengthDelimited: {
        uint32_t length;
        if (!in.ReadVarint32(&length)) {
          return Malformed(message, "truncated length");
        }
        const int start = in.CurrentPosition();
        if (length > bytes.size() - static_cast<size_t>(start) ||
            !in.Skip(static_cast<int>(length))) {
          return Malformed(message,
                           absl::StrCat("field ", field.number, " declares ",
                                        length, " bytes but only ",
                                        bytes.size() - start, " remain"));
        }
        field.bytes = bytes.substr(start, length);
        break;
      }
      default:
        return Malformed(message, absl::StrCat("unsupported wire type ",
                                               field.wire_type, " for field ",
                                               field.number));
    }
    fields.push_back(field);
  }
  return fields;
}

// Checks that `field` is length-delimited (a message, string or bytes).
absl::Status ExpectBytes(const Field& field, std::string_view message,
                         std::string_view name) {
  if (field.wire_type != kLengthDelimited) {
    return Malformed(message, absl::StrCat("field ", name, " (", field.number,
                                           ") has wire type ",
                                           field.wire_type,
                                           ", expected length-delimited"));
  }
  return absl::OkStatus();
}

// ModelSpec: name = 1, version = 2, signature_name = 3, version_label = 4.
absl::StatusOr<std::string> DecodeSignatureName(std::string_view model_spec) {
  auto fields = SplitFields(model_spec, "ModelSpec");
  if (!fields.ok()) return fields.status();
  std::string signature_name;
  for (const Field& f : *fields) {
    if (f.number == 3) {
      if (auto s = ExpectBytes(f, "ModelSpec", "signature_name"); !s.ok()) {
        return s;
      }
      signature_name = std::string(f.bytes);
    }
  }
  return signature_name;
}

// Example lists: ExampleList.examples = 1; ExampleListWithContext.examples = 1,
// context = 2. Input: example_list = 1, example_list_with_context = 2.
absl::Status DecodeInput(std::string_view input,
                         std::vector<std::string>* examples) {
  auto fields = SplitFields(input, "Input");
  if (!fields.ok()) return fields.status();
  for (const Field& f : *fields) {
    if (f.number != 1 && f.number != 2) continue;
    const bool with_context = f.number == 2;
    const char* list_type =
        with_context ? "ExampleListWithContext" : "ExampleList";
    if (auto s = ExpectBytes(f, "Input", list_type); !s.ok()) return s;
    auto list_fields = SplitFields(f.bytes, list_type);
    if (!list_fields.ok()) return list_fields.status();
    std::string context;
    std::vector<std::string_view> list;
    for (const Field& lf : *list_fields) {
      if (lf.number == 1) {
        if (auto s = ExpectBytes(lf, list_type, "examples"); !s.ok()) return s;
        list.push_back(lf.bytes);
      } else if (with_context && lf.number == 2) {
        if (auto s = ExpectBytes(lf, list_type, "context"); !s.ok()) return s;
        context.append(lf.bytes);  // Repeated message fields merge.
      }
    }
    examples->clear();
    for (std::string_view example : list) {
      // Concatenated serializations parse as the merged message, which is
      // how TF Serving combines the context with each example.
      examples->push_back(absl::StrCat(context, example));
    }
  }
  return absl::OkStatus();
}

// PredictRequest: model_spec = 1, inputs = 2 (map<string, TensorProto>),
// output_filter = 3.
absl::Status DecodePredictRequest(std::string_view bytes, WarmupRequest* out) {
  auto fields = SplitFields(bytes, "PredictRequest");
  if (!fields.ok()) return fields.status();
  for (const Field& f : *fields) {
    if (f.number == 1) {
      if (auto s = ExpectBytes(f, "PredictRequest", "model_spec"); !s.ok()) {
        return s;
      }
      auto name = DecodeSignatureName(f.bytes);
      if (!name.ok()) return name.status();
      out->signature_name = *name;
    } else if (f.number == 2) {
      if (auto s = ExpectBytes(f, "PredictRequest", "inputs"); !s.ok()) {
        return s;
      }
      // Map entries: key = 1, value = 2.
      auto entry = SplitFields(f.bytes, "PredictRequest.InputsEntry");
      if (!entry.ok()) return entry.status();
      std::string key;
      std::string value;  // Later occurrences merge, as in protobuf.
      for (const Field& ef : *entry) {
        if (ef.number == 1) {
          if (auto s = ExpectBytes(ef, "InputsEntry", "key"); !s.ok()) {
            return s;
          }
          key = std::string(ef.bytes);
        } else if (ef.number == 2) {
          if (auto s = ExpectBytes(ef, "InputsEntry", "value"); !s.ok()) {
            return s;
          }
          value.append(ef.bytes);
        }
      }
      tensorflow::TensorProto tensor;
      if (!tensor.ParseFromString(value)) {
        return Malformed("PredictRequest",
                         absl::StrCat("input '", key,
                                      "' is not a valid TensorProto"));
      }
      out->inputs[key] = std::move(tensor);  // Last entry wins, as in maps.
    } else if (f.number == 3) {
      if (auto s = ExpectBytes(f, "PredictRequest", "output_filter");
          !s.ok()) {
        return s;
      }
      out->output_filter.emplace_back(f.bytes);
    }
  }
  return absl::OkStatus();
}

// ClassificationRequest / RegressionRequest: model_spec = 1, input = 2.
absl::Status DecodeExampleRequest(std::string_view bytes,
                                  std::string_view message,
                                  WarmupRequest* out) {
  auto fields = SplitFields(bytes, message);
  if (!fields.ok()) return fields.status();
  for (const Field& f : *fields) {
    if (f.number == 1) {
      if (auto s = ExpectBytes(f, message, "model_spec"); !s.ok()) return s;
      auto name = DecodeSignatureName(f.bytes);
      if (!name.ok()) return name.status();
      out->signature_name = *name;
    } else if (f.number == 2) {
      if (auto s = ExpectBytes(f, message, "input"); !s.ok()) return s;
      if (auto s = DecodeInput(f.bytes, &out->serialized_examples); !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

// MultiInferenceRequest: tasks = 1 (InferenceTask: model_spec = 1,
// method_name = 2), input = 2.
absl::Status DecodeMultiInferenceRequest(std::string_view bytes,
                                         WarmupRequest* out) {
  auto fields = SplitFields(bytes, "MultiInferenceRequest");
  if (!fields.ok()) return fields.status();
  for (const Field& f : *fields) {
    if (f.number == 1) {
      if (auto s = ExpectBytes(f, "MultiInferenceRequest", "tasks"); !s.ok()) {
        return s;
      }
      auto task_fields = SplitFields(f.bytes, "InferenceTask");
      if (!task_fields.ok()) return task_fields.status();
      WarmupRequest::Task task;
      for (const Field& tf : *task_fields) {
        if (tf.number == 1) {
          if (auto s = ExpectBytes(tf, "InferenceTask", "model_spec");
              !s.ok()) {
            return s;
          }
          auto name = DecodeSignatureName(tf.bytes);
          if (!name.ok()) return name.status();
          task.signature_name = *name;
        } else if (tf.number == 2) {
          if (auto s = ExpectBytes(tf, "InferenceTask", "method_name");
              !s.ok()) {
            return s;
          }
          task.method_name = std::string(tf.bytes);
        }
      }
      out->tasks.push_back(std::move(task));
    } else if (f.number == 2) {
      if (auto s = ExpectBytes(f, "MultiInferenceRequest", "input"); !s.ok()) {
        return s;
      }
      if (auto s = DecodeInput(f.bytes, &out->serialized_examples); !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

// The `request` field (number 1) of a PredictLog / ClassifyLog / RegressLog /
// MultiInferenceLog, merged over repeated occurrences.
absl::StatusOr<std::string> RequestOf(std::string_view log,
                                      std::string_view message) {
  auto fields = SplitFields(log, message);
  if (!fields.ok()) return fields.status();
  std::string request;
  for (const Field& f : *fields) {
    if (f.number != 1) continue;
    if (auto s = ExpectBytes(f, message, "request"); !s.ok()) return s;
    request.append(f.bytes);
  }
  return request;
}

}  // namespace

std::string_view WarmupKindName(WarmupRequest::Kind kind) {
  switch (kind) {
    case WarmupRequest::Kind::kPredict:
      return "predict";
    case WarmupRequest::Kind::kClassify:
      return "classify";
    case WarmupRequest::Kind::kRegress:
      return "regress";
    case WarmupRequest::Kind::kMultiInference:
      return "multi_inference";
    case WarmupRequest::Kind::kUnsupported:
      return "unsupported";
  }
  return "unknown";
}

absl::StatusOr<WarmupRequest> DecodePredictionLog(std::string_view record) {
  auto fields = SplitFields(record, "PredictionLog");
  if (!fields.ok()) return fields.status();
  // log_type is a oneof: the last member present wins, as in protobuf.
  const Field* log = nullptr;
  WarmupRequest out;
  for (const Field& f : *fields) {
    switch (f.number) {
      case 2:
        out.kind = WarmupRequest::Kind::kClassify;
        out.log_type = "classify_log";
        break;
      case 3:
        out.kind = WarmupRequest::Kind::kRegress;
        out.log_type = "regress_log";
        break;
      case 4:
        out.kind = WarmupRequest::Kind::kMultiInference;
        out.log_type = "multi_inference_log";
        break;
      case 5:
        out.kind = WarmupRequest::Kind::kUnsupported;
        out.log_type = "session_run_log";
        break;
      case 6:
        out.kind = WarmupRequest::Kind::kPredict;
        out.log_type = "predict_log";
        break;
      case 7:
        out.kind = WarmupRequest::Kind::kUnsupported;
        out.log_type = "predict_streamed_log";
        break;
      default:
        continue;  // log_metadata (1) and unknown fields.
    }
    if (auto s = ExpectBytes(f, "PredictionLog", out.log_type); !s.ok()) {
      return s;
    }
    log = &f;
  }
  if (log == nullptr) return out;
  switch (out.kind) {
    case WarmupRequest::Kind::kPredict: {
      auto request = RequestOf(log->bytes, "PredictLog");
      if (!request.ok()) return request.status();
      if (auto s = DecodePredictRequest(*request, &out); !s.ok()) return s;
      break;
    }
    case WarmupRequest::Kind::kClassify:
    case WarmupRequest::Kind::kRegress: {
      const bool classify = out.kind == WarmupRequest::Kind::kClassify;
      auto request = RequestOf(log->bytes, classify ? "ClassifyLog"
                                                    : "RegressLog");
      if (!request.ok()) return request.status();
      if (auto s = DecodeExampleRequest(*request,
                                        classify ? "ClassificationRequest"
                                                 : "RegressionRequest",
                                        &out);
          !s.ok()) {
        return s;
      }
      break;
    }
    case WarmupRequest::Kind::kMultiInference: {
      auto request = RequestOf(log->bytes, "MultiInferenceLog");
      if (!request.ok()) return request.status();
      if (auto s = DecodeMultiInferenceRequest(*request, &out); !s.ok()) {
        return s;
      }
      break;
    }
    case WarmupRequest::Kind::kUnsupported:
      break;
  }
  return out;
}

namespace {

// Appends field `number` holding the bytes `payload` (wire type 2).
void AppendBytes(int number, std::string_view payload, std::string* out) {
  google::protobuf::io::StringOutputStream stream(out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.WriteTag(static_cast<uint32_t>(number) << 3 | kLengthDelimited);
  coded.WriteVarint32(static_cast<uint32_t>(payload.size()));
  coded.WriteRaw(payload.data(), static_cast<int>(payload.size()));
}

std::string ModelSpec(const std::string& signature_name) {
  std::string spec;
  AppendBytes(3, signature_name, &spec);  // ModelSpec.signature_name
  return spec;
}

}  // namespace

absl::StatusOr<std::string> EncodePredictionLog(const WarmupRequest& request) {
  std::string body;  // PredictRequest / ClassificationRequest / ...
  AppendBytes(1, ModelSpec(request.signature_name), &body);
  int log_field = 0;
  switch (request.kind) {
    case WarmupRequest::Kind::kPredict: {
      log_field = 6;  // predict_log
      for (const auto& [alias, tensor] : request.inputs) {
        std::string entry;
        AppendBytes(1, alias, &entry);
        AppendBytes(2, tensor.SerializeAsString(), &entry);
        AppendBytes(2, entry, &body);  // PredictRequest.inputs
      }
      for (const std::string& alias : request.output_filter) {
        AppendBytes(3, alias, &body);  // PredictRequest.output_filter
      }
      break;
    }
    case WarmupRequest::Kind::kClassify:
    case WarmupRequest::Kind::kRegress: {
      log_field = request.kind == WarmupRequest::Kind::kClassify ? 2 : 3;
      std::string list;
      for (const std::string& example : request.serialized_examples) {
        AppendBytes(1, example, &list);  // ExampleList.examples
      }
      std::string input;
      AppendBytes(1, list, &input);  // Input.example_list
      AppendBytes(2, input, &body);  // *Request.input
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot encode a ", WarmupKindName(request.kind),
                       " request; only predict, classify and regress"));
  }
  std::string log;  // PredictLog / ClassifyLog / RegressLog
  AppendBytes(1, body, &log);
  std::string record;
  AppendBytes(log_field, log, &record);
  return record;
}

}  // namespace verify
}  // namespace tf_serving_merge
