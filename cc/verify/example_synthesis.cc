#include "cc/verify/example_synthesis.h"

#include <cstring>
#include <deque>
#include <set>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "tensorflow/core/example/example.pb.h"
#include "tensorflow/core/example/feature.pb.h"
#include "tensorflow/core/framework/attr_value.pb.h"
#include "tensorflow/core/framework/function.pb.h"
#include "tensorflow/core/framework/types.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using ::tensorflow::DataType;
using ::tensorflow::NodeDef;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

bool IsIdentityOp(const std::string& op) {
  return op == "Identity" || op == "Snapshot" || op == "StopGradient";
}

bool IsAssignOp(const std::string& op) {
  static const auto* const kOps = new absl::flat_hash_set<std::string>(
      {"Assign", "AssignAdd", "AssignSub", "AssignVariableOp",
       "AssignAddVariableOp", "AssignSubVariableOp"});
  return kOps->contains(op);
}

bool IsVariableOp(const std::string& op) {
  return op == "VariableV2" || op == "Variable" || op == "VarHandleOp";
}

// "node", "node:0", "^node" and a function body's "node:out:0" -> "node".
std::string NodeName(const std::string& input) {
  std::string_view name = input;
  if (absl::StartsWith(name, "^")) name.remove_prefix(1);
  return std::string(name.substr(0, name.find(':')));
}

std::vector<std::string> DataInputs(const NodeDef& node) {
  std::vector<std::string> inputs;
  for (const std::string& input : node.input()) {
    if (!absl::StartsWith(input, "^")) inputs.push_back(input);
  }
  return inputs;
}

// One list of keys of a parse op (python/common/synthesis._Group).
struct Group {
  bool feature_list;
  bool dense;
  // "attr:NAME", "inputs:COUNT_ATTR" or "input".
  const char* keys;
  const char* types;
  const char* shapes;
};

enum class ProtoKind { kExample, kSequenceExample };

struct ParseOp {
  ProtoKind kind;
  std::vector<Group> groups;
};

// python/common/synthesis.PARSE_OPS.
const std::map<std::string, ParseOp>& ParseOps() {
  static const auto* const kOps = new std::map<std::string, ParseOp>({
      {"ParseExample",
       {ProtoKind::kExample,
        {{false, false, "inputs:Nsparse", "sparse_types", ""},
         {false, true, "inputs:Ndense", "Tdense", "dense_shapes"}}}},
      {"ParseExampleV2",
       {ProtoKind::kExample,
        {{false, false, "input", "sparse_types", ""},
         {false, true, "input", "Tdense", "dense_shapes"},
         {false, false, "input", "ragged_value_types", ""}}}},
      {"ParseSingleExample",
       {ProtoKind::kExample,
        {{false, false, "attr:sparse_keys", "sparse_types", ""},
         {false, true, "attr:dense_keys", "Tdense", "dense_shapes"}}}},
      {"ParseSequenceExample",
       {ProtoKind::kSequenceExample,
        {{false, false, "attr:context_sparse_keys", "context_sparse_types", ""},
         {false, true, "attr:context_dense_keys", "Tcontext_dense",
          "context_dense_shapes"},
         {true, false, "attr:feature_list_sparse_keys",
          "feature_list_sparse_types", ""},
         {true, true, "attr:feature_list_dense_keys",
          "feature_list_dense_types", "feature_list_dense_shapes"}}}},
      {"ParseSequenceExampleV2",
       {ProtoKind::kSequenceExample,
        {{false, false, "input", "context_sparse_types", ""},
         {false, true, "input", "Tcontext_dense", "context_dense_shapes"},
         {false, false, "input", "context_ragged_value_types", ""},
         {true, false, "input", "feature_list_sparse_types", ""},
         {true, true, "input", "feature_list_dense_types",
          "feature_list_dense_shapes"},
         {true, false, "input", "feature_list_ragged_value_types", ""}}}},
      {"ParseSingleSequenceExample",
       {ProtoKind::kSequenceExample,
        {{false, false, "inputs:Ncontext_sparse", "context_sparse_types", ""},
         {false, true, "inputs:Ncontext_dense", "Tcontext_dense",
          "context_dense_shapes"},
         {true, false, "inputs:Nfeature_list_sparse",
          "feature_list_sparse_types", ""},
         {true, true, "inputs:Nfeature_list_dense", "feature_list_dense_types",
          "feature_list_dense_shapes"}}}},
  });
  return *kOps;
}

