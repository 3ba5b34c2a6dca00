// LlamaForCausalLM: the module tree and what it emits.
//
// Tensor parallelism (TensorRT-LLM's split): parameters keep the checkpoint's full shapes and
// are bound to the full tensors; each rank emits a slice layer over them, which the builder
// folds into a slice recipe, so a rank's engine holds only its block and refits from the full
// checkpoint. Column-parallel q/k/v/gate/up (and MoE w1/w3) take a block of output rows,
// row-parallel o/down (and w2) a block of input columns followed by an all-reduce (biases
// added after it); the embedding and lm_head are vocab-parallel (a masked lookup plus
// all-reduce, logits all-gathered). KV heads are split when tp_size divides them and
// duplicated (each rank takes the one its query heads use) when tp_size is a multiple.

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

// This rank's block of a dimension split over the ranks (the whole dim when not split).
struct Block {
  int64_t start = 0;
  int64_t length = 0;
};
Block block_of(int64_t dim, const Mapping& m) {
  return {dim / m.tp_size * m.tp_rank, dim / m.tp_size};
}

// Whether a projection's weight is split, and how: column-parallel (a block of its outputs),
// row-parallel (a block of its inputs, the partial products summed over the ranks).
struct Parallel {
  enum Kind { kNONE, kCOLUMN, kROW } kind = kNONE;
  Block block;
  int64_t tp_size = 1;
};

// The constant of `p`, narrowed to `block` along `axis` by a slice layer (which the builder
// folds into the slot's recipe) unless the block is the whole dim.
Tensor* sliced(nn::Emitter& em, const nn::Parameter& p, int axis, Block block,
               const nn::Module& owner, std::string_view what) {
  Tensor* t = em.constant(p);
  if (block.start == 0 && block.length == p.shape()[axis]) return t;
  Dims start(p.shape().size(), 0), size = p.shape();
  start[axis] = block.start;
  size[axis] = block.length;
  Layer* slice = em.name_layer(em.network().add_slice(t, start, size), owner, what);
  slice->output(0)->set_name(slice->name());  // names the slot: "...q_proj.weight_shard"
  return slice->output(0);
}

Tensor* all_reduce(nn::Emitter& em, Tensor* x, int64_t tp_size, const nn::Module& owner) {
  if (tp_size == 1) return x;
  return em.name_layer(em.network().add_all_reduce(x, tp_size), owner, "all_reduce")->output(0);
}

Tensor* add_bias(nn::Emitter& em, Tensor* y, Tensor* bias, const nn::Module& owner) {
  return em.name_layer(em.network().add_elementwise(y, bias, ElementwiseOp::kSUM), owner, "bias")
      ->output(0);
}

