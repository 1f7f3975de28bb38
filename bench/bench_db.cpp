// bench_db: the cluster's database path against the same server's raw speed,
// measured in the same run (issue 4's benchmarks).
//
//   submit   gannf.submit() of a full unit's result (G and D gradients and
//            BN statistics, ~25 MB at 64x64) through src/cluster/protocol,
//            vs a plain binary-parameter INSERT of the same bytes into a
//            table of the same shape, with each durability setting;
//   fetch    the worker's weights download (protocol fetch_weights: one
//            SELECT, checksums, decode), vs a plain SELECT of the same bytes;
//   latency  claim, release, heartbeat; NOTIFY wake-up (a unit made claimable
//            by the coordinator's connection -> an idle worker's LISTEN wakes
//            -> it has claimed the unit);
//   update   the real Coordinator taking one iteration of 8 full-size
//            submissions: fetch + validate, then aggregate + Adam + BN fold +
//            publish + commit;
//   unit     a CPU worker computing one unit at the default settings (the
//            worker's code path: GanStep over micro-batches), to put the
//            database's share of a unit in proportion;
// and the ceiling of one server that follows from these.
//
// It makes a database of its own (--db, dropped and recreated) through an
// administrator connection (--admin), and a worker login. Run it through
// bench/db.sh, which starts the project's embedded PostgreSQL; or against any
// server with --admin "host=... user=postgres".
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "blas_runtime.h"
#include "blob.h"
#include "bn_recorder.h"
#include "cli.h"
#include "coordinator.h"
#include "dcgan.h"
#include "fake_result.h"
#include "pg.h"
#include "protocol.h"
#include "rng.h"
#include "run_settings.h"

using namespace gannf;
using namespace gannf::cluster;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Samples {
  std::vector<double> v;
  void add(double x) { v.push_back(x); }
  double quantile(double q) const {
    if (v.empty()) return NAN;
    std::vector<double> s = v;
    std::sort(s.begin(), s.end());
    const double pos = q * (double)(s.size() - 1);
    const size_t i = (size_t)pos;
    const double f = pos - (double)i;
    return i + 1 < s.size() ? s[i] * (1 - f) + s[i + 1] * f : s[i];
  }
  double median() const { return quantile(0.5); }
  double min() const { return v.empty() ? NAN : *std::min_element(v.begin(), v.end()); }
  double max() const { return v.empty() ? NAN : *std::max_element(v.begin(), v.end()); }
};

struct Options {
  std::string admin = "user=postgres dbname=postgres";
  std::string db = "gannf_bench";
  std::string worker_login = "gannf_bench_worker";
  int image_size = 64, ngf = 64, ndf = 64;
  int unit_images = 256, micro_batch = 32, per_update = 8;
  int reps = 8;          // submit/fetch rounds (each round: every roof variant, submit, select, fetch)
  int latency_reps = 40;
  int update_reps = 3;   // coordinator iterations of per_update submissions
  int unit_reps = 4;     // CPU units computed in a row
  int load_workers = 4;  // the saturation run: workers that only claim, download and submit
  double load_seconds = 20;
  bool quick = false;
};

