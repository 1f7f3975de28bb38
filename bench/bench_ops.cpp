// Per-op CPU benchmarks at the real DCGAN shapes, with the sgemm roof measured
// in the same run.
//
// Every convolution and transposed convolution of G and D (forward, and
// backward = data + weight), every BN and activation, and Adam over G's whole
// parameter buffer, at batch 64 of 64x64 images unless flags say otherwise.
// Beside them, sgemm at exactly the GEMM shapes each conv layer issues
// (M, N, K, transposes and count, as conv2d.cpp / conv_transpose2d.cpp chunk
// the batch) and at a large square size: the roof every conv figure is read
// against. At the end it prints, per stride-2 layer between the first and the
// last, forward+backward GFLOP/s as a % of that roof (medians when run with
// --benchmark_repetitions).
//
// Before anything is timed, every conv layer's forward, backward-data and
// backward-weight are checked against a direct double-precision loop on a
// 3-image slice; a mismatch exits 1.
//
//   bench_ops [--batch=64] [--image-size=64] [--nc=3] [--nz=100] [--f=64]
//             [--check=1] [Google Benchmark flags]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench_common.h"
#include "dcgan.h"
#include "gemm.h"
#include "ops.h"

using namespace gannf;
using gannf::bench::Floats;

namespace {

struct ConvLayer {
  std::string name;  // "D.main.2"
  bool transposed;
  ConvDims d;
  bool inner_stride2;  // stride 2, neither the first nor the last conv of its net
};
struct BnLayer {
  std::string name;
  int C, HW;
};
struct ActLayer {
  std::string name;
  LayerKind kind;
  size_t n;  // per batch
};

struct Model {
  std::vector<ConvLayer> convs;
  std::vector<BnLayer> bns;
  std::vector<ActLayer> acts;
  size_t g_params = 0, d_params = 0;
};

// The layers are read from the real G and D (built for one image; only their
// geometry is used), so the benchmark follows the model if it ever changes.
Model read_model(const DcganConfig& cfg, int B) {
  auto be = make_backend<float>("cpu");
  Net<float> G(*be, "G"), D(*be, "D");
  build_generator(G, cfg, 1);
  build_discriminator(D, cfg, 1);
  Model m;
  for (Net<float>* net : {&G, &D}) {
    std::vector<ConvLayer> convs;
    for (const auto& l : net->layers()) {
      const std::string name = net->name() + ".main." + std::to_string(l.index);
      const int HW = l.H_out * l.W_out;
      switch (l.kind) {
        case LayerKind::Conv:
        case LayerKind::ConvTranspose: {
          ConvDims d{B, l.C_in, l.H_in, l.W_in, l.C_out, l.H_out, l.W_out, l.K, l.stride, l.pad};
          convs.push_back({name, l.kind == LayerKind::ConvTranspose, d, false});
          break;
        }
        case LayerKind::BatchNorm:
          m.bns.push_back({name, l.C_out, HW});
          break;
        default:
          m.acts.push_back({name, l.kind, (size_t)B * l.C_out * HW});
      }
    }
    for (size_t i = 1; i + 1 < convs.size(); i++) convs[i].inner_stride2 = convs[i].d.stride == 2;
    m.convs.insert(m.convs.end(), convs.begin(), convs.end());
  }
  m.g_params = G.num_params();
  m.d_params = D.num_params();
  return m;
}

double conv_flops(const ConvLayer& c) {
  return c.transposed ? conv_transpose2d_flops(c.d) : conv2d_flops(c.d);
}
size_t conv_ws(const ConvLayer& c) {
  return c.transposed ? cpu::conv_transpose2d_workspace_size(c.d) : cpu::conv2d_workspace_size(c.d);
}
size_t conv_ws_min(const ConvLayer& c) {
  return c.transposed ? cpu::conv_transpose2d_workspace_min(c.d) : cpu::conv2d_workspace_min(c.d);
}
size_t weight_size(const ConvDims& d) { return (size_t)d.C_in * d.C_out * d.K * d.K; }

// ---- correctness: a direct loop in double ----------------------------------------
// Both convolutions are written as one scatter over (b, input-or-grid position,
// tap): for conv2d the grid is the output, for the transposed conv the input.
// Each visit relates one "image" pixel I to one "grid" pixel O through weight w.
struct Direct {
  std::vector<double> out, dinp, dw;
};
Direct direct_conv(const ConvLayer& c, const Floats& inp, const Floats& w, const Floats& dout) {
  const ConvDims& d = c.d;
  Direct r;
  r.out.assign((size_t)d.B * d.C_out * d.H_out * d.W_out, 0.0);
  r.dinp.assign((size_t)d.B * d.C_in * d.H_in * d.W_in, 0.0);
  r.dw.assign(weight_size(d), 0.0);
  // conv2d: grid = output, image = input, w[co][ci]; convT: grid = input,
  // image = output, w[ci][co].
  const int Hg = c.transposed ? d.H_in : d.H_out, Wg = c.transposed ? d.W_in : d.W_out;
  const int Hi = c.transposed ? d.H_out : d.H_in, Wi = c.transposed ? d.W_out : d.W_in;
  for (int b = 0; b < d.B; b++)
    for (int ci = 0; ci < d.C_in; ci++)
      for (int co = 0; co < d.C_out; co++)
        for (int kh = 0; kh < d.K; kh++)
          for (int kw = 0; kw < d.K; kw++) {
            const size_t wi = c.transposed ? (((size_t)ci * d.C_out + co) * d.K + kh) * d.K + kw
                                           : (((size_t)co * d.C_in + ci) * d.K + kh) * d.K + kw;
            const double wv = w.data()[wi];
            for (int gh = 0; gh < Hg; gh++) {
              const int ih = gh * d.stride - d.pad + kh;
              if (ih < 0 || ih >= Hi) continue;
              for (int gw = 0; gw < Wg; gw++) {
                const int iw = gw * d.stride - d.pad + kw;
                if (iw < 0 || iw >= Wi) continue;
                // index of the input-side and output-side pixel
                size_t xi, yi;
                if (!c.transposed) {
                  xi = (((size_t)b * d.C_in + ci) * d.H_in + ih) * d.W_in + iw;
                  yi = (((size_t)b * d.C_out + co) * d.H_out + gh) * d.W_out + gw;
                } else {
                  xi = (((size_t)b * d.C_in + ci) * d.H_in + gh) * d.W_in + gw;
                  yi = (((size_t)b * d.C_out + co) * d.H_out + ih) * d.W_out + iw;
                }
                r.out[yi] += wv * inp.data()[xi];
                r.dinp[xi] += wv * dout.data()[yi];
                r.dw[wi] += (double)inp.data()[xi] * dout.data()[yi];
              }
            }
          }
  return r;
}

// Float sums of up to B*H*W*C*K*K products of values in [-1, 1]: rounding
// grows like sqrt(terms) * 6e-8 relative to the largest partial sums, well
// under 1e-4 of the tensor's largest value; an indexing bug is O(1) off.
bool close(const char* what, const std::string& layer, const float* got,
           const std::vector<double>& ref, const float* base = nullptr) {
  double maxref = 0, maxerr = 0;
  size_t worst = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double r = ref[i] + (base ? base[i] : 0.0);
    maxref = std::max(maxref, std::fabs(r));
    const double e = std::fabs(got[i] - r);
    if (!(e <= maxerr)) maxerr = e, worst = i;  // also catches NaN
  }
  const double tol = 1e-5 + 1e-4 * maxref;
  if (maxerr <= tol) return true;
  std::fprintf(stderr, "FAIL %s %s: max |err| %.3g at %zu (tolerance %.3g, max |ref| %.3g)\n",
               layer.c_str(), what, maxerr, worst, tol, maxref);
  return false;
}

