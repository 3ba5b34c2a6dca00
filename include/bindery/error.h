#pragma once
// bindery::Error: the one exception type the library throws. Every message names the object
// (weight, tensor, layer, file), what was expected and what was found.

#include <stdexcept>
#include <string>
#include <string_view>

namespace bindery {

enum class ErrorCode {
  // invalid argument
  kINVALID_ARGUMENT = 100,
  kINVALID_NETWORK,  // a Network that fails validation at build (names the layer)
  kNOT_REFITTABLE,   // weight exists but the engine cannot refit it
  // not found
  kNOT_FOUND = 200,  // a weight, tensor, layer or file name that does not exist
  // shape and type
  kSHAPE_MISMATCH = 300,
  kDTYPE_MISMATCH,
  kCOUNT_MISMATCH,  // element count disagrees with the shape/prototype
  // refit state
  kMISSING_WEIGHTS = 400,  // refit() called while some weights are still missing
  kIDENTICAL_MISMATCH,     // kREFIT_IDENTICAL plan given data that differs from the build
  kNOT_INVERTIBLE,         // get_named_weights on a recipe that cannot be inverted
  // files
  kIO = 500,           // open/read/write failed
  kBAD_MAGIC,          // not a bindery plan (foreign file)
  kVERSION_TOO_NEW,    // plan written by a newer format version
  kTRUNCATED_FILE,     // file shorter than its header says
  kCHECKSUM_MISMATCH,  // a section's checksum does not match (bit flips, corruption)
  kCORRUPT_FILE,       // structurally invalid content with a valid checksum
  // other
  kUNSUPPORTED = 600,
  kDEVICE = 700,
  kABORTED = 800,  // a collective of a tensor-parallel group failed because another rank did
  kINTERNAL = 900,
};

/// Stable name of an error code, e.g. "kSHAPE_MISMATCH".
std::string_view error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const noexcept { return code_; }
  /// what() without the code's name in front: for wrapping the error in another.
  std::string message() const;

 private:
  ErrorCode code_;
};

/// Throws Error(code, message) unless `condition` holds. Keeps call sites one line.
inline void check(bool condition, ErrorCode code, const std::string& message) {
  if (!condition) throw Error(code, message);
}

}  // namespace bindery
