// A unit's result of the real sizes without computing it, and the load
// worker that submits it (bench_db, bench_dash, bench_load): the database and
// the network carry exactly what a real worker's submission carries.
#pragma once

#include <algorithm>
#include <cstddef>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <stdexcept>
#include <vector>

#include "net.h"
#include "pg.h"
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
              // Small: inside the bound validation derives from any
              // weights (bn_input_bounds); 0.1 and 0.5..1.5 were refused
              // for narrow nets (ngf 8) and quarantined the load login.
              v[c * net.num_stats() + l.running_mean + ch] = (float)(1e-3 * rng.normal());
              v[c * net.num_stats() + l.running_var + ch] = (float)(1e-3 * (0.5 + rng.uniform()));
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

// A worker that claims one unit at a time, downloads the weights when the
// iteration changes (checked against the result's sizes) and submits `fake`
// without computing: the loop of every load benchmark. `c` listens on the
// work channel, so that a caller can wait for work between steps.
// compute_ms stands for a machine's compute (a sleep per unit claimed);
// sum_units 0 ("auto") claims as many as the coordinator's units per claim, learnt
// from gannf.report_timing after each stored upload (sql/0018), as
// gannf-worker --sum-units auto does. With `deltas` (the default, as
// gannf-worker) it keeps the weights it downloaded and downloads the next
// iteration's as the exact delta from them where one is published (sql/0019).
struct LoadWorker {
  pg::Connection& c;
  const FakeResult& fake;
  int sum_units = 1;  // claim up to this many and submit them summed (sql/0017); 0: the hint
  double compute_ms = 0;
  int hint = 1;
  double download_s = 0;
  int64_t download_bytes = 0;
  int64_t id = 0, have = -1;
  int64_t accepted = 0, refused = 0, downloads = 0, uploads = 0;
  bool deltas = true;
  WeightsBase base;
  int64_t delta_downloads = 0;  // networks that came as a delta
  double mb_up = 0, mb_down = 0;
  std::vector<float> g_bn, d_bn;  // a summed submission's k units' statistics
  LoadWorker(pg::Connection& conn, const FakeResult& result, const WorkerInfo& info, int sum = 1)
      : c(conn), fake(result), sum_units(sum) {
    c.listen(channel::kWork);
    id = register_worker(c, info);
  }
  // Units claimed, downloaded for and submitted (one upload); false when none
  // was open.
  bool step() {
    std::vector<ClaimedUnit> u = claim(c, id, sum_units > 0 ? sum_units : hint);
    if (u.empty()) return false;
    using Clock = std::chrono::steady_clock;
    auto secs = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
    if (u[0].iteration != have) {
      const auto t_down = Clock::now();
      const PublishedWeights w = fetch_weights(c, u[0].iteration, "", deltas ? &base : nullptr);
      download_s = secs(t_down);
      download_bytes = w.bytes;
      if (w.g.params.size() != fake.g_grad.size() || w.d.params.size() != fake.d_grad.size())
        throw std::runtime_error("the published weights have another size than the run's networks");
      mb_down += 1e-6 * (double)w.bytes;
      delta_downloads += w.deltas;
      if (deltas) base.keep(u[0].iteration, w);
      ++downloads;
      have = u[0].iteration;
    }
    const auto t_compute = Clock::now();
    if (compute_ms > 0)
      std::this_thread::sleep_for(std::chrono::microseconds((int64_t)(compute_ms * 1000 * (double)u.size())));
    const double compute_s = secs(t_compute);
    const auto t_up = Clock::now();
    SubmitOutcome out;
    if (u.size() == 1) {
      out = submit(c, id, u[0], fake.r);
    } else {
      // A summed submission of k units (claim hands out the current
      // iteration's only): the one gradient, k units' BN statistics.
      std::sort(u.begin(), u.end(), [](const ClaimedUnit& a, const ClaimedUnit& b) { return a.unit_id < b.unit_id; });
      UnitResult summed = fake.r;
      g_bn.clear();
      d_bn.clear();
      for (size_t i = 0; i < u.size(); ++i) {
        g_bn.insert(g_bn.end(), fake.g_bn.begin(), fake.g_bn.end());
        d_bn.insert(d_bn.end(), fake.d_bn.begin(), fake.d_bn.end());
      }
      summed.g.bn_stats = g_bn;
      summed.d.bn_stats = d_bn;
      summed.sample_count = (int32_t)u.size() * fake.r.sample_count;
      const std::vector<UnitLosses> losses(u.size(), UnitLosses{1.2f, 0.9f, 0.6f, 0.4f, 0.7f});
      out = submit_summed(c, id, u, summed, losses);
    }
    const double upload_s = secs(t_up);
    (out.stored() ? accepted : refused) += (int64_t)u.size();
    ++uploads;
    const double bytes = (double)(fake.bytes() + 4 * (u.size() - 1) * (fake.g_bn.size() + fake.d_bn.size()));
    mb_up += 1e-6 * bytes;
    if (sum_units == 0 && out.status == SubmitStatus::Accepted) {  // the other load benchmarks measure without it
      UploadTiming t;
      t.units = (int32_t)u.size();
      t.compute_s = compute_s, t.upload_s = upload_s, t.download_s = download_s;
      t.upload_bytes = (int64_t)bytes, t.download_bytes = download_bytes;
      hint = report_timing(c, id, t);
    }
    return true;
  }
};

// n LoadWorkers on threads of their own, named load-0, load-1, ..., each on
// its own connection until `stop`; an error is kept in errors[k] and stops
// them all. `done` sees each worker's counts as it ends.
inline std::vector<std::thread> start_load_workers(
    int n, const std::string& conninfo, const FakeResult& fake, WorkerInfo info,
    std::atomic<bool>& stop, std::vector<std::exception_ptr>& errors,
    std::function<void(const LoadWorker&)> done = {}) {
  errors.assign(n, nullptr);
  std::vector<std::thread> threads;
  for (int k = 0; k < n; ++k)
    threads.emplace_back([&, conninfo, info, done, k]() mutable {
      try {
        pg::Connection w(conninfo);
        info.name = "load-" + std::to_string(k);
        LoadWorker lw(w, fake, info);
        while (!stop)
          if (!lw.step()) w.wait_notification(std::chrono::milliseconds(50));
        if (done) done(lw);
      } catch (...) {
        errors[k] = std::current_exception();
        stop = true;
      }
    });
  return threads;
}

}  // namespace gannf::cluster
