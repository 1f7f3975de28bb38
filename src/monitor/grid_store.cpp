#include "grid_store.h"

namespace gannf::monitor {

void store_sample_grid(pg::Connection& c, int64_t iteration, int64_t epoch, const std::string& png) {
  pg::Params p;
  p.add(iteration).add((int32_t)epoch).bytes(png.data(), png.size());
  c.exec(
      "INSERT INTO gannf.sample_grids (iteration, run_id, epoch, png) "
      "SELECT $1, ts.run_id, $2, $3 FROM gannf.training_state ts "
      "ON CONFLICT (iteration) DO UPDATE SET run_id = EXCLUDED.run_id, epoch = EXCLUDED.epoch, png = EXCLUDED.png, "
      "recorded_at = now()",
      p);
}

}  // namespace gannf::monitor
