// Pass 5: float weights are stored in the requested precision (kFP16 / kBF16) through a cast
// recipe. Only weights read by ops that widen their inputs to f32 are cast, so activations
// keep their dtype.

#include "builder/build_state.h"

namespace bindery::build {

void cast_weights(BuildState& s) {
  DataType to;
  if (s.flags.has(BuilderFlag::kBF16))
    to = DataType::kBF16;
  else if (s.flags.has(BuilderFlag::kFP16))
    to = DataType::kHALF;
  else
    return;
  int cast = 0;
  for (size_t t = 0; t < s.graph.tensors.size(); ++t) {
    GraphTensor& gt = s.graph.tensors[t];
    if (gt.kind != TensorKind::kWEIGHT || gt.desc.dtype != DataType::kFLOAT ||
        s.observable(static_cast<int>(t)))
      continue;
    const auto users = s.consumers(static_cast<int>(t));
    bool widening = !users.empty();
    for (int u : users) {
      switch (s.graph.nodes[u].type) {
        case LayerType::kMATMUL:
        case LayerType::kELEMENTWISE:
        case LayerType::kCONVOLUTION:
        case LayerType::kBATCHNORM:
        case LayerType::kRMSNORM:
        case LayerType::kLAYERNORM:
        case LayerType::kGATHER:
        case LayerType::kMOE: break;
        default: widening = false;
      }
    }
    if (!widening) continue;
    BuildWeight& w = s.weights[gt.slot];
    RecipeStep step{RecipeOp::kCAST};
    step.dtype = to;
    const Recipe* arg = &w.recipe;
    w.recipe = compose(step, std::span(&arg, 1));
    w.desc.dtype = to;
    gt.desc.dtype = to;
    ++cast;
  }
  if (cast)
    s.note("cast",
           std::to_string(cast) + " weight tensors stored as " + std::string(dtype_name(to)));
}

}  // namespace bindery::build
