// CRC-32C (see crc32c.h): the SSE4.2 / ARMv8 instruction where the build
// targets it, slicing-by-8 tables otherwise.
#include "crc32c.h"

#include <array>
#include <bit>
#include <cstring>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#elif defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#endif

namespace gannf {

namespace {

// Reflected Castagnoli polynomial.
constexpr uint32_t kPoly = 0x82F63B78u;

// Slicing-by-8 tables for the portable path: 8 KiB, built at compile time.
using Tables = std::array<std::array<uint32_t, 256>, 8>;
constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (kPoly & (0u - (c & 1u)));
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i)
    for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  return t;
}
constexpr Tables kTables = make_tables();

uint32_t crc32c_tables(const unsigned char* p, size_t n, uint32_t c) {
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap64(w);
    w ^= c;
    c = kTables[7][w & 0xFF] ^ kTables[6][(w >> 8) & 0xFF] ^ kTables[5][(w >> 16) & 0xFF] ^
        kTables[4][(w >> 24) & 0xFF] ^ kTables[3][(w >> 32) & 0xFF] ^ kTables[2][(w >> 40) & 0xFF] ^
        kTables[1][(w >> 48) & 0xFF] ^ kTables[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
  return c;
}

// GF(2) polynomial arithmetic modulo the CRC polynomial, reflected (bit 31
// is x^0): what joining two CRC registers needs.
constexpr uint32_t mult_mod_p(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, prod = 0;
  for (;;) {
    if (a & m) {
      prod ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return prod;
}
// x^(2^k) mod P for k = 0..63.
constexpr std::array<uint32_t, 64> make_x2n() {
  std::array<uint32_t, 64> t{};
  uint32_t p = 1u << 30;  // x^1
  for (int k = 0; k < 64; ++k) {
    t[k] = p;
    p = mult_mod_p(p, p);
  }
  return t;
}
constexpr std::array<uint32_t, 64> kX2n = make_x2n();
// The register after `n` more zero bytes: c * x^(8n) mod P.
uint32_t shift_bytes(uint32_t c, uint64_t n) {
  uint32_t x = 1u << 31;  // x^0
  for (int k = 3; n; n >>= 1, ++k)
    if (n & 1) x = mult_mod_p(kX2n[k & 63], x);
  return mult_mod_p(x, c);
}

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
#if defined(__SSE4_2__) && defined(__x86_64__)
  // crc32 has a latency of 3 cycles and a throughput of 1: three
  // independent chains over three thirds of a long buffer keep the unit
  // busy, and the registers are joined by polynomial shifts (the register
  // is linear: crc(A|B) = crc(A) * x^(8|B|) + crc0(B)). About 3x one chain.
  if (n >= 3 * 4096) {
    const size_t third = (n / 3) & ~size_t(7);
    const unsigned char *a = p, *b = p + third, *e = p + 2 * third;
    uint64_t ca = c, cb = 0, ce = 0;
    for (size_t i = 0; i < third; i += 8) {
      uint64_t wa, wb, we;
      std::memcpy(&wa, a + i, 8);
      std::memcpy(&wb, b + i, 8);
      std::memcpy(&we, e + i, 8);
      ca = _mm_crc32_u64(ca, wa);
      cb = _mm_crc32_u64(cb, wb);
      ce = _mm_crc32_u64(ce, we);
    }
    c = shift_bytes((uint32_t)ca, third) ^ (uint32_t)cb;
    c = shift_bytes(c, third) ^ (uint32_t)ce;
    p += 3 * third;
    n -= 3 * third;
  }
  uint64_t c64 = c;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
  }
  c = (uint32_t)c64;
  for (; n; --n) c = _mm_crc32_u8(c, *p++);
#elif defined(__ARM_FEATURE_CRC32)
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = __crc32cd(c, w);
  }
  for (; n; --n) c = __crc32cb(c, *p++);
#else
  c = crc32c_tables(p, n, c);
#endif
  return ~c;
}

uint32_t detail::crc32c_portable(const void* data, size_t n, uint32_t crc) {
  return ~crc32c_tables(static_cast<const unsigned char*>(data), n, ~crc);
}

}  // namespace gannf
