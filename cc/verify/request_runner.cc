#include "cc/verify/request_runner.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cc/verify/common.h"
#include "cc/verify/prediction_log.h"
#include "cc/verify/saved_model_checks.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/platform/statusor.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::tensorflow::PartialTensorShape;
using ::tensorflow::SignatureDef;
using ::tensorflow::Tensor;
using ::tensorflow::TensorInfo;
using internal::DeclaredShape;
using internal::SortedKeys;
using internal::Stopwatch;

// A Session::Run failure, with a clear message for a missed deadline.
absl::Status RunFailed(const Runner& runner, const absl::Status& status) {
  if (absl::IsDeadlineExceeded(status)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "Session::Run did not finish within --run_timeout_ms=",
        runner.run_options.timeout_in_ms(),
        " ms and was cancelled: the graph may never end (e.g. a while loop "
        "whose condition stays true); if it is only slow, raise "
        "--run_timeout_ms"));
  }
  return absl::Status(status.code(),
                      absl::StrCat("Session::Run failed: ", status.message()));
}

std::string OutputName(const TensorInfo& info) {
  return info.encoding_case() == TensorInfo::kCooSparse
             ? info.coo_sparse().values_tensor_name()
             : info.name();
}

// Checks a fetched output against its TensorInfo.
absl::Status CheckOutput(const std::string& alias, const TensorInfo& info,
                         const Tensor& value) {
  // Ref dtypes (float_ref of a TF1 variable) are fetched as their base type.
  if (value.dtype() != tensorflow::BaseType(info.dtype())) {
    return absl::InternalError(absl::StrCat(
        "output '", alias, "' (", OutputName(info), ") returned dtype ",
        internal::DtypeName(value.dtype()), " but the signature declares ",
        internal::DtypeName(info.dtype())));
  }
  if (info.encoding_case() != TensorInfo::kName) return absl::OkStatus();
  const PartialTensorShape declared = DeclaredShape(info);
  if (!declared.IsCompatibleWith(value.shape())) {
    return absl::InternalError(absl::StrCat(
        "output '", alias, "' (", info.name(), ") returned shape ",
        internal::ShapeString(PartialTensorShape(value.shape().dim_sizes())),
        " but the signature declares ", internal::ShapeString(declared)));
  }
  return absl::OkStatus();
}

// Records a request that ran, for --dump_requests.
void RecordFed(const Runner& runner, WarmupRequest request) {
  if (runner.fed_records == nullptr) return;
  auto record = EncodePredictionLog(request);
  if (record.ok()) runner.fed_records->push_back(*std::move(record));
}

// One synthesized feed of a predict signature: its candidate values.
struct Candidates {
  std::string alias;
  bool unknown_rank = false;
  std::vector<Tensor> values;
};

