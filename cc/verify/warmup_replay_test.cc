// Tests of warmup replay's request checks, which TF Serving applies before
// any Session::Run: every case here fails before the graph would run, so no
// bundle is loaded.

#include "cc/verify/warmup_replay.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "tensorflow/core/lib/io/record_writer.h"
#include "tensorflow/core/platform/env.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"

namespace tf_serving_merge {
namespace verify {
namespace {

// One predict signature, x:0 -> y:0.
constexpr char kMetaGraph[] = R"pb(
  graph_def {
    node {
      name: "x"
      op: "Placeholder"
      attr { key: "dtype" value { type: DT_FLOAT } }
    }
    node {
      name: "y"
      op: "Identity"
      input: "x"
      attr { key: "T" value { type: DT_FLOAT } }
    }
  }
  signature_def {
    key: "serving_default"
    value {
      method_name: "tensorflow/serving/predict"
      inputs {
        key: "x"
        value { name: "x:0" dtype: DT_FLOAT }
      }
      outputs {
        key: "y"
        value { name: "y:0" dtype: DT_FLOAT }
      }
    }
  }
)pb";

class WarmupReplayTest : public ::testing::Test {
 protected:
  WarmupReplayTest() : graph_(MetaGraph().graph_def()) {}

  static const tensorflow::MetaGraphDef& MetaGraph() {
    static const tensorflow::MetaGraphDef* const meta_graph = [] {
      auto* proto = new tensorflow::MetaGraphDef();
      EXPECT_TRUE(
          google::protobuf::TextFormat::ParseFromString(kMetaGraph, proto));
      return proto;
    }();
    return *meta_graph;
  }

  absl::Status Run(const WarmupRequest& request, std::string* used) {
    return RunWarmupRequest(runner_, MetaGraph(), graph_, request, used);
  }

  // A fresh export directory for this test.
  std::string ExportDir() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string dir =
        std::string(tmp != nullptr ? tmp : "/tmp") + "/" +
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir + "/assets.extra");
    return dir;
  }

  Runner runner_;  // No session: nothing here gets as far as running.
  GraphIndex graph_;
};

TEST_F(WarmupReplayTest, WarmupPathIsUnderAssetsExtra) {
  EXPECT_EQ(WarmupPath("/models/m/3"),
            "/models/m/3/assets.extra/tf_serving_warmup_requests");
}

TEST_F(WarmupReplayTest, UnknownSignatureListsThePresentOnes) {
  WarmupRequest request;
  request.kind = WarmupRequest::Kind::kPredict;
  request.signature_name = "nope";
  std::string used;
  EXPECT_EQ(Run(request, &used).message(),
            "No signature was found with the name: nope; signatures present: "
            "'serving_default'");
}

TEST_F(WarmupReplayTest, PredictInputsMustMatchTheSignature) {
  WarmupRequest request;
  request.kind = WarmupRequest::Kind::kPredict;
  request.inputs["z"];
  std::string used;
  EXPECT_EQ(Run(request, &used).message(),
            "request inputs do not match the signature: sent {z}, signature "
            "has {x}. Sent extra: {z}. Missing but required: {x}.");
  EXPECT_EQ(used, "serving_default");  // Empty means serving_default.
}

TEST_F(WarmupReplayTest, ClassifyRequestNeedsAClassifySignature) {
  WarmupRequest request;
  request.kind = WarmupRequest::Kind::kClassify;
  request.serialized_examples = {""};
  std::string used;
  EXPECT_EQ(Run(request, &used).message(),
            "Expected classify signature method_name to be "
            "tensorflow/serving/classify. Was: tensorflow/serving/predict");
}

TEST_F(WarmupReplayTest, MultiInferenceNeedsTasksAndUnsupportedLogsFail) {
  WarmupRequest multi;
  multi.kind = WarmupRequest::Kind::kMultiInference;
  std::string used;
  EXPECT_EQ(Run(multi, &used).message(), "MultiInferenceRequest has no tasks");
  WarmupRequest session_run;
  session_run.log_type = "session_run_log";
  const absl::Status status = Run(session_run, &used);
  EXPECT_TRUE(absl::IsUnimplemented(status)) << status;
  EXPECT_EQ(status.message(),
            "Unsupported log_type for warmup: session_run_log");
}

TEST_F(WarmupReplayTest, MissingFileIsTheReportsError) {
  const std::string dir = ExportDir();
  WarmupReport report;
  ReplayWarmup(runner_, MetaGraph(), graph_, dir, &report);
  EXPECT_EQ(report.path, WarmupPath(dir));
  EXPECT_EQ(report.error,
            "no warmup file at " + WarmupPath(dir) +
                "; write TF Serving warmup records there (python/merge does "
                "unless --nowarmup) or verify with --run=smoke");
}

TEST_F(WarmupReplayTest, StopsAtTheFirstFailingRecordAndNamesIt) {
  const std::string dir = ExportDir();
  WarmupRequest request;
  request.kind = WarmupRequest::Kind::kPredict;
  request.signature_name = "nope";
  absl::StatusOr<std::string> record = EncodePredictionLog(request);
  ASSERT_TRUE(record.ok()) << record.status();
  {
    std::unique_ptr<tensorflow::WritableFile> file;
    ASSERT_TRUE(tensorflow::Env::Default()
                    ->NewWritableFile(WarmupPath(dir), &file)
                    .ok());
    tensorflow::io::RecordWriter writer(file.get());
    ASSERT_TRUE(writer.WriteRecord(*record).ok());
    ASSERT_TRUE(writer.WriteRecord(*record).ok());
    ASSERT_TRUE(writer.Close().ok());
    ASSERT_TRUE(file->Close().ok());
  }
  WarmupReport report;
  ReplayWarmup(runner_, MetaGraph(), graph_, dir, &report);
  EXPECT_EQ(report.records, 0);
  EXPECT_EQ(report.error,
            "warmup record #0 (predict_log, signature 'nope') failed: No "
            "signature was found with the name: nope; signatures present: "
            "'serving_default'");
}

}  // namespace
}  // namespace verify
}  // namespace tf_serving_merge
