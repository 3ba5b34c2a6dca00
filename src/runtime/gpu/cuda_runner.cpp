// The CUDA backend of engines and contexts: slots in one device allocation per engine, and a
// graph executor that runs each node with the kernels of runtime/cuda (decode GEMV, norms,
// rotary, flash attention over a paged-by-sequence KV cache, mixture-of-experts layers) and
// cuBLASLt for prefill GEMMs (with the plan's tactics, runtime/gpu/gemm.h).
//
// Activations live in the engine's weight type (bf16 or f16, fp32 inside every kernel); the
// logits matmul writes f32. A context's KV cache holds BINDERY_CUDA_MAX_SEQUENCES (default 8)
// sequences of the plan's max_seq_len per attention layer; a run continues each of its sequences
// where its cache ends (position 0 starts it again). Work is queued on the context's stream and the
// run waits for it once, at the end, to hand the outputs back in host memory.
//
// Fusions the executor makes on its own (the plan stays the same):
//  - a residual add whose result feeds an RMSNorm runs inside it (the fused add & norm kernel,
//    writing the sum over the operand that is not read again);
//  - silu(gate) * up over the two halves of a fused gate|up matmul is one silu_mul kernel;
//  - a column block of a one-row activation (decode: the q/k/v parts of the fused qkv) is a
//    view, not a copy, and rotary embeddings rotate in place what nothing reads afterwards;
//  - the rotary embeddings of an attention layer's q and k run with its KV-cache append as one
//    kernel (rope_kv_append), k rotated straight into the cache.

//
// Decode steps of the shapes of the previous run are replayed as a captured CUDA graph (one
// per 256-position context bucket); BINDERY_CUDA_GRAPHS=0 launches node by node instead.
//
// BINDERY_CUDA_PROFILE=1 times every node with CUDA events (no extra synchronisation) and
// prints, when the context is destroyed, the GPU time per layer type and per run, beside the
// host time of the runs: where a decode step's time goes.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "bindery/error.h"
#include "runtime/cuda/content_hash.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/elementwise.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/matmul_int4.h"
#include "runtime/cuda/moe.h"
#include "runtime/device_runner.h"
#include "runtime/gpu/gemm.h"
#include "runtime/gpu/transfer.h"

namespace bindery {
namespace {

constexpr int kDEFAULT_MAX_SEQUENCES = 8;
constexpr int kCONTEXT_BUCKET = 256;

// Sequences a context's KV cache holds at once (BINDERY_CUDA_MAX_SEQUENCES, 1..4096).
int max_sequences() {
  const char* v = std::getenv("BINDERY_CUDA_MAX_SEQUENCES");
  if (!v || !*v) return kDEFAULT_MAX_SEQUENCES;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  check(*end == 0 && n >= 1 && n <= 4096, ErrorCode::kINVALID_ARGUMENT,
        std::string("BINDERY_CUDA_MAX_SEQUENCES must be an integer in [1, 4096], got '") + v + "'");
  return static_cast<int>(n);
}

void cublas_ok(cublasStatus_t s, const std::string& what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(ErrorCode::kDEVICE,
                what + ": cuBLAS status " + std::to_string(static_cast<int>(s)));
}

// A device allocation that grows (never shrinks) to the largest size asked for.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(o.size_) {}
  ~Buffer() {
    if (data_) cudaFree(data_);
  }
  void* reserve(size_t bytes, const std::string& what) {
    if (bytes <= size_ && data_) return data_;
    if (data_) cudaFree(data_);
    data_ = nullptr;
    size_ = 0;
    cuda::check_cuda(cudaMalloc(&data_, std::max<size_t>(bytes, 256)),
                     "allocating " + std::to_string(bytes) + " bytes of device memory for " + what);
    size_ = std::max<size_t>(bytes, 256);
    return data_;
  }
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

class CudaAllocation final : public DeviceAllocation {
 public:
  CudaAllocation(int64_t bytes, const std::string& what) { buffer_.reserve(bytes, what); }
  void* data() const override { return buffer_.data(); }

 private:
  Buffer buffer_;
};

class CudaSlots final : public DeviceSlots {
 public:
  CudaSlots(Device device, const PlanMetadata& plan) : device_(device) {
    select();
    for (const Slot& s : plan.slots) slots_.push_back({s.offset, s.size_bytes});
    blob_size_ = static_cast<size_t>(std::max<int64_t>(plan.blob_size, 1));
    base_.reserve(blob_size_, "the engine's weights");
  }
  Device device() const override { return device_; }
  void* slot_ptr(int slot) const override {
    return static_cast<std::byte*>(base_.data()) + slots_[slot].first;
  }
  void copy(std::span<const DeviceCopy> copies, const std::string& what) override {
    copy_to_device(device_, copies, what);
  }
  void download(int slot, void* host) const override {
    select();
    cuda::check_cuda(cudaMemcpy(host, slot_ptr(slot), static_cast<size_t>(slots_[slot].second),
                                cudaMemcpyDeviceToHost),
                     "copying slot " + std::to_string(slot) + " from " + device_.to_string());
  }
  void zero_all() override {
    select();
    cuda::check_cuda(cudaMemset(base_.data(), 0, blob_size_),
                     "clearing the engine's weights on " + device_.to_string());
  }
  std::unique_ptr<DeviceAllocation> allocate(int64_t bytes, const std::string& what) override {
    select();
    return std::make_unique<CudaAllocation>(bytes, what + " on " + device_.to_string());
  }
  std::vector<uint64_t> hash(std::span<const Weights> views) const override {
    select();
    std::vector<uint64_t> out(views.size());
    if (views.empty()) return out;
    Buffer sums;
    sums.reserve(views.size() * sizeof(uint64_t), "the content hashes of a delta refit");
    auto* d = static_cast<uint64_t*>(sums.data());
    for (size_t i = 0; i < views.size(); ++i)
      cuda::content_hash(views[i].values, views[i].size_bytes(), d + i, nullptr);
    cuda::check_cuda(
        cudaMemcpy(out.data(), d, views.size() * sizeof(uint64_t), cudaMemcpyDeviceToHost),
        "reading the content hashes of a delta refit from " + device_.to_string());
    return out;
  }

