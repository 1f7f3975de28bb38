// The cluster end to end (label cluster): real gannf-coord and gannf-worker
// processes against the fixture's private PostgreSQL.
//
//  - DistributedEqualsLocal: the test that matters most. K units of B images
//    computed by two worker processes give the update of one local
//    gannf-train step on the same K·B images (weights, BN running statistics
//    and their counters, Adam moments).
//  - Racing workers never process a unit twice and never lose one.
//  - Hostile submissions are rejected with a reason and the run goes on.
//  - Units still open when an iteration closes are served again, not lost.
//  - SIGTERM makes a worker hand its unit back and exit 0.
//  - The classroom path: a student login made as the README says, a worker
//    reaching the server over TCP with its password in a pgpass file; a wrong
//    password is refused with one line that says where passwords go.
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "blob.h"
#include "protocol.h"
#include "run_settings.h"
#include "safetensors.h"
#include "small_train.h"
#include "test_cluster_harness.h"
#include "trainer.h"

namespace {

using namespace gannf;
using namespace gannf::test;

struct Diff {
  double max_rel = 0;   // max |a - b| / max(|b|, floor) over the elements
  double norm_rel = 0;  // ||a - b|| / ||b||
  double max_abs = 0;
};

// `floor` keeps elements that are (nearly) zero in the reference from
// dominating a relative measure: see the tolerance comment in the test.
Diff compare(const std::vector<float>& a, const std::vector<float>& b, double floor) {
  Diff d;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double e = std::fabs((double)a[i] - (double)b[i]);
    d.max_abs = std::max(d.max_abs, e);
    d.max_rel = std::max(d.max_rel, e / std::max(std::fabs((double)b[i]), floor));
    num += e * e;
    den += (double)b[i] * b[i];
  }
  d.norm_rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return d;
}

TEST(RunSettings, MicroBatchesFoldATrailingSingleImage) {
  EXPECT_EQ(cluster::micro_batches(8, 4), (std::vector<int>{4, 4}));
  EXPECT_EQ(cluster::micro_batches(9, 4), (std::vector<int>{4, 5}));
  EXPECT_EQ(cluster::micro_batches(10, 4), (std::vector<int>{4, 4, 2}));
  EXPECT_EQ(cluster::micro_batches(3, 8), (std::vector<int>{3}));
  EXPECT_EQ(cluster::micro_batches(2, 2), (std::vector<int>{2}));
}

TEST(RunSettings, JsonRoundTripAndRefusal) {
  cluster::RunSettings s;
  s.dataset = "synthetic:64";
  s.dataset_size = 64;
  s.seed = 0xFEDCBA9876543210ull;  // all 64 bits survive
  s.learning_rate = 2e-4;
  s.extra_units = 2;
  const auto back = cluster::RunSettings::from_json(s.to_json());
  EXPECT_EQ(back.seed, s.seed);
  EXPECT_EQ(back.learning_rate, s.learning_rate);
  EXPECT_EQ(back.extra_units, 2);
  EXPECT_EQ(back.to_json(), s.to_json());
  // The classroom default, and a run stored before the trust section reads
  // as it was made: the exact mean, no checks.
  EXPECT_EQ(s.aggregation, "clip+trimmed");
  EXPECT_EQ(s.spot_check, 0.1);
  auto old = nlohmann::json::parse(s.to_json());
  old.erase("trust");
  const auto before = cluster::RunSettings::from_json(old.dump());
  EXPECT_EQ(before.aggregation, "mean");
  EXPECT_EQ(before.spot_check, 0);
  EXPECT_EQ(before.norm_ratio, 0);
  EXPECT_EQ(before.quorum, 1);
  // The quorum (a later key of the trust section): the classroom's 0.6; a
  // run stored before it waited for every unit, and still does.
  EXPECT_EQ(back.quorum, 0.6);
  auto no_quorum = nlohmann::json::parse(s.to_json());
  no_quorum["trust"].erase("quorum");
  EXPECT_EQ(cluster::RunSettings::from_json(no_quorum.dump()).quorum, 1);
  EXPECT_THROW(cluster::RunSettings::from_json("{}"), std::runtime_error);
  EXPECT_THROW(cluster::RunSettings::from_json("not json"), std::runtime_error);
}

