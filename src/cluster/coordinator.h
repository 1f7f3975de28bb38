// The coordinator's loop (docs/architecture.md, Data flow of one iteration): it holds
// the master weights and Adam state, publishes weights and work units, waits
// for submissions, validates, averages, applies Adam, folds BN statistics and
// commits the next iteration — all of it in ONE transaction, so that a
// coordinator killed at any instant restarts where the database says it was,
// with nothing lost and nothing counted twice.
//
// What the database holds is the truth; this object's nets and Adam state
// are a cache of the current iteration's rows, reloaded whenever a commit
// fails or the connection drops.
//
// Unit lifecycle (sql/0001 states):
//   created 'available' for iteration k (a slice [first_index, +count) of
//   the epoch's seeded permutation) -> 'claimed' by a worker (lease) ->
//   'submitted' (its submission 'pending') -> at the close of k: 'done'
//   (submission 'used'), or, when validation fails, 'available' again at once
//   (submission 'rejected', reason kept). Units still open when k closes move
//   to k+1 as 'available' and are computed again against the new weights.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cpu_watch.h"
#include "dcgan.h"
#include "pg.h"
#include "run_settings.h"
#include "spot_check.h"
#include "validate.h"

namespace gannf::cluster {

struct AggregateResult;   // aggregate.h
struct UnitContribution;

using LogFn = std::function<void(const std::string&)>;

// Creates a fresh run in the database behind `c`: applies the migrations,
// writes the training state, weights 0 (DCGAN initialisation from the seed,
// as gannf-train does), zero Adam state and the first work units, in one
// transaction. Throws std::runtime_error when a run exists and !force; with
// force the old run's rows are deleted in the same transaction (workers stay
// registered).
void init_run(pg::Connection& c, const RunSettings& s, bool force, const LogFn& log = {});

// What one committed update did.
struct IterationReport {
  int64_t iteration = 0;      // the update's number; weights iteration + 1 are now published
  int64_t epoch = 0;          // epoch of the update's last image (from 0; loss_history's)
  double epoch_progress = 0;  // fraction of that epoch's images whose units are done
  int used = 0, rejected = 0;
  int64_t samples = 0;
  int active_workers = 0;
  StepStats losses;           // sample-weighted over the used submissions
  double seconds = 0;         // since the previous commit (or since run() began)
  double wait_seconds = 0;    // of which waiting for submissions
  double update_seconds = 0;  // of which validating, averaging, Adam, publishing, committing
  double aggregate_seconds = 0;  // of update: up to the averaged gradients and Adam applied
  double publish_seconds = 0;    // of update: writing the new weights and Adam state
  double commit_seconds = 0;     // of update: the synchronous COMMIT
  double images_per_second = 0;
  bool recovered = false;     // read back from loss_history after a lost COMMIT reply (no timings split)
};

struct CoordinatorOptions {
  std::string conninfo;
  int64_t max_iterations = 0;            // stop once the run has made this many updates (0: no bound)
  const std::atomic<bool>* stop = nullptr;
  LogFn log;                             // progress and warnings, one line each
  double idle_report_seconds = 30;       // "waiting for workers" lines
  std::string dataset;                   // for spot checks; empty: the path the run was made with
  // The watch on the server's CPU (cpu_watch.h): a worker login whose SQL
  // (its own, and a gannf-worker's calls but uploads and weights) runs more
  // than this × 10 s in 10 s (summed over its sessions: a share of one
  // server core) is shut out. 0: no watch.
  double student_sql_limit = 0.3;
  // And whose gannf-worker calls (uploads and weights aside) run on the
  // CPU more than this × 10 s in 10 s; the two shares are added. Both 0:
  // no watch.
  double worker_call_limit = 1.0;
};

class Coordinator {
 public:
  // Connects, applies missing migrations, takes the coordinator lock (one
  // coordinator per database) and loads the current iteration. Throws.
  explicit Coordinator(const CoordinatorOptions& o);
  ~Coordinator();

  // Stopped: *stop (a signal); StopCommand: `gannf-coord stop` set the run's
  // status to 'stopped'. While the status is 'paused' no iteration closes.
  enum class Outcome { Bound, Finished, Stopped, StopCommand };
  // Runs iterations until max_iterations, the end of the last epoch, *stop,
  // or a stop from another terminal. on_update runs after each commit.
  Outcome run(const std::function<void(const IterationReport&)>& on_update = {});

  const RunSettings& settings() const { return s_; }
  // The watch's busiest login so far; nullopt where the watch is off.
  std::optional<CpuWatchPeak> watch_peak() const {
    return cpu_watch_ ? std::optional<CpuWatchPeak>(cpu_watch_->peak()) : std::nullopt;
  }
  int64_t iteration() const { return iteration_; }
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }
  Net<float>& G() { return *G_; }
  Net<float>& D() { return *D_; }
  Adam<float>& adam_G() { return *adamG_; }
  Adam<float>& adam_D() { return *adamD_; }
  Backend<float>& backend() { return *be_; }
  // The coordinator's database session, for what it writes besides the
  // iteration (the dashboard's sample grids); throws while it reconnects.
  pg::Connection& connection();

  struct LossRow {
    int64_t iteration, epoch;
    StepStats s;
  };
  // The loss history of the run, oldest first.
  std::vector<LossRow> loss_history();

