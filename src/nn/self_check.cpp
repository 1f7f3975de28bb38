#include "self_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "dcgan.h"
#include "rng.h"
#include "tf32_reference.h"

namespace gannf {

namespace {

constexpr int kBatch = 4;

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

}  // namespace

std::string SelfCheck::describe() const {
  char line[160];
  std::snprintf(line, sizeof line, "G %.1e, D %.1e, D's loss %.1e from the CPU's (bound %.0e)",
                g_err, d_err, loss_err, bound);
  return line;
}

SelfCheck self_check(Backend<float>& be) {
  const DcganConfig cfg = check_config();
  const bool tf32 = be.name() == "cuda-tf32";
  std::unique_ptr<Backend<double>> ref_be =
      tf32 ? std::unique_ptr<Backend<double>>(std::make_unique<Tf32RoundingCpu>())
           : make_backend<double>("cpu");
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

  SelfCheck c;
  c.g_err = rel_l2(G.get_grads(), Gr.get_grads());
  c.d_err = rel_l2(D.get_grads(), Dr.get_grads());
  c.loss_err = std::fabs(s.d_loss - sr.d_loss) / std::max(std::fabs(sr.d_loss), 1e-30);
  c.bound = tf32 ? 2e-2 : 1e-3;
  // NaN fails every comparison: written so that it fails the check.
  c.ok = c.g_err <= c.bound && c.d_err <= c.bound && c.loss_err <= c.bound;
  return c;
}

}  // namespace gannf
