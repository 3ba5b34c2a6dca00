#pragma once
// Shared by the CUDA refit tests (tests/gpu/cuda_refit*_test.cpp): the refittable bf16 engines
// of the shipped model and its fine-tune, their reference outputs, and a checkpoint's source
// weights copied into each kind of memory a refit reads (pageable, pinned, device) with the
// views to set.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/generation.h"
#include "bindery/models/llama.h"
#include "bindery/refitter.h"
#include "common/engine_util.h"
#include "common/temp_dir.h"
#include "core/device_memory.h"

#if BINDERY_TESTS_HAVE_CUDART
#include <cuda_runtime_api.h>
#endif

namespace bindery::testing {

// The shipped model (A) and the same model fine-tuned on fortunes (B): same architecture
// (bf16, head_dim 64, tied embeddings), every weight different.
inline std::string model_a() { return std::string(BINDERY_SOURCE_DIR) + "/models/bible-llama"; }
inline std::string model_b() {
  return std::string(BINDERY_SOURCE_DIR) + "/models/bible-llama-fortunes";
}
inline const std::vector<int32_t>& test_prompt() {
  static const std::vector<int32_t> p = {1, 5, 9, 23, 42, 7, 100, 3};
  return p;
}

/// A refittable bf16 engine of `dir` on cuda:0 (REFIT both for the engine under test and the
/// fresh build it is compared with, so their slots have the same layout).
inline std::unique_ptr<Engine> cuda_refit_engine(const std::string& dir) {
  models::LlamaBuildOptions options;
  options.dtype = DataType::kBF16;
  options.refit = true;
  options.max_seq_len = 256;
  return Engine::create(models::build_llama(dir, options), Device::cuda(0));
}

inline int refittable_slots(const Engine& e) {
  int n = 0;
  for (const Slot& s : e.metadata().slots) n += s.refittable;
  return n;
}

/// Logits of the test prompt and slot checksums of fresh builds of A and B, computed once.
struct RefitReference {
  HostTensor logits_a, logits_b;
  std::vector<uint64_t> sums_a, sums_b;
  size_t sources = 0;  // refittable source weights
};
inline const RefitReference& refit_reference() {
  static const RefitReference ref = [] {
    RefitReference r;
    auto a = cuda_refit_engine(model_a());
    auto b = cuda_refit_engine(model_b());
    r.logits_a = models::Generator(*a).logits(test_prompt());
    r.logits_b = models::Generator(*b).logits(test_prompt());
    r.sums_a = slot_checksums(*a);
    r.sums_b = slot_checksums(*b);
    r.sources = Refitter(*a).all_weights().size();
    return r;
  }();
  return ref;
}

/// Pinned (page-locked) host memory from cudaHostAlloc. Move-only.
class PinnedBuffer {
 public:
  explicit PinnedBuffer(size_t bytes) {
#if BINDERY_TESTS_HAVE_CUDART
    if (cudaHostAlloc(&data_, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      throw Error(ErrorCode::kDEVICE, "cudaHostAlloc of " + std::to_string(bytes) + " bytes");
    }
#else
    throw Error(ErrorCode::kDEVICE, "this build has no CUDA runtime: no pinned memory");
#endif
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept : data_(o.data_) { o.data_ = nullptr; }
  PinnedBuffer& operator=(PinnedBuffer&&) = delete;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
#if BINDERY_TESTS_HAVE_CUDART
    if (data_) cudaFreeHost(data_);
#endif
  }
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
};

/// Where the source weights a test sets live.
enum class SourceKind {
  kMAPPED,    // views into the checkpoint's memory map (pageable)
  kPAGEABLE,  // HostTensor copies
  kPINNED,    // cudaHostAlloc copies
  kDEVICE,    // cudaMalloc copies on cuda:0
};
inline const char* source_kind_name(SourceKind k) {
  switch (k) {
    case SourceKind::kMAPPED: return "mapped";
    case SourceKind::kPAGEABLE: return "pageable";
    case SourceKind::kPINNED: return "pinned";
    case SourceKind::kDEVICE: return "device";
  }
  return "?";
}

/// Every refittable source weight of an engine, read from checkpoint `dir` (converted to the
/// prototype's dtype) and held in one kind of memory, with views to set; the views live as
/// long as this object.
struct SourceSet {
  std::vector<std::string> names;
  std::vector<Weights> views;
  std::unique_ptr<io::CheckpointReader> reader;  // kMAPPED: owns the map the views point into
  std::vector<HostTensor> host;
  std::vector<PinnedBuffer> pinned;
  std::vector<DeviceBuffer> device;
};

inline SourceSet read_sources(const Refitter& r, const std::string& dir, SourceKind kind) {
  SourceSet s;
  s.reader = std::make_unique<io::CheckpointReader>(io::CheckpointReader::open(dir));
  for (const std::string& name : r.all_weights()) {
    const TensorDesc proto = r.weights_prototype(name);
    HostTensor t = s.reader->read(name, proto.dtype);
    check(t.shape() == proto.dims, ErrorCode::kSHAPE_MISMATCH,
          "test setup: " + name + " in " + dir + " has another shape than the engine's source");
    const auto bytes = static_cast<size_t>(t.size_bytes());
    s.names.push_back(name);
    switch (kind) {
      case SourceKind::kMAPPED: {
        const Weights v = s.reader->view(name);
        check(v.dtype == proto.dtype, ErrorCode::kDTYPE_MISMATCH,
              "test setup: " + name + " is not stored in the engine's source type");
        s.views.push_back(Weights(v.dtype, proto.dims, v.values));
        break;
      }
      case SourceKind::kPAGEABLE:
        s.views.push_back(t.view());
        s.host.push_back(std::move(t));  // the data pointer stays where it is
        break;
      case SourceKind::kPINNED:
        s.pinned.emplace_back(bytes);
        std::memcpy(s.pinned.back().data(), t.data(), bytes);
        s.views.push_back(Weights(proto.dtype, proto.dims, s.pinned.back().data()));
        break;
      case SourceKind::kDEVICE:
        s.device.emplace_back(Device::cuda(0), bytes);
        s.device.back().copy_from_host(t.data(), bytes);
        s.views.push_back(
            Weights(proto.dtype, proto.dims, s.device.back().data(), Device::cuda(0)));
        break;
    }
  }
  return s;
}

inline void set_all(Refitter& r, const SourceSet& s) {
  for (size_t i = 0; i < s.names.size(); ++i) r.set_named_weights(s.names[i], s.views[i]);
}

/// Copies every regular file of checkpoint directory `from` into `to`.
inline void copy_checkpoint(const std::string& from, const std::filesystem::path& to) {
  for (const auto& e : std::filesystem::directory_iterator(from))
    if (e.is_regular_file()) std::filesystem::copy_file(e.path(), to / e.path().filename());
}

}  // namespace bindery::testing
