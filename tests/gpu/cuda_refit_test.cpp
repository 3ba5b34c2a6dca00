// Refit of CUDA engines (issue 8): from every kind of source the refit gives exactly a fresh
// build's logits and slots; bad input (a wrong shape in the last tensor, a truncated file)
// changes nothing; contexts made before a refit, their captured decode graphs included, see the
// new weights; a refit from another thread never lets a run mix versions. A is the shipped
// model, B its fine-tune (tests/common/cuda_refit_util.h). Failures injected mid-transfer are
// in cuda_refit_failure_test.cpp. Skips where no GPU is visible (CI, the build machine).

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "bindery/io/safetensors.h"
#include "bindery/stream.h"
#include "common/cuda_refit_util.h"
#include "common/gpu_util.h"

namespace bindery::testing {
namespace {

namespace fs = std::filesystem;
using models::Generator;
using models::refit_from_hf_checkpoint;

const char* staging_name(RefitStaging s) {
  return s == RefitStaging::kDEVICE_COPY ? "device_copy" : "validate_first";
}

// ---- refit from each source equals a fresh build ----

struct SourceCase {
  bool checkpoint_dir;  // refit_from_hf_checkpoint(dir) rather than a Refitter given views
  SourceKind kind;
  RefitStaging staging;
};

class CudaRefitFrom : public ::testing::TestWithParam<SourceCase> {};

TEST_P(CudaRefitFrom, EverySourceGivesAFreshBuildsLogitsAndSlots) {
  REQUIRE_GPU();
  const SourceCase c = GetParam();
  const RefitReference& ref = refit_reference();
  auto engine = cuda_refit_engine(model_a());
  Generator gen(*engine);  // its context exists before the refit
  ASSERT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_a));
  ASSERT_FALSE(bit_equal(ref.logits_a, ref.logits_b));

  if (c.checkpoint_dir) {
    const models::RefitSummary s = refit_from_hf_checkpoint(*engine, model_b());
    EXPECT_EQ(s.weights_set, static_cast<int64_t>(ref.sources));
    EXPECT_EQ(s.slots_rewritten, refittable_slots(*engine));
  } else {
    Refitter r(*engine);
    r.set_staging(c.staging);
    const SourceSet b = read_sources(r, model_b(), c.kind);
    set_all(r, b);
    r.refit();
    EXPECT_EQ(r.last_refit_slots(), refittable_slots(*engine));
    const Refitter::Stats& st = r.last_refit_stats();
    EXPECT_EQ(st.sources_set, static_cast<int64_t>(ref.sources));
    EXPECT_EQ(st.sources_skipped, 0);
    EXPECT_GT(st.bytes_written, 0);
    EXPECT_GT(st.seconds, 0);
  }
  EXPECT_EQ(engine->weights_version(), 1u);
  EXPECT_TRUE(engine->weights_complete());
  EXPECT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_b))
      << "the refit engine's logits are not a fresh build's";
  EXPECT_EQ(slot_checksums(*engine), ref.sums_b);
}

INSTANTIATE_TEST_SUITE_P(
    Sources, CudaRefitFrom,
    ::testing::Values(SourceCase{true, SourceKind::kMAPPED, RefitStaging::kVALIDATE_FIRST},
                      SourceCase{false, SourceKind::kMAPPED, RefitStaging::kVALIDATE_FIRST},
                      SourceCase{false, SourceKind::kMAPPED, RefitStaging::kDEVICE_COPY},
                      SourceCase{false, SourceKind::kPAGEABLE, RefitStaging::kVALIDATE_FIRST},
                      SourceCase{false, SourceKind::kPAGEABLE, RefitStaging::kDEVICE_COPY},
                      SourceCase{false, SourceKind::kPINNED, RefitStaging::kVALIDATE_FIRST},
                      SourceCase{false, SourceKind::kPINNED, RefitStaging::kDEVICE_COPY},
                      SourceCase{false, SourceKind::kDEVICE, RefitStaging::kVALIDATE_FIRST},
                      SourceCase{false, SourceKind::kDEVICE, RefitStaging::kDEVICE_COPY}),
    [](const ::testing::TestParamInfo<SourceCase>& info) {
      if (info.param.checkpoint_dir) return std::string("checkpoint_dir");
      return std::string(source_kind_name(info.param.kind)) + "_" +
             staging_name(info.param.staging);
    });

