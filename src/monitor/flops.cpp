#include "flops.h"

#include <memory>

#include "backend.h"
#include "conv_dims.h"
#include "net.h"

namespace gannf::monitor {

namespace {

struct NetFlops {
  double forward = 0, first = 0;  // all convolutions; the first one alone
};

NetFlops conv_flops(const Net<float>& net) {
  NetFlops f;
  bool seen = false;
  for (const LayerSpec& l : net.layers()) {
    if (l.kind != LayerKind::Conv && l.kind != LayerKind::ConvTranspose) continue;
    const ConvDims d{1, l.C_in, l.H_in, l.W_in, l.C_out, l.H_out, l.W_out, l.K, l.stride, l.pad};
    const double x = l.kind == LayerKind::Conv ? conv2d_flops(d) : conv_transpose2d_flops(d);
    f.forward += x;
    if (!seen) f.first = x, seen = true;
  }
  return f;
}

}  // namespace

StepFlops gan_step_flops(const DcganConfig& cfg) {
  cfg.validate();
  auto be = make_backend<float>("cpu");
  Net<float> G(*be, "generator"), D(*be, "discriminator");
  build_generator(G, cfg, 2);
  build_discriminator(D, cfg, 2);
  const NetFlops g = conv_flops(G), d = conv_flops(D);
  StepFlops s;
  s.g_forward = g.forward;
  s.d_forward = d.forward;
  // G: forward, backward for weights, backward for data (none into the noise).
  const double g_step = 3 * g.forward - g.first;
  // D: forward twice (real, fake); backward for weights twice and for data
  // twice without the first layer (the images need no gradient); backward for
  // data once more, the first layer included, carrying G's loss to G.
  const double d_step = 2 * d.forward + 2 * (2 * d.forward - d.first) + d.forward;
  s.per_image = g_step + d_step;
  return s;
}

}  // namespace gannf::monitor
