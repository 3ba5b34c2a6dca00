#include "io/torch_state.h"

#include <charconv>
#include <unordered_map>
#include <unordered_set>

#include "bindery/error.h"
#include "io/pickle_globals.h"

namespace bindery::io {

namespace {

std::string key_name(const PickleValue& k) {
  switch (k.kind) {
    case PickleKind::kSTRING: return k.text;
    case PickleKind::kBYTES: return printable(k.text, std::string::npos);
    case PickleKind::kINT: return std::to_string(k.integer);
    case PickleKind::kBOOL: return k.integer ? "True" : "False";
    case PickleKind::kFLOAT: {  // shortest round trip, as Python's repr: 1.5, 1.0, 1e+16
      char buf[64];
      const auto r = std::to_chars(buf, buf + sizeof buf, k.real);
      std::string s(buf, r.ptr);
      if (s.find_first_of(".eni") == std::string::npos) s += ".0";
      return s;
    }
    default: return "None";
  }
}

class Flattener {
 public:
  Flattener(const std::string& file, const std::string& origin, const FlattenLimits& limits)
      : file_(file), origin_(origin), limits_(limits) {}

  void visit(const PickleValue& v, const std::string& name, size_t depth);
  TorchState take() { return std::move(state_); }

 private:
  [[noreturn]] void fail(const std::string& name, const std::string& what) const {
    throw Error(ErrorCode::kCORRUPT_FILE, origin_ + ": '" + printable(name, 200) + "': " + what);
  }
  std::string join(const std::string& name, const std::string& key) const {
    if (name.size() + key.size() + 1 > limits_.max_name)
      fail(name, "a name longer than " + std::to_string(limits_.max_name) + " bytes");
    return name.empty() ? key : name + "." + key;
  }
  void claim(const std::string& name) {
    name_bytes_ += name.size();
    if (name_bytes_ > limits_.max_name_bytes)
      fail(name, "the names exceed " + std::to_string(limits_.max_name_bytes) + " bytes");
    if (!names_.insert(name).second) fail(name, "two entries flatten to this name");
  }

  const std::string& file_;
  const std::string& origin_;
  FlattenLimits limits_;
  TorchState state_;
  std::unordered_set<std::string> names_;
  std::unordered_map<const PickleValue*, size_t> container_visits_;
  size_t visits_ = 0;
  size_t name_bytes_ = 0;
};

void Flattener::visit(const PickleValue& v, const std::string& name, size_t depth) {
  if (depth > limits_.max_depth)
    fail(name, "nested deeper than " + std::to_string(limits_.max_depth) +
                   " levels (a cycle, or a hostile pickle)");
  if (++visits_ > limits_.max_visits)
    fail(name, "more than " + std::to_string(limits_.max_visits) +
                   " values to visit (shared values multiply)");
  if (v.kind == PickleKind::kDICT || v.kind == PickleKind::kLIST || v.kind == PickleKind::kTUPLE)
    if (++container_visits_[&v] > limits_.max_container_visits)
      fail(name, "a container reached by more than " +
                     std::to_string(limits_.max_container_visits) +
                     " paths (shared values "
                     "multiply)");
  switch (v.kind) {
    case PickleKind::kDICT:
      for (const auto& [key, value] : v.dict->entries())
        visit(*value, join(name, key_name(*key)), depth + 1);
      return;
    case PickleKind::kLIST:
    case PickleKind::kTUPLE:
      for (size_t i = 0; i < v.items.size(); ++i)
        visit(*v.items[i], join(name, std::to_string(i)), depth + 1);
      return;
    case PickleKind::kTENSOR: {
      claim(name);
      const PickleTensor& t = *v.tensor;
      // rebuild_tensor checked that the view lies inside the storage: this cannot overflow.
      const int64_t byte_offset = t.offset * element_size(t.dtype);
      StoredTensor s;
      s.name = name;
      s.dtype = t.dtype;
      s.shape = t.shape;
      s.strides = t.strides;
      s.data = t.storage->data ? t.storage->data + byte_offset : nullptr;
      s.file = file_;
      s.file_offset = t.storage->file_offset >= 0 ? t.storage->file_offset + byte_offset : -1;
      state_.tensors.push_back(std::move(s));
      return;
    }
    default: claim(name); state_.skipped.push_back(name);
  }
}

}  // namespace

TorchState flatten_torch_state(const PickleValue& root, const std::string& file,
                               const std::string& origin, const FlattenLimits& limits) {
  Flattener f(file, origin, limits);
  f.visit(root, "", 0);
  return f.take();
}

TorchState read_torch_state(std::span<const std::byte> pickle, const StorageResolver& resolve,
                            const std::string& file, const std::string& origin) {
  const Unpickled u = unpickle(pickle, resolve, origin);
  return flatten_torch_state(*u.root, file, origin);
}

}  // namespace bindery::io
