// The cluster's database layer against a real PostgreSQL (label cluster; the
// ctest fixture in pg_fixture.cmake starts a private server and points libpq
// at it through PGSERVICEFILE/PGSERVICE). Each test gets a database of its
// own, created from nothing and migrated by the C++ migrate(), and dropped
// again when the test passes (kept for inspection when it fails).
//
// Logins: the coordinator is gannf_coord (the service's user); workers are
// gannf_test_w1..3 (members of gannf_worker); gannf_test_outsider may log in
// but is no worker. Administration (databases, roles) as the superuser.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "blob.h"
#include "migrate.h"
#include "pg.h"
#include "protocol.h"
#include "sql_test.h"
#include "weights_delta.h"

namespace {

using namespace gannf;
using cluster::ClaimedUnit;
using cluster::SubmitStatus;
using cluster::UnitResult;
using pg::Connection;
using pg::Params;
using test::random_floats;
using test::sqlstate_of;

// Layout hashes with the top bit set: the bigint columns must carry all 64
// bits.
constexpr uint64_t kHashG = 0xF00DFACECAFEBEEFull;
constexpr uint64_t kHashD = 0x8BADF00DDEADBEEFull;

// Every 32-bit pattern is fair game for a blob: NaNs with payloads,
// infinities, denormals, negative zero. They must come back bit for bit.
std::vector<float> random_bit_patterns(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = std::bit_cast<float>((uint32_t)rng());
  return v;
}

Connection connect(const std::string& conninfo) {
  try {
    return Connection(conninfo);
  } catch (const pg::Error& e) {
    ADD_FAILURE() << e.what()
                  << "\n(run through ctest, whose fixture starts the server and sets "
                     "PGSERVICEFILE/PGSERVICE, or set the PG* variables yourself)";
    throw;
  }
}

void ensure_login(Connection& admin, const std::string& role, bool worker) {
  std::string sql = "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" + role +
                    "') THEN CREATE ROLE " + role + " LOGIN" + (worker ? " IN ROLE gannf_worker" : "") +
                    "; END IF; END $$";
  // Tests run in parallel processes: two may create the same role at once.
  for (int attempt = 0;; ++attempt) {
    try {
      admin.exec(sql);
      return;
    } catch (const pg::Error& e) {
      if (attempt >= 3 || (e.sqlstate() != "23505" && e.sqlstate() != "42710")) throw;
    }
  }
}

struct Blobs {
  std::vector<float> g_grad, g_bn, d_grad, d_bn;
};

class ClusterDb : public ::testing::Test {
 protected:
  virtual bool migrate_in_setup() const { return true; }

  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    db_ = "gt_" + std::string(info->test_suite_name()) + "_" + info->name();
    std::transform(db_.begin(), db_.end(), db_.begin(), [](unsigned char ch) {
      return std::isalnum(ch) ? (char)std::tolower(ch) : '_';
    });
    if (db_.size() > 50) db_ = db_.substr(0, 40) + "_" + std::to_string(std::hash<std::string>{}(db_) % 100000000);
    admin_ = std::make_unique<Connection>(connect("user=postgres dbname=postgres"));
    admin_->on_notice({});
    admin_->exec("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
    admin_->exec("CREATE DATABASE " + db_ + " OWNER gannf_coord");
    for (const char* w : {"gannf_test_w1", "gannf_test_w2", "gannf_test_w3"}) ensure_login(*admin_, w, true);
    ensure_login(*admin_, "gannf_test_outsider", false);
    coord_ = std::make_unique<Connection>(as_coord());
    if (migrate_in_setup()) cluster::migrate(*coord_);
  }

