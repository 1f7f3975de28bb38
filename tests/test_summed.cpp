// Summed submissions (issue 17, item 2a; sql/0017, src/cluster/summed.h):
//  - one worker holding every unit of an update sends them summed, and the
//    update is a local gannf-train step's bit for bit (the worker accumulates
//    the units' micro-batches into one buffer with scale 1/(all images), as the
//    local step does, and the exact mean of one summed gradient is itself);
//  - summed with unsummed workers: the distributed = local tolerance;
//  - the trust checks on summed submissions: an honest summed run passes
//    every check (spot checks of every submission, norm checks, clip+trimmed),
//    a sign-flipped summed gradient fails its spot check with all its units,
//    a ×1e4 one fails the norm check;
//  - the unit list is hostile input: gannf.submit_summed refuses duplicates,
//    wrong order, units not held, other iterations, wrong attempts and sample
//    counts, before anything is stored; the coordinator refuses a summed
//    submission whose BN statistics do not match its units' forward passes;
//  - append_summed: k votes with the units' own weights and BN slices.
#include <cmath>
#include <cstring>

#include "aggregate.h"
#include "blob.h"
#include "dcgan.h"
#include "protocol.h"
#include "run_settings.h"
#include "safetensors.h"
#include "small_train.h"
#include "summed.h"
#include "test_cluster_harness.h"
#include "trainer.h"

namespace {

using namespace gannf;
using namespace gannf::test;

const std::string kHostileBin = std::string(GANNF_BINARY_DIR) + "/tests/hostile_worker";

// ------------------------------------------------------------------ pure

TEST(AppendSummed, EachUnitAVoteWithItsOwnWeightAndBnSlice) {
  const std::vector<float> g = {1, 2}, d = {3};
  // Two units of 8 and 4 images in micro-batches of 4: G 2 + 1 passes, D twice that; 1 stat each.
  const std::vector<float> gbn = {10, 11, 12}, dbn = {20, 21, 22, 23, 24, 25};
  const std::span<const float> grad[2] = {g, d}, bn[2] = {gbn, dbn};
  const size_t stats[2] = {1, 1};
  std::vector<cluster::SummedUnit> parts = {{7, 8, 4, StepStats{1, 2, 0.5, 0.5, 0.5, 8}}, {8, 4, 4, std::nullopt}};
  std::vector<cluster::UnitContribution> out;
  cluster::append_summed(out, parts, grad, bn, stats);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].sample_count, 8);
  EXPECT_EQ(out[1].sample_count, 4);
  EXPECT_EQ(out[0].bn[0].size(), 2u);
  EXPECT_EQ(out[1].bn[0][0], 12.f);
  EXPECT_EQ(out[0].bn[1].size(), 4u);
  EXPECT_EQ(out[1].bn[1][0], 24.f);
  EXPECT_EQ(out[1].grad[0].data(), g.data());
  EXPECT_TRUE(out[0].losses.has_value());
  EXPECT_FALSE(out[1].losses.has_value());
  // Too few or too many BN values for the units: refused.
  const std::span<const float> short_bn[2] = {std::span<const float>(gbn).first(2), dbn};
  EXPECT_THROW(cluster::append_summed(out, parts, grad, short_bn, stats), std::invalid_argument);
  const std::vector<float> long_g = {10, 11, 12, 13};
  const std::span<const float> long_bn[2] = {long_g, dbn};
  EXPECT_THROW(cluster::append_summed(out, parts, grad, long_bn, stats), std::invalid_argument);
}

