#pragma once
// The Llama family (Llama 2/3/3.1, Qwen2, Mistral, Mixtral) as one model definition, TensorRT-LLM
// style: LlamaForCausalLM → model.{embed_tokens, layers.N.{input_layernorm, self_attn.
// {q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}, norm} and lm_head, so
// every parameter is named as in the Hugging Face checkpoint it binds from.
//
// The network it emits runs packed token streams: inputs "input_ids", "positions" and
// "seq_ids" (i32 [T]: the tokens of one or many sequences, each with its position and its KV
// cache slot), "logit_rows" (i32 [R]: the rows whose logits are wanted, e.g. each sequence's
// last token) and output "logits" (f32 [R, vocab]). The builder fuses q|k|v and gate|up (their
// matmuls share an input) into slots whose concat recipes the refitter replays.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bindery/engine.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/checkpoint_refit.h"
#include "bindery/models/llama_config.h"
#include "bindery/network.h"
#include "bindery/nn/layers.h"
#include "bindery/nn/module.h"
#include "bindery/plan.h"

namespace bindery {
class Engine;
}

namespace bindery::models {

/// Tensor parallelism: which rank of how many this model is (TensorRT-LLM's Mapping). A rank's
/// engine holds its block of every split weight and runs with the others' (see
/// TensorParallelExecutor); its weight names and shapes stay the full checkpoint's, so every
/// rank refits from the full checkpoint.
struct Mapping {
  int tp_size = 1;
  int tp_rank = 0;
};

/// Throws kINVALID_ARGUMENT naming the field when `config` cannot be split as `mapping` asks:
/// tp_rank outside [0, tp_size), tp_size not dividing the attention heads, the intermediate
/// size or the vocabulary, or neither dividing nor a multiple of the KV heads.
void check_mapping(const LlamaConfig& config, const Mapping& mapping);

class LlamaDecoderLayer;

/// How a GPTQ int4 checkpoint's quantized Linears are laid out (see Int4MatmulParams): its
/// group_size (-1: one group over the input dim) and the offset added to stored zeros (1 for
/// AutoGPTQ's v1 "gptq" format, which stores zero - 1; 0 for "gptq_v2").
struct GptqLayout {
  int64_t group_size = 128;
  int64_t zero_offset = 1;
};

class LlamaForCausalLM : public nn::Module {
 public:
  /// Parameters are declared in `dtype` (the engine's weight type). With `gptq`, the attention
  /// and MLP projections of dense layers are GPTQ int4 Linears kept packed: parameters
  /// <name>.qweight (i32 [in/8, out]), .qzeros (i32 [groups, out/8]), .scales (f16
  /// [groups, out]), .g_idx (i32 [in]) and .bias when the config has biases, emitted as
  /// kMATMUL_INT4 layers; embeddings, norms and lm_head stay float, as GPTQ checkpoints keep them.
  LlamaForCausalLM(LlamaConfig config, DataType dtype = DataType::kFLOAT,
                   std::optional<GptqLayout> gptq = std::nullopt, Mapping mapping = {});
  std::string_view type_name() const override { return "LlamaForCausalLM"; }
  const LlamaConfig& config() const { return config_; }
  DataType dtype() const { return dtype_; }
  const std::optional<GptqLayout>& gptq() const { return gptq_; }
  const Mapping& mapping() const { return mapping_; }
  /// Emits the whole model into `network` (inputs, layers, "logits" output). `max_seq_len`
  /// bounds positions (the KV cache size per sequence).
  void emit(Network& network, int64_t max_seq_len);

 private:
  LlamaConfig config_;
  DataType dtype_;
  std::optional<GptqLayout> gptq_;
  Mapping mapping_;
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

/// A GPTQ int4 checkpoint (AutoGPTQ / GPTQModel: config.json with a quantization_config, or
/// quantize_config.json; per quantized Linear <name>.qweight/.qzeros/.scales/.g_idx, the
/// "gptq" v1 format by default, "gptq_v2" when its checkpoint_format says so). By default the
/// quantized Linears (attention and MLP projections) stay packed (LlamaForCausalLM's `gptq`:
/// parameters named as the checkpoint's tensors, run by kMATMUL_INT4); with `dequantize` they
/// are dequantized at load into float weights of `dtype` named "<name>.weight" as in the float
/// model (Mixtral experts always are). Embeddings, norms and lm_head are read as stored.
/// load_from_hf_checkpoint, build_llama and refit_from_hf_checkpoint detect GPTQ directories
/// the same way, so they take them too (a float engine refits from a GPTQ directory through
/// the dequantized weights). Errors: kINVALID_ARGUMENT when `dir` has
/// no GPTQ quantization config; kUNSUPPORTED naming the field and value for bits other than 4,
/// a checkpoint_format other than gptq/gptq_v2 (marlin, ...) or another quant_method;
/// kSHAPE_MISMATCH / kDTYPE_MISMATCH naming the packed tensor, expected and actual; otherwise
/// as load_from_hf_checkpoint.
LoadedLlama load_from_gptq_llama(const std::string& dir, const Mapping& mapping = {},
                                 std::optional<DataType> dtype = std::nullopt,
                                 bool dequantize = false);

struct LlamaBuildOptions {
  std::optional<DataType> dtype;  // nullopt: the checkpoint config's dtype
  bool refit = false;             // kREFIT: every weight refittable
  bool strip = false;             // kREFIT + kSTRIP_PLAN: weights left out of the plan
  bool dequantize = false;        // GPTQ: float weights dequantized at load, not packed int4
  int64_t max_seq_len = 0;        // 0: the config's max_position_embeddings
  Mapping mapping;                // tensor parallelism: the rank this plan is
  std::function<void(const std::string&, int64_t, int64_t)> progress;
};

/// Loads and builds a plan of the model in `dir`; the plan's properties carry the config
/// ("model.family" = "llama", "model.config" = its JSON) and, when `dir` has them, the text of
/// its tokenizer.json and tokenizer_config.json (properties of those names). With a mapping of
/// tp_size > 1 the plan is that rank's ("tensor_parallel.size" / ".rank"); run the ranks'
/// engines together with TensorParallelExecutor.
Plan build_llama(const std::string& dir, const LlamaBuildOptions& options = {});
/// build_llama, then Engine::create on `device`, by the shortest way there. On a CUDA device
/// the plan is built stripped (no host copy of a weight is made) and the engine is filled by
/// one refit from the checkpoint, straight from its memory map into device memory: about one
/// read of the weights. Its weights are therefore refittable whatever `options.refit` says.
/// On the CPU: Engine::create(build_llama(dir, options)).
std::unique_ptr<Engine> build_llama_engine(const std::string& dir, const LlamaBuildOptions& options,
                                           Device device);
/// The config stored in a plan built by build_llama (kINVALID_ARGUMENT if it has none).
LlamaConfig config_of(const PlanMetadata& plan);

/// Refits every refittable weight of `engine` from the checkpoint in `dir` (names as the
/// loader maps them, converted to the engine's source types). All or nothing. `dir` may be a
/// Meta checkpoint; its params.json is then the config compared with the engine's.
/// `options.name_map` is not used (Hugging Face names are the engine's).
RefitSummary refit_from_hf_checkpoint(Engine& engine, const std::string& dir,
                                      const CheckpointRefitOptions& options = {});

}  // namespace bindery::models
