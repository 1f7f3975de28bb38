// What an update costs the database as the run grows (label ops; issue 13,
// sql/0016): a two-hour class makes thousands of updates, and no statement
// that an update makes (the coordinator's, the workers' claim, heartbeat and
// submit, gannf-coord's own) may read the run's history. Measured by the
// server itself: rows read by sequential and index scans of the tables that
// grow with the run (pg_stat_user_tables, pg_stat_user_indexes), on a run
// that stands at iteration 10 000 with its made-up past behind it.
#include "test_cluster_harness.h"

namespace {

using namespace gannf;
using namespace gannf::test;

constexpr const char* kHistoryTables = "'work_units', 'submissions', 'loss_history', 'sample_grids'";

class OpsCost : public ClusterRun {
 protected:
  // Moves the run just initialised to iteration `past`, with `past` updates
  // of `units` units each behind it: done units, used submissions of the
  // worker that will run (login 1, name "a": claim's per-login counts and
  // heartbeat's hold bound look at exactly these), loss history.
  void make_past(int64_t past, int units) {
    pg::Connection& c = coord();
    pg::Transaction tx(c);
    pg::Params p;
    p.add(past);
    c.exec("INSERT INTO gannf.weights (iteration, network, layout_hash, element_count, params, params_checksum, "
           "bn_count, bn_running, bn_checksum, num_batches_tracked) "
           "SELECT $1, network, layout_hash, element_count, params, params_checksum, bn_count, bn_running, "
           "bn_checksum, num_batches_tracked FROM gannf.weights WHERE iteration = 0",
           p);
    c.exec("INSERT INTO gannf.optimizer_state (iteration, network, step, element_count, adam_m, adam_v) "
           "SELECT $1, network, step, element_count, adam_m, adam_v FROM gannf.optimizer_state WHERE iteration = 0",
           p);
    c.exec("DELETE FROM gannf.weights WHERE iteration = 0");
    c.exec("UPDATE gannf.work_units SET iteration = $1", p);
    c.exec("UPDATE gannf.training_state SET iteration = $1", p);
    c.exec("INSERT INTO gannf.workers (login, name, backend, batch_size, registered_at, last_seen) "
           "VALUES ('gannf_test_w1', 'a', 'cpu', 8, now() - interval '2 hours', now() - interval '1 hour')");
    pg::Params pu;
    pu.add(past).add(units);
    c.exec("INSERT INTO gannf.work_units (epoch, first_index, sample_count, iteration, state, attempt, worker_id, "
           "claimed_at, submitted_at) "
           "SELECT 0, 8 * j, 8, i, 'done', 1, (SELECT id FROM gannf.workers), now() - interval '2 hours', "
           "now() - interval '2 hours' + interval '1 second' "
           "FROM generate_series(0, $1 - 1) i, generate_series(1, $2) j",
           pu);
    c.exec("INSERT INTO gannf.submissions (work_unit_id, iteration, attempt, worker_id, sample_count, state, "
           "submitted_at) "
           "SELECT id, iteration, 1, worker_id, 8, 'used', submitted_at FROM gannf.work_units WHERE state = 'done'");
    c.exec("INSERT INTO gannf.loss_history (iteration, epoch, loss_d, loss_g, d_real, d_fake, d_accuracy, samples, "
           "submissions_used, active_workers, images_per_second, seconds, update_seconds, recorded_at) "
           "SELECT i, 0, 1.2, 0.9, 0.6, 0.4, 0.7, 8 * $2, $2, 1, 100, 0.2, 0.05, "
           "now() - interval '2 hours' + make_interval(secs => i * 0.1) FROM generate_series(0, $1 - 1) i",
           pu);
    tx.commit();
    c.exec("ANALYZE");
  }

  // Rows read from the history tables since the last reset, by table and
  // access path, and in all.
  struct Reads {
    int64_t total = 0;
    std::string detail;
  };

  pg::Connection& admin_here() {
    if (!su_) su_ = std::make_unique<pg::Connection>(connect_or_fail("user=postgres dbname=" + db_));
    return *su_;
  }

  // Every other session on the database is gone: their counts are flushed
  // (a backend reports its statistics as it exits).
  void wait_alone() {
    ASSERT_TRUE(wait_for([&] {
      return admin_here()
                 .exec("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid()")
                 .get<int64_t>(0, 0) == 0;
    }, 60)) << "sessions stayed on the database";
  }

