// bench_dash: what the class's dashboard costs (issue 14), measured in one run.
//
//   pages    gannf-dash's response times with 100 000 iterations of history
//            behind it (and a leaderboard folded from 400 000 submissions,
//            100 stored grids): the page, every JSON document, the CSV,
//            /metrics, a grid, the time-lapse; the first request after a new
//            snapshot (rendered) and the next ones (served from the cache);
//            and one look at the database, which every snapshot costs.
//   load     the real Coordinator's updates/s while workers (threads that
//            claim, download the weights and submit made-up gradients, as
//            fast as the server lets them) keep it busy, in rounds that
//            rotate three conditions: no dashboard; the dashboard with no
//            page open; the dashboard with --clients polling clients, each
//            fetching the six documents the page fetches every
//            --client-interval seconds (the page's fallback polls every 5 s).
//            Beside the rates, which a shared machine spreads by ±15% per
//            round, each round counts CPU time per committed update, which
//            other work on the machine hardly moves: the coordinator's
//            thread, the database server's processes by whom they serve
//            (the coordinator's backend, the workers', the dashboard's, the
//            rest; from /proc, so the server must run on this machine, as
//            bench/db.sh's does), the dashboard's own threads and its
//            clients'. Ratios are paired within a round, with a 95%
//            confidence interval over the rounds.
//
// The history is made up: for the pages, as iterations 0..N-1 of a run that
// stands at N (no coordinator runs then); for the load, moved to the
// iterations before 0 (negative numbers, grids dropped), so that the real
// coordinator runs from its weights of iteration 0 on top of it.
// It makes a database of its own (--db, dropped and recreated) through an
// administrator connection (--admin); bench/db.sh's way of starting the
// embedded PostgreSQL works here too:
//   PGSERVICEFILE=build/pg/pg_service.conf build/bench/bench_dash
#include <dirent.h>
#include <httplib.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "apng.h"
#include "cli.h"
#include "coordinator.h"
#include "fake_result.h"
#include "monitor.h"
#include "protocol.h"
#include "run_settings.h"
#include "server.h"

using namespace gannf;
using namespace gannf::cluster;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec + 1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// CPU seconds of one thread of this process.
double thread_cpu(pthread_t t) {
  clockid_t id;
  timespec ts{};
  if (pthread_getcpuclockid(t, &id) != 0 || clock_gettime(id, &ts) != 0) return 0;
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// utime + stime of a process (and, with `children`, of its children that
// exited and were waited for), from /proc/PID/stat; -1 if unreadable.
double proc_cpu(long pid, bool children = false, long* ppid = nullptr) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return -1;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(line.substr(close + 2));
  std::vector<std::string> v;  // v[k] is field k + 3 of proc(5)
  for (std::string x; in >> x;) v.push_back(x);
  if (v.size() < 15) return -1;
  if (ppid) *ppid = std::stol(v[1]);
  const double tick = (double)sysconf(_SC_CLK_TCK);
  double t = (std::stod(v[11]) + std::stod(v[12])) / tick;
  if (children) t += (std::stod(v[13]) + std::stod(v[14])) / tick;
  return t;
}

// The database server's CPU seconds so far, by whom its processes serve.
// All of it: the postmaster with its exited children, and every live child
// (backends, autovacuum, WAL writer, checkpointer...).
struct ServerCpu {
  bool ok = false;
  double coordinator = 0, workers = 0, dashboard = 0, total = 0;
};

