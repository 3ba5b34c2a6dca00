#pragma once
// Helpers for the plan tests: a hand-made plan that uses every layer params alternative and
// every recipe op, a field-by-field comparison, and an independent writer of plan images so
// tests can build files with valid checksums around damaged content.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "bindery/error.h"
#include "bindery/plan.h"
#include "core/hash.h"

namespace bindery::plan_test {

using Bytes = std::vector<std::byte>;
using nlohmann::json;

inline Dims dims(std::initializer_list<int64_t> d) { return Dims(d); }

inline Slot make_slot(std::string name, DataType dtype, Dims shape, int64_t offset, bool refittable,
                      Recipe recipe) {
  Slot s;
  s.name = std::move(name);
  s.desc = {dtype, std::move(shape)};
  s.offset = offset;
  s.size_bytes = dtype_bytes(dtype, volume(s.desc.dims));
  s.refittable = refittable;
  s.recipe = std::move(recipe);
  return s;
}

inline RecipeStep step(RecipeOp op, std::vector<int> args, int axis = 0, Dims d = {},
                       DataType dtype = DataType::kFLOAT, float epsilon = 0.f) {
  RecipeStep s;
  s.op = op;
  s.args = std::move(args);
  s.axis = axis;
  s.dims = std::move(d);
  s.dtype = dtype;
  s.epsilon = epsilon;
  return s;
}

/// A plan that exercises every field: all 17 layer types (16 params alternatives), every
/// RecipeOp, refittable and baked slots, optional hashes present and absent, NaN/inf floats.
inline PlanMetadata sample_metadata() {
  PlanMetadata m;
  m.flags.set(BuilderFlag::kREFIT);
  m.flags.set(BuilderFlag::kFP16);
  m.weights_version = 0xfedcba9876543210ull;  // needs all 64 bits
  m.properties = {{"model.family", "llama"}, {"model.config", "{\"vocab_size\": 8}"}};
  const auto source = [&](std::string name, DataType t, Dims d, bool refit,
                          std::optional<uint64_t> hash = std::nullopt) {
    m.sources.push_back({std::move(name), {t, std::move(d)}, refit, hash});
  };
  source("w.a", DataType::kFLOAT, {4, 8}, true, 0x0123456789abcdefull);
  source("w.b", DataType::kFLOAT, {4, 8}, true);
  source("conv.w", DataType::kFLOAT, {4, 2, 3, 3}, true);
  source("bn.scale", DataType::kFLOAT, {4}, true);
  source("bn.bias", DataType::kFLOAT, {4}, true);
  source("bn.mean", DataType::kFLOAT, {4}, true);
  source("bn.var", DataType::kFLOAT, {4}, true, 0xffffffffffffffffull);
  source("frozen.w", DataType::kHALF, {16}, false);

  // Slots (offsets are the builder's: packed in order, each aligned to kBLOB_ALIGNMENT).
  m.slots.push_back(make_slot(
      "qkv", DataType::kHALF, {8, 8}, 0, true,
      {{"w.a", "w.b"},
       {step(RecipeOp::kSOURCE, {0}), step(RecipeOp::kSOURCE, {1}),
        step(RecipeOp::kCONCAT, {0, 1}, 0), step(RecipeOp::kCAST, {2}, 0, {}, DataType::kHALF)}}));
  m.slots.push_back(make_slot(
      "conv.w.folded", DataType::kFLOAT, {4, 2, 3, 3}, 256, true,
      {{"conv.w", "bn.scale", "bn.var"},
       {step(RecipeOp::kSOURCE, {0}), step(RecipeOp::kSOURCE, {1}), step(RecipeOp::kSOURCE, {2}),
        step(RecipeOp::kFOLD_BN_KERNEL, {0, 1, 2}, 0, {}, DataType::kFLOAT, 1e-5f)}}));
  m.slots.push_back(
      make_slot("conv.b.folded", DataType::kFLOAT, {4}, 768, true,
                {{"bn.scale", "bn.bias", "bn.mean", "bn.var"},
                 {step(RecipeOp::kSOURCE, {0}), step(RecipeOp::kSOURCE, {1}),
                  step(RecipeOp::kSOURCE, {2}), step(RecipeOp::kSOURCE, {3}),
                  step(RecipeOp::kFOLD_BN_BIAS, {0, 1, 2, 3}, 0, {}, DataType::kFLOAT, 1e-3f)}}));
  m.slots.push_back(make_slot(
      "w.t", DataType::kFLOAT, {8, 4}, 1024, true,
      {{"w.a"},
       {step(RecipeOp::kSOURCE, {0}), step(RecipeOp::kTRANSPOSE, {0}, 0, {1, 0}),
        step(RecipeOp::kSLICE, {1}, 0, {0, 8}), step(RecipeOp::kRESHAPE, {2}, 0, {8, 4})}}));
  m.slots.push_back(make_slot("frozen", DataType::kHALF, {16}, 1280, false, {}));
  m.slots.push_back(make_slot("baked.i8", DataType::kINT8, {300}, 1536, false, {}));
  m.slots[0].checksum = 0x8000000000000001ull;
  m.slots[5].checksum = 42;
  m.blob_size = 1536 + 300;

  // Graph: tensors 0..5 are weights (one per slot), 6 the input, 7.. activations.
  Graph& g = m.graph;
  for (size_t i = 0; i < m.slots.size(); ++i)
    g.tensors.push_back(
        {m.slots[i].name, m.slots[i].desc, TensorKind::kWEIGHT, static_cast<int>(i)});
  g.tensors.push_back({"x", {DataType::kFLOAT, {-1, 8}}, TensorKind::kINPUT, -1});
  const auto add = [&](std::string name, LayerType type, LayerParams p, std::vector<int> in) {
    const int out = static_cast<int>(g.tensors.size());
    g.tensors.push_back({name + ":0", {DataType::kFLOAT, {-1, 8}}, TensorKind::kACTIVATION});
    g.nodes.push_back({std::move(name), type, std::move(p), std::move(in), {out}});
    return out;
  };
  int t = add("const", LayerType::kCONSTANT, ConstantParams{"w.a"}, {});
  t = add("mm", LayerType::kMATMUL, MatMulParams{false, true}, {6, 0});
  t = add("add", LayerType::kELEMENTWISE, ElementwiseParams{ElementwiseOp::kPOW}, {t, 6});
  t = add("gelu", LayerType::kUNARY, UnaryParams{UnaryOp::kGELU_TANH}, {t});
  t = add("softmax", LayerType::kSOFTMAX, SoftmaxParams{-2}, {t});
  t = add("reduce", LayerType::kREDUCE, ReduceParams{ReduceOp::kAVG, {-1, 0}, true}, {t});
  t = add("rms", LayerType::kRMSNORM, NormParams{1e-6f}, {t, 3});
  t = add("ln", LayerType::kLAYERNORM, NormParams{1e-5f}, {t, 3, -1});  // bias absent
  t = add("gather", LayerType::kGATHER, GatherParams{1, 4096, true}, {t, 6});
  t = add("reshape", LayerType::kRESHAPE, ReshapeParams{{0, -1, 2}}, {t});
  t = add("transpose", LayerType::kTRANSPOSE, TransposeParams{{2, 0, 1}}, {t});
  t = add("concat", LayerType::kCONCAT, ConcatParams{-1}, {t, t});
  t = add("slice", LayerType::kSLICE, SliceParams{{0, -3}, {2, 3}, {1, 2}}, {t});
  t = add("cast", LayerType::kCAST, CastParams{DataType::kBF16}, {t});
  ConvParams conv;
  conv.stride = {2, 1};
  conv.padding = {1, 0};
  conv.dilation = {1, 3};
  conv.groups = 2;
  conv.epilogue.push_back({true, UnaryOp::kSILU, ElementwiseOp::kMAX, {}});
  conv.epilogue.push_back({false,
                           UnaryOp::kRELU,
                           ElementwiseOp::kMIN,
                           {6.f, -0.f, 1e-30f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), 3.4028235e38f}});
  t = add("conv", LayerType::kCONVOLUTION, conv, {t, 1, 2});
  t = add("bn", LayerType::kBATCHNORM, BatchNormParams{1e-3f}, {t, 2, 2, 2, 2});
  t = add("pool", LayerType::kPOOLING,
          PoolingParams{PoolingType::kAVERAGE, {3, 3}, {1, 2}, {1, 1}, true}, {t});
  // Decoder ops (their params only: the graph is never run).
  add("rope", LayerType::kROTARY,
      RotaryParams{2, 8, {1.0f, 0.125f, 1e-3f}, 1.25f, 2.0f, 500000.0f, 4096}, {6, 6, -1});
  add("attn", LayerType::kATTENTION, AttentionParams{4, 2, 8, 0.35355339f, 16, 2048, 3},
      {6, 6, 6, 6, 6});
  add("moe", LayerType::kMOE, MoeParams{8, 2, 14336, UnaryOp::kGELU_TANH, false}, {6, 6, 0, 1});
  add("int4", LayerType::kMATMUL_INT4, Int4MatmulParams{4096, 11008, 32, 0}, {6, 0, 1, 2, 6});
  add("all_reduce", LayerType::kALL_REDUCE, CollectiveParams{4, -1}, {6});
  add("all_gather", LayerType::kALL_GATHER, CollectiveParams{8, 1}, {6});
  g.tensors[static_cast<size_t>(t)].is_output = true;
  g.tensors[7].is_debug = true;
  g.inputs = {6};
  g.outputs = {t};

