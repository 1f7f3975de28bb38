// Statistical validation of submissions before they count (issue 12, item 2).
// Pure functions over numbers in memory; the coordinator feeds them what it
// fetched and its own unit metadata. Each check returns the reason for a
// rejection, or nothing.
//
//  - losses and accuracy in range (BCE ≥ 0; probabilities in [0, 1]);
//  - BN batch statistics within what the current weights can produce: every
//    layer's inputs are bounded (images in [-1, 1], the noise's Box-Muller
//    draws by sqrt(2·53·ln 2) < 8.6, BN's output of a batch of B by
//    |γ|·sqrt(B − 1) + |β|, tanh by 1), so each BN layer's batch mean and
//    variance are too: a sound bound, never a false rejection;
//  - per-tensor gradient norms against a robust estimate: the median and MAD
//    of the logarithms of recent accepted norms and of this update's.
#pragma once
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dcgan.h"
#include "net.h"

namespace gannf::cluster {

std::optional<std::string> check_losses(const StepStats& s);

// The largest |value| each BN layer's input can take under `params` (the
// network's current weights, host memory), for micro-batches of at most
// max_batch images; one entry per layer of `layers`, NaN where the layer is
// not BatchNorm. input_bound: |x| of the network's input (1 for images, 8.6
// for the noise).
std::vector<double> bn_input_bounds(const std::vector<LayerSpec>& layers, const float* params, double input_bound,
                                    int max_batch);

// Each copy of num_stats in `copies` (a forward pass's batch statistics) has
// means within ±bound and variances within [0, bound²] at every BN layer.
std::optional<std::string> check_bn_bounds(std::span<const float> copies, size_t num_stats,
                                           const std::vector<LayerSpec>& layers, const std::vector<double>& bounds);

// Per-tensor L2 norms of a flat gradient, in the layout's tensor order.
std::vector<double> tensor_norms(std::span<const float> grad, const Layout& layout);

struct NormCheck {
  double max_ratio = 10;       // a norm within ×/÷ this of the median always passes
  double mad_k = 6;            // ... and within median ± mad_k·1.4826·MAD (in logs) too
  size_t min_reference = 3;    // fewer reference values: no verdict (clipping still bounds it)
  size_t window = 64;          // accepted submissions remembered
};

// The per-tensor norms of recent accepted submissions, one network.
class NormHistory {
 public:
  explicit NormHistory(size_t window = 64) : window_(window) {}
  void add(std::vector<double> tensor_norms, double total_norm);
  // One update's used submissions, one entry per login (each tensor's and the
  // total's median over that login's submissions), as check_norms counts this
  // update: a login that held most units of an update, which nothing could
  // judge yet (two logins, no history), does not become most of the history.
  void add_update(const std::vector<std::vector<double>>& tensor_norms, const std::vector<double>& total_norms,
                  const std::vector<std::string>& logins);
  size_t size() const { return tensors_.size(); }
  // The median of the remembered whole-network norms; 0 when none.
  double median_total() const;
  const std::deque<std::vector<double>>& tensors() const { return tensors_; }
  void clear() { tensors_.clear(), totals_.clear(); }

 private:
  size_t window_;
  std::deque<std::vector<double>> tensors_;
  std::deque<double> totals_;
};

// Verdicts for one update's submissions (norms[j]: submission j's per-tensor
// norms of one network): the reference of tensor t is the history's norms of
// t and this update's — with `logins` (submission j's login), this update's
// counted once per login (the median of its own). `names` name the tensors
// in the reasons.
std::vector<std::optional<std::string>> check_norms(const std::vector<std::vector<double>>& norms,
                                                    const NormHistory& history, const NormCheck& p,
                                                    const Layout& names,
                                                    const std::vector<std::string>* logins = nullptr);

}  // namespace gannf::cluster
