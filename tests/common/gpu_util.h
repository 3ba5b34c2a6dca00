#pragma once
// GPU tests skip themselves, saying why, where no GPU is visible (CI, the build machine).

#include <gtest/gtest.h>

#include "core/device_memory.h"

#define REQUIRE_GPU()             \
  if (!bindery::cuda_available()) \
  GTEST_SKIP() << "no GPU here (" << bindery::cuda_unavailable_reason() << "): GPU test skipped"
