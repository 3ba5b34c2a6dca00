// Meta-format Llama checkpoints (params.json + consolidated.NN.pth): the same model as its
// Hugging Face form (tests/fixtures/llama/llama_gqa_meta, made from llama_gqa by
// tools/make_meta_fixtures.py) gives the same engine, refits both ways, is refused with named
// errors when broken, and goes through the CLI wherever a checkpoint directory does.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "bindery/models/meta_llama.h"
#include "io/torch_test_util.h"
#include "models/cli_util.h"
#include "models/golden_util.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::Golden;
using testing::max_abs_diff;

const fs::path kLLAMA = fs::path(BINDERY_SOURCE_DIR) / "tests/fixtures/llama";
const fs::path kHF = kLLAMA / "llama_gqa";
const fs::path kMETA = kLLAMA / "llama_gqa_meta";

Golden golden(const std::string& model) { return testing::load_golden(kLLAMA / model); }

/// Runs `f`, expects a bindery::Error with `code` whose message contains every `needles`.
template <class F>
void expect_error(F&& f, ErrorCode code, std::initializer_list<std::string_view> needles) {
  io::torch_test::expect_error(std::forward<F>(f), code, needles);
}

// One tensor of a shard, as torch.save would write it again (f32 or bf16).
struct ShardTensor {
  std::string name;
  DataType dtype = DataType::kFLOAT;
  Dims shape;
  std::vector<std::byte> bytes;
};
using Shard = std::vector<ShardTensor>;

// The shard's tensors, converted to `as`.
Shard read_shard(const fs::path& file, DataType as = DataType::kFLOAT) {
  const io::CheckpointReader reader = io::CheckpointReader::open(file.string());
  Shard out;
  for (const io::StoredTensor& t : reader.tensors()) {
    const HostTensor v = reader.read(t.name, as);
    const auto* b = static_cast<const std::byte*>(v.data());
    out.push_back({t.name, as, t.shape, {b, b + v.size_bytes()}});
  }
  return out;
}