 private:
  void select() const {
    cuda::check_cuda(cudaSetDevice(device_.index), "selecting " + device_.to_string());
  }
  Device device_;
  std::vector<std::pair<int64_t, int64_t>> slots_;  // offset, bytes
  size_t blob_size_ = 0;
  Buffer base_;
};

std::string node_text(const GraphNode& n) {
  return "layer '" + n.name + "' (" + std::string(layer_type_name(n.type)) + ")";
}
[[noreturn]] void unsupported(const GraphNode& n, const std::string& why) {
  throw Error(ErrorCode::kUNSUPPORTED, node_text(n) + " cannot run on CUDA: " + why);
}

cuda::BinaryOp binary_op(const GraphNode& n) {
  switch (std::get<ElementwiseParams>(n.params).op) {
    case ElementwiseOp::kSUM: return cuda::BinaryOp::kADD;
    case ElementwiseOp::kSUB: return cuda::BinaryOp::kSUB;
    case ElementwiseOp::kPROD: return cuda::BinaryOp::kMUL;
    case ElementwiseOp::kDIV: return cuda::BinaryOp::kDIV;
    case ElementwiseOp::kMIN: return cuda::BinaryOp::kMIN;
    case ElementwiseOp::kMAX: return cuda::BinaryOp::kMAX;
    case ElementwiseOp::kPOW: break;
  }
  unsupported(n, "pow has no CUDA kernel");
}

cuda::UnaryFn unary_fn(const GraphNode& n) {
  switch (std::get<UnaryParams>(n.params).op) {
    case UnaryOp::kSILU: return cuda::UnaryFn::kSILU;
    case UnaryOp::kRELU: return cuda::UnaryFn::kRELU;
    case UnaryOp::kGELU_ERF: return cuda::UnaryFn::kGELU_ERF;
    case UnaryOp::kGELU_TANH: return cuda::UnaryFn::kGELU_TANH;
    case UnaryOp::kSIGMOID: return cuda::UnaryFn::kSIGMOID;
    case UnaryOp::kTANH: return cuda::UnaryFn::kTANH;
    case UnaryOp::kNEG: return cuda::UnaryFn::kNEG;
    default: break;
  }
  unsupported(
      n, std::string(unary_op_name(std::get<UnaryParams>(n.params).op)) + " has no CUDA kernel");
}

// One sequence's tokens in a run: rows [row, row + count) at positions first_pos...
struct Segment {
  int64_t seq;
  int row, count, first_pos;
};

class CudaRunner final : public DeviceRunner {
 public:
  CudaRunner(Device device, const PlanMetadata& plan, const DeviceSlots& slots)
      : device_(device), plan_(plan), slots_(slots) {
    cuda::check_cuda(cudaSetDevice(device.index), "selecting " + device.to_string());
    act_ = activation_type();
    check_supported();
    gemm_ = std::make_unique<gpu::Gemm>(plan_, device.index);  // before what it would leak
    cuda::check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                     "creating a stream");
    cublas_ok(cublasCreate(&cublas_), "creating a cuBLAS handle");
    cublas_ok(cublasSetStream(cublas_, stream_), "binding cuBLAS to the stream");
    error_flag_.reserve(sizeof(int), "the error flag");
    max_sequences_ = max_sequences();
    slot_free_.assign(max_sequences_, true);
    plan_fusions();
    const char* graphs = std::getenv("BINDERY_CUDA_GRAPHS");
    graphs_enabled_ = !(graphs && std::string(graphs) == "0");
    const char* profile = std::getenv("BINDERY_CUDA_PROFILE");
    profile_ = profile && *profile && std::string(profile) != "0";
  }
  ~CudaRunner() override {
    if (profile_) print_profile();
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    if (cublas_) cublasDestroy(cublas_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  void run(const std::map<int, Weights>& inputs) override;
  Weights output(int tensor) const override {
    check(!selections_.count(tensor), ErrorCode::kINVALID_ARGUMENT,
          "output '" + graph().tensors[tensor].name +
              "' stays on the GPU: this context selects tokens from it (set_token_selection); "
              "read selected_tokens, or turn the selection off to get the logits");
    auto it = outputs_.find(tensor);
    check(it != outputs_.end(), ErrorCode::kINTERNAL, "no output tensor " + std::to_string(tensor));
    return it->second.view();
  }
  void set_token_selection(int tensor, const std::optional<TokenSelection>& s) override {
    if (s)
      selections_[tensor] = *s;
    else
      selections_.erase(tensor);
  }
  std::span<const int32_t> selected_tokens(int tensor) const override {
    auto it = selected_.find(tensor);
    check(it != selected_.end(), ErrorCode::kINVALID_ARGUMENT,
          "the last run selected no tokens from output '" + graph().tensors[tensor].name +
              "' (set_token_selection)");
    return it->second;
  }
  void reset_kv_cache() override {
    slot_of_.clear();
    length_.clear();
    slot_free_.assign(max_sequences_, true);
  }
  void reset_sequence(int64_t seq_id) override {
    auto it = slot_of_.find(seq_id);
    if (it == slot_of_.end()) return;
    slot_free_[it->second] = true;
    slot_of_.erase(it);
    length_.erase(seq_id);
  }
  int64_t sequence_length(int64_t seq_id) const override {
    auto it = length_.find(seq_id);
    return it == length_.end() ? 0 : it->second;
  }

 private:
  const Graph& graph() const { return plan_.graph; }
  bool is_weight(int t) const { return t >= 0 && graph().tensors[t].kind == TensorKind::kWEIGHT; }
  const Slot& slot_of_tensor(int t) const { return plan_.slots[graph().tensors[t].slot]; }

  // The engine's weight type, taken from its matmuls (bf16 or f16).
  DataType activation_type() const {
    std::optional<DataType> type;
    for (const GraphNode& n : graph().nodes) {
      if (n.type != LayerType::kMATMUL || !is_weight(n.inputs[1])) continue;
      const DataType t = slot_of_tensor(n.inputs[1]).desc.dtype;
      if (t != DataType::kBF16 && t != DataType::kHALF)
        throw Error(ErrorCode::kUNSUPPORTED,
                    "CUDA engines run bf16 or f16 weights, but " + node_text(n) + " has " +
                        std::string(dtype_name(t)) +
                        " weights: build the plan with --dtype bfloat16 (or float16)");
      if (type && *type != t)
        throw Error(ErrorCode::kUNSUPPORTED, "CUDA engines run one weight type; " + node_text(n) +
                                                 " has " + std::string(dtype_name(t)));
      type = t;
    }
    if (!type) throw Error(ErrorCode::kUNSUPPORTED, "the plan has no matmul to run on CUDA");
    return *type;
  }

  size_t g_rank(int t) const { return graph().tensors[t].desc.dims.size(); }

  void check_supported() const {
    for (const GraphNode& n : graph().nodes) {
      switch (n.type) {
        case LayerType::kMATMUL: {
          const auto& p = std::get<MatMulParams>(n.params);
          if (p.transpose_a || !p.transpose_b || !is_weight(n.inputs[1]) || is_weight(n.inputs[0]))
            unsupported(n, "only activations times a transposed weight (x · Wᵀ) run on CUDA");
          break;
        }
        case LayerType::kMATMUL_INT4: {
          if (is_weight(n.inputs[0]))
            unsupported(n, "only activations times packed int4 weights run on CUDA");
          for (int k = 1; k < 5; ++k)
            if (!is_weight(n.inputs[k]))
              unsupported(n, "qweight, qzeros, scales and g_idx must be weights on CUDA");
          break;
        }
        case LayerType::kGATHER: {
          const auto& p = std::get<GatherParams>(n.params);
          if (p.axis != 0 || p.index_offset != 0 || g_rank(n.inputs[0]) != 2)
            unsupported(n, "only row lookups (axis 0) of a whole 2-D table run on CUDA");
          break;
        }
        case LayerType::kROTARY: {
          const auto& p = std::get<RotaryParams>(n.params);
          if (p.dynamic_factor != 0) unsupported(n, "dynamic NTK rotary scaling");
          if (static_cast<int64_t>(p.inv_freq.size()) * 2 != p.head_dim)
            unsupported(n, "partial rotary embeddings");
          break;
        }
        case LayerType::kATTENTION: {
          const auto& p = std::get<AttentionParams>(n.params);
          const double want = 1.0 / std::sqrt(static_cast<double>(p.head_dim));
          if (std::abs(p.scale - want) > 1e-6 * want) unsupported(n, "scales other than 1/sqrt(D)");
          if (p.head_dim != 64 && p.head_dim != 128)
            unsupported(n, "head_dim other than 64 or 128");
          break;
        }
        case LayerType::kMOE: {
          const auto& p = std::get<MoeParams>(n.params);
          if (p.activation != UnaryOp::kSILU)
            unsupported(n, "experts whose activation is not silu");
          if (p.num_experts > cuda::kMoeMaxExperts)
            unsupported(n, "more than " + std::to_string(cuda::kMoeMaxExperts) + " experts");
          if (graph().tensors[n.inputs[2]].desc.dims[1] % 8 != 0 || p.ffn_size % 8 != 0)
            unsupported(n, "hidden or expert sizes that are not multiples of 8");
          break;
        }
        case LayerType::kRMSNORM:
        case LayerType::kSLICE:
        case LayerType::kELEMENTWISE:
        case LayerType::kUNARY: break;
        default: unsupported(n, "no CUDA kernel for this layer type yet");
      }
      for (int t : n.inputs)
        if (is_weight(t) && n.type != LayerType::kGATHER && n.type != LayerType::kMATMUL &&
            n.type != LayerType::kMATMUL_INT4 && is_floating(slot_of_tensor(t).desc.dtype) &&
            slot_of_tensor(t).desc.dtype != act_)
          unsupported(n, "its weights are " +
                             std::string(dtype_name(slot_of_tensor(t).desc.dtype)) + ", not " +
                             std::string(dtype_name(act_)));
    }
  }

  // The sequences of this run, from its host positions and seq_ids.
  // Profiling (BINDERY_CUDA_PROFILE): events around every node of a run, summed per type and
  // split into runs of one token per sequence (decode) and the others (prefill).
  struct TypeTime {
    double ms = 0;
    int64_t nodes = 0;
  };
  void record_event(size_t i) {
    while (events_.size() <= i) {
      cudaEvent_t e;
      cuda::check_cuda(cudaEventCreate(&e), "creating a profiling event");
      events_.push_back(e);
    }
    cuda::check_cuda(cudaEventRecord(events_[i], stream_), "recording a profiling event");
  }
  void collect_profile(double host_ms) {
    auto& table = decode_only_ ? decode_profile_ : prefill_profile_;
    auto& runs = decode_only_ ? decode_runs_ : prefill_runs_;
    const auto& nodes = graph().nodes;
    for (size_t i = 0; i < nodes.size(); ++i) {
      float ms = 0;
      cuda::check_cuda(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]),
                       "reading a profiling event");
      TypeTime& t = table[std::string(layer_type_name(nodes[i].type))];
      t.ms += ms;
      ++t.nodes;
    }
    runs.first += 1;
    runs.second += host_ms;
  }
  void print_profile() const {
    for (const auto* phase : {&decode_profile_, &prefill_profile_}) {
      const bool decode = phase == &decode_profile_;
      const auto& runs = decode ? decode_runs_ : prefill_runs_;
      if (runs.first == 0) continue;
      double gpu = 0;
      for (const auto& [type, t] : *phase) gpu += t.ms;
      std::fprintf(stderr,
                   "bindery cuda profile, %s: %lld runs, host %.3f ms per run, GPU (sum of "
                   "nodes) %.3f ms per run\n",
                   decode ? "decode steps" : "prefill runs", static_cast<long long>(runs.first),
                   runs.second / runs.first, gpu / runs.first);
      for (const auto& [type, t] : *phase)
        std::fprintf(stderr, "  %-12s %8.3f ms per run  %5.1f%%  (%lld nodes per run)\n",
                     type.c_str(), t.ms / runs.first, 100 * t.ms / gpu,
                     static_cast<long long>(t.nodes / runs.first));
    }
  }