Options parse(int argc, char** argv) {
  Options o;
  gannf::cli::Parser p(
      "bench_db",
      "usage: bench_db [options]\n"
      "The cluster's database path (submit, fetch, claim, NOTIFY wake-up, the coordinator's update)\n"
      "against the same PostgreSQL's plain INSERT/SELECT of the same bytes, measured in one run.\n"
      "Connection settings come from libpq's defaults (PGHOST, PGSERVICE, ...); bench/db.sh sets them\n"
      "for the project's embedded server.");
  p.opt("admin", &o.admin, "a login that may create databases and roles");
  p.opt("db", &o.db, "the benchmark's database, DROPPED and recreated");
  p.opt("image-size", &o.image_size, "32 or 64 (64: ~25 MB per unit)");
  p.opt("ngf", &o.ngf, "generator width");
  p.opt("ndf", &o.ndf, "discriminator width");
  p.opt("unit", &o.unit_images, "images per work unit (the run default)");
  p.opt("micro-batch", &o.micro_batch, "a worker's batch size (gannf-worker's default)");
  p.opt("reps", &o.reps, "submit/fetch rounds, at most 8 (they feed the first update)");
  p.opt("update-reps", &o.update_reps, "coordinator iterations of 8 submissions");
  p.opt("unit-reps", &o.unit_reps, "CPU units computed in a row for the database's share (0 skips)");
  p.opt("load-workers", &o.load_workers, "workers in the saturation run (0 skips it)");
  p.opt("load-seconds", &o.load_seconds, "the saturation run's length");
  p.flag("quick", &o.quick, "small nets and few repetitions (the test suite's smoke run)");
  auto fail = [](const std::string& m) {
    std::fprintf(stderr, "bench_db: %s\n", m.c_str());
    std::exit(2);
  };
  try {
    p.parse(argc, argv);
  } catch (const std::exception& e) {
    fail(e.what());
  }
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    std::exit(0);
  }
  auto in = [&](const char* flag, double v, int lo, int hi) {
    if (v < lo || v > hi)
      fail(std::string(flag) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  in("--ngf", o.ngf, 1, 1024);
  in("--ndf", o.ndf, 1, 1024);
  in("--unit", o.unit_images, 2, 65536);
  in("--micro-batch", o.micro_batch, 2, 65536);
  in("--reps", o.reps, 1, 8);
  in("--update-reps", o.update_reps, 1, 100);
  in("--unit-reps", o.unit_reps, 0, 100);
  in("--load-workers", o.load_workers, 0, 64);
  in("--load-seconds", o.load_seconds, 1, 3600);
  if (o.quick) {
    o.image_size = 32;
    o.ngf = o.ndf = 16;
    o.unit_images = 64;
    o.reps = 2;
    o.latency_reps = 10;
    o.update_reps = 1;
    o.unit_reps = std::min(o.unit_reps, 1);
    o.load_workers = std::min(o.load_workers, 2);
    o.load_seconds = 2;
  }
  if (o.image_size != 32 && o.image_size != 64) {
    std::fprintf(stderr, "bench_db: --image-size must be 32 or 64\n");
    std::exit(2);
  }
  for (char ch : o.db)
    if (!std::isalnum((unsigned char)ch) && ch != '_') {
      std::fprintf(stderr, "bench_db: --db must be a plain name (letters, digits, _)\n");
      std::exit(2);
    }
  return o;
}

double mb(size_t bytes) { return (double)bytes / 1e6; }

void line(const char* what, const Samples& s, const char* unit_note = "") {
  std::printf("  %-44s %9.1f ms  (min %.1f, max %.1f, n=%zu)%s\n", what, 1e3 * s.median(), 1e3 * s.min(),
              1e3 * s.max(), s.v.size(), unit_note);
}

void rate(const char* what, const Samples& s, size_t bytes, double roof_mbs = 0) {
  const double mbs = mb(bytes) / s.median();
  std::printf("  %-44s %9.1f ms  %7.0f MB/s", what, 1e3 * s.median(), mbs);
  if (roof_mbs > 0) std::printf("  = %3.0f%% of the roof", 100 * mbs / roof_mbs);
  std::printf("   (min %.1f, max %.1f ms, n=%zu)\n", 1e3 * s.min(), 1e3 * s.max(), s.v.size());
}

std::string setting(pg::Connection& c, const char* name) {
  return c.exec(std::string("SELECT current_setting('") + name + "')").get<std::string>(0, 0);
}

}  // namespace

