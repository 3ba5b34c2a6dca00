#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bindery/error.h"
#include "bindery/models/llama_config.h"
#include "models/llama/json_fields.h"

namespace bindery::models {
namespace {

using nlohmann::json;

using Fields = JsonFields;

RopeType parse_rope_type(const std::string& name, const std::string& source) {
  if (name == "default") return RopeType::kDEFAULT;
  if (name == "linear") return RopeType::kLINEAR;
  if (name == "dynamic") return RopeType::kDYNAMIC;
  if (name == "llama3") return RopeType::kLLAMA3;
  if (name == "yarn") return RopeType::kYARN;
  throw Error(ErrorCode::kUNSUPPORTED, source + ": rope type '" + name +
                                           "' is not supported (default, linear, dynamic, "
                                           "llama3, yarn are)");
}

// 5.x keeps everything in rope_parameters; 4.x has rope_theta at the top and the scaling in
// rope_scaling (keyed "type" before 4.45, "rope_type" after). Both may be present.
RopeConfig parse_rope(const Fields& top, int64_t max_positions) {
  RopeConfig r;
  r.theta = top.number("rope_theta", 10000.0);
  r.partial_rotary_factor = top.number("partial_rotary_factor", 1.0);
  const char* key = top.has("rope_parameters") ? "rope_parameters"
                    : top.has("rope_scaling")  ? "rope_scaling"
                                               : nullptr;
  if (key) {
    const Fields p(top.object(key), top.source() + " " + key);
    r.theta = p.number("rope_theta", r.theta);
    r.partial_rotary_factor = p.number("partial_rotary_factor", r.partial_rotary_factor);
    r.type = parse_rope_type(p.string("rope_type", p.string("type", "default")), p.source());
    r.factor = p.number("factor", 1.0);
    r.low_freq_factor = p.number("low_freq_factor", 1.0);
    r.high_freq_factor = p.number("high_freq_factor", 4.0);
    r.original_max_position_embeddings = p.integer(
        "original_max_position_embeddings", top.integer("original_max_position_embeddings", 0));
    r.attention_factor = p.optional_number("attention_factor");
    r.beta_fast = p.number("beta_fast", 32.0);
    r.beta_slow = p.number("beta_slow", 1.0);
    r.mscale = p.optional_number("mscale");
    r.mscale_all_dim = p.optional_number("mscale_all_dim");
    r.truncate = p.boolean("truncate", true);
    if (r.original_max_position_embeddings == 0) r.original_max_position_embeddings = max_positions;
    // yarn without a factor stretches the pretraining context to max_position_embeddings.
    if (r.type == RopeType::kYARN && !p.has("factor"))
      r.factor = static_cast<double>(max_positions) / r.original_max_position_embeddings;
    check(
        r.type == RopeType::kDEFAULT || r.type == RopeType::kYARN || p.has("factor"),
        ErrorCode::kNOT_FOUND,
        p.source() + ": rope type '" + std::string(rope_type_name(r.type)) + "' needs a 'factor'");
  }
  if (r.original_max_position_embeddings == 0) r.original_max_position_embeddings = max_positions;
  return r;
}

std::vector<int64_t> token_ids(const json& j) {
  std::vector<int64_t> out;
  if (j.is_number_integer()) out.push_back(j.get<int64_t>());
  if (j.is_array())
    for (const json& v : j)
      if (v.is_number_integer()) out.push_back(v.get<int64_t>());
  return out;
}

}  // namespace

std::string_view rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::kDEFAULT: return "default";
    case RopeType::kLINEAR: return "linear";
    case RopeType::kDYNAMIC: return "dynamic";
    case RopeType::kLLAMA3: return "llama3";
    case RopeType::kYARN: return "yarn";
  }
  return "?";
}