// A torch.save archive of `shard` (an OrderedDict of tensors, one storage each).
void write_shard(const fs::path& file, const Shard& shard) {
  using namespace io::torch_test;
  PickleBuilder p;
  p.proto().ordered_dict().binput(0).mark();
  for (size_t i = 0; i < shard.size(); ++i) {
    const ShardTensor& t = shard[i];
    const bool bf16 = t.dtype == DataType::kBF16;
    p.str(t.name).global("torch._utils", "_rebuild_tensor_v2").mark();
    p.storage(bf16 ? "BFloat16Storage" : "FloatStorage", std::to_string(i), volume(t.shape))
        .integer(0);
    p.mark();
    for (const int64_t d : t.shape) p.integer(d);
    p.tuple().mark();
    for (const int64_t s : contiguous_strides(t.shape)) p.integer(s);
    p.tuple().boolean(false).ordered_dict().tuple().op('R');
  }
  p.setitems().stop();
  ZipWriter z;
  z.add("archive/data.pkl", p.bytes(), {.descriptor = true});
  z.add("archive/byteorder", to_bytes("little"), {.descriptor = true});
  for (size_t i = 0; i < shard.size(); ++i)
    z.add("archive/data/" + std::to_string(i), shard[i].bytes);
  z.add("archive/version", to_bytes("3\n"), {.descriptor = true});
  const Bytes bytes = z.finish();
  std::ofstream(file, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

// fairscale's split dim of a Meta tensor in Llama 2 (-1: replicated).
int split_dim(const std::string& name) {
  if (name.ends_with("norm.weight")) return -1;
  for (const char* row_parallel : {"wo.weight", "w2.weight", "tok_embeddings.weight"})
    if (name.ends_with(row_parallel)) return 1;
  return 0;
}

// `a` and `b` (row-major matrices of the same type) side by side along `dim`.
ShardTensor concatenated(const ShardTensor& a, const ShardTensor& b, int dim) {
  ShardTensor out = a;
  out.shape[static_cast<size_t>(dim)] += b.shape[static_cast<size_t>(dim)];
  if (dim == 0) {
    out.bytes.insert(out.bytes.end(), b.bytes.begin(), b.bytes.end());
    return out;
  }
  const size_t rows = static_cast<size_t>(a.shape[0]);
  const size_t ra = a.bytes.size() / rows, rb = b.bytes.size() / rows;
  out.bytes.clear();
  for (size_t r = 0; r < rows; ++r) {
    out.bytes.insert(out.bytes.end(), a.bytes.begin() + r * ra, a.bytes.begin() + (r + 1) * ra);
    out.bytes.insert(out.bytes.end(), b.bytes.begin() + r * rb, b.bytes.begin() + (r + 1) * rb);
  }
  return out;
}

// Rows [begin, end) of a row-major matrix.
ShardTensor rows_of(const ShardTensor& t, int64_t begin, int64_t end) {
  ShardTensor out = t;
  const size_t row = t.bytes.size() / static_cast<size_t>(t.shape[0]);
  out.shape[0] = end - begin;
  out.bytes.assign(t.bytes.begin() + begin * row, t.bytes.begin() + end * row);
  return out;
}

json read_json(const fs::path& file) {
  std::ifstream in(file);
  return json::parse(in);
}

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream(file, std::ios::binary) << text;
}

using testing::read_text;

class MetaLoader : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(BINDERY_BINARY_DIR) / "tests/meta_loader" /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  // A copy of llama_gqa_meta under `name`, each shard's tensors passed through `edit` (given the
  // shard's index; it rewrites them with write_shard when it returns true).
  fs::path meta_copy(const std::string& name,
                     const std::function<bool(int, Shard&)>& edit = {}) const {
    const fs::path out = dir_ / name;
    fs::create_directories(out);
    fs::copy_file(kMETA / "params.json", out / "params.json");
    for (int i = 0; i < 2; ++i) {
      const std::string file = "consolidated.0" + std::to_string(i) + ".pth";
      Shard shard = read_shard(kMETA / file);
      if (edit && edit(i, shard))
        write_shard(out / file, shard);
      else
        fs::copy_file(kMETA / file, out / file);
    }
    return out;
  }

  // Rewrites params.json of `dir` through `edit`.
  static void edit_params(const fs::path& dir, const std::function<void(json&)>& edit) {
    json p = read_json(dir / "params.json");
    edit(p);
    write_text(dir / "params.json", p.dump());
  }

  fs::path dir_;
};

// Every golden prompt: logits within 1e-4 of transformers, greedy tokens identical.
void expect_goldens(Engine& engine, const std::string& model) {
  const Golden g = golden(model);
  Generator gen(engine);
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    SCOPED_TRACE(model + " prompt " + std::to_string(i));
    EXPECT_LE(max_abs_diff(gen.logits(g.prompts[i]), g.logits[i]), 1e-4f);
    const auto fresh = static_cast<int64_t>(g.greedy[i].size() - g.prompts[i].size());
    EXPECT_EQ(gen.generate({g.prompts[i]}, {.max_new_tokens = fresh})[0], g.greedy[i]);
  }
}

// Every parameter of `loaded` holds the HF checkpoint's tensor (converted to its type), bit for
// bit.
void expect_hf_tensors(const LoadedLlama& loaded) {
  const io::CheckpointReader hf = io::CheckpointReader::open(kHF.string());
  const auto params = loaded.model->named_parameters();
  ASSERT_EQ(params.size(), hf.tensors().size());
  for (const auto& p : params) {
    SCOPED_TRACE(p.name);
    const Weights got = p.value.value();
    const HostTensor want = hf.read(p.name, got.dtype);
    ASSERT_EQ(got.shape, want.shape());
    EXPECT_EQ(std::memcmp(got.values, want.data(), static_cast<size_t>(want.size_bytes())), 0);
  }
}