bool check_conv(const ConvLayer& full, bool min_ws) {
  ConvLayer c = full;
  c.d.B = 3;  // odd, so chunks of 2 leave a remainder
  const ConvDims& d = c.d;
  Rng rng(7);
  Floats inp((size_t)d.B * d.C_in * d.H_in * d.W_in), w(weight_size(d));
  Floats dout((size_t)d.B * d.C_out * d.H_out * d.W_out);
  inp.fill_uniform(rng);
  w.fill_uniform(rng);
  dout.fill_uniform(rng);
  const Direct ref = direct_conv(c, inp, w, dout);
  // The full-speed workspace (per-thread chunks, with a remainder chunk at
  // B = 3) and the minimum one (a single image at a time, shared).
  const size_t ws_n = min_ws ? conv_ws_min(c) : conv_ws(c);
  Floats ws(ws_n), out(dout.size()), dinp(inp.size()), dw(w.size()), dw0(w.size());
  dw0.fill_uniform(rng);  // dweight accumulates: start from non-zero
  std::copy(dw0.data(), dw0.data() + dw0.size(), dw.data());
  std::fill(dinp.data(), dinp.data() + dinp.size(), 1e3f);  // dinp is overwritten
  if (c.transposed) {
    cpu::conv_transpose2d_forward(out.data(), inp.data(), w.data(), d, ws.data(), ws_n);
    cpu::conv_transpose2d_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), d,
                                   ws.data(), ws_n);
  } else {
    cpu::conv2d_forward(out.data(), inp.data(), w.data(), d, ws.data(), ws_n);
    cpu::conv2d_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), d, ws.data(),
                         ws_n);
  }
  bool ok = close("forward", c.name, out.data(), ref.out);
  ok &= close("backward data", c.name, dinp.data(), ref.dinp);
  ok &= close("backward weight", c.name, dw.data(), ref.dw, dw0.data());
  return ok;
}