// A float Linear as this rank runs it.
Tensor* linear_forward(nn::Emitter& em, nn::Linear& lin, Tensor* x, const Parallel& par) {
  Network& net = em.network();
  if (par.kind == Parallel::kNONE) return lin.forward(em, x);
  const bool column = par.kind == Parallel::kCOLUMN;
  Tensor* w = sliced(em, lin.weight(), column ? 0 : 1, par.block, lin, "weight_shard");
  Tensor* y = em.name_layer(net.add_matmul(x, false, w, true), lin, "matmul")->output(0);
  if (!column) y = all_reduce(em, y, par.tp_size, lin);
  if (nn::Parameter* b = lin.bias())
    y = add_bias(em, y, column ? sliced(em, *b, 0, par.block, lin, "bias_shard") : em.constant(*b),
                 lin);
  return y;
}

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

  // Column-parallel: a block of output columns of qweight, qzeros (8 per word), scales and
  // bias. Row-parallel: a block of input rows of qweight (8 per word) and g_idx; every group's
  // zeros and scales stay, since g_idx may send any row to any group (act-order).
  Tensor* forward(nn::Emitter& em, Tensor* x, const Parallel& par) {
    Network& net = em.network();
    const Block b = par.block;
    check(par.kind == Parallel::kNONE || (b.start % 8 == 0 && b.length % 8 == 0),
          ErrorCode::kUNSUPPORTED,
          "GPTQ Linear '" + full_name() + "' split over " + std::to_string(par.tp_size) +
              " ranks: each rank's block of " + std::to_string(b.length) +
              (par.kind == Parallel::kCOLUMN ? " outputs" : " inputs") +
              " must be a multiple of 8 (8 int4 values per packed word)");
    const Block words{b.start / 8, b.length / 8};
    Tensor *qweight, *qzeros, *scales, *g_idx;
    Int4MatmulParams p{in_, out_, groups_, zero_offset_};
    const auto& P = [this](const char* n) -> const nn::Parameter& { return parameter(n); };
    if (par.kind == Parallel::kCOLUMN) {
      qweight = sliced(em, P("qweight"), 1, b, *this, "qweight_shard");
      qzeros = sliced(em, P("qzeros"), 1, words, *this, "qzeros_shard");
      scales = sliced(em, P("scales"), 1, b, *this, "scales_shard");
      g_idx = em.constant(P("g_idx"));
      p.out_features = b.length;
    } else if (par.kind == Parallel::kROW) {
      qweight = sliced(em, P("qweight"), 0, words, *this, "qweight_shard");
      qzeros = em.constant(P("qzeros"));
      scales = em.constant(P("scales"));
      g_idx = sliced(em, P("g_idx"), 0, b, *this, "g_idx_shard");
      p.in_features = b.length;
    } else {
      qweight = em.constant(P("qweight"));
      qzeros = em.constant(P("qzeros"));
      scales = em.constant(P("scales"));
      g_idx = em.constant(P("g_idx"));
    }
    Layer* mm = net.add_matmul_int4(x, qweight, qzeros, scales, g_idx, p);
    Tensor* y = em.name_layer(mm, *this, "matmul_int4")->output(0);
    if (par.kind == Parallel::kROW) y = all_reduce(em, y, par.tp_size, *this);
    if (nn::Parameter* bias = find_parameter("bias"))
      y = add_bias(em, y,
                   par.kind == Parallel::kCOLUMN ? sliced(em, *bias, 0, b, *this, "bias_shard")
                                                 : em.constant(*bias),
                   *this);
    return y;
  }

 private:
  int64_t in_, out_, groups_ = 1, zero_offset_;
};

// A projection as this rank runs it: a float nn::Linear, or a packed GPTQ one.
using Projection = std::function<Tensor*(nn::Emitter&, Tensor*)>;
Projection add_projection(nn::Module& parent, const char* name, int64_t in, int64_t out, bool bias,
                          DataType dtype, const std::optional<GptqLayout>& q, Parallel par) {
  if (q) {
    auto* m = parent.register_module(name, std::make_unique<GptqLinear>(in, out, bias, dtype, *q));
    return [m, par](nn::Emitter& em, Tensor* x) { return m->forward(em, x, par); };
  }
  auto* m = parent.register_module(name, std::make_unique<nn::Linear>(in, out, bias, dtype));
  return [m, par](nn::Emitter& em, Tensor* x) { return linear_forward(em, *m, x, par); };
}

// The heads rank `m.tp_rank` computes: a block of the query heads and the KV heads they use
// (a block of them, or the one they share when tp_size exceeds the KV heads).
struct HeadBlock {
  Block q, kv;  // in heads
};
HeadBlock head_block(const LlamaConfig& c, const Mapping& m) {
  const int64_t kv = c.num_key_value_heads;
  if (kv % m.tp_size == 0) return {block_of(c.num_attention_heads, m), block_of(kv, m)};
  return {block_of(c.num_attention_heads, m), {m.tp_rank / (m.tp_size / kv), 1}};
}
Parallel column(Block heads, int64_t head_dim, const Mapping& m) {
  return {Parallel::kCOLUMN, {heads.start * head_dim, heads.length * head_dim}, m.tp_size};
}
Parallel column(int64_t dim, const Mapping& m) {
  return m.tp_size == 1 ? Parallel{} : Parallel{Parallel::kCOLUMN, block_of(dim, m), m.tp_size};
}
Parallel row(int64_t dim, const Mapping& m) {
  return m.tp_size == 1 ? Parallel{} : Parallel{Parallel::kROW, block_of(dim, m), m.tp_size};
}

