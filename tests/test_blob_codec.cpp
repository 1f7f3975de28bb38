// The compact blob formats (src/cluster/blob_codec.h): each rule of the
// header, checked exhaustively where the domain is 16 bits and against a
// reference in double precision where it is 32.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "blob_codec.h"
#include "check.h"

using namespace gannf::cluster;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

float from_bits(uint32_t u) { return std::bit_cast<float>(u); }
uint32_t bits(float x) { return std::bit_cast<uint32_t>(x); }

std::vector<float> bf16_roundtrip(const std::vector<float>& v) {
  std::vector<std::byte> b(2 * v.size());
  encode_bf16(v, b);
  std::vector<float> out(v.size());
  decode_bf16(b, out);
  return out;
}

std::vector<float> f16s_roundtrip(const std::vector<float>& v, const std::vector<size_t>& seg) {
  std::vector<std::byte> b(encoded_size(BlobFormat::F16S, v.size(), seg.size()));
  encode_f16s(v, seg, b);
  std::vector<float> out(v.size());
  decode_f16s(b, seg, out);
  return out;
}

// The round-to-nearest-even reference: the nearest of the two BF16 neighbours
// in double precision, the even one on a tie.
uint16_t bf16_reference(float x) {
  const uint32_t u = bits(x);
  const uint32_t lo = u & 0xFFFF0000u, hi = lo + 0x10000u;
  // Callers keep hi below the Inf pattern; subnormals included.
  const double dl = std::fabs((double)x - (double)from_bits(lo));
  const double dh = std::fabs((double)from_bits(hi) - (double)x);
  if (dl < dh || (dl == dh && ((lo >> 16) & 1) == 0)) return (uint16_t)(lo >> 16);
  return (uint16_t)(hi >> 16);
}

}  // namespace

TEST(CompactBlob, Bf16DecodeThenEncodeIsTheIdentityOnEveryNonNaNPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float x = from_bits(h << 16);
    if (std::isnan(x)) continue;
    ASSERT_EQ(detail::bf16_from_float(x), h) << std::hex << h;
  }
}

TEST(CompactBlob, Bf16RoundsToNearestEven) {
  gannf::Rng r(7);
  for (int i = 0; i < 200000; ++i) {
    // Random finite bit patterns below the saturation zone, both signs.
    const uint32_t u = (uint32_t)(r.next_u64() & 0x7F7EFFFFu) | (i & 1 ? 0x80000000u : 0);
    ASSERT_EQ(detail::bf16_from_float(from_bits(u)), bf16_reference(from_bits(u))) << std::hex << u;
  }
  // Ties: exactly half a step goes to the even neighbour.
  EXPECT_EQ(detail::bf16_from_float(from_bits(0x3F808000u)), 0x3F80);  // 0x3F80 is even: stays
  EXPECT_EQ(detail::bf16_from_float(from_bits(0x3F818000u)), 0x3F82);  // 0x3F81 is odd: up
  EXPECT_EQ(detail::bf16_from_float(from_bits(0x3F808001u)), 0x3F81);  // past the tie: up
  // A carry into the exponent is still the right rounding.
  EXPECT_EQ(detail::bf16_from_float(from_bits(0x3FFFFFFFu)), 0x4000);
}

TEST(CompactBlob, Bf16RelativeErrorIsBelowTwoToTheMinus8) {
  const std::vector<float> v = gannf::test::randn<float>(100000, 3, 1e-3);
  const std::vector<float> back = bf16_roundtrip(v);
  for (size_t i = 0; i < v.size(); ++i)
    ASSERT_LE(std::fabs((double)back[i] - v[i]), std::ldexp(std::fabs((double)v[i]), -8)) << i;
}

