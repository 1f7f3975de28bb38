#include "weights_delta.h"

#include <zstd.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace gannf::cluster {
namespace {

constexpr char kMagic[4] = {'G', 'W', 'D', '1'};
constexpr size_t kHeader = 4 + 8 + 4 * (1 + 4);
enum : uint8_t { kRaw = 0, kZstd = 1 };

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
void put_le(std::string& s, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s[at + i] = (char)((v >> (8 * i)) & 0xff);
}
uint64_t get_le(const std::byte* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= (uint64_t)(uint8_t)p[i] << (8 * i);
  return v;
}

}  // namespace

std::string encode_weights_delta(std::span<const float> base, std::span<const float> next, int level) {
  if (base.size() != next.size())
    throw std::invalid_argument("weights delta: the base has " + std::to_string(base.size()) +
                                " values and the new weights " + std::to_string(next.size()));
  const size_t n = base.size();
  std::vector<uint8_t> planes(4 * n);
  uint8_t* pl[4] = {planes.data(), planes.data() + n, planes.data() + 2 * n, planes.data() + 3 * n};
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < (int64_t)n; ++i) {
    const int32_t diff = (int32_t)(bits_of(next[i]) - bits_of(base[i]));
    const uint32_t z = ((uint32_t)diff << 1) ^ (uint32_t)(diff >> 31);
    pl[0][i] = (uint8_t)z;
    pl[1][i] = (uint8_t)(z >> 8);
    pl[2][i] = (uint8_t)(z >> 16);
    pl[3][i] = (uint8_t)(z >> 24);
  }
  std::vector<std::string> packed(4);
  std::vector<uint8_t> method(4, kRaw);
  std::string error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int p = 0; p < 4; ++p) {
    std::string out(ZSTD_compressBound(n), '\0');
    const size_t got = ZSTD_compress(out.data(), out.size(), pl[p], n, level);
    if (ZSTD_isError(got)) {
#pragma omp critical
      error = ZSTD_getErrorName(got);
      continue;
    }
    if (got < n) {
      out.resize(got);
      packed[p] = std::move(out);
      method[p] = kZstd;
    } else {
      packed[p].assign(reinterpret_cast<const char*>(pl[p]), n);
    }
  }
  if (!error.empty()) throw std::runtime_error("weights delta: zstd failed: " + error);
  size_t total = kHeader;
  for (const auto& s : packed) total += s.size();
  std::string out(kHeader, '\0');
  out.reserve(total);
  std::memcpy(out.data(), kMagic, 4);
  put_le(out, 4, n, 8);
  for (int p = 0; p < 4; ++p) {
    out[12 + 5 * p] = (char)method[p];
    put_le(out, 13 + 5 * p, packed[p].size(), 4);
  }
  for (const auto& s : packed) out += s;
  return out;
}

void decode_weights_delta(std::span<const float> base, std::span<const std::byte> delta, std::span<float> out) {
  const size_t n = base.size();
  auto bad = [](const std::string& why) { throw std::invalid_argument("weights delta: " + why); };
  if (out.size() != n) bad("the output has another length than the base");
  if (delta.size() < kHeader || std::memcmp(delta.data(), kMagic, 4) != 0) bad("not a GWD1 delta");
  const uint64_t count = get_le(delta.data() + 4, 8);
  if (count != n)
    bad("it holds " + std::to_string(count) + " values where the base has " + std::to_string(n));
  uint8_t method[4];
  uint64_t len[4], offset[4];
  uint64_t at = kHeader;
  for (int p = 0; p < 4; ++p) {
    method[p] = (uint8_t)delta[12 + 5 * p];
    len[p] = get_le(delta.data() + 13 + 5 * p, 4);
    if (method[p] != kRaw && method[p] != kZstd) bad("plane " + std::to_string(p) + " has an unknown method");
    if (method[p] == kRaw && len[p] != n) bad("raw plane " + std::to_string(p) + " has the wrong length");
    offset[p] = at;
    at += len[p];
  }
  if (at != delta.size())
    bad("the planes' lengths add up to " + std::to_string(at) + " bytes, not the " + std::to_string(delta.size()) +
        " there are");
  std::vector<uint8_t> planes(4 * n);
  std::string error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int p = 0; p < 4; ++p) {
    const std::byte* src = delta.data() + offset[p];
    uint8_t* dst = planes.data() + p * n;
    std::string why;
    if (method[p] == kRaw) {
      std::memcpy(dst, src, n);
    } else if (ZSTD_findFrameCompressedSize(src, len[p]) != len[p]) {
      why = "is not exactly one zstd frame";
    } else if (ZSTD_getFrameContentSize(src, len[p]) != n) {
      why = "does not state " + std::to_string(n) + " bytes";
    } else {
      const size_t got = ZSTD_decompress(dst, n, src, len[p]);
      if (ZSTD_isError(got)) why = std::string("does not decompress (") + ZSTD_getErrorName(got) + ")";
      else if (got != n) why = "decompresses to the wrong length";
    }
    if (!why.empty()) {
#pragma omp critical
      error = "plane " + std::to_string(p) + " " + why;
    }
  }
  if (!error.empty()) bad(error);
  const uint8_t* pl = planes.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < (int64_t)n; ++i) {
    const uint32_t z = (uint32_t)pl[i] | (uint32_t)pl[n + i] << 8 | (uint32_t)pl[2 * n + i] << 16 |
                       (uint32_t)pl[3 * n + i] << 24;
    const uint32_t diff = (z >> 1) ^ (0u - (z & 1));
    out[i] = float_of(bits_of(base[i]) + diff);
  }
}

}  // namespace gannf::cluster
