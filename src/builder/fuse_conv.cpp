// Passes 2 and 4: Conv + BatchNorm folding and Conv + activation fusion.
//
// BatchNorm folds into the convolution through kFOLD_BN_* recipes, so the BN parameters stay
// refittable: a refit replays the fold. An activation fuses into the convolution's epilogue;
// an elementwise activation's constant (clip bound, scale) is baked into the epilogue, which
// is only possible when that constant cannot change: a refittable one gives the fusion up.

#include <string>

#include "bindery/error.h"
#include "builder/build_state.h"
#include "core/half.h"

namespace bindery::build {

namespace {

// The single live consumer of `t`, if `t` is not observable and has exactly one.
int sole_consumer(const BuildState& s, int t) {
  if (s.observable(t)) return -1;
  const auto c = s.consumers(t);
  return c.size() == 1 ? c[0] : -1;
}

std::string weight_list(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "'" : ", '") + n + "'";
  return out;
}

}  // namespace

void fold_conv_batchnorm(BuildState& s) {
  for (size_t i = 0; i < s.graph.nodes.size(); ++i) {
    if (s.dead[i] || s.graph.nodes[i].type != LayerType::kCONVOLUTION) continue;
    GraphNode& conv = s.graph.nodes[i];
    const int bn_index = sole_consumer(s, conv.outputs[0]);
    if (bn_index < 0 || s.graph.nodes[bn_index].type != LayerType::kBATCHNORM) continue;
    const GraphNode& bn = s.graph.nodes[bn_index];
    if (bn.inputs[0] != conv.outputs[0]) continue;
    const int kernel = conv.inputs[1], conv_bias = conv.inputs.size() > 2 ? conv.inputs[2] : -1;
    std::vector<int> ws = {kernel, bn.inputs[1], bn.inputs[2], bn.inputs[3], bn.inputs[4]};
    if (conv_bias >= 0) ws.push_back(conv_bias);
    bool all_weights = true;
    for (int t : ws) all_weights = all_weights && s.is_weight(t);
    if (!all_weights) continue;
    if (!s.uniform_refittability(ws)) {
      s.note("given_up",
             "folding " + bn.name + " into " + conv.name +
                 ": only some of its weights are refittable (" +
                 weight_list(s.refittable_names(ws)) + ")",
             s.refittable_names(ws));
      continue;
    }
    const float eps = std::get<BatchNormParams>(bn.params).epsilon;
    RecipeStep k{RecipeOp::kFOLD_BN_KERNEL};
    k.epsilon = eps;
    const Recipe* kargs[] = {&s.weight_of(kernel).recipe, &s.weight_of(bn.inputs[1]).recipe,
                             &s.weight_of(bn.inputs[4]).recipe};
    RecipeStep b{RecipeOp::kFOLD_BN_BIAS};
    b.epsilon = eps;
    std::vector<const Recipe*> bargs = {
        &s.weight_of(bn.inputs[1]).recipe, &s.weight_of(bn.inputs[2]).recipe,
        &s.weight_of(bn.inputs[3]).recipe, &s.weight_of(bn.inputs[4]).recipe};
    if (conv_bias >= 0) bargs.push_back(&s.weight_of(conv_bias).recipe);
    const TensorDesc kdesc{DataType::kFLOAT, s.graph.tensors[kernel].desc.dims};
    const TensorDesc bdesc{DataType::kFLOAT, {kdesc.dims[0]}};
    // Compose both before adding either: adding a weight may move the recipes kargs points to.
    Recipe kernel_recipe = compose(k, kargs), bias_recipe = compose(b, bargs);
    const int new_kernel =
        s.add_weight_tensor(conv.name + ".folded_kernel", {std::move(kernel_recipe), kdesc});
    const int new_bias =
        s.add_weight_tensor(conv.name + ".folded_bias", {std::move(bias_recipe), bdesc});
    GraphNode& c = s.graph.nodes[i];
    c.inputs = {c.inputs[0], new_kernel, new_bias};
    c.outputs = {s.graph.nodes[bn_index].outputs[0]};
    s.dead[bn_index] = true;
    s.note("folding", s.graph.nodes[bn_index].name + " folded into " + c.name +
                          (s.any_refittable(new_kernel) ? " (by recipe: stays refittable)" : ""));
  }
}

void fuse_conv_activations(BuildState& s) {
  for (size_t i = 0; i < s.graph.nodes.size(); ++i) {
    if (s.dead[i] || s.graph.nodes[i].type != LayerType::kCONVOLUTION) continue;
    while (true) {
      GraphNode& conv = s.graph.nodes[i];
      const int out = conv.outputs[0];
      const int next = sole_consumer(s, out);
      if (next < 0) break;
      const GraphNode& act = s.graph.nodes[next];
      EpilogueStep step;
      if (act.type == LayerType::kUNARY) {
        step.is_unary = true;
        step.unary = std::get<UnaryParams>(act.params).op;
      } else if (act.type == LayerType::kELEMENTWISE) {
        const ElementwiseOp op = std::get<ElementwiseParams>(act.params).op;
        const bool commutative = op == ElementwiseOp::kSUM || op == ElementwiseOp::kPROD ||
                                 op == ElementwiseOp::kMIN || op == ElementwiseOp::kMAX;
        int other = -1;
        if (act.inputs[0] == out)
          other = act.inputs[1];
        else if (commutative && act.inputs[1] == out)
          other = act.inputs[0];
        if (other < 0 || other == out || !s.is_weight(other)) break;
        // The constant must be a scalar or one value per output channel, and not change the shape.
        const Dims& od = s.graph.tensors[out].desc.dims;
        const Dims& cd = s.graph.tensors[other].desc.dims;
        if (s.graph.tensors[act.outputs[0]].desc.dims != od || cd.size() > od.size()) break;
        bool per_channel_ok = true;
        for (size_t k = 0; k < cd.size(); ++k) {
          const size_t axis = od.size() - cd.size() + k;
          if (cd[k] != 1 && axis != 1) per_channel_ok = false;
        }
        if (!per_channel_ok) break;
        const auto refittable = s.refittable_names(std::span(&other, 1));
        if (!refittable.empty() && !s.flags.has(BuilderFlag::kREFIT_IDENTICAL)) {
          s.note("given_up",
                 "fusing " + act.name + " (" + std::string(elementwise_op_name(op)) + ") into " +
                     conv.name + ": its constant " + weight_list(refittable) +
                     " is refittable and would be baked",
                 refittable);
          break;
        }
        const HostTensor v = s.value(other);
        step.is_unary = false;
        step.binary = op;
        step.constant.resize(v.count());
        to_f32(v.dtype(), v.data(), step.constant.data(), v.count());
      } else {
        break;
      }
      auto& epilogue = std::get<ConvParams>(conv.params).epilogue;
      epilogue.push_back(step);
      conv.outputs = {act.outputs[0]};
      s.dead[next] = true;
      s.note("fusion", conv.name + " + " + act.name + " (" +
                           std::string(step.is_unary ? unary_op_name(step.unary)
                                                     : elementwise_op_name(step.binary)) +
                           ") fused");
    }
  }
}

}  // namespace bindery::build
