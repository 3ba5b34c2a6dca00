#pragma once
// LlamaWeightSource: a checkpoint directory as the loader and the refitter see it, whatever its
// format: the LlamaConfig it describes and its tensors under Hugging Face names.
//   Hugging Face: config.json + any layout CheckpointReader reads (tensors viewed or converted)
//   Meta: params.json + consolidated.NN.pth (meta_checkpoint.h merges and permutes them)
//   GPTQ: a Hugging Face directory with a GPTQ quantization config (gptq.h): its packed tensors
//         are read as stored (a packed model's parameters), and a quantized Linear's
//         "<name>.weight", which it lacks, is dequantized from <name>.qweight/.qzeros/.scales/
//         .g_idx when asked for (dequantizing loads, float engines refitting from it)
// Both load_from_hf_checkpoint and refit_from_hf_checkpoint go through it, so everything that
// takes a checkpoint directory takes both formats.

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/llama_config.h"
#include "bindery/recipe.h"
#include "bindery/tensor_desc.h"
#include "bindery/weights.h"
#include "models/llama/gptq.h"

namespace bindery::models {

class MetaCheckpoint;

class LlamaWeightSource {
 public:
  /// Opens `dir`, detecting its format (is_meta_llama_checkpoint). Errors as
  /// LlamaConfig::load and CheckpointReader::open for HF, load_from_meta_llama for Meta.
  static LlamaWeightSource open(const std::string& dir);
  /// Opens `dir` as a Meta checkpoint (kNOT_FOUND, saying what it lacks, if it is not one).
  static LlamaWeightSource open_meta(const std::string& dir);

  LlamaWeightSource(LlamaWeightSource&&) noexcept;
  LlamaWeightSource& operator=(LlamaWeightSource&&) noexcept;
  ~LlamaWeightSource();

  const std::string& dir() const { return dir_; }
  bool is_meta() const { return meta_ != nullptr; }
  /// The file the config came from: <dir>/config.json or <dir>/params.json.
  const std::string& config_file() const { return config_file_; }
  const LlamaConfig& config() const { return config_; }
  /// The GPTQ quantization config (nullopt for an unquantized checkpoint).
  const std::optional<GptqConfig>& gptq() const { return gptq_; }

  /// Whether the checkpoint has the tensor of this HF name.
  bool contains(const std::string& name) const;
  /// The tensor of HF name `name` as a weight of `desc`: a view into the checkpoint when its
  /// type and layout already are the weight's, else converted (and, for Meta, merged and
  /// permuted) into a tensor appended to `keep`, which must outlive the view and must have
  /// capacity for it (views into it must not move). kSHAPE_MISMATCH / kDTYPE_MISMATCH naming
  /// the tensor, its file, expected and actual.
  Weights weights(const std::string& name, const TensorDesc& desc,
                  std::vector<HostTensor>& keep) const;
  /// Only `block` of the tensor of HF name `name` (whose whole is a weight of `desc`), reading
  /// nothing else of it where it can: for a Hugging Face tensor stored in the weight's type, a
  /// block of leading rows is a view into the checkpoint, any other block is copied (and
  /// converted) from just its bytes. Meta and dequantized GPTQ tensors are made whole first,
  /// then sliced. `bytes_read` (when given) grows by the checkpoint bytes read.
  Weights block(const std::string& name, const TensorDesc& desc, const SourceBlock& block,
                std::vector<HostTensor>& keep, int64_t* bytes_read = nullptr) const;
  /// For messages about `names` (HF names the checkpoint lacks): "" for HF; for Meta,
  /// " (Meta's names: 'output.weight', ...)".
  std::string naming_note(const std::vector<std::string>& names) const;
  /// The checkpoint's tensor names (its own names: Meta's for Meta) that no name in `used`
  /// (HF names) takes, in checkpoint order, each once.
  std::vector<std::string> unused(const std::set<std::string>& used) const;

  /// Hands over the reader whose memory the views borrow; the source must not be used after.
  std::unique_ptr<io::CheckpointReader> release_reader();

 private:
  LlamaWeightSource() = default;
  std::string dir_;
  std::string config_file_;
  LlamaConfig config_;
  std::unique_ptr<io::CheckpointReader> reader_;
  std::unique_ptr<MetaCheckpoint> meta_;  // null for HF
  std::optional<GptqConfig> gptq_;
};

}  // namespace bindery::models
