// gannf-coord: the instructor's side of the cluster. `init` creates a run in
// the database, `run` trains it with whatever workers come (resuming where the
// database says the run is), `status` shows where it stands.
//
// Outputs of `run` are gannf-train's, written by the same code (RunOutputs in
// src/train/run_outputs.h), so gannf-generate and the PyTorch scripts read
// them as they are.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <thread>
#include <nlohmann/json.hpp>

#include "aggregate.h"
#include "blas_runtime.h"
#include "checkpoint.h"
#include "cli.h"
#include "config.h"
#include "coord_students.h"
#include "coordinator.h"
#include "dataset.h"
#include "format.h"
#include "grid_store.h"
#include "image_decode.h"
#include "migrate.h"
#include "packed_dataset.h"
#include "protocol.h"
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

void on_signal_quiet(int) { g_stop = true; }

void log_line(const std::string& l) { std::fprintf(stderr, "gannf-coord: %s\n", l.c_str()); }

const char* kUsage =
    "usage: gannf-coord init|run|status|stop|pause|resume|quarantine|settings|add-students|remove-students [options]\n"
    "The coordinator of a gannf cluster: PostgreSQL is the only meeting point.\n"
    "  init     create a run in the database: weights from the seed, work units from the dataset\n"
    "           (refuses to replace an existing run without --force)\n"
    "  run      train the run in the database with whatever workers come; resumes where it was\n"
    "  status   where the run stands: state, progress, ETA, workers, recent losses, quarantined logins,\n"
    "           logins units were taken off (how many, the last one's reason) and those held to one unit,\n"
    "           logins whose SQL keeps the server busy (--watch: live)\n"
    "  stop     stop the run from any terminal: the coordinator saves a checkpoint and exits,\n"
    "           workers with --exit-when-done exit, others wait; 'gannf-coord run' carries it on\n"
    "  pause    no updates and no new units until 'gannf-coord resume'; workers wait\n"
    "  resume   end a pause\n"
    "  add-students ROSTER     a login and a hand-out per student (as an administrator)\n"
    "  remove-students ROSTER  end their logins, free their units\n"
    "  quarantine list | lift LOGIN\n"
    "           the student logins that repeated rejections or stuck sessions quarantined; lift one\n"
    "  settings [NAME=VALUE ...]\n"
    "           the class's trust settings (strikes, caps, how long a unit may be held); change some\n"
    "The database comes from --db (a libpq connection string or postgresql:// URI), else from the\n"
    "config's database section, else from libpq's PG* variables, service files and ~/.pgpass.\n\n"
    "example:\n"
    "  gannf-coord init --dataset /usr/share/datasets/fashion-mnist --image-size 32\n"
    "  gannf-coord run --iterations 500 --output-dir out\n"
    "  gannf-worker --backend cpu            (on every student machine)";

