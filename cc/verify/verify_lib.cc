#include "cc/verify/verify_lib.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cc/verify/denied_ops.h"
#include "cc/verify/prediction_log.h"
#include "cc/verify/synthesis.h"
#include "tensorflow/cc/saved_model/constants.h"
#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/cc/saved_model/reader.h"
#include "tensorflow/core/common_runtime/graph_constructor.h"
#include "tensorflow/core/common_runtime/shape_refiner.h"
#include "tensorflow/core/example/example.pb.h"
#include "tensorflow/core/framework/function.h"
#include "tensorflow/core/framework/graph.pb.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/graph/graph.h"
#include "tensorflow/core/graph/tensor_id.h"
#include "tensorflow/core/lib/io/path.h"
#include "tensorflow/core/lib/io/record_reader.h"
#include "tensorflow/core/lib/io/record_writer.h"
#include "tensorflow/core/platform/env.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/platform/statusor.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/protobuf/saved_model.pb.h"
#include "tensorflow/core/public/session.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::tensorflow::DataType;
using ::tensorflow::MetaGraphDef;
using ::tensorflow::PartialTensorShape;
using ::tensorflow::SignatureDef;
using ::tensorflow::Tensor;
using ::tensorflow::TensorInfo;
using internal::BraceJoin;
using internal::DeclaredShape;
using internal::MethodShortName;
using internal::QuotedJoin;
using internal::SortedKeys;
using internal::Stopwatch;

bool IsNumber(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), absl::ascii_isdigit);
}

// ---------------------------------------------------------------------------
// Step 1: the export directory.

absl::Status CheckExportDir(const std::string& export_dir) {
  tensorflow::Env* env = tensorflow::Env::Default();
  if (!env->FileExists(export_dir).ok()) {
    return absl::NotFoundError(absl::StrCat(
        "export_dir ", export_dir,
        " does not exist; pass a SavedModel version directory such as "
        "/models/merged/3"));
  }
  if (!env->IsDirectory(export_dir).ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "export_dir ", export_dir,
        " is a file, not a directory; pass the directory that contains "
        "saved_model.pb"));
  }
  for (const char* file : {tensorflow::kSavedModelFilenamePb,
                           tensorflow::kSavedModelFilenamePbTxt,
                           tensorflow::kSavedModelFilenameCpb}) {
    if (env->FileExists(tensorflow::io::JoinPath(export_dir, file)).ok()) {
      return absl::OkStatus();
    }
  }
  std::vector<std::string> children;
  if (absl::Status s = env->GetChildren(export_dir, &children); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot list export_dir ", export_dir, ": ", s.message()));
  }
  std::sort(children.begin(), children.end());
  for (const std::string& child : children) {
    if (child == "export.meta" || absl::StartsWith(child, "export-")) {
      return absl::FailedPreconditionError(absl::StrCat(
          export_dir, " holds a legacy SessionBundle export (", child,
          "), which TensorFlow Serving 2.x does not load; re-export the "
          "model as a SavedModel (tf.saved_model.save or "
          "tf.compat.v1.saved_model.Builder)"));
    }
  }
  std::vector<std::string> versions;
  for (const std::string& child : children) {
    if (IsNumber(child)) versions.push_back(child);
  }
  if (!versions.empty()) {
    std::sort(versions.begin(), versions.end(),
              [](const std::string& a, const std::string& b) {
                return a.size() != b.size() ? a.size() < b.size() : a < b;
              });
    return absl::FailedPreconditionError(absl::StrCat(
        export_dir, " looks like a model base path with versions ",
        absl::StrJoin(versions, ", "),
        ", not a SavedModel; pass a version directory, e.g. --export_dir=",
        tensorflow::io::JoinPath(export_dir, versions.back())));
  }
  return absl::NotFoundError(absl::StrCat(
      "no saved_model.pb or saved_model.pbtxt in ", export_dir,
      "; it contains: ",
      children.empty() ? "nothing" : absl::StrJoin(children, ", ")));
}

// ---------------------------------------------------------------------------
// Steps 2-5: the SavedModel proto.

absl::StatusOr<tensorflow::SavedModel> ReadSavedModelProto(
    const std::string& export_dir) {
  tensorflow::SavedModel saved_model;
  if (absl::Status s = tensorflow::ReadSavedModel(export_dir, &saved_model);
      !s.ok()) {
    return absl::DataLossError(absl::StrCat(
        "cannot read the SavedModel proto in ", export_dir, ": ", s.message(),
        ". saved_model.pb is truncated or not a SavedModel; re-export the "
        "model or restore the file"));
  }
  return saved_model;
}

std::string TagSetString(const MetaGraphDef& meta_graph) {
  std::vector<std::string> tags(meta_graph.meta_info_def().tags().begin(),
                                meta_graph.meta_info_def().tags().end());
  std::sort(tags.begin(), tags.end());
  return BraceJoin(tags);
}

absl::StatusOr<const MetaGraphDef*> FindMetaGraph(
    const tensorflow::SavedModel& saved_model,
    const std::vector<std::string>& tags, const std::string& export_dir) {
  const std::set<std::string> wanted(tags.begin(), tags.end());
  std::vector<std::string> present;
  for (const MetaGraphDef& meta_graph : saved_model.meta_graphs()) {
    const std::set<std::string> have(meta_graph.meta_info_def().tags().begin(),
                                     meta_graph.meta_info_def().tags().end());
    if (have == wanted) return &meta_graph;
    present.push_back(TagSetString(meta_graph));
  }
  const std::vector<std::string> wanted_list(wanted.begin(), wanted.end());
  std::string example = "serve";
  if (!saved_model.meta_graphs().empty()) {
    const auto& first = saved_model.meta_graphs(0).meta_info_def().tags();
    std::vector<std::string> first_tags(first.begin(), first.end());
    std::sort(first_tags.begin(), first_tags.end());
    example = absl::StrJoin(first_tags, ",");
  }
  return absl::NotFoundError(absl::StrCat(
      "no MetaGraphDef with tag-set ", BraceJoin(wanted_list), " in ",
      export_dir, "; tag-sets present: ",
      present.empty() ? "none" : absl::StrJoin(present, ", "),
      ". Pass the one to serve with --tags, e.g. --tags=", example));
}

bool IsVariableOp(std::string_view op) {
  return op == "VariableV2" || op == "Variable" || op == "VarHandleOp";
}

absl::Status CheckVariables(const MetaGraphDef& meta_graph,
                            const std::string& export_dir) {
  int count = 0;
  std::string first;
  for (const tensorflow::NodeDef& node : meta_graph.graph_def().node()) {
    if (!IsVariableOp(node.op())) continue;
    if (count++ == 0) first = node.name();
  }
  if (count == 0) return absl::OkStatus();
  const std::string index = tensorflow::io::JoinPath(
      export_dir, tensorflow::kSavedModelVariablesDirectory,
      absl::StrCat(tensorflow::kSavedModelVariablesFilename, ".index"));
  if (tensorflow::Env::Default()->FileExists(index).ok()) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "the graph has ", count, " variable(s) (e.g. '", first, "') but ", index,
      " is missing: TensorFlow's loader then skips the restore and every "
      "request fails on uninitialized variables. Restore the variables/ "
      "directory from the original export"));
}

