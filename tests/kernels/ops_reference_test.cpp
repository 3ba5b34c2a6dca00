// Every op, checked against a naive reference written here, by one table-driven test.
//
// Each case builds its inputs (random, rounded to the case's dtype, so the reference sees the
// exact values the kernel sees), runs the node through cpu::run_node, and compares with the
// reference computed in double. Tolerances are per op and output dtype (kTolerances below):
// they bound f32 rounding, not reduced-precision input rounding.
// Perf mode: BINDERY_KERNEL_PERF=1 also times each case (median of 20 runs) and prints it.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <numbers>

#include "kernel_test_util.h"

namespace bindery::test {
namespace {

using Values = std::vector<std::vector<double>>;
using Reference = std::function<std::vector<double>(const Values& v, const std::vector<Buf>& in,
                                                    const Dims& out)>;

struct Case {
  std::string name;
  LayerType type;
  LayerParams params;
  std::vector<Buf> inputs;
  Reference reference;
};

/// Absolute-and-relative tolerance per (op, output dtype): |out - ref| <= tol * max(1, |ref|).
/// Float ops accumulate in f32 (gemm, conv) or round once per step; data movement is exact; a
/// cast to f16/bf16 may move by half an ulp of the target (the reference does not round).
double tolerance(LayerType type, DataType out) {
  if (type == LayerType::kCAST) {
    if (out == DataType::kHALF) return 1.0 / 2048;
    if (out == DataType::kBF16) return 1.0 / 256;
    if (out == DataType::kFLOAT) return 1e-7;
    return 0.0;
  }
  static const std::map<LayerType, double> kTolerances = {
      {LayerType::kMATMUL, 1e-5},    {LayerType::kELEMENTWISE, 1e-6}, {LayerType::kUNARY, 2e-6},
      {LayerType::kSOFTMAX, 1e-6},   {LayerType::kREDUCE, 1e-6},      {LayerType::kRMSNORM, 2e-6},
      {LayerType::kLAYERNORM, 2e-6}, {LayerType::kCONVOLUTION, 1e-5}, {LayerType::kBATCHNORM, 2e-6},
      {LayerType::kPOOLING, 1e-6},   {LayerType::kGATHER, 0.0},       {LayerType::kRESHAPE, 0.0},
      {LayerType::kTRANSPOSE, 0.0},  {LayerType::kCONCAT, 0.0},       {LayerType::kSLICE, 0.0},
  };
  return kTolerances.at(type);
}

// ---- references --------------------------------------------------------------------------------

std::vector<double> matmul_ref(const Values& v, const std::vector<Buf>& in, const Dims& out,
                               bool ta, bool tb) {
  const Dims& ad = in[0].dims;
  const Dims& bd = in[1].dims;
  const size_t ra = ad.size(), rb = bd.size(), ro = out.size();
  const Dims a_batch(ad.begin(), ad.end() - 2), b_batch(bd.begin(), bd.end() - 2);
  const int64_t k = ta ? ad[ra - 2] : ad[ra - 1];
  std::vector<double> r(static_cast<size_t>(volume(out)));
  for (int64_t f = 0; f < volume(out); ++f) {
    const auto idx = unravel(f, out);
    const std::vector<int64_t> batch(idx.begin(), idx.end() - 2);
    const int64_t i = idx[ro - 2], j = idx[ro - 1];
    const int64_t ao = ravel_broadcast(batch, a_batch) * ad[ra - 2] * ad[ra - 1];
    const int64_t bo = ravel_broadcast(batch, b_batch) * bd[rb - 2] * bd[rb - 1];
    double s = 0;
    for (int64_t p = 0; p < k; ++p) {
      const double a = v[0][ao + (ta ? p * ad[ra - 1] + i : i * ad[ra - 1] + p)];
      const double b = v[1][bo + (tb ? j * bd[rb - 1] + p : p * bd[rb - 1] + j)];
      s += a * b;
    }
    r[f] = s;
  }
  return r;
}

double binary_ref(ElementwiseOp op, double a, double b) {
  switch (op) {
    case ElementwiseOp::kSUM: return a + b;
    case ElementwiseOp::kSUB: return a - b;
    case ElementwiseOp::kPROD: return a * b;
    case ElementwiseOp::kDIV: return a / b;
    case ElementwiseOp::kMIN: return std::min(a, b);
    case ElementwiseOp::kMAX: return std::max(a, b);
    case ElementwiseOp::kPOW: return std::pow(a, b);
  }
  return 0;
}

double unary_ref(UnaryOp op, double x) {
  switch (op) {
    case UnaryOp::kRELU: return std::max(x, 0.0);
    case UnaryOp::kGELU_ERF: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case UnaryOp::kGELU_TANH:
      return 0.5 * x *
             (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
    case UnaryOp::kSILU: return x / (1 + std::exp(-x));
    case UnaryOp::kSIGMOID: return 1 / (1 + std::exp(-x));
    case UnaryOp::kTANH: return std::tanh(x);
    case UnaryOp::kEXP: return std::exp(x);
    case UnaryOp::kSQRT: return std::sqrt(x);
    case UnaryOp::kRSQRT: return 1 / std::sqrt(x);
    case UnaryOp::kNEG: return -x;
    case UnaryOp::kABS: return std::fabs(x);
  }
  return 0;
}

std::vector<double> elementwise_ref(const Values& v, const std::vector<Buf>& in, const Dims& out,
                                    ElementwiseOp op) {
  std::vector<double> r(static_cast<size_t>(volume(out)));
  for (int64_t f = 0; f < volume(out); ++f) {
    const auto idx = unravel(f, out);
    r[f] = binary_ref(op, v[0][ravel_broadcast(idx, in[0].dims)],
                      v[1][ravel_broadcast(idx, in[1].dims)]);
  }
  return r;
}

/// outer x len x inner view of `dims` around `axis`.
struct AxisView {
  int64_t outer = 1, len = 1, inner = 1;
  AxisView(const Dims& d, int axis) {
    if (axis < 0) axis += static_cast<int>(d.size());
    for (int i = 0; i < axis; ++i) outer *= d[i];
    len = d[axis];
    for (size_t i = axis + 1; i < d.size(); ++i) inner *= d[i];
  }
};

std::vector<double> softmax_ref(const Values& v, const std::vector<Buf>& in, int axis) {
  const AxisView a(in[0].dims, axis);
  std::vector<double> r(v[0].size());
  for (int64_t o = 0; o < a.outer; ++o)
    for (int64_t i = 0; i < a.inner; ++i) {
      const auto at = [&](int64_t j) { return (o * a.len + j) * a.inner + i; };
      double m = -INFINITY, s = 0;
      for (int64_t j = 0; j < a.len; ++j) m = std::max(m, v[0][at(j)]);
      for (int64_t j = 0; j < a.len; ++j) s += std::exp(v[0][at(j)] - m);
      for (int64_t j = 0; j < a.len; ++j) r[at(j)] = std::exp(v[0][at(j)] - m) / s;
    }
  return r;
}

std::vector<double> reduce_ref(const Values& v, const std::vector<Buf>& in, const Dims& out,
                               const ReduceParams& p) {
  const Dims& d = in[0].dims;
  std::vector<bool> red(d.size(), false);
  for (int a : p.axes) red[a < 0 ? a + d.size() : a] = true;
  // Output index space with reduced axes kept as 1.
  Dims kept = d;
  for (size_t i = 0; i < d.size(); ++i)
    if (red[i]) kept[i] = 1;
  std::vector<double> sum(static_cast<size_t>(volume(kept)), 0.0);
  std::vector<double> mx(sum.size(), -INFINITY);
  std::vector<int64_t> cnt(sum.size(), 0);
  for (int64_t f = 0; f < volume(d); ++f) {
    const auto idx = unravel(f, d);
    const int64_t o = ravel_broadcast(idx, kept);
    sum[o] += v[0][f];
    mx[o] = std::max(mx[o], v[0][f]);
    ++cnt[o];
  }
  std::vector<double> r(sum.size());
  for (size_t i = 0; i < r.size(); ++i)
    r[i] = p.op == ReduceOp::kSUM ? sum[i] : p.op == ReduceOp::kAVG ? sum[i] / cnt[i] : mx[i];
  EXPECT_EQ(static_cast<int64_t>(r.size()), volume(out));
  return r;
}

std::vector<double> norm_ref(const Values& v, const std::vector<Buf>& in, bool rms, float eps) {
  const int64_t d = in[0].dims.back();
  const int64_t rows = volume(in[0].dims) / d;
  const bool bias = in.size() > 2 && !in[2].absent;
  std::vector<double> r(v[0].size());
  for (int64_t row = 0; row < rows; ++row) {
    const double* x = &v[0][row * d];
    double mean = 0, var = 0;
    for (int64_t j = 0; j < d; ++j) mean += x[j];
    mean /= d;
    for (int64_t j = 0; j < d; ++j) var += rms ? x[j] * x[j] : (x[j] - mean) * (x[j] - mean);
    var /= d;
    for (int64_t j = 0; j < d; ++j) {
      const double c = rms ? x[j] : x[j] - mean;
      r[row * d + j] = c / std::sqrt(var + eps) * v[1][j] + (bias ? v[2][j] : 0.0);
    }
  }
  return r;
}

std::vector<double> gather_ref(const Values& v, const std::vector<Buf>& in, int axis) {
  const AxisView a(in[0].dims, axis);
  const int64_t n = volume(in[1].dims);
  std::vector<double> r;
  for (int64_t o = 0; o < a.outer; ++o)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < a.inner; ++i)
        r.push_back(v[0][(o * a.len + static_cast<int64_t>(v[1][j])) * a.inner + i]);
  return r;
}

std::vector<double> transpose_ref(const Values& v, const std::vector<Buf>& in, const Dims& out,
                                  const std::vector<int>& perm) {
  std::vector<double> r(v[0].size());
  for (int64_t f = 0; f < volume(out); ++f) {
    const auto idx = unravel(f, out);
    std::vector<int64_t> src(idx.size());
    for (size_t k = 0; k < perm.size(); ++k) src[perm[k]] = idx[k];
    r[f] = v[0][ravel_broadcast(src, in[0].dims)];
  }
  return r;
}

std::vector<double> concat_ref(const Values& v, const std::vector<Buf>& in, const Dims& out,
                               int axis) {
  std::vector<double> r(static_cast<size_t>(volume(out)));
  for (int64_t f = 0; f < volume(out); ++f) {
    auto idx = unravel(f, out);
    size_t t = 0;
    while (idx[axis] >= in[t].dims[axis]) idx[axis] -= in[t++].dims[axis];
    r[f] = v[t][ravel_broadcast(idx, in[t].dims)];
  }
  return r;
}

std::vector<double> slice_ref(const Values& v, const std::vector<Buf>& in, const Dims& out,
                              const SliceParams& p) {
  std::vector<double> r(static_cast<size_t>(volume(out)));
  for (int64_t f = 0; f < volume(out); ++f) {
    auto idx = unravel(f, out);
    for (size_t d = 0; d < idx.size(); ++d)
      idx[d] = p.start[d] + idx[d] * (p.stride.empty() ? 1 : p.stride[d]);
    r[f] = v[0][ravel_broadcast(idx, in[0].dims)];
  }
  return r;
}

/// Cast semantics written out: float -> int truncates and saturates (NaN -> 0), int -> int
/// wraps, -> bool is != 0. Float targets are compared within the target's half ulp.
std::vector<double> cast_ref(const Values& v, DataType to) {
  std::vector<double> r(v[0].size());
  for (size_t i = 0; i < r.size(); ++i) {
    double x = v[0][i];
    switch (to) {
      case DataType::kBOOL: x = x != 0.0; break;
      case DataType::kINT8: x = std::clamp(std::trunc(x), -128.0, 127.0); break;
      case DataType::kUINT8: x = std::clamp(std::trunc(x), 0.0, 255.0); break;
      case DataType::kINT32: x = std::clamp(std::trunc(x), -2147483648.0, 2147483647.0); break;
      case DataType::kINT64: x = std::trunc(x); break;
      default: break;
    }
    r[i] = x;
  }
  return r;
}

std::vector<double> conv_ref(const Values& v, const std::vector<Buf>& in, const Dims& out,
                             const ConvParams& p) {
  const Dims& xd = in[0].dims;
  const Dims& wd = in[1].dims;
  const bool bias = in.size() > 2 && !in[2].absent;
  const int64_t og = wd[0] / p.groups, cg = wd[1];
  std::vector<double> r(static_cast<size_t>(volume(out)));
  for (int64_t f = 0; f < volume(out); ++f) {
    const auto idx = unravel(f, out);  // n, o, y, x
    const int64_t n = idx[0], o = idx[1], g = o / og;
    double s = bias ? v[2][o] : 0.0;
    for (int64_t c = 0; c < cg; ++c)
      for (int64_t ki = 0; ki < wd[2]; ++ki)
        for (int64_t kj = 0; kj < wd[3]; ++kj) {
          const int64_t ih = idx[2] * p.stride[0] - p.padding[0] + ki * p.dilation[0];
          const int64_t iw = idx[3] * p.stride[1] - p.padding[1] + kj * p.dilation[1];
          if (ih < 0 || ih >= xd[2] || iw < 0 || iw >= xd[3]) continue;
          const double xv = v[0][((n * xd[1] + g * cg + c) * xd[2] + ih) * xd[3] + iw];
          const double wv = v[1][((o * cg + c) * wd[2] + ki) * wd[3] + kj];
          s += xv * wv;
        }
    for (const EpilogueStep& e : p.epilogue)
      s = e.is_unary
              ? unary_ref(e.unary, s)
              : binary_ref(e.binary, s, e.constant.size() == 1 ? e.constant[0] : e.constant[o]);
    r[f] = s;
  }
  return r;
}

std::vector<double> batchnorm_ref(const Values& v, const std::vector<Buf>& in, float eps) {
  const Dims& d = in[0].dims;
  const int64_t inner = volume(Dims(d.begin() + 2, d.end()));
  std::vector<double> r(v[0].size());
  for (size_t f = 0; f < r.size(); ++f) {
    const int64_t c = (static_cast<int64_t>(f) / inner) % d[1];
    r[f] = (v[0][f] - v[3][c]) / std::sqrt(v[4][c] + eps) * v[1][c] + v[2][c];
  }
  return r;
}

std::vector<double> pooling_ref(const Values& v, const std::vector<Buf>& in, const Dims& out,
                                const PoolingParams& p) {
  const Dims& d = in[0].dims;
  std::vector<double> r(static_cast<size_t>(volume(out)));
  for (int64_t f = 0; f < volume(out); ++f) {
    const auto idx = unravel(f, out);
    double m = -INFINITY, s = 0;
    int64_t real = 0;
    for (int64_t ki = 0; ki < p.window[0]; ++ki)
      for (int64_t kj = 0; kj < p.window[1]; ++kj) {
        const int64_t ih = idx[2] * p.stride[0] - p.padding[0] + ki;
        const int64_t iw = idx[3] * p.stride[1] - p.padding[1] + kj;
        if (ih < 0 || ih >= d[2] || iw < 0 || iw >= d[3]) continue;
        const double x = v[0][((idx[0] * d[1] + idx[1]) * d[2] + ih) * d[3] + iw];
        m = std::max(m, x);
        s += x;
        ++real;
      }
    r[f] = p.type == PoolingType::kMAX
               ? m
               : s / (p.count_include_pad ? p.window[0] * p.window[1] : real);
  }
  return r;
}

// ---- the table ---------------------------------------------------------------------------------

std::vector<Case> make_cases() {
  std::vector<Case> cases;
  std::mt19937 rng(1234);
  const DataType kF = DataType::kFLOAT;
  const std::vector<DataType> floats = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
  const auto rnd = [&](DataType t, Dims d, double lo = -1, double hi = 1) {
    return random_buf(t, std::move(d), rng, lo, hi);
  };
  const auto dn = [](DataType t) { return std::string(dtype_name(t)); };

  for (DataType wt : floats) {
    // matmul: the second operand carries the weight dtype.
    struct Mm {
      Dims a, b;
      bool ta, tb;
    };
    for (const Mm& m : std::vector<Mm>{{{5, 7}, {7, 3}, false, false},
                                       {{7, 5}, {7, 3}, true, false},
                                       {{5, 7}, {3, 7}, false, true},
                                       {{7, 5}, {3, 7}, true, true},
                                       {{2, 3, 4, 6}, {6, 5}, false, false},    // folds into M
                                       {{2, 1, 4, 6}, {3, 5, 6}, false, true},  // broadcast
                                       {{4, 6}, {3, 6, 5}, false, false},       // shared a
                                       {{2, 6, 4}, {2, 6, 5}, true, false}}) {
      cases.push_back({"matmul " + to_string(m.a) + (m.ta ? "T" : "") + " x " + to_string(m.b) +
                           (m.tb ? "T" : "") + " " + dn(wt),
                       LayerType::kMATMUL,
                       MatMulParams{m.ta, m.tb},
                       {rnd(kF, m.a), rnd(wt, m.b)},
                       [m](const Values& v, const std::vector<Buf>& in, const Dims& out) {
                         return matmul_ref(v, in, out, m.ta, m.tb);
                       }});
    }
    // elementwise: every op, with broadcasting on both sides and a scalar.
    for (int o = 0; o <= static_cast<int>(ElementwiseOp::kPOW); ++o) {
      const auto op = static_cast<ElementwiseOp>(o);
      const bool pow = op == ElementwiseOp::kPOW, div = op == ElementwiseOp::kDIV;
      const Reference ref = [op](const Values& v, const std::vector<Buf>& in, const Dims& out) {
        return elementwise_ref(v, in, out, op);
      };
      const std::string n = std::string("elementwise ") + std::string(elementwise_op_name(op));
      cases.push_back({n + " [2,3,4]+[3,1] " + dn(wt),
                       LayerType::kELEMENTWISE,
                       ElementwiseParams{op},
                       {rnd(kF, {2, 3, 4}, pow ? 0.1 : -1, 1), rnd(wt, {3, 1}, div ? 0.5 : -1, 2)},
                       ref});
      cases.push_back({n + " [4,1]+[1,5] " + dn(wt),
                       LayerType::kELEMENTWISE,
                       ElementwiseParams{op},
                       {rnd(wt, {4, 1}, pow ? 0.1 : -1, 1), rnd(kF, {1, 5}, div ? 0.5 : -1, 2)},
                       ref});
      cases.push_back({n + " []+[6] " + dn(wt),
                       LayerType::kELEMENTWISE,
                       ElementwiseParams{op},
                       {rnd(wt, {}, 0.5, 1), rnd(kF, {6}, div ? 0.5 : -1, 2)},
                       ref});
    }
    // unary: every op (sqrt/rsqrt on positive inputs).
    for (int o = 0; o <= static_cast<int>(UnaryOp::kABS); ++o) {
      const auto op = static_cast<UnaryOp>(o);
      const bool positive = op == UnaryOp::kSQRT || op == UnaryOp::kRSQRT;
      cases.push_back({"unary " + std::string(unary_op_name(op)) + " " + dn(wt),
                       LayerType::kUNARY,
                       UnaryParams{op},
                       {rnd(wt, {3, 17}, positive ? 0.05 : -4, 4)},
                       [op](const Values& v, const std::vector<Buf>&, const Dims&) {
                         std::vector<double> r(v[0].size());
                         for (size_t i = 0; i < r.size(); ++i) r[i] = unary_ref(op, v[0][i]);
                         return r;
                       }});
    }
    for (int axis : {-1, 1, 0}) {
      cases.push_back({"softmax axis " + std::to_string(axis) + " " + dn(wt),
                       LayerType::kSOFTMAX,
                       SoftmaxParams{axis},
                       {rnd(wt, {2, 5, 3}, -8, 8)},
                       [axis](const Values& v, const std::vector<Buf>& in, const Dims&) {
                         return softmax_ref(v, in, axis);
                       }});
    }
    for (const ReduceParams& p : std::vector<ReduceParams>{{ReduceOp::kSUM, {-1}, false},
                                                           {ReduceOp::kAVG, {0, 2}, true},
                                                           {ReduceOp::kMAX, {1}, false},
                                                           {ReduceOp::kSUM, {0, 1, 2}, false},
                                                           {ReduceOp::kAVG, {1, 2}, false},
                                                           {ReduceOp::kMAX, {0, 2}, true}}) {
      cases.push_back({"reduce " + std::string(reduce_op_name(p.op)) + " axes " +
                           std::to_string(p.axes.size()) + (p.keep_dims ? " keep " : " ") + dn(wt),
                       LayerType::kREDUCE,
                       p,
                       {rnd(wt, {3, 4, 5})},
                       [p](const Values& v, const std::vector<Buf>& in, const Dims& out) {
                         return reduce_ref(v, in, out, p);
                       }});
    }
    cases.push_back({"rmsnorm " + dn(wt),
                     LayerType::kRMSNORM,
                     NormParams{1e-5f},
                     {rnd(kF, {3, 4, 16}, -3, 3), rnd(wt, {16}, 0.5, 1.5)},
                     [](const Values& v, const std::vector<Buf>& in, const Dims&) {
                       return norm_ref(v, in, true, 1e-5f);
                     }});
    cases.push_back({"layernorm with bias " + dn(wt),
                     LayerType::kLAYERNORM,
                     NormParams{1e-5f},
                     {rnd(kF, {5, 24}, 2, 5), rnd(wt, {24}, 0.5, 1.5), rnd(wt, {24})},
                     [](const Values& v, const std::vector<Buf>& in, const Dims&) {
                       return norm_ref(v, in, false, 1e-5f);
                     }});
    cases.push_back({"layernorm without bias " + dn(wt),
                     LayerType::kLAYERNORM,
                     NormParams{1e-3f},
                     {rnd(kF, {5, 24}, -2, 2), rnd(wt, {24}, 0.5, 1.5), Buf::none()},
                     [](const Values& v, const std::vector<Buf>& in, const Dims&) {
                       return norm_ref(v, in, false, 1e-3f);
                     }});
    // conv: kernel (and bias) carry the weight dtype.
    struct Cv {
      Dims x, w;
      Dims stride, pad, dil;
      int64_t groups;
      bool bias;
    };
    for (const Cv& c :
         std::vector<Cv>{{{2, 3, 7, 6}, {4, 3, 3, 3}, {1, 1}, {0, 0}, {1, 1}, 1, true},
                         {{1, 4, 9, 8}, {6, 2, 3, 2}, {2, 1}, {1, 2}, {2, 1}, 2, true},
                         {{2, 4, 5, 5}, {4, 1, 3, 3}, {1, 2}, {1, 1}, {1, 1}, 4, false},
                         {{2, 3, 4, 5}, {5, 3, 1, 1}, {1, 1}, {0, 0}, {1, 1}, 1, true}}) {
      ConvParams p;
      p.stride = c.stride;
      p.padding = c.pad;
      p.dilation = c.dil;
      p.groups = c.groups;
      std::vector<Buf> in = {rnd(kF, c.x), rnd(wt, c.w)};
      if (c.bias) in.push_back(rnd(wt, {c.w[0]}));
      cases.push_back({"conv2d x" + to_string(c.x) + " w" + to_string(c.w) + " g" +
                           std::to_string(c.groups) + " " + dn(wt),
                       LayerType::kCONVOLUTION, p, std::move(in),
                       [p](const Values& v, const std::vector<Buf>& in, const Dims& out) {
                         return conv_ref(v, in, out, p);
                       }});
    }
    cases.push_back({"batchnorm " + dn(wt),
                     LayerType::kBATCHNORM,
                     BatchNormParams{1e-3f},
                     {rnd(kF, {2, 3, 4, 5}), rnd(wt, {3}, 0.5, 2), rnd(wt, {3}), rnd(wt, {3}),
                      rnd(wt, {3}, 0.2, 2)},
                     [](const Values& v, const std::vector<Buf>& in, const Dims&) {
                       return batchnorm_ref(v, in, 1e-3f);
                     }});
    for (const PoolingParams& p :
         std::vector<PoolingParams>{{PoolingType::kMAX, {2, 2}, {2, 2}, {0, 0}, false},
                                    {PoolingType::kMAX, {3, 3}, {2, 1}, {1, 1}, false},
                                    {PoolingType::kAVERAGE, {3, 2}, {1, 2}, {1, 1}, false},
                                    {PoolingType::kAVERAGE, {3, 3}, {2, 2}, {1, 1}, true}}) {
      cases.push_back({std::string("pooling ") + std::string(pooling_type_name(p.type)) + " w" +
                           to_string(p.window) + " p" + to_string(p.padding) +
                           (p.count_include_pad ? " incl" : "") + " " + dn(wt),
                       LayerType::kPOOLING,
                       p,
                       {rnd(wt, {2, 3, 7, 6})},
                       [p](const Values& v, const std::vector<Buf>& in, const Dims& out) {
                         return pooling_ref(v, in, out, p);
                       }});
    }
  }

  // gather: float data is widened to f32, integer data kept; i32 and i64 indices.
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT32}) {
    for (int axis : {0, 1}) {
      const Dims data_dims = {6, 5, 3};
      Buf idx = from_values(axis == 0 ? DataType::kINT32 : DataType::kINT64, {2, 2},
                            {axis == 0 ? 5.0 : 4.0, 0, 2, 2});
      cases.push_back({"gather axis " + std::to_string(axis) + " " + dn(dt),
                       LayerType::kGATHER,
                       GatherParams{axis},
                       {rnd(dt, data_dims, -50, 50), idx},
                       [axis](const Values& v, const std::vector<Buf>& in, const Dims&) {
                         return gather_ref(v, in, axis);
                       }});
    }
  }
  // reshape, transpose, concat, slice keep the dtype and move values exactly.
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT64}) {
    const auto same = [](const Values& v, const std::vector<Buf>&, const Dims&) { return v[0]; };
    cases.push_back({"reshape " + dn(dt),
                     LayerType::kRESHAPE,
                     ReshapeParams{{0, -1, 2}},
                     {rnd(dt, {3, 4, 5}, -100, 100)},
                     same});
    for (const std::vector<int>& perm :
         std::vector<std::vector<int>>{{1, 0}, {0, 2, 3, 1}, {3, 1, 0, 2}, {0, 1, 3, 2}}) {
      const Dims d = perm.size() == 2 ? Dims{7, 9} : Dims{2, 3, 4, 5};
      cases.push_back({"transpose " + to_string(Dims(perm.begin(), perm.end())) + " " + dn(dt),
                       LayerType::kTRANSPOSE,
                       TransposeParams{perm},
                       {rnd(dt, d, -100, 100)},
                       [perm](const Values& v, const std::vector<Buf>& in, const Dims& out) {
                         return transpose_ref(v, in, out, perm);
                       }});
    }
    for (int axis : {0, 1, 2}) {
      Dims a = {2, 3, 4}, b = a, c = a;
      b[axis] = 1;
      c[axis] = 5;
      cases.push_back({"concat axis " + std::to_string(axis) + " " + dn(dt),
                       LayerType::kCONCAT,
                       ConcatParams{axis},
                       {rnd(dt, a, -100, 100), rnd(dt, b, -100, 100), rnd(dt, c, -100, 100)},
                       [axis](const Values& v, const std::vector<Buf>& in, const Dims& out) {
                         return concat_ref(v, in, out, axis);
                       }});
    }
    for (const SliceParams& p : std::vector<SliceParams>{{{1, 0, 2}, {2, 4, 3}, {}},
                                                         {{0, 1, 0}, {2, 2, 3}, {2, 2, 3}},
                                                         {{1, 0, 1}, {-1, -1, -1}, {1, 3, 2}}}) {
      cases.push_back(
          {"slice start " + to_string(p.start) + " stride " + to_string(p.stride) + " " + dn(dt),
           LayerType::kSLICE,
           p,
           {rnd(dt, {3, 5, 7}, -100, 100)},
           [p](const Values& v, const std::vector<Buf>& in, const Dims& out) {
             return slice_ref(v, in, out, p);
           }});
    }
  }
  // cast: float <-> float, float -> int (truncation, saturation), int -> int/float/bool.
  struct Cs {
    DataType from, to;
    double lo, hi;
  };
  for (const Cs& c : std::vector<Cs>{{DataType::kFLOAT, DataType::kHALF, -100, 100},
                                     {DataType::kFLOAT, DataType::kBF16, -100, 100},
                                     {DataType::kHALF, DataType::kBF16, -100, 100},
                                     {DataType::kBF16, DataType::kFLOAT, -100, 100},
                                     {DataType::kFLOAT, DataType::kINT32, -1000, 1000},
                                     {DataType::kFLOAT, DataType::kINT8, -300, 300},
                                     {DataType::kFLOAT, DataType::kUINT8, -100, 400},
                                     {DataType::kHALF, DataType::kINT64, -1000, 1000},
                                     {DataType::kINT32, DataType::kFLOAT, -1e6, 1e6},
                                     {DataType::kINT64, DataType::kHALF, -1000, 1000},
                                     {DataType::kINT8, DataType::kINT64, -100, 100},
                                     {DataType::kUINT8, DataType::kINT32, 0, 255},
                                     {DataType::kFLOAT, DataType::kBOOL, -2, 2},
                                     {DataType::kBOOL, DataType::kFLOAT, 0, 2}}) {
    Buf x = rnd(c.from, {4, 9}, c.lo, c.hi);
    if (is_floating(c.from)) x.set(0, 0.0);  // exercise bool of zero, int of zero
    cases.push_back({"cast " + dn(c.from) + " -> " + dn(c.to),
                     LayerType::kCAST,
                     CastParams{c.to},
                     {x},
                     [to = c.to](const Values& v, const std::vector<Buf>&, const Dims&) {
                       return cast_ref(v, to);
                     }});
  }
  return cases;
}

