#pragma once
// Rotary frequencies for each rope type, as transformers computes them
// (modeling_rope_utils.py: default, linear, dynamic, llama3, yarn).

#include "bindery/models/llama_config.h"
#include "bindery/ops.h"

namespace bindery::models {

/// The kROTARY params of a layer of `config` (its inv_freq, attention factor and dynamic
/// scaling fields).
RotaryParams rotary_params(const LlamaConfig& config, int64_t num_heads);

}  // namespace bindery::models
