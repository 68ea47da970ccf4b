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
#include "cc/verify/runner.h"
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
