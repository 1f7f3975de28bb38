#include "picture.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#include <stb/stb_easy_font.h>

#include "atomic_file.h"

namespace gannf {

namespace {
void write_png_atomic(const std::string& path, int w, int h, int c, const unsigned char* px) {
  int len = 0;
  unsigned char* png = stbi_write_png_to_mem(px, w * c, w, h, c, &len);
  if (!png) throw std::runtime_error(path + ": PNG encoding failed");
  try {
    write_file_atomic(path, png, (size_t)len);
  } catch (...) {
    STBIW_FREE(png);
    throw;
  }
  STBIW_FREE(png);
}

struct Canvas {
  int w, h;
  std::vector<unsigned char> px;
  Canvas(int w_, int h_) : w(w_), h(h_), px((size_t)w_ * h_ * 3, 255) {}
  void dot(int x, int y, unsigned char r, unsigned char g, unsigned char b, double a = 1.0) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    unsigned char* p = &px[((size_t)y * w + x) * 3];
    p[0] = (unsigned char)(p[0] * (1 - a) + r * a);
    p[1] = (unsigned char)(p[1] * (1 - a) + g * a);
    p[2] = (unsigned char)(p[2] * (1 - a) + b * a);
  }
  void line(double x0, double y0, double x1, double y1, unsigned char r, unsigned char g,
            unsigned char b, double a = 1.0) {
    const int n = (int)std::max(std::fabs(x1 - x0), std::fabs(y1 - y0)) + 1;
    for (int i = 0; i <= n; i++) {
      const double t = (double)i / n;
      dot((int)std::lround(x0 + t * (x1 - x0)), (int)std::lround(y0 + t * (y1 - y0)), r, g, b, a);
    }
  }
  // stb_easy_font emits quads of 4 vertices (x, y, z, colour) per glyph stroke.
  void text(int x, int y, const std::string& s, unsigned char v = 40) {
    static char buf[60000];
    const int quads = stb_easy_font_print((float)x, (float)y, (char*)s.c_str(), nullptr, buf, sizeof buf);
    for (int q = 0; q < quads; q++) {
      const float* v4 = (const float*)(buf + q * 4 * 16);
      const int x0 = (int)v4[0], y0 = (int)v4[1], x1 = (int)v4[8], y1 = (int)v4[9];
      for (int yy = y0; yy < y1; yy++)
        for (int xx = x0; xx < x1; xx++) dot(xx, yy, v, v, v);
    }
  }
};

std::string tick_label(double v) {
  char b[32];
  if (std::fabs(v) >= 10000 || (std::fabs(v) < 0.01 && v != 0))
    std::snprintf(b, sizeof b, "%.2g", v);
  else
    std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}
}  // namespace

void write_grid_png(const std::string& path, const float* images, int n, int nc, int S, int cols,
                    int gutter) {
  if (n <= 0 || (nc != 1 && nc != 3) || S <= 0 || cols <= 0)
    throw std::invalid_argument(path + ": bad grid geometry");
  cols = std::min(cols, n);
  const int rows = (n + cols - 1) / cols;
  const int W = cols * S + (cols + 1) * gutter, H = rows * S + (rows + 1) * gutter;
  std::vector<unsigned char> px((size_t)W * H * 3, 255);
  for (int i = 0; i < n; i++) {
    const int ox = gutter + (i % cols) * (S + gutter), oy = gutter + (i / cols) * (S + gutter);
    const float* img = images + (size_t)i * nc * S * S;
    for (int y = 0; y < S; y++)
      for (int x = 0; x < S; x++)
        for (int c = 0; c < 3; c++) {
          const float v = img[((size_t)(nc == 3 ? c : 0) * S + y) * S + x];
          const float u = std::clamp((v + 1.f) * 127.5f, 0.f, 255.f);
          px[((size_t)(oy + y) * W + ox + x) * 3 + c] = (unsigned char)std::lround(u);
        }
  }
  write_png_atomic(path, W, H, 3, px.data());
}

void write_line_chart_png(const std::string& path, const std::string& title,
                          const std::vector<double>& x, const std::vector<Series>& series,
                          int width, int height, int smooth) {
  Canvas cv(width, height);
  const int L = 60, R = width - 20, T = 30, Bm = height - 40;
  double xmin = x.empty() ? 0 : x.front(), xmax = x.empty() ? 1 : x.back();
  if (xmax <= xmin) xmax = xmin + 1;
  double ymin = INFINITY, ymax = -INFINITY;
  for (auto& s : series)
    for (double v : s.y)
      if (std::isfinite(v)) ymin = std::min(ymin, v), ymax = std::max(ymax, v);
  if (!std::isfinite(ymin)) ymin = 0, ymax = 1;
  if (ymin > 0 && ymin < 0.5 * ymax) ymin = 0;
  if (ymax <= ymin) ymax = ymin + 1;
  const double pad = 0.05 * (ymax - ymin);
  ymax += pad;
  auto X = [&](double v) { return L + (v - xmin) / (xmax - xmin) * (R - L); };
  auto Y = [&](double v) { return Bm - (v - ymin) / (ymax - ymin) * (Bm - T); };
  for (int i = 0; i <= 5; i++) {  // grid and ticks
    const double yv = ymin + (ymax - ymin) * i / 5, xv = xmin + (xmax - xmin) * i / 5;
    cv.line(L, Y(yv), R, Y(yv), 225, 225, 225);
    cv.line(X(xv), T, X(xv), Bm, 235, 235, 235);
    cv.text(4, (int)Y(yv) - 4, tick_label(yv));
    cv.text((int)X(xv) - 10, Bm + 8, tick_label(xv));
  }
  cv.line(L, Bm, R, Bm, 60, 60, 60);
  cv.line(L, T, L, Bm, 60, 60, 60);
  cv.text(L, 10, title);
  cv.text((L + R) / 2 - 12, height - 14, "step");
  int lx = R - 160;
  for (auto& s : series) {
    const size_t n = std::min(s.y.size(), x.size());
    for (size_t i = 1; i < n; i++)  // raw, faint
      cv.line(X(x[i - 1]), Y(s.y[i - 1]), X(x[i]), Y(s.y[i]), s.r, s.g, s.b, 0.18);
    std::vector<double> sm(n);
    double acc = 0;
    for (size_t i = 0; i < n; i++) {  // trailing moving average
      acc += s.y[i];
      if (i >= (size_t)smooth) acc -= s.y[i - smooth];
      sm[i] = acc / std::min<size_t>(i + 1, smooth);
    }
    for (size_t i = 1; i < n; i++) {
      cv.line(X(x[i - 1]), Y(sm[i - 1]), X(x[i]), Y(sm[i]), s.r, s.g, s.b);
      cv.line(X(x[i - 1]), Y(sm[i - 1]) + 1, X(x[i]), Y(sm[i]) + 1, s.r, s.g, s.b);
    }
    cv.line(lx, 16, lx + 18, 16, s.r, s.g, s.b);
    cv.line(lx, 17, lx + 18, 17, s.r, s.g, s.b);
    cv.text(lx + 22, 12, s.label);
    lx += 80;
  }
  write_png_atomic(path, width, height, 3, cv.px.data());
}

}  // namespace gannf
