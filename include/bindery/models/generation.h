#pragma once
// Token generation with a decoder engine (a plan built by build_llama): a prompt runs once
// (prefill), then one token per sequence per step from the context's KV cache. A batch of
// prompts of different lengths decodes together, packed, so it gives exactly what each prompt
// gives alone (greedy; sampled too, since each sequence draws from its own generator).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "bindery/weights.h"

namespace bindery {
class Engine;
class TensorParallelExecutor;
}  // namespace bindery

namespace bindery::models {

struct SamplingConfig {
  int64_t max_new_tokens = 16;
  /// nullopt or 0: greedy (argmax). Otherwise logits are divided by it before sampling.
  std::optional<float> temperature;
  int64_t top_k = 0;   // keep the k most likely tokens (0: all)
  float top_p = 1.0f;  // keep the smallest set whose probability reaches p (1: all)
  /// Sequence i of a batch draws its step-s token with Philox key seed + i, counter s
  /// (bindery/token_selection.h), where the logits are: on the GPU for CUDA engines.
  uint64_t seed = 0;
  /// Generation of a sequence ends after it produces one of these (which is kept).
  std::vector<int64_t> stop_tokens;
};

class Generator {
 public:
  /// Borrows `engine` (which must outlive the generator) and makes its own context.
  explicit Generator(Engine& engine);
  /// A model split for tensor parallelism: the ranks' engines in rank order, run together
  /// (TensorParallelExecutor). One engine is the same as Generator(Engine&).
  explicit Generator(std::vector<Engine*> ranks);
  ~Generator();

  /// f32 [n, vocab]: the logits at every position of `tokens` (run as one fresh sequence).
  HostTensor logits(std::span<const int32_t> tokens);
  /// Each prompt followed by its new tokens.
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts,
                                             const SamplingConfig& sampling);
  /// Called after every decode step with the number of tokens produced so far.
  void set_progress(std::function<void(int64_t)> progress) { progress_ = std::move(progress); }
  /// Called with (index of the prompt, token) for every new token as soon as it is sampled
  /// (a stop token included), in order, on the calling thread: for streaming text out.
  void set_on_token(std::function<void(size_t, int32_t)> on_token) {
    on_token_ = std::move(on_token);
  }

 private:
  // Runs packed tokens; the logits (and selected tokens) are those of `rows` (every row for
  // plans without the logit_rows input).
  void run(const std::vector<int32_t>& ids, const std::vector<int32_t>& positions,
              const std::vector<int32_t>& seq_ids, const std::vector<int32_t>& rows);
  Engine& engine_;
  std::unique_ptr<TensorParallelExecutor> context_;
  int64_t vocab_ = 0;
  int64_t max_seq_len_ = 0;
  bool has_logit_rows_ = false;
  std::function<void(int64_t)> progress_;
  std::function<void(size_t, int32_t)> on_token_;
};

/// Picks the next token from one row of logits (exposed for tests).
int32_t sample_token(std::span<const float> logits, const SamplingConfig& sampling,
                     std::function<double()> uniform);

}  // namespace bindery::models
