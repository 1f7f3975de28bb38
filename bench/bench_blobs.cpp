// bench_blobs: the compact blob formats (src/cluster/blob_codec.h) against
// memcpy of the same float32 blob, measured in the same run (issue 17, 2c).
//
// The blob is a unit's gradient of the 64x64 reference networks (G and D
// parameter buffers, one segment per tensor of their layouts), filled with
// normal values of the size real gradients have. Every format is checked
// against its error bound before it is timed. Rates are of the float32 side
// (bytes of floats encoded or decoded per second), so each compares directly
// with memcpy's; the wire bytes are printed beside them.
//
// Where src/cluster is built (GANNF_BENCH_WEIGHTS_DELTA), also the exact
// weight deltas (src/cluster/weights_delta.h, issue 17 2b): the published
// parameters of both networks after Adam steps from the DCGAN
// initialisation, each delta checked to rebuild them bit for bit before it
// is timed, with all threads (the codec's loops are OpenMP ones).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "blob_codec.h"
#include "checkpoint.h"
#include "cli.h"
#include "dcgan.h"
#include "rng.h"
#ifdef GANNF_BENCH_WEIGHTS_DELTA
#include "weights_delta.h"
#endif

using namespace gannf;
using namespace gannf::cluster;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int image_size = 64, ngf = 64, ndf = 64, channels = 3;
  std::string delta_from, delta_to;  // two checkpoint folders: their weights' delta
  int reps = 20;
  bool quick = false;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median seconds of `reps` calls of f.
