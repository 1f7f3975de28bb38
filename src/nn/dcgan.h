// The reference DCGAN's generator and discriminator, and one GAN training step.
//
// Generator, image size 64 (the reference), f = ngf:
//   main.0  ConvT(nz -> 8f, 4, 1, 0)   (B, nz, 1, 1)  -> (B, 8f, 4, 4)
//   main.1  BN(8f)   main.2 ReLU
//   main.3  ConvT(8f -> 4f, 4, 2, 1)   -> (B, 4f, 8, 8),   main.4 BN, main.5 ReLU
//   main.6  ConvT(4f -> 2f, 4, 2, 1)   -> (B, 2f, 16, 16), main.7 BN, main.8 ReLU
//   main.9  ConvT(2f -> f, 4, 2, 1)    -> (B, f, 32, 32),  main.10 BN, main.11 ReLU
//   main.12 ConvT(f -> nc, 4, 2, 1)    -> (B, nc, 64, 64), main.13 Tanh
// Discriminator, image size 64, f = ndf:
//   main.0  Conv(nc -> f, 4, 2, 1)     -> (B, f, 32, 32),  main.1 LeakyReLU(0.2)
//   main.2  Conv(f -> 2f, 4, 2, 1)     -> (B, 2f, 16, 16), main.3 BN, main.4 LeakyReLU
//   main.5  Conv(2f -> 4f, 4, 2, 1)    -> (B, 4f, 8, 8),   main.6 BN, main.7 LeakyReLU
//   main.8  Conv(4f -> 8f, 4, 2, 1)    -> (B, 8f, 4, 4),   main.9 BN, main.10 LeakyReLU
//   main.11 Conv(8f -> 1, 4, 1, 0)     -> (B, 1, 1, 1)     logits (the reference's
//           Sigmoid at main.12 is folded into the loss: BCE-with-logits is stable)
// Image size 32 drops one stride-2 stage from each, keeping f at the outermost
// stage: G starts at 4f (4f -> 2f -> f -> nc) and D ends at 4f.
#pragma once
#include <cstdint>
#include <string>

#include "net.h"

namespace gannf {

struct DcganConfig {
  int image_size = 64;  // 32 or 64
  int nz = 100;         // latent size
  int ngf = 64;         // generator width f
  int ndf = 64;         // discriminator width f
  int nc = 3;           // image channels, 1 or 3
  // Throws std::invalid_argument naming the first bad value.
  void validate() const;
  std::string describe() const;
};

template <class T>
void build_generator(Net<T>& G, const DcganConfig& cfg, int max_batch);
template <class T>
void build_discriminator(Net<T>& D, const DcganConfig& cfg, int max_batch);

// What one step reports; averages are over samples.
struct StepStats {
  double d_loss = 0;   // BCE(D(x), 1) + BCE(D(G(z)), 0)
  double g_loss = 0;   // BCE(D(G(z)), 1)
  double d_real = 0;   // mean sigmoid(D(x))
  double d_fake = 0;   // mean sigmoid(D(G(z)))
  double d_acc = 0;    // fraction of real and fake classified right (logit > 0 is real)
  int64_t samples = 0;
  void merge(const StepStats& o);  // sample-weighted
};

// The GAN's gradients for micro-batches, accumulated:
//  - D's gradients: D on real (label 1) and on G's fakes (label 0, fakes
//    detached) — nothing else reaches D's gradient buffer;
//  - G's gradients: D on the same fakes with label 1, back through D without
//    touching D's parameter gradients, then through G.
// Both are taken against the same weights (simultaneous updates), so a step can
// be split into micro-batches and work units and summed.
template <class T>
class GanStep {
 public:
  GanStep(Net<T>& G, Net<T>& D);
  void zero_grads();
  // real: (B, nc, S, S), noise: (B, nz), both host memory. Gradients are
  // scaled by `scale`: 1/total for the mean over an accumulation of `total` samples.
  StepStats accumulate(const T* real, const T* noise, int B, double scale);

  // The classic alternating step (PyTorch's DCGAN example), local training
  // only: all micro-batches through accumulate_d, D's optimizer step, then all
  // micro-batches through accumulate_g, G's optimizer step.
  //  - accumulate_d: what accumulate does for D (G forward, D on real and on
  //    the detached fakes); G's gradient buffer is left alone. Its g_loss is
  //    against the D before its update.
  //  - accumulate_g: G's gradients against the updated D: G forward on the
  //    same noise (G has not changed, so the same fakes) without touching G's
  //    running statistics a second time, D forward on the fakes in training
  //    mode (D's running statistics move a third time, as PyTorch's do), label
  //    1, back through D without touching D's gradients, then through G.
  //    Returns G's loss (mean BCE) and, in *d_fake, the mean D(G(z)).
  StepStats accumulate_d(const T* real, const T* noise, int B, double scale);
  double accumulate_g(const T* noise, int B, double scale, double* d_fake = nullptr);

 private:
  void load(const T* real, const T* noise, int B, double scale);  // checks, uploads
  // D on the real images and on the fakes, gradients into D's buffer; leaves
  // D's forward on the fakes in place and both passes' logits in kept_logits_.
  void d_passes(int B, T scale);
  // The D passes' statistics from kept_logits_: one download, which waits for
  // everything queued before it -- so a GPU step waits once for its losses, at
  // the end, instead of after each forward of D with the rest still to queue.
  StepStats d_stats(int B);
  // accumulate's device work (d_passes, then G's backward): run, or -- where
  // the back end captures graphs (Backend::set_graphs) -- captured on the
  // second call with the same micro-batch and scale and replayed from then
  // on, one graph launch instead of every kernel's. Host state the passes
  // change (the nets' num_batches_tracked) moves on replay by what the
  // captured run moved it.
  void passes(int B, T scale);
  struct Graph {
    int B;
    T scale;
    uint64_t handle;   // 0: seen once, not captured
    int64_t dg, dd;    // num_batches_tracked of G and D per run
  };
  std::vector<Graph> graphs_;
  Net<T>&G_, &D_;
  Backend<T>& be_;
  Buffer<T> real_, noise_, dfake_, dlogits_;
  Buffer<T> kept_logits_;  // (2B): D's logits on the real images, then on the fakes
  std::vector<T> logits_;
  const T* fake_logits_ = nullptr;  // D's output on the fakes, from d_passes
};

// Adam state for one net's flat buffer.
template <class T>
class Adam {
 public:
  Adam(Backend<T>& be, size_t n, AdamParams p) : be_(be), m_(be, n), v_(be, n), p_(p) {}
  void step(Net<T>& net);  // params -= f(grads); increments the step count first
  int64_t t = 0;           // steps taken
  AdamParams params() const { return p_; }
  T* m() { return m_.data(); }
  T* v() { return v_.data(); }
  size_t size() const { return m_.size(); }

 private:
  Backend<T>& be_;
  Buffer<T> m_, v_;
  AdamParams p_;
};

}  // namespace gannf