  void TearDown() override {
    coord_.reset();
    if (!HasFailure() && admin_) admin_->exec("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
  }

  Connection as_coord() { return connect("dbname=" + db_); }
  Connection as_worker(int k) { return connect("user=gannf_test_w" + std::to_string(k) + " dbname=" + db_); }
  Connection as_outsider() { return connect("user=gannf_test_outsider dbname=" + db_); }

  // A run at iteration 0: training state, published weights of both networks
  // (element counts as given), and `units` work units of `per_unit` images.
  void start_run(int units, int per_unit = 16, const char* lease = "30 seconds", size_t g_elems = 1000,
                 size_t g_bn = 40, size_t d_elems = 600, size_t d_bn = 24) {
    g_elems_ = g_elems, g_bn_ = g_bn, d_elems_ = d_elems, d_bn_ = d_bn, per_unit_ = per_unit;
    Params p;
    p.add(lease);
    coord_->exec("INSERT INTO gannf.training_state (dataset_size, seed, lease) VALUES (60000, 42, $1::interval)", p);
    publish_weights(0);
    add_units(0, units, per_unit);
  }

  void publish_weights(int64_t iteration) {
    for (auto [net, hash, n, nbn] : {std::tuple{"G", kHashG, g_elems_, g_bn_}, std::tuple{"D", kHashD, d_elems_, d_bn_}}) {
      std::vector<float> w = random_floats(n, (uint32_t)(iteration * 7 + n)), bn = random_floats(nbn, 3);
      Params p;
      p.add(iteration).add(net).add((int64_t)hash).add((int64_t)n).floats(w)
          .add((int64_t)cluster::blob_checksum(w)).add((int64_t)nbn).floats(bn)
          .add((int64_t)cluster::blob_checksum(bn));
      coord_->exec(
          "INSERT INTO gannf.weights (iteration, network, layout_hash, element_count, params, "
          "params_checksum, bn_count, bn_running, bn_checksum) "
          "VALUES ($1, $2::gannf.network, $3, $4, $5, $6, $7, $8, $9)",
          p);
    }
  }

  void add_units(int64_t iteration, int units, int per_unit) {
    Params p;
    p.add(iteration).add((int32_t)units).add((int32_t)per_unit);
    coord_->exec(
        "INSERT INTO gannf.work_units (epoch, first_index, sample_count, iteration) "
        "SELECT 0, (i - 1) * $3, $3, $1 FROM generate_series(1, $2) i",
        p);
  }

  void advance_clock(const std::string& by) {
    Params p;
    p.add(by);
    coord_->exec("UPDATE gannf.clock SET skew = skew + $1::interval", p);
  }

  Blobs make_blobs(uint32_t seed) const {
    return {random_floats(g_elems_, seed), random_floats(g_bn_, seed + 1), random_floats(d_elems_, seed + 2),
            random_floats(d_bn_, seed + 3)};
  }

  UnitResult result_for(const ClaimedUnit& u, const Blobs& b) const {
    UnitResult r;
    r.sample_count = u.sample_count;
    r.g = {kHashG, b.g_grad, b.g_bn};
    r.d = {kHashD, b.d_grad, b.d_bn};
    r.loss_d = 1.25f;
    r.loss_g = 0.75f;
    r.d_accuracy = 0.5f;
    r.compute_seconds = 2.0f;
    return r;
  }

  int64_t count(const std::string& sql) { return coord_->exec(sql).get<int64_t>(0, 0); }

  std::string db_;
  std::unique_ptr<Connection> admin_, coord_;
  size_t g_elems_ = 0, g_bn_ = 0, d_elems_ = 0, d_bn_ = 0;
  int per_unit_ = 0;
};

class FreshDb : public ClusterDb {
 protected:
  bool migrate_in_setup() const override { return false; }
};

// ------------------------------------------------------------------ codec

TEST(BlobCodec, Crc32cMatchesPublishedVectors) {
  const char* check = "123456789";
  EXPECT_EQ(cluster::crc32c(check, 9), 0xE3069283u);  // the catalogue's check value
  EXPECT_EQ(cluster::crc32c(check, 0), 0u);
  std::vector<unsigned char> zeros(32, 0), ones(32, 0xFF), inc(32);
  for (int i = 0; i < 32; ++i) inc[i] = (unsigned char)i;
  // RFC 3720 (iSCSI), B.4.
  EXPECT_EQ(cluster::crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(cluster::crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(cluster::crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(cluster::detail::crc32c_portable(inc.data(), 32), 0x46DD794Eu);
}

TEST(BlobCodec, Crc32cHardwareAndTablesAgreeAndChain) {
  std::vector<float> v = random_bit_patterns(100003, 7);
  auto bytes = std::as_bytes(std::span<const float>(v));
  // Short buffers take one chain; from 12 KiB on, three chains joined by
  // polynomial shifts (lengths around the switch, odd tails, a non-zero start).
  for (size_t n : {0ul, 1ul, 7ul, 8ul, 9ul, 63ul, 1000ul, 12287ul, 12288ul, 12289ul, 12311ul, 99999ul,
                   bytes.size()}) {
    EXPECT_EQ(cluster::crc32c(bytes.data(), n), cluster::detail::crc32c_portable(bytes.data(), n)) << n;
  }
  uint32_t whole = cluster::crc32c(bytes);
  EXPECT_EQ(cluster::crc32c(bytes.subspan(777), cluster::crc32c(bytes.first(777))), whole);
  EXPECT_EQ(cluster::crc32c(bytes.subspan(1), cluster::crc32c(bytes.first(1))), whole);
  EXPECT_EQ(cluster::crc32c(bytes.subspan(20000), cluster::crc32c(bytes.first(20000))), whole);
  EXPECT_EQ(cluster::blob_checksum(v), whole);
}

TEST(BlobCodec, FloatsRoundTripBitExactAndSizesAreChecked) {
  std::vector<float> v = random_bit_patterns(4097, 11);
  cluster::EncodedBlob blob(v);
  EXPECT_EQ(blob.element_count(), v.size());
  ASSERT_EQ(blob.bytes().size(), 4 * v.size());
  // Little-endian on the wire, whatever the host.
  uint32_t first;
  std::memcpy(&first, blob.bytes().data(), 4);
  uint32_t want = std::bit_cast<uint32_t>(v[0]);
  if constexpr (std::endian::native == std::endian::big) want = __builtin_bswap32(want);
  EXPECT_EQ(first, want);
  std::vector<float> back = cluster::decode_floats(blob.bytes());
  ASSERT_EQ(back.size(), v.size());
  EXPECT_EQ(std::memcmp(back.data(), v.data(), 4 * v.size()), 0);
  std::vector<float> wrong(v.size() - 1);
  EXPECT_THROW(cluster::decode_floats(blob.bytes(), wrong), std::invalid_argument);
  EXPECT_THROW(cluster::decode_floats(blob.bytes().first(10)), std::invalid_argument);
}

// ------------------------------------------------------------------ migrations

TEST_F(FreshDb, MigrationsApplyInOrderOnceAndAreRecorded) {
  auto all = cluster::migrations();
  ASSERT_GE(all.size(), 4u);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].version, all[i].version);
  EXPECT_EQ(cluster::schema_version(*coord_), 0);

  std::vector<std::string> log;
  auto first = cluster::migrate(*coord_, [&](const std::string& l) { log.push_back(l); });
  EXPECT_EQ(first.version_before, 0);
  EXPECT_EQ(first.version_after, all.back().version);
  EXPECT_EQ(first.applied.size(), all.size());
  EXPECT_EQ(log.size(), all.size());  // one line per file, no warnings

  pg::Result r = coord_->exec("SELECT version, name, applied_by::text FROM gannf.schema_migrations ORDER BY version");
  ASSERT_EQ((size_t)r.rows(), all.size());
  for (int i = 0; i < r.rows(); ++i) {
    EXPECT_EQ(r.get<int32_t>(i, 0), all[i].version);
    EXPECT_EQ(r.get<std::string>(i, 1), all[i].name);
    EXPECT_EQ(r.get<std::string>(i, 2), "gannf_coord");
  }

  auto second = cluster::migrate(*coord_);
  EXPECT_TRUE(second.applied.empty());
  EXPECT_EQ(second.version_before, all.back().version);

  // A database migrated from 0001's earlier text (before its comment was
  // corrected, sql/README.md) is accepted without a word; any other text
  // still warns.
  const std::vector<uint32_t> ok = cluster::accepted_checksums(all[0].sql);
  ASSERT_EQ(ok.size(), 2u) << "0001 names its earlier text's checksum";
  EXPECT_EQ(ok[0], cluster::migration_checksum(all[0].sql));
  EXPECT_EQ(cluster::accepted_checksums("SELECT 1;\n").size(), 1u);
  for (auto [recorded, warns] : {std::pair{(int64_t)ok[1], false}, std::pair{(int64_t)ok[1] ^ 1, true}}) {
    pg::Params p;
    p.add(recorded);
    coord_->exec("UPDATE gannf.schema_migrations SET checksum = $1 WHERE version = 1", p);
    std::vector<std::string> lines;
    cluster::migrate(*coord_, [&](const std::string& l) { lines.push_back(l); });
    ASSERT_EQ(lines.size(), warns ? 1u : 0u) << recorded;
    if (warns) {
      EXPECT_NE(lines[0].find("0001_schema.sql differs"), std::string::npos) << lines[0];
    }
  }

  // Owned by the coordinator; blobs stored out of line, uncompressed; the
  // worker functions run as their owner with a pinned search_path.
  EXPECT_EQ(count("SELECT count(*) FROM pg_namespace WHERE nspname = 'gannf' "
                  "AND nspowner = 'gannf_coord'::regrole"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM pg_attribute WHERE attrelid IN "
                  "('gannf.submission_blobs'::regclass, 'gannf.weights'::regclass, 'gannf.optimizer_state'::regclass) "
                  "AND atttypid = 'bytea'::regtype AND attstorage <> 'e'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM pg_proc WHERE pronamespace = 'gannf'::regnamespace "
                  "AND proname IN ('register_worker', 'heartbeat', 'claim', 'submit', 'release') "
                  "AND prosecdef AND 'search_path=gannf, pg_temp' = ANY(proconfig)"), 5);
}

TEST_F(FreshDb, ConcurrentMigrationsApplyEachFileOnce) {
  // Programs starting together: each migrates; the advisory lock makes one
  // do the work and the others find it done.
  constexpr int kThreads = 4;
  std::vector<std::vector<int>> applied(kThreads);
  std::vector<std::string> errors(kThreads);
  std::barrier sync(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        Connection c(std::string("dbname=") + db_);
        sync.arrive_and_wait();
        applied[t] = cluster::migrate(c).applied;
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  for (auto& th : threads) th.join();
  std::multiset<int> all_applied;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "") << "thread " << t;
    all_applied.insert(applied[t].begin(), applied[t].end());
  }
  EXPECT_EQ(all_applied.size(), cluster::migrations().size());
  for (const auto& m : cluster::migrations()) EXPECT_EQ(all_applied.count(m.version), 1u);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.schema_migrations"), (int64_t)cluster::migrations().size());
}

// ------------------------------------------------------------------ protocol

TEST_F(ClusterDb, RegisterHeartbeatClaimSubmitReleaseRoundTrip) {
  start_run(3);
  Connection w = as_worker(1);
  cluster::WorkerInfo info{.name = "laptop", .backend = "cpu", .cpu_cores = 2, .ram_bytes = 8ll << 30};
  int64_t id = cluster::register_worker(w, info);
  EXPECT_EQ(cluster::register_worker(w, info), id) << "same login and name: same worker";
  info.name = "desktop";
  int64_t id2 = cluster::register_worker(w, info);
  EXPECT_NE(id2, id);
  EXPECT_EQ(coord_->exec("SELECT login::text FROM gannf.workers WHERE id = " + std::to_string(id))
                .get<std::string>(0, 0),
            "gannf_test_w1");

  advance_clock("1 minute");
  cluster::heartbeat(w, id);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.workers WHERE last_seen > registered_at + interval '59 seconds'"), 1);

  auto units = cluster::claim(w, id);
  ASSERT_EQ(units.size(), 1u);
  ClaimedUnit u = units[0];
  EXPECT_EQ(u.attempt, 1);
  EXPECT_EQ(u.iteration, 0);
  EXPECT_EQ(u.sample_count, per_unit_);
  EXPECT_EQ(u.first_index, 0);

  advance_clock("10 seconds");
  auto extended = cluster::heartbeat(w, id, u);
  ASSERT_TRUE(extended.has_value());
  EXPECT_GE(*extended - u.lease_until, std::chrono::seconds(9));

  Blobs b = make_blobs(5);
  auto out = cluster::submit(w, id, u, result_for(u, b));
  EXPECT_EQ(out.status, SubmitStatus::Accepted);
  ASSERT_GT(out.submission_id, 0);
  EXPECT_FALSE(cluster::heartbeat(w, id, u).has_value()) << "a submitted unit is no longer leased";

  pg::Result unit = coord_->exec("SELECT state::text, worker_id, attempt FROM gannf.work_units WHERE id = " +
                                 std::to_string(u.unit_id));
  EXPECT_EQ(unit.get<std::string>(0, 0), "submitted");
  EXPECT_EQ(unit.get<int64_t>(0, 1), id);
  pg::Result sub = coord_->exec(
      "SELECT s.worker_id, s.sample_count, s.loss_d, s.loss_g, s.state::text, s.iteration, "
      "b.network::text, b.layout_hash, b.element_count, b.grad, b.grad_checksum, b.bn_count, b.bn_stats, "
      "b.bn_checksum FROM gannf.submissions s JOIN gannf.submission_blobs b ON b.submission_id = s.id "
      "WHERE s.id = " + std::to_string(out.submission_id) + " ORDER BY b.network");
  ASSERT_EQ(sub.rows(), 2);
  EXPECT_EQ(sub.get<int64_t>(0, "worker_id"), id);
  EXPECT_EQ(sub.get<int32_t>(0, "sample_count"), per_unit_);
  EXPECT_EQ(sub.get<float>(0, "loss_d"), 1.25f);
  EXPECT_EQ(sub.get<std::string>(0, "state"), "pending");
  for (int row = 0; row < 2; ++row) {
    bool g = sub.get<std::string>(row, "network") == "G";
    const auto& grad = g ? b.g_grad : b.d_grad;
    const auto& bn = g ? b.g_bn : b.d_bn;
    EXPECT_EQ((uint64_t)sub.get<int64_t>(row, "layout_hash"), g ? kHashG : kHashD);
    EXPECT_EQ(sub.get<int64_t>(row, "element_count"), (int64_t)grad.size());
    EXPECT_EQ(cluster::decode_floats(sub.bytes(row, "grad")), grad);
    EXPECT_EQ(cluster::decode_floats(sub.bytes(row, "bn_stats")), bn);
    EXPECT_EQ((uint32_t)sub.get<int64_t>(row, "grad_checksum"), cluster::crc32c(sub.bytes(row, "grad")));
    EXPECT_EQ((uint32_t)sub.get<int64_t>(row, "bn_checksum"), cluster::blob_checksum(bn));
  }

  // Release: the unit is claimable again at once, the attempt counter stays.
  auto second = cluster::claim(w, id);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_TRUE(cluster::release(w, id, second[0]));
  EXPECT_FALSE(cluster::release(w, id, second[0])) << "releasing twice";
  EXPECT_EQ(coord_->exec("SELECT state::text FROM gannf.work_units WHERE id = " + std::to_string(second[0].unit_id))
                .get<std::string>(0, 0),
            "available");
  auto again = cluster::claim(w, id2);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].unit_id, second[0].unit_id) << "oldest claimable unit first";
  EXPECT_EQ(again[0].attempt, 2);
  // A stale lease handle (old attempt) can no longer release or extend.
  EXPECT_FALSE(cluster::release(w, id2, second[0]));
  EXPECT_FALSE(cluster::heartbeat(w, id2, second[0]).has_value());

