#include "blob_codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include "blob.h"

namespace gannf::cluster {

namespace {

// 16- and 32-bit loads and stores at any byte offset; the may_alias types let
// the loops below vectorise over std::byte buffers without memcpy per value.
typedef uint16_t u16u __attribute__((may_alias, aligned(1)));
typedef int32_t i32u __attribute__((may_alias, aligned(1)));
typedef uint32_t u32a __attribute__((may_alias));  // a float's bits, read in place
constexpr bool kLittle = std::endian::native == std::endian::little;

inline uint16_t le16(uint16_t v) { return kLittle ? v : __builtin_bswap16(v); }
inline int32_t le32(int32_t v) { return kLittle ? v : (int32_t)__builtin_bswap32((uint32_t)v); }

// IEEE binary16. GCC 12's C++ has _Float16 on x86-64 but not on aarch64,
// where ARM's __fp16 is the same format and converts with the same rounding.
#if defined(__ARM_FP16_FORMAT_IEEE)
using half = __fp16;
#else
using half = _Float16;
#endif

// 14 - ilogb over float32's finite range is [-113, 163]; 127: 2^k must be a float.
constexpr int kMinExp = -113, kMaxExp = 127;

void need(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

size_t segments_total(std::span<const size_t> segments) {
  size_t n = 0;
  for (size_t s : segments) {
    need(s <= std::numeric_limits<size_t>::max() / 4 - n, "blob codec: segment sizes overflow");
    n += s;
  }
  return n;
}

// Branch-free so that it vectorises: RNE by adding 0x7FFF plus the kept
// bit's parity; a finite value whose rounding reached the Inf pattern
// saturates; a NaN keeps its sign and top bits and gets the quiet bit.
inline uint16_t bf16_bits(uint32_t u) {
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t sat = (a < 0x7F800000u && (rounded & 0x7FFFu) == 0x7F80u) ? (sign | 0x7F7Fu) : rounded;
  return (uint16_t)(a > 0x7F800000u ? ((u >> 16) | 0x0040u) : sat);
}

// The bits of the largest finite |x| (0 if none). For non-negative floats the
// bit patterns' order is the values' order, and an integer max reduction
// vectorises where a float one with NaN rules does not.
uint32_t max_finite_abs_bits(const float* x, size_t n) {
  const u32a* xb = reinterpret_cast<const u32a*>(x);
  uint32_t m = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t a = xb[i] & 0x7FFFFFFFu;
    const uint32_t f = a & (0u - (uint32_t)(a < 0x7F800000u));  // NaN and Inf count as 0 (a mask: vectorises)
    m = m > f ? m : f;
  }
  return m;
}

}  // namespace

const char* to_string(BlobFormat f) {
  switch (f) {
    case BlobFormat::F32: return "f32";
    case BlobFormat::BF16: return "bf16";
    case BlobFormat::F16S: return "f16s";
  }
  return "?";
}

BlobFormat parse_blob_format(const std::string& name) {
  for (BlobFormat f : {BlobFormat::F32, BlobFormat::BF16, BlobFormat::F16S})
    if (name == to_string(f)) return f;
  throw std::invalid_argument("unknown blob format '" + name + "': f32 (exact), bf16 or f16s (half the bytes)");
}

double encoding_tolerance(BlobFormat f) {
  switch (f) {
    case BlobFormat::F32: return 0;
    case BlobFormat::BF16: return 0x1p-8;
    case BlobFormat::F16S: return 0x1p-10;
  }
  return 0;
}

size_t encoded_size(BlobFormat f, size_t n, size_t segments) {
  switch (f) {
    case BlobFormat::F32: return 4 * n;
    case BlobFormat::BF16: return 2 * n;
    case BlobFormat::F16S: return 4 * segments + 2 * n;
  }
  return 0;
}

namespace detail {
uint16_t bf16_from_float(float x) { return bf16_bits(std::bit_cast<uint32_t>(x)); }

int f16s_exponent(float max_abs_finite) {
  if (!(max_abs_finite > 0) || !std::isfinite(max_abs_finite)) return 0;
  const int k = 14 - std::ilogb(max_abs_finite);
  return k < kMinExp ? kMinExp : k > kMaxExp ? kMaxExp : k;
}
}  // namespace detail

void encode_bf16(std::span<const float> in, std::span<std::byte> out) {
  need(out.size() == 2 * in.size(), "encode_bf16: the output must hold 2 bytes per value");
  const float* x = in.data();
  u16u* o = reinterpret_cast<u16u*>(out.data());
  const size_t n = in.size();
  for (size_t i = 0; i < n; ++i) o[i] = le16(bf16_bits(std::bit_cast<uint32_t>(x[i])));
}

void decode_bf16(std::span<const std::byte> bytes, std::span<float> out) {
  need(bytes.size() == 2 * out.size(), "bf16 blob of " + std::to_string(bytes.size()) + " bytes; " +
                                           std::to_string(out.size()) + " values need " +
                                           std::to_string(2 * out.size()));
  const u16u* h = reinterpret_cast<const u16u*>(bytes.data());
  float* o = out.data();
  const size_t n = out.size();
  for (size_t i = 0; i < n; ++i) o[i] = std::bit_cast<float>((uint32_t)le16(h[i]) << 16);
}

void encode_f16s(std::span<const float> in, std::span<const size_t> segments, std::span<std::byte> out) {
  need(segments_total(segments) == in.size(), "encode_f16s: the segments do not add up to the values");
  need(out.size() == encoded_size(BlobFormat::F16S, in.size(), segments.size()),
       "encode_f16s: the output must hold 4 bytes per segment and 2 per value");
  i32u* head = reinterpret_cast<i32u*>(out.data());
  u16u* o = reinterpret_cast<u16u*>(out.data() + 4 * segments.size());
  const float* x = in.data();
  for (size_t s = 0; s < segments.size(); ++s) {
    const size_t n = segments[s];
    const uint32_t m = max_finite_abs_bits(x, n);
    const int k = detail::f16s_exponent(std::bit_cast<float>(m));
    head[s] = le32(k);
    const float scale = std::ldexp(1.0f, k);  // 2^-113 .. 2^127: a normal float, so scaling is exact
    size_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    // GCC 12 does not vectorise the conversion of _Float16 by itself: 8 at a
    // time with F16C, the same IEEE rounding (nearest even).
    if constexpr (kLittle)
      for (const __m256 sc = _mm256_set1_ps(scale); i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                         _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(x + i), sc), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; ++i) o[i] = le16(std::bit_cast<uint16_t>((half)(x[i] * scale)));
    x += n;
    o += n;
  }
}

