// A unit's result of the real sizes without computing it: what bench_db's
// and bench_load's load workers submit, so that the database and the network
// carry exactly what a real worker's submission carries.
#pragma once

#include <cstddef>
#include <vector>

#include "net.h"
#include "protocol.h"
#include "rng.h"
#include "run_settings.h"

namespace gannf::cluster {

// A unit's result with the real sizes: random finite gradients, BN statistics
// of every forward pass with positive variances.
struct FakeResult {
  std::vector<float> g_grad, d_grad, g_bn, d_bn;
  std::vector<size_t> g_seg, d_seg;
  UnitResult r;
  // `format`: the gradients' wire format (the run's), which submit() encodes.
  FakeResult(const Net<float>& G, const Net<float>& D, int unit, int micro, BlobFormat format = BlobFormat::F32) {
    Rng rng(12345);
    auto fill = [&](std::vector<float>& v, size_t n, float scale) {
      v.resize(n);
      for (float& x : v) x = (float)(scale * rng.normal());
    };
    fill(g_grad, G.num_params(), 1e-3f);
    fill(d_grad, D.num_params(), 1e-3f);
    const size_t passes = micro_batches(unit, micro).size();
    auto stats = [&](std::vector<float>& v, const Net<float>& net, size_t copies) {
      v.assign(copies * net.num_stats(), 0.f);
      for (size_t c = 0; c < copies; ++c)
        for (const LayerSpec& l : net.layers())
          if (l.kind == LayerKind::BatchNorm)
            for (int ch = 0; ch < l.C_out; ++ch) {
              v[c * net.num_stats() + l.running_mean + ch] = (float)(0.1 * rng.normal());
              v[c * net.num_stats() + l.running_var + ch] = (float)(0.5 + rng.uniform());
            }
    };
    stats(g_bn, G, passes);
    stats(d_bn, D, 2 * passes);  // D runs on real, then fake images
    r.sample_count = unit;
    g_seg = tensor_sizes(G.params_layout());
    d_seg = tensor_sizes(D.params_layout());
    r.g = {G.layout_hash(), g_grad, g_bn, g_seg};
    r.d = {D.layout_hash(), d_grad, d_bn, d_seg};
    r.grad_format = format;
    r.loss_d = 1.2f;
    r.loss_g = 0.9f;
    r.d_real = 0.6f;
    r.d_fake = 0.4f;
    r.d_accuracy = 0.7f;
    r.compute_seconds = 1.f;
    r.micro_batch = micro;
  }
  // What one submission moves: the gradients in their format, BN statistics in float32.
  size_t bytes() const {
    return encoded_size(r.grad_format, g_grad.size(), g_seg.size()) +
           encoded_size(r.grad_format, d_grad.size(), d_seg.size()) + 4 * (g_bn.size() + d_bn.size());
  }
};

}  // namespace gannf::cluster
