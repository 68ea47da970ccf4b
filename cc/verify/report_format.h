// The verifier's findings (`VerifyReport`) and their two renderings: the text
// report for people and the `--json` document for scripts. Formatting is kept
// apart from verification so both renderings can be tested on a hand-built
// report, and neither needs TensorFlow to have loaded anything.
//
// Counterpart: none in TF Serving, whose verdict on a version is a load
// status in its log. Each signature lists what TF Serving's GetModelMetadata
// (get_model_metadata_impl.cc) returns for it: the method name and, per
// alias, the tensor's name, dtype and shape.

#ifndef TF_SERVING_MERGE_CC_VERIFY_REPORT_FORMAT_H_
#define TF_SERVING_MERGE_CC_VERIFY_REPORT_FORMAT_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cc/verify/common.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.pb.h"

namespace tf_serving_merge {
namespace verify {

enum class RunMode { kSmokeAndWarmup, kSmoke, kWarmup, kNone };

// Parses "smoke+warmup" | "smoke" | "warmup" | "none"; InvalidArgument lists
// the choices.
absl::StatusOr<RunMode> ParseRunMode(std::string_view text);
std::string_view RunModeName(RunMode mode);

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

// One line per signature ("ok", "FAILED", or "checked" when the static checks
// passed but the bundle did not load or the smoke run was skipped) plus load /
// warmup / warning / error lines and a final "RESULT: OK (...)" or
// "RESULT: FAILED (...)" line.
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

}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_REPORT_FORMAT_H_
