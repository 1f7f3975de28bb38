// Bounded storage (label ops; issue 13, sql/0010): the tables that each
// iteration rewrites (weights, weights_delta, optimizer_state,
// submission_blobs) stay at a
// few iterations' size however long the run, under the bound that
// docs/operations.md states, and `gannf-coord status` shows the sizes.
#include "test_cluster_harness.h"

namespace {

using namespace gannf;
using namespace gannf::test;

class OpsStorage : public ClusterRun {
 protected:
  // Bytes on disk of the four tables, TOAST and indexes included.
  int64_t rewritten_bytes() {
    return count("SELECT sum(total_bytes)::bigint FROM gannf.storage "
                 "WHERE name IN ('weights', 'weights_delta', 'optimizer_state', 'submission_blobs')");
  }
  void run_to(int iterations, const std::string& log) {
    Proc& run = start_coord_run({"--iterations", std::to_string(iterations), "--sample-interval", "0",
                                 "--checkpoint-interval", "0"},
                                log);
    auto rc = run.wait(300);
    ASSERT_TRUE(rc.has_value()) << logs();
    ASSERT_EQ(*rc, 0) << logs();
  }
};

TEST_F(OpsStorage, RewrittenTablesStayUnderTheBoundForAnyRunLength) {
  constexpr int kUnits = 2, kShort = 10, kLong = 40;
  coord_cmd("init", small_run(4096, 8, kUnits, 53));
  if (HasFatalFailure()) return;
  start_worker("a", {"--batch-size", "8"});
  run_to(kShort, "coord-run-short.log");
  if (HasFatalFailure()) return;
  const int64_t after_short = rewritten_bytes();
  run_to(kLong, "coord-run-long.log");
  if (HasFatalFailure()) return;
  const int64_t after_long = rewritten_bytes();

  // The bound of docs/operations.md: P bytes of parameters (G and D), S of
  // BN running statistics, U units open per iteration:
  //   weights, their deltas (sql/0019: at most P, the planes stored raw) and
  //   Adam state: 4 iterations of (4P + S) (2 live, up to 2 dead until VACUUM
  //   may remove them), gradients: 3 iterations of U (P + 8S),
  //   plus a quarter for TOAST's page and chunk overhead and 1 MB of heap,
  //   index and free-space-map pages.
  const int64_t P = 4 * count("SELECT sum(element_count)::bigint FROM gannf.weights WHERE iteration = " +
                              std::to_string(kLong)),
                S = 4 * count("SELECT sum(bn_count)::bigint FROM gannf.weights WHERE iteration = " + std::to_string(kLong));
  const int64_t U = kUnits;
  const int64_t bound = (4 * (4 * P + S) + 3 * U * (P + 8 * S)) * 5 / 4 + (1 << 20);
  // The part of B for rows that are dead but not yet removable: 2 iterations
  // of weights and Adam state and 2 of gradients. Whether a run ever needs it
  // depends on timing (a submit() or a read whose snapshot predates a commit
  // keeps that commit's deletions past the VACUUM that follows it; under load
  // that happens more often), and the files keep their largest size, so a
  // run may reach it between the two measurements: what 30 more iterations
  // may add is this, never the 30 iterations of rows they write.
  const int64_t dead_allowance = (2 * (4 * P + S) + 2 * U * (P + 8 * S)) * 5 / 4;
  // What is surely written: weights and Adam state (3P + S) and gradients;
  // the deltas' share depends on how they compress.
  const int64_t written = (kLong - kShort) * ((3 * P + S) + U * (P + 8 * S));
  std::printf("rewritten tables: %.2f MB after %d iterations, %.2f MB after %d; bound %.2f MB (P = %.2f MB), "
              "dead-row allowance %.2f MB, %.2f MB written in between\n",
              after_short / 1e6, kShort, after_long / 1e6, kLong, bound / 1e6, P / 1e6, dead_allowance / 1e6,
              written / 1e6);
  ASSERT_GT(written, 4 * dead_allowance) << "the run is too short to tell leveling off from growth";
  EXPECT_LE(after_short, bound);
  EXPECT_LE(after_long, bound);
  // Leveled off: without the VACUUM, the 30 iterations add all they write.
  EXPECT_LE(after_long, after_short + dead_allowance) << "grew from " << after_short << " to " << after_long << " bytes";

  // `gannf-coord status` shows where the bytes are.
  const std::string said = coord_output("status");
  EXPECT_NE(said.find("storage: "), std::string::npos) << said;
  EXPECT_NE(said.find("database " + db_), std::string::npos) << said;
  EXPECT_NE(said.find("WAL (whole server)"), std::string::npos) << said;
}

}  // namespace
