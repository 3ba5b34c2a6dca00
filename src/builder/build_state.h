#pragma once
// State shared by the builder's passes: the graph being rewritten, one BuildWeight per weight
// tensor (its recipe over named sources), the source table and the report.

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bindery/builder.h"
#include "bindery/graph.h"
#include "bindery/plan.h"
#include "bindery/recipe.h"

namespace bindery::build {

/// Every weight is a recipe over named sources. Values folded by running a kernel become
/// internal, non-refittable sources ("folded:<tensor>"), so one code path makes every slot.
struct BuildWeight {
  Recipe recipe;  // over BuildState::sources names
  TensorDesc desc;
};

struct BuildState {
  BuilderFlags flags;
  Graph graph;  // weight tensors' `slot` indexes `weights`
  std::vector<BuildWeight> weights;
  std::vector<SourceWeight> sources;
  std::vector<Weights> source_values;  // parallel to `sources`: the network's or `folded`'s
  std::vector<std::unique_ptr<HostTensor>> folded;  // values of internal sources
  std::vector<BuildReportEntry> report;
  std::vector<bool> dead;  // nodes removed by a pass (compacted by compact())

  /// Index of source `name`.
  int source(const std::string& name) const;
  /// True if any source of the weight tensor `t` is refittable.
  bool any_refittable(int tensor) const;
  /// True if the weights' sources are all refittable or all not.
  bool uniform_refittability(std::span<const int> tensors) const;
  /// Names of the refittable sources of weight tensors `tensors`.
  std::vector<std::string> refittable_names(std::span<const int> tensors) const;
  bool is_weight(int tensor) const {
    return tensor >= 0 && graph.tensors[tensor].kind == TensorKind::kWEIGHT;
  }
  const BuildWeight& weight_of(int tensor) const { return weights[graph.tensors[tensor].slot]; }
  /// Adds a weight tensor holding `w`; returns the tensor index.
  int add_weight_tensor(const std::string& name, BuildWeight w);
  /// Registers a value computed at build time as an internal non-refittable source.
  BuildWeight add_folded_source(const std::string& tensor_name, HostTensor value);
  /// Turns tensor `t` (an activation) into a weight tensor holding `w`.
  void make_weight(int t, BuildWeight w);
  /// Node indices that read tensor `t` (live nodes only).
  std::vector<int> consumers(int t) const;
  /// True if `t` must stay observable (network output or debug tensor).
  bool observable(int t) const { return graph.tensors[t].is_output || graph.tensors[t].is_debug; }
  /// Host value of a weight tensor (evaluates its recipe from the network's values).
  HostTensor value(int tensor) const;
  void note(std::string kind, std::string description, std::vector<std::string> weights = {});
  /// Drops dead nodes.
  void compact();
};

/// A recipe applying `step` to the results of `args` (sources merged, steps renumbered).
Recipe compose(const RecipeStep& step, std::span<const Recipe* const> args);

// ---- passes, in the order the builder runs them ----
void fold_constants(BuildState& s);
void fold_conv_batchnorm(BuildState& s);
void fuse_shared_input_matmuls(BuildState& s);
void fuse_conv_activations(BuildState& s);
void cast_weights(BuildState& s);

}  // namespace bindery::build
