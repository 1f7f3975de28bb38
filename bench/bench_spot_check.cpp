// bench_spot_check: how often an honest CPU worker's unit needs the spot
// check's second opinion, or fails it, where the worker and the coordinator
// add the same terms in another order -- another thread count, or other
// OpenBLAS kernels (another machine) -- at the class's real network sizes
// (docs/security.md, "A false positive: kinks" and "an exact zero").
//
// The weights are the DCGAN initialisation after --train-steps local steps
// (gannf-train's Trainer on synthetic images). Each unit (--images images
// from a different place in the epoch) is computed as a worker computes it
// (SpotChecker::recompute, the worker's code path) with each of
// --worker-threads, then checked as the coordinator checks it
// (SpotChecker::check, tolerance spot_check_tolerance("cpu")) with each of
// --checker-threads. Each pair prints: units equal within the tolerance at
// the first comparison, passed by the second opinion, failed; and the
// relative L2 distance of the first comparison (median, largest).
//
// Another machine's kernels: run once with --save DIR under one
// OPENBLAS_CORETYPE (the worker's: its weights and gradients are written),
// then with --against DIR under another (the coordinator's: it checks
// them), e.g.
//   OPENBLAS_CORETYPE=Sandybridge bench_spot_check --units 48 --worker-threads 1 --save /tmp/w
//   bench_spot_check --units 48 --worker-threads 1 --against /tmp/w --checker-threads 2
// Another architecture (arm64 under qemu, tools/cross-arm64.sh --build-only):
// its worker's units for the same weights with --weights-from a --save folder
// of this machine (no training under the emulator), checked here with
// --against.
// A GPU worker (tools/device-check.sh): --worker-backend cuda (or cuda-tf32,
// cuda-bf16) computes the units on the GPU, as gannf-worker --backend cuda
// does, and the CPU checks them as the coordinator does, against that back
// end's tolerance.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "backend.h"
#include "blas_runtime.h"
#include "cli.h"
#include "run_settings.h"
#include "spot_check.h"
#include "trainer.h"

#ifdef GANNF_BENCH_CUDA_EMU
namespace gannf {
std::unique_ptr<Backend<float>> make_cuda_emu_backend(const std::string& name);  // backend_cuda.cpp, emulated
}
#endif

using namespace gannf;
using namespace gannf::cpu;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int image_size = 64, channels = 3, nz = 100, ngf = 64, ndf = 64;
  int images = 64, micro_batch = 0, units = 12, train_steps = 20;
  int64_t dataset_size = 100000;
  uint64_t seed = 1;
  std::string worker_threads = "1,2", checker_threads = "2";
  std::string save, against, weights_from, worker_backend = "cpu";
  double tolerance = 0;  // 0: spot_check_tolerance("cpu")
  bool quick = false, spread = false;
};

std::vector<int> parse_counts(const std::string& flag, const std::string& text) {
  std::vector<int> v;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int n = 0;
    try {
      n = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || n < 1 || n > 256)
      throw std::invalid_argument("--" + flag + " takes thread counts 1 to 256 separated by commas, not '" + text +
                                  "'");
    v.push_back(n);
  }
  if (v.empty()) throw std::invalid_argument("--" + flag + " is empty");
  return v;
}

void write_floats(const fs::path& p, const std::vector<float>& v) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), (std::streamsize)(v.size() * sizeof(float)));
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

std::vector<float> read_floats(const fs::path& p, size_t n) {
  std::ifstream f(p, std::ios::binary);
  std::vector<float> v(n);
  f.read(reinterpret_cast<char*>(v.data()), (std::streamsize)(n * sizeof(float)));
  if (!f || f.peek() != EOF)
    throw std::runtime_error(p.string() + " is not " + std::to_string(n) +
                             " floats: give --against the folder a --save run of the same sizes wrote");
  return v;
}

std::vector<float> span_vec(const float* p, size_t n) { return std::vector<float>(p, p + n); }

// A --save folder: the weights and BN statistics (NET.params, NET.stats), and
// each unit's gradients (unit_stem(...).NET).
void save_net(const fs::path& dir, const char* name, const Net<float>& n) {
  write_floats(dir / (std::string(name) + ".params"), span_vec(n.params(), n.num_params()));
  write_floats(dir / (std::string(name) + ".stats"), span_vec(n.stats(), n.num_stats()));
}

void load_net(const fs::path& dir, const char* name, Net<float>& n) {
  n.set_params(read_floats(dir / (std::string(name) + ".params"), n.num_params()));
  n.set_stats(read_floats(dir / (std::string(name) + ".stats"), n.num_stats()));
}

