#pragma once
// Network: a TensorRT-style network definition (INetworkDefinition in our names).
// The network owns its layers and tensors; the Tensor* and Layer* handles it returns stay
// valid until the network is destroyed. Weights added as borrowed views (Weights) must stay
// alive until Builder::build returns; weights added as HostTensor are owned by the network.
// Not thread-safe: build a network from one thread.

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bindery/graph.h"
#include "bindery/ops.h"
#include "bindery/weights.h"

namespace bindery {

class Layer;

class Tensor {
 public:
  const std::string& name() const { return name_; }
  /// Renames the tensor; names must stay unique (checked at build).
  void set_name(std::string name) { name_ = std::move(name); }
  DataType dtype() const { return desc_.dtype; }
  const Dims& dims() const { return desc_.dims; }
  const TensorDesc& desc() const { return desc_; }
  bool is_network_input() const { return producer_ == nullptr; }
  bool is_network_output() const { return is_output_; }
  bool is_debug() const { return is_debug_; }
  /// The layer that computes this tensor; nullptr for a network input.
  Layer* producer() const { return producer_; }

 private:
  friend class Network;
  std::string name_;
  TensorDesc desc_;
  Layer* producer_ = nullptr;
  bool is_output_ = false;
  bool is_debug_ = false;
};

class Layer {
 public:
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  LayerType type() const { return type_; }
  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  /// nullptr for an absent optional input (e.g. a convolution without bias).
  Tensor* input(int i) const { return inputs_.at(i); }
  int num_outputs() const { return static_cast<int>(outputs_.size()); }
  Tensor* output(int i) const { return outputs_.at(i); }
  /// Parameters; may be edited before build (validated again by the builder).
  LayerParams& params() { return params_; }
  const LayerParams& params() const { return params_; }
  /// kCONSTANT layers: the weights (a view of borrowed or network-owned memory).
  const Weights& weights() const { return weights_; }

 private:
  friend class Network;
  std::string name_;
  LayerType type_ = LayerType::kCONSTANT;
  LayerParams params_;
  std::vector<Tensor*> inputs_;
  std::vector<Tensor*> outputs_;
  Weights weights_;
};

class Network {
 public:
  Network();
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;
  Network(Network&&) noexcept;
  Network& operator=(Network&&) noexcept;

  // ---- inputs and weights ----
  /// Adds a network input; dims may hold kDYNAMIC. Throws kINVALID_ARGUMENT on a duplicate name.
  Tensor* add_input(const std::string& name, DataType dtype, Dims dims);
  /// Adds a constant whose values are a borrowed host view, named `weights_name` (the layer's
  /// name when empty). Weight names are unique: a duplicate throws kINVALID_ARGUMENT.
  Layer* add_constant(const Weights& weights, const std::string& weights_name = "");
  /// Same, the network takes ownership of the values.
  Layer* add_constant(HostTensor values, const std::string& weights_name = "");
  /// Names the weights of a constant layer (TensorRT's setWeightsName). Returns false if the
  /// layer is not a constant or the name is taken.
  bool set_weights_name(Layer* constant, const std::string& name);
  /// Names the constant whose values pointer is `weights.values`. False if none or taken.
  bool set_weights_name(const Weights& weights, const std::string& name);

