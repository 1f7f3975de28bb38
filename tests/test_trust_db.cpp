// Issue 12, the database's half (sql/0008_trust.sql, sql/roles.sql): one
// hostile student login, using only what its login may do, cannot freeze,
// starve or spam the run, exhaust the server, or deface what the instructor
// reads. Each test is one attack of the issue; docs/security.md maps them.
// Real PostgreSQL through the ctest fixture (pg_fixture.cmake); each test in
// a database of its own. Logins: gannf_coord (the service's user), workers
// trust_w1..2 admitted by gannf_admin.admit_student (roles.sql), the
// superuser for administration.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <sys/wait.h>

#include "blob.h"
#include "deadlock.h"
#include "migrate.h"
#include "test_cluster_harness.h"
#include "pg.h"
#include "protocol.h"
#include "sql_test.h"
#include "students.h"
#include "worker_fuzzer.h"

namespace {

using namespace gannf;
using cluster::ClaimedUnit;
using cluster::SubmitStatus;
using cluster::UnitResult;
using pg::Connection;
using pg::Params;
using Clock = std::chrono::steady_clock;
using test::sqlstate_of;
constexpr auto floats = test::random_floats;

constexpr uint64_t kHashG = 0x1234567890ABCDEFull, kHashD = 0xFEDCBA0987654321ull;
constexpr size_t kG = 1000, kGBn = 40, kD = 600, kDBn = 24;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

class Trust : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    db_ = "gt_trust_" + std::string(info->name());
    std::transform(db_.begin(), db_.end(), db_.begin(), [](unsigned char ch) {
      return std::isalnum(ch) ? (char)std::tolower(ch) : '_';
    });
    db_ = db_.substr(0, 60);
    admin_ = std::make_unique<Connection>("user=postgres dbname=postgres");
    admin_->on_notice({});
    admin_->exec("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
    admin_->exec("CREATE DATABASE " + db_ + " OWNER gannf_coord");
    coord_ = std::make_unique<Connection>("dbname=" + db_);
    cluster::migrate(*coord_);
    for (const char* w : {"trust_w1", "trust_w2"}) admit(w, 4);
  }

  void TearDown() override {
    coord_.reset();
    if (!HasFailure() && admin_) admin_->exec("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
  }

  // The instructor's one call per student (sql/roles.sql), as gannf_coord in
  // database gannf; roles belong to the whole server, so they serve here.
  // Tests run in parallel processes: two may admit the same login at once;
  // and StudentLoginHasAConnectionLimitThatLeavesRoomForTheCoordinator
  // fills the server's connection limits for a moment (53400 for a new
  // login then), unless `wait_for_room` is false (that test's own calls).
  void admit(const std::string& login, int limit, bool wait_for_room = true) {
    Connection c("dbname=gannf");
    Params p;
    p.add(login).add((int32_t)limit);
    for (int raced = 0, full = 0;;) {
      try {
        c.exec("SELECT gannf_admin.admit_student($1, NULL, $2)", p);
        return;
      } catch (const pg::Error& e) {
        const std::string st = e.sqlstate();
        if (wait_for_room && st == "53400" && ++full <= 50)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        else if ((st != "23505" && st != "42710" && st != "XX000") || ++raced > 3)
          throw;
      }
    }
  }

  Connection as(const std::string& login) { return Connection("user=" + login + " dbname=" + db_); }

  void start_run(int units, int per_unit = 16) {
    coord_->exec("INSERT INTO gannf.training_state (dataset_size, seed, lease) VALUES (60000, 42, '30 seconds')");
    publish(0);
    Params p;
    p.add((int32_t)units).add((int32_t)per_unit);
    coord_->exec("INSERT INTO gannf.work_units (epoch, first_index, sample_count, iteration) "
                 "SELECT 0, (i - 1) * $2, $2, 0 FROM generate_series(1, $1) i",
                 p);
  }

  void publish(int64_t iteration) {
    for (auto [net, hash, n, nbn] : {std::tuple{"G", kHashG, kG, kGBn}, std::tuple{"D", kHashD, kD, kDBn}}) {
      std::vector<float> w = floats(n, 1), bn = floats(nbn, 2);
      Params p;
      p.add(iteration).add(net).add((int64_t)hash).add((int64_t)n).floats(w).add((int64_t)cluster::blob_checksum(w))
          .add((int64_t)nbn).floats(bn).add((int64_t)cluster::blob_checksum(bn));
      coord_->exec("INSERT INTO gannf.weights (iteration, network, layout_hash, element_count, params, "
                   "params_checksum, bn_count, bn_running, bn_checksum) "
                   "VALUES ($1, $2::gannf.network, $3, $4, $5, $6, $7, $8, $9)",
                   p);
    }
  }

  void advance_clock(const std::string& by) {
    Params p;
    p.add(by);
    coord_->exec("UPDATE gannf.clock SET skew = skew + $1::interval", p);
  }

  void settings(const std::string& assignments) { coord_->exec("UPDATE gannf.trust_settings SET " + assignments); }

  // Units still open move to update k, whose weights are published; the
  // submitted units are done (as the coordinator's close leaves them).
  void next_update(int64_t k) {
    Params p;
    p.add(k);
    coord_->exec("UPDATE gannf.work_units SET state = 'done' WHERE state = 'submitted'");
    coord_->exec("UPDATE gannf.work_units SET state = 'available', taken_from = '{}', iteration = $1, "
                 "visible_at = '-infinity' WHERE state = 'available'",
                 p);
    publish(k);
    coord_->exec("UPDATE gannf.training_state SET iteration = $1", p);
  }

  // `units` (held by `worker` of connection c, ascending) as one summed
  // submission (sql/0017), each unit's BN statistics and losses in turn.
  cluster::SubmitOutcome submit_summed(Connection& c, int64_t worker, const std::vector<ClaimedUnit>& units) {
    const Result base;  // outlives r's views of it
    std::vector<float> gbn, dbn;
    int32_t images = 0;
    for (const ClaimedUnit& u : units) {
      gbn.insert(gbn.end(), base.gbn.begin(), base.gbn.end());
      dbn.insert(dbn.end(), base.dbn.begin(), base.dbn.end());
      images += u.sample_count;
    }
    UnitResult r = base.for_unit(units.at(0));
    r.sample_count = images;
    r.g.bn_stats = gbn;
    r.d.bn_stats = dbn;
    const std::vector<cluster::UnitLosses> losses(units.size(), cluster::UnitLosses{1.3f, 0.7f, 0.6f, 0.4f, 0.55f});
    return cluster::submit_summed(c, worker, units, r, losses);
  }

  // gannf.update_pace(k) in seconds per image, by claim or by unit.
  double pace(int64_t k, bool by_claim) {
    Params p;
    p.add(k).add(by_claim);
    return coord_->exec("SELECT extract(epoch FROM gannf.update_pace($1, $2))::float8", p).get<double>(0, 0);
  }

  // The coordinator's call while it waits for update k (sql/0022, 0023):
  // the units it took off as late.
  int64_t late(int64_t k = 0) {
    Params p;
    p.add(k);
    return coord_->exec("SELECT gannf.take_off_late($1)", p).get<int64_t>(0, 0);
  }

  // A correct result for unit u (one micro-batch): the protocol's own submit.
  struct Result {
    std::vector<float> g = floats(kG, 3), gbn = floats(kGBn, 4), d = floats(kD, 5), dbn = floats(2 * kDBn, 6);
    UnitResult for_unit(const ClaimedUnit& u) const {
      UnitResult r;
      r.sample_count = u.sample_count;
      r.g = {kHashG, g, gbn};
      r.d = {kHashD, d, dbn};
      r.loss_d = 1.3f, r.loss_g = 0.7f, r.d_real = 0.6f, r.d_fake = 0.4f, r.d_accuracy = 0.55f;
      r.compute_seconds = 1.0f;
      r.micro_batch = u.sample_count;
      return r;
    }
  };

  int64_t count(const std::string& sql) { return coord_->exec(sql).get<int64_t>(0, 0); }

  // Whether server process `pid` waits for a lock within `tries` × 10 ms.
  // Its own connection, outside any transaction: pg_stat_activity holds
  // still within one.
  bool waits_for_a_lock(int32_t pid, int tries) {
    Connection watch("dbname=" + db_);
    Params p;
    p.add(pid);
    for (int i = 0; i < tries; ++i) {
      if (watch.exec("SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity "
                     "WHERE pid = $1", p).get<bool>(0, 0))
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // The honest worker beside a fuzzed login: it claims a unit at one step
  // and submits it at a later one, as a gannf-worker does; every submission
  // must be accepted. Each step answers what went wrong, if anything.
  struct HonestWorker {
    Connection& c;
    int64_t id;
    std::optional<ClaimedUnit> unit{};
    int accepted = 0;
    std::optional<std::string> claim() {
      try {
        auto got = cluster::claim(c, id);
        if (!got.empty()) unit = got[0];
      } catch (const pg::Error& e) {
        return std::string("the honest worker's claim failed: ") + e.what();
      }
      return std::nullopt;
    }
    std::optional<std::string> submit() {
      if (!unit) return std::nullopt;
      try {
        const cluster::SubmitOutcome o = cluster::submit(c, id, *unit, Result{}.for_unit(*unit));
        unit.reset();
        if (o.status != SubmitStatus::Accepted) return std::string("the honest worker's submit was not accepted");
        ++accepted;
      } catch (const pg::Error& e) {
        return std::string("the honest worker's submit failed: ") + e.what();
      }
      return std::nullopt;
    }
  };

  // Four sessions, shared among `logins` in turn, making fuzzed calls at
  // once beside the honest worker and the coordinator (defined with the
  // fuzzer, below; ConcurrentCalls… tests).
  void concurrent_fuzz(const std::vector<std::string>& logins, uint64_t default_seed);

  std::string db_;
  std::unique_ptr<Connection> admin_, coord_;
};

// ------------------------------------------------------------------ freezes

// Issue: `BEGIN; SELECT * FROM gannf.submit(…iteration − 1…);` answered
// iteration_closed without an error and kept training_state FOR SHARE, so the
// coordinator could not close iterations while the transaction stayed open.
TEST_F(Trust, RefusedSubmitLeftInAnOpenTransactionHoldsNoLock) {
  start_run(2);
  Connection w = as("trust_w1");
  const int64_t id = cluster::register_worker(w, {.name = "freezer"});
  const ClaimedUnit u = cluster::claim(w, id).at(0);
  publish(1);
  coord_->exec("UPDATE gannf.training_state SET iteration = 1");
  w.exec("BEGIN");
  EXPECT_EQ(cluster::submit(w, id, u, Result{}.for_unit(u)).status, SubmitStatus::IterationClosed);
  // The worker keeps its transaction open. The coordinator's close takes the
  // state row FOR UPDATE and moves the units: neither may wait for it.
  coord_->exec("SET lock_timeout = '3s'");
  const auto t0 = Clock::now();
  pg::Transaction tx(*coord_);
  EXPECT_EQ(sqlstate_of([&] { coord_->exec("SELECT iteration FROM gannf.training_state FOR UPDATE"); }), "(no error)");
  EXPECT_EQ(sqlstate_of([&] { coord_->exec("UPDATE gannf.work_units SET iteration = 1 WHERE iteration = 0"); }),
            "(no error)");
  tx.commit();
  EXPECT_LT(seconds_since(t0), 2.0);
  w.exec("ROLLBACK");
}

// Refusals count (sql/0015). A submission the database refuses raises, which
// rolled back anything submit() recorded: a login was refused forever without
// a strike. Now each refusal advances a counter the abort does not undo —
// neither the client's ROLLBACK nor a transaction left open, which still
// holds nothing the coordinator waits for — and gannf.strike_refusals() turns
// it into strikes until the login is quarantined. Closed iterations (which
// honest workers meet) and accepted submissions count nothing.
TEST_F(Trust, RefusedSubmissionsCountAsStrikesEvenRolledBack) {
  start_run(8, 8);
  Connection bot = as("trust_w1"), honest = as("trust_w2");
  const int64_t b = cluster::register_worker(bot, {.name = "refused"});
  const int64_t h = cluster::register_worker(honest, {.name = "honest"});
  auto forged = [&](const ClaimedUnit& u) {
    UnitResult r = Result{}.for_unit(u);
    r.loss_d = 3e38f;
    return r;
  };
  auto strike_refusals = [&](const std::string& login) {
    pg::Result r = coord_->exec("SELECT login::text, refusals, quarantined FROM gannf.strike_refusals()");
    for (int i = 0; i < r.rows(); ++i) EXPECT_EQ(r.get<std::string>(i, 0), login);
    return r.rows() == 1 ? r.get<int64_t>(0, 1) : 0;
  };
  const ClaimedUnit u = cluster::claim(bot, b).at(0);
  // Refused inside a transaction the bot keeps open: the coordinator's count
  // and a strike on the login do not wait for it.
  bot.exec("BEGIN");
  EXPECT_EQ(sqlstate_of([&] { cluster::submit(bot, b, u, forged(u)); }), "22023");
  coord_->exec("SET lock_timeout = '3s'");
  auto t0 = Clock::now();
  EXPECT_EQ(strike_refusals("trust_w1"), 1);
  EXPECT_EQ(sqlstate_of([&] { coord_->exec("SELECT iteration FROM gannf.training_state FOR UPDATE"); }), "(no error)");
  EXPECT_LT(seconds_since(t0), 2.0);
  bot.exec("ROLLBACK");
  // Refused and rolled back by the client: counted all the same.
  bot.exec("BEGIN");
  EXPECT_EQ(sqlstate_of([&] { cluster::submit(bot, b, u, forged(u)); }), "22023");
  bot.exec("ROLLBACK");
  EXPECT_EQ(strike_refusals("trust_w1"), 1);
  EXPECT_EQ(count("SELECT strikes FROM gannf.login_trust WHERE login = 'trust_w1'"), 2);
  // An honest login's accepted submission and a closed iteration's refusal
  // count nothing.
  const ClaimedUnit hu = cluster::claim(honest, h).at(0);
  ASSERT_EQ(cluster::submit(honest, h, hu, Result{}.for_unit(hu)).status, SubmitStatus::Accepted);
  const ClaimedUnit late = cluster::claim(honest, h).at(0);
  publish(1);
  coord_->exec("UPDATE gannf.training_state SET iteration = 1");
  EXPECT_EQ(cluster::submit(honest, h, late, Result{}.for_unit(late)).status, SubmitStatus::IterationClosed);
  EXPECT_EQ(strike_refusals(""), 0);
  // Three more refusals (sizes this time) reach the threshold of 5.
  for (int k = 0; k < 3; ++k) {
    UnitResult r = forged(u);
    r.loss_d = 1.f;
    r.micro_batch = u.sample_count + 1;
    EXPECT_EQ(sqlstate_of([&] { cluster::submit(bot, b, u, r); }), "22023");
  }
  pg::Result q = coord_->exec("SELECT login::text, refusals, quarantined FROM gannf.strike_refusals()");
  ASSERT_EQ(q.rows(), 1);
  EXPECT_EQ(q.get<int64_t>(0, 1), 3);
  EXPECT_TRUE(q.get<bool>(0, 2));
  EXPECT_EQ(sqlstate_of([&] { cluster::claim(bot, b); }), cluster::sqlstate::kQuarantined);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login = 'trust_w2'"), 0);
}

// An accepted submit (it has to lock the state row) held open: the reaper
// ends the session, and the hold counts a strike.
TEST_F(Trust, AcceptedSubmitHeldOpenIsEndedByTheReaper) {
  start_run(2);
  settings("reap_idle_in_transaction = '1 second'");
  Connection w = as("trust_w1");
  w.exec("SET idle_in_transaction_session_timeout = 0");  // the login may: USERSET
  const int64_t id = cluster::register_worker(w, {.name = "holder"});
  const ClaimedUnit u = cluster::claim(w, id).at(0);
  w.exec("BEGIN");
  ASSERT_EQ(cluster::submit(w, id, u, Result{}.for_unit(u)).status, SubmitStatus::Accepted);
  const int pid = w.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  pg::Result r = coord_->exec("SELECT pid, login::text, why FROM gannf.reap()");
  ASSERT_EQ(r.rows(), 1);
  EXPECT_EQ(r.get<int32_t>(0, 0), pid);
  EXPECT_EQ(r.get<std::string>(0, 1), "trust_w1");
  EXPECT_NE(r.get<std::string>(0, 2).find("idle in a transaction"), std::string::npos) << r.get<std::string>(0, 2);
  coord_->exec("SET lock_timeout = '5s'");
  pg::Transaction tx(*coord_);
  EXPECT_EQ(sqlstate_of([&] { coord_->exec("SELECT iteration FROM gannf.training_state FOR UPDATE"); }), "(no error)");
  tx.commit();
  EXPECT_EQ(count("SELECT strikes FROM gannf.login_trust WHERE login = 'trust_w1'"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 0) << "the held submission never committed";
  bool lost = false;
  try {
    w.exec("SELECT 1");
  } catch (const pg::Error& e) {
    lost = e.connection_lost();
  }
  EXPECT_TRUE(lost) << "the session was ended";
}

// ------------------------------------------------------------------ starvation

// Issue: claim(id, 64) took every open unit (the only cap was per call).
TEST_F(Trust, ClaimsAreCappedPerLoginHeldAndPerIteration) {
  start_run(20);
  Connection a = as("trust_w1"), a2 = as("trust_w1"), b = as("trust_w2");
  const int64_t ia = cluster::register_worker(a, {.name = "greedy"});
  const int64_t ia2 = cluster::register_worker(a2, {.name = "greedy2"});
  const int64_t ib = cluster::register_worker(b, {.name = "fair"});
  auto got = cluster::claim(a, ia, 64);
  EXPECT_EQ(got.size(), 4u) << "max_held_units defaults to 4";
  EXPECT_TRUE(cluster::claim(a2, ia2, 64).empty()) << "the cap is the login's, not the worker's";
  EXPECT_EQ(cluster::claim(b, ib, 2).size(), 2u) << "the others still get units";

  settings("max_units_per_iteration = 5");
  ASSERT_EQ(cluster::submit(a, ia, got[0], Result{}.for_unit(got[0])).status, SubmitStatus::Accepted);
  EXPECT_EQ(cluster::claim(a, ia, 64).size(), 1u) << "4 held or submitted + 1 = the iteration's 5";
  EXPECT_TRUE(cluster::claim(a2, ia2, 1).empty());
  settings("max_units_per_iteration = NULL, max_held_units = 100");
  EXPECT_EQ(cluster::claim(a, ia, 64).size(), 13u) << "the instructor's settings apply at once";
}

// Issue: holding one unit and heartbeating it stalled every iteration.
TEST_F(Trust, HeartbeatedUnitIsReclaimedPastABoundFromTheWorkersSpeed) {
  start_run(3);
  settings("hold_floor = '1 second'");  // so that the measured speed decides
  Connection w = as("trust_w1"), other = as("trust_w2");
  const int64_t id = cluster::register_worker(w, {.name = "squatter"});
  const int64_t io = cluster::register_worker(other, {.name = "honest"});
  // The first unit in 8 s (16 images: 0.5 s per image, by the database's clock).
  const ClaimedUnit first = cluster::claim(w, id).at(0);
  advance_clock("8 seconds");
  ASSERT_EQ(cluster::submit(w, id, first, Result{}.for_unit(first)).status, SubmitStatus::Accepted);
  // The next may be held 4 × 16 × 0.5 s = 32 s, heartbeats or not.
  const ClaimedUnit held = cluster::claim(w, id).at(0);
  for (int k = 0; k < 3; ++k) {
    advance_clock("10 seconds");
    EXPECT_TRUE(cluster::heartbeat(w, id, held).has_value()) << "at " << 10 * (k + 1) << " s";
  }
  advance_clock("5 seconds");
  EXPECT_FALSE(cluster::heartbeat(w, id, held).has_value()) << "35 s > 32 s: the unit is taken back";
  auto taken = cluster::claim(other, io, 2);
  ASSERT_FALSE(taken.empty());
  EXPECT_EQ(taken[0].unit_id, held.unit_id) << "and served to another worker at once";
  EXPECT_EQ(cluster::submit(w, id, held, Result{}.for_unit(held)).status, SubmitStatus::NotHeld);
}

// sql/0025: the hold bound judged each unit of a claim by its own images,
// at a pace measured per unit. A worker summing 4 units (--sum-units 4:
// one claim, one upload) after units one at a time was allowed 4 × one
// unit's images × its pace: the time the claim takes, so it was taken
// back as it finished (the test fails at 40 s). And a summed claim's
// units each counted the claim's whole time against their own images, so
// its pace read 4× slower than it was, and its next single unit might be
// held 4× longer. A claim's units are now allowed hold_factor × the
// claim's images × the worker's time per image of a claim.
TEST_F(Trust, ASummedClaimIsHeldByItsImagesAtTheWorkersPacePerClaim) {
  start_run(12);
  settings("hold_floor = '1 second'");
  Connection w = as("trust_w1");
  const int64_t id = cluster::register_worker(w, {.name = "summer"});
  // One unit of 16 images in 8 s: 0.5 s per image.
  const ClaimedUnit first = cluster::claim(w, id).at(0);
  advance_clock("8 seconds");
  ASSERT_EQ(cluster::submit(w, id, first, Result{}.for_unit(first)).status, SubmitStatus::Accepted);
  // Four at once: 64 images, 32 s at its pace; allowed 4 × 32 s.
  const auto four = cluster::claim(w, id, 4);
  ASSERT_EQ(four.size(), 4u);
  for (int k = 0; k < 4; ++k) {
    advance_clock("10 seconds");
    for (const ClaimedUnit& u : four)
      ASSERT_TRUE(cluster::heartbeat(w, id, u).has_value()) << "unit " << u.unit_id << " at " << 10 * (k + 1) << " s";
  }
  advance_clock("80 seconds");  // 120 s
  for (const ClaimedUnit& u : four) EXPECT_TRUE(cluster::heartbeat(w, id, u).has_value()) << "at 120 s of 128";
  advance_clock("10 seconds");  // 130 s
  EXPECT_FALSE(cluster::heartbeat(w, id, four[0]).has_value()) << "past 128 s";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_taken WHERE login = 'trust_w1' AND bound BETWEEN '127 s' AND '130 s'"), 1)
      << "4 × 64 images × 0.5 s (and the milliseconds the test took)";
  for (size_t i = 1; i < four.size(); ++i) EXPECT_FALSE(cluster::heartbeat(w, id, four[i]).has_value());
  next_update(1);  // as the coordinator: the units not in move on

  // Its pace per image of a claim stays 0.5 s after a summed claim of 4 in
  // 32 s: its next unit alone is allowed 4 × 16 × 0.5 s = 32 s, not 128.
  // (Taken off, it holds one unit until one is accepted, 0021: 8 s.)
  const ClaimedUnit single = cluster::claim(w, id, 4).at(0);
  advance_clock("8 seconds");
  ASSERT_EQ(cluster::submit(w, id, single, Result{}.for_unit(single)).status, SubmitStatus::Accepted);
  const auto again = cluster::claim(w, id, 4);
  ASSERT_EQ(again.size(), 4u);
  advance_clock("32 seconds");
  ASSERT_EQ(submit_summed(w, id, again).status, SubmitStatus::Accepted);
  const ClaimedUnit one = cluster::claim(w, id).at(0);
  advance_clock("30 seconds");
  EXPECT_TRUE(cluster::heartbeat(w, id, one).has_value());
  advance_clock("3 seconds");
  EXPECT_FALSE(cluster::heartbeat(w, id, one).has_value()) << "past 4 × 16 × 0.5 s = 32 s";
}

// docs/security.md, "Holding units": a unit taken off its holder -- by the
// hold bound, by a lease that passed, or by an update that closed without it
// (the quorum; the coordinator's gannf.carry_over) -- was the lowest-id
// unit, so the holder's next claim got it back, and its images waited again
// for as long as the holder cared to hold them. It now goes to another login
// while one is present; to the holder's own login only when none is (so a
// class of one still finishes). Each of the three ways, in turn.
TEST_F(Trust, AUnitTakenOffItsHolderIsNotServedBackToIt) {
  start_run(3);
  settings("hold_floor = '1 second', hold_default_per_image = '0.1 seconds'");  // 4 × 16 × 0.1 s = 6.4 s
  Connection h = as("trust_w1"), o = as("trust_w2");
  const int64_t ih = cluster::register_worker(h, {.name = "holder"});
  const int64_t io = cluster::register_worker(o, {.name = "honest"});

  // The hold bound.
  const ClaimedUnit first = cluster::claim(h, ih).at(0);
  advance_clock("7 seconds");
  ASSERT_FALSE(cluster::heartbeat(h, ih, first).has_value()) << "7 s > 6.4 s: the unit is taken back";
  const ClaimedUnit second = cluster::claim(h, ih).at(0);
  EXPECT_NE(second.unit_id, first.unit_id) << "the holder got back the unit the hold bound took off it";
  const ClaimedUnit o1 = cluster::claim(o, io).at(0);
  EXPECT_EQ(o1.unit_id, first.unit_id) << "another login gets it";
  ASSERT_EQ(cluster::submit(o, io, o1, Result{}.for_unit(o1)).status, SubmitStatus::Accepted);

  // A lease that passed (30 s): no heartbeats.
  advance_clock("31 seconds");
  cluster::heartbeat(o, io);  // the honest worker is still there
  const auto third = cluster::claim(h, ih);
  for (const ClaimedUnit& u : third) EXPECT_NE(u.unit_id, second.unit_id) << "its lapsed unit came back to it";
  const ClaimedUnit o2 = cluster::claim(o, io).at(0);
  EXPECT_EQ(o2.unit_id, second.unit_id);
  ASSERT_EQ(third.size(), 1u);
  ASSERT_EQ(cluster::submit(o, io, o2, Result{}.for_unit(o2)).status, SubmitStatus::Accepted);

  // An update closed without it: the coordinator serves it again in the next.
  Params k;
  k.add((int64_t)0);
  EXPECT_EQ(coord_->exec("SELECT gannf.carry_over($1)", k).get<int64_t>(0, 0), 1);
  coord_->exec("UPDATE gannf.training_state SET iteration = 1");
  EXPECT_TRUE(cluster::claim(h, ih).empty()) << "the holder got back the unit the quorum took off it";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE iteration = 1 AND taken_from = '{trust_w1}' "
                  "AND state = 'available'"),
            1);

  // With no other login present, the holder's login may take it: the class
  // is not left without anyone allowed to compute it.
  coord_->exec("SELECT gannf.strike('trust_w2', 'test', 100)");  // quarantined: it cannot claim, so it does not count
  const auto alone = cluster::claim(h, ih);
  ASSERT_EQ(alone.size(), 1u);
  EXPECT_EQ(alone[0].unit_id, third[0].unit_id);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE taken_from <> '{}'"), 3);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_taken WHERE login = 'trust_w1'"), 1);
}