ServerCpu server_cpu(pg::Connection& c) {
  ServerCpu s;
  pg::Result a = c.exec("SELECT pid, application_name, usename::text, pg_backend_pid() FROM pg_stat_activity "
                        "WHERE backend_type = 'client backend'");
  if (a.rows() == 0) return s;
  long postmaster = -1;
  if (proc_cpu(a.get<int32_t>(0, 3), false, &postmaster) < 0 || postmaster <= 1) return s;
  const double pm = proc_cpu(postmaster, true);
  if (pm < 0) return s;
  s.total = pm;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      if (!std::isdigit((unsigned char)e->d_name[0])) continue;
      long pp = -1;
      const double t = proc_cpu(std::atol(e->d_name), false, &pp);
      if (t >= 0 && pp == postmaster) s.total += t;
    }
    closedir(d);
  }
  for (int i = 0; i < a.rows(); ++i) {
    const double t = proc_cpu(a.get<int32_t>(i, 0));
    if (t < 0) continue;
    const std::string app = a.get<std::string>(i, 1), user = a.get<std::string>(i, 2);
    if (app == "bench-coordinator") s.coordinator += t;
    else if (app == "gannf-dash") s.dashboard += t;
    else if (user == "gannf_bench_worker") s.workers += t;
  }
  s.ok = true;
  return s;
}

