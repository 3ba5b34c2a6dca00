#include "plan/plan_json.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include "bindery/error.h"
#include "core/hash.h"

namespace bindery::plan_json {

namespace {

using json = nlohmann::json;

// ---- names of enum values in the file (format version 1; never rename, only add) ----

template <class E>
struct Named {
  E value;
  std::string_view name;
};

constexpr Named<LayerType> kLayerTypes[] = {
    {LayerType::kCONSTANT, "constant"},
    {LayerType::kMATMUL, "matmul"},
    {LayerType::kELEMENTWISE, "elementwise"},
    {LayerType::kUNARY, "unary"},
    {LayerType::kSOFTMAX, "softmax"},
    {LayerType::kREDUCE, "reduce"},
    {LayerType::kRMSNORM, "rmsnorm"},
    {LayerType::kLAYERNORM, "layernorm"},
    {LayerType::kGATHER, "gather"},
    {LayerType::kRESHAPE, "reshape"},
    {LayerType::kTRANSPOSE, "transpose"},
    {LayerType::kCONCAT, "concat"},
    {LayerType::kSLICE, "slice"},
    {LayerType::kCAST, "cast"},
    {LayerType::kCONVOLUTION, "conv2d"},
    {LayerType::kBATCHNORM, "batchnorm"},
    {LayerType::kPOOLING, "pooling"},
    {LayerType::kROTARY, "rotary"},
    {LayerType::kATTENTION, "attention"},
    {LayerType::kMOE, "moe"},
    {LayerType::kMATMUL_INT4, "matmul_int4"},
    {LayerType::kALL_REDUCE, "all_reduce"},
    {LayerType::kALL_GATHER, "all_gather"},
};
constexpr Named<ElementwiseOp> kElementwiseOps[] = {
    {ElementwiseOp::kSUM, "add"}, {ElementwiseOp::kSUB, "sub"}, {ElementwiseOp::kPROD, "mul"},
    {ElementwiseOp::kDIV, "div"}, {ElementwiseOp::kMIN, "min"}, {ElementwiseOp::kMAX, "max"},
    {ElementwiseOp::kPOW, "pow"},
};
constexpr Named<UnaryOp> kUnaryOps[] = {
    {UnaryOp::kRELU, "relu"}, {UnaryOp::kGELU_ERF, "gelu_erf"}, {UnaryOp::kGELU_TANH, "gelu_tanh"},
    {UnaryOp::kSILU, "silu"}, {UnaryOp::kSIGMOID, "sigmoid"},   {UnaryOp::kTANH, "tanh"},
    {UnaryOp::kEXP, "exp"},   {UnaryOp::kSQRT, "sqrt"},         {UnaryOp::kRSQRT, "rsqrt"},
    {UnaryOp::kNEG, "neg"},   {UnaryOp::kABS, "abs"},
};
constexpr Named<ReduceOp> kReduceOps[] = {
    {ReduceOp::kSUM, "sum"}, {ReduceOp::kAVG, "mean"}, {ReduceOp::kMAX, "max"}};
constexpr Named<PoolingType> kPoolingTypes[] = {{PoolingType::kMAX, "max"},
                                                {PoolingType::kAVERAGE, "avg"}};
constexpr Named<TensorKind> kTensorKinds[] = {{TensorKind::kACTIVATION, "activation"},
                                              {TensorKind::kINPUT, "input"},
                                              {TensorKind::kWEIGHT, "weight"}};
constexpr Named<RecipeOp> kRecipeOps[] = {
    {RecipeOp::kSOURCE, "source"},
    {RecipeOp::kCONCAT, "concat"},
    {RecipeOp::kSLICE, "slice"},
    {RecipeOp::kTRANSPOSE, "transpose"},
    {RecipeOp::kRESHAPE, "reshape"},
    {RecipeOp::kCAST, "cast"},
    {RecipeOp::kFOLD_BN_KERNEL, "fold_bn_kernel"},
    {RecipeOp::kFOLD_BN_BIAS, "fold_bn_bias"},
};
constexpr DataType kDataTypes[] = {DataType::kFLOAT, DataType::kHALF,  DataType::kBF16,
                                   DataType::kINT8,  DataType::kUINT8, DataType::kINT32,
                                   DataType::kINT64, DataType::kBOOL,  DataType::kINT4};

// The LayerParams alternative each layer type carries.
size_t params_index(LayerType t) {
  switch (t) {
    case LayerType::kCONSTANT: return 0;
    case LayerType::kMATMUL: return 1;
    case LayerType::kELEMENTWISE: return 2;
    case LayerType::kUNARY: return 3;
    case LayerType::kSOFTMAX: return 4;
    case LayerType::kREDUCE: return 5;
    case LayerType::kRMSNORM:
    case LayerType::kLAYERNORM: return 6;
    case LayerType::kGATHER: return 7;
    case LayerType::kRESHAPE: return 8;
    case LayerType::kTRANSPOSE: return 9;
    case LayerType::kCONCAT: return 10;
    case LayerType::kSLICE: return 11;
    case LayerType::kCAST: return 12;
    case LayerType::kCONVOLUTION: return 13;
    case LayerType::kBATCHNORM: return 14;
    case LayerType::kPOOLING: return 15;
    case LayerType::kROTARY: return 16;
    case LayerType::kATTENTION: return 17;
    case LayerType::kMOE: return 18;
    case LayerType::kMATMUL_INT4: return 19;
    case LayerType::kALL_REDUCE:
    case LayerType::kALL_GATHER: return 20;
  }
  return std::variant_npos;
}
static_assert(std::variant_size_v<LayerParams> == 21,
              "a new LayerParams alternative needs params_index, write_params and read_params");

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}
std::string at_index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// ---- writing ----

[[noreturn]] void fail_write(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::kINVALID_ARGUMENT, "plan metadata: " + path + ": " + what);
}