// Runs a predict signature on synthesized inputs: attempt k feeds each input
// its k-th candidate (or its last), until one attempt runs.
absl::Status RunSmokePredict(const Runner& runner, const std::string& name,
                             const SignatureDef& signature,
                             SignatureReport* report) {
  std::vector<Candidates> feeds;
  size_t attempts = 1;
  for (const auto& [alias, info] : signature.inputs()) {
    if (info.encoding_case() != TensorInfo::kName) {
      return absl::UnimplementedError(absl::StrCat(
          "cannot synthesize the sparse/composite input '", alias,
          "'; verify this signature with --run=warmup and recorded requests"));
    }
    Candidates& candidates = feeds.emplace_back();
    candidates.alias = alias;
    const PartialTensorShape declared = DeclaredShape(info);
    candidates.unknown_rank = declared.unknown_rank();
    for (const tensorflow::TensorShape& shape :
         runner.synthesizer->CandidateShapes(info.name(), declared)) {
      auto value =
          runner.synthesizer->InputValue(info.name(), info.dtype(), shape);
      if (!value.ok()) {
        return absl::UnimplementedError(absl::StrCat(
            "cannot synthesize input '", alias, "' of dtype ",
            internal::DtypeName(info.dtype()),
            "; verify this signature with --run=warmup or --run=none"));
      }
      candidates.values.push_back(*std::move(value));
    }
    attempts = std::max(attempts, candidates.values.size());
  }
  std::vector<std::string> failures;
  absl::Status status;
  for (size_t k = 0; k < attempts; ++k) {
    std::map<std::string, Tensor> inputs;
    std::vector<std::string> unknown;
    for (const Candidates& candidates : feeds) {
      const Tensor& value =
          candidates.values[std::min(k, candidates.values.size() - 1)];
      inputs[candidates.alias] = value;
      report->fed[candidates.alias] = value.shape();
      if (candidates.unknown_rank) {
        const std::string shape = internal::ShapeString(
            PartialTensorShape(value.shape().dim_sizes()));
        report->tried[candidates.alias].push_back(shape);
        unknown.push_back(absl::StrCat(candidates.alias, "=", shape));
      }
    }
    status = RunSignature(runner, signature, inputs,
                          SortedKeys(signature.outputs()))
                 .status();
    if (status.ok()) {
      WarmupRequest request;
      request.kind = WarmupRequest::Kind::kPredict;
      request.signature_name = name;
      for (const auto& [alias, tensor] : inputs) {
        tensor.AsProtoField(&request.inputs[alias]);
      }
      RecordFed(runner, std::move(request));
      return status;
    }
    failures.push_back(absl::StrCat(absl::StrJoin(unknown, ", "), ": ",
                                    status.message()));
    // A missed deadline is not a shape problem: do not try more shapes.
    if (absl::IsDeadlineExceeded(status) || attempts == 1) return status;
  }
  return absl::Status(
      status.code(),
      absl::StrCat("no candidate shape of the unknown-rank input(s) ran: ",
                   absl::StrJoin(failures, "; ")));
}

}  // namespace

absl::StatusOr<std::map<std::string, Tensor>> RunSignature(
    const Runner& runner, const SignatureDef& signature,
    const std::map<std::string, Tensor>& inputs,
    const std::vector<std::string>& output_aliases) {
  std::vector<std::pair<std::string, Tensor>> feeds;
  for (const auto& [alias, tensor] : inputs) {
    feeds.emplace_back(signature.inputs().at(alias).name(), tensor);
  }
  std::vector<std::string> fetches;
  for (const std::string& alias : output_aliases) {
    fetches.push_back(OutputName(signature.outputs().at(alias)));
  }
  std::vector<Tensor> outputs;
  tensorflow::RunMetadata metadata;
  if (absl::Status s = runner.session->Run(runner.run_options, feeds, fetches,
                                           {}, &outputs, &metadata);
      !s.ok()) {
    return RunFailed(runner, s);
  }
  std::map<std::string, Tensor> by_alias;
  for (size_t i = 0; i < output_aliases.size(); ++i) {
    const std::string& alias = output_aliases[i];
    TF_RETURN_IF_ERROR(
        CheckOutput(alias, signature.outputs().at(alias), outputs[i]));
    by_alias[alias] = outputs[i];
  }
  return by_alias;
}

absl::Status CheckClassifyResult(const std::map<std::string, Tensor>& outputs,
                                 int64_t num_examples) {
  const Tensor* classes = nullptr;
  const Tensor* scores = nullptr;
  if (auto it = outputs.find(kClassifyOutputClasses); it != outputs.end()) {
    classes = &it->second;
  }
  if (auto it = outputs.find(kClassifyOutputScores); it != outputs.end()) {
    scores = &it->second;
  }
  for (const auto& [name, tensor] :
       {std::pair<const char*, const Tensor*>{"classes", classes},
        {"scores", scores}}) {
    if (tensor == nullptr) continue;
    if (tensor->dims() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "classify output '", name,
          "' must have shape [batch_size, num_classes]; got ",
          tensor->shape().DebugString()));
    }
    if (tensor->dim_size(0) != num_examples) {
      return absl::InvalidArgumentError(absl::StrCat(
          "classify output '", name, "' has batch size ", tensor->dim_size(0),
          " for ", num_examples, " example(s)"));
    }
  }
  if (classes != nullptr && scores != nullptr &&
      classes->dim_size(1) != scores->dim_size(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "classify outputs 'classes' and 'scores' disagree on num_classes: ",
        classes->dim_size(1), " vs. ", scores->dim_size(1)));
  }
  return absl::OkStatus();
}