int main(int argc, char** argv) {
  gannf::cpu::blas_ensure_coretype(argc, argv);  // the unit's compute runs OpenBLAS as the worker does
  const Options o = parse(argc, argv);
  try {
    // ---------------------------------------------------------------- set-up
    pg::Connection admin(o.admin);
    admin.on_notice({});
    admin.exec("DROP DATABASE IF EXISTS " + o.db + " WITH (FORCE)");
    admin.exec("CREATE DATABASE " + o.db + " OWNER gannf_coord");
    admin.exec("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" + o.worker_login +
               "') THEN CREATE ROLE " + o.worker_login + " LOGIN IN ROLE gannf_worker; END IF; END $$");
    const std::string coord_info = "user=gannf_coord dbname=" + o.db;
    const std::string worker_info = "user=" + o.worker_login + " dbname=" + o.db;

    RunSettings s;
    s.dataset = "synthetic";
    s.dataset_size = 1000000;
    s.image_size = o.image_size;
    s.channels = 3;
    s.ngf = o.ngf;
    s.ndf = o.ndf;
    s.images_per_work_unit = o.unit_images;
    s.num_workunits_per_update = o.per_update;
    s.extra_units = o.per_update;  // spare units for the latency rounds
    s.epochs = 1;
    // A trusted cluster's run (the exact mean, no spot checks): the load
    // workers' made-up results could not pass a recomputation.
    s.aggregation = "mean";
    s.spot_check = 0;
    {
      pg::Connection init(coord_info);  // init_run keeps the coordinator lock for its session
      init.on_notice({});
      init_run(init, s, /*force=*/true);
    }
    pg::Connection coord(coord_info);
    coord.on_notice({});

    auto be = make_backend<float>("cpu");
    Net<float> G(*be, "generator"), D(*be, "discriminator");
    build_generator(G, s.dcgan(), 2);
    build_discriminator(D, s.dcgan(), 2);
    FakeResult fake(G, D, o.unit_images, o.micro_batch);
    const size_t weight_bytes = 4 * (G.num_params() + D.num_params() + G.num_stats() + D.num_stats());

    pg::Connection wc(worker_info);
    WorkerInfo wi;
    wi.name = "bench";
    wi.backend = "cpu";
    wi.batch_size = o.micro_batch;
    const int64_t wid = register_worker(wc, wi);

    std::printf("# bench_db: %s; unit %d images in micro-batches of %d: submission %.1f MB, weights %.1f MB\n",
                s.dcgan().describe().c_str(), o.unit_images, o.micro_batch, mb(fake.bytes()), mb(weight_bytes));
    std::printf("# server: PostgreSQL %s at %s; fsync=%s synchronous_commit=%s wal_level=%s "
                "full_page_writes=%s shared_buffers=%s max_wal_size=%s\n",
                setting(coord, "server_version").c_str(), coord.describe().c_str(), setting(coord, "fsync").c_str(),
                setting(coord, "synchronous_commit").c_str(), setting(coord, "wal_level").c_str(),
                setting(coord, "full_page_writes").c_str(), setting(coord, "shared_buffers").c_str(),
                setting(coord, "max_wal_size").c_str());
    std::printf("# client: %u CPUs, %d OpenMP threads; load average %s\n", std::thread::hardware_concurrency(),
                omp_get_max_threads(), [] {
                  std::ifstream f("/proc/loadavg");
                  std::string a, b, c;
                  f >> a >> b >> c;
                  return a + " " + b + " " + c;
                }().c_str());

    // The roof's tables: submission_blobs' shape (a row per network: gradient
    // and BN statistics, STORAGE EXTERNAL), logged and unlogged.
    coord.exec_script(
        "CREATE SCHEMA bench;"
        "CREATE TABLE bench.logged (batch bigint, network int, grad bytea, bn bytea);"
        "ALTER TABLE bench.logged ALTER COLUMN grad SET STORAGE EXTERNAL, ALTER COLUMN bn SET STORAGE EXTERNAL;"
        "CREATE UNLOGGED TABLE bench.unlogged (batch bigint, network int, grad bytea, bn bytea);"
        "ALTER TABLE bench.unlogged ALTER COLUMN grad SET STORAGE EXTERNAL, ALTER COLUMN bn SET STORAGE EXTERNAL;"
        "CREATE TABLE bench.fence (x int);"
        "CREATE TABLE bench.weights (network int, params bytea, bn bytea);"
        "ALTER TABLE bench.weights ALTER COLUMN params SET STORAGE EXTERNAL, ALTER COLUMN bn SET STORAGE EXTERNAL;");
    pg::Connection roof_sync(coord_info), roof_async(coord_info);
    roof_async.exec("SET synchronous_commit = off");
    auto roof_insert = [&](pg::Connection& c, const char* table, int64_t batch, std::span<const float> g,
                           std::span<const float> gbn, std::span<const float> d, std::span<const float> dbn) {
      pg::Params p;
      p.add(batch).floats(g).floats(gbn).floats(d).floats(dbn);
      c.exec(std::string("INSERT INTO ") + table + " (batch, network, grad, bn) VALUES ($1, 0, $2, $3), ($1, 1, $4, $5)",
             p);
    };

    // Between timed writes: a small synchronous commit, which returns once
    // all WAL before it is on disk, so that no timed statement pays for
    // flushing the WAL an earlier asynchronous one left behind.
    auto fence = [&] { roof_sync.exec("INSERT INTO bench.fence VALUES (1)"); };

    // ---------------------------------------------------------------- correctness first
    PublishedWeights w0 = fetch_weights(wc, 0);
    if (w0.g.layout_hash != G.layout_hash() || w0.g.params.size() != G.num_params() ||
        w0.d.layout_hash != D.layout_hash() || w0.d.params.size() != D.num_params())
      throw std::runtime_error("the published weights do not have the networks' layout");
    {
      pg::Params p;
      p.floats(w0.g.params.floats()).floats(w0.g.bn_running.floats()).floats(w0.d.params.floats())
          .floats(w0.d.bn_running.floats());
      coord.exec("INSERT INTO bench.weights VALUES (0, $1, $2), (1, $3, $4)", p);
    }
    auto roof_select = [&](pg::Connection& c) {
      pg::Result r = c.exec("SELECT network, params, bn FROM bench.weights ORDER BY network");
      size_t n = 0;
      for (int i = 0; i < r.rows(); ++i) n += r.bytes(i, 1).size() + r.bytes(i, 2).size();
      return n;
    };
    if (roof_select(coord) != weight_bytes)
      throw std::runtime_error("the roof's SELECT returned the wrong number of bytes");

    // The blob checksum's speed (both ends compute it over every byte).
    Samples crc_t;
    for (int r = 0; r < 5; ++r) {
      const auto t0 = Clock::now();
      volatile uint32_t c = blob_checksum(fake.g_grad) ^ blob_checksum(fake.d_grad);  // kept: volatile
      crc_t.add(since(t0));
      (void)c;
    }

    // ---------------------------------------------------------------- submit / fetch rounds
    Samples ins_sync, ins_async, ins_unlogged, submit_t, select_t, fetch_t;
    int64_t first_submission = 0;
    for (int r = 0; r < o.reps; ++r) {
      auto t0 = Clock::now();
      roof_insert(roof_sync, "bench.logged", r, fake.g_grad, fake.g_bn, fake.d_grad, fake.d_bn);
      ins_sync.add(since(t0));
      fence();
      t0 = Clock::now();
      roof_insert(roof_async, "bench.logged", 1000 + r, fake.g_grad, fake.g_bn, fake.d_grad, fake.d_bn);
      ins_async.add(since(t0));
      fence();
      t0 = Clock::now();
      roof_insert(roof_async, "bench.unlogged", r, fake.g_grad, fake.g_bn, fake.d_grad, fake.d_bn);
      ins_unlogged.add(since(t0));
      fence();

      std::vector<ClaimedUnit> u = claim(wc, wid, 1);
      if (u.size() != 1) throw std::runtime_error("no unit to claim for the submit round");
      t0 = Clock::now();
      SubmitOutcome out = submit(wc, wid, u[0], fake.r);
      submit_t.add(since(t0));
      fence();
      if (out.status != SubmitStatus::Accepted)
        throw std::runtime_error(std::string("submit was not accepted: ") + to_string(out.status));
      if (!first_submission) first_submission = out.submission_id;

      t0 = Clock::now();
      const size_t n = roof_select(roof_sync);
      select_t.add(since(t0));
      if (n != weight_bytes) throw std::runtime_error("roof SELECT size changed");
      t0 = Clock::now();
      PublishedWeights w = fetch_weights(wc, 0);
      fetch_t.add(since(t0));
      if (!std::ranges::equal(w.g.params.floats(), w0.g.params.floats()) ||
          !std::ranges::equal(w.d.params.floats(), w0.d.params.floats()))
        throw std::runtime_error("two fetches of the same weights differ");
      coord.exec("DELETE FROM bench.logged");
      coord.exec("DELETE FROM bench.unlogged");
      fence();
    }
    // What was stored is what was sent.
    {
      pg::Params p;
      p.add(first_submission);
      pg::Result r = coord.exec(
          "SELECT b.network::text, b.grad, b.grad_checksum FROM gannf.submission_blobs b "
          "WHERE b.submission_id = $1 ORDER BY b.network",   // the enum's order: G, D
          p);
      if (r.rows() != 2) throw std::runtime_error("the first submission's blobs are missing");
      if (decode_floats(r.bytes(0, 1)) != fake.g_grad || decode_floats(r.bytes(1, 1)) != fake.d_grad ||
          (uint32_t)r.get<int64_t>(0, 2) != blob_checksum(fake.g_grad))
        throw std::runtime_error("the stored submission differs from what was sent");
    }

    // ---------------------------------------------------------------- latencies
    Samples claim_t, release_t, beat_t, wake_t, wake_claim_t;
    for (int r = 0; r < o.latency_reps; ++r) {
      auto t0 = Clock::now();
      std::vector<ClaimedUnit> u = claim(wc, wid, 1);
      claim_t.add(since(t0));
      if (u.empty()) throw std::runtime_error("no spare unit for the latency rounds");
      t0 = Clock::now();
      if (!heartbeat(wc, wid, u[0])) throw std::runtime_error("heartbeat lost a held unit");
      beat_t.add(since(t0));
      t0 = Clock::now();
      if (!release(wc, wid, u[0])) throw std::runtime_error("release failed");
      release_t.add(since(t0));
    }
    {
      // An idle worker (its own connection, LISTEN gannf_work) and the
      // coordinator making a unit claimable: the notification comes from
      // sql/0002's trigger at commit.
      std::vector<ClaimedUnit> held;
      for (;;) {  // hold every open unit but one
        std::vector<ClaimedUnit> u = claim(wc, wid, 1);
        if (u.empty()) break;
        held.push_back(u[0]);
      }
      if (held.size() < 2) throw std::runtime_error("too few units for the wake-up rounds");
      const ClaimedUnit target = held.back();
      held.pop_back();
      release(wc, wid, target);
      std::vector<ClaimedUnit> got = claim(wc, wid, 1);  // hold it again: idle state has nothing to claim
      if (got.size() != 1) throw std::runtime_error("wake-up target not claimable");

      pg::Connection idle(worker_info);
      idle.listen(channel::kWork);
      std::atomic<int> round{-1};
      std::atomic<bool> done{false};
      std::vector<Clock::time_point> woke(o.latency_reps), claimed(o.latency_reps);
      std::vector<ClaimedUnit> claimed_units(o.latency_reps);
      std::thread waiter([&] {
        int seen = -1;
        while (!done) {
          auto n = idle.wait_notification(std::chrono::milliseconds(250));
          if (!n) continue;
          const auto t = Clock::now();
          while (idle.wait_notification(std::chrono::milliseconds(0))) {
          }
          const int r = round.load();
          if (r < 0 || r == seen) continue;
          woke[r] = t;
          std::vector<ClaimedUnit> u = claim(idle, wid, 1);
          claimed[r] = Clock::now();
          if (!u.empty()) claimed_units[r] = u[0];
          seen = r;
        }
      });
      Rng jitter(7);
      for (int r = 0; r < o.latency_reps; ++r) {
        std::this_thread::sleep_for(std::chrono::milliseconds(30 + (int)(40 * jitter.uniform())));
        // The coordinator's side: the unit becomes available, one statement
        // that commits (as when a rejected unit is served again).
        pg::Params p;
        p.add(target.unit_id);
        round = r;
        const auto t0 = Clock::now();
        coord.exec("UPDATE gannf.work_units SET state = 'available', visible_at = '-infinity' "
                   "WHERE id = $1",
                   p);
        for (int i = 0; i < 200 && claimed_units[r].unit_id == 0; ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (claimed_units[r].unit_id != target.unit_id)
          throw std::runtime_error("the idle worker did not wake and claim the unit within 1 s");
        wake_t.add(std::chrono::duration<double>(woke[r] - t0).count());
        wake_claim_t.add(std::chrono::duration<double>(claimed[r] - t0).count());
      }
      done = true;
      waiter.join();
      for (const ClaimedUnit& u : held) release(wc, wid, u);
      release(wc, wid, claimed_units.back());
    }

    // ---------------------------------------------------------------- the coordinator's update
    Samples upd_fetch, upd_close, upd_total, upd_agg, upd_pub, upd_commit;
    for (int r = 0; r < o.update_reps; ++r) {
      const int64_t it = coord.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0);
      CoordinatorOptions co;
      co.conninfo = coord_info;
      co.max_iterations = it + 1;
      Coordinator c(co);
      // A coordinator that stops at its bound pauses the run; workers claim
      // only from a running one (its next run() would set this too).
      coord.exec("UPDATE gannf.training_state SET status = 'running'");
      const int64_t pending = [&] {
        pg::Params p;
        p.add(it);
        return coord.exec("SELECT count(*) FROM gannf.submissions WHERE iteration = $1 AND state = 'pending'", p)
            .get<int64_t>(0, 0);
      }();
      for (int64_t k = pending; k < o.per_update; ++k) {
        std::vector<ClaimedUnit> u = claim(wc, wid, 1);
        if (u.size() != 1 || u[0].iteration != it) throw std::runtime_error("no unit of the current iteration");
        if (submit(wc, wid, u[0], fake.r).status != SubmitStatus::Accepted)
          throw std::runtime_error("submit for the update round refused");
      }
      IterationReport rep;
      const auto t0 = Clock::now();
      const auto outcome = c.run([&](const IterationReport& x) { rep = x; });
      const double total = since(t0);
      if (outcome != Coordinator::Outcome::Bound || rep.used != o.per_update || rep.rejected != 0)
        throw std::runtime_error("the coordinator's iteration did not use the " + std::to_string(o.per_update) +
                                 " submissions (used " + std::to_string(rep.used) + ", rejected " +
                                 std::to_string(rep.rejected) + ")");
      upd_total.add(total);
      upd_close.add(rep.update_seconds);
      upd_fetch.add(total - rep.update_seconds);
      upd_agg.add(rep.aggregate_seconds);
      upd_pub.add(rep.publish_seconds);
      upd_commit.add(rep.commit_seconds);
    }
    {
      // The update is Adam on the mean gradient: every weight moved.
      const int64_t it = coord.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0);
      PublishedWeights w = fetch_weights(wc, it);
      size_t moved = 0;
      for (size_t i = 0; i < w.g.params.size(); ++i) moved += w.g.params.floats()[i] != w0.g.params.floats()[i];
      if (moved < w.g.params.size() * 9 / 10) throw std::runtime_error("the update left G's weights unchanged");
    }

    // ---------------------------------------------------------------- a CPU worker's units
    // gannf-worker's loop, step for step, on real units of the run: claim,
    // download the weights (every unit, as if each came from a new
    // iteration: the worst case), compute over micro-batches, and hand the
    // submit to a second connection on a thread while the next unit starts.
    // Critical-path database time: claim + download + waiting for the
    // previous upload; the upload itself overlaps the next unit's compute.
    Samples unit_t, unit_wall, unit_crit;
    if (o.unit_reps > 0) {
      RecordingBackend<float> rbe(make_backend<float>("cpu"));
      Net<float> G2(rbe, "generator"), D2(rbe, "discriminator");
      build_generator(G2, s.dcgan(), o.micro_batch + 1);
      build_discriminator(D2, s.dcgan(), o.micro_batch + 1);
      GanStep<float> gan(G2, D2);
      const size_t img = (size_t)3 * o.image_size * o.image_size;
      std::vector<float> real((size_t)(o.micro_batch + 1) * img), noise((size_t)(o.micro_batch + 1) * s.nz);
      Rng rng(3);
      for (float& x : real) x = (float)(2 * rng.uniform() - 1);
      coord.exec("UPDATE gannf.training_state SET status = 'running'");
      pg::Connection up_c(worker_info);
      struct Pending {
        std::vector<float> gg, dg, gbn, dbn;
        UnitResult r;
        ClaimedUnit u;
        std::optional<SubmitOutcome> out;
      };
      std::unique_ptr<Pending> pending;
      std::thread up_thread;
      auto join_upload = [&] {
        if (up_thread.joinable()) up_thread.join();
        if (pending && !(pending->out && pending->out->stored()))
          throw std::runtime_error("a unit's upload was not accepted");
        pending.reset();
      };
      for (int r = 0; r < o.unit_reps; ++r) {
        const auto t0 = Clock::now();
        std::vector<ClaimedUnit> u = claim(wc, wid, 1);
        if (u.size() != 1) throw std::runtime_error("no unit for the worker rounds");
        PublishedWeights w = fetch_weights(wc, u[0].iteration);
        G2.set_params(w.g.params.floats());
        G2.set_stats(w.g.bn_running.floats());
        D2.set_params(w.d.params.floats());
        D2.set_stats(w.d.bn_running.floats());
        double crit = since(t0);
        const auto tc = Clock::now();
        rbe.clear();
        gan.zero_grads();
        int64_t off = 0;
        const std::vector<int> sizes = micro_batches(o.unit_images, o.micro_batch);
        for (int n : sizes) {
          for (int i = 0; i < n; ++i) sample_noise(noise.data() + (size_t)i * s.nz, s.nz, 1, 0, (uint64_t)(off + i));
          gan.accumulate(real.data(), noise.data(), n, 1.0 / o.unit_images);
          off += n;
        }
        auto next = std::make_unique<Pending>();
        next->gg = G2.get_grads();
        next->dg = D2.get_grads();
        next->gbn = rbe.stats_of(G2.stats(), G2.num_stats());
        next->dbn = rbe.stats_of(D2.stats(), D2.num_stats());
        unit_t.add(since(tc));
        const auto tw = Clock::now();
        join_upload();  // the previous unit's
        crit += since(tw);
        next->u = u[0];
        next->r.sample_count = o.unit_images;
        next->r.g = {G2.layout_hash(), next->gg, next->gbn};
        next->r.d = {D2.layout_hash(), next->dg, next->dbn};
        next->r.micro_batch = std::min(o.micro_batch, o.unit_images);
        pending = std::move(next);
        up_thread = std::thread([&, p = pending.get()] { p->out = submit(up_c, wid, p->u, p->r); });
        unit_crit.add(crit);
        unit_wall.add(since(t0));
      }
      join_upload();
    }

    // ---------------------------------------------------------------- saturation
    // The ceiling measured rather than modelled: the real Coordinator runs
    // iterations on its own thread while `load_workers` workers (threads,
    // each its own login session and worker id) do everything a worker does
    // against the database — claim, download the weights when the iteration
    // changed, submit — but no computing, as fast as the server lets them.
    // What the run takes in that window is what one server can take. (Here
    // the server shares the machine's cores with all of it.)
    double load_units_s = 0, load_updates_s = 0;
    int64_t load_accepted = 0, load_refused = 0;
    if (o.load_workers > 0) {
      const int64_t it0 = coord.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0);
      std::atomic<bool> stop{false};
      CoordinatorOptions co;
      co.conninfo = coord_info;
      co.stop = &stop;
      std::exception_ptr coord_error;
      coord.exec("UPDATE gannf.training_state SET status = 'running'");
      Coordinator c(co);
      std::atomic<int64_t> accepted{0}, refused{0};
      std::vector<std::exception_ptr> errors;
      const auto t0 = Clock::now();
      std::thread ct([&] {
        try {
          c.run();
        } catch (...) {
          coord_error = std::current_exception();
        }
      });
      WorkerInfo info;
      info.batch_size = o.micro_batch;
      std::vector<std::thread> workers =
          start_load_workers(o.load_workers, worker_info, fake, info, stop, errors, [&](const LoadWorker& lw) {
            accepted += lw.accepted;
            refused += lw.refused;
          });
      while (!stop && since(t0) < o.load_seconds) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const int64_t it1 = coord.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0);
      const double window = since(t0);
      stop = true;
      for (auto& t : workers) t.join();
      ct.join();
      if (coord_error) std::rethrow_exception(coord_error);
      for (auto& e : errors)
        if (e) std::rethrow_exception(e);
      load_accepted = accepted;
      load_refused = refused;
      if (it1 - it0 < 1) throw std::runtime_error("the saturation run made no update");
      // An iteration uses every submission that is in when it closes (at
      // least per_update): count what the updates of the window used.
      pg::Params pw;
      pw.add(it0).add(it1);
      const int64_t used = coord.exec("SELECT coalesce(sum(submissions_used), 0)::bigint FROM gannf.loss_history "
                                      "WHERE iteration >= $1 AND iteration < $2",
                                      pw).get<int64_t>(0, 0);
      load_updates_s = (double)(it1 - it0) / window;
      load_units_s = (double)used / window;
    }

    // ---------------------------------------------------------------- report
    const size_t sub_bytes = fake.bytes();
    // submit() writes its blobs into an UNLOGGED table (sql/0006) and commits
    // with synchronous_commit off: its roof is the unlogged INSERT.
    const double roof_unlogged_mbs = mb(sub_bytes) / ins_unlogged.median();
    const double roof_sync_mbs = mb(sub_bytes) / ins_sync.median();
    const double roof_sel_mbs = mb(weight_bytes) / select_t.median();
    std::printf("\n## Blobs (%zu rounds, interleaved; medians)\n", submit_t.v.size());
    rate("roof: INSERT, default durability", ins_sync, sub_bytes);
    rate("roof: INSERT, synchronous_commit off", ins_async, sub_bytes);
    rate("roof: INSERT into an UNLOGGED table", ins_unlogged, sub_bytes);
    rate("gannf.submit (unlogged blobs)", submit_t, sub_bytes, roof_unlogged_mbs);
    std::printf("  %-44s %9s     = %3.0f%% of the default-durability INSERT\n", "", "",
                100 * (mb(sub_bytes) / submit_t.median()) / roof_sync_mbs);
    std::printf("  %-44s %9.1f ms  %7.1f GB/s\n", "CRC-32C of the gradients (client side)", 1e3 * crc_t.median(),
                mb(4 * (fake.g_grad.size() + fake.d_grad.size())) / 1e3 / crc_t.median());
    rate("roof: SELECT", select_t, weight_bytes);
    rate("fetch_weights (SELECT, checksums, decode)", fetch_t, weight_bytes, roof_sel_mbs);

    std::printf("\n## Latency (%zu rounds; medians)\n", claim_t.v.size());
    line("claim (one unit)", claim_t);
    line("heartbeat (extends the lease)", beat_t);
    line("release", release_t);
    line("NOTIFY wake-up: commit -> idle worker wakes", wake_t, "   [p90 below]");
    std::printf("  %-44s %9.1f ms\n", "  p90", 1e3 * wake_t.quantile(0.9));
    line("NOTIFY wake-up -> unit claimed", wake_claim_t);

    std::printf("\n## Coordinator: one iteration of %d submissions (%zu rounds; medians)\n", o.per_update,
                upd_total.v.size());
    line("fetch + validate the submissions", upd_fetch);
    line("aggregate + Adam + BN fold + publish + commit", upd_close);
    line("  of which: average gradients + Adam", upd_agg);
    line("  of which: write weights + Adam state", upd_pub);
    line("  of which: COMMIT (synchronous)", upd_commit);
    line("total", upd_total);

    const double db_unit = claim_t.median() + fetch_t.median() + submit_t.median();
    if (!unit_t.v.empty()) {
      std::printf("\n## A CPU worker's units (%d images, micro-batch %d, %d threads; %zu units in a row)\n",
                  o.unit_images, o.micro_batch, omp_get_max_threads(), unit_t.v.size());
      line("compute", unit_t);
      line("wall time per unit (claim to claim)", unit_wall);
      std::printf("  %-44s %9.1f ms  = %.1f%% of the wall time per unit\n",
                  "database on the critical path (measured)", 1e3 * unit_crit.median(),
                  100 * unit_crit.median() / unit_wall.median());
      std::printf("  %-44s %9.1f ms  = %.1f%% (were the upload not overlapped)\n",
                  "database in series: claim + fetch + submit", 1e3 * db_unit,
                  100 * db_unit / (db_unit + unit_t.median()));
    }

    // One server's ceiling, from the serial costs above: every unit is
    // submitted once and read once by the coordinator (fetch + validate, per
    // unit), every iteration is published once and downloaded by each worker.
    const double per_unit = submit_t.median() + upd_fetch.median() / o.per_update;
    std::printf("\n## One server's ceiling (a model from the medians above)\n");
    std::printf("  per unit: submit %.0f ms + coordinator fetch %.0f ms; per iteration: publish %.0f ms + "
                "each worker's download %.0f ms\n",
                1e3 * submit_t.median(), 1e3 * upd_fetch.median() / o.per_update, 1e3 * upd_close.median(),
                1e3 * fetch_t.median());
    for (int workers : {8, 30}) {
      const double iter = o.per_update * per_unit + upd_close.median() + workers * fetch_t.median();
      const double ups = o.per_update / iter;
      std::printf("  %2d workers, %d units per update: %.1f units/s = %.0f images/s, %.2f updates/s\n", workers,
                  o.per_update, ups, ups * o.unit_images, 1 / iter);
    }
    if (o.load_workers > 0) {
      std::printf("\n## One server's ceiling, measured (%d workers that only claim, download and submit, %.0f s)\n",
                  o.load_workers, o.load_seconds);
      std::printf("  %.2f updates/s = %.1f units/s used = %.0f images/s at %d per unit"
                  "  (%lld submissions accepted, %lld refused as late)\n",
                  load_updates_s, load_units_s, load_units_s * o.unit_images, o.unit_images,
                  (long long)load_accepted, (long long)load_refused);
    }
    std::printf("\nbench_db: all checks passed\n");
    admin.exec("DROP DATABASE IF EXISTS " + o.db + " WITH (FORCE)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_db: %s\n", e.what());
    return 1;
  }
  return 0;
}