// A delta refit on the GPU: a second sync of the same device tensors applies nothing, one
// changed layer only its sources, and the result is what a full refit gives.
TEST(CudaRefit, DeltaRefitSkipsUnchangedDeviceSources) {
  REQUIRE_GPU();
  const RefitReference& ref = refit_reference();
  auto engine = cuda_refit_engine(model_a());
  Generator gen(*engine);
  Refitter r(*engine);
  r.set_skip_unchanged(true);
  const SourceSet a = read_sources(r, model_a(), SourceKind::kDEVICE);
  const SourceSet b = read_sources(r, model_b(), SourceKind::kDEVICE);
  const auto n = static_cast<int64_t>(ref.sources);

  set_all(r, b);  // the engine knows no hashes yet: all applied, all hashed
  r.refit();
  EXPECT_EQ(r.last_refit_stats().sources_skipped, 0);
  EXPECT_GT(r.last_refit_stats().bytes_hashed, 0);
  EXPECT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_b));

  set_all(r, b);  // the same again: nothing applied, no slot touched
  r.refit();
  EXPECT_EQ(r.last_refit_stats().sources_skipped, n);
  EXPECT_EQ(r.last_refit_slots(), 0);
  EXPECT_EQ(r.last_refit_stats().bytes_written, 0);

  // Layer 0's sources from A, the rest B's: only they are applied; then back to all of B.
  const std::string layer0 = "model.layers.0.";
  int64_t changed = 0;
  for (size_t i = 0; i < b.names.size(); ++i) {
    const bool in_layer0 = b.names[i].rfind(layer0, 0) == 0;
    changed += in_layer0;
    r.set_named_weights(b.names[i], in_layer0 ? a.views[i] : b.views[i]);
  }
  ASSERT_GT(changed, 0);
  r.refit();
  EXPECT_EQ(r.last_refit_stats().sources_skipped, n - changed);
  EXPECT_GT(r.last_refit_slots(), 0);
  EXPECT_FALSE(bit_equal(gen.logits(test_prompt()), ref.logits_b));
  set_all(r, b);
  r.refit();
  EXPECT_EQ(r.last_refit_stats().sources_skipped, n - changed);
  EXPECT_TRUE(bit_equal(gen.logits(test_prompt()), ref.logits_b));
  EXPECT_EQ(slot_checksums(*engine), ref.sums_b);
}

// ---- bad input changes nothing ----

// The same elements in another shape: flattened, or given a leading 1.
Dims wrong_shape(const Dims& d) {
  return d.size() > 1 ? Dims{volume(d)} : Dims{1, volume(d)};
}

// What a test compares before and after a failed refit.
struct EngineState {
  uint64_t version;
  std::vector<uint64_t> sums;
  HostTensor logits;
};
EngineState state_of(Engine& e, Generator& gen) {
  return {e.weights_version(), slot_checksums(e), gen.logits(test_prompt())};
}
void expect_unchanged(Engine& e, Generator& gen, const EngineState& before) {
  EXPECT_EQ(e.weights_version(), before.version);
  EXPECT_EQ(slot_checksums(e), before.sums);
  EXPECT_TRUE(bit_equal(gen.logits(test_prompt()), before.logits));
}

// Every source of B is set from device memory but the last, whose view has the wrong shape:
// set_named_weights refuses it, and refit() is never reached with anything applied.
TEST(CudaRefit, WrongShapeInTheLastTensorChangesNothing) {
  REQUIRE_GPU();
  auto engine = cuda_refit_engine(model_a());
  Generator gen(*engine);
  const EngineState before = state_of(*engine, gen);
  {
    Refitter r(*engine);
    const SourceSet b = read_sources(r, model_b(), SourceKind::kDEVICE);
    for (size_t i = 0; i + 1 < b.names.size(); ++i) r.set_named_weights(b.names[i], b.views[i]);
    Weights last = b.views.back();
    last.shape = wrong_shape(last.shape);
    expect_error(ErrorCode::kSHAPE_MISMATCH, [&] { r.set_named_weights(b.names.back(), last); });
  }
  expect_unchanged(*engine, gen, before);
}