absl::StatusOr<std::vector<std::string>> SelectSignatures(
    const MetaGraphDef& meta_graph, const std::vector<std::string>& wanted) {
  std::vector<std::string> available;
  for (const auto& [name, signature] : meta_graph.signature_def()) {
    if (name == tensorflow::kSavedModelInitOpSignatureKey) continue;
    available.push_back(name);
  }
  std::sort(available.begin(), available.end());
  if (wanted.empty()) return available;
  std::vector<std::string> missing;
  for (const std::string& name : wanted) {
    if (!meta_graph.signature_def().contains(name)) missing.push_back(name);
  }
  if (!missing.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "--signatures names ", QuotedJoin(missing),
        " not in the MetaGraphDef; signatures present: ",
        available.empty() ? "none" : QuotedJoin(available)));
  }
  return wanted;
}

// ---------------------------------------------------------------------------
// Step 6: signatures against the graph.

// Node lookup plus dtypes and inferred shapes of every node output.
class GraphIndex {
 public:
  explicit GraphIndex(const tensorflow::GraphDef& graph_def)
      : graph_(tensorflow::OpRegistry::Global()),
        refiner_(graph_def.versions(), graph_.op_registry()) {
    for (const tensorflow::NodeDef& node : graph_def.node()) {
      node_defs_[node.name()] = &node;
      names_.push_back(node.name());
    }
    tensorflow::ImportGraphDefOptions options;
    import_status_ =
        tensorflow::ImportGraphDef(options, graph_def, &graph_, &refiner_);
    if (import_status_.ok()) {
      for (tensorflow::Node* node : graph_.op_nodes()) {
        nodes_[node->name()] = node;
      }
    }
  }

  const absl::Status& import_status() const { return import_status_; }
  const std::vector<std::string>& names() const { return names_; }
  const tensorflow::NodeDef* FindNodeDef(std::string_view name) const {
    auto it = node_defs_.find(std::string(name));
    return it == node_defs_.end() ? nullptr : it->second;
  }
  // Null when the graph could not be imported.
  const tensorflow::Node* FindNode(std::string_view name) const {
    auto it = nodes_.find(std::string(name));
    return it == nodes_.end() ? nullptr : it->second;
  }
  // The inferred shape of `node`:`index`, unknown rank if inference did not
  // run for it.
  PartialTensorShape InferredShape(const tensorflow::Node* node,
                                   int index) const {
    tensorflow::shape_inference::InferenceContext* context =
        refiner_.GetContext(node);
    if (context == nullptr || index >= context->num_outputs()) {
      return PartialTensorShape();
    }
    tensorflow::TensorShapeProto proto;
    context->ShapeHandleToProto(context->output(index), &proto);
    return PartialTensorShape(proto);
  }

 private:
  tensorflow::Graph graph_;
  tensorflow::ShapeRefiner refiner_;
  absl::Status import_status_;
  std::unordered_map<std::string, const tensorflow::NodeDef*> node_defs_;
  std::unordered_map<std::string, const tensorflow::Node*> nodes_;
  std::vector<std::string> names_;
};

TensorSummary Summarize(const TensorInfo& info) {
  TensorSummary summary;
  summary.dtype = info.dtype();
  summary.shape = DeclaredShape(info);
  switch (info.encoding_case()) {
    case TensorInfo::kName:
      summary.name = info.name();
      break;
    case TensorInfo::kCooSparse:
      summary.encoding = "coo_sparse";
      summary.name = info.coo_sparse().values_tensor_name();
      break;
    case TensorInfo::kCompositeTensor:
      summary.encoding = "composite";
      break;
    default:
      summary.encoding = "none";
  }
  return summary;
}

// Checks that `tensor_name` exists in the graph, and that its dtype and
// inferred shape agree with `dtype` / `shape` (skipped for DT_INVALID /
// unknown rank). `what` prefixes every message, e.g. "input 'x' (x:0)".
void CheckTensorName(const GraphIndex& graph, const std::string& what,
                     const std::string& tensor_name, DataType dtype,
                     const PartialTensorShape& shape,
                     std::vector<std::string>* errors) {
  const tensorflow::TensorId id = tensorflow::ParseTensorName(tensor_name);
  const std::string node_name(id.node());
  if (id.index() < 0 || node_name.empty()) {
    errors->push_back(absl::StrCat(what, ": '", tensor_name,
                                   "' is not a tensor name (node:index)"));
    return;
  }
  const tensorflow::NodeDef* node_def = graph.FindNodeDef(node_name);
  if (node_def == nullptr) {
    const std::vector<std::string> closest =
        internal::ClosestNames(node_name, graph.names(), 5);
    errors->push_back(absl::StrCat(
        what, ": the graph has no node '", node_name, "'; closest names: ",
        closest.empty() ? "none" : QuotedJoin(closest),
        ". Fix the tensor name in the signature (or in the merge spec)"));
    return;
  }
  const tensorflow::Node* node = graph.FindNode(node_name);
  if (node == nullptr) return;  // Import failed; reported once elsewhere.
  if (id.index() >= node->num_outputs()) {
    errors->push_back(absl::StrCat(
        what, ": node '", node_name, "' (op ", node->type_string(), ") has ",
        node->num_outputs(), " output(s), so '", tensor_name,
        "' does not exist"));
    return;
  }
  const DataType produced = tensorflow::BaseType(node->output_type(id.index()));
  if (dtype == tensorflow::DT_INVALID) {
    errors->push_back(absl::StrCat(what, ": the signature declares no dtype; "
                                   "the graph produces ",
                                   internal::DtypeName(produced)));
  } else if (tensorflow::BaseType(dtype) != produced) {
    errors->push_back(absl::StrCat(
        what, ": the signature declares dtype ", internal::DtypeName(dtype),
        " but node '", node_name, "' (op ", node->type_string(),
        ") produces ", internal::DtypeName(produced)));
  }
  const PartialTensorShape inferred = graph.InferredShape(node, id.index());
  if (!shape.IsCompatibleWith(inferred)) {
    errors->push_back(absl::StrCat(
        what, ": the signature declares shape ", internal::ShapeString(shape),
        " but the graph's shape is ", internal::ShapeString(inferred)));
  }
}

void CheckTensorInfo(const GraphIndex& graph, const std::string& role,
                     const std::string& alias, const TensorInfo& info,
                     std::vector<std::string>* errors) {
  switch (info.encoding_case()) {
    case TensorInfo::kName:
      CheckTensorName(graph, absl::StrCat(role, " '", alias, "' (", info.name(),
                                          ")"),
                      info.name(), info.dtype(), DeclaredShape(info), errors);
      return;
    case TensorInfo::kCooSparse: {
      const auto& coo = info.coo_sparse();
      const std::string what = absl::StrCat(role, " '", alias, "' (sparse ");
      CheckTensorName(graph, what + "values)", coo.values_tensor_name(),
                      info.dtype(), PartialTensorShape({-1}), errors);
      CheckTensorName(graph, what + "indices)", coo.indices_tensor_name(),
                      tensorflow::DT_INT64, PartialTensorShape({-1, -1}),
                      errors);
      CheckTensorName(graph, what + "dense_shape)",
                      coo.dense_shape_tensor_name(), tensorflow::DT_INT64,
                      PartialTensorShape({-1}), errors);
      return;
    }
    case TensorInfo::kCompositeTensor: {
      const auto& components = info.composite_tensor().components();
      for (int i = 0; i < components.size(); ++i) {
        CheckTensorInfo(graph, role, absl::StrCat(alias, "[", i, "]"),
                        components[i], errors);
      }
      return;
    }
    default:
      errors->push_back(absl::StrCat(role, " '", alias,
                                     "' names no tensor (empty TensorInfo)"));
  }
}

