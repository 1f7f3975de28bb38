// gannf-worker: a student's machine in the cluster. Registers with the
// database, waits for work units (LISTEN/NOTIFY), computes G's and D's
// gradients over each unit against the published weights, submits them.
// Ctrl-C (SIGINT) or SIGTERM hands the unit in progress back and exits 0.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "blas_runtime.h"
#include "cli.h"
#include "config.h"
#include "protocol.h"
#include "worker.h"

using namespace gannf;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C: leave now
  const char msg[] = "\ngannf-worker: stopping: handing the unit back (Ctrl-C again to abort)\n";
  (void)!write(2, msg, sizeof msg - 1);
}

std::string g_prefix = "gannf-worker";
void log_line(const std::string& l) { std::fprintf(stderr, "%s: %s\n", g_prefix.c_str(), l.c_str()); }

}  // namespace

int main(int argc, char** argv) {
  // The config file first, so that flags win over it.
  Config cfg;
  std::string config_path = cli::value_before_parse(argc, argv, "config"), db;
  try {
    cfg = config_or_defaults(config_path, [](const std::string& w) { log_line("warning: " + w); });
  } catch (const std::exception& e) {
    log_line(e.what());
    return 2;
  }

  cluster::WorkerOptions o;
  o.name = cfg.worker.name;
  o.batch_size = cfg.worker.batch_size;
  o.dataset = cfg.data.dataset_path;
  o.poll_interval = cfg.worker.poll_interval;
  o.heartbeat_interval = cfg.worker.heartbeat_interval;
  bool no_cache = false;
  int max_units = 0;
  cli::Parser p("gannf-worker",
                "usage: gannf-worker [options]\n"
                "A worker of a gannf cluster: computes G's and D's gradients over work units and submits them.\n"
                "The database comes from --db (a libpq connection string or postgresql:// URI), else from the\n"
                "config's database section, else from libpq's PG* variables, service files and ~/.pgpass.\n"
                "The network, the data order and the noise come from the run in the database.\n\n"
                "example: gannf-worker --backend cpu --db postgresql://alice@db.example.edu/gannf");
  p.opt("config", &config_path, "YAML configuration (the reference project's config.yaml works)");
  p.opt("db", &db, "libpq connection string or postgresql:// URI (wins over the config's database section)");
  p.opt("backend", &o.backend,
        "cpu, cuda (FP32), cuda-tf32 / cuda-bf16 (TF32 / BF16 tensor-core convolutions; GPUs of "
        "compute capability 8.0+) or auto (cuda when a usable GPU is found, else cpu)");
  p.opt("name", &o.name, "this machine's name in the cluster (default: the host name)");
  p.opt("batch-size", &o.batch_size, "images per forward pass on this machine (worker.batch_size)");
  p.opt("threads", &o.threads, "CPU threads (0: all cores)");
  p.opt("dataset", &o.dataset, "where this machine keeps the run's dataset (default: the run's path)");
  p.opt("poll-interval", &o.poll_interval, "seconds between claims when no notification comes (a fallback)");
  p.opt("heartbeat-interval", &o.heartbeat_interval, "seconds between heartbeats");
  p.opt("weights-db", &o.weights_db,
        "download the weights from this PostgreSQL streaming replica of the run's database (libpq connection "
        "string or URI); the primary stands in while the replica lags or is down (docs/scaling.md)");
  p.flag("full-weights", &o.full_weights,
         "download the full weights every iteration instead of the exact delta from the previous iteration's "
         "(about 0.63 of the bytes; the same weights bit for bit): for comparisons");
  p.opt("max-units", &max_units, "exit after this many submitted units (0: never)");
  std::string sum_units = "1";
  p.opt("sum-units", &sum_units,
        "claim up to this many units at once and send their gradients summed in one upload (1-64; the login's "
        "cap on held units, 4 by default, bounds it): upload bytes per unit fall by that factor; auto: as many "
        "as the coordinator gives this machine from its measured speed and link (docs/scaling.md)");
  p.opt("throttle-ms", &o.throttle_ms, "sleep this long after each micro-batch (tests and demos of a slow machine)");
  p.flag("exit-when-done", &o.exit_when_done, "exit 0 when the coordinator pauses or finishes the run");
  p.flag("no-cache", &no_cache, "decode images every time instead of packing a cache file");
  p.flag("quiet", &o.quiet, "no line per unit");
  try {
    p.parse(argc, argv);
    if (p.help_requested) {
      std::fputs(p.help().c_str(), stdout);
      return 0;
    }
    if (!(o.poll_interval > 0)) throw cli::Error("--poll-interval must be a positive number of seconds");
    if (!(o.heartbeat_interval > 0)) throw cli::Error("--heartbeat-interval must be a positive number of seconds");
    if (o.batch_size < 2) throw cli::Error("--batch-size must be at least 2 (batch norm needs two images)");
    if (o.threads < 0) throw cli::Error("--threads must be 0 (all cores) or positive");
    if (max_units < 0 || o.throttle_ms < 0) throw cli::Error("--max-units and --throttle-ms must not be negative");
    try {
      o.sum_units = cluster::parse_sum_units(sum_units);
    } catch (const std::invalid_argument& e) {
      throw cli::Error(e.what());
    }
    o.max_units = max_units;
    o.cache = !no_cache;
  } catch (const std::exception& e) {
    log_line(e.what());
    return 2;
  }
  gannf::cpu::blas_ensure_coretype(argc, argv, /*quiet=*/true);
  o.conninfo = db.empty() ? cfg.conninfo() : db;
  if (!o.name.empty()) g_prefix = "gannf-worker " + o.name;
  o.log = log_line;
  o.stop = &g_stop;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    return cluster::run_worker(o);
  } catch (const std::exception& e) {
    log_line(e.what());
    return 1;
  }
}