// The config file, if --config names one: read before the flags, which win.
Config config_from_argv(int argc, char** argv) {
  return config_or_defaults(cli::value_before_parse(argc, argv, "config", 2),
                            [](const std::string& w) { log_line("warning: " + w); });
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

// trust_settings.accepted_backends for a list of back ends: a text[]
// literal, or NULL (all) for an empty list, as init --backends '' means.
std::optional<std::string> backend_array(const std::vector<std::string>& list) {
  if (list.empty()) return std::nullopt;
  std::string arr = "{";
  for (const auto& n : list) arr += (arr.size() > 1 ? "," : "") + n;
  return arr + "}";
}

int cmd_init(int argc, char** argv, const Config& cfg_in) {
  Config cfg = cfg_in;
  Common com;
  auto& t = cfg.training;
  std::string dataset = cfg.data.dataset_path;
  bool force = false, no_cache = false;
  int extra_units = 0;
  double lease = cfg.worker.work_unit_timeout;
  cluster::RunSettings trust;  // the config's trust section (its defaults: the classroom's), then the flags
  trust.aggregation = cfg.trust.aggregation;
  trust.clip_factor = cfg.trust.clip_factor;
  trust.trim = cfg.trust.trim;
  trust.norm_ratio = cfg.trust.norm_ratio;
  trust.spot_check = cfg.trust.spot_check;
  trust.quorum = cfg.trust.quorum;
  std::string backends = cfg.trust.backends;
  trust.blob_format = cfg.wire.blob_format;
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
  p.opt("lease", &lease, "seconds a worker may hold a unit without a heartbeat (worker.lease)");
  p.opt("aggregation", &trust.aggregation,
        "how submissions are combined: mean (exact, trusted workers only), clip, trimmed, clip+trimmed");
  p.opt("clip-factor", &trust.clip_factor, "clip: a submission's norm is bounded by this × the recent median");
  p.opt("trim", &trust.trim, "trimmed: values dropped at each end of every element");
  p.opt("norm-ratio", &trust.norm_ratio, "reject per-tensor gradient norms beyond ×/÷ this of the recent median (0: off)");
  p.opt("spot-check", &trust.spot_check,
        "fraction of units the coordinator recomputes and compares (0 to 1; needs the dataset at run time)");
  p.opt("quorum", &trust.quorum,
        "robust rules: an update closes with this fraction of its units (at least 3) when the rest are late; "
        "their units are served in the next (1: wait for every unit)");
  p.opt("blob-format", &trust.blob_format,
        "gradient blobs on the wire: f32 (exact), bf16 or f16s (half the bytes; docs/scaling.md)");
  p.opt("backends", &backends,
        "back ends the class accepts, comma-separated, e.g. cpu,cuda (default: all; spot checks allow cuda-tf32 "
        "0.1 and cuda-bf16 0.3 where cpu and cuda get 1e-3)");
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
    throw cli::Error("--aggregation (trust.aggregation) must be mean, clip, trimmed or clip+trimmed, got '" +
                     trust.aggregation + "'");
  try {
    cluster::parse_blob_format(trust.blob_format);
  } catch (const std::invalid_argument& e) {
    throw cli::Error(std::string("--blob-format: ") + e.what());
  }
  if (dataset.empty())
    throw cli::Error("no dataset: give --dataset (or data.dataset in --config); 'synthetic' is built in");
  if (t.channels == 0) t.channels = default_channels(dataset);
  // The flag's own name in its message (validate() names the config key).
  if (!(lease > cfg.worker.heartbeat_interval))
    throw cli::Error("--lease " + fmt("%g", lease) + " is too short: a worker beats every " +
                     fmt("%g", cfg.worker.heartbeat_interval) + " s (worker.heartbeat_interval), so give more than that");
  cfg.worker.work_unit_timeout = lease;
  std::vector<std::string> accepted;
  try {
    accepted = parse_backend_list(backends);
  } catch (const std::invalid_argument& e) {
    throw cli::Error(std::string("--backends: ") + e.what());
  }
  cfg.trust.backends = backends;
  cfg.validate();
  // The server and the login first: reading a large dataset takes minutes.
  pg::Connection c(resolve_conninfo(com, cfg));

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
  s.quorum = trust.quorum;
  s.blob_format = trust.blob_format;

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

  cluster::init_run(c, s, force, log_line);
  {  // the class's back ends (sql/0020): register_worker and claim refuse the others
    pg::Params pb;
    pb.add(backend_array(accepted));
    c.exec("UPDATE gannf.trust_settings SET accepted_backends = $1::text[]", pb);
    if (!com.quiet && !accepted.empty()) log_line("back ends accepted: " + backends);
  }
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
  double student_sql_limit = 0.3;
  p.opt("student-sql-limit", &student_sql_limit,
        "shut out a student login whose own SQL (statements no gannf-worker sends) runs more than this × 10 s "
        "in 10 s, summed over its sessions: a share of one server core (0: not counted; docs/security.md)");
  double worker_call_limit = 1.0;
  p.opt("worker-call-limit", &worker_call_limit,
        "and whose gannf-worker calls (uploads and weights aside) run on the server's CPU more than this × 10 s "
        "in 10 s: a call flood (the two shares are added; 0: not counted; both 0: no watch)");
  p.flag("quiet", &com.quiet, "no status line per iteration");
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (iterations < 0 || sample_interval < 0 || checkpoint_interval < 0)
    throw cli::Error("--iterations and the intervals must be 0 or positive");
  if (!(student_sql_limit >= 0 && student_sql_limit <= 64))
    throw cli::Error("--student-sql-limit must be a share of one server core from 0 (off) to 64");
  if (!(worker_call_limit >= 0 && worker_call_limit <= 64))
    throw cli::Error("--worker-call-limit must be a share of one server core from 0 (off) to 64");

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  cluster::CoordinatorOptions o;
  o.conninfo = resolve_conninfo(com, cfg);
  o.max_iterations = iterations;
  o.dataset = dataset;
  o.student_sql_limit = student_sql_limit;
  o.worker_call_limit = worker_call_limit;
  o.stop = &g_stop;
  o.log = log_line;
  cluster::Coordinator co(o);
  const auto& s = co.settings();
  {  // for status: "iteration N of M" and the ETA of a bounded run
    pg::Params pb;
    pb.add(iterations > 0 ? std::optional<int64_t>(iterations) : std::nullopt);
    co.connection().exec("UPDATE gannf.training_state SET iteration_bound = $1", pb);
  }
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
  using Outcome = cluster::Coordinator::Outcome;
  const char* why = outcome == Outcome::Bound         ? "reached --iterations"
                    : outcome == Outcome::Finished    ? "all epochs done"
                    : outcome == Outcome::StopCommand ? "stopped by 'gannf-coord stop'"
                                                      : "stopped by signal";
  log_line(std::to_string(co.iteration() - first) + " iterations in " + fmt("%.1f", secs) + " s (" +
           fmt("%.1f", images / std::max(secs, 1e-9)) + " img/s), " + why + "; samples " + grid + ", checkpoint " +
           ckpt);
  // How close the class came to the watch's limit: an instructor who set
  // --student-sql-limit sees the margin an honest class left.
  if (const auto p = co.watch_peak()) {
    if (p->login.empty())
      log_line("the watch on the server's CPU counted nothing of any student login");
    else
      log_line("the watch on the server's CPU: the busiest student login, " + cluster::one_line(p->login) +
               ", reached " + fmt("%.0f", 100 * p->share) + "% of its limit (" + fmt("%.2f", p->own) +
               " s of its own SQL and " + fmt("%.2f", p->calls) +
               " s of gannf-worker calls in 10 s, its busiest session busy with calls " +
               fmt("%.2f", p->session_busy) + " s; limits " + fmt("%.1f", student_sql_limit * 10) + " s, " +
               fmt("%.1f", worker_call_limit * 10) + " s and " +
               fmt("%.1f", cluster::CpuWatchOptions{}.session_busy * 10) + " s)");
  }
  return 0;
}

// A database string for the terminal: control characters (escape sequences)
// become '?'. The worker functions refuse them since sql/0008; this guards
// rows from before it.
std::string printable(std::string s) {
  for (char& ch : s)
    if ((unsigned char)ch < 0x20 || ch == 0x7f) ch = '?';
  return s;
}

int cmd_quarantine(int argc, char** argv, const Config& cfg) {
  Common com;
  std::string action, login;
  cli::Parser p("gannf-coord quarantine",
                "usage: gannf-coord quarantine list | lift LOGIN [options]\n"
                "Student logins and their strikes (rejected submissions, sessions the reaper ended); a\n"
                "quarantined login's claims are refused. lift: let it work again, its strikes back to 0.\n"
                "A strike for a rejection nobody recomputed is forgivable: every strike_forgiven_after (10)\n"
                "submissions of the login used take one back (trust_settings; docs/security.md).");
  add_common(p, com);
  p.positional("action", &action, "list or lift");
  p.positional("login", &login, "the login to lift");
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (action != "list" && action != "lift") throw cli::Error("quarantine: list or lift LOGIN, not '" + action + "'");
  if (action == "lift" && login.empty()) throw cli::Error("quarantine lift: which login? (gannf-coord quarantine list)");
  pg::Connection c(resolve_conninfo(com, cfg));
  if (cluster::schema_version(c) < 8)
    throw std::runtime_error("the database has no quarantine yet (schema before sql/0008): gannf-coord run migrates it");
  if (action == "lift") {
    pg::Params pl;
    pl.add(login);
    if (c.exec("SELECT count(*) FROM gannf.login_trust WHERE login = $1", pl).get<int64_t>(0, 0) == 0) {
      std::printf("login %s has no strikes and is not quarantined\n", printable(login).c_str());
      return 1;
    }
    const bool was = c.exec("SELECT gannf.lift_quarantine($1)", pl).get<bool>(0, 0);
    std::printf("%s %s; its strikes are back to 0\n", printable(login).c_str(),
                was ? "may work again" : "was not quarantined");
    return 0;
  }
  // sql/0024: strikes forgivable and forgiven
  const bool forgiving = cluster::schema_version(c) >= 24;
  pg::Result r = c.exec(
      "SELECT login, strikes, quarantined, to_char(quarantined_at, 'YYYY-MM-DD HH24:MI:SS'), coalesce(reason, ''), " +
      std::string(forgiving ? "forgivable, forgiven" : "0, 0::bigint") +
      " FROM gannf.login_status ORDER BY quarantined DESC, strikes DESC, login");
  if (r.rows() == 0) std::printf("no login has strikes\n");
  for (int i = 0; i < r.rows(); ++i) {
    std::string forgiven;
    if (r.get<int32_t>(i, 5) > 0) forgiven += std::to_string(r.get<int32_t>(i, 5)) + " forgivable";
    if (r.get<int64_t>(i, 6) > 0)
      forgiven += (forgiven.empty() ? "" : ", ") + std::to_string(r.get<int64_t>(i, 6)) + " forgiven";
    if (!forgiven.empty()) forgiven = "(" + forgiven + ")";
    std::printf("%-20s %3d strikes %-26s %-30s %s\n", printable(r.get<std::string>(i, 0)).c_str(), r.get<int32_t>(i, 1),
                forgiven.c_str(), r.get<bool>(i, 2) ? ("QUARANTINED since " + r.get<std::string>(i, 3)).c_str() : "",
                printable(r.get<std::string>(i, 4)).c_str());
  }
  return 0;
}

// What each of the class's trust settings does (docs/security.md, Settings).
// Every column of gannf.trust_settings has a line here: `settings` says so
// of one that has none (OpsLife.SettingsAreListedChangedAndCheckedInOneTransaction).
const std::map<std::string, std::string>& setting_help() {
  static const std::map<std::string, std::string> h = {
      {"strike_threshold", "strikes that quarantine a login"},
      {"strike_forgiven_after",
       "used submissions of a login that take back one of its forgivable strikes (NULL: never)"},
      {"max_workers_per_login", "registered worker names per login"},
      {"max_held_units", "units one login holds at once, over all its workers"},
      {"max_units_per_iteration",
       "units one login may take of one update (NULL: no cap); set it when the class has more logins than units"},
      {"hold_floor", "a heartbeated unit is taken back past max(hold_floor, hold_factor x its claim's images x the "
                     "worker's seconds per image)"},
      {"hold_factor", "how many times the class's (or the worker's) time a unit may be held: the late rule and the "
                      "hold bound"},
      {"hold_default_per_image", "the hold bound's seconds per image of a worker with no accepted unit yet"},
      {"late_floor", "while an update waits, a unit is never taken off as late before this"},
      {"first_pace_slack",
       "before any unit of the run is in: the class's pace is this x the coordinator's own CPU time per image of a "
       "unit"},
      {"first_late_floor", "before any unit of the run is in: a unit is never taken off as late before this"},
      {"held_claim_delay", "a login a unit was taken off claims a unit only this long after it became claimable"},
      {"held_give_way_for", "... for this long after its last take-off (until a submission of it is accepted)"},
      {"reap_idle_in_transaction", "the reaper ends a worker session idle in a transaction past this"},
      {"reap_statement", "the reaper ends a worker statement running past this"},
      {"reap_transaction", "the reaper ends a worker transaction open past this"},
      {"accepted_backends",
       "the back ends workers may register and claim with, e.g. cpu,cuda (NULL: all; as init --backends)"},
  };
  return h;
}

// The class's trust settings as the catalog has them: each column of
// gannf.trust_settings, its type, its value and its default (as text; NULL
// shown as "NULL"). The defaults are the schema's own expressions.
struct Setting {
  std::string name, type, value, def;
};
std::vector<Setting> read_settings(pg::Connection& c) {
  pg::Result cols = c.exec(
      "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid) "
      "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
      "WHERE a.attrelid = 'gannf.trust_settings'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
      "AND a.attname <> 'singleton' ORDER BY a.attnum");
  std::vector<Setting> out;
  std::string q = "SELECT ";
  for (int i = 0; i < cols.rows(); ++i) {
    out.push_back({cols.get<std::string>(i, 0), cols.get<std::string>(i, 1), "", ""});
    const std::string def = cols.is_null(i, 2) ? "NULL" : cols.get<std::string>(i, 2);
    q += (i ? ", " : "") + std::string("t.") + c.quote_identifier(out.back().name) + "::text, (" + def +
         ")::" + out.back().type + "::text";
  }
  pg::Result v = c.exec(q + " FROM gannf.trust_settings t");
  if (v.rows() == 0) throw std::runtime_error("gannf.trust_settings has no row: gannf-coord run migrates it");
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].value = v.opt<std::string>(0, 2 * (int)i).value_or("NULL");
    out[i].def = v.opt<std::string>(0, 2 * (int)i + 1).value_or("NULL");
  }
  return out;
}