TEST_F(MetaLoader, DetectsMetaDirectories) {
  EXPECT_TRUE(is_meta_llama_checkpoint(kMETA.string()));
  EXPECT_FALSE(is_meta_llama_checkpoint(kHF.string()));
  EXPECT_FALSE(is_meta_llama_checkpoint((dir_ / "nothing").string()));
  // params.json without shards, and shards beside HF weights (which win), are not Meta.
  write_text(dir_ / "params.json", "{}");
  EXPECT_FALSE(is_meta_llama_checkpoint(dir_.string()));
  const fs::path both = meta_copy("both");
  fs::copy_file(kHF / "model.safetensors", both / "model.safetensors");
  EXPECT_FALSE(is_meta_llama_checkpoint(both.string()));
}

// The merged, permuted tensors are the HF checkpoint's, bit for bit, under HF names.
TEST_F(MetaLoader, MetaCheckpointLoadsAsItsHfConversion) {
  const LoadedLlama meta = load_from_meta_llama(kMETA.string());
  const LoadedLlama hf = load_from_hf_checkpoint(kHF.string());
  const LlamaConfig& c = meta.config;
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, hf.config.vocab_size);
  EXPECT_EQ(c.hidden_size, hf.config.hidden_size);
  EXPECT_EQ(c.intermediate_size, hf.config.intermediate_size);
  EXPECT_EQ(c.num_hidden_layers, hf.config.num_hidden_layers);
  EXPECT_EQ(c.num_attention_heads, hf.config.num_attention_heads);
  EXPECT_EQ(c.num_key_value_heads, hf.config.num_key_value_heads);
  EXPECT_EQ(c.head_dim, hf.config.head_dim);
  EXPECT_EQ(c.rms_norm_eps, hf.config.rms_norm_eps);
  EXPECT_EQ(c.rope.type, RopeType::kDEFAULT);
  EXPECT_EQ(c.rope.theta, hf.config.rope.theta);
  EXPECT_EQ(c.tie_word_embeddings, false);
  EXPECT_EQ(c.dtype, DataType::kFLOAT);
  EXPECT_EQ(meta.checkpoint->format(), io::CheckpointFormat::kMETA);
  EXPECT_TRUE(meta.unused.empty());

  expect_hf_tensors(meta);
  // load_from_hf_checkpoint (and so build_llama) detects the format by itself.
  EXPECT_EQ(load_from_hf_checkpoint(kMETA.string()).checkpoint->format(),
            io::CheckpointFormat::kMETA);
  // In bf16 the merge converts on the way.
  const LoadedLlama bf16 = load_from_meta_llama(kMETA.string(), {}, DataType::kBF16);
  EXPECT_EQ(bf16.model->parameter("model.layers.1.self_attn.k_proj.weight").value().dtype,
            DataType::kBF16);
  expect_hf_tensors(bf16);
}

// One shard: nothing to merge, so every tensor but q and k (permuted) is a view of the file.
TEST_F(MetaLoader, SingleShardIsViewedInPlace) {
  const fs::path dir = dir_ / "one";
  fs::create_directories(dir);
  fs::copy_file(kMETA / "params.json", dir / "params.json");
  const Shard a = read_shard(kMETA / "consolidated.00.pth");
  const Shard b = read_shard(kMETA / "consolidated.01.pth");
  Shard whole;
  for (size_t i = 0; i < a.size(); ++i)
    whole.push_back(split_dim(a[i].name) < 0 ? a[i]
                                             : concatenated(a[i], b[i], split_dim(a[i].name)));
  write_shard(dir / "consolidated.00.pth", whole);
  const LoadedLlama loaded = load_from_meta_llama(dir.string());
  expect_hf_tensors(loaded);
  for (const auto& p : loaded.model->named_parameters()) {
    const bool rotary = p.name.ends_with("q_proj.weight") || p.name.ends_with("k_proj.weight");
    EXPECT_EQ(p.value.owns_value(), rotary) << p.name;
  }
}

