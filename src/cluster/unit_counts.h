// How many units each worker claims (and sums) at once, chosen by the
// coordinator from what each worker measured (issue 17, item 2d; sql/0018;
// docs/scaling.md, "Units per claim").
//
// The model: a worker given k units of an update downloads the weights once
// (d s), computes the k units into one buffer (k × c s) and uploads one
// summed submission (u s, whatever k), so it is done after d + u + k·c. The
// update closes when its last unit is in, so the units are shared so that the
// latest worker finishes as early as possible: each unit in turn goes to the
// worker whose finishing time it raises least (greedy; each worker's
// finishing times rise with k, so taking the K smallest of them all is
// optimal). A fast machine gets many units and sums them; a slow one few.
//
// The link time d + u in that sum is the class's median unless a worker's
// own is more than twice that (a genuinely slow link: 20 Mbit/s Wi-Fi beside
// wired machines is 5×). Measured through a shared server link, each
// worker's d + u is that link's congestion at the moment it measured — noise
// between identical machines (bench/campus.sh, 8 workers on a 100 Mbit/s
// server link, c = 0.3 s: d + u from 5.3 to 9.7 s, 0.65–1.2× their median).
// Taken at face value, that noise gave half of the class one unit per upload
// (docs/scaling.md). Within 2× of the median, links do not change a share:
// compute speed does.
// Workers that have not measured anything yet are given one unit each first.
// Every count is clamped to [1, cap] (cap: what a login may hold at once): a
// worker whose share is 0 still claims one when any is left, and a share
// above the cap is claimed in several rounds. The counts are advice: claim()
// enforces the caps whatever a worker asks for.
#pragma once
#include <cstdint>
#include <vector>

namespace gannf::cluster {

struct WorkerPace {
  bool measured = false;         // it has reported a timing
  double compute_per_unit = 0;   // seconds
  double upload_seconds = 0;     // one submission
  double download_seconds = 0;   // the weights, once per update
};

// One count per worker, in the order given, each in [1, cap]; `units`: the
// update's units (≥ 0); cap ≥ 1.
std::vector<int> choose_unit_counts(const std::vector<WorkerPace>& workers, int units, int cap);

}  // namespace gannf::cluster
