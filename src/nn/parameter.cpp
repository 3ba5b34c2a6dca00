#include "bindery/nn/parameter.h"

#include <utility>

#include "bindery/error.h"
#include "bindery/nn/module.h"

namespace bindery::nn {

namespace {
std::string type_string(DataType dtype, const Dims& shape) {
  return std::string(dtype_name(dtype)) + to_string(shape);
}
}  // namespace

Parameter::Parameter(Dims shape, DataType dtype) : shape_(std::move(shape)), dtype_(dtype) {
  for (int64_t d : shape_)
    check(d >= 0, ErrorCode::kINVALID_ARGUMENT,
          "parameter shape must be static and non-negative, got " + to_string(shape_));
}

// Registration (owner_, local_name_) stays with the module's slot: a moved-to parameter is a
// fresh, unregistered one, so an owner never sees a parameter it did not register.
Parameter::Parameter(Parameter&& o) noexcept
    : shape_(std::move(o.shape_)),
      dtype_(o.dtype_),
      refittable_(o.refittable_),
      has_value_(std::exchange(o.has_value_, false)),
      view_(std::exchange(o.view_, Weights{})),
      owned_(std::move(o.owned_)) {}

Parameter& Parameter::operator=(Parameter&& o) noexcept {
  if (this != &o) {
    shape_ = std::move(o.shape_);
    dtype_ = o.dtype_;
    refittable_ = o.refittable_;
    has_value_ = std::exchange(o.has_value_, false);
    view_ = std::exchange(o.view_, Weights{});
    owned_ = std::move(o.owned_);
  }
  return *this;
}

Parameter::~Parameter() = default;

int64_t Parameter::count() const { return volume(shape_); }

std::string Parameter::name() const {
  if (!owner_) return local_name_;
  std::string prefix = owner_->full_name();
  return prefix.empty() ? local_name_ : prefix + "." + local_name_;
}

std::string Parameter::display_name() const {
  std::string n = name();
  return n.empty() ? "(unregistered)" : n;
}

std::string Parameter::describe_type() const { return type_string(dtype_, shape_); }

void Parameter::check_compatible(DataType dtype, const Dims& shape) const {
  const std::string what = "parameter '" + display_name() + "': expected " + describe_type() +
                           ", got " + type_string(dtype, shape);
  check(dtype == dtype_, ErrorCode::kDTYPE_MISMATCH, what);
  check(shape == shape_, ErrorCode::kSHAPE_MISMATCH, what);
}

void Parameter::check_value(const Weights& w) const {
  check_compatible(w.dtype, w.shape);
  check(w.on_host(), ErrorCode::kDEVICE,
        "parameter '" + display_name() + "': expected a host view, got " + describe(w));
  check(w.values != nullptr || count() == 0, ErrorCode::kINVALID_ARGUMENT,
        "parameter '" + display_name() + "': values are null for " + describe_type());
}

void Parameter::check_value(const HostTensor& t) const {
  check_compatible(t.dtype(), t.shape());
  check(!t.empty() || count() == 0, ErrorCode::kINVALID_ARGUMENT,
        "parameter '" + display_name() + "': the tensor is empty (not allocated)");
}

void Parameter::set_value(const Weights& w) {
  check_value(w);
  // Re-binding a view of our own tensor (p.set_value(p.value())) must not free it.
  if (owned_.empty() || w.values != owned_.data()) owned_ = HostTensor();
  view_ = w;
  has_value_ = true;
}

void Parameter::set_value(HostTensor t) {
  check_value(t);
  owned_ = std::move(t);
  view_ = owned_.view();
  has_value_ = true;
}

void Parameter::clear_value() {
  view_ = Weights{};
  owned_ = HostTensor();
  has_value_ = false;
}

Weights Parameter::value() const {
  check(has_value_, ErrorCode::kINVALID_ARGUMENT,
        "parameter '" + display_name() + "' (" + describe_type() + ") has no value");
  return view_;
}

}  // namespace bindery::nn
