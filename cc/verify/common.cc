#include "cc/verify/common.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tf_serving_merge {
namespace verify {
namespace internal {

std::string DtypeName(tensorflow::DataType dtype) {
  std::string name = tensorflow::DataType_Name(dtype);
  if (absl::StartsWith(name, "DT_")) name = name.substr(3);
  if (name.empty()) name = absl::StrCat("dtype_", static_cast<int>(dtype));
  return absl::AsciiStrToLower(name);
}

std::string ShapeString(const tensorflow::PartialTensorShape& shape) {
  if (shape.unknown_rank()) return "<unknown rank>";
  std::vector<int64_t> dims;
  for (int i = 0; i < shape.dims(); ++i) dims.push_back(shape.dim_size(i));
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

std::string MethodShortName(std::string_view method) {
  if (method == kPredictMethodName) return "predict";
  if (method == kClassifyMethodName) return "classify";
  if (method == kRegressMethodName) return "regress";
  return method.empty() ? "<none>" : std::string(method);
}

tensorflow::PartialTensorShape DeclaredShape(
    const tensorflow::TensorInfo& info) {
  if (!info.has_tensor_shape() || info.tensor_shape().unknown_rank()) {
    return tensorflow::PartialTensorShape();
  }
  return tensorflow::PartialTensorShape(info.tensor_shape());
}

std::string BraceJoin(const std::vector<std::string>& items) {
  return absl::StrCat("{", absl::StrJoin(items, ","), "}");
}

std::string QuotedJoin(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  quoted.reserve(items.size());
  for (const std::string& item : items) quoted.push_back("'" + item + "'");
  return absl::StrJoin(quoted, ", ");
}

std::vector<std::string> ClosestNames(
    std::string_view target, const std::vector<std::string>& candidates,
    int max_results) {
  std::vector<std::pair<size_t, size_t>> scored;  // (distance, index)
  std::vector<size_t> previous(target.size() + 1);
  std::vector<size_t> current(target.size() + 1);
  for (size_t c = 0; c < candidates.size(); ++c) {
    const std::string& candidate = candidates[c];
    for (size_t j = 0; j <= target.size(); ++j) previous[j] = j;
    for (size_t i = 1; i <= candidate.size(); ++i) {
      current[0] = i;
      for (size_t j = 1; j <= target.size(); ++j) {
        const size_t substitute =
            previous[j - 1] + (candidate[i - 1] == target[j - 1] ? 0 : 1);
        current[j] =
            std::min({previous[j] + 1, current[j - 1] + 1, substitute});
      }
      std::swap(previous, current);
    }
    scored.emplace_back(previous[target.size()], c);
  }
  std::stable_sort(scored.begin(), scored.end());
  std::vector<std::string> result;
  for (size_t i = 0; i < scored.size() && static_cast<int>(i) < max_results;
       ++i) {
    result.push_back(candidates[scored[i].second]);
  }
  return result;
}

}  // namespace internal
}  // namespace verify
}  // namespace tf_serving_merge
