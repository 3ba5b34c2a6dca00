#include "bindery/error.h"

namespace bindery {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kINVALID_ARGUMENT: return "kINVALID_ARGUMENT";
    case ErrorCode::kINVALID_NETWORK: return "kINVALID_NETWORK";
    case ErrorCode::kNOT_REFITTABLE: return "kNOT_REFITTABLE";
    case ErrorCode::kNOT_FOUND: return "kNOT_FOUND";
    case ErrorCode::kSHAPE_MISMATCH: return "kSHAPE_MISMATCH";
    case ErrorCode::kDTYPE_MISMATCH: return "kDTYPE_MISMATCH";
    case ErrorCode::kCOUNT_MISMATCH: return "kCOUNT_MISMATCH";
    case ErrorCode::kMISSING_WEIGHTS: return "kMISSING_WEIGHTS";
    case ErrorCode::kIDENTICAL_MISMATCH: return "kIDENTICAL_MISMATCH";
    case ErrorCode::kNOT_INVERTIBLE: return "kNOT_INVERTIBLE";
    case ErrorCode::kIO: return "kIO";
    case ErrorCode::kBAD_MAGIC: return "kBAD_MAGIC";
    case ErrorCode::kVERSION_TOO_NEW: return "kVERSION_TOO_NEW";
    case ErrorCode::kTRUNCATED_FILE: return "kTRUNCATED_FILE";
    case ErrorCode::kCHECKSUM_MISMATCH: return "kCHECKSUM_MISMATCH";
    case ErrorCode::kCORRUPT_FILE: return "kCORRUPT_FILE";
    case ErrorCode::kUNSUPPORTED: return "kUNSUPPORTED";
    case ErrorCode::kDEVICE: return "kDEVICE";
    case ErrorCode::kABORTED: return "kABORTED";
    case ErrorCode::kINTERNAL: return "kINTERNAL";
  }
  return "kUNKNOWN";
}

Error::Error(ErrorCode code, const std::string& message)
    : std::runtime_error(std::string(error_code_name(code)) + ": " + message), code_(code) {}

std::string Error::message() const {
  return std::string(what()).substr(error_code_name(code_).size() + 2);
}

}  // namespace bindery
