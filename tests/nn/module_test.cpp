// nn::Module / ModuleList: naming, nesting, lookup, tying and load_state.

#include "bindery/nn/module.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bindery/error.h"
#include "bindery/logging.h"
#include "bindery/nn/layers.h"

namespace bindery::nn {
namespace {

// A small decoder-shaped tree: embed, layers.{0,1}.{attn.qkv, norm}, norm, lm_head.
struct Attention : Module {
  explicit Attention(int64_t d) {
    qkv = register_module("qkv", std::make_unique<Linear>(d, 3 * d));
  }
  Linear* qkv;
};
struct Block : Module {
  explicit Block(int64_t d) {
    attn = register_module("attn", std::make_unique<Attention>(d));
    norm = register_module("norm", std::make_unique<RmsNorm>(d));
  }
  Attention* attn;
  RmsNorm* norm;
};
struct Decoder : Module {
  Decoder(int64_t vocab, int64_t d, int n_layers) {
    embed = register_module("embed", std::make_unique<Embedding>(vocab, d));
    layers = register_module("layers", std::make_unique<ModuleList>());
    for (int i = 0; i < n_layers; ++i) layers->append(std::make_unique<Block>(d));
    norm = register_module("norm", std::make_unique<RmsNorm>(d));
    lm_head = register_module("lm_head", std::make_unique<Linear>(d, vocab, false));
  }
  Embedding* embed;
  ModuleList* layers;
  RmsNorm* norm;
  Linear* lm_head;
};

std::vector<std::string> names_of(const std::vector<Named<Parameter>>& v) {
  std::vector<std::string> out;
  for (const auto& n : v) out.push_back(n.name);
  return out;
}

// Owns zero-filled data for every parameter of `m`, keyed by name.
struct State {
  explicit State(Module& m) {
    for (auto& [name, p] : m.named_parameters())
      tensors.emplace(name, HostTensor::zeros(p.dtype(), p.shape()));
  }
  std::map<std::string, Weights> views() const {
    std::map<std::string, Weights> out;
    for (const auto& [name, t] : tensors) out.emplace(name, t.view());
    return out;
  }
  std::map<std::string, HostTensor> tensors;
};

// Captures warnings for the lifetime of the object.
struct LogCapture {
  LogCapture() {
    set_log_sink([this](LogLevel level, std::string_view m) {
      if (level == LogLevel::kWARNING) warnings.emplace_back(m);
    });
  }
  ~LogCapture() { set_log_sink(nullptr); }
  std::vector<std::string> warnings;
};

TEST(Module, NamedParametersAreDottedPathsInRegistrationOrder) {
  Decoder m(10, 4, 2);
  EXPECT_EQ(names_of(m.named_parameters()),
            (std::vector<std::string>{"embed.weight", "layers.0.attn.qkv.weight",
                                      "layers.0.attn.qkv.bias", "layers.0.norm.weight",
                                      "layers.1.attn.qkv.weight", "layers.1.attn.qkv.bias",
                                      "layers.1.norm.weight", "norm.weight", "lm_head.weight"}));
  for (auto& [name, p] : m.named_parameters()) EXPECT_EQ(p.name(), name);
}

TEST(Module, NamedModulesArePreorderWithRootFirst) {
  Decoder m(10, 4, 1);
  std::vector<std::string> names;
  for (auto& [name, mod] : m.named_modules())
    names.push_back(name + ":" + std::string(mod.type_name()));
  EXPECT_EQ(names, (std::vector<std::string>{":Module", "embed:Embedding", "layers:ModuleList",
                                             "layers.0:Module", "layers.0.attn:Module",
                                             "layers.0.attn.qkv:Linear", "layers.0.norm:RmsNorm",
                                             "norm:RmsNorm", "lm_head:Linear"}));
  std::vector<std::string> children;
  for (auto& [name, mod] : m.named_children()) children.push_back(name);
  EXPECT_EQ(children, (std::vector<std::string>{"embed", "layers", "norm", "lm_head"}));
}

TEST(Module, SubmoduleNamesAreRelativeButParameterNamesAreFull) {
  Decoder m(10, 4, 2);
  Module& block = (*m.layers)[1];
  EXPECT_EQ(block.name(), "1");
  EXPECT_EQ(block.full_name(), "layers.1");
  EXPECT_EQ(block.parent(), m.layers);
  EXPECT_EQ(names_of(block.named_parameters()),
            (std::vector<std::string>{"attn.qkv.weight", "attn.qkv.bias", "norm.weight"}));
  EXPECT_EQ(block.parameter("attn.qkv.weight").name(), "layers.1.attn.qkv.weight");
  EXPECT_EQ(&block.submodule("attn.qkv"), &m.submodule("layers.1.attn.qkv"));
  EXPECT_EQ(&m.submodule(""), &m);
}

TEST(Module, ModuleListNamesChildrenByIndex) {
  ModuleList list;
  auto* a = list.append(std::make_unique<Linear>(2, 3));
  auto* b = list.append(std::make_unique<RmsNorm>(5));
  EXPECT_EQ(list.size(), 2u);
  EXPECT_EQ(a->name(), "0");
  EXPECT_EQ(b->name(), "1");
  EXPECT_EQ(&list.at<Linear>(0), a);
  EXPECT_EQ(list.at<RmsNorm>(1).dim(), 5);
  std::vector<Module*> seen(list.begin(), list.end());
  EXPECT_EQ(seen, (std::vector<Module*>{a, b}));
  EXPECT_EQ(names_of(list.named_parameters()),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight"}));
  try {
    (void)list[2];
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNOT_FOUND);
  }
  try {
    (void)list.at<Linear>(1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
  }
}

TEST(Module, RegisterRejectsBadAndDuplicateNames) {
  Module m;
  m.register_parameter("w", Parameter({2}));
  for (const char* bad : {"", "a.b", "w"}) {
    try {
      m.register_parameter(bad, Parameter({2}));
      FAIL() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT) << bad;
    }
  }
  EXPECT_THROW(m.register_module("w", std::make_unique<Module>()), Error);
  EXPECT_THROW(m.register_module("x", std::unique_ptr<Module>()), Error);
  EXPECT_EQ(m.named_parameters().size(), 1u);
}

TEST(Module, LookupNotFoundNamesItAndClosestNames) {
  Decoder m(10, 4, 2);
  try {
    (void)m.parameter("layers.0.atn.qkv.weight");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNOT_FOUND);
    const std::string what = e.what();
    EXPECT_NE(what.find("'layers.0.atn.qkv.weight'"), std::string::npos) << what;
    EXPECT_NE(what.find("closest: 'layers.0.attn.qkv.weight'"), std::string::npos) << what;
  }
  EXPECT_EQ(m.find_parameter("layers.0.attn"), nullptr);  // a module, not a parameter
  EXPECT_EQ(m.find_parameter("layers.0.attn.qkv.weight.x"), nullptr);
  try {
    (void)m.submodule("layers.2");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNOT_FOUND);
    EXPECT_NE(std::string(e.what()).find("'layers.2'"), std::string::npos) << e.what();
  }
}

