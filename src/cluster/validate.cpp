#include "validate.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "aggregate.h"
#include "format.h"

namespace gannf::cluster {

std::optional<std::string> check_losses(const StepStats& s) {
  // BCE of a mean over a unit: 0 ≤ loss; 1e3 would mean logits of about
  // ±1000 on every image, which D's bounded activations do not reach.
  constexpr double kMaxLoss = 1e3;
  auto prob = [](double p) { return p >= 0 && p <= 1; };
  if (!(s.d_loss >= 0 && s.d_loss <= 2 * kMaxLoss && s.g_loss >= 0 && s.g_loss <= kMaxLoss))
    return "losses out of range (D " + fmt("%g", s.d_loss) + ", G " + fmt("%g", s.g_loss) + ")";
  if (!(prob(s.d_real) && prob(s.d_fake) && prob(s.d_acc)))
    return "D's outputs or accuracy outside [0, 1] (real " + fmt("%g", s.d_real) + ", fake " + fmt("%g", s.d_fake) +
           ", accuracy " + fmt("%g", s.d_acc) + ")";
  return std::nullopt;
}

std::vector<double> bn_input_bounds(const std::vector<LayerSpec>& layers, const float* params, double input_bound,
                                    int max_batch) {
  std::vector<double> out(layers.size(), NAN);
  double b = input_bound;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& l = layers[i];
    switch (l.kind) {
      case LayerKind::Conv:
      case LayerKind::ConvTranspose: {
        // Each output sums at most every weight of its channel times an input.
        const bool tr = l.kind == LayerKind::ConvTranspose;
        const size_t kk = (size_t)l.K * l.K;
        double worst = 0;
        for (int o = 0; o < l.C_out; ++o) {
          double s = 0;
          for (int c = 0; c < l.C_in; ++c) {
            const float* w = params + l.weight + (tr ? ((size_t)c * l.C_out + o) : ((size_t)o * l.C_in + c)) * kk;
            for (size_t q = 0; q < kk; ++q) s += std::fabs((double)w[q]);
          }
          worst = std::max(worst, s);
        }
        b *= worst;
        break;
      }
      case LayerKind::BatchNorm: {
        out[i] = b;
        // One value of a batch of B lies at most sqrt(B − 1) biased standard
        // deviations from the batch mean.
        double worst = 0;
        for (int c = 0; c < l.C_out; ++c)
          worst = std::max(worst, std::fabs((double)params[l.weight + c]) * std::sqrt((double)max_batch - 1) +
                                      std::fabs((double)params[l.bias + c]));
        b = worst;
        break;
      }
      case LayerKind::Tanh: b = std::min(b, 1.0); break;
      case LayerKind::ReLU:
      case LayerKind::LeakyReLU: break;  // |f(x)| ≤ |x|
    }
  }
  return out;
}

std::optional<std::string> check_bn_bounds(std::span<const float> copies, size_t num_stats,
                                           const std::vector<LayerSpec>& layers, const std::vector<double>& bounds) {
  // A little slack for the float rounding of the worker's sums.
  constexpr double kSlack = 1.001;
  const size_t n = num_stats ? copies.size() / num_stats : 0;
  for (size_t j = 0; j < n; ++j)
    for (size_t i = 0; i < layers.size(); ++i) {
      const LayerSpec& l = layers[i];
      if (l.kind != LayerKind::BatchNorm) continue;
      const double b = bounds[i] * kSlack;
      for (int c = 0; c < l.C_out; ++c) {
        const double m = copies[j * num_stats + l.running_mean + c], v = copies[j * num_stats + l.running_var + c];
        if (!(std::fabs(m) <= b && v >= 0 && v <= b * b))
          return "BN statistics of layer " + std::to_string(l.index) + " (mean " + fmt("%g", m) + ", variance " +
                 fmt("%g", v) + ") outside what the current weights can produce (|mean| ≤ " + fmt("%g", b) + ")";
      }
    }
  return std::nullopt;
}

std::vector<double> tensor_norms(std::span<const float> grad, const Layout& layout) {
  std::vector<double> out;
  for (const TensorSpec& t : layout.tensors) out.push_back(l2_norm(grad.subspan(t.offset, t.numel())));
  return out;
}

