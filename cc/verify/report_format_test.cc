// Tests of the text and --json renderings on hand-built reports: no bundle is
// loaded, so every byte of the output is pinned.

#include "cc/verify/report_format.h"

#include <string>

#include "gtest/gtest.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.pb.h"

namespace tf_serving_merge {
namespace verify {
namespace {

TensorSummary Tensor(const std::string& name, tensorflow::DataType dtype,
                     const tensorflow::PartialTensorShape& shape) {
  TensorSummary tensor;
  tensor.name = name;
  tensor.dtype = dtype;
  tensor.shape = shape;
  return tensor;
}

// A bundle that loaded, smoke-ran its one signature and replayed its warmup.
VerifyReport PassingReport() {
  VerifyReport report;
  report.export_dir = "/models/m/3";
  report.tags = {"serve"};
  report.run = RunMode::kSmokeAndWarmup;
  report.loaded = true;
  report.load_ms = 12.34;
  SignatureReport& signature = report.signatures["serving_default"];
  signature.method = kPredictMethodName;
  signature.inputs["x"] = Tensor("x:0", tensorflow::DT_FLOAT, {-1, 3});
  signature.outputs["y"] = Tensor("y:0", tensorflow::DT_FLOAT, {-1});
  signature.ran = true;
  signature.run_ms = 1.5;
  signature.fed["x"] = tensorflow::TensorShape({1, 3});
  WarmupReport& warmup = report.warmup.emplace();
  warmup.path = "/models/m/3/assets.extra/tf_serving_warmup_requests";
  warmup.records = 2;
  warmup.records_per_signature["serving_default"] = 2;
  warmup.run_ms = 3.5;
  report.warnings = {"w1"};
  return report;
}

TEST(ReportTest, PassingReportText) {
  const VerifyReport report = PassingReport();
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(FormatText(report),
            "export_dir: /models/m/3\n"
            "tags: serve  run: smoke+warmup  loaded in 12.3 ms\n"
            "  ok      serving_default  predict (x:float[-1,3]) -> "
            "(y:float[-1])  run 1.5 ms\n"
            "warmup: ok, 2 record(s) replayed in 3.5 ms from "
            "/models/m/3/assets.extra/tf_serving_warmup_requests\n"
            "warning: w1\n"
            "RESULT: OK (1 signature(s))\n");
}

TEST(ReportTest, PassingReportJson) {
  EXPECT_EQ(
      FormatJson(PassingReport()),
      "{\"ok\":true,\"export_dir\":\"/models/m/3\",\"tags\":[\"serve\"],"
      "\"run\":\"smoke+warmup\",\"loaded\":true,\"load_ms\":12.340,"
      "\"signatures\":{\"serving_default\":{"
      "\"method\":\"tensorflow/serving/predict\","
      "\"inputs\":{\"x\":{\"name\":\"x:0\",\"dtype\":\"float\","
      "\"shape\":[-1,3]}},"
      "\"outputs\":{\"y\":{\"name\":\"y:0\",\"dtype\":\"float\","
      "\"shape\":[-1]}},"
      "\"ok\":true,\"ran\":true,\"run_ms\":1.500,\"fed\":{\"x\":[1,3]},"
      "\"error\":null,\"errors\":[]}},"
      "\"warmup\":{\"path\":"
      "\"/models/m/3/assets.extra/tf_serving_warmup_requests\","
      "\"ok\":true,\"records\":2,"
      "\"records_per_signature\":{\"serving_default\":2},\"run_ms\":3.500,"
      "\"error\":null},"
      "\"denied_ops\":{},\"warnings\":[\"w1\"],\"errors\":[]}");
}

TEST(ReportTest, FailuresAreListedAndCountedInTheResultLine) {
  VerifyReport report;
  report.export_dir = "/m/1";
  report.tags = {"serve", "gpu"};
  report.loaded = true;
  report.load_ms = 2;
  SignatureReport& failed = report.signatures["a"];
  failed.method = kClassifyMethodName;
  failed.inputs["inputs"] = Tensor("in:0", tensorflow::DT_STRING, {-1});
  failed.outputs["scores"] = Tensor("s:0", tensorflow::DT_FLOAT, {-1, 2});
  failed.ran = true;
  failed.run_ms = 0.5;
  failed.tried["x"] = {"[]", "[1]"};
  // TF's messages end with an indented node line; it stays indented.
  failed.errors = {"smoke run failed: x\n\t [[node]]"};
  report.signatures["bb"];  // Statically fine, not run: "checked".
  WarmupReport& warmup = report.warmup.emplace();
  warmup.path = "/m/1/w";
  warmup.records = 1;
  warmup.run_ms = 4;
  warmup.error = "record #1 failed";
  report.errors = {"e1\nmore"};
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(FormatText(report),
            "export_dir: /m/1\n"
            "tags: serve,gpu  run: smoke+warmup  loaded in 2.0 ms\n"
            "  FAILED  a   classify (inputs:string[-1]) -> "
            "(scores:float[-1,2])  run 0.5 ms  last tried x=[1] (after [])\n"
            "      error: smoke run failed: x\n"
            "        \t [[node]]\n"
            "  checked bb  <none> () -> ()\n"
            "warmup: FAILED, 1 record(s) replayed in 4.0 ms from /m/1/w\n"
            "  error: record #1 failed\n"
            "error: e1\n"
            "  more\n"
            "RESULT: FAILED (1 of 2 signature(s) failed, warmup failed, "
            "1 bundle error(s))\n");
  const std::string json = FormatJson(report);
  EXPECT_EQ(json.rfind("{\"ok\":false,", 0), 0u) << json;
  EXPECT_NE(json.find("\"error\":\"smoke run failed: x\\n\\t [[node]]\","
                      "\"errors\":[\"smoke run failed: x\\n\\t [[node]]\"]"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"error\":\"record #1 failed\"}"), std::string::npos)
      << json;
}

TEST(ReportTest, UnloadedBundleWithADeniedOp) {
  VerifyReport report;
  report.export_dir = "/m/2";
  report.tags = {"serve"};
  report.run = RunMode::kSmoke;
  SignatureReport& signature = report.signatures["s"];
  signature.method = kRegressMethodName;
  signature.inputs["inputs"] = Tensor("ex:0", tensorflow::DT_STRING,
                                      tensorflow::PartialTensorShape());
  signature.outputs["outputs"] = Tensor("v:0", tensorflow::DT_FLOAT, {-1});
  signature.outputs["outputs"].encoding = "coo_sparse";
  report.denied_ops["PrintV2"] = {"'p'"};
  report.errors = {"the graph uses the denied op PrintV2"};
  EXPECT_EQ(FormatText(report),
            "export_dir: /m/2\n"
            "tags: serve  run: smoke  not loaded\n"
            "  checked s  regress (inputs:string<unknown rank>) -> "
            "(outputs:float[-1])\n"
            "error: the graph uses the denied op PrintV2\n"
            "RESULT: FAILED (1 bundle error(s))\n");
  EXPECT_EQ(
      FormatJson(report),
      "{\"ok\":false,\"export_dir\":\"/m/2\",\"tags\":[\"serve\"],"
      "\"run\":\"smoke\",\"loaded\":false,\"load_ms\":null,"
      "\"signatures\":{\"s\":{\"method\":\"tensorflow/serving/regress\","
      "\"inputs\":{\"inputs\":{\"name\":\"ex:0\",\"dtype\":\"string\","
      "\"shape\":null}},"
      "\"outputs\":{\"outputs\":{\"name\":\"v:0\",\"dtype\":\"float\","
      "\"shape\":[-1],\"encoding\":\"coo_sparse\"}},"
      "\"ok\":true,\"ran\":false,\"run_ms\":null,\"fed\":null,"
      "\"error\":null,\"errors\":[]}},"
      "\"warmup\":null,\"denied_ops\":{\"PrintV2\":[\"'p'\"]},"
      "\"warnings\":[],\"errors\":[\"the graph uses the denied op PrintV2\"]}");
}

TEST(ReportTest, RunModeNamesRoundTrip) {
  for (RunMode mode : {RunMode::kSmokeAndWarmup, RunMode::kSmoke,
                       RunMode::kWarmup, RunMode::kNone}) {
    absl::StatusOr<RunMode> parsed = ParseRunMode(RunModeName(mode));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, mode);
  }
  EXPECT_FALSE(ParseRunMode("fast").ok());
}

}  // namespace
}  // namespace verify
}  // namespace tf_serving_merge
