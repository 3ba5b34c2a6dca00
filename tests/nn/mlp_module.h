#pragma once
// The two-layer MLP module the nn tests emit and build: fc1 -> relu -> fc2.

#include <memory>

#include "bindery/nn/emitter.h"
#include "bindery/nn/layers.h"
#include "bindery/nn/module.h"

namespace bindery::nn::testing {

struct Mlp : Module {
  Mlp(int64_t d, int64_t h) {
    fc1 = register_module("fc1", std::make_unique<Linear>(d, h));
    fc2 = register_module("fc2", std::make_unique<Linear>(h, d));
  }
  Tensor* forward(Emitter& em, Tensor* x) {
    Layer* act = em.network().add_unary(fc1->forward(em, x), UnaryOp::kRELU);
    return fc2->forward(em, em.name_layer(act, *this, "relu")->output(0));
  }
  Linear* fc1;
  Linear* fc2;
};

}  // namespace bindery::nn::testing