constexpr int kFirstKeyInput = 2;

// `count` values of `dtype`'s kind: "a", 1 or 0.5.
tensorflow::Feature SynthesizedFeature(DataType dtype, int64_t count) {
  tensorflow::Feature feature;
  if (dtype == tensorflow::DT_STRING) {
    auto* list = feature.mutable_bytes_list();
    for (int64_t i = 0; i < count; ++i) list->add_value("a");
  } else if (tensorflow::DataTypeIsInteger(dtype) ||
             dtype == tensorflow::DT_BOOL) {
    auto* list = feature.mutable_int64_list();
    for (int64_t i = 0; i < count; ++i) list->add_value(1);
  } else {
    auto* list = feature.mutable_float_list();
    for (int64_t i = 0; i < count; ++i) list->add_value(0.5f);
  }
  return feature;
}

template <typename Proto>
std::string SerializeDeterministic(const Proto& proto) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    proto.SerializeToCodedStream(&coded);
  }
  return out;
}

template <typename T>
void FillFloats(Tensor* tensor) {
  auto flat = tensor->flat<T>();
  for (int64_t i = 0; i < flat.size(); ++i) {
    flat(i) = T(internal::SynthesizedFloat(i));
  }
}

using FeatureMap = std::map<std::string, tensorflow::Feature>;

}  // namespace

InputSynthesizer::InputSynthesizer(const tensorflow::GraphDef& graph_def) {
  auto index = [](Scope* scope, const auto& nodes) {
    for (const NodeDef& node : nodes) {
      scope->nodes[node.name()] = &node;
      const std::vector<std::string> inputs = DataInputs(node);
      for (int i = 0; i < static_cast<int>(inputs.size()); ++i) {
        scope->consumers[NodeName(inputs[i])].push_back({&node, i});
      }
    }
  };
  index(&scopes_[""], graph_def.node());
  for (const tensorflow::FunctionDef& function : graph_def.library().function()) {
    Scope& scope = scopes_[function.signature().name()];
    index(&scope, function.node_def());
    for (const auto& arg : function.signature().input_arg()) {
      scope.args.push_back(arg.name());
    }
  }
}

std::vector<std::pair<std::string, int>> InputSynthesizer::Callees(
    const NodeDef& node, int position) const {
  const auto& attr = node.attr();
  auto func = [&attr](const char* name) {
    auto it = attr.find(name);
    return it == attr.end() ? std::string() : it->second.func().name();
  };
  const std::string& op = node.op();
  if (op == "PartitionedCall" || op == "StatefulPartitionedCall") {
    return {{func("f"), position}};
  }
  if (!op.empty() && scopes_.count(op) > 0) return {{op, position}};
  if ((op == "If" || op == "StatelessIf") && position > 0) {
    return {{func("then_branch"), position - 1},
            {func("else_branch"), position - 1}};
  }
  if (op == "While" || op == "StatelessWhile") {
    return {{func("cond"), position}, {func("body"), position}};
  }
  if ((op == "Case" || op == "StatelessCase") && position > 0) {
    std::vector<std::pair<std::string, int>> callees;
    if (auto it = attr.find("branches"); it != attr.end()) {
      for (const auto& f : it->second.list().func()) {
        callees.emplace_back(f.name(), position - 1);
      }
    }
    return callees;
  }
  return {};
}

