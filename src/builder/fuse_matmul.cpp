// Pass 3: matmuls that read the same activation with weights on the other side (Q, K, V;
// gate and up) become one matmul over the concatenated weights, followed by slices that give
// back each original output. The concat is a recipe, so each part stays refittable — and,
// the recipe being separable, refittable on its own (only Q of a fused QKV).

#include <map>
#include <tuple>

#include "builder/build_state.h"

namespace bindery::build {

void fuse_shared_input_matmuls(BuildState& s) {
  // key: (activation input, transpose_a, transpose_b, weight dtype, K, refittable)
  using Key = std::tuple<int, bool, bool, DataType, int64_t, bool>;
  std::map<Key, std::vector<int>> groups;
  for (size_t i = 0; i < s.graph.nodes.size(); ++i) {
    const GraphNode& n = s.graph.nodes[i];
    if (s.dead[i] || n.type != LayerType::kMATMUL) continue;
    const int a = n.inputs[0], b = n.inputs[1];
    if (s.is_weight(a) || !s.is_weight(b)) continue;
    const TensorDesc& bd = s.graph.tensors[b].desc;
    if (bd.dims.size() != 2) continue;
    const auto& p = std::get<MatMulParams>(n.params);
    const int64_t k = p.transpose_b ? bd.dims[1] : bd.dims[0];
    std::vector<int> bt = {b};
    if (!s.uniform_refittability(bt)) continue;
    groups[{a, p.transpose_a, p.transpose_b, bd.dtype, k, s.any_refittable(b)}].push_back(
        static_cast<int>(i));
  }
  std::map<int, std::vector<GraphNode>> replacements;  // first node of a group -> new nodes
  for (auto& [key, members] : groups) {
    if (members.size() < 2) continue;
    const bool tb = std::get<2>(key);
    const int axis = tb ? 0 : 1;  // the N dimension of the weight
    std::vector<const Recipe*> parts;
    std::string fused_name, node_names;
    int64_t n_total = 0;
    std::vector<int64_t> widths;
    for (int m : members) {
      const int b = s.graph.nodes[m].inputs[1];
      parts.push_back(&s.weight_of(b).recipe);
      fused_name += (fused_name.empty() ? "" : "|") + s.graph.tensors[b].name;
      node_names += (node_names.empty() ? "" : " + ") + s.graph.nodes[m].name;
      widths.push_back(s.graph.tensors[b].desc.dims[axis]);
      n_total += widths.back();
    }
    const TensorDesc& first_b = s.graph.tensors[s.graph.nodes[members[0]].inputs[1]].desc;
    TensorDesc fused_desc = first_b;
    fused_desc.dims[axis] = n_total;
    RecipeStep cat{RecipeOp::kCONCAT};
    cat.axis = axis;
    Recipe recipe = compose(cat, parts);
    const int w = s.add_weight_tensor(fused_name, {std::move(recipe), fused_desc});

    const GraphNode& first = s.graph.nodes[members[0]];
    GraphTensor out = s.graph.tensors[first.outputs[0]];
    out.name = "fused(" + node_names + ")";
    out.is_output = out.is_debug = false;
    out.desc.dims.back() = n_total;
    s.graph.tensors.push_back(out);
    const int fused_out = static_cast<int>(s.graph.tensors.size()) - 1;

    std::vector<GraphNode> nodes;
    GraphNode mm = first;
    mm.name = "fused_matmul(" + node_names + ")";
    mm.inputs = {first.inputs[0], w};
    mm.outputs = {fused_out};
    nodes.push_back(mm);
    int64_t offset = 0;
    for (size_t j = 0; j < members.size(); ++j) {
      const GraphNode& orig = s.graph.nodes[members[j]];
      const size_t rank = s.graph.tensors[orig.outputs[0]].desc.dims.size();
      SliceParams sp;
      sp.start.assign(rank, 0);
      sp.size.assign(rank, kDYNAMIC);  // kDYNAMIC: through the end of that dim
      sp.start.back() = offset;
      sp.size.back() = widths[j];
      offset += widths[j];
      GraphNode slice;
      slice.name = orig.name + ".slice";
      slice.type = LayerType::kSLICE;
      slice.params = sp;
      slice.inputs = {fused_out};
      slice.outputs = orig.outputs;
      nodes.push_back(std::move(slice));
    }
    for (int m : members) s.dead[m] = true;
    replacements[members[0]] = std::move(nodes);
    s.note("fusion", node_names + " fused into one matmul over " + fused_name,
           s.refittable_names(std::span(&w, 1)));
  }
  if (replacements.empty()) return;
  std::vector<GraphNode> nodes;
  std::vector<bool> dead;
  for (size_t i = 0; i < s.graph.nodes.size(); ++i) {
    auto it = replacements.find(static_cast<int>(i));
    if (it != replacements.end()) {
      for (auto& n : it->second) {
        nodes.push_back(std::move(n));
        dead.push_back(false);
      }
    } else {
      nodes.push_back(std::move(s.graph.nodes[i]));
      dead.push_back(s.dead[i]);
    }
  }
  s.graph.nodes = std::move(nodes);
  s.dead = std::move(dead);
}

}  // namespace bindery::build
