// Emitting module trees into a Network: one constant per parameter named by its dotted path,
// refittable marks, shared parameters emitted once, and the standard layers' shapes.

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bindery/error.h"
#include "bindery/network.h"
#include "bindery/nn/emitter.h"
#include "bindery/nn/layers.h"
#include "bindery/nn/module.h"
#include "nn/mlp_module.h"

namespace bindery::nn {
namespace {

using testing::Mlp;

// Binds every parameter of `m` to owned zeros.
void bind_zeros(Module& m) {
  for (auto& [name, p] : m.named_parameters()) p.set_value(HostTensor::zeros(p.dtype(), p.shape()));
}

std::vector<LayerType> layer_types(const Network& net) {
  std::vector<LayerType> out;
  for (int i = 0; i < net.num_layers(); ++i) out.push_back(net.get_layer(i)->type());
  return out;
}

TEST(Emit, TwoLayerMlpEmitsDottedWeightNamesMarkedRefittable) {
  Mlp mlp(8, 16);
  bind_zeros(mlp);
  Network net;
  Emitter em(net);
  Tensor* x = net.add_input("x", DataType::kFLOAT, {kDYNAMIC, 8});
  Tensor* y = mlp.forward(em, x);
  net.mark_output(y);

  EXPECT_EQ(net.weights_names(),
            (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}));
  for (const auto& name : net.weights_names()) {
    EXPECT_TRUE(net.are_weights_marked_refittable(name)) << name;
    const Layer* c = net.find_weights(name);
    ASSERT_NE(c, nullptr) << name;
    // Borrowed: the constant views the parameter's own memory.
    EXPECT_EQ(c->weights().values, mlp.parameter(name).value().values) << name;
    EXPECT_EQ(c->output(0)->dims(), mlp.parameter(name).shape()) << name;
  }
  EXPECT_EQ(em.num_constants(), 4u);
  EXPECT_EQ(y->dims(), (Dims{kDYNAMIC, 8}));