// Llama 3's VocabParallelEmbedding splits tok_embeddings on the vocabulary (dim 0), Llama 2's
// ParallelEmbedding on dim 1: the loader tells them apart by the pieces' shapes.
TEST_F(MetaLoader, VocabParallelEmbeddingIsMergedOnDim0) {
  const Shard a = read_shard(kMETA / "consolidated.00.pth");
  const Shard b = read_shard(kMETA / "consolidated.01.pth");
  ShardTensor embedding;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name == "tok_embeddings.weight") embedding = concatenated(a[i], b[i], 1);
  ASSERT_EQ(embedding.shape, (Dims{256, 64}));
  const fs::path dir = meta_copy("vocab_parallel", [&](int shard, Shard& tensors) {
    for (ShardTensor& t : tensors)
      if (t.name == "tok_embeddings.weight") t = rows_of(embedding, shard * 128, shard * 128 + 128);
    return true;
  });
  expect_hf_tensors(load_from_meta_llama(dir.string()));
}

// Meta ships bf16 shards: the config's dtype is theirs, and the engine is the one built from
// the HF checkpoint in bf16.
TEST_F(MetaLoader, Bf16ShardsBuildTheHfBf16Engine) {
  const fs::path dir = dir_ / "bf16";
  fs::create_directories(dir);
  fs::copy_file(kMETA / "params.json", dir / "params.json");
  for (const char* file : {"consolidated.00.pth", "consolidated.01.pth"})
    write_shard(dir / file, read_shard(kMETA / file, DataType::kBF16));
  EXPECT_EQ(load_from_meta_llama(dir.string()).config.dtype, DataType::kBF16);
  auto meta = Engine::create(build_llama(dir.string(), {.max_seq_len = 256}));
  EXPECT_EQ(meta->metadata().properties.at("model.dtype"), "bf16");
  auto hf =
      Engine::create(build_llama(kHF.string(), {.dtype = DataType::kBF16, .max_seq_len = 256}));
  Generator from_meta(*meta), from_hf(*hf);
  for (const auto& prompt : golden("llama_gqa").prompts)
    EXPECT_EQ(max_abs_diff(from_meta.logits(prompt), from_hf.logits(prompt)), 0.0f);
}

TEST_F(MetaLoader, MetaAndHfEnginesGiveIdenticalLogitsAndTokens) {
  auto meta = Engine::create(build_llama(kMETA.string(), {.max_seq_len = 256}));
  auto hf = Engine::create(build_llama(kHF.string(), {.max_seq_len = 256}));
  const Golden g = golden("llama_gqa");
  Generator from_meta(*meta), from_hf(*hf);
  float worst = 0;
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    const HostTensor a = from_meta.logits(g.prompts[i]), b = from_hf.logits(g.prompts[i]);
    worst = std::max(worst, max_abs_diff(a, b));
    EXPECT_LE(max_abs_diff(a, g.logits[i]), 1e-4f);
    const auto fresh = static_cast<int64_t>(g.greedy[i].size() - g.prompts[i].size());
    const auto tokens = from_meta.generate({g.prompts[i]}, {.max_new_tokens = fresh})[0];
    EXPECT_EQ(tokens, from_hf.generate({g.prompts[i]}, {.max_new_tokens = fresh})[0]);
    EXPECT_EQ(tokens, g.greedy[i]);
  }
  RecordProperty("meta_vs_hf_max_abs_diff", std::to_string(worst));
  EXPECT_LE(worst, 1e-5f);
  EXPECT_EQ(worst, 0.0f) << "the same weights in the same engine should give the same bits";
}

TEST_F(MetaLoader, RefitsFromMetaIntoHfEngineAndBack) {
  // Built from Meta, refit from HF llama_gqa_b.
  auto engine = Engine::create(build_llama(kMETA.string(), {.refit = true}));
  const RefitSummary s = refit_from_hf_checkpoint(*engine, (kLLAMA / "llama_gqa_b").string());
  EXPECT_GT(s.slots_changed, 0);
  expect_goldens(*engine, "llama_gqa_b");
  // Built from HF llama_gqa_b (stripped), refit from Meta: llama_gqa's goldens.
  auto other = Engine::create(build_llama((kLLAMA / "llama_gqa_b").string(), {.strip = true}));
  refit_from_hf_checkpoint(*other, kMETA.string());
  expect_goldens(*other, "llama_gqa");
}

