#include "cc/verify/example_synthesis.h"

#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "tensorflow/core/example/example.pb.h"
#include "tensorflow/core/framework/graph.pb.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::tensorflow::TensorShape;

tensorflow::GraphDef Graph(const std::string& text) {
  tensorflow::GraphDef graph_def;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &graph_def))
      << text;
  return graph_def;
}

constexpr char kStringPlaceholder[] = R"pb(
  node {
    name: "serialized"
    op: "Placeholder"
    attr { key: "dtype" value { type: DT_STRING } }
  }
)pb";

std::string StringConst(const std::string& name, const std::string& value) {
  return "node { name: '" + name +
         "' op: 'Const' attr { key: 'dtype' value { type: DT_STRING } } "
         "attr { key: 'value' value { tensor { dtype: DT_STRING "
         "tensor_shape {} string_val: '" +
         value + "' } } } }";
}

// ParseExample (v1) reading `serialized` through an Identity, with its dense
// key "x" from `key_node` (through an Identity too), shape [2].
std::string ParseExampleV1(const std::string& key_node) {
  return std::string(kStringPlaceholder) + R"pb(
    node { name: "hop" op: "Identity" input: "serialized" }
    node { name: "key_hop" op: "Identity" input: ")pb" +
         key_node + R"pb(" }
    node {
      name: "parse"
      op: "ParseExample"
      input: "hop"
      input: "names"
      input: "key_hop"
      input: "default"
      attr { key: "Nsparse" value { i: 0 } }
      attr { key: "Ndense" value { i: 1 } }
      attr { key: "Tdense" value { list { type: DT_FLOAT } } }
      attr { key: "sparse_types" value { list {} } }
      attr { key: "dense_shapes" value { list { shape { dim { size: 2 } } } } }
    }
  )pb";
}

TEST(InputSynthesizerTest, ParseExampleKeysFromConstsThroughIdentities) {
  const tensorflow::GraphDef graph =
      Graph(ParseExampleV1("key") + StringConst("key", "x"));
  InputSynthesizer synthesizer(graph);
  tensorflow::Example example;
  ASSERT_TRUE(example.ParseFromString(synthesizer.ExampleFor("serialized:0")));
  const auto& features = example.features().feature();
  ASSERT_EQ(features.size(), 1);
  const auto& values = features.at("x").float_list().value();
  EXPECT_EQ(std::vector<float>(values.begin(), values.end()),
            (std::vector<float>{0.5f, 0.5f}));
  EXPECT_TRUE(synthesizer.warnings().empty());
}

TEST(InputSynthesizerTest, KeysThatAreNotConstantsContributeNothing) {
  const tensorflow::GraphDef graph =
      Graph(ParseExampleV1("key") +
            "node { name: 'key' op: 'Placeholder' attr { key: 'dtype' value "
            "{ type: DT_STRING } } }");
  InputSynthesizer synthesizer(graph);
  EXPECT_EQ(synthesizer.ExampleFor("serialized:0"), "");
  ASSERT_EQ(synthesizer.warnings().size(), 1u);
  EXPECT_NE(synthesizer.warnings()[0].find(
                "parse op 'parse' reads its feature keys from 'key_hop', "
                "which is not a constant"),
            std::string::npos)
      << synthesizer.warnings()[0];
}

TEST(InputSynthesizerTest, ParseOpsInsideFunctionBodies) {
  const tensorflow::GraphDef graph = Graph(std::string(kStringPlaceholder) + R"pb(
    node {
      name: "call"
      op: "StatefulPartitionedCall"
      input: "serialized"
      attr { key: "f" value { func { name: "parse_fn" } } }
    }
    library {
      function {
        signature {
          name: "parse_fn"
          input_arg { name: "s" type: DT_STRING }
        }
        node_def { name: "id" op: "Identity" input: "s" }
        node_def {
          name: "parse"
          op: "ParseSingleExample"
          input: "id:output:0"
          input: "default:output:0"
          attr { key: "num_sparse" value { i: 1 } }
          attr { key: "sparse_keys" value { list { s: "tags" } } }
          attr { key: "dense_keys" value { list { s: "k" } } }
          attr { key: "sparse_types" value { list { type: DT_STRING } } }
          attr { key: "Tdense" value { list { type: DT_INT64 } } }
          attr {
            key: "dense_shapes"
            value { list { shape { dim { size: 3 } } } }
          }
        }
      }
    }
  )pb");
  InputSynthesizer synthesizer(graph);
  tensorflow::Example example;
  ASSERT_TRUE(example.ParseFromString(synthesizer.ExampleFor("serialized:0")));
  const auto& features = example.features().feature();
  EXPECT_EQ(features.at("k").int64_list().value_size(), 3);
  EXPECT_EQ(features.at("tags").bytes_list().value(0), "a");
}

