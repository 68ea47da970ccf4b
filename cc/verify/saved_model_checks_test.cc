// Tests of the checks on hand-written MetaGraphDefs: what saved_model.pb alone
// reveals, with no bundle on disk and nothing loaded.

#include "cc/verify/saved_model_checks.h"

#include <map>
#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"

namespace tf_serving_merge {
namespace verify {
namespace {

// gmock is not available: a HasSubstr stand-in with a readable failure.
::testing::AssertionResult Contains(const std::string& text,
                                    const std::string& part) {
  if (text.find(part) != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected to find\n  " << part << "\nin\n  " << text;
}

tensorflow::MetaGraphDef MetaGraph(const std::string& text) {
  tensorflow::MetaGraphDef meta_graph;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &meta_graph))
      << text;
  return meta_graph;
}

// x: float [-1,3] -> y (Identity).
constexpr char kGraph[] = R"pb(
  graph_def {
    node {
      name: "x"
      op: "Placeholder"
      attr { key: "dtype" value { type: DT_FLOAT } }
      attr {
        key: "shape"
        value { shape { dim { size: -1 } dim { size: 3 } } }
      }
    }
    node {
      name: "y"
      op: "Identity"
      input: "x"
      attr { key: "T" value { type: DT_FLOAT } }
    }
  }
)pb";

TEST(SelectSignaturesTest, EverySignatureButTheInitOpsSorted) {
  const tensorflow::MetaGraphDef meta_graph = MetaGraph(R"pb(
    signature_def { key: "b" value {} }
    signature_def { key: "a" value {} }
    signature_def { key: "__saved_model_init_op" value {} }
  )pb");
  absl::StatusOr<std::vector<std::string>> all =
      SelectSignatures(meta_graph, {});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, (std::vector<std::string>{"a", "b"}));
  absl::StatusOr<std::vector<std::string>> missing =
      SelectSignatures(meta_graph, {"b", "c"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(),
            "--signatures names 'c' not in the MetaGraphDef; signatures "
            "present: 'a', 'b'");
}

TEST(CheckSignaturesTest, DtypeMismatchAndUnknownNodeAreSignatureErrors) {
  const tensorflow::MetaGraphDef meta_graph =
      MetaGraph(std::string(kGraph) + R"pb(
    signature_def {
      key: "predict"
      value {
        method_name: "tensorflow/serving/predict"
        inputs {
          key: "x"
          value { name: "x:0" dtype: DT_INT32 }
        }
        outputs {
          key: "y"
          value { name: "yy:0" dtype: DT_FLOAT }
        }
      }
    }
  )pb");
  const GraphIndex graph(meta_graph.graph_def());
  ASSERT_TRUE(graph.import_status().ok()) << graph.import_status();
  VerifyReport report;
  CheckSignatures(graph, meta_graph, {"predict"}, &report);
  const SignatureReport& signature = report.signatures.at("predict");
  ASSERT_EQ(signature.errors.size(), 2u);
  EXPECT_EQ(signature.errors[0],
            "input 'x' (x:0): the signature declares dtype int32 but node 'x' "
            "(op Placeholder) produces float");
  EXPECT_TRUE(Contains(signature.errors[1],
                       "output 'y' (yy:0): the graph has no node 'yy'; "
                       "closest names: 'y', 'x'"));
  EXPECT_EQ(internal::ShapeString(signature.inputs.at("x").shape),
            "<unknown rank>");
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_TRUE(Contains(report.warnings[0], "no 'serving_default' signature"));
  EXPECT_TRUE(report.errors.empty());
}

TEST(CheckClassifyStructureTest, ARequestNeedsAStringInput) {
  const tensorflow::MetaGraphDef meta_graph = MetaGraph(R"pb(
    signature_def {
      key: "classify"
      value {
        method_name: "tensorflow/serving/classify"
        inputs {
          key: "inputs"
          value { name: "x:0" dtype: DT_FLOAT }
        }
        outputs {
          key: "scores"
          value { name: "y:0" dtype: DT_FLOAT }
        }
      }
    }
  )pb");
  const tensorflow::SignatureDef& signature =
      meta_graph.signature_def().at("classify");
  EXPECT_TRUE(TakesNonStringExamples(signature));
  std::vector<std::string> errors;
  CheckClassifyStructure(signature, /*string_input=*/false, &errors);
  EXPECT_TRUE(errors.empty());
  CheckClassifyStructure(signature, /*string_input=*/true, &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "classify input 'inputs' must be string (serialized tf.Examples); "
            "declared float");
}

TEST(FindDeniedOpsTest, SaverMayRestoreAndAllowedOpsPass) {
  const tensorflow::MetaGraphDef meta_graph = MetaGraph(R"pb(
    graph_def {
      node { name: "print" op: "PrintV2" }
      node { name: "read" op: "ReadFile" }
      node { name: "save/RestoreV2" op: "RestoreV2" }
      node { name: "save/restore_all" op: "NoOp" input: "^save/RestoreV2" }
      node { name: "restore_elsewhere" op: "RestoreV2" }
    }
    saver_def { restore_op_name: "save/restore_all" }
  )pb");
  const std::map<std::string, std::vector<std::string>> found =
      FindDeniedOps(meta_graph, {"PrintV2"});
  EXPECT_EQ(found,
            (std::map<std::string, std::vector<std::string>>{
                {"ReadFile", {"'read'"}},
                {"RestoreV2", {"'restore_elsewhere'"}}}));
  EXPECT_EQ(FindDeniedOps(meta_graph, {}).count("PrintV2"), 1u);
  const std::vector<std::string> errors = DeniedOpErrors(found);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_TRUE(Contains(errors[0],
                       "the graph uses the denied op ReadFile (node 'read')"));
  EXPECT_TRUE(Contains(errors[0], "--allow_ops=ReadFile"));
}

}  // namespace
}  // namespace verify
}  // namespace tf_serving_merge
