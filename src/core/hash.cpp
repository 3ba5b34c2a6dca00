#include "core/hash.h"

#include <xxhash.h>

#include <cstdio>

namespace bindery {

uint64_t hash64(const void* data, size_t size) { return XXH3_64bits(data, size); }

std::string hash_to_hex(uint64_t h) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace bindery