  m.report.push_back({"fusion", "conv + bn folded", {"conv.w", "bn.scale"}});
  m.report.push_back({"given_up", "ünïcödé ✓ \"quoted\"\n", {}});
  return m;
}

/// The blob for `m`: every byte a function of its position, so misplaced bytes show.
inline HostTensor sample_blob(const PlanMetadata& m) {
  HostTensor blob(DataType::kUINT8, {m.blob_size});
  auto* p = blob.data_as<uint8_t>();
  for (int64_t i = 0; i < m.blob_size; ++i) p[i] = static_cast<uint8_t>(i * 31 + 7);
  return blob;
}

inline Plan sample_plan() {
  PlanMetadata m = sample_metadata();
  HostTensor blob = sample_blob(m);
  return Plan(std::move(m), std::move(blob));
}

// ---- comparison, field by field ----

inline bool same_float(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y || (std::isnan(a) && std::isnan(b));
}

inline auto fields(const ConstantParams& p) { return std::tie(p.weights_name); }
inline auto fields(const MatMulParams& p) { return std::tie(p.transpose_a, p.transpose_b); }
inline auto fields(const ElementwiseParams& p) { return std::tie(p.op); }
inline auto fields(const UnaryParams& p) { return std::tie(p.op); }
inline auto fields(const SoftmaxParams& p) { return std::tie(p.axis); }
inline auto fields(const ReduceParams& p) { return std::tie(p.op, p.axes, p.keep_dims); }
inline auto fields(const NormParams& p) { return std::tie(p.epsilon); }
inline auto fields(const GatherParams& p) {
  return std::tie(p.axis, p.index_offset, p.zero_out_of_range);
}
inline auto fields(const CollectiveParams& p) { return std::tie(p.group_size, p.axis); }
inline auto fields(const ReshapeParams& p) { return std::tie(p.shape); }
inline auto fields(const TransposeParams& p) { return std::tie(p.perm); }
inline auto fields(const ConcatParams& p) { return std::tie(p.axis); }
inline auto fields(const SliceParams& p) { return std::tie(p.start, p.size, p.stride); }
inline auto fields(const CastParams& p) { return std::tie(p.to); }
inline auto fields(const ConvParams& p) {
  return std::tie(p.stride, p.padding, p.dilation, p.groups);  // epilogue compared apart
}
inline auto fields(const BatchNormParams& p) { return std::tie(p.epsilon); }
inline auto fields(const PoolingParams& p) {
  return std::tie(p.type, p.window, p.stride, p.padding, p.count_include_pad);
}
inline auto fields(const RotaryParams& p) {
  return std::tie(p.num_heads, p.head_dim, p.inv_freq, p.attention_factor, p.dynamic_factor,
                  p.theta, p.dynamic_max_positions);
}
inline auto fields(const AttentionParams& p) {
  return std::tie(p.num_heads, p.num_kv_heads, p.head_dim, p.scale, p.sliding_window, p.max_seq_len,
                  p.cache_index);
}
inline auto fields(const Int4MatmulParams& p) {
  return std::tie(p.in_features, p.out_features, p.group_count, p.zero_offset);
}
inline auto fields(const MoeParams& p) {
  return std::tie(p.num_experts, p.top_k, p.ffn_size, p.activation, p.normalize_top_k);
}