  std::vector<Segment> segments(const Weights& positions, const Weights& seq_ids) const;
  void prepare_batch(const std::vector<Segment>& segs);  // fills batch_ and run_slots_
  void prepare_node(const GraphNode& n, size_t index);
  void select_tokens(int t, const TokenSelection& s);
  void launch_graph();
  void launch_node(const GraphNode& n, size_t index);
  void plan_fusions();
  void plan_fusion_patterns();
  // A view of `offset_bytes` into tensor `from`'s storage instead of a buffer of its own.
  void alias(int t, int from, int64_t offset_bytes = 0) {
    data_[t] = static_cast<std::byte*>(data_[from]) + offset_bytes;
    view_[t] = true;
    storage_of_[t] = storage_of_[from];
    if (storage_of_[t] >= 0)
      storage_until_[storage_of_[t]] = std::max(storage_until_[storage_of_[t]], free_after_[t]);
  }
  // Storage for activation `t` from the pool: the smallest free buffer that fits, or a new one.
  void own_storage(int t) {
    const size_t need = static_cast<size_t>(dtype_bytes(descs_[t].dtype, volume(descs_[t].dims)));
    int best = -1;
    for (size_t p = 0; p < pool_.size(); ++p)
      if (storage_until_[p] < 0 && pool_size_[p] >= need &&
          (best < 0 || pool_size_[p] < pool_size_[best]))
        best = static_cast<int>(p);
    if (best < 0) {
      best = static_cast<int>(pool_.size());
      pool_.emplace_back();
      pool_size_.push_back(need);
      storage_until_.push_back(-1);
      pool_.back().reserve(need, graph().tensors[t].name);
    }
    data_[t] = pool_[best].data();
    view_[t] = false;
    storage_of_[t] = best;
    storage_until_[best] = std::max(free_after_[t], 0);
  }
  // After node `index`: storage no later node reads goes back to the pool.
  void release_storage(size_t index) {
    for (int& until : storage_until_)
      if (until >= 0 && until <= static_cast<int>(index)) until = -1;
  }
  // Whether node `index` is the last reader of activation `t` (its storage may be reused).
  bool last_reader(int t, size_t index) const {
    return t >= 0 && !is_weight(t) && !is_input_[t] && last_use_[t] == static_cast<int>(index);
  }
  void* ptr(int t) const {
    return is_weight(t) ? slots_.slot_ptr(graph().tensors[t].slot) : data_[t];
  }
  int64_t count(int t) const { return volume(descs_[t].dims); }
  // The inverse frequencies of rotary node `node` on the device, uploaded on its first run
  // (never inside a captured step: a graph replays only runs of shapes already run).
  const float* rotary_frequencies(int node) {
    Buffer& freq = inv_freq_[node];
    if (!freq.data()) {
      const auto& f = std::get<RotaryParams>(graph().nodes[node].params).inv_freq;
      freq.reserve(f.size() * sizeof(float), "rotary frequencies");
      cuda::check_cuda(
          cudaMemcpy(freq.data(), f.data(), f.size() * sizeof(float), cudaMemcpyHostToDevice),
          node_text(graph().nodes[node]));
    }
    return static_cast<const float*>(freq.data());
  }
  // A kMOE node at this run's shapes. Decode steps take the device-only path, the one a
  // captured graph can hold (and so launched steps compute what replayed ones do).
  cuda::MoeShape moe_shape(const GraphNode& n) const {
    const auto& p = std::get<MoeParams>(n.params);
    const Dims& x = descs_[n.inputs[0]].dims;
    return {static_cast<int>(x[0]),       static_cast<int>(x[1]),
            static_cast<int>(p.ffn_size), static_cast<int>(p.num_experts),
            static_cast<int>(p.top_k),    p.normalize_top_k};
  }
  cuda::MoePath moe_path() const {
    return decode_only_ ? cuda::MoePath::kGEMV : cuda::MoePath::kAUTO;
  }
  std::pair<void*, size_t> moe_workspace(const GraphNode& n) {
    const size_t bytes = cuda::moe_workspace_bytes(act_, moe_shape(n), moe_path());
    return {moe_workspace_.reserve(bytes, "the MoE layers"), bytes};
  }
  // Decode attention's workspace, zeroed whenever it grows so that its split counters start
  // at zero (cuda::WorkspaceCounters::kZERO); null when `bytes` is 0.
  void* reserve_attention_workspace(size_t bytes) {
    if (bytes == 0) return nullptr;
    if (bytes > attention_workspace_bytes_) {
      attention_workspace_.reserve(bytes, "decode attention");
      cuda::check_cuda(cudaMemsetAsync(attention_workspace_.data(), 0, bytes, stream_),
                       "clearing the decode attention workspace");
      attention_workspace_bytes_ = bytes;
    }
    return attention_workspace_.data();
  }