// The architecture check reads params.json for a Meta directory.
TEST_F(MetaLoader, RefitFromMetaComparesItsParamsConfig) {
  auto qwen = Engine::create(build_llama((kLLAMA / "qwen2").string(), {.refit = true}));
  expect_error([&] { refit_from_hf_checkpoint(*qwen, kMETA.string()); },
               ErrorCode::kINVALID_ARGUMENT,
               {"llama_gqa_meta", "params.json differs in", "model_type", "attention_bias"});
  auto tied = Engine::create(build_llama((kLLAMA / "llama3").string(), {.refit = true}));
  expect_error([&] { refit_from_hf_checkpoint(*tied, kMETA.string()); },
               ErrorCode::kINVALID_ARGUMENT, {"tie_word_embeddings", "rope_theta"});
}

TEST_F(MetaLoader, ParamsJsonGivesTheConfig) {
  // Llama 3.1 8B's params.json.
  const LlamaConfig c = meta_params_config(
      R"({"dim": 4096, "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "n_heads": 32,
          "n_kv_heads": 8, "n_layers": 32, "norm_eps": 1e-05, "rope_theta": 500000.0,
          "use_scaled_rope": true, "vocab_size": 128256})",
      "params.json");
  EXPECT_EQ(c.intermediate_size, 14336);  // the HF conversion's intermediate_size
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.rope.type, RopeType::kLLAMA3);
  EXPECT_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rope.factor, 8.0);
  EXPECT_EQ(c.rope.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.hidden_act, "silu");
  // Llama 2 7B's: no n_kv_heads, vocab_size -1 (taken from tok_embeddings at load).
  const LlamaConfig l2 = meta_params_config(
      R"({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06,
          "vocab_size": -1})",
      "params.json");
  EXPECT_EQ(l2.intermediate_size, 11008);
  EXPECT_EQ(l2.num_key_value_heads, 32);
  EXPECT_EQ(l2.vocab_size, 0);
  EXPECT_EQ(l2.rope.type, RopeType::kDEFAULT);
  EXPECT_EQ(l2.rope.theta, 10000.0);
  EXPECT_EQ(l2.max_position_embeddings, 4096);
  // Llama 2 70B's FFN.
  EXPECT_EQ(meta_ffn_hidden_size(8192, 4096, 1.3), 28672);
  // The fixture's: dim 64 -> 170 -> int(0.75 * 170) = 127 -> 128.
  EXPECT_EQ(meta_ffn_hidden_size(64, 32, 0.75), 128);
  EXPECT_EQ(meta_ffn_hidden_size(64, 32, std::nullopt), 192);
}

TEST_F(MetaLoader, VocabSizeMinusOneIsTakenFromTheEmbedding) {
  const fs::path dir = meta_copy("vocab");
  edit_params(dir, [](json& p) { p["vocab_size"] = -1; });
  EXPECT_EQ(load_from_meta_llama(dir.string()).config.vocab_size, 256);
}

// Each error names the file and the thing that is wrong.
TEST_F(MetaLoader, MissingShardIsNamed) {
  const fs::path dir = dir_ / "gap";
  fs::create_directories(dir);
  fs::copy_file(kMETA / "params.json", dir / "params.json");
  fs::copy_file(kMETA / "consolidated.00.pth", dir / "consolidated.00.pth");
  fs::copy_file(kMETA / "consolidated.01.pth", dir / "consolidated.02.pth");
  for (const auto& load : std::vector<std::function<void()>>{
           [&] { load_from_meta_llama(dir.string()); },
           [&] { build_llama(dir.string()); },
       })
    expect_error(load, ErrorCode::kNOT_FOUND,
                 {"consolidated.00.pth, consolidated.02.pth but no consolidated.01.pth",
                  "shard is missing", dir.string()});
}

