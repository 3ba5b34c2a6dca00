#include "bindery/recipe.h"

#include <cmath>
#include <cstring>
#include <optional>
#include <set>

#include "bindery/error.h"
#include "core/half.h"
#include "plan/tensor_ops.h"

namespace bindery {

namespace {

std::string_view op_name(RecipeOp op) {
  switch (op) {
    case RecipeOp::kSOURCE: return "source";
    case RecipeOp::kCONCAT: return "concat";
    case RecipeOp::kSLICE: return "slice";
    case RecipeOp::kTRANSPOSE: return "transpose";
    case RecipeOp::kRESHAPE: return "reshape";
    case RecipeOp::kCAST: return "cast";
    case RecipeOp::kFOLD_BN_KERNEL: return "fold_bn_kernel";
    case RecipeOp::kFOLD_BN_BIAS: return "fold_bn_bias";
  }
  return "?";
}

std::string step_label(const Recipe& r, size_t i) {
  return "recipe step " + std::to_string(i) + " (" + std::string(op_name(r.steps[i].op)) + ")";
}

int norm_axis(int axis, size_t rank) { return axis < 0 ? axis + static_cast<int>(rank) : axis; }

// dtype and dims of every step's result.
std::vector<TensorDesc> step_descs(const Recipe& r, std::span<const TensorDesc> sources) {
  check(sources.size() == r.sources.size(), ErrorCode::kINTERNAL,
        "recipe has " + std::to_string(r.sources.size()) + " sources, given " +
            std::to_string(sources.size()));
  check(!r.steps.empty(), ErrorCode::kCORRUPT_FILE, "recipe has no steps");
  std::vector<TensorDesc> d;
  d.reserve(r.steps.size());
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const RecipeStep& s = r.steps[i];
    const auto arg = [&](size_t k) -> const TensorDesc& {
      check(k < s.args.size() && s.args[k] >= 0 && static_cast<size_t>(s.args[k]) < i,
            ErrorCode::kCORRUPT_FILE,
            step_label(r, i) + ": argument " + std::to_string(k) + " invalid");
      return d[s.args[k]];
    };
    const auto fail = [&](ErrorCode c, const std::string& m) {
      throw Error(c, step_label(r, i) + ": " + m);
    };
    TensorDesc out;
    switch (s.op) {
      case RecipeOp::kSOURCE:
        check(
            s.args.size() == 1 && s.args[0] >= 0 && static_cast<size_t>(s.args[0]) < sources.size(),
            ErrorCode::kCORRUPT_FILE, step_label(r, i) + ": bad source index");
        out = sources[s.args[0]];
        break;
      case RecipeOp::kCONCAT: {
        if (s.args.empty()) fail(ErrorCode::kCORRUPT_FILE, "no inputs");
        out = arg(0);
        const int ax = norm_axis(s.axis, out.dims.size());
        if (ax < 0 || ax >= static_cast<int>(out.dims.size()))
          fail(ErrorCode::kCORRUPT_FILE, "axis out of range");
        for (size_t k = 1; k < s.args.size(); ++k) {
          const TensorDesc& a = arg(k);
          if (a.dtype != out.dtype)
            fail(ErrorCode::kDTYPE_MISMATCH, "inputs have dtypes " +
                                                 std::string(dtype_name(out.dtype)) + " and " +
                                                 std::string(dtype_name(a.dtype)));
          bool ok = a.dims.size() == out.dims.size();
          for (size_t j = 0; ok && j < a.dims.size(); ++j)
            ok = (static_cast<int>(j) == ax) || a.dims[j] == out.dims[j];
          if (!ok)
            fail(ErrorCode::kSHAPE_MISMATCH, "cannot concat " + to_string(out.dims) + " and " +
                                                 to_string(a.dims) + " along axis " +
                                                 std::to_string(ax));
          out.dims[ax] += a.dims[ax];
        }
        break;
      }
      case RecipeOp::kSLICE: {
        out = arg(0);
        const int ax = norm_axis(s.axis, out.dims.size());
        if (ax < 0 || ax >= static_cast<int>(out.dims.size()) || s.dims.size() != 2 ||
            s.dims[0] < 0 || s.dims[1] < 0 || s.dims[0] + s.dims[1] > out.dims[ax])
          fail(ErrorCode::kSHAPE_MISMATCH, "slice out of range of " + to_string(out.dims));
        out.dims[ax] = s.dims[1];
        break;
      }
      case RecipeOp::kTRANSPOSE: {
        const TensorDesc& a = arg(0);
        std::set<int64_t> seen(s.dims.begin(), s.dims.end());
        if (s.dims.size() != a.dims.size() || seen.size() != s.dims.size() ||
            (!s.dims.empty() &&
             (*seen.begin() != 0 || *seen.rbegin() != static_cast<int64_t>(s.dims.size()) - 1)))
          fail(ErrorCode::kCORRUPT_FILE,
               "permutation " + to_string(s.dims) + " for rank " + std::to_string(a.dims.size()));
        out.dtype = a.dtype;
        for (int64_t p : s.dims) out.dims.push_back(a.dims[p]);
        break;
      }
      case RecipeOp::kRESHAPE: {
        const TensorDesc& a = arg(0);
        if (is_dynamic(s.dims) || volume(s.dims) != volume(a.dims))
          fail(ErrorCode::kSHAPE_MISMATCH,
               "reshape " + to_string(a.dims) + " -> " + to_string(s.dims));
        out = {a.dtype, s.dims};
        break;
      }
      case RecipeOp::kCAST: {
        const TensorDesc& a = arg(0);
        if (a.dtype != s.dtype && !(is_floating(a.dtype) && is_floating(s.dtype)))
          fail(ErrorCode::kDTYPE_MISMATCH, "cannot cast " + std::string(dtype_name(a.dtype)) +
                                               " to " + std::string(dtype_name(s.dtype)));
        out = {s.dtype, a.dims};
        break;
      }
      case RecipeOp::kFOLD_BN_KERNEL:
      case RecipeOp::kFOLD_BN_BIAS: {
        const bool kernel = s.op == RecipeOp::kFOLD_BN_KERNEL;
        const size_t n = s.args.size();
        if (kernel ? n != 3 : (n != 4 && n != 5))
          fail(ErrorCode::kCORRUPT_FILE, "wrong argument count");
        for (size_t k = 0; k < n; ++k)
          if (!is_floating(arg(k).dtype))
            fail(ErrorCode::kDTYPE_MISMATCH, "argument " + std::to_string(k) + " is not float");
        const int64_t channels =
            kernel ? (arg(0).dims.empty() ? -1 : arg(0).dims[0]) : volume(arg(0).dims);
        for (size_t k = kernel ? 1 : 0; k < n; ++k)
          if (arg(k).dims.size() != 1 || arg(k).dims[0] != channels)
            fail(ErrorCode::kSHAPE_MISMATCH, "argument " + std::to_string(k) + " is " +
                                                 to_string(arg(k).dims) + ", expected [" +
                                                 std::to_string(channels) + "]");
        out = {DataType::kFLOAT, kernel ? arg(0).dims : Dims{channels}};
        break;
      }
      default: fail(ErrorCode::kCORRUPT_FILE, "unknown op");
    }
    d.push_back(std::move(out));
  }
  return d;
}

// Sources each step depends on.
std::vector<std::set<int>> step_dependencies(const Recipe& r) {
  std::vector<std::set<int>> deps(r.steps.size());
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const RecipeStep& s = r.steps[i];
    if (s.op == RecipeOp::kSOURCE) {
      deps[i].insert(s.args.at(0));
    } else {
      for (int a : s.args) deps[i].insert(deps.at(a).begin(), deps.at(a).end());
    }
  }
  return deps;
}

