// A CUDA refit that fails mid-transfer (issue 8, "transactional on GPU"), made to fail by the
// transfer layer's test hook: the chunk after the first one sent throws kDEVICE. With
// RefitStaging::kDEVICE_COPY the slots are written only after every source landed in spare
// memory, so the engine is untouched; with kVALIDATE_FIRST some slots may hold new bytes, so
// the engine refuses to run until a refit succeeds. The sources are pageable host tensors,
// which the transfer stages in chunks (the hook counts those). Skips where no GPU is visible.

#include <gtest/gtest.h>

#include "common/cuda_refit_util.h"
#include "common/gpu_util.h"
#include "runtime/gpu/transfer.h"

namespace bindery::testing {
namespace {

using models::Generator;

// Arms the hook for the scope: the chunk after the next `chunks` fails (once). Engines and
// contexts are made before arming, since making an engine transfers its slots too.
class InjectedTransferFailure {
 public:
  explicit InjectedTransferFailure(int64_t chunks) {
    fail_transfer_after_chunks_for_testing(chunks);
  }
  ~InjectedTransferFailure() { fail_transfer_after_chunks_for_testing(-1); }
  InjectedTransferFailure(const InjectedTransferFailure&) = delete;
  InjectedTransferFailure& operator=(const InjectedTransferFailure&) = delete;
};

// refit() with the second chunk failing: must throw kDEVICE (a refit that does not throw means
// the hook never fired: fewer than two chunks were sent, or they bypass the hook).
void refit_failing_mid_transfer(Refitter& r) {
  std::string message;
  {
    const InjectedTransferFailure fail(1);
    try {
      r.refit();
      ADD_FAILURE() << "the refit succeeded: the injected failure never fired";
      return;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kDEVICE) << e.what();
      message = e.what();
    }
  }
  EXPECT_NE(message.find("injected failure"), std::string::npos) << message;
}

TEST(CudaRefitFailure, DeviceCopyFailingMidTransferChangesNothing) {
  REQUIRE_GPU();
  const RefitReference& ref = refit_reference();
  auto engine = cuda_refit_engine(model_a());
  Generator gen(*engine);
  ASSERT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_a));
  Refitter r(*engine);
  r.set_staging(RefitStaging::kDEVICE_COPY);
  const SourceSet b = read_sources(r, model_b(), SourceKind::kPAGEABLE);
  set_all(r, b);
  refit_failing_mid_transfer(r);

  EXPECT_EQ(engine->weights_version(), 0u);
  EXPECT_TRUE(engine->weights_complete());
  EXPECT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_a))
      << "a failed kDEVICE_COPY refit changed the outputs";
  EXPECT_EQ(slot_checksums(*engine), ref.sums_a);

  // Nothing is left behind: the same refit, not failing, applies B.
  set_all(r, b);
  r.refit();
  EXPECT_EQ(engine->weights_version(), 1u);
  EXPECT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_b));
  EXPECT_EQ(slot_checksums(*engine), ref.sums_b);
}

TEST(CudaRefitFailure, ValidateFirstFailingMidTransferStopsRunsUntilARefitSucceeds) {
  REQUIRE_GPU();
  const RefitReference& ref = refit_reference();
  auto engine = cuda_refit_engine(model_a());
  Generator gen(*engine);  // a context made before the failure
  ASSERT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_a));
  {
    Refitter r(*engine);
    r.set_staging(RefitStaging::kVALIDATE_FIRST);
    const SourceSet b = read_sources(r, model_b(), SourceKind::kPAGEABLE);
    set_all(r, b);
    refit_failing_mid_transfer(r);
  }
  // Some slots may be half written: no run may see them, in old contexts or new ones.
  EXPECT_FALSE(engine->weights_complete());
  expect_error(ErrorCode::kMISSING_WEIGHTS, [&] { gen.logits(test_prompt()); });
  expect_error(ErrorCode::kMISSING_WEIGHTS, [&] { Generator(*engine).logits(test_prompt()); });

  // A later successful refit of every source restores B's outputs, in the old context too.
  {
    Refitter r(*engine);
    const SourceSet b = read_sources(r, model_b(), SourceKind::kDEVICE);
    set_all(r, b);
    r.refit();
  }
  EXPECT_TRUE(engine->weights_complete());
  EXPECT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_b));
  EXPECT_EQ(slot_checksums(*engine), ref.sums_b);
}

// A failed refit from the checkpoint directory itself (pageable: the files' memory maps) with
// the default staging, then the same again: the second one succeeds.
TEST(CudaRefitFailure, CheckpointRefitFailingMidTransferCanBeRetried) {
  REQUIRE_GPU();
  const RefitReference& ref = refit_reference();
  auto engine = cuda_refit_engine(model_a());
  Generator gen(*engine);
  {
    const InjectedTransferFailure fail(1);
    expect_error(ErrorCode::kDEVICE, [&] { models::refit_from_hf_checkpoint(*engine, model_b()); });
  }
  models::refit_from_hf_checkpoint(*engine, model_b());
  EXPECT_TRUE(engine->weights_complete());
  EXPECT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_b));
  EXPECT_EQ(slot_checksums(*engine), ref.sums_b);
}

}  // namespace
}  // namespace bindery::testing
