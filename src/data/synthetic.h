// A built-in dataset for tests and demos without data: one to three circles,
// squares and triangles in random colours, sizes, positions and rotations on
// a two-colour gradient, antialiased (4 x 4 samples per pixel). Image i is a
// function of (seed, i) alone — gannf::Rng and IEEE +, -, *, /, sqrt only, no
// libm trigonometry — so it is the same on every machine, at any size S and
// for 1 (luma, as Pillow's convert('L')) or 3 channels.
#pragma once
#include "dataset.h"

namespace gannf::data {

class SyntheticDataset : public Source {
 public:
  SyntheticDataset(size_t count, int image_size, int channels, uint64_t seed);
  size_t size() const override { return count_; }
  int channels() const override { return channels_; }
  int image_size() const override { return size_; }
  bool get_u8(size_t index, uint8_t* out, std::string* why) const override;
  std::string item_name(size_t index) const override;
  std::string fingerprint() const override;
  std::string root() const override { return ""; }
  std::string describe() const override;

  // (C, S, S) uint8 of image `index`.
  static void render(uint64_t seed, size_t index, int image_size, int channels, uint8_t* out);

 private:
  size_t count_;
  int size_, channels_;
  uint64_t seed_;
};

}  // namespace gannf::data
