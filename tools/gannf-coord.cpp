// gannf-coord: the instructor's side of the cluster. `init` creates a run in
// the database, `run` trains it with whatever workers come (resuming where the
// database says the run is), `status` shows where it stands.
//
// Outputs of `run` are gannf-train's, written by the same code (RunOutputs in
// src/train/run_outputs.h), so gannf-generate and the PyTorch scripts read
// them as they are.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <nlohmann/json.hpp>

#include "aggregate.h"
#include "blas_runtime.h"
#include "checkpoint.h"
#include "cli.h"
#include "config.h"
#include "coordinator.h"
#include "dataset.h"
#include "format.h"
#include "grid_store.h"
#include "image_decode.h"
#include "migrate.h"
#include "packed_dataset.h"
#include "run_outputs.h"
#include "trainer.h"

using namespace gannf;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C: leave now
  const char msg[] = "\ngannf-coord: stopping (the iteration in progress stays open for the next run; "
                     "Ctrl-C again to abort)\n";
  (void)!write(2, msg, sizeof msg - 1);
}

void log_line(const std::string& l) { std::fprintf(stderr, "gannf-coord: %s\n", l.c_str()); }

const char* kUsage =
    "usage: gannf-coord init|run|status [options]\n"
    "The coordinator of a gannf cluster: PostgreSQL is the only meeting point.\n"
    "  init     create a run in the database: weights from the seed, work units from the dataset\n"
    "           (refuses to replace an existing run without --force)\n"
    "  run      train the run in the database with whatever workers come; resumes where it was\n"
    "  status   where the run stands: progress, workers, units, recent losses\n"
    "The database comes from --db (a libpq connection string or postgresql:// URI), else from the\n"
    "config's database section, else from libpq's PG* variables, service files and ~/.pgpass.\n\n"
    "example:\n"
    "  gannf-coord init --dataset /usr/share/datasets/fashion-mnist --image-size 32\n"
    "  gannf-coord run --iterations 500 --output-dir out\n"
    "  gannf-worker --backend cpu            (on every student machine)";

// The config file, if --config names one: read before the flags, which win.
Config config_from_argv(int argc, char** argv) {
  const std::string path = cli::value_before_parse(argc, argv, "config", 2);
  if (path.empty()) return Config{};
  std::vector<std::string> warnings;
  Config c = load_config(path, &warnings);
  for (auto& w : warnings) log_line("warning: " + w);
  return c;
}

// ------------------------------------------------------------------ outputs

// gannf-train's outputs (RunOutputs) from the coordinator's state: update k is
// step k + 1; epochs count from 1.
LossRow loss_row(int64_t iteration, int64_t epoch, const StepStats& s) { return {iteration + 1, epoch + 1, s}; }

// gannf-train's checkpoint folder. batch_size is the images of one full
// update, and the position counter is in such batches, so that gannf-train
// --resume could continue a cluster run on one machine.
std::string save_checkpoint(RunOutputs& out, cluster::Coordinator& co) {
  const auto& s = co.settings();
  const int batch = s.images_per_work_unit * s.num_workunits_per_update;
  const nlohmann::json training = {
      {"dataset", s.dataset},
      {"image_size", s.image_size},
      {"channels", s.channels},
      {"batch_size", batch},
      {"micro_batch", 0},
      {"lr", (float)s.learning_rate},
      {"beta1", (float)s.beta1},
      {"beta2", (float)s.beta2},
      {"seed", s.seed},
      {"dataset_size", s.dataset_size},
      {"cluster", {{"images_per_work_unit", s.images_per_work_unit},
                   {"num_workunits_per_update", s.num_workunits_per_update},
                   {"position", co.position()}}}};
  return out.save_checkpoint(co.iteration(), co.G(), co.D(), co.adam_G(), co.adam_D(),
                             {co.iteration(), co.epoch(), co.position() / batch, co.adam_G().t, co.adam_D().t},
                             training);
}

// ------------------------------------------------------------------ commands

struct Common {
  std::string config_path, db, conninfo;
  bool quiet = false;
};

void add_common(cli::Parser& p, Common& c) {
  p.opt("config", &c.config_path, "YAML configuration (the reference project's config.yaml works)");
  p.opt("db", &c.db, "libpq connection string or postgresql:// URI (wins over the config's database section)");
}

std::string resolve_conninfo(const Common& c, const Config& cfg) {
  return c.db.empty() ? cfg.conninfo() : c.db;
}

