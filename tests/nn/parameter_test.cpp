// nn::Parameter: binding borrowed and owned values, and the errors that name the parameter.

#include "bindery/nn/parameter.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "bindery/error.h"
#include "bindery/nn/layers.h"
#include "bindery/nn/module.h"

namespace bindery::nn {
namespace {

// Expects `fn` to throw Error(code) whose what() is exactly "<code name>: <message>".
template <class Fn>
void expect_error(Fn&& fn, ErrorCode code, const std::string& message) {
  try {
    fn();
    FAIL() << "expected " << error_code_name(code);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_EQ(std::string(e.what()), std::string(error_code_name(code)) + ": " + message);
  }
}

// A tree where a parameter is named "layers.0.attn.qkv.weight".
struct Attention : Module {
  Attention() { qkv = register_module("qkv", std::make_unique<Linear>(8, 4, false)); }
  Linear* qkv;
};
struct Block : Module {
  Block() { attn = register_module("attn", std::make_unique<Attention>()); }
  Attention* attn;
};
struct Model : Module {
  Model() {
    layers = register_module("layers", std::make_unique<ModuleList>());
    layers->append(std::make_unique<Block>());
  }
  ModuleList* layers;
};

TEST(Parameter, RejectsDynamicShape) {
  for (Dims shape : {Dims{kDYNAMIC, 4}, Dims{2, -3}}) {
    try {
      Parameter p(shape);
      FAIL() << to_string(shape);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    }
  }
}

TEST(Parameter, BindsBorrowedViewWithoutCopy) {
  Parameter p({2, 3}, DataType::kFLOAT);
  EXPECT_FALSE(p.has_value());
  std::vector<float> data(6, 1.5f);
  p.set_value(Weights(DataType::kFLOAT, {2, 3}, data.data()));
  ASSERT_TRUE(p.has_value());
  EXPECT_FALSE(p.owns_value());
  EXPECT_EQ(p.value().values, data.data());
  EXPECT_EQ(p.value().shape, (Dims{2, 3}));
  EXPECT_TRUE(p.refittable());
}

TEST(Parameter, TakesOwnershipOfHostTensor) {
  Parameter p({4}, DataType::kHALF);
  HostTensor t = HostTensor::zeros(DataType::kHALF, {4});
  const void* data = t.data();
  p.set_value(std::move(t));
  ASSERT_TRUE(p.has_value());
  EXPECT_TRUE(p.owns_value());
  EXPECT_EQ(p.value().values, data);
  EXPECT_EQ(p.value().dtype, DataType::kHALF);
  p.clear_value();
  EXPECT_FALSE(p.has_value());
}

TEST(Parameter, RebindingOwnViewKeepsOwnership) {
  Parameter p({2});
  p.set_value(HostTensor::zeros(DataType::kFLOAT, {2}));
  p.set_value(p.value());
  EXPECT_TRUE(p.owns_value());
  EXPECT_EQ(p.value().data<float>()[1], 0.0f);
}

TEST(Parameter, RejectsWrongShapeNamingFullDottedName) {
  Model m;
  Parameter& w = m.parameter("layers.0.attn.qkv.weight");
  EXPECT_EQ(w.name(), "layers.0.attn.qkv.weight");
  std::vector<float> data(32);
  expect_error(
      [&] {
        w.set_value(Weights(DataType::kFLOAT, {8, 4}, data.data()));
      },
      ErrorCode::kSHAPE_MISMATCH,
      "parameter 'layers.0.attn.qkv.weight': expected f32[4, 8], got f32[8, 4]");
  expect_error([&] { w.set_value(HostTensor::zeros(DataType::kFLOAT, {32})); },
               ErrorCode::kSHAPE_MISMATCH,
               "parameter 'layers.0.attn.qkv.weight': expected f32[4, 8], got f32[32]");
  EXPECT_FALSE(w.has_value());
}

TEST(Parameter, RejectsWrongDtypeNamingFullDottedName) {
  Model m;
  Parameter& w = m.parameter("layers.0.attn.qkv.weight");
  expect_error(
      [&] {
        w.set_value(HostTensor::zeros(DataType::kBF16, {4, 8}));
      },
      ErrorCode::kDTYPE_MISMATCH,
      "parameter 'layers.0.attn.qkv.weight': expected f32[4, 8], got bf16[4, 8]");
}

TEST(Parameter, FailedBindLeavesPreviousValue) {
  Parameter p({2});
  std::vector<float> a{1, 2};
  p.set_value(Weights(DataType::kFLOAT, {2}, a.data()));
  std::vector<float> b{1, 2, 3};
  EXPECT_THROW(p.set_value(Weights(DataType::kFLOAT, {3}, b.data())), Error);
  EXPECT_EQ(p.value().values, a.data());
}

TEST(Parameter, RejectsDeviceAndNullViews) {
  Parameter p({2});
  float dummy[2] = {};
  try {
    p.set_value(Weights(DataType::kFLOAT, {2}, dummy, Device::cuda(0)));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kDEVICE);
  }
  try {
    p.set_value(Weights(DataType::kFLOAT, {2}, nullptr));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
  }
  EXPECT_FALSE(p.has_value());
}

TEST(Parameter, ValueWithoutBindingNamesParameter) {
  Model m;
  try {
    (void)m.parameter("layers.0.attn.qkv.weight").value();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("'layers.0.attn.qkv.weight'"), std::string::npos)
        << e.what();
  }
}

TEST(Parameter, NameFollowsReparenting) {
  auto block = std::make_unique<Block>();
  Parameter& w = block->parameter("attn.qkv.weight");
  EXPECT_EQ(w.name(), "attn.qkv.weight");
  Model m;
  m.layers->append(std::move(block));
  EXPECT_EQ(w.name(), "layers.1.attn.qkv.weight");
  EXPECT_EQ(w.local_name(), "weight");
}

TEST(Parameter, MovedToParameterIsUnregistered) {
  Linear lin(2, 3);
  Parameter moved = std::move(lin.weight());
  EXPECT_EQ(moved.name(), "");
  EXPECT_EQ(moved.owner(), nullptr);
  EXPECT_EQ(moved.shape(), (Dims{3, 2}));
  EXPECT_EQ(lin.weight().name(), "weight");
  EXPECT_EQ(lin.weight().owner(), &lin);
}

}  // namespace
}  // namespace bindery::nn
