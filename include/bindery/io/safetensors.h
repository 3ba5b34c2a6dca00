#pragma once
// safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
// then the data section. Files are memory-mapped and every tensor is a zero-copy view.
//
// Validation is strict, as the format specifies, because checkpoints come from the internet:
// header length within the file and at most 100 MB, valid JSON, known dtypes, data_offsets
// inside the data section, not overlapping and covering it without holes, and
// shape product × dtype size == byte length. Each violation throws a bindery::Error naming the
// file, the tensor and what was expected (kTRUNCATED_FILE, kCORRUPT_FILE, kUNSUPPORTED,
// kSHAPE_MISMATCH).
//
// Which check gives which code:
//   kTRUNCATED_FILE  file shorter than 8 bytes; header length N with 8 + N past the end of the
//                    file; a tensor whose data_offsets end past the end of the file (the data
//                    section is where a cut-off download is missing bytes)
//   kCORRUPT_FILE    N > kMAX_SAFETENSORS_HEADER; header not starting with '{', not valid
//                    UTF-8 JSON, not an object, nested deeper than a header can be, or with a
//                    key repeated in any object; an entry that is not exactly {"dtype": string,
//                    "shape": [non-negative integers], "data_offsets": [begin, end]} with
//                    begin <= end; "__metadata__" not an object of strings; tensors that,
//                    sorted by (begin, end), overlap, leave a hole, or leave trailing bytes
//                    (the reference rule: each begin equals the previous end, the last end
//                    equals the data section size; empty tensors may share an offset)
//   kUNSUPPORTED     a dtype that is not one of the 12 ElementType names
//   kSHAPE_MISMATCH  shape product × element size differs from end - begin (or overflows)

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bindery/io/stored_tensor.h"

namespace bindery {
class MappedFile;
}

namespace bindery::io {

inline constexpr int64_t kMAX_SAFETENSORS_HEADER = 100'000'000;

class SafetensorsFile {
 public:
  /// Maps and validates `path`. Throws kIO when it cannot be opened or mapped, and the errors
  /// listed at the top of this file for a file that is not valid safetensors.
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  /// The path given to open (not on a moved-from object).
  const std::string& path() const;
  /// In the order of their data offsets (ties, between empty tensors, by name). Views into the
  /// map: valid while this object (or the one it is moved into) lives.
  const std::vector<StoredTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Offset of the data section in the file (8 + header length).
  int64_t data_offset() const { return data_offset_; }

 private:
  SafetensorsFile();
  std::unique_ptr<MappedFile> file_;
  std::vector<StoredTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  int64_t data_offset_ = 0;
};

/// The tensors and metadata of a safetensors image in memory; views point into `bytes`.
/// `path` only names the file in errors and StoredTensor::file. Used by SafetensorsFile::open
/// and by the fuzzer.
struct ParsedSafetensors {
  std::vector<StoredTensor> tensors;
  std::map<std::string, std::string> metadata;
  int64_t data_offset = 0;
};
/// Validates as SafetensorsFile::open does; thread-safe, no side effects.
ParsedSafetensors parse_safetensors(std::span<const std::byte> bytes, const std::string& path);

/// A tensor to write: contiguous row-major host memory.
struct TensorToWrite {
  std::string name;
  ElementType dtype = ElementType::kF32;
  Dims shape;
  const void* data = nullptr;
};
/// Writes a safetensors file atomically (temporary file, then rename). Tensors are laid out in
/// the order given; the header is padded with spaces to a multiple of 8 bytes, as the reference
/// writer does; "__metadata__" comes first when `metadata` is not empty. The data is streamed
/// to the temporary file (no copy of it is made in memory), which is fsynced before the rename.
/// Duplicate or empty names, the name "__metadata__", negative dims, a null `data` with a
/// non-zero size and names or metadata that are not valid UTF-8 are kINVALID_ARGUMENT (nothing
/// is written); a failed write is kIO (the temporary file is removed, `path` is untouched).
void write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// The `weight_map` of a sharded checkpoint's index (model.safetensors.index.json or
/// pytorch_model.bin.index.json): tensor name -> shard file name. Shard names must be plain
/// file names (no directories, no ".."), since the index may be hostile.
/// Throws kNOT_FOUND if `index_path` does not exist, kIO if it cannot be read, kCORRUPT_FILE
/// for invalid JSON (repeated keys included), a missing or non-object "weight_map", a shard
/// that is not a string, or a shard name that is empty, ".", ".." or contains '/', '\\' or NUL.
std::map<std::string, std::string> read_weight_map(const std::string& index_path);

}  // namespace bindery::io
