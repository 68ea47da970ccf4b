#include "cc/verify/prediction_log.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "tensorflow/core/example/example.pb.h"
#include "tensorflow/core/framework/tensor.pb.h"

namespace tf_serving_merge {
namespace verify {
namespace {

// Protobuf wire-format encoding, independent of the decoder under test.
std::string Varint(uint64_t value) {
  std::string out;
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
  return out;
}

std::string Bytes(int field, const std::string& payload) {
  return Varint(static_cast<uint64_t>(field) << 3 | 2) +
         Varint(payload.size()) + payload;
}

std::string VarintField(int field, uint64_t value) {
  return Varint(static_cast<uint64_t>(field) << 3) + Varint(value);
}

std::string ModelSpec(const std::string& signature) {
  // name = 1, version = 2 (Int64Value), signature_name = 3.
  return Bytes(1, "model") + Bytes(2, VarintField(1, 7)) + Bytes(3, signature);
}

tensorflow::Example MakeExample(const std::string& feature, float value) {
  tensorflow::Example example;
  (*example.mutable_features()->mutable_feature())[feature]
      .mutable_float_list()
      ->add_value(value);
  return example;
}

TEST(DecodePredictionLogTest, PredictLog) {
  tensorflow::TensorProto x;
  x.set_dtype(tensorflow::DT_FLOAT);
  x.mutable_tensor_shape()->add_dim()->set_size(2);
  x.add_float_val(1.5);
  x.add_float_val(-2);
  const std::string request =
      Bytes(1, ModelSpec("scaled")) +
      Bytes(2, Bytes(1, "x") + Bytes(2, x.SerializeAsString())) +
      Bytes(3, "y") + VarintField(6, 99);  // client_id-like unknown varint.
  const std::string log = Bytes(1, "metadata") + Bytes(6, Bytes(1, request));

  absl::StatusOr<WarmupRequest> decoded = DecodePredictionLog(log);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->kind, WarmupRequest::Kind::kPredict);
  EXPECT_EQ(decoded->log_type, "predict_log");
  EXPECT_EQ(decoded->signature_name, "scaled");
  ASSERT_EQ(decoded->inputs.count("x"), 1u);
  EXPECT_EQ(decoded->inputs.at("x").SerializeAsString(), x.SerializeAsString());
  EXPECT_EQ(decoded->output_filter, std::vector<std::string>{"y"});
}

TEST(DecodePredictionLogTest, ClassifyLogWithExampleList) {
  const std::string a = MakeExample("x", 1).SerializeAsString();
  const std::string b = MakeExample("x", 2).SerializeAsString();
  const std::string input = Bytes(1, Bytes(1, a) + Bytes(1, b));
  const std::string log =
      Bytes(2, Bytes(1, Bytes(1, ModelSpec("classify")) + Bytes(2, input)));

  absl::StatusOr<WarmupRequest> decoded = DecodePredictionLog(log);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->kind, WarmupRequest::Kind::kClassify);
  EXPECT_EQ(decoded->signature_name, "classify");
  EXPECT_EQ(decoded->serialized_examples, (std::vector<std::string>{a, b}));
}

TEST(DecodePredictionLogTest, RegressLogMergesContextIntoEachExample) {
  const std::string example = MakeExample("x", 3).SerializeAsString();
  const std::string context = MakeExample("ctx", 9).SerializeAsString();
  const std::string input =
      Bytes(2, Bytes(1, example) + Bytes(2, context));
  const std::string log =
      Bytes(3, Bytes(1, Bytes(1, ModelSpec("")) + Bytes(2, input)));

  absl::StatusOr<WarmupRequest> decoded = DecodePredictionLog(log);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->kind, WarmupRequest::Kind::kRegress);
  EXPECT_EQ(decoded->signature_name, "");
  ASSERT_EQ(decoded->serialized_examples.size(), 1u);
  tensorflow::Example merged;
  ASSERT_TRUE(merged.ParseFromString(decoded->serialized_examples[0]));
  EXPECT_EQ(merged.features().feature().at("x").float_list().value(0), 3);
  EXPECT_EQ(merged.features().feature().at("ctx").float_list().value(0), 9);
}

TEST(DecodePredictionLogTest, MultiInferenceTasks) {
  const std::string task_a =
      Bytes(1, ModelSpec("classify")) + Bytes(2, "tensorflow/serving/classify");
  const std::string task_b =
      Bytes(1, ModelSpec("regress")) + Bytes(2, "tensorflow/serving/regress");
  const std::string input =
      Bytes(1, Bytes(1, MakeExample("x", 1).SerializeAsString()));
  const std::string log = Bytes(
      4, Bytes(1, Bytes(1, task_a) + Bytes(1, task_b) + Bytes(2, input)));

  absl::StatusOr<WarmupRequest> decoded = DecodePredictionLog(log);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->kind, WarmupRequest::Kind::kMultiInference);
  ASSERT_EQ(decoded->tasks.size(), 2u);
  EXPECT_EQ(decoded->tasks[0].signature_name, "classify");
  EXPECT_EQ(decoded->tasks[1].method_name, "tensorflow/serving/regress");
  EXPECT_EQ(decoded->serialized_examples.size(), 1u);
}

