#include "bindery/network.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "bindery/error.h"

namespace bindery {

struct Network::Impl {
  std::vector<std::unique_ptr<Tensor>> tensors;
  std::vector<std::unique_ptr<Layer>> layers;
  std::vector<Tensor*> inputs;
  std::vector<Tensor*> outputs;
  std::vector<Layer*> constants;  // in insertion order
  std::map<std::string, Layer*> weights_by_name;
  std::set<std::string> refittable;
  std::vector<std::unique_ptr<HostTensor>> owned;  // values of add_constant(HostTensor)
  std::map<std::string, int> name_counts;
};

namespace {
std::string layer_error(const Layer& l, const std::string& what) {
  return "layer '" + l.name() + "' (" + std::string(layer_type_name(l.type())) + "): " + what;
}
}  // namespace

Network::Network() : impl_(std::make_unique<Impl>()) {}
Network::~Network() = default;
Network::Network(Network&&) noexcept = default;
Network& Network::operator=(Network&&) noexcept = default;

std::string Network::unique_name(const std::string& base) {
  int& n = impl_->name_counts[base];
  return base + "_" + std::to_string(n++);
}

Tensor* Network::add_input(const std::string& name, DataType dtype, Dims dims) {
  for (Tensor* t : impl_->inputs)
    check(t->name() != name, ErrorCode::kINVALID_ARGUMENT,
          "network input '" + name + "' already exists");
  auto t = std::make_unique<Tensor>();
  t->name_ = name;
  t->desc_ = {dtype, std::move(dims)};
  Tensor* raw = t.get();
  impl_->tensors.push_back(std::move(t));
  impl_->inputs.push_back(raw);
  return raw;
}

Layer* Network::add_layer(LayerType type, LayerParams params, std::vector<Tensor*> inputs) {
  auto layer = std::make_unique<Layer>();
  layer->name_ = unique_name(std::string(layer_type_name(type)));
  layer->type_ = type;
  layer->params_ = std::move(params);
  layer->inputs_ = std::move(inputs);
  for (Tensor* t : layer->inputs_)
    if (t) {
      const bool ours = std::any_of(impl_->tensors.begin(), impl_->tensors.end(),
                                    [t](const auto& p) { return p.get() == t; });
      check(ours, ErrorCode::kINVALID_ARGUMENT,
            layer_error(*layer, "an input tensor does not belong to this network"));
    }
  std::vector<TensorDesc> in;
  for (Tensor* t : layer->inputs_) in.push_back(t ? t->desc() : kABSENT_DESC);
  std::vector<TensorDesc> out;
  if (type == LayerType::kCONSTANT) {
    out = {};  // filled by add_constant
  } else {
    try {
      out = infer_outputs(type, layer->params_, in);
    } catch (const Error& e) {
      throw Error(ErrorCode::kINVALID_NETWORK, layer_error(*layer, e.what()));
    }
  }
  for (size_t i = 0; i < out.size(); ++i) {
    auto t = std::make_unique<Tensor>();
    t->name_ = layer->name_ + ".out" + (i ? std::to_string(i) : "");
    t->desc_ = out[i];
    t->producer_ = layer.get();
    layer->outputs_.push_back(t.get());
    impl_->tensors.push_back(std::move(t));
  }
  Layer* raw = layer.get();
  impl_->layers.push_back(std::move(layer));
  return raw;
}

Layer* Network::add_constant(const Weights& weights, const std::string& weights_name) {
  check(weights.on_host(), ErrorCode::kDEVICE,
        "network constants must be host memory, got " + describe(weights));
  check(!is_dynamic(weights.shape), ErrorCode::kINVALID_ARGUMENT,
        "constant '" + weights_name + "' has dynamic shape " + to_string(weights.shape));
  check(weights.values != nullptr || weights.count() == 0, ErrorCode::kINVALID_ARGUMENT,
        "constant '" + weights_name + "' has null values");
  Layer* l = add_layer(LayerType::kCONSTANT, ConstantParams{}, {});
  const std::string name = weights_name.empty() ? l->name() : weights_name;
  if (impl_->weights_by_name.count(name)) {
    impl_->layers.pop_back();
    throw Error(ErrorCode::kINVALID_ARGUMENT, "weights name '" + name + "' is already used");
  }
  if (!weights_name.empty()) l->name_ = weights_name;
  l->weights_ = weights;
  std::get<ConstantParams>(l->params_).weights_name = name;
  auto t = std::make_unique<Tensor>();
  t->name_ = name;
  t->desc_ = {weights.dtype, weights.shape};
  t->producer_ = l;
  l->outputs_.push_back(t.get());
  impl_->tensors.push_back(std::move(t));
  impl_->constants.push_back(l);
  impl_->weights_by_name[name] = l;
  return l;
}

Layer* Network::add_constant(HostTensor values, const std::string& weights_name) {
  impl_->owned.push_back(std::make_unique<HostTensor>(std::move(values)));
  try {
    return add_constant(impl_->owned.back()->view(), weights_name);
  } catch (...) {
    impl_->owned.pop_back();
    throw;
  }
}

bool Network::set_weights_name(Layer* constant, const std::string& name) {
  if (!constant || constant->type() != LayerType::kCONSTANT || name.empty()) return false;
  auto& p = std::get<ConstantParams>(constant->params_);
  if (p.weights_name == name) return true;
  if (impl_->weights_by_name.count(name)) return false;
  const bool was_refittable = impl_->refittable.erase(p.weights_name) > 0;
  impl_->weights_by_name.erase(p.weights_name);
  p.weights_name = name;
  impl_->weights_by_name[name] = constant;
  if (was_refittable) impl_->refittable.insert(name);
  constant->outputs_[0]->name_ = name;
  return true;
}

bool Network::set_weights_name(const Weights& weights, const std::string& name) {
  for (Layer* l : impl_->constants)
    if (l->weights().values == weights.values) return set_weights_name(l, name);
  return false;
}

Layer* Network::add_matmul(Tensor* a, bool ta, Tensor* b, bool tb) {
  return add_layer(LayerType::kMATMUL, MatMulParams{ta, tb}, {a, b});
}
Layer* Network::add_elementwise(Tensor* a, Tensor* b, ElementwiseOp op) {
  return add_layer(LayerType::kELEMENTWISE, ElementwiseParams{op}, {a, b});
}
Layer* Network::add_unary(Tensor* x, UnaryOp op) {
  return add_layer(LayerType::kUNARY, UnaryParams{op}, {x});
}
Layer* Network::add_softmax(Tensor* x, int axis) {
  return add_layer(LayerType::kSOFTMAX, SoftmaxParams{axis}, {x});
}
Layer* Network::add_reduce(Tensor* x, ReduceOp op, std::vector<int> axes, bool keep_dims) {
  return add_layer(LayerType::kREDUCE, ReduceParams{op, std::move(axes), keep_dims}, {x});
}
Layer* Network::add_rms_norm(Tensor* x, Tensor* weight, float epsilon) {
  return add_layer(LayerType::kRMSNORM, NormParams{epsilon}, {x, weight});
}
Layer* Network::add_layer_norm(Tensor* x, Tensor* weight, Tensor* bias, float epsilon) {
  return add_layer(LayerType::kLAYERNORM, NormParams{epsilon}, {x, weight, bias});
}
Layer* Network::add_gather(Tensor* data, Tensor* indices, int axis) {
  return add_layer(LayerType::kGATHER, GatherParams{axis}, {data, indices});
}
Layer* Network::add_gather(Tensor* data, Tensor* indices, GatherParams params) {
  return add_layer(LayerType::kGATHER, params, {data, indices});
}
Layer* Network::add_reshape(Tensor* x, Dims shape) {
  return add_layer(LayerType::kRESHAPE, ReshapeParams{std::move(shape)}, {x});
}
Layer* Network::add_transpose(Tensor* x, std::vector<int> perm) {
  return add_layer(LayerType::kTRANSPOSE, TransposeParams{std::move(perm)}, {x});
}
Layer* Network::add_concat(std::span<Tensor* const> inputs, int axis) {
  return add_layer(LayerType::kCONCAT, ConcatParams{axis}, {inputs.begin(), inputs.end()});
}
Layer* Network::add_slice(Tensor* x, Dims start, Dims size, Dims stride) {
  return add_layer(LayerType::kSLICE,
                   SliceParams{std::move(start), std::move(size), std::move(stride)}, {x});
}
Layer* Network::add_cast(Tensor* x, DataType to) {
  return add_layer(LayerType::kCAST, CastParams{to}, {x});
}
Layer* Network::add_convolution(Tensor* x, Tensor* kernel, Tensor* bias, ConvParams params) {
  return add_layer(LayerType::kCONVOLUTION, std::move(params), {x, kernel, bias});
}
Layer* Network::add_batch_norm(Tensor* x, Tensor* scale, Tensor* bias, Tensor* mean, Tensor* var,
                               float epsilon) {
  return add_layer(LayerType::kBATCHNORM, BatchNormParams{epsilon}, {x, scale, bias, mean, var});
}
Layer* Network::add_pooling(Tensor* x, PoolingParams params) {
  return add_layer(LayerType::kPOOLING, std::move(params), {x});
}
Layer* Network::add_rotary(Tensor* x, Tensor* positions, Tensor* seq_ids, RotaryParams params) {
  return add_layer(LayerType::kROTARY, std::move(params), {x, positions, seq_ids});
}
Layer* Network::add_attention(Tensor* q, Tensor* k, Tensor* v, Tensor* positions, Tensor* seq_ids,
                              AttentionParams params) {
  return add_layer(LayerType::kATTENTION, std::move(params), {q, k, v, positions, seq_ids});
}
Layer* Network::add_matmul_int4(Tensor* x, Tensor* qweight, Tensor* qzeros, Tensor* scales,
                                Tensor* g_idx, Int4MatmulParams params) {
  return add_layer(LayerType::kMATMUL_INT4, std::move(params), {x, qweight, qzeros, scales, g_idx});
}
Layer* Network::add_all_reduce(Tensor* x, int64_t group_size) {
  return add_layer(LayerType::kALL_REDUCE, CollectiveParams{group_size, -1}, {x});
}
Layer* Network::add_all_gather(Tensor* x, int axis, int64_t group_size) {
  return add_layer(LayerType::kALL_GATHER, CollectiveParams{group_size, axis}, {x});
}
Layer* Network::add_moe(Tensor* x, Tensor* router_logits, Tensor* gate_up, Tensor* down,
                        MoeParams params) {
  return add_layer(LayerType::kMOE, std::move(params), {x, router_logits, gate_up, down});
}

void Network::mark_output(Tensor* t) {
  check(t != nullptr, ErrorCode::kINVALID_ARGUMENT, "mark_output(nullptr)");
  if (t->is_output_) return;
  t->is_output_ = true;
  impl_->outputs.push_back(t);
}
void Network::unmark_output(Tensor* t) {
  if (!t || !t->is_output_) return;
  t->is_output_ = false;
  std::erase(impl_->outputs, t);
}
void Network::mark_debug(Tensor* t) {
  check(t != nullptr, ErrorCode::kINVALID_ARGUMENT, "mark_debug(nullptr)");
  t->is_debug_ = true;
}
void Network::unmark_debug(Tensor* t) {
  if (t) t->is_debug_ = false;
}

bool Network::mark_weights_refittable(const std::string& name) {
  if (!impl_->weights_by_name.count(name)) return false;
  impl_->refittable.insert(name);
  return true;
}
bool Network::unmark_weights_refittable(const std::string& name) {
  if (!impl_->weights_by_name.count(name)) return false;
  impl_->refittable.erase(name);
  return true;
}
bool Network::are_weights_marked_refittable(const std::string& name) const {
  return impl_->refittable.count(name) > 0;
}

int Network::num_layers() const { return static_cast<int>(impl_->layers.size()); }
Layer* Network::get_layer(int i) const { return impl_->layers.at(i).get(); }
int Network::num_inputs() const { return static_cast<int>(impl_->inputs.size()); }
Tensor* Network::get_input(int i) const { return impl_->inputs.at(i); }
int Network::num_outputs() const { return static_cast<int>(impl_->outputs.size()); }
Tensor* Network::get_output(int i) const { return impl_->outputs.at(i); }

Layer* Network::find_weights(const std::string& name) const {
  auto it = impl_->weights_by_name.find(name);
  return it == impl_->weights_by_name.end() ? nullptr : it->second;
}

std::vector<std::string> Network::weights_names() const {
  std::vector<std::string> names;
  for (Layer* l : impl_->constants)
    names.push_back(std::get<ConstantParams>(l->params()).weights_name);
  return names;
}

void Network::validate() const {
  check(!impl_->outputs.empty(), ErrorCode::kINVALID_NETWORK,
        "network has no outputs (call mark_output)");
  std::set<std::string> tensor_names;
  for (const auto& t : impl_->tensors) {
    check(!t->name().empty(), ErrorCode::kINVALID_NETWORK, "a tensor has an empty name");
    check(tensor_names.insert(t->name()).second, ErrorCode::kINVALID_NETWORK,
          "tensor name '" + t->name() + "' is used twice");
  }
  for (Tensor* t : impl_->outputs)
    check(t->producer() != nullptr, ErrorCode::kINVALID_NETWORK,
          "output '" + t->name() + "' is a network input; outputs must be computed");
  for (const auto& l : impl_->layers) {
    check(params_match(l->type(), l->params()), ErrorCode::kINVALID_NETWORK,
          layer_error(*l, "parameters do not match the layer type"));
    if (l->type() == LayerType::kCONSTANT) continue;
    std::vector<TensorDesc> in;
    for (Tensor* t : l->inputs_) in.push_back(t ? t->desc() : kABSENT_DESC);
    std::vector<TensorDesc> out;
    try {
      out = infer_outputs(l->type(), l->params(), in);
    } catch (const Error& e) {
      throw Error(ErrorCode::kINVALID_NETWORK, layer_error(*l, e.what()));
    }
    // Params may have been edited after the layer was added: re-derive the output description.
    for (size_t i = 0; i < out.size() && i < l->outputs_.size(); ++i)
      l->outputs_[i]->desc_ = out[i];
  }
}

Graph Network::to_graph() const {
  validate();
  Graph g;
  std::unordered_map<const Tensor*, int> index;
  std::map<std::string, int> weight_index;
  const auto names = weights_names();
  for (size_t i = 0; i < names.size(); ++i) weight_index[names[i]] = static_cast<int>(i);
  for (const auto& t : impl_->tensors) {
    GraphTensor gt;
    gt.name = t->name();
    gt.desc = t->desc();
    gt.is_output = t->is_output_;
    gt.is_debug = t->is_debug_;
    if (t->producer() == nullptr) {
      gt.kind = TensorKind::kINPUT;
    } else if (t->producer()->type() == LayerType::kCONSTANT) {
      gt.kind = TensorKind::kWEIGHT;
      gt.slot = weight_index.at(std::get<ConstantParams>(t->producer()->params()).weights_name);
    }
    index[t.get()] = static_cast<int>(g.tensors.size());
    g.tensors.push_back(std::move(gt));
  }
  for (Tensor* t : impl_->inputs) g.inputs.push_back(index.at(t));
  for (Tensor* t : impl_->outputs) g.outputs.push_back(index.at(t));
  // Layers are appended only after their inputs exist, so insertion order is topological.
  for (const auto& l : impl_->layers) {
    if (l->type() == LayerType::kCONSTANT) continue;
    GraphNode n;
    n.name = l->name();
    n.type = l->type();
    n.params = l->params();
    for (Tensor* t : l->inputs_) n.inputs.push_back(t ? index.at(t) : -1);
    for (Tensor* t : l->outputs_) n.outputs.push_back(index.at(t));
    g.nodes.push_back(std::move(n));
  }
  return g;
}

int Graph::find_tensor(const std::string& name) const {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].name == name) return static_cast<int>(i);
  return -1;
}

}  // namespace bindery
