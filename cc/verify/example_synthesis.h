// Inputs that a graph accepts, synthesized by the policy of
// python/common/synthesis.py, which owns it (its module docstring is the
// specification; this file ports it rule for rule, and
// //python/merge:cc_verify_test checks that both produce the same requests,
// and byte for byte the same tf.Examples, for the same graph).
//
// Counterpart: none in TF Serving, which only replays the warmup requests a
// model's authors recorded (tensorflow_serving/g3doc/saved_model_warmup.md
// shows writing them by hand); here python/merge/warmup.py writes them with
// the policy and the smoke run feeds the same. The protos built are what
// TensorFlow's parse-op kernels (tensorflow/core/kernels/
// example_parsing_ops.cc) read.
//
// In short: unknown dimensions become 1; an input of unknown rank has the
// candidate shapes [its Placeholder's shape, or the shape its consumers pin
// down], [], [1]; floats hold
// 0.25 + (i % 7) / 8, integers 0, booleans false; a string input holds the
// serialized tf.Example (or tf.SequenceExample) with a feature for every key
// of the parse ops it feeds (ParseExample, ParseExampleV2, ParseSingleExample,
// ParseSequenceExample, ParseSequenceExampleV2, ParseSingleSequenceExample),
// found through Identity chains and into function bodies, with keys read from
// Const inputs or attrs.

#ifndef TF_SERVING_MERGE_CC_VERIFY_EXAMPLE_SYNTHESIS_H_
#define TF_SERVING_MERGE_CC_VERIFY_EXAMPLE_SYNTHESIS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "tensorflow/core/framework/graph.pb.h"
#include "tensorflow/core/framework/node_def.pb.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.pb.h"

namespace tf_serving_merge {
namespace verify {

// The policy's batch size (python/common/synthesis.BATCH_SIZE).
inline constexpr int64_t kSynthesisBatchSize = 1;

class InputSynthesizer {
 public:
  // `graph_def` must outlive the synthesizer.
  explicit InputSynthesizer(const tensorflow::GraphDef& graph_def);

  // The serialized proto fed to the string tensor `tensor_name`: a
  // tf.Example or tf.SequenceExample carrying a synthesized feature for every
  // key the parse ops it feeds read; empty when no parse op reads it.
  std::string ExampleFor(const std::string& tensor_name);

  // The shape the graph gives `tensor_name`: its Placeholder's shape attr
  // when that has a rank (unknown dims filled), else the shape its consumers
  // pin down: the shape attr of a variable it is assigned to
  // (Assign/AssignAdd/AssignSub and the resource forms) through Identity
  // chains. nullopt otherwise.
  std::optional<tensorflow::TensorShape> DerivedShape(
      const std::string& tensor_name);

  // The shapes to try for an input declared `declared`, in order: one for a
  // known rank (unknown dims 1), the unknown-rank candidates otherwise.
  std::vector<tensorflow::TensorShape> CandidateShapes(
      const std::string& tensor_name,
      const tensorflow::PartialTensorShape& declared);

  // The value fed to `tensor_name` with `shape`. Unimplemented for dtypes the
  // policy has no value for (resource, variant, ...).
  absl::StatusOr<tensorflow::Tensor> InputValue(
      const std::string& tensor_name, tensorflow::DataType dtype,
      const tensorflow::TensorShape& shape);

  // Warnings met so far (parse ops whose keys are not constants), once each.
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  struct Consumer {
    const tensorflow::NodeDef* node;
    int position;  // Index among the node's data inputs.
  };
  struct Scope {
    std::map<std::string, const tensorflow::NodeDef*> nodes;
    std::map<std::string, std::vector<Consumer>> consumers;
    std::vector<std::string> args;
  };
  // (scope, node) reached from `name` in scope "" breadth first, through call
  // ops into function bodies (call ops themselves are not listed).
  std::vector<std::pair<std::string, const tensorflow::NodeDef*>> Forward(
      const std::string& name) const;
  std::vector<std::pair<std::string, int>> Callees(
      const tensorflow::NodeDef& node, int position) const;
  const tensorflow::NodeDef* ThroughIdentities(const std::string& scope,
                                               const std::string& input) const;
  void Warn(const std::string& warning);

  std::map<std::string, Scope> scopes_;
  std::vector<std::string> warnings_;
};

namespace internal {

// The policy's float value at flat index `i`: 0.25 + (i % 7) / 8.
double SynthesizedFloat(int64_t i);

}  // namespace internal
}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_EXAMPLE_SYNTHESIS_H_
