#include "spot_check.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>

#include "aggregate.h"
#include "forwarding_backend.h"
#include "format.h"
#include "rng.h"

namespace gannf::cluster {

StepStats step_micro_batch(GanStep<float>& gan, const data::Dataset& ds, std::span<const uint32_t> perm,
                           const RunSettings& s, int epoch, int64_t first, int n, int unit_size,
                           MicroBatchBuffers& buf) {
  for (int i = 0; i < n; ++i) buf.idx[i] = perm[(size_t)(first + i)];
  data::get_batch(ds, buf.idx.data(), n, buf.real.data());
  for (int i = 0; i < n; ++i)
    sample_noise(buf.noise.data() + (size_t)i * s.nz, s.nz, s.seed, (uint64_t)epoch, (uint64_t)(first + i));
  return gan.accumulate(buf.real.data(), buf.noise.data(), n, 1.0 / unit_size);
}

bool chosen_for_spot_check(uint64_t seed, int64_t id, double fraction) {
  if (fraction <= 0) return false;
  if (fraction >= 1) return true;
  Rng r(seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)id + 0x5851F42D4C957F2Dull));
  return r.uniform() < fraction;
}

double spot_check_tolerance(std::string_view backend) {
  if (backend == "cpu" || backend == "cuda") return 1e-3;
  // BF16's 7 stored mantissa bits move an honest step's gradient further from
  // FP32 (0.13 of G's at 64x64, batch 32: SpotCheck.TensorCoreTolerancesCoverAnHonestStep).
  return backend == "cuda-bf16" ? 0.3 : 0.1;
}