// A classify or regress signature whose input is not a string: TF Serving's
// Classify/Regress APIs feed it serialized tf.Examples and fail, but its
// Predict API can call it (TF Serving's own half_plus_two has one).
bool TakesNonStringExamples(const SignatureDef& signature) {
  const std::string& method = signature.method_name();
  if (method != kClassifyMethodName && method != kRegressMethodName) {
    return false;
  }
  auto input = signature.inputs().find(kClassifyInputs);
  return signature.inputs().size() == 1 && input != signature.inputs().end() &&
         input->second.dtype() != tensorflow::DT_STRING;
}

// The structure TF Serving's Classify API requires (classifier.cc,
// PreProcessClassification) plus the dtypes its post-processing needs.
// `string_input`: require a string input (static checks of a signature that
// takes other inputs leave it to a warning; a Classify request needs one).
void CheckClassifyStructure(const SignatureDef& signature, bool string_input,
                            std::vector<std::string>* errors) {
  if (signature.inputs().size() != 1) {
    errors->push_back(absl::StrCat(
        "classify signatures need exactly one input Tensor ('inputs', "
        "serialized tf.Examples); found ",
        signature.inputs().size(), ": ",
        BraceJoin(SortedKeys(signature.inputs()))));
  } else if (!signature.inputs().contains(kClassifyInputs)) {
    errors->push_back(absl::StrCat(
        "classify signatures need their input under the key 'inputs'; found ",
        BraceJoin(SortedKeys(signature.inputs()))));
  } else if (string_input && signature.inputs().at(kClassifyInputs).dtype() !=
                                  tensorflow::DT_STRING) {
    errors->push_back(absl::StrCat(
        "classify input 'inputs' must be string (serialized tf.Examples); "
        "declared ",
        internal::DtypeName(signature.inputs().at(kClassifyInputs).dtype())));
  }
  if (signature.outputs().size() != 1 && signature.outputs().size() != 2) {
    errors->push_back(absl::StrCat(
        "classify signatures need one or two output Tensors ('classes' "
        "and/or 'scores'); found ",
        signature.outputs().size(), ": ",
        BraceJoin(SortedKeys(signature.outputs()))));
  }
  const auto classes = signature.outputs().find(kClassifyOutputClasses);
  const auto scores = signature.outputs().find(kClassifyOutputScores);
  if (classes == signature.outputs().end() &&
      scores == signature.outputs().end()) {
    errors->push_back(absl::StrCat(
        "classify signatures need at least one of the outputs 'classes' or "
        "'scores'; found ",
        BraceJoin(SortedKeys(signature.outputs()))));
  }
  if (classes != signature.outputs().end() &&
      classes->second.dtype() != tensorflow::DT_STRING) {
    errors->push_back(absl::StrCat(
        "classify output 'classes' must be string; declared ",
        internal::DtypeName(classes->second.dtype())));
  }
  if (scores != signature.outputs().end() &&
      scores->second.dtype() != tensorflow::DT_FLOAT) {
    errors->push_back(
        absl::StrCat("classify output 'scores' must be float; declared ",
                     internal::DtypeName(scores->second.dtype())));
  }
}

// The structure TF Serving's Regress API requires (regressor.cc).
void CheckRegressStructure(const SignatureDef& signature, bool string_input,
                           std::vector<std::string>* errors) {
  if (signature.inputs().size() != 1 ||
      !signature.inputs().contains(kRegressInputs)) {
    errors->push_back(absl::StrCat(
        "regress signatures need exactly one input under the key 'inputs' "
        "(serialized tf.Examples); found ",
        BraceJoin(SortedKeys(signature.inputs()))));
  } else if (string_input && signature.inputs().at(kRegressInputs).dtype() !=
                                  tensorflow::DT_STRING) {
    errors->push_back(absl::StrCat(
        "regress input 'inputs' must be string (serialized tf.Examples); "
        "declared ",
        internal::DtypeName(signature.inputs().at(kRegressInputs).dtype())));
  }
  if (signature.outputs().size() != 1 ||
      !signature.outputs().contains(kRegressOutputs)) {
    errors->push_back(absl::StrCat(
        "regress signatures need exactly one output under the key "
        "'outputs'; found ",
        BraceJoin(SortedKeys(signature.outputs()))));
  } else if (signature.outputs().at(kRegressOutputs).dtype() !=
             tensorflow::DT_FLOAT) {
    errors->push_back(absl::StrCat(
        "regress output 'outputs' must be float; declared ",
        internal::DtypeName(signature.outputs().at(kRegressOutputs).dtype())));
  }
}

void CheckSignature(const GraphIndex& graph, const std::string& name,
                    const SignatureDef& signature, SignatureReport* report,
                    std::vector<std::string>* warnings) {
  const std::string& method = signature.method_name();
  if (TakesNonStringExamples(signature)) {
    warnings->push_back(absl::StrCat(
        "signature '", name, "' (", MethodShortName(method),
        ") takes input 'inputs' of dtype ",
        internal::DtypeName(signature.inputs().at(kClassifyInputs).dtype()),
        ", not serialized tf.Examples: TF Serving's ",
        method == kClassifyMethodName ? "Classify" : "Regress",
        " API cannot call it (only Predict can), so the smoke run calls it "
        "as Predict"));
  }
  if (method == kClassifyMethodName) {
    CheckClassifyStructure(signature, /*string_input=*/false, &report->errors);
  } else if (method == kRegressMethodName) {
    CheckRegressStructure(signature, /*string_input=*/false, &report->errors);
  } else if (method != kPredictMethodName) {
    report->errors.push_back(absl::StrCat(
        "method_name '", method,
        "' is not one TF Serving serves; expected one of ",
        kPredictMethodName, ", ", kClassifyMethodName, ", ",
        kRegressMethodName));
  }
  for (const auto& alias : SortedKeys(signature.inputs())) {
    CheckTensorInfo(graph, "input", alias, signature.inputs().at(alias),
                    &report->errors);
  }
  for (const auto& alias : SortedKeys(signature.outputs())) {
    CheckTensorInfo(graph, "output", alias, signature.outputs().at(alias),
                    &report->errors);
  }
}

// ---------------------------------------------------------------------------
// Step 8: running signatures.

// What every run needs: the session, the options of each Session::Run (its
// deadline), the input synthesizer, and where smoke runs record what they fed
// (--dump_requests; null when not asked for).
struct Runner {
  tensorflow::Session* session = nullptr;
  tensorflow::RunOptions run_options;
  InputSynthesizer* synthesizer = nullptr;
  std::vector<std::string>* fed_records = nullptr;
};

// A Session::Run failure, with a clear message for a missed deadline.
absl::Status RunFailed(const Runner& runner, const absl::Status& status) {
  if (absl::IsDeadlineExceeded(status)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "Session::Run did not finish within --run_timeout_ms=",
        runner.run_options.timeout_in_ms(),
        " ms and was cancelled: the graph may never end (e.g. a while loop "
        "whose condition stays true); if it is only slow, raise "
        "--run_timeout_ms"));
  }
  return absl::Status(status.code(),
                      absl::StrCat("Session::Run failed: ", status.message()));
}

