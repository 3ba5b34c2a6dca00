#pragma once
// From the data.pkl of a torch.save archive to the tensors it holds: the restricted unpickler
// (io/pickle.h) builds the value tree, which is then flattened into named StoredTensors:
//   dict / OrderedDict  "a.b": keys joined with '.' (str keys as they are, int keys in
//                       decimal, None/bool/float as Python prints them, bytes escaped)
//   list / tuple        "a.0", "a.1", ...
//   tensor              a StoredTensor (a view into its storage's record)
//   anything else       a leaf listed in `skipped` (an epoch counter, a config string)
// A root that is itself a tensor (torch.save(t)) gets the empty name. A value the pickle
// shares (tied weights) is listed under each of its names. Two entries that flatten to one
// name are kCORRUPT_FILE, as are trees beyond the limits below (a cycle, a hostile pickle).
// A container may be reached by at most a few paths, so that sharing (t = (t, t), forty
// times over) cannot make the walk exponential: it stays linear in the pickle's size.

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "bindery/io/stored_tensor.h"
#include "io/pickle.h"

namespace bindery::io {

struct TorchState {
  std::vector<StoredTensor> tensors;  // in the order the pickle lists them
  std::vector<std::string> skipped;   // names of leaves that are not tensors
};

struct FlattenLimits {
  size_t max_depth = 256;                   // nesting of dicts, lists and tuples
  size_t max_visits = size_t{1} << 22;      // values visited (shared ones once per path)
  size_t max_container_visits = 8;          // visits of one shared dict, list or tuple
  size_t max_name = size_t{1} << 16;        // bytes of one flattened name
  size_t max_name_bytes = size_t{1} << 26;  // bytes of all names together
};

/// Flattens an unpickled root. Tensors get `file` as StoredTensor::file; `origin` names the
/// pickle in errors.
TorchState flatten_torch_state(const PickleValue& root, const std::string& file,
                               const std::string& origin, const FlattenLimits& limits = {});

/// unpickle() then flatten_torch_state(). The tensors point into the resolver's records.
TorchState read_torch_state(std::span<const std::byte> pickle, const StorageResolver& resolve,
                            const std::string& file, const std::string& origin);

}  // namespace bindery::io
