// FP32 -> BF16 copies (to_bf16, ops.cuh): each element rounded as the BF16
// staging passes round it (bf16_bits, mma.cuh: nearest, ties to even). Not on
// the training path: bench_cuda's cuDNN BF16 yardstick casts its FP32 inputs
// with it on every call, as PyTorch's autocast does.
#include "common.cuh"
#include "mma.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

namespace {

constexpr int kThreads = 256;

// Four elements a thread and step: one 16-byte load, one 8-byte store (in 16
// bytes aligned, out 8; launched only then).
__global__ void __launch_bounds__(kThreads)
    to_bf16_x4_kernel(uint64_t* out, const float4* in, size_t n4) {
  for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < n4; i += (size_t)gridDim.x * kThreads) {
    const float4 v = in[i];
    const uint32_t lo = bf16_bits(v.x) | (uint32_t)bf16_bits(v.y) << 16;
    const uint32_t hi = bf16_bits(v.z) | (uint32_t)bf16_bits(v.w) << 16;
    out[i] = lo | (uint64_t)hi << 32;  // little-endian: element 4i in the low bits
  }
}
__global__ void __launch_bounds__(kThreads) to_bf16_kernel(uint16_t* out, const float* in, size_t n) {
  for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < n; i += (size_t)gridDim.x * kThreads)
    out[i] = bf16_bits(in[i]);
}

}  // namespace

void to_bf16(uint16_t* out, const float* in, size_t n, cudaStream_t s) {
  if (!n) return;
  size_t done = 0;
  if ((uintptr_t)in % 16 == 0 && (uintptr_t)out % 8 == 0 && n >= 4) {
    const size_t n4 = n / 4;
    launch("to_bf16", to_bf16_x4_kernel, dim3(elementwise_blocks(n4, kThreads)), dim3(kThreads), s,
           (uint64_t*)out, (const float4*)in, n4);
    done = n4 * 4;
  }
  if (done < n)
    launch("to_bf16 (the rest)", to_bf16_kernel, dim3(elementwise_blocks(n - done, kThreads)),
           dim3(kThreads), s, out + done, in + done, n - done);
}

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