// A hostile summed gradient h over 2 units beside 3 honest units, trimmed
// with trim 1: the same update as 2 submissions of h (k votes), and unlike
// one vote of weight 2 it is not dropped whole — nor does it reduce the
// count of votes (with one vote of 3 units against 1, nothing would be
// trimmed at all).
TEST(AppendSummed, TrimmedSeesKVotesAsKSubmissionsOfTheSameGradient) {
  const std::vector<float> h = {100.f}, x1 = {1.f}, x2 = {2.f}, x3 = {3.f}, none;
  const std::vector<float> nobn;
  const size_t stats[2] = {0, 0};
  const std::span<const float> hg[2] = {h, h}, nb[2] = {nobn, nobn};
  std::vector<cluster::UnitContribution> summed;
  std::vector<cluster::SummedUnit> two = {{1, 4, 4, std::nullopt}, {2, 4, 4, std::nullopt}};
  cluster::append_summed(summed, two, hg, nb, stats);
  std::vector<cluster::UnitContribution> separate(2);
  for (int j = 0; j < 2; ++j) {
    separate[j].sample_count = 4;
    separate[j].micro_batches = {4};
    separate[j].grad[0] = separate[j].grad[1] = h;
  }
  for (const auto* x : {&x1, &x2, &x3}) {
    cluster::UnitContribution u;
    u.sample_count = 4;
    u.micro_batches = {4};
    u.grad[0] = u.grad[1] = *x;
    summed.push_back(u);
    separate.push_back(u);
  }
  cluster::RobustParams p;
  p.trim = 1;
  const auto a = cluster::aggregate(summed, cluster::AggregationRule::Trimmed, p);
  const auto b = cluster::aggregate(separate, cluster::AggregationRule::Trimmed, p);
  EXPECT_EQ(a.grad[0], b.grad[0]);
  EXPECT_EQ(a.samples, 20);
  // Votes 1, 2, 3, 100, 100: one at each end dropped → (2 + 3 + 100) / 3.
  EXPECT_NEAR(a.grad[0][0], 35.f, 1e-5);
  // And the exact mean weighs it by its 8 images of 20.
  const auto m = cluster::aggregate(summed, cluster::AggregationRule::Mean, p);
  EXPECT_NEAR(m.grad[0][0], (8 * 100.f + 4 * 6.f) / 20, 1e-4);
}

// ------------------------------------------------------------------ runs

class Summed : public ClusterRun {
 protected:
  // A run of K units of B images and its slow worker (--sum-units auto,
  // ~0.3 s per micro-batch of 4), once it has reported what it measured.
  void start_measured_slow_worker(int K, int B) {
    coord_cmd("init", small_run(512, B, K, 17));
    if (HasFatalFailure()) return;
    start_worker("slow", {"--batch-size", "4", "--exit-when-done", "--sum-units", "auto", "--throttle-ms", "300"}, 1);
    ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers WHERE timing_at IS NOT NULL") == 1; },
                         60))
        << logs();
  }
  Proc& start_hostile(const std::string& name, const std::string& attack, int sum_units) {
    std::vector<std::string> args = {kHostileBin, "--db", worker_db(2), "--name", name, "--threads", "1",
                                     "--attack", attack, "--poll-interval", "0.5", "--no-cache", "--batch-size", "4",
                                     "--exit-when-done", "--sum-units", std::to_string(sum_units)};
    procs_.push_back(std::make_unique<Proc>(args, (dir_ / ("hostile-" + name + ".log")).string()));
    return *procs_.back();
  }
  // The coordinator's checkpoint after its first update against a local
  // step of the same 24 images; returns the largest relative difference and
  // fails beyond `rtol` (0: bit for bit).
  double compare_with_local(int K, int B, int micro, uint64_t seed, double rtol) {
    TrainOptions o = test::small_train_options((dir_ / "local").string(), 64, 8, K * B, micro, seed);
    o.threads = 1;  // as the workers: the same BLAS partitioning
    Trainer local(o);
    const StepStats st = local.step();
    const std::string lck = (dir_ / "local" / "checkpoints" / "step-00000001").string();
    local.save_checkpoint(lck);
    const std::string cck = (dir_ / "out" / "checkpoints" / "step-00000001").string();
    EXPECT_TRUE(fs::is_directory(cck)) << logs();
    if (!fs::is_directory(cck)) return INFINITY;
    double worst = 0;
    int compared = 0;
    for (const char* file : {"generator.safetensors", "discriminator.safetensors", "state.safetensors"}) {
      const auto L = SafeTensors::load(lck + "/" + file), C = SafeTensors::load(cck + "/" + file);
      for (const std::string& name : L.names()) {
        if (name == "counters" || name.find("num_batches_tracked") != std::string::npos) {
          if (name != "counters") {
            EXPECT_EQ(C.ints(name), L.ints(name)) << name;
          }
          continue;
        }
        const auto lv = L.floats(name), cv = C.floats(name);
        EXPECT_EQ(lv.size(), cv.size()) << name;
        double num = 0, den = 0;
        int differ = 0;
        for (size_t i = 0; i < lv.size() && i < cv.size(); ++i) {
          differ += lv[i] != cv[i];
          num += ((double)cv[i] - lv[i]) * ((double)cv[i] - lv[i]);
          den += (double)lv[i] * lv[i];
        }
        const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
        worst = std::max(worst, rel);
        ++compared;
        if (rtol == 0) {
          EXPECT_EQ(differ, 0) << file << ": " << name << ": " << differ << " of " << lv.size() << " values differ";
        } else {
          EXPECT_LE(rel, rtol) << file << ": " << name;
        }
      }
    }
    EXPECT_GT(compared, 10);
    pg::Result h = coord().exec("SELECT loss_d, loss_g, d_real, d_fake, samples FROM gannf.loss_history");
    EXPECT_EQ(h.rows(), 1);
    if (h.rows() == 1) {
      EXPECT_NEAR(h.get<float>(0, 0), st.d_loss, 1e-5);
      EXPECT_NEAR(h.get<float>(0, 1), st.g_loss, 1e-5);
      EXPECT_NEAR(h.get<float>(0, 2), st.d_real, 1e-5);
      EXPECT_NEAR(h.get<float>(0, 3), st.d_fake, 1e-5);
      EXPECT_EQ(h.get<int32_t>(0, 4), K * B);
    }
    return worst;
  }
};

