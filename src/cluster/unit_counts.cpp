#include "unit_counts.h"

#include <algorithm>
#include <cmath>

namespace gannf::cluster {

std::vector<int> choose_unit_counts(const std::vector<WorkerPace>& workers, int units, int cap) {
  const size_t n = workers.size();
  cap = std::max(1, cap);
  std::vector<int> share(n, 0);
  int left = std::max(0, units);
  for (size_t i = 0; i < n && left > 0; ++i)
    if (!workers[i].measured) {
      share[i] = 1;
      --left;
    }
  // A figure that is not a finite, non-negative number counts as 0; a compute
  // time under a millisecond as one (so that a worker claiming to be
  // infinitely fast does not draw every unit by a rounding tie).
  auto clean = [](double v) { return std::isfinite(v) && v > 0 ? v : 0.0; };
  // Each worker's compute per unit and link time; a link time within twice
  // the class's median (the upper one of an even count) counts as the median.
  std::vector<double> per(n), link(n), links;
  for (size_t i = 0; i < n; ++i) {
    per[i] = std::max(1e-3, clean(workers[i].compute_per_unit));
    link[i] = clean(workers[i].download_seconds) + clean(workers[i].upload_seconds);
    if (workers[i].measured) links.push_back(link[i]);
  }
  if (!links.empty()) {
    std::nth_element(links.begin(), links.begin() + links.size() / 2, links.end());
    const double median = links[links.size() / 2];
    for (double& f : link)
      if (f <= 2 * median) f = median;
  }
  for (; left > 0; --left) {
    size_t best = n;
    double best_end = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!workers[i].measured) continue;
      const double end = link[i] + (share[i] + 1) * per[i];
      if (best == n || end < best_end) {
        best = i;
        best_end = end;
      }
    }
    if (best == n) break;  // nobody measured: the unmeasured workers claim one at a time
    ++share[best];
  }
  for (int& k : share) k = std::clamp(k, 1, cap);
  return share;
}

}  // namespace gannf::cluster
