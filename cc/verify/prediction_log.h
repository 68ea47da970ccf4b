// Decodes (and encodes) `tensorflow.serving.PredictionLog` records (TF Serving's warmup
// format) without TF Serving's generated protos, which the tensorflow wheel
// does not ship.
//
// Only the fields warmup replay needs are decoded; unknown fields are skipped
// as protobuf parsers do. Field numbers follow tensorflow_serving/apis/
// prediction_log.proto, predict.proto, classification.proto,
// regression.proto, inference.proto, input.proto and model.proto.

#ifndef TF_SERVING_MERGE_CC_VERIFY_PREDICTION_LOG_H_
#define TF_SERVING_MERGE_CC_VERIFY_PREDICTION_LOG_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tensorflow/core/framework/tensor.pb.h"

namespace tf_serving_merge {
namespace verify {

// One warmup request, flattened from its PredictionLog.
struct WarmupRequest {
  enum class Kind {
    kPredict,         // predict_log (field 6)
    kClassify,        // classify_log (field 2)
    kRegress,         // regress_log (field 3)
    kMultiInference,  // multi_inference_log (field 4)
    kUnsupported,     // session_run_log, predict_streamed_log, or none set
  };
  struct Task {
    std::string signature_name;
    std::string method_name;
  };

  Kind kind = Kind::kUnsupported;
  // Name of the PredictionLog field that was set, e.g. "predict_log".
  std::string log_type = "none";
  // model_spec.signature_name (empty means serving_default). Unused for
  // multi-inference requests, whose tasks carry their own.
  std::string signature_name;
  // PredictRequest.inputs.
  std::map<std::string, tensorflow::TensorProto> inputs;
  // PredictRequest.output_filter.
  std::vector<std::string> output_filter;
  // Serialized tf.Examples of Input (classify, regress, multi-inference),
  // with ExampleListWithContext's context merged into each example.
  std::vector<std::string> serialized_examples;
  // MultiInferenceRequest.tasks.
  std::vector<Task> tasks;
};

// Returns a short name for `kind`, e.g. "predict".
std::string_view WarmupKindName(WarmupRequest::Kind kind);

// Decodes one serialized PredictionLog. Returns InvalidArgument when `record`
// is not a valid PredictionLog (truncated, wrong wire types, bad tensors).
absl::StatusOr<WarmupRequest> DecodePredictionLog(std::string_view record);

// Encodes a predict, classify or regress `request` as a serialized
// PredictionLog (the inverse of DecodePredictionLog for those kinds; map
// entries in key order). InvalidArgument for other kinds.
absl::StatusOr<std::string> EncodePredictionLog(const WarmupRequest& request);

}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_PREDICTION_LOG_H_