// sql/0022: a login holding more units than the quorum can do without (2 of
// 4) held each update for the hold bound -- for a login that never
// submitted, 4 × 1 s per image. The coordinator's take_off_late() takes a
// unit off once it is held 4 × the update's median time per image (the
// lower median) × its images, at least late_floor; nothing before a unit of
// the update is in.
TEST_F(Trust, UnitsHeldFarLongerThanTheUpdatesOthersAreTakenOff) {
  start_run(5);
  settings("late_floor = '2 seconds'");
  Connection h = as("trust_w1"), o = as("trust_w2");
  const int64_t ih = cluster::register_worker(h, {.name = "holder"});
  const int64_t io = cluster::register_worker(o, {.name = "honest"});
  const auto held = cluster::claim(h, ih, 2);
  ASSERT_EQ(held.size(), 2u);
  const ClaimedUnit slow = cluster::claim(o, io).at(0);
  advance_clock("10 seconds");
  EXPECT_EQ(late(), 0) << "nothing of the update is in: the hold bound alone decides";
  ASSERT_EQ(cluster::submit(o, io, slow, Result{}.for_unit(slow)).status, SubmitStatus::Accepted);  // 10 s
  const ClaimedUnit fast = cluster::claim(o, io).at(0);
  advance_clock("1 second");
  ASSERT_EQ(cluster::submit(o, io, fast, Result{}.for_unit(fast)).status, SubmitStatus::Accepted);  // 1 s
  // Lower median 1 s per 16 images: late after 4 × 1 s = 4 s. The holder's
  // two (11 s) are late; a unit claimed just now is not.
  const ClaimedUnit fresh = cluster::claim(o, io).at(0);
  EXPECT_EQ(late(), 2);
  EXPECT_FALSE(cluster::heartbeat(h, ih, held[0]).has_value());
  EXPECT_FALSE(cluster::heartbeat(h, ih, held[1]).has_value());
  EXPECT_TRUE(cluster::heartbeat(o, io, fresh).has_value());
  EXPECT_TRUE(cluster::claim(h, ih, 2).empty()) << "taken off the holder: not served back to it (0021)";
  const auto again = cluster::claim(o, io, 2);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].unit_id, held[0].unit_id);
  EXPECT_EQ(again[1].unit_id, held[1].unit_id);
  advance_clock("3 seconds");
  EXPECT_EQ(late(), 0) << "3 s < 4 s";
  advance_clock("2 seconds");
  EXPECT_EQ(late(), 1) << "the honest worker's one unit too, once it is as late: no one is spared";
  advance_clock("3.5 seconds");
  EXPECT_EQ(late(), 2) << "its claim of two units, 32 images, once past 8 s (sql/0023)";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust"), 0) << "no strike";
}

// sql/0023: a claim of several units (gannf-worker --sum-units 4: one summed
// upload) holds each of them for the time of all. 0022 judged each unit by
// its own images, so an honest worker summing 4 units beside workers that
// send one at a time was late at 4 × one unit's time, just as it finished.
// Now a unit is late past hold_factor × its claim's images × the pace, and
// the pace of a submitted unit is its claim's time per image of the whole
// claim; the claim's units are taken off together.
TEST_F(Trust, AClaimOfSeveralUnitsIsLateByTheImagesOfTheWholeClaim) {
  start_run(8);
  settings("late_floor = '1 second'");
  Connection s = as("trust_w1"), o = as("trust_w2");
  const int64_t is = cluster::register_worker(s, {.name = "summer"});
  const int64_t io = cluster::register_worker(o, {.name = "single"});
  const auto sum = cluster::claim(s, is, 4);
  ASSERT_EQ(sum.size(), 4u);
  for (int k = 0; k < 2; ++k) {  // one unit of 16 images a second
    const ClaimedUnit u = cluster::claim(o, io).at(0);
    advance_clock("1 second");
    ASSERT_EQ(cluster::submit(o, io, u, Result{}.for_unit(u)).status, SubmitStatus::Accepted);
  }
  // The summer at the same speed needs 4 s for its 64 images; 0022 allowed
  // each of its units 4 × 16 × 1/16 s = 4 s.
  advance_clock("4.5 seconds");  // 6.5 s held
  EXPECT_EQ(late(), 0) << "a summed claim is allowed 4 × 64 × 1/16 s = 16 s";
  // Its summed upload would be accepted here; held on instead, it is late
  // once past 16 s, all four units at once.
  advance_clock("9 seconds");  // 15.5 s
  EXPECT_EQ(late(), 0);
  advance_clock("1 second");  // 16.5 s
  EXPECT_EQ(late(), 4) << "the claim's units together";
  for (const ClaimedUnit& u : sum) EXPECT_FALSE(cluster::heartbeat(s, is, u).has_value());

  // Once it has its cap back, its summed claim of 4 units is in after 4 s:
  // the update's pace per image of a claim is 1/16 s (as the single
  // worker's), per image of a unit 4/16 s (what a claim took, per unit).
  const auto again = cluster::claim(s, is, 4);
  ASSERT_EQ(again.size(), 1u) << "taken off: one unit at a time (0021)";
  ASSERT_EQ(cluster::submit(s, is, again[0], Result{}.for_unit(again[0])).status, SubmitStatus::Accepted);
  next_update(1);
  const auto four = cluster::claim(s, is, 4);
  ASSERT_EQ(four.size(), 4u);
  const ClaimedUnit one = cluster::claim(o, io).at(0);
  advance_clock("4 seconds");
  ASSERT_EQ(submit_summed(s, is, four).status, SubmitStatus::Accepted);
  EXPECT_NEAR(pace(1, true), 1.0 / 16, 0.002) << "4 s for the claim's 64 images";
  EXPECT_NEAR(pace(1, false), 4.0 / 16, 0.002) << "4 s for each unit's 16";
  advance_clock("1 second");
  EXPECT_EQ(late(1), 0) << "the single worker's unit at 5 s: the update's claim took 4 s, so 16 s are allowed";
  EXPECT_TRUE(cluster::heartbeat(o, io, one).has_value());
}

// sql/0023: with the coordinator's units per claim (--sum-units auto, 0018)
// a machine 4× faster than another claims 4 units to its 1, so that both
// claims take as long. The median time per image of a claim is then the
// fast machine's, and judged by it alone the slow machine's one unit was
// late at a quarter of its time (the test fails so). A unit may also take
// hold_factor × what the update's claims took (0022's measure), and it is
// late only past the greater of the two.
TEST_F(Trust, AClaimAsLongAsTheOthersIsNotLateWhateverItsImages) {
  start_run(8);
  settings("late_floor = '1 second'");
  Connection f = as("trust_w1"), sl = as("trust_w2");
  const int64_t iff = cluster::register_worker(f, {.name = "fast"});
  const int64_t isl = cluster::register_worker(sl, {.name = "slow"});
  const auto four = cluster::claim(f, iff, 4);
  ASSERT_EQ(four.size(), 4u);
  const ClaimedUnit one = cluster::claim(sl, isl).at(0);
  advance_clock("4 seconds");
  ASSERT_EQ(submit_summed(f, iff, four).status, SubmitStatus::Accepted);  // 64 images in 4 s
  advance_clock("2 seconds");  // the slow machine's 16 images: 6 s so far
  EXPECT_EQ(late(), 0) << "4 × 16 × 1/16 s = 4 s by the claims' pace per image, but 4 × the 4 s a claim took";
  advance_clock("9 seconds");  // 15 s
  EXPECT_EQ(late(), 0);
  advance_clock("1.5 seconds");  // 16.5 s
  EXPECT_EQ(late(), 1);
  EXPECT_FALSE(cluster::heartbeat(sl, isl, one).has_value());
}

