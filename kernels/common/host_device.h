// GANNF_HD: a function both host and device code call (the CUDA kernels, the
// CPU kernels, the tests). Plain `inline` outside nvcc -- also in the host
// emulator's build of the .cu files.
#pragma once

#if defined(__CUDACC__)
#define GANNF_HD __host__ __device__ __forceinline__
#else
#define GANNF_HD inline
#endif