std::string OutputName(const TensorInfo& info) {
  return info.encoding_case() == TensorInfo::kCooSparse
             ? info.coo_sparse().values_tensor_name()
             : info.name();
}

// Checks a fetched output against its TensorInfo.
absl::Status CheckOutput(const std::string& alias, const TensorInfo& info,
                         const Tensor& value) {
  // Ref dtypes (float_ref of a TF1 variable) are fetched as their base type.
  if (value.dtype() != tensorflow::BaseType(info.dtype())) {
    return absl::InternalError(absl::StrCat(
        "output '", alias, "' (", OutputName(info), ") returned dtype ",
        internal::DtypeName(value.dtype()), " but the signature declares ",
        internal::DtypeName(info.dtype())));
  }
  if (info.encoding_case() != TensorInfo::kName) return absl::OkStatus();
  const PartialTensorShape declared = DeclaredShape(info);
  if (!declared.IsCompatibleWith(value.shape())) {
    return absl::InternalError(absl::StrCat(
        "output '", alias, "' (", info.name(), ") returned shape ",
        internal::ShapeString(PartialTensorShape(value.shape().dim_sizes())),
        " but the signature declares ", internal::ShapeString(declared)));
  }
  return absl::OkStatus();
}

// Runs `signature` with `inputs` (alias -> tensor) fetching `output_aliases`,
// then checks every output against the signature.
absl::StatusOr<std::map<std::string, Tensor>> RunSignature(
    const Runner& runner, const SignatureDef& signature,
    const std::map<std::string, Tensor>& inputs,
    const std::vector<std::string>& output_aliases) {
  std::vector<std::pair<std::string, Tensor>> feeds;
  for (const auto& [alias, tensor] : inputs) {
    feeds.emplace_back(signature.inputs().at(alias).name(), tensor);
  }
  std::vector<std::string> fetches;
  for (const std::string& alias : output_aliases) {
    fetches.push_back(OutputName(signature.outputs().at(alias)));
  }
  std::vector<Tensor> outputs;
  tensorflow::RunMetadata metadata;
  if (absl::Status s = runner.session->Run(runner.run_options, feeds, fetches,
                                           {}, &outputs, &metadata);
      !s.ok()) {
    return RunFailed(runner, s);
  }
  std::map<std::string, Tensor> by_alias;
  for (size_t i = 0; i < output_aliases.size(); ++i) {
    const std::string& alias = output_aliases[i];
    TF_RETURN_IF_ERROR(
        CheckOutput(alias, signature.outputs().at(alias), outputs[i]));
    by_alias[alias] = outputs[i];
  }
  return by_alias;
}

// TF Serving's checks on classification results (PostProcessClassification).
absl::Status CheckClassifyResult(const std::map<std::string, Tensor>& outputs,
                                 int64_t num_examples) {
  const Tensor* classes = nullptr;
  const Tensor* scores = nullptr;
  if (auto it = outputs.find(kClassifyOutputClasses); it != outputs.end()) {
    classes = &it->second;
  }
  if (auto it = outputs.find(kClassifyOutputScores); it != outputs.end()) {
    scores = &it->second;
  }
  for (const auto& [name, tensor] :
       {std::pair<const char*, const Tensor*>{"classes", classes},
        {"scores", scores}}) {
    if (tensor == nullptr) continue;
    if (tensor->dims() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "classify output '", name,
          "' must have shape [batch_size, num_classes]; got ",
          tensor->shape().DebugString()));
    }
    if (tensor->dim_size(0) != num_examples) {
      return absl::InvalidArgumentError(absl::StrCat(
          "classify output '", name, "' has batch size ", tensor->dim_size(0),
          " for ", num_examples, " example(s)"));
    }
  }
  if (classes != nullptr && scores != nullptr &&
      classes->dim_size(1) != scores->dim_size(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "classify outputs 'classes' and 'scores' disagree on num_classes: ",
        classes->dim_size(1), " vs. ", scores->dim_size(1)));
  }
  return absl::OkStatus();
}

// TF Serving's checks on regression results (PostProcessRegressionResult).
absl::Status CheckRegressResult(const Tensor& output, int64_t num_examples) {
  const bool shape_ok =
      (output.dims() == 1 || (output.dims() == 2 && output.dim_size(1) == 1)) &&
      output.dim_size(0) == num_examples;
  if (!shape_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "regress output 'outputs' must have shape [batch_size] or "
        "[batch_size, 1] with batch_size ",
        num_examples, "; got ", output.shape().DebugString()));
  }
  return absl::OkStatus();
}

// Runs a classify or regress signature on serialized tf.Examples, as TF
// Serving's Classify / Regress APIs do.
absl::Status RunExamples(const Runner& runner, const std::string& name,
                         const SignatureDef& signature,
                         const std::vector<std::string>& examples) {
  const bool classify = signature.method_name() == kClassifyMethodName;
  if (!classify && signature.method_name() != kRegressMethodName) {
    return absl::InvalidArgumentError(absl::StrCat(
        "signature '", name, "' has method_name '", signature.method_name(),
        "'; a classify/regress request needs ", kClassifyMethodName, " or ",
        kRegressMethodName));
  }
  std::vector<std::string> errors;
  if (classify) {
    CheckClassifyStructure(signature, /*string_input=*/true, &errors);
  } else {
    CheckRegressStructure(signature, /*string_input=*/true, &errors);
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  }
  if (examples.empty()) {
    return absl::InvalidArgumentError(
        "Input is empty: the request holds no tf.Example");
  }
  const int64_t num_examples = static_cast<int64_t>(examples.size());
  Tensor batch(tensorflow::DT_STRING, tensorflow::TensorShape({num_examples}));
  auto flat = batch.flat<tensorflow::tstring>();
  for (size_t i = 0; i < examples.size(); ++i) flat(i) = examples[i];
  std::vector<std::string> output_aliases;
  if (classify) {
    for (const char* alias : {kClassifyOutputClasses, kClassifyOutputScores}) {
      if (signature.outputs().contains(alias)) output_aliases.push_back(alias);
    }
  } else {
    output_aliases.push_back(kRegressOutputs);
  }
  TF_ASSIGN_OR_RETURN(
      const auto outputs,
      RunSignature(runner, signature, {{kClassifyInputs, batch}},
                   output_aliases));
  return classify ? CheckClassifyResult(outputs, num_examples)
                  : CheckRegressResult(outputs.at(kRegressOutputs),
                                       num_examples);
}


// Records a request that ran, for --dump_requests.
void RecordFed(const Runner& runner, WarmupRequest request) {
  if (runner.fed_records == nullptr) return;
  auto record = EncodePredictionLog(request);
  if (record.ok()) runner.fed_records->push_back(*std::move(record));
}

// One synthesized feed of a predict signature: its candidate values.
struct Candidates {
  std::string alias;
  bool unknown_rank = false;
  std::vector<Tensor> values;
};