int cmd_init(int argc, char** argv, const Config& cfg_in) {
  Config cfg = cfg_in;
  Common com;
  auto& t = cfg.training;
  std::string dataset = cfg.data.dataset_path;
  bool force = false, no_cache = false;
  int extra_units = 0;
  double lease = cfg.worker.work_unit_timeout;
  cluster::RunSettings trust;  // its defaults
  cli::Parser p("gannf-coord init",
                "usage: gannf-coord init [options]\n"
                "Creates a run: weights 0 from the seed (as gannf-train), Adam state zero, work units.");
  add_common(p, com);
  cli::add_model_options(p, {&dataset, &t.image_size, &t.channels, &t.latent_dim, &t.ngf, &t.ndf});
  p.opt("images-per-unit", &t.images_per_work_unit, "images in one work unit");
  p.opt("units-per-update", &t.num_workunits_per_update, "work units averaged into one update");
  p.opt("extra-units", &extra_units, "units open beyond --units-per-update, for fast workers");
  p.opt("lr", &t.learning_rate, "Adam learning rate");
  p.opt("beta1", &t.beta1, "Adam beta1");
  p.opt("beta2", &t.beta2, "Adam beta2");
  p.opt("epochs", &t.epochs, "passes over the dataset");
  p.opt("seed", &t.seed, "seeds weights, data order and noise");
  p.opt("lease", &lease, "seconds a worker may hold a unit without a heartbeat (worker.work_unit_timeout)");
  p.opt("aggregation", &trust.aggregation,
        "how submissions are combined: mean (exact, trusted workers), clip, trimmed, clip+trimmed");
  p.opt("clip-factor", &trust.clip_factor, "clip: a submission's norm is bounded by this × the recent median");
  p.opt("trim", &trust.trim, "trimmed: values dropped at each end of every element");
  p.opt("norm-ratio", &trust.norm_ratio, "reject per-tensor gradient norms beyond ×/÷ this of the recent median (0: off)");
  p.opt("spot-check", &trust.spot_check,
        "fraction of units the coordinator recomputes and compares (0 to 1; needs the dataset at run time)");
  p.flag("force", &force, "replace the run already in the database");
  p.flag("no-cache", &no_cache, "do not pack the dataset into a cache file");
  p.flag("quiet", &com.quiet, "fewer lines");
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  // Before the dataset is opened (packing a large one takes a while).
  if (!cluster::parse_rule(trust.aggregation))
    throw cli::Error("--aggregation must be mean, clip, trimmed or clip+trimmed, got '" + trust.aggregation + "'");
  if (dataset.empty())
    throw cli::Error("no dataset: give --dataset (or data.dataset_path in --config); 'synthetic' is built in");
  if (t.channels == 0) t.channels = default_channels(dataset);
  cfg.worker.work_unit_timeout = lease;
  cfg.validate();

  cluster::RunSettings s;
  s.dataset = dataset;
  s.image_size = t.image_size;
  s.channels = t.channels;
  s.nz = t.latent_dim;
  s.ngf = t.ngf;
  s.ndf = t.ndf;
  s.images_per_work_unit = t.images_per_work_unit;
  s.num_workunits_per_update = t.num_workunits_per_update;
  s.extra_units = extra_units;
  s.learning_rate = t.learning_rate;
  s.beta1 = t.beta1;
  s.beta2 = t.beta2;
  s.seed = t.seed;
  s.epochs = t.epochs;
  s.lease_seconds = lease;
  s.aggregation = trust.aggregation;
  s.clip_factor = trust.clip_factor;
  s.trim = trust.trim;
  s.norm_ratio = trust.norm_ratio;
  s.spot_check = trust.spot_check;

  data::Options dopt;
  dopt.cache = !no_cache;
  dopt.seed = s.seed;
  dopt.quiet = com.quiet;
  auto ds = data::open_dataset(dataset, s.image_size, s.channels, dopt);
  s.dataset_size = (int64_t)ds->size();
  if (auto* packed = dynamic_cast<const data::PackedDataset*>(ds.get())) {
    char h[32];
    std::snprintf(h, sizeof h, "%016llx", (unsigned long long)packed->content_hash());
    s.dataset_hash = h;
  }
  if (!com.quiet) log_line(ds->describe());
  s.validate();

  pg::Connection c(resolve_conninfo(com, cfg));
  cluster::init_run(c, s, force, log_line);
  if (!com.quiet)
    log_line("next: gannf-coord run" + std::string(com.db.empty() ? "" : " --db '" + com.db + "'") +
             "; students: gannf-worker --backend cpu");
  return 0;
}

