#include "aggregate.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "ops.h"

namespace gannf::cluster {

const char* rule_name(AggregationRule r) {
  switch (r) {
    case AggregationRule::Mean: return "mean";
    case AggregationRule::Clip: return "clip";
    case AggregationRule::Trimmed: return "trimmed";
    case AggregationRule::ClipTrimmed: return "clip+trimmed";
  }
  return "?";
}

std::optional<AggregationRule> parse_rule(std::string_view name) {
  for (AggregationRule r :
       {AggregationRule::Mean, AggregationRule::Clip, AggregationRule::Trimmed, AggregationRule::ClipTrimmed})
    if (name == rule_name(r)) return r;
  return std::nullopt;
}

double l2_norm(std::span<const float> v) {
  double s = 0;
  for (float x : v) s += (double)x * x;
  return std::sqrt(s);
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  const size_t h = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + h, v.end());
  if (v.size() % 2) return v[h];
  const double hi = v[h];
  return (*std::max_element(v.begin(), v.begin() + h) + hi) / 2;
}

namespace {

// Sorts (value, weight) pairs by value: m is a handful, so insertion sort.
void sort_pairs(double* val, double* w, int m) {
  for (int a = 1; a < m; ++a)
    for (int b = a; b > 0 && val[b - 1] > val[b]; --b) {
      std::swap(val[b - 1], val[b]);
      std::swap(w[b - 1], w[b]);
    }
}

}  // namespace

AggregateResult aggregate(std::span<const UnitContribution> units, AggregationRule rule, const RobustParams& p) {
  if (units.empty()) throw std::invalid_argument("aggregate: no submissions");
  AggregateResult r;
  const int64_t m = (int64_t)units.size();
  for (const UnitContribution& u : units) r.samples += u.sample_count;
  // Each unit's gradient is a mean over its images; weighting by sample count
  // makes the average the mean over all of them, as one local step.
  std::vector<double> weight;
  for (const UnitContribution& u : units) weight.push_back((double)u.sample_count / (double)r.samples);
  const bool clip = rule == AggregationRule::Clip || rule == AggregationRule::ClipTrimmed;
  const bool trimmed = rule == AggregationRule::Trimmed || rule == AggregationRule::ClipTrimmed;
  // Dropping b at each end needs at least 2b + 1 values.
  const int b = trimmed ? (int)std::min<int64_t>(std::max(0, p.trim), (m - 1) / 2) : 0;

  for (int k = 0; k < 2; ++k) {
    const size_t n = units[0].grad[k].size();
    std::vector<const float*> src;
    for (const UnitContribution& u : units) {
      if (u.grad[k].size() != n) throw std::invalid_argument("aggregate: gradients of different sizes");
      src.push_back(u.grad[k].data());
    }
    r.scale[k].assign(m, 1.0);
    if (clip) {
      std::vector<double> norms;
      for (const UnitContribution& u : units) norms.push_back(l2_norm(u.grad[k]));
      const double ref = p.reference_norm[k] > 0 ? p.reference_norm[k] : median(norms);
      const double bound = p.clip_factor * ref;
      for (int64_t j = 0; j < m; ++j)
        if (norms[j] > bound) r.scale[k][j] = bound / norms[j];  // bound 0 (all zero): scale 0
    }
    r.grad[k].resize(n);
    float* g = r.grad[k].data();
    const std::vector<double>& sc = r.scale[k];
    if (!trimmed || b == 0) {
      std::vector<double> w(m);
      for (int64_t j = 0; j < m; ++j) w[j] = clip ? weight[j] * sc[j] : weight[j];
      // One pass over the output, each element summed in unit order: the
      // same sum for any thread count.
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < (int64_t)n; ++i) {
        double acc = 0;
        for (int64_t j = 0; j < m; ++j) acc += w[j] * src[j][i];
        g[i] = (float)acc;
      }
      continue;
    }
#pragma omp parallel
    {
      std::vector<double> val(m), w(m);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < (int64_t)n; ++i) {
        for (int64_t j = 0; j < m; ++j) {
          val[j] = sc[j] * src[j][i];
          w[j] = weight[j];
        }
        sort_pairs(val.data(), w.data(), (int)m);
        double acc = 0, wsum = 0;
        for (int64_t j = b; j < m - b; ++j) {
          acc += w[j] * val[j];
          wsum += w[j];
        }
        g[i] = (float)(acc / wsum);
      }
    }
  }
  for (const UnitContribution& u : units)
    if (u.losses) r.losses.merge(*u.losses);
  return r;
}

