// matmul_int4_gemv (decode) and dequantize_int4 + cuBLAS (prefill, as the CUDA runner runs
// kMATMUL_INT4 for m > 8) against a host reference with the CPU kernel's formula
// (runtime/cpu/matmul_int4.cpp): W[o, i] = f32(q - (zero + zero_offset)) * scale, products of
// the bf16/f16 x and the f32 W summed in double.
// Tolerances:
//  - GEMV: |y - ref| <= 1e-4 * sum_i |x w| (only the f32 summation order differs: the kernel
//    dequantizes to the reference's f32 W bit for bit), plus one rounding step of y's type
//    when y is bf16/f16.
//  - dequantize_int4: bit-exact to the reference W rounded once to bf16/f16.
//  - prefill GEMM: the same bound as the GEMV, against the reference over that rounded W.

#include "runtime/cuda/matmul_int4.h"

#include <cublas_v2.h>

#include <algorithm>
#include <numeric>

#include "bindery/error.h"
#include "cuda_test_util.h"

namespace bindery::cuda::testing {
namespace {

constexpr DataType kBF16 = DataType::kBF16, kF16 = DataType::kHALF, kF32 = DataType::kFLOAT;

struct Int4Case {
  DataType dtype;  // x (and y unless f32_out)
  int m, in, out;
  int group_size;  // <= 0: one group
  bool act_order;  // g_idx shuffled (desc_act)
  int zero_offset;
  DataType scale_dtype;
  bool f32_out;
};

std::string describe(const Int4Case& c) {
  return std::string(name(c.dtype)) + " m=" + std::to_string(c.m) + " in=" + std::to_string(c.in) +
         " out=" + std::to_string(c.out) + " group_size=" + std::to_string(c.group_size) +
         (c.act_order ? " act-order" : "") + " zero_offset=" + std::to_string(c.zero_offset) +
         " scales " + std::string(dtype_name(c.scale_dtype)) + (c.f32_out ? " f32-out" : "");
}

// A random GPTQ layer, packed as Int4MatmulParams documents, and its W [out, in] in f32.
struct Layer {
  int groups = 1;
  std::vector<int32_t> qweight, qzeros, g_idx;
  std::vector<uint8_t> scales;  // scale_dtype elements
  std::vector<float> w;
};

// With `bad_groups`, g_idx[3] names one group past the last and g_idx[in - 5] a negative one.
Layer make_layer(const Int4Case& c, std::mt19937& rng, bool bad_groups = false) {
  Layer l;
  l.groups = c.group_size <= 0 ? 1 : (c.in + c.group_size - 1) / c.group_size;
  l.g_idx.resize(c.in);
  for (int i = 0; i < c.in; ++i) l.g_idx[i] = c.group_size <= 0 ? 0 : i / c.group_size;
  if (c.act_order) std::shuffle(l.g_idx.begin(), l.g_idx.end(), rng);
  if (bad_groups) {
    l.g_idx[3] = l.groups;
    l.g_idx[c.in - 5] = -7;
  }
  std::uniform_int_distribution<int> nibble(0, 15);
  std::uniform_real_distribution<float> scale(0.002f, 0.03f);
  std::vector<int> q(size_t(c.in) * c.out), zero(size_t(l.groups) * c.out);
  for (int& v : q) v = nibble(rng);
  for (int& v : zero) v = nibble(rng);
  std::vector<float> s(size_t(l.groups) * c.out);
  const size_t sbytes = size_t(dtype_bytes(c.scale_dtype, 1));
  l.scales.resize(s.size() * sbytes);
  for (size_t k = 0; k < s.size(); ++k) {
    const float v = scale(rng);
    if (c.scale_dtype == DataType::kFLOAT) {
      s[k] = v;
      std::memcpy(&l.scales[k * 4], &v, 4);
    } else {
      const uint16_t h = from_f32(c.scale_dtype, v);
      s[k] = to_f32(c.scale_dtype, h);
      std::memcpy(&l.scales[k * 2], &h, 2);
    }
  }
  std::vector<uint32_t> qw(size_t(c.in / 8) * c.out, 0), qz(size_t(l.groups) * (c.out / 8), 0);
  for (int i = 0; i < c.in; ++i)
    for (int o = 0; o < c.out; ++o)
      qw[size_t(i / 8) * c.out + o] |= uint32_t(q[size_t(i) * c.out + o]) << (4 * (i % 8));
  for (int g = 0; g < l.groups; ++g)
    for (int o = 0; o < c.out; ++o)
      qz[size_t(g) * (c.out / 8) + o / 8] |= uint32_t(zero[size_t(g) * c.out + o]) << (4 * (o % 8));
  l.qweight.resize(qw.size());
  l.qzeros.resize(qz.size());
  std::memcpy(l.qweight.data(), qw.data(), qw.size() * 4);
  std::memcpy(l.qzeros.data(), qz.data(), qz.size() * 4);
  l.w.resize(size_t(c.out) * c.in);
  for (int o = 0; o < c.out; ++o)
    for (int i = 0; i < c.in; ++i) {
      // A g_idx outside the groups reads the nearest group (the kernels' clamp).
      const int g = std::clamp(l.g_idx[i], 0, l.groups - 1);
      const int z = zero[size_t(g) * c.out + o] + c.zero_offset;
      l.w[size_t(o) * c.in + i] =
          static_cast<float>(q[size_t(i) * c.out + o] - z) * s[size_t(g) * c.out + o];
    }
  return l;
}

// The layer's tensors on the device.
struct DeviceLayer {
  explicit DeviceLayer(const Layer& l)
      : qweight(l.qweight), qzeros(l.qzeros), scales(l.scales), g_idx(l.g_idx) {}
  Int4Weights view(const Int4Case& c, int groups) const {
    return {qweight.as<int32_t>(),
            qzeros.as<int32_t>(),
            scales.get(),
            c.scale_dtype,
            g_idx.as<int32_t>(),
            c.in,
            c.out,
            groups,
            c.zero_offset};
  }
  DeviceMem qweight, qzeros, scales, g_idx;
};

// Checks y [m, out] against x · wᵀ (double), bound as the header says.
void expect_near_reference(const Int4Case& c, const std::vector<float>& x,
                           const std::vector<float>& w, const std::vector<float>& y) {
  int bad = 0;
  for (int t = 0; t < c.m; ++t)
    for (int o = 0; o < c.out; ++o) {
      double acc = 0, mag = 0;
      for (int i = 0; i < c.in; ++i) {
        const double p = double(x[size_t(t) * c.in + i]) * w[size_t(o) * c.in + i];
        acc += p;
        mag += std::fabs(p);
      }
      double tol = 1e-4 * mag + 1e-6;
      if (!c.f32_out) tol += one_step(c.dtype, float(acc));
      const float got = y[size_t(t) * c.out + o];
      if (!(std::fabs(got - acc) <= tol) && ++bad <= 5)
        ADD_FAILURE() << "y[" << t << "][" << o << "] = " << got << ", expected " << acc << " (tol "
                      << tol << ")";
    }
  EXPECT_EQ(bad, 0);
}

std::vector<float> read_y(const Int4Case& c, const DeviceMem& dy) {
  const size_t n = size_t(c.m) * c.out;
  return c.f32_out ? dy.read<float>(n) : to_floats(c.dtype, dy.read<uint16_t>(n));
}

void run_gemv_case(const Int4Case& c, std::mt19937& rng) {
  SCOPED_TRACE(describe(c));
  const Layer l = make_layer(c, rng);
  const DeviceLayer dl(l);
  const auto x = random_half(c.dtype, size_t(c.m) * c.in, rng);
  DeviceMem dx(x), dy(size_t(c.m) * c.out * (c.f32_out ? 4 : 2)), flag(sizeof(int));
  CUDA_OK(cudaMemset(flag.get(), 0, sizeof(int)));
  matmul_int4_gemv(c.dtype, dx.get(), dl.view(c, l.groups), c.f32_out ? DataType::kFLOAT : c.dtype,
                   dy.get(), c.m, flag.as<int>(), nullptr);
  const std::vector<float> y = read_y(c, dy);
  expect_near_reference(c, to_floats(c.dtype, x), l.w, y);
  EXPECT_EQ(flag.read<int>(1)[0], 0);
  // Fixed-order sums: a second launch gives the same bits.
  matmul_int4_gemv(c.dtype, dx.get(), dl.view(c, l.groups), c.f32_out ? DataType::kFLOAT : c.dtype,
                   dy.get(), c.m, flag.as<int>(), nullptr);
  EXPECT_EQ(read_y(c, dy), y);
}

// Prefill as the CUDA runner runs it: W dequantized to x's type, then cuBLAS y = x · Wᵀ.
void run_prefill_case(const Int4Case& c, std::mt19937& rng) {
  SCOPED_TRACE(describe(c));
  const Layer l = make_layer(c, rng);
  const DeviceLayer dl(l);
  DeviceMem dw(size_t(c.out) * c.in * 2), flag(sizeof(int));
  CUDA_OK(cudaMemset(flag.get(), 0, sizeof(int)));
  dequantize_int4(c.dtype, dl.view(c, l.groups), dw.get(), flag.as<int>(), nullptr);
  const auto w16 = dw.read<uint16_t>(size_t(c.out) * c.in);
  size_t mismatches = 0;
  for (size_t k = 0; k < w16.size(); ++k)
    if (w16[k] != from_f32(c.dtype, l.w[k]) && ++mismatches <= 5)
      ADD_FAILURE() << "W[" << k / c.in << "][" << k % c.in << "] = " << to_f32(c.dtype, w16[k])
                    << ", expected " << l.w[k] << " rounded";
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(flag.read<int>(1)[0], 0);

  const auto x = random_half(c.dtype, size_t(c.m) * c.in, rng);
  DeviceMem dx(x), dy(size_t(c.m) * c.out * (c.f32_out ? 4 : 2));
  cublasHandle_t handle = nullptr;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  const cudaDataType_t ab = c.dtype == DataType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
  const float alpha = 1.f, beta = 0.f;
  const cublasStatus_t status =
      cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, c.out, c.m, c.in, &alpha, dw.get(), ab, c.in,
                   dx.get(), ab, c.in, &beta, dy.get(), c.f32_out ? CUDA_R_32F : ab, c.out,
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  cublasDestroy(handle);
  ASSERT_EQ(status, CUBLAS_STATUS_SUCCESS);
  std::vector<float> rounded(l.w.size());
  for (size_t k = 0; k < rounded.size(); ++k) rounded[k] = round_to(c.dtype, l.w[k]);
  expect_near_reference(c, to_floats(c.dtype, x), rounded, read_y(c, dy));
}

TEST(CudaMatmulInt4, GemvMatchesCpuReference) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(11);
  const Int4Case cases[] = {
      {kBF16, 1, 4096, 4096, 128, false, 1, kF16, false},  // Llama q/o projection, GPTQ v1
      {kBF16, 1, 4096, 1024, 128, true, 1, kF16, true},    // k/v projection, act-order
      {kBF16, 3, 1024, 1032, 32, true, 0, kF16, true},     // out not a multiple of a tile
      {kF16, 8, 2048, 256, 64, true, 1, kF32, false},      // f32 scales
      {kBF16, 8, 136, 40, 24, false, 1, kBF16, true},      // groups end inside a word
      {kF16, 1, 512, 8, 0, false, 0, kF16, true},          // one group, one column quad pair
      {kBF16, 2, 256, 4104, 32, false, 0, kF16, false},    // many tiles
      {kF16, 5, 1024, 520, 128, false, 1, kF16, false},    // m between the unrolled sizes
      {kBF16, 4, 14336, 512, 128, true, 1, kF16, true},    // long k (down projection)
  };
  for (const auto& c : cases) run_gemv_case(c, rng);
}

TEST(CudaMatmulInt4, PrefillDequantizesExactlyForTheGemm) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(12);
  const Int4Case cases[] = {
      {kBF16, 40, 512, 264, 32, true, 1, kF16, true},
      {kF16, 40, 1024, 512, 128, false, 0, kF16, false},
      {kBF16, 40, 136, 48, 24, false, 1, kF32, false},
  };
  for (const auto& c : cases) run_prefill_case(c, rng);
}

