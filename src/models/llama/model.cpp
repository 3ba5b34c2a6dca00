// LlamaForCausalLM: the module tree and what it emits.

#include <cmath>
#include <functional>

#include "bindery/error.h"
#include "bindery/models/llama.h"
#include "bindery/nn/emitter.h"
#include "models/llama/rope.h"

namespace bindery::models {
namespace {

UnaryOp activation(const std::string& act) {
  if (act == "silu") return UnaryOp::kSILU;
  if (act == "gelu") return UnaryOp::kGELU_ERF;
  if (act == "gelu_pytorch_tanh") return UnaryOp::kGELU_TANH;
  return UnaryOp::kRELU;  // the config reader admits nothing else
}

// The token stream every attention layer reads alongside its activations.
struct Stream {
  Tensor* positions;
  Tensor* seq_ids;
  int64_t max_seq_len;
};

// A GPTQ int4 Linear kept packed: its parameters are the checkpoint's tensors, run by one
// kMATMUL_INT4 layer (plus the bias).
class GptqLinear : public nn::Module {
 public:
  GptqLinear(int64_t in, int64_t out, bool bias, DataType dtype, const GptqLayout& q)
      : in_(in), out_(out), zero_offset_(q.zero_offset) {
    check(in % 8 == 0 && out % 8 == 0, ErrorCode::kUNSUPPORTED,
          "a GPTQ int4 Linear of " + std::to_string(in) + " inputs and " + std::to_string(out) +
              " outputs: both must be multiples of 8");
    groups_ = q.group_size == -1 ? 1 : (in + q.group_size - 1) / q.group_size;
    register_parameter("qweight", nn::Parameter({in / 8, out}, DataType::kINT32));
    register_parameter("qzeros", nn::Parameter({groups_, out / 8}, DataType::kINT32));
    register_parameter("scales", nn::Parameter({groups_, out}, DataType::kHALF));
    register_parameter("g_idx", nn::Parameter({in}, DataType::kINT32));
    if (bias) register_parameter("bias", nn::Parameter({out}, dtype));
  }
  std::string_view type_name() const override { return "GptqLinear"; }

  Tensor* forward(nn::Emitter& em, Tensor* x) {
    Network& net = em.network();
    Layer* mm =
        net.add_matmul_int4(x, em.constant(parameter("qweight")), em.constant(parameter("qzeros")),
                            em.constant(parameter("scales")), em.constant(parameter("g_idx")),
                            Int4MatmulParams{in_, out_, groups_, zero_offset_});
    Tensor* y = em.name_layer(mm, *this, "matmul_int4")->output(0);
    if (nn::Parameter* b = find_parameter("bias"))
      y = em.name_layer(net.add_elementwise(y, em.constant(*b), ElementwiseOp::kSUM), *this, "bias")
              ->output(0);
    return y;
  }

 private:
  int64_t in_, out_, groups_ = 1, zero_offset_;
};

// A projection: a float nn::Linear, or a packed GPTQ one.
using Projection = std::function<Tensor*(nn::Emitter&, Tensor*)>;
Projection add_projection(nn::Module& parent, const char* name, int64_t in, int64_t out, bool bias,
                          DataType dtype, const std::optional<GptqLayout>& q) {
  if (q) {
    auto* m = parent.register_module(name, std::make_unique<GptqLinear>(in, out, bias, dtype, *q));
    return [m](nn::Emitter& em, Tensor* x) { return m->forward(em, x); };
  }
  auto* m = parent.register_module(name, std::make_unique<nn::Linear>(in, out, bias, dtype));
  return [m](nn::Emitter& em, Tensor* x) { return m->forward(em, x); };
}

class LlamaAttention : public nn::Module {
 public:
  LlamaAttention(const LlamaConfig& c, DataType dtype, int64_t layer,
                 const std::optional<GptqLayout>& q)
      : c_(c), layer_(layer) {
    q_proj_ = add_projection(*this, "q_proj", c.hidden_size, c.q_size(), c.qkv_bias(), dtype, q);
    k_proj_ = add_projection(*this, "k_proj", c.hidden_size, c.kv_size(), c.qkv_bias(), dtype, q);
    v_proj_ = add_projection(*this, "v_proj", c.hidden_size, c.kv_size(), c.qkv_bias(), dtype, q);
    o_proj_ = add_projection(*this, "o_proj", c.q_size(), c.hidden_size, c.o_bias(), dtype, q);
  }
  std::string_view type_name() const override { return "LlamaAttention"; }