// Runs a predict signature on synthesized inputs: attempt k feeds each input
// its k-th candidate (or its last), until one attempt runs.
absl::Status RunSmokePredict(const Runner& runner, const std::string& name,
                             const SignatureDef& signature,
                             SignatureReport* report) {
  std::vector<Candidates> feeds;
  size_t attempts = 1;
  for (const auto& [alias, info] : signature.inputs()) {
    if (info.encoding_case() != TensorInfo::kName) {
      return absl::UnimplementedError(absl::StrCat(
          "cannot synthesize the sparse/composite input '", alias,
          "'; verify this signature with --run=warmup and recorded requests"));
    }
    Candidates& candidates = feeds.emplace_back();
    candidates.alias = alias;
    const PartialTensorShape declared = DeclaredShape(info);
    candidates.unknown_rank = declared.unknown_rank();
    for (const tensorflow::TensorShape& shape :
         runner.synthesizer->CandidateShapes(info.name(), declared)) {
      auto value =
          runner.synthesizer->InputValue(info.name(), info.dtype(), shape);
      if (!value.ok()) {
        return absl::UnimplementedError(absl::StrCat(
            "cannot synthesize input '", alias, "' of dtype ",
            internal::DtypeName(info.dtype()),
            "; verify this signature with --run=warmup or --run=none"));
      }
      candidates.values.push_back(*std::move(value));
    }
    attempts = std::max(attempts, candidates.values.size());
  }
  std::vector<std::string> failures;
  absl::Status status;
  for (size_t k = 0; k < attempts; ++k) {
    std::map<std::string, Tensor> inputs;
    std::vector<std::string> unknown;
    for (const Candidates& candidates : feeds) {
      const Tensor& value =
          candidates.values[std::min(k, candidates.values.size() - 1)];
      inputs[candidates.alias] = value;
      report->fed[candidates.alias] = value.shape();
      if (candidates.unknown_rank) {
        const std::string shape = internal::ShapeString(
            PartialTensorShape(value.shape().dim_sizes()));
        report->tried[candidates.alias].push_back(shape);
        unknown.push_back(absl::StrCat(candidates.alias, "=", shape));
      }
    }
    status = RunSignature(runner, signature, inputs,
                          SortedKeys(signature.outputs()))
                 .status();
    if (status.ok()) {
      WarmupRequest request;
      request.kind = WarmupRequest::Kind::kPredict;
      request.signature_name = name;
      for (const auto& [alias, tensor] : inputs) {
        tensor.AsProtoField(&request.inputs[alias]);
      }
      RecordFed(runner, std::move(request));
      return status;
    }
    failures.push_back(absl::StrCat(absl::StrJoin(unknown, ", "), ": ",
                                    status.message()));
    // A missed deadline is not a shape problem: do not try more shapes.
    if (absl::IsDeadlineExceeded(status) || attempts == 1) return status;
  }
  return absl::Status(
      status.code(),
      absl::StrCat("no candidate shape of the unknown-rank input(s) ran: ",
                   absl::StrJoin(failures, "; ")));
}

void RunSmoke(const Runner& runner, const std::string& name,
              const SignatureDef& signature, SignatureReport* report) {
  const Stopwatch stopwatch;
  absl::Status status;
  const bool examples = (signature.method_name() == kClassifyMethodName ||
                         signature.method_name() == kRegressMethodName) &&
                        !TakesNonStringExamples(signature);
  if (examples) {
    auto input = signature.inputs().find(kClassifyInputs);
    const std::string example =
        input == signature.inputs().end()
            ? std::string()
            : runner.synthesizer->ExampleFor(input->second.name());
    status = RunExamples(runner, name, signature, {example});
    if (input != signature.inputs().end()) {
      report->fed[kClassifyInputs] = tensorflow::TensorShape({1});
    }
    if (status.ok()) {
      WarmupRequest request;
      request.kind = signature.method_name() == kClassifyMethodName
                         ? WarmupRequest::Kind::kClassify
                         : WarmupRequest::Kind::kRegress;
      request.signature_name = name;
      request.serialized_examples.push_back(example);
      RecordFed(runner, std::move(request));
    }
  } else {
    status = RunSmokePredict(runner, name, signature, report);
    if (absl::IsUnimplemented(status)) {
      report->errors.emplace_back(status.message());
      return;
    }
  }
  report->ran = true;
  report->run_ms = stopwatch.ElapsedMs();
  if (!status.ok()) {
    std::string hint;
    if (examples && absl::StrContains(status.message(), "is required but")) {
      // Smoke mode synthesizes the features the graph's parse ops name; a
      // parse op whose keys are not constants contributes none.
      hint =
          " (smoke mode synthesizes every feature whose key is a constant of "
          "the graph; run --run=warmup to replay the bundle's own requests "
          "instead)";
    }
    report->errors.push_back(
        absl::StrCat("smoke run failed: ", status.message(), hint));
  }
}

// Looks up a request's signature as TF Serving does (empty means
// serving_default).
absl::StatusOr<const SignatureDef*> RequestSignature(
    const MetaGraphDef& meta_graph, const std::string& requested,
    std::string* name) {
  *name = requested.empty() ? kDefaultServingSignature : requested;
  auto it = meta_graph.signature_def().find(*name);
  if (it == meta_graph.signature_def().end()) {
    std::vector<std::string> available;
    for (const auto& [key, value] : meta_graph.signature_def()) {
      if (key != tensorflow::kSavedModelInitOpSignatureKey) {
        available.push_back(key);
      }
    }
    std::sort(available.begin(), available.end());
    return absl::InvalidArgumentError(absl::StrCat(
        "No signature was found with the name: ", *name,
        "; signatures present: ", QuotedJoin(available)));
  }
  return &it->second;
}

// Replays a PredictRequest as TF Serving's Predict API does (predict_util.cc).
absl::Status RunPredictRequest(const Runner& runner,
                               const SignatureDef& signature,
                               const GraphIndex& graph,
                               const WarmupRequest& request) {
  const std::string& method = signature.method_name();
  if (method != kPredictMethodName && method != kClassifyMethodName &&
      method != kRegressMethodName) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Expected prediction signature method_name to be one of {",
        kPredictMethodName, ", ", kClassifyMethodName, ", ",
        kRegressMethodName, "}. Was: ", method));
  }
  std::vector<std::string> extra;
  std::vector<std::string> missing;
  for (const auto& [alias, proto] : request.inputs) {
    if (!signature.inputs().contains(alias)) extra.push_back(alias);
  }
  for (const auto& alias : SortedKeys(signature.inputs())) {
    if (request.inputs.count(alias) > 0) continue;
    // Inputs fed by a PlaceholderWithDefault may be omitted.
    const tensorflow::TensorId id =
        tensorflow::ParseTensorName(signature.inputs().at(alias).name());
    const tensorflow::NodeDef* node = graph.FindNodeDef(id.node());
    if (node == nullptr || node->op() != "PlaceholderWithDefault") {
      missing.push_back(alias);
    }
  }
  if (!extra.empty() || !missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request inputs do not match the signature: sent ",
        BraceJoin(SortedKeys(request.inputs)), ", signature has ",
        BraceJoin(SortedKeys(signature.inputs())), ". Sent extra: ",
        BraceJoin(extra), ". Missing but required: ", BraceJoin(missing),
        "."));
  }
  std::map<std::string, Tensor> inputs;
  for (const auto& [alias, proto] : request.inputs) {
    Tensor tensor;
    if (!tensor.FromProto(proto)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor parsing error: input '", alias,
                       "' is not a valid TensorProto"));
    }
    const DataType expected = signature.inputs().at(alias).dtype();
    if (tensor.dtype() != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Expects arg[", alias, "] to be ", internal::DtypeName(expected),
          " but ", internal::DtypeName(tensor.dtype()), " is provided"));
    }
    inputs[alias] = std::move(tensor);
  }
  std::vector<std::string> output_aliases;
  if (request.output_filter.empty()) {
    output_aliases = SortedKeys(signature.outputs());
  } else {
    for (const std::string& alias : request.output_filter) {
      if (!signature.outputs().contains(alias)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output tensor alias not found in signature: ", alias,
            ". Outputs expected to be in the set ",
            BraceJoin(SortedKeys(signature.outputs())), "."));
      }
      output_aliases.push_back(alias);
    }
  }
  return RunSignature(runner, signature, inputs, output_aliases).status();
}