  auto rest = cluster::claim(w, id, 5);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_TRUE(cluster::claim(w, id, 5).empty()) << "everything is leased";
}

TEST_F(ClusterDb, RacingClaimersNeverShareOrLoseAUnit) {
  constexpr int kUnits = 300, kThreads = 6;
  start_run(kUnits);
  // Claims without submitting: lift sql/0008's cap on units held per login.
  coord_->exec("UPDATE gannf.trust_settings SET max_held_units = 1000");
  std::vector<std::vector<int64_t>> got(kThreads);
  std::vector<std::string> errors(kThreads);
  std::barrier sync(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        Connection c = Connection("user=gannf_test_w" + std::to_string(1 + t % 3) + " dbname=" + db_);
        int64_t id = cluster::register_worker(c, {.name = "racer" + std::to_string(t)});
        sync.arrive_and_wait();
        for (;;) {
          auto units = cluster::claim(c, id, 1 + t % 3);
          if (units.empty()) break;
          for (const auto& u : units) got[t].push_back(u.unit_id);
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  for (auto& th : threads) th.join();
  std::set<int64_t> seen;
  size_t total = 0;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "") << "thread " << t;
    total += got[t].size();
    seen.insert(got[t].begin(), got[t].end());
  }
  EXPECT_EQ(total, (size_t)kUnits) << "a unit was claimed twice or lost";
  EXPECT_EQ(seen.size(), (size_t)kUnits);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed' AND attempt = 1"), kUnits);
  int busy = 0;
  for (int t = 0; t < kThreads; ++t) busy += !got[t].empty();
  EXPECT_GE(busy, 2) << "the race had only one runner";
}

