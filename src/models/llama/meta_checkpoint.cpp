// Meta's Llama checkpoints: params.json into a LlamaConfig, consolidated.NN.pth shards merged
// into Hugging Face tensors (meta_checkpoint.h).

#include "models/llama/meta_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <unordered_map>

#include "bindery/error.h"
#include "bindery/models/meta_llama.h"
#include "io/tensor_convert.h"
#include "models/llama/json_fields.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::regex kSHARD_FILE(R"(consolidated\.(\d+)\.pth)");

// The HF weight layouts CheckpointReader looks for before Meta shards.
bool has_hf_weights(const fs::path& dir) {
  for (const char* name : {"model.safetensors.index.json", "model.safetensors",
                           "pytorch_model.bin.index.json", "pytorch_model.bin"})
    if (fs::is_regular_file(dir / name)) return true;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") return true;
  return false;
}

// Meta name -> HF name and how fairscale splits it across model-parallel ranks.
struct Naming {
  std::string hf;
  int axis = -1;  // -1: replicated
  enum { kNONE, kQ, kK } permute = kNONE;
  bool embedding = false;  // dim 1 in Llama 2 (ParallelEmbedding), dim 0 in Llama 3
};

const std::map<std::string, Naming>& top_names() {
  static const std::map<std::string, Naming> kTOP = {
      {"tok_embeddings.weight", {"model.embed_tokens.weight", 1, Naming::kNONE, true}},
      {"norm.weight", {"model.norm.weight", -1}},
      {"output.weight", {"lm_head.weight", 0}},
  };
  return kTOP;
}

// Under layers.N. (Meta) and model.layers.N. (HF).
const std::map<std::string, Naming>& layer_names() {
  static const std::map<std::string, Naming> kLAYER = {
      {"attention.wq.weight", {"self_attn.q_proj.weight", 0, Naming::kQ}},
      {"attention.wk.weight", {"self_attn.k_proj.weight", 0, Naming::kK}},
      {"attention.wv.weight", {"self_attn.v_proj.weight", 0}},
      {"attention.wo.weight", {"self_attn.o_proj.weight", 1}},
      {"feed_forward.w1.weight", {"mlp.gate_proj.weight", 0}},
      {"feed_forward.w2.weight", {"mlp.down_proj.weight", 1}},
      {"feed_forward.w3.weight", {"mlp.up_proj.weight", 0}},
      {"attention_norm.weight", {"input_layernorm.weight", -1}},
      {"ffn_norm.weight", {"post_attention_layernorm.weight", -1}},
  };
  return kLAYER;
}

std::optional<Naming> naming_of(const std::string& meta) {
  if (auto it = top_names().find(meta); it != top_names().end()) return it->second;
  static const std::regex kLAYER_NAME(R"(layers\.(\d+)\.(.+))");
  std::smatch m;
  if (!std::regex_match(meta, m, kLAYER_NAME)) return std::nullopt;
  auto it = layer_names().find(m[2].str());
  if (it == layer_names().end()) return std::nullopt;
  Naming n = it->second;
  n.hf = "model.layers." + m[1].str() + "." + n.hf;
  return n;
}

std::string text_of(const Dims& d) { return to_string(d); }
std::string file_name(const std::string& path) { return fs::path(path).filename().string(); }

// Meta's interleaved rotary rows (per head: re0, im0, re1, im1, ...) into HF's halves (per head:
// re0, re1, ..., im0, im1, ...): transformers' permute(w, n_heads, dim1, dim2) =
// w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2).
HostTensor permuted(const HostTensor& w, int64_t heads) {
  const int64_t rows = w.shape()[0], head_dim = rows / heads, half = head_dim / 2;
  const size_t row_bytes = static_cast<size_t>(dtype_bytes(w.dtype(), w.shape()[1]));
  HostTensor out(w.dtype(), w.shape());
  const auto* src = static_cast<const std::byte*>(w.data());
  auto* dst = static_cast<std::byte*>(out.data());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < half; ++j)
        std::memcpy(dst + (h * head_dim + i * half + j) * row_bytes,
                    src + (h * head_dim + j * 2 + i) * row_bytes, row_bytes);
  return out;
}

}  // namespace

