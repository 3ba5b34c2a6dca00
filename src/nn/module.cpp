#include "bindery/nn/module.h"

#include <algorithm>
#include <set>
#include <utility>

#include "bindery/error.h"
#include "bindery/logging.h"
#include "core/names.h"

namespace bindery::nn {

namespace {

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// "; closest: 'a', 'b', 'c'" (up to three, nearest first), or a note that there are none.
std::string closest_list(std::string_view wanted, const std::vector<std::string>& candidates) {
  if (candidates.empty()) return "; there are none";
  std::string out = "; closest: ";
  const std::vector<std::string> near = closest_names(wanted, candidates);
  for (size_t i = 0; i < near.size(); ++i) out += (i ? ", '" : "'") + near[i] + "'";
  return out;
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", '" : "'") + names[i] + "'";
  return out;
}

// "module 'layers.0' (Linear)" or "root module (Mlp)", for messages.
std::string describe_module(const Module& m) {
  const std::string full = m.full_name();
  return (full.empty() ? std::string("root module") : "module '" + full + "'") + " (" +
         std::string(m.type_name()) + ")";
}

}  // namespace

Module::Module() = default;
Module::~Module() = default;

std::string Module::full_name() const {
  if (!parent_) return {};
  return join(parent_->full_name(), name_);
}

void Module::check_new_name(const std::string& name) const {
  check(!name.empty(), ErrorCode::kINVALID_ARGUMENT,
        describe_module(*this) + ": cannot register an empty name");
  check(name.find('.') == std::string::npos, ErrorCode::kINVALID_ARGUMENT,
        describe_module(*this) + ": name '" + name + "' contains '.'");
  for (const Entry& e : entries_)
    check(e.name != name, ErrorCode::kINVALID_ARGUMENT,
          describe_module(*this) + ": name '" + name + "' is already registered");
}

void Module::register_module_impl(std::string name, std::unique_ptr<Module> module) {
  check(module != nullptr, ErrorCode::kINVALID_ARGUMENT,
        describe_module(*this) + ": register_module('" + name + "') got a null module");
  check_new_name(name);
  module->parent_ = this;
  module->name_ = name;
  entries_.push_back(Entry{std::move(name), std::move(module), nullptr, nullptr});
}

Parameter& Module::register_parameter(std::string name, Parameter parameter) {
  check_new_name(name);
  auto owned = std::make_unique<Parameter>(std::move(parameter));
  owned->owner_ = this;
  owned->local_name_ = name;
  Parameter* raw = owned.get();
  entries_.push_back(Entry{std::move(name), nullptr, std::move(owned), raw});
  return *raw;
}

Parameter& Module::tie_parameter(std::string name, Parameter& target) {
  if (Entry* e = find_entry(name)) {
    check(e->module == nullptr, ErrorCode::kINVALID_ARGUMENT,
          describe_module(*this) + ": cannot tie '" + name + "', it is a child module");
    if (e->parameter == &target) return target;
    // The replaced parameter's contract (dtype, shape) is what this module's forward expects.
    e->parameter->check_compatible(target.dtype(), target.shape());
    e->owned.reset();
    e->parameter = &target;
    return target;
  }
  check_new_name(name);
  entries_.push_back(Entry{std::move(name), nullptr, nullptr, &target});
  return target;
}

void Module::set_refittable(bool refittable) {
  for (auto& [name, p] : named_parameters()) p.set_refittable(refittable);
}