class Cluster : public ClusterRun {};

TEST_F(Cluster, DistributedEqualsLocal) {
  // K = 3 units of B = 8 images, micro-batches of 4, on two worker processes;
  // locally: one step of 24 images in micro-batches of 4.
  constexpr int K = 3, B = 8, kMicro = 4;
  constexpr uint64_t kSeed = 7;
  coord_cmd("init", small_run(64, B, K, kSeed));
  if (HasFatalFailure()) return;
  // Both workers wait, registered, while the run is paused; the coordinator
  // resumes it and both race for the units (whichever takes which), slowed
  // down a little so that neither takes all three.
  coord().exec("UPDATE gannf.training_state SET status = 'paused'");
  Proc& a = start_worker("a", {"--batch-size", std::to_string(kMicro), "--exit-when-done", "--throttle-ms", "300"});
  Proc& b = start_worker("b", {"--batch-size", std::to_string(kMicro), "--exit-when-done", "--throttle-ms", "300"}, 2);
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers") == 2; }, 30)) << logs();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // both past their first claim, listening
  Proc& run = start_coord_run({"--iterations", "1", "--checkpoint-interval", "1", "--sample-interval", "1"});
  auto rc = run.wait(60);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  EXPECT_EQ(a.wait(30), 0) << logs();
  EXPECT_EQ(b.wait(30), 0) << logs();
  EXPECT_GE(count("SELECT count(DISTINCT worker_id) FROM gannf.submissions WHERE iteration = 0 AND state = 'used'"), 2)
      << "both workers should have contributed:\n" << logs();
  EXPECT_EQ(count("SELECT submissions_used FROM gannf.loss_history WHERE iteration = 0"), K);

  // The local step.
  TrainOptions o = test::small_train_options((dir_ / "local").string(), 64, 8, K * B, kMicro, kSeed);
  o.threads = 1;  // as the workers: the same BLAS partitioning
  Trainer local(o);
  const StepStats st = local.step();
  const std::string lck = (dir_ / "local" / "checkpoints" / "step-00000001").string();
  local.save_checkpoint(lck);
  const std::string cck = (dir_ / "out" / "checkpoints" / "step-00000001").string();
  ASSERT_TRUE(fs::is_directory(cck)) << logs();
  ASSERT_TRUE(fs::exists(dir_ / "out" / "samples" / "step-00000001.png"));

  // Tolerance, per element: |cluster - local| <= 1e-5·|local| + 1e-6·max|local|
  // of the tensor, and per tensor ||cluster - local|| <= 1e-5·||local||.
  // Both sides add the same per-image terms in another order and grouping
  // (per unit, then a sample-weighted average in double, against one float
  // accumulation over all micro-batches), so gradients agree to float
  // rounding at the scale of the tensor's largest terms (measured: ~1e-7 of
  // max|g|, norm-wise ~3e-7) — hence the small absolute floor. BN running
  // statistics come out bit for bit (the same kernel on the same batch
  // statistics). One exception, from Adam: its first step is
  // lr·g/(|g| + eps), whose sensitivity to g is lr·eps/(|g| + eps)²; for an
  // element whose gradient is within ~100 eps of zero a rounding-level Δg
  // moves the step by a visible fraction of lr. Such elements (a handful of
  // tens of thousands) are held to "at most one Adam step apart" instead.
  constexpr double kRtol = 1e-5, kAtolOfMax = 1e-6;
  const double kLr = 2e-4, kEps = 1e-8;
  const std::vector<float> grad[2] = {local.G().get_grads(), local.D().get_grads()};
  const Layout* layout[2] = {&local.G().params_layout(), &local.D().params_layout()};
  double worst = 0, worst_norm = 0;
  std::string worst_name;
  int adam_exempt = 0;
  for (const char* file : {"generator.safetensors", "discriminator.safetensors", "state.safetensors"}) {
    const int net = std::string(file) == "discriminator.safetensors" ? 1 : 0;
    const auto L = SafeTensors::load(lck + "/" + file), C = SafeTensors::load(cck + "/" + file);
    for (const std::string& name : L.names()) {
      ASSERT_TRUE(C.has(name)) << file << ": " << name << " missing from the coordinator's checkpoint";
      if (name == "counters") {
        const auto lc = L.ints(name), cc = C.ints(name);
        ASSERT_EQ(cc.size(), 5u);
        EXPECT_EQ(cc[0], lc[0]) << "steps";
        EXPECT_EQ(cc[3], lc[3]) << "G's Adam step";
        EXPECT_EQ(cc[4], lc[4]) << "D's Adam step";
        continue;
      }
      if (name.find("num_batches_tracked") != std::string::npos) {
        EXPECT_EQ(C.ints(name), L.ints(name)) << file << ": " << name;
        continue;
      }
      const auto lv = L.floats(name), cv = C.floats(name);
      ASSERT_EQ(lv.size(), cv.size()) << name;
      // A parameter tensor: where its gradient sits in the flat buffer.
      const TensorSpec* spec = std::string(file) != "state.safetensors" ? layout[net]->find(name) : nullptr;
      double ref_max = 0;
      for (float x : lv) ref_max = std::max(ref_max, (double)std::fabs(x));
      int bad = 0;
      for (size_t i = 0; i < lv.size(); ++i) {
        const double e = std::fabs((double)cv[i] - (double)lv[i]);
        double tol = kRtol * std::fabs(lv[i]) + kAtolOfMax * ref_max;
        if (spec && std::fabs(grad[net][spec->offset + i]) < 100 * kEps && e > tol) {
          ++adam_exempt;
          tol = kLr;
        } else {
          const double rel = e / std::max((double)std::fabs(lv[i]), kAtolOfMax / kRtol * ref_max);
          if (rel > worst) worst = rel, worst_name = std::string(file) + ":" + name;
        }
        if (e > tol && bad++ < 3)
          ADD_FAILURE() << file << ": " << name << "[" << i << "] cluster " << cv[i] << " local " << lv[i];
      }
      const Diff d = compare(cv, lv, 0);
      EXPECT_LE(d.norm_rel, kRtol) << file << ": " << name;
      worst_norm = std::max(worst_norm, d.norm_rel);
    }
  }
  std::printf("distributed vs local: max element-wise relative difference %.3g (%s), max norm-wise %.3g; "
              "%d elements with |g| < 100 eps within one Adam step\n",
              worst, worst_name.c_str(), worst_norm, adam_exempt);
  EXPECT_LE(adam_exempt, 10);

  // The losses the coordinator recorded are the local step's.
  pg::Result h = coord().exec("SELECT loss_d, loss_g, d_real, d_fake, d_accuracy, samples FROM gannf.loss_history");
  ASSERT_EQ(h.rows(), 1);
  EXPECT_NEAR(h.get<float>(0, 0), st.d_loss, 1e-5);
  EXPECT_NEAR(h.get<float>(0, 1), st.g_loss, 1e-5);
  EXPECT_NEAR(h.get<float>(0, 2), st.d_real, 1e-5);
  EXPECT_NEAR(h.get<float>(0, 3), st.d_fake, 1e-5);
  EXPECT_NEAR(h.get<float>(0, 4), st.d_acc, 1e-6);
  EXPECT_EQ(h.get<int32_t>(0, 5), K * B);
}