inline void expect_same_params(const LayerParams& a, const LayerParams& b, const std::string& at) {
  ASSERT_EQ(a.index(), b.index()) << at;
  std::visit(
      [&](const auto& pa) {
        using P = std::decay_t<decltype(pa)>;
        const P& pb = std::get<P>(b);
        EXPECT_TRUE(fields(pa) == fields(pb)) << at;
        if constexpr (std::is_same_v<P, ConvParams>) {
          ASSERT_EQ(pa.epilogue.size(), pb.epilogue.size()) << at;
          for (size_t i = 0; i < pa.epilogue.size(); ++i) {
            const EpilogueStep& x = pa.epilogue[i];
            const EpilogueStep& y = pb.epilogue[i];
            EXPECT_EQ(x.is_unary, y.is_unary) << at;
            EXPECT_EQ(x.unary, y.unary) << at;
            EXPECT_EQ(x.binary, y.binary) << at;
            ASSERT_EQ(x.constant.size(), y.constant.size()) << at;
            for (size_t k = 0; k < x.constant.size(); ++k)
              EXPECT_TRUE(same_float(x.constant[k], y.constant[k])) << at << " constant " << k;
          }
        }
      },
      a);
}

inline void expect_same_desc(const TensorDesc& a, const TensorDesc& b, const std::string& at) {
  EXPECT_EQ(a.dtype, b.dtype) << at;
  EXPECT_EQ(a.dims, b.dims) << at;
}

