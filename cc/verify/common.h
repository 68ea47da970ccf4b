// The vocabulary every part of the verifier shares: TF Serving's method names
// and signature keys, how dtypes and shapes are spelled in messages, and small
// helpers for joining names and timing runs. Kept apart so the static checks,
// the runner, warmup replay and the report spell things one way.

#ifndef TF_SERVING_MERGE_CC_VERIFY_COMMON_H_
#define TF_SERVING_MERGE_CC_VERIFY_COMMON_H_

#include <algorithm>
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.pb.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"

namespace tf_serving_merge {
namespace verify {

inline constexpr char kPredictMethodName[] = "tensorflow/serving/predict";
inline constexpr char kClassifyMethodName[] = "tensorflow/serving/classify";
inline constexpr char kRegressMethodName[] = "tensorflow/serving/regress";
inline constexpr char kDefaultServingSignature[] = "serving_default";
inline constexpr char kWarmupFileName[] = "tf_serving_warmup_requests";
// TF Serving's WarmupConsts::kMaxNumRecords.
inline constexpr int kMaxWarmupRecords = 1000;

// The signature keys TF Serving's Classify and Regress APIs use
// (signature_constants.py).
inline constexpr char kClassifyInputs[] = "inputs";
inline constexpr char kClassifyOutputClasses[] = "classes";
inline constexpr char kClassifyOutputScores[] = "scores";
inline constexpr char kRegressInputs[] = "inputs";
inline constexpr char kRegressOutputs[] = "outputs";

namespace internal {

// "float", "int32", "string" ... ("invalid" for DT_INVALID).
std::string DtypeName(tensorflow::DataType dtype);

// "[-1,3]", "[]" (scalar) or "<unknown rank>".
std::string ShapeString(const tensorflow::PartialTensorShape& shape);

// "predict", "classify", "regress", "<none>" or the method name itself.
std::string MethodShortName(std::string_view method);

// The shape a TensorInfo declares; unknown rank when it declares none.
tensorflow::PartialTensorShape DeclaredShape(
    const tensorflow::TensorInfo& info);

// "{a,b}".
std::string BraceJoin(const std::vector<std::string>& items);

// "'a', 'b'".
std::string QuotedJoin(const std::vector<std::string>& items);

// The keys of `map` (a proto map or std::map keyed by string), sorted: proto
// maps iterate in no fixed order, and messages must not depend on it.
template <typename Map>
std::vector<std::string> SortedKeys(const Map& map) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : map) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  return keys;
}

// Up to `max_results` of `candidates` closest to `target` by edit distance
// (ties keep the candidates' order), for "did you mean" messages.
std::vector<std::string> ClosestNames(
    std::string_view target, const std::vector<std::string>& candidates,
    int max_results);

// Wall time since construction, for the report's *_ms fields.
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double ElapsedMs() const {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now() - start_)
        .count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace internal
}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_COMMON_H_