TEST_F(Cluster, RacingWorkersNeverProcessAUnitTwiceNorLoseOne) {
  // 4 workers, 6 units of 4 images per update, 8 updates: 2 epochs of 96.
  constexpr int kWorkers = 4, kData = 96, kPer = 4, kUnits = 6, kIterations = 8;
  coord_cmd("init", small_run(kData, kPer, kUnits, 3));
  if (HasFatalFailure()) return;
  std::vector<Proc*> workers;
  for (int i = 0; i < kWorkers; ++i)
    workers.push_back(&start_worker("racer" + std::to_string(i), {"--batch-size", "2", "--exit-when-done"},
                                    1 + i % 2));
  Proc& run = start_coord_run({"--iterations", std::to_string(kIterations), "--sample-interval", "0",
                               "--checkpoint-interval", "0"});
  auto rc = run.wait(90);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  for (Proc* w : workers) EXPECT_EQ(w->wait(30), 0) << logs();

  // Every used unit of the 8 updates: each done once, by one submission,
  // claimed once; together they tile [0, 96) of both epochs exactly.
  pg::Result u = coord().exec(
      "SELECT u.epoch, u.first_index, u.sample_count, u.attempt, "
      "(SELECT count(*) FROM gannf.submissions s WHERE s.work_unit_id = u.id) AS subs, "
      "(SELECT count(*) FROM gannf.submissions s WHERE s.work_unit_id = u.id AND s.state = 'used') AS used "
      "FROM gannf.work_units u WHERE u.state = 'done' ORDER BY u.epoch, u.first_index");
  ASSERT_EQ(u.rows(), kUnits * kIterations) << logs();
  std::map<int, int64_t> next;  // per epoch: where the next unit must start
  std::set<int64_t> workers_seen;
  for (int i = 0; i < u.rows(); ++i) {
    const int e = u.get<int32_t>(i, 0);
    EXPECT_EQ(u.get<int64_t>(i, 1), next[e]) << "gap or overlap in epoch " << e;
    next[e] = u.get<int64_t>(i, 1) + u.get<int32_t>(i, 2);
    EXPECT_EQ(u.get<int32_t>(i, 3), 1) << "a unit was claimed twice";
    EXPECT_EQ(u.get<int64_t>(i, 4), 1) << "a unit was submitted twice";
    EXPECT_EQ(u.get<int64_t>(i, 5), 1);
  }
  EXPECT_EQ(next[0], kData);
  EXPECT_EQ(next[1], kData);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state IN ('rejected', 'stale')"), 0);
  EXPECT_EQ(count("SELECT sum(samples) FROM gannf.loss_history"), (int64_t)kData * 2);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), kIterations);
  EXPECT_GE(count("SELECT count(DISTINCT worker_id) FROM gannf.submissions"), 2);
  // losses.csv counts as gannf-train's does: updates and epochs from 1, the
  // epoch of the update's images (4 updates of 24 images an epoch).
  const auto rows = test::losses_csv_steps((dir_ / "out" / "losses.csv").string());
  ASSERT_EQ(rows.size(), (size_t)kIterations) << logs();
  for (int i = 0; i < kIterations; ++i) {
    EXPECT_EQ(rows[i].first, i + 1);
    EXPECT_EQ(rows[i].second, i < 4 ? 1 : 2) << "update " << i + 1;
  }
  // What the iteration left open is intact: the units of update 9, unclaimed
  // or submitted, none lost.
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state <> 'done'"), kUnits);
}