bool check_gemm() {
  // All four transpose combinations the convolutions use, odd sizes.
  const int M = 37, N = 53, K = 29;
  Rng rng(3);
  Floats A(M * K), Bm(K * N), C(M * N);
  A.fill_uniform(rng);
  Bm.fill_uniform(rng);
  bool ok = true;
  for (int t = 0; t < 4; t++) {
    const bool ta = t & 1, tb = t & 2;
    cpu::gemm(ta, tb, M, N, K, 1.f, A.data(), ta ? M : K, Bm.data(), tb ? K : N, 0.f, C.data(), N);
    double err = 0;
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        double s = 0;
        for (int k = 0; k < K; k++)
          s += (double)(ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k]) *
               (tb ? Bm[(size_t)j * K + k] : Bm[(size_t)k * N + j]);
        err = std::max(err, std::fabs(s - C[(size_t)i * N + j]));
      }
    if (err > 1e-4) {
      std::fprintf(stderr, "FAIL sgemm ta=%d tb=%d: max |err| %.3g\n", ta, tb, err);
      ok = false;
    }
  }
  return ok;
}

// ---- the GEMMs a conv layer issues ---------------------------------------------------
// Read from the plan the kernels themselves follow (conv2d_plan /
// conv_transpose2d_plan in gemm.h, full-speed workspace): chunks of nb images,
// one GEMM per chunk, block of channels and role, `threads` single-threaded
// GEMMs side by side (threads == 1: one OpenBLAS-threaded GEMM at a time); or,
// for a layer that is one plain GEMM over the batch, that GEMM. The three
// roles' FLOPs add up to 3x the layer's.
struct Gemm {
  const char* role;  // fwd, bwd_data, bwd_weight
  bool ta, tb;
  int M, N, K;
  int count;        // GEMMs of this shape
  int threads;      // run side by side on this many threads
  std::string tag;  // "" or which remainder (chunk, channel block) it is
};
std::vector<Gemm> issued_gemms(const ConvLayer& c) {
  const ConvDims& d = c.d;
  const cpu::ChunkPlan p = c.transposed ? cpu::conv_transpose2d_plan(d, true, SIZE_MAX)
                                        : cpu::conv2d_plan(d, true, SIZE_MAX);
  const int KK = d.K * d.K;
  std::vector<Gemm> g;
  if (p.direct) {
    if (!c.transposed) {
      const int CKK = d.C_in * KK;
      g.push_back({"fwd", false, true, d.B, d.C_out, CKK, 1, 1, ""});
      g.push_back({"bwd_data", false, false, d.B, CKK, d.C_out, 1, 1, ""});
      g.push_back({"bwd_weight", true, false, d.C_out, CKK, d.B, 1, 1, ""});
    } else {
      const int OKK = d.C_out * KK;
      g.push_back({"fwd", false, false, d.B, OKK, d.C_in, 1, 1, ""});
      g.push_back({"bwd_data", false, true, d.B, d.C_in, OKK, 1, 1, ""});
      g.push_back({"bwd_weight", true, false, d.C_in, OKK, d.B, 1, 1, ""});
    }
    return g;
  }
  const size_t grid = c.transposed ? (size_t)d.H_in * d.W_in : (size_t)d.H_out * d.W_out;
  // Each chunk's col matrix is built and used a block of channels at a time
  // (block_channels in gemm.h): one GEMM per block and role.
  const int C = c.transposed ? d.C_out : d.C_in;  // the channels of the unrolled image
  const int cb = cpu::block_channels(C, d.K), nblk = C / cb, crest = C % cb;
  auto add = [&](int n_img, int chunks, const std::string& tag) {
    const int N = (int)(n_img * grid);
    for (int part = 0; part < 2; part++) {
      const int rows = (part == 0 ? cb : crest) * KK, count = chunks * (part == 0 ? nblk : 1);
      if (rows == 0 || count == 0) continue;
      const std::string t = tag + (part == 1 ? "_lastblock" : "");
      if (!c.transposed) {
        g.push_back({"fwd", false, false, d.C_out, N, rows, count, p.threads, t});
        g.push_back({"bwd_data", true, false, rows, N, d.C_out, count, p.threads, t});
        g.push_back({"bwd_weight", false, true, d.C_out, rows, N, count, p.threads, t});
      } else {
        g.push_back({"fwd", true, false, rows, N, d.C_in, count, p.threads, t});
        g.push_back({"bwd_data", false, false, d.C_in, N, rows, count, p.threads, t});
        g.push_back({"bwd_weight", false, true, d.C_in, rows, N, count, p.threads, t});
      }
    }
  };
  add(p.nb, d.B / p.nb, "");
  // The remainder chunk runs on one thread while the others idle: time it alone.
  if (d.B % p.nb) add(d.B % p.nb, 1, "_rest");
  return g;
}
double gemm_flops(const Gemm& g) { return 2.0 * g.M * g.N * g.K * g.count; }

