// Tests of verify_lib on SavedModels written at build time by
// //cc/verify/testdata:write_bundles (TF1 Builder export with variables and a
// signature without inputs, TF2 tf.saved_model.save export, classify/regress
// signatures), plus copies the tests break.
//
// Outside Bazel, point VERIFY_TEST_BUNDLES at the output of
//   bazel run //cc/verify/testdata:make_bundles -- --output_dir=DIR

#include "cc/verify/verify_lib.h"

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tensorflow/core/example/example.pb.h"
#include "tensorflow/core/platform/env.h"
#include "tensorflow/core/protobuf/saved_model.pb.h"

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

std::string BundlesDir() {
  if (const char* dir = std::getenv("VERIFY_TEST_BUNDLES")) return dir;
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) {
    ADD_FAILURE() << "run under `bazel test` or set VERIFY_TEST_BUNDLES";
    return "";
  }
  return std::string(srcdir) + "/" +
         (workspace != nullptr ? workspace : "tf_serving_merge") +
         "/cc/verify/testdata/bundles";
}

std::string Bundle(const std::string& kind) {
  return BundlesDir() + "/" + kind;
}

std::string JoinErrors(const std::vector<std::string>& errors) {
  std::string out;
  for (const std::string& error : errors) out += error + "\n";
  return out;
}

VerifyReport MustVerify(const VerifyOptions& options) {
  absl::StatusOr<VerifyReport> report = VerifySavedModel(options);
  EXPECT_TRUE(report.ok()) << report.status();
  return report.ok() ? *std::move(report) : VerifyReport();
}

VerifyOptions Options(const std::string& export_dir,
                      RunMode run = RunMode::kSmoke) {
  VerifyOptions options;
  options.export_dir = export_dir;
  options.run = run;
  return options;
}

// Verifies each generated bundle once (smoke and warmup); tests share them.
class GeneratedBundlesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    reports_ = new std::map<std::string, VerifyReport>();
    for (const char* kind : {"tf1", "tf2", "classify_regress"}) {
      (*reports_)[std::string(kind) + "/smoke"] =
          MustVerify(Options(Bundle(kind)));
    }
    for (const char* kind : {"tf1", "classify_regress"}) {
      (*reports_)[std::string(kind) + "/warmup"] =
          MustVerify(Options(Bundle(kind), RunMode::kWarmup));
    }
  }
  static void TearDownTestSuite() {
    delete reports_;
    reports_ = nullptr;
  }
  static const VerifyReport& Report(const std::string& key) {
    return reports_->at(key);
  }

 private:
  static std::map<std::string, VerifyReport>* reports_;
};

std::map<std::string, VerifyReport>* GeneratedBundlesTest::reports_ = nullptr;

TEST_F(GeneratedBundlesTest, Tf1BundlePassesSmoke) {
  const VerifyReport& report = Report("tf1/smoke");
  EXPECT_TRUE(report.ok()) << FormatText(report);
  EXPECT_TRUE(report.loaded);
  EXPECT_GT(report.load_ms, 0);
  ASSERT_EQ(report.signatures.size(), 3u);
  for (const auto& [name, signature] : report.signatures) {
    EXPECT_TRUE(signature.ran) << name;
    EXPECT_EQ(signature.method, kPredictMethodName) << name;
  }
  const SignatureReport& scaled = report.signatures.at("scaled");
  EXPECT_EQ(scaled.inputs.at("x").name, "x:0");
  EXPECT_EQ(scaled.inputs.at("x").dtype, tensorflow::DT_FLOAT);
  EXPECT_EQ(internal::ShapeString(scaled.inputs.at("x").shape), "[-1,3]");
  EXPECT_EQ(internal::ShapeString(scaled.inputs.at("factor").shape), "[]");
  EXPECT_TRUE(report.warnings.empty()) << JoinErrors(report.warnings);
  EXPECT_FALSE(report.warmup.has_value());
}

