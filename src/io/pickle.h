#pragma once
// A restricted unpickler for the data.pkl of torch.save archives. It never executes anything:
// it interprets the opcodes of pickle protocols 2-5 that state dicts use and builds a
// PickleValue tree (io/pickle_value.h); the few globals it allows (io/pickle_globals.h) are
// implemented here in C++, everything else is refused by name.
//
// Supported opcodes: PROTO FRAME STOP MARK POP POP_MARK DUP, EMPTY_DICT EMPTY_LIST EMPTY_TUPLE
// EMPTY_SET TUPLE TUPLE1 TUPLE2 TUPLE3 LIST DICT FROZENSET APPEND APPENDS SETITEM SETITEMS
// ADDITEMS, NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 LONG4 (up to 64 bits) BINFLOAT,
// BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINSTRING SHORT_BINSTRING (str, UTF-8),
// BINBYTES SHORT_BINBYTES BINBYTES8, BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET,
// GLOBAL STACK_GLOBAL REDUCE BUILD NEWOBJ (allowed globals only), BINPERSID (torch storages).
// Other pickle opcodes (the text opcodes of protocol 0, INST, OBJ, EXT*, PERSID, NEWOBJ_EX,
// BYTEARRAY8, out-of-band buffers) are kUNSUPPORTED; a byte that is no opcode is kCORRUPT_FILE.
//
// Hostile input: every failure is a bindery::Error whose message names the stream (`origin`),
// the opcode and its byte offset: stack underflow, a missing MARK, a memo index never stored,
// lengths past the end, a stream without STOP, unhashable dict keys, invalid UTF-8 and the
// limits below are kCORRUPT_FILE; forbidden globals and unsupported constructs kUNSUPPORTED.
// Work is linear in the input: nothing is ever copied, shared values are shared pointers.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "io/pickle_value.h"

namespace bindery::io {

/// The bytes of a storage record, as the torch layer found them in the archive.
struct StorageRecord {
  const std::byte* data = nullptr;  // may be null when size is 0
  uint64_t size = 0;
  int64_t file_offset = -1;  // offset of data in the file; -1 when not a plain file region
};

/// Called for each BINPERSID ('storage', type, key, location, numel) with the key. Returns the
/// record or throws a bindery::Error naming the key (a missing record). The unpickler then
/// checks that the record holds numel elements of the storage's type.
using StorageResolver = std::function<StorageRecord(const std::string& key)>;

struct UnpickleLimits {
  size_t max_values = size_t{1} << 24;  // values built (each opcode builds at most one)
  size_t max_pushes = size_t{1} << 27;  // stack pushes (bounds the references held)
  size_t max_mark_depth = 1024;         // MARKs open at once
  size_t max_rank = 64;                 // dimensions of a tensor
};

/// The result of one unpickling: the root value and the arena that owns every value.
struct Unpickled {
  std::unique_ptr<PickleArena> arena;
  const PickleValue* root = nullptr;
};

/// Unpickles `bytes` (not retained). `origin` names the stream in errors, e.g.
/// "'model.pt' (archive/data.pkl)". Thread-safe if `resolve` is; the result's storages point
/// at the memory the resolver returned.
Unpickled unpickle(std::span<const std::byte> bytes, const StorageResolver& resolve,
                   const std::string& origin, const UnpickleLimits& limits = {});

}  // namespace bindery::io