TEST_F(ClusterDb, ExpiredLeaseIsReclaimedAndTheLateHolderIsRefused) {
  start_run(1, 16, "30 seconds");
  Connection a = as_worker(1), b = as_worker(2);
  int64_t ida = cluster::register_worker(a, {.name = "slow"});
  int64_t idb = cluster::register_worker(b, {.name = "fast"});

  auto ua = cluster::claim(a, ida);
  ASSERT_EQ(ua.size(), 1u);
  EXPECT_TRUE(cluster::claim(b, idb).empty()) << "leased units are invisible";
  advance_clock("20 seconds");
  EXPECT_TRUE(cluster::claim(b, idb).empty());
  EXPECT_EQ(count("SELECT count(*) FROM gannf.stalled_units"), 0);
  advance_clock("11 seconds");
  EXPECT_EQ(count("SELECT count(*) FROM gannf.stalled_units"), 1);

  auto ub = cluster::claim(b, idb);
  ASSERT_EQ(ub.size(), 1u);
  EXPECT_EQ(ub[0].unit_id, ua[0].unit_id);
  EXPECT_EQ(ub[0].attempt, 2) << "the attempt counter records the retry";
  EXPECT_FALSE(cluster::heartbeat(a, ida, ua[0]).has_value()) << "the old holder learns it lost the unit";

  Blobs late = make_blobs(100), fresh = make_blobs(200);
  EXPECT_EQ(cluster::submit(a, ida, ua[0], result_for(ua[0], late)).status, SubmitStatus::NotHeld);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 0);
  auto won = cluster::submit(b, idb, ub[0], result_for(ub[0], fresh));
  EXPECT_EQ(won.status, SubmitStatus::Accepted);
  // Later still: refused, and does not overwrite the winner.
  EXPECT_EQ(cluster::submit(a, ida, ua[0], result_for(ua[0], late)).status, SubmitStatus::NotHeld);
  pg::Result r = coord_->exec(
      "SELECT s.worker_id, b.grad FROM gannf.submissions s JOIN gannf.submission_blobs b "
      "ON b.submission_id = s.id AND b.network = 'G'");
  ASSERT_EQ(r.rows(), 1);
  EXPECT_EQ(r.get<int64_t>(0, 0), idb);
  EXPECT_EQ(cluster::decode_floats(r.bytes(0, 1)), fresh.g_grad);
}

TEST_F(ClusterDb, DuplicateSubmissionIsRefusedIdempotently) {
  start_run(2);
  Connection w = as_worker(1);
  int64_t id = cluster::register_worker(w, {.name = "retrying"});
  auto u = cluster::claim(w, id).at(0);
  Blobs first = make_blobs(1), second = make_blobs(2);
  auto a = cluster::submit(w, id, u, result_for(u, first));
  ASSERT_EQ(a.status, SubmitStatus::Accepted);
  // A retry after a lost reply, even with different bytes: the first stands.
  auto b = cluster::submit(w, id, u, result_for(u, second));
  EXPECT_EQ(b.status, SubmitStatus::Duplicate);
  EXPECT_EQ(b.submission_id, a.submission_id);
  EXPECT_TRUE(b.stored());
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 1);
  pg::Result r = coord_->exec("SELECT grad FROM gannf.submission_blobs WHERE network = 'D'");
  EXPECT_EQ(cluster::decode_floats(r.bytes(0, 0)), first.d_grad);
  // Another worker of another login cannot submit over it either.
  Connection other = as_worker(2);
  int64_t oid = cluster::register_worker(other, {.name = "other"});
  EXPECT_EQ(cluster::submit(other, oid, u, result_for(u, second)).status, SubmitStatus::NotHeld);
}