inline void expect_same_recipe(const Recipe& a, const Recipe& b, const std::string& at) {
  EXPECT_EQ(a.sources, b.sources) << at;
  ASSERT_EQ(a.steps.size(), b.steps.size()) << at;
  for (size_t i = 0; i < a.steps.size(); ++i) {
    const RecipeStep& x = a.steps[i];
    const RecipeStep& y = b.steps[i];
    EXPECT_EQ(x.op, y.op) << at << " step " << i;
    EXPECT_EQ(x.args, y.args) << at << " step " << i;
    EXPECT_EQ(x.axis, y.axis) << at << " step " << i;
    EXPECT_EQ(x.dims, y.dims) << at << " step " << i;
    EXPECT_EQ(x.dtype, y.dtype) << at << " step " << i;
    EXPECT_TRUE(same_float(x.epsilon, y.epsilon)) << at << " step " << i;
  }
}

inline void expect_same_metadata(const PlanMetadata& a, const PlanMetadata& b) {
  EXPECT_EQ(a.flags.bits, b.flags.bits);
  EXPECT_EQ(a.weights_version, b.weights_version);
  EXPECT_EQ(a.properties, b.properties);
  EXPECT_EQ(a.stripped, b.stripped);
  EXPECT_EQ(a.refit_info, b.refit_info);
  EXPECT_EQ(a.blob_size, b.blob_size);
  ASSERT_EQ(a.graph.tensors.size(), b.graph.tensors.size());
  for (size_t i = 0; i < a.graph.tensors.size(); ++i) {
    const GraphTensor& x = a.graph.tensors[i];
    const GraphTensor& y = b.graph.tensors[i];
    const std::string at = "tensor " + std::to_string(i);
    EXPECT_EQ(x.name, y.name) << at;
    expect_same_desc(x.desc, y.desc, at);
    EXPECT_EQ(x.kind, y.kind) << at;
    EXPECT_EQ(x.slot, y.slot) << at;
    EXPECT_EQ(x.is_output, y.is_output) << at;
    EXPECT_EQ(x.is_debug, y.is_debug) << at;
  }
  ASSERT_EQ(a.graph.nodes.size(), b.graph.nodes.size());
  for (size_t i = 0; i < a.graph.nodes.size(); ++i) {
    const GraphNode& x = a.graph.nodes[i];
    const GraphNode& y = b.graph.nodes[i];
    const std::string at = "node " + x.name;
    EXPECT_EQ(x.name, y.name) << at;
    EXPECT_EQ(x.type, y.type) << at;
    expect_same_params(x.params, y.params, at);
    EXPECT_EQ(x.inputs, y.inputs) << at;
    EXPECT_EQ(x.outputs, y.outputs) << at;
  }
  EXPECT_EQ(a.graph.inputs, b.graph.inputs);
  EXPECT_EQ(a.graph.outputs, b.graph.outputs);
  ASSERT_EQ(a.sources.size(), b.sources.size());
  for (size_t i = 0; i < a.sources.size(); ++i) {
    const std::string at = "source " + a.sources[i].name;
    EXPECT_EQ(a.sources[i].name, b.sources[i].name) << at;
    expect_same_desc(a.sources[i].desc, b.sources[i].desc, at);
    EXPECT_EQ(a.sources[i].refittable, b.sources[i].refittable) << at;
    EXPECT_EQ(a.sources[i].identical_hash, b.sources[i].identical_hash) << at;
  }
  ASSERT_EQ(a.slots.size(), b.slots.size());
  for (size_t i = 0; i < a.slots.size(); ++i) {
    const Slot& x = a.slots[i];
    const Slot& y = b.slots[i];
    const std::string at = "slot " + x.name;
    EXPECT_EQ(x.name, y.name) << at;
    expect_same_desc(x.desc, y.desc, at);
    EXPECT_EQ(x.offset, y.offset) << at;
    EXPECT_EQ(x.size_bytes, y.size_bytes) << at;
    EXPECT_EQ(x.refittable, y.refittable) << at;
    expect_same_recipe(x.recipe, y.recipe, at);
    EXPECT_EQ(x.checksum, y.checksum) << at;
  }
  ASSERT_EQ(a.report.size(), b.report.size());
  for (size_t i = 0; i < a.report.size(); ++i) {
    EXPECT_EQ(a.report[i].kind, b.report[i].kind);
    EXPECT_EQ(a.report[i].description, b.report[i].description);
    EXPECT_EQ(a.report[i].weights, b.report[i].weights);
  }
}