 private:
  struct Submission;  // validated, in memory until its iteration closes
  bool stop_command_ = false;  // wait_until_ready saw status 'stopped'
  bool said_paused_ = false;
  double pace_seconds_ = 0;  // cpu_seconds_per_image, once measured (record_pace)
  bool said_roles_ = false;  // connect() checked roles.sql's locks and large objects once
  bool said_unit_counts_error_ = false;  // assign_unit_counts() failed once: said

  void connect();
  void load_state();
  bool wait_until_ready(double* wait_seconds, bool* finished);
  void refresh_pending();
  std::optional<std::string> fetch_and_validate(int64_t id, Submission* out);
  // The spot check of submission s (SpotChecker::check) at its back end's
  // tolerance plus the wire format's rounding: why it fails, or nothing.
  // Marks s spot-checked.
  std::optional<std::string> spot_check(Submission& s);
  // Serves the unit again; the submission becomes 'rejected' with the reason
  // (counted against the iteration), or 'stale' when its blobs were lost.
  // `recomputed`: its recomputation differs (a quarantine), otherwise a
  // forgivable strike (sql/0024). `defer`: a forgivable strike waits in
  // strikes_due_ for settle_strikes() (close_iteration's judgement).
  void reject(int64_t id, int64_t unit, const std::string& reason, bool lost, bool recomputed, bool defer = false);
  // The strike of a rejected submission against its login (sql/0024's
  // strike()); says when it quarantines the login.
  void strike_login(int64_t id, const std::string& reason, bool recomputed);
  // close_iteration's deferred forgivable strikes and forgive() of the
  // update's used submissions `used_ids` (marked 'used'), in id order.
  void settle_strikes(int64_t k, std::vector<int64_t> used_ids);
  // Removes from `used` the submissions of logins quarantined while the
  // update was judged (strike() rejected their pending work).
  void refuse_quarantined(int64_t k, std::vector<Submission*>& used);
  // One update, in one transaction: the pending submissions validated
  // (pending_of), the first updates recomputed (check_first_updates), the
  // norms checked across the update (check_norms_across), the rest
  // aggregated and stepped (apply_update), the bookkeeping and the commit.
  IterationReport close_iteration();
  std::vector<Submission*> pending_of(int64_t k);
  void drop(int64_t k, std::vector<Submission*>& used, const std::vector<std::string>& why,
            const std::string& context);
  void check_first_updates(int64_t k, std::vector<Submission*>& used);
  void check_norms_across(int64_t k, std::vector<Submission*>& used);
  AggregateResult apply_update(int64_t k, const std::vector<Submission*>& used, std::vector<UnitContribution>* units);
  double epoch_progress(int64_t epoch);
  void vacuum_storage();
  // After an update: each present worker's units per claim for the next one,
  // from what it measured (sql/0018, unit_counts.h), into gannf.unit_hints
  // (sql/0027). Advice only; best effort.
  void assign_unit_counts();
  std::vector<IterationReport> committed_reports(int64_t from, int64_t to);
  bool set_status(const std::string& status);  // true when it changed
  void say(const std::string& line) const;
  // gannf.reap() (sql/0008) at most every 2 s: ends worker sessions that hold
  // a transaction or a statement too long. Says what it ended.
  void reap();
  void record_pace();
  // After this coordinator's transaction was ended to break a deadlock
  // (40P01): ends the other sessions named in the error's `detail` that are
  // worker logins' and held a transaction across statements (no gannf-worker
  // does), and strikes their logins. Says what it ended.
  void end_deadlocked_sessions(const std::string& detail);

  CoordinatorOptions o_;
  std::unique_ptr<pg::Connection> c_;
  RunSettings s_;
  std::string run_id_;
  std::unique_ptr<Backend<float>> be_;
  std::unique_ptr<Net<float>> G_, D_;
  std::unique_ptr<Adam<float>> adamG_, adamD_;
  int64_t iteration_ = 0, epoch_ = 0, position_ = 0;
  // The parameters published for published_iteration_ (G, D): the base of
  // the next iteration's weight deltas (sql/0019). -1: none known.
  std::vector<float> published_[2];
  int64_t published_iteration_ = -1;
  std::map<int64_t, std::unique_ptr<Submission>> pending_;   // by submission id
  int rejected_ = 0;                                          // this iteration
  std::vector<std::pair<int64_t, std::string>> strikes_due_;  // close_iteration's forgivable strikes: id, reason
  NormHistory norm_history_[2];                               // G, D: recent accepted
  std::unique_ptr<SpotChecker> spot_;                         // made when the run spot-checks
  bool finished_ = false;                                     // no units left in any epoch
  std::chrono::steady_clock::time_point last_commit_;
  std::chrono::steady_clock::time_point last_reap_{};
  bool reap_refused_ = false;  // the server lacks roles.sql's grants: said once, not retried
  std::unique_ptr<CpuWatch> cpu_watch_;  // started with the coordinator; reap() says what it did
  // Prepared transactions of worker logins (check_prepared, from reap()):
  // max_prepared_transactions at the last connection (0: none can exist),
  // and when each present one was last said (by database and gid).
  int max_prepared_ = 0;
  bool said_prepared_ = false;  // connect() warned of max_prepared_transactions once
  std::map<std::string, std::chrono::steady_clock::time_point> prepared_said_;
  void check_prepared();
};

}  // namespace gannf::cluster