TEST_F(Cluster, HostileSubmissionsAreRejectedAndTheRunGoesOn) {
  constexpr int B = 8, K = 2;
  coord_cmd("init", small_run(64, B, K, 11));
  if (HasFatalFailure()) return;
  Proc& run = start_coord_run({"--iterations", "1", "--sample-interval", "0", "--checkpoint-interval", "0"});

  // A hostile worker: the right sizes, but poison inside.
  pg::Connection evil = connect_or_fail(worker_db(2));
  const int64_t me = cluster::register_worker(evil, {.name = "evil", .batch_size = B});
  pg::Result w = evil.exec("SELECT network::text, layout_hash, element_count, bn_count FROM gannf.weights "
                           "WHERE iteration = 0 ORDER BY network");
  ASSERT_EQ(w.rows(), 2);
  std::map<std::string, std::tuple<uint64_t, int64_t, int64_t>> nets;
  for (int i = 0; i < 2; ++i)
    nets[w.get<std::string>(i, 0)] = {(uint64_t)w.get<int64_t>(i, 1), w.get<int64_t>(i, 2), w.get<int64_t>(i, 3)};
  auto [gh, gn, gbn] = nets["G"];
  auto [dh, dn, dbn] = nets["D"];
  std::vector<float> g(gn, 1e-3f), gstats(gbn, 0.5f), d(dn, 1e-3f), dstats(2 * dbn, 0.5f);
  auto result = [&](const cluster::ClaimedUnit& u) {
    cluster::UnitResult r;
    r.sample_count = u.sample_count;
    r.micro_batch = u.sample_count;  // one forward of G, two of D
    r.g = {gh, g, gstats};
    r.d = {dh, d, dstats};
    return r;
  };
  auto claim_one = [&] {
    std::vector<cluster::ClaimedUnit> u;
    EXPECT_TRUE(wait_for([&] { return !(u = cluster::claim(evil, me)).empty(); }, 10));
    return u.at(0);
  };
  auto rejected = [&](int n) {
    return wait_for([&] { return count("SELECT count(*) FROM gannf.submissions WHERE state = 'rejected'") >= n; }, 10);
  };

  // 1. NaN in the gradient, checksums right.
  cluster::ClaimedUnit u1 = claim_one();
  g[17] = std::nanf("");
  ASSERT_EQ(cluster::submit(evil, me, u1, result(u1)).status, cluster::SubmitStatus::Accepted);
  ASSERT_TRUE(rejected(1)) << logs();
  g[17] = 1e-3f;
  // 2. A checksum that does not match the bytes (sent by hand: the protocol
  //    helper computes it right).
  cluster::ClaimedUnit u2 = claim_one();
  {
    cluster::EncodedBlob gb(g), gs(gstats), db(d), ds(dstats);
    pg::Params p;
    p.add(me).add(u2.unit_id).add(u2.attempt).add(u2.iteration).add(u2.sample_count);
    p.add((int64_t)gh).add(gn).bytes(gb.bytes()).add((int64_t)(gb.checksum() ^ 1)).add(gbn).bytes(gs.bytes())
        .add((int64_t)gs.checksum());
    p.add((int64_t)dh).add(dn).bytes(db.bytes()).add((int64_t)db.checksum()).add(2 * dbn).bytes(ds.bytes())
        .add((int64_t)ds.checksum());
    p.null(pg::oid::kFloat4).null(pg::oid::kFloat4).null(pg::oid::kFloat4).null(pg::oid::kFloat4)
        .null(pg::oid::kFloat4).null(pg::oid::kFloat4).add((int32_t)u2.sample_count);
    pg::Result r = evil.exec("SELECT status FROM gannf.submit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
                             "$13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)",
                             p);
    ASSERT_EQ(r.get<std::string>(0, 0), "accepted");
  }
  ASSERT_TRUE(rejected(2)) << logs();
  // 3. A wrong layout hash: the database refuses it outright.
  cluster::ClaimedUnit u3 = claim_one();
  {
    cluster::UnitResult r = result(u3);
    r.d.layout_hash ^= 0x10;
    try {
      cluster::submit(evil, me, u3, r);
      ADD_FAILURE() << "a foreign layout was accepted";
    } catch (const pg::Error& e) {
      EXPECT_EQ(e.sqlstate(), "22023");
    }
  }
  // 4. BN statistics of a different number of forward passes than the
  //    micro-batch size says (two for G where one was run), and a negative
  //    variance would be the next lie: the coordinator counts.
  {
    cluster::UnitResult r = result(u3);
    std::vector<float> two(2 * gbn, 0.5f);
    r.g.bn_stats = two;
    ASSERT_EQ(cluster::submit(evil, me, u3, r).status, cluster::SubmitStatus::Accepted);
  }
  ASSERT_TRUE(rejected(3)) << logs();
  EXPECT_TRUE(run.running()) << "the coordinator died of a hostile submission:\n" << logs();

  pg::Result reasons = coord().exec("SELECT reject_reason FROM gannf.submissions WHERE state = 'rejected' ORDER BY id");
  ASSERT_EQ(reasons.rows(), 3);
  EXPECT_NE(reasons.get<std::string>(0, 0).find("non-finite"), std::string::npos) << reasons.get<std::string>(0, 0);
  EXPECT_NE(reasons.get<std::string>(1, 0).find("checksum"), std::string::npos) << reasons.get<std::string>(1, 0);
  EXPECT_NE(reasons.get<std::string>(2, 0).find("BN statistics"), std::string::npos) << reasons.get<std::string>(2, 0);

  // An honest worker now computes the units the hostile one spoiled.
  Proc& good = start_worker("good", {"--batch-size", "4", "--exit-when-done"});
  auto rc = run.wait(60);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  EXPECT_EQ(good.wait(30), 0) << logs();
  pg::Result h = coord().exec("SELECT submissions_used, submissions_rejected, samples FROM gannf.loss_history");
  ASSERT_EQ(h.rows(), 1);
  EXPECT_EQ(h.get<int32_t>(0, 0), K);
  EXPECT_EQ(h.get<int32_t>(0, 1), 3);
  EXPECT_EQ(h.get<int32_t>(0, 2), K * B);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                  "WHERE s.state = 'used' AND w.name = 'evil'"),
            0);
  // The published weights are finite.
  pg::Result wt = coord().exec("SELECT params FROM gannf.weights WHERE iteration = 1");
  ASSERT_EQ(wt.rows(), 2);
  for (int i = 0; i < 2; ++i)
    for (float x : cluster::decode_floats(wt.bytes(i, 0))) ASSERT_TRUE(std::isfinite(x));
}

