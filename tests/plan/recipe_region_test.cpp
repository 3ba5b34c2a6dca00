// Where a source lands in its slot when a refit may copy it there directly (unchanged, or cast
// once on the GPU), as the CUDA refit decides it from the recipe alone.

#include <gtest/gtest.h>

#include "bindery/recipe.h"

namespace bindery {
namespace {

RecipeStep source(int i) { return RecipeStep(RecipeOp::kSOURCE, {i}); }
RecipeStep cast_of(int step, DataType t) {
  RecipeStep s(RecipeOp::kCAST, {step});
  s.dtype = t;
  return s;
}
RecipeStep concat_of(std::vector<int> steps, int axis) {
  RecipeStep s(RecipeOp::kCONCAT, std::move(steps));
  s.axis = axis;
  return s;
}

const std::vector<TensorDesc> kQKV = {
    {DataType::kFLOAT, {8, 4}}, {DataType::kFLOAT, {2, 4}}, {DataType::kFLOAT, {2, 4}}};

TEST(RecipeCastRegion, CastOverAConcatPlacesEveryPartAtItsOffset) {
  Recipe r;
  r.sources = {"q", "k", "v"};
  r.steps = {source(0), source(1), source(2), concat_of({0, 1, 2}, 0), cast_of(3, DataType::kBF16)};
  ASSERT_FALSE(recipe_direct_region(r, kQKV, 1).has_value());
  const int64_t offsets[] = {0, 8, 10};
  for (int k = 0; k < 3; ++k) {
    const auto region = recipe_cast_region(r, kQKV, k);
    ASSERT_TRUE(region.has_value()) << k;
    EXPECT_EQ(region->axis, 0);
    EXPECT_EQ(region->offset, offsets[k]);
  }
}

TEST(RecipeCastRegion, CastPartsOfAColumnConcatKeepTheirAxis) {
  Recipe r;
  r.sources = {"a", "b"};
  r.steps = {source(0), cast_of(0, DataType::kHALF), source(1), cast_of(2, DataType::kHALF),
             concat_of({1, 3}, 1)};
  const std::vector<TensorDesc> d = {{DataType::kFLOAT, {3, 5}}, {DataType::kFLOAT, {3, 2}}};
  const auto region = recipe_cast_region(r, d, 1);
  ASSERT_TRUE(region.has_value());
  EXPECT_EQ(region->axis, 1);
  EXPECT_EQ(region->offset, 5);
}

TEST(RecipeCastRegion, UncastSourcesAndDoubleCastsAreNotCastRegions) {
  Recipe mixed;  // a lands unchanged: recipe_direct_region's case, not this one
  mixed.sources = {"a", "b"};
  mixed.steps = {source(0), source(1), cast_of(1, DataType::kFLOAT), concat_of({0, 2}, 0)};
  const std::vector<TensorDesc> d = {{DataType::kFLOAT, {2, 4}}, {DataType::kBF16, {2, 4}}};
  EXPECT_FALSE(recipe_cast_region(mixed, d, 0).has_value());
  EXPECT_TRUE(recipe_direct_region(mixed, d, 0).has_value());
  EXPECT_TRUE(recipe_cast_region(mixed, d, 1).has_value());

  Recipe twice;  // f32 -> f16 -> bf16 rounds twice: one conversion would differ
  twice.sources = {"a"};
  twice.steps = {source(0), cast_of(0, DataType::kHALF), cast_of(1, DataType::kBF16)};
  EXPECT_FALSE(recipe_cast_region(twice, {{{DataType::kFLOAT, {4}}}}, 0).has_value());

  Recipe transposed;
  transposed.sources = {"a"};
  RecipeStep t(RecipeOp::kTRANSPOSE, {0});
  t.dims = {1, 0};
  transposed.steps = {source(0), t, cast_of(1, DataType::kBF16)};
  EXPECT_FALSE(recipe_cast_region(transposed, {{{DataType::kFLOAT, {2, 3}}}}, 0).has_value());
}

}  // namespace
}  // namespace bindery