TEST_F(MetaLoader, TensorMissingInOneShardIsNamed) {
  const fs::path dir = meta_copy("missing_tensor", [](int shard, Shard& tensors) {
    if (shard != 1) return false;
    std::erase_if(tensors,
                  [](const ShardTensor& t) { return t.name == "layers.1.attention.wk.weight"; });
    return true;
  });
  expect_error([&] { load_from_meta_llama(dir.string()); }, ErrorCode::kNOT_FOUND,
               {"'layers.1.attention.wk.weight' is in consolidated.00.pth but not in "
                "consolidated.01.pth"});
}

TEST_F(MetaLoader, TensorMissingInEveryShardIsNamedBothWays) {
  const fs::path dir = meta_copy("no_output", [](int, Shard& tensors) {
    std::erase_if(tensors, [](const ShardTensor& t) { return t.name == "output.weight"; });
    return true;
  });
  expect_error([&] { load_from_meta_llama(dir.string()); }, ErrorCode::kNOT_FOUND,
               {"lacks 1 tensor(s) the model needs: 'lm_head.weight' (Meta's names: "
                "'output.weight')"});
  auto engine = Engine::create(build_llama(kHF.string(), {.refit = true}));
  expect_error([&] { refit_from_hf_checkpoint(*engine, dir.string()); }, ErrorCode::kNOT_FOUND,
               {"'lm_head.weight' (Meta's names: 'output.weight')"});
}

TEST_F(MetaLoader, UnevenSplitIsNamed) {
  const fs::path dir = meta_copy("uneven", [](int shard, Shard& tensors) {
    if (shard != 1) return false;
    for (ShardTensor& t : tensors)
      if (t.name == "layers.0.attention.wq.weight") t = rows_of(t, 0, 16);  // of [32, 64]
    return true;
  });
  expect_error([&] { load_from_meta_llama(dir.string()); }, ErrorCode::kSHAPE_MISMATCH,
               {"'layers.0.attention.wq.weight' is split on dim 0",
                "2 shard(s): consolidated.00.pth [32, 64], consolidated.01.pth [16, 64] differ"});
}

TEST_F(MetaLoader, ShardsOfAnotherModelParallelSizeAreNamed) {
  // A third shard: every piece is even, but they merge to shapes params.json does not give.
  const fs::path dir = meta_copy("three");
  fs::copy_file(kMETA / "consolidated.01.pth", dir / "consolidated.02.pth");
  expect_error([&] { load_from_meta_llama(dir.string()); }, ErrorCode::kSHAPE_MISMATCH,
               {"'tok_embeddings.weight'", "merges to [256, 96] from 3 shard(s)",
                "params.json gives [256, 64]", "another model-parallel size"});
}

TEST_F(MetaLoader, FfnSizeMismatchIsNamed) {
  const fs::path dir = meta_copy("ffn");
  edit_params(dir, [](json& p) { p.erase("ffn_dim_multiplier"); });
  expect_error([&] { load_from_meta_llama(dir.string()); }, ErrorCode::kSHAPE_MISMATCH,
               {"params.json", "multiple_of 32", "ffn_dim_multiplier (none)", "FFN size of 192",
                "'layers.0.feed_forward.w1.weight' merges to [128, 64]"});
}

TEST_F(MetaLoader, MissingParamsFieldsAreNamed) {
  for (const char* field : {"dim", "n_layers", "n_heads", "multiple_of", "norm_eps"}) {
    SCOPED_TRACE(field);
    const fs::path dir = meta_copy(std::string("no_") + field);
    edit_params(dir, [&](json& p) { p.erase(field); });
    expect_error([&] { build_llama(dir.string()); }, ErrorCode::kNOT_FOUND,
                 {(dir / "params.json").string(), "required field '" + std::string(field) + "'"});
  }
  const fs::path dir = meta_copy("bad_type");
  edit_params(dir, [](json& p) { p["n_kv_heads"] = "two"; });
  expect_error([&] { load_from_meta_llama(dir.string()); }, ErrorCode::kINVALID_ARGUMENT,
               {"params.json", "'n_kv_heads'"});
  // No params.json at all: not a Meta checkpoint (and, without config.json, no HF one either).
  fs::remove(dir / "params.json");
  expect_error([&] { load_from_meta_llama(dir.string()); }, ErrorCode::kNOT_FOUND,
               {"not a Meta checkpoint", "params.json"});
  expect_error([&] { build_llama(dir.string()); }, ErrorCode::kNOT_FOUND,
               {"consolidated.NN.pth shards but neither params.json", "config.json"});
}

