#include "bindery/nn/emitter.h"

#include "bindery/error.h"
#include "bindery/nn/module.h"

namespace bindery::nn {

Emitter::Emitter(Network& network, EmitOptions options) : network_(network), options_(options) {}

bool Emitter::emitted(const Parameter& p) const { return constants_.count(&p) > 0; }

Tensor* Emitter::constant(const Parameter& p) {
  // Keyed by address, so a parameter reached through a tied alias is still added once, under
  // its owner's name.
  if (auto it = constants_.find(&p); it != constants_.end()) return it->second;
  const std::string name = p.name();
  check(!name.empty(), ErrorCode::kINVALID_ARGUMENT,
        "cannot emit an unregistered parameter (" + p.describe_type() +
            "): register it in a module so it has a weights name");
  check(p.has_value(), ErrorCode::kINVALID_ARGUMENT,
        "parameter '" + name + "' (" + p.describe_type() +
            ") has no value; bind it with set_value or Module::load_state before emitting");
  Layer* layer = options_.copy_values ? network_.add_constant(HostTensor::copy_of(p.value()), name)
                                      : network_.add_constant(p.value(), name);
  if (p.refittable()) network_.mark_weights_refittable(name);
  Tensor* t = layer->output(0);
  constants_.emplace(&p, t);
  return t;
}

Layer* Emitter::name_layer(Layer* layer, const Module& module, std::string_view suffix) {
  check(layer != nullptr, ErrorCode::kINVALID_ARGUMENT, "name_layer(nullptr)");
  const std::string prefix = module.full_name();
  std::string base = prefix.empty() ? std::string(suffix) : prefix + "." + std::string(suffix);
  int& uses = layer_names_[base];
  layer->set_name(uses == 0 ? base : base + "_" + std::to_string(uses));
  ++uses;
  return layer;
}

}  // namespace bindery::nn