// sql/0023: nothing was late before a unit of the update was in, so a login
// that claimed every unit of an update the moment it was made (the cap, 4,
// is the default update's 4 units) held it for the hold bound: 2 minutes,
// 17 for a login that never submitted. Until a unit of the update is in, the
// pace is the latest earlier update's.
TEST_F(Trust, AClaimOfAWholeUpdateIsLateByThePaceOfTheUpdateBefore) {
  start_run(2);
  settings("late_floor = '1 second'");
  Connection h = as("trust_w1"), o = as("trust_w2");
  const int64_t ih = cluster::register_worker(h, {.name = "grabber"});
  const int64_t io = cluster::register_worker(o, {.name = "honest"});
  const auto first = cluster::claim(h, ih, 4);
  ASSERT_EQ(first.size(), 2u) << "both units of update 0";
  advance_clock("60 seconds");
  EXPECT_EQ(late(0), 0) << "no update has a pace yet: the hold bound decides";
  for (const ClaimedUnit& u : first) EXPECT_TRUE(cluster::heartbeat(h, ih, u).has_value()) << "within the hold bound";
  for (const ClaimedUnit& u : first) ASSERT_EQ(cluster::submit(h, ih, u, Result{}.for_unit(u)).status, SubmitStatus::Accepted);
  // Update 0: the grabber's claim of 32 images took 60 s. Update 1 is made;
  // the honest worker computes one update's unit of 16 in 1 s...
  coord_->exec("UPDATE gannf.work_units SET state = 'done'");
  coord_->exec("INSERT INTO gannf.work_units (epoch, first_index, sample_count, iteration) "
               "SELECT 0, 32 + (i - 1) * 16, 16, 1 FROM generate_series(1, 4) i");
  publish(1);
  coord_->exec("UPDATE gannf.training_state SET iteration = 1");
  const ClaimedUnit u1 = cluster::claim(o, io).at(0);
  advance_clock("1 second");
  ASSERT_EQ(cluster::submit(o, io, u1, Result{}.for_unit(u1)).status, SubmitStatus::Accepted);
  coord_->exec("UPDATE gannf.work_units SET state = 'done' WHERE state = 'submitted'");
  coord_->exec("INSERT INTO gannf.work_units (epoch, first_index, sample_count, iteration) "
               "SELECT 0, 96 + (i - 1) * 16, 16, 2 FROM generate_series(1, 4) i");
  coord_->exec("UPDATE gannf.work_units SET iteration = 2 WHERE iteration = 1 AND state = 'available'");
  publish(2);
  coord_->exec("UPDATE gannf.training_state SET iteration = 2");
  // ... and the grabber takes every unit it may of update 2 at once, the
  // honest worker one.
  const auto grab = cluster::claim(h, ih, 4);
  ASSERT_EQ(grab.size(), 4u);
  const ClaimedUnit mine = cluster::claim(o, io).at(0);
  advance_clock("15 seconds");
  EXPECT_EQ(late(2), 0) << "update 1's pace, 1/16 s per image: a claim of 64 images may take 16 s";
  advance_clock("2 seconds");
  EXPECT_EQ(late(2), 4) << "nothing of update 2 is in, and its units are late by update 1's pace";
  EXPECT_TRUE(cluster::heartbeat(o, io, mine).has_value())
      << "a login holding one unit is not judged by an earlier update's pace while units are left to claim "
         "(the class may have changed; sql/0026)";
  EXPECT_EQ(cluster::claim(o, io, 4).size(), 3u) << "and the honest worker has the grabber's";
}

// sql/0026: as many logins as an update has units, each claiming one the
// moment it was made and never submitting, held the update for the hold
// bound (0023 judged only logins holding several units by the last
// update's pace), and once taken off they could claim the units back from
// one another. Now, while nothing of the update is in and nothing is left
// to claim, a unit never taken off anyone is judged by the last update's
// pace whoever holds it (once per unit: the class may have slowed down),
// and a login a unit was taken off gives way to the others for
// held_claim_delay before it claims.
TEST_F(Trust, LoginsHoldingAWholeUpdateBetweenThemAreLateByTheLastUpdatesPace) {
  start_run(8);
  settings("late_floor = '1 second'");
  for (const char* l : {"trust_w3", "trust_w4", "trust_w5"}) admit(l, 4);
  Connection hon = as("trust_w1");
  const int64_t ih = cluster::register_worker(hon, {.name = "honest"});
  // Update 0: four units of 16 images, 1 s each.
  for (int k = 0; k < 4; ++k) {
    const ClaimedUnit u = cluster::claim(hon, ih).at(0);
    advance_clock("1 second");
    ASSERT_EQ(cluster::submit(hon, ih, u, Result{}.for_unit(u)).status, SubmitStatus::Accepted);
  }
  next_update(1);
  // Update 1's four units, one to each of four colluding logins.
  struct Colluder {
    Connection c;
    int64_t id = 0;
    ClaimedUnit u;
  };
  std::vector<Colluder> col;
  for (const char* l : {"trust_w2", "trust_w3", "trust_w4", "trust_w5"}) {
    col.push_back(Colluder{as(l), 0, ClaimedUnit{}});
    col.back().id = cluster::register_worker(col.back().c, {.name = "colluder"});
    col.back().u = cluster::claim(col.back().c, col.back().id).at(0);
  }
  advance_clock("3.5 seconds");
  EXPECT_EQ(late(1), 0) << "update 0's pace: 16 images may take 4 × 16 × 1/16 s = 4 s";
  advance_clock("1 second");
  EXPECT_EQ(late(1), 4) << "before sql/0026 none: each login holds one unit (the test fails so)";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.monitor_logins WHERE held_to_one AND taken_why = 'late'"), 4);

  // Taken off, they give way: for held_claim_delay (2 s) a unit that became
  // claimable goes only to a login that is not held to one unit.
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_taken WHERE gannf.gives_way(login)"), 4);
  for (Colluder& c : col) EXPECT_TRUE(cluster::claim(c.c, c.id).empty()) << "it gives way for 2 s";
  const ClaimedUnit mine = cluster::claim(hon, ih).at(0);
  advance_clock("2 seconds");
  std::vector<ClaimedUnit> theirs;
  for (Colluder& c : col)
    for (const ClaimedUnit& u : cluster::claim(c.c, c.id)) {
      EXPECT_NE(u.unit_id, c.u.unit_id) << "not the unit taken off it (0021)";
      theirs.push_back(u);
    }
  EXPECT_EQ(theirs.size(), 3u) << "what the class left, after 2 s";
  // Every unit of update 1 is held again, none is in, but each was taken
  // off someone once: judged by the last update's pace no more.
  advance_clock("10 seconds");
  EXPECT_EQ(late(1), 0) << "once per unit (a class that slowed down loses one round, not every round)";
  ASSERT_EQ(cluster::submit(hon, ih, mine, Result{}.for_unit(mine)).status, SubmitStatus::Accepted);
  advance_clock("31 seconds");  // held 41 s; update 1's own pace: 12 s per 16 images, 4 × that = 48 s
  EXPECT_EQ(late(1), 0);
  advance_clock("8 seconds");
  EXPECT_EQ(late(1), 3) << "once a unit of the update is in, its own pace judges every holder";

  // The next update: they still give way (no submission of theirs accepted).
  next_update(2);
  for (Colluder& c : col) EXPECT_TRUE(cluster::claim(c.c, c.id).empty());
  EXPECT_EQ(cluster::claim(hon, ih).size(), 1u);
  // With nobody present who does not wait, nobody gives way.
  advance_clock("91 seconds");
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_taken WHERE gannf.gives_way(login)"), 0)
      << "the honest worker was last seen 91 s ago";
  // Nor 5 minutes (held_give_way_for) after its last take-off: an honest
  // laptop that was late once is not kept from work for the class while
  // idle faster machines take every unit within 2 s. (The last take-offs
  // were 91 s and 142 s ago.)
  cluster::heartbeat(hon, ih);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_taken WHERE gannf.gives_way(login)"), 4);
  advance_clock("300 seconds");
  cluster::heartbeat(hon, ih);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_taken WHERE gannf.gives_way(login)"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.monitor_logins WHERE held_to_one"), 4) << "still one unit at a time";
}

// sql/0031: the first update of a run has no pace of the class's machines
// (0023, 0026 judge by the update's own or the last update's), so a login
// that claimed all of it the moment it was made and never submitted held
// the run for the hold bound or the lease: 315 s for 100 updates, against
// 10 s alone, in a claim flood. Now, before any unit of the run is in, the
// pace per image of a unit is the coordinator's own time per image
// (training_state.coordinator_pace, which gannf-coord run measures) ×
// first_pace_slack, a unit is judged by its own images (not its claim's),
// and the bound is at least first_late_floor.
TEST_F(Trust, AWholeFirstUpdateHeldIsLateByTheCoordinatorsOwnPace) {
  start_run(4);
  settings("late_floor = '1 second', first_late_floor = '2 seconds'");
  Connection h = as("trust_w1"), o = as("trust_w2");
  const int64_t ih = cluster::register_worker(h, {.name = "grabber"});
  const int64_t io = cluster::register_worker(o, {.name = "honest"});
  const auto grab = cluster::claim(h, ih, 4);
  ASSERT_EQ(grab.size(), 4u) << "the whole first update";
  advance_clock("2.5 seconds");
  EXPECT_EQ(late(0), 0) << "no pace was measured: the hold bound and the lease decide, as before sql/0031";
  // 10 ms an image on the coordinator's CPU: 5 × that, 0.05 s an image,
  // for the class; each unit of 16 images may take 4 × 16 × 0.05 = 3.2 s,
  // the claim of 64 no longer.
  coord_->exec("UPDATE gannf.training_state SET coordinator_pace = '10 milliseconds'");
  EXPECT_NEAR(pace(0, false), 0.05, 1e-9);
  EXPECT_EQ(count("SELECT (gannf.update_pace(0, true) IS NULL)::int"), 1) << "no pace per image of a claim";
  advance_clock("0.6 seconds");
  EXPECT_EQ(late(0), 0) << "held 3.1 s of 3.2";
  advance_clock("0.2 seconds");
  EXPECT_EQ(late(0), 4) << "held 3.3 s: the grabber's whole claim, each unit by its own images";
  for (const ClaimedUnit& u : grab) EXPECT_FALSE(cluster::heartbeat(h, ih, u).has_value());
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_taken WHERE login = 'trust_w1' AND why = 'late' "
                  "AND bound = '3.2 seconds'"),
            1);
  EXPECT_TRUE(cluster::claim(h, ih, 4).empty()) << "taken off the grabber: not served back to it (0021)";
  const ClaimedUnit mine = cluster::claim(o, io).at(0);
  advance_clock("14 seconds");
  EXPECT_EQ(late(0), 0) << "a login holding one unit, with units left to claim, is not judged by a pace not "
                           "the update's own (0023, 0026): 14 s against 3.2";
  ASSERT_EQ(cluster::submit(o, io, mine, Result{}.for_unit(mine)).status, SubmitStatus::Accepted);
  EXPECT_NEAR(pace(0, false), 14.0 / 16, 0.002) << "the update's own pace from its first unit in";
  coord_->exec("UPDATE gannf.training_state SET coordinator_pace = '1 microsecond'");
  EXPECT_NEAR(pace(0, false), 14.0 / 16, 0.002) << "the coordinator's pace only where the class has none";
}

// sql/0031 with 0026: as many logins as the first update has units, one
// unit each, are late by the coordinator's pace (every unit held, none in),
// and not before first_late_floor, however fast the coordinator is.
TEST_F(Trust, LoginsHoldingTheWholeFirstUpdateBetweenThemAreLateByTheCoordinatorsPace) {
  start_run(4);
  settings("late_floor = '1 second', first_late_floor = '2 seconds'");
  for (const char* l : {"trust_w3", "trust_w4", "trust_w5"}) admit(l, 4);
  coord_->exec("UPDATE gannf.training_state SET coordinator_pace = '1 microsecond'");
  std::vector<Connection> cs;
  std::vector<std::pair<int64_t, ClaimedUnit>> held;
  for (const char* l : {"trust_w2", "trust_w3", "trust_w4", "trust_w5"}) {
    cs.push_back(as(l));
    const int64_t id = cluster::register_worker(cs.back(), {.name = "colluder"});
    held.emplace_back(id, cluster::claim(cs.back(), id).at(0));
  }
  advance_clock("1.5 seconds");
  EXPECT_EQ(late(0), 0) << "late_floor (1 s) is past, first_late_floor (2 s) not";
  advance_clock("0.6 seconds");
  EXPECT_EQ(late(0), 4) << "every unit held, none in: each colluder's one unit";
  for (size_t i = 0; i < held.size(); ++i)
    EXPECT_FALSE(cluster::heartbeat(cs[i], held[i].first, held[i].second).has_value());
  EXPECT_EQ(count("SELECT count(*) FROM gannf.monitor_logins WHERE held_to_one AND taken_why = 'late'"), 4);
}

// sql/0023: what was taken off a login, and why, is what the class sees
// (monitor_logins: the dashboard's and every login's); the worker reads its
// own row to tell its student. Each reason in turn.
TEST_F(Trust, WhatWasTakenOffALoginAndWhyIsSeen) {
  start_run(8);
  settings("hold_floor = '1 second', hold_default_per_image = '0.1 seconds', late_floor = '1 second'");
  Connection h = as("trust_w1"), o = as("trust_w2");
  const int64_t ih = cluster::register_worker(h, {.name = "holder"});
  const int64_t io = cluster::register_worker(o, {.name = "honest"});
  auto row = [&](Connection& c, const std::string& login) {
    Params p;
    p.add(login);
    return c.exec("SELECT units_taken, taken_why, extract(epoch FROM taken_bound)::float8, held_to_one, strikes, "
                  "quarantined FROM gannf.monitor_logins WHERE login = $1",
                  p);
  };
  EXPECT_EQ(row(h, "trust_w1").rows(), 0) << "nothing taken off, no strike: not listed";

  // The hold bound: 4 × 16 × 0.1 s = 6.4 s.
  const ClaimedUnit a = cluster::claim(h, ih).at(0);
  advance_clock("7 seconds");
  ASSERT_FALSE(cluster::heartbeat(h, ih, a).has_value());
  {
    pg::Result r = row(o, "trust_w1");  // another login reads it too
    ASSERT_EQ(r.rows(), 1);
    EXPECT_EQ(r.get<int64_t>(0, 0), 1);
    EXPECT_EQ(r.get<std::string>(0, 1), "hold bound");
    EXPECT_NEAR(r.get<double>(0, 2), 6.4, 1e-6);
    EXPECT_TRUE(r.get<bool>(0, 3));
    EXPECT_EQ(r.get<int32_t>(0, 4), 0);
    EXPECT_FALSE(r.get<bool>(0, 5));
  }
  // A lease that passed (30 s), taken over by another login's claim.
  const ClaimedUnit b = cluster::claim(h, ih).at(0);
  advance_clock("31 seconds");
  cluster::heartbeat(o, io);
  const auto over = cluster::claim(o, io, 4);
  ASSERT_FALSE(over.empty());
  EXPECT_EQ(over[0].unit_id, std::min(a.unit_id, b.unit_id));
  {
    pg::Result r = row(h, "trust_w1");
    EXPECT_EQ(r.get<int64_t>(0, 0), 2);
    EXPECT_EQ(r.get<std::string>(0, 1), "lease");
    EXPECT_TRUE(r.is_null(0, 2));
  }
  for (const ClaimedUnit& u : over) ASSERT_EQ(cluster::submit(o, io, u, Result{}.for_unit(u)).status, SubmitStatus::Accepted);
  // Late: the update's pace is 0 s per image (submitted as claimed), so the
  // floor, 1 s.
  const ClaimedUnit c = cluster::claim(h, ih).at(0);
  advance_clock("2 seconds");
  Params k;
  k.add((int64_t)0);
  pg::Result named = coord_->exec("SELECT login, units, bound_seconds FROM gannf.take_off_late_logins($1)", k);
  ASSERT_EQ(named.rows(), 1);
  EXPECT_EQ(named.get<std::string>(0, 0), "trust_w1");
  EXPECT_EQ(named.get<int64_t>(0, 1), 1);
  EXPECT_DOUBLE_EQ(named.get<double>(0, 2), 1.0);
  {
    pg::Result r = row(h, "trust_w1");
    EXPECT_EQ(r.get<int64_t>(0, 0), 3);
    EXPECT_EQ(r.get<std::string>(0, 1), "late");
    EXPECT_DOUBLE_EQ(r.get<double>(0, 2), 1.0);
  }
  // Closed at the quorum: the coordinator carries an update's open units
  // into the next, a claimed one taken off its holder.
  const ClaimedUnit d = cluster::claim(h, ih).at(0);
  EXPECT_NE(d.unit_id, c.unit_id);
  EXPECT_EQ(coord_->exec("SELECT gannf.carry_over($1)", k).get<int64_t>(0, 0) > 0, true);
  {
    pg::Result r = row(h, "trust_w1");
    EXPECT_EQ(r.get<int64_t>(0, 0), 4);
    EXPECT_EQ(r.get<std::string>(0, 1), "closed");
    EXPECT_TRUE(r.get<bool>(0, 3));
  }
  EXPECT_EQ(row(o, "trust_w2").rows(), 0) << "the honest login lost nothing";
  // A submission accepted: the login has its cap back, and the count stays.
  publish(1);
  coord_->exec("UPDATE gannf.training_state SET iteration = 1");
  cluster::heartbeat(o, io);
  coord_->exec("SELECT gannf.strike('trust_w2', 'test', 100)");  // the holder alone may take its units back
  const auto mine = cluster::claim(h, ih, 4);
  ASSERT_EQ(mine.size(), 1u);
  ASSERT_EQ(cluster::submit(h, ih, mine[0], Result{}.for_unit(mine[0])).status, SubmitStatus::Accepted);
  pg::Result r = row(h, "trust_w1");
  EXPECT_EQ(r.get<int64_t>(0, 0), 4);
  EXPECT_FALSE(r.get<bool>(0, 3));
  pg::Result q = row(h, "trust_w2");
  ASSERT_EQ(q.rows(), 1) << "a login with strikes is listed as before";
  EXPECT_EQ(q.get<int64_t>(0, 0), 0);
  EXPECT_TRUE(q.get<bool>(0, 5));
}

