#include "image_transform.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "image_decode.h"

namespace gannf::data {

namespace {
constexpr std::array<float, 256> make_u8_table() {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; i++) t[i] = (float)(i / 127.5 - 1.0);
  return t;
}

// Pillow's Resample.c: coefficients in 32 - 8 - 2 = 22 fractional bits, so a
// sum of 255 * weights cannot overflow int32 even with negative lobes.
constexpr int kPrecisionBits = 32 - 8 - 2;

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift, as Pillow's lookup-table index
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // (out, 2): first input index, count
  std::vector<int32_t> k;   // (out, ksize) fixed point
};

// precompute_coeffs() + normalize_coeffs_8bpc() of Pillow's Resample.c for the
// bilinear (triangle, support 1) filter over the full box [0, in_size).
Coeffs compute_coeffs(int in_size, int out_size) {
  const float in0 = 0.f, in1 = (float)in_size;
  double scale = (double)(in1 - in0) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 1.0 * filterscale;
  Coeffs c;
  c.ksize = (int)std::ceil(support) * 2 + 1;
  c.bounds.resize(2 * (size_t)out_size);
  c.k.assign((size_t)out_size * c.ksize, 0);
  std::vector<double> kk(c.ksize);
  for (int xx = 0; xx < out_size; xx++) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    double ww = 0.0;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; x++) {
      double t = (x + xmin - center + 0.5) * ss;
      if (t < 0.0) t = -t;
      const double w = t < 1.0 ? 1.0 - t : 0.0;
      kk[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; x++)
      if (ww != 0.0) kk[x] /= ww;
    for (int x = 0; x < xmax; x++) {
      const double v = kk[x] * (1 << kPrecisionBits);
      c.k[(size_t)xx * c.ksize + x] = v < 0 ? (int32_t)(-0.5 + v) : (int32_t)(0.5 + v);
    }
    c.bounds[2 * xx] = xmin;
    c.bounds[2 * xx + 1] = xmax;
  }
  return c;
}
// Datasets resize thousands of images of one size to one size: keep the
// last few tables per thread.
const Coeffs& precompute(int in_size, int out_size) {
  struct Entry {
    int in = -1, out = -1;
    Coeffs c;
  };
  thread_local Entry cache[4];
  thread_local int next = 0;
  for (Entry& e : cache)
    if (e.in == in_size && e.out == out_size) return e.c;
  Entry& e = cache[next];
  next = (next + 1) % 4;
  e.c = compute_coeffs(in_size, out_size);
  e.in = in_size;
  e.out = out_size;
  return e.c;
}
}  // namespace

constinit const std::array<float, 256> kU8ToFloat = make_u8_table();

Image8 convert_channels(const Image8& in, int channels) {
  if (channels != 1 && channels != 3) throw std::invalid_argument("channels must be 1 or 3");
  if (in.c < 1 || in.c > 4) throw std::invalid_argument("image has an unsupported channel count");
  Image8 out;
  out.w = in.w;
  out.h = in.h;
  out.c = channels;
  const size_t n = (size_t)in.w * in.h;
  out.px.resize(n * channels);
  const uint8_t* p = in.px.data();
  uint8_t* q = out.px.data();
  if (channels == 1) {
    if (in.c <= 2) {
      for (size_t i = 0; i < n; i++) q[i] = p[i * in.c];
    } else {
      for (size_t i = 0; i < n; i++) {
        const uint8_t* s = p + i * in.c;
        q[i] = (uint8_t)((s[0] * 19595u + s[1] * 38470u + s[2] * 7471u + 0x8000u) >> 16);
      }
    }
  } else {
    for (size_t i = 0; i < n; i++) {
      const uint8_t* s = p + i * in.c;
      if (in.c <= 2) {
        q[3 * i] = q[3 * i + 1] = q[3 * i + 2] = s[0];
      } else {
        q[3 * i] = s[0];
        q[3 * i + 1] = s[1];
        q[3 * i + 2] = s[2];
      }
    }
  }
  return out;
}

void resized_size(int w, int h, int s, int* out_w, int* out_h) {
  // torchvision _compute_resized_output_size: new_long = int(s * long / short)
  // in Python floats; double division of these small exact integers is the
  // same correctly rounded quotient.
  const int shorter = w <= h ? w : h, longer = w <= h ? h : w;
  const int new_long = (int)((double)((long long)s * longer) / shorter);
  if (w <= h) {
    *out_w = s;
    *out_h = new_long;
  } else {
    *out_w = new_long;
    *out_h = s;
  }
}