template <class E, size_t N>
std::string_view name_of(const Named<E> (&table)[N], E v, const std::string& path) {
  for (const auto& n : table)
    if (n.value == v) return n.name;
  fail_write(path, "enum value " + std::to_string(static_cast<int>(v)) + " is out of range");
}

std::string_view dtype_to_json(DataType t, const std::string& path) {
  for (DataType d : kDataTypes)
    if (d == t) return dtype_name(t);
  fail_write(path, "dtype value " + std::to_string(static_cast<int>(t)) + " is out of range");
}

// JSON has no NaN or infinity; they are written as strings. Finite values go through double,
// which holds every float exactly.
json float_to_json(float f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  return static_cast<double>(f);
}

json floats_to_json(const std::vector<float>& v) {
  json a = json::array();
  for (float f : v) a.push_back(float_to_json(f));
  return a;
}

void desc_to_json(json& o, const TensorDesc& d, const std::string& path) {
  o["dtype"] = dtype_to_json(d.dtype, join(path, "dtype"));
  o["dims"] = d.dims;
}

json params_to_json(LayerType type, const LayerParams& params, const std::string& path) {
  if (params.index() != params_index(type))
    fail_write(path, "holds params alternative " + std::to_string(params.index()) +
                         ", which does not match the layer type");
  json o = json::object();
  std::visit(
      [&](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConstantParams>) {
          o["weights_name"] = p.weights_name;
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          o["transpose_a"] = p.transpose_a;
          o["transpose_b"] = p.transpose_b;
        } else if constexpr (std::is_same_v<P, ElementwiseParams>) {
          o["op"] = name_of(kElementwiseOps, p.op, join(path, "op"));
        } else if constexpr (std::is_same_v<P, UnaryParams>) {
          o["op"] = name_of(kUnaryOps, p.op, join(path, "op"));
        } else if constexpr (std::is_same_v<P, SoftmaxParams> || std::is_same_v<P, ConcatParams>) {
          o["axis"] = p.axis;
        } else if constexpr (std::is_same_v<P, GatherParams>) {
          o["axis"] = p.axis;
          o["index_offset"] = p.index_offset;
          o["zero_out_of_range"] = p.zero_out_of_range;
        } else if constexpr (std::is_same_v<P, CollectiveParams>) {
          o["group_size"] = p.group_size;
          o["axis"] = p.axis;
        } else if constexpr (std::is_same_v<P, ReduceParams>) {
          o["op"] = name_of(kReduceOps, p.op, join(path, "op"));
          o["axes"] = p.axes;
          o["keep_dims"] = p.keep_dims;
        } else if constexpr (std::is_same_v<P, NormParams> || std::is_same_v<P, BatchNormParams>) {
          o["epsilon"] = float_to_json(p.epsilon);
        } else if constexpr (std::is_same_v<P, ReshapeParams>) {
          o["shape"] = p.shape;
        } else if constexpr (std::is_same_v<P, TransposeParams>) {
          o["perm"] = p.perm;
        } else if constexpr (std::is_same_v<P, SliceParams>) {
          o["start"] = p.start;
          o["size"] = p.size;
          o["stride"] = p.stride;
        } else if constexpr (std::is_same_v<P, CastParams>) {
          o["to"] = dtype_to_json(p.to, join(path, "to"));
        } else if constexpr (std::is_same_v<P, ConvParams>) {
          o["stride"] = p.stride;
          o["padding"] = p.padding;
          o["dilation"] = p.dilation;
          o["groups"] = p.groups;
          json epilogue = json::array();
          for (size_t i = 0; i < p.epilogue.size(); ++i) {
            const EpilogueStep& e = p.epilogue[i];
            const std::string ep = at_index(join(path, "epilogue"), i);
            epilogue.push_back({{"is_unary", e.is_unary},
                                {"unary", name_of(kUnaryOps, e.unary, join(ep, "unary"))},
                                {"binary", name_of(kElementwiseOps, e.binary, join(ep, "binary"))},
                                {"constant", floats_to_json(e.constant)}});
          }
          o["epilogue"] = std::move(epilogue);
        } else if constexpr (std::is_same_v<P, PoolingParams>) {
          o["type"] = name_of(kPoolingTypes, p.type, join(path, "type"));
          o["window"] = p.window;
          o["stride"] = p.stride;
          o["padding"] = p.padding;
          o["count_include_pad"] = p.count_include_pad;
        } else if constexpr (std::is_same_v<P, RotaryParams>) {
          o["num_heads"] = p.num_heads;
          o["head_dim"] = p.head_dim;
          o["inv_freq"] = floats_to_json(p.inv_freq);
          o["attention_factor"] = float_to_json(p.attention_factor);
          o["dynamic_factor"] = float_to_json(p.dynamic_factor);
          o["theta"] = float_to_json(p.theta);
          o["dynamic_max_positions"] = p.dynamic_max_positions;
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          o["num_heads"] = p.num_heads;
          o["num_kv_heads"] = p.num_kv_heads;
          o["head_dim"] = p.head_dim;
          o["scale"] = float_to_json(p.scale);
          o["sliding_window"] = p.sliding_window;
          o["max_seq_len"] = p.max_seq_len;
          o["cache_index"] = p.cache_index;
        } else if constexpr (std::is_same_v<P, MoeParams>) {
          o["num_experts"] = p.num_experts;
          o["top_k"] = p.top_k;
          o["ffn_size"] = p.ffn_size;
          o["activation"] = name_of(kUnaryOps, p.activation, join(path, "activation"));
          o["normalize_top_k"] = p.normalize_top_k;
        } else if constexpr (std::is_same_v<P, Int4MatmulParams>) {
          o["in_features"] = p.in_features;
          o["out_features"] = p.out_features;
          o["group_count"] = p.group_count;
          o["zero_offset"] = p.zero_offset;
        } else {
          static_assert(sizeof(P) == 0, "unhandled LayerParams alternative");
        }
      },
      params);
  return o;
}