// sql/0021: a login a unit was taken off holds one unit at a time until a
// submission of it is accepted, so a holder of several units at once is down
// to one after the first time; the quorum's grace covers one.
TEST_F(Trust, ALoginAUnitWasTakenOffHoldsOneUnitUntilItsNextSubmission) {
  start_run(8);
  // The claim of 2 units of 16 images: 4 × 32 × 0.1 s = 12.8 s (sql/0025).
  settings("hold_floor = '1 second', hold_default_per_image = '0.1 seconds'");
  Connection h = as("trust_w1"), o = as("trust_w2");
  const int64_t ih = cluster::register_worker(h, {.name = "holder"});
  cluster::register_worker(o, {.name = "honest"});  // present: the units taken off the holder are not its
  const auto held = cluster::claim(h, ih, 2);
  ASSERT_EQ(held.size(), 2u) << "the login's cap is 4";
  advance_clock("13 seconds");
  for (const ClaimedUnit& u : held) ASSERT_FALSE(cluster::heartbeat(h, ih, u).has_value());
  const auto one = cluster::claim(h, ih, 4);
  ASSERT_EQ(one.size(), 1u) << "taken off: one unit at a time";
  EXPECT_TRUE(cluster::claim(h, ih, 4).empty()) << "it holds one";
  ASSERT_EQ(cluster::submit(h, ih, one[0], Result{}.for_unit(one[0])).status, SubmitStatus::Accepted);
  EXPECT_EQ(cluster::claim(h, ih, 4).size(), 4u) << "a submission accepted since: its cap again";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_taken"), 1);
}

// Issue: 20 000 registrations in 1.4 s made status report "20002 workers active".
TEST_F(Trust, RegistrationsAreCappedPerLogin) {
  settings("max_workers_per_login = 3");
  Connection w = as("trust_w1");
  for (int k = 0; k < 3; ++k) cluster::register_worker(w, {.name = "m" + std::to_string(k)});
  EXPECT_EQ(sqlstate_of([&] { cluster::register_worker(w, {.name = "m3"}); }), cluster::sqlstate::kLimitReached);
  EXPECT_GT(cluster::register_worker(w, {.name = "m1"}), 0) << "an existing name re-registers";
  EXPECT_GT(cluster::register_worker(*std::make_unique<Connection>(as("trust_w2")), {.name = "m3"}), 0)
      << "another login is not affected";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.workers"), 4);
}

// sql/0020: a class that accepts only some back ends refuses the others at
// registration, and stops a registered worker's claims once the instructor
// drops its back end; the default (NULL) accepts every name.
TEST_F(Trust, BackEndsTheClassDoesNotAcceptAreRefused) {
  start_run(8);
  Connection w = as("trust_w1"), g = as("trust_w2");
  const int64_t bf16 = cluster::register_worker(w, {.name = "laptop", .backend = "cuda-bf16"});
  EXPECT_GT(bf16, 0) << "every back end is accepted by default";
  settings("accepted_backends = '{cpu,cuda}'");
  std::string why, state;
  try {
    cluster::register_worker(g, {.name = "gpu", .backend = "cuda-tf32"});
  } catch (const pg::Error& e) {
    why = e.what(), state = e.sqlstate();
  }
  EXPECT_EQ(state, cluster::sqlstate::kBackendRefused);
  EXPECT_NE(why.find("does not accept back end \"cuda-tf32\"; it accepts cpu, cuda"), std::string::npos) << why;
  EXPECT_NE(why.find("--backend cpu"), std::string::npos) << "the hint says what to do: " << why;
  EXPECT_EQ(sqlstate_of([&] { cluster::register_worker(g, {.name = "anon"}); }), cluster::sqlstate::kBackendRefused)
      << "no back end named is no accepted one";
  const int64_t gpu = cluster::register_worker(g, {.name = "gpu", .backend = "cuda"});
  EXPECT_EQ(cluster::claim(g, gpu, 2).size(), 2u);
  EXPECT_EQ(sqlstate_of([&] { cluster::claim(w, bf16, 1); }), cluster::sqlstate::kBackendRefused)
      << "a worker registered before the change claims no more";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'"), 2);
  EXPECT_EQ(sqlstate_of([&] { settings("accepted_backends = '{}'"); }), "23514") << "an empty list accepts nothing";
  EXPECT_EQ(sqlstate_of([&] { settings("accepted_backends = '{cpu,NULL}'"); }), "23514");
  settings("accepted_backends = NULL");
  EXPECT_EQ(cluster::claim(w, bf16, 1).size(), 1u) << "accepted again";
}

// ------------------------------------------------------------------ connections and resources

// Issue: one login opened 197 connections of max_connections 200.
TEST_F(Trust, StudentLoginHasAConnectionLimitThatLeavesRoomForTheCoordinator) {
  admit("trust_conn", 3);
  std::vector<std::unique_ptr<Connection>> mine;
  for (int k = 0; k < 3; ++k) mine.push_back(std::make_unique<Connection>(as("trust_conn")));
  std::string refused;
  try {
    Connection extra = as("trust_conn");
  } catch (const pg::Error& e) {
    refused = e.what();
  }
  EXPECT_NE(refused.find("too many connections"), std::string::npos) << refused;
  EXPECT_NO_THROW(Connection("dbname=" + db_)) << "the coordinator still gets in";
  // Limits that would leave the coordinator no room are refused, and nothing
  // of the refused call stays.
  const int max = (int)coord_->exec("SELECT current_setting('max_connections')::int").get<int32_t>(0, 0);
  // Which of them is refused depends on the other logins' limits: one an
  // earlier run on this server admitted must not pass for "created".
  const pg::Result left = admin_->exec("SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'trust\\_big%'");
  for (int i = 0; i < left.rows(); ++i) admin_->exec("DROP ROLE IF EXISTS " + left.get<std::string>(i, 0));
  std::string err = "(no error)";
  std::vector<std::string> big;
  for (int k = 0; k < max / 64 + 2 && err == "(no error)"; ++k) {
    big.push_back("trust_big" + std::to_string(k));
    err = sqlstate_of([&] { admit(big.back(), 64, false); });
  }
  EXPECT_EQ(err, "53400") << "configuration_limit_exceeded";
  for (size_t k = 0; k + 1 < big.size(); ++k) admit(big[k], 1);  // leave room for the other tests
  Params p;
  p.add(big.back());
  EXPECT_EQ(coord_->exec("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", p).rows(), 0)
      << "the refused login was not created";
  // admit_student touches plain worker logins only.
  EXPECT_EQ(sqlstate_of([&] { admit("postgres", 4); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { admit("gannf_coord", 4); }), "42602");
}

// Issue: a worker login could SET statement_timeout = 0, work_mem = 2GB, run
// pg_sleep, write temp files, hold a snapshot.
TEST_F(Trust, WorkerLoginSettingsAndTheReaperBoundEverySession) {
  Connection w = as("trust_w1");
  EXPECT_EQ(w.exec("SHOW temp_file_limit").get<std::string>(0, 0), "64MB");
  EXPECT_EQ(w.exec("SHOW statement_timeout").get<std::string>(0, 0), "2min");
  EXPECT_EQ(w.exec("SHOW idle_in_transaction_session_timeout").get<std::string>(0, 0), "10s");
  EXPECT_EQ(w.exec("SHOW work_mem").get<std::string>(0, 0), "4MB");
  EXPECT_EQ(sqlstate_of([&] { w.exec("SET temp_file_limit = -1"); }), "42501") << "SUSET: the login cannot raise it";
  // What the login may raise, the reaper bounds: a long statement, an idle
  // transaction (a LISTENer pinning the notification queue), a held snapshot.
  settings("reap_statement = '1 second', reap_idle_in_transaction = '1 second', reap_transaction = '2 seconds'");
  Connection listener = as("trust_w1"), snapshot = as("trust_w2");
  listener.exec("SET idle_in_transaction_session_timeout = 0");
  listener.exec("LISTEN gannf_work");
  listener.exec("BEGIN");
  listener.exec("SELECT 1");
  snapshot.exec("SET idle_in_transaction_session_timeout = 0");
  snapshot.exec("BEGIN ISOLATION LEVEL REPEATABLE READ");
  std::string sleeper_error;
  std::thread sleeper([&] {
    try {
      w.exec("SET statement_timeout = 0");
      w.exec("SELECT pg_sleep(60)");
    } catch (const pg::Error& e) {
      sleeper_error = e.what();
    }
  });
  // The snapshot holder keeps its transaction busy, so only its age ends it.
  const auto t0 = Clock::now();
  std::set<std::string> ended;
  while (seconds_since(t0) < 20 && ended.size() < 3) {
    snapshot.exec("SELECT count(*) FROM gannf.training_state");
    pg::Result r = coord_->exec("SELECT why FROM gannf.reap()");
    for (int i = 0; i < r.rows(); ++i) ended.insert(r.get<std::string>(i, 0).substr(0, 10));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  sleeper.join();
  EXPECT_EQ(ended, (std::set<std::string>{"held a tra", "idle in a ", "ran one st"}));
  EXPECT_FALSE(sleeper_error.empty()) << "pg_sleep(60) was ended";
  EXPECT_LT(seconds_since(t0), 20);
  // A long statement is no strike (a slow server makes those); holds are.
  EXPECT_EQ(count("SELECT strikes FROM gannf.login_trust WHERE login = 'trust_w1'"), 1);
  EXPECT_EQ(count("SELECT strikes FROM gannf.login_trust WHERE login = 'trust_w2'"), 1);
}

// Issue: a 500 MB bytea passed to submit() took 2 GB of backend memory before
// the rejection (the CHECK constraint, after the copy into the row).
TEST_F(Trust, OversizedBlobIsRefusedBeforeAnythingIsCopied) {
  start_run(1);
  Connection w = as("trust_w1");
  const int64_t id = cluster::register_worker(w, {.name = "bloater"});
  const ClaimedUnit u = cluster::claim(w, id).at(0);
  Result ok;
  std::vector<float> huge(8 << 20);  // 32 MB where 4 kB belong, claimed as kG elements
  Params p;
  p.add(id).add(u.unit_id).add(u.attempt).add(u.iteration).add(u.sample_count);
  p.add((int64_t)kHashG).add((int64_t)kG).floats(huge).add((int64_t)0).add((int64_t)kGBn).floats(ok.gbn).add((int64_t)0);
  p.add((int64_t)kHashD).add((int64_t)kD).floats(ok.d).add((int64_t)0).add((int64_t)(2 * kDBn)).floats(ok.dbn)
      .add((int64_t)0);
  pg::Error got("none");
  try {
    w.exec("SELECT * FROM gannf.submit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
           "$13, $14, $15, $16, $17, $18, $19)",
           p);
  } catch (const pg::Error& e) {
    got = e;
  }
  EXPECT_EQ(got.sqlstate(), "22023") << got.what();
  EXPECT_NE(got.detail().find("in 33554432 bytes"), std::string::npos) << got.detail();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 0);
}

// ------------------------------------------------------------------ display

// Issue: ANSI escapes in backend and gpu_name cleared the instructor's
// terminal; names could hold right-to-left overrides and zero-width
// characters; numbers were barely checked.
TEST_F(Trust, RegistrationRefusesWhatATerminalOrBrowserWouldMisshow) {
  Connection w = as("trust_w1");
  auto reg = [&](cluster::WorkerInfo i) { return sqlstate_of([&] { cluster::register_worker(w, i); }); };
  for (const char* bad : {"\x1b[2J\x1b[H", "bob\u202egnp.exe", "al\u200bice", "tab\there", "csi\u009b2J",
                          "iso\u2066late", "bom\ufeff", " padded", "x\u2028y"}) {
    EXPECT_EQ(reg({.name = bad}), "22023") << "name " << bad;
    EXPECT_EQ(reg({.name = "ok", .gpu_name = std::string(bad)}), "22023") << "gpu_name " << bad;
  }
  EXPECT_EQ(reg({.name = "ok", .backend = std::string("cpu\x1b[31m")}), "22023");
  EXPECT_EQ(reg({.name = "ok", .backend = std::string("CPU; rm")}), "22023");
  EXPECT_EQ(reg({.name = std::string(65, 'a')}), "22023");
  EXPECT_EQ(reg({.name = "ok", .cpu_cores = 0}), "22023");
  EXPECT_EQ(reg({.name = "ok", .ram_bytes = -1}), "22023");
  EXPECT_EQ(reg({.name = "ok", .gpu_memory_bytes = std::numeric_limits<int64_t>::max()}), "22023");
  EXPECT_EQ(reg({.name = "ok", .batch_size = 1 << 30}), "22023");
  EXPECT_EQ(count("SELECT count(*) FROM gannf.workers"), 0);
  // What real machines send passes: accents, CJK, a GPU's marketing name.
  EXPECT_EQ(reg({.name = "Zoë's 笔记本 (lab 3)", .backend = std::string("cuda-tf32"), .cpu_cores = 16,
                 .ram_bytes = 64ll << 30, .gpu_name = std::string("NVIDIA GeForce RTX 4090 Laptop GPU"),
                 .gpu_memory_bytes = 16ll << 30, .batch_size = 64}),
            "(no error)");
}

// Issue: forged losses (3e38) and accuracies outside [0, 1] entered the loss
// history and losses.csv.
TEST_F(Trust, SubmitRefusesForgedLossesAndAccuracies) {
  start_run(1);
  Connection w = as("trust_w1");
  const int64_t id = cluster::register_worker(w, {.name = "liar"});
  const ClaimedUnit u = cluster::claim(w, id).at(0);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  Result res;
  for (auto forge : std::vector<std::function<void(UnitResult&)>>{
           [](UnitResult& r) { r.loss_d = 3e38f; }, [&](UnitResult& r) { r.loss_g = nan; },
           [&](UnitResult& r) { r.loss_g = -inf; }, [](UnitResult& r) { r.d_accuracy = 1.5f; },
           [](UnitResult& r) { r.d_real = -0.1f; }, [&](UnitResult& r) { r.d_fake = nan; },
           [](UnitResult& r) { r.compute_seconds = -1.f; }}) {
    UnitResult r = res.for_unit(u);
    forge(r);
    EXPECT_EQ(sqlstate_of([&] { cluster::submit(w, id, u, r); }), "22023");
  }
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 0);
  EXPECT_EQ(cluster::submit(w, id, u, res.for_unit(u)).status, SubmitStatus::Accepted);
}

// Issue: the leaderboard showed worker names without the login, so one
// student could appear as another.
TEST_F(Trust, LeaderboardShowsTheLoginBesideTheName) {
  Connection a = as("trust_w1"), b = as("trust_w2");
  cluster::register_worker(a, {.name = "alice-laptop"});
  cluster::register_worker(b, {.name = "alice-laptop"});  // b pretends
  pg::Result r = coord_->exec("SELECT display_name FROM gannf.leaderboard ORDER BY display_name");
  ASSERT_EQ(r.rows(), 2);
  EXPECT_EQ(r.get<std::string>(0, 0), "trust_w1/alice-laptop");
  EXPECT_EQ(r.get<std::string>(1, 0), "trust_w2/alice-laptop");
}

// ------------------------------------------------------------------ spam and quarantine

// Issue: a bot sending bad checksums in a loop was rejected 216 times and
// never stopped. The coordinator's strikes (one per rejection) quarantine
// the login: its pending work is dropped, its claims refused with a line
// that says what to do, until the instructor lifts it.
TEST_F(Trust, StrikesQuarantineALoginUntilTheInstructorLiftsIt) {
  start_run(6);
  Connection w = as("trust_w1"), other = as("trust_w2");
  const int64_t id = cluster::register_worker(w, {.name = "spammer"});
  const int64_t io = cluster::register_worker(other, {.name = "honest"});
  auto units = cluster::claim(w, id, 2);
  ASSERT_EQ(units.size(), 2u);
  ASSERT_EQ(cluster::submit(w, id, units[0], Result{}.for_unit(units[0])).status, SubmitStatus::Accepted);
  const ClaimedUnit theirs = cluster::claim(other, io).at(0);

  // Students cannot strike, lift or reap.
  EXPECT_EQ(sqlstate_of([&] { other.exec("SELECT gannf.strike('trust_w1', 'framed', 100)"); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { w.exec("SELECT gannf.lift_quarantine('trust_w1')"); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { w.exec("SELECT * FROM gannf.reap()"); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { w.exec("UPDATE gannf.trust_settings SET strike_threshold = 1000"); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { w.exec("DELETE FROM gannf.login_trust"); }), "42501");

  for (int k = 1; k < 5; ++k)
    EXPECT_FALSE(coord_->exec("SELECT gannf.strike('trust_w1', 'rejected: gradient checksum mismatch')").get<bool>(0, 0));
  EXPECT_EQ(cluster::claim(w, id).size(), 1u) << "4 strikes of 5: still working";
  EXPECT_TRUE(coord_->exec("SELECT gannf.strike('trust_w1', 'rejected: gradient checksum mismatch')").get<bool>(0, 0));

  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'rejected' AND reject_reason = 'quarantined'"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
                  "WHERE w.login = 'trust_w1' AND u.state IN ('claimed', 'submitted')"),
            0)
      << "everything it held is served again";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE id = " + std::to_string(theirs.unit_id) +
                  " AND state = 'claimed'"),
            1)
      << "another login's unit is untouched";
  pg::Error refused("none");
  try {
    cluster::claim(w, id);
  } catch (const pg::Error& e) {
    refused = e;
  }
  EXPECT_EQ(refused.sqlstate(), cluster::sqlstate::kQuarantined);
  EXPECT_NE(std::string(refused.what()).find("gannf-coord quarantine lift trust_w1"), std::string::npos)
      << refused.what();
  EXPECT_EQ(sqlstate_of([&] { cluster::submit(w, id, units[1], Result{}.for_unit(units[1])); }),
            cluster::sqlstate::kQuarantined);
  EXPECT_EQ(cluster::claim(other, io).size(), 1u) << "the others go on";

  // A failed spot check quarantines at once (weight = threshold); lifting
  // resets the strikes.
  EXPECT_TRUE(coord_->exec("SELECT gannf.lift_quarantine('trust_w1')").get<bool>(0, 0));
  EXPECT_EQ(cluster::claim(w, id).size(), 1u);
  EXPECT_TRUE(coord_->exec("SELECT gannf.strike('trust_w2', 'spot check failed', 5)").get<bool>(0, 0));
  EXPECT_EQ(sqlstate_of([&] { cluster::claim(other, io); }), cluster::sqlstate::kQuarantined);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_status WHERE quarantined"), 1);
}

