// What the dashboard knows about the run at one moment: plain data read from
// the monitoring views of sql/0007, immutable once published, shared by every
// request that renders a panel from it (render.h). Monitor (monitor.h) makes a
// new one when the database says something changed; what is unchanged is
// shared between consecutive snapshots, not copied.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dcgan.h"

namespace gannf::monitor {

// Seconds since the Unix epoch: what the page and /metrics want.
using Seconds = double;

struct RunRow {
  std::string run_id;
  std::string db_status;          // training_state.status: running | paused | finished
  bool coordinator_running = false;
  int64_t iteration = 0;          // updates committed: the weights' iteration
  int32_t epoch = 0;              // from 0: the epoch units are being made for
  int64_t position = 0, dataset_size = 0;
  double lease_seconds = 0;
  Seconds started_at = 0, updated_at = 0;
  // From the run's configuration (training_state.config).
  DcganConfig model;
  int epochs = 0, images_per_unit = 0, units_per_update = 0;
  std::string dataset;
  bool operator==(const RunRow&) const;
};

// One committed update (loss_history); optional where the column is NULL.
struct HistoryRow {
  int64_t iteration = 0;   // the update that produced weights iteration + 1
  int32_t epoch = 0;       // from 0
  std::optional<float> loss_d, loss_g, d_real, d_fake, d_accuracy;
  int32_t samples = 0, used = 0, rejected = 0;
  std::optional<int32_t> active_workers;
  std::optional<float> images_per_second, seconds, update_seconds;
  Seconds recorded_at = 0;
  bool operator==(const HistoryRow&) const = default;
};

struct GridInfo {
  int64_t iteration = 0;
  int32_t epoch = 0;
  Seconds recorded_at = 0;
  int64_t bytes = 0;
  bool operator==(const GridInfo&) const = default;
};

struct WorkerRow {
  int64_t id = 0;
  std::string login, name;
  std::optional<std::string> backend, gpu_name;
  std::optional<int32_t> cpu_cores, batch_size;
  std::optional<int64_t> ram_bytes, gpu_memory_bytes;
  Seconds registered_at = 0, last_seen = 0;
  // Present as the coordinator counts its workers (sql/0011: seen within 90 s
  // and not left); seen within the run's lease on a database before sql/0013.
  bool active = false;
  // Whether the run keeps this worker's login out, and the login's strikes;
  // nullopt where the database does not track them (before sql/0013).
  std::optional<bool> quarantined;
  std::optional<int32_t> strikes;
  bool operator==(const WorkerRow&) const = default;
};

// A login with strikes or a quarantine (sql/0013's monitor_logins), or
// units taken off it (sql/0023), whether or not it has workers (the reaper
// strikes sessions).
struct LoginRow {
  std::string login;
  int32_t strikes = 0;
  bool quarantined = false;
  Seconds quarantined_at = 0;  // 0: not quarantined
  // sql/0023 (see Snapshot::logins_taken): the units taken off the login,
  // the last one's time and reason ("late", "hold bound", "lease",
  // "closed"), how long it had been allowed, and whether the login holds
  // one unit at a time now.
  int64_t units_taken = 0;
  Seconds taken_at = 0;  // 0: none
  std::string taken_why;
  std::optional<double> taken_bound;
  bool held_to_one = false;
  bool operator==(const LoginRow&) const = default;
};

// A worker's submissions, added up as the 0003 leaderboard view counts them.
struct Tally {
  int64_t units = 0, images = 0;       // accepted: pending or used
  int64_t rejected = 0, stale = 0;
  double compute_seconds = 0;          // of accepted submissions that reported it
  int64_t timed_images = 0;            // their images
  Seconds last_submission = 0;         // 0: none
  std::map<std::string, int64_t> reasons;  // rejection reason -> count
  void add(const std::string& state, int32_t sample_count, std::optional<float> compute_seconds,
           const std::optional<std::string>& reason, Seconds submitted_at);
  void merge(const Tally& o);
  bool operator==(const Tally&) const = default;
};

struct Snapshot {
  uint64_t generation = 0;
  // The database: reachable at the last look, or why not.
  bool db_ok = false;
  std::string db_error;
  Seconds db_now = 0;          // the database's clock (gannf.now()) at the last look
  std::optional<RunRow> run;   // nullopt: no run (gannf-coord init makes one)
  double flops_per_image = 0;  // of the run's model (flops.h); 0 without a run
  std::shared_ptr<const std::vector<HistoryRow>> history;  // by iteration
  std::shared_ptr<const std::vector<GridInfo>> grids;      // by iteration
  std::vector<WorkerRow> workers;                          // by id
  std::optional<std::vector<LoginRow>> logins;             // by login; nullopt before sql/0013
  bool logins_taken = false;                               // the logins carry sql/0023's columns
  std::map<int64_t, Tally> tallies;                        // by worker id
  // Derived once per snapshot.
  int64_t images_processed = 0;                            // sum of history's samples
};

}  // namespace gannf::monitor
