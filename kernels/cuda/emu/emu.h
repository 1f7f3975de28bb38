// A host emulator of the CUDA execution model, so that the kernels in
// kernels/cuda can run -- slowly, but instruction for instruction the same
// source -- on a machine without a GPU (CI has nvcc but no GPU).
//
// How: every .cu file is also compiled as plain C++ with GANNF_CUDA_EMULATE
// defined (kernels/cuda/CMakeLists.txt generates the wrappers). This header
// then stands in for the CUDA headers: the qualifiers compile away, __shared__
// becomes `static` (blocks run one at a time, so one copy per kernel is the
// block's shared memory), and a launch runs each block's threads as fibers
// on the calling thread. A fiber runs until it blocks at a barrier
// (__syncthreads, a warp shuffle), and the lowest-numbered fiber that can run
// goes next: between two barriers each thread runs to completion before the
// next starts, and low warps race ahead of high ones as far as the barriers
// allow. Both are adversarial for a missing barrier, which therefore shows up
// as a wrong result rather than by luck. A barrier that not every thread
// reaches is reported as a deadlock.
//
// What it cannot tell you: speed, anything about memory coalescing or bank
// conflicts, and device-specific numerics (fast-math intrinsics are not used
// by these kernels, so float results match a GPU up to FMA contraction).
//
// The runtime API subset the back end uses (cudaMalloc, cudaMemcpyAsync, ...)
// is here too, in namespace gannf::emu so that a test binary can hold both the
// real back end and the emulated one without their symbols colliding.
#pragma once
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __syncthreads() ::gannf::emu::syncthreads()

namespace gannf::emu {

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
constexpr int warpSize = 32;

// Set by the scheduler before it resumes each fiber.
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

// Runs body() once per thread of every block of the grid, blocks in order.
void launch(dim3 grid, dim3 block, const std::function<void()>& body);

// Stream capture (CUDA graphs): while a capture is open, launches and the
// runtime's copies and sets are recorded instead of run (their arguments
// copied, as cudaStreamBeginCapture records them), and a graph replays them
// in order. One capture at a time (this emulator has one stream).
bool capturing();
void record(std::function<void()> work);
// A launch: run now, or recorded (body must own copies of its arguments).
inline void launch_or_record(dim3 grid, dim3 block, std::function<void()> body) {
  if (capturing())
    record([grid, block, body] { launch(grid, block, body); });
  else
    launch(grid, block, body);
}
void syncthreads();
// __syncwarp: the calling thread's warp waits for all its threads.
void syncwarp();
// Publishes `mine` for this lane, waits for the warp, returns lane `src`'s
// value (this lane's own when src is outside the warp), waits again.
uint64_t warp_exchange(uint64_t mine, int src);

// Publishes `bytes` (at most 64) at `mine` for this lane, waits for the warp,
// copies every lane's (lane order, 32 x bytes) to `all`, waits again: what a
// warp-collective instruction (ldmatrix, mma.sync) needs of its lanes.
void warp_gather(const void* mine, size_t bytes, void* all);
// cp.async of `valid` bytes (0 or 16; the rest of 16 filled with zeros) from
// src to dst. The source is read at once (kernel operands do not change
// during a launch); the write to dst is held back until this thread's
// cp_async_wait lets its group complete -- the latest it could land on a
// GPU -- so that a stage read too early shows its old contents. Copies never
// waited for land when their thread ends.
void cp_async(void* dst, const void* src, int valid);
void cp_async_commit();
// All but the newest `pending` committed groups of this thread land now.
void cp_async_wait(int pending);

template <class T>
T shfl_from(T v, int src) {
  static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange(bits, src);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
inline int lane_id() {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  return (int)(t % 32);
}
inline void __syncwarp(unsigned = 0xffffffffu) { syncwarp(); }
template <class T>
T __shfl_down_sync(unsigned, T v, int delta) {
  const int src = lane_id() + delta;
  return shfl_from(v, src < 32 ? src : -1);
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  return shfl_from(v, lane_id() ^ mask);
}

inline unsigned __umulhi(unsigned a, unsigned b) {
  return (unsigned)(((uint64_t)a * b) >> 32);
}
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fdiv_rn(float a, float b) { return a / b; }
template <class T>
T __ldg(const T* p) {
  return *p;
}
using std::isfinite;
using std::max;
using std::min;

// ---- the runtime API subset -------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorNoDevice = 100,
  cudaErrorStreamCaptureUnsupported = 900,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
struct EmuStream;
using cudaStream_t = EmuStream*;
constexpr unsigned cudaStreamNonBlocking = 1;
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor, multiProcessorCount, l2CacheSize;
};

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
  }
  return "unknown error";
}
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
  }
  return "cudaErrorUnknown";
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
// "Device" memory is host memory the host cannot touch: cudaMalloc maps
// pages with no access, and only a kernel launch or one of the copy and set
// functions below opens them (DeviceWindow), as a GPU's memory is reachable
// only through those. Host code that dereferences a device pointer -- which
// a GPU would fault on or silently misread -- stops with SIGSEGV here.
// GANNF_EMU_FENCE=0 leaves the memory open (for a debugger).
void* device_alloc(size_t n);  // nullptr when out of memory
void device_free(void* p);
class DeviceWindow {
 public:
  DeviceWindow();
  ~DeviceWindow();
  DeviceWindow(const DeviceWindow&) = delete;
  DeviceWindow& operator=(const DeviceWindow&) = delete;
};
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = device_alloc(n);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void* p) {
  device_free(p);
  return cudaSuccess;
}
// Copies and sets run at once, or are recorded while a capture is open (a
// host source must then stay valid until the graph runs, as on a GPU).
inline cudaError_t run_or_record(std::function<void()> work) {
  if (capturing())
    record(std::move(work));
  else
    work();
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind,
                                   cudaStream_t = nullptr) {
  return run_or_record([d, s, n] {
    DeviceWindow open;
    if (n) std::memmove(d, s, n);
  });
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind k) {
  return cudaMemcpyAsync(d, s, n, k);
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = nullptr) {
  return run_or_record([p, v, n] {
    DeviceWindow open;
    if (n) std::memset(p, v, n);
  });
}

