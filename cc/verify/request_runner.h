// Running signatures on a loaded bundle: one Session::Run per request, with
// the checks TF Serving's Predict, Classify and Regress APIs apply to what
// goes in and comes out, and the smoke run's synthesized requests. Warmup
// replay (warmup_replay.h) sends its recorded requests through the same calls.
//
// Counterparts in TF Serving's tensorflow_serving/servables/tensorflow/:
// predict_util.cc (RunPredict) for RunSignature; classifier.cc and
// regressor.cc (PreProcessClassification / PreProcessRegression,
// PostProcessClassificationResult / PostProcessRegressionResult) for
// RunExamples, CheckClassifyResult and CheckRegressResult, with the examples
// batched into one string tensor as util.cc's InputToSerializedExampleTensor
// does.

#ifndef TF_SERVING_MERGE_CC_VERIFY_REQUEST_RUNNER_H_
#define TF_SERVING_MERGE_CC_VERIFY_REQUEST_RUNNER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cc/verify/example_synthesis.h"
#include "cc/verify/report_format.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/protobuf/config.pb.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/public/session.h"

namespace tf_serving_merge {
namespace verify {

// What every run needs: the session, the options of each Session::Run (its
// deadline), the input synthesizer, and where smoke runs record what they fed
// (--dump_requests; null when not asked for). Nothing is owned.
struct Runner {
  tensorflow::Session* session = nullptr;
  tensorflow::RunOptions run_options;
  InputSynthesizer* synthesizer = nullptr;
  std::vector<std::string>* fed_records = nullptr;
};

// Runs `signature` with `inputs` (alias -> tensor) fetching `output_aliases`,
// then checks every output's dtype and shape against the signature.
absl::StatusOr<std::map<std::string, tensorflow::Tensor>> RunSignature(
    const Runner& runner, const tensorflow::SignatureDef& signature,
    const std::map<std::string, tensorflow::Tensor>& inputs,
    const std::vector<std::string>& output_aliases);

// TF Serving's checks on classification results (PostProcessClassification):
// 'classes' and 'scores' are [num_examples, num_classes] and agree.
absl::Status CheckClassifyResult(
    const std::map<std::string, tensorflow::Tensor>& outputs,
    int64_t num_examples);

// TF Serving's checks on regression results (PostProcessRegressionResult):
// [num_examples] or [num_examples, 1].
absl::Status CheckRegressResult(const tensorflow::Tensor& output,
                                int64_t num_examples);

// Runs a classify or regress signature on serialized tf.Examples, as TF
// Serving's Classify / Regress APIs do.
absl::Status RunExamples(const Runner& runner, const std::string& name,
                         const tensorflow::SignatureDef& signature,
                         const std::vector<std::string>& examples);

// The smoke run of one signature, with synthesized inputs: classify/regress
// signatures on a tf.Example, others as Predict (inputs of unknown rank tried
// with each candidate shape). Fills report->ran, run_ms, fed, tried and
// errors; a request that ran is recorded for --dump_requests.
void RunSmoke(const Runner& runner, const std::string& name,
              const tensorflow::SignatureDef& signature,
              SignatureReport* report);

}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_REQUEST_RUNNER_H_
