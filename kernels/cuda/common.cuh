// What every .cu file of kernels/cuda shares: the launch helper (which is also
// the switch to the host emulator), grid sizing, and the fixed-order block
// reduction that makes the reductions deterministic.
#pragma once
#include <algorithm>
#include <cstddef>

#include "fastdiv.cuh"
#include "ops.cuh"

#ifndef GANNF_CUDA_EMULATE
#include <cuda_runtime.h>
#endif

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

#ifdef GANNF_CUDA_EMULATE
using namespace ::gannf::emu;
// The emulator runs each block's threads one after another: a grid-stride
// loop over few blocks does the same work with far fewer thread start-ups.
constexpr unsigned kMaxElementwiseBlocks = 2;
#else
// Grid-stride loops: enough blocks to fill any current GPU several times over
// (132 SMs x 2048 threads / 256 = 1056 blocks resident on an H100).
constexpr unsigned kMaxElementwiseBlocks = 2048;
#endif

// Blocks for an elementwise kernel of `threads` threads, each taking at least
// `per_thread` elements.
inline unsigned elementwise_blocks(size_t n, unsigned threads, unsigned per_thread = 4) {
  const size_t per_block = (size_t)threads * per_thread;
  const size_t b = (n + per_block - 1) / per_block;
  return (unsigned)std::max<size_t>(1, std::min<size_t>(b, kMaxElementwiseBlocks));
}

// Launches kernel<<<grid, block, 0, stream>>>(args...) and checks the launch.
// Every kernel of this folder starts here, which is where the emulator build
// takes over.
template <class... P, class... A>
void launch(const char* what, void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t stream,
            A... args) {
#ifdef GANNF_CUDA_EMULATE
  (void)stream;
  // (By value: a launch recorded for a graph runs after the caller returns.)
  ::gannf::emu::launch_or_record(grid, block, [=] { kernel(args...); });
#else
  kernel<<<grid, block, 0, stream>>>(args...);
#endif
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    cuda_fail(e, what, __FILE__, __LINE__,
              "kernel launch (an earlier kernel may have faulted: rerun with "
              "CUDA_LAUNCH_BLOCKING=1 to find which)");
}

// Sum of v over the block, the same on every run: a shuffle tree inside each
// warp, then warp 0 sums the warps' results in warp order. Every thread gets
// the total. `sh` holds 32 doubles of shared memory, reused after a barrier.
template <int THREADS>
__device__ __forceinline__ double block_sum(double v, double* sh) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps, at most 1024 threads");
  constexpr int kWarps = THREADS / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? sh[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    // Every lane read its slot before the shuffles, which lane 0 cannot pass
    // alone, so slot 0 is free to take the total.
    if (lane == 0) sh[0] = v;
  }
  __syncthreads();
  const double total = sh[0];
  __syncthreads();  // sh may be written again by the next reduction
  return total;
}

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