// Mean of paired ratios and its 95% confidence interval (Student's t).
struct Interval {
  double mean = NAN, low = NAN, high = NAN;
};
Interval mean_ci(const std::vector<double>& v) {
  Interval r;
  if (v.empty()) return r;
  const size_t n = v.size();
  double m = 0;
  for (double x : v) m += x;
  m /= (double)n;
  r.mean = r.low = r.high = m;
  if (n < 2) return r;
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  // t(0.975, n - 1) for 1..30 degrees of freedom, then the normal's.
  static const double t[] = {12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                             2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                             2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  const double q = n - 1 <= 30 ? t[n - 2] : 1.96;
  const double half = q * std::sqrt(ss / (double)(n - 1) / (double)n);
  r.low = m - half;
  r.high = m + half;
  return r;
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

struct Options {
  std::string admin = "user=postgres dbname=postgres";
  std::string db = "gannf_bench_dash";
  int64_t history = 100000;
  int workers = 40, per_iteration = 4, grids = 100;
  int reps = 20;
  int clients = 100;
  double client_interval = 5;
  int load_workers = 4;
  int width = 16;
  double round_seconds = 15;
  int rounds = 6;
  bool quick = false;
};

Options parse(int argc, char** argv) {
  Options o;
  cli::Parser p("bench_dash",
                "usage: bench_dash [options]\n"
                "gannf-dash's response times with a long history, and the coordinator's updates/s with no\n"
                "dashboard, an idle one and one with many polling clients, in the same run. Connection settings\n"
                "come from libpq's defaults (PGSERVICEFILE=build/pg/pg_service.conf for the embedded server).");
  p.opt("admin", &o.admin, "a login that may create databases and roles");
  p.opt("db", &o.db, "the benchmark's database, DROPPED and recreated");
  p.opt("history", &o.history, "iterations of made-up history");
  p.opt("workers", &o.workers, "made-up workers on the leaderboard");
  p.opt("grids", &o.grids, "stored sample grids (530x530 PNGs, as a 64x64x3 run's)");
  p.opt("reps", &o.reps, "requests per document for the warm times");
  p.opt("clients", &o.clients, "polling clients in the loaded rounds");
  p.opt("client-interval", &o.client_interval, "seconds between a client's refreshes");
  p.opt("load-workers", &o.load_workers, "workers that keep the coordinator busy");
  p.opt("width", &o.width, "ngf = ndf of the load's 32x32 model (16: tiny, cheap updates; 64: the reference's)");
  p.opt("round-seconds", &o.round_seconds, "length of one round of one condition");
  p.opt("rounds", &o.rounds, "rounds of each condition (rotated)");
  p.flag("quick", &o.quick, "small numbers (a smoke run)");
  try {
    p.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dash: %s\n", e.what());
    std::exit(2);
  }
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    std::exit(0);
  }
  if (o.quick) o.history = 2000, o.workers = 5, o.grids = 5, o.reps = 3, o.clients = 5, o.round_seconds = 3,
               o.rounds = 1, o.client_interval = 0.5;
  if (o.history < 1 || o.workers < 1 || o.grids < 1 || o.reps < 1 || o.clients < 0 || o.load_workers < 1 ||
      o.width < 1 || o.rounds < 1 || !(o.round_seconds > 0) || !(o.client_interval > 0)) {
    std::fprintf(stderr, "bench_dash: every count must be positive (--clients may be 0)\n");
    std::exit(2);
  }
  for (char ch : o.db)
    if (!std::isalnum((unsigned char)ch) && ch != '_') {
      std::fprintf(stderr, "bench_dash: --db must be a plain name (letters, digits, _)\n");
      std::exit(2);
    }
  return o;
}

// A 530x530 grid's PNG (a 64x64x3 run's size): smooth tiles with noise, so
// that it compresses about as a real grid does.
std::string grid_png(uint32_t seed) {
  std::mt19937 rng(seed);
  monitor::RgbImage im;
  im.w = im.h = 530;
  im.px.resize(530 * 530 * 3);
  for (int y = 0; y < 530; ++y)
    for (int x = 0; x < 530; ++x)
      for (int c = 0; c < 3; ++c)
        im.px[(y * 530 + x) * 3 + c] = (uint8_t)(((x / 66) * 31 + (y / 66) * 17 + c * 40 + (x % 66) + (y % 66)) % 256 +
                                                 (rng() % 24));
  return monitor::encode_apng({im}, 100, 100);
}

// Fills the run's past: history, workers, units, submissions (a few
// rejected), grids, as iterations 0..history-1 of a run that stands at
// `history`.
void fill_history(pg::Connection& c, const Options& o) {
  pg::Params p;
  p.add(o.history);
  c.exec("INSERT INTO gannf.loss_history (iteration, epoch, loss_d, loss_g, d_real, d_fake, d_accuracy, samples, "
         "submissions_used, active_workers, images_per_second, seconds, update_seconds, recorded_at) "
         "SELECT i, (i * 5 / $1)::int, 1.3 - 0.4 * i / $1 + 0.1 * sin(i), 0.7 + 1.5 * i / $1 + 0.2 * cos(i), "
         "0.6 + 0.1 * sin(i / 7.0), 0.4 - 0.1 * sin(i / 5.0), 0.6 + 0.2 * i / $1, 1024, 4, 8 + (i % 30), "
         "900 + 100 * sin(i / 1000.0), 1.1, 0.2, now() - make_interval(secs => ($1 - i) * 1.1) "
         "FROM generate_series(0, $1 - 1) i",
         p);
  pg::Params w;
  w.add(o.workers);
  c.exec("INSERT INTO gannf.workers (login, name, backend, cpu_cores, ram_bytes, gpu_name, gpu_memory_bytes, "
         "batch_size, registered_at, last_seen) "
         "SELECT 'student' || (k % 30), 'machine-' || k, CASE WHEN k % 5 = 0 THEN 'cuda' ELSE 'cpu' END, 8, "
         "16000000000, CASE WHEN k % 5 = 0 THEN 'NVIDIA RTX' END, CASE WHEN k % 5 = 0 THEN 8000000000 END, 32, "
         "now() - interval '1 day', now() FROM generate_series(1, $1) k",
         w);
  pg::Params u;
  u.add(o.history).add(o.per_iteration);
  c.exec("INSERT INTO gannf.work_units (epoch, first_index, sample_count, iteration, state) "
         "SELECT 0, 0, 256, i, 'done' FROM generate_series(0, $1 - 1) i, generate_series(1, $2) j",
         u);
  pg::Params s;
  s.add(o.history);
  c.exec("INSERT INTO gannf.submissions (work_unit_id, iteration, attempt, worker_id, sample_count, compute_seconds, "
         "state, reject_reason, submitted_at) "
         "SELECT u.id, u.iteration, 1, (SELECT min(id) FROM gannf.workers) + (u.id * 7919) % "
         "(SELECT count(*) FROM gannf.workers), 256, 2.5, "
         "CASE WHEN u.id % 997 = 0 THEN 'rejected' ELSE 'used' END::gannf.submission_state, "
         "CASE WHEN u.id % 997 = 0 THEN 'non-finite gradient' END, now() - make_interval(secs => $1 - u.iteration) "
         "FROM gannf.work_units u WHERE u.state = 'done'",
         s);
  for (int k = 0; k < o.grids; ++k) {
    const std::string png = grid_png((uint32_t)k);
    pg::Params g;
    g.add((int64_t)k * (o.history / o.grids)).bytes(png.data(), png.size());
    c.exec("INSERT INTO gannf.sample_grids (iteration, run_id, epoch, png) "
           "SELECT $1, run_id, 0, $2 FROM gannf.training_state", g);
  }
  c.exec("UPDATE gannf.training_state SET iteration = $1, status = 'paused'", s);
  c.exec("ANALYZE");
}

// The same past moved before iteration 0, where the coordinator starts.
void rewind_history(pg::Connection& c) {
  pg::Transaction tx(c);
  const std::string shift = "iteration - (SELECT iteration FROM gannf.training_state)";
  c.exec("DELETE FROM gannf.sample_grids");
  c.exec("UPDATE gannf.loss_history SET iteration = " + shift);
  c.exec("UPDATE gannf.submissions SET iteration = " + shift);
  c.exec("UPDATE gannf.work_units SET iteration = " + shift + " WHERE state = 'done'");
  c.exec("UPDATE gannf.training_state SET iteration = 0, status = 'running'");
  tx.commit();
}

struct Timed {
  double first = 0;            // seconds: the request after a new snapshot (rendered)
  std::vector<double> warm;    // the next ones (cached)
  size_t bytes = 0;
};

Timed time_get(httplib::Client& http, const std::string& path, int reps) {
  Timed t;
  for (int i = 0; i <= reps; ++i) {
    const auto t0 = Clock::now();
    auto r = http.Get(path.c_str());
    const double s = since(t0);
    if (!r || r->status != 200)
      throw std::runtime_error(path + ": " + (r ? "HTTP " + std::to_string(r->status) + " " + r->body : "no answer"));
    t.bytes = r->body.size();
    if (i == 0) t.first = s;
    else t.warm.push_back(s);
  }
  return t;
}

const char* kPageDocs[] = {"/api/status", "/api/losses?points=1000", "/api/throughput?points=1000",
                           "/api/samples", "/api/resources", "/api/leaderboard?by=worker"};

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    pg::Connection admin(o.admin);
    admin.on_notice({});
    admin.exec("DROP DATABASE IF EXISTS " + o.db + " WITH (FORCE)");
    admin.exec("CREATE DATABASE " + o.db + " OWNER gannf_coord");
    for (const auto& [role, group] : {std::pair<std::string, std::string>{"gannf_bench_worker", "gannf_worker"},
                                      {"gannf_bench_viewer", "gannf_monitor"}})
      admin.exec("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" + role +
                 "') THEN CREATE ROLE " + role + " LOGIN IN ROLE " + group + "; END IF; END $$");
    const std::string coord_info = "user=gannf_coord dbname=" + o.db;
    const std::string worker_info = "user=gannf_bench_worker dbname=" + o.db;
    const std::string viewer_info = "user=gannf_bench_viewer dbname=" + o.db;

    // A small model (--width 16), so that the coordinator's updates are
    // frequent and whatever the dashboard takes from them shows.
    RunSettings s;
    s.dataset = "synthetic";
    s.dataset_size = 10000000;
    s.image_size = 32;
    s.channels = 1;
    s.nz = 16;
    s.ngf = s.ndf = o.width;
    s.images_per_work_unit = 64;
    s.num_workunits_per_update = o.load_workers;
    s.epochs = 1;
    // A trusted cluster's run (the exact mean, no spot checks): the load
    // workers' made-up results could not pass a recomputation.
    s.aggregation = "mean";
    s.spot_check = 0;
    {
      pg::Connection init(coord_info);
      init.on_notice({});
      init_run(init, s, /*force=*/true);
    }
    pg::Connection coord(coord_info);
    coord.on_notice({});
    auto t0 = Clock::now();
    fill_history(coord, o);
    std::printf("# bench_dash: %lld iterations of history, %lld submissions, %d workers, %d grids (%.1f s to make)\n",
                (long long)o.history,
                (long long)coord.exec("SELECT count(*) FROM gannf.submissions").get<int64_t>(0, 0), o.workers, o.grids,
                since(t0));
    std::printf("# server: PostgreSQL %s; client: %u CPUs; load average ",
                coord.exec("SELECT current_setting('server_version')").get<std::string>(0, 0).c_str(),
                std::thread::hardware_concurrency());
    {
      std::ifstream f("/proc/loadavg");
      std::string l;
      std::getline(f, l);
      std::printf("%s\n", l.c_str());
    }

    // ---------------------------------------------------------------- pages
    monitor::MonitorOptions mo;
    mo.conninfo = viewer_info;
    t0 = Clock::now();
    auto m = std::make_unique<monitor::Monitor>(mo);
    const double first_look = since(t0);
    std::vector<double> looks;
    for (int i = 0; i < o.reps; ++i) {
      const auto t = Clock::now();
      m->look();
      looks.push_back(since(t));
    }
    monitor::ServerOptions so;
    so.port = 0;
    auto server = std::make_unique<monitor::DashServer>(*m, so);
    std::thread st([&] { server->run(); });
    httplib::Client http("127.0.0.1", server->port());
    http.set_read_timeout(120);
    // A new snapshot, as each iteration makes one: the history grows by a row.
    coord.exec("INSERT INTO gannf.loss_history (iteration, epoch, samples, submissions_used, recorded_at) "
               "VALUES (" + std::to_string(o.history) + ", 0, 1024, 4, now())");
    coord.exec("UPDATE gannf.training_state SET iteration = iteration + 1");
    m->look();
    std::printf("\n## gannf-dash with %lld iterations of history (ms; first request after a new snapshot, then the "
                "median of %d)\n",
                (long long)o.history, o.reps);
    std::printf("  %-34s %9.1f ms  (reads the whole history and folds every submission once)\n",
                "first look at the database", 1e3 * first_look);
    std::printf("  %-34s %9.2f ms  (median of %d: reads only what is new)\n", "each later look", 1e3 * median(looks),
                o.reps);
    const std::vector<std::string> paths = {"/", "/chart.min.js", "/api/status", "/api/losses?points=1000",
                                            "/api/losses?points=1000&from=50000&to=60000", "/api/throughput?points=1000",
                                            "/api/samples", "/api/resources", "/api/leaderboard",
                                            "/api/leaderboard?by=login", "/leaderboard.csv", "/metrics",
                                            "/samples/latest.png", "/timelapse.png"};
    for (const std::string& p : paths) {
      const Timed t = time_get(http, p, p == "/timelapse.png" ? 3 : o.reps);
      std::printf("  %-44s first %8.1f   then %7.2f ms   %8zu bytes\n", p.c_str(), 1e3 * t.first, 1e3 * median(t.warm),
                  t.bytes);
    }
    // The six documents of one page refresh, back to back, warm.
    std::vector<double> page;
    for (int i = 0; i < o.reps; ++i) {
      const auto t = Clock::now();
      for (const char* d : kPageDocs) time_get(http, d, 0);
      page.push_back(since(t));
    }
    std::printf("  %-44s          then %7.2f ms\n", "a page's six documents, one after another", 1e3 * median(page));
    server->stop();
    st.join();
    server.reset();
    m.reset();

    // ---------------------------------------------------------------- load
    rewind_history(coord);
    auto host = make_backend<float>("cpu");
    Net<float> G(*host, "generator"), D(*host, "discriminator");
    build_generator(G, s.dcgan(), 2);
    build_discriminator(D, s.dcgan(), 2);
    const FakeResult fake(G, D, s.images_per_work_unit, s.images_per_work_unit, s.grad_format());
    std::atomic<bool> stop_workers{false};
    std::vector<std::exception_ptr> errors;
    std::atomic<bool> coord_stop{false};
    CoordinatorOptions co;
    co.conninfo = coord_info + " application_name=bench-coordinator";  // its backend, for server_cpu()
    co.stop = &coord_stop;
    Coordinator c(co);
    std::exception_ptr coord_error;
    std::thread ct([&] {
      try {
        c.run();
      } catch (...) {
        coord_error = std::current_exception();
      }
    });
    WorkerInfo info;
    info.backend = "cpu";
    info.batch_size = s.images_per_work_unit;
    std::vector<std::thread> workers =
        start_load_workers(o.load_workers, worker_info, fake, info, stop_workers, errors);

    std::printf("\n## The coordinator's updates/s (%s; %d workers that claim, download and submit; %.0f s "
                "rounds, conditions rotated)\n",
                s.dcgan().describe().c_str(), o.load_workers, o.round_seconds);
    const char* names[3] = {"no dashboard", "dashboard, no page open", ""};
    char loaded[96];
    std::snprintf(loaded, sizeof loaded, "dashboard, %d clients every %.1f s", o.clients, o.client_interval);
    names[2] = loaded;
    std::vector<double> rates[3], cpu[3], looks_per_s[3];
    std::vector<double> request_ms;
    int64_t requests = 0, failures = 0;
    // CPU seconds per committed update, per round, by condition.
    struct PerUpdate {
      double coordinator = 0;  // its thread in this process
      double server_coordinator = 0, server_workers = 0, server_dashboard = 0, server_rest = 0;
      double dash_process = 0;  // this process apart from the threads named here: the dashboard's threads
      double clients = 0;       // the polling clients' threads
      // What an update costs the coordinator: its thread, its backend and the
      // rest of the server. Not the workers' backends: their CPU includes
      // claim polling while an update closes (it follows the rate), and
      // leaving them out makes the dashboard's share larger, not smaller.
      double update() const { return coordinator + server_coordinator + server_rest; }
    };
    std::vector<PerUpdate> per_update[3];
    bool server_cpu_ok = true;
    struct CpuMark {
      ServerCpu server;
      double process = 0, coordinator = 0, workers = 0, clients = 0, main = 0;
    };
    auto iteration = [&] { return coord.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0); };
    std::this_thread::sleep_for(std::chrono::seconds(2));  // warm-up: workers registered, first updates done
    for (int round = 0; round < o.rounds; ++round)
      for (int cond = 0; cond < 3; ++cond) {
        std::unique_ptr<monitor::Monitor> dm;
        std::unique_ptr<monitor::DashServer> ds;
        std::thread dst;
        std::vector<std::thread> clients;
        std::atomic<bool> stop_clients{false};
        std::mutex mu;
        if (cond > 0) {
          dm = std::make_unique<monitor::Monitor>(mo);
          ds = std::make_unique<monitor::DashServer>(*dm, so);
          dm->start();
          dst = std::thread([&] { ds->run(); });
        }
        if (cond == 2)
          for (int k = 0; k < o.clients; ++k)
            clients.emplace_back([&, k] {
              httplib::Client h("127.0.0.1", ds->port());
              h.set_read_timeout(60);
              // Spread over the interval, as pages opened at different times are.
              std::this_thread::sleep_for(std::chrono::duration<double>(o.client_interval * k / o.clients));
              while (!stop_clients) {
                const auto t = Clock::now();
                for (const char* d : kPageDocs) {
                  const auto q = Clock::now();
                  auto r = h.Get(d);
                  const double ms = 1e3 * since(q);
                  std::lock_guard<std::mutex> l(mu);
                  ++requests;
                  if (!r || r->status != 200) ++failures;
                  else request_ms.push_back(ms);
                }
                const double left = o.client_interval - since(t);
                for (double slept = 0; slept < left && !stop_clients; slept += 0.05)
                  std::this_thread::sleep_for(std::chrono::milliseconds(50));
              }
            });
        std::this_thread::sleep_for(std::chrono::milliseconds(500));  // settle
        auto mark = [&] {
          CpuMark k;
          k.server = server_cpu(coord);
          k.process = cpu_seconds();
          k.coordinator = thread_cpu(ct.native_handle());
          for (auto& t : workers) k.workers += thread_cpu(t.native_handle());
          for (auto& t : clients) k.clients += thread_cpu(t.native_handle());
          k.main = thread_cpu(pthread_self());
          return k;
        };
        const CpuMark m0 = mark();
        const int64_t it0 = iteration();
        const uint64_t l0 = dm ? dm->looks() : 0;
        const double c0 = cpu_seconds();
        const auto w0 = Clock::now();
        while (since(w0) < o.round_seconds && !stop_workers)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        const int64_t it1 = iteration();
        const double window = since(w0);
        const CpuMark m1 = mark();
        if (it1 > it0) {
          const double n = (double)(it1 - it0);
          PerUpdate u;
          u.coordinator = (m1.coordinator - m0.coordinator) / n;
          u.server_coordinator = (m1.server.coordinator - m0.server.coordinator) / n;
          u.server_workers = (m1.server.workers - m0.server.workers) / n;
          u.server_dashboard = (m1.server.dashboard - m0.server.dashboard) / n;
          u.server_rest = (m1.server.total - m0.server.total) / n - u.server_coordinator - u.server_workers -
                          u.server_dashboard;
          u.clients = (m1.clients - m0.clients) / n;
          u.dash_process = (m1.process - m0.process) / n - u.coordinator - (m1.workers - m0.workers) / n - u.clients -
                           (m1.main - m0.main) / n;
          per_update[cond].push_back(u);
        }
        server_cpu_ok = server_cpu_ok && m0.server.ok && m1.server.ok;
        // From the commits' own times: a count over the window would be
        // quantised to 1/window (several % at a few updates per second).
        pg::Params pr;
        pr.add(it0).add(it1);
        pg::Result rr = coord.exec(
            "SELECT count(*), extract(epoch FROM max(recorded_at) - min(recorded_at))::float8 "
            "FROM gannf.loss_history WHERE iteration >= $1 AND iteration < $2",
            pr);
        const int64_t n = rr.get<int64_t>(0, 0);
        const double span = n > 1 ? rr.get<double>(0, 1) : 0;
        rates[cond].push_back(span > 0 ? (double)(n - 1) / span : (double)(it1 - it0) / window);
        // This process: the coordinator, the workers' client side, and the
        // dashboard with its clients where they run.
        cpu[cond].push_back((cpu_seconds() - c0) / window);
        looks_per_s[cond].push_back(dm ? (double)(dm->looks() - l0) / window : 0);
        stop_clients = true;
        for (auto& t : clients) t.join();
        if (ds) {
          ds->stop();
          dst.join();
        }
        std::printf("  round %d  %-40s %6.2f updates/s   %.2f looks/s   this process %.2f CPU s/s\n", round + 1,
                    names[cond], rates[cond].back(), looks_per_s[cond].back(), cpu[cond].back());
        if (it1 > it0) {
          const PerUpdate& u = per_update[cond].back();
          std::printf("           CPU ms/update: coordinator %.1f, server %.1f (its backend %.1f, workers' %.1f, "
                      "dashboard's %.2f, rest %.1f), dashboard process %.2f, clients %.2f\n",
                      1e3 * u.coordinator,
                      1e3 * (u.server_coordinator + u.server_workers + u.server_dashboard + u.server_rest),
                      1e3 * u.server_coordinator, 1e3 * u.server_workers, 1e3 * u.server_dashboard,
                      1e3 * u.server_rest, 1e3 * u.dash_process, 1e3 * u.clients);
        }
        std::fflush(stdout);
      }
    stop_workers = true;
    for (auto& t : workers) t.join();
    coord_stop = true;
    ct.join();
    if (coord_error) std::rethrow_exception(coord_error);
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    // Other work on the machine moves the rate by more than the dashboard
    // does: each round's conditions run back to back, so the ratio within a
    // round is the measure, and its median over the rounds.
    std::vector<double> ratio[3];
    for (int k = 1; k < 3; ++k)
      for (int r = 0; r < o.rounds; ++r) ratio[k].push_back(rates[k][r] / rates[0][r]);
    std::printf("  %-44s %6.2f updates/s (median of the rounds)\n", names[0], median(rates[0]));
    for (int k = 1; k < 3; ++k)
      std::printf("  %-44s %6.2f updates/s; within a round %.1f%% of no dashboard (median; %.1f-%.1f%%)\n", names[k],
                  median(rates[k]), 100 * median(ratio[k]), 100 * *std::min_element(ratio[k].begin(), ratio[k].end()),
                  100 * *std::max_element(ratio[k].begin(), ratio[k].end()));
    std::printf("  the dashboard's looks at the database: %.2f/s idle, %.2f/s with the clients (medians)\n",
                median(looks_per_s[1]), median(looks_per_s[2]));
    std::printf("  this process's CPU: %.2f s/s without the dashboard, %.2f idle, %.2f with the clients (medians)\n",
                median(cpu[0]), median(cpu[1]), median(cpu[2]));
    std::printf("  clients' requests: %lld, %lld failed; median %.1f ms, 95th percentile %.1f ms\n",
                (long long)requests, (long long)failures, median(request_ms), [&] {
                  if (request_ms.empty()) return (double)NAN;
                  std::sort(request_ms.begin(), request_ms.end());
                  return request_ms[(size_t)(0.95 * (double)(request_ms.size() - 1))];
                }());

    // CPU per update, paired within each round: what the dashboard takes of
    // the resources an update needs, which other work on the machine moves
    // far less than it moves the rates.
    const size_t paired = std::min({per_update[0].size(), per_update[1].size(), per_update[2].size()});
    Interval share[3], cost[3], whole[3];
    if (!server_cpu_ok)
      std::printf("\n## CPU per update: the server's processes are not readable in /proc (another machine?); "
                  "only this process's threads count\n");
    else
      std::printf("\n## CPU per update (mean over %zu rounds, 95%% confidence interval; paired within a round)\n",
                  paired);
    for (int k = 0; k < 3; ++k) {
      std::vector<double> sh, co, wh, cl;
      for (size_t r = 0; r < paired; ++r) {
        const PerUpdate &u = per_update[k][r], &b = per_update[0][r];
        sh.push_back(u.server_dashboard / u.update());
        co.push_back(u.update() / b.update());
        wh.push_back((u.server_dashboard + u.dash_process - b.dash_process) / b.update());
        cl.push_back(u.clients / b.update());
      }
      share[k] = mean_ci(sh), cost[k] = mean_ci(co), whole[k] = mean_ci(wh);
      const Interval clients = mean_ci(cl);
      double upd = 0;
      for (size_t r = 0; r < paired; ++r) upd += per_update[k][r].update() / (double)paired;
      std::printf("  %-40s an update %.1f ms CPU of the coordinator and the server\n", names[k], 1e3 * upd);
      if (k == 0) continue;
      std::printf("    the dashboard's backends: %.2f%% of an update's CPU (%.2f-%.2f%%)\n", 100 * share[k].mean,
                  100 * share[k].low, 100 * share[k].high);
      std::printf("    an update's own CPU against no dashboard: %.1f%% (%.1f-%.1f%%)\n", 100 * cost[k].mean,
                  100 * cost[k].low, 100 * cost[k].high);
      std::printf("    the dashboard's backends and its process, on the coordinator's machine: %.2f%% of an "
                  "update's CPU (%.2f-%.2f%%)\n",
                  100 * whole[k].mean, 100 * whole[k].low, 100 * whole[k].high);
      if (k == 2)
        std::printf("    (its clients' own side, browsers elsewhere: %.2f%% (%.2f-%.2f%%))\n", 100 * clients.mean,
                    100 * clients.low, 100 * clients.high);
    }
    std::printf("RESULT history=%lld clients=%d interval=%.1f none=%.3f idle=%.3f loaded=%.3f idle_ratio=%.4f "
                "loaded_ratio=%.4f server_share=%.5f server_share_high=%.5f update_cost=%.4f update_cost_low=%.4f "
                "update_cost_high=%.4f one_machine=%.5f one_machine_high=%.5f width=%d\n",
                (long long)o.history, o.clients, o.client_interval, median(rates[0]), median(rates[1]),
                median(rates[2]), median(ratio[1]), median(ratio[2]), share[2].mean, share[2].high, cost[2].mean,
                cost[2].low, cost[2].high, whole[2].mean, whole[2].high, o.width);
    if (failures > 0) return 1;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dash: %s\n", e.what());
    return 1;
  }
}
