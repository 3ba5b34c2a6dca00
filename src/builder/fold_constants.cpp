// Pass 1: constant folding. A node whose inputs are all weights is removed and its output
// becomes a weight. Layout ops (reshape, transpose, float cast, concat, unit-stride slice)
// fold into recipes, so they stay refittable; anything else is computed by the CPU kernel at
// build time, which is only allowed for weights that cannot change (not refittable, or
// kREFIT_IDENTICAL) — otherwise the folding is given up and reported.

#include "bindery/error.h"
#include "builder/build_state.h"
#include "runtime/cpu/kernels.h"

namespace bindery::build {

namespace {

int axis_of(int axis, size_t rank) { return axis < 0 ? axis + static_cast<int>(rank) : axis; }

// The recipe for a layout op over weight inputs, or nullopt if the op is not a layout op.
std::optional<Recipe> layout_recipe(const BuildState& s, const GraphNode& n,
                                    const TensorDesc& out) {
  const BuildWeight& in = s.weight_of(n.inputs[0]);
  const Recipe* arg = &in.recipe;
  switch (n.type) {
    case LayerType::kRESHAPE: {
      RecipeStep st{RecipeOp::kRESHAPE};
      st.dims = out.dims;
      return compose(st, std::span(&arg, 1));
    }
    case LayerType::kTRANSPOSE: {
      RecipeStep st{RecipeOp::kTRANSPOSE};
      for (int p : std::get<TransposeParams>(n.params).perm) st.dims.push_back(p);
      return compose(st, std::span(&arg, 1));
    }
    case LayerType::kCAST: {
      const DataType to = std::get<CastParams>(n.params).to;
      if (!(is_floating(to) && is_floating(in.desc.dtype)) && to != in.desc.dtype)
        return std::nullopt;
      RecipeStep st{RecipeOp::kCAST};
      st.dtype = to;
      return compose(st, std::span(&arg, 1));
    }
    case LayerType::kCONCAT: {
      RecipeStep st{RecipeOp::kCONCAT};
      st.axis = axis_of(std::get<ConcatParams>(n.params).axis, out.dims.size());
      std::vector<const Recipe*> args;
      for (int t : n.inputs) args.push_back(&s.weight_of(t).recipe);
      return compose(st, args);
    }
    case LayerType::kSLICE: {
      const auto& p = std::get<SliceParams>(n.params);
      for (int64_t st : p.stride)
        if (st != 1) return std::nullopt;
      Recipe r = in.recipe;
      for (size_t ax = 0; ax < in.desc.dims.size(); ++ax) {
        if (p.start[ax] == 0 && out.dims[ax] == in.desc.dims[ax]) continue;
        RecipeStep st{RecipeOp::kSLICE};
        st.axis = static_cast<int>(ax);
        st.dims = {p.start[ax], out.dims[ax]};
        const Recipe* a = &r;
        r = compose(st, std::span(&a, 1));
      }
      return r;
    }
    default: return std::nullopt;
  }
}

}  // namespace

void fold_constants(BuildState& s) {
  for (size_t i = 0; i < s.graph.nodes.size(); ++i) {
    if (s.dead[i]) continue;
    const GraphNode& n = s.graph.nodes[i];
    bool all_weights = !n.inputs.empty();
    std::vector<int> inputs;
    for (int t : n.inputs) {
      if (t < 0) continue;
      all_weights = all_weights && s.is_weight(t);
      inputs.push_back(t);
    }
    if (!all_weights || n.outputs.size() != 1) continue;
    std::vector<TensorDesc> in_descs;
    for (int t : n.inputs) in_descs.push_back(t < 0 ? kABSENT_DESC : s.graph.tensors[t].desc);
    const TensorDesc out = s.graph.tensors[n.outputs[0]].desc;
    if (is_dynamic(out.dims)) continue;

    if (s.uniform_refittability(inputs)) {
      if (auto r = layout_recipe(s, n, out)) {
        s.note("folding", n.name + " (" + std::string(layer_type_name(n.type)) +
                              ") folded into the recipe " + r->to_string());
        s.make_weight(n.outputs[0], {std::move(*r), out});
        s.dead[i] = true;
        continue;
      }
    }
    const auto refittable = s.refittable_names(inputs);
    if (!refittable.empty() && !s.flags.has(BuilderFlag::kREFIT_IDENTICAL)) {
      s.note("given_up",
             "constant folding of " + n.name + " (" + std::string(layer_type_name(n.type)) +
                 "): its weights are refittable, so it runs at inference",
             refittable);
      continue;
    }
    // Computed now by the same kernel the runtime would run.
    std::vector<HostTensor> values;
    std::vector<cpu::TensorRef> refs;
    for (int t : n.inputs) {
      if (t < 0) {
        refs.push_back({});
        continue;
      }
      values.push_back(s.value(t));
      refs.push_back({values.back().dtype(), values.back().shape(), values.back().data()});
    }
    HostTensor result(out.dtype, out.dims);
    const cpu::TensorRef out_ref{out.dtype, out.dims, result.data()};
    cpu::run_node(n, refs, std::span(&out_ref, 1));
    s.note("folding",
           n.name + " (" + std::string(layer_type_name(n.type)) + ") computed at build time");
    s.make_weight(n.outputs[0],
                  s.add_folded_source(s.graph.tensors[n.outputs[0]].name, std::move(result)));
    s.dead[i] = true;
  }
}

}  // namespace bindery::build
