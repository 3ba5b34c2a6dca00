#pragma once
// The Llama family (Llama 2/3/3.1, Qwen2, Mistral, Mixtral) as one model definition, TensorRT-LLM
// style: LlamaForCausalLM → model.{embed_tokens, layers.N.{input_layernorm, self_attn.
// {q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}, norm} and lm_head, so
// every parameter is named as in the Hugging Face checkpoint it binds from.
//
// The network it emits runs packed token streams: inputs "input_ids", "positions" and
// "seq_ids" (i32 [T]: the tokens of one or many sequences, each with its position and its KV
// cache slot) and output "logits" (f32 [T, vocab]). The builder fuses q|k|v and gate|up (their
// matmuls share an input) into slots whose concat recipes the refitter replays.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/llama_config.h"
#include "bindery/network.h"
#include "bindery/nn/layers.h"
#include "bindery/nn/module.h"
#include "bindery/plan.h"

namespace bindery {
class Engine;
}

namespace bindery::models {

/// Tensor parallelism: this rank's share of the model (tp_size 1 until splitting exists).
struct Mapping {
  int tp_size = 1;
  int tp_rank = 0;
};

class LlamaDecoderLayer;

class LlamaForCausalLM : public nn::Module {
 public:
  /// Parameters are declared in `dtype` (the engine's weight type).
  LlamaForCausalLM(LlamaConfig config, DataType dtype = DataType::kFLOAT);
  std::string_view type_name() const override { return "LlamaForCausalLM"; }
  const LlamaConfig& config() const { return config_; }
  DataType dtype() const { return dtype_; }
  /// Emits the whole model into `network` (inputs, layers, "logits" output). `max_seq_len`
  /// bounds positions (the KV cache size per sequence).
  void emit(Network& network, int64_t max_seq_len);

 private:
  LlamaConfig config_;
  DataType dtype_;
  nn::Embedding* embed_tokens_;
  nn::ModuleList* layers_;
  nn::RmsNorm* norm_;
  nn::Linear* lm_head_;
};

/// A model bound to a checkpoint. `checkpoint` owns the memory the parameters view (zero copy
/// where the checkpoint's type is the model's), so it lives as long as the model.
struct LoadedLlama {
  LlamaConfig config;
  std::unique_ptr<io::CheckpointReader> checkpoint;
  std::unique_ptr<LlamaForCausalLM> model;
  std::vector<std::string> unused;  // checkpoint tensors no parameter took (also logged)
};

/// TensorRT-LLM's load_from_hf_checkpoint: reads <dir>/config.json and binds every parameter
/// from any layout CheckpointReader reads. Errors: kNOT_FOUND listing every missing tensor,
/// kSHAPE_MISMATCH / kDTYPE_MISMATCH naming the tensor, expected and actual. Unused tensors
/// are a warning. `dtype`: the weights' type in the model (nullopt: the config's dtype);
/// checkpoint tensors of another float type are converted. A Meta checkpoint directory
/// (params.json + consolidated.NN.pth) is detected and read as load_from_meta_llama does
/// (bindery/models/meta_llama.h).
LoadedLlama load_from_hf_checkpoint(const std::string& dir, const Mapping& mapping = {},
                                    std::optional<DataType> dtype = std::nullopt);

struct LlamaBuildOptions {
  std::optional<DataType> dtype;  // nullopt: the checkpoint config's dtype
  bool refit = false;             // kREFIT: every weight refittable
  bool strip = false;             // kREFIT + kSTRIP_PLAN: weights left out of the plan
  int64_t max_seq_len = 0;        // 0: the config's max_position_embeddings
  std::function<void(const std::string&, int64_t, int64_t)> progress;
};

/// Loads and builds a plan of the model in `dir`; the plan's properties carry the config
/// ("model.family" = "llama", "model.config" = its JSON) and, when `dir` has them, the text of
/// its tokenizer.json and tokenizer_config.json (properties of those names).
Plan build_llama(const std::string& dir, const LlamaBuildOptions& options = {});
/// The config stored in a plan built by build_llama (kINVALID_ARGUMENT if it has none).
LlamaConfig config_of(const PlanMetadata& plan);

struct RefitSummary {
  int64_t weights_set = 0;    // source weights given to the refitter
  int64_t slots_changed = 0;  // slots whose bytes differ after the refit
  int64_t slots_total = 0;
  int64_t bytes_read = 0;
};
/// Refits every refittable weight of `engine` from the checkpoint in `dir` (names as the
/// loader maps them, converted to the engine's source types). All or nothing. `dir` may be a
/// Meta checkpoint; its params.json is then the config compared with the engine's.
RefitSummary refit_from_hf_checkpoint(Engine& engine, const std::string& dir);

}  // namespace bindery::models