// sql/0024: strikes never decayed, so rejections an honest machine can
// earn (the norm check, where nobody recomputes; a faulty GPU's NaN), a few
// over a two-hour class, quarantined it in the end. A forgivable strike is
// now taken back by every strike_forgiven_after of the login's submissions
// used; the reaper's, submit()'s refusals' and a failed recomputation's
// never are. (Before 0024 the 4-argument strike() and forgive() did not
// exist: the test fails at its first call.)
TEST_F(Trust, ForgivableStrikesAreTakenBackByTheLoginsUsedWork) {
  start_run(60);
  settings("strike_forgiven_after = 3");
  Connection w = as("trust_w1"), other = as("trust_w2");
  const int64_t id = cluster::register_worker(w, {.name = "errs"});
  const int64_t io = cluster::register_worker(other, {.name = "other"});
  // n of the login's units submitted and used; what forgive() said.
  auto use = [&](Connection& c, int64_t worker, int n) {
    std::vector<int64_t> ids;
    for (int k = 0; k < n; ++k) {
      const ClaimedUnit u = cluster::claim(c, worker).at(0);
      const auto out = cluster::submit(c, worker, u, Result{}.for_unit(u));
      EXPECT_EQ(out.status, SubmitStatus::Accepted);
      ids.push_back(out.submission_id);
    }
    std::string list;
    for (int64_t i : ids) list += (list.empty() ? "" : ",") + std::to_string(i);
    coord_->exec("UPDATE gannf.submissions SET state = 'used' WHERE id IN (" + list + ")");
    pg::Result r = coord_->exec("SELECT login || ' ' || forgiven || ' ' || strikes FROM gannf.forgive(ARRAY[" + list +
                                "]::bigint[])");
    std::string said;
    for (int i = 0; i < r.rows(); ++i) said += r.get<std::string>(i, 0) + ";";
    return said;
  };
  auto strike = [&](const std::string& login, bool forgivable) {
    return coord_->exec("SELECT gannf.strike('" + login + "', 'rejected: gradient norm', 1, " +
                        (forgivable ? "true" : "false") + ")")
        .get<bool>(0, 0);
  };
  auto trust = [&](const std::string& login) {
    pg::Result r = coord_->exec("SELECT strikes || '/' || forgivable || '/' || forgiven FROM gannf.login_status "
                                "WHERE login = '" + login + "'");
    return r.rows() ? r.get<std::string>(0, 0) : std::string("none");
  };

  // Students can neither strike nor forgive.
  EXPECT_EQ(sqlstate_of([&] { w.exec("SELECT gannf.strike('trust_w2', 'framed', 1, false)"); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { w.exec("SELECT * FROM gannf.forgive(ARRAY[1]::bigint[])"); }), "42501");

  // Two forgivable strikes and one the reaper's kind (0008's call).
  EXPECT_FALSE(strike("trust_w1", true));
  EXPECT_FALSE(strike("trust_w1", true));
  EXPECT_FALSE(coord_->exec("SELECT gannf.strike('trust_w1', 'session ended by the reaper: idle in transaction')")
                   .get<bool>(0, 0));
  EXPECT_EQ(trust("trust_w1"), "3/2/0");
  EXPECT_EQ(use(w, id, 2), "") << "2 used of the 3 that forgive one";
  EXPECT_EQ(use(other, io, 5), "") << "another login's work forgives nothing of this one";
  EXPECT_EQ(use(w, id, 1), "trust_w1 1 2;");
  EXPECT_EQ(trust("trust_w1"), "2/1/1");
  // A new strike starts the count again: 2 used, a strike, 2 used forgive nothing.
  EXPECT_EQ(use(w, id, 2), "");
  EXPECT_FALSE(strike("trust_w1", true));
  EXPECT_EQ(use(w, id, 2), "");
  EXPECT_EQ(trust("trust_w1"), "3/2/1");
  // Many at once forgive as many as are due; the reaper's strike stays.
  EXPECT_EQ(use(w, id, 7), "trust_w1 2 1;");
  EXPECT_EQ(trust("trust_w1"), "1/0/3");
  EXPECT_EQ(use(w, id, 6), "") << "nothing forgivable is left";
  EXPECT_EQ(trust("trust_w1"), "1/0/3");

  // A login rejected more often than once in strike_forgiven_after used
  // submissions still reaches the threshold (5).
  settings("strike_threshold = 3");
  bool quarantined = false;
  for (int k = 0; k < 4 && !quarantined; ++k) {
    EXPECT_EQ(use(other, io, 2), "");
    quarantined = strike("trust_w2", true);
  }
  EXPECT_TRUE(quarantined) << trust("trust_w2");
  EXPECT_EQ(trust("trust_w2"), "3/3/0");
  // A quarantined login is not forgiven (its used work from before counts nothing).
  coord_->exec("UPDATE gannf.submissions SET state = 'used' WHERE worker_id = " + std::to_string(io));
  EXPECT_EQ(coord_->exec("SELECT count(*) FROM gannf.forgive(ARRAY(SELECT id FROM gannf.submissions))")
                .get<int64_t>(0, 0),
            0);
  // Lifted, its strikes are 0 and nothing before the lift is forgivable:
  // one unforgivable strike after it stays.
  coord_->exec("SELECT gannf.lift_quarantine('trust_w2')");
  EXPECT_FALSE(coord_->exec("SELECT gannf.strike('trust_w2', 'session ended by the reaper: idle in transaction')")
                   .get<bool>(0, 0));
  EXPECT_EQ(trust("trust_w2"), "1/0/0");
  EXPECT_EQ(use(other, io, 3), "");
  EXPECT_EQ(trust("trust_w2"), "1/0/0");

  // strike_forgiven_after NULL: never.
  settings("strike_forgiven_after = NULL");
  EXPECT_FALSE(strike("trust_w1", true));
  EXPECT_EQ(use(w, id, 6), "");
  EXPECT_EQ(trust("trust_w1"), "2/1/3");
  EXPECT_EQ(sqlstate_of([&] { settings("strike_forgiven_after = 0"); }), "23514");
}

// The instructor's side: gannf-coord quarantine list and lift, and status,
// as processes.
TEST_F(Trust, GannfCoordListsAndLiftsQuarantines) {
  start_run(1);
  Connection w = as("trust_w1");
  cluster::register_worker(w, {.name = "box"});
  coord_->exec("SELECT gannf.strike('trust_w1', 'rejected: gradient checksum mismatch', 5)");
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(GANNF_BINARY_DIR) + "/tools/gannf-coord " + args + " --db 'dbname=" + db_ + "' 2>&1";
    std::string out;
    FILE* f = popen(cmd.c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    const int rc = pclose(f);
    return std::pair{WEXITSTATUS(rc), out};
  };
  auto [rc, out] = run("quarantine list");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("trust_w1"), std::string::npos) << out;
  EXPECT_NE(out.find("QUARANTINED since"), std::string::npos) << out;
  EXPECT_NE(out.find("checksum mismatch"), std::string::npos) << out;
  std::tie(rc, out) = run("status");
  EXPECT_NE(out.find("QUARANTINED trust_w1"), std::string::npos) << out;
  EXPECT_NE(out.find("trust_w1/box"), std::string::npos) << out;
  std::tie(rc, out) = run("quarantine lift trust_w1");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("may work again"), std::string::npos) << out;
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_status WHERE quarantined"), 0);
  std::tie(rc, out) = run("quarantine lift nobody");
  EXPECT_EQ(rc, 1) << out;
  std::tie(rc, out) = run("quarantine lift");
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("which login?"), std::string::npos) << out;
  std::tie(rc, out) = run("quarantine pardon");
  EXPECT_EQ(rc, 2) << out;
}

// ------------------------------------------------------------------ with real processes

using test::ClusterRun;
using test::Proc;
using test::small_run;

// A hostile login's hand-made submissions of the right sizes (the layouts as
// published), for attacks a gannf-worker would never send.
class Forger {
 public:
  Forger(pg::Connection& c, int64_t worker) : c_(c), worker_(worker) {
    pg::Result w = c.exec("SELECT network::text, layout_hash, element_count, bn_count FROM gannf.weights "
                          "WHERE iteration = (SELECT max(iteration) FROM gannf.weights) ORDER BY network");
    for (int i = 0; i < w.rows(); ++i) {
      const bool g = w.get<std::string>(i, 0) == "G";
      (g ? gh_ : dh_) = (uint64_t)w.get<int64_t>(i, 1);
      (g ? grad_g_ : grad_d_).assign(w.get<int64_t>(i, 2), 1e-4f);
      (g ? bn_g_ : bn_d_).assign((g ? 1 : 2) * w.get<int64_t>(i, 3), 0.5f);
    }
  }
  UnitResult result(const ClaimedUnit& u) const {
    UnitResult r;
    r.sample_count = u.sample_count;
    r.micro_batch = u.sample_count;  // one forward of G, two of D
    r.g = {gh_, grad_g_, bn_g_};
    r.d = {dh_, grad_d_, bn_d_};
    return r;
  }
  // The gradient's checksum off by one bit: accepted by the database (it
  // does not read 25 MB to check), rejected by the coordinator.
  void submit_bad_checksum(const ClaimedUnit& u) {
    cluster::EncodedBlob gb(grad_g_), gs(bn_g_), db(grad_d_), ds(bn_d_);
    Params p;
    p.add(worker_).add(u.unit_id).add(u.attempt).add(u.iteration).add(u.sample_count);
    p.add((int64_t)gh_).add((int64_t)grad_g_.size()).bytes(gb.bytes()).add((int64_t)(gb.checksum() ^ 1))
        .add((int64_t)bn_g_.size()).bytes(gs.bytes()).add((int64_t)gs.checksum());
    p.add((int64_t)dh_).add((int64_t)grad_d_.size()).bytes(db.bytes()).add((int64_t)db.checksum())
        .add((int64_t)bn_d_.size()).bytes(ds.bytes()).add((int64_t)ds.checksum());
    c_.exec("SELECT * FROM gannf.submit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
            "$13, $14, $15, $16, $17, $18, $19)",
            p);
  }

 private:
  pg::Connection& c_;
  int64_t worker_;
  uint64_t gh_ = 0, dh_ = 0;
  std::vector<float> grad_g_, bn_g_, grad_d_, bn_d_;
};

class TrustRun : public ClusterRun {
 protected:
  int64_t iteration() { return count("SELECT iteration FROM gannf.training_state"); }
  // The next unit the hostile login can claim, within `seconds`.
  ClaimedUnit claim_one(pg::Connection& c, int64_t id, double seconds = 30) {
    std::vector<ClaimedUnit> u;
    EXPECT_TRUE(wait_for([&] { return !(u = cluster::claim(c, id)).empty(); }, seconds)) << logs();
    return u.at(0);
  }

  // A bot on login gannf_test_w2 sends `send` for each unit it claims, beside
  // an honest gannf-worker on gannf_test_w1, until its claims are refused:
  // after exactly the threshold's 5 strikes (each awaited before the next).
  // Then a real gannf-worker of that login says why and waits, the honest
  // login's work goes on, and it is never struck.
  void bot_is_quarantined(const std::string& name,
                          const std::function<void(pg::Connection&, int64_t, Forger&, const ClaimedUnit&)>& send) {
    coord_cmd("init", small_run(512, 8, 2, 7));
    if (HasFatalFailure()) return;
    Proc& run = start_coord_run({"--iterations", "160", "--sample-interval", "0", "--checkpoint-interval", "0"});
    pg::Connection bot = test::connect_or_fail(worker_db(2));
    const int64_t me = cluster::register_worker(bot, {.name = name, .batch_size = 8});
    Forger forger(bot, me);
    // At least 0.1 s a unit, so that the run outlasts the bot's strikes,
    // which the coordinator counts every 2 s.
    start_worker("honest", {"--batch-size", "8", "--throttle-ms", "100"});
    auto strikes = [&] {
      return count("SELECT coalesce(sum(strikes), 0)::bigint FROM gannf.login_trust WHERE login = 'gannf_test_w2'");
    };
    int sent = 0;
    std::string refused;
    for (int k = 0; k < 50 && refused.empty(); ++k) {
      try {
        const ClaimedUnit u = claim_one(bot, me);
        send(bot, me, forger, u);
        ++sent;
        // Its strike comes with the coordinator's next look.
        wait_for([&] { return strikes() >= sent; }, 30);
      } catch (const pg::Error& e) {
        if (e.sqlstate() != cluster::sqlstate::kQuarantined) throw;
        refused = e.what();
      }
    }
    EXPECT_EQ(sent, 5) << "the threshold is 5 strikes\n" << logs();
    EXPECT_NE(refused.find("gannf-coord quarantine lift gannf_test_w2"), std::string::npos) << refused;
    EXPECT_NE(run.log().find("login gannf_test_w2 is quarantined"), std::string::npos) << run.log();
    // A real worker of the quarantined login: one line that says why, no exit.
    Proc& blocked = start_worker("blocked", {"--batch-size", "8"}, 2);
    EXPECT_TRUE(wait_for([&] { return blocked.log().find("is quarantined") != std::string::npos; }, 30)) << logs();
    EXPECT_TRUE(blocked.running()) << blocked.log();
    // The honest login is never struck and its work goes on.
    const int64_t at = iteration();
    EXPECT_TRUE(wait_for([&] { return iteration() >= at + 2; }, 60)) << logs();
    EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login = 'gannf_test_w1'"), 0);
    EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                    "WHERE w.login = 'gannf_test_w2' AND s.state = 'used'"),
              0);
  }
};