TEST_F(GeneratedBundlesTest, SignatureWithoutInputsRuns) {
  const SignatureReport& constant =
      Report("tf1/smoke").signatures.at("constant");
  EXPECT_TRUE(constant.inputs.empty());
  EXPECT_TRUE(constant.ran);
  EXPECT_TRUE(constant.ok()) << JoinErrors(constant.errors);

  const SignatureReport& counter = Report("tf2/smoke").signatures.at("counter");
  EXPECT_TRUE(counter.inputs.empty());
  EXPECT_EQ(counter.outputs.at("count").dtype, tensorflow::DT_INT64);
  EXPECT_TRUE(counter.ran);
}

TEST_F(GeneratedBundlesTest, Tf2BundlePassesAndSkipsInitOpSignature) {
  const VerifyReport& report = Report("tf2/smoke");
  EXPECT_TRUE(report.ok()) << FormatText(report);
  std::vector<std::string> names;
  for (const auto& [name, signature] : report.signatures) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"counter", "serving_default"}));
  const SignatureReport& serving = report.signatures.at("serving_default");
  EXPECT_EQ(internal::ShapeString(serving.inputs.at("features").shape),
            "[-1,4]");
  EXPECT_EQ(internal::ShapeString(serving.outputs.at("norm").shape), "[-1]");
}

TEST_F(GeneratedBundlesTest, ClassifyAndRegressSignaturesPass) {
  const VerifyReport& report = Report("classify_regress/smoke");
  EXPECT_TRUE(report.ok()) << FormatText(report);
  EXPECT_EQ(report.signatures.at("classify").method, kClassifyMethodName);
  EXPECT_EQ(report.signatures.at("regress").method, kRegressMethodName);
  EXPECT_TRUE(report.signatures.at("classify").ran);
  EXPECT_TRUE(report.signatures.at("regress").ran);
}

TEST_F(GeneratedBundlesTest, SmokeExamplesCarryEveryParsedFeature) {
  // The classify/regress bundle requires "scale" (no default), so an empty
  // tf.Example would fail; the smoke run above passed with this one.
  tensorflow::SavedModel saved_model;
  ASSERT_TRUE(tensorflow::ReadBinaryProto(
                  tensorflow::Env::Default(),
                  Bundle("classify_regress") + "/saved_model.pb", &saved_model)
                  .ok());
  const tensorflow::GraphDef& graph_def = saved_model.meta_graphs(0).graph_def();
  tensorflow::Example example;
  ASSERT_TRUE(example.ParseFromString(
      internal::SynthesizeExample(graph_def, "tf_example:0")));
  const auto& features = example.features().feature();
  ASSERT_EQ(features.size(), 3) << example.DebugString();
  EXPECT_EQ(features.at("x").float_list().value_size(), 2);
  EXPECT_EQ(features.at("scale").int64_list().value_size(), 1);
  EXPECT_EQ(features.at("tags").bytes_list().value_size(), 1);
  // A tensor no parse op reads gets an empty Example.
  EXPECT_EQ(internal::SynthesizeExample(graph_def, "scores:0"), "");
}

TEST_F(GeneratedBundlesTest, WarmupReplaysEveryRecord) {
  for (const char* kind : {"tf1", "classify_regress"}) {
    const VerifyReport& report = Report(std::string(kind) + "/warmup");
    EXPECT_TRUE(report.ok()) << FormatText(report);
    ASSERT_TRUE(report.warmup.has_value()) << kind;
    EXPECT_EQ(report.warmup->records, 3) << kind;
    EXPECT_TRUE(Contains(report.warmup->path,
                         "/assets.extra/tf_serving_warmup_requests"));
    for (const auto& [name, signature] : report.signatures) {
      EXPECT_FALSE(signature.ran) << "warmup mode must not smoke-run " << name;
    }
  }
  const std::map<std::string, int> expected = {
      {"classify", 1}, {"regress", 1}, {"serving_default", 1}};
  EXPECT_EQ(Report("classify_regress/warmup").warmup->records_per_signature,
            expected);
}

