#pragma once
// MetaCheckpoint: Meta's consolidated.NN.pth shards seen as one Hugging Face checkpoint. open()
// reads the shards' tensor list (no tensor data), checks it against params.json and plans, per
// HF name, which pieces to concatenate along which dim and whether to permute q/k rows;
// weights() then does the copying for one tensor at a time, so the peak memory of a load is
// the model once (plus one shard piece), never the checkpoint twice.

#include <map>
#include <set>
#include <string>
#include <vector>

#include "bindery/io/checkpoint_reader.h"
#include "bindery/models/llama_config.h"
#include "bindery/tensor_desc.h"
#include "bindery/weights.h"

namespace bindery::models {

/// Meta's name for the tensor of HF name `hf_name` ("lm_head.weight" -> "output.weight"); empty
/// when Meta has none.
std::string meta_name_of(const std::string& hf_name);
/// Whether directory `dir` holds a consolidated.NN.pth file (false when it cannot be listed).
bool has_meta_shards(const std::string& dir);

class MetaCheckpoint {
 public:
  /// Plans the merge of `reader`'s shards (a kMETA reader, which must outlive this object) under
  /// the config of `params_text` (meta_params_config of the file `params_file`), completing its
  /// vocab_size (when params.json has -1) and dtype from the tensors. Throws the errors
  /// load_from_meta_llama lists.
  MetaCheckpoint(const io::CheckpointReader& reader, const std::string& params_text,
                 std::string params_file);

  /// params.json's config, completed from the tensors.
  const LlamaConfig& config() const { return config_; }
  bool contains(const std::string& hf_name) const { return tensors_.count(hf_name) > 0; }
  /// As LlamaWeightSource::weights.
  Weights weights(const std::string& hf_name, const TensorDesc& desc,
                  std::vector<HostTensor>& keep) const;
  /// Meta names whose HF name is not in `used` (or that have none, like rope.freqs).
  std::vector<std::string> unused(const std::set<std::string>& used) const;

 private:
  struct Tensor {
    std::string meta_name;
    std::vector<const io::StoredTensor*> pieces;  // one per shard, in shard order
    int axis = -1;                                // concatenation dim; -1: replicated
    int64_t permute_heads = 0;                    // wq / wk: heads to permute rows over
    Dims shape;                                   // merged
  };
  // "consolidated.00.pth [32, 64], consolidated.01.pth [32, 64]".
  std::string pieces_text(const Tensor& t) const;
  void check_expected_shape(const Tensor& t, const Dims& expected, const std::string& why) const;

  std::string dir_, params_file_;
  LlamaConfig config_;
  std::vector<std::string> names_;         // Meta names, each once, in checkpoint order
  std::map<std::string, Tensor> tensors_;  // by HF name
};

}  // namespace bindery::models
