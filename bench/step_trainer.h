// One full training step as the benchmarks time it (bench_step on the CPU,
// bench_cuda on the GPU): G and D built and initialised from a seed on the
// named back end; a step = zero gradients, GanStep::accumulate over the whole
// batch, Adam on G and on D.
#pragma once
#include <memory>
#include <string>

#include "dcgan.h"

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
  StepStats train_step(const T* real, const T* noise, int B) {
    step->zero_grads();
    StepStats s = step->accumulate(real, noise, B, 1.0 / B);
    adam_g->step(G);
    adam_d->step(D);
    return s;
  }
};

}  // namespace gannf::bench