namespace {
// ImagingResampleHorizontal_8bpc
Image8 horizontal_pass(const Image8& in, int out_w) {
  const int c = in.c;
  const Coeffs& k = precompute(in.w, out_w);
  Image8 out;
  out.w = out_w;
  out.h = in.h;
  out.c = c;
  out.px.resize((size_t)out_w * in.h * c);
  for (int y = 0; y < in.h; y++) {
    const uint8_t* row = in.px.data() + (size_t)y * in.w * c;
    uint8_t* orow = out.px.data() + (size_t)y * out_w * c;
    for (int xx = 0; xx < out_w; xx++) {
      const int xmin = k.bounds[2 * xx], xmax = k.bounds[2 * xx + 1];
      const int32_t* kk = k.k.data() + (size_t)xx * k.ksize;
      for (int ch = 0; ch < c; ch++) {
        int32_t ss = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < xmax; x++) ss += row[(size_t)(x + xmin) * c + ch] * kk[x];
        orow[(size_t)xx * c + ch] = clip8(ss);
      }
    }
  }
  return out;
}

// ImagingResampleVertical_8bpc, a row at a time so the inner loop runs
// along memory (integer sums: the order of the additions is free).
Image8 vertical_pass(const Image8& in, int out_h) {
  const Coeffs& k = precompute(in.h, out_h);
  Image8 out;
  out.w = in.w;
  out.h = out_h;
  out.c = in.c;
  const size_t stride = (size_t)in.w * in.c;
  out.px.resize(stride * out_h);
  std::vector<int32_t> acc(stride);
  for (int yy = 0; yy < out_h; yy++) {
    const int ymin = k.bounds[2 * yy], ymax = k.bounds[2 * yy + 1];
    const int32_t* kk = k.k.data() + (size_t)yy * k.ksize;
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; y++) {
      const uint8_t* row = in.px.data() + (size_t)(y + ymin) * stride;
      const int32_t w = kk[y];
      for (size_t i = 0; i < stride; i++) acc[i] += row[i] * w;
    }
    uint8_t* orow = out.px.data() + (size_t)yy * stride;
    for (size_t i = 0; i < stride; i++) orow[i] = clip8(acc[i]);
  }
  return out;
}
}  // namespace

Image8 resize_bilinear_pil(const Image8& in, int out_w, int out_h) {
  if (out_w <= 0 || out_h <= 0 || in.w <= 0 || in.h <= 0)
    throw std::invalid_argument("resize: empty image");
  const bool need_h = out_w != in.w, need_v = out_h != in.h;
  if (!need_h && !need_v) return in;
  if (!need_h) return vertical_pass(in, out_h);
  if (!need_v) return horizontal_pass(in, out_w);
  // Each pass rounds to uint8, so the order of the passes shows in the
  // result. Pillow (ImagingResampleInner, checked against 13.0) runs the
  // vertical pass first when the height shrinks by more than twice as many
  // pixels as the width; releases before that rule always went horizontal
  // first. The shapes gannf meets (CelebA 178x218 -> S x 1.22 S, MNIST
  // upscaling, square images) go horizontal first under both.
  const bool horizontal_first = !(in.h - out_h > 0 && in.h - out_h > (in.w - out_w) * 2);
  if (horizontal_first) return vertical_pass(horizontal_pass(in, out_w), out_h);
  return horizontal_pass(vertical_pass(in, out_h), out_w);
}

int center_crop_offset(int size, int crop) {
  // Python's round(): half to even. (size - crop) / 2 is an integer or a half.
  const int d = size - crop;
  if (d % 2 == 0) return d / 2;
  const int lo = (d - 1) / 2;  // d odd and (for Resize(S) outputs) positive
  return lo % 2 == 0 ? lo : lo + 1;
}

void transform_image(const Image8& in, int s, int channels, uint8_t* out) {
  // A grey source wanted as RGB: resize the one channel and replicate it at
  // the end. The same bytes as replicating first (each channel is resampled
  // on its own), at a third of the work.
  const bool replicate = channels == 3 && in.c <= 2;
  const int work = replicate ? 1 : channels;
  Image8 img = convert_channels(in, work);
  int rw, rh;
  resized_size(img.w, img.h, s, &rw, &rh);
  if (rw != img.w || rh != img.h) img = resize_bilinear_pil(img, rw, rh);
  const int top = center_crop_offset(img.h, s), left = center_crop_offset(img.w, s);
  for (int ch = 0; ch < work; ch++)
    for (int y = 0; y < s; y++) {
      const uint8_t* row = img.px.data() + ((size_t)(y + top) * img.w + left) * work + ch;
      uint8_t* o = out + ((size_t)ch * s + y) * s;
      for (int x = 0; x < s; x++) o[x] = row[(size_t)x * work];
    }
  if (replicate)
    for (int ch = 1; ch < 3; ch++) std::memcpy(out + (size_t)ch * s * s, out, (size_t)s * s);
}

bool transform_file(const std::string& path, int s, int channels, uint8_t* out,
                    std::string* why) {
  Image8 img;
  if (!decode_image_file(path, &img, why)) return false;
  transform_image(img, s, channels, out);
  return true;
}

}  // namespace gannf::data