  Device device_;
  const PlanMetadata& plan_;
  const DeviceSlots& slots_;
  DataType act_ = DataType::kBF16;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::unique_ptr<gpu::Gemm> gemm_;  // kMATMUL (m > 8) through cuBLASLt, with the plan's tactics

  std::vector<TensorDesc> descs_;  // per tensor, as stored on the device
  std::vector<void*> data_;
  std::vector<Buffer> buffers_;
  std::map<int, HostTensor> outputs_;
  // Outputs reduced to token ids on the device after each run, and the last run's ids.
  std::map<int, TokenSelection> selections_;
  std::map<int, std::vector<int32_t>> selected_;
  std::vector<uint64_t> selection_seeds_;  // host source of the seeds' copy, alive until the sync
  Buffer selection_buffer_;                // seeds | ids on the device
  Buffer error_flag_;
  std::map<int, Buffer> inv_freq_;  // per rotary node

  // KV caches and their sequences.
  struct Cache {
    Buffer k, v;
    cuda::KvCacheView view;
  };
  std::map<int64_t, Cache> caches_;  // per AttentionParams::cache_index
  std::map<int64_t, int> slot_of_;   // sequence id -> cache slot
  std::map<int64_t, int64_t> length_;
  std::vector<bool> slot_free_;
  // This run's batch on the device: cu_seqlens | slots | context_lens.
  Buffer batch_buffer_;
  cuda::SeqBatchView batch_;
  bool decode_only_ = false;
  int longest_context_ = 0;      // this run's longest sequence, in positions
  int max_cache_len_ = INT_MAX;  // the shortest KV cache (max_seq_len) of the plan
  std::vector<int> run_slots_;   // the cache slot of each of the run's sequences
  Buffer workspace_;
  Buffer int4_weights_;  // a kMATMUL_INT4 layer's W, dequantized for a prefill GEMM
  // Decode attention's own workspace: its split counters stay zero between launches (the
  // kernel leaves them so), which holds only if nothing else writes it.
  Buffer attention_workspace_;
  size_t attention_workspace_bytes_ = 0;
  Buffer moe_workspace_;  // shared by the MoE layers, which run one at a time
  // Fusion plan (plan_fusions) and per-run aliasing.
  std::vector<int> last_use_;    // per tensor: last node reading it (INT_MAX: an output)
  std::vector<int> free_after_;  // per tensor: last node reading it, fused readers included
  // Activation storage, reused by liveness: tensors live from their node to free_after_.
  std::vector<Buffer> pool_;
  std::vector<size_t> pool_size_;
  std::vector<int> storage_until_;  // per pool buffer: last node needing it, -1 when free
  std::vector<int> storage_of_;     // per tensor: its pool buffer (-1: input, weight, none)
  std::vector<bool> view_;          // per tensor: a view into another tensor's storage
  std::vector<bool> is_input_;      // per tensor: a network input
  std::vector<bool> skip_;          // per node: runs inside another node
  // Per rmsnorm node: the residual add it runs (add = -1: none); the sum goes over `residual`,
  // the operand the add reads for the last time, and `x` is the kernel's other input.
  struct FusedAdd {
    int add = -1, residual = -1, x = -1;
  };
  std::vector<FusedAdd> fused_add_;
  std::vector<int> silu_mul_input_;  // per mul node: the gate|up tensor it reads, or -1
  // Per attention node: the rotary nodes of its q and k that run inside its cache append.
  struct FusedRope {
    int q = -1, k = -1;
  };
  std::vector<FusedRope> fused_rope_;
  // Per node: whether it is the q or k rotary of some fused_rope_.
  enum class FusedRopeRole : uint8_t { kNONE, kQ, kK };
  std::vector<FusedRopeRole> rope_role_;
  // Captured decode steps per context bucket (BINDERY_CUDA_GRAPHS=0 turns them off).
  struct GraphExecDeleter {
    void operator()(cudaGraphExec_t e) const { cudaGraphExecDestroy(e); }
  };
  using GraphExec = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, GraphExecDeleter>;
  std::map<int, GraphExec> graphs_;
  bool graphs_enabled_ = true;
  bool prepared_ = false;              // descs_, data_ and views hold for prepared_shapes_
  std::vector<Dims> prepared_shapes_;  // the inputs' shapes they were made for
  int max_sequences_ = kDEFAULT_MAX_SEQUENCES;
  bool profile_ = false;
  std::vector<cudaEvent_t> events_;
  std::map<std::string, TypeTime> decode_profile_, prefill_profile_;
  std::pair<int64_t, double> decode_runs_{0, 0.0}, prefill_runs_{0, 0.0};
};

void CudaRunner::plan_fusions() {
  plan_fusion_patterns();
  // A fused node reads what its skipped parts read: their inputs live until it runs.
  const Graph& g = graph();
  free_after_ = last_use_;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    std::vector<int> reads;
    if (fused_add_[i].add >= 0) reads = {fused_add_[i].residual, fused_add_[i].x};
    if (silu_mul_input_[i] >= 0) reads.push_back(silu_mul_input_[i]);
    for (int r : {fused_rope_[i].q, fused_rope_[i].k})
      if (r >= 0) reads.insert(reads.end(), g.nodes[r].inputs.begin(), g.nodes[r].inputs.end());
    for (int t : reads)
      if (t >= 0 && free_after_[t] != INT_MAX)
        free_after_[t] = std::max(free_after_[t], static_cast<int>(i));
  }
}

