#include "synthetic.h"

#include <cmath>
#include <vector>

#include "hash.h"
#include "rng.h"

namespace gannf::data {

namespace {
struct Shape {
  int kind;  // 0 circle, 1 square, 2 triangle
  double cx, cy, r, cs, sn;
  double rgb[3];
  double vx[3], vy[3];  // triangle vertices
};

// A random unit vector, by rejection (no sin/cos: libm differs between
// machines in the last bit, sqrt does not).
void unit_vector(Rng& rng, double* cs, double* sn) {
  for (;;) {
    const double a = 2 * rng.uniform() - 1, b = 2 * rng.uniform() - 1, n2 = a * a + b * b;
    if (n2 > 0.0625 && n2 <= 1.0) {
      const double n = std::sqrt(n2);
      *cs = a / n;
      *sn = b / n;
      return;
    }
  }
}

bool inside(const Shape& s, double x, double y) {
  const double dx = x - s.cx, dy = y - s.cy;
  switch (s.kind) {
    case 0:
      return dx * dx + dy * dy <= s.r * s.r;
    case 1: {
      const double u = dx * s.cs + dy * s.sn, v = dy * s.cs - dx * s.sn, h = 0.8 * s.r;
      return u >= -h && u <= h && v >= -h && v <= h;
    }
    default: {
      double e[3];
      for (int k = 0; k < 3; k++) {
        const int j = (k + 1) % 3;
        e[k] = (s.vx[j] - s.vx[k]) * (y - s.vy[k]) - (s.vy[j] - s.vy[k]) * (x - s.vx[k]);
      }
      return (e[0] >= 0 && e[1] >= 0 && e[2] >= 0) || (e[0] <= 0 && e[1] <= 0 && e[2] <= 0);
    }
  }
}

uint8_t to_u8(double v) {
  const int i = (int)(v + 0.5);
  return (uint8_t)(i < 0 ? 0 : i > 255 ? 255 : i);
}
}  // namespace

SyntheticDataset::SyntheticDataset(size_t count, int image_size, int channels, uint64_t seed)
    : count_(count), size_(image_size), channels_(channels), seed_(seed) {}

void SyntheticDataset::render(uint64_t seed, size_t index, int S, int C, uint8_t* out) {
  Rng rng(mix64(mix64(seed ^ 0x53796E7468657469ull) + (uint64_t)index));
  double c0[3], c1[3];
  for (double& v : c0) v = (double)rng.below(256);
  for (double& v : c1) v = (double)rng.below(256);
  double gx, gy;
  unit_vector(rng, &gx, &gy);
  const int n = 1 + (int)rng.below(3);
  std::vector<Shape> shapes(n);
  for (Shape& s : shapes) {
    s.kind = (int)rng.below(3);
    s.cx = (0.15 + 0.7 * rng.uniform()) * S;
    s.cy = (0.15 + 0.7 * rng.uniform()) * S;
    s.r = (0.12 + 0.22 * rng.uniform()) * S;
    unit_vector(rng, &s.cs, &s.sn);
    for (double& v : s.rgb) v = (double)rng.below(256);
    const double c120 = -0.5, s120 = std::sqrt(3.0) / 2;
    double ux = s.cs, uy = s.sn;
    for (int k = 0; k < 3; k++) {
      s.vx[k] = s.cx + s.r * ux;
      s.vy[k] = s.cy + s.r * uy;
      const double nx = ux * c120 - uy * s120, ny = ux * s120 + uy * c120;
      ux = nx;
      uy = ny;
    }
  }
  const size_t plane = (size_t)S * S;
  for (int y = 0; y < S; y++)
    for (int x = 0; x < S; x++) {
      // Gradient along (gx, gy) across the image, 0 .. 1.
      const double px = (x + 0.5) / S * 2 - 1, py = (y + 0.5) / S * 2 - 1;
      double t = 0.5 + 0.35 * (px * gx + py * gy);
      t = t < 0 ? 0 : t > 1 ? 1 : t;
      double col[3];
      for (int k = 0; k < 3; k++) col[k] = c0[k] + (c1[k] - c0[k]) * t;
      for (const Shape& s : shapes) {
        if (x + 1 < s.cx - s.r || x > s.cx + s.r || y + 1 < s.cy - s.r || y > s.cy + s.r) continue;
        int hits = 0;
        for (int j = 0; j < 4; j++)
          for (int i = 0; i < 4; i++) hits += inside(s, x + (i + 0.5) / 4, y + (j + 0.5) / 4);
        const double a = hits / 16.0;
        for (int k = 0; k < 3; k++) col[k] = col[k] * (1 - a) + s.rgb[k] * a;
      }
      const uint8_t r = to_u8(col[0]), g = to_u8(col[1]), b = to_u8(col[2]);
      const size_t o = (size_t)y * S + x;
      if (C == 1) {
        out[o] = (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
      } else {
        out[o] = r;
        out[plane + o] = g;
        out[2 * plane + o] = b;
      }
    }
}

bool SyntheticDataset::get_u8(size_t index, uint8_t* out, std::string*) const {
  render(seed_, index, size_, channels_, out);
  return true;
}

std::string SyntheticDataset::item_name(size_t index) const {
  return "synthetic#" + std::to_string(index);
}

std::string SyntheticDataset::fingerprint() const {
  return "gannf-synthetic v1\ncount " + std::to_string(count_) + "\nseed " +
         std::to_string(seed_) + "\nsize " + std::to_string(size_) + "\nchannels " +
         std::to_string(channels_) + "\n";
}

std::string SyntheticDataset::describe() const {
  return "synthetic shapes: " + std::to_string(count_) + " images " + std::to_string(size_) +
         "x" + std::to_string(size_) + "x" + std::to_string(channels_) + ", seed " +
         std::to_string(seed_);
}

}  // namespace gannf::data