void NormHistory::add(std::vector<double> tensor_norms, double total_norm) {
  tensors_.push_back(std::move(tensor_norms));
  totals_.push_back(total_norm);
  while (tensors_.size() > window_) {
    tensors_.pop_front();
    totals_.pop_front();
  }
}

void NormHistory::add_update(const std::vector<std::vector<double>>& tensor_norms,
                             const std::vector<double>& total_norms, const std::vector<std::string>& logins) {
  std::map<std::string, std::vector<size_t>> by;
  for (size_t j = 0; j < logins.size() && j < tensor_norms.size() && j < total_norms.size(); ++j)
    by[logins[j]].push_back(j);
  for (const auto& [login, js] : by) {
    std::vector<double> t(tensor_norms[js[0]].size());
    for (size_t i = 0; i < t.size(); ++i) {
      std::vector<double> v;
      for (size_t j : js) v.push_back(tensor_norms[j][i]);
      t[i] = median(v);
    }
    std::vector<double> tot;
    for (size_t j : js) tot.push_back(total_norms[j]);
    add(std::move(t), median(tot));
  }
}

double NormHistory::median_total() const {
  return totals_.empty() ? 0 : median(std::vector<double>(totals_.begin(), totals_.end()));
}

std::vector<std::optional<std::string>> check_norms(const std::vector<std::vector<double>>& norms,
                                                    const NormHistory& history, const NormCheck& p,
                                                    const Layout& names, const std::vector<std::string>* logins) {
  std::vector<std::optional<std::string>> out(norms.size());
  const size_t T = names.tensors.size();
  for (size_t t = 0; t < T; ++t) {
    // In logs: a scale attack (×1e4, ÷1e4) is a shift, zeros are −∞.
    std::vector<double> ref;
    for (const auto& h : history.tensors()) ref.push_back(std::log(h[t]));
    if (logins) {
      // One voice per login: a login holding most of this update's units
      // does not make the reference (honest majority of students, not of units).
      std::map<std::string, std::vector<double>> by;
      for (size_t j = 0; j < norms.size(); ++j) by[(*logins)[j]].push_back(std::log(norms[j][t]));
      for (auto& [login, v] : by) ref.push_back(median(v));
    } else {
      for (const auto& n : norms) ref.push_back(std::log(n[t]));
    }
    if (ref.size() < p.min_reference) continue;
    const double med = median(ref);
    std::vector<double> dev;
    for (double x : ref) dev.push_back(std::fabs(x - med));
    const double mad = median(dev);
    const double band = std::max(std::log(p.max_ratio), p.mad_k * 1.4826 * (std::isfinite(mad) ? mad : 0));
    // This update's own median passes too: training itself can move every
    // honest norm at once (an honest Fashion-MNIST run's D grew ×20 within two
    // updates and was rejected against the history alone), and an update's
    // submissions are mostly honest (per-login claim caps).
    std::vector<double> now;
    for (const auto& n : norms) now.push_back(std::log(n[t]));
    std::vector<double> voices = now;  // one per login, as in the reference
    if (logins) {
      std::map<std::string, std::vector<double>> by;
      for (size_t j = 0; j < norms.size(); ++j) by[(*logins)[j]].push_back(now[j]);
      voices.clear();
      for (auto& [login, v] : by) voices.push_back(median(v));
    }
    const double med_now = voices.size() >= p.min_reference ? median(voices) : NAN;
    for (size_t j = 0; j < norms.size(); ++j) {
      if (out[j]) continue;
      const double x = now[j];
      if (x == med) continue;  // also two zeros where the reference is zero
      if (std::isfinite(med_now) && std::fabs(x - med_now) <= std::log(p.max_ratio)) continue;
      if (!(std::fabs(x - med) <= band))
        out[j] = "gradient norm of " + names.tensors[t].name + " is " + fmt("%.3g", norms[j][t]) +
                 ", the recent median " + fmt("%.3g", std::exp(med)) + " (allowed ×/÷ " +
                 fmt("%.3g", std::exp(band)) + ")";
    }
  }
  return out;
}

}  // namespace gannf::cluster