int settings(pg::Connection& c, const std::vector<std::string>& assignments);

int cmd_settings(int argc, char** argv, const Config& cfg) {
  Common com;
  std::vector<std::string> assignments;
  cli::Parser p("gannf-coord settings",
                "usage: gannf-coord settings [NAME=VALUE ...] [options]\n"
                "The class's trust settings (gannf.trust_settings): strikes, caps, how long a unit may be held,\n"
                "the reaper's bounds. Without arguments: each one's value, its default and what it does.\n"
                "NAME=VALUE sets one, in PostgreSQL's syntax for its type (hold_factor=8,\n"
                "first_late_floor='3 minutes', accepted_backends=cpu,cuda); NAME=default puts its default\n"
                "back, NAME=null clears it where NULL means something. All are set in one transaction, or\n"
                "none. They take effect at once, with the run going (docs/security.md, Settings).");
  add_common(p, com);
  p.positionals("NAME=VALUE", &assignments, "settings to change");
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  pg::Connection c(resolve_conninfo(com, cfg));
  try {
    return settings(c, assignments);
  } catch (const pg::Error& e) {
    if (e.sqlstate() != "42501") throw;
    throw std::runtime_error("settings: " + e.message() + ": the class's settings are the instructor's; run it as "
                             "gannf_coord (--db, PGUSER or the config's database section)");
  }
}