// Issue: `BEGIN; SELECT * FROM gannf.submit(…iteration − 1…)` kept open cut
// the coordinator to 0.04 it/s; an accepted submit kept open (with the
// login's idle timeout SET to 0) would hold the state row for good. Against
// a real coordinator: the first holds nothing; the second is ended by the
// reaper after the coordinator's bounded lock wait, and the run goes on.
TEST_F(TrustRun, TransactionsLeftOpenByAWorkerDoNotFreezeTheCoordinator) {
  // Two extra units open, so that the one the attacker sits on does not
  // hold the iteration up until its lease passes.
  std::vector<std::string> init = small_run(256, 8, 2, 5);
  init.insert(init.end(), {"--extra-units", "2"});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  // Step 1 shows that the refused submit holds nothing, so the reaper must
  // not be what ends it: an aborted transaction left open is idle in a
  // transaction too, and under load the three updates take longer than the
  // 2 s of step 2 (the session was ended and ROLLBACK failed).
  coord().exec("UPDATE gannf.trust_settings SET reap_idle_in_transaction = '1 hour'");
  // The attacker's first unit is taken off it when its update closes, and
  // it must still win units against an idle honest worker: no giving way
  // (sql/0026), which is not what this test is about.
  coord().exec("UPDATE gannf.trust_settings SET held_claim_delay = '0'");
  Proc& run = start_coord_run({"--iterations", "12", "--sample-interval", "0", "--checkpoint-interval", "0"});
  pg::Connection evil = test::connect_or_fail(worker_db(2));
  evil.exec("SET idle_in_transaction_session_timeout = 0");  // the login may (USERSET)
  const int64_t me = cluster::register_worker(evil, {.name = "freezer", .batch_size = 8});
  Forger forger(evil, me);
  const ClaimedUnit old = claim_one(evil, me);  // a unit of iteration 0, never submitted in time
  start_worker("honest", {"--batch-size", "8", "--exit-when-done"});
  ASSERT_TRUE(wait_for([&] { return iteration() >= 2; }, 60)) << logs();

  // 1. A refused submit left in an open transaction.
  evil.exec("BEGIN");
  EXPECT_EQ(cluster::submit(evil, me, old, forger.result(old)).status, SubmitStatus::IterationClosed);
  const int64_t at = iteration();
  EXPECT_TRUE(wait_for([&] { return iteration() >= at + 3; }, 60)) << "frozen at iteration " << iteration() << "\n"
                                                                  << logs();
  evil.exec("ROLLBACK");

  // 2. An accepted submit left open: it holds the state row FOR SHARE.
  coord().exec("UPDATE gannf.trust_settings SET reap_idle_in_transaction = '2 seconds'");
  // The unit's iteration may close between claim and submit (the honest
  // worker completes it; it failed once in ten so): claim again until one is in.
  bool accepted = false;
  for (int k = 0; k < 20 && !accepted; ++k) {
    const ClaimedUnit u = claim_one(evil, me);
    evil.exec("BEGIN");
    accepted = cluster::submit(evil, me, u, forger.result(u)).status == SubmitStatus::Accepted;
    if (!accepted) evil.exec("ROLLBACK");
  }
  ASSERT_TRUE(accepted) << logs();
  auto rc = run.wait(120);
  ASSERT_TRUE(rc.has_value()) << "the coordinator did not finish:\n" << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_NE(run.log().find("of login gannf_test_w2: idle in a transaction"), std::string::npos) << run.log();
  bool ended = false;
  try {
    evil.exec("SELECT 1");
  } catch (const pg::Error& e) {
    ended = e.connection_lost();
  }
  EXPECT_TRUE(ended) << "the reaper ended the holding session";
  EXPECT_EQ(count("SELECT strikes FROM gannf.login_trust WHERE login = 'gannf_test_w2'"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login = 'gannf_test_w1'"), 0);
}

// Issue: a bot sending bad checksums in a loop was rejected 216 times and
// never stopped. Against a real coordinator: each rejection is a strike;
// at 5 the login is quarantined, its claims refused; the honest login goes
// on; a real gannf-worker of the quarantined login says why and waits.
TEST_F(TrustRun, BadChecksumBotIsQuarantinedAndHonestWorkGoesOn) {
  bot_is_quarantined("spambot", [](pg::Connection&, int64_t, Forger& forger, const ClaimedUnit& u) {
    forger.submit_bad_checksum(u);
  });
}

// A bot whose submissions submit() itself refuses (forged losses; every other
// one inside a transaction it rolls back, as if to leave no trace): each
// refusal is a strike all the same (sql/0015), with the same end.
TEST_F(TrustRun, RefusedSubmissionBotIsQuarantinedAndHonestWorkGoesOn) {
  int k = 0;
  bot_is_quarantined("refusedbot", [&](pg::Connection& bot, int64_t me, Forger& forger, const ClaimedUnit& u) {
    UnitResult r = forger.result(u);
    r.loss_d = 3e38f;
    const bool rolled_back = k++ % 2 == 1;
    if (rolled_back) bot.exec("BEGIN");
    EXPECT_EQ(sqlstate_of([&] { cluster::submit(bot, me, u, r); }), "22023");
    if (rolled_back) bot.exec("ROLLBACK");
    cluster::release(bot, me, u);  // as gannf-worker does
  });
}

}  // namespace

// gannf.report_timing (sql/0018): what a worker measured, for the
// coordinator's units per claim. Hostile input like the rest: only for the
// caller's own worker, every figure range-checked (NaN and infinities are
// not in range); the answer is the worker's current hint, which grants
// nothing: claim() caps what the login holds whatever the hint says.
TEST_F(Trust, ReportTimingIsOwnWorkerOnlyRangeCheckedAndTheHintGrantsNothing) {
  start_run(8);
  Connection w1 = as("trust_w1"), w2 = as("trust_w2");
  const int64_t a = cluster::register_worker(w1, {.name = "a"});
  const int64_t b = cluster::register_worker(w2, {.name = "b"});
  auto report = [](Connection& c, int64_t worker, int32_t units, float compute, float up, int64_t up_bytes,
                   float down, int64_t down_bytes) {
    Params p;
    p.add(worker).add(units).add(compute).add(up).add(up_bytes).add(down).add(down_bytes);
    return c.exec("SELECT gannf.report_timing($1, $2, $3, $4, $5, $6, $7)", p).get<int32_t>(0, 0);
  };
  EXPECT_EQ(report(w1, a, 2, 1.5f, 0.4f, 13000000, 0.8f, 25000000), 1);  // no hint set yet
  Params pa;
  pa.add(a);
  pg::Result r = coord_->exec("SELECT timing_units, timing_compute_seconds, timing_upload_bytes, timing_download_seconds "
                              "FROM gannf.workers WHERE id = $1", pa);
  EXPECT_EQ(r.get<int32_t>(0, 0), 2);
  EXPECT_FLOAT_EQ(r.get<float>(0, 1), 1.5f);
  EXPECT_EQ(r.get<int64_t>(0, 2), 13000000);
  EXPECT_FLOAT_EQ(r.get<float>(0, 3), 0.8f);

  // Another login's worker: refused, and nothing written.
  EXPECT_EQ(sqlstate_of([&] { report(w2, a, 4, 0.1f, 0.1f, 1, 0.1f, 1); }), "42501");
  EXPECT_EQ(coord_->exec("SELECT timing_units FROM gannf.workers WHERE id = $1", pa).get<int32_t>(0, 0), 2);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(sqlstate_of([&] { report(w2, b, 0, 1, 1, 1, 1, 1); }), "22023");
  EXPECT_EQ(sqlstate_of([&] { report(w2, b, 65, 1, 1, 1, 1, 1); }), "22023");
  EXPECT_EQ(sqlstate_of([&] { report(w2, b, 1, nan, 1, 1, 1, 1); }), "22023");
  EXPECT_EQ(sqlstate_of([&] { report(w2, b, 1, 1, inf, 1, 1, 1); }), "22023");
  EXPECT_EQ(sqlstate_of([&] { report(w2, b, 1, 1, 1, 1, -1, 1); }), "22023");
  EXPECT_EQ(sqlstate_of([&] { report(w2, b, 1, 1, 1, -5, 1, 1); }), "22023");
  EXPECT_EQ(sqlstate_of([&] { report(w2, b, 1, 1, 1, 1, 1, int64_t{1} << 40); }), "22023");
  Params pb;
  pb.add(b);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.workers WHERE timing_at IS NOT NULL"), 1);
  // A worker cannot write its own hint (no table privileges, sql/0027) ...
  EXPECT_EQ(sqlstate_of([&] { w2.exec("INSERT INTO gannf.unit_hints VALUES (" + std::to_string(b) + ", 64)"); }),
            "42501");
  EXPECT_EQ(sqlstate_of([&] { w2.exec("UPDATE gannf.unit_hints SET units = 64"); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { w2.exec("SELECT * FROM gannf.unit_hints"); }), "42501");
  // ... and the largest hint the coordinator could give still claims only
  // what the login may hold (max_held_units, 4 by default).
  coord_->exec("INSERT INTO gannf.unit_hints VALUES ($1, 64)", pb);
  const int32_t hint = report(w2, b, 1, 0.01f, 0.01f, 1, 0.01f, 1);
  EXPECT_EQ(hint, 64);
  EXPECT_EQ(cluster::claim(w2, b, hint).size(), 4u);
}

// ------------------------------------------------------------------ any call, in any order

// The fuzzer of a worker login: worker_fuzzer.h.
namespace {
using namespace gannf::test::fuzz;
constexpr Fuzzer::Layout kLayout{kHashG, kHashD, kG, kGBn, kD, kDBn};
}  // namespace

// The coordinator's side of a fuzzed run: its calls between the hostile
// login's, the close of an update as close_iteration() does it (the
// submissions' contents aside), and the invariants a run goes on from.
class FuzzCoordinator {
 public:
  FuzzCoordinator(Connection& coord, int open, int images, std::function<void(int64_t)> publish,
                  std::function<void(const std::string&)> advance_clock)
      : c_(coord), open_(open), images_(images), next_first_((int64_t)open * images), publish_(std::move(publish)),
        advance_clock_(std::move(advance_clock)) {
    expected_images = images_covered();
    refresh();
  }

  std::vector<int64_t> units;  // every unit id there is
  int64_t iteration = 0;
  std::string expected_images;

  // The images the run's units cover, as the coordinator made them.
  std::string images_covered() {
    return c_.exec("SELECT count(*)::text || ':' || coalesce(sum(sample_count), 0)::text || ':' || "
                   "coalesce(sum(first_index), 0)::text FROM gannf.work_units")
        .get<std::string>(0, 0);
  }

  // The claimed units' ids and attempts.
  std::set<std::pair<int64_t, int32_t>> claimed() {
    std::set<std::pair<int64_t, int32_t>> live;
    const pg::Result r = c_.exec("SELECT id, attempt FROM gannf.work_units WHERE state = 'claimed'");
    for (int i = 0; i < r.rows(); ++i) live.insert({r.get<int64_t>(i, 0), r.get<int32_t>(i, 1)});
    return live;
  }

  void refresh() {
    units.clear();
    pg::Result u = c_.exec("SELECT id FROM gannf.work_units ORDER BY id");
    for (int i = 0; i < u.rows(); ++i) units.push_back(u.get<int64_t>(i, 0));
    iteration = c_.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0);
  }

  // The coordinator's calls, the quarantine of login `lift` lifted (none:
  // ""); with `close`, time passes (`skew`) and the update closes. A call of
  // its that fails is a run that stops: the error.
  std::optional<std::string> step(bool close, const std::string& lift, const std::string& skew) {
    try {
      c_.exec("SELECT * FROM gannf.strike_refusals()");
      c_.exec("SELECT * FROM gannf.reap()");
      if (!lift.empty()) {
        Params pl;
        pl.add(lift);
        c_.exec("SELECT gannf.lift_quarantine($1)", pl);
      }
      const int64_t k = iteration;
      Params pk;
      pk.add(k);
      c_.exec("SELECT gannf.take_off_late($1)", pk);
      if (!close) return std::nullopt;
      // Leases lapse, holds pass their bounds, a held login's wait ends.
      advance_clock_(skew);
      pg::Transaction tx(c_);
      c_.exec("SET LOCAL lock_timeout = '10s'");  // as close_iteration()
      c_.exec("SELECT iteration FROM gannf.training_state FOR UPDATE");
      c_.exec("UPDATE gannf.work_units SET state = 'done' WHERE iteration = $1 AND state = 'submitted'", pk);
      c_.exec("SELECT * FROM gannf.forgive(ARRAY(SELECT id FROM gannf.submissions "
              "WHERE iteration = $1 AND state = 'pending'))",
              pk);
      c_.exec("UPDATE gannf.submissions SET state = 'used' WHERE iteration = $1 AND state = 'pending'", pk);
      const int64_t carried = c_.exec("SELECT gannf.carry_over($1)", pk).get<int64_t>(0, 0);
      Params pn;
      pn.add(k + 1).add((int32_t)(open_ - carried)).add((int32_t)images_).add(next_first_);
      c_.exec("INSERT INTO gannf.work_units (epoch, first_index, sample_count, iteration) "
              "SELECT 0, $4 + (i - 1) * $3, $3, $1 FROM generate_series(1, $2) i",
              pn);
      next_first_ += std::max<int64_t>(0, open_ - carried) * images_;
      publish_(k + 1);
      Params pk1;
      pk1.add(k + 1);
      c_.exec("UPDATE gannf.training_state SET iteration = $1", pk1);
      c_.exec("DELETE FROM gannf.weights WHERE iteration < $1", pk);
      tx.commit();
      expected_images = images_covered();
      refresh();
      return std::nullopt;
    } catch (const pg::Error& e) {
      return std::string(e.what()) + " (" + e.sqlstate() + ")";
    }
  }

  // What is wrong with the database as the coordinator sees it, in one
  // snapshot: the invariants that fail, and units whose images changed.
  std::vector<std::string> violations() {
    static const char* what[] = {"a login holds more units than max_held_units",
                                 "a pending submission is not its unit's holder's at its attempt and iteration",
                                 "a submitted unit has no pending submission",
                                 "the honest login was struck",
                                 "the honest login's worker was changed",
                                 "a login has more workers than max_workers_per_login",
                                 "a quarantined login holds a unit",
                                 "a quarantined login has a pending submission"};
    pg::Result v = c_.exec(
        "SELECT " + kWithinHeldCap + ", "
        " NOT EXISTS (SELECT 1 FROM gannf.submissions s JOIN gannf.work_units u ON u.id = s.work_unit_id "
        "   WHERE s.state = 'pending' AND (u.state <> 'submitted' OR u.worker_id IS DISTINCT FROM s.worker_id "
        "   OR u.attempt <> s.attempt OR u.iteration <> s.iteration)), "
        " NOT EXISTS (SELECT 1 FROM gannf.work_units u WHERE u.state = 'submitted' AND NOT EXISTS "
        "   (SELECT 1 FROM gannf.submissions s WHERE s.work_unit_id = u.id AND s.state = 'pending')), "
        " coalesce((SELECT strikes FROM gannf.login_trust WHERE login = 'trust_w2'), 0) = 0, "
        " (SELECT count(*) FROM gannf.workers WHERE login = 'trust_w2') = 1 AND "
        "   (SELECT name = 'honest' AND backend = 'cpu' AND left_at IS NULL FROM gannf.workers "
        "    WHERE login = 'trust_w2'), "
        " " + kWithinWorkersCap + ", " + kNoQuarantinedHolder + ", "
        " NOT EXISTS (SELECT 1 FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
        "   JOIN gannf.login_trust t ON t.login = w.login WHERE s.state = 'pending' AND t.quarantined_at IS NOT NULL)");
    std::vector<std::string> out;
    for (int i = 0; i < v.cols(); ++i)
      if (!v.get<bool>(0, i)) out.push_back(what[i]);
    if (!v.get<bool>(0, 6))  // which units, whose, since when
      out.push_back("  (" + std::string(what[6]) + ") " + c_.exec("SELECT string_agg(format('unit %s (attempt %s) held by worker %s of %s, registered "
                                   "%s, claimed %s, quarantined %s', u.id, u.attempt, w.id, w.login, w.registered_at, "
                                   "u.claimed_at, t.quarantined_at), '; ') FROM gannf.work_units u "
                                   "JOIN gannf.workers w ON w.id = u.worker_id JOIN gannf.login_trust t ON t.login = w.login "
                                   "WHERE u.state = 'claimed' AND t.quarantined_at IS NOT NULL")
                               .get<std::string>(0, 0));
    const std::string now = images_covered();
    if (now != expected_images) {
      out.push_back("the units' images changed: " + now + " against " + expected_images);
      expected_images = now;
    }
    return out;
  }

 private:
  Connection& c_;
  int open_, images_;
  int64_t next_first_;
  std::function<void(int64_t)> publish_;
  std::function<void(const std::string&)> advance_clock_;
};

// Everything a worker sends is hostile input, SQL calls in any order
// included. One login calls every function its login may execute (found in
// pg_proc, so a function granted later is fuzzed too) 3000 times, seeded,
// beside an honest login's worker and the coordinator's calls, sometimes
// several in one transaction kept or rolled back. Each call either succeeds
// or fails with a SQLSTATE of the worker functions' table
// (docs/security.md): anything else (a constraint the function did not
// check first, an overflow, a statement cut off at 10 s) is a refusal no
// counter counts and an error no worker can act on. After every call the
// database must still be one the run can go on from: no login holding more
// than its cap, every live submission the work of the unit's holder at that
// attempt, the honest login never struck, its worker untouched, its every
// submit accepted, and the coordinator's own calls (carry_over,
// take_off_late, strike_refusals, forgive, reap) never failing.
// GANNF_FUZZ_SEED and GANNF_FUZZ_CALLS run other sequences.
TEST_F(Trust, AnyCallOfAWorkerLoginInAnyOrderLeavesTheRunWhole) {
  const char* seed_env = std::getenv("GANNF_FUZZ_SEED");
  const char* calls_env = std::getenv("GANNF_FUZZ_CALLS");
  const uint64_t seed = seed_env ? std::stoull(seed_env) : 20261207;
  const int calls = calls_env ? std::stoi(calls_env) : 3000;
  constexpr int kOpen = 8, kImages = 16;
  start_run(kOpen, kImages);
  settings("strike_threshold = 3");
  Connection bad = as("trust_w1"), bad2 = as("trust_w1"), good = as("trust_w2");
  for (Connection* c : {&bad, &bad2}) c->exec("SET statement_timeout = '10s'");
  Fuzzer fz(seed, kLayout);
  SCOPED_TRACE("seed " + std::to_string(seed));
  fz.own.push_back(cluster::register_worker(bad, {.name = "fuzz"}));
  const int64_t honest = cluster::register_worker(good, {.name = "honest", .backend = "cpu"});
  fz.other = honest;

  const std::vector<Fuzzer::Signature> fns = worker_functions(*coord_, "trust_w1");
  ASSERT_FALSE(HasFailure());
  ASSERT_GE(fns.size(), 10u) << "the worker login's functions";

  FuzzCoordinator run(*coord_, kOpen, kImages, [this](int64_t k) { publish(k); },
                      [this](const std::string& by) { advance_clock(by); });
  auto refresh_units = [&] { fz.units = run.units, fz.iteration = run.iteration; };
  refresh_units();
  const std::vector<std::string> skews = {"0", "0", "3 seconds", "1 minute", "10 minutes"};
  auto coordinator = [&](bool close) {
    const std::string lift = fz.chance(0.5) ? "trust_w1" : "";
    if (auto e = run.step(close, lift, close ? fz.any(skews) : "0"))
      ADD_FAILURE() << "the coordinator's call failed after the hostile login's calls: " << *e;
    refresh_units();
  };

  std::map<std::string, std::map<std::string, int>> outcomes;  // function → SQLSTATE or "ok" → calls
  const std::set<std::string>& documented = kDocumentedSqlstates;
  HonestWorker honest_worker{good, honest};
  int in_tx = 0, failures = 0, step = 0;
  double slowest = 0;
  std::string slowest_call;
  for (int n = 0; n < calls && failures < 20; ++n) {
    Connection& c = fz.chance(0.8) ? bad : bad2;
    if (in_tx == 0 && &c == &bad && fz.chance(0.05)) {
      bad.exec("BEGIN");
      in_tx = 2 + (int)fz.pick(3);
    }
    const Fuzzer::Call call = fz.next(fns);
    Connection& on = in_tx > 0 ? bad : c;
    std::string state = "ok";
    const auto t0 = Clock::now();
    try {
      fz.learn(call, call.run(on));
    } catch (const pg::Error& e) {
      state = e.sqlstate();
      if (!documented.count(state)) {
        ++failures;
        ADD_FAILURE() << "call " << n << ": " << call.describe() << " failed with SQLSTATE " << state
                      << ", not one of the worker functions': " << e.what();
      }
      if (in_tx > 0) in_tx = 1;  // the transaction is aborted: end it
    }
    const double s = seconds_since(t0);
    if (s > slowest) slowest = s, slowest_call = call.describe();
    ++outcomes[call.fn][state];
    if (in_tx > 0 && --in_tx == 0) bad.exec(fz.chance(0.5) ? "COMMIT" : "ROLLBACK");
    if (in_tx > 0) continue;  // the invariants hold between transactions

    fz.forget(run.claimed());
    for (const std::string& v : run.violations()) {
      ++failures;
      ADD_FAILURE() << "after call " << n << " (" << call.describe() << ", " << state << "): " << v;
    }

    // Between the login's transactions: the honest worker claims at one
    // step and submits some steps later; the coordinator closes the update
    // once it has.
    ++step;
    const std::optional<std::string> wrong =
        step % 25 == 5 ? honest_worker.claim() : step % 25 == 20 ? honest_worker.submit() : std::nullopt;
    if (wrong) {
      ++failures;
      ADD_FAILURE() << *wrong << " (after call " << n << ")";
    }
    if (step % 25 == 24) coordinator(true);
    else if (step % 5 == 0) coordinator(false);
  }

  const std::string table = outcome_table(outcomes);
  std::printf("%d calls (seed %llu) by function and outcome:\n%sslowest call %.3f s: %s\n"
              "honest submissions accepted: %d; updates: %lld\n",
              calls, (unsigned long long)seed, table.c_str(), slowest, slowest_call.c_str(), honest_worker.accepted,
              (long long)fz.iteration);
  // The sequence reached what it is for: every function called, and the
  // deep paths (claims, accepted submissions of both kinds) taken.
  for (auto& [fn, types, names] : fns) EXPECT_GT(outcomes[fn].size(), 0u) << fn << " was never called";
  EXPECT_GT(outcomes["claim"]["ok"], 0);
  EXPECT_GT(outcomes["submit"]["ok"], 0);
  EXPECT_GT(outcomes["submit_summed"]["ok"], 0);
  EXPECT_GT(honest_worker.accepted, 0);
}

// The same calls from four sessions of one login at once, as a student
// with four connections can make them, while an honest worker and the
// coordinator go on (in this thread, as a real coordinator does). Each call
// is its own transaction here: a transaction kept across calls is the test
// above's (one session) and Trust.AStudentsTransactionThatDeadlocksTheCoordinatorIsEnded
// (test_trust_runs.cpp). The interleaving differs from run to run; what
// must hold does not: every call succeeds or fails with a documented
// SQLSTATE -- a deadlock (40P01), a lock wait cut off (55P03) or a
// statement cut off at 10 s (57014) is a failure --, the coordinator's
// calls never fail, and the invariants of the test above hold in every
// snapshot the coordinator takes. It found two things (sql/0029): submit()
// locked its unit before the worker's row and every other function the
// other way round (40P01, 2 of 16 seeds), and a claim or submission in
// flight when the login was quarantined committed after the quarantine had
// handed back the login's work (2 of 32 runs). A claim cap checked
// without its lock is found too (removed from claim(): 1 of 2 seeds).
void Trust::concurrent_fuzz(const std::vector<std::string>& logins, uint64_t default_seed) {
  const char* seed_env = std::getenv("GANNF_FUZZ_SEED");
  const char* calls_env = std::getenv("GANNF_FUZZ_CALLS");
  const uint64_t seed = seed_env ? std::stoull(seed_env) : default_seed;
  constexpr int kSessions = 4, kOpen = 8, kImages = 16;
  const int calls = (calls_env ? std::stoi(calls_env) : 3000) / kSessions;  // per session
  // Logins of their own: the connection limit is the server's, and other
  // tests run beside this one.
  const int per_login = kSessions / (int)logins.size();
  for (const std::string& login : logins) admit(login, per_login);
  start_run(kOpen, kImages);
  // Four sessions refuse faster than one: a threshold that lets them submit
  // between quarantines.
  settings("strike_threshold = 20");
  Connection good = as("trust_w2");
  const int64_t honest = cluster::register_worker(good, {.name = "honest", .backend = "cpu"});
  const std::vector<Fuzzer::Signature> fns = worker_functions(*coord_, "trust_w1");
  ASSERT_FALSE(HasFailure());
  FuzzCoordinator run(*coord_, kOpen, kImages, [this](int64_t k) { publish(k); },
                      [this](const std::string& by) { advance_clock(by); });

  Shared shared;  // what the sessions share with this thread
  shared.set(run.units, run.iteration, {}, Clock::now());
  std::atomic<int> running{kSessions};

  auto session = [&](int index) {
    Fuzzer fz(seed * 31 + index, kLayout);
    try {
      Connection c = as(logins[index % logins.size()]);
      c.exec("SET statement_timeout = '10s'");
      c.exec("SET lock_timeout = '5s'");
      fz.own.push_back(cluster::register_worker(c, {.name = "fz" + std::to_string(index)}));
      fz.other = honest;
      const int pid = c.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0);
      for (int n = 0; n < calls; ++n) {
        shared.give(fz);
        const Fuzzer::Call call = fz.next(fns);
        const std::string what = "session " + std::to_string(index) + ", call " + std::to_string(n) + ": " +
                                 call.describe();
        shared.calling(pid, what);
        std::string state = "ok";
        try {
          fz.learn(call, call.run(c));
        } catch (const pg::Error& e) {
          state = e.sqlstate();
          if (!kDocumentedSqlstates.count(state))
            shared.error(what + " failed with SQLSTATE " + state + ": " + shared.explain(e));
        }
        shared.record(call.fn, state);
      }
    } catch (const std::exception& e) {
      shared.error("session " + std::to_string(index) + " ended: " + e.what());
    }
    --running;
  };
  std::vector<std::thread> sessions;
  for (int i = 0; i < kSessions; ++i) sessions.emplace_back(session, i);

  std::mt19937_64 rng(seed);
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  const std::vector<std::string> skews = {"0", "0", "3 seconds", "1 minute", "10 minutes"};
  HonestWorker honest_worker{good, honest};
  shared.calling(good.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0), "the honest worker (the test's thread)");
  shared.calling(coord_->exec("SELECT pg_backend_pid()").get<int32_t>(0, 0), "the coordinator (the test's thread)");
  int checks = 0, step = 0;
  std::vector<std::string> broken;
  double slowest_close = 0;
  while (running > 0 && broken.size() < 20) {
    ++step;
    if (auto wrong = step % 10 == 3 ? honest_worker.claim() : step % 10 == 8 ? honest_worker.submit() : std::nullopt)
      broken.push_back(*wrong);
    const bool close = step % 10 == 9;
    const auto t0 = Clock::now();
    const std::string lift = chance(0.8) ? logins[std::uniform_int_distribution<size_t>(0, logins.size() - 1)(rng)] : "";
    if (auto e = run.step(close, lift, skews[std::uniform_int_distribution<size_t>(0, 4)(rng)]))
      broken.push_back("the coordinator's call failed: " + *e);
    if (close) slowest_close = std::max(slowest_close, seconds_since(t0));
    for (const std::string& v : run.violations()) broken.push_back("at step " + std::to_string(step) + ": " + v);
    ++checks;
    const Clock::time_point at = Clock::now();
    shared.set(run.units, run.iteration, run.claimed(), at);
  }
  for (std::thread& t : sessions) t.join();

  for (const std::string& e : shared.errors()) ADD_FAILURE() << e;
  for (const std::string& b : broken) ADD_FAILURE() << b;
  int total = 0;
  std::map<std::string, std::map<std::string, int>> outcomes = shared.outcomes();
  const std::string table = outcome_table(outcomes, &total);
  std::printf("%d calls from %d sessions of %zu login(s) (seed %llu) by function and outcome:\n%s"
              "%d snapshots checked; honest submissions accepted: %d; updates: %lld; slowest close %.3f s\n",
              total, kSessions, logins.size(), (unsigned long long)seed, table.c_str(), checks, honest_worker.accepted,
              (long long)run.iteration, slowest_close);
  EXPECT_EQ(total, kSessions * calls) << "every session made its calls";
  for (auto& [fn, types, names] : fns) EXPECT_GT(outcomes[fn].size(), 0u) << fn << " was never called";
  EXPECT_GT(outcomes["claim"]["ok"], 0);
  EXPECT_GT(outcomes["submit"]["ok"], 0);
  EXPECT_GT(honest_worker.accepted, 0);
  EXPECT_GT(run.iteration, 5) << "updates closed while the sessions called";
}

