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

#include <cstddef>
#include <map>
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
  /// Maps and validates `path`.
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& path() const;
  /// In the order of their data offsets.
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
/// writer does. Duplicate or empty names are an error (kINVALID_ARGUMENT).
void write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// The `weight_map` of a sharded checkpoint's index (model.safetensors.index.json or
/// pytorch_model.bin.index.json): tensor name -> shard file name. Shard names must be plain
/// file names (no directories, no ".."), since the index may be hostile.
std::map<std::string, std::string> read_weight_map(const std::string& index_path);

}  // namespace bindery::io