// gannf-coord settings on connection c (cmd_settings).
int settings(pg::Connection& c, const std::vector<std::string>& assignments) {
  if (cluster::schema_version(c) < 8)
    throw std::runtime_error("the database has no trust settings yet (schema before sql/0008): gannf-coord run "
                             "migrates it");
  std::vector<Setting> columns = read_settings(c);
  std::string names;
  for (const Setting& x : columns) names += (names.empty() ? "" : ", ") + x.name;
  if (assignments.empty()) {
    for (const Setting& x : columns) {
      auto h = setting_help().find(x.name);
      std::printf("%-25s %-12s %s%s\n", x.name.c_str(), x.value.c_str(),
                  x.value == x.def ? "" : ("(default " + x.def + ") ").c_str(),
                  h == setting_help().end() ? "(gannf-coord knows nothing of this setting: docs/security.md)"
                                            : h->second.c_str());
    }
    return 0;
  }
  pg::Transaction tx(c);
  std::vector<std::string> said;
  for (const std::string& a : assignments) {
    const size_t eq = a.find('=');
    if (eq == std::string::npos || eq == 0)
      throw cli::Error("settings: '" + printable(a) + "' is not NAME=VALUE (e.g. hold_factor=8)");
    const std::string name = a.substr(0, eq), value = a.substr(eq + 1);
    auto col = std::find_if(columns.begin(), columns.end(), [&](const Setting& x) { return x.name == name; });
    if (col == columns.end())
      throw cli::Error("settings: there is no setting '" + printable(name) + "'; the settings: " + names);
    std::string lower = value;
    for (char& ch : lower) ch = (char)std::tolower((unsigned char)ch);
    const std::string q = "UPDATE gannf.trust_settings SET " + c.quote_identifier(name) + " = ";
    const std::string back = " RETURNING " + c.quote_identifier(name) + "::text";
    std::optional<std::string> after;
    try {
      if (lower == "default") {
        after = c.exec(q + "DEFAULT" + back).opt<std::string>(0, 0);
      } else if (lower == "null") {
        after = c.exec(q + "NULL" + back).opt<std::string>(0, 0);
      } else {
        pg::Params pv;
        if (name == "accepted_backends") {  // the list as init --backends takes it
          std::vector<std::string> list;
          try {
            list = parse_backend_list(value);
          } catch (const std::invalid_argument& e) {
            throw cli::Error("settings: accepted_backends: " + std::string(e.what()));
          }
          pv.add(backend_array(list));
        } else {
          pv.add(value);
        }
        after = c.exec(q + "$1::" + col->type + back, pv).opt<std::string>(0, 0);
      }
    } catch (const pg::Error& e) {
      if (e.sqlstate() == "42501") throw;
      throw std::runtime_error("settings: " + name + "=" + printable(value) + ": " + e.message() +
                               "; nothing was changed");
    }
    said.push_back(name + ": " + col->value + " -> " + after.value_or("NULL"));
    col->value = after.value_or("NULL");  // the same name again in this command starts from here
  }
  tx.commit();
  for (const std::string& line : said) std::printf("%s\n", line.c_str());
  return 0;
}

