// The in-process group: ranks are threads of this process, so a collective is a rendezvous
// on shared memory. Every collective is barrier-separated phases:
//   all_reduce: publish inputs | each rank sums its chunk of the elements, in rank order,
//               into the group's scratch | each rank copies the whole sum out | (next call)
//   all_gather: publish inputs | each rank copies every rank's input into its output
// The last barrier of each keeps inputs (and the scratch) alive until every rank has read
// them, which is also what lets all_reduce write `out` over its own `in`.

#include "bindery/communicator.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "bindery/error.h"

namespace bindery {
namespace {

struct Group {
  explicit Group(int n) : size(n), inputs(n), counts(n), dims(n) {}

  const int size;
  std::mutex mutex;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  bool aborted = false;
  std::string why;
  // The current collective's arguments, per rank.
  std::vector<const float*> inputs;
  std::vector<int64_t> counts;
  std::vector<Dims> dims;
  std::vector<float> scratch;

  [[noreturn]] void throw_aborted() const {
    throw Error(ErrorCode::kABORTED, "tensor-parallel group aborted: " + why);
  }

  // Blocks until every rank has arrived; throws kABORTED once the group is aborted.
  void barrier(std::unique_lock<std::mutex>& lock) {
    if (aborted) throw_aborted();
    const uint64_t gen = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    cv.wait(lock, [&] { return generation != gen || aborted; });
    if (generation == gen) throw_aborted();
  }

  void abort(const std::string& reason) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!aborted) why = reason;
    aborted = true;
    cv.notify_all();
  }
};

class InProcessCommunicator final : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<Group> group, int rank)
      : group_(std::move(group)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_->size; }

  void all_reduce_sum(const float* in, float* out, int64_t count) override {
    Group& g = *group_;
    std::unique_lock<std::mutex> lock(g.mutex);
    g.inputs[rank_] = in;
    g.counts[rank_] = count;
    if (static_cast<int64_t>(g.scratch.size()) < count) g.scratch.resize(count);
    g.barrier(lock);
    check_same_on_every_rank(g.counts, "all_reduce of " + std::to_string(count) + " elements");
    lock.unlock();
    const int64_t chunk = (count + g.size - 1) / g.size;
    const int64_t begin = std::min(count, chunk * rank_), end = std::min(count, begin + chunk);
    float* sum = g.scratch.data();
    std::copy(g.inputs[0] + begin, g.inputs[0] + end, sum + begin);
    for (int r = 1; r < g.size; ++r)
      for (int64_t i = begin; i < end; ++i) sum[i] += g.inputs[r][i];
    lock.lock();
    g.barrier(lock);
    lock.unlock();
    std::copy(sum, sum + count, out);
    lock.lock();
    g.barrier(lock);
  }

  void all_gather(const float* in, const Dims& dims, int axis, float* out) override {
    Group& g = *group_;
    check(axis >= 0 && axis < static_cast<int>(dims.size()), ErrorCode::kINVALID_ARGUMENT,
          "all_gather axis " + std::to_string(axis) + " is outside " + to_string(dims));
    std::unique_lock<std::mutex> lock(g.mutex);
    g.inputs[rank_] = in;
    g.dims[rank_] = dims;
    g.barrier(lock);
    check_same_on_every_rank(g.dims, "all_gather of " + to_string(dims));
    lock.unlock();
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < axis; ++k) outer *= dims[k];
    for (size_t k = axis; k < dims.size(); ++k) inner *= dims[k];
    for (int64_t o = 0; o < outer; ++o)
      for (int r = 0; r < g.size; ++r)
        std::memcpy(out + (o * g.size + r) * inner, g.inputs[r] + o * inner,
                    static_cast<size_t>(inner) * sizeof(float));
    lock.lock();
    g.barrier(lock);
  }

  void abort(const std::string& why) override { group_->abort(why); }

 private:
  // Under the group's mutex, after the first barrier: every rank has published its
  // arguments, and every rank sees the same ones, so all of them fail together (none reads
  // past another's smaller input). A mismatch means the ranks run different engines or inputs.
  template <class T>
  void check_same_on_every_rank(const std::vector<T>& per_rank, const std::string& what) {
    if (std::all_of(per_rank.begin(), per_rank.end(), [&](const T& v) { return v == per_rank[0]; }))
      return;
    Group& g = *group_;
    if (!g.aborted)
      g.why = "rank " + std::to_string(rank_) + " ran an " + what +
              " that another rank ran with another shape (do the ranks run one model's engines "
              "with the same inputs?)";
    g.aborted = true;
    g.cv.notify_all();
    g.throw_aborted();
  }

  std::shared_ptr<Group> group_;
  int rank_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_in_process_group(int size) {
  check(size >= 1, ErrorCode::kINVALID_ARGUMENT,
        "a tensor-parallel group needs at least 1 rank, got " + std::to_string(size));
  auto group = std::make_shared<Group>(size);
  std::vector<std::unique_ptr<Communicator>> ranks;
  for (int r = 0; r < size; ++r) ranks.push_back(std::make_unique<InProcessCommunicator>(group, r));
  return ranks;
}

}  // namespace bindery