absl::Status CheckRegressResult(const Tensor& output, int64_t num_examples) {
  const bool shape_ok =
      (output.dims() == 1 || (output.dims() == 2 && output.dim_size(1) == 1)) &&
      output.dim_size(0) == num_examples;
  if (!shape_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "regress output 'outputs' must have shape [batch_size] or "
        "[batch_size, 1] with batch_size ",
        num_examples, "; got ", output.shape().DebugString()));
  }
  return absl::OkStatus();
}

absl::Status RunExamples(const Runner& runner, const std::string& name,
                         const SignatureDef& signature,
                         const std::vector<std::string>& examples) {
  const bool classify = signature.method_name() == kClassifyMethodName;
  if (!classify && signature.method_name() != kRegressMethodName) {
    return absl::InvalidArgumentError(absl::StrCat(
        "signature '", name, "' has method_name '", signature.method_name(),
        "'; a classify/regress request needs ", kClassifyMethodName, " or ",
        kRegressMethodName));
  }
  std::vector<std::string> errors;
  if (classify) {
    CheckClassifyStructure(signature, /*string_input=*/true, &errors);
  } else {
    CheckRegressStructure(signature, /*string_input=*/true, &errors);
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  }
  if (examples.empty()) {
    return absl::InvalidArgumentError(
        "Input is empty: the request holds no tf.Example");
  }
  const int64_t num_examples = static_cast<int64_t>(examples.size());
  Tensor batch(tensorflow::DT_STRING, tensorflow::TensorShape({num_examples}));
  auto flat = batch.flat<tensorflow::tstring>();
  for (size_t i = 0; i < examples.size(); ++i) flat(i) = examples[i];
  std::vector<std::string> output_aliases;
  if (classify) {
    for (const char* alias : {kClassifyOutputClasses, kClassifyOutputScores}) {
      if (signature.outputs().contains(alias)) output_aliases.push_back(alias);
    }
  } else {
    output_aliases.push_back(kRegressOutputs);
  }
  TF_ASSIGN_OR_RETURN(
      const auto outputs,
      RunSignature(runner, signature, {{kClassifyInputs, batch}},
                   output_aliases));
  return classify ? CheckClassifyResult(outputs, num_examples)
                  : CheckRegressResult(outputs.at(kRegressOutputs),
                                       num_examples);
}

void RunSmoke(const Runner& runner, const std::string& name,
              const SignatureDef& signature, SignatureReport* report) {
  const Stopwatch stopwatch;
  absl::Status status;
  const bool examples = (signature.method_name() == kClassifyMethodName ||
                         signature.method_name() == kRegressMethodName) &&
                        !TakesNonStringExamples(signature);
  if (examples) {
    auto input = signature.inputs().find(kClassifyInputs);
    const std::string example =
        input == signature.inputs().end()
            ? std::string()
            : runner.synthesizer->ExampleFor(input->second.name());
    status = RunExamples(runner, name, signature, {example});
    if (input != signature.inputs().end()) {
      report->fed[kClassifyInputs] = tensorflow::TensorShape({1});
    }
    if (status.ok()) {
      WarmupRequest request;
      request.kind = signature.method_name() == kClassifyMethodName
                         ? WarmupRequest::Kind::kClassify
                         : WarmupRequest::Kind::kRegress;
      request.signature_name = name;
      request.serialized_examples.push_back(example);
      RecordFed(runner, std::move(request));
    }
  } else {
    status = RunSmokePredict(runner, name, signature, report);
    if (absl::IsUnimplemented(status)) {
      report->errors.emplace_back(status.message());
      return;
    }
  }
  report->ran = true;
  report->run_ms = stopwatch.ElapsedMs();
  if (!status.ok()) {
    std::string hint;
    if (examples && absl::StrContains(status.message(), "is required but")) {
      // Smoke mode synthesizes the features the graph's parse ops name; a
      // parse op whose keys are not constants contributes none.
      hint =
          " (smoke mode synthesizes every feature whose key is a constant of "
          "the graph; run --run=warmup to replay the bundle's own requests "
          "instead)";
    }
    report->errors.push_back(
        absl::StrCat("smoke run failed: ", status.message(), hint));
  }
}

}  // namespace verify
}  // namespace tf_serving_merge
