// Error checks for CUDA runtime calls and kernel launches. Each failure throws
// std::runtime_error with one line: where (file:line), what was called, the
// runtime's own error name and text, and a hint at the likely cause.
//
// Host code only; safe to include from .cpp files compiled by the host compiler.
#pragma once
#include <stdexcept>
#include <string>

#ifdef GANNF_CUDA_EMULATE
#include "emu/emu.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace gannf::cuda {

#ifdef GANNF_CUDA_EMULATE
using namespace ::gannf::emu;
#endif

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* expr, const char* file, int line,
                                   const char* hint) {
  const char* base = file;
  for (const char* p = file; *p; p++)
    if (*p == '/') base = p + 1;
  std::string msg = std::string(base) + ":" + std::to_string(line) + ": " + expr + " failed: " +
                    cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  if (hint && *hint) msg += "; " + std::string(hint);
  throw std::runtime_error(msg);
}

}  // namespace gannf::cuda

// GANNF_CUDA_CHECK(cudaMalloc(&p, n), "the GPU is out of memory: lower --batch")
#define GANNF_CUDA_CHECK(call, hint)                                           \
  do {                                                                         \
    const cudaError_t gannf_err_ = (call);                                     \
    if (gannf_err_ != cudaSuccess)                                             \
      ::gannf::cuda::cuda_fail(gannf_err_, #call, __FILE__, __LINE__, (hint)); \
  } while (0)
// Kernel launches are checked in launch() (common.cuh).
