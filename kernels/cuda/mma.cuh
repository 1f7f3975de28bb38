// The tensor-core primitives of the staged TF32 GEMM (gemm.cu), as PTX on a
// GPU and as warp-collective host code on the emulator (emu/emu.h):
//
//   cp_async16(dst, src, valid)   cp.async.cg.shared.global, 16 bytes; 16 zero
//                                 bytes instead where !valid (src-size 0)
//   cp_async_commit()             cp.async.commit_group
//   cp_async_wait<N>()            cp.async.wait_group N: all but the newest N
//                                 groups of this thread's copies have landed
//   ldmatrix_x4(r, row)           ldmatrix.sync.aligned.m8n8.x4.shared.b16: four
//                                 8x8 matrices of 16-bit elements, i.e. 8 rows of
//                                 16 bytes = 4 32-bit words each; lane l gives the
//                                 address of row l % 8 of matrix l / 8 and gets
//                                 word l % 4 of row l / 4 of matrix j in r[j]
//   mma_tf32_16x8x8(d, a, b)      mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32,
//                                 d += A . B with A 16x8 (row, k), B 8x8 (k, col)
//   mma_bf16_16x8x16(d, a, b)     mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32,
//                                 A 16x16, B 16x8, two BF16 a 32-bit register
//   bf16_bits(x)                  x rounded to BF16 (nearest, ties to even; NaN
//                                 stays NaN), its 16 bits
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k8" with .tf32),
// g = lane / 4, t = lane % 4:
//   a[0] = A(g, t)   a[1] = A(g + 8, t)   a[2] = A(g, t + 4)   a[3] = A(g + 8, t + 4)
//   b[0] = B(t, g)   b[1] = B(t + 4, g)
//   d[0] = D(g, 2t)  d[1] = D(g, 2t + 1)  d[2] = D(g + 8, 2t)  d[3] = D(g + 8, 2t + 1)
// With BF16 (m16n8k16) the same layouts hold for 32-bit words, each word two
// consecutive k (the lower k in the lower half): a[0] = A(g, 2t..2t+1),
// a[2] = A(g, 2t+8..2t+9), b[0] = B(2t..2t+1, g), b[1] = B(2t+8..2t+9, g);
// so one ldmatrix_x4 of A stored k-contiguous (rows m, 4 words of k per 16
// bytes) gives a[] when its four matrices are (rows 0-7, k 0-3), (rows 8-15,
// k 0-3), (rows 0-7, k 4-7), (rows 8-15, k 4-7); and one of B stored
// k-contiguous per column n gives two n8 fragments: (n 0-7, k 0-3) and (n 0-7,
// k 4-7) are b[0], b[1] of the first, (n 8-15, ...) of the second.
//
// The hardware reads only the TF32 bits (sign, exponent, 10 mantissa bits) of
// each 32-bit operand: operands are rounded (cvt.rna) before they are staged.
// Compute capability 8.0 or newer (cp.async, ldmatrix and TF32 mma); the
// kernels that use these trap below it and the back end never launches them
// there.
#pragma once
#include <cstdint>
#include <cstring>

#ifdef GANNF_CUDA_EMULATE
#include "emu/emu.h"
#endif

namespace gannf::cuda {
inline namespace GANNF_CUDA_ABI {

__device__ __forceinline__ uint16_t bf16_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // NaN: quiet
  u += 0x7fffu + ((u >> 16) & 1u);  // to nearest, ties to even
  return (uint16_t)(u >> 16);
}

#if !defined(GANNF_CUDA_EMULATE)

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GANNF_HAVE_MMA_SYNC 1
#else
#define GANNF_HAVE_MMA_SYNC 0
#endif

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
#if GANNF_HAVE_MMA_SYNC
  const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src),
               "r"(valid ? 16 : 0));
#else
  (void)dst, (void)src, (void)valid;
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if GANNF_HAVE_MMA_SYNC
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if GANNF_HAVE_MMA_SYNC
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#if GANNF_HAVE_MMA_SYNC
  const unsigned s = (unsigned)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
#else
  (void)row;
  r[0] = r[1] = r[2] = r[3] = 0;
#endif
}
// d += A . B for one 16x8 accumulator: `instr` is the mma.sync form.
#if GANNF_HAVE_MMA_SYNC
#define GANNF_MMA_16X8(name, instr)                                                          \
  __device__ __forceinline__ void name(float (&d)[4], const uint32_t (&a)[4],                \
                                       const uint32_t (&b)[2]) {                             \
    asm volatile(instr " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n" \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                            \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));        \
  }
#else
#define GANNF_MMA_16X8(name, instr)                                                          \
  __device__ __forceinline__ void name(float (&d)[4], const uint32_t (&a)[4],                \
                                       const uint32_t (&b)[2]) {                             \
    (void)a, (void)b, (void)d;                                                               \
  }