TEST_F(ClusterDb, SubmissionForAClosedIterationIsRefused) {
  start_run(2);
  Connection w = as_worker(1);
  int64_t id = cluster::register_worker(w, {.name = "w"});
  auto u = cluster::claim(w, id).at(0);
  // The coordinator closes iteration 0: weights 1, the state moves, and the
  // units not done are served again against the new weights.
  publish_weights(1);
  coord_->exec("UPDATE gannf.training_state SET iteration = 1");
  EXPECT_EQ(cluster::submit(w, id, u, result_for(u, make_blobs(3))).status, SubmitStatus::IterationClosed);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submissions"), 0);
  EXPECT_TRUE(cluster::claim(w, id).empty()) << "no units of iteration 1 yet";
  coord_->exec("UPDATE gannf.work_units SET iteration = 1, state = 'available', visible_at = '-infinity' "
               "WHERE state IN ('available', 'claimed')");
  auto next = cluster::claim(w, id, 2);
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[0].iteration, 1);
  EXPECT_EQ(cluster::submit(w, id, u, result_for(u, make_blobs(3))).status, SubmitStatus::IterationClosed)
      << "the old lease handle still names iteration 0";
  EXPECT_EQ(cluster::submit(w, id, next[0], result_for(next[0], make_blobs(4))).status, SubmitStatus::Accepted);
}

TEST_F(ClusterDb, SubmitChecksSizesAgainstThePublishedWeights) {
  start_run(1);
  Connection w = as_worker(1);
  int64_t id = cluster::register_worker(w, {.name = "w"});
  auto u = cluster::claim(w, id).at(0);
  Blobs b = make_blobs(9);
  {
    UnitResult r = result_for(u, b);
    std::vector<float> short_grad(b.g_grad.begin(), b.g_grad.end() - 1);
    r.g.grad = short_grad;
    EXPECT_EQ(sqlstate_of([&] { cluster::submit(w, id, u, r); }), "22023");
  }
  {
    UnitResult r = result_for(u, b);
    r.d.layout_hash = 1;
    EXPECT_EQ(sqlstate_of([&] { cluster::submit(w, id, u, r); }), "22023");
  }
  {
    UnitResult r = result_for(u, b);
    r.sample_count = u.sample_count + 1;
    EXPECT_EQ(sqlstate_of([&] { cluster::submit(w, id, u, r); }), "22023");
  }
  {
    // BN statistics: a whole number of copies of the running-stats layout
    // (one per micro-batch), at most one per image.
    UnitResult r = result_for(u, b);
    std::vector<float> odd(b.g_bn.size() + 1), too_many(b.g_bn.size() * (u.sample_count + 1));
    r.g.bn_stats = odd;
    EXPECT_EQ(sqlstate_of([&] { cluster::submit(w, id, u, r); }), "22023");
    r.g.bn_stats = too_many;
    EXPECT_EQ(sqlstate_of([&] { cluster::submit(w, id, u, r); }), "22023");
  }
  UnitResult ok = result_for(u, b);
  std::vector<float> four_micro_batches(b.g_bn.size() * 4, 0.5f);
  ok.g.bn_stats = four_micro_batches;
  EXPECT_EQ(cluster::submit(w, id, u, ok).status, SubmitStatus::Accepted);
  EXPECT_EQ(count("SELECT bn_count FROM gannf.submission_blobs WHERE network = 'G'"), (int64_t)g_bn_ * 4);
}

