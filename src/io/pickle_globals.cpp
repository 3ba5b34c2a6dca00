#include "io/pickle_globals.h"

#include <algorithm>
#include <array>
#include <cstdio>

namespace bindery::io {

namespace {

struct GlobalEntry {
  std::string_view module;
  std::string_view name;
  PickleGlobal global;
  ElementType dtype = ElementType::kU8;
  bool untyped = false;
};

constexpr std::array<GlobalEntry, 33> kGLOBALS{{
    {"collections", "OrderedDict", PickleGlobal::kORDERED_DICT},
    {"torch._utils", "_rebuild_tensor_v2", PickleGlobal::kREBUILD_TENSOR_V2},
    {"torch._utils", "_rebuild_tensor_v3", PickleGlobal::kREBUILD_TENSOR_V3},
    {"torch._utils", "_rebuild_parameter", PickleGlobal::kREBUILD_PARAMETER},
    {"torch._utils", "_rebuild_parameter_with_state", PickleGlobal::kREBUILD_PARAMETER_WITH_STATE},
    {"torch._tensor", "_rebuild_from_type_v2", PickleGlobal::kREBUILD_FROM_TYPE_V2},
    {"_codecs", "encode", PickleGlobal::kCODECS_ENCODE},
    {"torch", "Size", PickleGlobal::kTORCH_SIZE},
    {"torch", "Tensor", PickleGlobal::kTENSOR_TYPE},
    {"torch.nn.parameter", "Parameter", PickleGlobal::kTENSOR_TYPE},
    {"torch", "DoubleStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kF64},
    {"torch", "FloatStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kF32},
    {"torch", "HalfStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kF16},
    {"torch", "BFloat16Storage", PickleGlobal::kSTORAGE_TYPE, ElementType::kBF16},
    {"torch", "LongStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kI64},
    {"torch", "IntStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kI32},
    {"torch", "ShortStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kI16},
    {"torch", "CharStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kI8},
    {"torch", "ByteStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kU8},
    {"torch", "BoolStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kBOOL},
    {"torch.storage", "UntypedStorage", PickleGlobal::kSTORAGE_TYPE, ElementType::kU8, true},
    {"torch", "float64", PickleGlobal::kDTYPE, ElementType::kF64},
    {"torch", "float32", PickleGlobal::kDTYPE, ElementType::kF32},
    {"torch", "float16", PickleGlobal::kDTYPE, ElementType::kF16},
    {"torch", "bfloat16", PickleGlobal::kDTYPE, ElementType::kBF16},
    {"torch", "float8_e4m3fn", PickleGlobal::kDTYPE, ElementType::kF8_E4M3},
    {"torch", "float8_e5m2", PickleGlobal::kDTYPE, ElementType::kF8_E5M2},
    {"torch", "int64", PickleGlobal::kDTYPE, ElementType::kI64},
    {"torch", "int32", PickleGlobal::kDTYPE, ElementType::kI32},
    {"torch", "int16", PickleGlobal::kDTYPE, ElementType::kI16},
    {"torch", "int8", PickleGlobal::kDTYPE, ElementType::kI8},
    {"torch", "uint8", PickleGlobal::kDTYPE, ElementType::kU8},
    {"torch", "bool", PickleGlobal::kDTYPE, ElementType::kBOOL},
}};

std::string kind_of(const PickleValue& v) {
  return v.kind == PickleKind::kGLOBAL ? v.text : std::string(pickle_kind_name(v.kind));
}

std::string plural(size_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

// The arguments of `fn` must be a tuple of `min`..`max` items.
void expect_args(const PickleValue& args, size_t min, size_t max, std::string_view fn,
                 const PickleSite& site) {
  if (args.kind != PickleKind::kTUPLE)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                std::string(fn) + " called with a " + kind_of(args) + ", expected a tuple");
  const size_t n = args.items.size();
  if (n < min || n > max) {
    std::string expected = std::to_string(min);
    if (max != min) expected.append(" to ").append(std::to_string(max));
    pickle_fail(
        site, ErrorCode::kCORRUPT_FILE,
        std::string(fn) + " called with " + plural(n, "argument") + ", expected " + expected);
  }
}

// A tuple of non-negative ints (a tensor's size or stride).
Dims int_tuple(const PickleValue& v, std::string_view what, std::string_view fn,
               const UnpickleLimits& limits, const PickleSite& site) {
  if (v.kind != PickleKind::kTUPLE)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                std::string(fn) + ": " + std::string(what) + " is a " + kind_of(v) +
                    ", expected a tuple of ints");
  if (v.items.size() > limits.max_rank)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                std::string(fn) + ": " + std::string(what) + " has " +
                    std::to_string(v.items.size()) + " dims, the limit is " +
                    std::to_string(limits.max_rank));
  Dims d;
  for (const PickleValue* x : v.items) {
    if (x->kind != PickleKind::kINT || x->integer < 0)
      pickle_fail(
          site, ErrorCode::kCORRUPT_FILE,
          std::string(fn) + ": " + std::string(what) + " holds " +
              (x->kind == PickleKind::kINT ? std::to_string(x->integer) : "a " + kind_of(*x)) +
              ", expected non-negative ints");
    d.push_back(x->integer);
  }
  return d;
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
// [, metadata]) and _rebuild_tensor_v3(..., backward_hooks, dtype[, metadata]). The view must
// lie inside its storage: offset + sum((size_i - 1) * stride_i) < the storage's elements.
PickleValue* rebuild_tensor(PickleArena& arena, const PickleValue& args, bool v3,
                            const UnpickleLimits& limits, const PickleSite& site) {
  const std::string_view fn = v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2";
  expect_args(args, v3 ? 7 : 6, v3 ? 8 : 7, fn, site);
  const std::vector<PickleValue*>& a = args.items;
  const std::string f(fn);
  if (a[0]->kind != PickleKind::kSTORAGE)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                f + ": the first argument is a " + kind_of(*a[0]) + ", expected a storage");
  const PickleStorage& storage = *a[0]->storage;
  const std::string of = f + " of storage '" + printable(storage.key) + "'";
  if (a[1]->kind != PickleKind::kINT || a[1]->integer < 0)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                of + ": storage_offset is " +
                    (a[1]->kind == PickleKind::kINT ? std::to_string(a[1]->integer)
                                                    : "a " + kind_of(*a[1])) +
                    ", expected a non-negative int");
  auto t = std::make_unique<PickleTensor>();
  t->storage = &storage;
  t->dtype = storage.dtype;
  t->offset = a[1]->integer;
  t->shape = int_tuple(*a[2], "size", of, limits, site);
  t->strides = int_tuple(*a[3], "stride", of, limits, site);
  if (t->shape.size() != t->strides.size())
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                of + ": size " + to_string(t->shape) + " and stride " + to_string(t->strides) +
                    " differ in rank");
  if (a[4]->kind != PickleKind::kBOOL)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                of + ": requires_grad is a " + kind_of(*a[4]) + ", expected a bool");
  if (v3) {
    if (a[6]->kind != PickleKind::kGLOBAL || a[6]->global != PickleGlobal::kDTYPE)
      pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                  of + ": dtype is a " + kind_of(*a[6]) + ", expected a torch dtype");
    t->dtype = a[6]->global_dtype;
  }
  // Bytes the view reaches, with every step overflow-checked.
  const int64_t elsize = element_size(t->dtype);
  const int64_t storage_bytes = storage.numel * element_size(storage.dtype);  // checked at load
  int64_t count = 1, last = t->offset;
  bool overflow = false;
  for (size_t i = 0; i < t->shape.size(); ++i) {
    overflow |= __builtin_mul_overflow(count, t->shape[i], &count);
    int64_t reach = 0;
    if (t->shape[i] > 0) {
      overflow |= __builtin_mul_overflow(t->shape[i] - 1, t->strides[i], &reach);
      overflow |= __builtin_add_overflow(last, reach, &last);
    }
  }
  // An empty view reaches no element; its data pointer may sit at the end of the storage.
  int64_t end_bytes = 0;
  overflow |= __builtin_add_overflow(count == 0 ? t->offset : last, count == 0 ? 0 : 1, &last);
  overflow |= __builtin_mul_overflow(last, elsize, &end_bytes);
  if (overflow || end_bytes > storage_bytes)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                of + ": a " + std::string(element_type_name(t->dtype)) + " view of size " +
                    to_string(t->shape) + ", stride " + to_string(t->strides) + " at offset " +
                    std::to_string(t->offset) + " reaches " +
                    (overflow ? std::string("past 2^63") : std::to_string(end_bytes)) +
                    " bytes, the storage holds " + std::to_string(storage_bytes));
  PickleValue* v = arena.make(PickleKind::kTENSOR);
  v->tensor = std::move(t);
  return v;
}

// _codecs.encode(text, encoding): how protocol 2 writes a bytes object (as its latin-1 text).
PickleValue* codecs_encode(PickleArena& arena, const PickleValue& args, const PickleSite& site) {
  expect_args(args, 2, 2, "_codecs.encode", site);
  const PickleValue& text = *args.items[0];
  const PickleValue& encoding = *args.items[1];
  if (text.kind != PickleKind::kSTRING || encoding.kind != PickleKind::kSTRING)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                "_codecs.encode called with a " + kind_of(text) + " and a " + kind_of(encoding) +
                    ", expected two strings");
  PickleValue* v = arena.make(PickleKind::kBYTES);
  const std::string& e = encoding.text;
  if (e == "utf-8" || e == "utf8") {
    v->text = text.text;
    return v;
  }
  if (e != "latin1" && e != "latin-1" && e != "iso-8859-1")
    pickle_fail(site, ErrorCode::kUNSUPPORTED,
                "_codecs.encode to '" + printable(e) + "' (only latin1 and utf-8 are supported)");
  // The text is valid UTF-8 (checked when read): code points of 1 or 2 bytes up to U+00FF.
  const std::string& t = text.text;
  for (size_t i = 0; i < t.size(); ++i) {
    const auto c = static_cast<unsigned char>(t[i]);
    if (c < 0x80) {
      v->text += static_cast<char>(c);
    } else if ((c == 0xc2 || c == 0xc3) && i + 1 < t.size()) {
      v->text += static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(t[++i]) & 0x3f));
    } else {
      pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                  "_codecs.encode: a character past U+00FF cannot be encoded as latin1");
    }
  }
  return v;
}

}  // namespace