std::vector<float> as_floats(const Weights& t) {
  std::vector<float> f(t.count());
  to_f32(t.dtype, t.values, f.data(), t.count());
  return f;
}

HostTensor fold_bn(const RecipeStep& s, const std::vector<Weights>& a) {
  const float eps = s.epsilon;
  const auto scale_of = [&](const std::vector<float>& g, const std::vector<float>& v, size_t c) {
    return g[c] / std::sqrt(v[c] + eps);
  };
  if (s.op == RecipeOp::kFOLD_BN_KERNEL) {
    const auto k = as_floats(a[0]), g = as_floats(a[1]), v = as_floats(a[2]);
    HostTensor out(DataType::kFLOAT, a[0].shape);
    float* o = out.data_as<float>();
    const size_t channels = g.size(), per = channels ? k.size() / channels : 0;
    for (size_t c = 0; c < channels; ++c) {
      const float m = scale_of(g, v, c);
      for (size_t j = 0; j < per; ++j) o[c * per + j] = k[c * per + j] * m;
    }
    return out;
  }
  const auto g = as_floats(a[0]), b = as_floats(a[1]), mean = as_floats(a[2]), v = as_floats(a[3]);
  std::vector<float> cb(g.size(), 0.f);
  if (a.size() == 5) cb = as_floats(a[4]);
  HostTensor out(DataType::kFLOAT, {static_cast<int64_t>(g.size())});
  float* o = out.data_as<float>();
  for (size_t c = 0; c < g.size(); ++c) o[c] = (cb[c] - mean[c]) * scale_of(g, v, c) + b[c];
  return out;
}