void CudaRunner::plan_fusion_patterns() {
  const Graph& g = graph();
  const size_t nodes = g.nodes.size(), tensors = g.tensors.size();
  last_use_.assign(tensors, -1);
  is_input_.assign(tensors, false);
  for (int t : g.inputs) is_input_[t] = true;
  std::vector<int> producer(tensors, -1), readers(tensors, 0);
  for (size_t i = 0; i < nodes; ++i) {
    for (int t : g.nodes[i].inputs)
      if (t >= 0) last_use_[t] = static_cast<int>(i), ++readers[t];
    for (int t : g.nodes[i].outputs) producer[t] = static_cast<int>(i);
  }
  for (int t : g.outputs) last_use_[t] = INT_MAX;
  for (const GraphNode& n : g.nodes)
    if (n.type == LayerType::kATTENTION)
      max_cache_len_ = std::min<int>(
          max_cache_len_, static_cast<int>(std::get<AttentionParams>(n.params).max_seq_len));
  skip_.assign(nodes, false);
  fused_add_.assign(nodes, {});
  silu_mul_input_.assign(nodes, -1);
  fused_rope_.assign(nodes, {});
  rope_role_.assign(nodes, FusedRopeRole::kNONE);
  const auto node_of = [&](int t, LayerType type) -> const GraphNode* {
    return t >= 0 && producer[t] >= 0 && g.nodes[producer[t]].type == type ? &g.nodes[producer[t]]
                                                                           : nullptr;
  };
  const auto column_block = [&](const GraphNode* slice, int64_t& start) {
    const auto& p = std::get<SliceParams>(slice->params);
    if (p.start.size() != 2 || p.start[0] != 0) return -1;
    for (int64_t st : p.stride)
      if (st != 1) return -1;
    start = p.start[1];
    return slice->inputs[0];
  };
  for (size_t i = 0; i < nodes; ++i) {
    const GraphNode& n = g.nodes[i];
    if (n.type == LayerType::kRMSNORM) {
      // add(a, b) -> rmsnorm, with one operand read for the last time by the add.
      const GraphNode* add = node_of(n.inputs[0], LayerType::kELEMENTWISE);
      if (!add || std::get<ElementwiseParams>(add->params).op != ElementwiseOp::kSUM) continue;
      const int a = add->inputs[0], b = add->inputs[1];
      if (is_weight(a) || is_weight(b) || g.tensors[a].desc.dims != g.tensors[b].desc.dims)
        continue;
      const size_t add_index = static_cast<size_t>(add - g.nodes.data());
      if (!last_reader(a, add_index) && !last_reader(b, add_index)) continue;
      // Nothing between the add and the norm may need the add's output computed already.
      bool adjacent = true;
      for (size_t k = add_index + 1; k < i; ++k)
        for (int t : g.nodes[k].inputs) adjacent = adjacent && t != add->outputs[0];
      if (!adjacent) continue;
      skip_[add_index] = true;
      const bool into_a = last_reader(a, add_index);
      fused_add_[i] = {static_cast<int>(add_index), into_a ? a : b, into_a ? b : a};
    } else if (n.type == LayerType::kATTENTION) {
      // rotary(q), rotary(k) -> attention, each rotary read by the attention only, same
      // positions and frequencies: one rope_kv_append.
      const GraphNode* rq = node_of(n.inputs[0], LayerType::kROTARY);
      const GraphNode* rk = node_of(n.inputs[1], LayerType::kROTARY);
      if (!rq || !rk || rq == rk || readers[rq->outputs[0]] != 1 || readers[rk->outputs[0]] != 1)
        continue;
      const auto& pq = std::get<RotaryParams>(rq->params);
      const auto& pk = std::get<RotaryParams>(rk->params);
      const auto& pa = std::get<AttentionParams>(n.params);
      if (rq->inputs[1] != rk->inputs[1] || pq.inv_freq != pk.inv_freq ||
          pq.attention_factor != pk.attention_factor || pq.head_dim != pa.head_dim ||
          pk.head_dim != pa.head_dim || pq.num_heads != pa.num_heads ||
          pk.num_heads != pa.num_kv_heads || pq.dynamic_factor != 0 || pk.dynamic_factor != 0)
        continue;
      const int q_index = producer[rq->outputs[0]], k_index = producer[rk->outputs[0]];
      fused_rope_[i] = {q_index, k_index};
      skip_[q_index] = skip_[k_index] = true;
      rope_role_[q_index] = FusedRopeRole::kQ;
      rope_role_[k_index] = FusedRopeRole::kK;
    } else if (n.type == LayerType::kELEMENTWISE &&
               std::get<ElementwiseParams>(n.params).op == ElementwiseOp::kPROD) {
      // silu(slice(X, [0, F))) * slice(X, [F, 2F)) over a fused gate|up X.
      for (int order = 0; order < 2; ++order) {
        const GraphNode* act = node_of(n.inputs[order], LayerType::kUNARY);
        const GraphNode* up = node_of(n.inputs[1 - order], LayerType::kSLICE);
        if (!act || !up || std::get<UnaryParams>(act->params).op != UnaryOp::kSILU) continue;
        const GraphNode* gate = node_of(act->inputs[0], LayerType::kSLICE);
        if (!gate || readers[act->outputs[0]] != 1) continue;
        int64_t gate_start = -1, up_start = -1;
        const int x = column_block(gate, gate_start);
        if (x < 0 || column_block(up, up_start) != x) continue;
        const Dims& xd = g.tensors[x].desc.dims;
        const int64_t f = g.tensors[gate->outputs[0]].desc.dims.back();
        if (xd.size() != 2 || xd[1] != 2 * f || gate_start != 0 || up_start != f || f % 8 != 0)
          continue;
        silu_mul_input_[i] = x;
        skip_[producer[act->outputs[0]]] = true;
        if (readers[gate->outputs[0]] == 1) skip_[producer[gate->outputs[0]]] = true;
        if (readers[up->outputs[0]] == 1) skip_[producer[up->outputs[0]]] = true;
        break;
      }
    }
  }
}

std::vector<Segment> CudaRunner::segments(const Weights& positions, const Weights& seq_ids) const {
  const auto* pos = static_cast<const int32_t*>(positions.values);
  const auto* seq = static_cast<const int32_t*>(seq_ids.values);
  const int64_t n = positions.count();
  std::vector<Segment> out;
  std::set<int64_t> seen;
  for (int64_t r = 0; r < n;) {
    Segment s{seq[r], static_cast<int>(r), 1, pos[r]};
    while (r + s.count < n && seq[r + s.count] == s.seq) {
      check(pos[r + s.count] == s.first_pos + s.count, ErrorCode::kUNSUPPORTED,
            "CUDA contexts run each sequence's tokens at consecutive positions: sequence " +
                std::to_string(s.seq) + " has position " + std::to_string(pos[r + s.count]) +
                " after " + std::to_string(s.first_pos + s.count - 1));
      ++s.count;
    }
    check(seen.insert(s.seq).second, ErrorCode::kUNSUPPORTED,
          "CUDA contexts run each sequence's tokens side by side: sequence " +
              std::to_string(s.seq) + " appears twice in one run");
    const int64_t held = sequence_length(s.seq);
    check(s.first_pos == 0 || s.first_pos == held, ErrorCode::kUNSUPPORTED,
          "CUDA contexts continue a sequence where its cache ends (or start it again at 0): "
          "sequence " +
              std::to_string(s.seq) + " holds " + std::to_string(held) +
              " positions, the run starts it at " + std::to_string(s.first_pos));
    out.push_back(s);
    r += s.count;
  }
  return out;
}

void CudaRunner::prepare_batch(const std::vector<Segment>& segs) {
  const int b = static_cast<int>(segs.size());
  std::vector<int32_t> host(3 * b + 1);
  std::vector<bool> free = slot_free_;
  int32_t* cu = host.data();
  int32_t* slots = cu + b + 1;
  int32_t* lens = slots + b;
  int max_len = 0, max_new = 1;
  decode_only_ = true;
  run_slots_.assign(b, -1);
  for (int i = 0; i < b; ++i) {
    const Segment& s = segs[i];
    int slot;
    if (auto it = slot_of_.find(s.seq); it != slot_of_.end()) {
      slot = it->second;
    } else {
      const auto f = std::find(free.begin(), free.end(), true);
      check(f != free.end(), ErrorCode::kINVALID_ARGUMENT,
            "a CUDA context holds at most " + std::to_string(max_sequences_) +
                " sequences at once (BINDERY_CUDA_MAX_SEQUENCES); reset some (reset_sequence) "
                "before starting sequence " +
                std::to_string(s.seq));
      slot = static_cast<int>(f - free.begin());
      *f = false;
    }
    cu[i] = s.row;
    slots[i] = slot;
    run_slots_[i] = slot;
    lens[i] = s.first_pos + s.count;
    max_len = std::max(max_len, lens[i]);
    max_new = std::max(max_new, s.count);
    decode_only_ = decode_only_ && s.count == 1;
  }
  cu[b] = b ? segs.back().row + segs.back().count : 0;
  auto* dev = static_cast<int32_t*>(batch_buffer_.reserve(host.size() * 4, "the batch"));
  cuda::check_cuda(
      cudaMemcpyAsync(dev, host.data(), host.size() * 4, cudaMemcpyHostToDevice, stream_),
      "copying the batch");
  // Decode attention sizes its grid by the longest context; rounded up to a bucket, the
  // launch (and a captured graph of the step) stays the same for 256 steps. The kernels read
  // each sequence's real length from context_lens.
  longest_context_ = max_len;
  if (decode_only_)
    max_len = std::min(max_cache_len_,
                       (max_len + kCONTEXT_BUCKET - 1) / kCONTEXT_BUCKET * kCONTEXT_BUCKET);
  batch_ = {b, dev, dev + b + 1, dev + 2 * b + 1, max_len, max_new};
}

