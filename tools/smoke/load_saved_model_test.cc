// Proves the TensorFlow C++ wiring: tensorflow::LoadSavedModel (from the pip
// wheel's libtensorflow_framework) loads a SavedModel under the "serve" tag,
// restores its variables and runs its signature, the way TF Serving does.
//
// argv[1]: path of the model's saved_model.pb (made by :half_plus_two).

#include <string>
#include <unordered_set>
#include <vector>

#include "gtest/gtest.h"
#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"

namespace {

std::string g_export_dir;  // NOLINT: set once in main before tests run.

TEST(LoadSavedModelTest, LoadsServeTagAndRunsSignature) {
  tensorflow::SavedModelBundle bundle;
  tensorflow::Status status = tensorflow::LoadSavedModel(
      tensorflow::SessionOptions(), tensorflow::RunOptions(), g_export_dir,
      {"serve"}, &bundle);
  ASSERT_TRUE(status.ok()) << status.ToString();

  const auto& signatures = bundle.meta_graph_def.signature_def();
  auto it = signatures.find("serving_default");
  ASSERT_NE(it, signatures.end());
  const std::string x_name = it->second.inputs().at("x").name();
  const std::string y_name = it->second.outputs().at("y").name();

  tensorflow::Tensor x(tensorflow::DT_FLOAT, tensorflow::TensorShape({3}));
  auto xs = x.flat<float>();
  xs(0) = 0.0f;
  xs(1) = 1.0f;
  xs(2) = 4.0f;
  std::vector<tensorflow::Tensor> outputs;
  status = bundle.session->Run({{x_name, x}}, {y_name}, {}, &outputs);
  ASSERT_TRUE(status.ok()) << status.ToString();
  ASSERT_EQ(outputs.size(), 1u);
  auto ys = outputs[0].flat<float>();
  ASSERT_EQ(ys.size(), 3);
  EXPECT_FLOAT_EQ(ys(0), 2.0f);
  EXPECT_FLOAT_EQ(ys(1), 2.5f);
  EXPECT_FLOAT_EQ(ys(2), 4.0f);
}

TEST(LoadSavedModelTest, MissingTagSetIsAnError) {
  tensorflow::SavedModelBundle bundle;
  tensorflow::Status status = tensorflow::LoadSavedModel(
      tensorflow::SessionOptions(), tensorflow::RunOptions(), g_export_dir,
      {"serve", "gpu"}, &bundle);
  EXPECT_FALSE(status.ok());
}

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (argc != 2) {
    fprintf(stderr, "usage: %s <path to saved_model.pb>\n", argv[0]);
    return 2;
  }
  g_export_dir = argv[1];
  g_export_dir = g_export_dir.substr(0, g_export_dir.rfind('/'));
  return RUN_ALL_TESTS();
}