// After a deadlock that ended its transaction, gannf-coord ends the worker
// sessions of the cycle still in the transaction they held there, kept
// across calls (cluster::end_deadlocked_sessions). The DETAIL names the
// transaction a blocker held only where the lock was on a transaction, not
// on a tuple or an advisory key; for such a session it ended any whose
// xact_start was before its query_start -- and so is every single call in
// the extended protocol (Parse starts its transaction, Execute its query):
// beside a class of fuzzing students (seed 803 of
// AClassOfStudentsCallingAnythingBesideARealClassLeavesTheRunWhole) it
// ended a student's single submit(), and here a single pg_sleep (the test
// fails so). Now such a session is ended only while idle in a transaction
// begun before.
TEST_F(Trust, OnlyASessionStillInATransactionKeptAcrossCallsIsEndedAfterADeadlock) {
  Connection w = as("trust_w1");
  const std::string pid = std::to_string(w.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0));
  const std::string coord = std::to_string(coord_->exec("SELECT pg_backend_pid()").get<int32_t>(0, 0));
  const std::string detail = "Process " + coord + " waits for ExclusiveLock on advisory lock [16384,1,2,2]; " +
                             "blocked by process " + pid + ".\nProcess " + pid +
                             " waits for ShareLock on transaction 999; blocked by process " + coord + ".";
  std::atomic<bool> ended{false};
  std::thread call([&] {
    Params p;
    p.add(1.5);
    try {
      w.exec("SELECT pg_sleep($1)", p);  // one call, with a parameter: the extended protocol
    } catch (const pg::Error&) {
      ended = true;
    }
  });
  Params pp;
  pp.add(std::stoi(pid));
  const auto t0 = Clock::now();
  while (coord_->exec("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pp)
             .get<int64_t>(0, 0) == 0) {
    ASSERT_LT(seconds_since(t0), 10) << "the call did not start";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::vector<std::string> single = cluster::end_deadlocked_sessions(*coord_, detail);
  call.join();
  EXPECT_TRUE(single.empty()) << single.at(0);
  EXPECT_FALSE(ended) << "a single call is no transaction kept across calls";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust"), 0);

  w.exec("BEGIN");
  w.exec("SELECT gannf.now()");  // idle in a transaction kept across calls
  const std::vector<std::string> kept = cluster::end_deadlocked_sessions(*coord_, detail);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_NE(kept[0].find("ended session " + pid + " of login trust_w1"), std::string::npos) << kept[0];
  EXPECT_NE(sqlstate_of([&] { w.exec("SELECT 1"); }), "(no error)") << "the session was ended";
  EXPECT_EQ(count("SELECT strikes FROM gannf.login_trust WHERE login = 'trust_w1'"), 1);
}

// sql/0033: strike() locked the login's worker rows before it quarantined,
// so that a claim in flight on one of them committed first and was handed
// back (sql/0029) -- but not a worker the login registered after that
// lock: its claim read "not quarantined" (the quarantine not yet
// committed) and committed after drop_login_work() had read the login's
// units. A quarantined login held a unit until its lease lapsed. Found by
// Trust.ConcurrentCallsOfOneLoginLeaveTheRunWhole (seed 1009, once in 12
// runs of it; early in the run, while the login could still register
// workers). Here the strike stays uncommitted while the login registers a
// new worker and claims with it: the claim must wait for the strike and be
// refused (ZG001).
TEST_F(Trust, AWorkerRegisteredDuringAQuarantineGetsNoUnit) {
  start_run(4);
  Connection student = as("trust_w1");
  cluster::register_worker(student, {.name = "old"});
  coord_->exec("BEGIN");
  ASSERT_TRUE(coord_->exec("SELECT gannf.strike('trust_w1', 'test', 100)").get<bool>(0, 0));
  const int64_t fresh = cluster::register_worker(student, {.name = "new"});
  const int32_t pid = student.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0);
  std::string claimed;
  std::thread t([&] { claimed = sqlstate_of([&] { cluster::claim(student, fresh, 1); }); });
  const bool waits = waits_for_a_lock(pid, 200);
  coord_->exec("COMMIT");
  t.join();
  EXPECT_TRUE(waits) << "the claim waits for the strike";
  EXPECT_EQ(claimed, "ZG001") << "refused: the login is quarantined";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'"), 0)
      << "the quarantined login holds no unit";
}

// sql/0034: submit() and submit_summed() locked any unit a student named,
// another login's too, and waited for it. The coordinator strikes several
// logins in one transaction (strike_refusals(), reap()): quarantining login
// A locks A's units, then quarantining B locks B's worker rows. A submit()
// of B naming a unit of A held B's worker row (FOR KEY SHARE) and waited
// for that unit: a cycle, ended with 40P01 -- B's call here, or the
// coordinator's. Found by Trust.AClassOfStudentsCallingAnythingBesideARealClassLeavesTheRunWhole
// (seed 1130: "submit(64, 90, ...) failed with SQLSTATE 40P01 ... process
// 32719: not a session of this test", gannf-coord). Now a unit the
// caller's worker does not hold is refused without a lock, at once.
TEST_F(Trust, ASubmissionNamingAnotherLoginsUnitDoesNotWaitForIt) {
  start_run(4);
  Connection a = as("trust_w1"), b = as("trust_w2");
  const int64_t wa = cluster::register_worker(a, {.name = "a"});
  const int64_t wb = cluster::register_worker(b, {.name = "b"});
  const ClaimedUnit theirs = cluster::claim(a, wa, 1).at(0);
  const ClaimedUnit mine = cluster::claim(b, wb, 1).at(0);
  coord_->exec("BEGIN");
  ASSERT_TRUE(coord_->exec("SELECT gannf.strike('trust_w1', 'test', 100)").get<bool>(0, 0));  // A's units locked
  const int32_t pid = b.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0);
  std::string said;
  std::optional<SubmitStatus> status;
  std::thread t([&] {
    try {
      status = cluster::submit(b, wb, theirs, Result{}.for_unit(theirs)).status;
    } catch (const pg::Error& e) {
      said = e.sqlstate();
    }
  });
  const bool waits = waits_for_a_lock(pid, 50);
  const std::string struck = sqlstate_of([&] { coord_->exec("SELECT gannf.strike('trust_w2', 'test', 100)"); });
  coord_->exec(struck == "(no error)" ? "COMMIT" : "ROLLBACK");
  t.join();
  EXPECT_FALSE(waits) << "B's submission waited for A's unit";
  EXPECT_EQ(struck, "(no error)") << "the coordinator quarantined B";
  EXPECT_EQ(said, "") << "B's submission ended with an error";
  EXPECT_EQ(status, SubmitStatus::NotHeld) << "refused: not B's unit";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE quarantined_at IS NOT NULL"), 2);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'"), 0) << mine.unit_id;
}