std::string meta_name_of(const std::string& hf_name) {
  for (const auto& [meta, naming] : top_names())
    if (naming.hf == hf_name) return meta;
  static const std::regex kLAYER_NAME(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch m;
  if (std::regex_match(hf_name, m, kLAYER_NAME))
    for (const auto& [meta, naming] : layer_names())
      if (naming.hf == m[2].str()) return "layers." + m[1].str() + "." + meta;
  return "";
}

bool has_meta_shards(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_regular_file(ec) &&
        std::regex_match(entry.path().filename().string(), kSHARD_FILE))
      return true;
  return false;
}

bool is_meta_llama_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec) || !fs::is_regular_file(fs::path(dir) / "params.json", ec))
    return false;
  try {
    return !has_hf_weights(dir) && has_meta_shards(dir);
  } catch (const fs::filesystem_error&) {
    return false;
  }
}

int64_t meta_ffn_hidden_size(int64_t dim, int64_t multiple_of,
                             std::optional<double> ffn_dim_multiplier) {
  check(multiple_of > 0, ErrorCode::kINVALID_ARGUMENT,
        "multiple_of must be positive, got " + std::to_string(multiple_of));
  // Python's int(2 * hidden_dim / 3) and int(multiplier * hidden_dim): double, truncated.
  auto hidden = static_cast<int64_t>(2.0 * static_cast<double>(4 * dim) / 3.0);
  if (ffn_dim_multiplier)
    hidden = static_cast<int64_t>(*ffn_dim_multiplier * static_cast<double>(hidden));
  return multiple_of * ((hidden + multiple_of - 1) / multiple_of);
}

LlamaConfig meta_params_config(const std::string& text, const std::string& source) {
  const json j = parse_json_object(text, source);
  const JsonFields p(j, source);
  for (const char* key : {"dim", "n_layers", "n_heads", "multiple_of", "norm_eps"}) p.require(key);
  LlamaConfig c;
  c.model_type = "llama";
  c.hidden_act = "silu";
  c.tie_word_embeddings = false;
  c.hidden_size = p.required_int("dim", 1);
  c.num_hidden_layers = p.integer("n_layers", 0, 0);
  c.num_attention_heads = p.required_int("n_heads", 1);
  c.num_key_value_heads = p.integer("n_kv_heads", c.num_attention_heads, 1);
  check(c.num_attention_heads % c.num_key_value_heads == 0, ErrorCode::kINVALID_ARGUMENT,
        source + ": n_heads (" + std::to_string(c.num_attention_heads) +
            ") must be a multiple of n_kv_heads (" + std::to_string(c.num_key_value_heads) + ")");
  check(c.hidden_size % c.num_attention_heads == 0 &&
            (c.hidden_size / c.num_attention_heads) % 2 == 0,
        ErrorCode::kINVALID_ARGUMENT,
        source + ": dim (" + std::to_string(c.hidden_size) + ") must be n_heads (" +
            std::to_string(c.num_attention_heads) + ") times an even head size");
  c.head_dim = c.hidden_size / c.num_attention_heads;
  // Llama 2's params.json says -1: the vocabulary is the tokenizer's (the embedding's rows).
  c.vocab_size = p.integer("vocab_size", -1, -1);
  if (c.vocab_size <= 0) c.vocab_size = 0;
  c.rms_norm_eps = *p.optional_number("norm_eps", true);
  c.intermediate_size = meta_ffn_hidden_size(c.hidden_size, p.required_int("multiple_of", 1),
                                             p.optional_number("ffn_dim_multiplier", true));
  c.rope.theta = p.optional_number("rope_theta", true).value_or(10000.0);
  const bool llama3 = p.boolean("use_scaled_rope");
  if (llama3) {  // llama-models' apply_scaling
    c.rope.type = RopeType::kLLAMA3;
    c.rope.factor = p.optional_number("rope_scaling_factor", true).value_or(8.0);
    c.rope.low_freq_factor = 1.0;
    c.rope.high_freq_factor = 4.0;
    c.rope.original_max_position_embeddings = 8192;
  }
  c.max_position_embeddings =
      p.integer("max_seq_len", llama3 || c.rope.theta >= 500000.0 ? 8192 : 4096, 1);
  if (!llama3) c.rope.original_max_position_embeddings = c.max_position_embeddings;
  c.dtype = DataType::kFLOAT;
  return c;
}