template <class F>
double time_it(int reps, F f) {
  std::vector<double> t;
  f();  // warm-up: pages touched, caches as in steady use
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  cli::Parser p("bench_blobs",
                "usage: bench_blobs [options]\n"
                "Encode/decode speed of the compact blob formats (bf16, f16s) against memcpy of the same\n"
                "float32 gradient blob, in one run; checks each format's error bound first.");
  p.opt("image-size", &o.image_size, "32 or 64 (the reference networks' size)");
  p.opt("ngf", &o.ngf, "generator width");
  p.opt("ndf", &o.ndf, "discriminator width");
  p.opt("channels", &o.channels, "image channels, 1 or 3 (for --delta-from/--delta-to: the checkpoints' own)");
#ifdef GANNF_BENCH_WEIGHTS_DELTA
  p.opt("delta-from", &o.delta_from,
        "a gannf-train checkpoint folder: also measure the delta from its weights to --delta-to's (the sizes above "
        "must be the checkpoints')");
  p.opt("delta-to", &o.delta_to, "the later checkpoint folder of --delta-from");
#endif
  p.opt("reps", &o.reps, "timed repetitions per measurement (the median is printed)");
  p.flag("quick", &o.quick, "small nets and few repetitions (the test suite's smoke run)");
  try {
    p.parse(argc, argv);
    if (p.help_requested) {
      std::fputs(p.help().c_str(), stdout);
      return 0;
    }
    if (o.quick) {
      o.image_size = 32;
      o.ngf = o.ndf = 16;
      o.reps = 3;
    }
    if (o.reps < 1 || o.reps > 10000) throw std::invalid_argument("--reps must be in [1, 10000]");
    DcganConfig cfg;
    cfg.image_size = o.image_size;
    cfg.ngf = o.ngf;
    cfg.ndf = o.ndf;
    cfg.nc = o.channels;
    cfg.validate();
    if (o.delta_from.empty() != o.delta_to.empty())
      throw std::invalid_argument("--delta-from and --delta-to go together");

    auto be = make_backend<float>("cpu");
    Net<float> G(*be, "generator"), D(*be, "discriminator");
    build_generator(G, cfg, 2);
    build_discriminator(D, cfg, 2);
    std::vector<size_t> seg;
    for (const Net<float>* net : {&G, &D})
      for (const TensorSpec& t : net->params_layout().tensors) seg.push_back(t.numel());
    const size_t n = G.num_params() + D.num_params();
    std::vector<float> x(n), y(n), copy(n);
    Rng rng(1);
    for (float& v : x) v = (float)(1e-3 * rng.normal());
    std::printf("# bench_blobs: %s; a unit's gradients: %zu values in %zu tensors = %.1f MB as float32\n",
                cfg.describe().c_str(), n, seg.size(), 4e-6 * (double)n);
    std::printf("# one thread (the codec's loops are single-threaded); %d timed repetitions, medians\n", o.reps);

    // Correctness first: every value within its format's bound (blob_codec.h).
    const BlobFormat formats[] = {BlobFormat::BF16, BlobFormat::F16S};
    std::vector<std::vector<std::byte>> wire;
    for (BlobFormat f : formats) {
      wire.push_back(encode_blob(f, x, seg));
      decode_blob(f, wire.back(), seg, y);
      const int bits = f == BlobFormat::BF16 ? 8 : 11;
      double worst = 0;
      for (size_t i = 0; i < n; ++i) {
        // Values far below their tensor's maximum keep an absolute bound
        // in f16s; these normal draws stay within 2^-28 of it.
        const double err = std::fabs((double)y[i] - x[i]) / std::max(std::fabs((double)x[i]), 1e-30);
        worst = std::max(worst, err);
        if (err > std::ldexp(1.0, -bits) && std::fabs(x[i]) > 1e-12) {
          std::fprintf(stderr, "bench_blobs: %s: value %zu is %.9g, decoded %.9g: beyond 2^-%d\n", to_string(f), i,
                       x[i], y[i], bits);
          return 1;
        }
      }
      std::printf("# correctness: %s round trip within 2^-%d relative (worst %.2e)\n", to_string(f), bits, worst);
    }

    const double mb = 4e-6 * (double)n;
    const double t_copy = time_it(o.reps, [&] { std::memcpy(copy.data(), x.data(), 4 * n); });
    std::printf("\n%-22s %10s %10s %12s %10s\n", "", "wire MB", "ms", "MB/s floats", "vs memcpy");
    std::printf("%-22s %10.1f %10.2f %12.0f %9.2fx\n", "memcpy (float32)", mb, 1e3 * t_copy, mb / t_copy, 1.0);
    for (size_t k = 0; k < 2; ++k) {
      const BlobFormat f = formats[k];
      std::vector<std::byte>& b = wire[k];
      const double te = time_it(o.reps, [&] {
        if (f == BlobFormat::BF16)
          encode_bf16(x, b);
        else
          encode_f16s(x, seg, b);
      });
      const double td = time_it(o.reps, [&] { decode_blob(f, b, seg, y); });
      const double wmb = 1e-6 * (double)b.size();
      std::printf("%-22s %10.1f %10.2f %12.0f %9.2fx\n", (std::string(to_string(f)) + " encode").c_str(), wmb,
                  1e3 * te, mb / te, t_copy / te);
      std::printf("%-22s %10.1f %10.2f %12.0f %9.2fx\n", (std::string(to_string(f)) + " decode").c_str(), wmb,
                  1e3 * td, mb / td, t_copy / td);
      std::printf("RESULT format=%s floats_mb=%.1f wire_mb=%.1f encode_ms=%.2f decode_ms=%.2f memcpy_ms=%.2f "
                  "encode_vs_memcpy=%.2f decode_vs_memcpy=%.2f\n",
                  to_string(f), mb, wmb, 1e3 * te, 1e3 * td, 1e3 * t_copy, t_copy / te, t_copy / td);
    }
    // At 100 Mbit/s (12.5 MB/s) the 25 MB a unit sends take 2 s: the codec's
    // milliseconds are what it costs to halve that.
    std::printf("\n# on a 100 Mbit/s link: float32 %.2f s, either compact format %.2f s per gradient blob\n",
                mb / 12.5, 1e-6 * (double)wire[0].size() / 12.5);
#ifdef GANNF_BENCH_WEIGHTS_DELTA
    // Both networks' parameters, as one worker download holds them.
    auto params = [&] {
      std::vector<float> v = G.get_params(), d = D.get_params();
      v.insert(v.end(), d.begin(), d.end());
      return v;
    };
    // The weights a worker downloads: G's and D's parameters published after
    // step s and after step s+1 of Adam (lr 2e-4) from the DCGAN
    // initialisation, with gradients of unit-sized normal noise: Adam's
    // normalised step is then of the size real training takes (at step 1
    // every parameter moves by lr exactly, the largest step there is).
    {
      G.init_dcgan(1);
      D.init_dcgan(2);
      AdamParams ap;
      ap.lr = 2e-4f;
      ap.beta1 = 0.5f;
      ap.beta2 = 0.999f;
      Adam<float> aG(*be, G.num_params(), ap), aD(*be, D.num_params(), ap);
      Rng noise(3);
      auto step = [&] {
        for (auto [net, adam] : {std::pair{&G, &aG}, std::pair{&D, &aD}}) {
          float* g = net->grads();
          for (size_t i = 0; i < net->num_params(); ++i) g[i] = (float)noise.normal();
          adam->step(*net);
        }
      };
      std::printf("\n# the weights as an exact delta from the previous step's (both networks, %.1f MB as float32; "
                  "%d threads)\n",
                  4e-6 * (double)(G.num_params() + D.num_params()), omp_get_max_threads());
      std::printf("%-22s %10s %10s %10s %10s %12s\n", "after Adam step", "wire MB", "of float32", "encode ms",
                  "decode ms", "memcpy ms");
      std::vector<float> prev = params();
      for (int s = 1; s <= (o.quick ? 2 : 20); ++s) {
        step();
        std::vector<float> cur = params(), rebuilt(cur.size()), sink(cur.size());
        std::string d = encode_weights_delta(prev, cur);
        decode_weights_delta(prev, std::span<const std::byte>(reinterpret_cast<const std::byte*>(d.data()), d.size()),
                             rebuilt);
        if (std::memcmp(rebuilt.data(), cur.data(), 4 * cur.size()) != 0) {
          std::fprintf(stderr, "bench_blobs: the delta of step %d does not rebuild the weights exactly\n", s);
          return 1;
        }
        if (s == 1 || s == 2 || s == 20) {
          const auto bytes = std::span<const std::byte>(reinterpret_cast<const std::byte*>(d.data()), d.size());
          std::string again;
          const double te = time_it(o.reps, [&] { again = encode_weights_delta(prev, cur); });
          const double td = time_it(o.reps, [&] { decode_weights_delta(prev, bytes, rebuilt); });
          const double tc = time_it(o.reps, [&] { std::memcpy(sink.data(), cur.data(), 4 * cur.size()); });
          const double fmb = 4e-6 * (double)cur.size(), wmb = 1e-6 * (double)d.size();
          std::printf("%-22d %10.1f %10.3f %10.2f %10.2f %12.2f\n", s, wmb, wmb / fmb, 1e3 * te, 1e3 * td, 1e3 * tc);
          std::printf("RESULT weights_delta step=%d floats_mb=%.1f wire_mb=%.2f ratio=%.3f encode_ms=%.2f "
                      "decode_ms=%.2f memcpy_ms=%.2f\n",
                      s, fmb, wmb, wmb / fmb, 1e3 * te, 1e3 * td, 1e3 * tc);
        }
        prev = std::move(cur);
      }
    }
    // Two checkpoints of a real training (gannf-train --checkpoint-interval 1).
    if (!o.delta_from.empty()) {
      auto load = [&](const std::string& dir) {
        load_model(dir + "/generator.safetensors", G);
        load_model(dir + "/discriminator.safetensors", D);
        return params();
      };
      const std::vector<float> a = load(o.delta_from), b = load(o.delta_to);
      std::vector<float> rebuilt(b.size());
      const std::string d = encode_weights_delta(a, b);
      decode_weights_delta(a, std::span<const std::byte>(reinterpret_cast<const std::byte*>(d.data()), d.size()),
                           rebuilt);
      if (std::memcmp(rebuilt.data(), b.data(), 4 * b.size()) != 0) {
        std::fprintf(stderr, "bench_blobs: the delta between the checkpoints does not rebuild them exactly\n");
        return 1;
      }
      const double fmb = 4e-6 * (double)b.size(), wmb = 1e-6 * (double)d.size();
      std::printf("\n# checkpoints %s -> %s: %.2f MB of %.2f MB as float32 = %.3f\n", o.delta_from.c_str(),
                  o.delta_to.c_str(), wmb, fmb, wmb / fmb);
      std::printf("RESULT weights_delta checkpoints floats_mb=%.2f wire_mb=%.2f ratio=%.3f\n", fmb, wmb, wmb / fmb);
    }
#endif
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_blobs: %s\n", e.what());
    return 1;
  }
  return 0;
}
