#include "apng.h"

#include <zlib.h>

#include <cstdlib>
#include <stdexcept>

namespace gannf::monitor {

namespace {

void be32(std::string& o, uint32_t v) {
  o += (char)(v >> 24), o += (char)(v >> 16), o += (char)(v >> 8), o += (char)v;
}
void be16(std::string& o, uint16_t v) { o += (char)(v >> 8), o += (char)v; }

void chunk(std::string& o, const char* type, const std::string& data) {
  be32(o, (uint32_t)data.size());
  const size_t at = o.size();
  o.append(type, 4);
  o += data;
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, reinterpret_cast<const Bytef*>(o.data() + at), (uInt)(o.size() - at));
  be32(o, (uint32_t)crc);
}

uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return (uint8_t)(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

// The frame's scanlines, each with the filter that makes it smallest by the
// usual measure (sum of the bytes as signed values), deflated.
std::string image_data(const RgbImage& im) {
  const size_t stride = (size_t)im.w * 3;
  std::string raw;
  raw.reserve((stride + 1) * im.h);
  std::vector<uint8_t> zero(stride, 0), cand[5];
  for (auto& c : cand) c.resize(stride);
  for (int y = 0; y < im.h; ++y) {
    const uint8_t* cur = &im.px[y * stride];
    const uint8_t* up = y ? &im.px[(y - 1) * stride] : zero.data();
    for (size_t x = 0; x < stride; ++x) {
      const int a = x >= 3 ? cur[x - 3] : 0, b = up[x], c = x >= 3 ? up[x - 3] : 0;
      cand[0][x] = cur[x];
      cand[1][x] = (uint8_t)(cur[x] - a);
      cand[2][x] = (uint8_t)(cur[x] - b);
      cand[3][x] = (uint8_t)(cur[x] - ((a + b) >> 1));
      cand[4][x] = (uint8_t)(cur[x] - paeth(a, b, c));
    }
    int best = 0;
    long best_sum = -1;
    for (int f = 0; f < 5; ++f) {
      long sum = 0;
      for (uint8_t v : cand[f]) sum += v < 128 ? v : 256 - v;
      if (best_sum < 0 || sum < best_sum) best = f, best_sum = sum;
    }
    raw += (char)best;
    raw.append(reinterpret_cast<const char*>(cand[best].data()), stride);
  }
  uLongf n = compressBound((uLong)raw.size());
  std::string z(n, '\0');
  if (compress2(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(raw.data()),
                (uLong)raw.size(), 6) != Z_OK)
    throw std::runtime_error("APNG: deflate failed");
  z.resize(n);
  return z;
}

}  // namespace

std::string encode_apng(const std::vector<RgbImage>& frames, int delay_ms, int hold_ms) {
  if (frames.empty()) throw std::invalid_argument("APNG: no frames");
  const int w = frames[0].w, h = frames[0].h;
  if (w <= 0 || h <= 0) throw std::invalid_argument("APNG: empty frame");
  for (const RgbImage& f : frames)
    if (f.w != w || f.h != h || f.px.size() != (size_t)w * h * 3)
      throw std::invalid_argument("APNG: frames of different sizes (" + std::to_string(f.w) + "x" +
                                  std::to_string(f.h) + " after " + std::to_string(w) + "x" + std::to_string(h) + ")");
  std::string o("\x89PNG\r\n\x1a\n", 8), d;
  be32(d, w), be32(d, h);
  d += (char)8, d += (char)2, d += (char)0, d += (char)0, d += (char)0;  // 8-bit RGB, deflate, no interlace
  chunk(o, "IHDR", d);
  d.clear();
  be32(d, (uint32_t)frames.size()), be32(d, 0);  // frames, plays forever
  chunk(o, "acTL", d);
  uint32_t seq = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    d.clear();
    be32(d, seq++), be32(d, w), be32(d, h), be32(d, 0), be32(d, 0);
    be16(d, (uint16_t)(i + 1 == frames.size() ? hold_ms : delay_ms)), be16(d, 1000);
    d += (char)0, d += (char)0;  // dispose: none; blend: source (each frame is whole)
    chunk(o, "fcTL", d);
    const std::string z = image_data(frames[i]);
    if (i == 0) {
      chunk(o, "IDAT", z);
    } else {
      d.clear();
      be32(d, seq++);
      chunk(o, "fdAT", d + z);
    }
  }
  chunk(o, "IEND", "");
  return o;
}

std::vector<size_t> pick_frames(size_t count, size_t frames) {
  std::vector<size_t> out;
  if (count == 0 || frames == 0) return out;
  if (frames >= count || frames == 1) {
    for (size_t i = (frames == 1 ? count - 1 : 0); i < count; ++i) out.push_back(i);
    return out;
  }
  for (size_t k = 0; k < frames; ++k) {
    const size_t i = (size_t)((double)k * (double)(count - 1) / (double)(frames - 1) + 0.5);
    if (out.empty() || out.back() != i) out.push_back(i);
  }
  return out;
}

}  // namespace gannf::monitor
