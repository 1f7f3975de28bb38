// GANNF_HD: a function both host and device code call (the CUDA kernels, the
// CPU kernels, the tests). Plain `inline` outside nvcc -- also in the host
// emulator's build of the .cu files.
#pragma once

#if defined(__CUDACC__)
#define GANNF_HD __host__ __device__ __forceinline__
#else
#define GANNF_HD inline
#endif

// a * b rounded on its own, never fused into an FMA with what the caller does
// with it next: nvcc contracts a product and a following add even across
// statements, which would make a fused op differ from the two kernels it
// replaces (the first stores the rounded product). __fmul_rn is CUDA's way
// out. On the host a plain product: the CPU kernels and the emulator compile
// with -ffp-contract=off (GCC's default on aarch64, and on x86-64 with FMA, is
// to contract).
template <class T>
GANNF_HD T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == sizeof(float))
    return __fmul_rn(a, b);
  else
    return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
