#include "cc/verify/verify_lib.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cc/verify/prediction_log.h"
#include "cc/verify/static_checks.h"
#include "cc/verify/synthesis.h"
#include "tensorflow/cc/saved_model/constants.h"
#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/cc/saved_model/reader.h"
#include "tensorflow/core/common_runtime/graph_constructor.h"
#include "tensorflow/core/common_runtime/shape_refiner.h"
#include "tensorflow/core/example/example.pb.h"
#include "tensorflow/core/framework/function.h"
#include "tensorflow/core/framework/graph.pb.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/graph/graph.h"
#include "tensorflow/core/graph/tensor_id.h"
#include "tensorflow/core/lib/io/path.h"
#include "tensorflow/core/lib/io/record_reader.h"
#include "tensorflow/core/lib/io/record_writer.h"
#include "tensorflow/core/platform/env.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/platform/statusor.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/protobuf/saved_model.pb.h"
#include "tensorflow/core/public/session.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::tensorflow::DataType;
using ::tensorflow::MetaGraphDef;
using ::tensorflow::PartialTensorShape;
using ::tensorflow::SignatureDef;
using ::tensorflow::Tensor;
using ::tensorflow::TensorInfo;
using internal::BraceJoin;
using internal::DeclaredShape;
using internal::MethodShortName;
using internal::QuotedJoin;
using internal::SortedKeys;
using internal::Stopwatch;

// ---------------------------------------------------------------------------
// Step 8: running signatures.

// What every run needs: the session, the options of each Session::Run (its
// deadline), the input synthesizer, and where smoke runs record what they fed
// (--dump_requests; null when not asked for).
struct Runner {
  tensorflow::Session* session = nullptr;
  tensorflow::RunOptions run_options;
  InputSynthesizer* synthesizer = nullptr;
  std::vector<std::string>* fed_records = nullptr;
};

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

// Runs `signature` with `inputs` (alias -> tensor) fetching `output_aliases`,
// then checks every output against the signature.
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

// TF Serving's checks on classification results (PostProcessClassification).
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

// TF Serving's checks on regression results (PostProcessRegressionResult).
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

// Runs a classify or regress signature on serialized tf.Examples, as TF
// Serving's Classify / Regress APIs do.
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

// Executes one warmup request; `signature_used` receives the signature name
// (for multi-inference, the names joined with '+').
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

// Replays assets.extra/tf_serving_warmup_requests (TF Serving's
// RunSavedModelWarmup): records in order, at most kMaxWarmupRecords, stopping
// at the first error.
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

tensorflow::RunOptions DeadlineOptions(const VerifyOptions& options) {
  tensorflow::RunOptions run_options;
  run_options.set_timeout_in_ms(options.run_timeout_ms);
  return run_options;
}

// Step 7: tensorflow::LoadSavedModel with the requested tags, timed. Its
// restore and init ops run with the same deadline as every other run.
absl::Status LoadBundle(const VerifyOptions& options,
                        tensorflow::SavedModelBundle* bundle,
                        double* load_ms) {
  const std::unordered_set<std::string> tags(options.tags.begin(),
                                             options.tags.end());
  const Stopwatch stopwatch;
  absl::Status load =
      tensorflow::LoadSavedModel(tensorflow::SessionOptions(),
                                 DeadlineOptions(options), options.export_dir,
                                 tags, bundle);
  *load_ms = stopwatch.ElapsedMs();
  if (load.ok()) return load;
  const bool restore = absl::StrContains(load.message(), "RestoreV2") ||
                       absl::StrContains(load.message(), "checkpoint");
  const bool deadline = absl::IsDeadlineExceeded(load);
  return absl::Status(
      load.code(),
      absl::StrCat(
          "tensorflow::LoadSavedModel(", options.export_dir, ", tags=",
          BraceJoin(options.tags), ") failed",
          deadline ? absl::StrCat(" to restore and initialize within "
                                  "--run_timeout_ms=",
                                  options.run_timeout_ms,
                                  " ms (its init op may never end; raise "
                                  "--run_timeout_ms if it is only slow)")
          : restore ? " restoring variables (variables/ is corrupt or does "
                      "not match the graph; restore it from the original "
                      "export)"
                    : "",
          ": ", load.message()));
}

// Step 8: replays the warmup file (first, as TF Serving's load does) and
// smoke-runs the signatures that passed their checks, as `run` asks.
void RunSignatures(RunMode run, const Runner& runner,
                   const MetaGraphDef& meta_graph, const GraphIndex& graph,
                   const std::vector<std::string>& names,
                   const std::string& export_dir, VerifyReport* report) {
  const bool warmup =
      run == RunMode::kWarmup ||
      (run == RunMode::kSmokeAndWarmup &&
       tensorflow::Env::Default()->FileExists(WarmupPath(export_dir)).ok());
  if (warmup) {
    report->warmup.emplace();
    ReplayWarmup(runner, meta_graph, graph, export_dir, &*report->warmup);
  }
  if (run == RunMode::kSmoke || run == RunMode::kSmokeAndWarmup) {
    for (const std::string& name : names) {
      SignatureReport& entry = report->signatures[name];
      if (!entry.ok()) continue;  // Static checks failed; running is moot.
      RunSmoke(runner, name, meta_graph.signature_def().at(name), &entry);
    }
  }
}

