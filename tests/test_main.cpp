// Shared main for every test binary: fix OpenBLAS's core detection first (see
// kernels/cpu/blas_runtime.h), then run GoogleTest. Exits non-zero on failure.
#include <gtest/gtest.h>

#include "blas_runtime.h"

int main(int argc, char** argv) {
  gannf::cpu::blas_ensure_coretype(argc, argv, /*quiet=*/true);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