// Evaluates steps needed for `target` (all steps when target is the last one) from the given
// sources; `available[i]` is null for sources not provided (their steps must not be needed).
HostTensor eval_steps(const Recipe& r, const std::vector<TensorDesc>& descs,
                      std::span<const Weights* const> available, size_t target) {
  std::vector<bool> needed(r.steps.size(), false);
  needed[target] = true;
  for (size_t i = target + 1; i-- > 0;)
    if (needed[i])
      for (int a : r.steps[i].op == RecipeOp::kSOURCE ? std::vector<int>{} : r.steps[i].args)
        needed[a] = true;
  std::vector<HostTensor> v(r.steps.size());
  std::vector<Weights> views(r.steps.size());
  for (size_t i = 0; i <= target; ++i) {
    if (!needed[i]) continue;
    const RecipeStep& s = r.steps[i];
    const auto in = [&](size_t k) -> const Weights& { return views[s.args[k]]; };
    switch (s.op) {
      case RecipeOp::kSOURCE: {
        const Weights* w = available[s.args[0]];
        check(w != nullptr, ErrorCode::kINTERNAL,
              "recipe source '" + r.sources[s.args[0]] + "' not provided");
        views[i] = *w;  // no copy: later steps read it in place
        continue;
      }
      case RecipeOp::kCONCAT: {
        HostTensor out(descs[i].dtype, descs[i].dims);
        std::vector<Weights> parts;
        for (size_t k = 0; k < s.args.size(); ++k) parts.push_back(in(k));
        concat_into(parts, norm_axis(s.axis, descs[i].dims.size()), out);
        v[i] = std::move(out);
        break;
      }
      case RecipeOp::kSLICE:
        v[i] = slice_axis(in(0), norm_axis(s.axis, descs[i].dims.size()), s.dims[0], s.dims[1]);
        break;
      case RecipeOp::kTRANSPOSE: v[i] = transpose(in(0), s.dims); break;
      case RecipeOp::kRESHAPE:
        views[i] = Weights(in(0).dtype, s.dims, in(0).values);  // same bytes, owned by the arg
        continue;
      case RecipeOp::kCAST: v[i] = cast(in(0), s.dtype); break;
      case RecipeOp::kFOLD_BN_KERNEL:
      case RecipeOp::kFOLD_BN_BIAS: {
        std::vector<Weights> args;
        for (size_t k = 0; k < s.args.size(); ++k) args.push_back(in(k));
        v[i] = fold_bn(s, args);
        break;
      }
    }
    views[i] = v[i].view();
  }
  if (!v[target].empty()) return std::move(v[target]);
  return HostTensor::copy_of(views[target]);
}

std::vector<TensorDesc> descs_of(std::span<const Weights> sources) {
  std::vector<TensorDesc> d;
  for (const Weights& w : sources) d.push_back({w.dtype, w.shape});
  return d;
}

