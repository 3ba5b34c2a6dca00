#include "io/pickle_value.h"

#include <cmath>
#include <cstring>
#include <functional>

namespace bindery::io {

namespace {

// Python compares numbers by value across bool, int and float (hash(1) == hash(1.0) ==
// hash(True)); keys are brought to one form first: an integral float in int64 range becomes
// an int, anything else stays a float.
struct NumberKey {
  bool is_int;
  int64_t i;
  double f;
};

NumberKey number_key(const PickleValue& v) {
  if (v.kind != PickleKind::kFLOAT) return {true, v.integer, 0};
  const double f = v.real;
  // 2^63 is exactly representable; every integral double in [-2^63, 2^63) fits in int64.
  if (std::trunc(f) == f && f >= -9223372036854775808.0 && f < 9223372036854775808.0)
    return {true, static_cast<int64_t>(f), 0};
  return {false, 0, f};
}

bool is_number(PickleKind k) {
  return k == PickleKind::kBOOL || k == PickleKind::kINT || k == PickleKind::kFLOAT;
}

}  // namespace

std::string_view pickle_kind_name(PickleKind k) {
  switch (k) {
    case PickleKind::kNONE: return "NoneType";
    case PickleKind::kBOOL: return "bool";
    case PickleKind::kINT: return "int";
    case PickleKind::kFLOAT: return "float";
    case PickleKind::kSTRING: return "str";
    case PickleKind::kBYTES: return "bytes";
    case PickleKind::kLIST: return "list";
    case PickleKind::kTUPLE: return "tuple";
    case PickleKind::kDICT: return "dict";
    case PickleKind::kSET: return "set";
    case PickleKind::kGLOBAL: return "global";
    case PickleKind::kSTORAGE: return "storage";
    case PickleKind::kTENSOR: return "tensor";
  }
  return "?";
}

bool is_hashable_scalar(const PickleValue& v) {
  return v.kind == PickleKind::kNONE || is_number(v.kind) || v.kind == PickleKind::kSTRING ||
         v.kind == PickleKind::kBYTES;
}

size_t PickleDict::KeyHash::operator()(const PickleValue* v) const {
  if (v->hash != 0) return v->hash;
  size_t h = 0;
  if (is_number(v->kind)) {
    const NumberKey n = number_key(*v);
    h = n.is_int ? std::hash<int64_t>{}(n.i) : std::hash<double>{}(n.f) ^ 0x9e3779b97f4a7c15ull;
  } else if (v->kind == PickleKind::kSTRING || v->kind == PickleKind::kBYTES) {
    h = std::hash<std::string_view>{}(v->text) ^ static_cast<size_t>(v->kind);
  } else {
    h = 0x5bd1e995u;  // None
  }
  v->hash = h;
  return h;
}

bool PickleDict::KeyEq::operator()(const PickleValue* a, const PickleValue* b) const {
  if (a == b) return true;  // identity first, as Python does (a memoized NaN equals itself)
  if (is_number(a->kind) && is_number(b->kind)) {
    const NumberKey x = number_key(*a), y = number_key(*b);
    return x.is_int == y.is_int && (x.is_int ? x.i == y.i : x.f == y.f);
  }
  if (a->kind != b->kind) return false;
  return a->kind == PickleKind::kNONE || a->text == b->text;
}

void PickleDict::set(PickleValue* key, PickleValue* value) {
  const auto [it, inserted] = index_.try_emplace(key, entries_.size());
  if (inserted) {
    entries_.emplace_back(key, value);
  } else {
    entries_[it->second].second = value;
  }
}

PickleValue* PickleArena::make(PickleKind kind) {
  PickleValue& v = values_.emplace_back();
  v.kind = kind;
  if (kind == PickleKind::kDICT || kind == PickleKind::kSET)
    v.dict = std::make_unique<PickleDict>();
  return &v;
}

}  // namespace bindery::io