// The fuzzers' account of an error that names server processes: a
// deadlock made on purpose between two sessions, each recorded with its
// call, is explained with both.
TEST_F(Trust, AFuzzersDeadlockSaysEachProcesssCall) {
  start_run(2);
  Connection one("dbname=" + db_), two("dbname=" + db_);
  Shared shared;
  shared.calling(one.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0), "the first session's call");
  shared.calling(two.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0), "the second session's call");
  one.exec("BEGIN");
  two.exec("BEGIN");
  one.exec("SELECT 1 FROM gannf.work_units WHERE id = 1 FOR UPDATE");
  two.exec("SELECT 1 FROM gannf.work_units WHERE id = 2 FOR UPDATE");
  std::string said_one, said_two;
  auto lock = [&](Connection& c, int id, std::string& said) {
    try {
      c.exec("SELECT 1 FROM gannf.work_units WHERE id = " + std::to_string(id) + " FOR UPDATE");
    } catch (const pg::Error& e) {
      said = e.sqlstate() + " " + shared.explain(e);
    }
    c.exec("ROLLBACK");
  };
  std::thread t([&] { lock(one, 2, said_one); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  lock(two, 1, said_two);
  t.join();
  const std::string said = said_one + said_two;  // one of them was ended
  std::printf("%s\n", said.c_str());
  EXPECT_EQ(said.rfind("40P01", 0), 0u) << said;
  EXPECT_NE(said.find("the first session's call"), std::string::npos) << said;
  EXPECT_NE(said.find("the second session's call"), std::string::npos) << said;
}

TEST_F(Trust, ConcurrentCallsOfOneLoginLeaveTheRunWhole) { concurrent_fuzz({"trust_fz"}, 20261208); }

// The same with two hostile logins, two sessions each: what one login's
// calls do to the other's (units taken off, given way, a quarantine beside
// a login that goes on). Logins of its own: ctest runs tests two at a
// time, and admitting trust_fz here with 2 connections cut the one-login
// test's 4 sessions off (FATAL: too many connections for role). Once on
// CI a session's release_held() ended with 40P01 here: units locked in
// the order a scan met them (sql/0032,
// Trust.EveryFunctionLocksSeveralRowsInOneOrder).
TEST_F(Trust, ConcurrentCallsOfTwoLoginsLeaveTheRunWhole) { concurrent_fuzz({"trust_fz2", "trust_fz3"}, 20261209); }

// sql/0029: a submission holds its worker's row FOR KEY SHARE until it
// commits, so that strike() (FOR UPDATE) waits for it; the same worker's
// other calls -- a gannf-worker heartbeats and claims on its loop's
// connection while its upload thread submits -- update last_seen (FOR NO
// KEY UPDATE), which KEY SHARE lets through. Here the submission stays in an
// open transaction: a heartbeat and a claim of its worker still answer at
// once. With last_seen updated by submit() (0028's, at its end; or early, as
// 0029 first did), both waited for the transaction (55P03 here).
TEST_F(Trust, ASubmissionInFlightDoesNotHoldUpItsWorkersOtherCalls) {
  start_run(8);
  Connection upload = as("trust_w1"), loop = as("trust_w1");
  const int64_t w = cluster::register_worker(loop, {.name = "two-connections"});
  const std::vector<ClaimedUnit> got = cluster::claim(loop, w, 2);
  ASSERT_EQ(got.size(), 2u);
  upload.exec("BEGIN");
  ASSERT_EQ(cluster::submit(upload, w, got[0], Result{}.for_unit(got[0])).status, SubmitStatus::Accepted);
  loop.exec("SET lock_timeout = '1s'");
  EXPECT_EQ(sqlstate_of([&] { cluster::heartbeat(loop, w, got[1]); }), "(no error)");
  EXPECT_EQ(sqlstate_of([&] { cluster::claim(loop, w, 1); }), "(no error)");
  upload.exec("COMMIT");
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'pending'"), 1);
}

// sql/0032: every statement that locks several units locks them in id
// order, as claim(), submit_summed() and take_off_late_logins() did. The
// others (release_held(), drop_login_work(), take_off(), carry_over())
// updated them in the order the scan met their rows, which follows where
// each row's last version lies in the table, not its id: one holding unit
// b and waiting for unit a, and another holding a and waiting for b,
// deadlocked (40P01). Found by Trust.ConcurrentCallsOfTwoLoginsLeaveTheRunWhole
// (release_held() ended with 40P01, once, on CI). Here a worker holds units
// a < b with b's row before a's (a handed back and claimed again), a
// transaction holds a, the function runs, and the transaction then locks b:
// the function must wait for a without holding b. note_taken() writes its
// logins' rows of login_taken in login order, likewise.
TEST_F(Trust, EveryFunctionLocksSeveralRowsInOneOrder) {
  start_run(8);
  Connection other_coord("dbname=" + db_);
  auto hold_two = [&](Connection& s, int64_t w) -> std::pair<int64_t, int64_t> {
    ClaimedUnit a = cluster::claim(s, w, 1).at(0);
    const ClaimedUnit b = cluster::claim(s, w, 1).at(0);
    Params p;
    p.add(w);
    const std::string reversed = "{" + std::to_string(b.unit_id) + "," + std::to_string(a.unit_id) + "}";
    std::string order;
    // A new row version usually lies after the others; one that reuses a
    // slot pruning freed may not: then again.
    for (int i = 0; i < 10 && order != reversed; ++i) {
      EXPECT_TRUE(cluster::release(s, w, a));
      const ClaimedUnit again = cluster::claim(s, w, 1).at(0);
      EXPECT_EQ(again.unit_id, a.unit_id);
      a = again;
      order = coord_->exec("SELECT array_agg(id ORDER BY ctid)::text FROM gannf.work_units "
                           "WHERE worker_id = $1 AND state = 'claimed'", p).get<std::string>(0, 0);
    }
    EXPECT_EQ(order, reversed) << "the set-up puts b's row before a's";
    return {a.unit_id, b.unit_id};
  };
  // A transaction locks a row (`first`); `call` runs and waits for it; the
  // transaction then locks `second`, which the call must not hold.
  auto waits_holding_nothing = [&](const std::string& what, Connection& caller, const std::function<void()>& call,
                                   const std::string& first, const std::string& second_row) {
    SCOPED_TRACE(what);
    const int32_t pid = caller.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0);
    Connection holder("dbname=" + db_);
    holder.exec("BEGIN");
    holder.exec(first);
    std::string called;
    std::thread t([&] { called = sqlstate_of(call); });
    EXPECT_TRUE(waits_for_a_lock(pid, 500)) << "the call waits for the first row";
    holder.exec("SET LOCAL lock_timeout = '5s'");
    const std::string second = sqlstate_of([&] { holder.exec(second_row); });
    holder.exec(second == "(no error)" ? "COMMIT" : "ROLLBACK");
    t.join();
    EXPECT_EQ(second, "(no error)") << "the second row was free while the call waited for the first";
    EXPECT_EQ(called, "(no error)") << "the call waited for the first row, holding the second";
  };
  auto locks_in_id_order = [&](const std::string& what, Connection& caller, const std::function<void()>& call,
                               int64_t a, int64_t b) {
    waits_holding_nothing(what, caller, call,
                          "SELECT 1 FROM gannf.work_units WHERE id = " + std::to_string(a) + " FOR UPDATE",
                          "SELECT 1 FROM gannf.work_units WHERE id = " + std::to_string(b) + " FOR UPDATE");
  };

  Connection s1 = as("trust_w1");
  const int64_t w1 = cluster::register_worker(s1, {.name = "order"});
  auto [a, b] = hold_two(s1, w1);
  locks_in_id_order("release_held", s1, [&] { cluster::release_held(s1, w1); }, a, b);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'"), 0);

  std::tie(a, b) = hold_two(s1, w1);
  locks_in_id_order("drop_login_work", other_coord,
                    [&] { other_coord.exec("SELECT gannf.drop_login_work('trust_w1', 'test')"); }, a, b);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'"), 0);

  std::tie(a, b) = hold_two(s1, w1);
  const std::string take_off = "SELECT gannf.take_off(ARRAY[" + std::to_string(b) + "," + std::to_string(a) +
                               "]::bigint[], 'late', NULL)";
  locks_in_id_order("take_off", other_coord, [&] { other_coord.exec(take_off); }, a, b);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'"), 0);

  // trust_w1 is held to one unit now (a unit was taken off it): another login.
  Connection s2 = as("trust_w2");
  const int64_t w2 = cluster::register_worker(s2, {.name = "order"});
  std::tie(a, b) = hold_two(s2, w2);
  locks_in_id_order("carry_over", other_coord, [&] { other_coord.exec("SELECT gannf.carry_over(0)"); }, a, b);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE iteration = 1"), 8);

  // Rows of login_taken too, in login order: PostgreSQL's hash of these
  // two names puts trust_fz3 first, and note_taken()'s GROUP BY hashed.
  coord_->exec("SELECT gannf.note_taken(ARRAY['trust_fz2', 'trust_fz3']::name[])");
  waits_holding_nothing("note_taken", other_coord,
                        [&] { other_coord.exec("SELECT gannf.note_taken(ARRAY['trust_fz2', 'trust_fz3']::name[])"); },
                        "SELECT 1 FROM gannf.login_taken WHERE login = 'trust_fz2' FOR UPDATE",
                        "SELECT 1 FROM gannf.login_taken WHERE login = 'trust_fz3' FOR UPDATE");
  EXPECT_EQ(count("SELECT sum(units)::bigint FROM gannf.login_taken WHERE login IN ('trust_fz2', 'trust_fz3')"), 4);

  // gannf-coord remove-students frees the login's units (students.cpp), as
  // an administrator; a login of this test's own, for it ends its sessions.
  admit("trust_rm", 4);
  next_update(1);
  {
    Connection s3 = as("trust_rm");
    const int64_t w3 = cluster::register_worker(s3, {.name = "order"});
    std::tie(a, b) = hold_two(s3, w3);
  }
  Connection administrator("user=postgres dbname=" + db_);
  administrator.on_notice({});
  cluster::RemoveOutcome removed;
  locks_in_id_order("remove_student_login", administrator,
                    [&] { removed = cluster::remove_student_login(administrator, "trust_rm", false); }, a, b);
  EXPECT_EQ(removed.units_freed, 2);
}

// sql/0028, found by the test above. submit() and submit_summed() compared
// arguments with `<>`, which a NULL passes, and multiplied a BN count by 4:
// a NULL attempt, gradient or checksum, a checksum outside CRC-32C's range
// or a BN count near 2^63 reached the INSERT (or overflowed) and failed with
// 23502, 23514 or 22003. None was 22023, so no refusal counted (sql/0015): a
// login could upload a full-size gradient with a checksum of -1 in a loop,
// for ever, without a strike. Each is now refused with 22023 and counted,
// and the unit is still the caller's to submit correctly. monitor_look()
// with a negative limit raised 2201W; now 22023 (it counts nothing).
TEST_F(Trust, ArgumentsTheChecksMissedAreRefusedAndCounted) {
  start_run(8);
  settings("strike_threshold = 100");
  Connection bot = as("trust_w1");
  Fuzzer fz(1, kLayout);
  fz.own.push_back(cluster::register_worker(bot, {.name = "bot"}));
  for (const ClaimedUnit& u : cluster::claim(bot, fz.own[0], 2)) fz.held.push_back({fz.own[0], u});
  ASSERT_EQ(fz.held.size(), 2u);
  std::map<std::string, std::vector<std::string>> types;
  for (auto& [fn, t, names] : worker_functions(*coord_, "trust_w1")) types[fn] = t;
  // A correct call of fn (submit_summed: of both units), then one argument replaced.
  auto call = [&](const std::string& fn, size_t arg, FuzzArg value) {
    Fuzzer::Call c{fn, types[fn], {}};
    do c.args = fz.honest(fn, c.types.size());
    while (fn == "submit_summed" && c.args[1]->find(',') == std::string::npos);
    c.args.at(arg) = std::move(value);
    return c;
  };
  // Arguments: 2 the attempt (submit), 7 and 14 the gradients, 8 and 15
  // their checksums, 11 and 18 the BN statistics' checksums, 16 D's BN count.
  const std::vector<Fuzzer::Call> refused = {
      call("submit", 2, std::nullopt),
      call("submit", 7, std::nullopt),
      call("submit", 8, std::nullopt),
      call("submit", 8, "-1"),
      call("submit", 11, "4294967296"),
      call("submit", 15, "-1"),
      call("submit", 16, "9223372036854775807"),
      call("submit_summed", 14, std::nullopt),
      call("submit_summed", 15, "4294967296"),
      call("submit_summed", 18, "-1"),
      call("submit_summed", 16, "9223372036854775807"),
  };
  auto refusals = [&] {
    pg::Result r = coord_->exec("SELECT refusals FROM gannf.strike_refusals()");
    return r.rows() == 1 ? r.get<int64_t>(0, 0) : 0;
  };
  for (const Fuzzer::Call& c : refused) {
    EXPECT_EQ(sqlstate_of([&] { c.run(bot); }), "22023") << c.describe();
    EXPECT_EQ(refusals(), 1) << c.describe() << ": counted as a refusal";
  }
  EXPECT_EQ(count("SELECT strikes FROM gannf.login_trust WHERE login = 'trust_w1'"), (int64_t)refused.size());
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 0) << "nothing of a refused call stays";

  Fuzzer::Call look{"monitor_look", types["monitor_look"], {"0", "0", "0", "-1", "false"}};
  EXPECT_EQ(sqlstate_of([&] { look.run(bot); }), "22023");
  look.args[3] = std::nullopt;
  EXPECT_EQ(sqlstate_of([&] { look.run(bot); }), "22023") << "NULL: no limit at all";
  look.args[3] = "0";
  EXPECT_EQ(sqlstate_of([&] { look.run(bot); }), "(no error)");
  EXPECT_EQ(refusals(), 0);

  // The units are still the login's, and a correct summed call is accepted.
  Fuzzer::Call good = call("submit_summed", 0, std::to_string(fz.own[0]));
  EXPECT_EQ(good.run(bot).get<std::string>(0, 0), "accepted");
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'pending'"), 2);
}

// sql/roles.sql, "what no login of database gannf may do but the
// coordinator". PostgreSQL grants advisory locks and large objects to
// PUBLIC. A student's session-level advisory lock outlives every statement
// and transaction the reaper bounds: on the coordinator's key it kept a
// restarted gannf-coord out and had its NOTIFYs taken for the
// coordinator's; on the migrations' key every gannf-coord start waited for
// it. A large object stays after the session, with no quota (200 MB in one
// statement of 3.4 s on the development machine). The section runs here in
// this test's database, as roles.sql runs it in database gannf.
TEST_F(Trust, AWorkerLoginTakesNoAdvisoryLockAndStoresNoLargeObject) {
  start_run(4);
  // The keys of coordinator.cpp (0x67616e6e66636f) and migrate.cpp (0x67616e6e66).
  const int64_t kCoordinatorKey = 0x67616e6e66636f;
  Connection student = as("trust_w1");
  Params coord_key;
  coord_key.add(kCoordinatorKey);
  // What PostgreSQL allows by default: the student holds the coordinator's key.
  ASSERT_TRUE(student.exec("SELECT pg_try_advisory_lock($1)", coord_key).get<bool>(0, 0));
  EXPECT_FALSE(coord_->exec("SELECT pg_try_advisory_lock($1)", coord_key).get<bool>(0, 0))
      << "a gannf-coord started now is refused";
  student.exec("SELECT pg_advisory_unlock_all()");

  const std::string section = gannf::test::roles_sql_section("what no login of database gannf may do");
  ASSERT_FALSE(section.empty()) << "sql/roles.sql has no such section";
  {
    Connection su("user=postgres dbname=" + db_);
    su.exec(section);
  }
  Connection late = as("trust_w1");  // and a session opened after it
  for (Connection* c : {&student, &late}) {
    for (const char* sql : {"SELECT pg_advisory_lock(29099049527698287)", "SELECT pg_try_advisory_lock(444016258662)",
                            "SELECT pg_advisory_lock_shared(444016258662)", "SELECT pg_advisory_lock(1, 2)",
                            "SELECT pg_try_advisory_xact_lock(1)", "SELECT pg_advisory_xact_lock_shared(1, 2)",
                            "SELECT lo_from_bytea(0, 'x')", "SELECT lo_creat(-1)", "SELECT lo_create(0)"})
      EXPECT_EQ(sqlstate_of([&] { c->exec(sql); }), "42501") << sql;
  }
  // The worker functions take their own (transaction-level) locks as their
  // owner: a worker registers, claims and submits as before.
  const int64_t w = cluster::register_worker(student, {.name = "locked-out"});
  const std::vector<ClaimedUnit> got = cluster::claim(student, w, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(submit_summed(student, w, got).status, SubmitStatus::Accepted);
  // And the coordinator takes its own key, and the migrations' (a migrate()
  // of a migrated database: nothing to do, under the lock).
  EXPECT_TRUE(coord_->exec("SELECT pg_try_advisory_lock($1)", coord_key).get<bool>(0, 0));
  EXPECT_NO_THROW(cluster::migrate(*coord_));
}

// sql/roles.sql keeps a worker login out of the server's log. PostgreSQL
// logs each failing statement with its whole text (log_min_error_statement
// = error), and many errors quote the value that failed: a student's loop
// of failing 1 MB statements wrote 40 MB a second to the log of the
// development machine's server -- a log that shares the database's disk.
// A login admitted by admit_student, and a login made by hand once
// roles.sql's last section has run, leave nothing there, in any database,
// and cannot set it back; a login made by hand before that (the control)
// still does, which shows that the test reads the log the server writes.
TEST_F(Trust, AStudentsFailingStatementsDoNotFillTheServersLog) {
  Connection su("user=postgres dbname=postgres");
  su.on_notice({});
  // tools/pg-embedded.sh's server writes its log beside its data folder.
  const std::filesystem::path log =
      std::filesystem::path(su.exec("SHOW data_directory").get<std::string>(0, 0)).parent_path() / "postgres.log";
  ASSERT_TRUE(std::filesystem::exists(log)) << "this test reads the server log that tools/pg-embedded.sh keeps: " << log;
  su.exec("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'trust_by_hand') THEN "
          "CREATE ROLE trust_by_hand LOGIN IN ROLE gannf_worker; END IF; END $$");
  su.exec("ALTER ROLE trust_by_hand RESET ALL");  // as CREATE ROLE made it, whatever an earlier run did
  const auto from = std::filesystem::file_size(log);
  const std::string tag = "gannf-log-probe-" + std::to_string(::getpid()) + "-" +
                          std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  // A failing statement of about 1 MB whose text and error both carry `mark`.
  auto fail_loudly = [&](Connection& c, const std::string& mark) {
    const std::string sql = "SELECT '" + mark + std::string(1 << 20, 'x') + "'::integer";
    EXPECT_EQ(sqlstate_of([&] { c.exec(sql); }), "22P02");
  };
  {
    Connection admitted = as("trust_w1"), elsewhere("user=trust_w1 dbname=postgres");
    for (Connection* c : {&admitted, &elsewhere}) {
      EXPECT_EQ(c->exec("SHOW log_min_messages").get<std::string>(0, 0), "panic");
      EXPECT_EQ(c->exec("SHOW log_min_error_statement").get<std::string>(0, 0), "panic");
      EXPECT_EQ(sqlstate_of([&] { c->exec("SET log_min_messages = 'debug5'"); }), "42501") << "SUSET";
      EXPECT_EQ(sqlstate_of([&] { c->exec("SET log_min_error_statement = 'debug5'"); }), "42501") << "SUSET";
      for (int i = 0; i < 3; ++i) fail_loudly(*c, tag + "-admitted-");
    }
  }
  {
    Connection by_hand("user=trust_by_hand dbname=" + db_);
    fail_loudly(by_hand, tag + "-control-");
  }
  // roles.sql's last section, as its administrator runs it (again).
  const std::string section = gannf::test::roles_sql_section("worker logins kept out of the server's log");
  ASSERT_FALSE(section.empty()) << "sql/roles.sql has no such section";
  {
    Connection in_gannf("user=postgres dbname=gannf");  // where roles.sql runs it, beside its gannf_admin functions
    in_gannf.on_notice({});
    in_gannf.exec(section);
  }
  {
    Connection by_hand("user=trust_by_hand dbname=" + db_);
    EXPECT_EQ(by_hand.exec("SHOW log_min_error_statement").get<std::string>(0, 0), "panic");
    for (int i = 0; i < 3; ++i) fail_loudly(by_hand, tag + "-after-");
    fail_loudly(*coord_, tag + "-coordinator-");  // the coordinator's own errors stay in the log
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::ifstream f(log, std::ios::binary);
  f.seekg((std::streamoff)from);
  std::string grown((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto times = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = 0; (at = grown.find(tag + what, at)) != std::string::npos; at += what.size()) ++n;
    return n;
  };
  EXPECT_GE(times("-control-"), 2u) << "the control's error and statement: is " << log << " the server's log?";
  EXPECT_GE(times("-coordinator-"), 2u);
  EXPECT_EQ(times("-admitted-"), 0u) << "an admitted login's failing statements reached the server's log";
  EXPECT_EQ(times("-after-"), 0u) << "a login by hand, after roles.sql, reached the server's log";
  std::printf("the server's log grew %.1f MB in this test (others beside it write there too); there, the "
              "control's one failing statement of 1 MB %zu times, the admitted login's six %zu, the three after "
              "roles.sql %zu, the coordinator's one %zu\n",
              grown.size() / 1e6, times("-control-"), times("-admitted-"), times("-after-"), times("-coordinator-"));
}
