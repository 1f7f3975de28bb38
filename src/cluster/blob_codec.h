// Compact blob formats (issue 17): a float32 blob in half the bytes, for the
// gradient and weight blobs that dominate a unit's network traffic.
//
//   BF16   each float's upper 16 bits, rounded to nearest even: 2 bytes per
//          value, float32's exponent range, 8 significant bits.
//   F16S   FP16 with a per-tensor power-of-two scale: for each tensor (the
//          caller's segments, normally the net's parameter layout) a 4-byte
//          little-endian int32 exponent k, then every value as IEEE binary16
//          of x * 2^k. 11 significant bits, scaled so that the tensor's
//          largest finite |x| lands in [2^14, 2^15).
//
// Both are little-endian byte strings, like the float32 blobs of blob.h. The
// metadata (which format, element count, layout) lives beside the blob, as
// for float32 blobs.
//
// Exact rules (tests/test_blob_codec.cpp checks each):
//   BF16 encode: round to nearest, ties to even. A finite float never becomes
//     infinite: values that would round past the largest BF16 (|x| within
//     half a BF16 step of FLT_MAX) saturate to ±0x7F7F (3.3895e38). ±Inf stay
//     ±Inf; every NaN becomes a quiet NaN of the same sign (never Inf, which
//     plain truncation would make of a NaN whose payload sits in the low bits).
//   BF16 decode: exact (the 16 bits become a float's upper half). So
//     decode(encode(x)) == x for every float whose low 16 bits are zero, the
//     relative error is below 2^-8 otherwise (normal values), and encode(decode(b)) == b
//     for every 16-bit pattern b that is not a NaN.
//   F16S encode: k = 14 - floor(log2(max finite |x|)) clamped to [-113, 127]
//     (k = 0 for a tensor with no nonzero finite value); x * 2^k is exact in
//     float32 wherever it matters, then rounded to binary16 to nearest even.
//     The relative error is below 2^-11 for |x| >= max·2^-28 (binary16's
//     normal range); smaller values keep an absolute error of at most
//     2^-25·2^-k, those below max·2^-39 or so become ±0. (Only a tensor whose
//     maximum is below 2^-113 meets the clamp at 127: it keeps 2^-25·2^-127.) Finite values never
//     become infinite: the scaled maximum rounds to at most 2^15 < 65504. ±Inf stay
//     ±Inf and NaN stays NaN; they do not count for the scale.
//   F16S decode: RN(h * 2^-k), one correctly rounded multiply, exact unless
//     it falls in float32's subnormal range; a finite h saturates at
//     ±FLT_MAX (only a maximum within 2^-11 of FLT_MAX, rounded up to 2^15
//     when scaled, would otherwise decode to 2^128 = Inf). decode(encode(x)) == x whenever
//     x * 2^k is a binary16 value (all integers up to 2048 in magnitude, for
//     instance, with a maximum in [2^10, 2^11)).
//
// Decoding is meant for hostile bytes: the byte length is checked against
// the expected element count (and, for F16S, the segments) before anything
// is read, and an exponent outside [-113, 127] is refused; both throw
// std::invalid_argument. Finite values decode finite in both formats; NaN
// and Inf decode as such when a sender encoded them: the receiver's
// finiteness checks stay its job.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace gannf::cluster {

enum class BlobFormat { F32, BF16, F16S };
const char* to_string(BlobFormat f);
// "f32", "bf16", "f16s"; throws std::invalid_argument naming the choices.
BlobFormat parse_blob_format(const std::string& name);

// The relative L2 distance the encoding may add to a blob of normal values
// (decode(encode(x)) against x): each value's relative error is below 2^-8
// for BF16 and 2^-11 for F16S (rules above); F16S's bound is doubled for its
// tiny values, which keep an absolute error instead. 0 for F32. What a check that compares a decoded blob with a recomputed one
// adds to its tolerance.
double encoding_tolerance(BlobFormat f);

// Bytes of an encoded blob of `n` values in `segments` tensors.
size_t encoded_size(BlobFormat f, size_t n, size_t segments);

// BF16: out.size() must be 2 * in.size() (encode) and bytes.size() must be
// 2 * out.size() (decode); otherwise std::invalid_argument.
void encode_bf16(std::span<const float> in, std::span<std::byte> out);
void decode_bf16(std::span<const std::byte> bytes, std::span<float> out);

// F16S: `segments` are the tensors' element counts in order; they must sum
// to in.size() / out.size(), and the bytes must be 4 * segments.size() +
// 2 * sum exactly.
void encode_f16s(std::span<const float> in, std::span<const size_t> segments, std::span<std::byte> out);
void decode_f16s(std::span<const std::byte> bytes, std::span<const size_t> segments, std::span<float> out);

// Any format (F32: blob.h's little-endian float32 bytes); segments matter to
// F16S only. The vector forms size their output.
std::vector<std::byte> encode_blob(BlobFormat f, std::span<const float> in, std::span<const size_t> segments);
void decode_blob(BlobFormat f, std::span<const std::byte> bytes, std::span<const size_t> segments,
                 std::span<float> out);

namespace detail {
// One value each way, the rules above, for the tests' exhaustive checks.
uint16_t bf16_from_float(float x);
int f16s_exponent(float max_abs_finite);
}  // namespace detail

}  // namespace gannf::cluster
