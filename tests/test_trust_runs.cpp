// Issue 12's poisoning attacks as real runs (label trust): a real
// gannf-coord, two honest gannf-workers and one hostile_worker (the real
// worker code with each result spoiled before it is submitted) against the
// fixture's PostgreSQL. Each attack that validation must catch is rejected
// every time, with its reason, and never used; the run goes on and its
// weights stay finite. The attacks that pass any bound — sign flip, noise of
// the same norm, "a little is enough" — are caught by spot checks (here every
// unit is checked) and otherwise neutralised by the trimmed rules:
// test_aggregate shows the update stays inside the honest submissions' range.
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include <omp.h>

#include "blob.h"
#include "dcgan.h"
#include "forwarding_backend.h"
#include "protocol.h"
#include "rng.h"
#include "spot_check.h"
#include "sql_test.h"
#include "tf32_reference.h"
#include "trainer.h"
#include "worker.h"
#include "worker_fuzzer.h"
#include "worker_sql.h"
#include "test_cluster_harness.h"

namespace {

using namespace gannf;
using namespace gannf::test;

const std::string kHostileBin = std::string(GANNF_BINARY_DIR) + "/tests/hostile_worker";
const std::string kCallFloodBin = std::string(GANNF_BINARY_DIR) + "/tests/call_flood";
#ifdef GANNF_HAVE_EMU_WORKER
const std::string kEmuBin = std::string(GANNF_BINARY_DIR) + "/tests/emu_worker";
#endif

// A hostile holder: one login's own SQL calls, on a thread. It keeps `cap`
// units (at most the login's cap, trust_settings.max_held_units: 4),
// heartbeats them every 0.2 s, and claims again whenever it holds fewer --
// in the transaction of the heartbeat that handed one back, before that
// unit's NOTIFY wakes anyone else, and every 20 ms. It never submits.
class Holder {
 public:
  Holder(const std::string& conninfo, int cap) : c_(connect_or_fail(conninfo)), cap_(cap) {
    id_ = cluster::register_worker(c_, {.name = "holder", .backend = "cpu"});
    thread_ = std::thread([this] { loop(); });
  }
  ~Holder() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Every unit it was given, in order.
  std::vector<int64_t> given() {
    std::lock_guard<std::mutex> lock(mu_);
    return given_;
  }
  std::string error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  static std::string text(const std::vector<int64_t>& units) {
    std::string s;
    for (int64_t u : units) {
      s += ' ';
      s += std::to_string(u);
    }
    return s;
  }

 private:
  void take(int n) {
    for (const cluster::ClaimedUnit& u : cluster::claim(c_, id_, n)) {
      std::lock_guard<std::mutex> lock(mu_);
      given_.push_back(u.unit_id);
      mine_.push_back(u);
    }
  }
  void loop() {
    try {
      auto beat = std::chrono::steady_clock::now();
      while (!stop_) {
        if (std::chrono::steady_clock::now() - beat >= std::chrono::milliseconds(200)) {
          for (size_t i = 0; i < mine_.size();) {
            pg::Transaction tx(c_);
            if (cluster::heartbeat(c_, id_, mine_[i]).has_value()) {
              ++i;
            } else {
              mine_.erase(mine_.begin() + (std::ptrdiff_t)i);
              take(1);
            }
            tx.commit();
          }
          beat = std::chrono::steady_clock::now();
        }
        if ((int)mine_.size() < cap_) take(cap_ - (int)mine_.size());
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = e.what();
    }
  }

  pg::Connection c_;
  int cap_;
  int64_t id_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<int64_t> given_;
  std::vector<cluster::ClaimedUnit> mine_;
  std::string error_;
};

class Trust : public ClusterRun {
 protected:
  // gannf_admin.shut_out, as sql/roles.sql makes it in database gannf.
  void install_shut_out() {
    const std::string section = roles_sql_section("gannf_admin: plain worker logins, and shutting one out");
    ASSERT_FALSE(section.empty()) << "sql/roles.sql has no such section";
    pg::Connection su = connect_or_fail("user=postgres dbname=" + db_);
    su.on_notice({});
    su.exec_script(section);
  }

  // A worker login of the test's own that may log in (as an earlier run of
  // a test that shuts it out or disables it may have left it).
  void login_of_its_own(const std::string& login) {
    ensure_worker_login(login);
    admin_->exec("ALTER ROLE " + login + " LOGIN");
  }

  // A small run that goes on until the test ends it.
  void init_endless_run(int seed) {
    std::vector<std::string> init = small_run(64, 8, 2, seed);
    init.insert(init.end(), {"--epochs", "100000"});
    coord_cmd("init", init);
  }

  // After a run beside Holder(s): nothing of theirs was submitted, and no
  // image range was done twice.
  void expect_holders_left_no_work() {
    EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                    "WHERE w.name = 'holder'"),
              0);
    EXPECT_EQ(
        count("SELECT count(DISTINCT (epoch, first_index)) - count(*) FROM gannf.work_units WHERE state = 'done'"), 0);
  }

  Proc& start_hostile(const std::string& name, const std::string& attack, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {kHostileBin, "--db",       worker_db(2), "--name", name,         "--threads",
                                     "1",         "--attack",   attack,       "--poll-interval", "0.5", "--no-cache",
                                     "--batch-size", "4", "--exit-when-done"};
    args.insert(args.end(), extra.begin(), extra.end());
    procs_.push_back(std::make_unique<Proc>(args, (dir_ / ("hostile-" + name + ".log")).string()));
    return *procs_.back();
  }

  // Three units of 8 images per update, clip+trimmed, `iterations` updates
  // with two honest workers and one running `attack`; returns the hostile
  // worker's rejection reasons.
  std::vector<std::string> run_attack(const std::string& attack, std::vector<std::string> init_extra = {},
                                      int iterations = 4, bool database_refuses = false,
                                      std::vector<std::string> hostile_extra = {}) {
    std::vector<std::string> init = small_run(96, 8, 3, 21);
    // The classroom's rule and spot-check fraction: the first updates, with
    // no norm history and fewer than three logins, are checked by
    // recomputation (coordinator.cpp), so the data must be at hand.
    init.insert(init.end(), {"--aggregation", "clip+trimmed", "--spot-check", "0.1"});
    init.insert(init.end(), init_extra.begin(), init_extra.end());
    coord_cmd("init", init);
    if (HasFatalFailure()) return {};
    // Everyone registered and waiting before the run starts, so that the
    // hostile worker takes part from the first update.
    coord().exec("UPDATE gannf.training_state SET status = 'paused'");
    // Honest workers on two logins: the norm check's reference counts each
    // login once, so the honest students are the majority whichever worker
    // is fastest to claim (a hostile one may take two of the three units).
    ensure_worker_login("gannf_test_w3");
    start_worker("honest1", {"--batch-size", "4", "--exit-when-done"});
    start_worker("honest2", {"--batch-size", "4", "--exit-when-done"}, 3);
    Proc& evil = start_hostile("evil", attack, hostile_extra);
    EXPECT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers") == 3; }, 60)) << logs();
    Proc& run = start_coord_run(
        {"--iterations", std::to_string(iterations), "--sample-interval", "0", "--checkpoint-interval", "0"});
    const auto rc = run.wait(240);
    EXPECT_TRUE(rc.has_value() && *rc == 0) << logs();
    EXPECT_TRUE(evil.wait(60).has_value()) << logs();

    EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), iterations) << logs();
    EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                    "WHERE w.name = 'evil' AND s.state = 'used'"),
              0)
        << "a poisoned submission was used:\n" << logs();
    EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                    "WHERE w.name <> 'evil' AND s.state = 'rejected'"),
              0)
        << "an honest submission was rejected:\n" << logs();
    pg::Result w = coord().exec("SELECT params, bn_running FROM gannf.weights ORDER BY iteration DESC LIMIT 2");
    for (int i = 0; i < w.rows(); ++i)
      for (int c = 0; c < 2; ++c)
        for (float x : cluster::decode_floats(w.bytes(i, c))) EXPECT_TRUE(std::isfinite(x) && std::fabs(x) < 1e6);
    pg::Result r = coord().exec(
        "SELECT s.reject_reason FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
        "WHERE w.name = 'evil' AND s.state = 'rejected' ORDER BY s.id");
    std::vector<std::string> reasons;
    for (int i = 0; i < r.rows(); ++i) reasons.push_back(r.get<std::string>(i, 0));
    if (database_refuses) {  // submit() raised: nothing stored, the unit handed back
      EXPECT_TRUE(reasons.empty()) << logs();
      EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                      "WHERE w.name = 'evil'"),
                0)
          << logs();
      EXPECT_NE(logs().find("SQLSTATE 22023"), std::string::npos) << "the hostile worker never got a unit in:\n"
                                                                 << logs();
      return reasons;
    }
    EXPECT_FALSE(reasons.empty()) << "the hostile worker never got a unit in:\n" << logs();
    if (!reasons.empty())
      std::printf("%s: %zu submissions rejected, none used; the first: %s\n", attack.c_str(), reasons.size(),
                  reasons[0].c_str());
    return reasons;
  }

  // run_attack() with a login that registers as cuda-tf32 (tolerance 0.1,
  // certain past 0.3: spot_check_certain) but computes on the CPU, every
  // unit spot-checked, 6 updates. *strikes, *forgivable and *quarantined:
  // its login_trust row at the end.
  std::vector<std::string> run_declared_tf32(const std::string& attack, int* strikes, int* forgivable,
                                             bool* quarantined) {
    const std::vector<std::string> reasons =
        run_attack(attack, {"--spot-check", "1"}, 6, false, {"--declare-backend", "cuda-tf32"});
    EXPECT_EQ(coord().exec("SELECT backend FROM gannf.workers WHERE name = 'evil'").get<std::string>(0, 0), "cuda-tf32");
    pg::Result t = coord().exec(
        "SELECT strikes, forgivable, quarantined_at IS NOT NULL FROM gannf.login_trust WHERE login = 'gannf_test_w2'");
    *strikes = t.rows() ? t.get<int32_t>(0, 0) : 0;
    *forgivable = t.rows() ? t.get<int32_t>(0, 1) : 0;
    *quarantined = t.rows() && t.get<bool>(0, 2);
    std::printf("declared cuda-tf32: strikes %d (forgivable %d)%s\n", *strikes, *forgivable,
                *quarantined ? ", quarantined" : "");
    return reasons;
  }

  // The worker-login fuzzer beside a real class
  // (AStudent...BesideARealClassLeavesTheRunWhole, below).
  // students: hostile logins (gannf_test_w3, w4, ...), two sessions each.
  void fuzz_beside_a_class(uint64_t default_seed, bool transactions, int students = 1);

  // Every rejection names the attack, except the submissions still pending
  // when the login was quarantined (sql/0008's strike() drops them).
  // A submission recomputed (chosen by the 10% draw, or in the first
  // updates) fails its spot check before any statistical check sees it.
  void expect_reasons(const std::vector<std::string>& reasons, const std::string& part) {
    for (const std::string& r : reasons)
      if (r != "quarantined" && (part == "spot check" || r.rfind("spot check: ", 0) != 0)) {
        EXPECT_NE(r.find(part), std::string::npos) << r;
      }
  }
};

TEST_F(Trust, ConstantGradientIsRejected) { expect_reasons(run_attack("constant"), "gradient norm of"); }

TEST_F(Trust, GradientTimesMinus1e4IsRejected) { expect_reasons(run_attack("scale:-1e4"), "gradient norm of"); }

TEST_F(Trust, GradientTimes1e4IsRejected) { expect_reasons(run_attack("scale:1e4"), "gradient norm of"); }

TEST_F(Trust, ZeroGradientsAreRejected) { expect_reasons(run_attack("zeros"), "gradient norm of"); }

TEST_F(Trust, BnStatisticsOf1e30AreRejected) {
  expect_reasons(run_attack("bn"), "outside what the current weights can produce");
}

// Refused by submit() itself since sql/0008 (losses and accuracies in range).
// The refusal reached the worker while it computed its next unit, which it
// then forgot while still holding it: the run waited for that unit's lease.
TEST_F(Trust, ForgedLossesAreRefused) { run_attack("losses", {}, 4, true); }

// sql/0020 end to end: a class that accepts cuda only (gannf-coord init
// --backends cuda) and a CPU worker. The worker says why and what to do,
// once, and exits 1 at registration instead of retrying; after an init
// without --backends the same machine joins.
TEST_F(Trust, AWorkerOfABackEndTheClassRefusesSaysWhatToDoAndExits) {
  std::vector<std::string> init = small_run(64, 8, 2, 3, /*classroom=*/true);
  init.insert(init.end(), {"--backends", "cuda"});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  EXPECT_EQ(coord().exec("SELECT array_to_string(accepted_backends, ',') FROM gannf.trust_settings").get<std::string>(0, 0),
            "cuda");
  Proc& w = start_worker("laptop", {"--backend", "cpu", "--exit-when-done"});
  const auto rc = w.wait(30);
  ASSERT_TRUE(rc.has_value()) << "the worker kept retrying:\n" << logs();
  EXPECT_EQ(*rc, 1) << logs();
  const std::string log = w.log();
  EXPECT_NE(log.find("this class does not accept back end \"cpu\"; it accepts cuda"), std::string::npos) << log;
  EXPECT_NE(log.find("--backend cuda"), std::string::npos) << log;
  EXPECT_EQ(count("SELECT count(*) FROM gannf.workers"), 0);
  {  // the instructor sees the setting
    Proc st({kCoordBin, "status", "--db", coord_db()}, (dir_ / "coord-status.log").string());
    EXPECT_EQ(st.wait(30), std::optional<int>(0)) << st.log();
    EXPECT_NE(st.log().find("back ends accepted: cuda (workers of others are refused)"), std::string::npos) << st.log();
  }
  // A wrong name is refused by init itself, before anything changes.
  Proc bad({kCoordBin, "init", "--db", coord_db(), "--dataset", "synthetic:64", "--backends", "cpu,gpu", "--force"},
           (dir_ / "coord-init-bad.log").string());
  EXPECT_EQ(bad.wait(60), std::optional<int>(2)) << bad.log();
  EXPECT_NE(bad.log().find("--backends: unknown back end 'gpu' (choose from cpu, cuda, cuda-tf32, cuda-bf16)"),
            std::string::npos)
      << bad.log();
  // Every back end again (init without --backends): the worker joins.
  std::vector<std::string> again = small_run(64, 8, 2, 3, /*classroom=*/true);
  again.push_back("--force");
  coord_cmd("init", again);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(coord().exec("SELECT accepted_backends FROM gannf.trust_settings").is_null(0, 0));
  start_worker("laptop2", {"--backend", "cpu"});
  EXPECT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers") == 1; }, 30)) << logs();
}

// An honest tensor-core worker's gradient against the coordinator's FP32
// recomputation: one GAN step of the reference DCGAN (f = 64) at the sizes a
// worker's micro-batch has, on the CPU model of each math (the double path on
// TF32- / BF16-rounded conv operands, which the GPU steps follow to 5e-4 -
// 3e-2, test_cuda's CudaStep), against the CPU's FP32 step. Each whole-net
// distance must stay under the back end's spot-check tolerance with room:
// measured G 2.3e-2 / 4.9e-2 (TF32) and 6.9e-2 / 1.3e-1 (BF16) at 32x32x1
// batch 64 / 64x64x3 batch 32 -- hence BF16's 0.3, TF32's 0.1.
TEST(SpotCheck, TensorCoreTolerancesCoverAnHonestStep) {
  for (auto [size, nc, B] : {std::tuple{32, 1, 64}, std::tuple{64, 3, 32}}) {
    DcganConfig cfg;
    cfg.image_size = size;
    cfg.nc = nc;
    for (const char* backend : {"cuda-tf32", "cuda-bf16"}) {
      auto cpu_f = make_backend<float>("cpu");
      std::unique_ptr<Backend<double>> ref;
      if (std::string(backend) == "cuda-tf32")
        ref = std::make_unique<Tf32RoundingCpu>();
      else
        ref = std::make_unique<Bf16RoundingCpu>();
      Net<float> Gf(*cpu_f, "G"), Df(*cpu_f, "D");
      Net<double> Gd(*ref, "G"), Dd(*ref, "D");
      build_generator(Gf, cfg, B), build_discriminator(Df, cfg, B);
      build_generator(Gd, cfg, B), build_discriminator(Dd, cfg, B);
      Gf.init_dcgan(11), Df.init_dcgan(12);
      auto cv = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
      Gd.set_params(cv(Gf.get_params())), Dd.set_params(cv(Df.get_params()));
      Rng r(5);
      std::vector<float> real((size_t)B * nc * size * size), noise((size_t)B * cfg.nz);
      for (auto& x : real) x = (float)(2 * r.uniform() - 1);
      for (auto& x : noise) x = (float)r.normal();
      const std::vector<double> real_d = cv(real), noise_d = cv(noise);
      GanStep<float> sf(Gf, Df);
      GanStep<double> sd(Gd, Dd);
      sf.zero_grads(), sd.zero_grads();
      sf.accumulate(real.data(), noise.data(), B, 1.0 / B);
      sd.accumulate(real_d.data(), noise_d.data(), B, 1.0 / B);
      const std::vector<float> fp32[2] = {Gf.get_grads(), Df.get_grads()};
      std::vector<float> model[2];
      for (int k = 0; k < 2; k++) {
        const auto g = (k ? Dd : Gd).get_grads();
        model[k].assign(g.begin(), g.end());
      }
      const double tol = cluster::spot_check_tolerance(backend);
      // Passes at half the tolerance: room for other seeds and sizes.
      const auto why = cluster::compare_recomputed(model, fp32, tol / 2);
      EXPECT_FALSE(why) << backend << " at " << size << "x" << size << "x" << nc << ", batch " << B
                        << ": " << why.value_or("");
      for (int k = 0; k < 2; k++)
        std::printf("%s %dx%dx%d batch %d: %s's gradient %.2e from FP32 (tolerance %g)\n", backend, size, size, nc, B,
                    k ? "D" : "G", cluster::relative_l2(model[k], fp32[k]), tol);
    }
  }
}

