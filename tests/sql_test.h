// What the database tests share besides the cluster harness: the SQLSTATE a
// call fails with, and blob contents.
#pragma once
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "pg.h"

namespace gannf::test {

// The SQLSTATE of the pg::Error that f throws, or "(no error)".
inline std::string sqlstate_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const pg::Error& e) {
    return e.sqlstate();
  }
  return "(no error)";
}

// n floats uniform in [-1, 1), the same for the same seed.
inline std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = std::uniform_real_distribution<float>(-1.f, 1.f)(rng);
  return v;
}

}  // namespace gannf::test
