// The Fashion-MNIST classifier whose features gannf-eval's Fréchet distance
// is measured in: gannf's own layers, trained by gannf code (softmax
// cross-entropy, Adam), for the image sizes the DCGAN trains at.
//
// Layers (w = width, S = 32; at S = 64 main.0 is Conv(nc -> w, 4, 2, 1) down
// to 32x32 and the rest is the same):
//   main.0  Conv(nc -> w, 3, 1, 1)   (B, w, 32, 32)   main.1 BN, main.2 ReLU
//   main.3  Conv(w -> 2w, 4, 2, 1)   (B, 2w, 16, 16)  main.4 BN, main.5 ReLU
//   main.6  Conv(2w -> 4w, 4, 2, 1)  (B, 4w, 8, 8)    main.7 BN, main.8 ReLU
//   main.9  Conv(4w -> 8w, 4, 2, 1)  (B, 8w, 4, 4)    main.10 BN, main.11 ReLU
//   main.12 Conv(8w -> 8w, 4, 1, 0)  (B, 8w, 1, 1)    main.13 BN, main.14 ReLU
//           -- a linear layer: the kernel covers the whole 4x4 map; its
//           ReLU's output is the feature vector (8w values)
//   main.15 Conv(8w -> 10, 1, 1, 0)  (B, 10, 1, 1)    logits
#pragma once
#include <stdexcept>
#include <string>

#include "net.h"

namespace gannf::eval {

constexpr int kClasses = 10;

struct ClassifierConfig {
  int image_size = 32;  // 32 or 64
  int nc = 1;
  int width = 16;       // channels of the first stage
  int feature_dim() const { return 8 * width; }
  // Throws std::invalid_argument naming the first bad value.
  void validate() const;
  std::string describe() const;
};

// The layer whose output is the feature vector (the ReLU after main.12).
template <class T>
size_t feature_layer(const Net<T>& net) {
  return net.layers().size() - 2;
}

inline void ClassifierConfig::validate() const {
  if (image_size != 32 && image_size != 64)
    throw std::invalid_argument("classifier image size " + std::to_string(image_size) +
                                ": 32 or 64");
  if (nc != 1 && nc != 3)
    throw std::invalid_argument("classifier channels " + std::to_string(nc) + ": 1 or 3");
  if (width < 1 || width > 256)
    throw std::invalid_argument("classifier width " + std::to_string(width) + ": 1..256");
}

inline std::string ClassifierConfig::describe() const {
  return "classifier " + std::to_string(image_size) + "x" + std::to_string(image_size) + "x" +
         std::to_string(nc) + ", width " + std::to_string(width) + ", " +
         std::to_string(feature_dim()) + " features";
}

// Adds the layers to an empty net and finalizes it for batches of up to max_batch.
template <class T>
void build_classifier(Net<T>& net, const ClassifierConfig& cfg, int max_batch) {
  cfg.validate();
  const int w = cfg.width;
  int i = 0;
  auto stage = [&](int C_out, int K, int stride, int pad) {
    net.add_conv(i++, C_out, K, stride, pad, false);
    net.add_batchnorm(i++);
    net.add_activation(i++, LayerKind::ReLU);
  };
  if (cfg.image_size == 64)
    stage(w, 4, 2, 1);  // 64 -> 32: the 64x64 images hold no more detail than 32x32 ones
  else
    stage(w, 3, 1, 1);
  stage(2 * w, 4, 2, 1);  // 16x16
  stage(4 * w, 4, 2, 1);  // 8x8
  stage(8 * w, 4, 2, 1);  // 4x4
  stage(8 * w, 4, 1, 0);  // 1x1: the linear layer; its ReLU's output is the feature vector
  net.add_conv(i++, kClasses, 1, 1, 0, false);
  net.finalize(cfg.nc, cfg.image_size, cfg.image_size, max_batch);
}

}  // namespace gannf::eval
