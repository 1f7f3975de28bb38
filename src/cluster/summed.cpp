#include "summed.h"

#include <stdexcept>

#include "run_settings.h"

namespace gannf::cluster {

void append_summed(std::vector<UnitContribution>& out, std::span<const SummedUnit> units,
                   const std::span<const float> grad[2], const std::span<const float> bn[2], const size_t num_stats[2]) {
  size_t at[2] = {0, 0};
  for (const SummedUnit& s : units) {
    UnitContribution u;
    u.id = s.id;
    u.sample_count = s.sample_count;
    u.micro_batches = micro_batches(s.sample_count, s.micro_batch);
    for (int k = 0; k < 2; ++k) {
      const size_t n = u.micro_batches.size() * (k ? 2 : 1) * num_stats[k];
      if (at[k] + n > bn[k].size()) throw std::invalid_argument("append_summed: too few BN statistics for the units");
      u.grad[k] = grad[k];
      u.bn[k] = bn[k].subspan(at[k], n);
      at[k] += n;
    }
    u.losses = s.losses;
    out.push_back(std::move(u));
  }
  for (int k = 0; k < 2; ++k)
    if (at[k] != bn[k].size()) throw std::invalid_argument("append_summed: more BN statistics than the units ran");
}

}  // namespace gannf::cluster