json graph_to_json(const Graph& g) {
  json tensors = json::array();
  for (size_t i = 0; i < g.tensors.size(); ++i) {
    const GraphTensor& t = g.tensors[i];
    const std::string path = at_index("graph.tensors", i);
    json o = {{"name", t.name}};
    desc_to_json(o, t.desc, path);
    o["kind"] = name_of(kTensorKinds, t.kind, join(path, "kind"));
    o["slot"] = t.slot;
    o["is_output"] = t.is_output;
    o["is_debug"] = t.is_debug;
    tensors.push_back(std::move(o));
  }
  json nodes = json::array();
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const GraphNode& n = g.nodes[i];
    const std::string path = at_index("graph.nodes", i);
    nodes.push_back({{"name", n.name},
                     {"type", name_of(kLayerTypes, n.type, join(path, "type"))},
                     {"params", params_to_json(n.type, n.params, join(path, "params"))},
                     {"inputs", n.inputs},
                     {"outputs", n.outputs}});
  }
  return {{"tensors", std::move(tensors)},
          {"nodes", std::move(nodes)},
          {"inputs", g.inputs},
          {"outputs", g.outputs}};
}

json recipe_to_json(const Recipe& r, const std::string& path) {
  json steps = json::array();
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const RecipeStep& s = r.steps[i];
    const std::string sp = at_index(join(path, "steps"), i);
    steps.push_back({{"op", name_of(kRecipeOps, s.op, join(sp, "op"))},
                     {"args", s.args},
                     {"axis", s.axis},
                     {"dims", s.dims},
                     {"dtype", dtype_to_json(s.dtype, join(sp, "dtype"))},
                     {"epsilon", float_to_json(s.epsilon)}});
  }
  return {{"sources", r.sources}, {"steps", std::move(steps)}};
}

// ---- reading ----

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::kCORRUPT_FILE,
              "plan metadata: " + (path.empty() ? std::string() : path + ": ") + what);
}

// "found <what the value is>", short enough for a message whatever the file holds.
std::string found(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "found null";
    case json::value_t::boolean: return v.get<bool>() ? "found true" : "found false";
    case json::value_t::number_integer: return "found " + std::to_string(v.get<int64_t>());
    case json::value_t::number_unsigned: return "found " + std::to_string(v.get<uint64_t>());
    case json::value_t::number_float: return "found " + v.dump();
    case json::value_t::string: {
      const auto& s = v.get_ref<const std::string&>();
      std::string shown;
      for (size_t i = 0; i < s.size() && i < 40; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        shown += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
      }
      if (s.size() > 40) shown += "...";
      return "found the string \"" + shown + "\"";
    }
    case json::value_t::array: return "found an array of " + std::to_string(v.size()) + " elements";
    case json::value_t::object: return "found an object";
    default: return "found a binary value";
  }
}

// A location in the document, rendered only when something is wrong: base.key[index].
struct Path {
  const std::string& base;
  const char* key = nullptr;
  int64_t index = -1;
  std::string str() const {
    std::string s = key ? join(base, key) : base;
    if (index >= 0) s += "[" + std::to_string(index) + "]";
    return s;
  }
};

int64_t read_int(const json& v, const Path& p, int64_t lo, int64_t hi) {
  bool ok = false;
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    ok = u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    x = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    ok = true;
    x = v.get<int64_t>();
  }
  if (!ok || x < lo || x > hi)
    fail(p.str(), "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                      "], " + found(v));
  return x;
}

float read_float(const json& v, const Path& p) {
  if (v.is_number()) {
    const double d = v.get<double>();
    // Converting a double outside the float range to float is undefined behaviour.
    if (std::isfinite(d) && std::fabs(d) <= std::numeric_limits<float>::max())
      return static_cast<float>(d);
  } else if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "nan") return std::numeric_limits<float>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<float>::infinity();
    if (s == "-inf") return -std::numeric_limits<float>::infinity();
  }
  fail(p.str(), "expected a float (a number, \"nan\", \"inf\" or \"-inf\"), " + found(v));
}

const json& read_array(const json& v, const Path& p) {
  if (!v.is_array()) fail(p.str(), "expected an array, " + found(v));
  return v;
}

