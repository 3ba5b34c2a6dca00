#pragma once
// nn::Module: a node of a model definition tree (TensorRT-LLM's / PyTorch's Module). A module
// owns its parameters and child modules, both registered under a local name; the dotted path
// from the root names every parameter ("layers.0.attn.qkv.weight"), which is the name of the
// weights it becomes in a Network and the name a checkpoint is bound by (load_state).
//
// Subclasses register their parameters and children in their constructor and add a forward
// method that emits layers through an nn::Emitter (see emitter.h and layers.h):
//
//   struct Mlp : nn::Module {
//     Mlp(int64_t d, int64_t h) {
//       fc1 = register_module("fc1", std::make_unique<nn::Linear>(d, h));
//       fc2 = register_module("fc2", std::make_unique<nn::Linear>(h, d));
//     }
//     Tensor* forward(nn::Emitter& em, Tensor* x) {
//       x = em.network().add_unary(fc1->forward(em, x), UnaryOp::kRELU)->output(0);
//       return fc2->forward(em, x);
//     }
//     nn::Linear* fc1; nn::Linear* fc2;  // owned by this module
//   };
//
// Modules are neither copyable nor movable: children point at their parent, so a module stays
// where it was constructed (make one with std::make_unique, or on the stack as a root).
// Not thread-safe: build, bind and emit one tree from one thread at a time.

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bindery/nn/parameter.h"
#include "bindery/weights.h"

namespace bindery::nn {

/// One (name, object) pair yielded by Module::named_parameters() / named_modules(). The reference
/// is owned by the module tree and valid while the tree is alive and unchanged.
template <class T>
struct Named {
  std::string name;
  T& value;
};

/// Looks a source weight up by the parameter's dotted name (relative to the module load_state is
/// called on); nullopt when the source has no such weight. The returned view must satisfy
/// Parameter::set_value(const Weights&): the memory is borrowed, not copied.
using WeightsLookup = std::function<std::optional<Weights>(const std::string& name)>;

class Module {
 public:
  Module();
  virtual ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  Module(Module&&) = delete;
  Module& operator=(Module&&) = delete;

  /// Short type name for messages ("Linear", "ModuleList"); "Module" unless overridden.
  virtual std::string_view type_name() const { return "Module"; }

  // ---- the tree ----
  /// Name under which the parent registered this module; empty for a root.
  const std::string& name() const { return name_; }
  /// Dotted path from the root ("layers.0.attn"); empty for the root itself.
  std::string full_name() const;
  /// The module this one is registered in, or nullptr for a root.
  Module* parent() const { return parent_; }

  /// Registers `module` as a child named `name` and takes ownership; returns it, typed (the
  /// pointer is owned by this module and lives as long as it). Children and parameters share one
  /// namespace per module and keep their registration order.
  /// Throws Error(kINVALID_ARGUMENT) if `module` is null, `name` is empty, contains '.', or is
  /// already used in this module.
  template <class M>
  M* register_module(std::string name, std::unique_ptr<M> module) {
    Module* raw = module.get();
    register_module_impl(std::move(name), std::unique_ptr<Module>(std::move(module)));
    return static_cast<M*>(raw);
  }

  /// Registers `parameter` under `name` and takes ownership; returns it at its final, stable
  /// address (owned by this module). Throws Error(kINVALID_ARGUMENT) for an empty name, a name
  /// with '.', or a name already used in this module.
  Parameter& register_parameter(std::string name, Parameter parameter);

  /// Ties `name` to a parameter owned elsewhere in the tree (weight sharing, e.g. an LM head
  /// tied to the token embedding): lookups of `name` here return `target`. If `name` is a
  /// parameter this module owns, that parameter is destroyed and replaced; `target` must then
  /// have its dtype and shape (Error(kDTYPE_MISMATCH / kSHAPE_MISMATCH) otherwise). A tied name is
  /// an alias: named_parameters() and load_state() skip it (the owner lists and binds the
  /// parameter), and emission adds the shared constant once, under the owner's name. `target`
  /// is borrowed and must outlive this module. References to a replaced parameter dangle. Throws
  /// Error(kINVALID_ARGUMENT) for a bad name or a name used by a child module. Returns `target`.
  Parameter& tie_parameter(std::string name, Parameter& target);

  /// Sets the refittable flag of every parameter this module (and its descendants) own.
  void set_refittable(bool refittable);