void set_flops(benchmark::State& st, double flops_per_iter) {
  st.counters["flops"] =
      benchmark::Counter(flops_per_iter * (double)st.iterations(), benchmark::Counter::kIsRate);
}
void set_bytes(benchmark::State& st, double bytes_per_iter) {
  st.counters["bytes"] =
      benchmark::Counter(bytes_per_iter * (double)st.iterations(), benchmark::Counter::kIsRate);
}

// ---- benchmarks ------------------------------------------------------------------------
void bm_conv(benchmark::State& st, const ConvLayer& c, bool backward) {
  const ConvDims& d = c.d;
  Rng rng(11);
  Floats inp((size_t)d.B * d.C_in * d.H_in * d.W_in), w(weight_size(d)), dw(weight_size(d));
  Floats out((size_t)d.B * d.C_out * d.H_out * d.W_out), dout(out.size()), dinp(inp.size());
  Floats ws(conv_ws(c));
  inp.fill_uniform(rng);
  w.fill_normal(rng, 0.f, 0.02f);
  dout.fill_uniform(rng);
  gannf::bench::CpuShare share;
  for (auto _ : st) {
    if (!backward && !c.transposed)
      cpu::conv2d_forward(out.data(), inp.data(), w.data(), d, ws.data(), ws.size());
    else if (!backward)
      cpu::conv_transpose2d_forward(out.data(), inp.data(), w.data(), d, ws.data(), ws.size());
    else if (!c.transposed)
      cpu::conv2d_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), d, ws.data(),
                           ws.size());
    else
      cpu::conv_transpose2d_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), d,
                                     ws.data(), ws.size());
    benchmark::ClobberMemory();
  }
  set_flops(st, conv_flops(c) * (backward ? 2 : 1));
  st.counters["cpu_share"] = share.get(omp_get_max_threads());
}

// One role's GEMMs of one layer: `count` GEMMs, spread over `threads` threads
// as the conv spreads its chunks (each thread on its own operands, as each
// conv thread has its own col matrix).
void bm_gemm(benchmark::State& st, Gemm g) {
  struct Ops {
    Floats A, B, C;
  };
  std::vector<Ops> ops(g.threads);
  Rng rng(5);
  for (auto& o : ops) {
    o.A = Floats((size_t)g.M * g.K);
    o.B = Floats((size_t)g.K * g.N);
    o.C = Floats((size_t)g.M * g.N);
    o.A.fill_uniform(rng);
    o.B.fill_uniform(rng);
  }
  const int lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N;
  auto one = [&](Ops& o) {
    cpu::gemm(g.ta, g.tb, g.M, g.N, g.K, 1.f, o.A.data(), lda, o.B.data(), ldb, 0.f, o.C.data(),
              g.N);
  };
  gannf::bench::CpuShare share;
  for (auto _ : st) {
    if (g.threads > 1) {
#pragma omp parallel num_threads(g.threads)
      {
        Ops& o = ops[omp_get_thread_num()];
#pragma omp for schedule(static)
        for (int i = 0; i < g.count; i++) one(o);
      }
    } else {
      for (int i = 0; i < g.count; i++) one(ops[0]);
    }
    benchmark::ClobberMemory();
  }
  set_flops(st, gemm_flops(g));
  st.counters["cpu_share"] = share.get(omp_get_max_threads());
}

