// The image transform of torchvision's usual DCGAN pipeline, PIL path:
//
//   Image.open(p).convert('L' if C == 1 else 'RGB')
//   Resize(S)        shorter side to S, longer int(S * long / short),
//                    PIL bilinear (a triangle filter widened by the
//                    down-scale factor: antialiased), in Pillow's 22-bit
//                    fixed point, one pass per axis, each rounded to uint8,
//                    in Pillow 13's pass order — reproduced bit for bit;
//   CenterCrop(S)    top = int(round((h - S) / 2.0)), Python's round, which
//                    rounds half to even;
//   ToTensor + Normalize(0.5, 0.5)   (x / 255 - 0.5) / 0.5.
//
// Channel conversion is Pillow's convert(): RGB → L is ITU-R 601-2 luma in
// 16-bit fixed point, L = (19595 R + 38470 G + 7471 B + 32768) >> 16, i.e.
// R*299/1000 + G*587/1000 + B*114/1000 rounded; L → RGB replicates; an alpha
// channel is dropped (not composited), as convert('RGB') and convert('L') do
// and so as torchvision's ImageFolder loader does.
//
// So on losslessly stored images (PNG, BMP) the uint8 pixels equal
// torchvision's exactly; JPEGs differ only by decoding (stb_image vs
// libjpeg-turbo, typically ±1–2 levels on a few pixels).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gannf::data {

// An 8-bit image, rows of pixels with c interleaved channels (1 L, 2 LA,
// 3 RGB, 4 RGBA).
struct Image8 {
  int w = 0, h = 0, c = 0;
  std::vector<uint8_t> px;  // (h, w, c)
};

// Pillow's convert() to 1 (L) or 3 (RGB) channels, see above.
Image8 convert_channels(const Image8& in, int channels);

// torchvision Resize(s) output size (w, h) for an input of w x h.
void resized_size(int w, int h, int s, int* out_w, int* out_h);

// Pillow's Image.resize((out_w, out_h), Image.BILINEAR), bit for bit.
Image8 resize_bilinear_pil(const Image8& in, int out_w, int out_h);

// torchvision CenterCrop offset along one axis: int(round((size - crop) / 2.0)).
int center_crop_offset(int size, int crop);

// convert_channels + Resize(S) + CenterCrop(S), written planar (C, S, S) uint8.
void transform_image(const Image8& in, int image_size, int channels, uint8_t* out);

// Decodes an image file and transforms it. False, with the reason in *why,
// when the file is not a readable JPEG/PNG/BMP.
bool transform_file(const std::string& path, int image_size, int channels, uint8_t* out,
                    std::string* why);

// uint8 → float in [-1, 1]: x / 127.5 - 1 (computed in double and rounded
// once, so the cache and the original files give identical floats).
extern const std::array<float, 256> kU8ToFloat;
inline void u8_to_float(const uint8_t* in, size_t n, float* out) {
  for (size_t i = 0; i < n; i++) out[i] = kU8ToFloat[in[i]];
}

}  // namespace gannf::data