// A g_idx naming no group neither traps nor reads out of bounds: the row reads the nearest
// group (what the reference computes here) and the error flag gets kINT4_GROUP_ERROR.
TEST(CudaMatmulInt4, OutOfRangeGroupRaisesTheFlag) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(13);
  for (const bool prefill : {false, true}) {
    Int4Case c{kBF16, prefill ? 40 : 2, 256, 64, 32, false, 1, kF16, true};
    SCOPED_TRACE(describe(c));
    const Layer l = make_layer(c, rng, /*bad_groups=*/true);
    const DeviceLayer dl(l);
    DeviceMem flag(sizeof(int));
    CUDA_OK(cudaMemset(flag.get(), 0, sizeof(int)));
    if (prefill) {
      DeviceMem dw(size_t(c.out) * c.in * 2);
      dequantize_int4(c.dtype, dl.view(c, l.groups), dw.get(), flag.as<int>(), nullptr);
      const auto w16 = dw.read<uint16_t>(size_t(c.out) * c.in);
      for (size_t k = 0; k < w16.size(); ++k)
        ASSERT_EQ(w16[k], from_f32(c.dtype, l.w[k])) << "W element " << k;
    } else {
      const auto x = random_half(c.dtype, size_t(c.m) * c.in, rng);
      DeviceMem dx(x), dy(size_t(c.m) * c.out * 4);
      matmul_int4_gemv(c.dtype, dx.get(), dl.view(c, l.groups), kF32, dy.get(), c.m, flag.as<int>(),
                       nullptr);
      expect_near_reference(c, to_floats(c.dtype, x), l.w, read_y(c, dy));
    }
    EXPECT_EQ(flag.read<int>(1)[0], kINT4_GROUP_ERROR);
  }
}

