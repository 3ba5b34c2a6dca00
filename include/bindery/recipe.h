#pragma once
// Recipes: how an engine slot is made from named source weights. The builder writes a recipe
// for every slot while it folds and fuses; the refitter replays it on new source weights; the
// same code evaluates it in both places, so a refit engine is bit-identical to a fresh build.
//
// A recipe is a small program in SSA form: `steps[i]` may use the results of earlier steps;
// the last step's result is the slot's content.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bindery/weights.h"

namespace bindery {

enum class RecipeOp : uint8_t {
  kSOURCE,          // args: {source index}; result: the source weight as given
  kCONCAT,          // args: steps; axis
  kSLICE,           // args: {step}; axis, start (dims[0]), length (dims[1])
  kTRANSPOSE,       // args: {step}; dims = permutation
  kRESHAPE,         // args: {step}; dims = new shape (same element count)
  kCAST,            // args: {step}; dtype
  kFOLD_BN_KERNEL,  // args: {kernel, scale, var}; epsilon. kernel[o,...] *
                    // scale[o]/sqrt(var[o]+eps)
  kFOLD_BN_BIAS,    // args: {scale, bias, mean, var[, conv_bias]}; epsilon.
                    //   (conv_bias - mean) * scale/sqrt(var+eps) + bias   (conv_bias = 0 if absent)
};

struct RecipeStep {
  RecipeStep() = default;
  explicit RecipeStep(RecipeOp o, std::vector<int> a = {}) : op(o), args(std::move(a)) {}

  RecipeOp op = RecipeOp::kSOURCE;
  std::vector<int> args;
  int axis = 0;
  Dims dims;
  DataType dtype = DataType::kFLOAT;
  float epsilon = 0.f;
};

struct Recipe {
  std::vector<std::string> sources;  // source weight names, each at most once
  std::vector<RecipeStep> steps;

  /// The identity recipe of one source.
  static Recipe identity(const std::string& source);
  bool is_identity() const { return steps.size() == 1 && steps[0].op == RecipeOp::kSOURCE; }
  /// Index of `name` in `sources`, or -1.
  int source_index(const std::string& name) const;
  /// "concat(axis=0, q.weight, k.weight, v.weight) -> cast(f16)", for inspect and messages.
  std::string to_string() const;
};

/// dtype and shape of the result, given the sources' dtypes and shapes (no data touched).
/// Throws Error(kSHAPE_MISMATCH / kDTYPE_MISMATCH) naming the source and step on inconsistency.
TensorDesc recipe_result_desc(const Recipe& r, std::span<const TensorDesc> sources);

/// Evaluates the recipe on host source views (one per `r.sources`, same order) into `out`,
/// which must already have the result's dtype and shape.
void evaluate_recipe(const Recipe& r, std::span<const Weights> sources, HostTensor& out);
HostTensor evaluate_recipe(const Recipe& r, std::span<const Weights> sources);

/// A recipe is separable when each source determines its own disjoint region of the slot,
/// independent of the others (identity chains; concats of single-source branches; elementwise
/// casts on top). Such a slot can be refit from only some of its sources.
bool recipe_is_separable(const Recipe& r);

/// For a separable recipe: writes only the region of the slot (`slot_data`, host memory of
/// the whole slot) that source `source_index` determines, from the host view `source`.
/// `sources` gives every source's dtype and shape (they fix where each region lies).
void evaluate_recipe_region(const Recipe& r, std::span<const TensorDesc> sources, int source_index,
                            const Weights& source, void* slot_data);

/// Where a source lies in the slot when it is copied there unchanged: the recipe's result is
/// a concat (or the source itself) and this source is one of its direct parts, with no
/// transform on the way. Then a refit can copy the source's bytes straight into the slot.
struct RecipeRegion {
  int axis = 0;        // concat axis (0 for an identity recipe)
  int64_t offset = 0;  // where the source starts along `axis`
};
std::optional<RecipeRegion> recipe_direct_region(const Recipe& r,
                                                 std::span<const TensorDesc> sources,
                                                 int source_index);

/// As recipe_direct_region, for a source that is cast once on its way into the slot (a float
/// checkpoint into a bf16 engine): where it lands, converted to the slot's dtype. nullopt when
/// it lands unchanged (recipe_direct_region) or through anything but exactly one cast.
std::optional<RecipeRegion> recipe_cast_region(const Recipe& r, std::span<const TensorDesc> sources,
                                               int source_index);

/// A block of a source weight along one axis: rows [start, start + length) of dim `axis`.
struct SourceBlock {
  int axis = 0;
  int64_t start = 0;
  int64_t length = 0;
  bool operator==(const SourceBlock&) const = default;
};

/// The block of source `source_index` the recipe reads when it reads only part of it: every
/// use of the source is one slice step, all with the same axis, start and length (a
/// tensor-parallel rank's share of a full checkpoint tensor). nullopt when it reads it whole.
std::optional<SourceBlock> recipe_source_block(const Recipe& r, int source_index);

/// The same recipe over the block instead of the whole source: the slice steps that read it
/// are dropped, so the recipe takes the block (recipe_source_block) as that source. Throws
/// kINTERNAL when the recipe does not read a block of it.
Recipe narrow_recipe(const Recipe& r, int source_index);

/// Recovers source `source_index` from the slot's content, inverting the recipe: identity,
/// concat (selects the part), cast (casts back to the source's dtype), transpose, reshape.
/// Throws Error(kNOT_INVERTIBLE) saying which step (e.g. a folded batch norm) cannot be undone.
HostTensor invert_recipe(const Recipe& r, std::span<const TensorDesc> sources, int source_index,
                         const Weights& slot);

}  // namespace bindery
