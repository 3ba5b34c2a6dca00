#pragma once
// Builder: turns a Network into a Plan (TensorRT's IBuilder + IBuilderConfig).
//
// Passes, in order, each recording recipes so refit works through all of them:
//   1. weights become slots with identity recipes; non-refittable constant subgraphs fold;
//      transposes/reshapes/casts of refittable weights fold into their recipes
//   2. Conv + BatchNorm fold into the convolution (kFOLD_BN_* recipes: BN stays refittable)
//   3. matmuls sharing an input with weights on the other side fuse into one (concat recipe)
//   4. Conv + activation fuse; an activation constant is baked unless refittable (then the
//      fusion is given up and the build report says so)
//   5. float weights are cast to the requested precision (kFP16 / kBF16; cast recipe)

#include <functional>
#include <memory>
#include <string>

#include "bindery/builder_flags.h"
#include "bindery/network.h"
#include "bindery/plan.h"

namespace bindery {

class BuilderConfig {
 public:
  void set_flag(BuilderFlag f) { flags_.set(f); }
  void clear_flag(BuilderFlag f) { flags_.clear(f); }
  bool get_flag(BuilderFlag f) const { return flags_.has(f); }
  const BuilderFlags& flags() const { return flags_; }
  /// Progress callback for long builds: (what, done, total). Called from the building thread.
  void set_progress(std::function<void(const std::string&, int64_t, int64_t)> cb) {
    progress_ = std::move(cb);
  }
  const auto& progress() const { return progress_; }

 private:
  BuilderFlags flags_;
  std::function<void(const std::string&, int64_t, int64_t)> progress_;
};

class Builder {
 public:
  /// Validates `network` (Error kINVALID_NETWORK naming the layer) and builds a plan. The
  /// network's borrowed weights are read during the call only.
  Plan build(const Network& network, const BuilderConfig& config) const;
};

}  // namespace bindery