// BN: the minimum traffic is read x, write y (forward) and read x, dy, write
// dx (backward); the kernels make one more pass over x (forward: mean, then
// variance) or over x and dy (backward), which the counter does not credit.
void bm_bn(benchmark::State& st, BnLayer l, int B, bool backward) {
  const size_t n = (size_t)B * l.C * l.HW;
  Rng rng(13);
  Floats x(n), y(n), dy(n), dx(n), gamma(l.C), beta(l.C), mean(l.C), var(l.C), dg(l.C), db(l.C);
  x.fill_uniform(rng);
  dy.fill_uniform(rng);
  gamma.fill_normal(rng, 1.f, 0.02f);
  cpu::batchnorm2d_forward_train(y.data(), mean.data(), var.data(), x.data(), gamma.data(),
                                 beta.data(), B, l.C, l.HW, 1e-5f);
  for (auto _ : st) {
    if (backward)
      cpu::batchnorm2d_backward(dx.data(), dg.data(), db.data(), dy.data(), x.data(), gamma.data(),
                                mean.data(), var.data(), B, l.C, l.HW, 1e-5f);
    else
      cpu::batchnorm2d_forward_train(y.data(), mean.data(), var.data(), x.data(), gamma.data(),
                                     beta.data(), B, l.C, l.HW, 1e-5f);
    benchmark::ClobberMemory();
  }
  set_bytes(st, (backward ? 12.0 : 8.0) * n);
}

void bm_act(benchmark::State& st, ActLayer l, bool backward) {
  Rng rng(17);
  Floats x(l.n), y(l.n), dy(l.n), dx(l.n);
  x.fill_uniform(rng);
  dy.fill_uniform(rng);
  for (auto _ : st) {
    switch (l.kind) {
      case LayerKind::ReLU:
        backward ? cpu::relu_backward(dx.data(), dy.data(), y.data(), l.n)
                 : cpu::relu_forward(y.data(), x.data(), l.n);
        break;
      case LayerKind::LeakyReLU:
        backward ? cpu::leaky_relu_backward(dx.data(), dy.data(), y.data(), l.n, 0.2f)
                 : cpu::leaky_relu_forward(y.data(), x.data(), l.n, 0.2f);
        break;
      default:
        backward ? cpu::tanh_backward(dx.data(), dy.data(), y.data(), l.n)
                 : cpu::tanh_forward(y.data(), x.data(), l.n);
    }
    benchmark::ClobberMemory();
  }
  set_bytes(st, (backward ? 12.0 : 8.0) * l.n);
}

// Adam reads params, m, v, grads and writes params, m, v: 28 bytes a parameter.
void bm_adam(benchmark::State& st, size_t n) {
  Rng rng(19);
  Floats p(n), m(n), v(n), g(n);
  p.fill_normal(rng, 0.f, 0.02f);
  g.fill_normal(rng, 0.f, 1e-3f);
  int64_t step = 0;
  for (auto _ : st) {
    cpu::adam_update(p.data(), m.data(), v.data(), g.data(), n, cpu::AdamParams{}, ++step);
    benchmark::ClobberMemory();
  }
  set_bytes(st, 28.0 * n);
}

// The memory roof for the element-wise ops: a plain copy of Adam's working set.
void bm_copy(benchmark::State& st, size_t n) {
  Floats a(n), b(n);
  for (auto _ : st) {
    std::memcpy(b.data(), a.data(), n * sizeof(float));
    benchmark::ClobberMemory();
  }
  set_bytes(st, 8.0 * n);
}