  Tensor* forward(nn::Emitter& em, Tensor* x, const Stream& s) {
    Network& net = em.network();
    Tensor* q = q_proj_(em, x);
    Tensor* k = k_proj_(em, x);
    Tensor* v = v_proj_(em, x);
    Layer* rq =
        net.add_rotary(q, s.positions, s.seq_ids, rotary_params(c_, c_.num_attention_heads));
    em.name_layer(rq, *this, "rotary_q");
    Layer* rk =
        net.add_rotary(k, s.positions, s.seq_ids, rotary_params(c_, c_.num_key_value_heads));
    em.name_layer(rk, *this, "rotary_k");
    AttentionParams p;
    p.num_heads = c_.num_attention_heads;
    p.num_kv_heads = c_.num_key_value_heads;
    p.head_dim = c_.head_dim;
    p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c_.head_dim)));
    p.sliding_window = c_.sliding_window.value_or(0);
    p.max_seq_len = s.max_seq_len;
    p.cache_index = layer_;
    Layer* attn = net.add_attention(rq->output(0), rk->output(0), v, s.positions, s.seq_ids, p);
    em.name_layer(attn, *this, "attention");
    return o_proj_(em, attn->output(0));
  }

 private:
  const LlamaConfig& c_;
  int64_t layer_;
  Projection q_proj_, k_proj_, v_proj_, o_proj_;
};

class LlamaMlp : public nn::Module {
 public:
  LlamaMlp(const LlamaConfig& c, DataType dtype, const std::optional<GptqLayout>& q)
      : act_(activation(c.hidden_act)) {
    const int64_t h = c.hidden_size, f = c.intermediate_size;
    gate_proj_ = add_projection(*this, "gate_proj", h, f, c.mlp_bias, dtype, q);
    up_proj_ = add_projection(*this, "up_proj", h, f, c.mlp_bias, dtype, q);
    down_proj_ = add_projection(*this, "down_proj", f, h, c.mlp_bias, dtype, q);
  }
  std::string_view type_name() const override { return "LlamaMlp"; }

  Tensor* forward(nn::Emitter& em, Tensor* x) {
    Network& net = em.network();
    Layer* act = net.add_unary(gate_proj_(em, x), act_);
    em.name_layer(act, *this, "act");
    Layer* gated = net.add_elementwise(act->output(0), up_proj_(em, x), ElementwiseOp::kPROD);
    em.name_layer(gated, *this, "gated");
    return down_proj_(em, gated->output(0));
  }

 private:
  UnaryOp act_;
  Projection gate_proj_, up_proj_, down_proj_;
};

// One Mixtral expert: a gated MLP whose weights are named as in Hugging Face checkpoints
// (w1 the gate, w3 the up and w2 the down projection). Only its parameters are used: the
// sparse MoE block emits all experts as one kMOE layer.
class MixtralExpert : public nn::Module {
 public:
  MixtralExpert(const LlamaConfig& c, DataType dtype) {
    w1_ = add("w1", c.hidden_size, c.intermediate_size, dtype);
    w2_ = add("w2", c.intermediate_size, c.hidden_size, dtype);
    w3_ = add("w3", c.hidden_size, c.intermediate_size, dtype);
  }
  std::string_view type_name() const override { return "MixtralExpert"; }
  nn::Linear *w1_, *w2_, *w3_;

 private:
  nn::Linear* add(const char* name, int64_t in, int64_t out, DataType dtype) {
    return register_module(name, std::make_unique<nn::Linear>(in, out, false, dtype));
  }
};

// transformers' MixtralSparseMoeBlock: the router ("gate", a linear layer to one logit per
// expert) and the experts. The experts' weights are concatenated, gate|up of each expert then
// the next, and the downs likewise, into two stacked weights: the builder folds the concats
// into recipes, so the stack is one slot of which each expert's weight is a separately
// refittable part.
class MixtralSparseMoe : public nn::Module {
 public:
  MixtralSparseMoe(const LlamaConfig& c, DataType dtype) : c_(c) {
    gate_ = register_module(
        "gate", std::make_unique<nn::Linear>(c.hidden_size, c.num_local_experts, false, dtype));
    experts_ = register_module("experts", std::make_unique<nn::ModuleList>());
    for (int64_t e = 0; e < c.num_local_experts; ++e)
      experts_->append(std::make_unique<MixtralExpert>(c, dtype));
  }
  std::string_view type_name() const override { return "MixtralSparseMoe"; }

  Tensor* forward(nn::Emitter& em, Tensor* x) {
    Network& net = em.network();
    Tensor* router_logits = gate_->forward(em, x);
    std::vector<Tensor*> gate_up, down;
    for (nn::Module* m : *experts_) {
      auto* e = static_cast<MixtralExpert*>(m);
      gate_up.push_back(em.constant(e->w1_->weight()));
      gate_up.push_back(em.constant(e->w3_->weight()));
      down.push_back(em.constant(e->w2_->weight()));
    }
    Layer* stacked_gate_up = net.add_concat(gate_up, 0);
    em.name_layer(stacked_gate_up, *this, "stack_gate_up");
    Layer* stacked_down = net.add_concat(down, 0);
    em.name_layer(stacked_down, *this, "stack_down");
    MoeParams p;
    p.num_experts = c_.num_local_experts;
    p.top_k = c_.num_experts_per_tok;
    p.ffn_size = c_.intermediate_size;
    p.activation = activation(c_.hidden_act);
    p.normalize_top_k = true;
    Layer* moe =
        net.add_moe(x, router_logits, stacked_gate_up->output(0), stacked_down->output(0), p);
    em.name_layer(moe, *this, "moe");
    return moe->output(0);
  }