TEST_F(Summed, OneWorkerHoldingEveryUnitEqualsLocalBitForBit) {
  constexpr int K = 3, B = 8, kMicro = 4;
  constexpr uint64_t kSeed = 7;
  coord_cmd("init", small_run(64, B, K, kSeed));
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.training_state SET status = 'paused'");
  Proc& a = start_worker("a", {"--batch-size", std::to_string(kMicro), "--exit-when-done", "--sum-units", "3"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers") == 1; }, 30)) << logs();
  Proc& run = start_coord_run({"--iterations", "1", "--checkpoint-interval", "1", "--sample-interval", "0"});
  const auto rc = run.wait(90);
  ASSERT_TRUE(rc.has_value() && *rc == 0) << logs();
  EXPECT_EQ(a.wait(30), 0) << logs();
  // One summed submission: three rows, one leader, one pair of blobs.
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'used' AND summed_with IS NOT NULL"), K)
      << logs();
  EXPECT_EQ(count("SELECT count(DISTINCT summed_with) FROM gannf.submissions"), 1);
  EXPECT_EQ(count("SELECT submissions_used FROM gannf.loss_history WHERE iteration = 0"), K);
  const double worst = compare_with_local(K, B, kMicro, kSeed, 0);
  std::printf("one summed submission of %d units vs a local step: max relative difference %.3g\n", K, worst);
}

// A worker summing two units and one sending single units: the update is
// the local step's within DistributedEqualsLocal's norm-wise 1e-5 (the
// summed buffer and the per-unit buffers round differently from the local
// step's one float accumulation, as two unsummed workers do).
TEST_F(Summed, SummedAndUnsummedWorkersEqualLocalToRounding) {
  constexpr int K = 3, B = 8, kMicro = 4;
  constexpr uint64_t kSeed = 7;
  coord_cmd("init", small_run(64, B, K, kSeed));
  if (HasFatalFailure()) return;
  // The summing worker submits two units summed and leaves (--max-units 2);
  // only then does the other start, while the run is still running (the
  // coordinator is not up yet), and take the third. Started together, a
  // loaded machine let "a" take all three and "b" first see the run stopped
  // at its bound, which an --exit-when-done worker that never saw it running
  // rightly waits out (a 'gannf-coord run' may carry it on).
  Proc& a = start_worker("a", {"--batch-size", std::to_string(kMicro), "--exit-when-done", "--sum-units", "2",
                               "--max-units", "2"});
  EXPECT_EQ(a.wait(60), 0) << logs();
  Proc& b = start_worker("b", {"--batch-size", std::to_string(kMicro), "--exit-when-done"}, 2);
  Proc& run = start_coord_run({"--iterations", "1", "--checkpoint-interval", "1", "--sample-interval", "0"});
  const auto rc = run.wait(90);
  ASSERT_TRUE(rc.has_value() && *rc == 0) << logs();
  EXPECT_EQ(b.wait(30), 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'used' AND summed_with IS NOT NULL"), 2)
      << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'used' AND summed_with IS NULL"), 1) << logs();
  const double worst = compare_with_local(K, B, kMicro, kSeed, 1e-5);
  std::printf("summed + unsummed vs a local step: max norm-wise relative difference %.3g\n", worst);
}

// The classroom's checks on honest summed submissions: every submission
// spot-checked (the coordinator recomputes all its units into one buffer),
// norm checks, clip+trimmed; none rejected, all used.
TEST_F(Summed, HonestSummedSubmissionsPassEveryCheck) {
  std::vector<std::string> init = small_run(96, 8, 4, 11);
  init.insert(init.end(), {"--aggregation", "clip+trimmed", "--spot-check", "1"});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  ensure_worker_login("gannf_test_w3");
  start_worker("s1", {"--batch-size", "4", "--exit-when-done", "--sum-units", "2"});
  start_worker("s2", {"--batch-size", "4", "--exit-when-done", "--sum-units", "2"}, 3);
  Proc& run = start_coord_run({"--iterations", "3", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(240);
  ASSERT_TRUE(rc.has_value() && *rc == 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 3);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'rejected'"), 0) << logs();
  EXPECT_EQ(count("SELECT sum(submissions_used) FROM gannf.loss_history"), 12);
  EXPECT_GE(count("SELECT count(*) FROM gannf.submissions WHERE state = 'used' AND summed_with IS NOT NULL"), 4)
      << logs();
}

// A summed submission with its gradient's sign flipped (it passes every
// bound) fails the spot check of its units recomputed together; all of its
// units are rejected and served again, the honest worker finishes them.
TEST_F(Summed, SignFlippedSummedSubmissionFailsItsSpotCheck) {
  std::vector<std::string> init = small_run(96, 8, 3, 13);
  init.insert(init.end(), {"--aggregation", "clip+trimmed", "--spot-check", "1"});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.training_state SET status = 'paused'");
  Proc& evil = start_hostile("evil", "scale:-1", 2);
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers") == 1; }, 30)) << logs();
  Proc& run = start_coord_run({"--iterations", "2", "--sample-interval", "0", "--checkpoint-interval", "0"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.submissions WHERE state = 'rejected'") >= 2; },
                       120))
      << logs();
  start_worker("honest", {"--batch-size", "4", "--exit-when-done"});
  const auto rc = run.wait(240);
  ASSERT_TRUE(rc.has_value() && *rc == 0) << logs();
  EXPECT_TRUE(evil.wait(60).has_value()) << logs();
  pg::Result r = coord().exec(
      "SELECT s.reject_reason, s.summed_with IS NOT NULL FROM gannf.submissions s JOIN gannf.workers w "
      "ON w.id = s.worker_id WHERE w.name = 'evil' ORDER BY s.id");
  ASSERT_GE(r.rows(), 2) << logs();
  // The first summed pair fails its check (which quarantines the login at
  // once); a unit it held alone afterwards is dropped as quarantined.
  EXPECT_TRUE(r.get<bool>(0, 1) && r.get<bool>(1, 1)) << "the first submission was not summed";
  for (int i = 0; i < r.rows(); ++i) {
    const std::string why = r.opt<std::string>(i, 0).value_or("");
    EXPECT_TRUE(why.rfind("spot check", 0) == 0 || why == "quarantined") << why;
  }
  EXPECT_EQ(r.opt<std::string>(0, 0).value_or("").rfind("spot check", 0), 0u);
  EXPECT_EQ(r.opt<std::string>(1, 0).value_or("").rfind("spot check", 0), 0u);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                  "WHERE w.name = 'evil' AND s.state <> 'rejected'"),
            0)
      << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 2);
  EXPECT_EQ(count("SELECT sum(submissions_used) FROM gannf.loss_history"), 6);
}

// The norm check sees a summed submission as one unit's worth (its gradient
// is a mean, not a sum): ×1e4 is refused by it, with three logins voting.
TEST_F(Summed, SummedGradientTimes1e4FailsTheNormCheck) {
  std::vector<std::string> init = small_run(96, 8, 4, 17);
  init.insert(init.end(), {"--aggregation", "clip+trimmed", "--spot-check", "0"});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.training_state SET status = 'paused'");
  ensure_worker_login("gannf_test_w3");
  start_worker("honest1", {"--batch-size", "4", "--exit-when-done"});
  start_worker("honest2", {"--batch-size", "4", "--exit-when-done"}, 3);
  Proc& evil = start_hostile("evil", "scale:1e4", 2);
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers") == 3; }, 60)) << logs();
  Proc& run = start_coord_run({"--iterations", "5", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(240);
  ASSERT_TRUE(rc.has_value() && *rc == 0) << logs();
  EXPECT_TRUE(evil.wait(60).has_value()) << logs();
  // Which logins vote in an update is a race: when one honest worker takes
  // both honest units, only two logins vote — one against one, which with
  // spot checks off nothing can settle (clip bounds it; docs/security.md says
  // so). An update with three logins has an honest majority now and in the
  // history (one voice per login per update): it must refuse the attack.
  pg::Result r = coord().exec(
      "SELECT s.reject_reason, s.iteration, (SELECT count(DISTINCT w2.login) FROM gannf.submissions s2 "
      "JOIN gannf.workers w2 ON w2.id = s2.worker_id WHERE s2.iteration = s.iteration) "
      "FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
      "WHERE w.name = 'evil' AND s.summed_with IS NOT NULL ORDER BY s.id");
  ASSERT_GE(r.rows(), 2) << "the hostile worker sent no summed submission:\n" << logs();
  int judged = 0;
  for (int i = 0; i < r.rows(); ++i) {
    if (r.get<int64_t>(i, 2) < 3) continue;
    ++judged;
    const std::string why = r.opt<std::string>(i, 0).value_or("(used)");
    EXPECT_TRUE(why.find("gradient norm of") != std::string::npos || why == "quarantined")
        << "iteration " << r.get<int64_t>(i, 1) << ": " << why;
  }
  EXPECT_GE(judged, 1) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'rejected' AND worker_id IN "
                  "(SELECT id FROM gannf.workers WHERE name <> 'evil')"),
            0)
      << logs();
}

// ------------------------------------------------------------------ the unit list

// The SQLSTATE submit_summed raised, or the refusal a correct worker meets
// (ZG002-ZG004, which the protocol turns into a status), or "accepted".
std::string outcome_of(const std::function<cluster::SubmitOutcome()>& f) {
  try {
    const cluster::SubmitOutcome o = f();
    return cluster::to_string(o.status);
  } catch (const pg::Error& e) {
    return e.sqlstate();
  }
}

// A login's summed submissions built by hand: zero gradients and `passes`
// BN copies per unit (zeros: within every bound).
class HandSummed {
 public:
  HandSummed(pg::Connection& c, const cluster::RunSettings& s, const std::string& name) : c_(c) {
    worker_ = cluster::register_worker(c_, cluster::WorkerInfo{.name = name, .batch_size = 4});
    be_ = make_backend<float>("cpu");  // outlives the nets
    G_ = std::make_unique<Net<float>>(*be_, "generator");
    D_ = std::make_unique<Net<float>>(*be_, "discriminator");
    build_generator(*G_, s.dcgan(), 2);
    build_discriminator(*D_, s.dcgan(), 2);
    g_.assign(G_->num_params(), 0.f);
    d_.assign(D_->num_params(), 0.f);
  }
  int64_t worker() const { return worker_; }
  // gannf.submit_summed over `units` (as given, in any order) with `passes`
  // forward passes per unit; throws what it raises.
  cluster::SubmitOutcome submit(std::vector<cluster::ClaimedUnit> units, int passes, int micro = 4) {
    gbn_.assign(units.size() * passes * G_->num_stats(), 0.f);
    dbn_.assign(units.size() * passes * 2 * D_->num_stats(), 0.f);
    cluster::UnitResult r;
    for (const auto& u : units) r.sample_count += u.sample_count;
    r.g = {G_->layout_hash(), g_, gbn_};
    r.d = {D_->layout_hash(), d_, dbn_};
    r.micro_batch = micro;
    std::vector<cluster::UnitLosses> l(units.size(), cluster::UnitLosses{1.f, 1.f, 0.5f, 0.5f, 0.5f});
    return cluster::submit_summed(c_, worker_, units, r, l);
  }

 private:
  pg::Connection& c_;
  int64_t worker_ = 0;
  std::unique_ptr<Backend<float>> be_;
  std::unique_ptr<Net<float>> G_, D_;
  std::vector<float> g_, d_, gbn_, dbn_;
};

TEST_F(Summed, SubmitSummedRefusesHostileUnitLists) {
  coord_cmd("init", small_run(96, 8, 4, 19));
  if (HasFatalFailure()) return;
  const auto s = cluster::RunSettings::from_json(
      coord().exec("SELECT config::text FROM gannf.training_state").get<std::string>(0, 0));
  pg::Connection w1(worker_db(1)), w2(worker_db(2));
  HandSummed mine(w1, s, "mine"), other(w2, s, "other");
  auto u = cluster::claim(w1, mine.worker(), 3);
  const auto theirs = cluster::claim(w2, other.worker(), 1);
  ASSERT_EQ(u.size(), 3u);
  ASSERT_EQ(theirs.size(), 1u);
  std::sort(u.begin(), u.end(), [](auto& a, auto& b) { return a.unit_id < b.unit_id; });
  auto with = [&](std::vector<cluster::ClaimedUnit> v, const std::function<void(cluster::ClaimedUnit&)>& f,
                  size_t at) {
    f(v[at]);
    return v;
  };
  // Each refused before anything is stored.
  EXPECT_EQ(outcome_of([&] { return mine.submit({u[0], u[0]}, 2); }), "22023") << "a duplicate";
  EXPECT_EQ(outcome_of([&] { return mine.submit({u[1], u[0]}, 2); }), "22023") << "descending";
  EXPECT_EQ(outcome_of([&] { return mine.submit({u[0]}, 2); }), "22023") << "one unit";
  EXPECT_EQ(outcome_of([&] { return mine.submit({u[0], u[1], theirs[0]}, 2); }), "not_held") << "a unit of another login";
  EXPECT_EQ(outcome_of([&] { return mine.submit(with({u[0], u[1]}, [](auto& x) { ++x.attempt; }, 1), 2); }), "not_held")
      << "another attempt";
  EXPECT_EQ(outcome_of([&] { return mine.submit(with({u[0], u[1]}, [](auto& x) { x.sample_count = 4; }, 1), 2); }),
            "22023")
      << "a wrong sample count";
  EXPECT_EQ(outcome_of([&] { return mine.submit(with({u[0], u[1]}, [](auto& x) { x.unit_id = 1 << 30; }, 1), 2); }),
            "22023")
      << "no such unit";
  EXPECT_EQ(outcome_of([&] { return mine.submit({u[0], u[1]}, 17); }), "22023") << "more passes than images";
  // Each 22023 counts against the login as submit()'s do (sql/0015), though
  // the call raised and nothing of it was kept.
  EXPECT_EQ(count("SELECT pg_sequence_last_value(seq) FROM gannf.refusal_counters WHERE login = 'gannf_test_w1'"),
            6);
  // Settled, so that the run below (whose honest worker shares the login)
  // is about the coordinator's own check, not these probes' quarantine.
  coord().exec("UPDATE gannf.refusal_counters SET counted = coalesce(pg_sequence_last_value(seq), 0)");
  // A unit of another iteration (moved there behind the login's back).
  coord().exec("UPDATE gannf.work_units SET iteration = 1 WHERE id = " + std::to_string(u[2].unit_id));
  EXPECT_EQ(outcome_of([&] { return mine.submit({u[0], u[2]}, 2); }), "iteration_closed") << "another iteration";
  coord().exec("UPDATE gannf.work_units SET iteration = 0 WHERE id = " + std::to_string(u[2].unit_id));
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 0);

  // Accepted; a retry after a lost reply names the same submission.
  const auto ok = mine.submit({u[0], u[1]}, 2);
  EXPECT_EQ(ok.status, cluster::SubmitStatus::Accepted);
  const auto again = mine.submit({u[0], u[1]}, 2);
  EXPECT_EQ(again.status, cluster::SubmitStatus::Duplicate);
  EXPECT_EQ(again.submission_id, ok.submission_id);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE summed_with = " + std::to_string(ok.submission_id)), 2);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submission_blobs"), 2);
  // One pass per unit where two were run (8 images in micro-batches of 4):
  // the database's loose bound lets it in, the coordinator's exact count
  // refuses it, with both its units, which an honest worker then computes.
  ASSERT_TRUE(cluster::release(w2, other.worker(), theirs[0]));
  const auto last = cluster::claim(w1, mine.worker(), 1);
  ASSERT_EQ(last.size(), 1u);
  const auto bad = mine.submit({u[2], last[0]}, 1);
  ASSERT_EQ(bad.status, cluster::SubmitStatus::Accepted);
  start_worker("honest", {"--batch-size", "4", "--exit-when-done"});
  Proc& run = start_coord_run({"--iterations", "1", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(120);
  ASSERT_TRUE(rc.has_value() && *rc == 0) << logs();
  pg::Result r = coord().exec("SELECT reject_reason FROM gannf.submissions WHERE summed_with = " +
                              std::to_string(bad.submission_id) + " ORDER BY id");
  ASSERT_EQ(r.rows(), 2);
  for (int i = 0; i < 2; ++i) {
    const std::string why = r.opt<std::string>(i, 0).value_or("(not rejected)");
    EXPECT_NE(why.find("BN statistics"), std::string::npos) << why;
  }
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'used' AND summed_with = " +
                  std::to_string(ok.submission_id)),
            2);
  EXPECT_EQ(count("SELECT submissions_used FROM gannf.loss_history"), 4) << logs();
}

}  // namespace

