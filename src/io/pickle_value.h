#pragma once
// The values our restricted unpickler (io/pickle.h) builds: a small tree of None, bool, int,
// float, str, bytes, list, tuple, dict (insertion-ordered), set, references to allowed globals,
// and the two torch objects a state dict is made of, storages and tensors.
//
// Values live in a PickleArena and refer to one another by plain pointer, as Python objects
// do: a value the pickle memoizes and fetches again (BINGET, DUP) is the same object, never a
// copy, so no input can make the unpickler copy an exponentially large tree, and cycles (a list
// appended to itself) cost nothing to free. Whoever walks the tree must bound its own depth.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bindery/dims.h"
#include "bindery/io/element_type.h"

namespace bindery::io {

enum class PickleKind : uint8_t {
  kNONE,
  kBOOL,
  kINT,
  kFLOAT,
  kSTRING,
  kBYTES,
  kLIST,
  kTUPLE,
  kDICT,
  kSET,
  kGLOBAL,
  kSTORAGE,
  kTENSOR,
};
/// Python's name for the kind: "NoneType", "bool", "int", "float", "str", "bytes", "list",
/// "tuple", "dict", "set", "global", "storage", "tensor".
std::string_view pickle_kind_name(PickleKind k);

/// The globals the unpickler lets a pickle name (see pickle_globals.h for the full list).
enum class PickleGlobal : uint8_t {
  kORDERED_DICT,                  // collections.OrderedDict
  kREBUILD_TENSOR_V2,             // torch._utils._rebuild_tensor_v2
  kREBUILD_TENSOR_V3,             // torch._utils._rebuild_tensor_v3
  kREBUILD_PARAMETER,             // torch._utils._rebuild_parameter
  kREBUILD_PARAMETER_WITH_STATE,  // torch._utils._rebuild_parameter_with_state
  kREBUILD_FROM_TYPE_V2,          // torch._tensor._rebuild_from_type_v2
  kCODECS_ENCODE,                 // _codecs.encode (bytes, as protocol 2 writes them)
  kTORCH_SIZE,                    // torch.Size
  kTENSOR_TYPE,                   // torch.Tensor, torch.nn.parameter.Parameter
  kSTORAGE_TYPE,                  // torch.FloatStorage, ..., torch.storage.UntypedStorage
  kDTYPE,                         // torch.float32, ..., torch.float8_e4m3fn
};

/// A storage that persistent_load resolved: `numel` elements of `dtype` at `data`, which the
/// resolver guaranteed to be at least numel × element_size(dtype) bytes long.
struct PickleStorage {
  std::string key;                       // the record's name in the archive (data/<key>)
  ElementType dtype = ElementType::kU8;  // kU8 for torch.storage.UntypedStorage
  int64_t numel = 0;
  const std::byte* data = nullptr;  // null only when numel is 0
  int64_t file_offset = -1;         // offset of data in the file; -1 when not a file region
};

/// A tensor that _rebuild_tensor_v2/v3 made, validated to lie inside its storage.
struct PickleTensor {
  const PickleStorage* storage = nullptr;
  ElementType dtype = ElementType::kF32;
  int64_t offset = 0;  // storage offset, in elements of dtype
  Dims shape;
  Dims strides;  // in elements of dtype, one per dim
};

struct PickleValue;

/// An insertion-ordered dict (or, with null values, a set) keyed by hashable scalars: None,
/// bool, int, float, str, bytes, compared as Python compares them (1 == 1.0 == True).
class PickleDict {
 public:
  using Entry = std::pair<PickleValue*, PickleValue*>;
  /// Sets d[key] = value: overwrites in place when an equal key exists (Python keeps the first
  /// position). The caller has checked that `key` is a hashable scalar (is_hashable_scalar).
  void set(PickleValue* key, PickleValue* value);
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  struct KeyHash {
    size_t operator()(const PickleValue* v) const;
  };
  struct KeyEq {
    bool operator()(const PickleValue* a, const PickleValue* b) const;
  };
  std::vector<Entry> entries_;
  std::unordered_map<PickleValue*, size_t, KeyHash, KeyEq> index_;
};

struct PickleValue {
  PickleKind kind = PickleKind::kNONE;
  bool ordered = false;              // kDICT made by collections.OrderedDict (may take BUILD state)
  int64_t integer = 0;               // kINT, kBOOL (0 or 1)
  double real = 0;                   // kFLOAT
  std::string text;                  // kSTRING (valid UTF-8), kBYTES, kGLOBAL ("module.name")
  std::vector<PickleValue*> items;   // kLIST, kTUPLE
  std::unique_ptr<PickleDict> dict;  // kDICT, kSET
  PickleGlobal global = PickleGlobal::kORDERED_DICT;  // kGLOBAL
  ElementType global_dtype = ElementType::kU8;        // kGLOBAL storage types and dtypes
  bool untyped = false;                               // kGLOBAL torch.storage.UntypedStorage
  std::unique_ptr<PickleStorage> storage;             // kSTORAGE
  std::unique_ptr<PickleTensor> tensor;               // kTENSOR
  mutable size_t hash = 0;  // cached key hash (scalars are immutable); 0: not computed yet
};

/// True for the kinds PickleDict accepts as keys.
bool is_hashable_scalar(const PickleValue& v);

/// Owns every value of one unpickling. Addresses are stable; freeing is flat (no recursion).
class PickleArena {
 public:
  /// A new value of `kind` (containers come with their empty PickleDict).
  PickleValue* make(PickleKind kind);
  size_t size() const { return values_.size(); }

 private:
  std::deque<PickleValue> values_;
};

}  // namespace bindery::io