// Executes one warmup request; `signature_used` receives the signature name
// (for multi-inference, the names joined with '+').
absl::Status RunWarmupRequest(const Runner& runner,
                              const MetaGraphDef& meta_graph,
                              const GraphIndex& graph,
                              const WarmupRequest& request,
                              std::string* signature_used) {
  switch (request.kind) {
    case WarmupRequest::Kind::kPredict: {
      TF_ASSIGN_OR_RETURN(const SignatureDef* signature,
                          RequestSignature(meta_graph, request.signature_name,
                                           signature_used));
      return RunPredictRequest(runner, *signature, graph, request);
    }
    case WarmupRequest::Kind::kClassify:
    case WarmupRequest::Kind::kRegress: {
      TF_ASSIGN_OR_RETURN(const SignatureDef* signature,
                          RequestSignature(meta_graph, request.signature_name,
                                           signature_used));
      const char* wanted = request.kind == WarmupRequest::Kind::kClassify
                               ? kClassifyMethodName
                               : kRegressMethodName;
      if (signature->method_name() != wanted) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Expected ", WarmupKindName(request.kind),
            " signature method_name to be ", wanted, ". Was: ",
            signature->method_name()));
      }
      return RunExamples(runner, *signature_used, *signature,
                         request.serialized_examples);
    }
    case WarmupRequest::Kind::kMultiInference: {
      if (request.tasks.empty()) {
        return absl::InvalidArgumentError(
            "MultiInferenceRequest has no tasks");
      }
      std::vector<std::string> names;
      for (const WarmupRequest::Task& task : request.tasks) {
        std::string name;
        TF_ASSIGN_OR_RETURN(
            const SignatureDef* signature,
            RequestSignature(meta_graph, task.signature_name, &name));
        names.push_back(name);
        if (task.method_name != kClassifyMethodName &&
            task.method_name != kRegressMethodName) {
          return absl::InvalidArgumentError(absl::StrCat(
              "Unsupported signature method_name: ", task.method_name));
        }
        if (signature->method_name() != task.method_name) {
          return absl::InvalidArgumentError(absl::StrCat(
              "task for signature '", name, "' asks for ", task.method_name,
              " but the signature's method_name is ",
              signature->method_name()));
        }
        TF_RETURN_IF_ERROR(RunExamples(runner, name, *signature,
                                       request.serialized_examples));
      }
      *signature_used = absl::StrJoin(names, "+");
      return absl::OkStatus();
    }
    case WarmupRequest::Kind::kUnsupported:
      break;
  }
  return absl::UnimplementedError(
      absl::StrCat("Unsupported log_type for warmup: ", request.log_type));
}

std::string WarmupPath(const std::string& export_dir) {
  return tensorflow::io::JoinPath(
      export_dir, tensorflow::kSavedModelAssetsExtraDirectory, kWarmupFileName);
}

// Replays assets.extra/tf_serving_warmup_requests (TF Serving's
// RunSavedModelWarmup): records in order, at most kMaxWarmupRecords, stopping
// at the first error.
void ReplayWarmup(const Runner& runner, const MetaGraphDef& meta_graph,
                  const GraphIndex& graph, const std::string& export_dir,
                  WarmupReport* report) {
  const Stopwatch stopwatch;
  report->path = WarmupPath(export_dir);
  tensorflow::Env* env = tensorflow::Env::Default();
  if (!env->FileExists(report->path).ok()) {
    report->error = absl::StrCat(
        "no warmup file at ", report->path,
        "; write TF Serving warmup records there (python/merge does unless "
        "--nowarmup) or verify with --run=smoke");
    return;
  }
  std::unique_ptr<tensorflow::RandomAccessFile> file;
  if (absl::Status s = env->NewRandomAccessFile(report->path, &file);
      !s.ok()) {
    report->error =
        absl::StrCat("cannot open ", report->path, ": ", s.message());
    return;
  }
  tensorflow::io::SequentialRecordReader reader(file.get());
  for (int index = 0;; ++index) {
    tensorflow::tstring record;
    absl::Status read = reader.ReadRecord(&record);
    if (absl::IsOutOfRange(read)) break;  // End of file.
    if (!read.ok()) {
      report->error = absl::StrCat(
          "warmup record #", index, " in ", report->path,
          " is unreadable: ", read.message(),
          absl::IsDataLoss(read)
              ? ". Please verify your warmup data is in TFRecord format"
              : "");
      break;
    }
    if (index >= kMaxWarmupRecords) {
      report->error = absl::StrCat(
          "Number of warmup records exceeds the maximum (", kMaxWarmupRecords,
          ") at ", report->path);
      break;
    }
    auto request = DecodePredictionLog(std::string_view(record));
    if (!request.ok()) {
      report->error = absl::StrCat(
          "Failed to parse warmup record #", index, " from ", report->path,
          " as a tensorflow.serving.PredictionLog: ",
          request.status().message());
      break;
    }
    std::string signature_name;
    if (absl::Status s = RunWarmupRequest(runner, meta_graph, graph, *request,
                                          &signature_name);
        !s.ok()) {
      report->error = absl::StrCat(
          "warmup record #", index, " (", request->log_type,
          signature_name.empty() ? "" : ", signature '", signature_name,
          signature_name.empty() ? "" : "'", ") failed: ", s.message());
      break;
    }
    ++report->records;
    ++report->records_per_signature[signature_name];
  }
  report->run_ms = stopwatch.ElapsedMs();
}

// Step 6 for every selected signature, plus bundle-level signature findings.
void CheckSignatures(const GraphIndex& graph, const MetaGraphDef& meta_graph,
                     const std::vector<std::string>& names,
                     VerifyReport* report) {
  if (names.empty()) {
    report->errors.push_back(absl::StrCat(
        "the MetaGraphDef with tag-set ", TagSetString(meta_graph),
        " has no signatures, so TF Serving cannot answer any request"));
  }
  if (!meta_graph.signature_def().contains(kDefaultServingSignature)) {
    report->warnings.push_back(
        "no 'serving_default' signature: requests that omit signature_name "
        "fail; add one (python/merge: serving_default = \"<signature>\" in "
        "the spec) if clients rely on the default");
  }
  if (!graph.import_status().ok()) {
    report->errors.push_back(absl::StrCat(
        "the graph cannot be imported, so tensor dtypes and shapes were not "
        "checked: ",
        graph.import_status().message()));
  }
  for (const std::string& name : names) {
    const SignatureDef& signature = meta_graph.signature_def().at(name);
    SignatureReport& entry = report->signatures[name];
    entry.method = signature.method_name();
    for (const auto& [alias, info] : signature.inputs()) {
      entry.inputs[alias] = Summarize(info);
    }
    for (const auto& [alias, info] : signature.outputs()) {
      entry.outputs[alias] = Summarize(info);
    }
    CheckSignature(graph, name, signature, &entry, &report->warnings);
  }
}