TEST(InputSynthesizerTest, SequenceExampleForParseSequenceExample) {
  const tensorflow::GraphDef graph = Graph(std::string(kStringPlaceholder) + R"pb(
    node {
      name: "parse"
      op: "ParseSequenceExample"
      input: "serialized"
      input: "debug_name"
      attr { key: "context_dense_keys" value { list { s: "c" } } }
      attr { key: "Tcontext_dense" value { list { type: DT_FLOAT } } }
      attr { key: "context_dense_shapes" value { list { shape {} } } }
      attr { key: "feature_list_dense_keys" value { list { s: "f" } } }
      attr { key: "feature_list_dense_types" value { list { type: DT_STRING } } }
      attr {
        key: "feature_list_dense_shapes"
        value { list { shape { dim { size: 2 } } } }
      }
    }
  )pb");
  InputSynthesizer synthesizer(graph);
  tensorflow::SequenceExample sequence;
  ASSERT_TRUE(
      sequence.ParseFromString(synthesizer.ExampleFor("serialized:0")));
  EXPECT_EQ(sequence.context().feature().at("c").float_list().value_size(), 1);
  const auto& list = sequence.feature_lists().feature_list().at("f");
  ASSERT_EQ(list.feature_size(), 1);
  EXPECT_EQ(list.feature(0).bytes_list().value_size(), 2);
}

TEST(InputSynthesizerTest, UnknownRankCandidates) {
  const tensorflow::GraphDef graph = Graph(R"pb(
    node {
      name: "counter"
      op: "VariableV2"
      attr { key: "shape" value { shape {} } }
      attr { key: "dtype" value { type: DT_FLOAT } }
    }
    node {
      name: "delta"
      op: "Placeholder"
      attr { key: "dtype" value { type: DT_FLOAT } }
      attr { key: "shape" value { shape { unknown_rank: true } } }
    }
    node { name: "hop" op: "Identity" input: "delta" }
    node { name: "add" op: "AssignAdd" input: "counter" input: "hop" }
    node {
      name: "free"
      op: "Placeholder"
      attr { key: "dtype" value { type: DT_FLOAT } }
      attr { key: "shape" value { shape { unknown_rank: true } } }
    }
    node { name: "abs" op: "Abs" input: "free" }
    node {
      name: "shaped"
      op: "Placeholder"
      attr { key: "dtype" value { type: DT_FLOAT } }
      attr { key: "shape" value { shape { dim { size: -1 } dim { size: 3 } } } }
    }
  )pb");
  InputSynthesizer synthesizer(graph);
  const tensorflow::PartialTensorShape unknown;
  EXPECT_EQ(synthesizer.CandidateShapes("delta:0", unknown),
            (std::vector<TensorShape>{TensorShape({}), TensorShape({1})}));
  EXPECT_EQ(synthesizer.CandidateShapes("free:0", unknown),
            (std::vector<TensorShape>{TensorShape({}), TensorShape({1})}));
  EXPECT_EQ(synthesizer.CandidateShapes("shaped:0", unknown),
            (std::vector<TensorShape>{TensorShape({1, 3}), TensorShape({}),
                                      TensorShape({1})}));
  EXPECT_EQ(synthesizer.CandidateShapes(
                "free:0", tensorflow::PartialTensorShape({-1, 2, -1})),
            (std::vector<TensorShape>{TensorShape({1, 2, 1})}));
}

TEST(InputSynthesizerTest, ValuesFollowThePolicy) {
  const tensorflow::GraphDef graph = Graph(kStringPlaceholder);
  InputSynthesizer synthesizer(graph);
  auto floats =
      synthesizer.InputValue("x:0", tensorflow::DT_FLOAT, TensorShape({2, 5}));
  ASSERT_TRUE(floats.ok());
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(floats->flat<float>()(i), 0.25f + (i % 7) / 8.0f) << i;
  }
  auto ints =
      synthesizer.InputValue("x:0", tensorflow::DT_INT32, TensorShape({3}));
  ASSERT_TRUE(ints.ok());
  EXPECT_EQ(ints->flat<int32_t>()(2), 0);
  auto strings = synthesizer.InputValue("serialized:0", tensorflow::DT_STRING,
                                        TensorShape({2}));
  ASSERT_TRUE(strings.ok());
  EXPECT_EQ(strings->flat<tensorflow::tstring>()(1), "");  // No parse op.
  EXPECT_FALSE(synthesizer
                   .InputValue("x:0", tensorflow::DT_RESOURCE, TensorShape({}))
                   .ok());
}

}  // namespace
}  // namespace verify
}  // namespace tf_serving_merge