std::string shape_label(const ConvLayer& c) {
  const ConvDims& d = c.d;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %dx%dx%d -> %dx%dx%d k%d s%d p%d",
                c.transposed ? "convT" : "conv", d.C_in, d.H_in, d.W_in, d.C_out, d.H_out, d.W_out,
                d.K, d.stride, d.pad);
  return buf;
}
std::string gemm_label(const Gemm& g) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%c%c M%d N%d K%d x%d/%dthr", g.ta ? 'T' : 'N', g.tb ? 'T' : 'N',
                g.M, g.N, g.K, g.count, g.threads);
  return buf;
}

// One benchmark per role; a remainder chunk's GEMMs get their own.
std::string gemm_name(const ConvLayer& c, const Gemm& g) {
  return "sgemm/" + c.name + "/" + g.role + g.tag;
}

constexpr int kPeakSize = 2048;  // square sgemm that sits on OpenBLAS's plateau

void print_report(FILE* f, const Model& m, const gannf::bench::Collector& col) {
  const auto* peak = col.get("sgemm/square");
  const double peak_gf =
      peak ? 2.0 * kPeakSize * kPeakSize * (double)kPeakSize / peak->seconds / 1e9 : 0;
  std::fprintf(f,
               "\n# Stride-2 conv layers between the first and the last: forward + backward "
               "(data + weight)\n");
  int reps = 0;
  for (const auto& c : m.convs)
    if (const auto* r = col.get("conv/" + c.name + "/fwd")) reps = std::max(reps, r->reps);
  std::fprintf(f,
               "# against sgemm at the same GEMM shapes (roof), run in this process; medians "
               "over %d repetition(s).\n",
               reps);
  if (peak)
    std::fprintf(f, "# sgemm %dx%dx%d: %.1f GFLOP/s\n", kPeakSize, kPeakSize, kPeakSize, peak_gf);
  std::fprintf(f, "%-10s %-34s %9s %9s %9s %9s %7s %7s %6s\n", "layer", "shape", "fwd", "bwd",
               "fwd+bwd", "roof", "%roof", "%peak", "share");
  int met = 0, total = 0;
  double worst_share = 1;
  for (const auto& c : m.convs) {
    if (!c.inner_stride2) continue;
    const auto* fw = col.get("conv/" + c.name + "/fwd");
    const auto* bw = col.get("conv/" + c.name + "/bwd");
    double roof_t = 0, share = 1;
    bool have_roof = true;
    auto held = [&](const gannf::bench::Result* r) {
      auto it = r->counters.find("cpu_share");
      if (it != r->counters.end()) share = std::min(share, (double)it->second);
    };
    for (const auto& g : issued_gemms(c)) {
      const auto* r = col.get(gemm_name(c, g));
      if (!r) {
        have_roof = false;
      } else {
        roof_t += r->seconds;
        held(r);
      }
    }
    if (!fw || !bw || !have_roof) continue;
    held(fw);
    held(bw);
    worst_share = std::min(worst_share, share);
    const double F = conv_flops(c);
    const double gf_f = F / fw->seconds / 1e9, gf_b = 2 * F / bw->seconds / 1e9;
    const double gf = 3 * F / (fw->seconds + bw->seconds) / 1e9;
    const double roof = 3 * F / roof_t / 1e9;
    const double pct = 100 * gf / roof;
    total++;
    met += pct >= 60;
    std::fprintf(f, "%-10s %-34s %9.1f %9.1f %9.1f %9.1f %6.0f%% %6.0f%% %6.2f\n",
                 c.name.c_str(), shape_label(c).c_str(), gf_f, gf_b, gf, roof, pct,
                 peak_gf > 0 ? 100 * gf / peak_gf : 0.0, share);
  }
  if (total) {
    std::fprintf(f, "# GFLOP/s; target >= 60%% of the roof: %d of %d layers meet it\n", met, total);
    std::fprintf(f,
                 "# share: least share of the cores held in any of the row's benchmarks (1 = "
                 "no other load)%s\n",
                 worst_share < 0.9 ? "; BELOW 0.9: the machine was busy, rerun when idle" : "");
  }
  else
    std::fprintf(
        f, "# (no layer had its conv and sgemm benchmarks in this run; see --benchmark_filter)\n");
}

}  // namespace

