// Binding Llama-family checkpoints: load_from_hf_checkpoint, build_llama, refit from a
// checkpoint directory. Both read it through LlamaWeightSource, which takes Hugging Face and Meta
// directories alike: a Meta checkpoint's shards are merged and its q/k permuted at load into
// tensors under HF names, so the engine (and a refit from a Meta directory) sees HF names.

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "bindery/builder.h"
#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/logging.h"
#include "bindery/models/llama.h"
#include "bindery/models/meta_llama.h"
#include "bindery/refitter.h"
#include "models/checkpoint_refit_util.h"
#include "models/llama/weight_source.h"

namespace bindery::models {
namespace {

// The text of `file` (kIO when it cannot be read).
std::string file_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  check(in.good() || in.eof(), ErrorCode::kIO, "cannot read " + file.string());
  return text.str();
}

// `open` opens the source once the cheap checks have passed.
LoadedLlama load_from_source(const std::function<LlamaWeightSource()>& open, const Mapping& mapping,
                             std::optional<DataType> dtype, bool dequantize = false) {
  LlamaWeightSource source = open();
  check_mapping(source.config(), mapping);
  const std::string& dir = source.dir();
  LoadedLlama out;
  out.config = source.config();
  const DataType type = dtype.value_or(out.config.dtype);
  check(is_floating(type), ErrorCode::kDTYPE_MISMATCH,
        "model weights must be f32, f16 or bf16, got " + std::string(dtype_name(type)));
  std::optional<GptqLayout> gptq;
  if (source.gptq() && !dequantize)
    gptq = GptqLayout{source.gptq()->group_size, source.gptq()->v2 ? 0 : 1};
  out.model = std::make_unique<LlamaForCausalLM>(out.config, type, gptq, mapping);

  auto params = out.model->named_parameters();
  std::vector<std::string> missing;
  for (const auto& p : params)
    if (!source.contains(p.name)) missing.push_back(p.name);
  check(missing.empty(), ErrorCode::kNOT_FOUND,
        "checkpoint " + dir + " lacks " + std::to_string(missing.size()) +
            " tensor(s) the model needs: " + quoted_names(missing, 1000) +
            source.naming_note(missing));
  std::vector<Weights> values;
  std::vector<HostTensor> converted;
  converted.reserve(params.size());  // views into it must not move
  for (const auto& p : params)
    values.push_back(source.weights(p.name, {p.value.dtype(), p.value.shape()}, converted));
  // Converted tensors are handed to their parameters; views borrow the checkpoint's memory.
  size_t next_converted = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    if (next_converted < converted.size() && values[i].values == converted[next_converted].data())
      params[i].value.set_value(std::move(converted[next_converted++]));
    else
      params[i].value.set_value(values[i]);
  }
  std::set<std::string> used;
  for (const auto& p : params) used.insert(p.name);
  out.unused = source.unused(used);
  if (!out.unused.empty())
    log_warning("checkpoint " + dir + ": " + std::to_string(out.unused.size()) +
                " tensor(s) not used by the model: " + quoted_names(out.unused));
  out.checkpoint = source.release_reader();
  return out;
}

}  // namespace

LoadedLlama load_from_hf_checkpoint(const std::string& dir, const Mapping& mapping,
                                    std::optional<DataType> dtype) {
  return load_from_source([&] { return LlamaWeightSource::open(dir); }, mapping, dtype);
}

LoadedLlama load_from_gptq_llama(const std::string& dir, const Mapping& mapping,
                                 std::optional<DataType> dtype, bool dequantize) {
  return load_from_source(
      [&] {
        LlamaWeightSource source = LlamaWeightSource::open(dir);
        check(source.gptq().has_value(), ErrorCode::kINVALID_ARGUMENT,
              "checkpoint " + dir +
                  " is not a GPTQ checkpoint: it has neither quantize_config.json nor a "
                  "quantization_config in config.json");
        return source;
      },
      mapping, dtype, dequantize);
}

LoadedLlama load_from_meta_llama(const std::string& dir, const Mapping& mapping,
                                 std::optional<DataType> dtype) {
  return load_from_source([&] { return LlamaWeightSource::open_meta(dir); }, mapping, dtype);
}

Plan build_llama(const std::string& dir, const LlamaBuildOptions& options) {
  const LoadedLlama loaded = load_from_source([&] { return LlamaWeightSource::open(dir); },
                                              options.mapping, options.dtype, options.dequantize);
  const int64_t max_seq_len =
      options.max_seq_len > 0 ? options.max_seq_len : loaded.config.max_position_embeddings;
  Network network;
  loaded.model->emit(network, max_seq_len);
  BuilderConfig config;
  if (options.refit || options.strip) config.set_flag(BuilderFlag::kREFIT);
  if (options.strip) config.set_flag(BuilderFlag::kSTRIP_PLAN);
  if (options.progress) config.set_progress(options.progress);
  Plan plan = Builder().build(network, config);
  auto& props = plan.mutable_metadata().properties;
  props["model.family"] = "llama";
  props["model.config"] = loaded.config.to_json();
  props["model.max_seq_len"] = std::to_string(max_seq_len);
  props["model.dtype"] = std::string(dtype_name(loaded.model->dtype()));
  if (options.mapping.tp_size > 1) {
    props["tensor_parallel.size"] = std::to_string(options.mapping.tp_size);
    props["tensor_parallel.rank"] = std::to_string(options.mapping.tp_rank);
  }
  if (std::optional<GptqConfig> gptq = read_gptq_config(dir))  // dequantized at load
    props["model.quantization"] = "gptq int4, group_size " + std::to_string(gptq->group_size) +
                                  (gptq->desc_act ? ", desc_act" : "") +
                                  (loaded.model->gptq() ? ", packed" : ", dequantized");
  // The tokenizer travels with the plan, so that text prompts need nothing else.
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    const std::filesystem::path file = std::filesystem::path(dir) / name;
    if (std::filesystem::is_regular_file(file)) props[name] = file_text(file);
  }
  return plan;
}