TEST_F(Cluster, UnitsLeftOpenAreServedAgainNotLost) {
  // 2 units per update but 4 open: a fast and a slow worker, so iterations
  // close with units still claimed or waiting; they move on, never vanish.
  std::vector<std::string> args = small_run(64, 8, 2, 21);
  args.insert(args.end(), {"--extra-units", "2"});
  coord_cmd("init", args);
  if (HasFatalFailure()) return;
  Proc& fast = start_worker("fast", {"--batch-size", "4", "--exit-when-done"});
  Proc& slow = start_worker("slow", {"--batch-size", "4", "--exit-when-done", "--throttle-ms", "300"}, 2);
  Proc& run = start_coord_run({"--iterations", "6", "--sample-interval", "0", "--checkpoint-interval", "0"});
  auto rc = run.wait(60);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  EXPECT_EQ(fast.wait(30), 0) << logs();
  EXPECT_EQ(slow.wait(30), 0) << logs();
  // All units ever made tile each epoch's permutation without gap or overlap.
  pg::Result u = coord().exec("SELECT epoch, first_index, sample_count, state::text, attempt, "
                              "(SELECT count(*) FROM gannf.submissions s WHERE s.work_unit_id = u.id "
                              " AND s.state = 'used') FROM gannf.work_units u ORDER BY epoch, first_index");
  std::map<int, int64_t> next;
  int64_t done_samples = 0;
  for (int i = 0; i < u.rows(); ++i) {
    const int e = u.get<int32_t>(i, 0);
    EXPECT_EQ(u.get<int64_t>(i, 1), next[e]) << "gap or overlap in epoch " << e;
    next[e] = u.get<int64_t>(i, 1) + u.get<int32_t>(i, 2);
    const bool done = u.get<std::string>(i, 3) == "done";
    EXPECT_EQ(u.get<int64_t>(i, 5), done ? 1 : 0) << "unit at " << u.get<int64_t>(i, 1);
    if (done) done_samples += u.get<int32_t>(i, 2);
  }
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 6);
  EXPECT_EQ(count("SELECT sum(samples) FROM gannf.loss_history"), done_samples) << "nothing counted twice";
  EXPECT_GE(count("SELECT min(submissions_used) FROM gannf.loss_history"), 2);
  // The slow worker's results came too late for their iterations and were
  // refused (iteration closed, or the unit served again and done by the fast
  // one): never counted against newer weights than they were computed with.
  const std::string slow_log = slow.log();
  EXPECT_TRUE(slow_log.find("closed first") != std::string::npos || slow_log.find("no longer ours") != std::string::npos ||
              slow_log.find("taken off this worker") != std::string::npos)
      << "the slow worker never lost a unit to a closed iteration; the test did not exercise carry-over:\n"
      << logs();
}