// For separable recipes: the chain root -> casts -> concat. Returns the concat step index
// (or -1 when the whole recipe depends on a single source) and the cast steps above it.
struct SeparableShape {
  int concat = -1;
  std::vector<int> casts;  // from just above the concat up to the root
};

std::optional<SeparableShape> separable_shape(const Recipe& r) {
  const auto deps = step_dependencies(r);
  const int root = static_cast<int>(r.steps.size()) - 1;
  if (deps[root].size() <= 1) return SeparableShape{};
  SeparableShape shape;
  int i = root;
  while (r.steps[i].op == RecipeOp::kCAST) {
    shape.casts.insert(shape.casts.begin(), i);
    i = r.steps[i].args[0];
  }
  if (r.steps[i].op != RecipeOp::kCONCAT) return std::nullopt;
  std::set<int> seen;
  for (int a : r.steps[i].args) {
    if (deps[a].size() != 1 || !seen.insert(*deps[a].begin()).second) return std::nullopt;
  }
  shape.concat = i;
  return shape;
}

}  // namespace

Recipe Recipe::identity(const std::string& source) {
  Recipe r;
  r.sources = {source};
  r.steps = {RecipeStep{RecipeOp::kSOURCE, {0}}};
  return r;
}

int Recipe::source_index(const std::string& name) const {
  for (size_t i = 0; i < sources.size(); ++i)
    if (sources[i] == name) return static_cast<int>(i);
  return -1;
}

std::string Recipe::to_string() const {
  if (steps.empty()) return "baked";
  std::vector<std::string> text(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const RecipeStep& s = steps[i];
    if (s.op == RecipeOp::kSOURCE) {
      text[i] =
          s.args.size() == 1 && s.args[0] >= 0 && static_cast<size_t>(s.args[0]) < sources.size()
              ? sources[s.args[0]]
              : "?";
      continue;
    }
    std::string t = std::string(op_name(s.op)) + "(";
    if (s.op == RecipeOp::kCONCAT || s.op == RecipeOp::kSLICE)
      t += "axis=" + std::to_string(s.axis) + ", ";
    if (s.op == RecipeOp::kSLICE)
      t += "start=" + std::to_string(s.dims.size() > 0 ? s.dims[0] : 0) +
           ", len=" + std::to_string(s.dims.size() > 1 ? s.dims[1] : 0) + ", ";
    if (s.op == RecipeOp::kTRANSPOSE) t += "perm=" + bindery::to_string(s.dims) + ", ";
    if (s.op == RecipeOp::kRESHAPE) t += "shape=" + bindery::to_string(s.dims) + ", ";
    if (s.op == RecipeOp::kCAST) t += std::string(dtype_name(s.dtype)) + ", ";
    if (s.op == RecipeOp::kFOLD_BN_KERNEL || s.op == RecipeOp::kFOLD_BN_BIAS)
      t += "eps=" + std::to_string(s.epsilon) + ", ";
    for (size_t k = 0; k < s.args.size(); ++k) {
      if (k) t += ", ";
      t += s.args[k] >= 0 && static_cast<size_t>(s.args[k]) < i ? text[s.args[k]] : "?";
    }
    text[i] = t + ")";
  }
  return text.back();
}

TensorDesc recipe_result_desc(const Recipe& r, std::span<const TensorDesc> sources) {
  return step_descs(r, sources).back();
}

void evaluate_recipe(const Recipe& r, std::span<const Weights> sources, HostTensor& out) {
  HostTensor result = evaluate_recipe(r, sources);
  check(result.dtype() == out.dtype() && result.shape() == out.shape(), ErrorCode::kSHAPE_MISMATCH,
        "recipe " + r.to_string() + " gives " + std::string(dtype_name(result.dtype())) +
            to_string(result.shape()) + ", slot is " + std::string(dtype_name(out.dtype())) +
            to_string(out.shape()));
  std::memcpy(out.data(), result.data(), out.size_bytes());
}

