#include "spot_check.h"

#include <algorithm>
#include <stdexcept>

#include "aggregate.h"
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
  // Room for the largest pass: a micro-batch with a trailing single image folded in.
  int need = 0, total = 0;
  for (const Unit& u : units) {
    need = std::max(need, std::min(u.sample_count, u.micro_batch + 1));
    total += u.sample_count;
  }
  if (need > max_batch_) {
    max_batch_ = need;
    G_ = std::make_unique<Net<float>>(*be_, "generator");
    D_ = std::make_unique<Net<float>>(*be_, "discriminator");
    build_generator(*G_, s_.dcgan(), max_batch_);
    build_discriminator(*D_, s_.dcgan(), max_batch_);
    gan_ = std::make_unique<GanStep<float>>(*G_, *D_);
    buf_.real.resize((size_t)max_batch_ * ds_->image_floats());
    buf_.noise.resize((size_t)max_batch_ * s_.nz);
    buf_.idx.resize(max_batch_);
  }
  G_->set_params(std::span<const float>(G.params(), G.num_params()));
  G_->set_stats(std::span<const float>(G.stats(), G.num_stats()));
  D_->set_params(std::span<const float>(D.params(), D.num_params()));
  D_->set_stats(std::span<const float>(D.stats(), D.num_stats()));
  gan_->zero_grads();
  for (const Unit& u : units) {
    if (perm_epoch_ != u.epoch) {
      perm_ = data::epoch_permutation(ds_->size(), s_.seed, (uint64_t)u.epoch);
      perm_epoch_ = u.epoch;
    }
    int64_t off = 0;
    for (int n : micro_batches(u.sample_count, u.micro_batch)) {
      step_micro_batch(*gan_, *ds_, perm_, s_, u.epoch, u.first_index + off, n, total, buf_);
      off += n;
    }
  }
  out[0] = G_->get_grads();
  out[1] = D_->get_grads();
}

}  // namespace gannf::cluster