// CUDA graphs: a graph is the recorded work; instantiating copies it.
struct EmuGraph {
  std::vector<std::function<void()>> work;
};
using cudaGraph_t = EmuGraph*;
using cudaGraphExec_t = EmuGraph*;
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1 };
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode);
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph);
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                        unsigned long long = 0) {
  *exec = new EmuGraph(*graph);
  return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  if (capturing()) return cudaErrorInvalidValue;
  for (auto& w : exec->work) w();
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
// A wait inside a capture is refused, as on a GPU (which also invalidates the capture).
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return capturing() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() {
  return capturing() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::strcpy(p->name, "gannf CUDA emulator (host CPU)");
  p->totalGlobalMem = (size_t)1 << 32;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 1;
  p->l2CacheSize = 1 << 20;
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *free_b = *total_b = (size_t)1 << 32;
  return cudaSuccess;
}

}  // namespace gannf::emu

// ---- tensor cores: the WMMA subset the TF32 GEMM uses ------------------------
// The real fragments spread a tile over the warp's 32 lanes in a layout CUDA
// leaves unspecified; code may only touch fragment elements uniformly (all of
// x[0..num_elements)). Here each lane holds the WHOLE tile, which any correct
// use cannot tell apart, and mma_sync computes the whole product in every
// lane. store_matrix_sync is where sharing shows: each lane writes only its
// eighth of a row (elements 8*lane .. 8*lane+7), so a lane reading what another
// stored without a __syncwarp between reads stale memory -- the missing barrier
// shows up (an ownership that matched the reader's own pattern would hide it).
// Rounding to TF32 is cvt.rna.tf32.f32's: nearest, ties away from zero, the
// low 13 mantissa bits cleared. Products of TF32 values are exact in float.
// Each mma step's sum (the accumulator plus 8 products) is formed in double
// and truncated toward zero to float, once: a model of the truncating
// accumulation seen on an H100 (whose long chains drift by up to ~1e-3 from
// an IEEE float sum; it also drops addend bits in alignment, which this does
// not), so that tolerances written against the emulator leave room for it.
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment;
template <class Layout>
class fragment<matrix_a, 16, 16, 8, precision::tf32, Layout> {
 public:
  static constexpr int num_elements = 16 * 8;  // x[row * 8 + k]
  float x[num_elements];
};
template <class Layout>
class fragment<matrix_b, 16, 16, 8, precision::tf32, Layout> {
 public:
  static constexpr int num_elements = 8 * 16;  // x[k * 16 + col]
  float x[num_elements];
};
template <>
class fragment<accumulator, 16, 16, 8, float, void> {
 public:
  static constexpr int num_elements = 16 * 16;  // x[row * 16 + col]
  float x[num_elements];
};