TEST_F(Cluster, SigtermHandsTheUnitBackAndExitsZero) {
  coord_cmd("init", small_run(64, 16, 1, 4));
  if (HasFatalFailure()) return;
  Proc& w = start_worker("quitter", {"--batch-size", "4", "--throttle-ms", "1000"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'") == 1; }, 20))
      << logs();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(20), 0) << logs();
  pg::Result u = coord().exec("SELECT state::text, attempt, visible_at <= now() FROM gannf.work_units ORDER BY id LIMIT 1");
  EXPECT_EQ(u.get<std::string>(0, 0), "available") << logs();
  EXPECT_EQ(u.get<int32_t>(0, 1), 1);
  EXPECT_TRUE(u.get<bool>(0, 2)) << "claimable at once, not after the lease";
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 0);
}

// README, Classroom set-up: the instructor makes a login per student; the
// student runs one command with a postgresql:// URI, the password in a
// pgpass file (never in the file or on the command line).
TEST_F(Cluster, StudentWorkerOverTcpWithAPasswordFile) {
  PrivateServer server(dir_ / "pg");
  ASSERT_EQ(server.script("start", "--tcp"), 0) << "see " << (dir_ / "pg-script.log");
  {
    pg::Connection admin(server.conninfo("postgres"));
    admin.on_notice({});
    admin.exec("DROP ROLE IF EXISTS alice");
    admin.exec("CREATE ROLE alice LOGIN PASSWORD 'correct horse' IN ROLE gannf_worker");
  }
  const std::string uri = "postgresql://alice@127.0.0.1:" + server.port() + "/gannf";
  auto pgpass = [&](const std::string& name, const std::string& password) {
    const fs::path f = dir_ / name;
    std::ofstream(f) << "127.0.0.1:" << server.port() << ":gannf:alice:" << password << "\n";
    chmod(f.c_str(), 0600);
    // The fixture's service (and its passfile) must not stand in for the student's.
    return std::vector<std::string>{"PGSERVICE", "PGSERVICEFILE", "PGPASSFILE=" + f.string()};
  };
  {
    std::vector<std::string> args = {kCoordBin, "init", "--db", server.conninfo("gannf_coord")};
    for (auto& a : small_run(32, 8, 2, 41)) args.push_back(a);
    Proc init(args, (dir_ / "coord-init.log").string());
    ASSERT_EQ(init.wait(60), 0) << init.log();
  }
  const std::vector<std::string> worker = {kWorkerBin, "--db", uri, "--name", "alice-laptop", "--threads", "1",
                                           "--batch-size", "4", "--no-cache", "--exit-when-done",
                                           "--poll-interval", "0.2"};

  Proc wrong(worker, (dir_ / "worker-wrong.log").string(), pgpass("pgpass-wrong", "battery staple"));
  ASSERT_EQ(wrong.wait(60), 1) << wrong.log();
  EXPECT_NE(wrong.log().find("password authentication failed"), std::string::npos) << wrong.log();
  EXPECT_NE(wrong.log().find(".pgpass"), std::string::npos) << wrong.log();

  std::vector<std::string> run = {kCoordBin, "run", "--db", server.conninfo("gannf_coord"), "--output-dir",
                                  (dir_ / "out").string(), "--iterations", "1", "--sample-interval", "0",
                                  "--checkpoint-interval", "0"};
  Proc coord(run, (dir_ / "coord-run.log").string());
  Proc right(worker, (dir_ / "worker.log").string(), pgpass("pgpass", "correct horse"));
  auto rc = coord.wait(90);
  ASSERT_TRUE(rc.has_value()) << coord.log() << right.log();
  ASSERT_EQ(*rc, 0) << coord.log() << right.log();
  EXPECT_EQ(right.wait(30), 0) << right.log();
  pg::Connection c(server.conninfo("gannf_coord"));
  EXPECT_EQ(c.exec("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                   "WHERE w.login = 'alice' AND w.name = 'alice-laptop' AND s.state = 'used'")
                .get<int64_t>(0, 0),
            2);
}

}  // namespace