// A decode step as one CUDA graph, captured on the first replay of each context bucket:
// ~10 launches per layer become one, and the GPU runs them back to back.
void CudaRunner::launch_graph() {
  const int bucket = batch_.max_context_len;
  auto it = graphs_.find(bucket);
  if (it == graphs_.end()) {
    // Everything the step allocates must exist before capture (no cudaMalloc inside it).
    for (const GraphNode& n : graph().nodes)
      if (n.type == LayerType::kATTENTION) {
        const auto& p = std::get<AttentionParams>(n.params);
        const size_t ws = cuda::decode_attention_workspace_bytes(
            batch_.num_seqs, static_cast<int>(p.num_heads), static_cast<int>(p.num_kv_heads),
            static_cast<int>(p.head_dim), batch_.max_context_len);
        reserve_attention_workspace(ws);
      } else if (n.type == LayerType::kMOE) {
        moe_workspace(n);
      }
    cudaGraph_t g = nullptr;
    cuda::check_cuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                     "capturing a decode step");
    try {
      for (size_t i = 0; i < graph().nodes.size(); ++i)
        if (!skip_[i]) launch_node(graph().nodes[i], i);
    } catch (...) {
      cudaStreamEndCapture(stream_, &g);
      if (g) cudaGraphDestroy(g);
      throw;
    }
    cuda::check_cuda(cudaStreamEndCapture(stream_, &g), "capturing a decode step");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    cuda::check_cuda(e, "instantiating the decode step's graph");
    it = graphs_.emplace(bucket, GraphExec(exec)).first;
  }
  cuda::check_cuda(cudaGraphLaunch(it->second.get(), stream_), "launching the decode step's graph");
}

void CudaRunner::run(const std::map<int, Weights>& inputs) {
  const auto host_start = std::chrono::steady_clock::now();
  cuda::check_cuda(cudaSetDevice(device_.index), "selecting " + device_.to_string());
  const Graph& g = graph();
  // A run of the shapes of the previous one (every decode step of a batch) replays its
  // kernels: shapes, buffers and views are the same, so only the launches remain.
  std::vector<Dims> shapes;
  for (int t : g.inputs) shapes.push_back(inputs.at(t).shape);
  const bool replay = prepared_ && shapes == prepared_shapes_;
  if (!replay) {
    prepared_ = false;
    graphs_.clear();
    descs_.assign(g.tensors.size(), {});
    data_.assign(g.tensors.size(), nullptr);
    buffers_.resize(g.tensors.size());
    storage_of_.assign(g.tensors.size(), -1);
    view_.assign(g.tensors.size(), false);
    std::fill(storage_until_.begin(), storage_until_.end(), -1);
  }
  for (int t : g.inputs) {
    const Weights& w = inputs.at(t);
    descs_[t] = {w.dtype, w.shape};
    void* d =
        buffers_[t].reserve(static_cast<size_t>(w.size_bytes()), "input " + g.tensors[t].name);
    cuda::check_cuda(cudaMemcpyAsync(d, w.values, static_cast<size_t>(w.size_bytes()),
                                     cudaMemcpyHostToDevice, stream_),
                     "copying input '" + g.tensors[t].name + "'");
    data_[t] = d;
  }
  for (size_t t = 0; t < g.tensors.size(); ++t)
    if (g.tensors[t].kind == TensorKind::kWEIGHT)
      descs_[t] = slot_of_tensor(static_cast<int>(t)).desc;

  // The run's sequences, from the host copies of the first attention layer's inputs.
  std::vector<Segment> segs;
  for (const GraphNode& n : g.nodes) {
    if (n.type != LayerType::kATTENTION) continue;
    auto pos = inputs.find(n.inputs[3]), seq = inputs.find(n.inputs[4]);
    check(pos != inputs.end() && seq != inputs.end(), ErrorCode::kUNSUPPORTED,
          node_text(n) + ": positions and seq_ids must be network inputs on CUDA");
    segs = segments(pos->second, seq->second);
    prepare_batch(segs);
    break;
  }
  cuda::check_cuda(cudaMemsetAsync(error_flag_.data(), 0, sizeof(int), stream_),
                   "clearing the error flag");

  std::set<int> outputs(g.outputs.begin(), g.outputs.end());
  if (replay && graphs_enabled_ && !profile_ && decode_only_) {
    launch_graph();
  } else {
    for (size_t node_index = 0; node_index < g.nodes.size(); ++node_index) {
      const GraphNode& n = g.nodes[node_index];
      if (profile_) record_event(node_index);
      if (!replay) {
        std::vector<TensorDesc> in;
        for (int t : n.inputs) {
          TensorDesc d = t < 0 ? kABSENT_DESC : descs_[t];
          if (t >= 0 && is_floating(d.dtype)) d.dtype = DataType::kFLOAT;  // as the graph types it
          in.push_back(d);
        }
        std::vector<TensorDesc> od;
        try {
          od = infer_outputs(n.type, n.params, in);
        } catch (const Error& e) {
          throw Error(ErrorCode::kSHAPE_MISMATCH, node_text(n) + ": " + e.what());
        }
        for (size_t k = 0; k < n.outputs.size(); ++k) {
          const int t = n.outputs[k];
          TensorDesc d = od[k];
          // Activations in the weight type; the logits matmul writes f32.
          const bool matmul = n.type == LayerType::kMATMUL || n.type == LayerType::kMATMUL_INT4;
          if (is_floating(d.dtype)) d.dtype = outputs.count(t) && matmul ? DataType::kFLOAT : act_;
          descs_[t] = d;
        }
        // A rotary fused into its attention's cache append still owns (or aliases) the rotated
        // q it writes; the rotated k goes straight to the cache and has no storage.
        if (!skip_[node_index] || rope_role_[node_index] == FusedRopeRole::kQ)
          prepare_node(n, node_index);
        release_storage(node_index);
      }
      if (skip_[node_index]) continue;  // runs inside the node that consumes its output
      launch_node(n, node_index);
    }
  }
  if (profile_) record_event(g.nodes.size());

  selected_.clear();
  for (int t : g.outputs) {
    if (auto sel = selections_.find(t); sel != selections_.end()) {
      select_tokens(t, sel->second);
      outputs_.erase(t);
      continue;
    }
    HostTensor host(DataType::kFLOAT, descs_[t].dims);
    if (descs_[t].dtype == DataType::kFLOAT) {
      cuda::check_cuda(
          cudaMemcpyAsync(host.data(), data_[t], static_cast<size_t>(host.size_bytes()),
                          cudaMemcpyDeviceToHost, stream_),
          "copying output '" + g.tensors[t].name + "'");
    } else {
      void* f32 = workspace_.reserve(static_cast<size_t>(host.size_bytes()), "output conversion");
      cuda::convert(descs_[t].dtype, data_[t], DataType::kFLOAT, f32, count(t), stream_);
      cuda::check_cuda(cudaMemcpyAsync(host.data(), f32, static_cast<size_t>(host.size_bytes()),
                                       cudaMemcpyDeviceToHost, stream_),
                       "copying output '" + g.tensors[t].name + "'");
    }
    outputs_[t] = std::move(host);
  }
  int flag = 0;
  cuda::check_cuda(
      cudaMemcpyAsync(&flag, error_flag_.data(), sizeof(int), cudaMemcpyDeviceToHost, stream_),
      "reading the error flag");
  cuda::check_cuda(cudaStreamSynchronize(stream_), "running the engine on " + device_.to_string());
  check(flag == 0, ErrorCode::kINVALID_ARGUMENT,
        (flag & cuda::kINT4_GROUP_ERROR)
            ? "a matmul_int4 layer's g_idx names a group outside its scales and zeros (corrupt "
              "GPTQ weights)"
            : "a gather index is out of range (a token id outside the vocabulary, or a logit row "
              "outside the run)");
  prepared_ = true;
  prepared_shapes_ = std::move(shapes);
  if (profile_)
    collect_profile(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host_start)
            .count());
  // The caches now hold the run's tokens.
  for (size_t i = 0; i < segs.size(); ++i) {
    slot_of_[segs[i].seq] = run_slots_[i];
    slot_free_[run_slots_[i]] = false;
    length_[segs[i].seq] = segs[i].first_pos + segs[i].count;
  }
}