std::vector<std::pair<std::string, const NodeDef*>> InputSynthesizer::Forward(
    const std::string& name) const {
  struct Item {
    std::string scope;
    Consumer consumer;
  };
  std::deque<Item> queue;
  auto push_consumers = [this, &queue](const std::string& scope,
                                       const std::string& of) {
    const Scope& s = scopes_.at(scope);
    auto it = s.consumers.find(of);
    if (it == s.consumers.end()) return;
    for (const Consumer& consumer : it->second) {
      queue.push_back({scope, consumer});
    }
  };
  push_consumers("", name);
  std::set<std::pair<std::string, std::string>> seen;
  std::vector<std::pair<std::string, const NodeDef*>> reached;
  while (!queue.empty()) {
    const Item item = queue.front();
    queue.pop_front();
    const NodeDef& node = *item.consumer.node;
    const auto callees = Callees(node, item.consumer.position);
    if (!callees.empty()) {
      for (const auto& [function, index] : callees) {
        auto body = scopes_.find(function);
        if (function.empty() || body == scopes_.end() || index < 0 ||
            index >= static_cast<int>(body->second.args.size())) {
          continue;
        }
        push_consumers(function, body->second.args[index]);
      }
      continue;
    }
    if (!seen.insert({item.scope, node.name()}).second) continue;
    reached.emplace_back(item.scope, &node);
    push_consumers(item.scope, node.name());
  }
  return reached;
}

const NodeDef* InputSynthesizer::ThroughIdentities(
    const std::string& scope, const std::string& input) const {
  const auto& nodes = scopes_.at(scope).nodes;
  auto find = [&nodes](const std::string& name) -> const NodeDef* {
    auto it = nodes.find(NodeName(name));
    return it == nodes.end() ? nullptr : it->second;
  };
  const NodeDef* node = find(input);
  std::set<std::string> seen;
  while (node != nullptr && IsIdentityOp(node->op()) &&
         seen.insert(node->name()).second) {
    const std::vector<std::string> inputs = DataInputs(*node);
    if (inputs.empty()) break;
    node = find(inputs[0]);
  }
  return node;
}

void InputSynthesizer::Warn(const std::string& warning) {
  for (const std::string& known : warnings_) {
    if (known == warning) return;
  }
  warnings_.push_back(warning);
}

std::optional<TensorShape> InputSynthesizer::DerivedShape(
    const std::string& tensor_name) {
  const auto& top = scopes_.at("").nodes;
  if (auto it = top.find(NodeName(tensor_name)); it != top.end()) {
    const NodeDef& node = *it->second;
    auto shape = node.attr().find("shape");
    if ((node.op() == "Placeholder" || node.op() == "PlaceholderWithDefault") &&
        shape != node.attr().end() && !shape->second.shape().unknown_rank()) {
      TensorShape result;
      for (int i = 0; i < shape->second.shape().dim_size(); ++i) {
        const int64_t dim = shape->second.shape().dim(i).size();
        result.AddDim(dim >= 0 ? dim : (i == 0 ? kSynthesisBatchSize : 1));
      }
      return result;
    }
  }
  for (const auto& [scope, node] : Forward(NodeName(tensor_name))) {
    if (IsIdentityOp(node->op())) continue;
    const std::vector<std::string> inputs = DataInputs(*node);
    if (!IsAssignOp(node->op()) || inputs.size() < 2) return std::nullopt;
    const NodeDef* variable = ThroughIdentities(scope, inputs[0]);
    if (variable == nullptr || !IsVariableOp(variable->op())) {
      return std::nullopt;
    }
    auto shape = variable->attr().find("shape");
    if (shape == variable->attr().end() ||
        shape->second.shape().unknown_rank()) {
      return std::nullopt;
    }
    TensorShape result;
    for (const auto& dim : shape->second.shape().dim()) {
      if (dim.size() < 0) return std::nullopt;
      result.AddDim(dim.size());
    }
    return result;
  }
  return std::nullopt;
}

