// Summed submissions (issue 17, sql/0017) as the aggregation rules see them.
// A worker that holds k units of one iteration sends one gradient per network
// — the mean over all their images, accumulated unit after unit — with the BN
// statistics of every forward pass and each unit's losses. For the update it
// enters as k contributions: each unit with its own sample count, micro-
// batches, BN statistics and losses, and the shared gradient. So the exact
// mean weighs it by its images (its k terms sum to the one sample-weighted
// term), and the robust rules see k votes of that gradient: what k
// submissions of the same gradient would be, which a worker holding k units
// could always send. It neither weighs as one unit nor escapes trimming
// (docs/scaling.md, Summed submissions).
#pragma once
#include <optional>
#include <span>
#include <vector>

#include "aggregate.h"

namespace gannf::cluster {

struct SummedUnit {
  int64_t id = 0;  // its submission row
  int sample_count = 0, micro_batch = 0;
  std::optional<StepStats> losses;
};

// Appends one contribution per unit to `out`; the spans point into grad and
// bn, which must outlive `out`. bn[k] holds every forward pass's copy of
// num_stats[k] values in unit order (G one per micro-batch, D two); throws
// std::invalid_argument when its length is not that.
void append_summed(std::vector<UnitContribution>& out, std::span<const SummedUnit> units,
                   const std::span<const float> grad[2], const std::span<const float> bn[2], const size_t num_stats[2]);

}  // namespace gannf::cluster