std::optional<std::string> compare_recomputed(const std::vector<float> submitted[2], const std::vector<float> recomputed[2],
                                              double tolerance) {
  for (int k = 0; k < 2; ++k) {
    if (submitted[k].size() != recomputed[k].size()) return std::string("spot check: sizes differ");
    double num = 0, den = 0;
    for (size_t i = 0; i < submitted[k].size(); ++i) {
      const double d = (double)submitted[k][i] - recomputed[k][i];
      num += d * d;
      den += (double)recomputed[k][i] * recomputed[k][i];
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    if (!(rel <= tolerance))
      return std::string("spot check: ") + (k ? "D" : "G") + "'s gradient is " + fmt("%.3g", rel) +
             " (relative L2) from the coordinator's recomputation of the unit (tolerance " + fmt("%g", tolerance) +
             ")";
  }
  return std::nullopt;
}

SpotChecker::SpotChecker(const RunSettings& s, const std::string& dataset) : s_(s) {
  const std::string spec = dataset.empty() ? s.dataset : dataset;
  data::Options dopt;
  dopt.seed = s.seed;  // synthetic images are a function of (seed, index)
  dopt.quiet = true;
  ds_ = data::open_dataset(spec, s.image_size, s.channels, dopt);
  if ((int64_t)ds_->size() != s.dataset_size)
    throw std::runtime_error("spot checks: dataset " + spec + " has " + std::to_string(ds_->size()) +
                             " images, the run " + std::to_string(s.dataset_size) +
                             "; give gannf-coord run the run's data with --dataset");
  be_ = make_backend<float>("cpu");
}

SpotChecker::~SpotChecker() = default;

void SpotChecker::recompute(const Net<float>& G, const Net<float>& D, int epoch, int64_t first_index,
                            int sample_count, int micro_batch, std::vector<float> out[2]) {
  const Unit u{epoch, first_index, sample_count, micro_batch};
  recompute(G, D, std::span<const Unit>(&u, 1), out);
}

void SpotChecker::recompute(const Net<float>& G, const Net<float>& D, std::span<const Unit> units,
                            std::vector<float> out[2]) {
  run_units(nets_, *be_, G, D, units, out);
}

void SpotChecker::run_units(Nets& n, Backend<float>& be, const Net<float>& G, const Net<float>& D,
                            std::span<const Unit> units, std::vector<float> out[2]) {
  // Room for the largest pass: a micro-batch with a trailing single image folded in.
  int need = 0, total = 0;
  for (const Unit& u : units) {
    need = std::max(need, std::min(u.sample_count, u.micro_batch + 1));
    total += u.sample_count;
  }
  if (need > n.max_batch) {
    n.max_batch = need;
    n.G = std::make_unique<Net<float>>(be, "generator");
    n.D = std::make_unique<Net<float>>(be, "discriminator");
    build_generator(*n.G, s_.dcgan(), n.max_batch);
    build_discriminator(*n.D, s_.dcgan(), n.max_batch);
    n.gan = std::make_unique<GanStep<float>>(*n.G, *n.D);
  }
  if ((int)buf_.idx.size() < need) {
    buf_.real.resize((size_t)need * ds_->image_floats());
    buf_.noise.resize((size_t)need * s_.nz);
    buf_.idx.resize(need);
  }
  n.G->set_params(std::span<const float>(G.params(), G.num_params()));
  n.G->set_stats(std::span<const float>(G.stats(), G.num_stats()));
  n.D->set_params(std::span<const float>(D.params(), D.num_params()));
  n.D->set_stats(std::span<const float>(D.stats(), D.num_stats()));
  n.gan->zero_grads();
  for (const Unit& u : units) {
    if (perm_epoch_ != u.epoch) {
      perm_ = data::epoch_permutation(ds_->size(), s_.seed, (uint64_t)u.epoch);
      perm_epoch_ = u.epoch;
    }
    int64_t off = 0;
    for (int m : micro_batches(u.sample_count, u.micro_batch)) {
      step_micro_batch(*n.gan, *ds_, perm_, s_, u.epoch, u.first_index + off, m, total, buf_);
      off += m;
    }
  }
  out[0] = n.G->get_grads();
  out[1] = n.D->get_grads();
}

// The CPU back end (host memory), except that every ReLU / LeakyReLU -- a
// standalone one or one fused into the BN before it, which then runs
// unfused -- reports its inputs nearest zero and may put one input on the
// other side of its kink. Activations are numbered in call order (the
// passes of a recomputation are the same every time), inputs by position.
class SpotChecker::KinkProbe final : public ForwardingBackend<float> {
 public:
  struct Site {
    int64_t call = 0;
    size_t index = 0;
    double closeness = 0;  // |input| / rms of the call's inputs
  };
  KinkProbe() : ForwardingBackend<float>(make_backend<float>("cpu")) {}
  // Before a recomputation: forget the sites, and flip `flip` (if any).
  void start(std::optional<Site> flip) {
    flip_ = flip;
    sites_.clear();
    call_ = 0;
  }
  // The kKinkCandidates sites nearest their kink, nearest first.
  std::vector<Site> nearest() const {
    std::vector<Site> v = sites_;
    std::sort(v.begin(), v.end(), [](const Site& a, const Site& b) { return a.closeness < b.closeness; });
    return v;
  }

  void relu_forward(float* out, const float* inp, size_t n) override {
    const float flipped = flip_value(inp, n);
    inner().relu_forward(out, inp, n);
    apply_flip(out, flipped, BnAct::relu, 0);
  }
  void leaky_relu_forward(float* out, const float* inp, size_t n, float slope) override {
    const float flipped = flip_value(inp, n);
    inner().leaky_relu_forward(out, inp, n, slope);
    apply_flip(out, flipped, BnAct::leaky_relu, slope);
  }
  void batchnorm2d_forward_train(float* out, float* mean, float* var, const float* inp, const float* w,
                                 const float* b, int B, int C, int HW, float eps, BnAct act, float slope) override {
    inner().batchnorm2d_forward_train(out, mean, var, inp, w, b, B, C, HW, eps, BnAct::none, slope);
    if (act == BnAct::relu) relu_forward(out, out, (size_t)B * C * HW);
    if (act == BnAct::leaky_relu) leaky_relu_forward(out, out, (size_t)B * C * HW, slope);
  }

 private:
  // Records this call's inputs nearest zero; returns the flipped input's
  // value (read before an in-place activation overwrites it), or NaN.
  float flip_value(const float* x, size_t n) {
    const int64_t call = call_++;
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += (double)x[i] * x[i];
    const double rms = n ? std::sqrt(ss / (double)n) : 0;
    if (rms > 0)
      for (size_t i = 0; i < n; ++i) {
        const double c = std::fabs((double)x[i]) / rms;
        if (!(c < kKinkBand)) continue;
        if ((int)sites_.size() < kKinkCandidates) {
          sites_.push_back({call, i, c});
          continue;
        }
        auto worst = std::max_element(sites_.begin(), sites_.end(),
                                      [](const Site& a, const Site& b) { return a.closeness < b.closeness; });
        if (c < worst->closeness) *worst = {call, i, c};
      }
    flip_at_ = flip_ && flip_->call == call && flip_->index < n ? (int64_t)flip_->index : -1;
    return flip_at_ >= 0 ? x[flip_at_] : NAN;
  }
  // The flipped input's output as if it were -x: on the other side, as small.
  void apply_flip(float* out, float x, BnAct act, float slope) const {
    if (flip_at_ < 0) return;
    const float v = -x;
    out[flip_at_] = v > 0 ? v : act == BnAct::relu ? 0.0f : v * slope;
    // A ReLU input exactly 0 stays at 0 either way: its derivative is 0 on
    // both sides here (out > 0 decides), so nothing flips.
  }
  std::optional<Site> flip_;
  std::vector<Site> sites_;
  int64_t call_ = 0;
  int64_t flip_at_ = -1;
};

std::optional<std::string> SpotChecker::check(const Net<float>& G, const Net<float>& D, std::span<const Unit> units,
                                              const std::vector<float> submitted[2], double tolerance,
                                              std::string* note) {
  std::vector<float> ref[2];
  recompute(G, D, units, ref);
  const auto why = compare_recomputed(submitted, ref, tolerance);
  if (!why) return std::nullopt;
  if (!probe_) probe_ = std::make_unique<KinkProbe>();
  probe_->start(std::nullopt);
  run_units(probe_nets_, *probe_, G, D, units, ref);
  if (!compare_recomputed(submitted, ref, tolerance)) {
    if (note) *note = "passed against the recomputation with activations unfused";
    return std::nullopt;
  }
  const auto sites = probe_->nearest();
  for (const KinkProbe::Site& site : sites) {
    probe_->start(site);
    run_units(probe_nets_, *probe_, G, D, units, ref);
    if (!compare_recomputed(submitted, ref, tolerance)) {
      if (note)
        *note = "passed with one activation input on the other side of its kink (pass " + std::to_string(site.call) +
                ", input " + std::to_string(site.index) + ", " + fmt("%.2g", site.closeness) +
                " x its layer's rms from zero), as another machine's rounding may put it; before: " +
                why->substr(why->rfind("spot check: ", 0) == 0 ? 12 : 0);
      return std::nullopt;
    }
  }
  return *why + (sites.empty() ? "; no activation input was within " + fmt("%g", kKinkBand) + " of its kink"
                               : "; putting any of the " + std::to_string(sites.size()) +
                                     " activation inputs nearest their kink on its other side did not explain it");
}

}  // namespace gannf::cluster