TEST(CompactBlob, Bf16FiniteNeverBecomesInfiniteAndSpecialsKeepTheirKind) {
  const float max = std::numeric_limits<float>::max();
  EXPECT_EQ(detail::bf16_from_float(max), 0x7F7F);    // would round to Inf: saturates
  EXPECT_EQ(detail::bf16_from_float(-max), 0xFF7F);
  EXPECT_EQ(detail::bf16_from_float(from_bits(0x7F7F7FFFu)), 0x7F7F);  // below the tie: down anyway
  EXPECT_EQ(detail::bf16_from_float(kInf), 0x7F80);
  EXPECT_EQ(detail::bf16_from_float(-kInf), 0xFF80);
  // A NaN whose payload is only in the low 16 bits: truncation would make it Inf.
  const uint16_t n = detail::bf16_from_float(from_bits(0x7F800001u));
  EXPECT_TRUE(std::isnan(from_bits((uint32_t)n << 16))) << std::hex << n;
  const uint16_t nn = detail::bf16_from_float(from_bits(0xFF800001u));
  EXPECT_TRUE(std::isnan(from_bits((uint32_t)nn << 16)));
  EXPECT_TRUE(nn & 0x8000);
  EXPECT_TRUE(std::isnan(bf16_roundtrip({std::numeric_limits<float>::quiet_NaN()})[0]));
  // Subnormals round like everything else, and the smallest ones survive.
  EXPECT_EQ(bf16_roundtrip({from_bits(0x00010000u)})[0], from_bits(0x00010000u));
  EXPECT_EQ(bf16_roundtrip({-0.0f})[0], -0.0f);
  EXPECT_TRUE(std::signbit(bf16_roundtrip({-0.0f})[0]));
}

TEST(CompactBlob, Bf16VectorLoopMatchesTheScalarRule) {
  // The encode loop is written to vectorise: check it on every pattern class
  // against the one-value function, at lengths that leave vector remainders.
  std::vector<float> v;
  for (uint32_t h = 0; h < 0x10000; h += 7) v.push_back(from_bits((h << 16) | (h * 2654435761u >> 16)));
  for (size_t n : {v.size(), v.size() - 1, size_t(13)}) {
    std::vector<std::byte> b(2 * n);
    encode_bf16(std::span<const float>(v.data(), n), b);
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, b.data() + 2 * i, 2);
      ASSERT_EQ(h, detail::bf16_from_float(v[i])) << i;
    }
  }
}

TEST(CompactBlob, F16sScaleFollowsTheLargestFiniteValue) {
  EXPECT_EQ(detail::f16s_exponent(1.0f), 14);
  EXPECT_EQ(detail::f16s_exponent(1.999f), 14);
  EXPECT_EQ(detail::f16s_exponent(2.0f), 13);
  EXPECT_EQ(detail::f16s_exponent(0.0f), 0);
  EXPECT_EQ(detail::f16s_exponent(std::numeric_limits<float>::max()), -113);
  EXPECT_EQ(detail::f16s_exponent(std::numeric_limits<float>::denorm_min()), 127);  // clamped
  // NaN and Inf do not set the scale: a tensor of 1e-3 with one Inf keeps its precision.
  std::vector<float> v = gannf::test::randn<float>(1000, 5, 1e-3);
  v[17] = kInf;
  v[18] = -kInf;
  v[19] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> back = f16s_roundtrip(v, {v.size()});
  EXPECT_EQ(back[17], kInf);
  EXPECT_EQ(back[18], -kInf);
  EXPECT_TRUE(std::isnan(back[19]));
  for (size_t i = 0; i < v.size(); ++i)
    if (i < 17 || i > 19) {
      ASSERT_NEAR(back[i], v[i], std::ldexp(std::fabs(v[i]), -11) + 1e-12) << i;
    }
}

TEST(CompactBlob, F16sIsExactOnBinary16ValuesAndBoundedElsewhere) {
  // Integers up to 2048 with the maximum in [1024, 2048): x * 2^4 is binary16.
  std::vector<float> ints(3000);
  for (size_t i = 0; i < ints.size(); ++i) ints[i] = (float)((int)(i * 37 % 4096) - 2048) / 2;
  ints[0] = 1500;
  std::vector<float> clipped = ints;
  for (float& x : clipped) x = std::fmax(-2047, std::fmin(2047, x));
  EXPECT_EQ(f16s_roundtrip(clipped, {clipped.size()}), clipped);

  // Per-tensor scales: a tensor of 1e-9 beside one of 1e3 keeps 11 bits.
  std::vector<float> small = gannf::test::randn<float>(5000, 11, 1e-9);
  std::vector<float> big = gannf::test::randn<float>(3000, 12, 1e3);
  std::vector<float> v = small;
  v.insert(v.end(), big.begin(), big.end());
  const std::vector<float> back = f16s_roundtrip(v, {small.size(), big.size()});
  float m[2] = {0, 0};
  for (size_t i = 0; i < v.size(); ++i) m[i >= small.size()] = std::fmax(m[i >= small.size()], std::fabs(v[i]));
  for (size_t i = 0; i < v.size(); ++i) {
    const float mx = m[i >= small.size()];
    const double tol = std::fabs(v[i]) >= std::ldexp(mx, -28)
                           ? std::ldexp(std::fabs((double)v[i]), -11)
                           : std::ldexp(1.0, -25 - detail::f16s_exponent(mx));
    ASSERT_LE(std::fabs((double)back[i] - v[i]), tol) << i;
  }
  // One scale for the whole blob loses the small tensor to zeros: what the
  // per-tensor scale is for.
  const std::vector<float> one = f16s_roundtrip(v, {v.size()});
  EXPECT_EQ(one[0], 0.0f);
}

