// What this build can run: whether its kernels have code for the current GPU,
// and which architectures it carries (the CUDA side of kernels/cpu's
// blas_runtime, which says which BLAS kernels run).
#include <string>

#include "common.cuh"

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

#ifndef GANNF_CUDA_EMULATE
namespace {
__global__ void probe_kernel(int* p) {
  if (p) *p = 1;
}
}  // namespace
#endif

cudaError_t kernel_image_status() {
#ifdef GANNF_CUDA_EMULATE
  return cudaSuccess;
#else
  // Fails with cudaErrorNoKernelImageForDevice (or cudaErrorInvalidDeviceFunction)
  // when the binary holds neither machine code for this GPU nor PTX it can JIT.
  cudaFuncAttributes attr;
  const cudaError_t e = cudaFuncGetAttributes(&attr, probe_kernel);
  if (e != cudaSuccess) (void)cudaGetLastError();  // not sticky; clear it
  return e;
#endif
}

std::string compiled_architectures() {
#if defined(GANNF_CUDA_EMULATE)
  return "host emulator";
#elif defined(__CUDA_ARCH_LIST__)
  // e.g. 750,800,860,890,900 (nvcc defines it from the -gencode list)
  const int archs[] = {__CUDA_ARCH_LIST__};
  std::string s;
  for (int a : archs) s += (s.empty() ? "sm_" : " sm_") + std::to_string(a / 10);
  return s;
#else
  return "unknown";
#endif
}

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
