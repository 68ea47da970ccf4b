// Verifies a SavedModel the way TensorFlow Serving will use it.
//
// `VerifySavedModel` is a recipe of small steps, each returning a Status:
//
//   1. CheckExportDir     the directory exists and holds saved_model.pb(txt);
//                         a legacy SessionBundle export or a model base path
//                         (numbered versions) is named as such.
//   2. ReadSavedModel     parses saved_model.pb(txt).
//   3. FindMetaGraph      the requested tag-set exists (else lists those
//                         present).
//   4. CheckVariables     a graph with variables has variables/variables.index
//                         (TF's loader would silently skip the restore, and
//                         every run would fail; nothing is run then).
//   5. SelectSignatures   `--signatures` names exist (else lists them).
//      CheckDeniedOps     no node or function body holds an op of
//                         python/common/denied_ops.txt (file-system, console,
//                         process ops) unless `allow_ops` names it; the
//                         bundle's own save/restore subgraph may use the
//                         checkpoint ops. A bundle with a denied op is
//                         neither loaded nor run, so none is ever executed.
//   6. CheckSignature     per signature: every tensor exists in the graph, the
//                         declared dtype is what its op produces, declared and
//                         inferred shapes are compatible, method_name is one TF
//                         Serving knows, and classify / regress signatures
//                         have the structure TF Serving's Classify / Regress
//                         APIs need.
//   7. LoadSavedModel     tensorflow::LoadSavedModel with the requested tags.
//   8. Run                smoke+warmup (default): replays the warmup file when
//                         the bundle has one, as TF Serving's load does, then
//                         smoke. smoke: each signature once with inputs
//                         synthesized by python/common/synthesis.py's policy
//                         (synthesis.h): batch 1; inputs of unknown rank
//                         tried with each candidate shape until one runs (the
//                         report names it); string inputs hold the tf.Example
//                         or tf.SequenceExample their parse ops read.
//                         Classify/regress signatures whose input is not a
//                         string (TF Serving's Classify/Regress APIs cannot
//                         call them, Predict can) run as Predict, with a
//                         warning. warmup: replays
//                         assets.extra/tf_serving_warmup_requests as TF Serving
//                         does (at most 1000 records, stops at the first error,
//                         which names the record index); the file must exist.
//                         none: skipped. Every Session::Run (including the
//                         loader's restore and init ops) has the deadline
//                         `run_timeout_ms`.
//
// Every finding lands in the returned `VerifyReport`; only invalid options are
// returned as an error status (a usage error for the command line).

#ifndef TF_SERVING_MERGE_CC_VERIFY_VERIFY_LIB_H_
#define TF_SERVING_MERGE_CC_VERIFY_VERIFY_LIB_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tensorflow/core/framework/graph.pb.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.pb.h"

