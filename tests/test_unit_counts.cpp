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
// 0 for a worker without units), with the model's link times: the median of
// the class unless a worker's own is more than twice it.
double makespan(const std::vector<WorkerPace>& w, const std::vector<int>& k) {
  std::vector<double> f;
  for (const WorkerPace& p : w) f.push_back(p.download_seconds + p.upload_seconds);
  std::vector<double> sorted = f;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  double end = 0;
  for (size_t i = 0; i < w.size(); ++i)
    if (k[i] > 0) end = std::max(end, (f[i] <= 2 * median ? median : f[i]) + k[i] * w[i].compute_per_unit);
  return end;
}

}  // namespace

TEST(UnitCounts, EqualWorkersShareTheUpdateEqually) {
  const std::vector<WorkerPace> w(4, pace(1.0, 2.0, 2.0));
  EXPECT_EQ(choose_unit_counts(w, 16, 64), std::vector<int>({4, 4, 4, 4}));
  // One unit each: nothing to sum.
  EXPECT_EQ(choose_unit_counts(w, 4, 64), std::vector<int>({1, 1, 1, 1}));
}

// Three machines of different speeds, one of them on a link three times the
// others' (a slow Wi-Fi): the fastest takes most units, the slow link costs
// its machine units, and the shares minimise the last finishing time: no
// move of one unit between two workers finishes earlier, and an exhaustive
// search over every split of K finds no better one.
TEST(UnitCounts, SharesFollowSpeedAndASlowLinkAndAreOptimal) {
  const std::vector<WorkerPace> w = {pace(0.25, 1.0, 1.0), pace(2.0, 1.0, 1.0), pace(0.5, 3.0, 3.0)};
  const int K = 24;
  const std::vector<int> k = choose_unit_counts(w, K, 64);
  ASSERT_EQ(k.size(), 3u);
  EXPECT_EQ(std::accumulate(k.begin(), k.end(), 0), K);
  EXPECT_GT(k[0], k[2]);
  EXPECT_GT(k[0], k[1]);
  // On the median link the third machine (c = 0.5) would take more units;
  // its own link, three times the median, costs it some.
  const std::vector<int> same_link =
      choose_unit_counts({pace(0.25, 1.0, 1.0), pace(2.0, 1.0, 1.0), pace(0.5, 1.0, 1.0)}, K, 64);
  EXPECT_LT(k[2], same_link[2]);
  const double best = makespan(w, k);
  for (size_t from = 0; from < w.size(); ++from)
    for (size_t to = 0; to < w.size(); ++to) {
      if (from == to || k[from] == 0) continue;
      std::vector<int> moved = k;
      --moved[from];
      ++moved[to];
      EXPECT_GE(makespan(w, moved), best - 1e-12) << "moving a unit from " << from << " to " << to;
    }
  double exhaustive = std::numeric_limits<double>::infinity();
  for (int a = 0; a <= K; ++a)
    for (int b = 0; a + b <= K; ++b) exhaustive = std::min(exhaustive, makespan(w, {a, b, K - a - b}));
  EXPECT_NEAR(best, exhaustive, 1e-12);
}

// What bench/campus.sh measured: 8 identical load workers (c = 0.3 s) behind
// one 100 Mbit/s server link reported d + u from 5.3 to 9.7 s, the link's
// congestion at the moment each measured. Taken per worker, the fastest
// links would have drawn the units and half the class one unit per upload;
// within 2× of the median they are one link, and all sum the cap.
TEST(UnitCounts, CongestionNoiseOfASharedServerLinkDoesNotSplitTheClass) {
  const double ud[8][2] = {{4.88, 3.25}, {1.14, 4.37}, {1.86, 4.42}, {3.83, 4.57},
                           {3.99, 4.71}, {3.68, 4.25}, {1.15, 4.13}, {4.81, 3.42}};
  std::vector<WorkerPace> w;
  for (const auto& x : ud) w.push_back(pace(0.3, x[0], x[1]));
  EXPECT_EQ(choose_unit_counts(w, 32, 4), std::vector<int>(8, 4));
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
