#pragma once
// nn::Parameter: one named weight of a model definition (TensorRT-LLM's `Parameter`). It has a
// fixed, static shape and a dtype, and may be bound to values: either a borrowed host view
// (set_value(const Weights&)) or an owned host tensor (set_value(HostTensor)). When a module is
// emitted into a Network, each parameter becomes one constant whose weights name is the
// parameter's full dotted name (e.g. "layers.0.attn.qkv.weight"), marked refittable unless
// set_refittable(false) was called.
//
// A Parameter is move-only. Once registered in a Module (Module::register_parameter) it lives at
// a stable address owned by that module, and its name is derived from where the module sits in
// its tree. Not thread-safe: bind and emit one model from one thread at a time.

#include <string>

#include "bindery/dims.h"
#include "bindery/dtype.h"
#include "bindery/weights.h"

namespace bindery::nn {

class Module;

class Parameter {
 public:
  /// A scalar f32 parameter with no value (mostly useful as a moved-to placeholder).
  Parameter() = default;
  /// A parameter of `shape` and `dtype`, with no value yet, refittable.
  /// Throws Error(kINVALID_ARGUMENT) if `shape` has a dynamic (kDYNAMIC) or negative dimension.
  explicit Parameter(Dims shape, DataType dtype = DataType::kFLOAT);

  /// Moving transfers shape, dtype, value and the refittable flag, but not the registration:
  /// the moved-to parameter is unregistered (no owner, no name) until registered again.
  Parameter(Parameter&& other) noexcept;
  Parameter& operator=(Parameter&& other) noexcept;
  Parameter(const Parameter&) = delete;
  Parameter& operator=(const Parameter&) = delete;
  ~Parameter();

  const Dims& shape() const { return shape_; }
  DataType dtype() const { return dtype_; }
  /// Number of elements of shape().
  int64_t count() const;

  /// Full dotted name from the root of the module tree this parameter is registered in, e.g.
  /// "layers.0.attn.qkv.weight" (its local name alone when its module is the root). Empty for an
  /// unregistered parameter. Computed on each call: it follows the module being re-parented.
  std::string name() const;
  /// Name under which the owning module registered it ("weight"); empty if unregistered.
  const std::string& local_name() const { return local_name_; }
  /// The module that registered (owns) this parameter, or nullptr.
  Module* owner() const { return owner_; }

  /// Binds a borrowed host view. The memory is not copied: the caller keeps it alive and
  /// unchanged for as long as this parameter holds it and, once emitted, until Builder::build
  /// returns. Replaces (and frees, if owned) any previous value. Strong guarantee: on failure the
  /// parameter is unchanged.
  /// Throws Error(kDTYPE_MISMATCH) if `w.dtype` differs, Error(kSHAPE_MISMATCH) if `w.shape`
  /// differs (both messages read "parameter 'NAME': expected f32[4, 8], got f32[8, 4]"),
  /// Error(kDEVICE) if `w` is not host memory, Error(kINVALID_ARGUMENT) if `w.values` is null
  /// while the shape has elements.
  void set_value(const Weights& w);
  /// Takes ownership of `t`. Same checks and errors as set_value(const Weights&), plus
  /// Error(kINVALID_ARGUMENT) for an empty (unallocated) tensor. On failure `t` is destroyed.
  void set_value(HostTensor t);
  /// Drops the value (frees it if owned). Views already emitted into a Network then dangle.
  void clear_value();

  bool has_value() const { return has_value_; }
  /// True if the value is an owned HostTensor (set_value(HostTensor)).
  bool owns_value() const { return !owned_.empty(); }
  /// A view of the bound values (borrowed: valid until the value is replaced or cleared, or the
  /// parameter is destroyed). Throws Error(kINVALID_ARGUMENT) naming the parameter if unbound.
  Weights value() const;

  /// Whether emission marks this parameter's constant refittable (Network::
  /// mark_weights_refittable, which matters under BuilderFlag::kREFIT_INDIVIDUAL). Default true.
  bool refittable() const { return refittable_; }
  void set_refittable(bool refittable) { refittable_ = refittable; }

  /// "f32[4, 8]": dtype and shape, as used in messages.
  std::string describe_type() const;
  /// The name for messages: name(), or "(unregistered)" when empty.
  std::string display_name() const;

 private:
  friend class Module;
  void check_compatible(DataType dtype, const Dims& shape) const;
  // Every check of set_value, without binding (Module::load_state validates all first).
  void check_value(const Weights& w) const;
  void check_value(const HostTensor& t) const;

  Dims shape_;
  DataType dtype_ = DataType::kFLOAT;
  bool refittable_ = true;
  bool has_value_ = false;
  Weights view_;      // the bound values (a view of owned_ when owned)
  HostTensor owned_;  // empty unless the value is owned
  Module* owner_ = nullptr;
  std::string local_name_;
};

}  // namespace bindery::nn
