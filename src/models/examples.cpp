#include "bindery/models/examples.h"

#include <cmath>

#include "bindery/error.h"

namespace bindery::examples {

namespace {

// xorshift32: fixed sequence for a seed on every platform (std distributions are not).
struct Rng {
  uint32_t s;
  explicit Rng(uint32_t seed) : s(seed * 2654435761u + 1u) {}
  float uniform() {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return static_cast<float>(s >> 8) / static_cast<float>(1u << 24);
  }
};

const HostTensor& get(const WeightMap& w, const std::string& name) {
  auto it = w.find(name);
  check(it != w.end(), ErrorCode::kNOT_FOUND, "example weights lack '" + name + "'");
  return it->second;
}

Tensor* constant(Network& net, const WeightMap& w, const std::string& name) {
  return net.add_constant(get(w, name).view(), name)->output(0);
}

Tensor* linear(Network& net, const WeightMap& w, Tensor* x, const std::string& prefix, bool bias) {
  Tensor* y = net.add_matmul(x, false, constant(net, w, prefix + ".weight"), true)->output(0);
  if (bias)
    y = net.add_elementwise(y, constant(net, w, prefix + ".bias"), ElementwiseOp::kSUM)->output(0);
  return y;
}

}  // namespace

HostTensor random_tensor(Dims shape, uint32_t seed, float scale) {
  HostTensor t(DataType::kFLOAT, std::move(shape));
  Rng rng(seed);
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.count(); ++i) p[i] = (rng.uniform() * 2.f - 1.f) * scale;
  return t;
}

WeightMap mlp_weights(const MlpConfig& c, uint32_t seed) {
  WeightMap w;
  uint32_t k = seed * 1000;
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    const int64_t in = l == 0 ? c.in : c.out;
    const float s_in = 1.f / std::sqrt(static_cast<float>(in));
    w[p + "gate.weight"] = random_tensor({c.hidden, in}, ++k, s_in);
    w[p + "up.weight"] = random_tensor({c.hidden, in}, ++k, s_in);
    w[p + "down.weight"] =
        random_tensor({c.out, c.hidden}, ++k, 1.f / std::sqrt(static_cast<float>(c.hidden)));
    w[p + "down.bias"] = random_tensor({c.out}, ++k, 0.1f);
    HostTensor g = random_tensor({c.out}, ++k, 0.2f);
    for (int64_t i = 0; i < g.count(); ++i) g.data_as<float>()[i] += 1.f;
    w[p + "ln.weight"] = std::move(g);
    w[p + "ln.bias"] = random_tensor({c.out}, ++k, 0.1f);
  }
  return w;
}

Network mlp_network(const MlpConfig& c, const WeightMap& w) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFLOAT, {kDYNAMIC, c.in});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    Tensor* gate = linear(net, w, x, p + "gate", false);
    Tensor* up = linear(net, w, x, p + "up", false);
    Tensor* act = net.add_unary(gate, UnaryOp::kSILU)->output(0);
    Tensor* h = net.add_elementwise(act, up, ElementwiseOp::kPROD)->output(0);
    h->set_name(p + "act");
    if (l == 0) net.mark_debug(h);
    Tensor* d = linear(net, w, h, p + "down", true);
    x = net.add_layer_norm(d, constant(net, w, p + "ln.weight"), constant(net, w, p + "ln.bias"),
                           1e-5f)
            ->output(0);
  }
  x->set_name("y");
  net.mark_output(x);
  return net;
}

WeightMap cnn_weights(const CnnConfig& c, uint32_t seed) {
  WeightMap w;
  uint32_t k = seed * 1000;
  const int64_t ch = c.channels;
  w["conv1.weight"] = random_tensor({ch, 3, 3, 3}, ++k, 0.3f);
  w["conv1.bias"] = random_tensor({ch}, ++k, 0.1f);
  w["conv2.weight"] = random_tensor({ch, ch, 3, 3}, ++k, 1.f / std::sqrt(9.f * ch));
  HostTensor g = random_tensor({ch}, ++k, 0.2f), var = random_tensor({ch}, ++k, 0.2f);
  for (int64_t i = 0; i < ch; ++i) {
    g.data_as<float>()[i] += 1.f;
    var.data_as<float>()[i] += 1.f;  // positive
  }
  w["bn2.weight"] = std::move(g);
  w["bn2.bias"] = random_tensor({ch}, ++k, 0.1f);
  w["bn2.running_mean"] = random_tensor({ch}, ++k, 0.1f);
  w["bn2.running_var"] = std::move(var);
  HostTensor clip(DataType::kFLOAT, {1});
  clip.data_as<float>()[0] = 0.75f + 0.05f * static_cast<float>(seed % 5);
  w["clip.max"] = std::move(clip);
  w["fc.weight"] = random_tensor({c.classes, ch}, ++k, 1.f / std::sqrt(static_cast<float>(ch)));
  w["fc.bias"] = random_tensor({c.classes}, ++k, 0.1f);
  return w;
}

Network cnn_network(const CnnConfig& c, const WeightMap& w) {
  Network net;
  Tensor* x = net.add_input("image", DataType::kFLOAT, {kDYNAMIC, 3, c.image, c.image});
  ConvParams same;
  same.padding = {1, 1};
  x = net.add_convolution(x, constant(net, w, "conv1.weight"), constant(net, w, "conv1.bias"), same)
          ->output(0);
  x = net.add_unary(x, UnaryOp::kGELU_ERF)->output(0);
  PoolingParams pool;
  x = net.add_pooling(x, pool)->output(0);
  x = net.add_convolution(x, constant(net, w, "conv2.weight"), nullptr, same)->output(0);
  x = net.add_batch_norm(x, constant(net, w, "bn2.weight"), constant(net, w, "bn2.bias"),
                         constant(net, w, "bn2.running_mean"), constant(net, w, "bn2.running_var"),
                         1e-5f)
          ->output(0);
  x = net.add_unary(x, UnaryOp::kRELU)->output(0);
  x = net.add_elementwise(x, constant(net, w, "clip.max"), ElementwiseOp::kMIN)->output(0);
  PoolingParams avg;
  avg.type = PoolingType::kAVERAGE;
  avg.window = avg.stride = {c.image / 2, c.image / 2};
  x = net.add_pooling(x, avg)->output(0);
  x = net.add_reshape(x, {0, c.channels})->output(0);
  x = linear(net, w, x, "fc", true);
  x->set_name("logits");
  net.mark_output(x);
  return net;
}

}  // namespace bindery::examples