void pickle_fail(const PickleSite& site, ErrorCode code, const std::string& what) {
  throw Error(code, site.origin + ": " + what + " (" + std::string(site.opcode) + " at byte " +
                        std::to_string(site.offset) + ")");
}

std::string printable(std::string_view s, size_t max) {
  std::string out;
  for (const char c : s) {
    if (out.size() >= max) return out + "...";
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && u != '\\') {
      out += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    }
  }
  return out;
}

PickleValue* find_global(PickleArena& arena, std::string_view module, std::string_view name,
                         const PickleSite& site) {
  for (const GlobalEntry& g : kGLOBALS) {
    if (g.module != module || g.name != name) continue;
    PickleValue* v = arena.make(PickleKind::kGLOBAL);
    v->text = std::string(module) + "." + std::string(name);
    v->global = g.global;
    v->global_dtype = g.dtype;
    v->untyped = g.untyped;
    return v;
  }
  // Storage types and dtypes beyond the twelve element types are harmless but unreadable.
  static constexpr std::array<std::string_view, 12> kOTHER_DTYPES{
      "uint16",         "uint32",     "uint64",          "complex32",
      "complex64",      "complex128", "float8_e4m3fnuz", "float8_e5m2fnuz",
      "float8_e8m0fnu", "qint8",      "quint8",          "qint32"};
  if (module == "torch" &&
      ((name.size() > 7 && name.substr(name.size() - 7) == "Storage") ||
       std::find(kOTHER_DTYPES.begin(), kOTHER_DTYPES.end(), name) != kOTHER_DTYPES.end()))
    pickle_fail(site, ErrorCode::kUNSUPPORTED,
                "torch." + printable(name) +
                    ": this element type is not supported (F64, F32, "
                    "F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8 and BOOL are)");
  pickle_fail(site, ErrorCode::kUNSUPPORTED,
              "refusing to load global " + printable(module) + "." + printable(name) +
                  ": only collections.OrderedDict, torch tensor rebuilds, storage types and "
                  "dtypes, torch.Size and _codecs.encode are allowed (the pickle is never "
                  "executed)");
}

