// A student's transaction kept across calls into a deadlock with the
// coordinator (docs/security.md, "Beside a real class"): what gannf-coord does
// once PostgreSQL has ended its own transaction (40P01).
#pragma once
#include <string>
#include <vector>

#include "pg.h"

namespace gannf::cluster {

// After a deadlock that ended the coordinator's transaction (40P01), whose
// DETAIL names the processes of the cycle: ends each worker session of them
// still in the transaction it held there, kept across calls, and strikes its
// login. Returns a line for each, for the coordinator's log.
std::vector<std::string> end_deadlocked_sessions(pg::Connection& c, const std::string& detail);

}  // namespace gannf::cluster