TEST(Module, LoadStateBindsEveryParameterByName) {
  Decoder m(10, 4, 2);
  State s(m);
  LogCapture log;
  EXPECT_TRUE(m.load_state(s.views()).empty());
  EXPECT_TRUE(log.warnings.empty());
  for (auto& [name, p] : m.named_parameters()) {
    ASSERT_TRUE(p.has_value()) << name;
    EXPECT_EQ(p.value().values, s.tensors.at(name).data()) << name;
    EXPECT_FALSE(p.owns_value());
  }
}

TEST(Module, LoadStateListsAllMissingNamesAndBindsNothing) {
  Decoder m(10, 4, 2);
  State s(m);
  auto views = s.views();
  views.erase("layers.0.norm.weight");
  views.erase("layers.1.attn.qkv.bias");
  views.erase("lm_head.weight");
  try {
    m.load_state(views);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNOT_FOUND);
    EXPECT_EQ(std::string(e.what()),
              "kNOT_FOUND: load_state into root module (Module): 3 of 9 parameters missing: "
              "'layers.0.norm.weight', 'layers.1.attn.qkv.bias', 'lm_head.weight'");
  }
  for (auto& [name, p] : m.named_parameters()) EXPECT_FALSE(p.has_value()) << name;
}

TEST(Module, LoadStateWarnsAboutUnusedNames) {
  Decoder m(10, 4, 1);
  State s(m);
  auto views = s.views();
  float extra[3] = {};
  views.emplace("rotary.inv_freq", Weights(DataType::kFLOAT, {3}, extra));
  views.emplace("layers.0.attn.o_proj.weight", Weights(DataType::kFLOAT, {3}, extra));
  LogCapture log;
  const auto unused = m.load_state(views);
  EXPECT_EQ(unused, (std::vector<std::string>{"layers.0.attn.o_proj.weight", "rotary.inv_freq"}));
  ASSERT_EQ(log.warnings.size(), 1u);
  EXPECT_NE(log.warnings[0].find("2 unused weights"), std::string::npos) << log.warnings[0];
  EXPECT_NE(log.warnings[0].find("'layers.0.attn.o_proj.weight', 'rotary.inv_freq'"),
            std::string::npos)
      << log.warnings[0];
  EXPECT_TRUE(m.parameter("lm_head.weight").has_value());
}