namespace {

// `images` in the pass: each channel's statistics are over images × H × W values.
void fold_copy(const BnTarget& t, const float* copy, int64_t images) {
  for (const LayerSpec& l : *t.layers) {
    if (l.kind != LayerKind::BatchNorm) continue;
    cpu::batchnorm2d_update_running(t.running + l.running_mean, t.running + l.running_var, copy + l.running_mean,
                                    copy + l.running_var, l.C_out, images * l.H_out * l.W_out, t.momentum);
  }
  ++*t.batches_tracked;
}

// The statistics of one forward over all of the unit's images, from those of
// its micro-batches: copies first, first + stride, ... (sizes[j] images
// each). Means weighted by size; the variance pooled (within plus between
// micro-batches), both biased as the copies are.
std::vector<float> merge_copies(const BnTarget& t, const float* first, size_t stride, const std::vector<int>& sizes) {
  std::vector<float> out(t.num_stats, 0.f);
  double total = 0;
  for (int s : sizes) total += s;
  for (const LayerSpec& l : *t.layers) {
    if (l.kind != LayerKind::BatchNorm) continue;
    for (int c = 0; c < l.C_out; ++c) {
      double mean = 0, var = 0;
      for (size_t j = 0; j < sizes.size(); ++j) mean += sizes[j] * (double)first[j * stride + l.running_mean + c];
      mean /= total;
      for (size_t j = 0; j < sizes.size(); ++j) {
        const double d = first[j * stride + l.running_mean + c] - mean;
        var += sizes[j] * ((double)first[j * stride + l.running_var + c] + d * d);
      }
      out[l.running_mean + c] = (float)mean;
      out[l.running_var + c] = (float)(var / total);
    }
  }
  return out;
}

}  // namespace

void fold_bn(BnTarget g, BnTarget d, std::span<const UnitContribution> units, bool per_micro_batch) {
  for (const UnitContribution& u : units) {
    const std::vector<int>& sizes = u.micro_batches;
    if (u.bn[0].size() != sizes.size() * g.num_stats || u.bn[1].size() != 2 * sizes.size() * d.num_stats)
      throw std::invalid_argument("fold_bn: BN statistics do not match the unit's forward passes");
    if (per_micro_batch) {
      // G's one forward per micro-batch, D's real pass then its fake pass:
      // the order GanStep::accumulate runs them in a local step.
      for (size_t j = 0; j < sizes.size(); ++j) {
        fold_copy(g, u.bn[0].data() + j * g.num_stats, sizes[j]);
        fold_copy(d, u.bn[1].data() + (2 * j) * d.num_stats, sizes[j]);
        fold_copy(d, u.bn[1].data() + (2 * j + 1) * d.num_stats, sizes[j]);
      }
      continue;
    }
    fold_copy(g, merge_copies(g, u.bn[0].data(), g.num_stats, sizes).data(), u.sample_count);
    fold_copy(d, merge_copies(d, u.bn[1].data(), 2 * d.num_stats, sizes).data(), u.sample_count);
    fold_copy(d, merge_copies(d, u.bn[1].data() + d.num_stats, 2 * d.num_stats, sizes).data(), u.sample_count);
  }
}

}  // namespace gannf::cluster