PickleValue* call_global(PickleArena& arena, const PickleValue& callable, const PickleValue& args,
                         const UnpickleLimits& limits, const PickleSite& site) {
  if (callable.kind != PickleKind::kGLOBAL)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                "calling a " + kind_of(callable) + ", which is not callable");
  switch (callable.global) {
    case PickleGlobal::kORDERED_DICT: {
      expect_args(args, 0, 1, callable.text, site);
      if (!args.items.empty())
        pickle_fail(site, ErrorCode::kUNSUPPORTED,
                    "collections.OrderedDict called with an argument; only OrderedDict() is "
                    "supported (items follow with SETITEMS)");
      PickleValue* d = arena.make(PickleKind::kDICT);
      d->ordered = true;
      return d;
    }
    case PickleGlobal::kREBUILD_TENSOR_V2:
    case PickleGlobal::kREBUILD_TENSOR_V3:
      return rebuild_tensor(arena, args, callable.global == PickleGlobal::kREBUILD_TENSOR_V3,
                            limits, site);
    case PickleGlobal::kREBUILD_PARAMETER:
    case PickleGlobal::kREBUILD_PARAMETER_WITH_STATE: {
      const size_t n = callable.global == PickleGlobal::kREBUILD_PARAMETER ? 3 : 4;
      expect_args(args, n, n, callable.text, site);
      if (args.items[0]->kind != PickleKind::kTENSOR)
        pickle_fail(
            site, ErrorCode::kCORRUPT_FILE,
            callable.text + ": data is a " + kind_of(*args.items[0]) + ", expected a tensor");
      return args.items[0];  // a Parameter is its tensor; requires_grad, hooks, state unused
    }
    case PickleGlobal::kREBUILD_FROM_TYPE_V2: {
      // (func, new_type, args, state): a tensor with Python attributes (state, ignored).
      // func may only be a tensor rebuild, so this never recurses.
      expect_args(args, 4, 4, callable.text, site);
      const PickleValue& func = *args.items[0];
      const PickleValue& type = *args.items[1];
      if (func.kind != PickleKind::kGLOBAL || (func.global != PickleGlobal::kREBUILD_TENSOR_V2 &&
                                               func.global != PickleGlobal::kREBUILD_TENSOR_V3))
        pickle_fail(site, ErrorCode::kUNSUPPORTED,
                    callable.text + " with function " + kind_of(func) +
                        " (only the torch._utils tensor rebuilds)");
      if (type.kind != PickleKind::kGLOBAL || type.global != PickleGlobal::kTENSOR_TYPE)
        pickle_fail(site, ErrorCode::kUNSUPPORTED,
                    callable.text + " with type " + kind_of(type) +
                        " (only torch.Tensor and torch.nn.parameter.Parameter)");
      return rebuild_tensor(arena, *args.items[2], func.global == PickleGlobal::kREBUILD_TENSOR_V3,
                            limits, site);
    }
    case PickleGlobal::kCODECS_ENCODE: return codecs_encode(arena, args, site);
    case PickleGlobal::kTORCH_SIZE: {  // torch.Size((d0, d1, ...)) -> the tuple
      expect_args(args, 1, 1, callable.text, site);
      (void)int_tuple(*args.items[0], "the shape", callable.text, limits, site);
      return args.items[0];
    }
    case PickleGlobal::kTENSOR_TYPE:
    case PickleGlobal::kSTORAGE_TYPE:
    case PickleGlobal::kDTYPE: break;
  }
  pickle_fail(site, ErrorCode::kUNSUPPORTED,
              "calling " + callable.text + " is not supported (it may only be named)");
}