std::vector<TensorShape> InputSynthesizer::CandidateShapes(
    const std::string& tensor_name,
    const tensorflow::PartialTensorShape& declared) {
  if (!declared.unknown_rank()) {
    TensorShape shape;
    for (int i = 0; i < declared.dims(); ++i) {
      const int64_t dim = declared.dim_size(i);
      shape.AddDim(dim >= 0 ? dim : (i == 0 ? kSynthesisBatchSize : 1));
    }
    return {shape};
  }
  std::vector<TensorShape> candidates;
  auto add = [&candidates](const TensorShape& shape) {
    for (const TensorShape& known : candidates) {
      if (known == shape) return;
    }
    candidates.push_back(shape);
  };
  if (auto derived = DerivedShape(tensor_name)) add(*derived);
  add(TensorShape({}));
  add(TensorShape({1}));
  add(TensorShape({kSynthesisBatchSize}));
  return candidates;
}

absl::StatusOr<Tensor> InputSynthesizer::InputValue(
    const std::string& tensor_name, DataType dtype, const TensorShape& shape) {
  dtype = tensorflow::BaseType(dtype);
  Tensor tensor(dtype, shape);
  switch (dtype) {
    case tensorflow::DT_STRING: {
      const std::string example = ExampleFor(tensor_name);
      auto flat = tensor.flat<tensorflow::tstring>();
      for (int64_t i = 0; i < flat.size(); ++i) flat(i) = example;
      return tensor;
    }
    case tensorflow::DT_FLOAT:
      FillFloats<float>(&tensor);
      return tensor;
    case tensorflow::DT_DOUBLE:
      FillFloats<double>(&tensor);
      return tensor;
    case tensorflow::DT_HALF:
      FillFloats<Eigen::half>(&tensor);
      return tensor;
    case tensorflow::DT_BFLOAT16:
      FillFloats<tensorflow::bfloat16>(&tensor);
      return tensor;
    case tensorflow::DT_COMPLEX64:
      FillFloats<tensorflow::complex64>(&tensor);
      return tensor;
    case tensorflow::DT_COMPLEX128:
      FillFloats<tensorflow::complex128>(&tensor);
      return tensor;
    default:
      break;
  }
  if (dtype == tensorflow::DT_BOOL || tensorflow::DataTypeIsInteger(dtype) ||
      tensorflow::DataTypeIsQuantized(dtype)) {
    if (tensor.TotalBytes() > 0) {
      std::memset(const_cast<char*>(tensor.tensor_data().data()), 0,
                  tensor.TotalBytes());
    }
    return tensor;
  }
  return absl::UnimplementedError(absl::StrCat(
      "no synthesized value for dtype ", tensorflow::DataTypeString(dtype)));
}