#endif
GANNF_MMA_16X8(mma_tf32_16x8x8, "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32")
GANNF_MMA_16X8(mma_bf16_16x8x16, "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
#undef GANNF_MMA_16X8

#else  // ---- the emulator ----------------------------------------------------------

// Asynchronous copies land only when their thread waits for them
// (emu::cp_async_wait), so a read of a stage before its wait -- or by another
// thread before the barrier after it -- sees the stage's old contents.
inline void cp_async16(void* dst, const void* src, bool valid) {
  ::gannf::emu::cp_async(dst, src, valid ? 16 : 0);
}
inline void cp_async_commit() { ::gannf::emu::cp_async_commit(); }
template <int N>
void cp_async_wait() {
  ::gannf::emu::cp_async_wait(N);
}

// Each lane publishes its row address; each lane then reads its words of the
// rows the others named. Addresses must be 16-byte aligned, as on a GPU.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) {
    std::fprintf(stderr, "emulator: ldmatrix with a row address %p not 16-byte aligned\n", row);
    std::abort();
  }
  const void* rows[32];
  ::gannf::emu::warp_gather(&row, sizeof row, rows);
  const int l = ::gannf::emu::lane_id();
  for (int j = 0; j < 4; j++)
    std::memcpy(&r[j], static_cast<const char*>(rows[8 * j + l / 4]) + 4 * (l % 4), 4);
}

// The whole 16 x 8 x K product from the 32 lanes' registers, laid out as on
// the GPU: every lane publishes its a, b and accumulator registers, `fill`
// decodes one lane's a and b into A (16 x K) and B (K x 8), and each lane
// computes its own four outputs. Like the WMMA emulation (emu.h): each
// output's accumulator plus its K products is summed in double and truncated
// toward zero to float once -- a model of the tensor cores' truncating
// accumulation.
struct MmaRegs {
  uint32_t a[4], b[2];
  float c[4];
};
template <int K, class Fill>
void mma_emulated(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], Fill fill) {
  MmaRegs mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {d[0], d[1], d[2], d[3]}}, all[32];
  ::gannf::emu::warp_gather(&mine, sizeof mine, all);
  double A[16][K], B[K][8], C[16][8];
  for (int l = 0; l < 32; l++) {
    const int g = l / 4, t = l % 4;
    fill(all[l], g, t, A, B);
    C[g][2 * t] = all[l].c[0], C[g][2 * t + 1] = all[l].c[1];
    C[g + 8][2 * t] = all[l].c[2], C[g + 8][2 * t + 1] = all[l].c[3];
  }
  auto to_float_rz = [](double v) {
    const float f = (float)v;
    if (std::fabs((double)f) > std::fabs(v) && std::isfinite(f))
      return std::bit_cast<float>(std::bit_cast<uint32_t>(f) - 1u);
    return f;
  };
  const int l = ::gannf::emu::lane_id(), g = l / 4, t = l % 4;
  const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  for (int r = 0; r < 4; r++) {
    double s = C[rows[r]][cols[r]];
    for (int k = 0; k < K; k++) s += A[rows[r]][k] * B[k][cols[r]];
    d[r] = to_float_rz(s);
  }
}

// TF32 (m16n8k8): the hardware reads only each operand's TF32 bits.
inline void mma_tf32_16x8x8(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  mma_emulated<8>(d, a, b, [](const MmaRegs& x, int g, int t, double (&A)[16][8], double (&B)[8][8]) {
    auto tf32 = [](uint32_t u) { return (double)std::bit_cast<float>(u & ~0x1fffu); };
    A[g][t] = tf32(x.a[0]), A[g + 8][t] = tf32(x.a[1]);
    A[g][t + 4] = tf32(x.a[2]), A[g + 8][t + 4] = tf32(x.a[3]);
    B[t][g] = tf32(x.b[0]), B[t + 4][g] = tf32(x.b[1]);
  });
}

// BF16 (m16n8k16): each 32-bit register two BF16 values, the lower k in the
// lower half.
inline void mma_bf16_16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  mma_emulated<16>(d, a, b, [](const MmaRegs& x, int g, int t, double (&A)[16][16], double (&B)[16][8]) {
    auto lo = [](uint32_t w) { return (double)std::bit_cast<float>(w << 16); };
    auto hi = [](uint32_t w) { return (double)std::bit_cast<float>(w & 0xffff0000u); };
    const int rows[4] = {g, g + 8, g, g + 8}, ks[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int r = 0; r < 4; r++) A[rows[r]][ks[r]] = lo(x.a[r]), A[rows[r]][ks[r] + 1] = hi(x.a[r]);
    B[2 * t][g] = lo(x.b[0]), B[2 * t + 1][g] = hi(x.b[0]);
    B[2 * t + 8][g] = lo(x.b[1]), B[2 * t + 9][g] = hi(x.b[1]);
  });
}

#endif

}  // namespace GANNF_CUDA_ABI
}  // namespace gannf::cuda