TEST_F(GeneratedBundlesTest, TextReportHasOneLinePerSignature) {
  const std::string text = FormatText(Report("tf1/smoke"));
  EXPECT_TRUE(Contains(text, "loaded in"));
  EXPECT_TRUE(Contains(text, "ok      serving_default"));
  EXPECT_TRUE(Contains(text, "(x:float[-1,3]) -> (y:float[-1,2])"));
  EXPECT_TRUE(Contains(text, "RESULT: OK (3 signature(s))"));
}

TEST_F(GeneratedBundlesTest, JsonReportHasTheDocumentedKeys) {
  const std::string json = FormatJson(Report("classify_regress/warmup"));
  EXPECT_EQ(json.rfind("{\"ok\":true,\"export_dir\":", 0), 0u) << json;
  for (const char* key :
       {"\"load_ms\":", "\"signatures\":{\"classify\":{\"method\":"
                        "\"tensorflow/serving/classify\"",
        "\"inputs\":{\"name\":\"tf_example:0\",\"dtype\":\"string\","
        "\"shape\":[-1]}",
        "\"warmup\":{\"path\":", "\"records\":3", "\"errors\":[]"}) {
    EXPECT_TRUE(Contains(json, key));
  }
}

// --- Broken copies ----------------------------------------------------------

class BrokenBundleTest : public ::testing::Test {
 protected:
  // Copies bundle `kind` into a fresh directory and returns its path.
  std::string Copy(const std::string& kind) {
    const std::string dir =
        std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR")
                                               : "/tmp") +
        "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name() +
        "_" + kind;
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(
        std::filesystem::path(dir).parent_path());
    std::filesystem::copy(Bundle(kind), dir,
                          std::filesystem::copy_options::recursive);
    return dir;
  }

  // Rewrites saved_model.pb of `dir` after `edit` changed its first graph.
  template <typename Edit>
  void EditSavedModel(const std::string& dir, Edit edit) {
    tensorflow::SavedModel saved_model;
    const std::string path = dir + "/saved_model.pb";
    ASSERT_TRUE(tensorflow::ReadBinaryProto(tensorflow::Env::Default(), path,
                                            &saved_model)
                    .ok());
    edit(saved_model.mutable_meta_graphs(0));
    ASSERT_TRUE(tensorflow::WriteBinaryProto(tensorflow::Env::Default(), path,
                                             saved_model)
                    .ok());
  }
};

TEST_F(BrokenBundleTest, TensorNotInGraphListsClosestNames) {
  const std::string dir = Copy("tf1");
  EditSavedModel(dir, [](tensorflow::MetaGraphDef* meta_graph) {
    (*meta_graph->mutable_signature_def())["scaled"]
        .mutable_outputs()
        ->at("scaled")
        .set_name("scaledd:0");
  });
  const VerifyReport report = MustVerify(Options(dir));
  EXPECT_FALSE(report.ok());
  const SignatureReport& scaled = report.signatures.at("scaled");
  ASSERT_FALSE(scaled.ok());
  EXPECT_TRUE(Contains(JoinErrors(scaled.errors),
                       "output 'scaled' (scaledd:0): the graph has no node "
                       "'scaledd'; closest names: 'scaled'"));
  EXPECT_FALSE(scaled.ran);
  EXPECT_TRUE(report.signatures.at("serving_default").ok());
  EXPECT_TRUE(Contains(FormatText(report),
                       "RESULT: FAILED (1 of 3 signature(s) failed)"));
}

