// libFuzzer target: Plan::from_memory on arbitrary bytes. Loading may only fail with a
// bindery::Error; anything else escaping, a crash or a sanitizer report is a bug. A plan that
// loads must be usable: its slots' bytes readable, and it serializes to an image that loads
// and serializes to the same bytes again.
//
// Checksums would stop almost every mutation at the door, so an input refused with
// kCHECKSUM_MISMATCH is tried once more with its checksums recomputed: the metadata parser and
// the validation see mutated content, and the corpus stays made of plain plan files.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "bindery/error.h"
#include "bindery/plan.h"
#include "core/hash.h"

namespace {

using Bytes = std::vector<std::byte>;

[[noreturn]] void bug(const char* what, const bindery::Error* e = nullptr) {
  std::fprintf(stderr, "plan_load_fuzzer: %s%s%s\n", what, e ? ": " : "", e ? e->what() : "");
  std::abort();
}

uint64_t get(const Bytes& b, size_t at, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<uint64_t>(b[at + i]);
  return v;
}
void put64(Bytes& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<std::byte>(v >> (8 * i));
}

// Recomputes the section checksums (of the sections that lie inside the image) and the header
// checksum. False if the image is too short to have a section table.
bool fix_checksums(Bytes& b) {
  if (b.size() < 24) return false;
  const uint64_t count = get(b, 16, 4);
  if (count > (b.size() - 32) / 32) return false;
  const size_t header = 24 + 32 * count + 8;
  if (b.size() < header) return false;
  for (size_t i = 0; i < count; ++i) {
    const size_t e = 24 + 32 * i;
    const uint64_t off = get(b, e + 8, 8), size = get(b, e + 16, 8);
    if (size <= b.size() && off <= b.size() - size)
      put64(b, e + 24, bindery::hash64(b.data() + off, size));
  }
  put64(b, header - 8, bindery::hash64(b.data(), header - 8));
  return true;
}

void exercise(const bindery::Plan& plan) {
  const bindery::PlanMetadata& m = plan.metadata();
  unsigned sum = 0;
  for (size_t i = 0; i < m.slots.size(); ++i) {
    const std::byte* p = plan.slot_data(static_cast<int>(i));
    if (p && m.slots[i].size_bytes > 0)  // first and last byte: ASan checks they are real
      sum += static_cast<unsigned>(p[0]) + static_cast<unsigned>(p[m.slots[i].size_bytes - 1]);
  }
  if (plan.has_blob() && plan.blob().size() != static_cast<size_t>(m.blob_size))
    bug("loaded blob differs from blob_size");
  Bytes once, twice;
  try {
    once = plan.serialize();
    twice = bindery::Plan::from_memory(once).serialize();
  } catch (const bindery::Error& e) {
    bug("a plan that loaded does not serialize and reload", &e);
  }
  if (once != twice) bug("serialize(load(serialize(plan))) differs from serialize(plan)");
  volatile unsigned sink = sum;
  (void)sink;
}

bool try_load(std::span<const std::byte> bytes) {
  try {
    exercise(bindery::Plan::from_memory(bytes));
  } catch (const bindery::Error& e) {
    return e.code() == bindery::ErrorCode::kCHECKSUM_MISMATCH;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  if (try_load(bytes)) {
    Bytes fixed(bytes.begin(), bytes.end());
    if (fix_checksums(fixed)) try_load(fixed);
  }
  return 0;
}
