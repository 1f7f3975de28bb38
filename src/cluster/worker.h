// The worker's loop (docs/architecture.md, Data flow of one iteration, steps 2-3):
// register, wait for work (LISTEN; polling only as a fallback), claim a unit,
// fetch the weights of its iteration when the cached copy is older, compute
// G's and D's gradients over the unit's images in micro-batches of this
// machine's size — GanStep::accumulate with scale 1/unit size and each
// sample's noise from (seed, epoch, position), exactly as a local step — and
// submit both gradients, the BN batch statistics of every forward pass and the
// losses in one call. Heartbeats between micro-batches keep the lease.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pg.h"

namespace gannf::cluster {

struct UnitResult;

// A finished unit's result just before it is submitted, for the test-only
// hook below: the buffers may be changed (and resized) in place.
struct UnitTamper {
  int64_t unit_id = 0, first_index = 0;
  int epoch = 0;
  std::vector<float>* grad[2];  // G, D
  std::vector<float>* bn[2];
  UnitResult* result;           // losses, micro_batch, sample_count
};

struct WorkerOptions {
  std::string conninfo;
  std::string name;                  // empty: the host name
  std::string backend = "cpu";
  // The back end registered, where not `backend`'s own name: tests only
  // (tests/hostile_worker --declare-backend: a student who says its CPU is a
  // cuda-tf32 GPU, as any login may with register_worker()).
  std::string declared_backend;
  int batch_size = 32;               // micro-batch of this machine
  int threads = 0;                   // CPU threads (0: OpenMP's default)
  std::string dataset;               // empty: the path the run was made with
  bool cache = true;                 // pack the dataset into a cache file
  double poll_interval = 5;          // seconds between claims when no NOTIFY comes
  double heartbeat_interval = 30;    // seconds
  int64_t max_units = 0;             // exit after this many accepted units (0: never)
  // Units claimed at once and, when of one iteration, computed into one
  // gradient and sent as one summed submission (issue 17, sql/0017): upload
  // bytes per unit fall by that factor. 1: one unit per submission. 0
  // ("auto"): as many as the coordinator's units per claim for this worker
  // (sql/0018), which it chooses from the timings every worker reports.
  int sum_units = 1;
  // A PostgreSQL streaming replica of the run's database to download the
  // weights from (issue 17, 2e; docs/scaling.md): claims and submissions
  // stay on `conninfo`. When the replica has not replayed the iteration a
  // unit needs yet, or cannot be reached, the weights come from the primary.
  std::string weights_db;
  // Download the full weights every iteration instead of the exact delta
  // from the previous iteration's (sql/0019), which a worker that computed
  // for that iteration otherwise gets (about 0.63 of the bytes). For
  // comparisons; the result is the same bit for bit.
  bool full_weights = false;
  bool exit_when_done = false;       // exit 0 when the run finishes, or is paused after running
  int throttle_ms = 0;               // sleep after each micro-batch (tests, demos)
  bool quiet = false;                // no per-unit lines
  const std::atomic<bool>* stop = nullptr;
  std::function<void(const std::string&)> log;
  // Tests only (tests/hostile_worker.cpp plays a hostile or broken student
  // with the real worker's code through it); no program of the product sets it.
  std::function<void(UnitTamper&)> tamper;
};

// Runs until *stop (releasing a claimed unit), max_units, or — with
// exit_when_done — the end of the run. Returns the exit code: 0, or 1 after an
// error this worker cannot get past (wrong dataset, repeated refusals).
// Connection losses are retried with backoff, never fatal.
int run_worker(const WorkerOptions& o);

// What a worker that finds no unit adds to "every open unit is taken" when
// a unit was taken off its login and none of its results has been accepted
// since (sql/0023's monitor_logins.held_to_one): it holds one unit at a
// time and lets the class's other machines claim first (sql/0026). ""
// otherwise, or when the row cannot be read.
std::string why_waiting(pg::Connection& c);

// Why the database refuses this login for good, for the student (a login
// disabled or shut out; a wrong password): retrying will not help. Nothing
// for any other error.
std::optional<std::string> login_refused(const pg::Error& e);

}  // namespace gannf::cluster
