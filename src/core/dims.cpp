#include "bindery/dims.h"

#include "bindery/error.h"

namespace bindery {

int64_t volume(const Dims& d) {
  int64_t n = 1;
  for (int64_t x : d) {
    check(x >= 0, ErrorCode::kINVALID_ARGUMENT,
          "volume of dynamic or negative dims " + to_string(d));
    n *= x;
  }
  return n;
}

bool is_dynamic(const Dims& d) {
  for (int64_t x : d)
    if (x < 0) return true;
  return false;
}

std::string to_string(const Dims& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(d[i]);
  }
  return s + "]";
}

std::vector<int64_t> contiguous_strides(const Dims& d) {
  std::vector<int64_t> s(d.size(), 1);
  for (int i = static_cast<int>(d.size()) - 2; i >= 0; --i) s[i] = s[i + 1] * d[i + 1];
  return s;
}

}  // namespace bindery