LlamaConfig LlamaConfig::from_json(const std::string& text, const std::string& source) {
  const json j = parse_json_object(text, source);
  const Fields f(j, source);
  LlamaConfig c;
  c.model_type = f.string("model_type", "");
  check(!c.model_type.empty(), ErrorCode::kNOT_FOUND,
        source + ": required field 'model_type' is missing");
  check(c.model_type == "llama" || c.model_type == "qwen2" || c.model_type == "mistral" ||
            c.model_type == "mixtral",
        ErrorCode::kUNSUPPORTED,
        source + ": model_type '" + c.model_type +
            "' is not supported (llama, qwen2, mistral and mixtral are)");
  c.vocab_size = f.required_int("vocab_size");
  c.hidden_size = f.required_int("hidden_size");
  c.intermediate_size = f.required_int("intermediate_size");
  c.num_hidden_layers = f.required_int("num_hidden_layers");
  c.num_attention_heads = f.required_int("num_attention_heads");
  check(c.num_attention_heads > 0 && c.hidden_size > 0 && c.vocab_size > 0,
        ErrorCode::kINVALID_ARGUMENT,
        source + ": vocab_size, hidden_size and num_attention_heads must be positive");
  c.num_key_value_heads = f.integer("num_key_value_heads", c.num_attention_heads);
  c.head_dim = f.integer("head_dim", c.hidden_size / c.num_attention_heads);
  check(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
        ErrorCode::kINVALID_ARGUMENT,
        source + ": num_attention_heads (" + std::to_string(c.num_attention_heads) +
            ") must be a multiple of num_key_value_heads (" +
            std::to_string(c.num_key_value_heads) + ")");
  check(c.head_dim > 0 && c.head_dim % 2 == 0, ErrorCode::kINVALID_ARGUMENT,
        source + ": head_dim must be positive and even, found " + std::to_string(c.head_dim));
  c.max_position_embeddings = f.integer("max_position_embeddings", 2048);
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6);
  c.rope = parse_rope(f, c.max_position_embeddings);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  // Mixtral's projections have no biases whatever the config says (transformers ignores both).
  const bool mixtral = c.model_type == "mixtral";
  c.attention_bias = !mixtral && f.boolean("attention_bias", false);
  c.mlp_bias = !mixtral && f.boolean("mlp_bias", false);
  if (mixtral) {  // transformers' MixtralConfig defaults
    c.num_local_experts = f.integer("num_local_experts", 8);
    c.num_experts_per_tok = f.integer("num_experts_per_tok", 2);
    check(c.num_local_experts > 0 && c.num_experts_per_tok > 0 &&
              c.num_experts_per_tok <= c.num_local_experts,
          ErrorCode::kINVALID_ARGUMENT,
          source + ": num_experts_per_tok (" + std::to_string(c.num_experts_per_tok) +
              ") must be between 1 and num_local_experts (" + std::to_string(c.num_local_experts) +
              ")");
  }
  const bool window = c.model_type == "mistral" || mixtral ||
                      (c.model_type == "qwen2" && f.boolean("use_sliding_window", false));
  if (window && f.has("sliding_window")) c.sliding_window = f.integer("sliding_window");
  c.hidden_act = f.string("hidden_act", "silu");
  check(c.hidden_act == "silu" || c.hidden_act == "gelu" || c.hidden_act == "gelu_pytorch_tanh" ||
            c.hidden_act == "relu",
        ErrorCode::kUNSUPPORTED,
        source + ": hidden_act '" + c.hidden_act +
            "' is not supported (silu, gelu, gelu_pytorch_tanh, relu are)");
  const std::string dtype = f.string("dtype", f.string("torch_dtype", "float32"));
  const std::optional<DataType> t = parse_dtype(dtype);
  check(t && is_floating(*t), ErrorCode::kUNSUPPORTED,
        source + ": dtype '" + dtype + "' is not supported (float32, float16, bfloat16 are)");
  c.dtype = *t;
  if (f.has("bos_token_id")) c.bos_token_id = j.at("bos_token_id").get<int64_t>();
  if (f.has("eos_token_id")) c.eos_token_ids = token_ids(j.at("eos_token_id"));
  return c;
}

LlamaConfig LlamaConfig::load(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path file = fs::is_directory(path) ? fs::path(path) / "config.json" : fs::path(path);
  std::ifstream in(file);
  check(in.good(), ErrorCode::kNOT_FOUND, "cannot open model config " + file.string());
  std::stringstream text;
  text << in.rdbuf();
  return from_json(text.str(), file.string());
}

int64_t LlamaConfig::rotary_dim() const {
  const auto d = static_cast<int64_t>(static_cast<double>(head_dim) * rope.partial_rotary_factor);
  return d - d % 2;
}

std::string LlamaConfig::to_json() const {
  json rp = {{"rope_type", rope_type_name(rope.type)},
             {"rope_theta", rope.theta},
             {"factor", rope.factor},
             {"low_freq_factor", rope.low_freq_factor},
             {"high_freq_factor", rope.high_freq_factor},
             {"original_max_position_embeddings", rope.original_max_position_embeddings},
             {"beta_fast", rope.beta_fast},
             {"beta_slow", rope.beta_slow},
             {"truncate", rope.truncate},
             {"partial_rotary_factor", rope.partial_rotary_factor}};
  if (rope.attention_factor) rp["attention_factor"] = *rope.attention_factor;
  if (rope.mscale) rp["mscale"] = *rope.mscale;
  if (rope.mscale_all_dim) rp["mscale_all_dim"] = *rope.mscale_all_dim;
  json j = {{"model_type", model_type},
            {"vocab_size", vocab_size},
            {"hidden_size", hidden_size},
            {"intermediate_size", intermediate_size},
            {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads},
            {"num_key_value_heads", num_key_value_heads},
            {"head_dim", head_dim},
            {"max_position_embeddings", max_position_embeddings},
            {"rms_norm_eps", rms_norm_eps},
            {"rope_parameters", rp},
            {"tie_word_embeddings", tie_word_embeddings},
            {"attention_bias", attention_bias},
            {"mlp_bias", mlp_bias},
            {"hidden_act", hidden_act},
            {"dtype", dtype_name(dtype)}};
  if (sliding_window) {
    j["sliding_window"] = *sliding_window;
    if (model_type == "qwen2") j["use_sliding_window"] = true;
  }
  if (is_moe()) {
    j["num_local_experts"] = num_local_experts;
    j["num_experts_per_tok"] = num_experts_per_tok;
  }
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids;
  return j.dump();
}

}  // namespace bindery::models