// A kept unit's weights (tests/fixtures/DIR/{generator,discriminator}.f32:
// the tests' small net, 32x32x1, f = 8, nz 16) on the CPU back end, with
// the run settings of its synthetic dataset.
struct KeptUnit {
  cluster::RunSettings s;
  std::unique_ptr<Backend<float>> cpu = make_backend<float>("cpu");
  Net<float> G{*cpu, "generator"}, D{*cpu, "discriminator"};
  std::vector<float> pg, pd;
  KeptUnit(const std::string& dir, int64_t dataset_size, uint64_t seed, int B) {
    s.dataset = "synthetic:" + std::to_string(dataset_size), s.dataset_size = dataset_size, s.seed = seed;
    s.image_size = 32, s.channels = 1, s.nz = 16, s.ngf = 8, s.ndf = 8;
    build_generator(G, s.dcgan(), B), build_discriminator(D, s.dcgan(), B);
    pg = read(dir + "/generator.f32"), pd = read(dir + "/discriminator.f32");
    if (pg.size() == G.num_params() && pd.size() == D.num_params()) G.set_params(pg), D.set_params(pd);
  }
  bool loaded() const { return pg.size() == G.num_params() && pd.size() == D.num_params(); }
  static std::vector<float> read(const std::string& name) {
    std::ifstream f(std::string(GANNF_SOURCE_DIR) + "/tests/fixtures/" + name, std::ios::binary);
    std::vector<float> v;
    float x;
    while (f.read(reinterpret_cast<char*>(&x), sizeof x)) v.push_back(x);
    return v;
  }
};

// The kink fixture's unit (tests/fixtures/kink/): 8 images from position
// 1000 of epoch 2, with its dataset and that epoch's permutation.
struct KinkUnit : KeptUnit {
  static constexpr int B = 8, epoch = 2;
  static constexpr int64_t first = 1000;
  std::unique_ptr<data::Dataset> ds;
  std::vector<uint32_t> perm;
  KinkUnit() : KeptUnit("kink", 1024, 26, B) {
    data::Options o;
    o.seed = s.seed, o.quiet = true, o.cache = false;
    ds = data::open_dataset(s.dataset, s.image_size, s.channels, o);
    perm = data::epoch_permutation(ds->size(), s.seed, epoch);
  }
};

// The attacks a second opinion must not explain away: `base` 0.2% larger,
// sign-flipped, zeroed, or shifted by 1e-3 (G's gradient), each checked at 1e-3.
void expect_no_attack_passes(cluster::SpotChecker& spot, const Net<float>& G, const Net<float>& D,
                             const cluster::SpotChecker::Unit& unit, const std::vector<float> base[2]) {
  for (auto [scale, shift, what] : {std::tuple{1.002f, 0.0f, "0.2% larger"}, std::tuple{-1.0f, 0.0f, "sign-flipped"},
                                    std::tuple{0.0f, 0.0f, "zeros"}, std::tuple{1.0f, 1e-3f, "shifted"}}) {
    std::vector<float> v[2] = {base[0], base[1]};
    for (auto& x : v[0]) x = scale * x + shift;
    EXPECT_TRUE(spot.check(G, D, std::span(&unit, 1), v, 1e-3)) << what << " passed";
  }
}

// The CPU back end (T = float: as the spot check's probe runs it; double:
// the double path) with activations unfused. A pass started with no flips
// notes every activation input within SpotChecker::kKinkBand of its kink
// (|x| / rms of its call's inputs); a pass started with flips puts those
// inputs on their other side (cluster::kink_other_side). Backward reads the
// output's side.
template <class T>
class KinkFlip final : public ForwardingBackend<T> {
 public:
  struct Site {
    int64_t call;
    size_t index;
    double closeness;
  };
  KinkFlip() : ForwardingBackend<T>(make_backend<T>("cpu")) {}
  void start(std::vector<Site> flips) {
    flips_ = std::move(flips);
    if (flips_.empty()) sites_.clear();
    call_ = 0;
  }
  // The k sites of the last pass without flips nearest their kink, nearest first.
  std::vector<Site> nearest(size_t k) const {
    std::vector<Site> v = sites_;
    std::sort(v.begin(), v.end(), [](const Site& a, const Site& b) { return a.closeness < b.closeness; });
    if (v.size() > k) v.resize(k);
    return v;
  }
  void relu_forward(T* out, const T* inp, size_t n) override { act(out, inp, n, BnAct::relu, 0); }
  void leaky_relu_forward(T* out, const T* inp, size_t n, T slope) override {
    act(out, inp, n, BnAct::leaky_relu, slope);
  }
  void batchnorm2d_forward_train(T* out, T* mean, T* var, const T* inp, const T* w, const T* b, int B, int C,
                                 int HW, T eps, BnAct a, T slope) override {
    this->inner().batchnorm2d_forward_train(out, mean, var, inp, w, b, B, C, HW, eps, BnAct::none, slope);
    if (a != BnAct::none) act(out, out, (size_t)B * C * HW, a, slope);
  }

 private:
  void act(T* out, const T* inp, size_t n, BnAct a, T slope) {
    const int64_t call = call_++;
    std::vector<std::pair<size_t, T>> here;  // read before an in-place activation overwrites them
    for (const Site& f : flips_)
      if (f.call == call) here.push_back({f.index, inp[f.index]});
    if (flips_.empty()) {
      double ss = 0;
      for (size_t i = 0; i < n; ++i) ss += (double)inp[i] * inp[i];
      const double rms = std::sqrt(ss / (double)std::max<size_t>(n, 1));
      for (size_t i = 0; rms > 0 && i < n; ++i)
        if (std::fabs((double)inp[i]) / rms < cluster::SpotChecker::kKinkBand)
          sites_.push_back({call, i, std::fabs((double)inp[i]) / rms});
    }
    if (a == BnAct::relu)
      this->inner().relu_forward(out, inp, n);
    else
      this->inner().leaky_relu_forward(out, inp, n, slope);
    for (const auto& [i, x] : here) out[i] = (T)cluster::kink_other_side((float)x, a, (float)slope);
  }
  std::vector<Site> flips_, sites_;
  int64_t call_ = 0;
};

// A unit where one activation input sits within rounding of its kink: the
// weights (tests/fixtures/kink/, the tests' small net, 32x32x1, f = 8,
// nz 16) of the honest run in which the emulated GPU worker's unit was
// rejected at 2.4e-2 from the coordinator's recomputation -- 24x the FP32
// tolerance, and a failed spot check quarantines. The other machine's
// arithmetic here is the CPU's double path (the emulated GPU was 4e-7 from
// it). Which side the coordinator's FP32 recomputation puts that input on
// depends on the CPU's BLAS kernels: OpenBLAS's AVX-512 ones (SkylakeX,
// Cooperlake) put it on the other side from the double path, its AVX2 ones
// (Haswell, Zen) on the same. A machine whose environment says
// OPENBLAS_CORETYPE=Haswell (one development machine's did) failed the
// test until it chose. So the submission is the double path's gradient
// as it is, or with that input put on its other side (KinkFlip<double>): whichever
// this machine's recomputation disagrees with.
// Before SpotChecker::check's second opinion this honest unit was struck.
// The second opinion explains it and nothing else: the same gradient
// moved by 0.2%, or any other attack, still fails.
TEST(SpotCheck, AnActivationOnTheOtherSideOfItsKinkIsNoFailure) {
  constexpr int B = KinkUnit::B, epoch = KinkUnit::epoch;
  constexpr int64_t first = KinkUnit::first;
  KinkUnit k;
  ASSERT_TRUE(k.loaded());
  const cluster::RunSettings& s = k.s;
  Net<float>&G = k.G, &D = k.D;
  const std::vector<float>&pg = k.pg, &pd = k.pd;
  auto flip = std::make_unique<KinkFlip<double>>();
  KinkFlip<double>& cpu_d = *flip;
  Net<double> Gd(cpu_d, "generator"), Dd(cpu_d, "discriminator");
  build_generator(Gd, s.dcgan(), B), build_discriminator(Dd, s.dcgan(), B);
  Gd.set_params(std::vector<double>(pg.begin(), pg.end())), Dd.set_params(std::vector<double>(pd.begin(), pd.end()));
  // The unit's images and noise, as step_micro_batch draws them.
  std::vector<uint64_t> idx(B);
  for (int i = 0; i < B; ++i) idx[i] = k.perm[first + i];
  std::vector<float> real((size_t)B * k.ds->image_floats()), noise((size_t)B * s.nz);
  data::get_batch(*k.ds, idx.data(), B, real.data());
  for (int i = 0; i < B; ++i) sample_noise(noise.data() + (size_t)i * s.nz, s.nz, s.seed, epoch, first + i);
  GanStep<double> step(Gd, Dd);
  const std::vector<double> real_d(real.begin(), real.end()), noise_d(noise.begin(), noise.end());
  cluster::SpotChecker spot(s, "");
  const cluster::SpotChecker::Unit unit{epoch, first, B, B};
  std::vector<float> ref[2];
  spot.recompute(G, D, std::span(&unit, 1), ref);
  std::vector<float> other[2];
  std::optional<std::string> plain;
  for (bool flipped : {false, true}) {
    cpu_d.start(flipped ? cpu_d.nearest(1) : std::vector<KinkFlip<double>::Site>{});
    step.zero_grads();
    step.accumulate(real_d.data(), noise_d.data(), B, 1.0 / B);
    for (int k = 0; k < 2; ++k) {
      const auto g = (k ? Dd : Gd).get_grads();
      other[k].assign(g.begin(), g.end());
    }
    plain = cluster::compare_recomputed(other, ref, 1e-3);
    if (plain) {
      std::printf("the double path %s: this machine's FP32 recomputation puts it on the other side\n",
                  flipped ? "with the input nearest its kink put on its other side" : "as it is");
      break;
    }
  }
  ASSERT_TRUE(plain) << "the fixture no longer has an activation at its kink";
  EXPECT_NE(plain->find("G's gradient is 0.01"), std::string::npos) << *plain;
  std::string note;
  const auto why = spot.check(G, D, std::span(&unit, 1), other, 1e-3, &note);
  EXPECT_FALSE(why) << *why;
  EXPECT_NE(note.find("on the other side of its kink"), std::string::npos) << note;
  std::printf("plain comparison: %s\nsecond opinion: %s\n", plain->c_str(), note.c_str());
  expect_no_attack_passes(spot, G, D, unit, other);  // nothing else passes
}

// Two activation inputs on the other side of their kinks in one unit (two
// machines' roundings; at 1% of checked units needing one, as in the
// straggler bench, two come once in some 20 000 checks, and a class checks
// thousands): the second opinion tried one at a time and the honest login
// was quarantined. It now keeps the flip that brings the recomputation
// nearest and tries the others beside it, up to three at once. The unit of
// the kink fixture, with the two of its 8 inputs nearest their kinks whose
// flips move the gradient most put on their other side, in this machine's
// FP32 (so on every machine those two, and only those, differ): each alone
// still fails, both pass; nothing else does.
TEST(SpotCheck, TwoActivationsOnTheOtherSideOfTheirKinksAreNoFailure) {
  constexpr int B = KinkUnit::B, epoch = KinkUnit::epoch;
  constexpr int64_t first = KinkUnit::first;
  KinkUnit k;
  ASSERT_TRUE(k.loaded());
  const cluster::RunSettings& s = k.s;
  Net<float>&G = k.G, &D = k.D;
  KinkFlip<float> flip;
  Net<float> Gf(flip, "generator"), Df(flip, "discriminator");
  build_generator(Gf, s.dcgan(), B), build_discriminator(Df, s.dcgan(), B);
  Gf.set_params(k.pg), Df.set_params(k.pd);
  cluster::MicroBatchBuffers buf;
  buf.idx.resize(B), buf.real.resize((size_t)B * k.ds->image_floats()), buf.noise.resize((size_t)B * s.nz);
  GanStep<float> step(Gf, Df);
  auto run = [&](std::vector<KinkFlip<float>::Site> flips) {
    flip.start(std::move(flips));
    step.zero_grads();
    cluster::step_micro_batch(step, *k.ds, k.perm, s, epoch, first, B, B, buf);
    std::array<std::vector<float>, 2> g;
    for (int k = 0; k < 2; ++k) {
      const auto v = (k ? Df : Gf).get_grads();
      g[k].assign(v.begin(), v.end());
    }
    return g;
  };
  const auto plain = run({});
  const auto sites = flip.nearest(cluster::SpotChecker::kKinkCandidates);
  ASSERT_GE(sites.size(), 2u);
  // Each candidate's effect alone; the two largest.
  std::vector<std::pair<double, size_t>> effect;
  for (size_t i = 0; i < sites.size(); ++i) {
    const auto g = run({sites[i]});
    effect.push_back({std::max(cluster::relative_l2(g[0], plain[0]), cluster::relative_l2(g[1], plain[1])), i});
  }
  std::sort(effect.rbegin(), effect.rend());
  const KinkFlip<float>::Site a = sites[effect[0].second], b = sites[effect[1].second];
  std::printf("the two flips that move the gradient most: %.3g and %.3g (relative L2)\n", effect[0].first,
              effect[1].first);
  ASSERT_GT(effect[1].first, 2e-3) << "the fixture's second flip no longer matters";
  const auto both = run({a, b});

  cluster::SpotChecker spot(s, "");
  const cluster::SpotChecker::Unit unit{epoch, first, B, B};
  std::string note;
  const auto why = spot.check(G, D, std::span(&unit, 1), both.data(), 1e-3, &note);
  EXPECT_FALSE(why) << *why;
  EXPECT_NE(note.find("passed with 2 activation inputs on the other side of their kinks"), std::string::npos) << note;
  std::printf("%s\n", note.c_str());
  for (const auto& one : {run({a}), run({b})}) {  // the second opinion of before: one at a time
    std::vector<float> ref[2] = {one[0], one[1]};
    EXPECT_TRUE(cluster::compare_recomputed(both.data(), ref, 1e-3)) << "one flip alone explains it";
  }
  expect_no_attack_passes(spot, G, D, unit, both.data());  // nothing else passes
}

// An activation input exactly 0 is on the negative side of its kink (the
// forward's v > 0, the backward's out > 0): its other side is positive.
// The second opinion put an exact 0 at -0, the same side, so it could not
// explain the unit below.
TEST(SpotCheck, AnExactZeroIsOnTheNegativeSideOfItsKink) {
  for (BnAct act : {BnAct::relu, BnAct::leaky_relu}) {
    for (float zero : {0.0f, -0.0f}) {
      const float o = cluster::kink_other_side(zero, act, 0.2f);
      EXPECT_GT(o, 0.0f) << "an exact zero's other side is positive";
      EXPECT_LE(o, 1e-30f) << "and as small";
    }
    EXPECT_EQ(cluster::kink_other_side(-3e-9f, act, 0.2f), 3e-9f);
  }
  EXPECT_EQ(cluster::kink_other_side(2e-9f, BnAct::relu, 0.2f), 0.0f);
  EXPECT_EQ(cluster::kink_other_side(2e-9f, BnAct::leaky_relu, 0.2f), -2e-9f * 0.2f);
}