// One token per row of logits output `t`, chosen on the device: only the ids come back.
void CudaRunner::select_tokens(int t, const TokenSelection& s) {
  const std::string what = "token selection from output '" + graph().tensors[t].name + "'";
  const Dims& dims = descs_[t].dims;
  const int64_t vocab = dims.empty() ? 0 : dims.back(), rows = vocab ? count(t) / vocab : 0;
  check(!dims.empty() && vocab <= INT_MAX && rows <= INT_MAX, ErrorCode::kSHAPE_MISMATCH,
        what + ": expected logits [rows, vocab], got " + to_string(dims));
  check_token_selection(s, rows, what);
  std::vector<int32_t>& ids = selected_[t];
  ids.resize(static_cast<size_t>(rows));
  if (rows == 0) return;
  const void* logits = data_[t];
  if (descs_[t].dtype != DataType::kFLOAT) {
    void* f32 = workspace_.reserve(static_cast<size_t>(count(t)) * 4, "output conversion");
    cuda::convert(descs_[t].dtype, data_[t], DataType::kFLOAT, f32, count(t), stream_);
    logits = f32;
  }
  const size_t seed_bytes = s.greedy() ? 0 : static_cast<size_t>(rows) * sizeof(uint64_t);
  auto* buffer = static_cast<std::byte*>(
      selection_buffer_.reserve(seed_bytes + static_cast<size_t>(rows) * 4, "the selected ids"));
  auto* dev_ids = reinterpret_cast<int32_t*>(buffer + seed_bytes);
  cuda::SamplingParams params;
  params.temperature = s.greedy() ? 0.f : *s.temperature;
  params.top_k = static_cast<int>(std::min<int64_t>(s.top_k, INT_MAX));
  params.top_p = s.top_p;
  params.offset = s.step;
  if (seed_bytes) {
    selection_seeds_.resize(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) selection_seeds_[r] = s.seed(r);
    cuda::check_cuda(cudaMemcpyAsync(buffer, selection_seeds_.data(), seed_bytes,
                                     cudaMemcpyHostToDevice, stream_),
                     what);
    params.row_seeds = reinterpret_cast<const uint64_t*>(buffer);
  }
  cuda::sample(static_cast<const float*>(logits), static_cast<int>(rows), static_cast<int>(vocab),
               params, dev_ids, stream_);
  cuda::check_cuda(cudaMemcpyAsync(ids.data(), dev_ids, static_cast<size_t>(rows) * 4,
                                   cudaMemcpyDeviceToHost, stream_),
                   what);
}

// Where the node's output lives: a view of another tensor (column block of a one-row
// activation, rotary in place, the sum of a fused add & norm) or a buffer of its own.
// Depends only on the run's shapes, so runs of the same shapes skip it (replay).
void CudaRunner::prepare_node(const GraphNode& n, size_t index) {
  const int out = n.outputs[0];
  if (n.type == LayerType::kSLICE) {
    const Dims& in = descs_[n.inputs[0]].dims;
    const auto& p = std::get<SliceParams>(n.params);
    bool stride_one = true;
    for (int64_t st : p.stride) stride_one = stride_one && st == 1;
    if (in.size() == 2 && in[0] == 1 && p.start.size() == 2 && stride_one) {
      const int64_t start = p.start[1] < 0 ? p.start[1] + in[1] : p.start[1];
      alias(out, n.inputs[0], dtype_bytes(descs_[out].dtype, start));
      return;
    }
  }
  if (n.type == LayerType::kROTARY && last_reader(n.inputs[0], index)) {
    alias(out, n.inputs[0]);  // rotated in place: nothing reads the unrotated values again
  } else if (const FusedAdd& f = fused_add_[index]; f.add >= 0) {
    alias(graph().nodes[f.add].outputs[0], f.residual);  // the sum, written over the residual
    own_storage(out);
  } else {
    own_storage(out);
  }
}

