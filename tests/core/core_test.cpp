#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "bindery/error.h"
#include "bindery/logging.h"
#include "bindery/weights.h"
#include "core/half.h"
#include "core/hash.h"

namespace bindery {
namespace {

TEST(Half, RoundTripsRepresentableValuesExactly) {
  for (float f :
       {0.f, -0.f, 1.f, -2.5f, 65504.f, 6.103515625e-05f, 5.960464477539063e-08f, 0.333251953125f})
    EXPECT_EQ(f16_to_f32(f32_to_f16(f)), f) << f;
  for (float f : {0.f, 1.f, -3.140625f, 0x1p100f, -0x1p-100f})
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(f)), f) << f;
}

TEST(Half, RoundsToNearestEvenAndSaturatesToInfinity) {
  EXPECT_EQ(f32_to_f16(1.f + 1.f / 2048.f), 0x3c00);  // tie -> even (1.0)
  EXPECT_EQ(f32_to_f16(1.f + 3.f / 2048.f), 0x3c02);  // tie -> even (up)
  EXPECT_EQ(f32_to_f16(70000.f), 0x7c00);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(f32_to_bf16(1.f + 1.f / 256.f), 0x3f80);  // tie -> even
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Half, ConvertFloatsMatchesScalarForms) {
  float src[5] = {0.1f, -7.25f, 1e-6f, 3e4f, -0.f};
  uint16_t h[5], b[5];
  convert_floats(DataType::kFLOAT, src, DataType::kHALF, h, 5);
  convert_floats(DataType::kHALF, h, DataType::kBF16, b, 5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(h[i], f32_to_f16(src[i]));
    EXPECT_EQ(b[i], f32_to_bf16(f16_to_f32(h[i])));
  }
  EXPECT_THROW(convert_floats(DataType::kINT32, src, DataType::kHALF, h, 1), Error);
}

TEST(Dtype, NamesAndSizes) {
  EXPECT_EQ(dtype_name(DataType::kBF16), "bf16");
  EXPECT_EQ(parse_dtype("bfloat16"), DataType::kBF16);
  EXPECT_EQ(parse_dtype("f16"), DataType::kHALF);
  EXPECT_FALSE(parse_dtype("f8").has_value());
  EXPECT_EQ(dtype_bytes(DataType::kINT4, 3), 2);
  EXPECT_EQ(dtype_bytes(DataType::kINT64, 3), 24);
}

TEST(Dims, VolumeRefusesDynamicDims) {
  EXPECT_EQ(volume({2, 3, 4}), 24);
  EXPECT_EQ(volume({}), 1);
  EXPECT_THROW(volume({2, kDYNAMIC}), Error);
  EXPECT_EQ(to_string(Dims{2, -1}), "[2, -1]");
}

TEST(Error, MessageStartsWithTheCodeName) {
  const Error e(ErrorCode::kSHAPE_MISMATCH, "weights 'w': expected [2], got [3]");
  EXPECT_EQ(e.code(), ErrorCode::kSHAPE_MISMATCH);
  EXPECT_STREQ(e.what(), "kSHAPE_MISMATCH: weights 'w': expected [2], got [3]");
}

TEST(Logging, UserSinkReceivesMessagesAtOrAboveTheLevel) {
  std::vector<std::pair<LogLevel, std::string>> got;
  set_log_sink([&](LogLevel l, std::string_view m) { got.emplace_back(l, std::string(m)); });
  set_log_level(LogLevel::kINFO);
  log_verbose("hidden");
  log_info("shown");
  log_error("also");
  set_log_sink(nullptr);
  set_log_level(LogLevel::kWARNING);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].second, "shown");
  EXPECT_EQ(got[1].first, LogLevel::kERROR);
}

TEST(HostTensor, IsAlignedAndCopies) {
  HostTensor t(DataType::kFLOAT, {3, 5});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 256, 0u);
  for (int i = 0; i < 15; ++i) t.data_as<float>()[i] = static_cast<float>(i);
  const HostTensor c = HostTensor::copy_of(t.view());
  EXPECT_EQ(c.data_as<float>()[14], 14.f);
  EXPECT_NE(c.data(), t.data());
  EXPECT_EQ(hash64(c.data(), 60), hash64(t.data(), 60));
}

}  // namespace
}  // namespace bindery
