// Helpers shared by the test suites: random tensors, tolerance comparisons.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "rng.h"

namespace gannf::test {

template <class T>
std::vector<T> randn(size_t n, uint64_t seed, double std = 1.0) {
  Rng r(seed);
  std::vector<T> v(n);
  r.fill_normal(v.data(), n, 0.0, std);
  return v;
}

template <class A, class B>
std::vector<A> cast(const std::vector<B>& v) {
  return std::vector<A>(v.begin(), v.end());
}

// |a - ref| <= atol + rtol * |ref| for every element; on failure names the
// tensor and its worst element. A NaN on either side fails (every comparison
// with a NaN is false, so a NaN reference would otherwise pass anything), and
// an infinity passes only against the same infinity.
template <class A, class B>
::testing::AssertionResult close(const std::string& what, const A* a, const B* ref, size_t n,
                                 double rtol, double atol) {
  size_t worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < n; i++) {
    const double x = a[i], r = ref[i];
    double excess = std::fabs(x - r) - (atol + rtol * std::fabs(r));
    if (!std::isfinite(x) || !std::isfinite(r)) excess = x == r ? -1 : INFINITY;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (worst_excess <= 0) return ::testing::AssertionSuccess();
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s: element %zu of %zu is %.9g, expected %.9g (rtol %g, atol %g)",
                what.c_str(), worst, n, (double)a[worst], (double)ref[worst], rtol, atol);
  return ::testing::AssertionFailure() << buf;
}
template <class A, class B>
::testing::AssertionResult close(const std::string& what, const std::vector<A>& a,
                                 const std::vector<B>& ref, double rtol, double atol) {
  if (a.size() != ref.size())
    return ::testing::AssertionFailure()
           << what << ": " << a.size() << " elements, expected " << ref.size();
  return close(what, a.data(), ref.data(), a.size(), rtol, atol);
}

// Largest |x| of a vector: the scale for an absolute floor.
template <class T>
double max_abs(const std::vector<T>& v) {
  double m = 0;
  for (auto x : v) m = std::max(m, std::fabs((double)x));
  return m;
}

}  // namespace gannf::test
