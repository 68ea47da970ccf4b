#include "cc/verify/common.h"

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

}  // namespace internal
}  // namespace verify
}  // namespace tf_serving_merge