std::string unit_stem(size_t unit, int worker_threads) {
  return "unit" + std::to_string(unit) + ".t" + std::to_string(worker_threads);
}

}  // namespace

int main(int argc, char** argv) {
  blas_ensure_coretype(argc, argv, true);
#ifdef GANNF_BENCH_CUDA_EMU
  // The tests' build (bench_spot_check_emu): the GPU back ends are the CUDA
  // back end's host emulator.
  for (const char* name : {"cuda", "cuda-tf32", "cuda-bf16"})
    register_backend(name, [n = std::string(name)] { return make_cuda_emu_backend(n); });
#endif
  Options o;
  cli::Parser p("bench_spot_check",
                "usage: bench_spot_check [options]\n"
                "How often an honest CPU unit needs the spot check's second opinion, or fails it, when the\n"
                "worker and the coordinator differ in thread count or BLAS kernels.");
  p.opt("image-size", &o.image_size, "32 or 64");
  p.opt("channels", &o.channels, "image channels, 1 or 3");
  p.opt("nz", &o.nz, "noise size");
  p.opt("ngf", &o.ngf, "generator width");
  p.opt("ndf", &o.ndf, "discriminator width");
  p.opt("images", &o.images, "images per unit");
  p.opt("micro-batch", &o.micro_batch, "images per forward pass (0: the unit's)");
  p.opt("units", &o.units, "units to compute and check");
  p.opt("train-steps", &o.train_steps, "local training steps from the initialisation before measuring");
  p.opt("seed", &o.seed, "the run's seed (initialisation, synthetic images)");
  p.opt("worker-threads", &o.worker_threads, "the workers' thread counts, comma-separated (cpu workers)");
  p.opt("worker-backend", &o.worker_backend,
        "the workers' back end: cpu, or cuda, cuda-tf32, cuda-bf16 (a GPU worker; its tolerance is that back end's)");
  p.opt("checker-threads", &o.checker_threads, "the coordinator's thread counts, comma-separated");
  p.opt("save", &o.save, "compute the workers' side only and write it (weights, gradients) to this folder");
  p.opt("against", &o.against, "check the workers' side a --save run wrote to this folder instead of computing it");
  p.opt("weights-from", &o.weights_from,
        "start from the weights a --save run wrote to this folder instead of training (e.g. with --save on "
        "another machine)");
  p.opt("tolerance", &o.tolerance,
        "the spot check's relative L2 tolerance (0: the product's for the workers' back end)");
  p.flag("spread", &o.spread, "also measure the coordinator's own spread: each unit at another thread count");
  p.flag("quick", &o.quick, "32x32x1, width 8, 2 units of 16 images, no training (the test suite's smoke run)");
  try {
    p.parse(argc, argv);
    if (p.help_requested) {
      std::fputs(p.help().c_str(), stdout);
      return 0;
    }
    if (o.quick) {
      o.image_size = 32, o.channels = 1, o.nz = 16, o.ngf = o.ndf = 8;
      o.images = 16, o.units = 2, o.train_steps = 0;
    }
    if (!o.save.empty() && !o.against.empty()) throw std::invalid_argument("--save and --against exclude each other");
    if (!o.weights_from.empty() && !o.against.empty())
      throw std::invalid_argument("--weights-from and --against exclude each other (--against reads its weights)");
    if (o.images < 1 || o.images > 4096) throw std::invalid_argument("--images must be 1 to 4096");
    if (o.units < 1 || o.units > 10000) throw std::invalid_argument("--units must be 1 to 10000");
    if (o.train_steps < 0) throw std::invalid_argument("--train-steps must be 0 or more");
    if (o.micro_batch < 0) throw std::invalid_argument("--micro-batch must be 0 or more");
    const bool gpu_worker = o.worker_backend != "cpu";
    if (gpu_worker && !o.against.empty())
      throw std::invalid_argument(
          "--worker-backend and --against exclude each other (--against reads the workers' side)");
    // A GPU worker's units do not depend on its CPU threads: one set of them.
    const std::vector<int> wt =
        gpu_worker ? std::vector<int>{omp_get_max_threads()} : parse_counts("worker-threads", o.worker_threads);
    const std::vector<int> ct = parse_counts("checker-threads", o.checker_threads);
    const int micro = o.micro_batch > 0 ? o.micro_batch : o.images;

    cluster::RunSettings s;
    s.dataset = "synthetic:" + std::to_string(o.dataset_size), s.dataset_size = o.dataset_size, s.seed = o.seed;
    s.image_size = o.image_size, s.channels = o.channels, s.nz = o.nz, s.ngf = o.ngf, s.ndf = o.ndf;

    // The weights: the initialisation after local steps (or a --save run's).
    TrainOptions t;
    t.dataset = "synthetic:" + std::to_string(o.dataset_size > 4096 ? 4096 : o.dataset_size);
    t.image_size = o.image_size, t.channels = o.channels, t.nz = o.nz, t.ngf = o.ngf, t.ndf = o.ndf;
    t.batch_size = o.images, t.micro_batch = micro, t.seed = o.seed;
    t.output_dir = (fs::temp_directory_path() / ("bench_spot_check." + std::to_string(::getpid()))).string();
    t.sample_interval = t.checkpoint_interval = 0, t.cache = false, t.quiet = true;
    Trainer trainer(t);
    Net<float>&G = trainer.G(), &D = trainer.D();
    const std::string weights_dir = !o.against.empty() ? o.against : o.weights_from;
    if (weights_dir.empty()) {
      const auto t0 = Clock::now();
      for (int i = 0; i < o.train_steps; ++i) {
        const StepStats st = trainer.step();
        if (i + 1 == o.train_steps || (i + 1) % 10 == 0)
          std::fprintf(stderr, "trained %d of %d steps (D %.3f G %.3f), %.0f s\n", i + 1, o.train_steps, st.d_loss,
                       st.g_loss, std::chrono::duration<double>(Clock::now() - t0).count());
      }
    } else {
      load_net(weights_dir, "G", G);
      load_net(weights_dir, "D", D);
    }
    fs::remove_all(t.output_dir);

    std::string worker_kernels = gpu_worker ? o.worker_backend : blas_core_name();
    if (!weights_dir.empty()) {
      std::ifstream f(fs::path(weights_dir) / "core");
      std::string saved_kernels;
      std::getline(f, saved_kernels);
      if (!o.against.empty()) worker_kernels = saved_kernels;
      if (!(f >> o.train_steps)) throw std::runtime_error(weights_dir + "/core is not a --save run's");
    }
    const double tol = o.tolerance > 0 ? o.tolerance : cluster::spot_check_tolerance(o.worker_backend);
    std::printf("spot check of honest %s units: %dx%dx%d, nz %d, ngf %d, ndf %d; %d units of %d images "
                "(micro-batch %d) after %d local steps; tolerance %g\n",
                gpu_worker ? o.worker_backend.c_str() : "CPU", o.image_size, o.image_size, o.channels, o.nz, o.ngf,
                o.ndf, o.units, o.images, micro, o.train_steps, tol);
    std::printf("this process: %s\n", blas_summary().c_str());

    cluster::SpotChecker spot(s, "");
    std::unique_ptr<cluster::SpotChecker> gpu_spot;
    if (gpu_worker) gpu_spot = std::make_unique<cluster::SpotChecker>(s, "", o.worker_backend);
    cluster::SpotChecker& worker_spot = gpu_worker ? *gpu_spot : spot;
    std::vector<cluster::SpotChecker::Unit> units;
    for (int u = 0; u < o.units; ++u) {
      // Spread over the epoch, each a whole unit inside it.
      const int64_t span = o.dataset_size - o.images;
      units.push_back({0, (int64_t)((span * (2 * u + 1)) / (2 * o.units)), o.images, micro});
    }
    const int threads = omp_get_max_threads();
    // The workers' side: computed here, or read from a --save run.
    std::vector<std::vector<std::array<std::vector<float>, 2>>> grads(wt.size());
    for (size_t w = 0; w < wt.size(); ++w) {
      grads[w].resize(units.size());
      const auto t0 = Clock::now();
      for (size_t u = 0; u < units.size(); ++u) {
        if (o.against.empty()) {
          omp_set_num_threads(wt[w]);
          std::vector<float> out[2];
          worker_spot.recompute(G, D, std::span(&units[u], 1), out);
          grads[w][u] = {std::move(out[0]), std::move(out[1])};
        } else {
          const std::string stem = unit_stem(u, wt[w]);
          grads[w][u] = {read_floats(fs::path(o.against) / (stem + ".G"), G.num_params()),
                         read_floats(fs::path(o.against) / (stem + ".D"), D.num_params())};
        }
      }
      if (o.against.empty())
        std::fprintf(stderr, "worker side, %s, %d CPU thread(s): %d units in %.1f s\n", worker_kernels.c_str(),
                     wt[w], o.units, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    omp_set_num_threads(threads);
    if (!o.save.empty()) {
      const fs::path dir = o.save;
      fs::create_directories(dir);
      save_net(dir, "G", G);
      save_net(dir, "D", D);
      std::ofstream(dir / "core") << worker_kernels << "\n" << o.train_steps << "\n";
      for (size_t w = 0; w < wt.size(); ++w)
        for (size_t u = 0; u < units.size(); ++u) {
          const std::string stem = unit_stem(u, wt[w]);
          write_floats(dir / (stem + ".G"), grads[w][u][0]);
          write_floats(dir / (stem + ".D"), grads[w][u][1]);
        }
      std::printf("wrote the workers' side (%s kernels) to %s\n", worker_kernels.c_str(), o.save.c_str());
      return 0;
    }

    // The coordinator's side.
    int failures = 0;
    for (int c : ct) {
      omp_set_num_threads(c);
      for (size_t w = 0; w < wt.size(); ++w) {
        int equal = 0, second = 0, failed = 0;
        std::vector<double> rel[2], spread[2], ratio[2];
        int decades[8] = {};  // the larger of G's and D's distance: 0, below 1e-7, [1e-7, 1e-6), ..., 1e-2 and over
        const auto t0 = Clock::now();
        for (size_t u = 0; u < units.size(); ++u) {
          std::vector<float> ref[2];
          spot.recompute(G, D, std::span(&units[u], 1), ref);
          for (int k = 0; k < 2; ++k) rel[k].push_back(cluster::relative_l2(grads[w][u][k], ref[k]));
          const double worst = std::max(rel[0].back(), rel[1].back());
          ++decades[worst <= 0 ? 0 : std::clamp((int)std::floor(std::log10(worst)) + 9, 1, 7)];
          if (o.spread) {
            // The coordinator's own spread: the same unit at another thread
            // count (another summation order) than its own.
            std::vector<float> alt[2];
            omp_set_num_threads(c == 1 ? 2 : 1);
            spot.recompute(G, D, std::span(&units[u], 1), alt);
            omp_set_num_threads(c);
            for (int k = 0; k < 2; ++k) {
              const double own = cluster::relative_l2(alt[k], ref[k]);
              spread[k].push_back(own);
              if (rel[k].back() > 0) ratio[k].push_back(own > 0 ? rel[k].back() / own : INFINITY);
            }
          }
          const std::vector<float> submitted[2] = {grads[w][u][0], grads[w][u][1]};
          std::string note;
          const auto why = spot.check(G, D, std::span(&units[u], 1), submitted, tol, &note);
          if (why) {
            ++failed;
            std::printf("  unit %zu FAILED: %s\n", u, why->c_str());
          } else if (!note.empty()) {
            ++second;
            std::printf("  unit %zu: %s\n", u, note.c_str());
          } else {
            ++equal;
          }
        }
        for (auto& r : rel) std::sort(r.begin(), r.end());
        const std::string worker = gpu_worker ? worker_kernels
                                              : std::to_string(wt[w]) + " thread(s), " + worker_kernels + " kernels";
        std::printf("worker %s; coordinator %d thread(s), %s kernels: %d units: %d within "
                    "the tolerance at once, %d by the second opinion, %d failed; relative L2 at the first "
                    "comparison, median and largest: G %.2g, %.2g; D %.2g, %.2g (%.0f s)\n",
                    worker.c_str(), c, blas_core_name().c_str(), o.units, equal, second, failed,
                    rel[0][rel[0].size() / 2], rel[0].back(), rel[1][rel[1].size() / 2], rel[1].back(),
                    std::chrono::duration<double>(Clock::now() - t0).count());
        std::printf("  units by the larger of G's and D's distance: 0: %d, <1e-7: %d, 1e-7: %d, 1e-6: %d, 1e-5: %d, "
                    "1e-4: %d, 1e-3: %d, >=1e-2: %d\n",
                    decades[0], decades[1], decades[2], decades[3], decades[4], decades[5], decades[6], decades[7]);
        for (int k = 0; k < 2 && o.spread; ++k) {
          std::sort(spread[k].begin(), spread[k].end());
          std::sort(ratio[k].begin(), ratio[k].end());
          std::printf("  %s: the coordinator's own spread (%d against %d threads): median %.2g, largest %.2g; "
                      "the worker's distance over it: median %.2g, largest %.2g (of %zu units that differ)\n",
                      k ? "D" : "G", c, c == 1 ? 2 : 1, spread[k][spread[k].size() / 2], spread[k].back(),
                      ratio[k].empty() ? 0.0 : ratio[k][ratio[k].size() / 2], ratio[k].empty() ? 0.0 : ratio[k].back(),
                      ratio[k].size());
        }
        std::fflush(stdout);
        failures += failed;
      }
    }
    omp_set_num_threads(threads);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_spot_check: %s\n", e.what());
    return 2;
  }
}