// Reads the fields of one JSON object at `path`.
class In {
 public:
  In(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) fail(path_, "expected an object, " + found(j_));
  }
  const std::string& path() const { return path_; }

  const json& at(const char* key) const {
    const auto it = j_.find(key);
    if (it == j_.end()) fail(join(path_, key), "missing");
    return *it;
  }
  In object(const char* key) const { return In(at(key), join(path_, key)); }
  const json& array(const char* key) const { return read_array(at(key), {path_, key}); }
  std::string element(const char* key, size_t i) const { return at_index(join(path_, key), i); }

  int64_t i64(const char* key, int64_t lo = std::numeric_limits<int64_t>::min(),
              int64_t hi = std::numeric_limits<int64_t>::max()) const {
    return read_int(at(key), {path_, key}, lo, hi);
  }
  int i32(const char* key) const {
    return static_cast<int>(
        i64(key, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
  }
  bool boolean(const char* key) const {
    const json& v = at(key);
    if (!v.is_boolean()) fail(join(path_, key), "expected true or false, " + found(v));
    return v.get<bool>();
  }
  float f32(const char* key) const { return read_float(at(key), {path_, key}); }
  std::string str(const char* key) const {
    const json& v = at(key);
    if (!v.is_string()) fail(join(path_, key), "expected a string, " + found(v));
    return v.get<std::string>();
  }
  uint64_t hex(const char* key) const {
    const json& v = at(key);
    if (v.is_string()) {
      const auto& s = v.get_ref<const std::string&>();
      if (s.size() == 18 && s[0] == '0' && s[1] == 'x') {
        uint64_t h = 0;
        bool ok = true;
        for (size_t i = 2; i < 18 && ok; ++i) {
          const char c = s[i];
          const int d = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
          ok = d >= 0;
          h = h << 4 | static_cast<uint64_t>(d < 0 ? 0 : d);
        }
        if (ok) return h;
      }
    }
    fail(join(path_, key), "expected a 64-bit hash \"0x\" + 16 hex digits, " + found(v));
  }
  DataType dtype(const char* key) const {
    const json& v = at(key);
    if (v.is_string()) {
      // Only the names this writer produces: aliases ("float32") are for users, not files.
      const auto& s = v.get_ref<const std::string&>();
      for (DataType d : kDataTypes)
        if (dtype_name(d) == s) return d;
    }
    fail(join(path_, key),
         "expected a dtype (f32, f16, bf16, i8, u8, i32, i64, bool, int4), " + found(v));
  }
  template <class E, size_t N>
  E enumeration(const char* key, const Named<E> (&table)[N]) const {
    const json& v = at(key);
    if (v.is_string()) {
      const auto& s = v.get_ref<const std::string&>();
      for (const auto& n : table)
        if (n.name == s) return n.value;
    }
    std::string names;
    for (const auto& n : table) names += (names.empty() ? "" : ", ") + std::string(n.name);
    fail(join(path_, key), "expected one of " + names + "; " + found(v));
  }
  std::vector<int64_t> i64s(const char* key) const {
    const json& a = array(key);
    std::vector<int64_t> out;
    out.reserve(a.size());
    for (size_t i = 0; i < a.size(); ++i)
      out.push_back(read_int(a[i], {path_, key, static_cast<int64_t>(i)},
                             std::numeric_limits<int64_t>::min(),
                             std::numeric_limits<int64_t>::max()));
    return out;
  }
  std::vector<int> i32s(const char* key) const {
    const json& a = array(key);
    std::vector<int> out;
    out.reserve(a.size());
    for (size_t i = 0; i < a.size(); ++i)
      out.push_back(static_cast<int>(read_int(a[i], {path_, key, static_cast<int64_t>(i)},
                                              std::numeric_limits<int>::min(),
                                              std::numeric_limits<int>::max())));
    return out;
  }
  std::vector<float> f32s(const char* key) const {
    const json& a = array(key);
    std::vector<float> out;
    out.reserve(a.size());
    for (size_t i = 0; i < a.size(); ++i)
      out.push_back(read_float(a[i], {path_, key, static_cast<int64_t>(i)}));
    return out;
  }
  std::vector<std::string> strs(const char* key) const {
    const json& a = array(key);
    std::vector<std::string> out;
    out.reserve(a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].is_string()) fail(element(key, i), "expected a string, " + found(a[i]));
      out.push_back(a[i].get<std::string>());
    }
    return out;
  }
  TensorDesc desc() const { return {dtype("dtype"), i64s("dims")}; }
  bool has(const char* key) const { return j_.is_object() && j_.contains(key); }

 private:
  const json& j_;
  std::string path_;
};

