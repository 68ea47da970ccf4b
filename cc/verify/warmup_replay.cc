#include "cc/verify/warmup_replay.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cc/verify/common.h"
#include "tensorflow/cc/saved_model/constants.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/graph/tensor_id.h"
#include "tensorflow/core/lib/io/path.h"
#include "tensorflow/core/lib/io/record_reader.h"
#include "tensorflow/core/platform/env.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/platform/statusor.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::tensorflow::DataType;
using ::tensorflow::MetaGraphDef;
using ::tensorflow::SignatureDef;
using ::tensorflow::Tensor;
using internal::BraceJoin;
using internal::QuotedJoin;
using internal::SortedKeys;
using internal::Stopwatch;

// Looks up a request's signature as TF Serving does (empty means
// serving_default).
absl::StatusOr<const SignatureDef*> RequestSignature(
    const MetaGraphDef& meta_graph, const std::string& requested,
    std::string* name) {
  *name = requested.empty() ? kDefaultServingSignature : requested;
  auto it = meta_graph.signature_def().find(*name);
  if (it == meta_graph.signature_def().end()) {
    std::vector<std::string> available;
    for (const auto& [key, value] : meta_graph.signature_def()) {
      if (key != tensorflow::kSavedModelInitOpSignatureKey) {
        available.push_back(key);
      }
    }
    std::sort(available.begin(), available.end());
    return absl::InvalidArgumentError(absl::StrCat(
        "No signature was found with the name: ", *name,
        "; signatures present: ", QuotedJoin(available)));
  }
  return &it->second;
}

// Replays a PredictRequest as TF Serving's Predict API does (predict_util.cc).
absl::Status RunPredictRequest(const Runner& runner,
                               const SignatureDef& signature,
                               const GraphIndex& graph,
                               const WarmupRequest& request) {
  const std::string& method = signature.method_name();
  if (method != kPredictMethodName && method != kClassifyMethodName &&
      method != kRegressMethodName) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Expected prediction signature method_name to be one of {",
        kPredictMethodName, ", ", kClassifyMethodName, ", ",
        kRegressMethodName, "}. Was: ", method));
  }
  std::vector<std::string> extra;
  std::vector<std::string> missing;
  for (const auto& [alias, proto] : request.inputs) {
    if (!signature.inputs().contains(alias)) extra.push_back(alias);
  }
  for (const auto& alias : SortedKeys(signature.inputs())) {
    if (request.inputs.count(alias) > 0) continue;
    // Inputs fed by a PlaceholderWithDefault may be omitted.
    const tensorflow::TensorId id =
        tensorflow::ParseTensorName(signature.inputs().at(alias).name());
    const tensorflow::NodeDef* node = graph.FindNodeDef(id.node());
    if (node == nullptr || node->op() != "PlaceholderWithDefault") {
      missing.push_back(alias);
    }
  }
  if (!extra.empty() || !missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request inputs do not match the signature: sent ",
        BraceJoin(SortedKeys(request.inputs)), ", signature has ",
        BraceJoin(SortedKeys(signature.inputs())), ". Sent extra: ",
        BraceJoin(extra), ". Missing but required: ", BraceJoin(missing),
        "."));
  }
  std::map<std::string, Tensor> inputs;
  for (const auto& [alias, proto] : request.inputs) {
    Tensor tensor;
    if (!tensor.FromProto(proto)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor parsing error: input '", alias,
                       "' is not a valid TensorProto"));
    }
    const DataType expected = signature.inputs().at(alias).dtype();
    if (tensor.dtype() != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Expects arg[", alias, "] to be ", internal::DtypeName(expected),
          " but ", internal::DtypeName(tensor.dtype()), " is provided"));
    }
    inputs[alias] = std::move(tensor);
  }
  std::vector<std::string> output_aliases;
  if (request.output_filter.empty()) {
    output_aliases = SortedKeys(signature.outputs());
  } else {
    for (const std::string& alias : request.output_filter) {
      if (!signature.outputs().contains(alias)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output tensor alias not found in signature: ", alias,
            ". Outputs expected to be in the set ",
            BraceJoin(SortedKeys(signature.outputs())), "."));
      }
      output_aliases.push_back(alias);
    }
  }
  return RunSignature(runner, signature, inputs, output_aliases).status();
}

}  // namespace

