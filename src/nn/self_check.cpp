#include "self_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <vector>

#include "dcgan.h"
#include "rng.h"
#include "tf32_reference.h"

namespace gannf {

namespace {

constexpr int kBatch = 4;
constexpr double kBound = 1e-3;

DcganConfig check_config() {
  DcganConfig cfg;
  cfg.image_size = 32;
  cfg.nc = 1;
  cfg.nz = 16;
  cfg.ngf = cfg.ndf = 8;
  return cfg;
}

template <class A, class B>
double rel_l2(const std::vector<A>& a, const std::vector<B>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); i++) {
    const double d = (double)a[i] - (double)ref[i];
    num += d * d;
    den += (double)ref[i] * (double)ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// One step on `be` and on the CPU in double from the same weights and batch.
void step_check(Backend<float>& be, SelfCheck& c) {
  const DcganConfig cfg = check_config();
  auto ref_be = make_backend<double>("cpu");
  Net<float> G(be, "G"), D(be, "D");
  Net<double> Gr(*ref_be, "G"), Dr(*ref_be, "D");
  build_generator(G, cfg, kBatch);
  build_discriminator(D, cfg, kBatch);
  build_generator(Gr, cfg, kBatch);
  build_discriminator(Dr, cfg, kBatch);
  G.init_dcgan(0x5e1f);
  D.init_dcgan(0xc4ec);
  for (auto [src, dst] : {std::pair{&G, &Gr}, std::pair{&D, &Dr}}) {
    const auto p = src->get_params(), st = src->get_stats();
    dst->set_params(std::vector<double>(p.begin(), p.end()));
    dst->set_stats(std::vector<double>(st.begin(), st.end()));
  }
  Rng rng(0x5e1fc4ec);
  std::vector<float> real((size_t)kBatch * cfg.nc * cfg.image_size * cfg.image_size),
      noise((size_t)kBatch * cfg.nz);
  for (auto& x : real) x = (float)(2 * rng.uniform() - 1);
  rng.fill_normal(noise.data(), noise.size());
  const std::vector<double> real_d(real.begin(), real.end()), noise_d(noise.begin(), noise.end());
  GanStep<float> step(G, D);
  GanStep<double> step_r(Gr, Dr);
  step.zero_grads();
  step_r.zero_grads();
  const StepStats s = step.accumulate(real.data(), noise.data(), kBatch, 1.0 / kBatch);
  const StepStats sr = step_r.accumulate(real_d.data(), noise_d.data(), kBatch, 1.0 / kBatch);
  c.g_err = rel_l2(G.get_grads(), Gr.get_grads());
  c.d_err = rel_l2(D.get_grads(), Dr.get_grads());
  c.loss_err = std::fabs(s.d_loss - sr.d_loss) / std::max(std::fabs(sr.d_loss), 1e-30);
}

// Every convolution of the check's DCGAN, each pass, on `be` (TF32 or BF16)
// against the double convolution of the same rounded operands (`ref`): the
// worst relative L2 distance.
double rounded_conv_check(Backend<float>& be, OperandRoundingCpu& ref) {
  const DcganConfig cfg = check_config();
  auto cpu = make_backend<float>("cpu");  // only to read the layer shapes
  Net<float> G(*cpu, "G"), D(*cpu, "D");
  build_generator(G, cfg, kBatch);
  build_discriminator(D, cfg, kBatch);
  Rng rng(0x7f32);
  double worst = 0;
  for (const Net<float>* net : {&G, &D})
    for (const LayerSpec& l : net->layers()) {
      const bool tr = l.kind == LayerKind::ConvTranspose;
      if (l.kind != LayerKind::Conv && !tr) continue;
      const ConvDims d{kBatch, l.C_in, l.H_in, l.W_in, l.C_out, l.H_out, l.W_out, l.K, l.stride, l.pad};
      const size_t nx = (size_t)kBatch * l.C_in * l.H_in * l.W_in,
                   ny = (size_t)kBatch * l.C_out * l.H_out * l.W_out,
                   nw = (size_t)l.C_in * l.C_out * l.K * l.K;
      std::vector<float> x(nx), w(nw), dy(ny);
      for (auto* v : {&x, &w, &dy}) rng.fill_normal(v->data(), v->size());
      // On the GPU.
      const size_t wsn = tr ? be.conv_transpose2d_workspace(d) : be.conv2d_workspace(d);
      Buffer<float> bx(be, nx), bw(be, nw), bdy(be, ny), by(be, ny), bdx(be, nx), bdw(be, nw),
          ws(be, std::max<size_t>(wsn, 1));
      be.upload(bx.data(), x.data(), nx);
      be.upload(bw.data(), w.data(), nw);
      be.upload(bdy.data(), dy.data(), ny);
      if (tr) {
        be.conv_transpose2d_forward(by.data(), bx.data(), bw.data(), d, ws.data(), wsn);
        be.conv_transpose2d_backward(bdx.data(), bdw.data(), bdy.data(), bx.data(), bw.data(), d,
                                     ws.data(), wsn);
      } else {
        be.conv2d_forward(by.data(), bx.data(), bw.data(), d, ws.data(), wsn);
        be.conv2d_backward(bdx.data(), bdw.data(), bdy.data(), bx.data(), bw.data(), d, ws.data(),
                           wsn);
      }
      std::vector<float> got[3] = {std::vector<float>(ny), std::vector<float>(nx),
                                   std::vector<float>(nw)};
      be.download(got[0].data(), by.data(), ny);
      be.download(got[1].data(), bdx.data(), nx);
      be.download(got[2].data(), bdw.data(), nw);
      // On the CPU, in double (dweight accumulates: from zero on both sides).
      const std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end()),
          dyd(dy.begin(), dy.end());
      std::vector<double> want[3] = {std::vector<double>(ny), std::vector<double>(nx),
                                     std::vector<double>(nw)};
      std::vector<double> wsd(tr ? ref.conv_transpose2d_workspace(d) : ref.conv2d_workspace(d));
      if (tr) {
        ref.conv_transpose2d_forward(want[0].data(), xd.data(), wd.data(), d, wsd.data(), wsd.size());
        ref.conv_transpose2d_backward(want[1].data(), want[2].data(), dyd.data(), xd.data(),
                                      wd.data(), d, wsd.data(), wsd.size());
      } else {
        ref.conv2d_forward(want[0].data(), xd.data(), wd.data(), d, wsd.data(), wsd.size());
        ref.conv2d_backward(want[1].data(), want[2].data(), dyd.data(), xd.data(), wd.data(), d,
                            wsd.data(), wsd.size());
      }
      for (int i = 0; i < 3; i++) worst = std::max(worst, rel_l2(got[i], want[i]));
    }
  return worst;
}

}  // namespace