  // ---- layers (each returns the new layer; output(0) is its result) ----
  Layer* add_matmul(Tensor* a, bool transpose_a, Tensor* b, bool transpose_b);
  Layer* add_elementwise(Tensor* a, Tensor* b, ElementwiseOp op);
  Layer* add_unary(Tensor* x, UnaryOp op);
  Layer* add_softmax(Tensor* x, int axis = -1);
  Layer* add_reduce(Tensor* x, ReduceOp op, std::vector<int> axes, bool keep_dims);
  Layer* add_rms_norm(Tensor* x, Tensor* weight, float epsilon);
  /// `bias` may be nullptr.
  Layer* add_layer_norm(Tensor* x, Tensor* weight, Tensor* bias, float epsilon);
  Layer* add_gather(Tensor* data, Tensor* indices, int axis = 0);
  Layer* add_gather(Tensor* data, Tensor* indices, GatherParams params);
  Layer* add_reshape(Tensor* x, Dims shape);
  Layer* add_transpose(Tensor* x, std::vector<int> perm);
  Layer* add_concat(std::span<Tensor* const> inputs, int axis);
  Layer* add_slice(Tensor* x, Dims start, Dims size, Dims stride = {});
  Layer* add_cast(Tensor* x, DataType to);
  /// kernel [O, C/groups, kh, kw]; `bias` [O] may be nullptr.
  Layer* add_convolution(Tensor* x, Tensor* kernel, Tensor* bias, ConvParams params);
  Layer* add_batch_norm(Tensor* x, Tensor* scale, Tensor* bias, Tensor* mean, Tensor* var,
                        float epsilon);
  Layer* add_pooling(Tensor* x, PoolingParams params);
  /// x [T, heads * head_dim], positions [T] (i32/i64); `seq_ids` [T] may be nullptr (needed
  /// only for dynamic scaling with several sequences in one run).
  Layer* add_rotary(Tensor* x, Tensor* positions, Tensor* seq_ids, RotaryParams params);
  /// q, k, v [T, heads * head_dim], positions and seq_ids [T]; the KV cache is the context's.
  Layer* add_attention(Tensor* q, Tensor* k, Tensor* v, Tensor* positions, Tensor* seq_ids,
                       AttentionParams params);
  /// x [T, H], router_logits [T, E], gate_up [E*2F, H] and down [E*H, F] (the experts'
  /// weights stacked, see MoeParams) → [T, H].
  Layer* add_moe(Tensor* x, Tensor* router_logits, Tensor* gate_up, Tensor* down, MoeParams params);
  /// x [..., in] → [..., out] through a GPTQ int4 weight kept packed (see Int4MatmulParams):
  /// qweight i32 [in/8, out], qzeros i32 [G, out/8], scales [G, out], g_idx i32 [in].
  Layer* add_matmul_int4(Tensor* x, Tensor* qweight, Tensor* qzeros, Tensor* scales, Tensor* g_idx,
                         Int4MatmulParams params);
  /// Tensor parallelism: the sum of `x` over the `group_size` ranks (kALL_REDUCE), and their
  /// `x`s concatenated along `axis` in rank order (kALL_GATHER). Run by the execution context's
  /// Communicator (ExecutionContext::set_communicator, TensorParallelExecutor).
  Layer* add_all_reduce(Tensor* x, int64_t group_size);
  Layer* add_all_gather(Tensor* x, int axis, int64_t group_size);

  // ---- outputs, debug tensors, refit marks ----
  void mark_output(Tensor* t);
  void unmark_output(Tensor* t);
  /// Keeps `t` readable from an ExecutionContext after each run (never fused away).
  void mark_debug(Tensor* t);
  void unmark_debug(Tensor* t);
  /// Marks named weights refittable under kREFIT_INDIVIDUAL. False if no such weights.
  bool mark_weights_refittable(const std::string& name);
  bool unmark_weights_refittable(const std::string& name);
  bool are_weights_marked_refittable(const std::string& name) const;

  // ---- introspection ----
  int num_layers() const;
  Layer* get_layer(int i) const;
  int num_inputs() const;
  Tensor* get_input(int i) const;
  int num_outputs() const;
  Tensor* get_output(int i) const;
  /// The constant layer holding weights `name`, or nullptr.
  Layer* find_weights(const std::string& name) const;
  /// Names of all named weights, in the order their constants were added.
  std::vector<std::string> weights_names() const;

  /// Checks the whole network (shapes, dtypes, arity, names, at least one output); throws
  /// Error(kINVALID_NETWORK) naming the offending layer or tensor.
  void validate() const;
  /// The index form of this network: constants become kWEIGHT tensors whose `slot` is the
  /// index of the weights in weights_names(). Validates first.
  Graph to_graph() const;

 private:
  Layer* add_layer(LayerType type, LayerParams params, std::vector<Tensor*> inputs);
  std::string unique_name(const std::string& base);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bindery
