#pragma once
// Llama checkpoints in Meta's own format (github.com/meta-llama/llama, llama-models): a directory
// holding params.json and consolidated.NN.pth, one torch.save state dict per model-parallel rank
// (fairscale's split: column-parallel wq/wk/wv/w1/w3/output on dim 0, row-parallel wo/w2 on dim 1,
// tok_embeddings on dim 1 for Llama 2 and dim 0 for Llama 3, norms replicated), with Meta's
// names and Meta's interleaved rotary layout for wq and wk.
//
// Every entry point that takes a checkpoint directory (load_from_hf_checkpoint, build_llama,
// refit_from_hf_checkpoint, and so the CLI's build, refit --from and --weights) detects such a
// directory by itself and reads it as Hugging Face names: the shards are merged and q/k permuted
// to HF's half-rotation layout exactly as transformers' convert_llama_weights_to_hf.py does, so
// a Meta checkpoint and its HF conversion give bit-identical engines.

#include <optional>
#include <string>

#include "bindery/models/llama.h"
#include "bindery/models/llama_config.h"

namespace bindery::models {

/// Whether `dir` is a Meta checkpoint: it holds params.json and at least one consolidated.NN.pth,
/// and none of the Hugging Face weight layouts (model.safetensors[.index.json],
/// pytorch_model.bin[.index.json], *.safetensors), which win when both are present. Never throws.
bool is_meta_llama_checkpoint(const std::string& dir);

/// The FFN size Meta's FeedForward derives (llama/model.py): hidden = int(2 * 4 * dim / 3), then
/// int(ffn_dim_multiplier * hidden) when a multiplier is given, rounded up to a multiple of
/// `multiple_of` (which must be positive: kINVALID_ARGUMENT otherwise).
int64_t meta_ffn_hidden_size(int64_t dim, int64_t multiple_of,
                             std::optional<double> ffn_dim_multiplier);

/// The LlamaConfig a params.json describes (`text` is its content, `source` names it in errors).
/// Required: dim, n_layers, n_heads, multiple_of, norm_eps (kNOT_FOUND naming the field and the
/// file when one is missing; kINVALID_ARGUMENT when one has the wrong type or an impossible
/// value). Optional: n_kv_heads (n_heads), vocab_size (-1 or absent: 0 here, the caller takes it
/// from tok_embeddings), ffn_dim_multiplier, rope_theta (10000), use_scaled_rope (Llama 3.1's
/// llama3 rope scaling: factor rope_scaling_factor or 8, low 1, high 4, original context 8192),
/// max_seq_len. The rest is fixed: model_type "llama", silu, untied lm_head, no biases,
/// head_dim = dim / n_heads, intermediate_size from meta_ffn_hidden_size, dtype f32 (the loader
/// takes the shards' type). max_position_embeddings, which bounds the KV cache of a build (its
/// --max-seq-len overrides it), is max_seq_len when given, else 8192 for Llama 3 (rope_theta
/// >= 500000 or use_scaled_rope: its pretraining context) and 4096 for Llama 2.
LlamaConfig meta_params_config(const std::string& text, const std::string& source);

/// load_from_hf_checkpoint for a Meta checkpoint directory, which it requires (kNOT_FOUND saying
/// what the directory lacks otherwise). The config is meta_params_config of its params.json,
/// with vocab_size from tok_embeddings when params.json has -1 and dtype the shards' type.
/// Errors, each naming the file: a gap in the shard numbers (kNOT_FOUND naming the missing
/// consolidated.NN.pth), a tensor one shard lacks (kNOT_FOUND naming it and the shard), shards
/// that split a tensor unevenly or into a shape params.json does not give, e.g. shards of
/// another model-parallel size (kSHAPE_MISMATCH with every shard's shape), an FFN size that
/// disagrees with w1 (kSHAPE_MISMATCH naming params.json and the tensor), a missing params.json
/// field (kNOT_FOUND). Norms are taken from shard 0 (their shapes are checked across shards,
/// their values are not, as in transformers' and llama.cpp's converters). The merged tensors are
/// owned by the parameters; tensors a shard holds whole in the engine's type stay views into
/// `checkpoint`.
LoadedLlama load_from_meta_llama(const std::string& dir, const Mapping& mapping = {},
                                 std::optional<DataType> dtype = std::nullopt);

}  // namespace bindery::models
