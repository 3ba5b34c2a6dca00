// Delta refit (Refitter::set_skip_unchanged): sources whose bytes the engine already holds are
// hashed and skipped; everything else is applied as a full refit would.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "bindery/engine.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/llama.h"
#include "bindery/refitter.h"

namespace bindery {
namespace {

const std::filesystem::path kLLAMA =
    std::filesystem::path(BINDERY_SOURCE_DIR) / "tests/fixtures/llama";
const std::string kQ0 = "model.layers.0.self_attn.q_proj.weight";
const std::string kK0 = "model.layers.0.self_attn.k_proj.weight";

// Sets every refittable weight from checkpoint `dir` (f32, the engine's names), but `name`
// from `other` when given.
void set_from(Refitter& r, const io::CheckpointReader& dir,
              const io::CheckpointReader* other = nullptr, const std::string& name = "") {
  for (const std::string& n : r.all_weights())
    r.set_named_weights(n, (other && n == name ? *other : dir).view(n));
}

bool same_slots(const Engine& a, const Engine& b) {
  for (size_t i = 0; i < a.metadata().slots.size(); ++i)
    if (a.slot_checksum(static_cast<int>(i)) != b.slot_checksum(static_cast<int>(i))) return false;
  return true;
}

bool equals(const HostTensor& t, const Weights& w) {
  return t.size_bytes() == w.size_bytes() && std::memcmp(t.data(), w.values, t.size_bytes()) == 0;
}

TEST(DeltaRefit, SkipsWhatTheEngineHoldsAndAppliesTheRest) {
  const auto a = io::CheckpointReader::open((kLLAMA / "llama_gqa").string());
  const auto b = io::CheckpointReader::open((kLLAMA / "llama_gqa_b").string());
  auto engine =
      Engine::create(models::build_llama((kLLAMA / "llama_gqa").string(), {.refit = true}));
  auto built_b =
      Engine::create(models::build_llama((kLLAMA / "llama_gqa_b").string(), {.refit = true}));
  Refitter r(*engine);
  r.set_skip_unchanged(true);
  const auto n = static_cast<int64_t>(r.all_weights().size());

  // First sync: the engine knows no hashes yet, so everything is applied (and hashed).
  set_from(r, b);
  r.refit();
  EXPECT_EQ(r.last_refit_stats().sources_set, n);
  EXPECT_EQ(r.last_refit_stats().sources_skipped, 0);
  EXPECT_GT(r.last_refit_stats().bytes_hashed, 0);
  EXPECT_TRUE(same_slots(*engine, *built_b));

  // The same weights again: nothing to apply, no slot touched.
  set_from(r, b);
  r.refit();
  EXPECT_EQ(r.last_refit_stats().sources_skipped, n);
  EXPECT_EQ(r.last_refit_slots(), 0);
  EXPECT_EQ(engine->weights_version(), 2u);

  // One changed tensor: only it is applied, into its part of the fused q|k|v slot.
  set_from(r, b, &a, kQ0);
  r.refit();
  EXPECT_EQ(r.last_refit_stats().sources_skipped, n - 1);
  EXPECT_EQ(r.last_refit_slots(), 1);
  EXPECT_TRUE(equals(r.get_named_weights(kQ0), a.view(kQ0)));
  EXPECT_TRUE(equals(r.get_named_weights(kK0), b.view(kK0)));

  // A refit without hashing leaves no stale hash: a delta refit afterwards applies it all.
  r.set_skip_unchanged(false);
  set_from(r, a);
  r.refit();
  r.set_skip_unchanged(true);
  set_from(r, b);
  r.refit();
  EXPECT_EQ(r.last_refit_stats().sources_skipped, 0);
  EXPECT_TRUE(same_slots(*engine, *built_b)) << "every tensor of b must be back";
}

}  // namespace
}  // namespace bindery
