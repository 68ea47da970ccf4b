#include "cc/verify/verify_lib.h"

#include <memory>
#include <set>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cc/verify/example_synthesis.h"
#include "cc/verify/request_runner.h"
#include "cc/verify/saved_model_checks.h"
#include "cc/verify/warmup_replay.h"
#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/lib/io/record_writer.h"
#include "tensorflow/core/platform/env.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/protobuf/config.pb.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/protobuf/saved_model.pb.h"
#include "tensorflow/core/public/session.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::tensorflow::MetaGraphDef;
using internal::BraceJoin;
using internal::Stopwatch;

// The deadline of every Session::Run, the loader's restore and init included.
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

// Writes `records` to `path` as TFRecords; WriteRecords adds the context.
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

  // Steps 1-6 (saved_model_checks.h): everything that only needs
  // saved_model.pb.
  // Step 1: the export directory.
  if (absl::Status s = CheckExportDir(options.export_dir); !s.ok()) {
    return failed(s);
  }
  // Step 2: saved_model.pb.
  auto saved_model = ReadSavedModelProto(options.export_dir);
  if (!saved_model.ok()) return failed(saved_model.status());
  // Step 3: the tag-set.
  auto meta_graph =
      FindMetaGraph(*saved_model, options.tags, options.export_dir);
  if (!meta_graph.ok()) return failed(meta_graph.status());
  // Step 4: variables/.
  const absl::Status variables =
      CheckVariables(**meta_graph, options.export_dir);
  if (!variables.ok()) {
    report.errors.emplace_back(variables.message());  // Still worth loading.
  }
  // Step 5: the signatures asked for.
  auto names = SelectSignatures(**meta_graph, options.signatures);
  if (!names.ok()) return failed(names.status());

  // Step 6: signatures against the graph; then step 5's op denylist, so a
  // bundle refused for a denied op still has its signatures described.
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

  // Step 8 (request_runner.h, warmup_replay.h): run.
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