  // matmul(x, W, transpose_b) then bias add, per Linear.
  const Layer* mm = y->producer()->input(0)->producer();
  ASSERT_EQ(mm->type(), LayerType::kMATMUL);
  EXPECT_EQ(mm->name(), "fc2.matmul");
  const auto& p = std::get<MatMulParams>(mm->params());
  EXPECT_FALSE(p.transpose_a);
  EXPECT_TRUE(p.transpose_b);
  EXPECT_EQ(mm->input(1)->name(), "fc2.weight");
  EXPECT_EQ(y->producer()->name(), "fc2.bias");
  EXPECT_EQ(y->producer()->input(1)->name(), "fc2.bias");
  EXPECT_NO_THROW(net.validate());
}

TEST(Emit, NestedModuleWeightsCarryTheFullPath) {
  Module root;
  auto* blocks = root.register_module("blocks", std::make_unique<ModuleList>());
  auto* mlp = blocks->append(std::make_unique<Mlp>(4, 4));
  bind_zeros(root);
  Network net;
  Emitter em(net);
  net.mark_output(mlp->forward(em, net.add_input("x", DataType::kFLOAT, {2, 4})));
  EXPECT_EQ(net.weights_names(),
            (std::vector<std::string>{"blocks.0.fc1.weight", "blocks.0.fc1.bias",
                                      "blocks.0.fc2.weight", "blocks.0.fc2.bias"}));
}

TEST(Emit, NonRefittableParameterIsNotMarked) {
  Mlp mlp(4, 4);
  bind_zeros(mlp);
  mlp.fc1->set_refittable(false);
  Network net;
  Emitter em(net);
  net.mark_output(mlp.forward(em, net.add_input("x", DataType::kFLOAT, {1, 4})));
  EXPECT_FALSE(net.are_weights_marked_refittable("fc1.weight"));
  EXPECT_FALSE(net.are_weights_marked_refittable("fc1.bias"));
  EXPECT_TRUE(net.are_weights_marked_refittable("fc2.weight"));
}

// Uses one Linear twice: its parameters must be emitted once, layers get distinct names.
struct Twice : Module {
  Twice() { lin = register_module("lin", std::make_unique<Linear>(4, 4)); }
  Tensor* forward(Emitter& em, Tensor* x) { return lin->forward(em, lin->forward(em, x)); }
  Linear* lin;
};

TEST(Emit, SharedParameterIsEmittedOnce) {
  Twice m;
  bind_zeros(m);
  Network net;
  Emitter em(net);
  Tensor* y = m.forward(em, net.add_input("x", DataType::kFLOAT, {3, 4}));
  net.mark_output(y);
  EXPECT_EQ(net.weights_names(), (std::vector<std::string>{"lin.weight", "lin.bias"}));
  EXPECT_EQ(em.num_constants(), 2u);
  const Layer* second_mm = y->producer()->input(0)->producer();
  const Layer* first_mm = second_mm->input(0)->producer()->input(0)->producer();
  EXPECT_EQ(first_mm->name(), "lin.matmul");
  EXPECT_EQ(second_mm->name(), "lin.matmul_1");
  EXPECT_EQ(first_mm->input(1), second_mm->input(1));  // the same constant tensor
  EXPECT_NO_THROW(net.validate());
}

// Tied embeddings: the LM head reads the embedding table; one constant, the owner's name.
struct TiedLm : Module {
  TiedLm(int64_t vocab, int64_t d) {
    embed = register_module("embed", std::make_unique<Embedding>(vocab, d));
    norm = register_module("norm", std::make_unique<RmsNorm>(d));
    lm_head = register_module("lm_head", std::make_unique<Linear>(d, vocab, false));
    lm_head->tie_parameter("weight", embed->weight());
  }
  Tensor* forward(Emitter& em, Tensor* tokens) {
    return lm_head->forward(em, norm->forward(em, embed->forward(em, tokens)));
  }
  Embedding* embed;
  RmsNorm* norm;
  Linear* lm_head;
};

TEST(Emit, TiedParameterIsEmittedOnceUnderItsOwnersName) {
  TiedLm m(16, 4);
  bind_zeros(m);
  Network net;
  Emitter em(net);
  Tensor* tokens = net.add_input("tokens", DataType::kINT32, {kDYNAMIC});
  Tensor* logits = m.forward(em, tokens);
  net.mark_output(logits);
  EXPECT_EQ(net.weights_names(), (std::vector<std::string>{"embed.weight", "norm.weight"}));
  EXPECT_EQ(logits->dims(), (Dims{kDYNAMIC, 16}));
  EXPECT_EQ(logits->producer()->name(), "lm_head.matmul");
  EXPECT_EQ(logits->producer()->input(1)->name(), "embed.weight");
  EXPECT_NO_THROW(net.validate());
}

TEST(Emit, ParameterWithoutValueIsRejectedNamingIt) {
  Mlp mlp(4, 4);
  bind_zeros(mlp);
  mlp.fc2->bias()->clear_value();
  Network net;
  Emitter em(net);
  try {
    mlp.forward(em, net.add_input("x", DataType::kFLOAT, {1, 4}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("parameter 'fc2.bias' (f32[4]) has no value"),
              std::string::npos)
        << e.what();
  }
}

TEST(Emit, UnregisteredParameterIsRejected) {
  Parameter p({2});
  p.set_value(HostTensor::zeros(DataType::kFLOAT, {2}));
  Network net;
  Emitter em(net);
  try {
    em.constant(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
  }
}

TEST(Emit, CopyValuesMakesTheNetworkSelfContained) {
  Linear lin(2, 2, false);
  std::vector<float> w{1, 2, 3, 4};
  lin.weight().set_value(Weights(DataType::kFLOAT, {2, 2}, w.data()));
  Network net;
  {
    Emitter em(net, EmitOptions{.copy_values = true});
    net.mark_output(lin.forward(em, net.add_input("x", DataType::kFLOAT, {1, 2})));
  }
  w.assign(4, 0.0f);
  const Layer* c = net.find_weights("weight");
  ASSERT_NE(c, nullptr);
  EXPECT_NE(c->weights().values, w.data());
  EXPECT_EQ(c->weights().data<float>()[3], 4.0f);
}

TEST(Emit, EmbeddingGathersRows) {
  Embedding e(32, 8, DataType::kHALF);
  bind_zeros(e);
  Network net;
  Emitter em(net);
  Tensor* y = e.forward(em, net.add_input("ids", DataType::kINT64, {2, kDYNAMIC}));
  EXPECT_EQ(y->producer()->type(), LayerType::kGATHER);
  EXPECT_EQ(std::get<GatherParams>(y->producer()->params()).axis, 0);
  EXPECT_EQ(y->dims(), (Dims{2, kDYNAMIC, 8}));
  EXPECT_EQ(net.find_weights("weight")->weights().dtype, DataType::kHALF);
  Tensor* f = net.add_input("f", DataType::kFLOAT, {2});
  try {
    e.forward(em, f);
    FAIL();
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), ErrorCode::kDTYPE_MISMATCH);
  }
}

TEST(Emit, NormsEmitTheirLayers) {
  Module root;
  auto* rms = root.register_module("rms", std::make_unique<RmsNorm>(8, 1e-6f));
  auto* ln = root.register_module("ln", std::make_unique<LayerNorm>(8, 1e-5f));
  auto* ln_nb = root.register_module("ln_nb", std::make_unique<LayerNorm>(8, 1e-5f, false));
  bind_zeros(root);
  EXPECT_EQ(ln_nb->bias(), nullptr);
  Network net;
  Emitter em(net);
  Tensor* x = net.add_input("x", DataType::kFLOAT, {2, 3, 8});
  Tensor* y = ln_nb->forward(em, ln->forward(em, rms->forward(em, x)));
  net.mark_output(y);
  EXPECT_EQ(y->dims(), (Dims{2, 3, 8}));
  EXPECT_EQ(layer_types(net),
            (std::vector<LayerType>{LayerType::kCONSTANT, LayerType::kRMSNORM, LayerType::kCONSTANT,
                                    LayerType::kCONSTANT, LayerType::kLAYERNORM,
                                    LayerType::kCONSTANT, LayerType::kLAYERNORM}));
  EXPECT_EQ(net.weights_names(),
            (std::vector<std::string>{"rms.weight", "ln.weight", "ln.bias", "ln_nb.weight"}));
  EXPECT_FLOAT_EQ(std::get<NormParams>(rms->forward(em, x)->producer()->params()).epsilon, 1e-6f);
  EXPECT_EQ(y->producer()->input(2), nullptr);
  EXPECT_EQ(y->producer()->name(), "ln_nb.layer_norm");
}

TEST(Emit, Conv2dKernelLayoutAndParams) {
  Conv2d conv(4, 6, {3, 3}, {2, 2}, {1, 1}, {1, 1}, 2, true);
  EXPECT_EQ(conv.weight().shape(), (Dims{6, 2, 3, 3}));
  EXPECT_EQ(conv.bias()->shape(), (Dims{6}));
  bind_zeros(conv);
  Network net;
  Emitter em(net);
  Tensor* y = conv.forward(em, net.add_input("img", DataType::kFLOAT, {1, 4, 9, 9}));
  net.mark_output(y);
  const Layer* l = y->producer();
  ASSERT_EQ(l->type(), LayerType::kCONVOLUTION);
  const auto& p = std::get<ConvParams>(l->params());
  EXPECT_EQ(p.stride, (Dims{2, 2}));
  EXPECT_EQ(p.padding, (Dims{1, 1}));
  EXPECT_EQ(p.groups, 2);
  EXPECT_EQ(y->dims(), (Dims{1, 6, 5, 5}));
  EXPECT_EQ(net.weights_names(), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_THROW(Conv2d(3, 6, {3, 3}, {1, 1}, {0, 0}, {1, 1}, 2), Error);  // 2 does not divide 3
  EXPECT_THROW(Conv2d(4, 4, {3}), Error);
}

TEST(Emit, LinearRejectsWrongInputWidthNamingTheModule) {
  Mlp mlp(8, 16);
  bind_zeros(mlp);
  Network net;
  Emitter em(net);
  try {
    mlp.forward(em, net.add_input("x", DataType::kFLOAT, {2, 7}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kSHAPE_MISMATCH);
    EXPECT_EQ(std::string(e.what()),
              "kSHAPE_MISMATCH: Linear 'fc1': input 'x' [2, 7] has last dim 7, expected 8");
  }
}

TEST(Emit, SameNameInTwoModelsCollidesInOneNetwork) {
  Linear a(2, 2, false), b(2, 2, false);
  bind_zeros(a);
  bind_zeros(b);
  Network net;
  Emitter em(net);
  Tensor* x = net.add_input("x", DataType::kFLOAT, {1, 2});
  a.forward(em, x);
  try {
    b.forward(em, x);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
  }
}

}  // namespace
}  // namespace bindery::nn
