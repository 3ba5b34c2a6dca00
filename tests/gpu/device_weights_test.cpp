// Refit from device memory: a CPU engine takes weights that live on the GPU (the trainer's
// tensors) and must give exactly what host weights give. Skips where no GPU is visible.

#include "bindery/refitter.h"
#include "common/engine_util.h"
#include "common/gpu_util.h"
#include "core/device_memory.h"

namespace bindery::testing {
namespace {

TEST(DeviceWeights, RefitFromDeviceViewsEqualsRefitFromHost) {
  REQUIRE_GPU();
  for (const ExampleCase& c : example_cases()) {
    const auto a = c.weights(1), b = c.weights(2);
    const HostTensor x = c.make_input();
    const auto cfg = config_with({BuilderFlag::kREFIT});
    auto engine = build_engine(c.network(a), cfg);
    std::vector<DeviceBuffer> on_gpu;
    Refitter r(*engine);
    for (const auto& [name, w] : b) {
      on_gpu.emplace_back(Device::cuda(0), static_cast<size_t>(w.size_bytes()));
      on_gpu.back().copy_from_host(w.data(), static_cast<size_t>(w.size_bytes()));
      r.set_named_weights(name,
                          Weights(w.dtype(), w.shape(), on_gpu.back().data(), Device::cuda(0)));
    }
    r.refit();
    const HostTensor expected = run(*build_engine(c.network(b), cfg), c.input, x, c.output);
    EXPECT_TRUE(bit_equal(run(*engine, c.input, x, c.output), expected)) << c.name;
  }
}

TEST(DeviceWeights, HostPointerClaimedAsDeviceIsRefusedAtOnceAndChangesNothing) {
  REQUIRE_GPU();
  const ExampleCase c = example_cases()[0];
  const auto a = c.weights(1), b = c.weights(2);
  auto engine = build_engine(c.network(a), config_with({BuilderFlag::kREFIT}));
  const auto sums = slot_checksums(*engine);
  Refitter r(*engine);
  const HostTensor& w = b.at("layers.0.down.weight");
  expect_error(ErrorCode::kDEVICE, [&] {
    r.set_named_weights("layers.0.down.weight",
                        Weights(w.dtype(), w.shape(), w.data(), Device::cuda(0)));
  });
  r.refit();  // nothing was set
  EXPECT_EQ(slot_checksums(*engine), sums);
}

// A view that runs past the end of its allocation would fault half-way through a refit that
// copies straight into the slots: it is refused when it is set.
TEST(DeviceWeights, DeviceViewPastItsAllocationIsRefusedAtOnce) {
  REQUIRE_GPU();
  const ExampleCase c = example_cases()[0];
  const auto b = c.weights(2);
  auto engine = build_engine(c.network(c.weights(1)), config_with({BuilderFlag::kREFIT}));
  const HostTensor& w = b.at("layers.0.down.weight");
  DeviceBuffer short_buffer(Device::cuda(0), static_cast<size_t>(w.size_bytes() / 2));
  Refitter r(*engine);
  std::string message;
  EXPECT_EQ(error_of(
                [&] {
                  r.set_named_weights(
                      "layers.0.down.weight",
                      Weights(w.dtype(), w.shape(), short_buffer.data(), Device::cuda(0)));
                },
                &message),
            ErrorCode::kDEVICE);
  EXPECT_NE(message.find("past the end of its device allocation"), std::string::npos) << message;
  EXPECT_TRUE(r.missing_weights().empty());
}

TEST(DeviceWeights, WithoutAGpuDeviceViewsAreANamedError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is visible: this test is for machines without one";
  const ExampleCase c = example_cases()[0];
  const auto a = c.weights(1);
  auto engine = build_engine(c.network(a), config_with({BuilderFlag::kREFIT}));
  Refitter r(*engine);
  const HostTensor& w = a.at("layers.0.down.weight");
  try {
    r.set_named_weights("layers.0.down.weight",
                        Weights(w.dtype(), w.shape(), w.data(), Device::cuda(0)));
    FAIL() << "device view accepted without a GPU";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kDEVICE);
    EXPECT_NE(std::string(e.what()).find("layers.0.down.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bindery::testing