TEST_F(Cluster, WeightsAreDownloadedOncePerIterationPerWorker) {
  // One worker computes every unit of two iterations of K units (issue 17,
  // 2b): the weights of an iteration travel to it once, not once per unit.
  constexpr int K = 3, B = 4;
  coord_cmd("init", small_run(64, B, K, 11));
  if (HasFatalFailure()) return;
  Proc& w = start_worker("solo", {"--batch-size", "4", "--exit-when-done"});
  Proc& run = start_coord_run({"--iterations", "2"});
  auto rc = run.wait(120);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  ASSERT_EQ(w.wait(60), 0) << logs();
  const int64_t units = count("SELECT count(*) FROM gannf.submissions WHERE state = 'used'");
  const int64_t iterations = count("SELECT count(DISTINCT iteration) FROM gannf.submissions");
  EXPECT_EQ(units, 2 * K);
  const std::string log = w.log();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex("weights downloaded ([0-9]+) time\\(s\\), ([0-9.]+) MB")))
      << log;
  const int downloads = std::stoi(m[1]);
  EXPECT_EQ(downloads, iterations) << log;
  EXPECT_GT(std::stod(m[2]), 0) << log;
}

TEST_F(Cluster, WorkersDownloadExactWeightDeltasAndTrainAsWithFullWeights) {
  // sql/0019 (issue 17, 2b): after its first download a worker that computed
  // for the previous iteration gets the weights as the exact delta from the
  // ones it holds; the run ends where a worker that downloads everything in
  // full (--full-weights) ends, bit for bit, with fewer bytes downloaded.
  constexpr int kIterations = 4;
  const std::vector<std::string> init = small_run(64, 4, 2, 13);
  const std::vector<std::string> want = reference_state(init, kIterations, {"--full-weights"});
  if (HasFatalFailure()) return;
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  Proc& w = start_worker("solo", {"--batch-size", "4", "--exit-when-done"});
  Proc& run = start_coord_run({"--iterations", std::to_string(kIterations), "--sample-interval", "0",
                               "--checkpoint-interval", "0"});
  auto rc = run.wait(120);
  ASSERT_TRUE(rc.has_value()) << logs();
  ASSERT_EQ(*rc, 0) << logs();
  ASSERT_EQ(w.wait(60), 0) << logs();
  expect_same_state(run_state(coord(), kIterations), want, "4 updates with deltas");

  const std::regex re(R"(weights downloaded ([0-9]+) time\(s\), ([0-9.]+) MB(, ([0-9]+) of them as the delta)?)");
  std::smatch m, r;
  const std::string log = w.log();
  std::ifstream ref_file(dir_ / "ref-worker.log");
  const std::string ref_log((std::istreambuf_iterator<char>(ref_file)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(std::regex_search(log, m, re)) << log;
  ASSERT_TRUE(std::regex_search(ref_log, r, re)) << ref_log;
  EXPECT_EQ(std::stoi(m[1]), kIterations) << log;
  EXPECT_EQ(m[4].matched ? std::stoi(m[4]) : 0, kIterations - 1) << "all but the first as deltas:\n" << log;
  EXPECT_EQ(std::stoi(r[1]), kIterations) << ref_log;
  EXPECT_FALSE(r[3].matched) << "--full-weights downloads no delta:\n" << ref_log;
  const double mb = std::stod(m[2]), ref_mb = std::stod(r[2]);
  std::printf("weights downloaded: %.2f MB with deltas, %.2f MB in full\n", mb, ref_mb);
  EXPECT_LT(mb, 0.9 * ref_mb);
  // The deltas are pruned with their weights: at most two iterations' worth.
  EXPECT_GE(count("SELECT count(*) FROM gannf.weights_delta"), 2);
  EXPECT_LE(count("SELECT count(*) FROM gannf.weights_delta"), 4);
}