TEST(DecodePredictionLogTest, UnsupportedAndEmptyLogs) {
  absl::StatusOr<WarmupRequest> session_run =
      DecodePredictionLog(Bytes(5, Bytes(1, "")));
  ASSERT_TRUE(session_run.ok()) << session_run.status();
  EXPECT_EQ(session_run->kind, WarmupRequest::Kind::kUnsupported);
  EXPECT_EQ(session_run->log_type, "session_run_log");

  absl::StatusOr<WarmupRequest> empty = DecodePredictionLog("");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->kind, WarmupRequest::Kind::kUnsupported);
  EXPECT_EQ(empty->log_type, "none");
}

TEST(DecodePredictionLogTest, MalformedRecordsAreInvalidArgument) {
  // classify_log declaring 5 bytes but holding 3.
  absl::StatusOr<WarmupRequest> truncated =
      DecodePredictionLog("\x12\x05" "abc");
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(truncated.status().message())
                .find("malformed PredictionLog: field 2 declares 5 bytes but "
                      "only 3 remain"),
            std::string::npos)
      << truncated.status();

  // predict_log encoded as a varint.
  absl::StatusOr<WarmupRequest> wrong_type =
      DecodePredictionLog(VarintField(6, 1));
  EXPECT_EQ(wrong_type.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(wrong_type.status().message())
                .find("field predict_log (6) has wire type 0"),
            std::string::npos)
      << wrong_type.status();

  // An input tensor that is not a TensorProto (a varint with a bad tag).
  const std::string bad_tensor = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  const std::string request =
      Bytes(2, Bytes(1, "x") + Bytes(2, bad_tensor));
  absl::StatusOr<WarmupRequest> bad =
      DecodePredictionLog(Bytes(6, Bytes(1, request)));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message())
                .find("input 'x' is not a valid TensorProto"),
            std::string::npos)
      << bad.status();
}

TEST(EncodePredictionLogTest, PredictRoundTripsAndMatchesTheWireFormat) {
  WarmupRequest request;
  request.kind = WarmupRequest::Kind::kPredict;
  request.signature_name = "sig";
  request.inputs["x"].set_dtype(tensorflow::DT_FLOAT);
  request.inputs["x"].add_float_val(0.25f);
  request.output_filter = {"y"};
  auto record = EncodePredictionLog(request);
  ASSERT_TRUE(record.ok()) << record.status();
  // PredictionLog.predict_log(6).request(1): model_spec(1).signature_name(3),
  // inputs(2) entry {key 1, value 2}, output_filter(3).
  const std::string body =
      Bytes(1, Bytes(3, "sig")) +
      Bytes(2, Bytes(1, "x") + Bytes(2, request.inputs["x"].SerializeAsString())) +
      Bytes(3, "y");
  EXPECT_EQ(*record, Bytes(6, Bytes(1, body)));
  auto decoded = DecodePredictionLog(*record);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->kind, WarmupRequest::Kind::kPredict);
  EXPECT_EQ(decoded->signature_name, "sig");
  EXPECT_EQ(decoded->inputs.at("x").float_val(0), 0.25f);
  EXPECT_EQ(decoded->output_filter, std::vector<std::string>{"y"});
}

TEST(EncodePredictionLogTest, ClassifyAndRegressRoundTrip) {
  for (const auto kind :
       {WarmupRequest::Kind::kClassify, WarmupRequest::Kind::kRegress}) {
    WarmupRequest request;
    request.kind = kind;
    request.signature_name = "cls";
    request.serialized_examples = {
        MakeExample("a", 1.0f).SerializeAsString(),
        MakeExample("b", 2.0f).SerializeAsString()};
    auto record = EncodePredictionLog(request);
    ASSERT_TRUE(record.ok()) << record.status();
    auto decoded = DecodePredictionLog(*record);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->kind, kind);
    EXPECT_EQ(decoded->signature_name, "cls");
    EXPECT_EQ(decoded->serialized_examples, request.serialized_examples);
  }
}

TEST(EncodePredictionLogTest, OtherKindsAreRefused) {
  WarmupRequest request;
  request.kind = WarmupRequest::Kind::kMultiInference;
  EXPECT_FALSE(EncodePredictionLog(request).ok());
}

}  // namespace
}  // namespace verify
}  // namespace tf_serving_merge
