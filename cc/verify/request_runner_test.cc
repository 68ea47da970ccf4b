// Tests of the request runner on a session built from a two-node graph (no
// bundle on disk) and of TF Serving's result checks on hand-built tensors.

#include "cc/verify/request_runner.h"

#include <map>
#include <memory>
#include <string>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "tensorflow/core/framework/graph.pb.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/public/session.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

template <typename Proto>
Proto Parse(const std::string& text) {
  Proto proto;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &proto))
      << text;
  return proto;
}

// x: float [-1] -> y (Identity).
constexpr char kGraph[] = R"pb(
  node {
    name: "x"
    op: "Placeholder"
    attr { key: "dtype" value { type: DT_FLOAT } }
    attr { key: "shape" value { shape { dim { size: -1 } } } }
  }
  node {
    name: "y"
    op: "Identity"
    input: "x"
    attr { key: "T" value { type: DT_FLOAT } }
  }
)pb";

// `y_dtype` and `y_shape` are what the signature declares for output 'y'.
tensorflow::SignatureDef Signature(const std::string& y_dtype,
                                   const std::string& y_shape) {
  return Parse<tensorflow::SignatureDef>(
      "method_name: 'tensorflow/serving/predict' "
      "inputs { key: 'x' value { name: 'x:0' dtype: DT_FLOAT } } "
      "outputs { key: 'y' value { name: 'y:0' dtype: " +
      y_dtype + " tensor_shape { " + y_shape + " } } }");
}

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    session_.reset(tensorflow::NewSession(tensorflow::SessionOptions()));
    ASSERT_NE(session_, nullptr);
    ASSERT_TRUE(session_->Create(Parse<tensorflow::GraphDef>(kGraph)).ok());
    runner_.session = session_.get();
  }

  std::map<std::string, Tensor> Inputs() {
    Tensor x(tensorflow::DT_FLOAT, TensorShape({2}));
    x.flat<float>()(0) = 1;
    x.flat<float>()(1) = 2;
    return {{"x", x}};
  }

  std::unique_ptr<tensorflow::Session> session_;
  Runner runner_;
};

TEST_F(RunnerTest, RunsAndReturnsOutputsByAlias) {
  auto outputs = RunSignature(
      runner_, Signature("DT_FLOAT", "dim { size: -1 }"), Inputs(), {"y"});
  ASSERT_TRUE(outputs.ok()) << outputs.status();
  EXPECT_EQ(outputs->at("y").shape(), TensorShape({2}));
  EXPECT_EQ(outputs->at("y").flat<float>()(1), 2);
}

TEST_F(RunnerTest, OutputsDisagreeingWithTheSignatureFail) {
  auto dtype = RunSignature(runner_, Signature("DT_INT32", "dim { size: -1 }"),
                            Inputs(), {"y"});
  EXPECT_EQ(dtype.status().message(),
            "output 'y' (y:0) returned dtype float but the signature declares "
            "int32");
  auto shape = RunSignature(runner_, Signature("DT_FLOAT", "dim { size: 3 }"),
                            Inputs(), {"y"});
  EXPECT_EQ(shape.status().message(),
            "output 'y' (y:0) returned shape [2] but the signature declares "
            "[3]");
}

TEST_F(RunnerTest, ExamplesNeedAClassifyOrRegressSignature) {
  const absl::Status status =
      RunExamples(runner_, "p", Signature("DT_FLOAT", ""), {"example"});
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_EQ(status.message(),
            "signature 'p' has method_name 'tensorflow/serving/predict'; a "
            "classify/regress request needs tensorflow/serving/classify or "
            "tensorflow/serving/regress");
}

TEST(ResultChecksTest, ClassifyOutputsMustAgreeOnBatchAndClasses) {
  const Tensor classes(tensorflow::DT_STRING, TensorShape({2, 3}));
  EXPECT_TRUE(CheckClassifyResult({{"classes", classes}}, 2).ok());
  EXPECT_EQ(CheckClassifyResult({{"classes", classes}}, 1).message(),
            "classify output 'classes' has batch size 2 for 1 example(s)");
  const Tensor scores(tensorflow::DT_FLOAT, TensorShape({2, 4}));
  EXPECT_EQ(
      CheckClassifyResult({{"classes", classes}, {"scores", scores}}, 2)
          .message(),
      "classify outputs 'classes' and 'scores' disagree on num_classes: 3 vs. "
      "4");
  const Tensor flat(tensorflow::DT_FLOAT, TensorShape({2}));
  EXPECT_FALSE(CheckClassifyResult({{"scores", flat}}, 2).ok());
}

TEST(ResultChecksTest, RegressOutputIsOneValuePerExample) {
  EXPECT_TRUE(
      CheckRegressResult(Tensor(tensorflow::DT_FLOAT, TensorShape({2})), 2)
          .ok());
  EXPECT_TRUE(
      CheckRegressResult(Tensor(tensorflow::DT_FLOAT, TensorShape({2, 1})), 2)
          .ok());
  EXPECT_FALSE(
      CheckRegressResult(Tensor(tensorflow::DT_FLOAT, TensorShape({2, 2})), 2)
          .ok());
}

}  // namespace
}  // namespace verify
}  // namespace tf_serving_merge