TEST(KernelOps, EveryOpMatchesNaiveReferenceWithinItsTolerance) {
  const bool perf = std::getenv("BINDERY_KERNEL_PERF") != nullptr;
  const auto cases = make_cases();
  ASSERT_GT(cases.size(), 200u);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const GraphNode node = make_node(c.type, c.params, c.name);
    Buf out;
    try {
      out = run(node, c.inputs);
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << ": threw " << e.what();
      continue;
    }
    Values v;
    for (const Buf& b : c.inputs) v.push_back(b.absent ? std::vector<double>{} : b.values());
    const std::vector<double> ref = c.reference(v, c.inputs, out.dims);
    const std::vector<double> got = out.values();
    ASSERT_EQ(got.size(), ref.size()) << c.name;
    const double tol = tolerance(c.type, out.dtype);
    int reported = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double err = std::fabs(got[i] - ref[i]);
      if (!(err <= tol * std::max(1.0, std::fabs(ref[i]))) && reported++ < 3)
        ADD_FAILURE() << c.name << ": element " << i << " is " << got[i] << ", reference " << ref[i]
                      << " (tolerance " << tol << ")";
    }
    if (perf) {
      std::vector<double> us;
      for (int r = 0; r < 20; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        (void)run(node, c.inputs);
        us.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                .count());
      }
      std::sort(us.begin(), us.end());
      std::printf("[perf] %-50s %10.2f us\n", c.name.c_str(), us[us.size() / 2]);
    }
  }
}

}  // namespace
}  // namespace bindery::test