TEST(CompactBlob, F16sFiniteNeverBecomesInfinite) {
  const float max = std::numeric_limits<float>::max();
  // Scaled, FLT_MAX rounds up to 2^15, which decodes to 2^128 = Inf
  // unless the decoder saturates.
  const std::vector<float> v = {max, -max, max / 3, max / 1000};
  const std::vector<float> back = f16s_roundtrip(v, {v.size()});
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_TRUE(std::isfinite(back[i])) << i;
    EXPECT_NEAR(back[i] / v[i], 1, 1e-3) << i;
  }
  // The largest values of a tensor land just below 2^15 after scaling, with
  // room to round up without reaching 65504.
  const std::vector<float> edge = {std::nextafter(2.0f, 0.0f), -std::nextafter(2.0f, 0.0f)};
  const std::vector<float> eb = f16s_roundtrip(edge, {2});
  EXPECT_EQ(eb[0], 2.0f);
  EXPECT_EQ(eb[1], -2.0f);
}

TEST(CompactBlob, DecodingChecksSizesBeforeReading) {
  std::vector<float> out(10);
  std::vector<std::byte> b(19);
  EXPECT_THROW(decode_bf16(b, out), std::invalid_argument);
  b.resize(21);
  EXPECT_THROW(decode_bf16(b, out), std::invalid_argument);
  const std::vector<size_t> seg = {4, 6};
  b.assign(encoded_size(BlobFormat::F16S, 10, 2), std::byte{0});
  EXPECT_NO_THROW(decode_f16s(b, seg, out));
  for (size_t n : {b.size() - 1, b.size() + 1, size_t(20), size_t(0)}) {
    std::vector<std::byte> bad(n);
    EXPECT_THROW(decode_f16s(bad, seg, out), std::invalid_argument) << n;
  }
  EXPECT_THROW(decode_f16s(b, std::vector<size_t>{4, 5}, out), std::invalid_argument);
  // Segment sizes that wrap around size_t must not make a small blob look right.
  const size_t huge = std::numeric_limits<size_t>::max();
  EXPECT_THROW(decode_f16s(b, std::vector<size_t>{huge, 11}, out), std::invalid_argument);
  EXPECT_THROW(encode_bf16(out, std::span<std::byte>(b.data(), 19)), std::invalid_argument);
}

TEST(CompactBlob, DecodingRefusesExponentsNoEncoderWrites) {
  std::vector<float> v = {1, 2, 3};
  std::vector<size_t> seg = {3};
  std::vector<std::byte> b(encoded_size(BlobFormat::F16S, 3, 1));
  encode_f16s(v, seg, b);
  std::vector<float> out(3);
  for (int32_t k : {128, -114, 1 << 30, -(1 << 30)}) {
    const int32_t le = std::endian::native == std::endian::little ? k : (int32_t)__builtin_bswap32((uint32_t)k);
    std::memcpy(b.data(), &le, 4);
    EXPECT_THROW(decode_f16s(b, seg, out), std::invalid_argument) << k;
  }
}

TEST(CompactBlob, AnyFormatThroughOneCall) {
  const std::vector<float> v = gannf::test::randn<float>(1001, 9, 0.1);
  const std::vector<size_t> seg = {1000, 1};
  for (BlobFormat f : {BlobFormat::F32, BlobFormat::BF16, BlobFormat::F16S}) {
    EXPECT_EQ(parse_blob_format(to_string(f)), f);
    const std::vector<std::byte> b = encode_blob(f, v, seg);
    EXPECT_EQ(b.size(), encoded_size(f, v.size(), seg.size()));
    std::vector<float> out(v.size());
    decode_blob(f, b, seg, out);
    if (f == BlobFormat::F32) {
      EXPECT_EQ(out, v);
    }
    for (size_t i = 0; i < v.size(); ++i) ASSERT_NEAR(out[i], v[i], std::fabs(v[i]) / 256) << to_string(f);
  }
  EXPECT_THROW(parse_blob_format("fp8"), std::invalid_argument);
}
