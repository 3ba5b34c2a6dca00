#pragma once
// PyTorch checkpoints as torch.save writes them since 1.6 (.bin, .pt, .pth): a zip archive
// holding <prefix>/data.pkl and one record <prefix>/data/<key> per storage. The pickle is read
// by our own restricted unpickler, never executed: it knows the opcodes of protocols 2-5 that
// state dicts use and a closed list of globals (collections.OrderedDict,
// torch._utils._rebuild_tensor_v2/_v3, torch._utils._rebuild_parameter[_with_state],
// torch._tensor._rebuild_from_type_v2, the typed storages and dtypes, torch.Size,
// _codecs.encode; src/io/pickle_globals.h has the full list).
// Any other global is refused with an error naming it ("refusing to load global os.system").
//
// Tensors are views into the mapped archive (stored records) with their strides and storage
// offsets; several tensors may share one storage. Nested dicts are flattened with '.', so
// {"model": {"w": t}} lists "model.w"; lists and tuples of tensors are flattened by index
// (int dict keys, as in optimizer state, in decimal). A checkpoint that is a single tensor
// lists it under the empty name. Values that are not tensors (an epoch counter, a config
// string) are listed in skipped().

#include <memory>
#include <string>
#include <vector>

#include "bindery/io/stored_tensor.h"

namespace bindery::io {

class TorchCheckpoint {
 public:
  /// Maps `path` and reads its pickle. kIO when it cannot be opened or mapped. The legacy
  /// (pre-1.6, non-zip) format is refused with kUNSUPPORTED, as are big-endian archives, a
  /// forbidden global and pickle constructs outside state dicts; a damaged archive or pickle
  /// (no data.pkl, a storage without its record, a view past its storage) is kCORRUPT_FILE
  /// (kCHECKSUM_MISMATCH for a deflated record or data.pkl whose CRC does not match).
  static TorchCheckpoint open(const std::string& path);

  TorchCheckpoint(TorchCheckpoint&&) noexcept;
  TorchCheckpoint& operator=(TorchCheckpoint&&) noexcept;
  ~TorchCheckpoint();

  const std::string& path() const { return path_; }
  /// In the order the pickle lists them. Views into the map (or, for a deflated record, into
  /// a buffer owned here): valid while this object (or the one it is moved into) lives.
  /// file_offset is -1 for tensors of deflated records.
  const std::vector<StoredTensor>& tensors() const { return tensors_; }
  /// Dotted names of entries that are not tensors, skipped.
  const std::vector<std::string>& skipped() const { return skipped_; }

 private:
  TorchCheckpoint();
  struct Storage;
  std::string path_;
  std::unique_ptr<Storage> storage_;  // the mapped archive and any inflated records
  std::vector<StoredTensor> tensors_;
  std::vector<std::string> skipped_;
};

}  // namespace bindery::io