LayerParams read_params(LayerType type, const In& in) {
  switch (type) {
    case LayerType::kCONSTANT: return ConstantParams{in.str("weights_name")};
    case LayerType::kMATMUL:
      return MatMulParams{in.boolean("transpose_a"), in.boolean("transpose_b")};
    case LayerType::kELEMENTWISE: return ElementwiseParams{in.enumeration("op", kElementwiseOps)};
    case LayerType::kUNARY: return UnaryParams{in.enumeration("op", kUnaryOps)};
    case LayerType::kSOFTMAX: return SoftmaxParams{in.i32("axis")};
    case LayerType::kREDUCE:
      return ReduceParams{in.enumeration("op", kReduceOps), in.i32s("axes"),
                          in.boolean("keep_dims")};
    case LayerType::kRMSNORM:
    case LayerType::kLAYERNORM: return NormParams{in.f32("epsilon")};
    case LayerType::kGATHER:
      // Format 2 plans have neither field (the defaults); format 3 writes both.
      return in.has("index_offset") ? GatherParams{in.i32("axis"), in.i64("index_offset"),
                                                   in.boolean("zero_out_of_range")}
                                    : GatherParams{in.i32("axis")};
    case LayerType::kRESHAPE: return ReshapeParams{in.i64s("shape")};
    case LayerType::kTRANSPOSE: return TransposeParams{in.i32s("perm")};
    case LayerType::kCONCAT: return ConcatParams{in.i32("axis")};
    case LayerType::kSLICE:
      return SliceParams{in.i64s("start"), in.i64s("size"), in.i64s("stride")};
    case LayerType::kCAST: return CastParams{in.dtype("to")};
    case LayerType::kCONVOLUTION: {
      ConvParams p;
      p.stride = in.i64s("stride");
      p.padding = in.i64s("padding");
      p.dilation = in.i64s("dilation");
      p.groups = in.i64("groups");
      const json& epilogue = in.array("epilogue");
      for (size_t i = 0; i < epilogue.size(); ++i) {
        const In e(epilogue[i], in.element("epilogue", i));
        p.epilogue.push_back({e.boolean("is_unary"), e.enumeration("unary", kUnaryOps),
                              e.enumeration("binary", kElementwiseOps), e.f32s("constant")});
      }
      return p;
    }
    case LayerType::kBATCHNORM: return BatchNormParams{in.f32("epsilon")};
    case LayerType::kPOOLING:
      return PoolingParams{in.enumeration("type", kPoolingTypes), in.i64s("window"),
                           in.i64s("stride"), in.i64s("padding"), in.boolean("count_include_pad")};
    case LayerType::kROTARY:
      return RotaryParams{in.i64("num_heads"),
                          in.i64("head_dim"),
                          in.f32s("inv_freq"),
                          in.f32("attention_factor"),
                          in.f32("dynamic_factor"),
                          in.f32("theta"),
                          in.i64("dynamic_max_positions")};
    case LayerType::kATTENTION:
      return AttentionParams{in.i64("num_heads"),  in.i64("num_kv_heads"),   in.i64("head_dim"),
                             in.f32("scale"),      in.i64("sliding_window"), in.i64("max_seq_len"),
                             in.i64("cache_index")};
    case LayerType::kMOE:
      return MoeParams{in.i64("num_experts"), in.i64("top_k"), in.i64("ffn_size"),
                       in.enumeration("activation", kUnaryOps), in.boolean("normalize_top_k")};
    case LayerType::kMATMUL_INT4:
      return Int4MatmulParams{in.i64("in_features"), in.i64("out_features"), in.i64("group_count"),
                              in.i64("zero_offset")};
    case LayerType::kALL_REDUCE:
    case LayerType::kALL_GATHER: return CollectiveParams{in.i64("group_size"), in.i32("axis")};
  }
  fail(in.path(), "no params for this layer type");  // unreachable: type came from kLayerTypes
}

Graph read_graph(const In& in) {
  Graph g;
  const json& tensors = in.array("tensors");
  g.tensors.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const In t(tensors[i], in.element("tensors", i));
    GraphTensor out;
    out.name = t.str("name");
    out.desc = t.desc();
    out.kind = t.enumeration("kind", kTensorKinds);
    out.slot = t.i32("slot");
    out.is_output = t.boolean("is_output");
    out.is_debug = t.boolean("is_debug");
    g.tensors.push_back(std::move(out));
  }
  const json& nodes = in.array("nodes");
  g.nodes.reserve(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    const In n(nodes[i], in.element("nodes", i));
    GraphNode out;
    out.name = n.str("name");
    out.type = n.enumeration("type", kLayerTypes);
    out.params = read_params(out.type, n.object("params"));
    out.inputs = n.i32s("inputs");
    out.outputs = n.i32s("outputs");
    g.nodes.push_back(std::move(out));
  }
  g.inputs = in.i32s("inputs");
  g.outputs = in.i32s("outputs");
  return g;
}

Recipe read_recipe(const In& in) {
  Recipe r;
  r.sources = in.strs("sources");
  const json& steps = in.array("steps");
  r.steps.reserve(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const In s(steps[i], in.element("steps", i));
    RecipeStep out;
    out.op = s.enumeration("op", kRecipeOps);
    out.args = s.i32s("args");
    out.axis = s.i32("axis");
    out.dims = s.i64s("dims");
    out.dtype = s.dtype("dtype");
    out.epsilon = s.f32("epsilon");
    r.steps.push_back(std::move(out));
  }
  return r;
}

// ---- validation ----

