// Builds without the CUDA kernels: engines run on the CPU only.

#include "bindery/error.h"
#include "bindery/gemm_tactics.h"
#include "runtime/device_runner.h"

namespace bindery {

namespace {
[[noreturn]] void no_backend(Device device) {
  throw Error(ErrorCode::kDEVICE, "cannot run on " + device.to_string() +
                                      ": this build has no CUDA backend (configure with the CUDA "
                                      "toolkit and nvcc to build it)");
}
}  // namespace

std::unique_ptr<DeviceSlots> make_device_slots(Device device, const PlanMetadata&) {
  no_backend(device);
}
std::unique_ptr<DeviceRunner> make_device_runner(Device device, const PlanMetadata&,
                                                 const DeviceSlots&) {
  no_backend(device);
}

TacticReport select_gemm_tactics(Plan&, Device device, const TacticOptions&) { no_backend(device); }

}  // namespace bindery