inline float __float_to_tf32(float f) {
  if (!std::isfinite(f)) return f;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x1000u) & ~0x1fffu;  // magnitude bits: ties go away from zero
  std::memcpy(&f, &u, 4);
  return f;
}

template <class Frag>
void fill_fragment(Frag& f, float v) {
  for (auto& x : f.x) x = v;
}
// x[r * cols + c] = element (r, c) of the tile at p, at p[r * rs + c * cs].
inline void load_tile(float* x, int rows, int cols, const float* p, size_t rs, size_t cs) {
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) x[r * cols + c] = p[r * rs + c * cs];
}
// What the hardware requires of a fragment's memory (CUDA C++ Programming
// Guide, warp matrix functions): a 256-bit aligned pointer and, for 32-bit
// elements, a leading dimension that is a multiple of 4. A GPU faults or
// reads garbage otherwise; the emulator stops with the reason.
inline void check_wmma_memory(const char* what, const float* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || ldm % 4 != 0) {
    std::fprintf(stderr, "emulator: wmma::%s with pointer %p (%zu bytes past a 32-byte boundary) "
                 "and ldm %u: needs a 32-byte aligned pointer and ldm %% 4 == 0\n", what,
                 (const void*)p, (size_t)(reinterpret_cast<uintptr_t>(p) % 32), ldm);
    std::abort();
  }
}
// A: 16 x 8 (row, k); B: 8 x 16 (k, col); row- or column-major in memory.
template <class Use, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 8, precision::tf32, Layout>& f, const float* p,
                      unsigned ldm) {
  check_wmma_memory("load_matrix_sync", p, ldm);
  constexpr bool a = std::is_same_v<Use, matrix_a>, row = std::is_same_v<Layout, row_major>;
  load_tile(f.x, a ? 16 : 8, a ? 8 : 16, p, row ? ldm : 1, row ? 1 : ldm);
}
// The hardware reads only the TF32 bits of each operand.
template <class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 8, float>& d,
              const fragment<matrix_a, 16, 16, 8, precision::tf32, LA>& a,
              const fragment<matrix_b, 16, 16, 8, precision::tf32, LB>& b,
              const fragment<accumulator, 16, 16, 8, float>& c) {
  auto trunc = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u &= ~0x1fffu;
    std::memcpy(&f, &u, 4);
    return f;
  };
  auto to_float_rz = [](double v) {  // double -> float, rounded toward zero
    const float f = (float)v;
    // Rounded away from zero: one step back, the magnitude's bits less one (f != 0 here).
    if (std::fabs((double)f) > std::fabs(v) && std::isfinite(f))
      return std::bit_cast<float>(std::bit_cast<uint32_t>(f) - 1u);
    return f;
  };
  float out[256];
  for (int r = 0; r < 16; r++)
    for (int col = 0; col < 16; col++) {
      double s = c.x[r * 16 + col];
      for (int k = 0; k < 8; k++) s += (double)trunc(a.x[r * 8 + k]) * trunc(b.x[k * 16 + col]);
      out[r * 16 + col] = to_float_rz(s);
    }
  std::memcpy(d.x, out, sizeof out);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 8, float>& f,
                              unsigned ldm, layout_t layout) {
  check_wmma_memory("store_matrix_sync", p, ldm);
  const int lane = ::gannf::emu::lane_id();
  for (int e = 8 * lane; e < 8 * lane + 8; e++) {
    const int r = e / 16, c = e % 16;
    p[layout == mem_row_major ? (size_t)r * ldm + c : r + (size_t)c * ldm] = f.x[e];
  }
}
}  // namespace nvcuda::wmma