namespace tf_serving_merge {
namespace verify {

inline constexpr char kPredictMethodName[] = "tensorflow/serving/predict";
inline constexpr char kClassifyMethodName[] = "tensorflow/serving/classify";
inline constexpr char kRegressMethodName[] = "tensorflow/serving/regress";
inline constexpr char kDefaultServingSignature[] = "serving_default";
inline constexpr char kWarmupFileName[] = "tf_serving_warmup_requests";
// TF Serving's WarmupConsts::kMaxNumRecords.
inline constexpr int kMaxWarmupRecords = 1000;

enum class RunMode { kSmokeAndWarmup, kSmoke, kWarmup, kNone };

// Parses "smoke+warmup" | "smoke" | "warmup" | "none"; InvalidArgument lists
// the choices.
absl::StatusOr<RunMode> ParseRunMode(std::string_view text);
std::string_view RunModeName(RunMode mode);

struct VerifyOptions {
  // The SavedModel directory (a version directory, e.g. /models/merged/3).
  std::string export_dir;
  // The tag-set to load; must match a MetaGraphDef's tags exactly.
  std::vector<std::string> tags = {"serve"};
  // Signatures to check and run; empty means every signature.
  std::vector<std::string> signatures;
  RunMode run = RunMode::kSmokeAndWarmup;
  // Ops of the denylist to accept (e.g. {"PrintV2"}).
  std::vector<std::string> allow_ops;
  // Deadline of every Session::Run, in milliseconds; 0 means none.
  int64_t run_timeout_ms = 60000;
  // When set, the requests the smoke run fed (the candidate that ran) are
  // written there as PredictionLog TFRecords, the format of
  // assets.extra/tf_serving_warmup_requests.
  std::string dump_requests;
};

// InvalidArgument naming the bad field and value: empty export_dir, no tags,
// empty or duplicate tags / signature names / allowed ops, a negative
// run_timeout_ms.
absl::Status ValidateOptions(const VerifyOptions& options);

// A signature's view of one tensor (TensorInfo).
struct TensorSummary {
  std::string name;  // "node:index", or the values tensor of a sparse tensor.
  tensorflow::DataType dtype = tensorflow::DT_INVALID;
  tensorflow::PartialTensorShape shape;  // Unknown rank if not declared.
  std::string encoding = "name";         // name | coo_sparse | composite
};

struct SignatureReport {
  std::string method;
  std::map<std::string, TensorSummary> inputs;
  std::map<std::string, TensorSummary> outputs;
  bool ran = false;       // Run with synthesized inputs (smoke mode).
  double run_ms = 0;      // Wall time of that run.
  // Alias -> the shape fed in the smoke run that passed (or the last one
  // tried), for inputs of unknown rank the candidate that ran.
  std::map<std::string, tensorflow::TensorShape> fed;
  // Shapes tried per input of unknown rank, in order ("[]", "[1]").
  std::map<std::string, std::vector<std::string>> tried;
  std::vector<std::string> errors;  // Empty when the signature is ok.
  // The signature's own checks (static, and the run if any) passed. A bundle
  // that fails to load leaves statically fine signatures ok() but not run;
  // VerifyReport::ok() is the verdict.
  bool ok() const { return errors.empty(); }
};

struct WarmupReport {
  std::string path;
  int records = 0;  // Records replayed successfully.
  std::map<std::string, int> records_per_signature;
  double run_ms = 0;
  std::string error;  // Empty when every record replayed.
  bool ok() const { return error.empty(); }
};

struct VerifyReport {
  std::string export_dir;
  std::vector<std::string> tags;
  RunMode run = RunMode::kSmokeAndWarmup;
  bool loaded = false;
  double load_ms = 0;
  std::map<std::string, SignatureReport> signatures;
  // Set once loaded in warmup mode, or in smoke+warmup mode when the bundle
  // has a warmup file.
  std::optional<WarmupReport> warmup;
  // Denied ops found ("PrintV2": nodes); empty when none or all allowed.
  std::map<std::string, std::vector<std::string>> denied_ops;
  std::vector<std::string> warnings;   // Never fail verification.
  std::vector<std::string> errors;     // Bundle-level failures.

  // The verdict: no bundle error (which includes failing to load), no
  // signature error and, in warmup mode, every record replayed.
  bool ok() const;
};

// Runs every step above. Returns InvalidArgument only for invalid options;
// verification failures are reported in the VerifyReport.
absl::StatusOr<VerifyReport> VerifySavedModel(const VerifyOptions& options);

// One line per signature ("ok", "FAILED", or "checked" when the static checks
// passed but the bundle did not load or the smoke run was skipped) plus load / warmup / warning / error
// lines and a final "RESULT: OK (...)" or "RESULT: FAILED (...)" line.
std::string FormatText(const VerifyReport& report);

// {"ok", "export_dir", "tags", "run", "loaded", "load_ms", "signatures":
//  {name: {"method", "inputs": {alias: {"name", "dtype", "shape"}},
//  "outputs": {...}, "ok", "ran", "run_ms", "fed": {alias: shape} | null,
//  "error", "errors"}}, "warmup":
//  null | {"path", "ok", "records", "records_per_signature", "run_ms",
//  "error"}, "denied_ops": {op: [node, ...]}, "warnings": [...],
//  "errors": [...]}. Shapes are lists with -1
// for unknown dimensions, or null for unknown rank; dtypes are TF names
// without the DT_ prefix, lower case ("float", "string").
std::string FormatJson(const VerifyReport& report);

namespace internal {

// Up to `max_results` of `candidates` closest to `target` by edit distance
// (ties keep the candidates' order), for "did you mean" messages.
std::vector<std::string> ClosestNames(
    std::string_view target, const std::vector<std::string>& candidates,
    int max_results);

// "float", "int32", "string" ... ("invalid" for DT_INVALID).
std::string DtypeName(tensorflow::DataType dtype);

// "[-1,3]", "[]" (scalar) or "<unknown rank>".
std::string ShapeString(const tensorflow::PartialTensorShape& shape);

// The serialized tf.Example (or tf.SequenceExample) smoke runs feed to the
// string tensor `tensor_name` of `graph_def` (InputSynthesizer::ExampleFor).
std::string SynthesizeExample(const tensorflow::GraphDef& graph_def,
                              const std::string& tensor_name);

}  // namespace internal
}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_VERIFY_LIB_H_
