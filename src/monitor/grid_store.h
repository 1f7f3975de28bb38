// The coordinator's side of the dashboard: each sample grid it writes to its
// output folder is also stored in the database (sql/0007 gannf.sample_grids),
// so that the dashboard shows it on any machine. Needs only libpq.
#pragma once
#include <cstdint>
#include <string>

#include "pg.h"

namespace gannf::monitor {

// Stores (or replaces) the PNG of the grid drawn by the weights of
// `iteration`, for the run in the database. Throws pg::Error.
void store_sample_grid(pg::Connection& c, int64_t iteration, int64_t epoch, const std::string& png);

}  // namespace gannf::monitor