// The same from a checkpoint directory: a copy of B whose last tensor (the refit's last
// source) is stored with the wrong shape.
TEST(CudaRefit, CheckpointWithAWrongShapeInTheLastTensorChangesNothing) {
  REQUIRE_GPU();
  auto engine = cuda_refit_engine(model_a());
  Generator gen(*engine);
  const EngineState before = state_of(*engine, gen);
  const std::string last = Refitter(*engine).all_weights().back();

  const TempDir dir("cuda_refit_wrong_shape");
  for (const auto& e : fs::directory_iterator(model_b()))
    if (e.is_regular_file() && e.path().extension() != ".safetensors")
      fs::copy_file(e.path(), dir.path() / e.path().filename());
  const auto b = io::CheckpointReader::open(model_b());
  std::map<std::string, std::vector<io::TensorToWrite>> files;  // file name -> its tensors
  for (const io::StoredTensor& t : b.tensors()) {
    Dims shape = t.shape;
    if (t.name == last) shape = wrong_shape(shape);
    files[fs::path(t.file).filename().string()].push_back({t.name, t.dtype, shape, t.data});
  }
  for (const auto& [name, tensors] : files)
    io::write_safetensors((dir.path() / name).string(), tensors);

  std::string message;
  EXPECT_EQ(error_of([&] { refit_from_hf_checkpoint(*engine, dir.path().string()); }, &message),
            ErrorCode::kSHAPE_MISMATCH);
  EXPECT_NE(message.find(last), std::string::npos) << message;
  expect_unchanged(*engine, gen, before);
}

// A copy of B whose safetensors file lost its last MiB (a cut-off download).
TEST(CudaRefit, TruncatedCheckpointFileThrowsAndChangesNothing) {
  REQUIRE_GPU();
  auto engine = cuda_refit_engine(model_a());
  Generator gen(*engine);
  const EngineState before = state_of(*engine, gen);
  const TempDir dir("cuda_refit_truncated");
  copy_checkpoint(model_b(), dir.path());
  const fs::path file = dir.path() / "model.safetensors";
  ASSERT_TRUE(fs::exists(file));
  fs::resize_file(file, fs::file_size(file) - (1 << 20));
  std::string message;
  EXPECT_EQ(error_of([&] { refit_from_hf_checkpoint(*engine, dir.path().string()); }, &message),
            ErrorCode::kTRUNCATED_FILE);
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
  expect_unchanged(*engine, gen, before);
}

// ---- contexts made before a refit, and their captured graphs ----

// Runs `tokens` one per run from position 0 of sequence 0 (position 0 starts the sequence
// again). Every run has a decode step's shapes, so from the second run on of a context whose
// previous run had them too, the runs replay the decode graph the context captured.
std::vector<HostTensor> step_through(ExecutionContext& ctx, const std::vector<int32_t>& tokens) {
  std::vector<HostTensor> logits;
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t id = tokens[i], pos = static_cast<int32_t>(i), seq = 0, row = 0;
    ctx.set_input("input_ids", Weights(DataType::kINT32, {1}, &id));
    ctx.set_input("positions", Weights(DataType::kINT32, {1}, &pos));
    ctx.set_input("seq_ids", Weights(DataType::kINT32, {1}, &seq));
    ctx.set_input("logit_rows", Weights(DataType::kINT32, {1}, &row));
    ctx.execute();
    logits.push_back(HostTensor::copy_of(ctx.output("logits")));
  }
  return logits;
}

class CudaRefitGraphs : public ::testing::TestWithParam<RefitStaging> {};

// The context decodes with a captured graph, the engine is refit underneath it, and the same
// steps replayed from that graph give exactly what an engine built from B gives for them.
TEST_P(CudaRefitGraphs, ContextsMadeBeforeRefitSeeTheNewWeights) {
  REQUIRE_GPU();
  unsetenv("BINDERY_CUDA_GRAPHS");  // graphs on (read when a context is made)
  const std::vector<int32_t> tokens = {1, 320, 261, 381, 421, 350, 861, 5, 9, 23, 42, 7};
  models::SamplingConfig greedy;
  greedy.max_new_tokens = 12;
  auto engine = cuda_refit_engine(model_a());
  auto ctx = engine->create_execution_context();
  Generator gen(*engine);
  const std::vector<HostTensor> with_a = step_through(*ctx, tokens);
  gen.generate({test_prompt()}, greedy);  // its decode steps capture graphs too
  EXPECT_EQ(ctx->last_run_weights_version(), 0u);

  {
    Refitter r(*engine);
    r.set_staging(GetParam());
    const SourceSet b = read_sources(r, model_b(), SourceKind::kDEVICE);
    set_all(r, b);
    r.refit();
  }
  const std::vector<HostTensor> after = step_through(*ctx, tokens);
  EXPECT_EQ(ctx->last_run_weights_version(), 1u);
  const auto generated = gen.generate({test_prompt()}, greedy);

  // A fresh engine of B runs the same steps the same way: a first pass that captures, then
  // the compared pass from the captured graph.
  auto fresh = cuda_refit_engine(model_b());
  auto fresh_ctx = fresh->create_execution_context();
  const std::vector<HostTensor> first = step_through(*fresh_ctx, tokens);
  const std::vector<HostTensor> expected = step_through(*fresh_ctx, tokens);
  ASSERT_EQ(after.size(), expected.size());
  int differ_from_a = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    EXPECT_TRUE(bit_equal(after[i], expected[i])) << "step " << i;
    EXPECT_TRUE(bit_equal(first[i], expected[i])) << "fresh engine, step " << i;
    differ_from_a += !bit_equal(after[i], with_a[i]);
  }
  EXPECT_EQ(differ_from_a, static_cast<int>(tokens.size())) << "steps still computing with A";
  EXPECT_EQ(generated, Generator(*fresh).generate({test_prompt()}, greedy));
}