// The query of a worker's units per claim (sql/0027: 1 where it has no row).
static std::string units_hint_of(const std::string& name) {
  std::string sql =
      "SELECT coalesce((SELECT h.units FROM gannf.unit_hints h JOIN gannf.workers w ON w.id = h.worker_id "
      "WHERE w.name = '";
  sql += name;
  sql += "'), 1)";
  return sql;
}

// --sum-units auto (issue 17, 2d; sql/0018, unit_counts.h): every worker
// reports what it measured after each accepted upload, the coordinator
// shares the next update's units by those figures, and an auto worker claims
// and sums its share. A slow worker (throttled to ~0.3 s per micro-batch)
// and a fast one: the fast one is given the login's cap (4) and sends summed
// submissions, the slow one keeps one unit per claim; the run uses every unit.
TEST_F(Summed, AutoUnitCountsFollowEachWorkersMeasuredSpeed) {
  constexpr int K = 8, B = 8, kIterations = 6;
  // The slow worker first, alone, until it has been measured; then the fast
  // one and the coordinator.
  start_measured_slow_worker(K, B);
  if (HasFatalFailure()) return;
  start_worker("fast", {"--batch-size", "4", "--exit-when-done", "--sum-units", "auto"}, 2);
  Proc& run = start_coord_run({"--iterations", std::to_string(kIterations), "--checkpoint-interval", "0",
                               "--sample-interval", "0"});
  const auto rc = run.wait(240);
  ASSERT_TRUE(rc.has_value() && *rc == 0) << logs();
  EXPECT_EQ(count("SELECT coalesce(sum(submissions_used), 0) FROM gannf.loss_history"), K * kIterations) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.workers WHERE timing_at IS NULL"), 0) << logs();
  EXPECT_EQ(count(units_hint_of("fast")), 4) << logs();
  EXPECT_EQ(count(units_hint_of("slow")), 1) << logs();
  EXPECT_GE(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                  "WHERE w.name = 'fast' AND s.state = 'used' AND s.summed_with IS NOT NULL"),
            2)
      << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                  "WHERE w.name = 'slow' AND s.summed_with IS NOT NULL"),
            0)
      << logs();
  std::printf("units per claim: fast %lld, slow %lld; fast's summed units %lld of %d\n",
              (long long)count(units_hint_of("fast")),
              (long long)count(units_hint_of("slow")),
              (long long)count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                               "WHERE w.name = 'fast' AND s.state = 'used' AND s.summed_with IS NOT NULL"),
              K * kIterations);
}

