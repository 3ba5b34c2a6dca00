#include "bindery/nn/layers.h"

#include "bindery/error.h"

namespace bindery::nn {

namespace {

void check_positive(std::string_view module, std::string_view what, int64_t value) {
  check(value > 0, ErrorCode::kINVALID_ARGUMENT,
        std::string(module) + ": " + std::string(what) + " must be positive, got " +
            std::to_string(value));
}

std::string where(const Module& m) {
  const std::string name = m.full_name();
  return std::string(m.type_name()) + (name.empty() ? "" : " '" + name + "'");
}

void check_input(const Module& m, const Tensor* x) {
  check(x != nullptr, ErrorCode::kINVALID_ARGUMENT, where(m) + ": input tensor is null");
}

// The network would reject a mismatch too, but only naming an anonymous layer; this names the
// module and the sizes it was constructed with. Dynamic dims are left to the builder.
void check_dim(const Module& m, const Tensor* x, int axis_from_end, int64_t expected,
               std::string_view what) {
  const Dims& d = x->dims();
  check(static_cast<int>(d.size()) >= axis_from_end, ErrorCode::kSHAPE_MISMATCH,
        where(m) + ": input '" + x->name() + "' " + to_string(d) + " has rank " +
            std::to_string(d.size()) + ", expected at least " + std::to_string(axis_from_end));
  const int64_t got = d[d.size() - axis_from_end];
  check(got == kDYNAMIC || got == expected, ErrorCode::kSHAPE_MISMATCH,
        where(m) + ": input '" + x->name() + "' " + to_string(d) + " has " + std::string(what) +
            " " + std::to_string(got) + ", expected " + std::to_string(expected));
}

void check_pair(std::string_view what, const Dims& d, int64_t min) {
  check(d.size() == 2, ErrorCode::kINVALID_ARGUMENT,
        "Conv2d: " + std::string(what) + " must hold {h, w}, got " + to_string(d));
  for (int64_t v : d)
    check(v >= min, ErrorCode::kINVALID_ARGUMENT,
          "Conv2d: " + std::string(what) + " must be >= " + std::to_string(min) + ", got " +
              to_string(d));
}

}  // namespace

// ---- Linear ----

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, DataType dtype)
    : in_features_(in_features), out_features_(out_features) {
  check_positive("Linear", "in_features", in_features);
  check_positive("Linear", "out_features", out_features);
  register_parameter("weight", Parameter({out_features, in_features}, dtype));
  if (bias) register_parameter("bias", Parameter({out_features}, dtype));
}

Tensor* Linear::forward(Emitter& em, Tensor* x) {
  check_input(*this, x);
  check_dim(*this, x, 1, in_features_, "last dim");
  Network& net = em.network();
  Tensor* w = em.constant(weight());
  Tensor* y = em.name_layer(net.add_matmul(x, false, w, true), *this, "matmul")->output(0);
  if (Parameter* b = bias()) {
    y = em.name_layer(net.add_elementwise(y, em.constant(*b), ElementwiseOp::kSUM), *this, "bias")
            ->output(0);
  }
  return y;
}

// ---- Embedding ----

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim, DataType dtype)
    : num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {
  check_positive("Embedding", "num_embeddings", num_embeddings);
  check_positive("Embedding", "embedding_dim", embedding_dim);
  register_parameter("weight", Parameter({num_embeddings, embedding_dim}, dtype));
}

Tensor* Embedding::forward(Emitter& em, Tensor* indices) {
  check_input(*this, indices);
  check(indices->dtype() == DataType::kINT32 || indices->dtype() == DataType::kINT64,
        ErrorCode::kDTYPE_MISMATCH,
        where(*this) + ": indices '" + indices->name() + "' must be i32 or i64, got " +
            std::string(dtype_name(indices->dtype())));
  Tensor* w = em.constant(weight());
  return em.name_layer(em.network().add_gather(w, indices, 0), *this, "gather")->output(0);
}

// ---- RmsNorm ----

RmsNorm::RmsNorm(int64_t dim, float epsilon, DataType dtype) : dim_(dim), epsilon_(epsilon) {
  check_positive("RmsNorm", "dim", dim);
  register_parameter("weight", Parameter({dim}, dtype));
}

Tensor* RmsNorm::forward(Emitter& em, Tensor* x) {
  check_input(*this, x);
  check_dim(*this, x, 1, dim_, "last dim");
  Tensor* w = em.constant(weight());
  return em.name_layer(em.network().add_rms_norm(x, w, epsilon_), *this, "rms_norm")->output(0);
}

// ---- LayerNorm ----

LayerNorm::LayerNorm(int64_t dim, float epsilon, bool bias, DataType dtype)
    : dim_(dim), epsilon_(epsilon) {
  check_positive("LayerNorm", "dim", dim);
  register_parameter("weight", Parameter({dim}, dtype));
  if (bias) register_parameter("bias", Parameter({dim}, dtype));
}

Tensor* LayerNorm::forward(Emitter& em, Tensor* x) {
  check_input(*this, x);
  check_dim(*this, x, 1, dim_, "last dim");
  Tensor* w = em.constant(weight());
  Parameter* b = bias();
  Tensor* bt = b ? em.constant(*b) : nullptr;
  return em.name_layer(em.network().add_layer_norm(x, w, bt, epsilon_), *this, "layer_norm")
      ->output(0);
}

// ---- Conv2d ----

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, Dims kernel, Dims stride, Dims padding,
               Dims dilation, int64_t groups, bool bias, DataType dtype)
    : in_channels_(in_channels), out_channels_(out_channels) {
  check_positive("Conv2d", "in_channels", in_channels);
  check_positive("Conv2d", "out_channels", out_channels);
  check_positive("Conv2d", "groups", groups);
  check(in_channels % groups == 0 && out_channels % groups == 0, ErrorCode::kINVALID_ARGUMENT,
        "Conv2d: groups " + std::to_string(groups) + " must divide in_channels " +
            std::to_string(in_channels) + " and out_channels " + std::to_string(out_channels));
  check_pair("kernel", kernel, 1);
  check_pair("stride", stride, 1);
  check_pair("padding", padding, 0);
  check_pair("dilation", dilation, 1);
  params_.stride = std::move(stride);
  params_.padding = std::move(padding);
  params_.dilation = std::move(dilation);
  params_.groups = groups;
  register_parameter("weight",
                     Parameter({out_channels, in_channels / groups, kernel[0], kernel[1]}, dtype));
  if (bias) register_parameter("bias", Parameter({out_channels}, dtype));
}

Tensor* Conv2d::forward(Emitter& em, Tensor* x) {
  check_input(*this, x);
  check(x->dims().size() == 4, ErrorCode::kSHAPE_MISMATCH,
        where(*this) + ": input '" + x->name() + "' " + to_string(x->dims()) +
            " must be [N, C, H, W]");
  check_dim(*this, x, 3, in_channels_, "channels");
  Tensor* w = em.constant(weight());
  Parameter* b = bias();
  Tensor* bt = b ? em.constant(*b) : nullptr;
  return em.name_layer(em.network().add_convolution(x, w, bt, params_), *this, "conv")->output(0);
}

}  // namespace bindery::nn