std::string range(int64_t lo, int64_t hi) {
  return "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

// Checks an index into a table of `count` entries (or -1 when `allow_absent`).
void check_index(int64_t i, size_t count, bool allow_absent, const char* noun,
                 const std::string& path) {
  const int64_t lo = allow_absent ? -1 : 0;
  if (i >= lo && i < static_cast<int64_t>(count)) return;
  if (count == 0 && !allow_absent)
    fail(path,
         std::string("expected ") + noun + ", but there are none; found " + std::to_string(i));
  fail(path, std::string("expected ") + noun + " in " + range(lo, static_cast<int64_t>(count) - 1) +
                 ", found " + std::to_string(i));
}

// Element count of the static dims (each >= min_dim; dynamic ones skipped), bounded by
// kMAX_BYTES so that no later size computation overflows.
int64_t checked_volume(const Dims& dims, int64_t min_dim, const std::string& path) {
  for (size_t i = 0; i < dims.size(); ++i)
    if (dims[i] < min_dim)
      fail(at_index(path, i), "expected a dimension >= " + std::to_string(min_dim) + ", found " +
                                  std::to_string(dims[i]));
  int64_t n = 1;
  for (int64_t d : dims)
    if (d == 0) return 0;
  for (int64_t d : dims) {
    if (d < 0) continue;
    if (n > kMAX_BYTES / d)
      fail(path, to_string(dims) + " has more than " + std::to_string(kMAX_BYTES) + " elements");
    n *= d;
  }
  return n;
}

void check_positive(const Dims& d, const std::string& path) {
  for (size_t i = 0; i < d.size(); ++i)
    if (d[i] <= 0) fail(at_index(path, i), "expected a value > 0, found " + std::to_string(d[i]));
}
void check_non_negative(const Dims& d, const std::string& path) {
  for (size_t i = 0; i < d.size(); ++i)
    if (d[i] < 0) fail(at_index(path, i), "expected a value >= 0, found " + std::to_string(d[i]));
}
void check_permutation(std::span<const int64_t> perm, const std::string& path) {
  std::vector<bool> seen(perm.size(), false);
  for (size_t i = 0; i < perm.size(); ++i) {
    const int64_t p = perm[i];
    if (p < 0 || p >= static_cast<int64_t>(perm.size()) || seen[static_cast<size_t>(p)])
      fail(at_index(path, i), "expected a permutation of 0.." + std::to_string(perm.size() - 1) +
                                  ", found " + std::to_string(p) + " (out of range or repeated)");
    seen[static_cast<size_t>(p)] = true;
  }
}

// Parameter values a kernel could divide by or loop on; shapes are checked by the runtime.
void validate_params(const LayerParams& params, const std::string& path) {
  if (const auto* p = std::get_if<TransposeParams>(&params)) {
    const std::vector<int64_t> perm(p->perm.begin(), p->perm.end());
    check_permutation(perm, join(path, "perm"));
  } else if (const auto* p = std::get_if<ReshapeParams>(&params)) {
    checked_volume(p->shape, -1, join(path, "shape"));
  } else if (const auto* p = std::get_if<SliceParams>(&params)) {
    if (p->size.size() != p->start.size() ||
        (!p->stride.empty() && p->stride.size() != p->start.size()))
      fail(path, "start, size and stride (when given) need one entry per input dim; found " +
                     std::to_string(p->start.size()) + ", " + std::to_string(p->size.size()) +
                     " and " + std::to_string(p->stride.size()));
    // size kDYNAMIC (-1) means "to the end of that dim" (see SliceParams).
    for (size_t i = 0; i < p->size.size(); ++i)
      if (p->size[i] < kDYNAMIC)
        fail(at_index(join(path, "size"), i),
             "expected a size >= 0 or -1 (to the end), found " + std::to_string(p->size[i]));
    for (size_t i = 0; i < p->stride.size(); ++i)
      if (p->stride[i] == 0) fail(at_index(join(path, "stride"), i), "expected a non-zero stride");
  } else if (const auto* p = std::get_if<ConvParams>(&params)) {
    check_positive(p->stride, join(path, "stride"));
    check_non_negative(p->padding, join(path, "padding"));
    check_positive(p->dilation, join(path, "dilation"));
    if (p->groups < 1)
      fail(join(path, "groups"), "expected >= 1, found " + std::to_string(p->groups));
  } else if (const auto* p = std::get_if<PoolingParams>(&params)) {
    check_positive(p->window, join(path, "window"));
    check_positive(p->stride, join(path, "stride"));
    check_non_negative(p->padding, join(path, "padding"));
  }
}

void validate_recipe(const Recipe& r, const std::unordered_map<std::string, size_t>& plan_sources,
                     const std::string& path) {
  std::unordered_set<std::string> names;
  for (size_t i = 0; i < r.sources.size(); ++i) {
    const std::string& s = r.sources[i];
    const std::string p = at_index(join(path, "sources"), i);
    if (!plan_sources.count(s)) fail(p, "source weight '" + s + "' is not in the plan's sources");
    if (!names.insert(s).second) fail(p, "source weight '" + s + "' is listed twice");
  }
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const RecipeStep& s = r.steps[i];
    const std::string sp = at_index(join(path, "steps"), i);
    const size_t n = s.args.size();
    size_t min_args = 1, max_args = 1;
    if (s.op == RecipeOp::kCONCAT) max_args = SIZE_MAX;
    if (s.op == RecipeOp::kFOLD_BN_KERNEL) min_args = max_args = 3;
    if (s.op == RecipeOp::kFOLD_BN_BIAS) min_args = 4, max_args = 5;
    if (n < min_args || n > max_args)
      fail(join(sp, "args"), "expected " + std::to_string(min_args) +
                                 (max_args == min_args   ? ""
                                  : max_args == SIZE_MAX ? " or more"
                                                         : " to " + std::to_string(max_args)) +
                                 " argument(s), found " + std::to_string(n));
    for (size_t k = 0; k < n; ++k) {
      const std::string ap = at_index(join(sp, "args"), k);
      if (s.op == RecipeOp::kSOURCE)
        check_index(s.args[k], r.sources.size(), false, "a source index", ap);
      else
        check_index(s.args[k], i, false, "an earlier step", ap);
    }
    if (s.op == RecipeOp::kSLICE) {
      if (s.dims.size() != 2 || s.dims[0] < 0 || s.dims[1] < 0)
        fail(join(sp, "dims"), "expected [start, length] (both >= 0), found " + to_string(s.dims));
    } else if (s.op == RecipeOp::kTRANSPOSE) {
      check_permutation(s.dims, join(sp, "dims"));
    } else if (s.op == RecipeOp::kRESHAPE) {
      checked_volume(s.dims, -1, join(sp, "dims"));
    } else if (s.op == RecipeOp::kFOLD_BN_KERNEL || s.op == RecipeOp::kFOLD_BN_BIAS) {
      if (!(s.epsilon >= 0.f && std::isfinite(s.epsilon)))
        fail(join(sp, "epsilon"), "expected a finite epsilon >= 0");
    }
  }
  if (!r.sources.empty() && r.steps.empty())
    fail(join(path, "steps"), "a recipe with sources needs steps");
}