  Reads reads() {
    admin_here().exec("SELECT pg_stat_clear_snapshot()");
    pg::Result r = admin_here().exec(
        std::string("SELECT t.relname::text, t.seq_scan, t.seq_tup_read, "
                    "coalesce((SELECT sum(i.idx_tup_read) FROM pg_stat_user_indexes i WHERE i.relid = t.relid), 0)"
                    "::bigint FROM pg_stat_user_tables t WHERE t.schemaname = 'gannf' AND t.relname IN (") +
        kHistoryTables + ") ORDER BY 1");
    Reads out;
    for (int i = 0; i < r.rows(); ++i) {
      out.total += r.get<int64_t>(i, 2) + r.get<int64_t>(i, 3);
      out.detail += "  " + r.get<std::string>(i, 0) + ": " + std::to_string(r.get<int64_t>(i, 1)) +
                    " sequential scans reading " + std::to_string(r.get<int64_t>(i, 2)) + " rows, " +
                    std::to_string(r.get<int64_t>(i, 3)) + " rows through indexes\n";
    }
    return out;
  }

  // gannf-coord run up to iteration `until` with one worker that leaves when
  // the run stops; the rows the history tables gave out meanwhile.
  Reads run_to(int64_t until, const std::string& tag) {
    coord_.reset();
    wait_alone();
    admin_here().exec("SELECT pg_stat_reset()");
    Proc& w = start_worker("a", {"--batch-size", "8", "--exit-when-done"});
    Proc& run = start_coord_run({"--iterations", std::to_string(until), "--sample-interval", "0",
                                 "--checkpoint-interval", "0"},
                                "coord-run-" + tag + ".log");
    auto rc = run.wait(300);
    EXPECT_TRUE(rc.has_value() && *rc == 0) << logs();
    EXPECT_EQ(w.wait(60), 0) << logs();
    wait_alone();
    return reads();
  }

  std::unique_ptr<pg::Connection> su_;
};

TEST_F(OpsCost, AnUpdateReadsNoneOfTheRunsHistory) {
  constexpr int64_t kPast = 10000;
  constexpr int kUnits = 2, kShort = 3, kLong = 13;
  coord_cmd("init", small_run(4096, 8, kUnits, 61));
  if (HasFatalFailure()) return;
  make_past(kPast, kUnits);
  const int64_t past_rows = count("SELECT count(*) FROM gannf.work_units");

  // Two runs that differ only in their number of updates: what a run reads
  // once (the loss history for losses.csv, the state) cancels out.
  const Reads a = run_to(kPast + kShort, "short");
  if (HasFailure()) return;
  const Reads b = run_to(kPast + kLong, "long");
  if (HasFailure()) return;
  ASSERT_EQ(count("SELECT iteration FROM gannf.training_state"), kPast + kLong);
  const double per_update = (double)(b.total - a.total) / (kLong - kShort);
  std::printf("history: %lld units, as many submissions, %lld updates\n%d updates read %lld rows of it:\n%s"
              "%d updates read %lld rows:\n%s=> %.1f rows per update\n",
              (long long)past_rows, (long long)kPast, kShort, (long long)a.total, a.detail.c_str(), kLong,
              (long long)b.total, b.detail.c_str(), per_update);
  // An update touches its own few units and submissions, a loss row and the
  // last few submissions of a worker (its hold bound), and the polls while it
  // waits read the open units again: tens of rows, more on a slow machine.
  // Reading the history once would be 20 000.
  EXPECT_LT(per_update, 1000) << "each update reads rows of the run's history";

  // The epoch progress the coordinator now reads (sql/0016's epoch_done)
  // is the sum it replaced, and init --force empties it with the units.
  const std::string differ =
      "SELECT count(*) FROM (SELECT epoch, sum(sample_count)::bigint AS samples FROM gannf.work_units "
      "WHERE state = 'done' GROUP BY epoch) u FULL JOIN (SELECT * FROM gannf.epoch_done WHERE samples <> 0) e "
      "USING (epoch) WHERE u.samples IS DISTINCT FROM e.samples";
  EXPECT_EQ(count("SELECT samples FROM gannf.epoch_done WHERE epoch = 0"), 8 * (kUnits * (kPast + kLong)));
  EXPECT_EQ(count(differ), 0);
  coord_.reset();
  coord_cmd("init", [] {
    auto a = small_run(4096, 8, kUnits, 61);
    a.push_back("--force");
    return a;
  }());
  EXPECT_EQ(count("SELECT coalesce(sum(samples), 0)::bigint FROM gannf.epoch_done"), 0);
  EXPECT_EQ(count(differ), 0);
}

}  // namespace