MetaCheckpoint::MetaCheckpoint(const io::CheckpointReader& reader, const std::string& params_text,
                               std::string params_file)
    : dir_(reader.path()),
      params_file_(std::move(params_file)),
      config_(meta_params_config(params_text, params_file_)) {
  const std::string where = "Meta checkpoint " + dir_;
  struct {
    int64_t multiple_of = 0;
    std::optional<double> multiplier;
  } ffn_rule;  // for messages; meta_params_config has checked both
  {
    const json j = json::parse(params_text);
    ffn_rule.multiple_of = j.at("multiple_of").get<int64_t>();
    if (j.contains("ffn_dim_multiplier") && j.at("ffn_dim_multiplier").is_number())
      ffn_rule.multiplier = j.at("ffn_dim_multiplier").get<double>();
  }
  // Shard numbers: 0 .. n-1, each once.
  std::map<int64_t, std::string> by_number;
  for (const std::string& file : reader.files()) {
    std::smatch m;
    const std::string name = file_name(file);
    check(std::regex_match(name, m, kSHARD_FILE), ErrorCode::kINTERNAL,
          where + ": unexpected shard file " + file);
    const auto [it, fresh] = by_number.emplace(std::stoll(m[1].str()), file);
    check(fresh, ErrorCode::kCORRUPT_FILE,
          where + ": " + file_name(it->second) + " and " + name + " are both shard " +
              std::to_string(it->first));
  }
  std::vector<std::string> shards;
  const size_t width = by_number.empty() ? 2 : file_name(by_number.begin()->second).size() - 17;
  for (const auto& [number, file] : by_number) {
    const auto expected = static_cast<int64_t>(shards.size());
    if (number != expected) {
      std::string missing = std::to_string(expected);
      missing.insert(0, missing.size() < width ? width - missing.size() : 0, '0');
      std::string have;
      for (const auto& [n, f] : by_number) have += (have.empty() ? "" : ", ") + file_name(f);
      throw Error(ErrorCode::kNOT_FOUND, where + " has " + have + " but no consolidated." +
                                             missing + ".pth: a model-parallel shard is missing");
    }
    shards.push_back(file);
  }
  const size_t n = shards.size();
  std::unordered_map<std::string, size_t> shard_of;
  for (size_t s = 0; s < n; ++s) shard_of[shards[s]] = s;

  // Group each name's pieces by shard.
  std::map<std::string, std::vector<const io::StoredTensor*>> pieces;
  for (const io::StoredTensor& t : reader.tensors()) {
    auto [it, fresh] = pieces.try_emplace(t.name, n, nullptr);
    if (fresh) names_.push_back(t.name);
    const size_t s = shard_of.at(t.file);
    check(it->second[s] == nullptr, ErrorCode::kCORRUPT_FILE,
          "tensor '" + t.name + "' appears twice in " + t.file);
    it->second[s] = &t;
  }

  for (const std::string& meta : names_) {
    const std::optional<Naming> naming = naming_of(meta);
    if (!naming) continue;  // rope.freqs and the like: listed as unused
    Tensor t{meta, pieces.at(meta), naming->axis, 0, {}};
    const io::StoredTensor* any =
        *std::find_if(t.pieces.begin(), t.pieces.end(), [](auto* p) { return p != nullptr; });
    for (size_t s = 0; s < n; ++s)
      check(t.pieces[s] != nullptr, ErrorCode::kNOT_FOUND,
            where + ": tensor '" + meta + "' is in " + file_name(any->file) + " but not in " +
                file_name(shards[s]) + " (every shard holds every tensor, split or whole)");
    const io::StoredTensor& first = *t.pieces[0];
    for (const io::StoredTensor* piece : t.pieces)
      check(piece->dtype == first.dtype, ErrorCode::kDTYPE_MISMATCH,
            where + ": tensor '" + meta + "' is " +
                std::string(io::element_type_name(first.dtype)) + " in " + file_name(first.file) +
                " but " + std::string(io::element_type_name(piece->dtype)) + " in " +
                file_name(piece->file));
    if (naming->embedding && n > 1 && first.shape.size() == 2 &&
        first.shape[1] == config_.hidden_size)
      t.axis = 0;  // Llama 3's VocabParallelEmbedding splits the vocabulary
    if (n == 1) t.axis = -1;
    const bool even = std::all_of(t.pieces.begin(), t.pieces.end(), [&](const io::StoredTensor* p) {
      return p->shape == first.shape;
    });
    check(even, ErrorCode::kSHAPE_MISMATCH,
          where + ": tensor '" + meta + "' is " +
              (t.axis < 0 ? "replicated" : "split on dim " + std::to_string(t.axis)) +
              ", but the shapes of its " + pieces_text(t) +
              " differ (shards of different model-parallel sizes?)");
    t.shape = first.shape;
    if (t.axis >= 0) {
      check(static_cast<int>(t.shape.size()) == 2, ErrorCode::kSHAPE_MISMATCH,
            where + ": tensor '" + meta + "' should be a matrix, found " + pieces_text(t));
      t.shape[static_cast<size_t>(t.axis)] *= static_cast<int64_t>(n);
    }
    if (naming->permute == Naming::kQ) t.permute_heads = config_.num_attention_heads;
    if (naming->permute == Naming::kK) t.permute_heads = config_.num_key_value_heads;
    tensors_.emplace(naming->hf, std::move(t));
  }

  // What params.json leaves to the tensors: the vocabulary (-1) and the type they are stored in.
  if (auto it = tensors_.find("model.embed_tokens.weight"); it != tensors_.end()) {
    if (config_.vocab_size == 0 && it->second.shape.size() == 2)
      config_.vocab_size = it->second.shape[0];
    const std::optional<DataType> type = io::to_data_type(it->second.pieces[0]->dtype);
    if (type && is_floating(*type)) config_.dtype = *type;
  }
  check(config_.vocab_size > 0, ErrorCode::kNOT_FOUND,
        params_file_ + " gives no vocab_size and " + dir_ +
            " has no tok_embeddings.weight to take it from");

  // Shapes against params.json: first those it gives directly (a wrong shard count shows
  // there), then the FFN, whose size is derived, so that its error can say how.
  const LlamaConfig& c = config_;
  const int64_t d = c.hidden_size, q = c.q_size(), kv = c.kv_size(), ffn = c.intermediate_size;
  const auto expected_shape = [&](const std::string& hf) -> Dims {
    if (hf == "model.embed_tokens.weight" || hf == "lm_head.weight") return {c.vocab_size, d};
    if (hf.ends_with("norm.weight")) return {d};
    if (hf.ends_with("q_proj.weight")) return {q, d};
    if (hf.ends_with("k_proj.weight") || hf.ends_with("v_proj.weight")) return {kv, d};
    if (hf.ends_with("o_proj.weight")) return {d, q};
    if (hf.ends_with("gate_proj.weight") || hf.ends_with("up_proj.weight")) return {ffn, d};
    return {d, ffn};  // down_proj
  };
  const auto is_ffn = [](const std::string& hf) { return hf.find(".mlp.") != std::string::npos; };
  const auto check_shapes = [&](bool ffn_tensors) {  // in checkpoint order
    for (const std::string& meta : names_) {
      const std::optional<Naming> naming = naming_of(meta);
      if (naming && is_ffn(naming->hf) == ffn_tensors)
        check_expected_shape(tensors_.at(naming->hf), expected_shape(naming->hf), naming->hf);
    }
  };
  check_shapes(false);
  if (auto it = tensors_.find("model.layers.0.mlp.gate_proj.weight"); it != tensors_.end()) {
    const Tensor& w1 = it->second;
    check(w1.shape.size() == 2 && w1.shape[0] == ffn, ErrorCode::kSHAPE_MISMATCH,
          params_file_ + ": dim " + std::to_string(d) + ", multiple_of " +
              std::to_string(ffn_rule.multiple_of) + " and ffn_dim_multiplier " +
              (ffn_rule.multiplier ? json(*ffn_rule.multiplier).dump() : std::string("(none)")) +
              " give an FFN size of " + std::to_string(ffn) + " (Meta's FeedForward rule), but '" +
              w1.meta_name + "' merges to " + text_of(w1.shape) + " from " + pieces_text(w1));
  }
  check_shapes(true);
}