// The run's state for people. The database's status says what was asked
// (running, paused, stopped, finished); whether a coordinator is at work is
// its advisory lock (sql/0007's monitor_run.coordinator_running).
std::string state_line(const std::string& status, bool coordinator, int64_t iteration, bool any_update) {
  if (status == "finished") return "finished (all epochs done)";
  if (status == "stopped")
    return std::string("stopped") + (coordinator ? " (the coordinator is saving its checkpoint)" : "") +
           "; 'gannf-coord run' carries it on";
  if (status == "paused")
    return std::string("paused ('gannf-coord resume' ends it)") +
           (coordinator ? "" : "; no coordinator is running ('gannf-coord run')");
  if (coordinator) return "running";
  if (iteration == 0 && !any_update) return "ready: initialised, no coordinator has run it yet ('gannf-coord run')";
  return "coordinator not running (interrupted at iteration " + std::to_string(iteration) +
         "); 'gannf-coord run' resumes it";
}

// One status report; false when there is no run.
bool print_status(pg::Connection& c) {
  if (cluster::schema_version(c) == 0) {
    std::printf("no gannf schema in %s: gannf-coord init\n", c.describe().c_str());
    return false;
  }
  pg::Result r = c.exec(
      "SELECT run_id::text, status, coordinator_running, iteration, epoch, position, dataset_size, config::text, "
      "(SELECT ts.iteration_bound FROM gannf.training_state ts) FROM gannf.monitor_run");
  if (r.rows() == 0) {
    std::printf("no run in %s: gannf-coord init\n", c.describe().c_str());
    return false;
  }
  const std::string status = r.get<std::string>(0, 1);
  const bool coordinator = r.get<bool>(0, 2);
  const int64_t it = r.get<int64_t>(0, 3);
  // A run row that gannf-coord init did not write (by hand, or an older
  // version) still gets a report, without the figures its settings give.
  cluster::RunSettings s;
  std::string bad_settings;
  try {
    s = cluster::RunSettings::from_json(r.get<std::string>(0, 7));
  } catch (const std::exception& e) {
    bad_settings = e.what();
    s.images_per_work_unit = s.num_workunits_per_update = s.epochs = 1;
    s.dataset_size = std::max<int64_t>(1, r.get<int64_t>(0, 6));
  }
  const std::optional<int64_t> bound = r.opt<int64_t>(0, 8);
  // Updates of all epochs: images per update are the units' images, except
  // at an epoch's end where the last unit may be short; this counts whole units.
  const int64_t per_update = (int64_t)s.images_per_work_unit * s.num_workunits_per_update;
  const int64_t units_per_epoch = (s.dataset_size + s.images_per_work_unit - 1) / s.images_per_work_unit;
  const int64_t all_epochs = ((int64_t)s.epochs * units_per_epoch + s.num_workunits_per_update - 1) /
                             s.num_workunits_per_update;
  const int64_t total = bound && *bound > 0 ? std::min(*bound, all_epochs) : all_epochs;
  pg::Result h = c.exec(
      "SELECT iteration, epoch, loss_d, loss_g, d_accuracy, samples, seconds FROM gannf.loss_history "
      "ORDER BY iteration DESC LIMIT 10");
  std::printf("run %s on %s: %s\n", r.get<std::string>(0, 0).substr(0, 8).c_str(), c.describe().c_str(),
              state_line(status, coordinator, it, h.rows() > 0).c_str());
  if (!bad_settings.empty())
    std::printf("  (the run's settings cannot be read: %s; progress figures left out)\n", bad_settings.c_str());
  // Epochs count from 1 here, in losses.csv, the coordinator's and the workers' lines.
  const int epoch = r.get<int32_t>(0, 4);  // the epoch units are being made for, from 0
  const std::string epochs =
      epoch >= s.epochs ? "all " + std::to_string(s.epochs) + " epochs handed out"
                        : "epoch " + std::to_string(epoch + 1) + " of " + std::to_string(s.epochs) + " (" +
                              fmt("%.1f", 100.0 * (double)r.get<int64_t>(0, 5) / (double)r.get<int64_t>(0, 6)) +
                              "% of its images handed out)";
  if (bad_settings.empty())
    std::printf("  iteration %lld of %lld%s, %s\n", (long long)it, (long long)total,
                bound && *bound > 0 && *bound < all_epochs ? " (--iterations)" : "", epochs.c_str());
  else
    std::printf("  iteration %lld\n", (long long)it);
  double img = 0, secs = 0;
  for (int i = 0; i < h.rows(); ++i) {
    img += h.get<int32_t>(i, 5);
    secs += h.opt<float>(i, 6).value_or(0);
  }
  if (secs > 0) {
    const double rate = img / secs, per_it = secs / h.rows();
    std::string eta;
    if (status != "finished" && total > it && bad_settings.empty())
      eta = "; about " + fmt("%.0f", per_it * (double)(total - it)) + " s to iteration " + std::to_string(total) +
            (status == "running" && coordinator ? "" : " once it runs");
    std::printf("  %.1f img/s, %.2f s per update over the last %d updates%s%s\n", rate, per_it, h.rows(),
                bad_settings.empty() ? (" (" + std::to_string(per_update) + " images each)").c_str() : "", eta.c_str());
  }
  // Worker names beside their logins (a name can imitate another student's;
  // the login cannot), and printable whatever rows older than sql/0008 hold.
  pg::Result w = c.exec(
      "SELECT login::text || '/' || name, coalesce(backend, ''), seconds_since_seen, current_unit "
      "FROM gannf.present_workers ORDER BY login, name");
  std::printf("  %d workers present (seen in the last 90 s)\n", w.rows());
  for (int i = 0; i < w.rows(); ++i)
    std::printf("    %-34s %-5s seen %.0f s ago%s\n", printable(w.get<std::string>(i, 0)).c_str(),
                printable(w.get<std::string>(i, 1)).c_str(), w.get<float>(i, 2),
                w.is_null(i, 3) ? "" : (", unit " + std::to_string(w.get<int64_t>(i, 3))).c_str());
  if (status == "running" || status == "paused") {
    pg::Result u = c.exec("SELECT open_units, pending_submissions FROM gannf.training_progress");
    std::printf("  %d units open, %d submissions in for this iteration\n", u.get<int32_t>(0, 0),
                u.get<int32_t>(0, 1));
  }
  if (h.rows() > 0) std::printf("  last updates:\n");
  for (int i = std::min(h.rows(), 5) - 1; i >= 0; --i)
    std::printf("    iteration %6lld  epoch %3d  D %.3f  G %.3f  acc %.2f\n", (long long)h.get<int64_t>(i, 0) + 1,
                h.get<int32_t>(i, 1) + 1, h.opt<float>(i, 2).value_or(NAN), h.opt<float>(i, 3).value_or(NAN),
                h.opt<float>(i, 4).value_or(NAN));
  pg::Result lb = c.exec(
      "SELECT rank, login::text || '/' || name, units, images, rejected FROM gannf.leaderboard ORDER BY rank LIMIT 10");
  if (lb.rows() > 0) std::printf("  leaderboard:\n");
  for (int i = 0; i < lb.rows(); ++i)
    std::printf("    %2d. %-34s %6d units %9lld images %4d rejected\n", lb.get<int32_t>(i, 0),
                printable(lb.get<std::string>(i, 1)).c_str(), lb.get<int32_t>(i, 2), (long long)lb.get<int64_t>(i, 3),
                lb.get<int32_t>(i, 4));
  if (cluster::schema_version(c) >= 8) {
    pg::Result q = c.exec("SELECT login, strikes, reason FROM gannf.login_status WHERE quarantined ORDER BY login");
    for (int i = 0; i < q.rows(); ++i)
      std::printf("  QUARANTINED %s (%d strikes; last: %s): gannf-coord quarantine lift %s\n",
                  printable(q.get<std::string>(i, 0)).c_str(), q.get<int32_t>(i, 1),
                  printable(q.opt<std::string>(i, 2).value_or("")).c_str(), q.get<std::string>(i, 0).c_str());
    // Shut out by the coordinator (its watch on the server's CPU, or a
    // prepared transaction): NOLOGIN, the strike saying why.
    pg::Result so = c.exec(
        "SELECT t.login, t.reason FROM gannf.login_status t JOIN pg_roles r ON r.rolname = t.login "
        "WHERE NOT r.rolcanlogin AND t.reason LIKE '%; shut out (NOLOGIN)' ORDER BY t.login");
    for (int i = 0; i < so.rows(); ++i) {
      std::string why = so.get<std::string>(i, 1);
      why = why.substr(0, why.size() - std::strlen("; shut out (NOLOGIN)"));
      std::printf("  SHUT OUT %s (%s): it cannot log in; SELECT gannf_admin.admit_student('%s') lets it in again\n",
                  printable(so.get<std::string>(i, 0)).c_str(), printable(why).c_str(),
                  printable(so.get<std::string>(i, 0)).c_str());
    }
  }
  if (cluster::schema_version(c) >= 20) {  // sql/0020: the back ends the class accepts
    pg::Result a = c.exec("SELECT array_to_string(accepted_backends, ', ') FROM gannf.trust_settings");
    if (a.rows() > 0 && !a.is_null(0, 0))
      std::printf("  back ends accepted: %s (workers of others are refused)\n", a.get<std::string>(0, 0).c_str());
  }
  try {  // what the instructor changed (gannf-coord settings)
    std::string changed;
    for (const Setting& x : read_settings(c))
      if (x.value != x.def && x.name != "accepted_backends")
        changed += (changed.empty() ? "" : ", ") + x.name + " " + x.value + " (default " + x.def + ")";
    if (!changed.empty()) std::printf("  trust settings changed: %s; gannf-coord settings lists them\n", changed.c_str());
  } catch (const pg::Error& e) {
    if (e.sqlstate() != "42501") throw;  // a student's login may not read them
  }
  if (cluster::schema_version(c) >= 23) {  // sql/0023: what was taken off each login, and why
    auto why = [](const std::string& w, std::optional<double> bound) {
      if (w == "late") return "late: held over " + fmt("%.1f", bound.value_or(0)) + " s";
      if (w == "hold bound") return "held past the hold bound, " + fmt("%.0f", bound.value_or(0)) + " s";
      if (w == "lease") return std::string("its lease passed");
      if (w == "closed") return std::string("its update closed at the quorum");
      return std::string("held too long");
    };
    pg::Result t = c.exec(
        "SELECT login, units_taken, taken_why, extract(epoch FROM taken_bound)::float8, held_to_one, "
        "extract(epoch FROM gannf.now() - taken_at)::bigint FROM gannf.monitor_logins WHERE units_taken > 0 "
        "ORDER BY held_to_one DESC, taken_at DESC");
    std::string others;
    int listed = 0;
    for (int i = 0; i < t.rows(); ++i) {
      const std::string login = printable(t.get<std::string>(i, 0));
      const long long units = (long long)t.get<int64_t>(i, 1);
      const std::string last = why(t.opt<std::string>(i, 2).value_or(""), t.opt<double>(i, 3));
      if (t.get<bool>(i, 4)) {
        std::printf("  HELD TO ONE UNIT %s: a unit was taken off it %lld s ago (%s); one unit at a time, after the "
                    "others' claims, until a submission of it is accepted; %lld unit(s) taken off it in all\n",
                    login.c_str(), (long long)t.get<int64_t>(i, 5), last.c_str(), units);
      } else if (listed++ < 10) {
        others += (others.empty() ? "" : ", ") + login + " " + std::to_string(units) + " (last: " + last + ")";
      }
    }
    if (!others.empty())
      std::printf("  units taken off logins: %s%s\n", others.c_str(),
                  listed > 10 ? (", and " + std::to_string(listed - 10) + " more").c_str() : "");
  } else if (cluster::schema_version(c) >= 21) {  // sql/0021: logins a unit was taken off, held to one unit
    pg::Result t = c.exec(
        "SELECT login::text, extract(epoch FROM gannf.now() - taken_at)::bigint FROM gannf.login_taken "
        "WHERE gannf.held_to_one(login) ORDER BY taken_at DESC");
    for (int i = 0; i < t.rows(); ++i)
      std::printf("  HELD TO ONE UNIT %s: a unit was taken off it %lld s ago (held too long); one unit at a time "
                  "until a submission of it is accepted\n",
                  printable(t.get<std::string>(i, 0)).c_str(), (long long)t.get<int64_t>(i, 1));
  }
  if (cluster::schema_version(c) >= 10) {  // sql/0010: bytes by table, the database, the WAL
    pg::Result sz = c.exec("SELECT name, total_bytes, toast_bytes IS NULL FROM gannf.storage");
    std::string line;
    for (int i = 0, tables = 0; i < sz.rows(); ++i) {
      const auto bytes = sz.opt<int64_t>(i, 1);
      const bool table = !sz.get<bool>(i, 2);
      if (table && (tables++ >= 4 || bytes.value_or(0) < (1 << 20))) continue;  // the big tables only
      line += (line.empty() ? "" : ", ") + sz.get<std::string>(i, 0) + " " +
              (bytes ? fmt("%.1f MB", *bytes / 1e6) : std::string("unknown (sql/roles.sql grants it)"));
    }
    std::printf("  storage: %s\n", line.c_str());
  }
  // Whose sessions keep the server busy (docs/security.md, "The server's
  // CPU"): PostgreSQL bounds no session's CPU. A running gannf-coord shuts
  // out a login whose own SQL does (cpu_watch.h); this names any login
  // whose sessions run, whatever they run, for a class whose coordinator is
  // not running or runs without the watch. Twenty looks 50 ms apart at the
  // worker logins' sessions of this
  // database that run a statement (active, not waiting); a login is named
  // when one was found in 60% of them. A gannf-worker's calls last
  // milliseconds, so an honest login is seldom caught even once. Needs pg_read_all_stats
  // (sql/roles.sql) to see other logins' sessions.
  {
    struct Busy {
      int looks = 0, most = 0;
      std::string query;
    };
    std::map<std::string, Busy> busy;
    constexpr int kLooks = 20;
    for (int look = 0; look < kLooks; ++look) {
      if (look) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      pg::Result b = c.exec(
          "SELECT a.usename::text, count(*)::integer, max(left(a.query, 70)) FROM pg_stat_activity a "
          "JOIN pg_roles ro ON ro.oid = a.usesysid "
          "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.state = 'active' "
          "AND a.wait_event IS NULL AND NOT ro.rolsuper AND to_regrole('gannf_worker') IS NOT NULL "
          "AND pg_has_role(ro.oid, 'gannf_worker', 'MEMBER') GROUP BY a.usename");
      for (int i = 0; i < b.rows(); ++i) {
        Busy& x = busy[b.get<std::string>(i, 0)];
        ++x.looks;
        x.most = std::max(x.most, b.get<int32_t>(i, 1));
        if (x.query.empty()) x.query = b.opt<std::string>(i, 2).value_or("");
      }
    }
    for (const auto& [login, x] : busy)
      if (x.looks * 10 >= kLooks * 6)
        std::printf("  BUSY ON THE SERVER %s: a session of it was running a statement in %d of %d looks (up to %d at "
                    "once; e.g. '%s'); a gannf-worker's calls seldom are. If the class is slow, this login may be "
                    "taking the server's CPU: gannf-coord remove-students %s ends it\n",
                    printable(login).c_str(), x.looks, kLooks, x.most, printable(x.query).c_str(), login.c_str());
  }
  // A student's prepared transaction keeps its rows locked until a
  // superuser ends it (docs/security.md, "Prepared transactions"); the
  // running coordinator shuts the login out and says the same.
  if (c.exec("SELECT current_setting('max_prepared_transactions')::integer > 0").get<bool>(0, 0))
    for (const cluster::PreparedXact& x : cluster::worker_prepared_xacts(c))
      std::printf("  PREPARED TRANSACTION of %s, %.0f s old: it keeps the rows it locked until a superuser runs, in "
                  "database %s: ROLLBACK PREPARED %s\n",
                  cluster::one_line(x.login).c_str(), x.age_s, cluster::one_line(x.database).c_str(),
                  cluster::sql_literal(x.gid).c_str());
  pg::Result st = c.exec("SELECT count(*) FROM gannf.stalled_units");
  if (st.get<int64_t>(0, 0) > 0 && status == "running")
    std::printf("  %lld units have expired leases (their workers vanished); the next claims take them\n",
                (long long)st.get<int64_t>(0, 0));
  return true;
}