TEST_F(ClusterDb, BlobLengthCheckRejectsAMismatchedRow) {
  start_run(1);
  coord_->exec("SELECT gannf.register_worker('coord-as-worker')");
  coord_->exec("INSERT INTO gannf.submissions (work_unit_id, iteration, attempt, worker_id, sample_count, submitted_at) "
               "SELECT 1, 0, 1, id, 16, now() FROM gannf.workers");
  std::vector<float> nine(9, 1.0f), none;
  Params p;
  p.add((int64_t)10).floats(nine).floats(none);  // 10 elements declared, 36 bytes given
  try {
    coord_->exec("INSERT INTO gannf.submission_blobs (submission_id, network, layout_hash, element_count, grad, "
                 "grad_checksum, bn_count, bn_stats, bn_checksum) "
                 "SELECT id, 'G', 0, $1, $2, 0, 0, $3, 0 FROM gannf.submissions",
                 p);
    ADD_FAILURE() << "a 36-byte blob with element_count 10 was stored";
  } catch (const pg::Error& e) {
    EXPECT_EQ(e.sqlstate(), "23514");
    EXPECT_EQ(e.constraint(), "submission_blobs_grad_length");
  }

  // The same through the worker function, by a client that lies about the
  // element count: since sql/0008 submit() refuses it before any copy
  // (invalid_parameter_value); the CHECK stays behind it.
  coord_->exec("DELETE FROM gannf.submissions");
  Connection w = as_worker(1);
  int64_t id = cluster::register_worker(w, {.name = "liar"});
  auto u = cluster::claim(w, id).at(0);
  Blobs b = make_blobs(1);
  std::vector<float> short_g(b.g_grad.begin(), b.g_grad.end() - 1);
  Params q;
  q.add(id).add(u.unit_id).add(u.attempt).add(u.iteration).add(u.sample_count);
  q.add((int64_t)kHashG).add((int64_t)g_elems_).floats(short_g).add((int64_t)0)
      .add((int64_t)g_bn_).floats(b.g_bn).add((int64_t)0);
  q.add((int64_t)kHashD).add((int64_t)d_elems_).floats(b.d_grad).add((int64_t)0)
      .add((int64_t)d_bn_).floats(b.d_bn).add((int64_t)0);
  try {
    w.exec("SELECT * FROM gannf.submit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
           "$13, $14, $15, $16, $17, $18, $19)",
           q);
    ADD_FAILURE() << "a short gradient blob was accepted";
  } catch (const pg::Error& e) {
    EXPECT_EQ(e.sqlstate(), "22023") << e.what();
  }
  EXPECT_EQ(count("SELECT count(*) FROM gannf.submission_blobs"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.work_units WHERE state = 'claimed'"), 1) << "nothing half-done";
}

TEST_F(ClusterDb, WorkerRoleCannotTouchTablesDirectly) {
  start_run(2);
  Connection w = as_worker(1);
  int64_t id = cluster::register_worker(w, {.name = "curious"});
  const char* denied[] = {
      "SELECT * FROM gannf.work_units",
      "SELECT * FROM gannf.submissions",
      "SELECT * FROM gannf.submission_blobs",
      "SELECT * FROM gannf.workers",
      "SELECT * FROM gannf.optimizer_state",
      "UPDATE gannf.work_units SET state = 'available'",
      "UPDATE gannf.training_state SET iteration = 7",
      "DELETE FROM gannf.weights",
      "DELETE FROM gannf.weights_delta",
      "INSERT INTO gannf.weights_delta (iteration, network, base_iteration, element_count, delta) "
      "VALUES (1, 'G', 0, 1, '')",
      "INSERT INTO gannf.workers (login, name, registered_at, last_seen) VALUES ('x', 'x', now(), now())",
      "UPDATE gannf.clock SET skew = '1 day'",
      "SELECT gannf.caller_worker(1)",
      "CREATE TABLE gannf.mine (x int)",
  };
  for (const char* sql : denied) EXPECT_EQ(sqlstate_of([&] { w.exec(sql); }), "42501") << sql;
  // What a worker may read.
  EXPECT_EQ(w.exec("SELECT iteration FROM gannf.training_state").get<int64_t>(0, 0), 0);
  EXPECT_EQ(w.exec("SELECT count(*) FROM gannf.weights WHERE iteration = 0").get<int64_t>(0, 0), 2);
  EXPECT_EQ(w.exec("SELECT count(*) FROM gannf.weights_delta").get<int64_t>(0, 0), 0);
  // And what the dashboard shows (sql/0007): the monitoring views, the clock they read.
  EXPECT_EQ(w.exec("SELECT count(*) FROM gannf.leaderboard").get<int64_t>(0, 0), 1);
  EXPECT_NO_THROW(w.exec("SELECT gannf.now()"));

  // Identity is the login: another login cannot act for this worker id.
  auto u = cluster::claim(w, id).at(0);
  Connection other = as_worker(2);
  EXPECT_EQ(sqlstate_of([&] { cluster::claim(other, id); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { cluster::heartbeat(other, id, u); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { cluster::release(other, id, u); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { cluster::submit(other, id, u, result_for(u, make_blobs(1))); }), "42501");
  // Neither can SET ROLE to another worker login change session_user.
  EXPECT_EQ(sqlstate_of([&] { other.exec("SET ROLE gannf_test_w1"); }), "42501");

  // A login that is not in gannf_worker cannot call anything.
  Connection outsider = as_outsider();
  EXPECT_EQ(sqlstate_of([&] { cluster::register_worker(outsider, {.name = "x"}); }), "42501");
  EXPECT_EQ(sqlstate_of([&] { outsider.exec("SELECT * FROM gannf.weights"); }), "42501");
}

// sql/0019: a worker that holds the weights of iteration k-1 gets those of k
// as the exact delta (fewer bytes, the same floats bit for bit); without a
// base, with another base, or when the delta does not rebuild the published
// checksum (damaged, cut short, a base of another length) it gets them in
// full, and says so.
TEST_F(ClusterDb, WeightsComeAsAnExactDeltaFromTheBaseAndAnythingElseInFull) {
  start_run(1, 16, "30 seconds", 50000, 40, 30000, 24);
  Connection w = as_worker(1);
  cluster::WeightsBase base;
  base.keep(0, cluster::fetch_weights(w, 0));
  // Iteration 1: every parameter moved by an Adam-sized step (2e-4 relative
  // here), published with its delta from iteration 0 as the coordinator does.
  std::vector<float> next[2];
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> step(-2e-4f, 2e-4f);
  for (int k = 0; k < 2; ++k) {
    const std::vector<float>& b = base.params[k];
    next[k].resize(b.size());
    for (size_t i = 0; i < b.size(); ++i) next[k][i] = b[i] * (1 + step(rng));
    const std::vector<float> bn = random_floats(k ? d_bn_ : g_bn_, 5);
    const std::string delta = cluster::encode_weights_delta(b, next[k]);
    Params p;
    p.add((int64_t)1).add(k ? "D" : "G").add((int64_t)(k ? kHashD : kHashG)).add((int64_t)b.size()).floats(next[k])
        .add((int64_t)cluster::blob_checksum(next[k])).add((int64_t)bn.size()).floats(bn)
        .add((int64_t)cluster::blob_checksum(bn))
        .bytes(std::span<const std::byte>(reinterpret_cast<const std::byte*>(delta.data()), delta.size()));
    coord_->exec(
        "WITH w AS (INSERT INTO gannf.weights (iteration, network, layout_hash, element_count, params, "
        "params_checksum, bn_count, bn_running, bn_checksum) "
        "VALUES ($1, $2::gannf.network, $3, $4, $5, $6, $7, $8, $9) RETURNING iteration, network, element_count) "
        "INSERT INTO gannf.weights_delta (iteration, network, base_iteration, element_count, delta) "
        "SELECT iteration, network, 0, element_count, $10 FROM w",
        p);
  }
  const int64_t full_bytes = 4 * (int64_t)(g_elems_ + g_bn_ + d_elems_ + d_bn_);
  auto same = [&](const cluster::PublishedWeights& got) {
    const auto g = got.g.params.floats(), d = got.d.params.floats();
    return g.size() == next[0].size() && d.size() == next[1].size() &&
           std::memcmp(g.data(), next[0].data(), 4 * g.size()) == 0 &&
           std::memcmp(d.data(), next[1].data(), 4 * d.size()) == 0;
  };

  const cluster::PublishedWeights by_delta = cluster::fetch_weights(w, 1, "", &base);
  EXPECT_EQ(by_delta.deltas, 2);
  EXPECT_FALSE(by_delta.delta_refetched);
  EXPECT_TRUE(same(by_delta));
  std::printf("iteration 1: %lld bytes as deltas, %lld in full\n", (long long)by_delta.bytes, (long long)full_bytes);
  EXPECT_LT(by_delta.bytes, full_bytes * 3 / 4);

  const cluster::PublishedWeights no_base = cluster::fetch_weights(w, 1);
  EXPECT_EQ(no_base.deltas, 0);
  EXPECT_EQ(no_base.bytes, full_bytes);
  EXPECT_TRUE(same(no_base));

  cluster::WeightsBase later = base;
  later.iteration = 1;  // no delta is published from iteration 1 to 1 (nor would one be asked for)
  EXPECT_EQ(cluster::fetch_weights(w, 1, "", &later).deltas, 0);

  cluster::WeightsBase shorter = base;
  shorter.params[1].pop_back();  // D's base of another length
  const cluster::PublishedWeights s = cluster::fetch_weights(w, 1, "", &shorter);
  EXPECT_TRUE(s.delta_refetched);
  EXPECT_EQ(s.deltas, 0);
  EXPECT_TRUE(same(s));

  cluster::WeightsBase wrong = base;
  wrong.params[0][123] = 5.f;  // one float of G's base differs: the rebuilt G fails its checksum
  const cluster::PublishedWeights x = cluster::fetch_weights(w, 1, "", &wrong);
  EXPECT_TRUE(x.delta_refetched);
  EXPECT_TRUE(same(x));

  coord_->exec("UPDATE gannf.weights_delta SET delta = substring(delta from 1 for octet_length(delta) - 1) "
               "WHERE network = 'G'");
  const cluster::PublishedWeights cut = cluster::fetch_weights(w, 1, "", &base);
  EXPECT_TRUE(cut.delta_refetched);
  EXPECT_TRUE(same(cut));

  coord_->exec("UPDATE gannf.weights_delta SET delta = set_byte(delta, 100, get_byte(delta, 100) # 1) "
               "WHERE network = 'D'");
  coord_->exec("DELETE FROM gannf.weights_delta WHERE network = 'G'");
  const cluster::PublishedWeights flipped = cluster::fetch_weights(w, 1, "", &base);
  EXPECT_TRUE(flipped.delta_refetched) << "one bit of D's delta changed";
  EXPECT_TRUE(same(flipped));

  // The deltas go with their iteration's weights.
  coord_->exec("DELETE FROM gannf.weights WHERE iteration = 1");
  EXPECT_EQ(count("SELECT count(*) FROM gannf.weights_delta"), 0);
}

TEST_F(ClusterDb, TwentyFourMegabyteBlobsRoundTripBitExact) {
  constexpr size_t kElems = 24u << 18;  // 6 Mi floats = 24 MiB
  start_run(1, 16, "30 seconds", kElems, 40, 600, 24);
  Connection w = as_worker(1);
  int64_t id = cluster::register_worker(w, {.name = "big"});
  auto u = cluster::claim(w, id).at(0);

  Blobs b = make_blobs(0);
  b.g_grad = random_bit_patterns(kElems, 1234);
  auto t0 = std::chrono::steady_clock::now();
  auto out = cluster::submit(w, id, u, result_for(u, b));
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_EQ(out.status, SubmitStatus::Accepted);
  pg::Result r = coord_->exec("SELECT grad, grad_checksum, element_count FROM gannf.submission_blobs "
                              "WHERE network = 'G'");
  auto t2 = std::chrono::steady_clock::now();
  auto bytes = r.bytes(0, 0);
  ASSERT_EQ(bytes.size(), 4 * kElems);
  EXPECT_EQ(std::memcmp(bytes.data(), std::as_bytes(std::span<const float>(b.g_grad)).data(), bytes.size()), 0);
  EXPECT_EQ((uint32_t)r.get<int64_t>(0, 1), cluster::crc32c(bytes));
  EXPECT_EQ(r.get<int64_t>(0, 2), (int64_t)kElems);

  // Weights the other way: the coordinator published 24 MiB, a worker reads them.
  pg::Result wt = w.exec("SELECT params, params_checksum FROM gannf.weights WHERE network = 'G' AND iteration = 0");
  EXPECT_EQ(wt.bytes(0, 0).size(), 4 * kElems);
  EXPECT_EQ((uint32_t)wt.get<int64_t>(0, 1), cluster::crc32c(wt.bytes(0, 0)));
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf("24 MiB submit %.0f ms (%.0f MB/s), fetch %.0f ms (%.0f MB/s)\n", ms(t1 - t0),
              4.0 * kElems / 1e3 / ms(t1 - t0), ms(t2 - t1), 4.0 * kElems / 1e3 / ms(t2 - t1));
}

TEST_F(ClusterDb, NotificationsAnnounceWorkWeightsAndSubmissions) {
  using namespace std::chrono_literals;
  start_run(0);
  Connection w = as_worker(1), listener = as_coord();
  w.listen(cluster::channel::kWork);
  w.listen(cluster::channel::kWeights);
  listener.listen(cluster::channel::kSubmission);
  EXPECT_FALSE(w.wait_notification(50ms).has_value());

  auto t0 = std::chrono::steady_clock::now();
  add_units(0, 3, 16);
  auto n = w.wait_notification(5s);
  ASSERT_TRUE(n.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(n->channel, "gannf_work");
  EXPECT_EQ(n->payload, "0");
  EXPECT_FALSE(w.wait_notification(50ms).has_value()) << "one notification per statement";

  publish_weights(1);  // two rows in two statements, one transaction each
  n = w.wait_notification(5s);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->channel, "gannf_weights");
  EXPECT_EQ(n->payload, "1");
  while (w.wait_notification(50ms)) {
  }

  int64_t id = cluster::register_worker(w, {.name = "w"});
  auto u = cluster::claim(w, id, 2);
  ASSERT_EQ(u.size(), 2u);
  EXPECT_FALSE(w.wait_notification(50ms).has_value()) << "claims announce nothing";
  ASSERT_TRUE(cluster::release(w, id, u[1]));
  n = w.wait_notification(5s);
  ASSERT_TRUE(n.has_value()) << "a released unit is new work";
  EXPECT_EQ(n->channel, "gannf_work");

  ASSERT_EQ(cluster::submit(w, id, u[0], result_for(u[0], make_blobs(1))).status, SubmitStatus::Accepted);
  n = listener.wait_notification(5s);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->channel, "gannf_submission");
  EXPECT_EQ(n->payload, "0");
}

TEST_F(ClusterDb, MonitoringViewsAnswerTheDashboardsQuestions) {
  start_run(4, 10, "30 seconds");
  Connection a = as_worker(1), b = as_worker(2);
  int64_t ida = cluster::register_worker(a, {.name = "a", .backend = "cpu"});
  int64_t idb = cluster::register_worker(b, {.name = "b", .backend = "cuda", .gpu_name = "RTX"});
  auto ua = cluster::claim(a, ida, 2);
  auto ub = cluster::claim(b, idb);
  ASSERT_EQ(cluster::submit(a, ida, ua[0], result_for(ua[0], make_blobs(1))).status, SubmitStatus::Accepted);

  EXPECT_EQ(count("SELECT count(*) FROM gannf.active_workers"), 2);
  EXPECT_EQ(count("SELECT current_unit FROM gannf.active_workers WHERE name = 'b'"), ub[0].unit_id);
  pg::Result p = coord_->exec("SELECT iteration, active_workers, open_units, pending_submissions FROM gannf.training_progress");
  ASSERT_EQ(p.rows(), 1);
  EXPECT_EQ(p.get<int64_t>(0, 0), 0);
  EXPECT_EQ(p.get<int32_t>(0, 1), 2);
  EXPECT_EQ(p.get<int32_t>(0, 2), 3);  // 2 claimed + 1 available
  EXPECT_EQ(p.get<int32_t>(0, 3), 1);
  std::map<std::string, int> by_state;
  pg::Result s = coord_->exec("SELECT state::text, units FROM gannf.work_unit_status WHERE iteration = 0");
  for (int i = 0; i < s.rows(); ++i) by_state[s.get<std::string>(i, 0)] = s.get<int32_t>(i, 1);
  EXPECT_EQ(by_state["submitted"], 1);
  EXPECT_EQ(by_state["claimed"], 2);
  EXPECT_EQ(by_state["available"], 1);
  pg::Result lb = coord_->exec("SELECT rank, name, units, images FROM gannf.leaderboard ORDER BY rank, name");
  ASSERT_EQ(lb.rows(), 2);
  EXPECT_EQ(lb.get<std::string>(0, 1), "a");
  EXPECT_EQ(lb.get<int32_t>(0, 2), 1);
  EXPECT_EQ(lb.get<int64_t>(0, 3), 10);

  advance_clock("31 seconds");
  EXPECT_EQ(count("SELECT count(*) FROM gannf.stalled_units"), 2);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.active_workers"), 0) << "nobody seen within the lease";
  cluster::heartbeat(b, idb);
  EXPECT_EQ(count("SELECT count(*) FROM gannf.active_workers"), 1);
}

TEST_F(ClusterDb, ClientReportsErrorsClearly) {
  // Connection failure: libpq's message, and what to do about it.
  try {
    Connection bad("host=/nonexistent-gannf-socket-dir port=1 dbname=x connect_timeout=2");
    ADD_FAILURE() << "connected to nothing";
  } catch (const pg::Error& e) {
    EXPECT_TRUE(e.connection_lost());
    EXPECT_NE(std::string(e.what()).find("cannot connect"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("pg-embedded.sh"), std::string::npos) << e.hint();
  }
  // Statement errors: SQLSTATE and the server's words.
  try {
    coord_->exec("SELECT * FROM gannf.no_such_table");
    ADD_FAILURE();
  } catch (const pg::Error& e) {
    EXPECT_EQ(e.sqlstate(), "42P01");
    EXPECT_NE(e.message().find("no_such_table"), std::string::npos);
    EXPECT_FALSE(e.connection_lost());
  }
  // A failed transaction rolls back, and COMMIT of one says so.
  start_run(1);
  {
    pg::Transaction tx(*coord_);
    coord_->exec("UPDATE gannf.training_state SET epoch = 5");
    EXPECT_THROW(coord_->exec("SELECT 1/0"), pg::Error);
    EXPECT_THROW(tx.commit(), pg::Error);
  }
  {
    pg::Transaction tx(*coord_);
    coord_->exec("UPDATE gannf.training_state SET epoch = 6");
  }  // destroyed without commit
  EXPECT_FALSE(coord_->in_transaction());
  EXPECT_EQ(coord_->exec("SELECT epoch FROM gannf.training_state").get<int32_t>(0, 0), 0);
  // Typed getters refuse the wrong type instead of reinterpreting bytes.
  pg::Result r = coord_->exec("SELECT 1::bigint AS n, 'x'::text AS t, NULL::int AS z");
  EXPECT_THROW(r.get<int32_t>(0, "n"), pg::Error);
  EXPECT_THROW(r.get<int64_t>(0, "t"), pg::Error);
  EXPECT_THROW(r.get<int32_t>(0, "z"), pg::Error);
  EXPECT_FALSE(r.opt<int32_t>(0, "z").has_value());
  EXPECT_THROW(r.column("missing"), pg::Error);
  // Binary parameters of every kind round-trip.
  Params p;
  p.add(true).add((int16_t)-7).add((int32_t)-123456).add((int64_t)-(1ll << 40)).add(1.5f).add(-2.25)
      .add("héllo").null(pg::oid::kInt4);
  pg::Result all = coord_->exec("SELECT $1::bool, $2::int2, $3::int4, $4::int8, $5::float4, $6::float8, "
                                "$7::text, $8::int4", p);
  EXPECT_TRUE(all.get<bool>(0, 0));
  EXPECT_EQ(all.get<int16_t>(0, 1), -7);
  EXPECT_EQ(all.get<int32_t>(0, 2), -123456);
  EXPECT_EQ(all.get<int64_t>(0, 3), -(1ll << 40));
  EXPECT_EQ(all.get<float>(0, 4), 1.5f);
  EXPECT_EQ(all.get<double>(0, 5), -2.25);
  EXPECT_EQ(all.get<std::string>(0, 6), "héllo");
  EXPECT_TRUE(all.is_null(0, 7));
}

}  // namespace