std::string MetaCheckpoint::pieces_text(const Tensor& t) const {
  std::string out = std::to_string(t.pieces.size()) + " shard(s): ";
  for (size_t s = 0; s < t.pieces.size(); ++s) {
    if (s) out += ", ";
    out += file_name(t.pieces[s]->file) + " " + text_of(t.pieces[s]->shape);
  }
  return out;
}

void MetaCheckpoint::check_expected_shape(const Tensor& t, const Dims& expected,
                                          const std::string& hf) const {
  if (expected.empty() || t.shape == expected) return;
  throw Error(ErrorCode::kSHAPE_MISMATCH,
              "Meta checkpoint " + dir_ + ": tensor '" + t.meta_name + "' (" + hf + ") merges to " +
                  text_of(t.shape) + " from " + pieces_text(t) + ", but " + params_file_ +
                  " gives " + text_of(expected) +
                  (t.axis >= 0 && t.pieces.size() > 1
                       ? " (were the shards split for another model-parallel size?)"
                       : ""));
}

Weights MetaCheckpoint::weights(const std::string& hf_name, const TensorDesc& desc,
                                std::vector<HostTensor>& keep) const {
  const Tensor& t = tensors_.at(hf_name);
  const io::StoredTensor& first = *t.pieces[0];
  const std::string what = "tensor '" + t.meta_name + "' of Meta checkpoint " + dir_ + " (" +
                           hf_name + ", merged from " + pieces_text(t) + ") is " +
                           std::string(io::element_type_name(first.dtype)) + text_of(t.shape) +
                           "; the model expects " + to_string(desc);
  check(t.shape == desc.dims, ErrorCode::kSHAPE_MISMATCH, what);
  check(io::is_floating(first.dtype) == is_floating(desc.dtype), ErrorCode::kDTYPE_MISMATCH, what);
  // A whole tensor already in the engine's type is a view: nothing to merge, permute or convert.
  if (t.axis < 0 && t.permute_heads == 0 && io::to_data_type(first.dtype) == desc.dtype &&
      first.is_contiguous())
    return Weights(desc.dtype, t.shape, first.data);
  HostTensor out(desc.dtype, t.shape);
  auto* dst = static_cast<std::byte*>(out.data());
  if (t.axis < 0) {
    io::copy_converted(first, dst, desc.dtype);
  } else if (t.axis == 0) {  // row blocks, one after the other
    const int64_t block = dtype_bytes(desc.dtype, first.count());
    for (size_t s = 0; s < t.pieces.size(); ++s)
      io::copy_converted(*t.pieces[s], dst + static_cast<int64_t>(s) * block, desc.dtype);
  } else {  // column blocks: each row of the result is the pieces' rows side by side
    HostTensor piece(desc.dtype, first.shape);
    const int64_t rows = first.shape[0];
    const auto row_bytes = static_cast<size_t>(dtype_bytes(desc.dtype, first.shape[1]));
    for (size_t s = 0; s < t.pieces.size(); ++s) {
      io::copy_converted(*t.pieces[s], piece.data(), desc.dtype);
      const auto* src = static_cast<const std::byte*>(piece.data());
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(dst + (static_cast<size_t>(r) * t.pieces.size() + s) * row_bytes,
                    src + static_cast<size_t>(r) * row_bytes, row_bytes);
    }
  }
  keep.push_back(t.permute_heads ? permuted(out, t.permute_heads) : std::move(out));
  return keep.back().view();
}

std::vector<std::string> MetaCheckpoint::unused(const std::set<std::string>& used) const {
  std::vector<std::string> out;
  for (const std::string& meta : names_) {
    const std::optional<Naming> naming = naming_of(meta);
    if (!naming || !used.count(naming->hf)) out.push_back(meta);
  }
  return out;
}

}  // namespace bindery::models