HostTensor evaluate_recipe(const Recipe& r, std::span<const Weights> sources) {
  const auto descs = step_descs(r, descs_of(sources));
  std::vector<const Weights*> avail;
  for (const Weights& w : sources) {
    check(w.on_host(), ErrorCode::kDEVICE,
          "CPU recipe evaluation needs host weights, got " + describe(w));
    avail.push_back(&w);
  }
  return eval_steps(r, descs, avail, r.steps.size() - 1);
}

bool recipe_is_separable(const Recipe& r) {
  return !r.steps.empty() && separable_shape(r).has_value();
}

void evaluate_recipe_region(const Recipe& r, std::span<const TensorDesc> sources, int source_index,
                            const Weights& source, void* slot_data) {
  const auto shape = separable_shape(r);
  check(shape.has_value(), ErrorCode::kINTERNAL, "recipe " + r.to_string() + " is not separable");
  const auto descs = step_descs(r, sources);
  std::vector<const Weights*> avail(r.sources.size(), nullptr);
  avail.at(source_index) = &source;
  if (shape->concat < 0) {  // one source determines the whole slot
    HostTensor all = eval_steps(r, descs, avail, r.steps.size() - 1);
    std::memcpy(slot_data, all.data(), all.size_bytes());
    return;
  }
  const RecipeStep& concat = r.steps[shape->concat];
  const auto deps = step_dependencies(r);
  int64_t offset = 0;
  for (int a : concat.args) {
    if (*deps[a].begin() == source_index) {
      HostTensor part = eval_steps(r, descs, avail, a);
      for (int c : shape->casts) part = cast(part.view(), r.steps[c].dtype);
      const TensorDesc& whole = descs.back();
      write_block(part.view(), norm_axis(concat.axis, whole.dims.size()), offset, slot_data,
                  whole.dims);
      return;
    }
    offset += descs[a].dims[norm_axis(concat.axis, descs[a].dims.size())];
  }
  throw Error(ErrorCode::kINTERNAL,
              "source " + std::to_string(source_index) + " not in recipe " + r.to_string());
}

std::optional<RecipeRegion> recipe_direct_region(const Recipe& r,
                                                 std::span<const TensorDesc> sources,
                                                 int source_index) {
  if (r.steps.empty()) return std::nullopt;
  const RecipeStep& root = r.steps.back();
  const auto is_this_source = [&](int step) {
    return r.steps[step].op == RecipeOp::kSOURCE && r.steps[step].args[0] == source_index;
  };
  if (root.op == RecipeOp::kSOURCE) {
    if (root.args[0] != source_index) return std::nullopt;
    return RecipeRegion{0, 0};
  }
  if (root.op != RecipeOp::kCONCAT || !recipe_is_separable(r)) return std::nullopt;
  const auto descs = step_descs(r, sources);
  const int ax = norm_axis(root.axis, descs.back().dims.size());
  int64_t offset = 0;
  for (int a : root.args) {
    if (is_this_source(a)) return RecipeRegion{ax, offset};
    offset += descs[a].dims[ax];
  }
  return std::nullopt;
}

std::optional<RecipeRegion> recipe_cast_region(const Recipe& r, std::span<const TensorDesc> sources,
                                               int source_index) {
  if (r.steps.empty() || !recipe_is_separable(r)) return std::nullopt;
  int casts = 0;
  const auto peel = [&](int step) {
    while (r.steps[step].op == RecipeOp::kCAST) {
      ++casts;
      step = r.steps[step].args[0];
    }
    return step;
  };
  const int root = peel(static_cast<int>(r.steps.size()) - 1);
  const auto is_this_source = [&](int step) {
    return r.steps[step].op == RecipeOp::kSOURCE && r.steps[step].args[0] == source_index;
  };
  // Two casts in a row round twice, which one conversion of the source would not.
  if (is_this_source(root)) return casts == 1 ? std::optional(RecipeRegion{0, 0}) : std::nullopt;
  if (r.steps[root].op != RecipeOp::kCONCAT) return std::nullopt;
  const auto descs = step_descs(r, sources);
  const int ax = norm_axis(r.steps[root].axis, descs[root].dims.size());
  int64_t offset = 0;
  for (int a : r.steps[root].args) {
    const int before = casts;
    if (is_this_source(peel(a)))
      return casts == 1 ? std::optional(RecipeRegion{ax, offset}) : std::nullopt;
    casts = before;
    offset += descs[a].dims[ax];
  }
  return std::nullopt;
}