// ---- the CLI ----

using Result = testing::CliResult;

class MetaCli : public MetaLoader {
 protected:
  static std::string quoted(const std::string& s) { return testing::quoted(s); }
  static std::string token_list(const std::vector<int32_t>& t) { return testing::token_list(t); }
  Result run(const std::string& args) const { return testing::run_cli(args, dir_); }
  std::string ok(const std::string& args) const { return testing::run_cli_ok(args, dir_); }

  // logits and generate of `plan` against `model`'s goldens.
  void expect_cli_goldens(const std::string& model, const fs::path& plan,
                          const std::string& extra = "") const {
    const Golden g = golden(model);
    for (size_t i = 0; i < g.prompts.size(); ++i) {
      SCOPED_TRACE(model + " prompt " + std::to_string(i));
      const json j = json::parse(ok("logits " + quoted(plan.string()) + " --tokens " +
                                    token_list(g.prompts[i]) + " --json " + extra));
      const auto& rows = j.at("logits");
      HostTensor t(DataType::kFLOAT, g.logits[i].shape());
      ASSERT_EQ(static_cast<int64_t>(rows.size()), t.shape()[0]);
      for (size_t r = 0; r < rows.size(); ++r)
        for (size_t v = 0; v < rows[r].size(); ++v)
          t.data_as<float>()[r * rows[r].size() + v] = rows[r][v].get<float>();
      EXPECT_LE(max_abs_diff(t, g.logits[i]), 1e-4f);
      const auto fresh = g.greedy[i].size() - g.prompts[i].size();
      const json gen = json::parse(ok("generate " + quoted(plan.string()) + " --tokens " +
                                      token_list(g.prompts[i]) + " --max-new-tokens " +
                                      std::to_string(fresh) + " --json " + extra));
      EXPECT_EQ(gen.at("tokens").get<std::vector<int32_t>>(), g.greedy[i]);
    }
  }
};

TEST_F(MetaCli, BuildFromMetaDirectoryGivesHfGoldens) {
  const fs::path plan = dir_ / "meta.plan";
  const std::string said = ok("build " + quoted(kMETA.string()) + " -o " + quoted(plan.string()));
  EXPECT_NE(said.find("built "), std::string::npos) << said;
  expect_cli_goldens("llama_gqa", plan);
}

TEST_F(MetaCli, RefitFromAndWeightsAcceptMetaDirectories) {
  const fs::path plan = dir_ / "b.plan", stripped = dir_ / "stripped.plan";
  ok("build " + quoted((kLLAMA / "llama_gqa_b").string()) + " --refit -o " + quoted(plan.string()));
  ok("refit " + quoted(plan.string()) + " --from " + quoted(kMETA.string()));
  expect_cli_goldens("llama_gqa", plan);
  ok("build " + quoted((kLLAMA / "llama_gqa_b").string()) + " --strip -o " +
     quoted(stripped.string()));
  expect_cli_goldens("llama_gqa", stripped, "--weights " + quoted(kMETA.string()));
  // A broken Meta directory fails the refit with its named error, leaving the plan alone.
  const fs::path gap = dir_ / "gap";
  fs::create_directories(gap);
  fs::copy_file(kMETA / "params.json", gap / "params.json");
  fs::copy_file(kMETA / "consolidated.01.pth", gap / "consolidated.01.pth");
  const std::string before = read_text(plan);
  const Result r = run("refit " + quoted(plan.string()) + " --from " + quoted(gap.string()));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no consolidated.00.pth"), std::string::npos) << r.err;
  EXPECT_EQ(read_text(plan), before);
}

}  // namespace
}  // namespace bindery::models
