#pragma once
// The globals a torch state-dict pickle may name, and what REDUCE, NEWOBJ, BUILD and
// BINPERSID do with them. The complete list (module.name):
//   collections.OrderedDict                       OrderedDict() -> empty insertion-ordered dict
//   torch._utils._rebuild_tensor_v2               (storage, offset, size, stride, requires_grad,
//                                                  backward_hooks[, metadata]) -> tensor
//   torch._utils._rebuild_tensor_v3               (..., backward_hooks, dtype[, metadata]) ->
//                                                  tensor of dtype over an untyped storage
//   torch._utils._rebuild_parameter               (tensor, requires_grad, hooks) -> the tensor
//   torch._utils._rebuild_parameter_with_state    (tensor, requires_grad, hooks, state) -> same
//   torch._tensor._rebuild_from_type_v2           (rebuild_tensor_v2/v3, torch.Tensor or
//                                                  torch.nn.parameter.Parameter, args, state)
//                                                  -> the tensor (a tensor with attributes)
//   torch.Tensor, torch.nn.parameter.Parameter    types, in _rebuild_from_type_v2 only
//   torch.Size                                    ((d0, d1, ...),) -> the tuple
//   _codecs.encode                                (str, 'latin1' | 'utf-8') -> bytes (how
//                                                  protocol 2 writes bytes)
//   torch.{Double,Float,Half,BFloat16,Long,Int,Short,Char,Byte,Bool}Storage,
//   torch.storage.UntypedStorage                  storage types, in persistent ids only
//   torch.{float64,float32,float16,bfloat16,float8_e4m3fn,float8_e5m2,int64,int32,int16,int8,
//          uint8,bool}                            dtypes, arguments of _rebuild_tensor_v3 only
// Anything else: kUNSUPPORTED "refusing to load global <module>.<name>".

#include <cstddef>
#include <string>
#include <string_view>

#include "bindery/error.h"
#include "io/pickle.h"
#include "io/pickle_value.h"

namespace bindery::io {

/// Where the unpickler is: the stream, the opcode being run and its byte offset.
struct PickleSite {
  const std::string& origin;
  size_t offset;
  std::string_view opcode;
};
/// Throws Error(code, "<origin>: <what> (<OPCODE> at byte <offset>)").
[[noreturn]] void pickle_fail(const PickleSite& site, ErrorCode code, const std::string& what);
/// `s` with bytes outside printable ASCII escaped (\xNN), cut to about `max` characters.
std::string printable(std::string_view s, size_t max = 120);

/// GLOBAL / STACK_GLOBAL: a kGLOBAL value for an allowed global, else kUNSUPPORTED.
PickleValue* find_global(PickleArena& arena, std::string_view module, std::string_view name,
                         const PickleSite& site);
/// REDUCE: callable(*args).
PickleValue* call_global(PickleArena& arena, const PickleValue& callable, const PickleValue& args,
                         const UnpickleLimits& limits, const PickleSite& site);
/// NEWOBJ: cls.__new__(cls, *args); only OrderedDict with no arguments.
PickleValue* new_object(PickleArena& arena, const PickleValue& cls, const PickleValue& args,
                        const PickleSite& site);
/// BUILD: inst.__setstate__(state); only an OrderedDict's attributes (ignored, e.g. the
/// _metadata of nn.Module.state_dict()).
void build_object(const PickleValue& inst, const PickleValue& state, const PickleSite& site);
/// BINPERSID: ('storage', storage type, key, location, numel) -> a kSTORAGE value whose record
/// `resolve` found and that holds numel elements.
PickleValue* persistent_load(PickleArena& arena, const PickleValue& pid,
                             const StorageResolver& resolve, const PickleSite& site);

}  // namespace bindery::io
