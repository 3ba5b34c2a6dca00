#include "bindery/models/generation.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/logging.h"
#include "bindery/models/llama.h"
#include "bindery/tensor_parallel.h"

namespace bindery::models {

namespace {
TokenSelection selection_of(const SamplingConfig& s) {
  return {.temperature = s.temperature, .top_k = s.top_k, .top_p = s.top_p, .step = 0, .seeds = {}};
}
}  // namespace

int32_t sample_token(std::span<const float> logits, const SamplingConfig& s,
                     std::function<double()> uniform) {
  const TokenSelection selection = selection_of(s);
  return select_token(logits, selection, selection.greedy() ? 0.0 : uniform());
}

Generator::Generator(Engine& engine) : Generator(std::vector<Engine*>{&engine}) {}

Generator::Generator(std::vector<Engine*> ranks)
    : engine_(*ranks.at(0)), context_(std::make_unique<TensorParallelExecutor>(ranks)) {
  const Engine& engine = engine_;
  const LlamaConfig config = config_of(engine.metadata());
  vocab_ = config.vocab_size;
  auto it = engine.metadata().properties.find("model.max_seq_len");
  max_seq_len_ = it != engine.metadata().properties.end() ? std::stoll(it->second)
                                                          : config.max_position_embeddings;
  for (const TensorInfo& in : engine.inputs()) has_logit_rows_ |= in.name == "logit_rows";
}

Generator::~Generator() = default;

void Generator::run(const std::vector<int32_t>& ids, const std::vector<int32_t>& positions,
                    const std::vector<int32_t>& seq_ids, const std::vector<int32_t>& rows) {
  const auto n = static_cast<int64_t>(ids.size());
  for (int32_t id : ids)
    check(id >= 0 && id < vocab_, ErrorCode::kINVALID_ARGUMENT,
          "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
              std::to_string(vocab_) + ")");
  context_->set_input("input_ids", Weights(DataType::kINT32, {n}, ids.data()));
  context_->set_input("positions", Weights(DataType::kINT32, {n}, positions.data()));
  context_->set_input("seq_ids", Weights(DataType::kINT32, {n}, seq_ids.data()));
  // Plans built before logit_rows existed give every row's logits.
  if (has_logit_rows_)
    context_->set_input(
        "logit_rows", Weights(DataType::kINT32, {static_cast<int64_t>(rows.size())}, rows.data()));
  context_->execute();
}

HostTensor Generator::logits(std::span<const int32_t> tokens) {
  check(!tokens.empty(), ErrorCode::kINVALID_ARGUMENT, "logits of an empty token list");
  check(static_cast<int64_t>(tokens.size()) <= max_seq_len_, ErrorCode::kINVALID_ARGUMENT,
        std::to_string(tokens.size()) + " tokens exceed the engine's max sequence length " +
            std::to_string(max_seq_len_));
  context_->reset_kv_cache();
  std::vector<int32_t> ids(tokens.begin(), tokens.end()), positions(tokens.size());
  std::iota(positions.begin(), positions.end(), 0);
  const std::vector<int32_t> seq(tokens.size(), 0);
  context_->set_token_selection("logits", std::nullopt);
  run(ids, positions, seq, positions);  // every row
  return HostTensor::copy_of(context_->output("logits"));
}

std::vector<std::vector<int32_t>> Generator::generate(
    const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& sampling) {
  check(!prompts.empty(), ErrorCode::kINVALID_ARGUMENT, "generate: no prompts");
  check(sampling.max_new_tokens >= 0, ErrorCode::kINVALID_ARGUMENT,
        "max_new_tokens must not be negative");
  check(!sampling.temperature || *sampling.temperature >= 0, ErrorCode::kINVALID_ARGUMENT,
        "temperature must not be negative");
  check(sampling.top_p > 0 && sampling.top_p <= 1, ErrorCode::kINVALID_ARGUMENT,
        "top_p must be in (0, 1]");
  const size_t n = prompts.size();
  std::vector<std::vector<int32_t>> out = prompts;
  for (size_t i = 0; i < n; ++i) {
    check(!prompts[i].empty(), ErrorCode::kINVALID_ARGUMENT,
          "prompt " + std::to_string(i) + " is empty");
    check(static_cast<int64_t>(prompts[i].size()) <= max_seq_len_, ErrorCode::kINVALID_ARGUMENT,
          "prompt " + std::to_string(i) + " has " + std::to_string(prompts[i].size()) +
              " tokens; the engine's max sequence length is " + std::to_string(max_seq_len_));
  }
  if (sampling.max_new_tokens == 0) return out;
  context_->reset_kv_cache();
  std::vector<bool> done(n, false);
  std::vector<int32_t> ids, positions, seq_ids;
  std::vector<size_t> last_row(n);  // row of each sequence's last token in the run
  for (size_t i = 0; i < n; ++i)    // prefill: every prompt in one packed run
    for (size_t p = 0; p < prompts[i].size(); ++p) {
      ids.push_back(prompts[i][p]);
      positions.push_back(static_cast<int32_t>(p));
      seq_ids.push_back(static_cast<int32_t>(i));
      last_row[i] = ids.size() - 1;
    }
  std::vector<int32_t> wanted;  // the rows whose logits the step needs
  TokenSelection selection = selection_of(sampling);
  for (int64_t step = 0; step < sampling.max_new_tokens; ++step) {
    wanted.clear();
    for (size_t i = 0; i < n; ++i)
      if (!done[i]) wanted.push_back(static_cast<int32_t>(last_row[i]));
    // Sequence i draws under key seed + i at counter `step`, wherever its row is.
    selection.step = static_cast<uint64_t>(step);
    selection.seeds.clear();
    if (!selection.greedy()) {
      if (has_logit_rows_) {
        for (size_t i = 0; i < n; ++i)
          if (!done[i]) selection.seeds.push_back(sampling.seed + i);
      } else {
        for (int32_t seq : seq_ids) selection.seeds.push_back(sampling.seed + seq);
      }
    }
    context_->set_token_selection("logits", selection);
    run(ids, positions, seq_ids, wanted);
    const std::span<const int32_t> chosen = context_->selected_tokens("logits");
    size_t wanted_index = 0;
    ids.clear(), positions.clear(), seq_ids.clear();
    for (size_t i = 0; i < n; ++i) {
      if (done[i]) continue;
      const size_t row = has_logit_rows_ ? wanted_index++ : last_row[i];
      const int32_t token = chosen[row];
      out[i].push_back(token);
      if (on_token_) on_token_(i, token);
      const bool stop = std::find(sampling.stop_tokens.begin(), sampling.stop_tokens.end(),
                                  token) != sampling.stop_tokens.end();
      const bool full = static_cast<int64_t>(out[i].size()) >= max_seq_len_;
      if (full && !stop && step + 1 < sampling.max_new_tokens)
        log_warning("sequence " + std::to_string(i) + " reached the engine's max sequence length " +
                    std::to_string(max_seq_len_) + "; it stops there");
      if (stop || full) {
        done[i] = true;
        continue;
      }
      ids.push_back(token);
      positions.push_back(static_cast<int32_t>(out[i].size() - 1));
      seq_ids.push_back(static_cast<int32_t>(i));
      last_row[i] = ids.size() - 1;
    }
    if (progress_) progress_(step + 1);
    if (ids.empty()) break;
  }
  return out;
}

}  // namespace bindery::models
