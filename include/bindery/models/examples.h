#pragma once
// Small built-in networks: the CLI's demo, the refit tests and the CPU refit benchmark use them.
//
//   mlp: x[batch, in] -> gate = x·W_gateᵀ, up = x·W_upᵀ (fused into one matmul by the builder)
//        -> silu(gate) * up -> ·W_downᵀ + b_down -> layernorm(ln.weight, ln.bias) -> y
//   cnn: x[N, 3, H, W] -> conv1 (+bias) -> gelu (fused into conv1) -> maxpool
//        -> conv2 -> batchnorm (folded into conv2 by recipe) -> relu -> min(., clip.max)
//        -> avgpool -> reshape -> ·fc.weightᵀ + fc.bias -> logits
//
// Weights are made from a seed; the networks borrow them (keep the map alive until build).

#include <cstdint>
#include <map>
#include <string>

#include "bindery/network.h"

namespace bindery::examples {

using WeightMap = std::map<std::string, HostTensor>;

struct MlpConfig {
  int64_t in = 16;
  int64_t hidden = 32;
  int64_t out = 16;
  int layers = 1;  // stacked blocks; weights are named "layers.<i>.<name>"
};
WeightMap mlp_weights(const MlpConfig& config, uint32_t seed);
/// Input "x" f32[-1, in]; output "y" f32[-1, out]. Debug tensor: "layers.0.act".
Network mlp_network(const MlpConfig& config, const WeightMap& weights);

struct CnnConfig {
  int64_t channels = 8;
  int64_t classes = 10;
  int64_t image = 16;  // H = W
};
WeightMap cnn_weights(const CnnConfig& config, uint32_t seed);
/// Input "image" f32[-1, 3, image, image]; output "logits" f32[-1, classes].
Network cnn_network(const CnnConfig& config, const WeightMap& weights);

/// Uniform values in [-scale, scale) from a seed (deterministic on every platform).
HostTensor random_tensor(Dims shape, uint32_t seed, float scale = 0.5f);

}  // namespace bindery::examples