absl::Status WriteRecordFile(const std::string& path,
                             const std::vector<std::string>& records) {
  std::unique_ptr<tensorflow::WritableFile> file;
  TF_RETURN_IF_ERROR(tensorflow::Env::Default()->NewWritableFile(path, &file));
  tensorflow::io::RecordWriter writer(file.get());
  for (const std::string& record : records) {
    TF_RETURN_IF_ERROR(writer.WriteRecord(record));
  }
  TF_RETURN_IF_ERROR(writer.Close());
  return file->Close();
}

// Writes the requests smoke runs fed as PredictionLog TFRecords. The flag and
// path are added here, once, rather than at each step that can fail.
absl::Status WriteRecords(const std::string& path,
                          const std::vector<std::string>& records) {
  absl::Status s = WriteRecordFile(path, records);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("cannot write --dump_requests=",
                                             path, ": ", s.message()));
}

}  // namespace

// ---------------------------------------------------------------------------
// Public API.

absl::Status ValidateOptions(const VerifyOptions& options) {
  if (options.export_dir.empty()) {
    return absl::InvalidArgumentError(
        "--export_dir is required: the SavedModel directory to verify, e.g. "
        "--export_dir=/models/merged/3");
  }
  if (options.tags.empty()) {
    return absl::InvalidArgumentError(
        "--tags must name at least one tag, e.g. --tags=serve");
  }
  for (const auto& [field, values] :
       {std::pair<const char*, const std::vector<std::string>*>{
            "--tags", &options.tags},
        {"--signatures", &options.signatures},
        {"--allow_ops", &options.allow_ops}}) {
    std::set<std::string> seen;
    for (const std::string& value : *values) {
      if (value.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, "='", absl::StrJoin(*values, ","),
            "' has an empty name; separate names with single commas"));
      }
      if (!seen.insert(value).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, "='", absl::StrJoin(*values, ","), "' names '", value,
            "' twice"));
      }
    }
  }
  if (options.run_timeout_ms < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--run_timeout_ms=", options.run_timeout_ms,
        " is negative; give milliseconds (0 means no deadline)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<VerifyReport> VerifySavedModel(const VerifyOptions& options) {
  TF_RETURN_IF_ERROR(ValidateOptions(options));
  VerifyReport report;
  report.export_dir = options.export_dir;
  report.tags = options.tags;
  report.run = options.run;
  auto failed = [&report](const absl::Status& status) {
    report.errors.emplace_back(status.message());
    return report;
  };

  // Steps 1-6: everything that only needs saved_model.pb.
  if (absl::Status s = CheckExportDir(options.export_dir); !s.ok()) {
    return failed(s);
  }
  auto saved_model = ReadSavedModelProto(options.export_dir);
  if (!saved_model.ok()) return failed(saved_model.status());
  auto meta_graph =
      FindMetaGraph(*saved_model, options.tags, options.export_dir);
  if (!meta_graph.ok()) return failed(meta_graph.status());
  const absl::Status variables =
      CheckVariables(**meta_graph, options.export_dir);
  if (!variables.ok()) {
    report.errors.emplace_back(variables.message());  // Still worth loading.
  }
  auto names = SelectSignatures(**meta_graph, options.signatures);
  if (!names.ok()) return failed(names.status());

  // Step 6: signatures against the graph; the op denylist.
  const GraphIndex graph((*meta_graph)->graph_def());
  CheckSignatures(graph, **meta_graph, *names, &report);
  report.denied_ops = FindDeniedOps(**meta_graph, options.allow_ops);
  if (!report.denied_ops.empty()) {
    // Loading runs the init op, and any run may reach the op: do neither.
    for (std::string& error : DeniedOpErrors(report.denied_ops)) {
      report.errors.push_back(std::move(error));
    }
    return report;
  }

  // Step 7: load as TF Serving does.
  tensorflow::SavedModelBundle bundle;
  if (absl::Status s = LoadBundle(options, &bundle, &report.load_ms);
      !s.ok()) {
    return failed(s);
  }
  report.loaded = true;
  if (!variables.ok()) {
    // Every run would fail on uninitialized variables; the error above says
    // why, and TensorFlow's own messages would only bury it.
    return report;
  }

  // Step 8: run.
  InputSynthesizer synthesizer((*meta_graph)->graph_def());
  std::vector<std::string> fed_records;
  Runner runner;
  runner.session = bundle.session.get();
  runner.run_options = DeadlineOptions(options);
  runner.synthesizer = &synthesizer;
  runner.fed_records = options.dump_requests.empty() ? nullptr : &fed_records;
  RunSignatures(options.run, runner, **meta_graph, graph, *names,
                options.export_dir, &report);
  for (const std::string& warning : synthesizer.warnings()) {
    report.warnings.push_back(warning);
  }
  if (!options.dump_requests.empty()) {
    if (absl::Status s = WriteRecords(options.dump_requests, fed_records);
        !s.ok()) {
      report.errors.emplace_back(s.message());
    }
  }
  return report;
}

namespace internal {

std::string SynthesizeExample(const tensorflow::GraphDef& graph_def,
                              const std::string& tensor_name) {
  return InputSynthesizer(graph_def).ExampleFor(tensor_name);
}

}  // namespace internal
}  // namespace verify
}  // namespace tf_serving_merge
