// libFuzzer target: parse_safetensors on arbitrary bytes. Parsing may only fail with a
// bindery::Error; anything else escaping, a crash, a hang or a sanitizer report is a bug. A file
// that parses must be usable: every byte of every tensor readable (ASan checks the views lie
// inside the input), tensors in data offset order, each view where its file_offset says.
//
// A mutation inside the JSON almost always breaks the 8-byte header length in front of it, so
// each input is tried twice: as a file image, and as JSON text up to the first NUL byte
// followed by the data section, with the header length computed for it. The second form lets
// the fuzzer reach the entry and layout checks with the header text it mutates.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "bindery/error.h"
#include "bindery/io/safetensors.h"

namespace {

[[noreturn]] void bug(const char* what) {
  std::fprintf(stderr, "safetensors_header_fuzzer: %s\n", what);
  std::abort();
}

void parse(std::span<const std::byte> bytes) {
  bindery::io::ParsedSafetensors parsed;
  try {
    parsed = bindery::io::parse_safetensors(bytes, "<fuzz>");
  } catch (const bindery::Error&) {
    return;
  }
  unsigned sum = 0;
  int64_t offset = parsed.data_offset;
  for (const bindery::io::StoredTensor& t : parsed.tensors) {
    if (t.file_offset < offset) bug("tensors not in data offset order");
    if (t.data != bytes.data() + t.file_offset) bug("data does not point at file_offset");
    offset = t.file_offset;
    const int64_t size = t.size_bytes();
    if (size < 0 || t.strides.size() != t.shape.size()) bug("inconsistent tensor");
    for (int64_t i = 0; i < size; ++i) sum += static_cast<unsigned>(t.data[i]);
    offset += size;
  }
  if (offset != static_cast<int64_t>(bytes.size())) bug("tensors do not end at the end of file");
  volatile unsigned sink = sum;
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  parse(bytes);

  const void* nul = std::memchr(data, 0, size);
  const size_t header = nul ? static_cast<size_t>(static_cast<const uint8_t*>(nul) - data) : size;
  std::vector<std::byte> image(8 + header + (nul ? size - header - 1 : 0));
  for (int i = 0; i < 8; ++i) image[i] = static_cast<std::byte>(uint64_t{header} >> (8 * i));
  if (size > 0) std::memcpy(image.data() + 8, data, header);
  if (nul) std::memcpy(image.data() + 8 + header, data + header + 1, size - header - 1);
  parse(image);
  return 0;
}
