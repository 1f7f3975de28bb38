// The coordinator's units per claim (src/cluster/unit_counts.h, issue 17
// item 2d): each worker's share of an update from its measured compute,
// upload and download times. No database.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "unit_counts.h"

using gannf::cluster::choose_unit_counts;
using gannf::cluster::WorkerPace;

namespace {

WorkerPace pace(double compute, double upload, double download) {
  WorkerPace p;
  p.measured = true;
  p.compute_per_unit = compute;
  p.upload_seconds = upload;
  p.download_seconds = download;
  return p;
}

// When the last of the workers is done with the shares given (d + u + k·c;
// 0 for a worker without units).
double makespan(const std::vector<WorkerPace>& w, const std::vector<int>& k) {
  double end = 0;
  for (size_t i = 0; i < w.size(); ++i)
    if (k[i] > 0) end = std::max(end, w[i].download_seconds + w[i].upload_seconds + k[i] * w[i].compute_per_unit);
  return end;
}

}  // namespace

TEST(UnitCounts, EqualWorkersShareTheUpdateEqually) {
  const std::vector<WorkerPace> w(4, pace(1.0, 2.0, 2.0));
  EXPECT_EQ(choose_unit_counts(w, 16, 64), std::vector<int>({4, 4, 4, 4}));
  // One unit each: nothing to sum.
  EXPECT_EQ(choose_unit_counts(w, 4, 64), std::vector<int>({1, 1, 1, 1}));
}

// A fast machine on a slow link and a slow one on a fast link: the fast one
// takes most units (it pays its link once per update, then c each), and the
// shares minimise the last finishing time: no move of one unit between two
// workers finishes earlier (checked against every such move).
TEST(UnitCounts, SharesFollowSpeedAndLinkAndNoSingleMoveIsBetter) {
  const std::vector<WorkerPace> w = {pace(0.25, 4.0, 4.0), pace(2.0, 0.2, 0.2), pace(1.0, 1.0, 1.0)};
  const int K = 24;
  const std::vector<int> k = choose_unit_counts(w, K, 64);
  ASSERT_EQ(k.size(), 3u);
  EXPECT_EQ(std::accumulate(k.begin(), k.end(), 0), K);
  EXPECT_GT(k[0], k[2]);
  EXPECT_GT(k[2], k[1]);
  const double best = makespan(w, k);
  for (size_t from = 0; from < w.size(); ++from)
    for (size_t to = 0; to < w.size(); ++to) {
      if (from == to || k[from] == 0) continue;
      std::vector<int> moved = k;
      --moved[from];
      ++moved[to];
      EXPECT_GE(makespan(w, moved), best - 1e-12) << "moving a unit from " << from << " to " << to;
    }
  // The greedy shares against an exhaustive search over every split of K.
  double exhaustive = std::numeric_limits<double>::infinity();
  for (int a = 0; a <= K; ++a)
    for (int b = 0; a + b <= K; ++b) exhaustive = std::min(exhaustive, makespan(w, {a, b, K - a - b}));
  EXPECT_NEAR(best, exhaustive, 1e-12);
}

TEST(UnitCounts, ClampedToTheCapAndToOne) {
  // The fast worker's share (all 12) is above what a login may hold.
  const std::vector<WorkerPace> w = {pace(0.1, 0.1, 0.1), pace(100.0, 50.0, 50.0)};
  EXPECT_EQ(choose_unit_counts(w, 12, 4), std::vector<int>({4, 1}));
  EXPECT_EQ(choose_unit_counts(w, 0, 4), std::vector<int>({1, 1}));
}

TEST(UnitCounts, UnmeasuredWorkersGetOneEachFirst) {
  std::vector<WorkerPace> w = {WorkerPace{}, pace(1.0, 1.0, 1.0), WorkerPace{}};
  const std::vector<int> k = choose_unit_counts(w, 8, 64);
  EXPECT_EQ(k, std::vector<int>({1, 6, 1}));
  EXPECT_EQ(choose_unit_counts({WorkerPace{}, WorkerPace{}}, 8, 64), std::vector<int>({1, 1}));
}

// Figures a hostile worker might report (the database range-checks them; the
// function must not trust that either): NaN, infinities, negatives, zero
// compute. A claimed zero compute time counts as a millisecond, so that
// worker takes many units, but never more than the cap.
TEST(UnitCounts, HostileFiguresStayWithinTheCap) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const std::vector<WorkerPace> w = {pace(nan, -1, inf), pace(0, 0, 0), pace(1.0, 1.0, 1.0)};
  const std::vector<int> k = choose_unit_counts(w, 30, 4);
  ASSERT_EQ(k.size(), 3u);
  for (int x : k) {
    EXPECT_GE(x, 1);
    EXPECT_LE(x, 4);
  }
}