// sql/0027: every call a worker makes updates its own workers row, and a
// fast worker makes them back to back just after each commit, which is when
// the coordinator writes the units per claim. 0018 kept them in that row and
// skipped it while locked (SKIP LOCKED): in CI the fast worker above kept one
// unit per claim for the whole run. Here its row is held as one of its calls
// holds it (FOR NO KEY UPDATE, an UPDATE's lock) for the whole run, and it
// still gets its share: the counts are in a table no worker's call locks.
TEST_F(Summed, AWorkerBusyWithItsOwnRowStillGetsItsUnitsPerClaim) {
  constexpr int K = 4, B = 8;
  start_measured_slow_worker(K, B);
  if (HasFatalFailure()) return;
  // The fast worker: measured at 2 ms a unit, then busy in a call.
  pg::Connection fast(worker_db(2));
  const int64_t id = cluster::register_worker(fast, cluster::WorkerInfo{.name = "fast", .batch_size = 4});
  EXPECT_EQ(cluster::report_timing(fast, id, {.units = 1, .compute_s = 0.002, .upload_s = 0.01, .download_s = 0.01,
                                              .upload_bytes = 1000, .download_bytes = 1000}),
            1);
  pg::Connection busy(coord_db());
  busy.exec("BEGIN");
  busy.exec("SELECT 1 FROM gannf.workers WHERE name = 'fast' FOR NO KEY UPDATE");
  Proc& run = start_coord_run({"--iterations", "2", "--checkpoint-interval", "0", "--sample-interval", "0"});
  const auto rc = run.wait(120);
  ASSERT_TRUE(rc.has_value() && *rc == 0) << logs();
  EXPECT_EQ(count(units_hint_of("fast")), 4) << logs();
  EXPECT_EQ(count(units_hint_of("slow")), 1) << logs();
  busy.exec("ROLLBACK");
  // What the worker learns at its next report.
  EXPECT_EQ(cluster::report_timing(fast, id, {.units = 1, .compute_s = 0.002, .upload_s = 0.01, .download_s = 0.01,
                                              .upload_bytes = 1000, .download_bytes = 1000}),
            4);
}
