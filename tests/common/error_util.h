#pragma once
// What a call throws, for tests of error paths.

#include <gtest/gtest.h>

#include <string>

#include "bindery/error.h"

namespace bindery::testing {

/// The code of the bindery::Error `fn` throws (its message into `message` when given); a test
/// failure and kINTERNAL when it throws nothing.
template <class Fn>
ErrorCode error_of(Fn&& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  ADD_FAILURE() << "no bindery::Error thrown";
  return ErrorCode::kINTERNAL;
}

}  // namespace bindery::testing
