#include "cc/verify/saved_model_checks.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "cc/verify/common.h"
#include "cc/verify/denied_ops.h"
#include "tensorflow/cc/saved_model/constants.h"
#include "tensorflow/cc/saved_model/reader.h"
#include "tensorflow/core/common_runtime/graph_constructor.h"
#include "tensorflow/core/framework/function.pb.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/graph/tensor_id.h"
#include "tensorflow/core/lib/io/path.h"
#include "tensorflow/core/platform/env.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::tensorflow::DataType;
using ::tensorflow::MetaGraphDef;
using ::tensorflow::PartialTensorShape;
using ::tensorflow::SignatureDef;
using ::tensorflow::TensorInfo;
using internal::BraceJoin;
using internal::DeclaredShape;
using internal::MethodShortName;
using internal::QuotedJoin;
using internal::SortedKeys;

bool IsNumber(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), absl::ascii_isdigit);
}

std::string TagSetString(const MetaGraphDef& meta_graph) {
  std::vector<std::string> tags(meta_graph.meta_info_def().tags().begin(),
                                meta_graph.meta_info_def().tags().end());
  std::sort(tags.begin(), tags.end());
  return BraceJoin(tags);
}

bool IsVariableOp(std::string_view op) {
  return op == "VariableV2" || op == "Variable" || op == "VarHandleOp";
}

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

}  // namespace

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

GraphIndex::GraphIndex(const tensorflow::GraphDef& graph_def)
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

const tensorflow::NodeDef* GraphIndex::FindNodeDef(
    std::string_view name) const {
  auto it = node_defs_.find(std::string(name));
  return it == node_defs_.end() ? nullptr : it->second;
}

const tensorflow::Node* GraphIndex::FindNode(std::string_view name) const {
  auto it = nodes_.find(std::string(name));
  return it == nodes_.end() ? nullptr : it->second;
}

PartialTensorShape GraphIndex::InferredShape(const tensorflow::Node* node,
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

bool TakesNonStringExamples(const SignatureDef& signature) {
  const std::string& method = signature.method_name();
  if (method != kClassifyMethodName && method != kRegressMethodName) {
    return false;
  }
  auto input = signature.inputs().find(kClassifyInputs);
  return signature.inputs().size() == 1 && input != signature.inputs().end() &&
         input->second.dtype() != tensorflow::DT_STRING;
}

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
    auto& roots =
        saver_nodes.count(node.name()) > 0 ? saver_roots : other_roots;
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

}  // namespace verify
}  // namespace tf_serving_merge