// An honest CPU unit passes the spot check whatever the thread counts of the
// worker that computed it and of the coordinator that recomputes it. Found
// by bench/straggler.sh (three honest gannf-workers of 1 thread, a
// coordinator of 2, classroom rules): after 175 updates the class's only
// login was quarantined by a failed spot check, "D's gradient is 0.00423
// from the coordinator's recomputation", and the second opinion did not
// explain it. The weights of that update (tests/fixtures/kink-zero/) and
// its unit: with 2 threads this machine's OpenBLAS (OPENBLAS_CORETYPE=Haswell)
// sums one input of D's first LeakyReLU to exactly 0, with 1 thread to
// 2.4e-9 (as the double path does); that one derivative moves D's
// first-layer gradient by 0.45%. The second opinion put the exact 0 at -0,
// the same side (AnExactZeroIsOnTheNegativeSideOfItsKink); it now passes.
// Other machines' kernels may put no input at an exact 0 here: then every
// pair passes on the first comparison.
TEST(SpotCheck, AnHonestUnitPassesWhateverTheThreadCountsOfWorkerAndCoordinator) {
  const int B = 16;
  KeptUnit k("kink-zero", 100000, 3, B);
  ASSERT_TRUE(k.loaded());
  const Net<float>&G = k.G, &D = k.D;
  cluster::SpotChecker spot(k.s, "");
  const cluster::SpotChecker::Unit unit{0, 11248, B, B};
  const int threads = omp_get_max_threads();
  const std::vector<int> counts = {1, 2, 4};
  std::vector<std::array<std::vector<float>, 2>> worker(counts.size());
  for (size_t w = 0; w < counts.size(); ++w) {
    omp_set_num_threads(counts[w]);
    spot.recompute(G, D, std::span(&unit, 1), worker[w].data());
  }
  int explained = 0;
  for (size_t w = 0; w < counts.size(); ++w)
    for (int c : counts) {
      omp_set_num_threads(c);
      std::string note;
      const auto why = spot.check(G, D, std::span(&unit, 1), worker[w].data(), 1e-3, &note);
      EXPECT_FALSE(why) << "worker of " << counts[w] << " thread(s), coordinator of " << c << ": " << *why;
      if (!note.empty()) {
        ++explained;
        std::printf("worker of %d thread(s), coordinator of %d: %s\n", counts[w], c, note.c_str());
      }
    }
  omp_set_num_threads(threads);
  std::printf("%d of 9 pairs needed the second opinion on this machine\n", explained);
}

// The FP32 tolerance at the class's size: the reference DCGAN (64x64x3,
// nz 100, f = 64) after 5 local steps, 24 units of 16 images in
// micro-batches of 8, computed by a worker of 1 thread and checked by a
// coordinator of 2 (another summation order, as another machine's). The
// distances are not a few activations near their kink, which the second
// opinion could find, but spread through the nets: at the old 1e-3 this
// failed (bench_spot_check: 1 to 8% of such units, up to 7.8e-3 apart).
// Every unit passes at the first comparison, at half the tolerance.
TEST(SpotCheck, HonestUnitsAtTheClassSizePassWhateverTheThreadCounts) {
  constexpr int kUnits = 24, kImages = 16, kMicro = 8;
  constexpr int64_t kDataset = 100000;
  const fs::path dir = fs::path(GANNF_BINARY_DIR) / "spot-check-class-size";
  TrainOptions t;
  t.dataset = "synthetic:4096", t.image_size = 64, t.channels = 3, t.nz = 100, t.ngf = t.ndf = 64;
  t.batch_size = kImages, t.micro_batch = kMicro, t.seed = 3, t.output_dir = dir.string();
  t.sample_interval = t.checkpoint_interval = 0, t.cache = false, t.quiet = true;
  Trainer trainer(t);
  for (int i = 0; i < 5; ++i) trainer.step();
  cluster::RunSettings s;
  s.dataset = "synthetic:" + std::to_string(kDataset), s.dataset_size = kDataset, s.seed = 3;
  s.image_size = 64, s.channels = 3, s.nz = 100, s.ngf = s.ndf = 64;
  cluster::SpotChecker spot(s, "");
  const double tol = cluster::spot_check_tolerance("cpu");
  const int threads = omp_get_max_threads();
  double worst = 0;
  int over_old = 0;
  for (int u = 0; u < kUnits; ++u) {
    const cluster::SpotChecker::Unit unit{0, (kDataset - kImages) * (2 * u + 1) / (2 * kUnits), kImages, kMicro};
    std::vector<float> worker[2], ref[2];
    omp_set_num_threads(1);
    spot.recompute(trainer.G(), trainer.D(), std::span(&unit, 1), worker);
    omp_set_num_threads(2);
    spot.recompute(trainer.G(), trainer.D(), std::span(&unit, 1), ref);
    const double d = std::max(cluster::relative_l2(worker[0], ref[0]), cluster::relative_l2(worker[1], ref[1]));
    worst = std::max(worst, d);
    over_old += d > 1e-3;
    std::string note;
    const auto why = spot.check(trainer.G(), trainer.D(), std::span(&unit, 1), worker, tol, &note);
    EXPECT_FALSE(why) << "unit " << u << ": " << *why;
    EXPECT_EQ(note, "") << "unit " << u << " needed the second opinion";
  }
  omp_set_num_threads(threads);
  fs::remove_all(dir);
  EXPECT_LT(worst, tol / 2) << "the largest distance of an honest unit leaves less than 2x room";
  std::printf("%d units at 64x64x3: largest distance %.2g (tolerance %g); %d over the old 1e-3\n", kUnits, worst, tol,
              over_old);
}

TEST(SpotCheck, ChoiceFractionAndTolerance) {
  int chosen = 0;
  for (int64_t id = 1; id <= 10000; ++id) chosen += cluster::chosen_for_spot_check(7, id, 0.1);
  EXPECT_GT(chosen, 850);
  EXPECT_LT(chosen, 1150);
  EXPECT_FALSE(cluster::chosen_for_spot_check(7, 1, 0));
  EXPECT_TRUE(cluster::chosen_for_spot_check(7, 1, 1));
  EXPECT_EQ(cluster::spot_check_tolerance("cpu"), 5e-2);
  EXPECT_EQ(cluster::spot_check_tolerance("cuda"), 5e-2);
  EXPECT_EQ(cluster::spot_check_tolerance("cuda-tf32"), 0.1);
  EXPECT_EQ(cluster::spot_check_tolerance("cuda-bf16"), 0.3);
  // Relative L2 per network: 3e-2 passes TF32's tolerance, not 1e-3; a sign flip neither.
  std::vector<float> ref[2] = {{3, 4}, {1, 0}}, near[2] = {{3, 4}, {1, 0.03f}}, flip[2] = {{-3, -4}, {1, 0}};
  EXPECT_FALSE(cluster::compare_recomputed(ref, ref, 1e-3));
  EXPECT_TRUE(cluster::compare_recomputed(near, ref, 1e-3));
  EXPECT_FALSE(cluster::compare_recomputed(near, ref, 0.1));
  ASSERT_TRUE(cluster::compare_recomputed(flip, ref, 0.1));
  EXPECT_NE(cluster::compare_recomputed(flip, ref, 0.1)->find("G's gradient is 2 "), std::string::npos)
      << *cluster::compare_recomputed(flip, ref, 0.1);
}

// tools/spot_check_draws.py recomputes this draw for tools/device-cluster.sh
// (a passed spot check leaves no trace in the database, so the stage counts
// the checks a run drew from the seed and the submission ids): it must agree
// with the coordinator, id for id, for summed submissions too (the fraction
// 1 - (1 - F)^k of Coordinator::fetch_and_validate). Skipped without python3:
// the product and CI need no Python; the GPU machine, where the script runs,
// has it.
TEST(SpotCheck, DrawsScriptAgreesWithTheCoordinator) {
  if (std::system("python3 -c pass >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const fs::path dir = fs::path(GANNF_BINARY_DIR) / "spot-check-draws";
  fs::create_directories(dir);
  constexpr double kF = 0.05;
  {
    std::ofstream in(dir / "in.txt");
    for (int64_t id = 1; id <= 3000; ++id) in << id << " " << 1 + id % 7 << "\n";
  }
  for (uint64_t seed : {1ull, 7ull, 0xFEDCBA9876543210ull}) {
    std::string want;
    int n = 0;
    for (int64_t id = 1; id <= 3000; ++id)
      if (cluster::chosen_for_spot_check(seed, id, 1 - std::pow(1 - kF, (double)(1 + id % 7)))) {
        if (n++) want += ' ';
        want += std::to_string(id);
      }
    const std::string cmd = "python3 '" + std::string(GANNF_SOURCE_DIR) + "/tools/spot_check_draws.py' --seed " +
                            std::to_string(seed) + " --fraction 0.05 < '" + (dir / "in.txt").string() + "' > '" +
                            (dir / "out.txt").string() + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::ifstream out(dir / "out.txt");
    std::string count, ids;
    std::getline(out, count);
    std::getline(out, ids);
    EXPECT_EQ(count, std::to_string(n)) << "seed " << seed;
    EXPECT_EQ(ids, want) << "seed " << seed;
  }
  fs::remove_all(dir);
}

// Spot checks: the coordinator recomputes the unit (every unit here).
const std::vector<std::string> kSpotCheckAll = {"--spot-check", "1"};

// A spot check's penalty follows its certainty (spot_check_certain): an
// honest emulated cuda-tf32 unit was 0.171 from the recomputation in a real
// run (tolerance 0.1), and a failed spot check quarantined its login at
// once. Now a tensor-core login's unit refused within three tolerances
// (0.3 for TF32) earns a forgivable strike, as a faulty machine's NaN does;
// only one past it quarantines at once. Each result ×1.2 (0.2 away): every
// checked unit is still refused, never used, and the login goes on until
// its strikes reach the threshold (5) -- before, the first quarantined it
// (the test fails so: one spot-check rejection, five strikes).
TEST_F(Trust, ATensorCoreUnitNearItsToleranceIsRefusedWithAForgivableStrike) {
  int strikes = 0, forgivable = 0;
  bool quarantined = false;
  const std::vector<std::string> reasons = run_declared_tf32("scale:1.2", &strikes, &forgivable, &quarantined);
  if (HasFatalFailure()) return;
  int near = 0;
  for (const std::string& r : reasons)
    if (r.rfind("spot check: ", 0) == 0) {
      ++near;
      EXPECT_NE(r.find("a forgivable strike, not the quarantine"), std::string::npos) << r;
    }
  EXPECT_GE(near, 2) << "the login went on after its first refused unit\n" << logs();
  EXPECT_EQ(forgivable, strikes) << "every strike forgivable";
  if (quarantined) {
    EXPECT_GE(strikes, 5) << "quarantined only by the threshold";
  }
}

// ×1.5 (0.5 away) is past what TF32's rounding may reach: the first refused
// unit quarantines at once, as every failed spot check did before.
TEST_F(Trust, ATensorCoreUnitPastItsRoundingQuarantinesAtOnce) {
  int strikes = 0, forgivable = 0;
  bool quarantined = false;
  const std::vector<std::string> reasons = run_declared_tf32("scale:1.5", &strikes, &forgivable, &quarantined);
  if (HasFatalFailure()) return;
  ASSERT_FALSE(reasons.empty()) << logs();
  EXPECT_EQ(reasons[0].rfind("spot check: ", 0), 0u) << reasons[0];
  EXPECT_EQ(reasons[0].find("forgivable"), std::string::npos) << reasons[0];
  EXPECT_TRUE(quarantined) << logs();
  EXPECT_EQ(forgivable, 0);
  int checked = 0;
  for (const std::string& r : reasons) checked += r.rfind("spot check: ", 0) == 0;
  EXPECT_EQ(checked, 1) << "quarantined at its first refused unit";
}

TEST_F(Trust, SignFlipIsCaughtBySpotCheck) { expect_reasons(run_attack("scale:-1", kSpotCheckAll), "spot check"); }

TEST_F(Trust, NoiseOfTheSameNormIsCaughtBySpotCheck) {
  expect_reasons(run_attack("noise", kSpotCheckAll), "spot check");
}

TEST_F(Trust, ALittleIsEnoughIsCaughtBySpotCheck) {
  expect_reasons(run_attack("alie:1.5", kSpotCheckAll), "spot check");
}

// Zeros sent without computing, with the norm check off: the spot check
// alone catches the free rider.
TEST_F(Trust, ZerosWithoutComputingAreCaughtBySpotCheck) {
  expect_reasons(run_attack("zeros", {"--spot-check", "1", "--norm-ratio", "0"}), "spot check");
}

// Issue: "holding one unit and heartbeating it stalls every iteration". The
// hold bound (sql/0008) ends a hold after minutes; until then every update
// waited for it. With the robust rules' quorum (the classroom default 0.6:
// 3 of 4 units here) an update closes without a straggler once it is as late
// again as the others took, and its unit is served again in the next one. A
// slow-but-honest gannf-worker (60 s a unit: a hostile holder looks the same
// to the coordinator) beside three fast ones: eight updates end long before
// its first unit would; with --quorum 1 the first update alone waited 60 s.
TEST_F(Trust, AStragglerDoesNotHoldTheClassAtTheQuorum) {
  coord_cmd("init", small_run(256, 8, 4, 31, /*classroom=*/true));
  if (HasFatalFailure()) return;
  // The slow worker takes a unit of the first update before the others
  // start (they send the other three) and before the coordinator starts.
  start_worker("slow", {"--batch-size", "8", "--throttle-ms", "60000", "--exit-when-done"}, 2);
  const std::string held = "SELECT coalesce(max(u.id), 0) FROM gannf.work_units u JOIN gannf.workers w "
                           "ON w.id = u.worker_id WHERE w.name = 'slow' AND u.state = 'claimed'";
  ASSERT_TRUE(wait_for([&] { return count(held) > 0; }, 30)) << logs();
  ensure_worker_login("gannf_test_w3");
  for (int i = 1; i <= 3; ++i)
    start_worker("fast" + std::to_string(i), {"--batch-size", "8", "--exit-when-done"}, i == 2 ? 3 : 1);
  const int64_t unit = count(held);
  const auto t0 = std::chrono::steady_clock::now();
  Proc& run = start_coord_run({"--iterations", "8", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(50);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(rc.has_value()) << "the class waited for the straggler:\n" << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_NE(run.log().find("(the quorum); 1 unit(s) still open"), std::string::npos) << run.log();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 8);
  // The straggler's unit was served again and used in a later update, by
  // another worker; no images were used twice.
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units u JOIN gannf.submissions s ON s.work_unit_id = u.id "
                  "JOIN gannf.workers w ON w.id = s.worker_id WHERE s.state = 'used' AND w.name <> 'slow' "
                  "AND u.iteration > 0 AND u.id = " + std::to_string(unit)),
            1)
      << logs();
  EXPECT_EQ(count("SELECT count(DISTINCT (epoch, first_index)) - count(*) FROM gannf.work_units WHERE state = 'done'"),
            0);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust"), 0) << "a straggler is no offence";
  std::printf("8 updates with a 60 s straggler at quorum 3 of 4: %.1f s\n", took);
}

// sql/0023 end to end: a slow-but-honest gannf-worker (3 s a unit) beside
// three fast ones, the exact mean (every unit needed). Its units are taken
// off as late; before, its student read only "was taken back (its lease
// passed, or its iteration closed)", while neither had happened. Now the
// worker says why (late, the time allowed, one unit at a time), the
// coordinator names the login, and monitor_logins (the dashboard's) counts
// the units taken off it.
TEST_F(Trust, ASlowWorkerIsToldWhyItsUnitWasTakenOff) {
  coord_cmd("init", small_run(256, 8, 4, 53));
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.trust_settings SET late_floor = '1 second'");
  Proc& slow = start_worker("slow", {"--batch-size", "8", "--throttle-ms", "3000", "--exit-when-done"}, 2);
  ASSERT_TRUE(wait_for([&] {
    return count("SELECT count(*) FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
                 "WHERE w.name = 'slow' AND u.state = 'claimed'") > 0;
  }, 30)) << logs();
  ensure_worker_login("gannf_test_w3");
  for (int i = 1; i <= 3; ++i)
    start_worker("fast" + std::to_string(i), {"--batch-size", "8", "--exit-when-done"}, i == 2 ? 3 : 1);
  Proc& run = start_coord_run({"--iterations", "6", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const char* said = "taken off this worker (late: held over ";  // while computing, or refused at its upload
  ASSERT_TRUE(wait_for([&] { return slow.log().find(said) != std::string::npos; }, 40)) << logs();
  {
    const std::string l = slow.log();
    const size_t at = l.rfind('\n', l.find(said)) + 1;
    std::printf("the slow worker said: %s\n", l.substr(at, l.find('\n', at) - at).c_str());
  }
  EXPECT_NE(slow.log().find("this login holds one unit at a time until a result of it is accepted"),
            std::string::npos)
      << slow.log();
  const auto rc = run.wait(60);
  ASSERT_TRUE(rc.has_value()) << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_NE(run.log().find("late, taken off gannf_test_w2 ("), std::string::npos) << run.log();
  EXPECT_GE(count("SELECT units_taken FROM gannf.monitor_logins WHERE login = 'gannf_test_w2' AND taken_why = 'late'"),
            1);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust"), 0) << "a straggler is no offence";
  EXPECT_EQ(count("SELECT count(DISTINCT (epoch, first_index)) - count(*) FROM gannf.work_units WHERE state = 'done'"),
            0);
  // The instructor's status names the login, how many units it lost, why.
  const std::string status = coord_output("status");
  EXPECT_TRUE(status.find("HELD TO ONE UNIT gannf_test_w2: a unit was taken off it") != std::string::npos ||
              status.find("units taken off logins: gannf_test_w2 ") != std::string::npos)
      << status;
  EXPECT_NE(status.find("late: held over 1.0 s)"), std::string::npos) << status;
}

// An honest class must never be struck by the statistical checks. Found by
// bench/straggler.sh: three honest gannf-workers of one login, the
// classroom's rules, a small model; after about 170 updates D's first
// layer's gradient grew to 10-20x the recent median on some units (the
// discriminator winning), the norm check rejected one unit an update, each
// a strike, and at the fifth the class's login was quarantined and the run
// stopped. A submission the norm check flags is now recomputed (the spot
// check's code) before it is rejected: if the recomputation agrees, it is
// honest and used (the rule still clips it).
TEST_F(Trust, AnHonestClassWhoseGradientsOutgrowTheNormCheckIsNeverStruck) {
  coord_cmd("init", {"--dataset", "synthetic:100000", "--image-size", "32", "--channels", "1", "--latent-dim", "16",
                     "--ngf", "8", "--ndf", "8", "--images-per-unit", "16", "--units-per-update", "4", "--seed", "3",
                     "--quorum", "1", "--no-cache", "--quiet"});
  if (HasFatalFailure()) return;
  for (int i = 1; i <= 3; ++i) start_worker("w" + std::to_string(i), {"--batch-size", "16", "--exit-when-done"}, 1);
  Proc& run = start_coord_run({"--iterations", "240", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(400);
  ASSERT_TRUE(rc.has_value()) << "240 updates did not end in 400 s:\n" << run.log();
  EXPECT_EQ(*rc, 0) << run.log();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 240);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust"), 0) << run.log();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions WHERE state = 'rejected'"), 0) << run.log();
  const std::string log = run.log();
  size_t flagged = 0;
  for (size_t at = 0; (at = log.find("but its recomputation agrees", at)) != std::string::npos; ++at) ++flagged;
  std::printf("240 honest updates: %zu submission(s) flagged by the norm check and used on their recomputation\n",
              flagged);
}

// sql/0024 end to end: a machine whose results are wrong now and then (one
// in four ×1e4 here: a faulty GPU, or the norm check's false positive)
// beside two honest ones, without spot checks (so nobody recomputes its
// flagged results), a threshold of 2 and 3 used submissions to forgive a
// strike. Before 0024 its second rejection quarantined it (the test fails
// so); now each strike is taken back by its next three used units, and it
// works on to the end. Every spoiled result is still rejected, none used.
TEST_F(Trust, ALoginRejectedNowAndThenIsForgivenByItsUsedWork) {
  // 960 images: 40 updates of 3 units end the run (its epochs would end 96
  // images after 21, before the hostile worker did its 16 units).
  std::vector<std::string> init = small_run(960, 8, 3, 29);
  init.insert(init.end(), {"--aggregation", "clip+trimmed", "--spot-check", "0"});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.trust_settings SET strike_threshold = 2, strike_forgiven_after = 3");
  ensure_worker_login("gannf_test_w3");
  start_worker("honest1", {"--batch-size", "4", "--exit-when-done"});
  start_worker("honest2", {"--batch-size", "4", "--exit-when-done"}, 3);
  Proc& run = start_coord_run({"--iterations", "40", "--sample-interval", "0", "--checkpoint-interval", "0"});
  // It joins once the norm check has a history to judge by (before, with
  // fewer than three logins in an update and no spot checks, a wrong
  // result is only clipped).
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.loss_history") >= 3; }, 120)) << logs();
  Proc& errs = start_hostile("errs", "scale:1e4", {"--every", "4", "--max-units", "16"});
  const auto rc = run.wait(300);
  ASSERT_TRUE(rc.has_value()) << logs();
  EXPECT_EQ(*rc, 0) << logs();
  const auto erc = errs.wait(60);
  EXPECT_TRUE(erc.has_value() && *erc == 0) << "it did its 16 units:\n" << logs();
  const std::string of_errs =
      "FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id WHERE w.name = 'errs' ";
  std::string history = "errs's submissions (id, iteration, unit, state):";
  pg::Result h = coord().exec("SELECT s.id, s.iteration, s.work_unit_id, s.state::text " + of_errs + "ORDER BY s.id");
  for (int i = 0; i < h.rows(); ++i)
    history += " (" + std::to_string(h.get<int64_t>(i, 0)) + ", " + std::to_string(h.get<int64_t>(i, 1)) + ", " +
               std::to_string(h.get<int64_t>(i, 2)) + ", " + h.get<std::string>(i, 3) + ")";
  EXPECT_EQ(count("SELECT count(*) " + of_errs + "AND s.state = 'used'"), 12) << history << "\n" << logs();
  EXPECT_EQ(count("SELECT count(*) " + of_errs + "AND s.state = 'rejected' AND s.reject_reason LIKE '%gradient norm%'"),
            4)
      << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_status WHERE quarantined"), 0) << logs();
  EXPECT_EQ(count("SELECT forgiven FROM gannf.login_status WHERE login = 'gannf_test_w2'"), 3)
      << "the 4th and last rejection has no 3 used units after it:\n" << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                  "WHERE w.name <> 'errs' AND s.state = 'rejected'"),
            0)
      << logs();
  EXPECT_NE(run.log().find("gannf_test_w2: 1 strike(s) forgiven for its used work"), std::string::npos) << run.log();
}

