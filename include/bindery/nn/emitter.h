#pragma once
// nn::Emitter: the context a module tree is emitted through into one Network. It turns each
// Parameter into one constant (weights name = the parameter's full dotted name, marked
// refittable when the parameter is), exactly once per network however many times or through
// however many tied aliases it is used, and gives layers readable names from the module path
// ("layers.0.mlp.fc1.matmul").
//
//   Network net;
//   nn::Emitter em(net);
//   Tensor* x = net.add_input("x", DataType::kFLOAT, {-1, 8});
//   net.mark_output(model.forward(em, x));
//
// Ownership: the Emitter borrows the Network, which must outlive it. Unless
// EmitOptions::copy_values is set, constants are borrowed views of the parameters' values: the
// module tree (owned values) and whatever memory borrowed values point at must stay alive and
// unchanged until Builder::build returns; re-binding a parameter after emitting it leaves the
// network with a dangling view. Emit one Network through one Emitter; an Emitter identifies
// parameters by address, so parameters must outlive it. Not thread-safe.

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>

#include "bindery/network.h"
#include "bindery/nn/parameter.h"

namespace bindery::nn {

class Module;

struct EmitOptions {
  /// Copy each parameter's values into the network (Network::add_constant(HostTensor)) so the
  /// network does not borrow from the module tree. Costs one copy of every weight.
  bool copy_values = false;
};

class Emitter {
 public:
  /// `network` is borrowed and must outlive the emitter.
  explicit Emitter(Network& network, EmitOptions options = {});
  Emitter(const Emitter&) = delete;
  Emitter& operator=(const Emitter&) = delete;

  Network& network() const { return network_; }
  const EmitOptions& options() const { return options_; }

  /// The constant tensor holding `p`: on first use adds Network::add_constant(p.value(),
  /// p.name()) and, if p.refittable(), Network::mark_weights_refittable(p.name()); later uses
  /// return the same tensor. Throws Error(kINVALID_ARGUMENT) naming the parameter if it has no
  /// value or is unregistered (has no name); Network::add_constant errors pass through (e.g.
  /// kINVALID_ARGUMENT when another constant already has that name).
  Tensor* constant(const Parameter& p);
  /// True if `p` was already emitted through this emitter.
  bool emitted(const Parameter& p) const;
  /// Number of distinct parameters emitted so far.
  size_t num_constants() const { return constants_.size(); }

  /// Names `layer` "<module.full_name()>.<suffix>" (just `suffix` for a root module), made unique
  /// among the names this emitter gave by appending "_1", "_2", ... when a module emits the same
  /// suffix again (a module called twice). Returns `layer`.
  Layer* name_layer(Layer* layer, const Module& module, std::string_view suffix);

 private:
  Network& network_;
  EmitOptions options_;
  std::unordered_map<const Parameter*, Tensor*> constants_;
  std::map<std::string, int> layer_names_;
};

}  // namespace bindery::nn
