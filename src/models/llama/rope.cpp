#include "models/llama/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace bindery::models {
namespace {

std::vector<double> default_inv_freq(double base, int64_t dim) {
  std::vector<double> f(static_cast<size_t>(dim / 2));
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = 1.0 / std::pow(base, static_cast<double>(2 * i) / static_cast<double>(dim));
  return f;
}

void llama3(const RopeConfig& r, std::vector<double>& inv_freq) {
  const auto old_len = static_cast<double>(r.original_max_position_embeddings);
  const double low_wavelen = old_len / r.low_freq_factor;
  const double high_wavelen = old_len / r.high_freq_factor;
  for (double& f : inv_freq) {
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen < high_wavelen) continue;  // high frequency: kept
    if (wavelen > low_wavelen) {           // low frequency: scaled
      f /= r.factor;
      continue;
    }
    const double smooth =
        (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    f = (1 - smooth) * f / r.factor + smooth * f;
  }
}

double yarn_mscale(double scale, double mscale = 1.0) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// YaRN: interpolated frequencies blended with the original ones along a linear ramp between
// the dims that complete beta_fast and beta_slow rotations in the pretraining context.
double yarn(const RopeConfig& r, int64_t dim, std::vector<double>& inv_freq) {
  const auto d = static_cast<double>(dim);
  const auto orig = static_cast<double>(r.original_max_position_embeddings);
  const auto correction_dim = [&](double rotations) {
    return d * std::log(orig / (rotations * 2 * std::numbers::pi)) / (2 * std::log(r.theta));
  };
  double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
  if (r.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, d - 1);
  if (low == high) high += 0.001;  // as transformers: avoid a zero-width ramp
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double extrapolation = 1 - ramp;
    const double interpolated = inv_freq[i] / r.factor;
    inv_freq[i] = interpolated * (1 - extrapolation) + inv_freq[i] * extrapolation;
  }
  if (r.attention_factor) return *r.attention_factor;
  if (r.mscale && r.mscale_all_dim && *r.mscale != 0 && *r.mscale_all_dim != 0)
    return yarn_mscale(r.factor, *r.mscale) / yarn_mscale(r.factor, *r.mscale_all_dim);
  return yarn_mscale(r.factor);
}

}  // namespace

RotaryParams rotary_params(const LlamaConfig& config, int64_t num_heads) {
  const RopeConfig& r = config.rope;
  const int64_t dim = config.rotary_dim();
  std::vector<double> inv_freq = default_inv_freq(r.theta, dim);
  RotaryParams p;
  p.num_heads = num_heads;
  p.head_dim = config.head_dim;
  switch (r.type) {
    case RopeType::kDEFAULT: break;
    case RopeType::kLINEAR:
      for (double& f : inv_freq) f /= r.factor;
      break;
    case RopeType::kDYNAMIC:
      p.dynamic_factor = static_cast<float>(r.factor);
      p.theta = static_cast<float>(r.theta);
      p.dynamic_max_positions = config.max_position_embeddings;
      break;
    case RopeType::kLLAMA3: llama3(r, inv_freq); break;
    case RopeType::kYARN: p.attention_factor = static_cast<float>(yarn(r, dim, inv_freq)); break;
  }
  p.inv_freq.assign(inv_freq.begin(), inv_freq.end());
  return p;
}

}  // namespace bindery::models