class LlamaAttention : public nn::Module {
 public:
  LlamaAttention(const LlamaConfig& c, DataType dtype, int64_t layer,
                 const std::optional<GptqLayout>& q, const Mapping& m)
      : c_(c), layer_(layer), heads_(head_block(c, m)) {
    const int64_t d = c.head_dim;
    const bool split = m.tp_size > 1;
    const Parallel q_par = split ? column(heads_.q, d, m) : Parallel{};
    const Parallel kv_par = split ? column(heads_.kv, d, m) : Parallel{};
    const Parallel o_par = split ? Parallel{Parallel::kROW, q_par.block, m.tp_size} : Parallel{};
    q_proj_ =
        add_projection(*this, "q_proj", c.hidden_size, c.q_size(), c.qkv_bias(), dtype, q, q_par);
    k_proj_ =
        add_projection(*this, "k_proj", c.hidden_size, c.kv_size(), c.qkv_bias(), dtype, q, kv_par);
    v_proj_ =
        add_projection(*this, "v_proj", c.hidden_size, c.kv_size(), c.qkv_bias(), dtype, q, kv_par);
    o_proj_ =
        add_projection(*this, "o_proj", c.q_size(), c.hidden_size, c.o_bias(), dtype, q, o_par);
  }
  std::string_view type_name() const override { return "LlamaAttention"; }

  Tensor* forward(nn::Emitter& em, Tensor* x, const Stream& s) {
    Network& net = em.network();
    Tensor* q = q_proj_(em, x);
    Tensor* k = k_proj_(em, x);
    Tensor* v = v_proj_(em, x);
    Layer* rq = net.add_rotary(q, s.positions, s.seq_ids, rotary_params(c_, heads_.q.length));
    em.name_layer(rq, *this, "rotary_q");
    Layer* rk = net.add_rotary(k, s.positions, s.seq_ids, rotary_params(c_, heads_.kv.length));
    em.name_layer(rk, *this, "rotary_k");
    AttentionParams p;
    p.num_heads = heads_.q.length;
    p.num_kv_heads = heads_.kv.length;
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
  HeadBlock heads_;
  Projection q_proj_, k_proj_, v_proj_, o_proj_;
};

class LlamaMlp : public nn::Module {
 public:
  LlamaMlp(const LlamaConfig& c, DataType dtype, const std::optional<GptqLayout>& q,
           const Mapping& m)
      : act_(activation(c.hidden_act)) {
    const int64_t h = c.hidden_size, f = c.intermediate_size;
    gate_proj_ = add_projection(*this, "gate_proj", h, f, c.mlp_bias, dtype, q, column(f, m));
    up_proj_ = add_projection(*this, "up_proj", h, f, c.mlp_bias, dtype, q, column(f, m));
    down_proj_ = add_projection(*this, "down_proj", f, h, c.mlp_bias, dtype, q, row(f, m));
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
  MixtralSparseMoe(const LlamaConfig& c, DataType dtype, const Mapping& m)
      : c_(c), ffn_(block_of(c.intermediate_size, m)), tp_size_(m.tp_size) {
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
      // Each rank holds a block of every expert's intermediate dim.
      gate_up.push_back(sliced(em, e->w1_->weight(), 0, ffn_, *e->w1_, "weight_shard"));
      gate_up.push_back(sliced(em, e->w3_->weight(), 0, ffn_, *e->w3_, "weight_shard"));
      down.push_back(sliced(em, e->w2_->weight(), 1, ffn_, *e->w2_, "weight_shard"));
    }
    Layer* stacked_gate_up = net.add_concat(gate_up, 0);
    em.name_layer(stacked_gate_up, *this, "stack_gate_up");
    Layer* stacked_down = net.add_concat(down, 0);
    em.name_layer(stacked_down, *this, "stack_down");
    MoeParams p;
    p.num_experts = c_.num_local_experts;
    p.top_k = c_.num_experts_per_tok;
    p.ffn_size = ffn_.length;
    p.activation = activation(c_.hidden_act);
    p.normalize_top_k = true;
    Layer* moe =
        net.add_moe(x, router_logits, stacked_gate_up->output(0), stacked_down->output(0), p);
    em.name_layer(moe, *this, "moe");
    return all_reduce(em, moe->output(0), tp_size_, *this);
  }

 private:
  const LlamaConfig& c_;
  Block ffn_;
  int64_t tp_size_;
  nn::Linear* gate_;
  nn::ModuleList* experts_;
};

}  // namespace

