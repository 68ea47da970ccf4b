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
//                         (example_synthesis.h): batch 1; inputs of unknown
//                         rank tried with each candidate shape until one runs
//                         (the report names it); string inputs hold the
//                         tf.Example or tf.SequenceExample their parse ops
//                         read.
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
//
// Each concern has its own file, and this one is the recipe that calls them:
// steps 1-6 in saved_model_checks.h, step 8's Session::Runs in
// request_runner.h and its warmup replay in warmup_replay.h, input synthesis
// in example_synthesis.h, the report and its text / JSON rendering in
// report_format.h, and the names and helpers they share in common.h.
// report_format.h and common.h are included here, so callers of this header
// keep VerifyReport, FormatText, FormatJson and the constants.

#ifndef TF_SERVING_MERGE_CC_VERIFY_VERIFY_LIB_H_
#define TF_SERVING_MERGE_CC_VERIFY_VERIFY_LIB_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cc/verify/common.h"  // IWYU pragma: export
#include "cc/verify/report_format.h"  // IWYU pragma: export
#include "tensorflow/core/framework/graph.pb.h"

namespace tf_serving_merge {
namespace verify {

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

// Runs every step above. Returns InvalidArgument only for invalid options;
// verification failures are reported in the VerifyReport.
absl::StatusOr<VerifyReport> VerifySavedModel(const VerifyOptions& options);

namespace internal {

// The serialized tf.Example (or tf.SequenceExample) smoke runs feed to the
// string tensor `tensor_name` of `graph_def` (InputSynthesizer::ExampleFor).
std::string SynthesizeExample(const tensorflow::GraphDef& graph_def,
                              const std::string& tensor_name);

}  // namespace internal
}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_VERIFY_LIB_H_