INSTANTIATE_TEST_SUITE_P(Staging, CudaRefitGraphs,
                         ::testing::Values(RefitStaging::kVALIDATE_FIRST,
                                           RefitStaging::kDEVICE_COPY),
                         [](const ::testing::TestParamInfo<RefitStaging>& info) {
                           return std::string(staging_name(info.param));
                         });

// ---- refit_async ----

// On a stream of the GPU, a run enqueued before refit_async sees the old weights and one
// enqueued after it the new ones, though refit_async returned before either ran.
TEST(CudaRefit, RefitAsyncIsOrderedWithRunsOnACudaStream) {
  REQUIRE_GPU();
  const RefitReference& ref = refit_reference();
  auto engine = cuda_refit_engine(model_a());
  auto stream = Stream::create(Device::cuda(0));
  EXPECT_EQ(stream->device(), Device::cuda(0));
  auto before = engine->create_execution_context();
  auto after = engine->create_execution_context();
  std::vector<int32_t> ids = test_prompt(), pos(ids.size()), seq(ids.size(), 0);
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  const auto n = static_cast<int64_t>(ids.size());
  for (ExecutionContext* ctx : {before.get(), after.get()}) {
    ctx->set_input("input_ids", Weights(DataType::kINT32, {n}, ids.data()));
    ctx->set_input("positions", Weights(DataType::kINT32, {n}, pos.data()));
    ctx->set_input("seq_ids", Weights(DataType::kINT32, {n}, seq.data()));
    ctx->set_input("logit_rows", Weights(DataType::kINT32, {n}, pos.data()));
  }
  // Holds the stream until everything is queued, so the order, not timing, decides.
  std::promise<void> go;
  std::shared_future<void> gate = go.get_future().share();
  stream->enqueue_host([gate] { gate.wait(); });
  before->enqueue(*stream);
  Refitter r(*engine);
  const SourceSet b = read_sources(r, model_b(), SourceKind::kDEVICE);
  set_all(r, b);
  r.refit_async(*stream);
  after->enqueue(*stream);
  EXPECT_EQ(engine->weights_version(), 0u);  // nothing has run yet
  go.set_value();
  stream->synchronize();
  EXPECT_EQ(engine->weights_version(), 1u);
  EXPECT_TRUE(bit_equal(HostTensor::copy_of(before->output("logits")), ref.logits_a));
  EXPECT_TRUE(bit_equal(HostTensor::copy_of(after->output("logits")), ref.logits_b));
  EXPECT_EQ(before->last_run_weights_version(), 0u);
  EXPECT_EQ(after->last_run_weights_version(), 1u);
}

// ---- refit while serving ----

struct ServingCase {
  const char* name;
  bool checkpoint_dir;
  RefitStaging staging;
};
class CudaRefitWhileServing : public ::testing::TestWithParam<ServingCase> {};