PickleValue* new_object(PickleArena& arena, const PickleValue& cls, const PickleValue& args,
                        const PickleSite& site) {
  if (cls.kind == PickleKind::kGLOBAL && cls.global == PickleGlobal::kORDERED_DICT &&
      args.kind == PickleKind::kTUPLE && args.items.empty()) {
    PickleValue* d = arena.make(PickleKind::kDICT);
    d->ordered = true;
    return d;
  }
  pickle_fail(site, ErrorCode::kUNSUPPORTED,
              "refusing to instantiate " + kind_of(cls) + " with a " + kind_of(args) +
                  " (only collections.OrderedDict with no arguments)");
}

void build_object(const PickleValue& inst, const PickleValue& state, const PickleSite& site) {
  const auto attributes = [](const PickleValue& s) {
    return s.kind == PickleKind::kNONE || s.kind == PickleKind::kDICT;
  };
  const bool state_ok =
      attributes(state) || (state.kind == PickleKind::kTUPLE && state.items.size() == 2 &&
                            attributes(*state.items[0]) && attributes(*state.items[1]));
  if (inst.kind != PickleKind::kDICT || !inst.ordered)
    pickle_fail(site, ErrorCode::kUNSUPPORTED,
                "setting the state of a " + kind_of(inst) +
                    " is not supported (only an OrderedDict's attributes)");
  if (!state_ok)
    pickle_fail(site, ErrorCode::kUNSUPPORTED,
                "OrderedDict state is a " + kind_of(state) + ", expected a dict of attributes");
}