absl::Status RunWarmupRequest(const Runner& runner,
                              const MetaGraphDef& meta_graph,
                              const GraphIndex& graph,
                              const WarmupRequest& request,
                              std::string* signature_used) {
  switch (request.kind) {
    case WarmupRequest::Kind::kPredict: {
      TF_ASSIGN_OR_RETURN(const SignatureDef* signature,
                          RequestSignature(meta_graph, request.signature_name,
                                           signature_used));
      return RunPredictRequest(runner, *signature, graph, request);
    }
    case WarmupRequest::Kind::kClassify:
    case WarmupRequest::Kind::kRegress: {
      TF_ASSIGN_OR_RETURN(const SignatureDef* signature,
                          RequestSignature(meta_graph, request.signature_name,
                                           signature_used));
      const char* wanted = request.kind == WarmupRequest::Kind::kClassify
                               ? kClassifyMethodName
                               : kRegressMethodName;
      if (signature->method_name() != wanted) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Expected ", WarmupKindName(request.kind),
            " signature method_name to be ", wanted, ". Was: ",
            signature->method_name()));
      }
      return RunExamples(runner, *signature_used, *signature,
                         request.serialized_examples);
    }
    case WarmupRequest::Kind::kMultiInference: {
      if (request.tasks.empty()) {
        return absl::InvalidArgumentError(
            "MultiInferenceRequest has no tasks");
      }
      std::vector<std::string> names;
      for (const WarmupRequest::Task& task : request.tasks) {
        std::string name;
        TF_ASSIGN_OR_RETURN(
            const SignatureDef* signature,
            RequestSignature(meta_graph, task.signature_name, &name));
        names.push_back(name);
        if (task.method_name != kClassifyMethodName &&
            task.method_name != kRegressMethodName) {
          return absl::InvalidArgumentError(absl::StrCat(
              "Unsupported signature method_name: ", task.method_name));
        }
        if (signature->method_name() != task.method_name) {
          return absl::InvalidArgumentError(absl::StrCat(
              "task for signature '", name, "' asks for ", task.method_name,
              " but the signature's method_name is ",
              signature->method_name()));
        }
        TF_RETURN_IF_ERROR(RunExamples(runner, name, *signature,
                                       request.serialized_examples));
      }
      *signature_used = absl::StrJoin(names, "+");
      return absl::OkStatus();
    }
    case WarmupRequest::Kind::kUnsupported:
      break;
  }
  return absl::UnimplementedError(
      absl::StrCat("Unsupported log_type for warmup: ", request.log_type));
}

std::string WarmupPath(const std::string& export_dir) {
  return tensorflow::io::JoinPath(
      export_dir, tensorflow::kSavedModelAssetsExtraDirectory, kWarmupFileName);
}

void ReplayWarmup(const Runner& runner, const MetaGraphDef& meta_graph,
                  const GraphIndex& graph, const std::string& export_dir,
                  WarmupReport* report) {
  const Stopwatch stopwatch;
  report->path = WarmupPath(export_dir);
  tensorflow::Env* env = tensorflow::Env::Default();
  if (!env->FileExists(report->path).ok()) {
    report->error = absl::StrCat(
        "no warmup file at ", report->path,
        "; write TF Serving warmup records there (python/merge does unless "
        "--nowarmup) or verify with --run=smoke");
    return;
  }
  std::unique_ptr<tensorflow::RandomAccessFile> file;
  if (absl::Status s = env->NewRandomAccessFile(report->path, &file);
      !s.ok()) {
    report->error =
        absl::StrCat("cannot open ", report->path, ": ", s.message());
    return;
  }
  tensorflow::io::SequentialRecordReader reader(file.get());
  for (int index = 0;; ++index) {
    tensorflow::tstring record;
    absl::Status read = reader.ReadRecord(&record);
    if (absl::IsOutOfRange(read)) break;  // End of file.
    if (!read.ok()) {
      report->error = absl::StrCat(
          "warmup record #", index, " in ", report->path,
          " is unreadable: ", read.message(),
          absl::IsDataLoss(read)
              ? ". Please verify your warmup data is in TFRecord format"
              : "");
      break;
    }
    if (index >= kMaxWarmupRecords) {
      report->error = absl::StrCat(
          "Number of warmup records exceeds the maximum (", kMaxWarmupRecords,
          ") at ", report->path);
      break;
    }
    auto request = DecodePredictionLog(std::string_view(record));
    if (!request.ok()) {
      report->error = absl::StrCat(
          "Failed to parse warmup record #", index, " from ", report->path,
          " as a tensorflow.serving.PredictionLog: ",
          request.status().message());
      break;
    }
    std::string signature_name;
    if (absl::Status s = RunWarmupRequest(runner, meta_graph, graph, *request,
                                          &signature_name);
        !s.ok()) {
      report->error = absl::StrCat(
          "warmup record #", index, " (", request->log_type,
          signature_name.empty() ? "" : ", signature '", signature_name,
          signature_name.empty() ? "" : "'", ") failed: ", s.message());
      break;
    }
    ++report->records;
    ++report->records_per_signature[signature_name];
  }
  report->run_ms = stopwatch.ElapsedMs();
}

}  // namespace verify
}  // namespace tf_serving_merge
