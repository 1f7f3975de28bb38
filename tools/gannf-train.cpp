// gannf-train: train the DCGAN on one machine, no database.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <exception>

#include "blas_runtime.h"
#include "cli.h"
#include "trainer.h"

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C: leave now
  const char msg[] = "\ngannf-train: stopping after this step (Ctrl-C again to abort)\n";
  (void)!write(2, msg, sizeof msg - 1);
}
}  // namespace

int main(int argc, char** argv) {
  gannf::TrainOptions o;
  bool no_cache = false;
  gannf::cli::Parser p("gannf-train",
                       "usage: gannf-train [options]\n"
                       "Trains the DCGAN on one machine. Writes sample grids to OUT/samples/, "
                       "losses to OUT/losses.csv\nand OUT/loss-curve.png, checkpoints to "
                       "OUT/checkpoints/. Ctrl-C finishes the step, checkpoints, exits 0.\n\n"
                       "example: gannf-train --dataset /usr/share/datasets/fashion-mnist "
                       "--image-size 32 --epochs 2");
  gannf::cli::add_model_options(
      p, {&o.dataset, &o.image_size, &o.channels, &o.nz, &o.ngf, &o.ndf});
  p.opt("epochs", &o.epochs, "passes over the dataset");
  p.opt("steps", &o.max_steps, "stop after this many steps in all (0: no limit)");
  p.opt("batch-size", &o.batch_size, "images per optimisation step");
  p.opt("micro-batch", &o.micro_batch, "images per forward pass; gradients accumulate (0: whole batch)");
  p.opt("lr", &o.adam.lr, "Adam learning rate");
  p.opt("beta1", &o.adam.beta1, "Adam beta1");
  p.opt("beta2", &o.adam.beta2, "Adam beta2");
  p.opt("output-dir", &o.output_dir, "where samples, losses and checkpoints go");
  p.opt("sample-interval", &o.sample_interval, "steps between sample grids (0: at the end only)");
  p.opt("checkpoint-interval", &o.checkpoint_interval, "steps between checkpoints (0: at the end only)");
  p.opt("resume", &o.resume, "a checkpoint folder, or 'auto' for OUT's latest");
  p.opt("seed", &o.seed, "seeds weights, data order and noise");
  p.opt("backend", &o.backend,
        "cpu, cuda (FP32), cuda-tf32 / cuda-bf16 (convolutions on TF32 / BF16 tensor cores, compute "
        "capability 8.0+) or auto (cuda when a usable GPU is found, else cpu)");
  p.opt("threads", &o.threads, "CPU threads (0: all cores)");
  p.opt("mode", &o.mode,
        "simultaneous (both nets' gradients against the same weights, as the cluster computes them) or "
        "alternating (D's step, then G's against the updated D: PyTorch's DCGAN example)");
  p.flag("no-cache", &no_cache, "decode images every time instead of packing a cache file");
  p.flag("quiet", &o.quiet, "no progress lines");
  try {
    p.parse(argc, argv);
    if (p.help_requested) {
      std::fputs(p.help().c_str(), stdout);
      return 0;
    }
    o.cache = !no_cache;
    o.validate();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-train: %s\n", e.what());
    return 2;
  }
  gannf::cpu::blas_ensure_coretype(argc, argv, o.quiet);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    gannf::Trainer t(o);
    t.run(&g_stop);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-train: %s\n", e.what());
    return 1;
  }
  return 0;
}