// One thread refits the engine 20 times, B, A, B, ... (odd versions hold B); the test's thread
// runs two contexts meanwhile: a prompt (node by node) and single-token decode-shaped steps
// (replayed from a captured graph). Every run's logits must be exactly those of the version it
// reports.
TEST_P(CudaRefitWhileServing, EveryRunSeesOneWeightsVersion) {
  REQUIRE_GPU();
  unsetenv("BINDERY_CUDA_GRAPHS");
  const ServingCase c = GetParam();
  constexpr int kREFITS = 20;
  const RefitReference& ref = refit_reference();
  const std::vector<int32_t> step_token = {320};
  HostTensor step_a, step_b;
  {
    auto a = cuda_refit_engine(model_a()), b = cuda_refit_engine(model_b());
    step_a = std::move(step_through(*a->create_execution_context(), step_token)[0]);
    step_b = std::move(step_through(*b->create_execution_context(), step_token)[0]);
  }
  ASSERT_FALSE(bit_equal(step_a, step_b));

  auto engine = cuda_refit_engine(model_a());
  auto prompt_ctx = engine->create_execution_context();
  auto step_ctx = engine->create_execution_context();
  std::vector<int32_t> ids = test_prompt(), pos(ids.size()), seq(ids.size(), 0);
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  const auto n = static_cast<int64_t>(ids.size());
  const auto run_prompt = [&] {  // as Generator::logits runs it
    prompt_ctx->reset_kv_cache();
    prompt_ctx->set_input("input_ids", Weights(DataType::kINT32, {n}, ids.data()));
    prompt_ctx->set_input("positions", Weights(DataType::kINT32, {n}, pos.data()));
    prompt_ctx->set_input("seq_ids", Weights(DataType::kINT32, {n}, seq.data()));
    prompt_ctx->set_input("logit_rows", Weights(DataType::kINT32, {n}, pos.data()));
    prompt_ctx->execute();
    return HostTensor::copy_of(prompt_ctx->output("logits"));
  };

  // The refit thread starts once serving has, and after each refit lets at least one more
  // run begin (so the runs see many versions, not just the first and the last).
  std::atomic<int> runs{0};
  std::atomic<bool> done{false}, serving{true};
  std::string refit_error, serve_error;
  const auto let_a_run_start = [&] {
    const int seen = runs;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (runs == seen && serving && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
  };
  std::thread refits([&] {
    try {
      let_a_run_start();
      if (c.checkpoint_dir) {
        for (int i = 0; i < kREFITS && serving; ++i) {
          refit_from_hf_checkpoint(*engine, i % 2 == 0 ? model_b() : model_a());
          let_a_run_start();
        }
      } else {
        Refitter r(*engine);
        r.set_staging(c.staging);
        const SourceSet a = read_sources(r, model_a(), SourceKind::kDEVICE);
        const SourceSet b = read_sources(r, model_b(), SourceKind::kDEVICE);
        for (int i = 0; i < kREFITS && serving; ++i) {
          set_all(r, i % 2 == 0 ? b : a);
          r.refit();
          let_a_run_start();
        }
      }
    } catch (const std::exception& e) {
      refit_error = e.what();
    }
    done = true;
  });
  int mixed = 0;
  std::set<uint64_t> versions;
  try {
    while (!done || runs < 2) {
      const HostTensor prompt_logits = run_prompt();
      const uint64_t v = prompt_ctx->last_run_weights_version();
      mixed += !bit_equal(prompt_logits, v % 2 == 0 ? ref.logits_a : ref.logits_b);
      ++runs;
      const HostTensor step_logits = std::move(step_through(*step_ctx, step_token)[0]);
      const uint64_t w = step_ctx->last_run_weights_version();
      mixed += !bit_equal(step_logits, w % 2 == 0 ? step_a : step_b);
      ++runs;
      versions.insert(v);
      versions.insert(w);
    }
  } catch (const std::exception& e) {
    serve_error = e.what();
    serving = false;  // the refit thread stops too
  }
  refits.join();
  ASSERT_EQ(serve_error, "");
  ASSERT_EQ(refit_error, "");
  EXPECT_EQ(mixed, 0) << "of " << runs << " runs";
  EXPECT_GT(versions.size(), 2u) << "the runs never overlapped the refits";
  EXPECT_EQ(engine->weights_version(), static_cast<uint64_t>(kREFITS));
  EXPECT_TRUE(bit_equal(run_prompt(), ref.logits_a));  // an even count of refits ends on A
}

INSTANTIATE_TEST_SUITE_P(
    Sources, CudaRefitWhileServing,
    ::testing::Values(ServingCase{"checkpoint_dir", true, RefitStaging::kVALIDATE_FIRST},
                      ServingCase{"device_validate_first", false, RefitStaging::kVALIDATE_FIRST},
                      ServingCase{"device_copy", false, RefitStaging::kDEVICE_COPY}),
    [](const ::testing::TestParamInfo<ServingCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace bindery::testing