int cmd_run(int argc, char** argv, const Config& cfg) {
  Common com;
  int64_t iterations = cfg.training.max_iterations;
  int64_t sample_interval = cfg.training.sample_interval, checkpoint_interval = cfg.training.checkpoint_interval;
  std::string out = "out";
  cli::Parser p("gannf-coord run",
                "usage: gannf-coord run [options]\n"
                "Trains the run in the database with whatever workers come, one update per iteration;\n"
                "resumes where the database says the run is. Ctrl-C stops at once; nothing is lost.");
  add_common(p, com);
  p.opt("iterations", &iterations, "stop once the run has made this many updates in all (0: no bound)");
  p.opt("output-dir", &out, "where samples, losses and checkpoints go");
  p.opt("sample-interval", &sample_interval, "iterations between sample grids (0: at the end only)");
  p.opt("checkpoint-interval", &checkpoint_interval, "iterations between checkpoints (0: at the end only)");
  std::string dataset;
  p.opt("dataset", &dataset, "the run's dataset on this machine, for spot checks (default: the path of init)");
  p.flag("quiet", &com.quiet, "no status line per iteration");
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (iterations < 0 || sample_interval < 0 || checkpoint_interval < 0)
    throw cli::Error("--iterations and the intervals must be 0 or positive");

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  cluster::CoordinatorOptions o;
  o.conninfo = resolve_conninfo(com, cfg);
  o.max_iterations = iterations;
  o.dataset = dataset;
  o.stop = &g_stop;
  o.log = log_line;
  cluster::Coordinator co(o);
  const auto& s = co.settings();
  RunOutputs outputs(out, "gannf-coord", s.dcgan(), s.seed);
  {  // the whole file from the database's loss history: a restarted coordinator continues it
    std::vector<LossRow> rows;
    for (const auto& h : co.loss_history()) rows.push_back(loss_row(h.iteration, h.epoch, h.s));
    outputs.rewrite_losses(std::move(rows));
  }
  log_line("run at iteration " + std::to_string(co.iteration()) + ", epoch " + std::to_string(co.epoch() + 1) + "/" +
           std::to_string(s.epochs) + ": " + s.dcgan().describe() + ", " + std::to_string(s.dataset_size) +
           " images, " + std::to_string(s.num_workunits_per_update) + " units of " +
           std::to_string(s.images_per_work_unit) + " per update" +
           (iterations > 0 ? ", until iteration " + std::to_string(iterations) : std::string()));
  // Each grid also goes into the database, where the dashboard shows it
  // (sql/0007); training goes on if it cannot.
  auto store_grid = [&](const std::string& path, int64_t iteration, int64_t epoch) {
    try {
      std::string png, why;
      if (!data::read_file(path, &png, &why)) throw std::runtime_error(why);
      monitor::store_sample_grid(co.connection(), iteration, epoch, png);
    } catch (const std::exception& e) {
      log_line("warning: the dashboard will miss sample grid " + path + ": " + e.what());
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t first = co.iteration();
  int64_t images = 0;
  const auto outcome = co.run([&](const cluster::IterationReport& r) {
    images += r.samples;
    outputs.append_loss(loss_row(r.iteration, r.epoch, r.losses));
    const int64_t it = r.iteration + 1;
    if (!com.quiet) {
      const auto& L = r.losses;
      std::fprintf(stderr,
                   "iteration %lld | epoch %lld/%d %5.1f%% | workers %d | units %d used, %d rejected | "
                   "%.1f img/s | D %.3f G %.3f | D(x) %.3f D(G(z)) %.3f | acc %.2f | %.2f s (wait %.2f, "
                   "update %.2f)\n",
                   (long long)it, (long long)r.epoch + 1, s.epochs, 100 * r.epoch_progress, r.active_workers,
                   r.used, r.rejected, r.images_per_second, L.d_loss, L.g_loss, L.d_real, L.d_fake, L.d_acc,
                   r.seconds, r.wait_seconds, r.update_seconds);
    }
    if (sample_interval > 0 && it % sample_interval == 0) store_grid(outputs.write_samples(co.G(), it), it, r.epoch);
    if (checkpoint_interval > 0 && it % checkpoint_interval == 0) {
      save_checkpoint(outputs, co);
      outputs.write_loss_curve();
    }
  });
  const std::string grid = outputs.write_samples(co.G(), co.iteration());
  store_grid(grid, co.iteration(), co.epoch());
  const std::string ckpt = save_checkpoint(outputs, co);
  outputs.write_loss_curve();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const char* why = outcome == cluster::Coordinator::Outcome::Bound      ? "reached --iterations"
                    : outcome == cluster::Coordinator::Outcome::Finished ? "all epochs done"
                                                                         : "stopped by signal";
  log_line(std::to_string(co.iteration() - first) + " iterations in " + fmt("%.1f", secs) + " s (" +
           fmt("%.1f", images / std::max(secs, 1e-9)) + " img/s), " + why + "; samples " + grid + ", checkpoint " +
           ckpt);
  return 0;
}

int cmd_status(int argc, char** argv, const Config& cfg) {
  Common com;
  cli::Parser p("gannf-coord status", "usage: gannf-coord status [options]\nWhere the run in the database stands.");
  add_common(p, com);
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  pg::Connection c(resolve_conninfo(com, cfg));
  if (cluster::schema_version(c) == 0) {
    std::printf("no gannf schema in %s: gannf-coord init\n", c.describe().c_str());
    return 1;
  }
  pg::Result r = c.exec(
      "SELECT status, iteration, epoch, position, dataset_size, epoch_percent, active_workers, open_units, "
      "pending_submissions, loss_d, loss_g, d_accuracy, images_per_second, run_id::text "
      "FROM gannf.training_progress");
  if (r.rows() == 0) {
    std::printf("no run in %s: gannf-coord init\n", c.describe().c_str());
    return 1;
  }
  std::printf("run %s on %s: %s\n", r.get<std::string>(0, 13).c_str(), c.describe().c_str(),
              r.get<std::string>(0, 0).c_str());
  std::printf("  iteration %lld, epoch %d, %lld of %lld images handed out (%.1f%%)\n", (long long)r.get<int64_t>(0, 1),
              r.get<int32_t>(0, 2) + 1, (long long)r.get<int64_t>(0, 3), (long long)r.get<int64_t>(0, 4),
              r.get<float>(0, 5));
  std::printf("  %d workers active, %d units open, %d submissions pending\n", r.get<int32_t>(0, 6),
              r.get<int32_t>(0, 7), r.get<int32_t>(0, 8));
  if (!r.is_null(0, 9))
    std::printf("  last update: D %.3f G %.3f acc %.2f; %.1f img/s over the last 5 minutes\n", r.get<float>(0, 9),
                r.get<float>(0, 10), r.opt<float>(0, 11).value_or(NAN), r.opt<float>(0, 12).value_or(0));
  pg::Result w = c.exec(
      "SELECT name, login::text, coalesce(backend, ''), seconds_since_seen, current_unit FROM gannf.active_workers "
      "ORDER BY name");
  for (int i = 0; i < w.rows(); ++i)
    std::printf("  worker %-20s %-14s %-5s seen %.0f s ago%s\n", w.get<std::string>(i, 0).c_str(),
                w.get<std::string>(i, 1).c_str(), w.get<std::string>(i, 2).c_str(), w.get<float>(i, 3),
                w.is_null(i, 4) ? "" : (", unit " + std::to_string(w.get<int64_t>(i, 4))).c_str());
  pg::Result lb = c.exec("SELECT rank, name, units, images, rejected FROM gannf.leaderboard ORDER BY rank LIMIT 10");
  if (lb.rows() > 0) std::printf("  leaderboard:\n");
  for (int i = 0; i < lb.rows(); ++i)
    std::printf("    %2d. %-20s %6d units %9lld images %4d rejected\n", lb.get<int32_t>(i, 0),
                lb.get<std::string>(i, 1).c_str(), lb.get<int32_t>(i, 2), (long long)lb.get<int64_t>(i, 3),
                lb.get<int32_t>(i, 4));
  pg::Result st = c.exec("SELECT count(*) FROM gannf.stalled_units");
  if (st.get<int64_t>(0, 0) > 0)
    std::printf("  %lld units have expired leases (their workers vanished); the next claims take them\n",
                (long long)st.get<int64_t>(0, 0));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool help = argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
                    !std::strcmp(argv[1], "help");
  if (help) {
    std::puts(kUsage);
    std::puts("\n'gannf-coord COMMAND --help' lists the options of a command.");
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd != "init" && cmd != "run" && cmd != "status") {
    std::fprintf(stderr, "gannf-coord: unknown command '%s' (init, run or status; see --help)\n", cmd.c_str());
    return 2;
  }
  Config cfg;
  try {
    cfg = config_from_argv(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-coord: %s\n", e.what());
    return 2;
  }
  gannf::cpu::blas_ensure_coretype(argc, argv, /*quiet=*/true);
  try {
    if (cmd == "init") return cmd_init(argc, argv, cfg);
    if (cmd == "run") return cmd_run(argc, argv, cfg);
    return cmd_status(argc, argv, cfg);
  } catch (const cli::Error& e) {
    std::fprintf(stderr, "gannf-coord: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-coord: %s\n", e.what());
    return 1;
  }
}