int64_t align_up(int64_t x) {
  return (x + kBLOB_ALIGNMENT - 1) / kBLOB_ALIGNMENT * kBLOB_ALIGNMENT;
}

int64_t add_saturated(int64_t a, int64_t b) { return a > kMAX_BYTES - b ? kMAX_BYTES + 1 : a + b; }

void validate_slots(const PlanMetadata& meta,
                    const std::unordered_map<std::string, size_t>& plan_sources) {
  std::unordered_set<std::string> names;
  int64_t needed = 0;  // the slots' sizes, each rounded up to the alignment
  for (size_t i = 0; i < meta.slots.size(); ++i) {
    const Slot& s = meta.slots[i];
    const std::string path = at_index("slots", i);
    if (!names.insert(s.name).second)
      fail(join(path, "name"), "slot '" + s.name + "' appears twice");
    const int64_t bytes =
        dtype_bytes(s.desc.dtype, checked_volume(s.desc.dims, 0, join(path, "dims")));
    if (s.size_bytes != bytes)
      fail(join(path, "size_bytes"),
           "expected " + std::to_string(bytes) + " for " + std::string(dtype_name(s.desc.dtype)) +
               to_string(s.desc.dims) + ", found " + std::to_string(s.size_bytes));
    if (s.offset < 0 || s.offset % kBLOB_ALIGNMENT != 0 || s.offset > meta.blob_size - s.size_bytes)
      fail(join(path, "offset"), "expected a multiple of " + std::to_string(kBLOB_ALIGNMENT) +
                                     " in " + range(0, meta.blob_size - s.size_bytes) +
                                     " (blob_size " + std::to_string(meta.blob_size) + ", slot " +
                                     std::to_string(s.size_bytes) + " bytes), found " +
                                     std::to_string(s.offset));
    needed = add_saturated(needed, align_up(s.size_bytes));
    if (s.refittable && !meta.refit_info)
      fail(join(path, "refittable"), "a plan without refit information has no refittable slots");
    if (!meta.refit_info && !(s.recipe.sources.empty() && s.recipe.steps.empty()))
      fail(join(path, "recipe"), "a plan without refit information has no recipes");
    if (s.refittable && s.recipe.steps.empty())
      fail(join(path, "recipe"), "a refittable slot needs a recipe");
    validate_recipe(s.recipe, plan_sources, join(path, "recipe"));
  }
  // The blob is what its slots need plus alignment padding; this also keeps a stripped plan
  // from claiming more memory than its slot table describes.
  if (meta.blob_size > needed)
    fail("blob_size", "the slots need at most " + std::to_string(needed) + " bytes, found " +
                          std::to_string(meta.blob_size));
}

void validate_graph(const Graph& g, size_t slot_count) {
  const size_t nt = g.tensors.size();
  for (size_t i = 0; i < nt; ++i) {
    const GraphTensor& t = g.tensors[i];
    const std::string path = at_index("graph.tensors", i);
    checked_volume(t.desc.dims, kDYNAMIC, join(path, "dims"));
    check_index(t.slot, slot_count, t.kind != TensorKind::kWEIGHT, "a slot index",
                join(path, "slot"));
  }
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const GraphNode& n = g.nodes[i];
    const std::string path = at_index("graph.nodes", i);
    validate_params(n.params, join(path, "params"));
    for (size_t k = 0; k < n.inputs.size(); ++k)
      check_index(n.inputs[k], nt, true, "a tensor index", at_index(join(path, "inputs"), k));
    for (size_t k = 0; k < n.outputs.size(); ++k)
      check_index(n.outputs[k], nt, false, "a tensor index", at_index(join(path, "outputs"), k));
  }
  for (size_t k = 0; k < g.inputs.size(); ++k)
    check_index(g.inputs[k], nt, false, "a tensor index", at_index("graph.inputs", k));
  for (size_t k = 0; k < g.outputs.size(); ++k)
    check_index(g.outputs[k], nt, false, "a tensor index", at_index("graph.outputs", k));
}

}  // namespace

json to_json(const PlanMetadata& meta) {
  json sources = json::array();
  for (size_t i = 0; i < meta.sources.size(); ++i) {
    const SourceWeight& s = meta.sources[i];
    json o = {{"name", s.name}};
    desc_to_json(o, s.desc, at_index("sources", i));
    o["refittable"] = s.refittable;
    o["identical_hash"] = s.identical_hash ? json(hash_to_hex(*s.identical_hash)) : json(nullptr);
    sources.push_back(std::move(o));
  }
  json slots = json::array();
  for (size_t i = 0; i < meta.slots.size(); ++i) {
    const Slot& s = meta.slots[i];
    const std::string path = at_index("slots", i);
    json o = {{"name", s.name}};
    desc_to_json(o, s.desc, path);
    o["offset"] = s.offset;
    o["size_bytes"] = s.size_bytes;
    o["refittable"] = s.refittable;
    o["recipe"] = recipe_to_json(s.recipe, join(path, "recipe"));
    o["checksum"] = hash_to_hex(s.checksum);
    slots.push_back(std::move(o));
  }
  json report = json::array();
  for (const BuildReportEntry& e : meta.report)
    report.push_back({{"kind", e.kind}, {"description", e.description}, {"weights", e.weights}});
  return {{"flags", meta.flags.bits},      {"weights_version", meta.weights_version},
          {"stripped", meta.stripped},     {"refit_info", meta.refit_info},
          {"blob_size", meta.blob_size},   {"graph", graph_to_json(meta.graph)},
          {"sources", std::move(sources)}, {"slots", std::move(slots)},
          {"report", std::move(report)},   {"properties", meta.properties}};
}