TEST(CudaMatmulInt4, RejectsBadArgumentsNamingThem) {
  BINDERY_REQUIRE_CUDA_DEVICE();
  DeviceMem buf(1 << 16);
  const auto weights = [&](int in, int out, DataType scales = kF16) {
    return Int4Weights{
        buf.as<int32_t>(), buf.as<int32_t>(), buf.get(), scales, buf.as<int32_t>(), in, out, 1, 1};
  };
  const auto gemv = [&](int m, const Int4Weights& w, DataType x = kBF16, const void* xp = nullptr) {
    matmul_int4_gemv(x, xp ? xp : buf.get(), w, kF32, buf.get(), m, nullptr, nullptr);
  };
  const auto code = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::kINTERNAL;  // nothing thrown
  };
  EXPECT_EQ(code([&] { gemv(9, weights(64, 64)); }), ErrorCode::kINVALID_ARGUMENT);
  EXPECT_EQ(code([&] { gemv(0, weights(64, 64)); }), ErrorCode::kINVALID_ARGUMENT);
  EXPECT_EQ(code([&] { gemv(1, weights(60, 64)); }), ErrorCode::kINVALID_ARGUMENT);
  EXPECT_EQ(code([&] { gemv(1, weights(64, 12)); }), ErrorCode::kINVALID_ARGUMENT);
  EXPECT_EQ(code([&] { gemv(1, weights(64, 64), kF32); }), ErrorCode::kDTYPE_MISMATCH);
  EXPECT_EQ(code([&] { gemv(1, weights(64, 64, DataType::kINT32)); }), ErrorCode::kDTYPE_MISMATCH);
  EXPECT_EQ(code([&] { gemv(1, weights(64, 64), kBF16, buf.as<char>() + 2); }),
            ErrorCode::kINVALID_ARGUMENT);
  Int4Weights bad = weights(64, 64);
  bad.zero_offset = 2;
  EXPECT_EQ(code([&] { gemv(1, bad); }), ErrorCode::kINVALID_ARGUMENT);
  bad = weights(64, 64);
  bad.groups = 65;
  EXPECT_EQ(code([&] { dequantize_int4(kBF16, bad, buf.get(), nullptr, nullptr); }),
            ErrorCode::kINVALID_ARGUMENT);
  try {
    gemv(9, weights(64, 64));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m (rows of x)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bindery::cuda::testing
