// The exact difference between two published parameter buffers of one
// network (issue 17, item 2b: the weights in the smallest exact form).
//
// A worker that computed for iteration k-1 holds its weights; the weights of
// iteration k differ from them by one Adam step, which moves each float by a
// small fraction of itself: the sign, the exponent and the upper mantissa
// bits mostly stay. So the coordinator publishes, beside the full weights of
// k, the delta from k-1 (gannf.weights_delta, sql/0019), and such a worker
// downloads that instead and rebuilds the weights of k bit for bit.
//
// Encoding, for n floats (tests/test_weights_delta.cpp checks each rule):
//   1. d[i] = zigzag(int32(bits(next[i]) - bits(base[i]))): the difference
//      of the bit patterns, modulo 2^32, as a signed 32-bit integer mapped
//      to 0, -1, 1, -2, ... = 0, 1, 2, 3, ... (small changes, small numbers,
//      whatever their sign). Exact for every pair of bit patterns, NaN and
//      Inf included.
//   2. Byte planes: plane p holds byte p of every d[i] (p = 0 the lowest),
//      so the mostly-zero upper bytes sit together.
//   3. Each plane is stored raw or as one zstd frame, whichever is smaller.
// Measured on a 64x64 run's consecutive weights (docs/scaling.md): 0.63 of
// the float32 bytes after the first steps; the full weights themselves
// compress to only 0.84 the same way.
//
// Layout, little-endian:
//   "GWD1", uint64 n, then for planes 0..3 a uint8 method (0 raw, 1 zstd) and
//   a uint32 stored length, then the four planes' bytes in order.
// Decoding checks the magic, that n equals the caller's element count, that
// the lengths add up to the bytes there are, that a raw plane is n bytes and
// that a zstd plane is exactly one frame stating n bytes and giving n; any
// other input throws std::invalid_argument before `out` is written. The
// result is exact only against the base it was encoded from: the caller
// checks the rebuilt weights against the published checksum.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace gannf::cluster {

// next - base as above; base and next have the same length. `level`: zstd's
// compression level (1, the fastest, is within 0.01 of level 3 here).
std::string encode_weights_delta(std::span<const float> base, std::span<const float> next, int level = 1);

// base + delta into out (out.size() == base.size(); out may be base itself).
void decode_weights_delta(std::span<const float> base, std::span<const std::byte> delta, std::span<float> out);

}  // namespace gannf::cluster
