#include "cc/verify/prediction_log.h"

#include <cstdint>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/platform/statusor.h"

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
  TF_ASSIGN_OR_RETURN(auto fields, SplitFields(model_spec, "ModelSpec"));
  std::string signature_name;
  for (const Field& f : fields) {
    if (f.number == 3) {
      TF_RETURN_IF_ERROR(ExpectBytes(f, "ModelSpec", "signature_name"));
      signature_name = std::string(f.bytes);
    }
  }
  return signature_name;
}

// Example lists: ExampleList.examples = 1; ExampleListWithContext.examples = 1,
// context = 2. Input: example_list = 1, example_list_with_context = 2.
absl::Status DecodeInput(std::string_view input,
                         std::vector<std::string>* examples) {
  TF_ASSIGN_OR_RETURN(auto fields, SplitFields(input, "Input"));
  for (const Field& f : fields) {
    if (f.number != 1 && f.number != 2) continue;
    const bool with_context = f.number == 2;
    const char* list_type =
        with_context ? "ExampleListWithContext" : "ExampleList";
    TF_RETURN_IF_ERROR(ExpectBytes(f, "Input", list_type));
    TF_ASSIGN_OR_RETURN(auto list_fields, SplitFields(f.bytes, list_type));
    std::string context;
    std::vector<std::string_view> list;
    for (const Field& lf : list_fields) {
      if (lf.number == 1) {
        TF_RETURN_IF_ERROR(ExpectBytes(lf, list_type, "examples"));
        list.push_back(lf.bytes);
      } else if (with_context && lf.number == 2) {
        TF_RETURN_IF_ERROR(ExpectBytes(lf, list_type, "context"));
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
  TF_ASSIGN_OR_RETURN(auto fields, SplitFields(bytes, "PredictRequest"));
  for (const Field& f : fields) {
    if (f.number == 1) {
      TF_RETURN_IF_ERROR(ExpectBytes(f, "PredictRequest", "model_spec"));
      TF_ASSIGN_OR_RETURN(auto name, DecodeSignatureName(f.bytes));
      out->signature_name = std::move(name);
    } else if (f.number == 2) {
      TF_RETURN_IF_ERROR(ExpectBytes(f, "PredictRequest", "inputs"));
      // Map entries: key = 1, value = 2.
      TF_ASSIGN_OR_RETURN(auto entry,
                          SplitFields(f.bytes, "PredictRequest.InputsEntry"));
      std::string key;
      std::string value;  // Later occurrences merge, as in protobuf.
      for (const Field& ef : entry) {
        if (ef.number == 1) {
          TF_RETURN_IF_ERROR(ExpectBytes(ef, "InputsEntry", "key"));
          key = std::string(ef.bytes);
        } else if (ef.number == 2) {
          TF_RETURN_IF_ERROR(ExpectBytes(ef, "InputsEntry", "value"));
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
      TF_RETURN_IF_ERROR(ExpectBytes(f, "PredictRequest", "output_filter"));
      out->output_filter.emplace_back(f.bytes);
    }
  }
  return absl::OkStatus();
}

// ClassificationRequest / RegressionRequest: model_spec = 1, input = 2.
absl::Status DecodeExampleRequest(std::string_view bytes,
                                  std::string_view message,
                                  WarmupRequest* out) {
  TF_ASSIGN_OR_RETURN(auto fields, SplitFields(bytes, message));
  for (const Field& f : fields) {
    if (f.number == 1) {
      TF_RETURN_IF_ERROR(ExpectBytes(f, message, "model_spec"));
      TF_ASSIGN_OR_RETURN(auto name, DecodeSignatureName(f.bytes));
      out->signature_name = std::move(name);
    } else if (f.number == 2) {
      TF_RETURN_IF_ERROR(ExpectBytes(f, message, "input"));
      TF_RETURN_IF_ERROR(DecodeInput(f.bytes, &out->serialized_examples));
    }
  }
  return absl::OkStatus();
}

// MultiInferenceRequest: tasks = 1 (InferenceTask: model_spec = 1,
// method_name = 2), input = 2.
absl::Status DecodeMultiInferenceRequest(std::string_view bytes,
                                         WarmupRequest* out) {
  TF_ASSIGN_OR_RETURN(auto fields,
                      SplitFields(bytes, "MultiInferenceRequest"));
  for (const Field& f : fields) {
    if (f.number == 1) {
      TF_RETURN_IF_ERROR(ExpectBytes(f, "MultiInferenceRequest", "tasks"));
      TF_ASSIGN_OR_RETURN(auto task_fields,
                          SplitFields(f.bytes, "InferenceTask"));
      WarmupRequest::Task task;
      for (const Field& tf : task_fields) {
        if (tf.number == 1) {
          TF_RETURN_IF_ERROR(ExpectBytes(tf, "InferenceTask", "model_spec"));
          TF_ASSIGN_OR_RETURN(auto name, DecodeSignatureName(tf.bytes));
          task.signature_name = std::move(name);
        } else if (tf.number == 2) {
          TF_RETURN_IF_ERROR(ExpectBytes(tf, "InferenceTask", "method_name"));
          task.method_name = std::string(tf.bytes);
        }
      }
      out->tasks.push_back(std::move(task));
    } else if (f.number == 2) {
      TF_RETURN_IF_ERROR(ExpectBytes(f, "MultiInferenceRequest", "input"));
      TF_RETURN_IF_ERROR(DecodeInput(f.bytes, &out->serialized_examples));
    }
  }
  return absl::OkStatus();
}

// The `request` field (number 1) of a PredictLog / ClassifyLog / RegressLog /
// MultiInferenceLog, merged over repeated occurrences.
absl::StatusOr<std::string> RequestOf(std::string_view log,
                                      std::string_view message) {
  TF_ASSIGN_OR_RETURN(auto fields, SplitFields(log, message));
  std::string request;
  for (const Field& f : fields) {
    if (f.number != 1) continue;
    TF_RETURN_IF_ERROR(ExpectBytes(f, message, "request"));
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
  TF_ASSIGN_OR_RETURN(auto fields, SplitFields(record, "PredictionLog"));
  // log_type is a oneof: the last member present wins, as in protobuf.
  const Field* log = nullptr;
  WarmupRequest out;
  for (const Field& f : fields) {
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
    TF_RETURN_IF_ERROR(ExpectBytes(f, "PredictionLog", out.log_type));
    log = &f;
  }
  if (log == nullptr) return out;
  switch (out.kind) {
    case WarmupRequest::Kind::kPredict: {
      TF_ASSIGN_OR_RETURN(auto request, RequestOf(log->bytes, "PredictLog"));
      TF_RETURN_IF_ERROR(DecodePredictRequest(request, &out));
      break;
    }
    case WarmupRequest::Kind::kClassify:
    case WarmupRequest::Kind::kRegress: {
      const bool classify = out.kind == WarmupRequest::Kind::kClassify;
      TF_ASSIGN_OR_RETURN(
          auto request,
          RequestOf(log->bytes, classify ? "ClassifyLog" : "RegressLog"));
      TF_RETURN_IF_ERROR(DecodeExampleRequest(
          request, classify ? "ClassificationRequest" : "RegressionRequest",
          &out));
      break;
    }
    case WarmupRequest::Kind::kMultiInference: {
      TF_ASSIGN_OR_RETURN(auto request,
                          RequestOf(log->bytes, "MultiInferenceLog"));
      TF_RETURN_IF_ERROR(DecodeMultiInferenceRequest(request, &out));
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
