// TensorParallelExecutor: N contexts, N threads, one in-process group. A thread per rank is
// started for each run: the runs it is made for (a decode step of a model split over a few
// CPU ranks) take milliseconds, next to which starting threads (~20 µs) is noise.

#include "bindery/tensor_parallel.h"

#include <thread>

#include "bindery/communicator.h"
#include "bindery/error.h"

namespace bindery {
namespace {

int64_t collective_group_size(const Graph& g) {
  for (const GraphNode& n : g.nodes)
    if (n.type == LayerType::kALL_REDUCE || n.type == LayerType::kALL_GATHER)
      return std::get<CollectiveParams>(n.params).group_size;
  return 1;
}

}  // namespace

TensorParallelExecutor::TensorParallelExecutor(std::vector<Engine*> ranks)
    : engines_(std::move(ranks)) {
  const int n = static_cast<int>(engines_.size());
  check(n >= 1, ErrorCode::kINVALID_ARGUMENT, "a tensor-parallel executor needs at least 1 engine");
  const Graph& first = engines_[0]->metadata().graph;
  for (int r = 0; r < n; ++r) {
    check(engines_[r] != nullptr, ErrorCode::kINVALID_ARGUMENT,
          "engine of rank " + std::to_string(r) + " is null");
    const PlanMetadata& meta = engines_[r]->metadata();
    const int64_t group = collective_group_size(meta.graph);
    check(group == n, ErrorCode::kINVALID_ARGUMENT,
          "the engine of rank " + std::to_string(r) + " was built for a group of " +
              std::to_string(group) + " rank(s), not " + std::to_string(n));
    if (auto it = meta.properties.find("tensor_parallel.rank"); it != meta.properties.end())
      check(it->second == std::to_string(r), ErrorCode::kINVALID_ARGUMENT,
            "the engine given as rank " + std::to_string(r) + " was built as rank " + it->second +
                " (give the engines in rank order)");
    bool same = meta.graph.nodes.size() == first.nodes.size();
    for (size_t i = 0; same && i < first.nodes.size(); ++i)
      same = meta.graph.nodes[i].type == first.nodes[i].type;
    check(same, ErrorCode::kINVALID_ARGUMENT,
          "the engines of rank 0 and rank " + std::to_string(r) +
              " have different layers: they are not ranks of one split model");
    contexts_.push_back(engines_[r]->create_execution_context());
  }
  connect();
}

TensorParallelExecutor::~TensorParallelExecutor() = default;

void TensorParallelExecutor::connect() {
  group_ = make_in_process_group(size());
  for (int r = 0; r < size(); ++r) contexts_[r]->set_communicator(group_[r].get());
}

int TensorParallelExecutor::size() const { return static_cast<int>(contexts_.size()); }

ExecutionContext& TensorParallelExecutor::context(int rank) {
  check(rank >= 0 && rank < size(), ErrorCode::kINVALID_ARGUMENT,
        "no rank " + std::to_string(rank) + " in a group of " + std::to_string(size()));
  return *contexts_[rank];
}

void TensorParallelExecutor::set_input(const std::string& name, const Weights& view) {
  for (auto& c : contexts_) c->set_input(name, view);
}

void TensorParallelExecutor::execute() {
  const int n = size();
  std::vector<std::exception_ptr> errors(n);
  const auto run_rank = [&](int r) {
    try {
      contexts_[r]->execute();
    } catch (const std::exception& e) {
      errors[r] = std::current_exception();
      group_[r]->abort("rank " + std::to_string(r) + " failed: " + e.what());
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(n - 1);
  for (int r = 1; r < n; ++r) threads.emplace_back(run_rank, r);
  run_rank(0);
  for (auto& t : threads) t.join();
  // The root cause is the error that is not another rank's kABORTED echo.
  std::exception_ptr first;
  for (const auto& e : errors) {
    if (!e) continue;
    if (!first) first = e;
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      if (err.code() == ErrorCode::kABORTED) continue;
      first = e;
      break;
    } catch (...) {
      first = e;
      break;
    }
  }
  if (first) {
    connect();
    std::rethrow_exception(first);
  }
}

Weights TensorParallelExecutor::output(const std::string& name) const {
  return contexts_[0]->output(name);
}

void TensorParallelExecutor::set_token_selection(const std::string& name,
                                                 std::optional<TokenSelection> selection) {
  contexts_[0]->set_token_selection(name, std::move(selection));
}
std::span<const int32_t> TensorParallelExecutor::selected_tokens(const std::string& name) const {
  return contexts_[0]->selected_tokens(name);
}

void TensorParallelExecutor::reset_kv_cache() {
  for (auto& c : contexts_) c->reset_kv_cache();
}
void TensorParallelExecutor::reset_sequence(int64_t seq_id) {
  for (auto& c : contexts_) c->reset_sequence(seq_id);
}
int64_t TensorParallelExecutor::sequence_length(int64_t seq_id) const {
  return contexts_[0]->sequence_length(seq_id);
}

}  // namespace bindery