PickleValue* persistent_load(PickleArena& arena, const PickleValue& pid,
                             const StorageResolver& resolve, const PickleSite& site) {
  const std::vector<PickleValue*>& a = pid.items;
  if (pid.kind != PickleKind::kTUPLE || a.empty() || a[0]->kind != PickleKind::kSTRING)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                "persistent id is a " + kind_of(pid) + ", expected ('storage', ...)");
  if (a[0]->text != "storage")
    pickle_fail(site, ErrorCode::kUNSUPPORTED,
                "persistent id of type '" + printable(a[0]->text) + "', expected 'storage'");
  if (a.size() != 5)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                "persistent id with " + plural(a.size(), "item") +
                    ", expected 5: ('storage', type, key, location, numel)");
  if (a[1]->kind != PickleKind::kGLOBAL || a[1]->global != PickleGlobal::kSTORAGE_TYPE)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                "persistent id names a " + kind_of(*a[1]) + " as storage type");
  if (a[2]->kind != PickleKind::kSTRING || a[3]->kind != PickleKind::kSTRING)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                "persistent id with key " + kind_of(*a[2]) + " and location " + kind_of(*a[3]) +
                    ", expected strings");
  const std::string& key = a[2]->text;
  if (a[4]->kind != PickleKind::kINT || a[4]->integer < 0)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                "storage '" + printable(key) + "': numel is " +
                    (a[4]->kind == PickleKind::kINT ? std::to_string(a[4]->integer)
                                                    : "a " + kind_of(*a[4])) +
                    ", expected a non-negative int");
  auto s = std::make_unique<PickleStorage>();
  s->key = key;
  s->dtype = a[1]->global_dtype;
  s->numel = a[4]->integer;
  const StorageRecord record = resolve(key);
  int64_t bytes = 0;
  if (__builtin_mul_overflow(s->numel, int64_t{element_size(s->dtype)}, &bytes) ||
      static_cast<uint64_t>(bytes) > record.size)
    pickle_fail(site, ErrorCode::kCORRUPT_FILE,
                "storage '" + printable(key) + "' (" + a[1]->text + ") declares " +
                    std::to_string(s->numel) + " elements of " +
                    std::to_string(element_size(s->dtype)) + " bytes, its record holds only " +
                    std::to_string(record.size) + " bytes");
  s->data = record.data;
  s->file_offset = record.file_offset;
  PickleValue* v = arena.make(PickleKind::kSTORAGE);
  v->storage = std::move(s);
  return v;
}

}  // namespace bindery::io