void check_mapping(const LlamaConfig& c, const Mapping& m) {
  const std::string split = "tensor parallelism over " + std::to_string(m.tp_size) + " ranks";
  check(m.tp_size >= 1, ErrorCode::kINVALID_ARGUMENT,
        "tp_size must be at least 1, got " + std::to_string(m.tp_size));
  check(m.tp_rank >= 0 && m.tp_rank < m.tp_size, ErrorCode::kINVALID_ARGUMENT,
        "tp_rank " + std::to_string(m.tp_rank) + " is not a rank of " + split + " (0.." +
            std::to_string(m.tp_size - 1) + ")");
  const auto divides = [&](const char* field, int64_t value) {
    check(value % m.tp_size == 0, ErrorCode::kINVALID_ARGUMENT,
          split + ": " + field + " " + std::to_string(value) + " is not a multiple of " +
              std::to_string(m.tp_size));
  };
  divides("num_attention_heads", c.num_attention_heads);
  divides("intermediate_size", c.intermediate_size);
  divides("vocab_size", c.vocab_size);
  const int64_t kv = c.num_key_value_heads;
  check(kv % m.tp_size == 0 || m.tp_size % kv == 0, ErrorCode::kINVALID_ARGUMENT,
        split + ": num_key_value_heads " + std::to_string(kv) +
            " must be a multiple of tp_size (split) or divide it (duplicated)");
}

class LlamaDecoderLayer : public nn::Module {
 public:
  LlamaDecoderLayer(const LlamaConfig& c, DataType dtype, int64_t layer,
                    const std::optional<GptqLayout>& q, const Mapping& m) {
    const auto eps = static_cast<float>(c.rms_norm_eps);
    input_layernorm_ = register_module("input_layernorm",
                                       std::make_unique<nn::RmsNorm>(c.hidden_size, eps, dtype));
    self_attn_ =
        register_module("self_attn", std::make_unique<LlamaAttention>(c, dtype, layer, q, m));
    post_attention_layernorm_ = register_module(
        "post_attention_layernorm", std::make_unique<nn::RmsNorm>(c.hidden_size, eps, dtype));
    if (c.is_moe())
      moe_ = register_module("block_sparse_moe", std::make_unique<MixtralSparseMoe>(c, dtype, m));
    else
      mlp_ = register_module("mlp", std::make_unique<LlamaMlp>(c, dtype, q, m));
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
                                   std::optional<GptqLayout> gptq, Mapping mapping)
    : config_(std::move(config)), dtype_(dtype), gptq_(gptq), mapping_(mapping) {
  const LlamaConfig& c = config_;
  check_mapping(c, mapping_);
  auto* model = register_module("model", std::make_unique<nn::Module>());
  embed_tokens_ = model->register_module(
      "embed_tokens", std::make_unique<nn::Embedding>(c.vocab_size, c.hidden_size, dtype));
  layers_ = model->register_module("layers", std::make_unique<nn::ModuleList>());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    layers_->append(std::make_unique<LlamaDecoderLayer>(c, dtype, i, gptq_, mapping_));
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
  const Mapping& m = mapping_;
  const int64_t tp = m.tp_size;
  const Block vocab = block_of(config_.vocab_size, m);
  Tensor* x;
  if (tp == 1) {
    x = embed_tokens_->forward(em, ids);
  } else {  // vocab-parallel: each rank looks up the tokens in its block of the table
    Tensor* table = sliced(em, embed_tokens_->weight(), 0, vocab, *embed_tokens_, "weight_shard");
    Layer* g = network.add_gather(table, ids, GatherParams{0, vocab.start, true});
    x = all_reduce(em, em.name_layer(g, *embed_tokens_, "gather")->output(0), tp, *embed_tokens_);
  }
  for (nn::Module* layer : *layers_) x = static_cast<LlamaDecoderLayer*>(layer)->forward(em, x, s);
  // Only the rows whose logits are wanted go through the final norm and lm_head: a prefill
  // needs each sequence's last row, not a vocabulary-wide row per prompt token.
  Tensor* rows = network.add_input("logit_rows", DataType::kINT32, {kDYNAMIC});
  x = em.name_layer(network.add_gather(x, rows, 0), *this, "logit_rows")->output(0);
  x = norm_->forward(em, x);
  Tensor* logits;
  if (tp == 1) {
    logits = lm_head_->forward(em, x);
  } else {  // vocab-parallel: each rank's block of the logits, gathered
    Tensor* local = linear_forward(em, *lm_head_, x, Parallel{Parallel::kCOLUMN, vocab, tp});
    logits =
        em.name_layer(network.add_all_gather(local, -1, tp), *lm_head_, "all_gather")->output(0);
  }
  logits->set_name("logits");
  network.mark_output(logits);
}

}  // namespace bindery::models
