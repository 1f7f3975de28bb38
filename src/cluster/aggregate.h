// Aggregation of one update (docs/architecture.md, Data flow of one iteration):
// the submissions that count, in memory, become the averaged gradients of G
// and D, their BN running statistics folded in, and the update's loss figures.
// Pure: no database, no back end — the coordinator calls it inside its close
// transaction, the tests call it on numbers worked out by hand.
//
// Rules (issue 12, robust aggregation):
//   mean     the sample-weighted mean, summed in double in unit order: the very
//            sum of one local step over the same images (distributed = local,
//            bit for bit). For a trusted cluster.
//   clip     each submission's gradient (per network) scaled down to at most
//            clip_factor × the reference norm (the median of recent accepted
//            norms, or of this update's when there is no history yet), then
//            the weighted mean. Works with 2-3 submissions: one submission can
//            move the update by at most its weight × the clip bound.
//   trimmed  coordinate-wise: per element, drop the `trim` largest and the
//            `trim` smallest values (fewer when there are too few submissions
//            to drop that many from both ends), mean of the rest — with 3
//            submissions and trim 1 the coordinate-wise median.
//   clip+trimmed  clip, then trimmed: bounded norm AND bounded direction.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dcgan.h"
#include "net.h"

namespace gannf::cluster {

enum class AggregationRule { Mean, Clip, Trimmed, ClipTrimmed };
const char* rule_name(AggregationRule r);
// "mean", "clip", "trimmed", "clip+trimmed"; nullopt for anything else.
std::optional<AggregationRule> parse_rule(std::string_view name);

// One accepted submission. Every weight comes from the coordinator's unit
// metadata (sample_count, micro_batches), never from the worker's claim.
struct UnitContribution {
  int64_t id = 0;
  int sample_count = 0;
  std::vector<int> micro_batches;  // the forward passes its BN copies come from
  std::span<const float> grad[2];  // G, D: one value per parameter
  // G: one copy of net.num_stats() per micro-batch; D: two per micro-batch
  // (the real pass, then the fake pass), as the worker recorded them.
  std::span<const float> bn[2];
  std::optional<StepStats> losses;
};

struct RobustParams {
  double clip_factor = 2;             // clip: bound = clip_factor × reference
  double reference_norm[2] = {0, 0};  // G, D; 0: no history, this update's median
  int trim = 1;                       // trimmed: values dropped at each end
};

struct AggregateResult {
  std::vector<float> grad[2];   // G, D
  std::vector<double> scale[2]; // per contribution: the factor clipping applied (1: none)
  StepStats losses;             // sample-weighted over those that reported them
  int64_t samples = 0;
};

// `units` in the order of local training (by position in the epoch's
// permutation): the mean's sum follows it. Throws std::invalid_argument when
// units is empty or the gradients' sizes differ.
AggregateResult aggregate(std::span<const UnitContribution> units, AggregationRule rule,
                          const RobustParams& p = {});

// What fold_bn needs of a network: its running statistics (host memory) and
// where each BN layer's sit in them.
struct BnTarget {
  float* running = nullptr;            // (num_stats)
  int64_t* batches_tracked = nullptr;
  const std::vector<LayerSpec>* layers = nullptr;
  size_t num_stats = 0;
  float momentum = 0.1f;
};

// Folds the units' BN batch statistics into G's and D's running statistics.
// per_micro_batch: every forward pass folded on its own, in the order a
// local step runs them (G's pass, D's real pass, D's fake pass, micro-batch by
// micro-batch) — the exact arithmetic of Net::forward. Otherwise each unit's
// passes are first merged (sample-weighted means of the copies' means and
// variances) and folded once per unit with n = sample_count, so that a
// worker's choice of micro-batch cannot multiply its weight.
void fold_bn(BnTarget g, BnTarget d, std::span<const UnitContribution> units, bool per_micro_batch);

// Helpers the validation shares.
double l2_norm(std::span<const float> v);  // accumulated in double
double median(std::vector<double> v);      // the mean of the middle two for an even count; NaN when empty

}  // namespace gannf::cluster
