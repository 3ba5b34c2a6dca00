// libFuzzer target: the restricted unpickler and the torch interpretation (read_torch_state)
// on arbitrary bytes taken as a torch.save data.pkl. Reading may only fail with a
// bindery::Error; anything else escaping, a crash, a hang or a sanitizer report is a bug.
//
// Storage keys resolve to one 4096-byte heap record (so ASan's redzones sit right after it),
// except "empty" (a record of no bytes) and keys longer than 8 bytes (a missing record). Every
// byte that each tensor view can reach is read, so a view the validation let past the end of
// its storage is caught here.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "bindery/error.h"
#include "io/torch_state.h"

namespace {

constexpr size_t kRECORD_SIZE = 4096;

[[noreturn]] void bug(const char* what) {
  std::fprintf(stderr, "unpickle_fuzzer: %s\n", what);
  std::abort();
}

const std::byte* record() {
  // Never freed, and reachable from this static for the leak checker.
  static const std::vector<std::byte>* r = [] {
    auto* v = new std::vector<std::byte>(kRECORD_SIZE);
    for (size_t i = 0; i < v->size(); ++i) (*v)[i] = static_cast<std::byte>(i * 7);
    return v;
  }();
  return r->data();
}

bindery::io::StorageRecord resolve(const std::string& key) {
  if (key == "empty") return {nullptr, 0, -1};
  if (key.size() > 8)
    throw bindery::Error(bindery::ErrorCode::kCORRUPT_FILE, "no record for storage " + key);
  return {record(), kRECORD_SIZE, 64};
}

// Reads every byte between the view's first and last reachable element.
unsigned touch(const bindery::io::StoredTensor& t) {
  if (t.shape.size() != t.strides.size()) bug("rank of shape and strides differ");
  __int128 last = 0;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] < 0 || t.strides[i] < 0) bug("negative size or stride got through");
    if (t.shape[i] == 0) return 0;  // empty: no element is reachable
    last += static_cast<__int128>(t.shape[i] - 1) * t.strides[i];
  }
  const __int128 bytes = (last + 1) * bindery::io::element_size(t.dtype);
  if (!t.data || t.data < record()) bug("a non-empty view outside its record");
  if ((t.data - record()) + bytes > static_cast<__int128>(kRECORD_SIZE))
    bug("a view reaches past its record");
  if (t.file_offset != 64 + (t.data - record())) bug("file_offset disagrees with data");
  unsigned sum = 0;
  for (__int128 i = 0; i < bytes; ++i) sum += static_cast<unsigned>(t.data[static_cast<size_t>(i)]);
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const bindery::io::TorchState state =
        bindery::io::read_torch_state(bytes, resolve, "fuzz.pt", "fuzz data.pkl");
    unsigned sum = 0;
    for (const bindery::io::StoredTensor& t : state.tensors) {
      sum += touch(t);
      (void)t.is_contiguous();
      if (t.count() < 0 || t.size_bytes() < 0) bug("negative count or size");
    }
    volatile unsigned sink = sum;
    (void)sink;
  } catch (const bindery::Error&) {
  }
  return 0;
}
