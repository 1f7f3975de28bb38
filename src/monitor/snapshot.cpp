#include "snapshot.h"

#include <tuple>

namespace gannf::monitor {

bool RunRow::operator==(const RunRow& o) const {
  auto key = [](const RunRow& r) {
    return std::tie(r.run_id, r.db_status, r.coordinator_running, r.iteration, r.epoch, r.position, r.dataset_size,
                    r.lease_seconds, r.started_at, r.updated_at, r.epochs, r.images_per_unit, r.units_per_update,
                    r.dataset);
  };
  const DcganConfig &a = model, &b = o.model;
  return key(*this) == key(o) && a.image_size == b.image_size && a.nz == b.nz && a.ngf == b.ngf &&
         a.ndf == b.ndf && a.nc == b.nc;
}

void Tally::add(const std::string& state, int32_t sample_count, std::optional<float> secs,
                const std::optional<std::string>& reason, Seconds submitted_at) {
  if (state == "pending" || state == "used") {
    units += 1;
    images += sample_count;
    if (secs && *secs > 0) {
      compute_seconds += *secs;
      timed_images += sample_count;
    }
  } else if (state == "rejected") {
    rejected += 1;
    reasons[reason.value_or("(no reason recorded)")] += 1;
  } else if (state == "stale") {
    stale += 1;
  }
  if (submitted_at > last_submission) last_submission = submitted_at;
}

void Tally::merge(const Tally& o) {
  units += o.units;
  images += o.images;
  rejected += o.rejected;
  stale += o.stale;
  compute_seconds += o.compute_seconds;
  timed_images += o.timed_images;
  if (o.last_submission > last_submission) last_submission = o.last_submission;
  for (const auto& [r, n] : o.reasons) reasons[r] += n;
}

}  // namespace gannf::monitor