void decode_f16s(std::span<const std::byte> bytes, std::span<const size_t> segments, std::span<float> out) {
  need(segments_total(segments) == out.size(), "decode_f16s: the segments do not add up to the values");
  const size_t want = encoded_size(BlobFormat::F16S, out.size(), segments.size());
  need(bytes.size() == want, "f16s blob of " + std::to_string(bytes.size()) + " bytes; " +
                                 std::to_string(segments.size()) + " tensors of " + std::to_string(out.size()) +
                                 " values need " + std::to_string(want));
  const i32u* head = reinterpret_cast<const i32u*>(bytes.data());
  for (size_t s = 0; s < segments.size(); ++s) {
    const int32_t k = le32(head[s]);
    need(k >= kMinExp && k <= kMaxExp, "f16s blob: tensor " + std::to_string(s) + " has the exponent " +
                                           std::to_string(k) + ", outside [-113, 127]");
  }
  const u16u* h = reinterpret_cast<const u16u*>(bytes.data() + 4 * segments.size());
  float* o = out.data();
  for (size_t s = 0; s < segments.size(); ++s) {
    const size_t n = segments[s];
    // 2^-k for k in [-113, 127]: 2^-127 is subnormal but exact, and one
    // multiply rounds once. Only k = -113 can overflow (65504 * 2^112 is
    // still finite): a maximum within 2^-11 of FLT_MAX rounds up to 2^15 when
    // scaled, which is 2^128 decoded; there a finite value saturates. Two
    // loops, so that the common one stays a plain vectorised multiply.
    const int k = le32(head[s]);
    const float inv = std::ldexp(1.0f, -k);
    if (k > kMinExp) {
      size_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
      if constexpr (kLittle)
        for (const __m256 sc = _mm256_set1_ps(inv); i + 8 <= n; i += 8)
          _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))), sc));
#endif
      for (; i < n; ++i) o[i] = (float)std::bit_cast<half>(le16(h[i])) * inv;
    } else {
      constexpr float kMax = std::numeric_limits<float>::max();
      for (size_t i = 0; i < n; ++i) {
        const float v = (float)std::bit_cast<half>(le16(h[i]));
        const float y = v * inv;
        o[i] = std::fabs(v) <= 65504.0f ? std::fmin(std::fmax(y, -kMax), kMax) : y;
      }
    }
    h += n;
    o += n;
  }
}

std::vector<std::byte> encode_blob(BlobFormat f, std::span<const float> in, std::span<const size_t> segments) {
  std::vector<std::byte> out(encoded_size(f, in.size(), segments.size()));
  switch (f) {
    case BlobFormat::F32: {
      const EncodedBlob b(in);
      std::memcpy(out.data(), b.bytes().data(), out.size());
      break;
    }
    case BlobFormat::BF16: encode_bf16(in, out); break;
    case BlobFormat::F16S: encode_f16s(in, segments, out); break;
  }
  return out;
}

void decode_blob(BlobFormat f, std::span<const std::byte> bytes, std::span<const size_t> segments,
                 std::span<float> out) {
  switch (f) {
    case BlobFormat::F32: decode_floats(bytes, out); break;
    case BlobFormat::BF16: decode_bf16(bytes, out); break;
    case BlobFormat::F16S: decode_f16s(bytes, segments, out); break;
  }
}

}  // namespace gannf::cluster