tensorflow::RunOptions DeadlineOptions(const VerifyOptions& options) {
  tensorflow::RunOptions run_options;
  run_options.set_timeout_in_ms(options.run_timeout_ms);
  return run_options;
}

// Step 7: tensorflow::LoadSavedModel with the requested tags, timed. Its
// restore and init ops run with the same deadline as every other run.
absl::Status LoadBundle(const VerifyOptions& options,
                        tensorflow::SavedModelBundle* bundle,
                        double* load_ms) {
  const std::unordered_set<std::string> tags(options.tags.begin(),
                                             options.tags.end());
  const Stopwatch stopwatch;
  absl::Status load =
      tensorflow::LoadSavedModel(tensorflow::SessionOptions(),
                                 DeadlineOptions(options), options.export_dir,
                                 tags, bundle);
  *load_ms = stopwatch.ElapsedMs();
  if (load.ok()) return load;
  const bool restore = absl::StrContains(load.message(), "RestoreV2") ||
                       absl::StrContains(load.message(), "checkpoint");
  const bool deadline = absl::IsDeadlineExceeded(load);
  return absl::Status(
      load.code(),
      absl::StrCat(
          "tensorflow::LoadSavedModel(", options.export_dir, ", tags=",
          BraceJoin(options.tags), ") failed",
          deadline ? absl::StrCat(" to restore and initialize within "
                                  "--run_timeout_ms=",
                                  options.run_timeout_ms,
                                  " ms (its init op may never end; raise "
                                  "--run_timeout_ms if it is only slow)")
          : restore ? " restoring variables (variables/ is corrupt or does "
                      "not match the graph; restore it from the original "
                      "export)"
                    : "",
          ": ", load.message()));
}

// Step 8: replays the warmup file (first, as TF Serving's load does) and
// smoke-runs the signatures that passed their checks, as `run` asks.
void RunSignatures(RunMode run, const Runner& runner,
                   const MetaGraphDef& meta_graph, const GraphIndex& graph,
                   const std::vector<std::string>& names,
                   const std::string& export_dir, VerifyReport* report) {
  const bool warmup =
      run == RunMode::kWarmup ||
      (run == RunMode::kSmokeAndWarmup &&
       tensorflow::Env::Default()->FileExists(WarmupPath(export_dir)).ok());
  if (warmup) {
    report->warmup.emplace();
    ReplayWarmup(runner, meta_graph, graph, export_dir, &*report->warmup);
  }
  if (run == RunMode::kSmoke || run == RunMode::kSmokeAndWarmup) {
    for (const std::string& name : names) {
      SignatureReport& entry = report->signatures[name];
      if (!entry.ok()) continue;  // Static checks failed; running is moot.
      RunSmoke(runner, name, meta_graph.signature_def().at(name), &entry);
    }
  }
}

absl::Status WriteRecordFile(const std::string& path,
                             const std::vector<std::string>& records) {
  std::unique_ptr<tensorflow::WritableFile> file;
  TF_RETURN_IF_ERROR(tensorflow::Env::Default()->NewWritableFile(path, &file));
  tensorflow::io::RecordWriter writer(file.get());
  for (const std::string& record : records) {
    TF_RETURN_IF_ERROR(writer.WriteRecord(record));
  }
  TF_RETURN_IF_ERROR(writer.Close());
  return file->Close();
}

// Writes the requests smoke runs fed as PredictionLog TFRecords. The flag and
// path are added here, once, rather than at each step that can fail.
absl::Status WriteRecords(const std::string& path,
                          const std::vector<std::string>& records) {
  absl::Status s = WriteRecordFile(path, records);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("cannot write --dump_requests=",
                                             path, ": ", s.message()));
}

// ---------------------------------------------------------------------------
// Step 5b: the op denylist.

// Checkpoint ops of the denylist that the bundle's own save/restore subgraph
// (SaverDef) may use: the loader runs them to restore variables.
bool IsCheckpointOp(const std::string& op) {
  static const auto* const kOps = new absl::flat_hash_set<std::string>(
      {"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
       "MergeV2Checkpoints"});
  return kOps->contains(op);
}

// Functions `node` calls: func-valued attrs, and its op if it names one.
std::vector<std::string> CalledFunctions(
    const tensorflow::NodeDef& node,
    const std::map<std::string, const tensorflow::FunctionDef*>& functions) {
  std::vector<std::string> called;
  if (functions.count(node.op()) > 0) called.push_back(node.op());
  for (const auto& [name, value] : node.attr()) {
    if (value.has_func()) called.push_back(value.func().name());
    for (const auto& func : value.list().func()) called.push_back(func.name());
  }
  return called;
}

// Every function reachable from `roots` (functions calling functions).
std::set<std::string> FunctionClosure(
    std::vector<std::string> roots,
    const std::map<std::string, const tensorflow::FunctionDef*>& functions) {
  std::set<std::string> reached;
  while (!roots.empty()) {
    const std::string name = roots.back();
    roots.pop_back();
    auto it = functions.find(name);
    if (it == functions.end() || !reached.insert(name).second) continue;
    for (const tensorflow::NodeDef& node : it->second->node_def()) {
      for (std::string& callee : CalledFunctions(node, functions)) {
        roots.push_back(std::move(callee));
      }
    }
  }
  return reached;
}

// Op -> "node" / "node (function f)" for every denied op outside `allowed`,
// in nodes and function bodies. The saver's subgraph (and functions only it
// calls) may use the checkpoint ops.
std::map<std::string, std::vector<std::string>> FindDeniedOps(
    const MetaGraphDef& meta_graph, const std::vector<std::string>& allowed) {
  absl::flat_hash_set<std::string> denied;
  for (const char* op : kDeniedOps) denied.insert(op);
  for (const std::string& op : allowed) denied.erase(op);
  const tensorflow::GraphDef& graph_def = meta_graph.graph_def();
  std::map<std::string, const tensorflow::FunctionDef*> functions;
  for (const auto& function : graph_def.library().function()) {
    functions[function.signature().name()] = &function;
  }
  std::unordered_map<std::string, const tensorflow::NodeDef*> nodes;
  for (const auto& node : graph_def.node()) nodes[node.name()] = &node;
  // The saver's subgraph: everything its save and restore ops depend on.
  std::set<std::string> saver_nodes;
  if (meta_graph.has_saver_def()) {
    std::vector<std::string> stack = {
        std::string(tensorflow::ParseTensorName(
                        meta_graph.saver_def().restore_op_name())
                        .node()),
        std::string(tensorflow::ParseTensorName(
                        meta_graph.saver_def().save_tensor_name())
                        .node())};
    while (!stack.empty()) {
      const std::string name = stack.back();
      stack.pop_back();
      auto it = nodes.find(name);
      if (it == nodes.end() || !saver_nodes.insert(name).second) continue;
      for (const std::string& input : it->second->input()) {
        stack.emplace_back(tensorflow::ParseTensorName(
                               absl::StripPrefix(input, "^"))
                               .node());
      }
    }
  }
  std::vector<std::string> saver_roots, other_roots;
  for (const auto& node : graph_def.node()) {
    auto& roots = saver_nodes.count(node.name()) > 0 ? saver_roots : other_roots;
    for (std::string& callee : CalledFunctions(node, functions)) {
      roots.push_back(std::move(callee));
    }
  }
  const std::set<std::string> saver_functions =
      FunctionClosure(saver_roots, functions);
  const std::set<std::string> other_functions =
      FunctionClosure(other_roots, functions);
  std::map<std::string, std::vector<std::string>> found;
  for (const auto& node : graph_def.node()) {
    if (!denied.contains(node.op())) continue;
    if (saver_nodes.count(node.name()) > 0 && IsCheckpointOp(node.op())) {
      continue;
    }
    found[node.op()].push_back(absl::StrCat("'", node.name(), "'"));
  }
  for (const auto& [name, function] : functions) {
    const bool saver_only = saver_functions.count(name) > 0 &&
                            other_functions.count(name) == 0;
    for (const auto& node : function->node_def()) {
      if (!denied.contains(node.op())) continue;
      if (saver_only && IsCheckpointOp(node.op())) continue;
      found[node.op()].push_back(
          absl::StrCat("'", node.name(), "' in function '", name, "'"));
    }
  }
  return found;
}