int main(int argc, char** argv) {
  gannf::cpu::blas_ensure_coretype(argc, argv);
  gannf::bench::Flags flags(argc, argv, "bench_ops",
                            "Each convolution of the DCGAN (forward, backward), its GEMMs, batch norm, the\n"
                            "activations and Adam, against the machine's GEMM and memory roofs.",
                            {{"batch", 64, "images per pass"},
                             {"image-size", 64, "32 or 64"},
                             {"nc", 3, "image channels"},
                             {"nz", 100, "size of the noise vector z"},
                             {"f", 64, "network width (ngf = ndf)"},
                             {"check", 1, "1: check the kernels against direct loops before timing them"}});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    std::fputs(flags.help().c_str(), stderr);
    return 2;
  }
  const bool json = flags.format() != "console";
  FILE* info = json ? stderr : stdout;  // keep machine-readable stdout clean
  gannf::bench::print_banner(info);

  DcganConfig cfg;
  cfg.image_size = flags["image-size"];
  cfg.nc = flags["nc"];
  cfg.nz = flags["nz"];
  cfg.ngf = cfg.ndf = flags["f"];
  const int B = flags["batch"];
  Model m;
  try {
    cfg.validate();
    if (B <= 1) throw std::invalid_argument("batch must be at least 2");
    m = read_model(cfg, B);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  std::fprintf(info, "# %s, batch %d\n", cfg.describe().c_str(), B);

  if (flags["check"]) {
    bool ok = check_gemm();
    for (const auto& c : m.convs) ok &= check_conv(c, false) && check_conv(c, true);
    if (!ok) {
      std::fprintf(stderr, "bench_ops: kernels disagree with the direct loops; not timing them\n");
      return 1;
    }
    std::fprintf(info,
                 "# correctness: sgemm and all %zu conv layers (fwd, bwd data, bwd weight) "
                 "match a direct loop\n",
                 m.convs.size());
  }

  using benchmark::RegisterBenchmark;
  auto reg = [](const std::string& name, std::function<void(benchmark::State&)> fn,
                const std::string& label) {
    RegisterBenchmark(name.c_str(),
                      [fn, label](benchmark::State& st) {
                        st.SetLabel(label);
                        fn(st);
                      })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  };
  // Roof first, then each layer: conv fwd, conv bwd, then its GEMMs.
  reg(
      "sgemm/square",
      [](benchmark::State& st) {
        bm_gemm(st, {"square", false, false, kPeakSize, kPeakSize, kPeakSize, 1, 1, ""});
      },
      "NN 2048^3");
  for (const auto& c : m.convs) {
    reg(
        "conv/" + c.name + "/fwd", [c](benchmark::State& st) { bm_conv(st, c, false); },
        shape_label(c));
    reg(
        "conv/" + c.name + "/bwd", [c](benchmark::State& st) { bm_conv(st, c, true); },
        shape_label(c));
    for (const auto& g : issued_gemms(c))
      reg(
          gemm_name(c, g), [g](benchmark::State& st) { bm_gemm(st, g); }, gemm_label(g));
  }
  for (const auto& l : m.bns) {
    const std::string lab = std::to_string(l.C) + "x" + std::to_string(l.HW);
    reg(
        "bn/" + l.name + "/fwd", [l, B](benchmark::State& st) { bm_bn(st, l, B, false); }, lab);
    reg(
        "bn/" + l.name + "/bwd", [l, B](benchmark::State& st) { bm_bn(st, l, B, true); }, lab);
  }
  for (const auto& l : m.acts) {
    const char* k = l.kind == LayerKind::ReLU        ? "relu"
                    : l.kind == LayerKind::LeakyReLU ? "leaky_relu"
                                                     : "tanh";
    const std::string lab = std::string(k) + " n=" + std::to_string(l.n);
    reg(
        "act/" + l.name + "/fwd", [l](benchmark::State& st) { bm_act(st, l, false); }, lab);
    reg(
        "act/" + l.name + "/bwd", [l](benchmark::State& st) { bm_act(st, l, true); }, lab);
  }
  const size_t ng = m.g_params;
  reg(
      "adam/G", [ng](benchmark::State& st) { bm_adam(st, ng); }, std::to_string(ng) + " params");
  reg(
      "copy/G", [ng](benchmark::State& st) { bm_copy(st, 4 * ng); }, "memcpy of 4x G's buffer");

  gannf::bench::Collector col(flags.format());
  benchmark::RunSpecifiedBenchmarks(&col);
  print_report(info, m, col);
  benchmark::Shutdown();
  return 0;
}
