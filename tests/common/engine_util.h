#pragma once
// Helpers shared by the builder/refit/runtime tests: build, run once, compare bits.

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindery/builder.h"
#include "bindery/engine.h"
#include "bindery/error.h"
#include "bindery/models/examples.h"
#include "common/error_util.h"

namespace bindery::testing {

inline BuilderConfig config_with(std::initializer_list<BuilderFlag> flags) {
  BuilderConfig c;
  for (BuilderFlag f : flags) c.set_flag(f);
  return c;
}

inline std::unique_ptr<Engine> build_engine(const Network& net, const BuilderConfig& cfg) {
  return Engine::create(Builder().build(net, cfg));
}

inline HostTensor run(Engine& e, const std::string& input, const HostTensor& x,
                      const std::string& output) {
  auto ctx = e.create_execution_context();
  ctx->set_input(input, x.view());
  ctx->execute();
  return HostTensor::copy_of(ctx->output(output));
}

inline bool bit_equal(const HostTensor& a, const HostTensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.size_bytes())) == 0;
}

inline std::vector<uint64_t> slot_checksums(const Engine& e) {
  std::vector<uint64_t> v;
  for (size_t i = 0; i < e.metadata().slots.size(); ++i)
    v.push_back(e.slot_checksum(static_cast<int>(i)));
  return v;
}

/// Expects `fn` to throw bindery::Error with `code`.
template <class Fn>
void expect_error(ErrorCode code, Fn&& fn) {
  std::string message;
  EXPECT_EQ(error_of(fn, &message), code) << message;
}

/// The two example networks with their inputs, as test parameters.
struct ExampleCase {
  std::string name, input, output;
  Network (*network)(const examples::WeightMap&);
  examples::WeightMap (*weights)(uint32_t seed);
  HostTensor (*make_input)();
};

inline void PrintTo(const ExampleCase& c, std::ostream* os) { *os << c.name; }

inline examples::MlpConfig test_mlp_config() {
  return {.in = 24, .hidden = 40, .out = 24, .layers = 2};
}
inline examples::CnnConfig test_cnn_config() { return {.channels = 6, .classes = 5, .image = 8}; }

inline std::vector<ExampleCase> example_cases() {
  return {
      {"mlp", "x", "y",
       [](const examples::WeightMap& w) { return examples::mlp_network(test_mlp_config(), w); },
       [](uint32_t s) { return examples::mlp_weights(test_mlp_config(), s); },
       [] {
         return examples::random_tensor({3, test_mlp_config().in}, 99, 1.f);
       }},
      {"cnn", "image", "logits",
       [](const examples::WeightMap& w) { return examples::cnn_network(test_cnn_config(), w); },
       [](uint32_t s) { return examples::cnn_weights(test_cnn_config(), s); },
       [] {
         return examples::random_tensor({2, 3, test_cnn_config().image, test_cnn_config().image},
                                        98, 1.f);
       }},
  };
}

}  // namespace bindery::testing
