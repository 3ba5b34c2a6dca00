#pragma once
// Checks shared by the decoder-model tests.

#include <gtest/gtest.h>

#include <vector>

#include "bindery/engine.h"
#include "bindery/models/generation.h"

namespace bindery::testing {

/// A batch of prompts of different lengths decodes to exactly what each prompt gives alone,
/// greedy and sampled (sequence i of a batch draws with seed + i).
inline void expect_batch_equals_one_by_one(Engine& engine,
                                           const std::vector<std::vector<int32_t>>& prompts) {
  models::Generator gen(engine);
  for (const models::SamplingConfig& s :
       {models::SamplingConfig{.max_new_tokens = 10},
        models::SamplingConfig{
            .max_new_tokens = 10, .temperature = 0.8f, .top_k = 20, .top_p = 0.9f, .seed = 42}}) {
    const auto batch = gen.generate(prompts, s);
    for (size_t i = 0; i < prompts.size(); ++i) {
      models::SamplingConfig one = s;
      one.seed = s.seed + i;
      EXPECT_EQ(gen.generate({prompts[i]}, one)[0], batch[i]) << "prompt " << i;
      EXPECT_EQ(batch[i].size(), prompts[i].size() + 10);
    }
  }
}

}  // namespace bindery::testing
