// The checks that need only the export directory and saved_model.pb: steps
// 1-6 of VerifySavedModel (verify_lib.h), run before anything is loaded so a
// broken bundle is explained in its own terms rather than by the loader's or
// a Session::Run's message.
//
// Counterparts: TensorFlow's tensorflow/cc/saved_model/reader.cc
// (ReadSavedModel, FindMetaGraphDef: steps 2-3), through which TF Serving's
// saved_model_bundle_factory.cc loads a version, and the signature structure
// TF Serving's classifier.cc and regressor.cc (PreProcessClassification,
// PreProcessRegression) check on every request, here checked once before
// loading. The denied-op check (python/common/denied_ops.txt) is this
// project's own.
//
// Functions returning a Status stop verification; those filling a report
// record findings and let the remaining checks run.

#ifndef TF_SERVING_MERGE_CC_VERIFY_SAVED_MODEL_CHECKS_H_
#define TF_SERVING_MERGE_CC_VERIFY_SAVED_MODEL_CHECKS_H_

#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cc/verify/report_format.h"
#include "tensorflow/core/common_runtime/shape_refiner.h"
#include "tensorflow/core/framework/graph.pb.h"
#include "tensorflow/core/framework/node_def.pb.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/graph/graph.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/protobuf/saved_model.pb.h"

namespace tf_serving_merge {
namespace verify {

// Step 1: the directory exists and holds saved_model.pb(txt); a legacy
// SessionBundle export or a model base path (numbered versions) is named as
// such.
absl::Status CheckExportDir(const std::string& export_dir);

// Step 2: parses saved_model.pb(txt); DataLoss when it is not a SavedModel.
absl::StatusOr<tensorflow::SavedModel> ReadSavedModelProto(
    const std::string& export_dir);

// Step 3: the MetaGraphDef whose tag-set is exactly `tags`; NotFound lists
// the tag-sets present.
absl::StatusOr<const tensorflow::MetaGraphDef*> FindMetaGraph(
    const tensorflow::SavedModel& saved_model,
    const std::vector<std::string>& tags, const std::string& export_dir);

// Step 4: a graph with variables has variables/variables.index.
absl::Status CheckVariables(const tensorflow::MetaGraphDef& meta_graph,
                            const std::string& export_dir);

// Step 5: `wanted` (every signature but the init op's when empty), sorted;
// NotFound lists the signatures present.
absl::StatusOr<std::vector<std::string>> SelectSignatures(
    const tensorflow::MetaGraphDef& meta_graph,
    const std::vector<std::string>& wanted);

// Node lookup plus dtypes and inferred shapes of every node output. The graph
// is imported once and shared by the signature checks and warmup replay.
class GraphIndex {
 public:
  explicit GraphIndex(const tensorflow::GraphDef& graph_def);

  const absl::Status& import_status() const { return import_status_; }
  const std::vector<std::string>& names() const { return names_; }
  const tensorflow::NodeDef* FindNodeDef(std::string_view name) const;
  // Null when the graph could not be imported.
  const tensorflow::Node* FindNode(std::string_view name) const;
  // The inferred shape of `node`:`index`, unknown rank if inference did not
  // run for it.
  tensorflow::PartialTensorShape InferredShape(const tensorflow::Node* node,
                                               int index) const;

 private:
  tensorflow::Graph graph_;
  tensorflow::ShapeRefiner refiner_;
  absl::Status import_status_;
  std::unordered_map<std::string, const tensorflow::NodeDef*> node_defs_;
  std::unordered_map<std::string, const tensorflow::Node*> nodes_;
  std::vector<std::string> names_;
};

// A classify or regress signature whose input is not a string: TF Serving's
// Classify/Regress APIs feed it serialized tf.Examples and fail, but its
// Predict API can call it (TF Serving's own half_plus_two has one).
bool TakesNonStringExamples(const tensorflow::SignatureDef& signature);

// The structure TF Serving's Classify API requires (classifier.cc,
// PreProcessClassification) plus the dtypes its post-processing needs.
// `string_input`: require a string input (static checks of a signature that
// takes other inputs leave it to a warning; a Classify request needs one).
void CheckClassifyStructure(const tensorflow::SignatureDef& signature,
                            bool string_input,
                            std::vector<std::string>* errors);

// The structure TF Serving's Regress API requires (regressor.cc).
void CheckRegressStructure(const tensorflow::SignatureDef& signature,
                           bool string_input,
                           std::vector<std::string>* errors);

// Step 6 for every signature of `names`: fills report->signatures[name]
// (summary and errors), plus bundle-level findings (no signatures, no
// serving_default, a graph that cannot be imported).
void CheckSignatures(const GraphIndex& graph,
                     const tensorflow::MetaGraphDef& meta_graph,
                     const std::vector<std::string>& names,
                     VerifyReport* report);

// Step 5b: op -> "'node'" / "'node' in function 'f'" for every op of
// python/common/denied_ops.txt outside `allowed`, in nodes and function
// bodies. The saver's subgraph (and functions only it calls) may use the
// checkpoint ops: the loader runs them to restore variables.
std::map<std::string, std::vector<std::string>> FindDeniedOps(
    const tensorflow::MetaGraphDef& meta_graph,
    const std::vector<std::string>& allowed);

// One error per denied op, naming its nodes (at most 5) and the fix.
std::vector<std::string> DeniedOpErrors(
    const std::map<std::string, std::vector<std::string>>& found);

}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_SAVED_MODEL_CHECKS_H_