// ---- an independent writer of plan images ----

inline void put32(Bytes& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::byte>(v >> (8 * i));
}
inline void put64(Bytes& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<std::byte>(v >> (8 * i));
}
inline uint32_t get32(const Bytes& b, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<uint32_t>(b[at + i]);
  return v;
}
inline uint64_t get64(const Bytes& b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint64_t>(b[at + i]);
  return v;
}

inline Bytes to_bytes(std::string_view s) {
  Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

struct TestSection {
  uint32_t kind;  // 1 metadata, 2 weights
  Bytes bytes;
  uint64_t align = 1;  // placed at the next multiple of this after the previous section
};

inline size_t header_bytes(size_t sections) { return 24 + 32 * sections + 8; }

/// A plan image with these sections and correct checksums everywhere.
inline Bytes make_image(uint32_t version, uint32_t flags, const std::vector<TestSection>& sections,
                        size_t trailing = 0) {
  Bytes img(header_bytes(sections.size()));
  std::memcpy(img.data(), "BINDERY\0", 8);
  put32(img, 8, version);
  put32(img, 12, flags);
  put32(img, 16, static_cast<uint32_t>(sections.size()));
  for (size_t i = 0; i < sections.size(); ++i) {
    const TestSection& s = sections[i];
    const size_t offset = (img.size() + s.align - 1) / s.align * s.align;
    img.resize(offset);
    img.insert(img.end(), s.bytes.begin(), s.bytes.end());
    const size_t e = 24 + 32 * i;
    put32(img, e, s.kind);
    put64(img, e + 8, offset);
    put64(img, e + 16, s.bytes.size());
    put64(img, e + 24, hash64(s.bytes.data(), s.bytes.size()));
  }
  img.resize(img.size() + trailing, std::byte{0x5a});
  const size_t hs = header_bytes(sections.size());
  put64(img, hs - 8, hash64(img.data(), hs - 8));
  return img;
}

/// Where the sections of a well-formed image are.
struct Layout {
  size_t header = 0, meta_offset = 0, meta_size = 0, weights_offset = 0, weights_size = 0;
};
inline Layout layout_of(const Bytes& img) {
  Layout l;
  const uint32_t count = get32(img, 16);
  l.header = header_bytes(count);
  for (uint32_t i = 0; i < count; ++i) {
    const size_t e = 24 + 32 * i;
    const size_t off = get64(img, e + 8), size = get64(img, e + 16);
    if (get32(img, e) == 1) l.meta_offset = off, l.meta_size = size;
    if (get32(img, e) == 2) l.weights_offset = off, l.weights_size = size;
  }
  return l;
}

inline std::string metadata_text(const Bytes& img) {
  const Layout l = layout_of(img);
  return std::string(reinterpret_cast<const char*>(img.data() + l.meta_offset), l.meta_size);
}

/// `img` rebuilt around new metadata text (same version, flags and weights).
inline Bytes with_metadata(const Bytes& img, const std::string& text) {
  const Layout l = layout_of(img);
  std::vector<TestSection> s = {{1, to_bytes(text)}};
  if (l.weights_size)
    s.push_back(
        {2, Bytes(img.begin() + l.weights_offset, img.begin() + l.weights_offset + l.weights_size),
         256});
  return make_image(get32(img, 8), get32(img, 12), s);
}

/// `img` with its metadata JSON edited by `edit` (checksums recomputed).
inline Bytes edit_json(const Bytes& img, const std::function<void(json&)>& edit) {
  json j = json::parse(metadata_text(img));
  edit(j);
  return with_metadata(img, j.dump());
}

/// Recomputes the checksums of a (possibly edited) image: its header and the sections inside it.
/// Does nothing to an image too short to hold its section table.
inline void fix_checksums(Bytes& img) {
  if (img.size() < 24 || header_bytes(get32(img, 16)) > img.size()) return;
  const uint32_t count = get32(img, 16);
  for (uint32_t i = 0; i < count; ++i) {
    const size_t e = 24 + 32 * i;
    const uint64_t off = get64(img, e + 8), size = get64(img, e + 16);
    if (size <= img.size() && off <= img.size() - size)  // sections past the end stay as they are
      put64(img, e + 24, hash64(img.data() + off, size));
  }
  const size_t hs = header_bytes(count);
  put64(img, hs - 8, hash64(img.data(), hs - 8));
}

inline Bytes prefix(const Bytes& img, size_t n) { return Bytes(img.begin(), img.begin() + n); }

inline Bytes flip(Bytes img, size_t byte, int bit = 0) {
  img[byte] ^= static_cast<std::byte>(1u << bit);
  return img;
}

/// The error Plan::from_memory throws for `img`, failing the test if it throws none.
inline std::optional<Error> load_error(const Bytes& img) {
  try {
    (void)Plan::from_memory(img);
  } catch (const Error& e) {
    return e;
  }
  return std::nullopt;
}

#define EXPECT_LOAD_ERROR(img_, code_, needle_)                                   \
  do {                                                                            \
    const auto err_ = ::bindery::plan_test::load_error(img_);                     \
    ASSERT_TRUE(err_.has_value()) << "loaded without error";                      \
    EXPECT_EQ(err_->code(), code_) << err_->what();                               \
    EXPECT_NE(std::string(err_->what()).find(needle_), std::string::npos)         \
        << "message: " << err_->what() << "\nexpected to contain: " << (needle_); \
  } while (0)

}  // namespace bindery::plan_test