 private:
  const LlamaConfig& c_;
  nn::Linear* gate_;
  nn::ModuleList* experts_;
};

}  // namespace

class LlamaDecoderLayer : public nn::Module {
 public:
  LlamaDecoderLayer(const LlamaConfig& c, DataType dtype, int64_t layer,
                    const std::optional<GptqLayout>& q) {
    const auto eps = static_cast<float>(c.rms_norm_eps);
    input_layernorm_ = register_module("input_layernorm",
                                       std::make_unique<nn::RmsNorm>(c.hidden_size, eps, dtype));
    self_attn_ = register_module("self_attn", std::make_unique<LlamaAttention>(c, dtype, layer, q));
    post_attention_layernorm_ = register_module(
        "post_attention_layernorm", std::make_unique<nn::RmsNorm>(c.hidden_size, eps, dtype));
    if (c.is_moe())
      moe_ = register_module("block_sparse_moe", std::make_unique<MixtralSparseMoe>(c, dtype));
    else
      mlp_ = register_module("mlp", std::make_unique<LlamaMlp>(c, dtype, q));
  }
  std::string_view type_name() const override { return "LlamaDecoderLayer"; }

  Tensor* forward(nn::Emitter& em, Tensor* x, const Stream& s) {
    Network& net = em.network();
    Tensor* attn = self_attn_->forward(em, input_layernorm_->forward(em, x), s);
    Layer* r1 = net.add_elementwise(x, attn, ElementwiseOp::kSUM);
    em.name_layer(r1, *this, "residual_attn");
    Tensor* h = post_attention_layernorm_->forward(em, r1->output(0));
    Tensor* mlp = moe_ ? moe_->forward(em, h) : mlp_->forward(em, h);
    Layer* r2 = net.add_elementwise(r1->output(0), mlp, ElementwiseOp::kSUM);
    em.name_layer(r2, *this, "residual_mlp");
    return r2->output(0);
  }

 private:
  nn::RmsNorm* input_layernorm_;
  LlamaAttention* self_attn_;
  nn::RmsNorm* post_attention_layernorm_;
  LlamaMlp* mlp_ = nullptr;
  MixtralSparseMoe* moe_ = nullptr;
};

LlamaForCausalLM::LlamaForCausalLM(LlamaConfig config, DataType dtype,
                                   std::optional<GptqLayout> gptq)
    : config_(std::move(config)), dtype_(dtype), gptq_(gptq) {
  const LlamaConfig& c = config_;
  auto* model = register_module("model", std::make_unique<nn::Module>());
  embed_tokens_ = model->register_module(
      "embed_tokens", std::make_unique<nn::Embedding>(c.vocab_size, c.hidden_size, dtype));
  layers_ = model->register_module("layers", std::make_unique<nn::ModuleList>());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    layers_->append(std::make_unique<LlamaDecoderLayer>(c, dtype, i, gptq_));
  norm_ = model->register_module(
      "norm",
      std::make_unique<nn::RmsNorm>(c.hidden_size, static_cast<float>(c.rms_norm_eps), dtype));
  lm_head_ = register_module(
      "lm_head", std::make_unique<nn::Linear>(c.hidden_size, c.vocab_size, false, dtype));
  if (c.tie_word_embeddings) lm_head_->tie_parameter("weight", embed_tokens_->weight());
}

void LlamaForCausalLM::emit(Network& network, int64_t max_seq_len) {
  check(max_seq_len > 0, ErrorCode::kINVALID_ARGUMENT,
        "max_seq_len must be positive, got " + std::to_string(max_seq_len));
  nn::Emitter em(network);
  Tensor* ids = network.add_input("input_ids", DataType::kINT32, {kDYNAMIC});
  const Stream s{network.add_input("positions", DataType::kINT32, {kDYNAMIC}),
                 network.add_input("seq_ids", DataType::kINT32, {kDYNAMIC}), max_seq_len};
  Tensor* x = embed_tokens_->forward(em, ids);
  for (nn::Module* layer : *layers_) x = static_cast<LlamaDecoderLayer*>(layer)->forward(em, x, s);
  Tensor* logits = lm_head_->forward(em, norm_->forward(em, x));
  logits->set_name("logits");
  network.mark_output(logits);
}

}  // namespace bindery::models
