#pragma once
// 64-bit content hashes (XXH3 from Debian's libxxhash): plan section checksums, per-slot
// checksums, REFIT_IDENTICAL source hashes.

#include <cstddef>
#include <cstdint>
#include <string>

namespace bindery {

uint64_t hash64(const void* data, size_t size);
/// "0x0123456789abcdef".
std::string hash_to_hex(uint64_t h);

}  // namespace bindery