std::unique_ptr<Engine> build_llama_engine(const std::string& dir, const LlamaBuildOptions& options,
                                           Device device) {
  if (device.is_cpu()) return Engine::create(build_llama(dir, options), device);
  LlamaBuildOptions stripped = options;
  stripped.strip = true;
  auto engine = Engine::create(build_llama(dir, stripped), device);
  refit_from_hf_checkpoint(*engine, dir);
  return engine;
}

LlamaConfig config_of(const PlanMetadata& plan) {
  auto it = plan.properties.find("model.config");
  check(it != plan.properties.end(), ErrorCode::kINVALID_ARGUMENT,
        "the plan was not built from a Llama-family model (it has no model.config property)");
  return LlamaConfig::from_json(it->second, "the plan's model.config");
}

namespace {

// A checkpoint of another architecture can have every tensor the engine needs with the right
// shapes (qwen2 into a llama engine: its biases would just go unused), so the configs must agree
// on everything that changes what the network computes.
void check_same_architecture(const PlanMetadata& plan, const LlamaWeightSource& source) {
  if (!plan.properties.count("model.config")) return;  // not built by build_llama
  const LlamaConfig built = config_of(plan);
  const LlamaConfig& given = source.config();
  std::string differences;
  const auto compare = [&](const char* field, const auto& a, const auto& b) {
    if (a != b) differences += std::string(differences.empty() ? "" : ", ") + field;
  };
  compare("model_type", built.model_type, given.model_type);
  compare("hidden_size", built.hidden_size, given.hidden_size);
  compare("intermediate_size", built.intermediate_size, given.intermediate_size);
  compare("num_hidden_layers", built.num_hidden_layers, given.num_hidden_layers);
  compare("num_attention_heads", built.num_attention_heads, given.num_attention_heads);
  compare("num_key_value_heads", built.num_key_value_heads, given.num_key_value_heads);
  compare("head_dim", built.head_dim, given.head_dim);
  compare("vocab_size", built.vocab_size, given.vocab_size);
  compare("attention_bias", built.qkv_bias(), given.qkv_bias());
  compare("mlp_bias", built.mlp_bias, given.mlp_bias);
  compare("tie_word_embeddings", built.tie_word_embeddings, given.tie_word_embeddings);
  compare("rope_type", built.rope.type, given.rope.type);
  compare("rope_theta", built.rope.theta, given.rope.theta);
  compare("rope factor", built.rope.factor, given.rope.factor);
  compare("sliding_window", built.sliding_window, given.sliding_window);
  compare("num_local_experts", built.num_local_experts, given.num_local_experts);
  compare("num_experts_per_tok", built.num_experts_per_tok, given.num_experts_per_tok);
  check(differences.empty(), ErrorCode::kINVALID_ARGUMENT,
        "checkpoint " + source.dir() + " is not the architecture the engine was built from (" +
            built.model_type + "): its " +
            std::filesystem::path(source.config_file()).filename().string() + " differs in " +
            differences);
}

}  // namespace

RefitSummary refit_from_hf_checkpoint(Engine& engine, const std::string& dir,
                                      const CheckpointRefitOptions& options) {
  const LlamaWeightSource source = LlamaWeightSource::open(dir);
  check_same_architecture(engine.metadata(), source);
  Refitter refitter(engine);
  configure(refitter, options);
  const std::vector<std::string> names = refitter.all_weights();
  check(!names.empty(), ErrorCode::kNOT_REFITTABLE,
        "the engine has no refittable weights (build it with --refit or --strip)");
  std::vector<std::string> missing;
  for (const std::string& n : names)
    if (!source.contains(n)) missing.push_back(n);
  check(missing.empty(), ErrorCode::kNOT_FOUND,
        "checkpoint " + dir + " lacks " + std::to_string(missing.size()) +
            " weight(s) the engine needs: " + quoted_names(missing, 1000) +
            source.naming_note(missing));
  RefitSummary summary;
  std::vector<HostTensor> converted;
  converted.reserve(names.size());
  for (const std::string& n : names) {
    // A tensor-parallel rank reads only its block of each split tensor.
    if (const std::optional<SourceBlock> block = refitter.needed_block(n)) {
      refitter.set_named_weights_block(
          n, *block,
          source.block(n, refitter.weights_prototype(n), *block, converted, &summary.bytes_read));
    } else {
      const Weights w = source.weights(n, refitter.weights_prototype(n), converted);
      refitter.set_named_weights(n, w);
      summary.bytes_read += w.size_bytes();
    }
    ++summary.weights_set;
  }
  return apply_refit(engine, refitter, std::move(summary));
}

}  // namespace bindery::models
