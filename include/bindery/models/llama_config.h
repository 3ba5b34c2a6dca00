#pragma once
// The configuration of a Llama-family model (llama, qwen2, mistral, mixtral), read from the
// config.json that transformers writes, 4.x or 5.x:
//   4.x: rope_theta + rope_scaling {type|rope_type, factor, ...}, torch_dtype
//   5.x: rope_parameters {rope_type, rope_theta, factor, ...}, dtype
// Missing optional fields take transformers' defaults; a missing required field, an unknown
// model_type or rope type is an Error naming the field and the file.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bindery/dtype.h"

namespace bindery::models {

enum class RopeType { kDEFAULT, kLINEAR, kDYNAMIC, kLLAMA3, kYARN };
std::string_view rope_type_name(RopeType t);

struct RopeConfig {
  RopeType type = RopeType::kDEFAULT;
  double theta = 10000.0;
  double factor = 1.0;
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // llama3 and yarn: the pretraining context length; dynamic uses max_position_embeddings
  int64_t original_max_position_embeddings = 0;
  // yarn
  std::optional<double> attention_factor;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> mscale;
  std::optional<double> mscale_all_dim;
  bool truncate = true;
  double partial_rotary_factor = 1.0;
};

struct LlamaConfig {
  std::string model_type = "llama";  // llama | qwen2 | mistral | mixtral
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and o for llama) biases; always q/k/v for qwen2
  bool mlp_bias = false;
  std::optional<int64_t> sliding_window;  // mistral, mixtral (qwen2 with use_sliding_window)
  // mixtral: each layer's MLP is a sparse mixture of num_local_experts experts (each of
  // intermediate_size), num_experts_per_tok routed per token (router_jitter_noise is training
  // only, so ignored). 0 for dense models.
  int64_t num_local_experts = 0;
  int64_t num_experts_per_tok = 0;
  std::string hidden_act = "silu";
  DataType dtype = DataType::kFLOAT;  // torch_dtype / dtype, as stored in the checkpoint
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;

  /// Parses config.json text; `source` names it in errors.
  static LlamaConfig from_json(const std::string& text, const std::string& source);
  /// Reads <dir>/config.json (or the file itself when `path` is a file).
  static LlamaConfig load(const std::string& path);
  /// The config as JSON in the 5.x spelling (stored in plans).
  std::string to_json() const;

  /// Rotary dimensions per head (head_dim × partial_rotary_factor).
  int64_t rotary_dim() const;
  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
  bool qkv_bias() const { return attention_bias || model_type == "qwen2"; }
  bool o_bias() const { return attention_bias && model_type != "qwen2"; }
  bool is_moe() const { return num_local_experts > 0; }
};

}  // namespace bindery::models