  // ---- lookup and iteration (names are relative to this module) ----
  /// Every parameter this module and its descendants own, depth first in registration order
  /// (a child's parameters come where the child was registered), named by the dotted path from
  /// this module. Tied aliases are skipped. For the root, names equal Parameter::name().
  std::vector<Named<Parameter>> named_parameters();
  std::vector<Named<const Parameter>> named_parameters() const;
  /// This module (name "") and every descendant, preorder in registration order, with dotted
  /// paths relative to this module ("layers", "layers.0", "layers.0.attn", ...).
  std::vector<Named<Module>> named_modules();
  /// Direct children in registration order, with their local names.
  std::vector<Named<Module>> named_children();

  /// The parameter at dotted path `name` (relative to this module; tied aliases resolve to their
  /// target). Throws Error(kNOT_FOUND) naming `name` and up to three closest existing names.
  Parameter& parameter(std::string_view name);
  const Parameter& parameter(std::string_view name) const;
  /// nullptr instead of throwing.
  Parameter* find_parameter(std::string_view name);
  const Parameter* find_parameter(std::string_view name) const;
  /// The descendant module at dotted path `name` ("" is this module). Throws Error(kNOT_FOUND)
  /// naming it and the closest module paths.
  Module& submodule(std::string_view name);
  Module* find_submodule(std::string_view name);

  // ---- binding values ----
  /// Binds every parameter of named_parameters() to `state[name]` (borrowed views: see
  /// Parameter::set_value). All-or-nothing: everything is checked before anything is bound, so
  /// on failure no parameter changes. Throws Error(kNOT_FOUND) listing ALL missing names in one
  /// message, or the first Parameter::set_value error (kDTYPE_MISMATCH, kSHAPE_MISMATCH, ...)
  /// naming the parameter. Names in `state` that match no parameter are reported in one
  /// bindery::log_warning message and returned (sorted); they are not an error.
  std::vector<std::string> load_state(const std::map<std::string, Weights>& state);
  /// Same, taking ownership of the tensors that are bound (Parameter::set_value(HostTensor)).
  /// Unused tensors are freed. On failure nothing is bound and every tensor is freed.
  std::vector<std::string> load_state(std::map<std::string, HostTensor> state);
  /// Same, asking `lookup` once per parameter name (in named_parameters() order). Unused names
  /// cannot be known here, so nothing is warned and nothing is returned.
  void load_state(const WeightsLookup& lookup);

 private:
  struct Entry {
    std::string name;
    std::unique_ptr<Module> module;    // set for a child module
    std::unique_ptr<Parameter> owned;  // set for a parameter this module owns
    Parameter* parameter = nullptr;    // owned.get(), or a tied parameter owned elsewhere
  };

  void register_module_impl(std::string name, std::unique_ptr<Module> module);
  void check_new_name(const std::string& name) const;
  Entry* find_entry(std::string_view name);
  template <class P, class M>
  static void collect_parameters(M& m, const std::string& prefix, std::vector<Named<P>>& out);
  void collect_modules(const std::string& prefix, std::vector<Named<Module>>& out);
  std::vector<std::string> all_parameter_names() const;

  std::string name_;
  Module* parent_ = nullptr;
  std::vector<Entry> entries_;
};

/// A list of child modules named "0", "1", "2", ... in append order (PyTorch's ModuleList), so
/// its parameters are named "layers.0.attn.qkv.weight" when registered as "layers".
/// Use append() to add children; register_module with other names breaks the numbering (the
/// list only counts modules added through append()).
class ModuleList : public Module {
 public:
  ModuleList() = default;
  std::string_view type_name() const override { return "ModuleList"; }

  /// Appends `module` under the name std::to_string(size()); returns it, typed (owned by the
  /// list). Throws Error(kINVALID_ARGUMENT) if `module` is null.
  template <class M>
  M* append(std::unique_ptr<M> module) {
    M* raw = register_module(std::to_string(items_.size()), std::move(module));
    items_.push_back(raw);
    return raw;
  }

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  /// The i-th module. Throws Error(kNOT_FOUND) if `i >= size()`.
  Module& operator[](size_t i) const;
  /// The i-th module as M. Throws Error(kNOT_FOUND) if out of range, Error(kINVALID_ARGUMENT)
  /// if it is not an M.
  template <class M>
  M& at(size_t i) const {
    M* m = dynamic_cast<M*>(&(*this)[i]);
    if (!m) throw_wrong_type(i);
    return *m;
  }
  /// Iterates the modules (Module*) in order.
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  [[noreturn]] void throw_wrong_type(size_t i) const;
  std::vector<Module*> items_;
};

}  // namespace bindery::nn
