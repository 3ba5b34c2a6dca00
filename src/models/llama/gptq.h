#pragma once
// GPTQ int4 checkpoints (AutoGPTQ / GPTQModel): each quantized Linear <name> is stored as
//   <name>.qweight  i32 [in/8, out]       8 4-bit values along the input dim (value j of a word
//                                         = (w >> 4j) & 0xF)
//   <name>.qzeros   i32 [groups, out/8]   zeros packed along the output dim; the v1 format
//                                         ("gptq", the default) stores zero - 1, "gptq_v2" zero
//   <name>.scales   f16 [groups, out]
//   <name>.g_idx    i32 [in]              the group of each input row (i / group_size without
//                                         desc_act; a permutation of that with it)
// and dequantizes to W[out, in] = (q[in, out] - zero[g_idx[in], out]) * scale[g_idx[in], out].
// The quantization config comes from config.json's quantization_config or quantize_config.json.

#include <optional>
#include <string>

#include "bindery/io/checkpoint_reader.h"
#include "bindery/tensor_desc.h"
#include "bindery/weights.h"

namespace bindery::models {

struct GptqConfig {
  int64_t bits = 4;
  int64_t group_size = 128;  // -1: one group over the whole input dim
  bool desc_act = false;
  bool sym = true;
  bool v2 = false;     // checkpoint_format "gptq_v2": zeros stored as they are
  std::string source;  // the file it came from, for messages
};

/// The GPTQ config of checkpoint directory `dir` (nullopt when it has none: neither
/// quantize_config.json nor a quantization_config in config.json). Errors: kUNSUPPORTED naming
/// the field and value for a quant_method other than gptq, bits other than 4, a
/// checkpoint_format other than gptq / gptq_v2 (marlin, ...), is_marlin_format / exllama
/// packings; kCORRUPT_FILE for invalid JSON.
std::optional<GptqConfig> read_gptq_config(const std::string& dir);

/// Whether `name` (an HF "<prefix>.weight") is stored quantized in `reader` (it has
/// <prefix>.qweight).
bool is_gptq_weight(const io::CheckpointReader& reader, const std::string& name);

/// The four tensor names that store the quantized weight `name` ("<prefix>.weight").
std::vector<std::string> gptq_parts(const std::string& name);

/// Dequantizes the weight `name` ("<prefix>.weight", of `desc` [out, in], a float type) from
/// its GPTQ tensors in `reader`. kSHAPE_MISMATCH / kDTYPE_MISMATCH naming the tensor, expected
/// and actual; kINVALID_ARGUMENT for a g_idx entry out of range.
HostTensor dequantize_gptq(const io::CheckpointReader& reader, const GptqConfig& config,
                           const std::string& name, const TensorDesc& desc);

}  // namespace bindery::models
