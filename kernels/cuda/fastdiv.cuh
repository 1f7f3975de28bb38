// Division by a run-time constant through a multiply-high and two shifts
// (Granlund & Montgomery 1994, fig. 4.1): exact for every 32-bit numerator and
// divisor >= 1. The kernels' index arithmetic (im2col's (c, kh, kw) and
// (b, h, w) decompositions) divides by sizes known only at launch; an integer
// division is ~20 instructions on a GPU, this is 4.
//
// Host and device code alike: the tests check it on the host.
#pragma once
#include <cstdint>

#include "host_device.h"

namespace gannf::cuda {

struct FastDiv {
  uint32_t d = 1, mul = 1, s1 = 0, s2 = 0;

  FastDiv() = default;
  explicit FastDiv(uint32_t divisor) : d(divisor ? divisor : 1) {
    uint32_t l = 0;
    while (l < 32 && ((uint64_t)1 << l) < d) l++;  // l = ceil(log2 d)
    mul = (uint32_t)((((uint64_t)1 << 32) * (((uint64_t)1 << l) - d)) / d + 1);
    s1 = l < 1 ? l : 1;
    s2 = l > 1 ? l - 1 : 0;
  }
  GANNF_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t t = __umulhi(mul, n);
#else
    const uint32_t t = (uint32_t)(((uint64_t)mul * n) >> 32);
#endif
    return (t + ((n - t) >> s1)) >> s2;
  }
  // q = n / d, r = n % d
  GANNF_HD uint32_t divmod(uint32_t n, uint32_t& r) const {
    const uint32_t q = div(n);
    r = n - q * d;
    return q;
  }
};

}  // namespace gannf::cuda
