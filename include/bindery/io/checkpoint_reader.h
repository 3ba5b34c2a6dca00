#pragma once
// CheckpointReader: one interface over the checkpoints people have, a file or a directory:
//   model.safetensors | sharded *.safetensors + model.safetensors.index.json
//   pytorch_model.bin (any torch.save zip: .bin, .pt, .pth) | sharded + pytorch_model.bin.index.json
//   Meta's consolidated.NN.pth (several shards, each a full torch.save archive)
// Every file is opened once. Tensors can be listed, viewed in place (zero copy), copied and
// converted, or read in bulk and in parallel into caller-provided buffers (pinned memory, a
// refit staging area).

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bindery/io/stored_tensor.h"
#include "bindery/weights.h"

namespace bindery::io {

enum class CheckpointFormat { kSAFETENSORS, kTORCH, kMETA };
/// "safetensors", "torch", "meta".
std::string_view checkpoint_format_name(CheckpointFormat f);

struct ReadTarget {
  std::string name;
  void* dst = nullptr;
  int64_t capacity = 0;           // bytes available at dst
  std::optional<DataType> as;     // convert to this type; nullopt keeps the stored type
};

struct ReadOptions {
  int threads = 0;  // 0: all cores
  /// Plain file regions are read with pread, which is faster from the page cache than faulting
  /// in mapped pages one by one; false copies them from the memory map instead.
  bool use_pread = true;
  /// Called now and then with (bytes done, bytes in all) from the calling thread.
  std::function<void(int64_t, int64_t)> progress;
};

class CheckpointReader {
 public:
  /// Opens a checkpoint file or directory, detecting its layout. kNOT_FOUND when the path does
  /// not exist or a directory holds no known layout (the message lists what was looked for).
  static CheckpointReader open(const std::string& path);

  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;
  ~CheckpointReader();

  CheckpointFormat format() const;
  const std::string& path() const;
  /// The files read, in shard order.
  const std::vector<std::string>& files() const;
  int shard_count() const { return static_cast<int>(files().size()); }

  /// Every tensor, in file order then storage order. Meta shards that split one tensor are not
  /// merged here (that is the Meta loader's job); a name repeated across shards is listed once
  /// per shard, each with its file.
  const std::vector<StoredTensor>& tensors() const;
  bool contains(std::string_view name) const;
  /// kNOT_FOUND naming the checkpoint (and a close name, if there is one) when absent.
  const StoredTensor& tensor(std::string_view name) const;
  /// __metadata__ of safetensors files (merged over shards); empty for torch checkpoints.
  const std::map<std::string, std::string>& metadata() const;
  int64_t total_bytes() const;

  /// Zero-copy view. kUNSUPPORTED if the tensor is not contiguous or its type has no bindery
  /// DataType (f64, i16, fp8): read() converts those.
  Weights view(std::string_view name) const;
  /// A contiguous copy, converted to `as` when given (floats to floats, integers to integers,
  /// bool to bool and to integers; kDTYPE_MISMATCH otherwise, and for integers that do not fit).
  HostTensor read(std::string_view name, std::optional<DataType> as = std::nullopt) const;
  /// Reads many tensors into caller buffers at once, in parallel across tensors and within
  /// large ones. Every target is checked (name, capacity, conversion) before any byte moves.
  void read_into(std::span<const ReadTarget> targets, const ReadOptions& options = {}) const;

 private:
  CheckpointReader();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bindery::io