TEST(Module, LoadStateIsAllOrNothingOnShapeMismatch) {
  Decoder m(10, 4, 2);
  State s(m);
  auto views = s.views();
  HostTensor wrong = HostTensor::zeros(DataType::kFLOAT, {4, 12});
  views["layers.1.attn.qkv.weight"] = wrong.view();
  try {
    m.load_state(views);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kSHAPE_MISMATCH);
    EXPECT_EQ(std::string(e.what()),
              "kSHAPE_MISMATCH: parameter 'layers.1.attn.qkv.weight': expected f32[12, 4], got "
              "f32[4, 12]");
  }
  for (auto& [name, p] : m.named_parameters()) EXPECT_FALSE(p.has_value()) << name;
}

TEST(Module, LoadStateFromCallbackAndOnSubmodule) {
  Decoder m(10, 4, 2);
  State s(m);
  std::vector<std::string> asked;
  Module& block = (*m.layers)[1];
  block.load_state([&](const std::string& name) -> std::optional<Weights> {
    asked.push_back(name);
    return s.tensors.at("layers.1." + name).view();
  });
  EXPECT_EQ(asked, (std::vector<std::string>{"attn.qkv.weight", "attn.qkv.bias", "norm.weight"}));
  EXPECT_TRUE(m.parameter("layers.1.norm.weight").has_value());
  EXPECT_FALSE(m.parameter("layers.0.norm.weight").has_value());
  try {
    block.load_state([](const std::string&) { return std::optional<Weights>(); });
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNOT_FOUND);
    EXPECT_NE(std::string(e.what()).find("module 'layers.1'"), std::string::npos) << e.what();
  }
}

TEST(Module, LoadStateTakesOwnedTensors) {
  Decoder m(10, 4, 1);
  State s(m);
  std::map<std::string, HostTensor> owned = std::move(s.tensors);
  owned.emplace("unused", HostTensor::zeros(DataType::kFLOAT, {1}));
  LogCapture log;
  EXPECT_EQ(m.load_state(std::move(owned)), (std::vector<std::string>{"unused"}));
  for (auto& [name, p] : m.named_parameters()) EXPECT_TRUE(p.owns_value()) << name;
}

TEST(Module, TiedParameterIsAnAliasNotListedTwice) {
  Decoder m(10, 4, 1);
  Parameter& embed = m.embed->weight();
  EXPECT_EQ(&m.lm_head->tie_parameter("weight", embed), &embed);
  EXPECT_EQ(&m.lm_head->weight(), &embed);
  EXPECT_EQ(&m.parameter("lm_head.weight"), &embed);
  auto names = names_of(m.named_parameters());
  EXPECT_EQ(std::count(names.begin(), names.end(), "lm_head.weight"), 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "embed.weight"), 1);
  // A checkpoint without lm_head.weight now binds completely.
  State s(m);
  m.load_state(s.views());
  EXPECT_TRUE(m.lm_head->weight().has_value());
  // Tying to a parameter of another shape is refused.
  Linear other(3, 3, false);
  try {
    m.norm->tie_parameter("weight", other.weight());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kSHAPE_MISMATCH);
    EXPECT_EQ(std::string(e.what()),
              "kSHAPE_MISMATCH: parameter 'norm.weight': expected f32[4], got f32[3, 3]");
  }
}

TEST(Module, SetRefittableRecurses) {
  Decoder m(10, 4, 2);
  m.layers->set_refittable(false);
  for (auto& [name, p] : m.named_parameters())
    EXPECT_EQ(p.refittable(), name.rfind("layers.", 0) != 0) << name;
}

}  // namespace
}  // namespace bindery::nn
