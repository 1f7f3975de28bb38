// bench_load: one load worker against a run that a real gannf-coord serves —
// it claims, downloads the weights when the iteration changes, and submits a
// full-size result (bench/fake_result.h), as fast as the database and the
// network let it, without computing. bench/campus.sh starts many of these,
// each in its own network namespace behind a rate-limited link, where real
// gannf-worker processes would need more CPU than the machine has.
//
// Prints a progress line every 10 s and, at the end, one RESULT line: units
// accepted and refused, weight downloads, uploads (a summed submission is
// one upload of several units: --sum-units), megabytes up and down.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "backend.h"
#include "cli.h"
#include "dcgan.h"
#include "fake_result.h"
#include "pg.h"
#include "protocol.h"
#include "run_settings.h"

using namespace gannf;
using namespace gannf::cluster;
using Clock = std::chrono::steady_clock;

namespace {
volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

int main(int argc, char** argv) {
  std::string db, name = "load";
  double seconds = 60;
  int micro = 32, sum_units = 1;
  std::string sum_arg = "1";
  double compute_ms = 0;
  bool full_weights = false;
  cli::Parser p("bench_load",
                "usage: bench_load --db CONNINFO [options]\n"
                "One load worker: claims, downloads the weights once per iteration and submits full-size\n"
                "results of the run in the database without computing them (bench/campus.sh runs many).\n"
                "Stops after --seconds, on SIGTERM/SIGINT, or when the run is no longer running.");
  p.opt("db", &db, "the worker's libpq connection string");
  p.opt("name", &name, "this worker's name (unique per login)");
  p.opt("seconds", &seconds, "how long to work");
  p.opt("micro-batch", &micro, "the micro-batch the fake result's BN statistics are shaped for");
  p.opt("sum-units", &sum_arg,
        "claim up to this many units and submit them as one summed submission (sql/0017); auto: as many as the "
        "coordinator's units per claim for this worker (sql/0018, 0027)");
  p.opt("compute-ms", &compute_ms, "stand for a machine's compute: sleep this long per unit claimed (0: none)");
  p.flag("full-weights", &full_weights,
         "download the full weights every iteration, never the delta from the previous ones (sql/0019)");
  try {
    p.parse(argc, argv);
    if (p.help_requested) {
      std::fputs(p.help().c_str(), stdout);
      return 0;
    }
    if (db.empty()) throw std::invalid_argument("--db is required (the worker's connection string)");
    if (!(seconds > 0)) throw std::invalid_argument("--seconds must be positive");
    if (micro < 2) throw std::invalid_argument("--micro-batch must be at least 2");
    sum_units = parse_sum_units(sum_arg);
    if (!(compute_ms >= 0)) throw std::invalid_argument("--compute-ms must not be negative");
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);

    pg::Connection c(db);
    pg::Result st = c.exec("SELECT config::text FROM gannf.training_state");
    if (st.rows() == 0) throw std::runtime_error("no run in the database (gannf-coord init first)");
    const RunSettings s = RunSettings::from_json(st.get<std::string>(0, 0));
    auto be = make_backend<float>("cpu");
    Net<float> G(*be, "generator"), D(*be, "discriminator");
    build_generator(G, s.dcgan(), 2);
    build_discriminator(D, s.dcgan(), 2);
    const FakeResult fake(G, D, s.images_per_work_unit, std::min(micro, s.images_per_work_unit), s.grad_format());
    WorkerInfo info;
    info.name = name;
    info.backend = "load";
    info.batch_size = micro;
    LoadWorker lw(c, fake, info, sum_units);
    lw.compute_ms = compute_ms;
    lw.deltas = !full_weights;

    const auto t0 = Clock::now();
    auto last_line = t0;
    while (!g_stop && since(t0) < seconds) {
      if (!lw.step()) {
        if (c.exec("SELECT status FROM gannf.training_state").get<std::string>(0, 0) != "running") break;
        c.wait_notification(std::chrono::milliseconds(100));
        continue;
      }
      if (since(last_line) >= 10) {
        last_line = Clock::now();
        std::printf("bench_load %s: %.0f s, %lld units accepted, %lld refused, %.0f MB up, %.0f MB down\n",
                    name.c_str(), since(t0), (long long)lw.accepted, (long long)lw.refused, lw.mb_up,
                    lw.mb_down);
        std::fflush(stdout);
      }
    }
    std::printf("RESULT worker=%s seconds=%.1f accepted=%lld refused=%lld downloads=%lld uploads=%lld mb_up=%.1f "
                "mb_down=%.1f delta_networks=%lld hint=%d\n",
                name.c_str(), since(t0), (long long)lw.accepted, (long long)lw.refused, (long long)lw.downloads,
                (long long)lw.uploads, lw.mb_up, lw.mb_down, (long long)lw.delta_downloads, lw.hint);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_load %s: %s\n", name.c_str(), e.what());
    return 1;
  }
  return 0;
}