int cmd_status(int argc, char** argv, const Config& cfg) {
  Common com;
  bool watch = false;
  double every = 2;
  cli::Parser p("gannf-coord status", "usage: gannf-coord status [options]\nWhere the run in the database stands.");
  add_common(p, com);
  p.flag("watch", &watch, "show it again every --interval seconds until Ctrl-C");
  p.opt("interval", &every, "seconds between reports with --watch");
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (!(every >= 0.2)) throw cli::Error("--interval must be at least 0.2 seconds");
  pg::Connection c(resolve_conninfo(com, cfg));
  if (!watch) return print_status(c) ? 0 : 1;
  std::signal(SIGINT, on_signal_quiet);
  const bool tty = isatty(1);
  while (!g_stop.load()) {
    if (tty) std::fputs("\x1b[H\x1b[2J", stdout);  // home, clear: one screen per report
    print_status(c);
    std::fflush(stdout);
    for (double t = 0; t < every && !g_stop.load(); t += 0.1)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

// stop | pause | resume: the status the instructor asks for, from any
// terminal with the coordinator's login. The running coordinator sees it
// within a second; workers are woken on gannf_work and read it.
int cmd_lifecycle(const std::string& cmd, int argc, char** argv, const Config& cfg) {
  Common com;
  const char* what = cmd == "stop"    ? "Stops the run: the coordinator saves a checkpoint and exits; workers with\n"
                                        "--exit-when-done exit, others wait. 'gannf-coord run' carries it on."
                     : cmd == "pause" ? "Pauses the run: no new units are handed out and no update is made;\n"
                                        "workers wait. 'gannf-coord resume' (or 'gannf-coord run') ends it."
                                      : "Ends a pause.";
  cli::Parser p("gannf-coord " + cmd, "usage: gannf-coord " + cmd + " [options]\n" + what);
  add_common(p, com);
  p.parse(argc, argv, 2);
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  pg::Connection c(resolve_conninfo(com, cfg));
  if (cluster::schema_version(c) == 0) {
    log_line("no gannf schema in " + c.describe() + ": nothing to " + cmd + " (gannf-coord init makes a run)");
    return 1;
  }
  const std::string to = cmd == "stop" ? "stopped" : cmd == "pause" ? "paused" : "running";
  // Which states each command may leave: stop any but finished, pause only
  // running, resume only paused.
  const std::string from = cmd == "stop" ? "'running', 'paused'" : cmd == "pause" ? "'running'" : "'paused'";
  pg::Params pt;
  pt.add(to);
  pg::Transaction tx(c);
  pg::Result r = c.exec("SELECT status, iteration, run_id::text FROM gannf.training_state FOR UPDATE");
  if (r.rows() == 0) {
    log_line("no run in " + c.describe() + ": nothing to " + cmd + " (gannf-coord init makes one)");
    return 1;
  }
  const std::string was = r.get<std::string>(0, 0);
  const std::string where = "run " + r.get<std::string>(0, 2).substr(0, 8) + " at iteration " +
                            std::to_string(r.get<int64_t>(0, 1));
  if (was == to) {
    log_line(where + " is " + to + " already");
    return 0;
  }
  if (c.exec("UPDATE gannf.training_state SET status = $1, updated_at = now() WHERE status IN (" + from + ")", pt)
          .affected() == 0) {
    log_line("cannot " + cmd + " " + where + ": it is " + was +
             (was == "stopped" ? " ('gannf-coord run' carries it on)"
              : was == "finished" ? " (all epochs are done)" : ""));
    return 1;
  }
  const std::string payload = std::to_string(r.get<int64_t>(0, 1));
  c.notify(cluster::channel::kWork, payload);        // idle workers read the status
  c.notify(cluster::channel::kSubmission, payload);  // the coordinator's wait wakes
  tx.commit();
  const bool coordinator =
      c.exec("SELECT coordinator_running FROM gannf.monitor_run").get<bool>(0, 0);
  log_line(where + ": " + was + " -> " + to +
           (cmd == "stop" ? (coordinator ? "; the coordinator saves a checkpoint and exits" : "")
            : cmd == "pause" ? "; workers finish the unit in hand and wait"
                             : "; workers take units again") +
           (coordinator || cmd == "stop" ? "" : " (no coordinator is running: 'gannf-coord run')"));
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
  const bool students = cmd == "add-students" || cmd == "remove-students";
  if (cmd != "init" && cmd != "run" && cmd != "status" && cmd != "stop" && cmd != "pause" && cmd != "resume" &&
      cmd != "quarantine" && cmd != "settings" && !students) {
    std::fprintf(stderr,
                 "gannf-coord: unknown command '%s' (init, run, status, stop, pause, resume, quarantine, settings, add-students "
                 "or remove-students; see --help)\n",
                 cmd.c_str());
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
    if (cmd == "status") return cmd_status(argc, argv, cfg);
    if (cmd == "quarantine") return cmd_quarantine(argc, argv, cfg);
    if (cmd == "settings") return cmd_settings(argc, argv, cfg);
    if (cmd == "add-students") return cmd_add_students(argc, argv, cfg);
    if (cmd == "remove-students") return cmd_remove_students(argc, argv, cfg);
    return cmd_lifecycle(cmd, argc, argv, cfg);
  } catch (const cli::Error& e) {
    std::fprintf(stderr, "gannf-coord: %s\n", e.what());
    return 2;
  } catch (const pg::Error& e) {
    if (cluster::credentials_refused(e))
      std::fprintf(stderr, "gannf-coord: the database refused the instructor's login: %s; check the user and "
                   "the password (~/.pgpass, PGPASSWORD, --db or the config's database section)\n",
                   e.message().c_str());
    else
      std::fprintf(stderr, "gannf-coord: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-coord: %s\n", e.what());
    return 1;
  }
}
