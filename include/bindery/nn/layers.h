#pragma once
// Standard modules (PyTorch's parameter names and layouts, so Hugging Face checkpoints bind by
// name): Linear, Embedding, RmsNorm, LayerNorm, Conv2d. Each registers its parameters in the
// constructor (with the given dtype, no value) and emits its layers with
// `Tensor* forward(Emitter&, Tensor* x)`, naming them "<module path>.<op>".
// Constructors throw Error(kINVALID_ARGUMENT) for non-positive sizes; forward throws
// Error(kSHAPE_MISMATCH) naming the module when the input's static dims cannot fit, and the
// Emitter's and Network's errors otherwise. Returned Tensor* are owned by the Network.

#include <cstdint>

#include "bindery/dims.h"
#include "bindery/dtype.h"
#include "bindery/network.h"
#include "bindery/nn/emitter.h"
#include "bindery/nn/module.h"

namespace bindery::nn {

/// y = x·Wᵀ + b. Parameters: "weight" [out_features, in_features], "bias" [out_features] when
/// `bias`. Emits matmul(x, false, weight, true) ("matmul") then elementwise sum ("bias").
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true,
         DataType dtype = DataType::kFLOAT);
  std::string_view type_name() const override { return "Linear"; }

  /// `x`: [..., in_features] → [..., out_features].
  Tensor* forward(Emitter& em, Tensor* x);

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  /// The (possibly tied, see Module::tie_parameter) weight.
  Parameter& weight() { return parameter("weight"); }
  /// nullptr when constructed without bias.
  Parameter* bias() { return find_parameter("bias"); }

 private:
  int64_t in_features_;
  int64_t out_features_;
};

/// Token embedding: "weight" [num_embeddings, embedding_dim]; forward gathers rows (axis 0).
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, DataType dtype = DataType::kFLOAT);
  std::string_view type_name() const override { return "Embedding"; }

  /// `indices`: int32/int64 [...] → [..., embedding_dim] ("gather").
  Tensor* forward(Emitter& em, Tensor* indices);

  int64_t num_embeddings() const { return num_embeddings_; }
  int64_t embedding_dim() const { return embedding_dim_; }
  Parameter& weight() { return parameter("weight"); }

 private:
  int64_t num_embeddings_;
  int64_t embedding_dim_;
};

/// RMS normalisation over the last dimension: "weight" [dim] ("rms_norm").
class RmsNorm : public Module {
 public:
  RmsNorm(int64_t dim, float epsilon = 1e-6f, DataType dtype = DataType::kFLOAT);
  std::string_view type_name() const override { return "RmsNorm"; }

  /// `x`: [..., dim] → same shape.
  Tensor* forward(Emitter& em, Tensor* x);

  int64_t dim() const { return dim_; }
  float epsilon() const { return epsilon_; }
  Parameter& weight() { return parameter("weight"); }

 private:
  int64_t dim_;
  float epsilon_;
};

/// Layer normalisation over the last dimension: "weight" [dim], "bias" [dim] when `bias`
/// ("layer_norm").
class LayerNorm : public Module {
 public:
  LayerNorm(int64_t dim, float epsilon = 1e-5f, bool bias = true,
            DataType dtype = DataType::kFLOAT);
  std::string_view type_name() const override { return "LayerNorm"; }

  /// `x`: [..., dim] → same shape.
  Tensor* forward(Emitter& em, Tensor* x);

  int64_t dim() const { return dim_; }
  float epsilon() const { return epsilon_; }
  Parameter& weight() { return parameter("weight"); }
  /// nullptr when constructed without bias.
  Parameter* bias() { return find_parameter("bias"); }

 private:
  int64_t dim_;
  float epsilon_;
};

/// 2-D convolution, NCHW: "weight" [out_channels, in_channels / groups, kh, kw], "bias"
/// [out_channels] when `bias` ("conv"). `kernel`, `stride`, `padding` (symmetric) and `dilation`
/// hold {h, w}. Throws Error(kINVALID_ARGUMENT) if a Dims is not of size 2, a size is not
/// positive (padding: negative), or groups does not divide both channel counts.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Dims kernel, Dims stride = {1, 1},
         Dims padding = {0, 0}, Dims dilation = {1, 1}, int64_t groups = 1, bool bias = true,
         DataType dtype = DataType::kFLOAT);
  std::string_view type_name() const override { return "Conv2d"; }

  /// `x`: [N, in_channels, H, W] → [N, out_channels, H', W'].
  Tensor* forward(Emitter& em, Tensor* x);

  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  /// The layer parameters forward emits (no epilogue).
  const ConvParams& conv_params() const { return params_; }
  Parameter& weight() { return parameter("weight"); }
  /// nullptr when constructed without bias.
  Parameter* bias() { return find_parameter("bias"); }

 private:
  int64_t in_channels_;
  int64_t out_channels_;
  ConvParams params_;
};

}  // namespace bindery::nn