std::string SelfCheck::describe() const {
  char line[200];
  int n = std::snprintf(line, sizeof line, "G %.1e, D %.1e, D's loss %.1e from the CPU's", g_err,
                        d_err, loss_err);
  if (conv_err >= 0)
    n += std::snprintf(line + n, sizeof line - n, "; %s convolutions %.1e", conv_math, conv_err);
  std::snprintf(line + n, sizeof line - n, " (bound %.0e)", bound);
  return line;
}

SelfCheck self_check(Backend<float>& be, Backend<float>* fp32) {
  SelfCheck c;
  c.bound = kBound;
  if (be.name() == "cuda-tf32" || be.name() == "cuda-bf16") {
    std::unique_ptr<Backend<float>> own;
    if (!fp32) {
      own = make_backend<float>("cuda");
      fp32 = own.get();
    }
    step_check(*fp32, c);
    std::unique_ptr<OperandRoundingCpu> ref;
    if (be.name() == "cuda-tf32") {
      ref = std::make_unique<Tf32RoundingCpu>();
    } else {
      ref = std::make_unique<Bf16RoundingCpu>();
      c.conv_math = "BF16";
    }
    c.conv_err = rounded_conv_check(be, *ref);
  } else {
    step_check(be, c);
  }
  // NaN fails every comparison: written so that it fails the check.
  c.ok = c.g_err <= kBound && c.d_err <= kBound && c.loss_err <= kBound &&
         (c.conv_err < 0 || c.conv_err <= kBound);
  return c;
}

std::string require_self_check(Backend<float>& be) {
  if (be.name() == "cpu") return "";
  const SelfCheck c = self_check(be);
  if (!c.ok)
    throw std::runtime_error("--backend " + be.name() + " computes wrong gradients on " + be.describe() +
                             " (self-check: " + c.describe() +
                             "); use --backend cpu, and report it with gannf-info's output");
  return "self-check of --backend " + be.name() + ": " + c.describe();
}

}  // namespace gannf
