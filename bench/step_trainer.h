// One full training step as the benchmarks time it (bench_step on the CPU,
// bench_cuda on the GPU): G and D built and initialised from a seed on the
// named back end; a step = zero gradients, GanStep::accumulate over the whole
// batch, Adam on G and on D.
#pragma once
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "dcgan.h"
#include "op_timer.h"
#include "rng.h"

namespace gannf::bench {

template <class T>
struct StepTrainer {
  std::unique_ptr<Backend<T>> be;
  Net<T> G, D;
  std::unique_ptr<GanStep<T>> step;
  std::unique_ptr<Adam<T>> adam_g, adam_d;
  StepTrainer(const std::string& backend, const DcganConfig& cfg, int B, uint64_t seed)
      : StepTrainer(make_backend<T>(backend), cfg, B, seed) {}
  // On a given back end (e.g. bench/op_timer.h's OpTimingBackend around one).
  StepTrainer(std::unique_ptr<Backend<T>> backend, const DcganConfig& cfg, int B, uint64_t seed)
      : be(std::move(backend)), G(*be, "G"), D(*be, "D") {
    build_generator(G, cfg, B);
    build_discriminator(D, cfg, B);
    G.init_dcgan(seed);
    D.init_dcgan(seed + 1);
    step = std::make_unique<GanStep<T>>(G, D);
    adam_g = std::make_unique<Adam<T>>(*be, G.num_params(), AdamParams{});
    adam_d = std::make_unique<Adam<T>>(*be, D.num_params(), AdamParams{});
  }
  // B random images in [-1, 1) and B noise vectors (normal), from `seed`.
  struct Batch {
    std::vector<float> real, noise;
  };
  Batch random_batch(int B, uint64_t seed) const {
    Rng rng(seed);
    Batch b{std::vector<float>((size_t)B * D.in_size()), std::vector<float>((size_t)B * G.in_size())};
    for (auto& x : b.real) x = (float)(2 * rng.uniform() - 1);
    for (auto& x : b.noise) x = (float)rng.normal();
    return b;
  }
  StepStats train_step(const T* real, const T* noise, int B) {
    step->zero_grads();
    StepStats s = step->accumulate(real, noise, B, 1.0 / B);
    adam_g->step(G);
    adam_d->step(D);
    return s;
  }
};

// Where a step's time goes on `backend`, op by op (op_timer.h): `warmup`
// steps, then `steps` timed ones on random images and noise, and the table.
// roof: a line on the machine's memory bandwidth, for the GB/s column.
inline void print_step_breakdown(FILE* out, const std::string& backend, const DcganConfig& cfg,
                                 int B, int warmup, int steps, const std::string& title,
                                 const std::string& roof = "") {
  auto timing = std::make_unique<OpTimingBackend<float>>(make_backend<float>(backend));
  auto* ops = timing.get();
  StepTrainer<float> t(std::move(timing), cfg, B, 42);
  const auto [real, noise] = t.random_batch(B, 2);
  for (int i = 0; i < warmup; i++) t.train_step(real.data(), noise.data(), B);
  t.be->synchronize();
  ops->reset();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; i++) t.train_step(real.data(), noise.data(), B);
  t.be->synchronize();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  print_breakdown(out, ops->rows(), steps, wall, title);
  if (!roof.empty()) std::fprintf(out, "#   (GB/s: the least traffic each op must make; %s)\n", roof.c_str());
}

}  // namespace gannf::bench
