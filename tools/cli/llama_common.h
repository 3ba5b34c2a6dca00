#pragma once
// Helpers shared by the Llama commands (build, logits, generate, refit): token lists from the
// command line, JSON on stdout, progress on a terminal, and engines whose weights come from a
// checkpoint directory.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bindery/engine.h"
#include "bindery/tokenizer.h"

namespace bindery::cli {

/// "1,2,3" -> {1, 2, 3} (spaces around a piece are allowed). `option` names the option in
/// messages ("--tokens"). Throws Error(kINVALID_ARGUMENT) naming the option and the bad piece
/// for an empty list, an empty piece, a piece that is not an integer, a negative id or one
/// past the int32 range.
std::vector<int32_t> parse_token_list(const std::string& text, const std::string& option);

/// Prints `j` compactly on stdout, then a newline. Doubles keep enough digits to round-trip
/// (store floats as double to keep every bit of them).
void print_json(const nlohmann::json& j);

/// One line of progress on stderr, redrawn in place; silent unless stderr is a terminal, so
/// logs and scripts never see it. The line is cleared when the object dies. Not thread-safe.
class TtyProgress {
 public:
  explicit TtyProgress(std::string label);
  ~TtyProgress();
  TtyProgress(const TtyProgress&) = delete;
  TtyProgress& operator=(const TtyProgress&) = delete;

  bool enabled() const { return enabled_; }
  /// "<label> [done/total] what" (total 0: no counts).
  void update(const std::string& what, int64_t done = 0, int64_t total = 0);
  /// update() as a BuilderConfig progress callback; empty when not enabled. The callback
  /// borrows this object, which must outlive it.
  std::function<void(const std::string&, int64_t, int64_t)> callback();

 private:
  std::string label_;
  bool enabled_ = false;
  bool drawn_ = false;
};

/// Engine::load of `plan_path`; when `weights_dir` is not empty, every refittable weight is
/// then refit from the checkpoint there, Hugging Face or Meta (refit_from_hf_checkpoint: a
/// stripped plan is fine).
/// Throws kMISSING_WEIGHTS, naming the plan and the way out, when the engine still misses
/// weights (a stripped plan run without --weights).
std::unique_ptr<Engine> load_llama_engine(const std::string& plan_path,
                                          const std::string& weights_dir,
                                          Device device = Device::cpu());

/// "cpu", "cuda" or "cuda:N" (the --device option); kINVALID_ARGUMENT otherwise.
Device parse_device(const std::string& text);

/// The engines of a plan, or of a model split for tensor parallelism (one plan per rank, given
/// in any order): each loaded as load_llama_engine does (a rank refits only its slices of
/// `weights_dir`), ordered by rank. Throws kINVALID_ARGUMENT when several plans are not the
/// ranks 0..N-1 of one split, saying which is wrong.
std::vector<std::unique_ptr<Engine>> load_llama_ranks(const std::vector<std::string>& plan_paths,
                                                      const std::string& weights_dir,
                                                      Device device = Device::cpu());
std::vector<Engine*> engine_pointers(const std::vector<std::unique_ptr<Engine>>& engines);

/// The tokenizer at `path`: a tokenizer.json, a directory holding one (with its
/// tokenizer_config.json), or a plan built from a model directory that had one.
Tokenizer load_tokenizer(const std::string& path);

/// The tokenizer to run `plan` with: the one at `tokenizer_path` when it is given, else the one
/// the plan carries. Throws kNOT_FOUND, naming the plan and --tokenizer, when it carries none.
Tokenizer plan_tokenizer(const PlanMetadata& plan, const std::string& plan_path,
                         const std::string& tokenizer_path);

/// The prompt of logits and generate: the ids of --tokens, or --prompt encoded with
/// `tokenizer` (given exactly when --prompt is; special tokens added: Llama's BOS). Exactly one
/// of the two must be given (kINVALID_ARGUMENT otherwise).
std::vector<int32_t> prompt_tokens(const std::string& tokens, bool has_tokens,
                                   const std::string& prompt, const Tokenizer* tokenizer);

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace bindery::cli