std::string InputSynthesizer::ExampleFor(const std::string& tensor_name) {
  std::optional<ProtoKind> kind;
  FeatureMap context;
  FeatureMap feature_lists;
  for (const auto& [scope, node] : Forward(NodeName(tensor_name))) {
    auto parse_op = ParseOps().find(node->op());
    if (parse_op == ParseOps().end()) continue;
    const ParseOp& spec = parse_op->second;
    if (kind.has_value() && *kind != spec.kind) {
      Warn(absl::StrCat("parse op '", node->name(),
                        "' reads another proto kind than the first parse op "
                        "fed by '",
                        tensor_name, "'; its features are left out"));
      continue;
    }
    // Keys of every group, or a warning if one is not a constant.
    const std::vector<std::string> inputs = DataInputs(*node);
    const auto& attr = node->attr();
    int cursor = kFirstKeyInput;
    std::vector<std::vector<std::string>> keys;
    std::string not_constant;
    for (const Group& group : spec.groups) {
      std::vector<std::string>& group_keys = keys.emplace_back();
      const std::string_view source = group.keys;
      if (absl::StartsWith(source, "attr:")) {
        auto it = attr.find(std::string(source.substr(5)));
        if (it != attr.end()) {
          group_keys.assign(it->second.list().s().begin(),
                            it->second.list().s().end());
        }
        continue;
      }
      int64_t count = 1;
      if (absl::StartsWith(source, "inputs:")) {
        auto it = attr.find(std::string(source.substr(7)));
        count = it == attr.end() ? 0 : it->second.i();
      }
      for (int64_t i = 0; i < count && not_constant.empty(); ++i) {
        const int index = cursor + static_cast<int>(i);
        const std::string input =
            index < static_cast<int>(inputs.size()) ? inputs[index] : "";
        const NodeDef* key = ThroughIdentities(scope, input);
        Tensor value;
        auto value_attr =
            key == nullptr ? attr.end() : key->attr().find("value");
        if (key == nullptr || key->op() != "Const" ||
            value_attr == key->attr().end() ||
            value_attr->second.tensor().dtype() != tensorflow::DT_STRING ||
            !value.FromProto(value_attr->second.tensor())) {
          not_constant = input;
          break;
        }
        auto flat = value.flat<tensorflow::tstring>();
        for (int64_t j = 0; j < flat.size(); ++j) {
          group_keys.emplace_back(flat(j));
        }
      }
      cursor += static_cast<int>(count);
    }
    if (!not_constant.empty()) {
      Warn(absl::StrCat(
          "parse op '", node->name(), "' reads its feature keys from '",
          not_constant,
          "', which is not a constant; its features are left out of the "
          "synthesized input"));
      continue;
    }
    kind = spec.kind;
    FeatureMap op_context;
    FeatureMap op_lists;
    for (size_t g = 0; g < spec.groups.size(); ++g) {
      const Group& group = spec.groups[g];
      std::vector<DataType> types;
      if (auto it = attr.find(group.types); it != attr.end()) {
        for (int type : it->second.list().type()) {
          types.push_back(static_cast<DataType>(type));
        }
      }
      const tensorflow::AttrValue* shapes = nullptr;
      if (group.dense) {
        if (auto it = attr.find(group.shapes); it != attr.end()) {
          shapes = &it->second;
        }
      }
      FeatureMap& target = group.feature_list ? op_lists : op_context;
      for (size_t i = 0; i < keys[g].size() && i < types.size(); ++i) {
        int64_t count = 1;
        if (shapes != nullptr &&
            static_cast<int>(i) < shapes->list().shape_size() &&
            !shapes->list().shape(i).unknown_rank()) {
          for (const auto& dim : shapes->list().shape(i).dim()) {
            count *= dim.size() > 0 ? dim.size() : 1;
          }
        }
        target.try_emplace(keys[g][i], SynthesizedFeature(types[i], count));
      }
    }
    for (auto& [key, feature] : op_context) context.try_emplace(key, feature);
    for (auto& [key, feature] : op_lists) {
      feature_lists.try_emplace(key, feature);
    }
  }
  if (!kind.has_value()) return "";
  if (*kind == ProtoKind::kExample) {
    tensorflow::Example example;
    auto* features = example.mutable_features()->mutable_feature();
    for (const auto& [key, feature] : context) (*features)[key] = feature;
    return SerializeDeterministic(example);
  }
  tensorflow::SequenceExample sequence;
  auto* features = sequence.mutable_context()->mutable_feature();
  for (const auto& [key, feature] : context) (*features)[key] = feature;
  auto* lists = sequence.mutable_feature_lists()->mutable_feature_list();
  for (const auto& [key, feature] : feature_lists) {
    *(*lists)[key].add_feature() = feature;
  }
  return SerializeDeterministic(sequence);
}

namespace internal {

double SynthesizedFloat(int64_t i) { return 0.25 + (i % 7) / 8.0; }

}  // namespace internal
}  // namespace verify
}  // namespace tf_serving_merge