std::optional<SourceBlock> recipe_source_block(const Recipe& r, int source_index) {
  std::optional<SourceBlock> block;
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const RecipeStep& s = r.steps[i];
    if (s.op == RecipeOp::kSOURCE) continue;
    for (int a : s.args) {
      const RecipeStep& arg = r.steps[a];
      if (arg.op != RecipeOp::kSOURCE || arg.args[0] != source_index) continue;
      if (s.op != RecipeOp::kSLICE) return std::nullopt;  // read whole
      const SourceBlock b{s.axis, s.dims[0], s.dims[1]};
      if (block && !(*block == b)) return std::nullopt;
      block = b;
    }
  }
  // A source step that is the result itself is read whole.
  const RecipeStep& last = r.steps.back();
  if (last.op == RecipeOp::kSOURCE && last.args[0] == source_index) return std::nullopt;
  return block;
}

Recipe narrow_recipe(const Recipe& r, int source_index) {
  check(recipe_source_block(r, source_index).has_value(), ErrorCode::kINTERNAL,
        "recipe " + r.to_string() + " does not read a block of its source " +
            std::to_string(source_index));
  Recipe out;
  out.sources = r.sources;
  std::vector<int> renumbered(r.steps.size(), -1);
  for (size_t i = 0; i < r.steps.size(); ++i) {
    RecipeStep s = r.steps[i];
    if (s.op == RecipeOp::kSLICE && r.steps[s.args[0]].op == RecipeOp::kSOURCE &&
        r.steps[s.args[0]].args[0] == source_index) {
      renumbered[i] = renumbered[s.args[0]];  // the slice is now the source itself
      continue;
    }
    if (s.op != RecipeOp::kSOURCE)
      for (int& a : s.args) a = renumbered[a];
    renumbered[i] = static_cast<int>(out.steps.size());
    out.steps.push_back(std::move(s));
  }
  return out;
}

HostTensor invert_recipe(const Recipe& r, std::span<const TensorDesc> sources, int source_index,
                         const Weights& slot) {
  const auto descs = step_descs(r, sources);
  const auto deps = step_dependencies(r);
  HostTensor value = HostTensor::copy_of(slot);
  int i = static_cast<int>(r.steps.size()) - 1;
  while (true) {
    const RecipeStep& s = r.steps[i];
    switch (s.op) {
      case RecipeOp::kSOURCE: return value;
      case RecipeOp::kCAST:
        value = cast(value.view(), descs[s.args[0]].dtype);
        i = s.args[0];
        break;
      case RecipeOp::kRESHAPE:
        value.reshape(descs[s.args[0]].dims);
        i = s.args[0];
        break;
      case RecipeOp::kTRANSPOSE: {
        std::vector<int64_t> inverse(s.dims.size());
        for (size_t k = 0; k < s.dims.size(); ++k) inverse[s.dims[k]] = static_cast<int64_t>(k);
        value = transpose(value.view(), inverse);
        i = s.args[0];
        break;
      }
      case RecipeOp::kCONCAT: {
        const int ax = norm_axis(s.axis, descs[i].dims.size());
        int64_t offset = 0;
        int next = -1;
        for (int a : s.args) {
          if (deps[a].count(source_index)) {
            next = a;
            break;
          }
          offset += descs[a].dims[ax];
        }
        check(next >= 0, ErrorCode::kINTERNAL, "source not found in concat");
        value = slice_axis(value.view(), ax, offset, descs[next].dims[ax]);
        i = next;
        break;
      }
      default:
        throw Error(ErrorCode::kNOT_INVERTIBLE,
                    "weight '" + r.sources.at(source_index) + "' cannot be read back: " +
                        step_label(r, i) + " of recipe " + r.to_string() + " cannot be inverted");
    }
  }
}

}  // namespace bindery