void CudaRunner::launch_node(const GraphNode& n, size_t index) {
  const int out = n.outputs[0];
  if (n.type == LayerType::kSLICE && view_[out]) return;  // a view: nothing to copy
  if (const FusedAdd& f = fused_add_[index]; f.add >= 0) {
    const int hidden = static_cast<int>(descs_[f.x].dims.back());
    cuda::rms_norm(act_, ptr(f.x), data_[f.residual], ptr(n.inputs[1]), data_[out],
                   static_cast<int>(count(f.x) / hidden), hidden,
                   std::get<NormParams>(n.params).epsilon, stream_);
    return;
  }
  if (silu_mul_input_[index] >= 0) {
    const int x = silu_mul_input_[index];
    const int ffn = static_cast<int>(descs_[x].dims[1] / 2);
    cuda::silu_mul(act_, ptr(x), data_[out], static_cast<int>(descs_[x].dims[0]), ffn, stream_);
    return;
  }
  void* y = data_[out];
  switch (n.type) {
    case LayerType::kGATHER: {
      const Dims& table = descs_[n.inputs[0]].dims;
      cuda::embedding_gather(act_, static_cast<const int32_t*>(ptr(n.inputs[1])), ptr(n.inputs[0]),
                             static_cast<int>(table[0]), static_cast<int>(table[1]), y,
                             static_cast<int>(count(n.inputs[1])),
                             static_cast<int*>(error_flag_.data()), stream_);
      return;
    }
    case LayerType::kRMSNORM: {
      const int hidden = static_cast<int>(descs_[n.inputs[0]].dims.back());
      cuda::rms_norm(act_, ptr(n.inputs[0]), nullptr, ptr(n.inputs[1]), y,
                     static_cast<int>(count(n.inputs[0]) / hidden), hidden,
                     std::get<NormParams>(n.params).epsilon, stream_);
      return;
    }
    case LayerType::kMATMUL: {
      const Dims& w = descs_[n.inputs[1]].dims;
      const int64_t nout = w[0], k = w[1], m = count(n.inputs[0]) / k;
      const DataType y_type = descs_[out].dtype;
      if (m <= 8 && k % 8 == 0) {
        cuda::gemv(act_, ptr(n.inputs[0]), ptr(n.inputs[1]), nullptr, y_type, y,
                   static_cast<int>(m), static_cast<int>(nout), static_cast<int>(k), stream_);
        return;
      }
      // cuBLASLt, with the plan's tactic for this shape where it has one.
      gemm_->run({act_, y_type, m, nout, k}, ptr(n.inputs[0]), ptr(n.inputs[1]), y, stream_,
                 node_text(n));
      return;
    }
    case LayerType::kMATMUL_INT4: {
      // Decode: the packed words streamed once (GEMV). Prefill: W dequantized to the activation
      // type once per run, then the cuBLASLt GEMM of kMATMUL.
      const auto& p = std::get<Int4MatmulParams>(n.params);
      const Slot& scales = slot_of_tensor(n.inputs[3]);
      const cuda::Int4Weights w{static_cast<const int32_t*>(ptr(n.inputs[1])),
                                static_cast<const int32_t*>(ptr(n.inputs[2])),
                                ptr(n.inputs[3]),
                                scales.desc.dtype,
                                static_cast<const int32_t*>(ptr(n.inputs[4])),
                                static_cast<int>(p.in_features),
                                static_cast<int>(p.out_features),
                                static_cast<int>(p.group_count),
                                static_cast<int>(p.zero_offset)};
      const int64_t m = count(n.inputs[0]) / p.in_features;
      const DataType y_type = descs_[out].dtype;
      auto* flag = static_cast<int*>(error_flag_.data());
      if (m <= 8) {
        cuda::matmul_int4_gemv(act_, ptr(n.inputs[0]), w, y_type, y, static_cast<int>(m), flag,
                               stream_);
        return;
      }
      void* dequantized = int4_weights_.reserve(
          static_cast<size_t>(dtype_bytes(act_, p.in_features * p.out_features)),
          "the dequantized weights of " + node_text(n));
      cuda::dequantize_int4(act_, w, dequantized, flag, stream_);
      gemm_->run({act_, y_type, m, p.out_features, p.in_features}, ptr(n.inputs[0]), dequantized, y,
                 stream_, node_text(n));
      return;
    }
    case LayerType::kSLICE: {
      const Dims& in = descs_[n.inputs[0]].dims;
      const Dims& o = descs_[out].dims;
      const auto& p = std::get<SliceParams>(n.params);
      bool column_block = in.size() == 2 && p.start[0] == 0 && o[0] == in[0];
      for (int64_t s : p.stride) column_block = column_block && s == 1;
      if (!column_block) unsupported(n, "only column blocks of a 2-D activation are sliced");
      const size_t es = static_cast<size_t>(dtype_bytes(descs_[out].dtype, 1));
      const int64_t start = p.start[1] < 0 ? p.start[1] + in[1] : p.start[1];
      cuda::check_cuda(
          cudaMemcpy2DAsync(y, static_cast<size_t>(o[1]) * es,
                            static_cast<const std::byte*>(ptr(n.inputs[0])) + start * es,
                            static_cast<size_t>(in[1]) * es, static_cast<size_t>(o[1]) * es,
                            static_cast<size_t>(o[0]), cudaMemcpyDeviceToDevice, stream_),
          node_text(n));
      return;
    }
    case LayerType::kELEMENTWISE: {
      int a = n.inputs[0], b = n.inputs[1];
      if (count(b) > count(a)) std::swap(a, b);  // the broadcast operand second
      const cuda::BinaryOp op = binary_op(n);
      if (a != n.inputs[0] && op != cuda::BinaryOp::kADD && op != cuda::BinaryOp::kMUL &&
          op != cuda::BinaryOp::kMIN && op != cuda::BinaryOp::kMAX)
        unsupported(n, "the broadcast operand must be the second");
      cuda::binary(act_, op, ptr(a), ptr(b), y, count(a), count(b), stream_);
      return;
    }
    case LayerType::kUNARY:
      cuda::unary(act_, unary_fn(n), ptr(n.inputs[0]), y, count(n.inputs[0]), stream_);
      return;
    case LayerType::kROTARY: {
      const auto& p = std::get<RotaryParams>(n.params);
      if (y != ptr(n.inputs[0]))  // not rotated in place
        cuda::check_cuda(
            cudaMemcpyAsync(y, ptr(n.inputs[0]), static_cast<size_t>(dtype_bytes(act_, count(out))),
                            cudaMemcpyDeviceToDevice, stream_),
            node_text(n));
      const int tokens = static_cast<int>(descs_[n.inputs[0]].dims[0]);
      cuda::rotary_embedding(act_, y, nullptr, static_cast<const int32_t*>(ptr(n.inputs[1])),
                             rotary_frequencies(static_cast<int>(index)), p.attention_factor,
                             tokens, static_cast<int>(p.num_heads), 0, static_cast<int>(p.head_dim),
                             stream_);
      return;
    }
    case LayerType::kATTENTION: {
      const auto& p = std::get<AttentionParams>(n.params);
      Cache& c = caches_[p.cache_index];
      if (!c.k.data()) {
        const size_t bytes = static_cast<size_t>(max_sequences_) * p.max_seq_len * p.num_kv_heads *
                             p.head_dim * dtype_bytes(act_, 1);
        c.k.reserve(bytes, "the KV cache");
        c.v.reserve(bytes, "the KV cache");
        c.view = {c.k.data(),
                  c.v.data(),
                  act_,
                  max_sequences_,
                  static_cast<int>(p.max_seq_len),
                  static_cast<int>(p.num_kv_heads),
                  static_cast<int>(p.head_dim)};
      }
      check(longest_context_ <= p.max_seq_len, ErrorCode::kINVALID_ARGUMENT,
            node_text(n) + ": a sequence reaches " + std::to_string(longest_context_) +
                " positions, past the plan's max_seq_len " + std::to_string(p.max_seq_len));
      const int tokens = static_cast<int>(descs_[n.inputs[0]].dims[0]);
      cuda::SeqBatchView batch = batch_;
      if (decode_only_) batch.cu_seqlens = nullptr;
      if (const FusedRope& r = fused_rope_[index]; r.q >= 0) {
        const GraphNode& rq = graph().nodes[r.q];
        const GraphNode& rk = graph().nodes[r.k];
        cuda::rope_kv_append(ptr(rq.inputs[0]), data_[n.inputs[0]], ptr(rk.inputs[0]),
                             ptr(n.inputs[2]), static_cast<const int32_t*>(ptr(rq.inputs[1])),
                             rotary_frequencies(r.q),
                             std::get<RotaryParams>(rq.params).attention_factor, tokens,
                             static_cast<int>(p.num_heads), batch, c.view, stream_);
      } else {
        cuda::kv_cache_append(ptr(n.inputs[1]), ptr(n.inputs[2]), tokens, batch, c.view, stream_);
      }
      const int window = static_cast<int>(p.sliding_window);
      if (decode_only_) {
        const size_t ws = cuda::decode_attention_workspace_bytes(
            batch.num_seqs, static_cast<int>(p.num_heads), static_cast<int>(p.num_kv_heads),
            static_cast<int>(p.head_dim), batch.max_context_len);
        cuda::decode_attention(ptr(n.inputs[0]), y, static_cast<int>(p.num_heads), batch, c.view,
                               window, reserve_attention_workspace(ws), ws, stream_,
                               cuda::WorkspaceCounters::kZERO);
      } else {
        cuda::prefill_attention(ptr(n.inputs[0]), y, tokens, static_cast<int>(p.num_heads), batch,
                                c.view, window, stream_);
      }
      return;
    }
    case LayerType::kMOE: {
      const auto [ws, bytes] = moe_workspace(n);
      cuda::moe(act_, moe_shape(n), ptr(n.inputs[0]), ptr(n.inputs[1]), ptr(n.inputs[2]),
                ptr(n.inputs[3]), y, ws, bytes, moe_path(), cublas_, stream_);
      return;
    }
    default: unsupported(n, "no CUDA kernel for this layer type yet");
  }
}

}  // namespace

std::unique_ptr<DeviceSlots> make_device_slots(Device device, const PlanMetadata& plan) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  check(e == cudaSuccess && device.index >= 0 && device.index < n, ErrorCode::kDEVICE,
        "cannot run on " + device.to_string() + ": " +
            (e != cudaSuccess ? std::string("no CUDA device: ") + cudaGetErrorString(e)
                              : std::to_string(n) + " CUDA device(s) visible"));
  return std::make_unique<CudaSlots>(device, plan);
}

std::unique_ptr<DeviceRunner> make_device_runner(Device device, const PlanMetadata& plan,
                                                 const DeviceSlots& slots) {
  return std::make_unique<CudaRunner>(device, plan, slots);
}

}  // namespace bindery
