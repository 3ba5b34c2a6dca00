// Builds without the CUDA kernels have no device transfers; the test hook does nothing.

#include "bindery/error.h"
#include "runtime/gpu/transfer.h"

namespace bindery {

void copy_to_device(Device device, std::span<const DeviceCopy>, const std::string& what) {
  throw Error(ErrorCode::kDEVICE,
              what + ": cannot copy to " + device.to_string() + ": this build has no CUDA backend");
}

void fail_transfer_after_chunks_for_testing(int64_t) {}

}  // namespace bindery