std::string to_text(const PlanMetadata& meta) {
  try {
    return to_json(meta).dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::kINVALID_ARGUMENT,
                std::string("plan metadata: a name or string is not valid UTF-8: ") + e.what());
  }
}

PlanMetadata from_json(const json& j) {
  const In in(j, "");
  PlanMetadata m;
  m.flags.bits = static_cast<uint32_t>(in.i64("flags", 0, std::numeric_limits<uint32_t>::max()));
  {
    const json& v = in.at("weights_version");
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
      fail("weights_version", "expected an unsigned 64-bit integer, " + found(v));
    m.weights_version = v.get<uint64_t>();
  }
  m.stripped = in.boolean("stripped");
  m.refit_info = in.boolean("refit_info");
  m.blob_size = in.i64("blob_size", 0, kMAX_BYTES);
  m.graph = read_graph(in.object("graph"));
  const json& sources = in.array("sources");
  m.sources.reserve(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    const In s(sources[i], in.element("sources", i));
    SourceWeight out;
    out.name = s.str("name");
    out.desc = s.desc();
    out.refittable = s.boolean("refittable");
    if (!s.at("identical_hash").is_null()) out.identical_hash = s.hex("identical_hash");
    m.sources.push_back(std::move(out));
  }
  const json& slots = in.array("slots");
  m.slots.reserve(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    const In s(slots[i], in.element("slots", i));
    Slot out;
    out.name = s.str("name");
    out.desc = s.desc();
    out.offset = s.i64("offset");
    out.size_bytes = s.i64("size_bytes");
    out.refittable = s.boolean("refittable");
    out.recipe = read_recipe(s.object("recipe"));
    out.checksum = s.hex("checksum");
    m.slots.push_back(std::move(out));
  }
  const json& report = in.array("report");
  m.report.reserve(report.size());
  for (size_t i = 0; i < report.size(); ++i) {
    const In e(report[i], in.element("report", i));
    m.report.push_back({e.str("kind"), e.str("description"), e.strs("weights")});
  }
  if (j.contains("properties")) {  // optional: plans written before it existed have none
    const json& props = in.at("properties");
    if (!props.is_object()) fail("properties", "expected an object, " + found(props));
    for (const auto& [key, value] : props.items()) {
      if (!value.is_string()) fail("properties." + key, "expected a string, " + found(value));
      m.properties.emplace(key, value.get<std::string>());
    }
  }
  return m;
}

PlanMetadata from_text(std::string_view text) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw Error(ErrorCode::kCORRUPT_FILE,
                std::string("plan metadata is not valid JSON: ") + e.what());
  }
  return from_json(j);
}

void validate(const PlanMetadata& meta, int64_t weights_size) {
  if (meta.flags.bits & ~kKNOWN_FLAG_BITS)
    fail("flags", "unknown builder flag bits in " + meta.flags.to_string());
  if (meta.blob_size < 0 || meta.blob_size > kMAX_BYTES)
    fail("blob_size", "expected a size in " + range(0, kMAX_BYTES) + ", found " +
                          std::to_string(meta.blob_size));
  if (meta.stripped && !meta.refit_info)
    fail("stripped", "a stripped plan must keep its refit information (refit_info true)");
  if (!meta.refit_info && !meta.sources.empty())
    fail("sources", "a plan without refit information has no source weights");
  std::unordered_map<std::string, size_t> sources;
  for (size_t i = 0; i < meta.sources.size(); ++i) {
    const SourceWeight& s = meta.sources[i];
    const std::string path = at_index("sources", i);
    if (!sources.emplace(s.name, i).second)
      fail(join(path, "name"), "source weight '" + s.name + "' appears twice");
    checked_volume(s.desc.dims, 0, join(path, "dims"));
  }
  validate_slots(meta, sources);
  validate_graph(meta.graph, meta.slots.size());
  const int64_t expected = meta.stripped ? stripped_layout(meta).size : meta.blob_size;
  if (weights_size != expected)
    fail(meta.stripped ? "slots" : "blob_size",
         std::string(meta.stripped ? "the non-refittable slots of this stripped plan need "
                                   : "the blob needs ") +
             std::to_string(expected) + " bytes of weights section, the file has " +
             std::to_string(weights_size));
}

StoredLayout stripped_layout(const PlanMetadata& meta) {
  StoredLayout layout;
  layout.offsets.assign(meta.slots.size(), -1);
  int64_t pos = 0;
  for (size_t i = 0; i < meta.slots.size(); ++i) {
    const Slot& s = meta.slots[i];
    if (s.refittable) continue;
    const int64_t size = std::clamp<int64_t>(s.size_bytes, 0, kMAX_BYTES);
    pos = std::min(align_up(pos), kMAX_BYTES + 1);
    layout.offsets[i] = pos;
    pos = add_saturated(pos, size);
  }
  layout.size = pos;
  return layout;
}

}  // namespace bindery::plan_json
