#pragma once
// Goldens written by tools/make_llama_fixtures.py and tools/make_small_model_goldens.py:
// golden.safetensors beside a model, with prompt.i, logits.i, logits_bf16.i and greedy.i.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "bindery/io/checkpoint_reader.h"

namespace bindery::testing {

struct Golden {
  std::vector<std::vector<int32_t>> prompts, greedy;
  std::vector<HostTensor> logits, logits_bf16;
};

/// The goldens of the model in `model_dir`.
inline Golden load_golden(const std::filesystem::path& model_dir) {
  const io::CheckpointReader g = io::CheckpointReader::open(model_dir / "golden.safetensors");
  Golden out;
  for (int i = 0; g.contains("prompt." + std::to_string(i)); ++i) {
    const std::string s = std::to_string(i);
    for (auto [name, list] : {std::pair{"prompt.", &out.prompts}, {"greedy.", &out.greedy}}) {
      const HostTensor t = g.read(name + s, DataType::kINT32);
      list->emplace_back(t.data_as<int32_t>(), t.data_as<int32_t>() + t.count());
    }
    out.logits.push_back(g.read("logits." + s));
    out.logits_bf16.push_back(g.read("logits_bf16." + s));
  }
  return out;
}

/// max |a - b| over f32 tensors of the same shape.
inline float max_abs_diff(const HostTensor& a, const HostTensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  float m = 0;
  for (int64_t i = 0; i < std::min(a.count(), b.count()); ++i)
    m = std::max(m, std::abs(a.data_as<float>()[i] - b.data_as<float>()[i]));
  return m;
}

}  // namespace bindery::testing