TEST_F(BrokenBundleTest, UndeclaredInputShapeFallsBackToTheGraphs) {
  const std::string dir = Copy("tf1");
  EditSavedModel(dir, [](tensorflow::MetaGraphDef* meta_graph) {
    tensorflow::TensorShapeProto* shape =
        (*meta_graph->mutable_signature_def())["serving_default"]
            .mutable_inputs()
            ->at("x")
            .mutable_tensor_shape();
    shape->Clear();
    shape->set_unknown_rank(true);
  });
  const VerifyReport report = MustVerify(Options(dir));
  const SignatureReport& serving = report.signatures.at("serving_default");
  EXPECT_TRUE(serving.inputs.at("x").shape.unknown_rank());
  // Synthesized from the placeholder's [-1,3]: a [1] input would not matmul.
  EXPECT_TRUE(serving.ran);
  EXPECT_TRUE(serving.ok()) << JoinErrors(serving.errors);
  EXPECT_EQ(serving.fed.at("x"), tensorflow::TensorShape({1, 3}));
  EXPECT_EQ(serving.tried.at("x"), std::vector<std::string>{"[1,3]"});
}

TEST_F(BrokenBundleTest, OutputIndexOutOfRange) {
  const std::string dir = Copy("tf1");
  EditSavedModel(dir, [](tensorflow::MetaGraphDef* meta_graph) {
    (*meta_graph->mutable_signature_def())["serving_default"]
        .mutable_outputs()
        ->at("y")
        .set_name("y:3");
  });
  const VerifyReport report = MustVerify(Options(dir, RunMode::kNone));
  const SignatureReport& serving = report.signatures.at("serving_default");
  EXPECT_TRUE(Contains(JoinErrors(serving.errors),
                       "node 'y' (op Identity) has 1 output(s), so 'y:3' "
                       "does not exist"));
}

TEST_F(BrokenBundleTest, RegressSignatureWithWrongOutputKey) {
  const std::string dir = Copy("classify_regress");
  EditSavedModel(dir, [](tensorflow::MetaGraphDef* meta_graph) {
    auto* outputs =
        (*meta_graph->mutable_signature_def())["regress"].mutable_outputs();
    (*outputs)["value"] = outputs->at("outputs");
    outputs->erase("outputs");
  });
  const VerifyReport report = MustVerify(Options(dir));
  EXPECT_TRUE(Contains(JoinErrors(report.signatures.at("regress").errors),
                       "regress signatures need exactly one output under the "
                       "key 'outputs'; found {value}"));
  EXPECT_TRUE(report.signatures.at("classify").ok());
}

// TF Serving's Classify API cannot call a classify signature whose input is
// not a string, but its Predict API can: a warning, not an error.
TEST_F(BrokenBundleTest, ClassifyInputThatIsNotAStringIsAWarning) {
  const std::string dir = Copy("classify_regress");
  EditSavedModel(dir, [](tensorflow::MetaGraphDef* meta_graph) {
    (*meta_graph->mutable_signature_def())["classify"]
        .mutable_inputs()
        ->at("inputs")
        .set_dtype(tensorflow::DT_FLOAT);
  });
  const VerifyReport report = MustVerify(Options(dir, RunMode::kNone));
  const std::string errors =
      JoinErrors(report.signatures.at("classify").errors);
  EXPECT_FALSE(Contains(errors, "must be string"));
  EXPECT_TRUE(Contains(JoinErrors(report.warnings),
                       "signature 'classify' (classify) takes input 'inputs' "
                       "of dtype float, not serialized tf.Examples: TF "
                       "Serving's Classify API cannot call it"));
  // The graph's tensor is still a string, which the signature contradicts.
  EXPECT_TRUE(Contains(errors, "the signature declares dtype float but node "
                                "'tf_example' (op Placeholder) produces "
                                "string"));
}

TEST_F(BrokenBundleTest, UnknownSignatureInOptionsListsAvailable) {
  VerifyOptions options = Options(Bundle("tf1"), RunMode::kNone);
  options.signatures = {"scaled", "nope"};
  const VerifyReport report = MustVerify(options);
  EXPECT_FALSE(report.ok());
  EXPECT_TRUE(Contains(JoinErrors(report.errors),
                       "--signatures names 'nope' not in the MetaGraphDef; "
                       "signatures present: 'constant', 'scaled', "
                       "'serving_default'"));
}