// One error per denied op, naming its nodes (at most 5) and the fix.
std::vector<std::string> DeniedOpErrors(
    const std::map<std::string, std::vector<std::string>>& found) {
  constexpr size_t kMaxNodes = 5;
  std::vector<std::string> errors;
  for (const auto& [op, where] : found) {
    std::vector<std::string> shown(
        where.begin(), where.begin() + std::min(where.size(), kMaxNodes));
    errors.push_back(absl::StrCat(
        "the graph uses the denied op ", op, " (node ",
        absl::StrJoin(shown, ", "),
        where.size() > kMaxNodes
            ? absl::StrCat(" and ", where.size() - kMaxNodes, " more")
            : "",
        "): ops that touch files, the console or the process are refused "
        "(python/common/denied_ops.txt), and a bundle with one is neither "
        "loaded nor run. Remove it from the model, or accept it with "
        "--allow_ops=",
        op));
  }
  return errors;
}

}  // namespace

// ---------------------------------------------------------------------------
// Public API.

absl::Status ValidateOptions(const VerifyOptions& options) {
  if (options.export_dir.empty()) {
    return absl::InvalidArgumentError(
        "--export_dir is required: the SavedModel directory to verify, e.g. "
        "--export_dir=/models/merged/3");
  }
  if (options.tags.empty()) {
    return absl::InvalidArgumentError(
        "--tags must name at least one tag, e.g. --tags=serve");
  }
  for (const auto& [field, values] :
       {std::pair<const char*, const std::vector<std::string>*>{
            "--tags", &options.tags},
        {"--signatures", &options.signatures},
        {"--allow_ops", &options.allow_ops}}) {
    std::set<std::string> seen;
    for (const std::string& value : *values) {
      if (value.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, "='", absl::StrJoin(*values, ","),
            "' has an empty name; separate names with single commas"));
      }
      if (!seen.insert(value).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, "='", absl::StrJoin(*values, ","), "' names '", value,
            "' twice"));
      }
    }
  }
  if (options.run_timeout_ms < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--run_timeout_ms=", options.run_timeout_ms,
        " is negative; give milliseconds (0 means no deadline)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<VerifyReport> VerifySavedModel(const VerifyOptions& options) {
  TF_RETURN_IF_ERROR(ValidateOptions(options));
  VerifyReport report;
  report.export_dir = options.export_dir;
  report.tags = options.tags;
  report.run = options.run;
  auto failed = [&report](const absl::Status& status) {
    report.errors.emplace_back(status.message());
    return report;
  };

  // Steps 1-6: everything that only needs saved_model.pb.
  if (absl::Status s = CheckExportDir(options.export_dir); !s.ok()) {
    return failed(s);
  }
  auto saved_model = ReadSavedModelProto(options.export_dir);
  if (!saved_model.ok()) return failed(saved_model.status());
  auto meta_graph =
      FindMetaGraph(*saved_model, options.tags, options.export_dir);
  if (!meta_graph.ok()) return failed(meta_graph.status());
  const absl::Status variables =
      CheckVariables(**meta_graph, options.export_dir);
  if (!variables.ok()) {
    report.errors.emplace_back(variables.message());  // Still worth loading.
  }
  auto names = SelectSignatures(**meta_graph, options.signatures);
  if (!names.ok()) return failed(names.status());

  // Step 6: signatures against the graph; the op denylist.
  const GraphIndex graph((*meta_graph)->graph_def());
  CheckSignatures(graph, **meta_graph, *names, &report);
  report.denied_ops = FindDeniedOps(**meta_graph, options.allow_ops);
  if (!report.denied_ops.empty()) {
    // Loading runs the init op, and any run may reach the op: do neither.
    for (std::string& error : DeniedOpErrors(report.denied_ops)) {
      report.errors.push_back(std::move(error));
    }
    return report;
  }

  // Step 7: load as TF Serving does.
  tensorflow::SavedModelBundle bundle;
  if (absl::Status s = LoadBundle(options, &bundle, &report.load_ms);
      !s.ok()) {
    return failed(s);
  }
  report.loaded = true;
  if (!variables.ok()) {
    // Every run would fail on uninitialized variables; the error above says
    // why, and TensorFlow's own messages would only bury it.
    return report;
  }

  // Step 8: run.
  InputSynthesizer synthesizer((*meta_graph)->graph_def());
  std::vector<std::string> fed_records;
  Runner runner;
  runner.session = bundle.session.get();
  runner.run_options = DeadlineOptions(options);
  runner.synthesizer = &synthesizer;
  runner.fed_records = options.dump_requests.empty() ? nullptr : &fed_records;
  RunSignatures(options.run, runner, **meta_graph, graph, *names,
                options.export_dir, &report);
  for (const std::string& warning : synthesizer.warnings()) {
    report.warnings.push_back(warning);
  }
  if (!options.dump_requests.empty()) {
    if (absl::Status s = WriteRecords(options.dump_requests, fed_records);
        !s.ok()) {
      report.errors.emplace_back(s.message());
    }
  }
  return report;
}

namespace internal {

std::vector<std::string> ClosestNames(
    std::string_view target, const std::vector<std::string>& candidates,
    int max_results) {
  std::vector<std::pair<size_t, size_t>> scored;  // (distance, index)
  std::vector<size_t> previous(target.size() + 1);
  std::vector<size_t> current(target.size() + 1);
  for (size_t c = 0; c < candidates.size(); ++c) {
    const std::string& candidate = candidates[c];
    for (size_t j = 0; j <= target.size(); ++j) previous[j] = j;
    for (size_t i = 1; i <= candidate.size(); ++i) {
      current[0] = i;
      for (size_t j = 1; j <= target.size(); ++j) {
        const size_t substitute =
            previous[j - 1] + (candidate[i - 1] == target[j - 1] ? 0 : 1);
        current[j] =
            std::min({previous[j] + 1, current[j - 1] + 1, substitute});
      }
      std::swap(previous, current);
    }
    scored.emplace_back(previous[target.size()], c);
  }
  std::stable_sort(scored.begin(), scored.end());
  std::vector<std::string> result;
  for (size_t i = 0; i < scored.size() && static_cast<int>(i) < max_results;
       ++i) {
    result.push_back(candidates[scored[i].second]);
  }
  return result;
}

std::string SynthesizeExample(const tensorflow::GraphDef& graph_def,
                              const std::string& tensor_name) {
  return InputSynthesizer(graph_def).ExampleFor(tensor_name);
}

}  // namespace internal
}  // namespace verify
}  // namespace tf_serving_merge