Module::Entry* Module::find_entry(std::string_view name) {
  for (Entry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

template <class P, class M>
void Module::collect_parameters(M& m, const std::string& prefix, std::vector<Named<P>>& out) {
  for (auto& e : m.entries_) {
    if (e.module) {
      collect_parameters<P>(*e.module, join(prefix, e.name), out);
    } else if (e.owned) {
      out.push_back(Named<P>{join(prefix, e.name), *e.owned});
    }
  }
}

std::vector<Named<Parameter>> Module::named_parameters() {
  std::vector<Named<Parameter>> out;
  collect_parameters<Parameter>(*this, "", out);
  return out;
}

std::vector<Named<const Parameter>> Module::named_parameters() const {
  std::vector<Named<const Parameter>> out;
  collect_parameters<const Parameter>(*this, "", out);
  return out;
}

void Module::collect_modules(const std::string& prefix, std::vector<Named<Module>>& out) {
  for (Entry& e : entries_) {
    if (!e.module) continue;
    const std::string name = join(prefix, e.name);
    out.push_back(Named<Module>{name, *e.module});
    e.module->collect_modules(name, out);
  }
}

std::vector<Named<Module>> Module::named_modules() {
  std::vector<Named<Module>> out{Named<Module>{"", *this}};
  collect_modules("", out);
  return out;
}

std::vector<Named<Module>> Module::named_children() {
  std::vector<Named<Module>> out;
  for (Entry& e : entries_)
    if (e.module) out.push_back(Named<Module>{e.name, *e.module});
  return out;
}

// Every name a lookup accepts, tied aliases included (for "closest" suggestions).
std::vector<std::string> Module::all_parameter_names() const {
  std::vector<std::string> out;
  for (const Entry& e : entries_) {
    if (e.module) {
      for (std::string& n : e.module->all_parameter_names()) out.push_back(join(e.name, n));
    } else {
      out.push_back(e.name);
    }
  }
  return out;
}

Parameter* Module::find_parameter(std::string_view name) {
  Module* m = this;
  for (;;) {
    const size_t dot = name.find('.');
    Entry* e = m->find_entry(name.substr(0, dot));
    if (!e) return nullptr;
    if (dot == std::string_view::npos) return e->module ? nullptr : e->parameter;
    if (!e->module) return nullptr;
    m = e->module.get();
    name.remove_prefix(dot + 1);
  }
}

const Parameter* Module::find_parameter(std::string_view name) const {
  return const_cast<Module*>(this)->find_parameter(name);
}

Parameter& Module::parameter(std::string_view name) {
  if (Parameter* p = find_parameter(name)) return *p;
  throw Error(ErrorCode::kNOT_FOUND, describe_module(*this) + " has no parameter '" +
                                         std::string(name) + "'" +
                                         closest_list(name, all_parameter_names()));
}

const Parameter& Module::parameter(std::string_view name) const {
  return const_cast<Module*>(this)->parameter(name);
}

Module* Module::find_submodule(std::string_view name) {
  Module* m = this;
  while (!name.empty()) {
    const size_t dot = name.find('.');
    Entry* e = m->find_entry(name.substr(0, dot));
    if (!e || !e->module) return nullptr;
    m = e->module.get();
    name = dot == std::string_view::npos ? std::string_view{} : name.substr(dot + 1);
  }
  return m;
}

Module& Module::submodule(std::string_view name) {
  if (Module* m = find_submodule(name)) return *m;
  std::vector<std::string> paths;
  for (auto& [path, child] : named_modules())
    if (!path.empty()) paths.push_back(path);
  throw Error(ErrorCode::kNOT_FOUND, describe_module(*this) + " has no submodule '" +
                                         std::string(name) + "'" + closest_list(name, paths));
}

namespace {

// Throws one kNOT_FOUND listing every missing name.
void check_missing(const Module& m, const std::vector<std::string>& missing, size_t total) {
  if (missing.empty()) return;
  throw Error(ErrorCode::kNOT_FOUND,
              "load_state into " + describe_module(m) + ": " + std::to_string(missing.size()) +
                  " of " + std::to_string(total) + " parameters missing: " + quoted_list(missing));
}

template <class Value>
std::vector<std::string> warn_unused(const Module& m, const std::map<std::string, Value>& state,
                                     const std::vector<Named<Parameter>>& params) {
  std::set<std::string_view> used;
  for (const auto& np : params) used.insert(np.name);
  std::vector<std::string> unused;
  for (const auto& [name, value] : state)
    if (!used.count(name)) unused.push_back(name);
  if (!unused.empty())
    log_warning("load_state into " + describe_module(m) + ": " + std::to_string(unused.size()) +
                " unused weights (no parameter has their name): " + quoted_list(unused));
  return unused;
}

}  // namespace

void Module::load_state(const WeightsLookup& lookup) {
  auto params = named_parameters();
  std::vector<Weights> found(params.size());
  std::vector<std::string> missing;
  for (size_t i = 0; i < params.size(); ++i) {
    std::optional<Weights> w = lookup(params[i].name);
    if (w) {
      found[i] = *w;
    } else {
      missing.push_back(params[i].name);
    }
  }
  check_missing(*this, missing, params.size());
  for (size_t i = 0; i < params.size(); ++i) params[i].value.check_value(found[i]);
  for (size_t i = 0; i < params.size(); ++i) params[i].value.set_value(found[i]);
}

std::vector<std::string> Module::load_state(const std::map<std::string, Weights>& state) {
  load_state([&](const std::string& name) -> std::optional<Weights> {
    auto it = state.find(name);
    if (it == state.end()) return std::nullopt;
    return it->second;
  });
  return warn_unused(*this, state, named_parameters());
}

std::vector<std::string> Module::load_state(std::map<std::string, HostTensor> state) {
  auto params = named_parameters();
  std::vector<HostTensor*> found(params.size(), nullptr);
  std::vector<std::string> missing;
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = state.find(params[i].name);
    if (it == state.end()) {
      missing.push_back(params[i].name);
    } else {
      found[i] = &it->second;
    }
  }
  check_missing(*this, missing, params.size());
  for (size_t i = 0; i < params.size(); ++i) params[i].value.check_value(*found[i]);
  for (size_t i = 0; i < params.size(); ++i) params[i].value.set_value(std::move(*found[i]));
  return warn_unused(*this, state, params);
}

Module& ModuleList::operator[](size_t i) const {
  check(i < items_.size(), ErrorCode::kNOT_FOUND,
        describe_module(*this) + " has " + std::to_string(items_.size()) + " modules, index " +
            std::to_string(i) + " is out of range");
  return *items_[i];
}

void ModuleList::throw_wrong_type(size_t i) const {
  const Module& m = (*this)[i];
  throw Error(ErrorCode::kINVALID_ARGUMENT,
              describe_module(*this) + ": module " + std::to_string(i) + " is a " +
                  std::string(m.type_name()) + ", not the type asked for");
}

}  // namespace bindery::nn
