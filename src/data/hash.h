// A small 64-bit hash for cache fingerprints and pixel checksums. Not
// cryptographic and not compatible with any published hash: it only has to
// notice a changed source or a damaged cache file, and give the same value on
// every machine (plain integer arithmetic, little-endian reads).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace gannf::data {

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint64_t hash64(const void* data, size_t n, uint64_t seed) {
  constexpr uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full;
  const auto* p = static_cast<const uint8_t*>(data);
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  // Four independent lanes so the loop is not bound by one multiply chain.
  uint64_t a[4] = {seed + P1 + P2, seed + P2, seed, seed - P1};
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int l = 0; l < 4; l++) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      a[l] = rotl(a[l] + w * P2, 31) * P1;
    }
  uint64_t h = rotl(a[0], 1) + rotl(a[1], 7) + rotl(a[2], 12) + rotl(a[3], 18);
  h = mix64(h ^ (uint64_t)n);
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = mix64(h ^ (w * P2)) * P1;
  }
  uint64_t tail = 0;
  for (size_t k = 0; i < n; i++, k++) tail |= (uint64_t)p[i] << (8 * k);
  return mix64(h ^ mix64(tail + P1));
}

}  // namespace gannf::data
