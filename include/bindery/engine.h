#pragma once
// Engine and ExecutionContext (TensorRT's ICudaEngine / IExecutionContext).
//
// An Engine owns the slots (weights in their final layout) of one plan on one device. Slots
// never move: a refit rewrites them in place, so every ExecutionContext, created before or
// after, sees the weights of the latest completed refit. An engine may have many contexts;
// each context owns its activations and may run concurrently with other contexts. A refit may
// be applied from another thread while contexts run: its commit waits for running contexts
// and holds new runs off until every slot is written, so each run sees one weights version
// (ExecutionContext::last_run_weights_version), all old or all new.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bindery/device.h"
#include "bindery/plan.h"
#include "bindery/stream.h"
#include "bindery/token_selection.h"
#include "bindery/weights.h"

namespace bindery {

class ExecutionContext;
class Backend;
class Communicator;

struct TensorInfo {
  std::string name;
  TensorDesc desc;  // dims may hold kDYNAMIC
};

class Engine {
 public:
  /// Takes the plan (its blob becomes the slots' memory on the CPU). Throws kDEVICE when the
  /// device is unavailable, kCORRUPT_FILE when the plan is inconsistent.
  static std::unique_ptr<Engine> create(Plan plan, Device device = Device::cpu());
  static std::unique_ptr<Engine> load(const std::string& plan_path, Device device = Device::cpu());
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  Device device() const;
  const PlanMetadata& metadata() const;
  std::vector<TensorInfo> inputs() const;
  std::vector<TensorInfo> outputs() const;
  /// The contexts hold a pointer to this engine: destroy them first.
  std::unique_ptr<ExecutionContext> create_execution_context();

  /// True if the engine has any refittable weights.
  bool is_refittable() const;
  /// False while some slots of a stripped plan have never been refit (running throws
  /// kMISSING_WEIGHTS naming them).
  bool weights_complete() const;
  /// Incremented by every completed refit.
  uint64_t weights_version() const;
  /// hash64 of slot `i`'s bytes as the engine holds them now (computed on demand).
  uint64_t slot_checksum(int i) const;
  /// View of slot `i` where the engine keeps it: host memory for CPU engines, device memory
  /// for CUDA engines (which hold no host copy). Read-only to callers.
  Weights slot_view(int i) const;

  /// The plan of the engine as it is now (after refits), for saving.
  std::vector<std::byte> serialize(const SerializationOptions& options = {}) const;
  void save(const std::string& path, const SerializationOptions& options = {}) const;

 private:
  friend class Refitter;
  friend class ExecutionContext;
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ExecutionContext {
 public:
  ~ExecutionContext();
  ExecutionContext(const ExecutionContext&) = delete;
  ExecutionContext& operator=(const ExecutionContext&) = delete;

  /// Sets the concrete shape of input `name` (required for inputs with dynamic dims).
  /// Throws kNOT_FOUND / kSHAPE_MISMATCH naming the input and the allowed dims.
  void set_input_shape(const std::string& name, const Dims& dims);
  /// Binds input `name` to caller memory (must stay valid until the run completes). The view's
  /// dtype must match; its shape sets the input shape.
  void set_input(const std::string& name, const Weights& view);
  /// Runs synchronously. Throws kMISSING_WEIGHTS if the engine still misses weights,
  /// kINVALID_ARGUMENT if an input was not bound.
  void execute();
  /// Runs on `stream` after the work already enqueued there.
  void enqueue(Stream& stream);
  /// The group this context's collective layers (all_reduce, all_gather: an engine that is one
  /// rank of a tensor-parallel model) run over; borrowed, must outlive the runs. Running such
  /// an engine without one throws kINVALID_ARGUMENT. See TensorParallelExecutor.
  void set_communicator(Communicator* communicator);
  Communicator* communicator() const;

  // ---- KV cache (engines with attention layers) ----
  // Each context keeps the keys and values of the sequences it ran, by sequence id, so a
  // decoder runs a prompt once and then one token per step. Positions of a sequence continue
  // where its cache ends; starting it again at position 0 (or resetting it) drops its cache.
  void reset_kv_cache();
  void reset_sequence(int64_t seq_id);
  /// Positions the cache holds for `seq_id` (0 for an unknown sequence).
  int64_t sequence_length(int64_t seq_id) const;
  /// The engine's weights_version() during the last run: a run holds the weights of one
  /// version throughout (a refit from another thread waits for running contexts, and runs
  /// wait for a refit's commit), so outputs are all old or all new, never a mix.
  uint64_t last_run_weights_version() const;
  /// Result of the last run: a view into context-owned memory, valid until the next run.
  /// Throws kINVALID_ARGUMENT for an output a CUDA context reduced to token ids.
  Weights output(const std::string& name) const;
  /// From the next run on, selects one token per row of output `name` (f32 logits
  /// [rows, vocab]) where the run leaves them: on the GPU for CUDA contexts, which then copy
  /// back the ids alone, not the logits (output(name) throws). nullopt turns it off. Throws
  /// kNOT_FOUND for an unknown output, kINVALID_ARGUMENT for settings out of range.
  void set_token_selection(const std::string& name, std::optional<TokenSelection> selection);
  /// The ids the last run selected from output `name`, one per row; valid until the next run.
  std::span<const int32_t> selected_tokens(const std::string& name) const;
  /// A tensor marked with Network::mark_debug, as of the last run.
  Weights debug_tensor(const std::string& name) const;
  std::vector<std::string> debug_tensor_names() const;
  const Engine& engine() const;

 private:
  friend class Engine;
  struct Impl;
  explicit ExecutionContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bindery