// sql/0021 end to end: a hostile holder (Holder, above, with the login's cap
// of 4 units) beside three honest gannf-workers, one epoch of 12 units, 4
// per update, the classroom's quorum (3 of 4). It takes the whole first
// update before the others start, so only the hold bound (5 s here; sql/0022's
// late rule off) takes units off it. Before sql/0021 its next claim got the same
// units back (lowest id first, and it claims the moment its heartbeat hands
// them back) and the run never ended (the test fails at 90 s); now every unit
// it is given is a new one, and the run ends with every image used once.
TEST_F(Trust, AHolderIsNeverGivenBackTheUnitTakenOffIt) {
  std::vector<std::string> init = small_run(96, 8, 4, 43, /*classroom=*/true);
  init.insert(init.end(), {"--epochs", "1"});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.trust_settings SET hold_floor = '5 seconds', hold_default_per_image = '0.05 seconds', "
               "late_floor = '1 hour'");  // the hold bound alone (sql/0022's rule has a test of its own)
  ensure_worker_login("gannf_test_w4");
  Holder holder(worker_db(4), 4);
  ASSERT_TRUE(wait_for([&] { return !holder.given().empty(); }, 30));
  ensure_worker_login("gannf_test_w3");
  for (int i = 1; i <= 3; ++i) start_worker("honest" + std::to_string(i), {"--batch-size", "8", "--exit-when-done"}, i);
  const auto t0 = std::chrono::steady_clock::now();
  Proc& run = start_coord_run({"--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(90);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  holder.stop();
  EXPECT_EQ(holder.error(), "");
  const std::vector<int64_t> given = holder.given();
  ASSERT_TRUE(rc.has_value()) << "the run did not end in 90 s; the holder was given units" << Holder::text(given)
                              << "\n" << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_EQ(std::set<int64_t>(given.begin(), given.end()).size(), given.size())
      << "the holder was given a unit back:" << Holder::text(given);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'done'"), 12) << logs();
  expect_holders_left_no_work();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust"), 0) << "holding is no offence (a laptop may sleep)";
  std::printf("one epoch beside a holder: %.1f s, %zu updates; the holder was given units%s\n", took,
              (size_t)count("SELECT count(*) FROM gannf.loss_history"), Holder::text(given).c_str());
}

// sql/0022 end to end, with the classroom's hold bound (2 minutes at least;
// 4 × 1 s per image for a login that never submitted): a holder that keeps
// two units of every update -- more than the quorum (3 of 4) can do without
// -- beside three honest gannf-workers. Before sql/0022 the first update
// waited for the hold bound (the test fails at 60 s); now each held unit is
// taken off once it is 4 × the update's median time per image late, at
// least late_floor (2 s here), the holder holds one unit at a time from then
// on (sql/0021), and 4 updates end in seconds.
TEST_F(Trust, AHolderOfHalfOfEveryUpdateDoesNotFreezeTheClass) {
  coord_cmd("init", small_run(256, 8, 4, 47, /*classroom=*/true));
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.trust_settings SET late_floor = '2 seconds'");
  ensure_worker_login("gannf_test_w4");
  Holder holder(worker_db(4), 2);
  ASSERT_TRUE(wait_for([&] { return holder.given().size() >= 2; }, 30));
  ensure_worker_login("gannf_test_w3");
  for (int i = 1; i <= 3; ++i) start_worker("honest" + std::to_string(i), {"--batch-size", "8", "--exit-when-done"}, i);
  // What the holder holds, as the database sees it, once a unit was taken
  // off it (login_taken; one snapshot per look).
  std::atomic<bool> stop_watch{false};
  std::atomic<int64_t> most_after_loss{0};
  std::thread watch([&] {
    pg::Connection c = connect_or_fail(coord_db());
    while (!stop_watch) {
      pg::Result r = c.exec(
          "SELECT (SELECT count(*) FROM gannf.login_taken WHERE login = 'gannf_test_w4'), "
          "(SELECT count(*) FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
          " WHERE w.name = 'holder' AND u.state = 'claimed' AND u.visible_at > gannf.now())");
      if (r.get<int64_t>(0, 0) > 0) most_after_loss = std::max<int64_t>(most_after_loss, r.get<int64_t>(0, 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  Proc& run = start_coord_run({"--iterations", "4", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(60);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  holder.stop();
  stop_watch = true;
  watch.join();
  EXPECT_EQ(holder.error(), "");
  const std::vector<int64_t> given = holder.given();
  ASSERT_TRUE(rc.has_value()) << "4 updates took over 60 s; the holder was given units" << Holder::text(given)
                              << "\n" << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_NE(run.log().find("late, taken off gannf_test_w4 ("), std::string::npos) << run.log();
  EXPECT_LE(most_after_loss.load(), 1) << "held to one unit once a unit was taken off it (sql/0021)";
  // The instructor sees it: gannf-coord status names the login.
  const std::string said = coord_output("status");
  EXPECT_NE(said.find("HELD TO ONE UNIT gannf_test_w4: a unit was taken off it"), std::string::npos) << said;
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 4);
  expect_holders_left_no_work();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust"), 0);
  std::printf("4 updates beside a holder of 2 units an update: %.1f s; the holder was given units%s\n", took,
              Holder::text(given).c_str());
}

// sql/0031: a login that claimed all of a run's first update the moment it
// was made, and kept it with heartbeats, held the run for the hold bound (2
// minutes; without heartbeats, the lease: a claim flood did that, 315 s
// for 100 updates against 10 s alone): the first update had no pace of the
// class's machines to judge it by. Now gannf-coord run measures its own CPU
// time per image of a unit at its start, and until a unit of the run is in
// a unit held first_pace_slack × hold_factor × that × its images, at least
// first_late_floor, is late. The test fails at 60 s before the fix.
TEST_F(Trust, AHolderOfTheWholeFirstUpdateDoesNotFreezeTheClass) {
  coord_cmd("init", small_run(256, 8, 4, 59, /*classroom=*/true));
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.trust_settings SET late_floor = '2 seconds', first_late_floor = '3 seconds'");
  ensure_worker_login("gannf_test_w4");
  Holder holder(worker_db(4), 4);
  ASSERT_TRUE(wait_for([&] { return holder.given().size() >= 4; }, 30));
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
                  "WHERE w.name = 'holder' AND u.state = 'claimed' AND u.iteration = 0"),
            4)
      << "the holder has the whole first update";
  ensure_worker_login("gannf_test_w3");
  const auto t0 = std::chrono::steady_clock::now();
  Proc& run = start_coord_run({"--iterations", "4", "--sample-interval", "0", "--checkpoint-interval", "0"});
  for (int i = 1; i <= 3; ++i) start_worker("honest" + std::to_string(i), {"--batch-size", "8", "--exit-when-done"}, i);
  const auto rc = run.wait(60);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  holder.stop();
  EXPECT_EQ(holder.error(), "");
  const std::vector<int64_t> given = holder.given();
  ASSERT_TRUE(rc.has_value()) << "4 updates took over 60 s (before sql/0031 the first waited for the hold bound, "
                              << "2 minutes); the holder was given units" << Holder::text(given) << "\n" << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_NE(run.log().find("this machine's CPU computes an image of a unit"), std::string::npos) << run.log();
  // Allowed first_late_floor (3 s), or 20 × the coordinator's time for a
  // unit's 8 images where that is longer.
  EXPECT_NE(run.log().find("iteration 0: 4 unit(s) late, taken off gannf_test_w4 (4, allowed "), std::string::npos)
      << run.log();
  EXPECT_NE(run.log().find("no unit of the run is in yet"), std::string::npos) << run.log();
  EXPECT_GT(count("SELECT (extract(epoch FROM coordinator_pace) * 1e9)::bigint FROM gannf.training_state"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 4);
  expect_holders_left_no_work();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust"), 0);
  std::printf("4 updates beside a holder of the whole first update: %.1f s; the holder was given units%s\n", took,
              Holder::text(given).c_str());
}

// A login quarantined while an update is judged loses all its work of that
// update. Here its first unit is honest and its second ×1e4; both land in
// the first update, which has no norm history, so the coordinator
// recomputes both there (check_first_updates): the second differs and
// quarantines the login at once. Before, its first submission stayed in
// the update, was aggregated and marked 'used' although the log said its
// work was refused (the test fails so).
TEST_F(Trust, AQuarantinedLoginsOtherSubmissionsOfTheUpdateAreRefused) {
  std::vector<std::string> init = small_run(64, 8, 2, 61);
  // A fraction so small that no submission is drawn on arrival: the update
  // is judged as a whole, at its close.
  init.insert(init.end(), {"--aggregation", "clip+trimmed", "--spot-check", "0.0001"});
  coord_cmd("init", init);
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.training_state SET status = 'paused'");
  Proc& evil = start_hostile("evil", "scale:1e4", {"--every", "2", "--max-units", "2"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers") == 1; }, 60)) << logs();
  Proc& run = start_coord_run({"--iterations", "1", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto erc = evil.wait(120);
  ASSERT_TRUE(erc.has_value()) << logs();
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.login_trust WHERE quarantined_at IS NOT NULL") == 1; },
                       60))
      << logs();
  start_worker("honest", {"--batch-size", "4", "--exit-when-done"});
  const auto rc = run.wait(120);
  ASSERT_TRUE(rc.has_value()) << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 1) << logs();
  const std::string of_evil =
      "FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id WHERE w.name = 'evil' ";
  EXPECT_EQ(count("SELECT count(*) " + of_evil + "AND s.state = 'used'"), 0) << logs();
  EXPECT_EQ(count("SELECT count(*) " + of_evil + "AND s.state = 'rejected' AND s.reject_reason = 'quarantined'"), 1)
      << logs();
  EXPECT_EQ(count("SELECT count(*) " + of_evil + "AND s.state = 'rejected' AND s.reject_reason LIKE '%recomput%'"), 1)
      << logs();
  EXPECT_EQ(count("SELECT submissions_used FROM gannf.loss_history"), 2) << "the honest worker's two units";
  EXPECT_NE(run.log().find("its login was quarantined in this update"), std::string::npos) << run.log();
}

// A student's transaction kept across calls against the coordinator's
// close: it holds its unit's row (a heartbeat) while the close, holding the
// state row FOR UPDATE, waits to serve that unit again (the update closes
// at the quorum without it); then it calls submit(), which waits for the
// state row. PostgreSQL ends one of the two after deadlock_timeout (1 s):
// the coordinator, which waited first. gannf-coord exited with "deadlock
// detected" (the test fails so). Now it ends the session that held a
// transaction across calls, strikes its login and closes the update again.
TEST_F(Trust, AStudentsTransactionThatDeadlocksTheCoordinatorIsEnded) {
  coord_cmd("init", small_run(256, 8, 4, 67, /*classroom=*/true));  // quorum: 3 of 4 units
  if (HasFatalFailure()) return;
  pg::Connection student = connect_or_fail(worker_db(2));
  const int64_t worker = cluster::register_worker(student, {.name = "holder"});
  const std::vector<cluster::ClaimedUnit> got = cluster::claim(student, worker);
  ASSERT_EQ(got.size(), 1u);
  // A result of the published sizes, which submit() checks before it waits.
  pg::Result w = student.exec("SELECT layout_hash, element_count, bn_count FROM gannf.weights "
                              "WHERE iteration = 0 ORDER BY network");
  ASSERT_EQ(w.rows(), 2);
  std::vector<float> grad[2], bn[2];
  cluster::UnitResult r;
  r.sample_count = got[0].sample_count;
  for (int n = 0; n < 2; ++n) {
    grad[n].assign((size_t)w.get<int64_t>(n, 1), 0.f);
    bn[n].assign((size_t)w.get<int64_t>(n, 2) * (n == 0 ? 1 : 2), 0.f);  // D: real and fake passes
    (n == 0 ? r.g : r.d) = {(uint64_t)w.get<int64_t>(n, 0), grad[n], bn[n]};
  }
  // The unit is never late in this test's time: the coordinator's wait loop
  // does not take it off (take_off_late_logins() would wait for its row
  // outside the close, and the cycle would not form).
  coord().exec("UPDATE gannf.trust_settings SET late_floor = '10 minutes'");
  const int32_t student_pid = student.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0);
  student.exec("BEGIN");
  ASSERT_TRUE(cluster::heartbeat(student, worker, got[0]).has_value());  // the unit's row, held
  ensure_worker_login("gannf_test_w3");
  for (int i = 1; i <= 3; ++i)
    start_worker("fast" + std::to_string(i), {"--batch-size", "8", "--exit-when-done"}, i == 2 ? 3 : 1);
  Proc& run = start_coord_run({"--iterations", "3", "--sample-interval", "0", "--checkpoint-interval", "0"});
  // The coordinator waits for this student's session, not any lock: a wait
  // for an honest worker's brief lock let submit() run before the close and
  // keep the state row FOR SHARE, and the close then ran into its lock
  // timeout instead of the deadlock (CI failed so once).
  ASSERT_TRUE(wait_for([&] {
    return count("SELECT count(*) FROM pg_stat_activity WHERE usename = 'gannf_coord' "
                 "AND datname = current_database() AND " + std::to_string(student_pid) +
                 " = ANY(pg_blocking_pids(pid))") > 0;
  }, 60)) << "the close never waited for the unit:\n" << logs();
  std::thread submit([&] {
    try {
      cluster::submit(student, worker, got[0], r);  // waits for the state row: the cycle
    } catch (const std::exception&) {
      // ended by the coordinator, or refused once the update closed
    }
  });
  const auto rc = run.wait(120);
  submit.join();
  ASSERT_TRUE(rc.has_value()) << logs();
  EXPECT_EQ(*rc, 0) << "gannf-coord ended with the deadlock:\n" << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 3) << logs();
  const std::string log = run.log();
  EXPECT_NE(log.find("a deadlock with another session ended this coordinator's transaction"), std::string::npos) << log;
  EXPECT_NE(log.find("of login gannf_test_w2: it held a transaction across calls into a deadlock with the coordinator"),
            std::string::npos)
      << log;
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login = 'gannf_test_w2' AND strikes >= 1 "
                  "AND reason LIKE '%deadlock with the coordinator'"),
            1)
      << log;
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login <> 'gannf_test_w2'"), 0) << "the honest logins";
}

// The coordinator's statements had no lock_timeout outside the close. A
// student session holds its unit's row in a transaction it keeps idle with
// idle_in_transaction_session_timeout = 0 (a login may SET it); another
// session of the login earns the quarantine with two refused submissions.
// The strike that quarantines hands the login's units back and waited for
// that row for ever -- in reap(), so the reaper that would end the session
// never ran, and the class stopped (the test fails so: no update in 120 s).
// Now every coordinator statement gives up after 10 s (55P03), reap() ends
// the idle session before it strikes, and the strike goes through.
TEST_F(Trust, AStudentHoldingItsUnitInAnIdleTransactionDoesNotFreezeTheCoordinator) {
  coord_cmd("init", small_run(64, 8, 2, 71, /*classroom=*/true));
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.trust_settings SET strike_threshold = 2");
  pg::Connection idle = connect_or_fail(worker_db(2)), other = connect_or_fail(worker_db(2));
  const int64_t worker = cluster::register_worker(idle, {.name = "idle"});
  const std::vector<cluster::ClaimedUnit> got = cluster::claim(idle, worker);
  ASSERT_EQ(got.size(), 1u);
  idle.exec("BEGIN");
  idle.exec("SET LOCAL idle_in_transaction_session_timeout = 0");
  ASSERT_TRUE(cluster::heartbeat(idle, worker, got[0]).has_value());  // the unit's row, held
  pg::Params p;
  p.add(worker).add(got[0].unit_id).add(got[0].attempt).add(got[0].iteration).add(got[0].sample_count);
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(sqlstate_of([&] {
                other.exec("SELECT * FROM gannf.submit($1, $2, $3, $4, $5, NULL, NULL, NULL, NULL, NULL, NULL, "
                           "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
                           p);
              }),
              "22023")
        << "a refused submission, counted";
  start_worker("honest", {"--batch-size", "8", "--exit-when-done"});
  Proc& run = start_coord_run({"--iterations", "2", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(120);
  ASSERT_TRUE(rc.has_value()) << "the coordinator waited for the idle session's row:\n" << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 2) << logs();
  const std::string log = run.log();
  EXPECT_NE(log.find("waited too long for a lock"), std::string::npos) << log;
  EXPECT_NE(log.find("of login gannf_test_w2: idle in a transaction"), std::string::npos) << log;
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login = 'gannf_test_w2' AND quarantined_at IS NOT NULL"),
            1)
      << log;
}

// Advisory locks, where sql/roles.sql's section for database gannf has not
// run (a database set up before it, or by hand): PostgreSQL lets any login
// take any key. A student's session holding the coordinator's key made a
// gannf-coord started then refuse to run ("another gannf-coord is
// running"); one holding the migrations' key made it wait in migrate() for
// ever; and the dashboard said the coordinator ran. The coordinator now
// ends such sessions, quarantines the login (no worker takes either lock)
// and runs, and says that roles.sql has not run; coordinator_running (and
// the workers' trusted NOTIFY sender) count only the schema owner's session.
TEST_F(Trust, AStudentHoldingTheCoordinatorsLocksIsEndedAndQuarantined) {
  coord_cmd("init", small_run(64, 8, 2, 3, /*classroom=*/true));
  if (HasFatalFailure()) return;
  pg::Connection holds_coordinator = connect_or_fail(worker_db(2)), holds_migrations = connect_or_fail(worker_db(2));
  holds_coordinator.exec("SELECT pg_advisory_lock(" + std::to_string(0x67616e6e66636f) + ")");  // coordinator.cpp's key
  holds_migrations.exec("SELECT pg_advisory_lock(" + std::to_string(0x67616e6e66) + ")");  // migrate.cpp's
  EXPECT_FALSE(coord().exec("SELECT coordinator_running FROM gannf.monitor_run").get<bool>(0, 0))
      << "the dashboard would say a coordinator runs";
  start_worker("honest");
  Proc& run = start_coord_run({"--iterations", "2", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(120);
  ASSERT_TRUE(rc.has_value()) << "gannf-coord waited for the student's lock:\n" << logs();
  EXPECT_EQ(*rc, 0) << logs();
  const std::string log = run.log();
  for (const char* what : {"the migrations' lock", "the coordinator's lock"})
    EXPECT_NE(log.find("of login gannf_test_w2: it held " + std::string(what) + ", which only the coordinator takes"),
              std::string::npos)
        << log;
  EXPECT_NE(log.find("warning: students may take advisory locks"), std::string::npos) << log;
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login = 'gannf_test_w2' "
                  "AND quarantined_at IS NOT NULL AND reason LIKE 'held the coordinator''s advisory lock%'"),
            1);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login = 'gannf_test_w1'"), 0) << "the honest login";
  for (pg::Connection* c : {&holds_coordinator, &holds_migrations}) {
    bool lost = false;
    try {
      c->exec("SELECT 1");
    } catch (const pg::Error& e) {
      lost = e.connection_lost();
    }
    EXPECT_TRUE(lost) << "the student's session was ended";
  }
  EXPECT_EQ(count("SELECT max(iteration) FROM gannf.loss_history"), 1) << "both updates made";
}

// A worker login made by hand (CREATE ROLE ... IN ROLE gannf_worker) lacks
// the log settings admit_student gives (sql/roles.sql; docs/security.md,
// "The server's log"): its failing statements reach the server's log with
// their whole text. gannf-coord says so at start and what to run, and runs.
TEST_F(Trust, GannfCoordWarnsOfAWorkerLoginThatCanFillTheServersLog) {
  ensure_worker_login("trust_loud_by_hand");
  admin_->exec("ALTER ROLE trust_loud_by_hand RESET ALL");  // as CREATE ROLE made it, whatever roles.sql did since
  coord_cmd("init", small_run(32, 8, 2, 5));
  if (HasFatalFailure()) return;
  start_worker("honest");
  Proc& run = start_coord_run({"--iterations", "1", "--sample-interval", "0", "--checkpoint-interval", "0"});
  const auto rc = run.wait(120);
  ASSERT_TRUE(rc.has_value()) << logs();
  EXPECT_EQ(*rc, 0) << logs();
  const std::string log = run.log();
  EXPECT_NE(log.find("worker login(s) ("), std::string::npos) << log;
  EXPECT_NE(log.find(") can fill the server's log"), std::string::npos) << log;
  EXPECT_NE(log.find("Run sql/roles.sql again"), std::string::npos) << log;
}

// gannf-coord status names a login whose sessions keep the server busy, for
// the instructor (docs/security.md, "The server's CPU"): twenty looks at
// the worker logins' sessions running a statement, named at 60%. The
// coordinator's watch (below) shuts such a login out on its own; this is
// what the instructor sees where it cannot (here: turned off). Two
// sessions of one login counting a cross join back to back are caught in
// most looks; an honest worker computing updates for a running coordinator
// is not named, before or beside them.
TEST_F(Trust, StatusNamesALoginWhoseSqlKeepsTheServerBusy) {
  coord_cmd("init", small_run(64, 8, 2, 13));
  if (HasFatalFailure()) return;
  start_worker("honest", {"--batch-size", "8"}, 1);
  start_coord_run({"--iterations", "100000", "--sample-interval", "0", "--checkpoint-interval", "0", "--quiet",
                   "--student-sql-limit", "0", "--worker-call-limit", "0"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.loss_history") >= 3; }, 60)) << logs();
  EXPECT_EQ(coord_output("status").find("BUSY ON THE SERVER"), std::string::npos) << "nobody is busy yet";
  std::atomic<bool> stop{false};
  std::vector<std::thread> hogs;
  std::atomic<int> statements{0};
  for (int i = 0; i < 2; ++i)
    hogs.emplace_back([&] {
      try {
        pg::Connection c = connect_or_fail(worker_db(2));
        while (!stop) {
          c.exec("SELECT count(*) FROM generate_series(1, 3000) a, generate_series(1, 3000) b");
          ++statements;
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << "the busy session: " << e.what();
      }
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  const std::string said = coord_output("status");
  stop = true;
  for (std::thread& t : hogs) t.join();
  EXPECT_NE(said.find("BUSY ON THE SERVER gannf_test_w2: a session of it was running a statement in "),
            std::string::npos)
      << said;
  EXPECT_NE(said.find("gannf-coord remove-students gannf_test_w2"), std::string::npos) << said;
  EXPECT_EQ(said.find("BUSY ON THE SERVER gannf_test_w1"), std::string::npos) << "the honest login\n" << said;
  EXPECT_GT(statements.load(), 0);
}

// The coordinator's watch on the server's CPU (src/cluster/cpu_watch.h):
// a student login whose own SQL keeps the server busy is shut out
// (NOLOGIN) and its sessions ended, while the class goes on. Before it,
// nothing stopped such a login (bench/cpu_hog.sh: a class 1.75-2.43x
// slower beside four such sessions). Two sessions of one login count a
// cross join back to back; at the default limit (0.3 of a core over 10 s:
// 3 s) both run about 1.5 s. An honest worker on another login, computing
// all along, is neither counted nor struck.
TEST_F(Trust, AStudentsOwnSqlThatKeepsTheServerBusyIsShutOut) {
  install_shut_out();
  if (HasFatalFailure()) return;
  const std::string hog = "trust_cpu_hog";  // its own login: it ends up shut out
  login_of_its_own(hog);
  init_endless_run(17);
  if (HasFatalFailure()) return;
  start_worker("honest", {"--batch-size", "8"}, 1);
  // The hog's student runs a gannf-worker too: its statements are never
  // counted, but it goes with its login, and says why.
  Proc& hogs_worker = start_worker_on("user=" + hog + " dbname=" + db_, "hogs-worker", {"--batch-size", "8"});
  Proc& run = start_coord_run({"--iterations", "100000", "--sample-interval", "0", "--checkpoint-interval", "0"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.loss_history") >= 2; }, 60)) << logs();

  struct Hog {
    int statements = 0;
    std::string ended, again;  // the error that ended it; the reconnection's
  };
  std::array<Hog, 2> hogs;
  std::vector<std::thread> threads;
  const auto t0 = std::chrono::steady_clock::now();
  for (Hog& h : hogs)
    threads.emplace_back([&, conninfo = "user=" + hog + " dbname=" + db_] {
      try {
        pg::Connection c(conninfo);
        c.on_notice({});
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (std::chrono::steady_clock::now() < until) {
          c.exec("SELECT count(*) FROM generate_series(1, 3000) a, generate_series(1, 3000) b");
          ++h.statements;
        }
        h.ended = "(not ended in 60 s)";
      } catch (const std::exception& e) {
        h.ended = e.what();
      }
      try {
        pg::Connection again(conninfo);
        h.again = "(connected again)";
      } catch (const std::exception& e) {
        h.again = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t updates_then = count("SELECT count(*) FROM gannf.loss_history");
  for (const Hog& h : hogs) {
    EXPECT_NE(h.ended.find("terminat"), std::string::npos) << "the hog's session: " << h.ended;
    EXPECT_NE(h.again.find("not permitted to log in"), std::string::npos) << "its reconnection: " << h.again;
  }
  std::printf("two sessions of the hog ran %d and %d statements; both ended %.1f s after they began\n",
              hogs[0].statements, hogs[1].statements, took);
  EXPECT_LT(took, 30) << "the default limit is 3 s of a core in 10 s";
  pg::Params p;
  p.add(hog);
  EXPECT_FALSE(admin_->exec("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", p).get<bool>(0, 0));
  // The strike: the coordinator's loop says and strikes what the watch's
  // thread did, every 2 s at most.
  EXPECT_TRUE(wait_for(
      [&] { return count("SELECT count(*) FROM gannf.login_trust WHERE login = 'trust_cpu_hog' AND strikes >= 1") == 1; },
      15))
      << logs();
  // The class goes on: the honest login was never counted.
  EXPECT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.loss_history") >= updates_then + 2; }, 60))
      << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login = 'gannf_test_w1'"), 0) << logs();
  EXPECT_TRUE(admin_->exec("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'gannf_test_w1'").get<bool>(0, 0));
  EXPECT_TRUE(wait_for([&] { return run.log().find("login trust_cpu_hog shut out: its own SQL") != std::string::npos; },
                       10))
      << run.log();
  EXPECT_NE(run.log().find("SELECT gannf_admin.admit_student('trust_cpu_hog')"), std::string::npos) << run.log();
  {
    const std::string l = run.log();
    const size_t at = l.find("login trust_cpu_hog shut out");
    if (at != std::string::npos) std::printf("the coordinator said: %s\n", l.substr(at, l.find('\n', at) - at).c_str());
  }
  EXPECT_EQ(run.log().find("login gannf_test_w1"), std::string::npos) << run.log();
  const auto hw = hogs_worker.wait(60);
  EXPECT_TRUE(hw.has_value() && *hw != 0) << hogs_worker.log();
  EXPECT_NE(hogs_worker.log().find("the coordinator shut it out because SQL of this login kept the server busy"),
            std::string::npos)
      << hogs_worker.log();
  {
    const std::string said = coord_output("status");
    EXPECT_NE(said.find("SHUT OUT trust_cpu_hog (its own SQL ran "), std::string::npos) << said;
    EXPECT_NE(said.find("SELECT gannf_admin.admit_student('trust_cpu_hog') lets it in again"), std::string::npos)
        << said;
  }
  // admit_student lets it in again (as the line says), its password kept.
  pg::Connection in_gannf = connect_or_fail("user=postgres dbname=gannf");
  in_gannf.exec("SELECT gannf_admin.admit_student($1)", p);
  EXPECT_TRUE(admin_->exec("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", p).get<bool>(0, 0));
}

// A flood of a gannf-worker's own statements (worker_sql.h), byte for byte
// the worker's text and so never counted as the login's own SQL: four
// sessions of one login sending the worker's state query in libpq's
// pipeline mode made a class on a one-core server 2.06x slower, and the
// watch let them (bench/cpu_hog.sh --hog pipeline). Now the watch counts a
// gannf-worker's calls too (uploads and weights aside) while they run on
// the CPU, against --worker-call-limit (1.0 of a core over 10 s: 10 s),
// which no gannf-worker reaches: it has one statement in flight on a
// connection and computes between calls (a tiny class's busiest login:
// about 2.6 s). Four sessions claiming back to back ran one at a time, the
// rest queued behind it (about one core, under that limit: 1.4-2.0x): so a
// session busy with calls -- running, or queued behind its own login's
// other sessions -- for 8 s of 10 s is a flood too (a tiny class's busiest
// session: about 3 s). Here one login's two sessions of call_flood
// (tests/call_flood.cpp), each with a registered worker of its own, flood
// the state query, and another login's four sessions flood claim; an
// honest worker on a third login trains beside them.
TEST_F(Trust, AFloodOfAWorkersOwnCallsIsShutOut) {
  install_shut_out();
  if (HasFatalFailure()) return;
  const std::string flooder = "trust_call_flood", claimer = "trust_claim_flood";
  for (const std::string& l : {flooder, claimer}) login_of_its_own(l);
  init_endless_run(19);
  if (HasFatalFailure()) return;
  start_worker("honest", {"--batch-size", "8"}, 1);
  Proc& run = start_coord_run({"--iterations", "100000", "--sample-interval", "0", "--checkpoint-interval", "0"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.loss_history") >= 2; }, 60)) << logs();
  const auto t0 = std::chrono::steady_clock::now();
  Proc flood({kCallFloodBin, "--db", "user=" + flooder + " dbname=" + db_, "--sessions", "2", "--seconds", "60",
              "--call", "training_state"},
             (dir_ / "call-flood.log").string());
  Proc claims({kCallFloodBin, "--db", "user=" + claimer + " dbname=" + db_, "--sessions", "4", "--seconds", "60",
               "--call", "claim"},
              (dir_ / "claim-flood.log").string());
  for (Proc* f : {&flood, &claims}) {
    const auto rc = f->wait(90);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(rc.has_value()) << f->log();
    std::printf("the flood ran %.1f s:\n%s", took, f->log().c_str());
    EXPECT_LT(took, 30) << "the state query's two sessions pass 10 s of calls in about 5 s; a claiming session is "
                           "busy 8 s of 10 s after 8 s";
    EXPECT_EQ(f->log().find(": time"), std::string::npos) << "a session flooded for the whole 60 s\n" << f->log();
    EXPECT_NE(f->log().find("connection ended"), std::string::npos) << f->log();
  }
  for (const std::string& l : {flooder, claimer}) {
    pg::Params p;
    p.add(l);
    EXPECT_FALSE(admin_->exec("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", p).get<bool>(0, 0)) << l;
    try {
      pg::Connection again("user=" + l + " dbname=" + db_);
      ADD_FAILURE() << l << " connected again";
    } catch (const pg::Error& e) {
      EXPECT_NE(std::string(e.what()).find("not permitted to log in"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(wait_for(
        [&] { return count("SELECT count(*) FROM gannf.login_trust WHERE login = '" + l + "' AND strikes >= 1") == 1; },
        15))
        << logs();
  }
  EXPECT_TRUE(wait_for(
      [&] {
        return run.log().find("login trust_call_flood shut out: a gannf-worker's calls") != std::string::npos &&
               run.log().find("login trust_claim_flood shut out: one of its sessions was busy") != std::string::npos;
      },
      10))
      << run.log();
  // The claims' sessions take one core between them, under --worker-call-
  // limit: they are ended for a session busy 8 s of 10 s (without that
  // rule the sum reached its limit too, later: 13.3 s in one run).
  for (const char* l : {"login trust_call_flood shut out", "login trust_claim_flood shut out"}) {
    const std::string log = run.log();
    const size_t at = log.find(l);
    if (at != std::string::npos)
      std::printf("the coordinator said: %s\n", log.substr(at, log.find('\n', at) - at).c_str());
  }
  // The class goes on; the honest login, whose worker makes the same calls
  // at its own pace, is never counted near the limit.
  const int64_t updates_then = count("SELECT count(*) FROM gannf.loss_history");
  EXPECT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.loss_history") >= updates_then + 2; }, 60))
      << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login = 'gannf_test_w1'"), 0) << logs();
  EXPECT_EQ(run.log().find("login gannf_test_w1"), std::string::npos) << run.log();
  {
    const std::string said = coord_output("status");
    EXPECT_NE(said.find("SHUT OUT trust_call_flood (a gannf-worker's calls ran "), std::string::npos)
        << said;
  }
  pg::Connection in_gannf = connect_or_fail("user=postgres dbname=gannf");
  for (const std::string& l : {flooder, claimer}) {
    pg::Params p;
    p.add(l);
    in_gannf.exec("SELECT gannf_admin.admit_student($1)", p);
  }
}

// A prepared transaction outlives its session and keeps its locks, and
// only its owner or a superuser can end it (ROLLBACK PREPARED, which no
// function can run). On a server that allows them (max_prepared_transactions
// above 0, PostgreSQL's default being 0), a student who claims a unit in a
// transaction and prepares it froze the class: no update in 30 s, and
// gannf-coord said nothing. Now gannf-coord warns at start of the setting;
// from its reaper it names the login and the transaction, with the
// statement a superuser runs, shuts the login out and strikes it. The
// transaction's name carries a newline: the statement is printed as an E''
// literal, and the test runs exactly what the line says, after which the
// class goes on.
TEST_F(Trust, AStudentsPreparedTransactionIsNamedWithTheStatementThatEndsIt) {
  PrivateServer server(dir_ / "pg");
  ASSERT_EQ(server.script("start"), 0) << "see " << (dir_ / "pg-script.log");
  pg::Connection(server.conninfo("postgres")).exec("ALTER SYSTEM SET max_prepared_transactions = 4");
  ASSERT_EQ(server.script("stop"), 0);
  ASSERT_EQ(server.script("start"), 0);
  pg::Connection su(server.conninfo("postgres"));
  su.on_notice({});
  ASSERT_EQ(su.exec("SELECT current_setting('max_prepared_transactions')").get<std::string>(0, 0), "4");
  su.exec("SELECT gannf_admin.admit_student('prep_student', NULL, 4)");
  std::vector<std::string> init = small_run(512, 8, 4, 29);
  init.insert(init.end(), {"--epochs", "1000"});
  init.insert(init.begin(), {kCoordBin, "init", "--db", server.conninfo("gannf_coord")});
  {
    Proc p(init, (dir_ / "coord-init.log").string());
    ASSERT_EQ(p.wait(60), 0) << p.log();
  }
  start_worker_on(server.conninfo("gannf_student"), "honest", {"--batch-size", "8"});
  procs_.push_back(std::make_unique<Proc>(
      std::vector<std::string>{kCoordBin, "run", "--db", server.conninfo("gannf_coord"), "--output-dir",
                               (dir_ / "out").string(), "--iterations", "100000", "--sample-interval", "0",
                               "--checkpoint-interval", "0", "--quiet"},
      (dir_ / "coord-run.log").string()));
  Proc& run = *procs_.back();
  auto updates = [&] { return su.exec("SELECT count(*) FROM gannf.loss_history").get<int64_t>(0, 0); };
  ASSERT_TRUE(wait_for([&] { return updates() >= 2; }, 60)) << logs();

  const std::string gid = "held by\na student";
  pg::Connection st(server.conninfo("prep_student"));
  st.on_notice({});
  pg::Params pw;
  pw.add(st.exec("SELECT gannf.register_worker('prep', 'cpu', 1, 1000000000, NULL, NULL, 8)").get<int64_t>(0, 0));
  bool prepared = false;
  for (int i = 0; i < 1500 && !prepared; ++i) {  // until a claim gets a unit of the update
    st.exec("BEGIN");
    if (st.exec("SELECT unit_id FROM gannf.claim($1, 1)", pw).rows() > 0) {
      st.exec("PREPARE TRANSACTION " + st.quote_literal(gid));
      prepared = true;
    } else {
      st.exec("ROLLBACK");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_TRUE(prepared) << "no claim of the student got a unit in 30 s\n" << logs();
  const std::string said = "login prep_student left a prepared transaction E'held by\\x0aa student' in database gannf";
  ASSERT_TRUE(wait_for([&] { return run.log().find(said) != std::string::npos; }, 30)) << run.log();
  const std::string log = run.log();
  EXPECT_NE(log.find("warning: max_prepared_transactions is above 0 on this server"), std::string::npos) << log;
  EXPECT_FALSE(su.exec("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'prep_student'").get<bool>(0, 0));
  EXPECT_TRUE(wait_for(
      [&] { return su.exec("SELECT count(*) FROM gannf.login_trust WHERE login = 'prep_student' AND strikes >= 1")
                       .get<int64_t>(0, 0) == 1; },
      15));
  {  // gannf-coord status says it too
    Proc status({kCoordBin, "status", "--db", server.conninfo("gannf_coord")}, (dir_ / "coord-status.log").string());
    EXPECT_EQ(status.wait(60), 0) << status.log();
    EXPECT_NE(status.log().find("PREPARED TRANSACTION of prep_student, "), std::string::npos) << status.log();
    EXPECT_NE(status.log().find("database gannf: ROLLBACK PREPARED E'held by\\x0aa student'"), std::string::npos)
        << status.log();
  }
  // The class waits for the unit the transaction holds ...
  const int64_t held = updates();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_LE(updates(), held + 1) << "the prepared transaction held nothing the class waits for";
  // ... until a superuser runs the statement the line gives.
  const size_t at = log.find("ROLLBACK PREPARED ", log.find(said));
  const size_t end = log.find("; then set max_prepared_transactions = 0", at);
  ASSERT_TRUE(at != std::string::npos && end != std::string::npos) << log;
  const std::string statement = log.substr(at, end - at);
  const size_t line = log.find(said);
  std::printf("gannf-coord said: %s\n", log.substr(line, log.find('\n', line) - line).c_str());
  su.exec(statement);
  EXPECT_EQ(su.exec("SELECT count(*) FROM pg_prepared_xacts").get<int64_t>(0, 0), 0);
  EXPECT_TRUE(wait_for([&] { return updates() >= held + 3; }, 60)) << logs();
}

// A login disabled (remove-students) or shut out while its gannf-worker
// uploads: the upload's reconnection is refused for good. The upload thread
// took that for an outage and retried for ever, and the worker's loop
// waited for it, so the worker hung, saying "lost the database connection"
// every 30 s (found when the shut-out test above caught the hog's worker
// mid-upload). Now the upload ends the worker with why. Here the upload's
// session (its last statement a submit) is the one ended, so the loop's
// session, still logged in, cannot be the first to find out.
TEST_F(Trust, AWorkerWhoseLoginIsDisabledWhileItUploadsStopsAndSaysWhy) {
  const std::string login = "trust_upload_cut";
  login_of_its_own(login);
  init_endless_run(31);
  if (HasFatalFailure()) return;
  Proc& worker =
      start_worker_on("user=" + login + " dbname=" + db_, "cut", {"--batch-size", "8", "--throttle-ms", "300"});
  start_coord_run({"--iterations", "100000", "--sample-interval", "0", "--checkpoint-interval", "0", "--quiet"});
  // The upload's session: its last statements are the submission and the
  // timing report after it.
  pg::Params p;
  p.add(login).add(std::string(cluster::worker_sql::kSubmit) + '\x1f' + cluster::worker_sql::kReportTiming);
  const std::string upload_session = "FROM pg_stat_activity WHERE usename = $1 AND state = 'idle' "
                                     "AND query = ANY (string_to_array($2, chr(31)))";
  ASSERT_TRUE(wait_for([&] { return admin_->exec("SELECT count(*) " + upload_session, p).get<int64_t>(0, 0) == 1; },
                       60))
      << logs();
  admin_->exec("ALTER ROLE " + login + " NOLOGIN");
  EXPECT_EQ(admin_->exec("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) " + upload_session, p)
                .get<int64_t>(0, 0),
            1);
  const auto rc = worker.wait(60);
  admin_->exec("ALTER ROLE " + login + " LOGIN");
  ASSERT_TRUE(rc.has_value()) << "the worker still runs 60 s later:\n" << worker.log();
  EXPECT_NE(*rc, 0) << worker.log();
  EXPECT_NE(worker.log().find("the instructor disabled it (gannf-coord remove-students), or the coordinator shut it out"),
            std::string::npos)
      << worker.log();
}

// The instructor removes a student in the middle of a run (gannf-coord
// remove-students: NOLOGIN, then every session ended). The student's
// gannf-worker, already in the run, took the refused reconnection for an
// outage and said "cannot reach the database ... retrying" for ever; now
// it stops and says why.
TEST_F(Trust, AWorkerOfAStudentRemovedDuringTheRunStopsAndSaysWhy) {
  const std::string login = "trust_removed";
  login_of_its_own(login);
  init_endless_run(37);
  if (HasFatalFailure()) return;
  Proc& worker =
      start_worker_on("user=" + login + " dbname=" + db_, "removed", {"--batch-size", "8", "--throttle-ms", "100"});
  start_coord_run({"--iterations", "100000", "--sample-interval", "0", "--checkpoint-interval", "0", "--quiet"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.submissions WHERE state = 'used'") >= 3; }, 60))
      << logs();
  {
    Proc rm({kCoordBin, "remove-students", login, "--db", "user=postgres dbname=" + db_},
            (dir_ / "remove-students.log").string());
    ASSERT_EQ(rm.wait(60), 0) << rm.log();
  }
  const auto rc = worker.wait(60);
  admin_->exec("ALTER ROLE " + login + " LOGIN");
  ASSERT_TRUE(rc.has_value()) << "the worker still runs 60 s later:\n" << worker.log();
  EXPECT_NE(*rc, 0) << worker.log();
  EXPECT_NE(worker.log().find("the instructor disabled it (gannf-coord remove-students)"), std::string::npos)
      << worker.log();
}

// Every statement a real gannf-worker sends is in worker_sql::all(), the
// list the coordinator's watch on the server's CPU leaves alone: the server
// logs each statement of a login of this test (log_statement = all), and
// every one of them from a class of two workers -- one summing units -- is
// found in the list. A statement missing from it would count against an
// honest student whenever it runs long.
TEST_F(Trust, EveryStatementAWorkerSendsIsInTheList) {
  const std::string login = "trust_sql_logged";
  ensure_worker_login(login);
  for (const char* s : {"log_statement = 'all'", "log_min_messages = 'log'", "log_parameter_max_length = 0"})
    admin_->exec("ALTER ROLE " + login + " SET " + s);
  pg::Connection su = connect_or_fail("user=postgres dbname=" + db_);
  const std::filesystem::path log =
      std::filesystem::path(su.exec("SHOW data_directory").get<std::string>(0, 0)).parent_path() / "postgres.log";
  ASSERT_TRUE(std::filesystem::exists(log)) << "this test reads the server log that tools/pg-embedded.sh keeps: " << log;
  const auto from = std::filesystem::file_size(log);
  coord_cmd("init", small_run(96, 8, 3, 23));
  if (HasFatalFailure()) return;
  for (const char* name : {"one", "summing"}) {
    // Slowed, with heartbeats every 0.2 s: a unit's heartbeat and a waiting
    // worker's are sent too.
    std::vector<std::string> extra = {"--batch-size", "4", "--exit-when-done", "--heartbeat-interval", "0.2",
                                      "--throttle-ms", "300"};
    if (std::string(name) == "summing") extra.insert(extra.end(), {"--sum-units", "2"});
    start_worker_on("user=" + login + " dbname=" + db_, name, extra);
  }
  Proc& run = start_coord_run({"--iterations", "4", "--sample-interval", "0", "--checkpoint-interval", "0"});
  // One of the two units the summing worker holds is taken off it (as the
  // hold bound does): it hands the other back (release) and asks why
  // (why_taken), the two calls an undisturbed run never makes.
  int64_t taken = 0;
  ASSERT_TRUE(wait_for(
      [&] {
        pg::Result r = su.exec(
            "SELECT max(u.id) FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
            "WHERE u.state = 'claimed' AND w.name = 'summing' GROUP BY w.id HAVING count(*) = 2");
        if (r.rows() == 0) return false;
        taken = r.get<int64_t>(0, 0);
        pg::Params p;
        p.add(taken);
        return su.exec("SELECT gannf.take_off(ARRAY[$1]::bigint[])", p).get<int64_t>(0, 0) == 1;
      },
      60))
      << logs();
  const auto rc = run.wait(240);
  ASSERT_TRUE(rc.has_value() && *rc == 0) << logs();
  for (auto& p : procs_) p->wait(60);
  admin_->exec("DROP ROLE " + login);  // no test after it meets a login that logs all it does
  std::ifstream f(log, std::ios::binary);
  f.seekg((std::streamoff)from);
  const std::vector<std::string> listed = cluster::worker_sql::all();
  const std::set<std::string> known(listed.begin(), listed.end());
  std::set<std::string> seen, unknown;
  const std::string who = " " + login + "@" + db_ + " LOG:  ";
  for (std::string line; std::getline(f, line);) {
    const size_t at = line.find(who);
    if (at == std::string::npos) continue;
    std::string what = line.substr(at + who.size());
    if (what.rfind("statement: ", 0) == 0) {
      what = what.substr(11);
    } else if (what.rfind("execute ", 0) == 0) {
      what = what.substr(what.find(": ") + 2);
    } else {
      continue;  // connection lines, durations
    }
    (known.count(what) ? seen : unknown).insert(what);
  }
  for (const std::string& s : unknown) ADD_FAILURE() << "a worker sent a statement not in worker_sql::all(): " << s;
  for (const char* s : {cluster::worker_sql::kRegister, cluster::worker_sql::kClaim, cluster::worker_sql::kSubmit,
                        cluster::worker_sql::kSubmitSummed, cluster::worker_sql::kWeights,
                        cluster::worker_sql::kTrainingState, cluster::worker_sql::kHeartbeat,
                        cluster::worker_sql::kHeartbeatUnit, cluster::worker_sql::kRelease,
                        cluster::worker_sql::kWhyTaken})
    EXPECT_TRUE(seen.count(s)) << "not seen in the server's log (is log_statement in effect?): " << s;
  std::string unseen;
  for (const std::string& k : known)
    if (!seen.count(k)) unseen += "\n  not seen: " + k.substr(0, 60);
  std::printf("%zu of the %zu listed statements seen from the class's workers, %zu not listed%s\n", seen.size(),
              known.size(), unknown.size(), unseen.c_str());
}

// A worker that finds no unit while its login gives way (sql/0026) says so,
// instead of only "every open unit is taken": its student sees why the
// class's other machines get the units first.
TEST_F(Trust, AWorkerWhoseLoginGivesWaySaysWhy) {
  coord_cmd("init", small_run(96, 8, 4, 59, /*classroom=*/true));
  if (HasFatalFailure()) return;
  pg::Connection w = connect_or_fail(worker_db(2)), other = connect_or_fail(worker_db(1));
  const int64_t id = cluster::register_worker(w, {.name = "laptop", .backend = "cpu"});
  cluster::register_worker(other, {.name = "desktop", .backend = "cpu"});
  EXPECT_EQ(cluster::why_waiting(w), "") << "nothing was taken off it";
  const cluster::ClaimedUnit u = cluster::claim(w, id).at(0);
  coord().exec("SELECT gannf.take_off(ARRAY[" + std::to_string(u.unit_id) + "]::bigint[])");
  EXPECT_EQ(cluster::why_waiting(w),
            "; a unit was taken off this login (it was held past the hold bound), so until a result of it is accepted "
            "it holds one unit at a time and lets the class's other machines claim first");
  EXPECT_EQ(cluster::why_waiting(other), "");
}

// sql/0026 end to end: four colluding logins (Holder, above, one unit each)
// take every unit of an update while no honest worker is there -- the three
// honest gannf-workers did 12 units and left -- and hold them, never
// submitting; then the honest workers come back. Before sql/0026 nobody was
// late (each login holds one unit, and nothing of the update was in), and
// the update waited for the hold bound, 2 minutes (the test fails at 60 s);
// now their units are late by the last update's pace, served to the honest
// workers, and the colluders give way at every update after.
TEST_F(Trust, LoginsHoldingEveryUnitOfAnUpdateDoNotFreezeTheClass) {
  coord_cmd("init", small_run(512, 8, 4, 53, /*classroom=*/true));
  if (HasFatalFailure()) return;
  coord().exec("UPDATE gannf.trust_settings SET late_floor = '2 seconds'");
  ensure_worker_login("gannf_test_w3");
  Proc& run = start_coord_run({"--iterations", "10", "--sample-interval", "0", "--checkpoint-interval", "0"});
  std::vector<Proc*> first;
  for (int i = 1; i <= 3; ++i)
    first.push_back(&start_worker("early" + std::to_string(i), {"--batch-size", "8", "--max-units", "4"}, i));
  for (Proc* p : first) ASSERT_TRUE(p->wait(120).has_value()) << logs();
  const int64_t before = count("SELECT count(*) FROM gannf.loss_history");
  std::vector<std::unique_ptr<Holder>> holders;
  for (int l = 4; l <= 7; ++l) {
    ensure_worker_login("gannf_test_w" + std::to_string(l));
    holders.push_back(std::make_unique<Holder>(worker_db(l), 1));
  }
  ASSERT_TRUE(wait_for([&] {
    return count("SELECT count(*) FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
                 "WHERE w.name = 'holder' AND u.state = 'claimed'") == 4;
  }, 30)) << "the colluders did not take 4 units\n" << logs();
  const int64_t held_at = count("SELECT iteration FROM gannf.training_state");
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 1; i <= 3; ++i) start_worker("honest" + std::to_string(i), {"--batch-size", "8", "--exit-when-done"}, i);
  const auto rc = run.wait(60);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string given;
  for (auto& h : holders) {
    h->stop();
    EXPECT_EQ(h->error(), "");
    given += Holder::text(h->given()) + ";";
  }
  ASSERT_TRUE(rc.has_value()) << "the updates after " << held_at << " took over 60 s (before sql/0026 the update "
                              << "waited for the hold bound); the colluders were given" << given << "\n" << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), 10);
  EXPECT_NE(run.log().find("late, taken off gannf_test_w"), std::string::npos) << run.log();
  expect_holders_left_no_work();
  std::printf("%lld updates before the colluders; the %lld after in %.1f s; the colluders were given units%s\n",
              (long long)before, (long long)(10 - held_at), took, given.c_str());
}

// Everything a worker sends is hostile, SQL calls in any order included --
// here against the real programs. One student login calls every function
// a worker login may execute at random (worker_fuzzer.h) from two sessions
// at once, for the whole run, beside a real gannf-coord in the classroom
// default (norm checks, spot checks, strikes, the reaper, its lock timeouts
// and deadlock handling) and two honest gannf-workers. The database tests
// (test_trust_db.cpp) imitate the coordinator's calls; here its own meet
// the student's. The instructor lifts the student's quarantine now and then
// (as gannf-coord quarantine lift does), so that the calls keep reaching
// past the quarantine. What must hold: gannf-coord reaches its updates and
// exits 0; every call succeeds or fails with a SQLSTATE of the worker
// functions' table (a deadlock, a lock wait or statement cut off, a session
// ended: a failure); the honest logins are never struck; in every snapshot
// no login holds more than its cap or more workers than allowed, and no
// quarantined login holds a unit; no image range is done twice.
// GANNF_FUZZ_SEED runs another sequence.
TEST_F(Trust, AStudentCallingAnythingInAnyOrderBesideARealClassLeavesTheRunWhole) {
  fuzz_beside_a_class(20261210, /*transactions=*/false);
}

// The same, the student's sessions sometimes keeping two to four calls in
// one transaction, committed or rolled back: what the coordinator's
// deadlock handling (end the session, strike, close again), its lock
// timeouts and the reaper meet at random. A call in such a transaction may
// end in 40P01 or 55P03, or its session be ended (it connects again);
// gannf-coord must still reach its updates and exit 0.
TEST_F(Trust, AStudentKeepingTransactionsAcrossCallsBesideARealClassLeavesTheRunWhole) {
  fuzz_beside_a_class(20261211, /*transactions=*/true);
}

// Three students at once, two sessions each, some of their calls in
// transactions kept across calls: what one login's calls do to another's --
// units taken off one and served to the next, one quarantined while another
// takes over what it held -- beside the real coordinator. A deadlock or a
// lock wait past lock_timeout counts as a failure unless a session of the
// same login keeps a transaction open at that moment.
TEST_F(Trust, AClassOfStudentsCallingAnythingBesideARealClassLeavesTheRunWhole) {
  fuzz_beside_a_class(20261212, /*transactions=*/true, /*students=*/3);
}

void Trust::fuzz_beside_a_class(uint64_t default_seed, bool transactions, int students) {
  const char* seed_env = std::getenv("GANNF_FUZZ_SEED");
  const uint64_t seed = seed_env ? std::stoull(seed_env) : default_seed;
  constexpr int kIterations = 40, kSessionsPerLogin = 2;
  const int sessions_n = kSessionsPerLogin * students;
  // Student s is login gannf_test_w(3 + s); the honest workers are w1, w2.
  std::vector<std::string> logins;
  std::string in_students;  // for SQL: 'gannf_test_w3', ...
  for (int s = 0; s < students; ++s) {
    logins.push_back("gannf_test_w" + std::to_string(3 + s));
    ensure_worker_login(logins.back());
    in_students += (s ? ", '" : "'") + logins.back() + "'";
  }
  coord_cmd("init", small_run(512, 8, 4, 73, /*classroom=*/true));
  if (HasFatalFailure()) return;
  // Quarantined often, lifted often: strike() and the quarantine's hand-back
  // meet the students' calls in flight many times a run.
  coord().exec("UPDATE gannf.trust_settings SET strike_threshold = 2");
  pg::Result w = coord().exec("SELECT layout_hash, element_count, bn_count FROM gannf.weights "
                              "WHERE iteration = 0 ORDER BY network");  // G, D (the enum's order)
  ASSERT_EQ(w.rows(), 2);
  const fuzz::Fuzzer::Layout layout{(uint64_t)w.get<int64_t>(0, 0), (uint64_t)w.get<int64_t>(1, 0),
                                    (size_t)w.get<int64_t>(0, 1),   (size_t)w.get<int64_t>(0, 2),
                                    (size_t)w.get<int64_t>(1, 1),   (size_t)w.get<int64_t>(1, 2)};
  const std::vector<fuzz::Fuzzer::Signature> fns = fuzz::worker_functions(coord(), logins[0]);
  ASSERT_FALSE(HasFailure());
  ASSERT_GE(fns.size(), 10u) << "the worker login's functions";
  for (int i = 1; i <= 2; ++i) start_worker("honest" + std::to_string(i), {"--batch-size", "8", "--exit-when-done"}, i);
  // The watch on the server's CPU off: the students call back to back, so
  // each login's own SQL runs nearly all the time, and the watch ends their
  // sessions within seconds (AStudentsOwnSqlThatKeepsTheServerBusyIsShutOut).
  // Here the calls themselves are under test.
  Proc& run = start_coord_run({"--iterations", std::to_string(kIterations), "--sample-interval", "0",
                               "--checkpoint-interval", "0", "--student-sql-limit", "0",
                               "--worker-call-limit", "0"});
  ASSERT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers") >= 2; }, 60)) << logs();
  const int64_t honest = count("SELECT min(id) FROM gannf.workers");

  fuzz::Shared shared;  // what the sessions share with this thread
  std::atomic<bool> stop{false};
  auto snapshot = [&] {
    std::vector<int64_t> units;
    pg::Result r = coord().exec("SELECT id FROM gannf.work_units ORDER BY id");
    for (int i = 0; i < r.rows(); ++i) units.push_back(r.get<int64_t>(i, 0));
    const int64_t k = count("SELECT iteration FROM gannf.training_state");
    const auto at = std::chrono::steady_clock::now();
    fuzz::Shared::Live live;
    pg::Result c = coord().exec("SELECT id, attempt FROM gannf.work_units WHERE state = 'claimed'");
    for (int i = 0; i < c.rows(); ++i) live.insert({c.get<int64_t>(i, 0), c.get<int32_t>(i, 1)});
    shared.set(std::move(units), k, std::move(live), at);
  };
  snapshot();
  // With `transactions`, a session sometimes keeps 2-4 calls in one
  // transaction (committed or rolled back): then, and only then, it may be
  // the victim of a deadlock with the coordinator (40P01), wait past its
  // lock_timeout (55P03) or be ended -- by the coordinator's deadlock
  // handling or reaper, or the login's idle_in_transaction_session_timeout --
  // and connect again.
  std::atomic<int> opened{0}, ended{0};
  // Per login: its sessions inside a transaction kept across calls, and the
  // transactions it has begun (a call may meet one that was open while it
  // ran and has ended since).
  std::vector<std::atomic<int>> open_of(students), begun_of(students);
  auto session = [&](int index) {
    const int login = index / kSessionsPerLogin;
    std::atomic<int>& open_now = open_of[login];
    std::atomic<int>& begun = begun_of[login];
    fuzz::Fuzzer fz(seed * 31 + (uint64_t)index, layout);
    int n = 0;
    auto fail = [&](const std::string& what) {
      shared.error("session " + std::to_string(index) + ", call " + std::to_string(n) + ": " + what);
    };
    try {
      auto open = [&] {
        pg::Connection c = connect_or_fail(worker_db(3 + login));
        c.exec("SET statement_timeout = '10s'");
        c.exec("SET lock_timeout = '5s'");
        return c;
      };
      pg::Connection c = open();
      fz.own.push_back(cluster::register_worker(c, {.name = "fz" + std::to_string(index)}));
      fz.other = honest;
      int pid = c.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0);
      int in_tx = 0;         // calls left in the transaction kept open
      bool open_tx = false;  // BEGIN sent, no COMMIT or ROLLBACK yet
      for (; !stop; ++n) {
        shared.give(fz);
        const fuzz::Fuzzer::Call call = fz.next(fns);
        const bool kept = open_tx || (transactions && fz.chance(0.05));
        shared.calling(pid, "session " + std::to_string(index) + ", call " + std::to_string(n) + ": " +
                                call.describe() + (kept ? " (in a transaction kept across calls)" : ""));
        std::string state = "ok";
        try {
          if (kept && !open_tx) {
            c.exec("BEGIN");
            open_tx = true;
            ++open_now;
            ++begun;
            in_tx = 2 + (int)fz.pick(3);
            ++opened;
          }
          const bool open_before = open_now > 0;
          const int begun_before = begun;
          try {
            fz.learn(call, call.run(c));
          } catch (const pg::Error& e) {
            if (e.connection_lost()) throw;
            state = e.sqlstate();
            // The login's own sessions may deadlock each other, or wait on
            // each other, while one keeps a transaction: itself its victim.
            const bool across = (open_tx || open_before || open_now > 0 || begun != begun_before) &&
                                (state == "40P01" || state == "55P03");
            if (!fuzz::kDocumentedSqlstates.count(state) && !across)
              fail(call.describe() + " failed with SQLSTATE " + state + ": " + shared.explain(e));
            if (open_tx) in_tx = 1;  // aborted: rolled back below
          }
          if (open_tx && --in_tx == 0) {
            c.exec(fz.chance(0.5) ? "COMMIT" : "ROLLBACK");
            open_tx = false;
            --open_now;
          }
          // A transaction kept open a while between its calls, as a student's
          // script may: long enough for the close to run into what it holds.
          if (open_tx) std::this_thread::sleep_for(std::chrono::milliseconds(fz.pick(40)));
        } catch (const pg::Error& e) {
          if (!e.connection_lost()) throw;
          if (!open_tx) {
            fail(call.describe() + ": the session was ended outside a transaction kept across calls: " + e.what());
            return;
          }
          state = "ended";
          ++ended;
          in_tx = 0, open_tx = false;
          --open_now;
          c = open();
          pid = c.exec("SELECT pg_backend_pid()").get<int32_t>(0, 0);
        }
        shared.record(call.fn, state);
      }
    } catch (const std::exception& e) {
      shared.error("session " + std::to_string(index) + " ended after " + std::to_string(n) + " calls: " + e.what());
    }
  };
  std::vector<std::thread> sessions;
  for (int i = 0; i < sessions_n; ++i) sessions.emplace_back(session, i);

  // This thread: the snapshots and their invariants, and the instructor.
  static const char* what[] = {"a login holds more units than max_held_units",
                               "a login has more workers than max_workers_per_login",
                               "a quarantined login holds a unit", "an honest login was struck"};
  std::vector<std::string> broken;
  int checks = 0, lifts = 0;
  auto last_lift = std::chrono::steady_clock::now();
  std::optional<int> rc;
  const auto t0 = std::chrono::steady_clock::now();
  while (!(rc = run.wait(0.05)).has_value() && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(240) &&
         broken.size() < 20) {
    pg::Result v = coord().exec(
        "SELECT " + fuzz::kWithinHeldCap + ", " + fuzz::kWithinWorkersCap + ", " + fuzz::kNoQuarantinedHolder + ", "
        " NOT EXISTS (SELECT 1 FROM gannf.login_trust WHERE login NOT IN (" + in_students + ") AND strikes > 0)");
    for (int i = 0; i < v.cols(); ++i)
      if (!v.get<bool>(0, i)) broken.push_back(std::string(what[i]) + " (snapshot " + std::to_string(checks) + ")");
    ++checks;
    snapshot();
    if (std::chrono::steady_clock::now() - last_lift > std::chrono::milliseconds(500)) {
      for (const std::string& l : logins) {
        pg::Params pl;
        pl.add(l);
        if (coord().exec("SELECT gannf.lift_quarantine($1)", pl).get<bool>(0, 0)) ++lifts;
      }
      last_lift = std::chrono::steady_clock::now();
    }
  }
  stop = true;
  for (std::thread& t : sessions) t.join();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  for (const std::string& e : shared.errors()) ADD_FAILURE() << e;
  for (const std::string& b : broken) ADD_FAILURE() << b;
  ASSERT_TRUE(rc.has_value()) << "gannf-coord did not reach " << kIterations << " updates in 240 s:\n" << logs();
  EXPECT_EQ(*rc, 0) << logs();
  EXPECT_EQ(count("SELECT count(*) FROM gannf.loss_history"), kIterations) << logs();
  EXPECT_EQ(count("SELECT count(DISTINCT (epoch, first_index)) - count(*) FROM gannf.work_units WHERE state = 'done'"),
            0);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login NOT IN (" + in_students + ")"), 0)
      << "the honest logins";
  int total = 0;
  std::map<std::string, std::map<std::string, int>> outcomes = shared.outcomes();
  const std::string table = fuzz::outcome_table(outcomes, &total);
  std::string strikes;
  for (const std::string& l : logins)
    strikes += (strikes.empty() ? "" : ", ") + l + " " +
               std::to_string(count("SELECT coalesce(sum(strikes), 0) FROM gannf.login_trust WHERE login = '" + l + "'"));
  std::printf("%d calls from %d sessions of %d login(s) (seed %llu) beside a real class, by function and outcome:\n%s"
              "%d transactions kept across calls, %d sessions ended and connected again; %d snapshots checked; "
              "quarantine lifted %d times; %d updates in %.1f s; strikes: %s\n",
              total, sessions_n, students, (unsigned long long)seed, table.c_str(), opened.load(), ended.load(), checks,
              lifts, kIterations, took, strikes.c_str());
  for (auto& [fn, types, names] : fns) EXPECT_GT(outcomes[fn].size(), 0u) << fn << " was never called";
  EXPECT_GT(outcomes["claim"]["ok"], 0);
  EXPECT_GT(outcomes["submit"]["ok"], 0);
}

// The adversarial run of issue 12 with the classroom default (gannf-coord
// init without trust flags: clip+trimmed, spot checks of 10% of the units):
// eight honest logins and two hostile ones (20%), 60 updates of ten units of
// 8 images on the synthetic set. Every hostile login ends quarantined, no
// honest login gets a strike, and the final losses (the mean of the last 10
// updates) stay within kLossBand of an honest run from the same seed. The
// attacks come in pairs, one pair per test, so that each run stays short.
constexpr int kHonest = 8, kAdvIterations = 60;
// |D|, |G| loss difference. Measured (docs/security.md): an attack run
// against its honest run at most 0.02; honest runs of seeds 11–13
// (HonestRunsOfThreeSeedsAreNeverStruck) spread over about 0.3.
constexpr double kLossBand = 0.5;

class Adversarial : public Trust {
 protected:
  struct Outcome {
    double loss_d = NAN, loss_g = NAN;
    int64_t honest_used = 0, honest_rejected = 0, honest_strikes = 0;
    int64_t gpu_used = 0, gpu_rejected = 0;  // the emulated GPU workers' (gpus)
    std::vector<std::string> gpu_reasons;    // why their rejected submissions were
    std::vector<std::string> hostile_free;  // hostile logins not quarantined at the end
  };

  std::string login_db(const std::string& login) const { return "user=" + login + " dbname=" + db_; }

  // One run: init (the default rule), honest workers (threads and
  // micro-batches varied), the hostile ones, the coordinator to the end.
  // gpus adds an honest login per back end named (cuda, cuda-tf32,
  // cuda-bf16) whose worker runs it on the host emulator
  // (tests/emu_worker.cpp); every update then waits for all its units
  // (--quorum 1, which changes no check), so that the slow emulated workers'
  // units are used rather than served to others. spot_check >= 0 replaces
  // the default fraction.
  Outcome run(const std::vector<std::string>& attacks, uint64_t seed, const std::vector<std::string>& gpus = {},
              double spot_check = -1, int iterations = kAdvIterations) {
    const bool with_gpu = !gpus.empty();
    Outcome o;
    std::vector<std::string> init = small_run(1024, 8, kHonest + 2, seed, /*classroom=*/true);
    init.push_back("--force");  // the second run of a test replaces the first
    if (with_gpu) init.insert(init.end(), {"--quorum", "1"});
    if (spot_check >= 0) init.insert(init.end(), {"--spot-check", std::to_string(spot_check)});
    coord_cmd("init", init);
    if (HasFatalFailure()) return o;
    coord().exec("DELETE FROM gannf.login_trust");
    coord().exec("UPDATE gannf.training_state SET status = 'paused'");
    const size_t first = procs_.size();
    for (int i = 1; i <= kHonest; ++i) {
      const std::string login = "gannf_test_h" + std::to_string(i);
      ensure_worker_login(login);
      std::vector<std::string> a = {kWorkerBin, "--db", login_db(login), "--name", "h" + std::to_string(i),
                                    "--threads", i % 3 == 0 ? "2" : "1", "--batch-size", i % 2 ? "4" : "8",
                                    "--poll-interval", "0.5", "--no-cache", "--quiet", "--exit-when-done"};
      procs_.push_back(std::make_unique<Proc>(a, (dir_ / ("honest-" + std::to_string(i) + ".log")).string()));
    }
    for (size_t j = 0; j < attacks.size(); ++j) {
      const std::string login = "gannf_test_x" + std::to_string(j + 1);
      ensure_worker_login(login);
      std::vector<std::string> a = {kHostileBin, "--db", login_db(login), "--name", "x" + std::to_string(j + 1),
                                    "--threads", "1", "--attack", attacks[j], "--poll-interval", "0.5",
                                    "--no-cache", "--batch-size", "4", "--exit-when-done"};
      procs_.push_back(std::make_unique<Proc>(a, (dir_ / ("hostile-" + std::to_string(j + 1) + ".log")).string()));
    }
#ifdef GANNF_HAVE_EMU_WORKER
    for (size_t g = 0; g < gpus.size(); ++g) {
      const std::string login = "gannf_test_h" + std::to_string(kHonest + 1 + (int)g), name = "gpu-" + gpus[g];
      ensure_worker_login(login);
      std::vector<std::string> a = {kEmuBin, "--db", login_db(login), "--name", name, "--backend", gpus[g],
                                    "--batch-size", "8", "--poll-interval", "0.5", "--no-cache", "--exit-when-done"};
      procs_.push_back(
          std::make_unique<Proc>(a, (dir_ / ("honest-" + name + "-" + std::to_string(seed) + ".log")).string()));
    }
#endif
    const int64_t n = kHonest + (int64_t)attacks.size() + (int64_t)gpus.size();
    EXPECT_TRUE(wait_for([&] { return count("SELECT count(*) FROM gannf.workers") == n; }, 90)) << logs();
    Proc& co = start_coord_run({"--iterations", std::to_string(iterations), "--sample-interval", "0",
                                "--checkpoint-interval", "0"},
                               "coord-run-" + std::to_string(seed) + ".log");
    const auto rc = co.wait(300);
    EXPECT_TRUE(rc.has_value() && *rc == 0) << logs();
    for (size_t i = first; i < procs_.size(); ++i) procs_[i]->wait(60);
    pg::Result l = coord().exec(
        "SELECT avg(loss_d), avg(loss_g) FROM (SELECT loss_d, loss_g FROM gannf.loss_history "
        "ORDER BY iteration DESC LIMIT 10) t");
    o.loss_d = l.get<double>(0, 0);
    o.loss_g = l.get<double>(0, 1);
    const std::string honest = "FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                               "WHERE w.login LIKE 'gannf_test_h%' AND s.state = ";
    o.honest_used = count("SELECT count(*) " + honest + "'used'");
    o.honest_rejected = count("SELECT count(*) " + honest + "'rejected'");
    o.honest_strikes = count("SELECT coalesce(sum(strikes), 0) FROM gannf.login_trust WHERE login LIKE 'gannf_test_h%'");
    const std::string gpu = "FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                            "WHERE w.name LIKE 'gpu-%' AND s.state = ";
    o.gpu_used = count("SELECT count(*) " + gpu + "'used'");
    o.gpu_rejected = count("SELECT count(*) " + gpu + "'rejected'");
    pg::Result why = coord().exec("SELECT w.name || ': ' || s.reject_reason " + gpu + "'rejected'");
    for (int r = 0; r < why.rows(); ++r) o.gpu_reasons.push_back(why.get<std::string>(r, 0));
    for (size_t j = 0; j < attacks.size(); ++j) {
      const std::string login = "gannf_test_x" + std::to_string(j + 1);
      if (count("SELECT count(*) FROM gannf.login_trust WHERE quarantined_at IS NOT NULL AND login = '" + login +
                "'") == 0)
        o.hostile_free.push_back(login + " (" + attacks[j] + ")");
    }
    std::printf("run seed %llu, attacks %zu: losses D %.3f G %.3f; honest submissions used %lld, rejected %lld\n",
                (unsigned long long)seed, attacks.size(), o.loss_d, o.loss_g, (long long)o.honest_used,
                (long long)o.honest_rejected);
    return o;
  }

  void attack_pair(const std::string& a, const std::string& b) {
    const Outcome honest = run({}, 5);
    if (HasFatalFailure()) return;
    const Outcome att = run({a, b}, 5);
    EXPECT_TRUE(att.hostile_free.empty()) << "hostile logins not quarantined: " << att.hostile_free.front() << "\n"
                                          << logs();
    for (const Outcome* o : {&honest, &att}) {
      EXPECT_EQ(o->honest_strikes, 0) << logs();
      EXPECT_GT(o->honest_used, 0);
    }
    EXPECT_LE(std::fabs(att.loss_d - honest.loss_d), kLossBand);
    EXPECT_LE(std::fabs(att.loss_g - honest.loss_g), kLossBand);
  }
};

// The false-positive rate: honest runs of three seeds (workers of 1 and 2
// threads, micro-batches of 4 and 8, and where the CUDA back end is built a
// worker on the emulated GPU, spot-checked at the FP32 GPU tolerance) under
// the default rule: no honest login gets a strike; the rejected honest
// submissions are printed (and must be 0).
TEST_F(Adversarial, HonestRunsOfThreeSeedsAreNeverStruck) {
#ifdef GANNF_HAVE_EMU_WORKER
  const bool gpu = true;
#else
  const bool gpu = false;
  std::printf("no emulated GPU worker (the CUDA back end is not built): CPU workers only\n");
#endif
  const std::vector<std::string> gpus = gpu ? std::vector<std::string>{"cuda"} : std::vector<std::string>{};
  int64_t used = 0, rejected = 0, gpu_used = 0, gpu_rejected = 0;
  for (uint64_t seed : {11, 12, 13}) {
    const Outcome o = run({}, seed, gpus);
    if (HasFatalFailure()) return;
    EXPECT_EQ(o.honest_strikes, 0) << "seed " << seed << "\n" << logs();
    used += o.honest_used;
    rejected += o.honest_rejected;
    gpu_used += o.gpu_used;
    gpu_rejected += o.gpu_rejected;
  }
  std::printf("false positives: %lld of %lld honest submissions rejected over 3 runs; emulated GPU: %lld of %lld\n",
              (long long)rejected, (long long)(used + rejected), (long long)gpu_rejected,
              (long long)(gpu_used + gpu_rejected));
  EXPECT_EQ(rejected, 0);
  if (gpu) {
    EXPECT_GT(gpu_used, 0) << "the emulated GPU worker took no part\n" << logs();
  }
}

// Honest tensor-core workers in a real run: one worker on the emulated
// cuda-tf32 back end and one on cuda-bf16 beside the CPU workers, every unit
// spot-checked (--spot-check 1) at the tolerance of the back end each
// registered with (0.1, 0.3), from the first update to the last: neither
// login is quarantined, and both take part. A unit of their math's tail may
// be refused -- once in CI-like load an emulated cuda-tf32 unit was 0.171
// from the recomputation (D's; G's within 0.1), and the failed spot check
// quarantined the honest login at once (the test failed so) -- but only
// with a forgivable strike (spot_check_certain: within 3x the tolerance).
TEST_F(Adversarial, HonestTensorCoreWorkersPassEverySpotCheck) {
#ifndef GANNF_HAVE_EMU_WORKER
  GTEST_SKIP() << "no emulated GPU worker: the CUDA back end is not built";
#else
  const Outcome o = run({}, 11, {"cuda-tf32", "cuda-bf16"}, /*spot_check=*/1, /*iterations=*/30);
  if (HasFatalFailure()) return;
  std::string reasons;
  for (const auto& r : o.gpu_reasons) {
    reasons += "\n  " + r;
    EXPECT_NE(r.find("a forgivable strike, not the quarantine"), std::string::npos) << r << "\n" << logs();
  }
  EXPECT_EQ(count("SELECT count(*) FROM gannf.login_trust WHERE login LIKE 'gannf_test_h%' "
                  "AND quarantined_at IS NOT NULL"),
            0)
      << reasons << "\n" << logs();
  // The CPU workers': none. (A tensor-core login's forgivable strike may
  // still stand at the end, until ten used submissions take it back.)
  EXPECT_EQ(count("SELECT coalesce(sum(t.strikes), 0) FROM gannf.login_trust t WHERE t.login IN "
                  "(SELECT login FROM gannf.workers WHERE name NOT LIKE 'gpu-%' AND login LIKE 'gannf_test_h%')"),
            0)
      << logs();
  std::printf("tensor-core units refused (each with a forgivable strike): %lld%s\n", (long long)o.gpu_rejected,
              reasons.c_str());
  for (const char* name : {"gpu-cuda-tf32", "gpu-cuda-bf16"}) {
    pg::Params p;
    p.add(std::string(name));
    const int64_t used = coord()
                             .exec("SELECT count(*) FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id "
                                   "WHERE w.name = $1 AND s.state = 'used'",
                                   p)
                             .get<int64_t>(0, 0);
    std::printf("%s: %lld submissions used, each spot-checked\n", name, (long long)used);
    EXPECT_GT(used, 0) << name << " took no part\n" << logs();
  }
#endif
}

TEST_F(Adversarial, ScaledAndSignFlippedLoginsEndQuarantined) { attack_pair("scale:1e4", "scale:-1"); }
TEST_F(Adversarial, ConstantAndNoiseLoginsEndQuarantined) { attack_pair("constant", "noise"); }
TEST_F(Adversarial, FreeRiderAndBnPoisonerEndQuarantined) { attack_pair("zeros", "bn"); }
TEST_F(Adversarial, TwoCollidingALittleIsEnoughEndQuarantined) { attack_pair("alie:1.5", "alie:1.5"); }

}  // namespace