TEST_F(BrokenBundleTest, SelectedSignaturesOnly) {
  VerifyOptions options = Options(Bundle("tf1"));
  options.signatures = {"constant"};
  const VerifyReport report = MustVerify(options);
  EXPECT_TRUE(report.ok()) << FormatText(report);
  ASSERT_EQ(report.signatures.size(), 1u);
  EXPECT_TRUE(report.signatures.at("constant").ran);
}

TEST_F(BrokenBundleTest, MissingTagSetIsReportedBeforeLoading) {
  VerifyOptions options = Options(Bundle("tf2"));
  options.tags = {"serve", "tpu"};
  const VerifyReport report = MustVerify(options);
  EXPECT_FALSE(report.loaded);
  EXPECT_TRUE(Contains(JoinErrors(report.errors),
                       "no MetaGraphDef with tag-set {serve,tpu}"));
  EXPECT_TRUE(Contains(JoinErrors(report.errors), "tag-sets present: {serve}"));
}

// --- Options and helpers ----------------------------------------------------

TEST(OptionsTest, InvalidOptionsAreUsageErrors) {
  VerifyOptions options;
  EXPECT_TRUE(Contains(std::string(ValidateOptions(options).message()),
                       "--export_dir is required"));
  options.export_dir = "/x";
  options.tags = {};
  EXPECT_TRUE(Contains(std::string(ValidateOptions(options).message()),
                       "--tags must name at least one tag"));
  options.tags = {"serve", "serve"};
  EXPECT_TRUE(Contains(std::string(ValidateOptions(options).message()),
                       "--tags='serve,serve' names 'serve' twice"));
  options.tags = {"serve"};
  options.signatures = {""};
  EXPECT_TRUE(Contains(std::string(ValidateOptions(options).message()),
                       "--signatures='' has an empty name"));
  options.signatures = {};
  EXPECT_TRUE(ValidateOptions(options).ok());
  EXPECT_EQ(VerifySavedModel(VerifyOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(OptionsTest, ParseRunMode) {
  EXPECT_EQ(*ParseRunMode("smoke+warmup"), RunMode::kSmokeAndWarmup);
  EXPECT_EQ(*ParseRunMode("smoke"), RunMode::kSmoke);
  EXPECT_EQ(*ParseRunMode("warmup"), RunMode::kWarmup);
  EXPECT_EQ(*ParseRunMode("none"), RunMode::kNone);
  EXPECT_TRUE(Contains(std::string(ParseRunMode("all").status().message()),
                       "--run='all' is not a run mode; choose smoke+warmup "
                       "(the default), smoke, warmup or none"));
}

TEST(HelpersTest, ClosestNamesRanksByEditDistance) {
  const std::vector<std::string> names = {"dense/kernel", "dense/bias",
                                          "inputs", "input", "output"};
  EXPECT_EQ(internal::ClosestNames("inpt", names, 2),
            (std::vector<std::string>{"input", "inputs"}));
  // Ties keep the candidates' order.
  EXPECT_EQ(internal::ClosestNames("inptu", names, 2),
            (std::vector<std::string>{"inputs", "input"}));
  EXPECT_EQ(internal::ClosestNames("dense/bias:0", names, 1),
            (std::vector<std::string>{"dense/bias"}));
  EXPECT_TRUE(internal::ClosestNames("x", {}, 3).empty());
}

TEST(HelpersTest, DtypeAndShapeNames) {
  EXPECT_EQ(internal::DtypeName(tensorflow::DT_FLOAT), "float");
  EXPECT_EQ(internal::DtypeName(tensorflow::DT_STRING), "string");
  EXPECT_EQ(internal::DtypeName(tensorflow::DT_INT64), "int64");
  EXPECT_EQ(internal::ShapeString(tensorflow::PartialTensorShape()),
            "<unknown rank>");
  EXPECT_EQ(internal::ShapeString(tensorflow::PartialTensorShape({})), "[]");
  EXPECT_EQ(internal::ShapeString(tensorflow::PartialTensorShape({-1, 640})),
            "[-1,640]");
}

}  // namespace
}  // namespace verify
}  // namespace tf_serving_merge
