// One number into a string through a printf format ("%.1f", "%g"), for the
// progress and log lines of every program.
#pragma once
#include <cstdio>
#include <string>

namespace gannf {

inline std::string fmt(const char* format, double v) {
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

}  // namespace gannf
