// The exact weight deltas (src/cluster/weights_delta.h): every bit pattern
// comes back exactly, an Adam-sized step takes well under the float32 bytes,
// and each kind of damaged or foreign input is refused before the output is
// touched.
#include <gtest/gtest.h>

#include <zstd.h>

#include <bit>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "weights_delta.h"

using namespace gannf::cluster;

namespace {

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), 4 * a.size()) == 0;
}

// DCGAN-initialised weights (N(0, 0.02)) and the same after an Adam-sized
// step (each moves by up to lr = 2e-4, the size of Adam's normalised step).
void adam_like(size_t n, std::vector<float>* base, std::vector<float>* next, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> w(0.f, 0.02f);
  std::uniform_real_distribution<float> step(-2e-4f, 2e-4f);
  base->resize(n);
  next->resize(n);
  for (size_t i = 0; i < n; ++i) {
    (*base)[i] = w(rng);
    (*next)[i] = (*base)[i] + step(rng);
  }
}

TEST(WeightsDelta, EveryBitPatternComesBackExactly) {
  // Arbitrary 32-bit patterns on both sides: NaNs with payloads, infinities,
  // subnormals, -0, sign changes; the delta is of bit patterns, so all of
  // them must come back bit for bit.
  std::mt19937 rng(1);
  const size_t n = 100003;  // not a multiple of anything
  std::vector<float> base(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    base[i] = std::bit_cast<float>((uint32_t)rng());
    next[i] = std::bit_cast<float>((uint32_t)rng());
  }
  const float specials[] = {0.f, -0.f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                            std::bit_cast<float>(0x7f800001u), std::bit_cast<float>(0xffffffffu),
                            std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(),
                            -std::numeric_limits<float>::max()};
  for (size_t a = 0; a < std::size(specials); ++a)
    for (size_t b = 0; b < std::size(specials); ++b) {
      base[a * std::size(specials) + b] = specials[a];
      next[a * std::size(specials) + b] = specials[b];
    }
  const std::string d = encode_weights_delta(base, next);
  std::vector<float> out(n, 1.f);
  decode_weights_delta(base, as_bytes(d), out);
  EXPECT_TRUE(same_bits(out, next));
  // Random patterns do not compress: every plane is stored raw, the header on top.
  EXPECT_EQ(d.size(), 4 * n + 32);
}

TEST(WeightsDelta, AnAdamStepTakesWellUnderTheFloatBytesAndDecodesInPlace) {
  std::vector<float> base, next;
  adam_like(1 << 20, &base, &next, 2);
  const std::string d = encode_weights_delta(base, next);
  const double ratio = (double)d.size() / (4.0 * base.size());
  std::printf("an Adam-sized step of 1 Mi floats: %.3f of the float32 bytes\n", ratio);
  EXPECT_LT(ratio, 0.75);
  std::vector<float> in_place = base;  // the output may be the base itself
  decode_weights_delta(in_place, as_bytes(d), in_place);
  EXPECT_TRUE(same_bits(in_place, next));
  // The same weights again: every difference is 0, nearly nothing to send.
  EXPECT_LT(encode_weights_delta(next, next).size(), 4 * next.size() / 100);
  // An empty network is a valid (empty) delta.
  std::vector<float> none;
  const std::string e = encode_weights_delta(none, none);
  EXPECT_NO_THROW(decode_weights_delta(none, as_bytes(e), std::span<float>()));
}

TEST(WeightsDelta, AgainstAnotherBaseItRebuildsOtherWeights) {
  // The delta is only exact against its own base: the caller's checksum of
  // the result is what tells a foreign base apart.
  std::vector<float> base, next, other, ignored;
  adam_like(4096, &base, &next, 3);
  adam_like(4096, &other, &ignored, 4);
  const std::string d = encode_weights_delta(base, next);
  std::vector<float> out(4096);
  decode_weights_delta(other, as_bytes(d), out);
  EXPECT_FALSE(same_bits(out, next));
}

TEST(WeightsDelta, DamagedOrForeignInputIsRefusedBeforeTheOutputIsWritten) {
  std::vector<float> base, next;
  adam_like(20000, &base, &next, 5);
  const std::string good = encode_weights_delta(base, next);
  ASSERT_EQ(good[12], 0) << "plane 0 (the lowest bytes) is stored raw";
  ASSERT_EQ(good[27], 1) << "plane 3 (the highest bytes) is a zstd frame";
  auto len_at = [&](const std::string& s, int p) {
    uint32_t v;
    std::memcpy(&v, s.data() + 13 + 5 * p, 4);
    return v;
  };
  const size_t p3_offset = good.size() - len_at(good, 3);
  auto refused = [&](const std::string& d, std::vector<float> b) {
    std::vector<float> out(b.size(), 7.f);
    bool threw = false;
    try {
      decode_weights_delta(b, as_bytes(d), out);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    bool untouched = true;
    for (float v : out) untouched = untouched && v == 7.f;
    return threw && untouched;
  };
  std::string d = good;
  d[0] = 'X';
  EXPECT_TRUE(refused(d, base)) << "magic";
  EXPECT_TRUE(refused(good.substr(0, 20), base)) << "shorter than the header";
  EXPECT_TRUE(refused(good.substr(0, good.size() - 1), base)) << "one byte short";
  EXPECT_TRUE(refused(good + "x", base)) << "one byte too many";
  EXPECT_TRUE(refused(good, std::vector<float>(base.begin(), base.end() - 1))) << "a base of another length";
  d = good;
  d[12] = 2;
  EXPECT_TRUE(refused(d, base)) << "unknown method";
  d = good;
  d[12] = 1;  // the raw plane claimed as zstd: not a frame
  EXPECT_TRUE(refused(d, base)) << "raw bytes as a zstd frame";
  {
    // Plane 3 replaced by a valid frame of another length, lengths fixed up.
    std::vector<uint8_t> small(base.size() - 1, 0);
    std::string frame(ZSTD_compressBound(small.size()), '\0');
    frame.resize(ZSTD_compress(frame.data(), frame.size(), small.data(), small.size(), 1));
    d = good.substr(0, p3_offset) + frame;
    const uint32_t len = (uint32_t)frame.size();
    std::memcpy(d.data() + 13 + 15, &len, 4);
    EXPECT_TRUE(refused(d, base)) << "a frame of n - 1 bytes";
    // Two frames of n/2 bytes each where one of n is due.
    std::vector<uint8_t> half(base.size() / 2, 0);
    std::string f2(ZSTD_compressBound(half.size()), '\0');
    f2.resize(ZSTD_compress(f2.data(), f2.size(), half.data(), half.size(), 1));
    d = good.substr(0, p3_offset) + f2 + f2;
    const uint32_t len2 = (uint32_t)(2 * f2.size());
    std::memcpy(d.data() + 13 + 15, &len2, 4);
    EXPECT_TRUE(refused(d, base)) << "two frames";
  }
  d = good;
  d[p3_offset + len_at(good, 3) / 2] ^= 0x5a;  // damage inside the zstd frame
  {
    // Either refused, or decoded to other weights (the caller's checksum
    // catches those); never a crash or a read past the input.
    std::vector<float> out(base.size());
    try {
      decode_weights_delta(base, as_bytes(d), out);
      EXPECT_FALSE(same_bits(out, next));
    } catch (const std::invalid_argument&) {
    }
  }
  // And the good one still decodes.
  std::vector<float> out(base.size());
  decode_weights_delta(base, as_bytes(good), out);
  EXPECT_TRUE(same_bits(out, next));
}

}  // namespace
