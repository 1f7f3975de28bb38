#include "coordinator.h"
#include "deadlock.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "aggregate.h"
#include "unit_counts.h"
#include "weights_delta.h"
#include "blob.h"
#include "format.h"
#include "migrate.h"
#include "protocol.h"
#include "summed.h"
#include "validate.h"

namespace gannf::cluster {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// pg_advisory_lock key of the coordinator: "gannfco" in ASCII. Held for the
// session, so a second coordinator on the same database is refused, and a
// killed one's lock goes with its connection.
constexpr int64_t kCoordinatorLock = 0x67616e6e66636f;

// A finite gradient this large is no gradient of this model (BCE's gradient
// with respect to a logit is at most 1, averaged over the unit, and DCGAN's
// activations are bounded by BN and tanh); it is a broken or hostile worker,
// and Adam's second moment would carry it for thousands of steps.
constexpr float kMaxAbsGradient = 1e6f;

const char* kNetName[2] = {"G", "D"};

// Test hooks, for faults that must land at one exact point of an iteration
// (tests/test_ops_faults.cpp), never set in a real run:
//  GANNF_TEST_PAUSE_AT=PHASE:K[,PHASE:K...]  at PHASE of iteration K, create
//      $GANNF_TEST_HOOK_DIR/PHASE.reached and wait until PHASE.go appears
//      (the test crashes the server in between);
//  GANNF_TEST_LOSE_COMMIT_REPLY=K  after iteration K's COMMIT succeeded, act
//      as if its reply had been lost: drop the connection.
void test_pause(const char* phase, int64_t iteration) {
  static const char* at = std::getenv("GANNF_TEST_PAUSE_AT");
  static const char* dir = std::getenv("GANNF_TEST_HOOK_DIR");
  if (!at || !dir) return;
  const std::string list = "," + std::string(at) + ",", me = std::string(phase) + ":" + std::to_string(iteration);
  if (list.find("," + me + ",") == std::string::npos) return;
  const std::filesystem::path d(dir);
  if (std::filesystem::exists(d / (std::string(phase) + ".go"))) return;  // once
  std::ofstream(d / (std::string(phase) + ".reached")) << iteration << "\n";
  while (!std::filesystem::exists(d / (std::string(phase) + ".go")))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

bool test_lose_commit_reply(int64_t iteration) {
  static const char* at = std::getenv("GANNF_TEST_LOSE_COMMIT_REPLY");
  static bool done = false;
  if (!at || done || std::to_string(iteration) != at) return false;
  return done = true;
}

std::string join_ids(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) {
    if (!s.empty()) s += ',';
    s += std::to_string(id);
  }
  return s;
}

// Publishes a network's weights of `iteration`; with `base` (the parameters
// published for base_iteration), also the exact delta from them
// (gannf.weights_delta, sql/0019). Returns the parameters published.
std::vector<float> insert_weights(pg::Connection& c, int64_t iteration, int k, const Net<float>& net,
                                  const std::vector<float>* base = nullptr, int64_t base_iteration = -1) {
  std::vector<float> p = net.get_params();
  const std::vector<float> st = net.get_stats();
  EncodedBlob pb(p), sb(st);
  pg::Params q;
  q.add(iteration).add(kNetName[k]).add((int64_t)net.layout_hash()).add((int64_t)p.size()).bytes(pb.bytes())
      .add((int64_t)pb.checksum()).add((int64_t)st.size()).bytes(sb.bytes()).add((int64_t)sb.checksum())
      .add((int64_t)net.num_batches_tracked);
  c.exec(
      "INSERT INTO gannf.weights (iteration, network, layout_hash, element_count, params, params_checksum, "
      "bn_count, bn_running, bn_checksum, num_batches_tracked) "
      "VALUES ($1, $2::gannf.network, $3, $4, $5, $6, $7, $8, $9, $10)",
      q);
  if (base && base->size() == p.size() && base_iteration >= 0 && base_iteration < iteration) {
    const std::string delta = encode_weights_delta(*base, p);
    pg::Params qd;
    qd.add(iteration).add(kNetName[k]).add(base_iteration).add((int64_t)p.size())
        .bytes(std::span<const std::byte>(reinterpret_cast<const std::byte*>(delta.data()), delta.size()));
    c.exec(
        "INSERT INTO gannf.weights_delta (iteration, network, base_iteration, element_count, delta) "
        "VALUES ($1, $2::gannf.network, $3, $4, $5)",
        qd);
  }
  return p;
}

void insert_optimizer(pg::Connection& c, int64_t iteration, int k, Adam<float>& a, Backend<float>& be) {
  std::vector<float> m(a.size()), v(a.size());
  be.download(m.data(), a.m(), m.size());
  be.download(v.data(), a.v(), v.size());
  EncodedBlob mb(m), vb(v);
  pg::Params q;
  q.add(iteration).add(kNetName[k]).add(a.t).add((int64_t)m.size()).bytes(mb.bytes()).bytes(vb.bytes());
  c.exec(
      "INSERT INTO gannf.optimizer_state (iteration, network, step, element_count, adam_m, adam_v) "
      "VALUES ($1, $2::gannf.network, $3, $4, $5, $6)",
      q);
}

// New units for `iteration` from the position pointer, crossing into the next
// epoch when one is used up (while epochs remain). A last slice of a single
// image is skipped: batch norm cannot train on it. Returns how many.
int create_units(pg::Connection& c, const RunSettings& s, int64_t iteration, int want, int64_t* epoch,
                 int64_t* position) {
  std::string values;
  int made = 0;
  while (made < want) {
    if (*position >= s.dataset_size) {
      if (*epoch + 1 >= s.epochs) break;
      ++*epoch;
      *position = 0;
    }
    const int64_t n = std::min<int64_t>(s.images_per_work_unit, s.dataset_size - *position);
    if (n < 2) {
      *position = s.dataset_size;
      continue;
    }
    values += std::string(values.empty() ? "" : ", ") + "(" + std::to_string(*epoch) + ", " +
              std::to_string(*position) + ", " + std::to_string(n) + ", " + std::to_string(iteration) + ")";
    *position += n;
    ++made;
  }
  if (!values.empty())
    c.exec("INSERT INTO gannf.work_units (epoch, first_index, sample_count, iteration) VALUES " + values);
  return made;
}

void build_nets(const RunSettings& s, Backend<float>& be, std::unique_ptr<Net<float>>* G,
                std::unique_ptr<Net<float>>* D, int g_batch) {
  *G = std::make_unique<Net<float>>(be, "generator");
  *D = std::make_unique<Net<float>>(be, "discriminator");
  build_generator(**G, s.dcgan(), g_batch);
  build_discriminator(**D, s.dcgan(), 2);  // never run here; BN needs 2
}

// The coordinator's lock. A session of another login that holds it (where
// sql/roles.sql has not taken advisory locks from students: docs/security.md)
// is ended and its login quarantined -- no worker takes this lock -- and the
// lock taken after it.
bool take_lock(pg::Connection& c, const LogFn& log) {
  pg::Params p;
  p.add(kCoordinatorLock);
  if (c.exec("SELECT pg_try_advisory_lock($1)", p).get<bool>(0, 0)) return true;
  const std::vector<LockHolder> ended = end_lock_impostors(c, kCoordinatorLock, "the coordinator's lock", log);
  for (const LockHolder& h : ended) {
    pg::Params s;
    s.add(h.login).add("held the coordinator's advisory lock (session " + std::to_string(h.pid) + ")");
    c.exec("SELECT gannf.strike($1::name, $2, coalesce((SELECT t.strike_threshold FROM gannf.trust_settings t), 5), "
           "false)",
           s);
  }
  return !ended.empty() && c.exec("SELECT pg_try_advisory_lock($1)", p).get<bool>(0, 0);
}

}  // namespace

struct Coordinator::Submission {
  // A summed submission (sql/0017) covers several units: the fields here are
  // its first unit's (sample_count: all of them), `members` lists them all,
  // in the order the worker summed them; a plain one has one member.
  struct Member {
    int64_t id = 0, unit = 0, epoch = 0, first_index = 0;
    int sample_count = 0, micro_batch = 0;
    std::optional<StepStats> losses;
  };
  std::vector<Member> members;
  int64_t id = 0, unit = 0, epoch = 0, first_index = 0;
  int sample_count = 0, micro_batch = 0;
  std::string worker;
  std::vector<float> grad[2], bn[2];  // G, D
  std::vector<double> norms[2];    // per tensor
  double total_norm[2] = {0, 0};
  bool has_losses = false;
  bool lost = false;  // its blobs are gone (a server crash), not invalid
  bool spot_checked = false;
  bool recomputed_differs = false;  // a spot check failed past the back end's rounding (spot_check_certain)
  std::string backend;  // as registered: the spot check's tolerance
  StepStats losses;
};

// ------------------------------------------------------------------ init

void init_run(pg::Connection& c, const RunSettings& s, bool force, const LogFn& log) {
  s.validate();
  migrate(c, log);
  if (!take_lock(c, log))
    throw std::runtime_error("a gannf-coord is running against this database; stop it before init");
  auto be = make_backend<float>("cpu");
  std::unique_ptr<Net<float>> G, D;
  build_nets(s, *be, &G, &D, 2);
  // The same initialisation as gannf-train's, so that a cluster run and a
  // local run from one seed start from the same weights.
  G->init_dcgan(s.seed * 2 + 1);
  D->init_dcgan(s.seed * 2 + 2);
  Adam<float> aG(*be, G->num_params(), s.adam()), aD(*be, D->num_params(), s.adam());

  pg::Transaction tx(c);
  pg::Result old = c.exec("SELECT iteration FROM gannf.training_state FOR UPDATE");
  if (old.rows() > 0) {
    if (!force)
      throw std::runtime_error("this database already holds a run (at iteration " +
                               std::to_string(old.get<int64_t>(0, 0)) +
                               "): 'gannf-coord run' resumes it, 'gannf-coord init --force' deletes it "
                               "and starts over");
    c.exec("DELETE FROM gannf.loss_history");
    c.exec("DELETE FROM gannf.submissions");     // and their blobs
    c.exec("DELETE FROM gannf.work_units");
    c.exec("DELETE FROM gannf.weights");         // and the optimizer state
    c.exec("DELETE FROM gannf.training_state");
    if (log) log("deleted the previous run");
  }
  pg::Params p;
  p.add(s.dataset_size).add((int64_t)s.seed).add(s.lease_seconds).add(s.to_json());
  c.exec(
      "INSERT INTO gannf.training_state (dataset_size, seed, lease, config, status) "
      "VALUES ($1, $2, make_interval(secs => $3), $4::text::jsonb, 'running')",
      p);
  insert_weights(c, 0, 0, *G);
  insert_weights(c, 0, 1, *D);
  insert_optimizer(c, 0, 0, aG, *be);
  insert_optimizer(c, 0, 1, aD, *be);
  int64_t epoch = 0, position = 0;
  const int made = create_units(c, s, 0, s.open_units(), &epoch, &position);
  pg::Params q;
  q.add(epoch).add(position);
  c.exec("UPDATE gannf.training_state SET epoch = $1, position = $2", q);
  tx.commit();
  if (log)
    log("initialised a run: " + s.dcgan().describe() + "; " + std::to_string(s.dataset_size) + " images, " +
        std::to_string(made) + " work units of " + std::to_string(s.images_per_work_unit) + " open, " +
        std::to_string(s.num_workunits_per_update) + " per update");
}

// ------------------------------------------------------------------ Coordinator

Coordinator::Coordinator(const CoordinatorOptions& o) : o_(o) {
  be_ = make_backend<float>("cpu");
  // A server that answers but takes no writes (read-only, disk full) is
  // waited for; one that cannot be reached at start is more likely a wrong
  // address than an outage, and is an error.
  auto last = Clock::now() - std::chrono::hours(1);
  for (double backoff = 1;; backoff = std::min(backoff * 2, 10.0)) {
    try {
      connect();
      load_state();
      // The dataset now, so that a missing one stops the start with one line.
      if (s_.spot_check > 0) spot_ = std::make_unique<SpotChecker>(s_, o_.dataset);
      if (o_.student_sql_limit > 0 || o_.worker_call_limit > 0) {
        CpuWatchOptions w;
        w.conninfo = o_.conninfo;
        w.limit = o_.student_sql_limit;
        w.call_limit = o_.worker_call_limit;
        cpu_watch_ = std::make_unique<CpuWatch>(w);
      }
      return;
    } catch (const pg::Error& e) {
      if (!e.server_unwritable() || (o_.stop && o_.stop->load())) throw;
      if (since(last) >= 60) {
        say(std::string("the database server refuses writes: ") + e.what() + "; waiting until it takes them");
        last = Clock::now();
      }
      c_.reset();
      for (double t = 0; t < backoff && !(o_.stop && o_.stop->load()); t += 0.25)
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
}

Coordinator::~Coordinator() = default;

pg::Connection& Coordinator::connection() {
  if (!c_) throw std::runtime_error("the coordinator is reconnecting to the database");
  return *c_;
}

void Coordinator::say(const std::string& line) const {
  if (o_.log) o_.log(line);
}

void Coordinator::connect() {
  c_.reset();
  auto c = std::make_unique<pg::Connection>(o_.conninfo);
  migrate(*c, o_.log);
  // sql/roles.sql takes advisory locks and large objects from everyone but
  // the coordinator (docs/security.md): a database set up before that, or
  // by hand, still lets a student hold the coordinator's lock.
  if (!said_roles_) {
    said_roles_ = true;
    if (c->exec("SELECT CASE WHEN to_regrole('gannf_worker') IS NULL THEN false ELSE "
                "has_function_privilege('gannf_worker', 'pg_catalog.pg_advisory_lock(bigint)', 'EXECUTE') OR "
                "has_function_privilege('gannf_worker', 'pg_catalog.lo_from_bytea(oid, bytea)', 'EXECUTE') END")
            .get<bool>(0, 0))
      say("warning: students may take advisory locks in " + c->describe() +
          " (the coordinator's among them) and store large objects without a quota: "
          "run sql/roles.sql there again, as the server's administrator");
    // roles.sql keeps worker logins out of the server's log (admit_student,
    // and its last section for logins made otherwise): PostgreSQL logs each
    // failing statement with its whole text, so one student's loop can fill
    // the disk the database is on (docs/security.md).
    pg::Result loud = c->exec(
        "SELECT r.rolname::text FROM pg_roles r "
        "WHERE r.rolcanlogin AND NOT (r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication "
        "OR r.rolbypassrls) AND r.oid IN (SELECT m.member FROM pg_auth_members m "
        "WHERE m.roleid = to_regrole('gannf_worker')) "
        "AND NOT EXISTS (SELECT FROM pg_auth_members m WHERE m.member = r.oid "
        "AND m.roleid IS DISTINCT FROM to_regrole('gannf_worker')) "
        "AND NOT EXISTS (SELECT FROM pg_db_role_setting s WHERE s.setrole = r.oid AND s.setdatabase = 0 "
        "AND 'log_min_messages=panic' = ANY (s.setconfig) AND 'log_min_error_statement=panic' = ANY (s.setconfig)) "
        "ORDER BY 1");
    if (loud.rows() > 0) {
      std::string names;
      for (int i = 0; i < std::min(loud.rows(), 5); ++i) names += (i ? ", " : "") + loud.get<std::string>(i, 0);
      if (loud.rows() > 5) names += ", ...";
      say("warning: " + std::to_string(loud.rows()) + " worker login(s) (" + names +
          ") can fill the server's log: PostgreSQL writes each of their failing statements there with its whole "
          "text. Run sql/roles.sql again, as the server's administrator (it sets log_min_messages and "
          "log_min_error_statement to panic for every plain worker login), or admit students with gannf-coord "
          "add-students");
    }
  }
  // Read at every connection: a restarted server may have another.
  max_prepared_ = c->exec("SELECT current_setting('max_prepared_transactions')::integer").get<int32_t>(0, 0);
  if (!said_prepared_ && max_prepared_ > 0) {
    said_prepared_ = true;
    say("warning: max_prepared_transactions is above 0 on this server: a student may leave a prepared "
        "transaction (PREPARE TRANSACTION) that keeps the run's rows locked after its session ends, and only a "
        "superuser can end it. The coordinator shuts such a login out and says what to run, but the class waits "
        "until then: set max_prepared_transactions = 0 (PostgreSQL's default; a restart) unless another "
        "application on this server needs it");
  }
  // A coordinator killed a moment ago may still hold the lock until the
  // server notices its connection is gone.
  const auto t0 = Clock::now();
  while (!take_lock(*c, o_.log)) {
    if (since(t0) > 10)
      throw std::runtime_error("another gannf-coord is running against " + c->describe() +
                               " (it holds the coordinator lock); stop it first");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  // No statement of the coordinator's waits for ever: a student session can
  // hold a row it needs (its unit's, in a transaction kept open) with
  // idle_in_transaction_session_timeout set to 0, while the reaper that
  // would end it is this thread. A wait past this ends in 55P03, which run()
  // answers by reaping and trying again (close_iteration sets its own).
  c->exec("SET lock_timeout = '10s'");
  c->listen(channel::kSubmission);
  c_ = std::move(c);
}

void Coordinator::load_state() {
  pg::Connection& c = *c_;
  pg::Result ts =
      c.exec("SELECT run_id::text, iteration, epoch, position, status, config::text FROM gannf.training_state");
  if (ts.rows() == 0)
    throw std::runtime_error("no training run in " + c.describe() + ": start one with 'gannf-coord init'");
  const std::string run_id = ts.get<std::string>(0, 0);
  RunSettings s = RunSettings::from_json(ts.get<std::string>(0, 5));
  const bool rebuild = !G_ || s.dcgan().describe() != s_.dcgan().describe();
  s_ = s;
  run_id_ = run_id;
  iteration_ = ts.get<int64_t>(0, 1);
  epoch_ = ts.get<int32_t>(0, 2);
  position_ = ts.get<int64_t>(0, 3);
  if (rebuild) build_nets(s_, *be_, &G_, &D_, 16);
  published_iteration_ = -1;
  adamG_ = std::make_unique<Adam<float>>(*be_, G_->num_params(), s_.adam());
  adamD_ = std::make_unique<Adam<float>>(*be_, D_->num_params(), s_.adam());

  pg::Params p;
  p.add(iteration_);
  pg::Result w = c.exec(
      "SELECT network::text, layout_hash, element_count, params, params_checksum, bn_count, bn_running, "
      "bn_checksum, num_batches_tracked FROM gannf.weights WHERE iteration = $1",
      p);
  pg::Result o = c.exec(
      "SELECT network::text, step, element_count, adam_m, adam_v FROM gannf.optimizer_state WHERE iteration = $1",
      p);
  const std::string where = " of iteration " + std::to_string(iteration_);
  for (int k = 0; k < 2; ++k) {
    Net<float>& net = k ? *D_ : *G_;
    Adam<float>& adam = k ? *adamD_ : *adamG_;
    int row = -1, orow = -1;
    for (int i = 0; i < w.rows(); ++i)
      if (w.get<std::string>(i, 0) == kNetName[k]) row = i;
    for (int i = 0; i < o.rows(); ++i)
      if (o.get<std::string>(i, 0) == kNetName[k]) orow = i;
    if (row < 0 || orow < 0)
      throw std::runtime_error(std::string("the database has no weights or optimizer state for ") + kNetName[k] +
                               where + "; the run is damaged (gannf-coord init --force starts over)");
    if ((uint64_t)w.get<int64_t>(row, 1) != net.layout_hash())
      throw std::runtime_error(std::string(kNetName[k]) + "'s weights" + where +
                               " have another layout than " + s_.dcgan().describe());
    auto params = w.bytes(row, 3), stats = w.bytes(row, 6);
    if (crc32c(params) != (uint32_t)w.get<int64_t>(row, 4) || crc32c(stats) != (uint32_t)w.get<int64_t>(row, 7))
      throw std::runtime_error(std::string(kNetName[k]) + "'s weights" + where + " fail their checksum");
    std::vector<float> pv(net.num_params()), sv(net.num_stats());
    decode_floats(params, pv);
    decode_floats(stats, sv);
    net.set_params(pv);
    net.set_stats(sv);
    net.num_batches_tracked = w.get<int64_t>(row, 8);
    published_[k] = std::move(pv);
    std::vector<float> m(adam.size()), v(adam.size());
    decode_floats(o.bytes(orow, 3), m);
    decode_floats(o.bytes(orow, 4), v);
    be_->upload(adam.m(), m.data(), m.size());
    be_->upload(adam.v(), v.data(), v.size());
    adam.t = o.get<int64_t>(orow, 1);
  }
  published_iteration_ = iteration_;
  pending_.clear();
  finished_ = false;  // run() asks the database
  rejected_ = (int)c.exec("SELECT count(*) FROM gannf.submissions WHERE iteration = $1 AND state = 'rejected'", p)
                  .get<int64_t>(0, 0);
}

bool Coordinator::set_status(const std::string& status) {
  pg::Params p;
  p.add(status);
  const bool changed =
      c_->exec("UPDATE gannf.training_state SET status = $1, updated_at = now() WHERE status <> $1", p).affected() > 0;
  // Workers idle while the run was paused: claimable units are there again.
  if (changed && status == "running") c_->notify(channel::kWork, std::to_string(iteration_));
  return changed;
}

std::vector<Coordinator::LossRow> Coordinator::loss_history() {
  pg::Result r = c_->exec(
      "SELECT iteration, epoch, loss_d, loss_g, d_real, d_fake, d_accuracy, samples FROM gannf.loss_history "
      "ORDER BY iteration");
  std::vector<LossRow> out(r.rows());
  for (int i = 0; i < r.rows(); ++i) {
    out[i].iteration = r.get<int64_t>(i, 0);
    out[i].epoch = r.get<int32_t>(i, 1);
    out[i].s.d_loss = r.opt<float>(i, 2).value_or(NAN);
    out[i].s.g_loss = r.opt<float>(i, 3).value_or(NAN);
    out[i].s.d_real = r.opt<float>(i, 4).value_or(NAN);
    out[i].s.d_fake = r.opt<float>(i, 5).value_or(NAN);
    out[i].s.d_acc = r.opt<float>(i, 6).value_or(NAN);
    out[i].s.samples = r.get<int32_t>(i, 7);
  }
  return out;
}

// ------------------------------------------------------------------ submissions

std::optional<std::string> Coordinator::spot_check(Submission& s) {
  s.spot_checked = true;
  // The wire format's rounding is allowed for in every spot check.
  const double tolerance = spot_check_tolerance(s.backend) + encoding_tolerance(s_.grad_format());
  std::vector<SpotChecker::Unit> units;
  for (const Submission::Member& m : s.members)
    units.push_back({(int)m.epoch, m.first_index, m.sample_count, m.micro_batch});
  std::string note;
  double distance = 0;
  auto why = spot_->check(*G_, *D_, units, s.grad, tolerance, &note, &distance);
  // A failure nearer than the back end's rounding may reach is refused with
  // a forgivable strike; only one past it quarantines at once
  // (spot_check_certain: the tensor-core math's tail).
  const double certain = spot_check_certain(s.backend) + encoding_tolerance(s_.grad_format());
  s.recomputed_differs = why.has_value() && !(distance <= certain);
  if (why && !s.recomputed_differs)
    *why += "; within " + fmt("%g", certain) + ", as far as " + s.backend +
            "'s rounding may reach: a forgivable strike, not the quarantine";
  // Rare (an activation within rounding of its kink): worth a line.
  if (!why && !note.empty()) say("spot check of submission " + std::to_string(s.id) + " (worker " + s.worker + "): " + note);
  return why;
}

std::optional<std::string> Coordinator::fetch_and_validate(int64_t id, Submission* out) {
  pg::Connection& c = *c_;
  pg::Params p;
  p.add(id);
  pg::Result s = c.exec(
      "SELECT s.work_unit_id, u.epoch, u.first_index, u.sample_count, s.sample_count, "
      "coalesce(s.micro_batch, w.batch_size), s.loss_d, s.loss_g, s.d_real, s.d_fake, s.d_accuracy, "
      "w.login::text || '/' || w.name, w.backend, s.id "
      "FROM gannf.submissions s JOIN gannf.work_units u ON u.id = s.work_unit_id "
      "JOIN gannf.workers w ON w.id = s.worker_id WHERE s.id = $1 OR s.summed_with = $1 ORDER BY s.work_unit_id",
      p);
  if (s.rows() < 1) return "submission vanished";
  out->id = id;
  out->unit = s.get<int64_t>(0, 0);
  out->epoch = s.get<int32_t>(0, 1);
  out->first_index = s.get<int64_t>(0, 2);
  out->worker = s.get<std::string>(0, 11);
  const std::string backend = s.opt<std::string>(0, 12).value_or("");
  out->backend = backend;
  out->has_losses = true;
  int max_unit = 0;
  for (int r = 0; r < s.rows(); ++r) {
    Submission::Member m;
    m.id = s.get<int64_t>(r, 13);
    m.unit = s.get<int64_t>(r, 0);
    m.epoch = s.get<int32_t>(r, 1);
    m.first_index = s.get<int64_t>(r, 2);
    m.sample_count = s.get<int32_t>(r, 3);
    const std::string which = s.rows() > 1 ? "unit " + std::to_string(m.unit) + ": " : "";
    if (s.get<int32_t>(r, 4) != m.sample_count) return which + "sample count differs from the unit's";
    const auto mb = s.opt<int32_t>(r, 5);
    if (!mb) return which + "no micro-batch size (neither submitted nor registered)";
    // Batch norm needs two images a pass (the worker refuses less itself).
    if (*mb < 2 || *mb > m.sample_count) return which + "micro-batch size " + std::to_string(*mb) + " out of range";
    m.micro_batch = *mb;
    const auto ld = s.opt<float>(r, 6), lg = s.opt<float>(r, 7), dr = s.opt<float>(r, 8), df = s.opt<float>(r, 9),
               da = s.opt<float>(r, 10);
    if (ld && lg && dr && df && da) {
      if (!(std::isfinite(*ld) && std::isfinite(*lg) && std::isfinite(*dr) && std::isfinite(*df) &&
            std::isfinite(*da)))
        return which + "non-finite losses";
      m.losses = StepStats{*ld, *lg, *dr, *df, *da, m.sample_count};
      if (auto why = check_losses(*m.losses)) return which + *why;
      out->losses.merge(*m.losses);
    } else {
      out->has_losses = false;
    }
    out->sample_count += m.sample_count;
    max_unit = std::max(max_unit, m.sample_count);
    out->members.push_back(m);
  }
  out->micro_batch = out->members[0].micro_batch;

  pg::Result b = c.exec(
      "SELECT network::text, layout_hash, element_count, grad, grad_checksum, bn_count, bn_stats, bn_checksum "
      "FROM gannf.submission_blobs WHERE submission_id = $1",
      p);
  if (b.rows() == 0) {
    // submit() writes the blobs with their submission row, in one
    // transaction; they are missing only when the server crashed (the table
    // is UNLOGGED, sql/0006). Not the worker's fault: the unit is served again.
    out->lost = true;
    return "its gradients were lost when the database server restarted without a clean shutdown";
  }
  size_t micro = 0;  // forward passes of all members
  for (const Submission::Member& m : out->members) micro += micro_batches(m.sample_count, m.micro_batch).size();
  for (int k = 0; k < 2; ++k) {
    const Net<float>& net = k ? *D_ : *G_;
    const std::string who = std::string(kNetName[k]) + ": ";
    int row = -1, rows = 0;
    for (int i = 0; i < b.rows(); ++i)
      if (b.get<std::string>(i, 0) == kNetName[k]) row = i, ++rows;
    if (rows != 1) return who + std::to_string(rows) + " gradient rows";
    if ((uint64_t)b.get<int64_t>(row, 1) != net.layout_hash()) return who + "layout hash differs from the model's";
    // The run's wire format (sql/0014 checked the bytes loosely for F16S;
    // exactly here, before anything is decoded).
    const BlobFormat fmt = s_.grad_format();
    const std::vector<size_t> segments = tensor_sizes(net.params_layout());
    if (b.get<int64_t>(row, 2) != (int64_t)net.num_params() ||
        b.bytes(row, 3).size() != encoded_size(fmt, net.num_params(), segments.size()))
      return who + "gradient has " + std::to_string(b.get<int64_t>(row, 2)) + " elements in " +
             std::to_string(b.bytes(row, 3).size()) + " bytes, the model " + std::to_string(net.num_params()) +
             " in " + to_string(fmt);
    if (crc32c(b.bytes(row, 3)) != (uint32_t)b.get<int64_t>(row, 4)) return who + "gradient checksum mismatch";
    // BN statistics: G ran one forward per micro-batch, D two (real, fake).
    const size_t copies = micro * (k ? 2 : 1);
    if (b.get<int64_t>(row, 5) != (int64_t)(copies * net.num_stats()) ||
        b.bytes(row, 6).size() != 4 * copies * net.num_stats())
      return who + "BN statistics of " + std::to_string(b.get<int64_t>(row, 5)) + " values; " +
             std::to_string(copies) + " forward passes of " + std::to_string(net.num_stats()) +
             " expected for " + std::to_string(out->sample_count) + " images in micro-batches of " +
             std::to_string(out->micro_batch) + (out->members.size() > 1 ? " (summed units)" : "");
    if (crc32c(b.bytes(row, 6)) != (uint32_t)b.get<int64_t>(row, 7)) return who + "BN statistics checksum mismatch";
    out->grad[k].resize(net.num_params());
    try {
      decode_blob(fmt, b.bytes(row, 3), segments, out->grad[k]);
    } catch (const std::invalid_argument& e) {
      return who + "gradient undecodable: " + e.what();
    }
    for (float g : out->grad[k])
      if (!(std::fabs(g) <= kMaxAbsGradient))  // also false for NaN
        return who + (std::isfinite(g) ? "gradient value out of range" : "non-finite gradient");
    out->bn[k].resize(copies * net.num_stats());
    decode_floats(b.bytes(row, 6), out->bn[k]);
    for (float x : out->bn[k])
      if (!std::isfinite(x)) return who + "non-finite BN statistics";
    for (size_t j = 0; j < copies; ++j)
      for (const LayerSpec& l : net.layers())
        if (l.kind == LayerKind::BatchNorm)
          for (int ch = 0; ch < l.C_out; ++ch)
            if (out->bn[k][j * net.num_stats() + l.running_var + ch] < 0) return who + "negative BN variance";
    // G's input is the noise (Box-Muller: |z| < 8.6), D's images or G's
    // tanh output (|x| <= 1).
    const std::vector<double> bounds =
        bn_input_bounds(net.layers(), net.params(), k ? 1.0 : 8.6, max_unit);
    if (auto why = check_bn_bounds(out->bn[k], net.num_stats(), net.layers(), bounds)) return who + *why;
    out->norms[k] = tensor_norms(out->grad[k], net.params_layout());
    out->total_norm[k] = l2_norm(out->grad[k]);
  }
  // A summed submission of k units is checked as often as one of its units
  // would be alone (1 - (1 - p)^k): summing buys no fewer checks per unit.
  const double fraction =
      s_.spot_check >= 1 ? 1 : 1 - std::pow(1 - s_.spot_check, (double)out->members.size());
  if (chosen_for_spot_check(s_.seed, id, s_.spot_check > 0 ? fraction : 0)) {
    if (auto why = spot_check(*out)) return *why;
  }
  return std::nullopt;
}

void Coordinator::reject(int64_t id, int64_t unit, const std::string& reason, bool lost, bool recomputed,
                         bool defer) {
  // Lock order of sql/0002: work_units before submissions (the arrival
  // path takes the login's worker rows first: refresh_pending()).
  pg::Params pu, ps;
  pu.add(unit);
  ps.add(id).add(reason).add(lost ? "stale" : "rejected");
  // A summed submission (sql/0017) goes with all its units, locked in id
  // order first, as every statement that locks several units (sql/0032).
  pu.add(id);
  c_->exec("SELECT 1 FROM gannf.work_units "
           "WHERE id = $1 OR id IN (SELECT work_unit_id FROM gannf.submissions WHERE summed_with = $2) "
           "ORDER BY id FOR NO KEY UPDATE",
           pu);
  c_->exec("UPDATE gannf.work_units SET state = 'available', visible_at = '-infinity' "
           "WHERE (id = $1 OR id IN (SELECT work_unit_id FROM gannf.submissions WHERE summed_with = $2)) "
           "AND state = 'submitted'",
           pu);
  c_->exec("UPDATE gannf.submissions SET state = $3::gannf.submission_state, reject_reason = $2 "
           "WHERE (id = $1 OR summed_with = $1) AND state = 'pending'",
           ps);
  if (lost) return;
  ++rejected_;
  if (defer && !recomputed)
    strikes_due_.emplace_back(id, reason);
  else
    strike_login(id, reason, recomputed);
}

void Coordinator::strike_login(int64_t id, const std::string& reason, bool recomputed) {
  // A rejection is the worker's fault (a lost blob is not): a strike against
  // its login, which repeated rejections quarantine (sql/0008). A failed
  // recomputation -- a spot check, or the second opinion on a submission
  // the norm check flagged -- past what the back end's rounding may reach
  // (spot_check_certain) is no accident of arithmetic: it weighs the whole
  // threshold and quarantines at once. Any other rejection an honest machine
  // can earn (the norm check is statistical; a faulty GPU's NaN; a
  // tensor-core unit of its rounding's tail): its strike is forgivable,
  // taken back by the login's used submissions (sql/0024, forgive()).
  pg::Params pl;
  pl.add(id).add(reason).add(recomputed);
  pg::Result q = c_->exec(
      "SELECT w.login::text, gannf.strike(w.login, 'rejected: ' || $2, "
      "CASE WHEN $3 THEN (SELECT strike_threshold FROM gannf.trust_settings) ELSE 1 END, NOT $3) "
      "FROM gannf.submissions s JOIN gannf.workers w ON w.id = s.worker_id WHERE s.id = $1",
      pl);
  if (q.rows() == 1 && q.get<bool>(0, 1))
    say("login " + q.get<std::string>(0, 0) + " is quarantined (" +
        (recomputed ? "its result recomputed differs" : "repeated rejections") +
        "): its work is refused until gannf-coord quarantine lift " + q.get<std::string>(0, 0));
}

// A login's used submissions and its rejected ones in one update are taken
// in the order they were submitted (by id): each forgive() credits the used
// work that came before the next forgivable strike, which then starts the
// count again (strike()). Before, every rejection struck as the update was
// judged, before any of the update's work was credited, so the outcome hung
// on which update a unit happened to land in: a machine wrong one unit in
// four was quarantined whenever a good unit since its last strike shared
// an update with its next bad one (Trust.ALoginRejectedNowAndThenIsForgivenByItsUsedWork
// failed so in a full test run). Crediting all of the update's work first
// is wrong too: a good unit after a bad one in the same update then counted
// for no strike (2 failures in about 29 runs under load).
void Coordinator::settle_strikes(int64_t k, std::vector<int64_t> used_ids) {
  std::vector<std::pair<int64_t, std::string>> due;
  due.swap(strikes_due_);
  std::sort(due.begin(), due.end());
  std::sort(used_ids.begin(), used_ids.end());
  auto credit = [&](const std::vector<int64_t>& ids) {
    if (ids.empty()) return;
    pg::Result forgiven =
        c_->exec("SELECT login, forgiven, strikes FROM gannf.forgive(ARRAY[" + join_ids(ids) + "]::bigint[])");
    for (int i = 0; i < forgiven.rows(); ++i)
      say("iteration " + std::to_string(k) + ": login " + forgiven.get<std::string>(i, 0) + ": " +
          std::to_string(forgiven.get<int32_t>(i, 1)) + " strike(s) forgiven for its used work (" +
          std::to_string(forgiven.get<int32_t>(i, 2)) + " left)");
  };
  size_t u = 0;
  for (const auto& [id, reason] : due) {
    std::vector<int64_t> before;
    while (u < used_ids.size() && used_ids[u] < id) before.push_back(used_ids[u++]);
    credit(before);
    strike_login(id, reason, false);
  }
  credit(std::vector<int64_t>(used_ids.begin() + (std::ptrdiff_t)u, used_ids.end()));
}

void Coordinator::refuse_quarantined(int64_t k, std::vector<Submission*>& used) {
  if (used.empty()) return;
  std::vector<int64_t> ids;
  for (const Submission* s : used) ids.push_back(s->id);
  pg::Result still = c_->exec("SELECT id FROM gannf.submissions WHERE id IN (" + join_ids(ids) +
                              ") AND state = 'pending'");
  std::set<int64_t> pending;
  for (int i = 0; i < still.rows(); ++i) pending.insert(still.get<int64_t>(i, 0));
  std::vector<Submission*> kept;
  for (Submission* s : used) {
    if (pending.count(s->id)) {
      kept.push_back(s);
      continue;
    }
    say("iteration " + std::to_string(k) + ": refused submission " + std::to_string(s->id) + " (worker " + s->worker +
        "): its login was quarantined in this update");
    ++rejected_;
    pending_.erase(s->id);
  }
  used.swap(kept);
}

// PostgreSQL's DETAIL of a deadlock names each process in the cycle
// ("Process 123 waits for ShareLock on transaction 456; blocked by process
// 789."). Every worker function and the close take their locks in one order
// (sql/0029), so a cycle through the coordinator runs through a session that
// kept a transaction across calls: ended and struck like the reaper's.
void Coordinator::end_deadlocked_sessions(const std::string& detail) {
  for (const std::string& line : cluster::end_deadlocked_sessions(*c_, detail)) say(line);
}

void Coordinator::reap() {
  // What the watch on the server's CPU did (on its own thread, at once):
  // said here, and a strike for each login it ended, so the instructor's
  // gannf-coord status shows it beside the other offences.
  if (cpu_watch_)
    for (const CpuWatchEvent& e : cpu_watch_->take()) {
      say(e.line);
      if (e.login.empty()) continue;
      pg::Params p;
      p.add(e.login).add(e.reason + " on the server" + (e.shut_out ? "; shut out (NOLOGIN)" : ""));
      c_->exec("SELECT gannf.strike($1::name, $2)", p);
    }
  if (Clock::now() - last_reap_ < std::chrono::seconds(2)) return;
  last_reap_ = Clock::now();
  if (max_prepared_ > 0) check_prepared();
  // The stuck sessions first: a strike below may wait for a row one of
  // them holds (its lock_timeout ends the wait, and the next reap ends it).
  if (!reap_refused_) {
    try {
      pg::Result r = c_->exec("SELECT pid, login::text, why FROM gannf.reap()");
      for (int i = 0; i < r.rows(); ++i)
        say("ended session " + std::to_string(r.get<int32_t>(i, 0)) + " of login " + r.get<std::string>(i, 1) + ": " +
            r.get<std::string>(i, 2));
    } catch (const pg::Error& e) {
      if (e.connection_lost() || e.sqlstate() != "42501") throw;
      reap_refused_ = true;
      say(std::string("warning: cannot end stuck worker sessions: ") + e.what());
    }
  }
  // submit()'s refusals raise, so they are counted outside the transaction
  // (sql/0015); here they become strikes, one each.
  pg::Result s = c_->exec("SELECT login::text, refusals, quarantined FROM gannf.strike_refusals()");
  for (int i = 0; i < s.rows(); ++i) {
    const std::string login = s.get<std::string>(i, 0);
    say("login " + login + ": " + std::to_string(s.get<int64_t>(i, 1)) +
        " submission(s) refused by the database, a strike each");
    if (s.get<bool>(i, 2))
      say("login " + login + " is quarantined (repeated refusals): its work is refused until gannf-coord quarantine lift " +
          login);
  }
}

// A prepared transaction (PREPARE TRANSACTION, where the server allows
// them) outlives its session and keeps its locks: a student's, holding a
// claimed unit's row, froze the class (no update in 30 s; docs/security.md,
// "Prepared transactions"). Neither the reaper nor the coordinator can end it
// -- ROLLBACK PREPARED is for its owner or a superuser, and cannot run in a
// function -- so the login is shut out (it cannot prepare another, nor end
// this one itself) and struck, once per transaction, and the instructor is
// told the statement to run, every 30 s while it stays. Every database but
// the other runs', as the CPU watch.
void Coordinator::check_prepared() {
  std::map<std::string, Clock::time_point> said_now;  // only the transactions still there
  for (const PreparedXact& x : worker_prepared_xacts(*c_)) {
    const std::string &gid = x.gid, &login = x.login, &db = x.database;
    const std::string key = db + '\x1f' + gid;
    auto said = prepared_said_.find(key);
    const bool first = said == prepared_said_.end();
    if (!first && since(said->second) < 30) {
      said_now[key] = said->second;
      continue;
    }
    said_now[key] = Clock::now();
    std::string what;
    if (first) {
      const ShutOutcome o = shut_out_login(*c_, login);
      pg::Params p;
      p.add(login).add(std::string("left a prepared transaction") + (o.shut ? "; shut out (NOLOGIN)" : ""));
      c_->exec("SELECT gannf.strike($1::name, $2)", p);
      what = o.shut ? "; the login is shut out (" + std::to_string(o.ended) +
                          " session(s) ended; SELECT gannf_admin.admit_student('" + one_line(login) +
                          "') lets it in again) and struck"
                    : "; " + std::to_string(o.ended) + " session(s) of it ended, not shut out: " + one_line(o.not_shut);
    }
    say("login " + one_line(login) + " left a prepared transaction " + sql_literal(gid) + " in database " +
        one_line(db) + ", prepared " + fmt("%.0f", x.age_s) +
        " s ago: it keeps the rows it locked (a claimed unit holds up every update) until a superuser ends it. "
        "As a superuser, in database " + one_line(db) + ": ROLLBACK PREPARED " + sql_literal(gid) +
        "; then set max_prepared_transactions = 0" + what);
  }
  prepared_said_.swap(said_now);
}

void Coordinator::refresh_pending() {
  pg::Params p;
  p.add(iteration_);
  pg::Result r = c_->exec(
      "SELECT id, work_unit_id FROM gannf.submissions WHERE iteration = $1 AND state = 'pending' "
      "AND (summed_with IS NULL OR summed_with = id) ORDER BY id",
      p);
  for (int i = 0; i < r.rows(); ++i) {
    const int64_t id = r.get<int64_t>(i, 0);
    if (pending_.count(id)) continue;
    auto sub = std::make_unique<Submission>();
    if (auto why = fetch_and_validate(id, sub.get())) {
      pg::Transaction tx(*c_);
      // The worker functions' lock order (sql/0029, 0030): the login's worker
      // rows before its unit. The strike in reject() locks them when it
      // quarantines; taken after the unit, a submit() of the login naming
      // that unit (holding its worker's row, waiting for the unit)
      // deadlocked with it. In the close no submit() is in flight (the state
      // row), and there this lock would make every claim and heartbeat of
      // the login wait for the whole close.
      if (!sub->lost) {
        pg::Params pw;
        pw.add(id);
        c_->exec("SELECT gannf.lock_login_workers(w.login) FROM gannf.submissions s "
                 "JOIN gannf.workers w ON w.id = s.worker_id WHERE s.id = $1",
                 pw);
      }
      reject(id, r.get<int64_t>(i, 1), *why, sub->lost, sub->recomputed_differs);
      tx.commit();
      say("iteration " + std::to_string(iteration_) + (sub->lost ? ": dropped" : ": rejected") + " submission " +
          std::to_string(id) + " (unit " + std::to_string(r.get<int64_t>(i, 1)) + ", worker " + sub->worker +
          "): " + *why + "; the unit is served again");
      continue;
    }
    pending_[id] = std::move(sub);
  }
}

// ------------------------------------------------------------------ the loop

bool Coordinator::wait_until_ready(double* wait_seconds, bool* finished) {
  const auto t0 = Clock::now();
  auto last_report = t0;
  *finished = false;
  pg::Params p;
  p.add(iteration_);
  // The robust rules' quorum (RunSettings::quorum; docs/security.md): once
  // `quorum` submissions are in, the others get as long again as these took
  // (at least 0.5 s), then the update closes without them and close_iteration
  // serves their units again in the next. The exact mean waits for every unit
  // (distributed = local); fewer than 3 would leave the trimmed rules nothing
  // to trim.
  const int64_t U = s_.num_workunits_per_update;
  const int64_t quorum = *parse_rule(s_.aggregation) == AggregationRule::Mean || s_.quorum >= 1
                             ? U
                             : std::min<int64_t>(U, std::max<int64_t>(3, (int64_t)std::ceil(s_.quorum * U - 1e-9)));
  std::optional<Clock::time_point> quorum_at;
  double grace = 0;
  for (;;) {
    if (o_.stop && o_.stop->load()) return false;
    test_pause("waiting", iteration_);
    reap();
    refresh_pending();
    pg::Result r = c_->exec(
        "SELECT count(*) FILTER (WHERE state IN ('available', 'claimed')), "
        "count(*) FILTER (WHERE state = 'claimed'), "
        "count(*) FILTER (WHERE state = 'claimed' AND visible_at < gannf.now()), "
        "count(*) FILTER (WHERE state = 'submitted') "
        "FROM gannf.work_units WHERE iteration = $1",
        p);
    const int64_t open = r.get<int64_t>(0, 0), claimed = r.get<int64_t>(0, 1), expired = r.get<int64_t>(0, 2),
                  submitted = r.get<int64_t>(0, 3);
    int64_t valid = 0;  // units: a summed submission brings several
  for (const auto& [id, sub] : pending_) valid += (int64_t)sub->members.size();
    *wait_seconds = since(t0);
    // gannf-coord stop | pause | resume from another terminal (sql/0011).
    const std::string status = c_->exec("SELECT status FROM gannf.training_state").get<std::string>(0, 0);
    if (status == "stopped") {
      stop_command_ = true;
      return false;
    }
    const bool paused = status == "paused";
    if (paused != said_paused_)
      say(paused ? "the run is paused (gannf-coord pause); no update until 'gannf-coord resume'"
                 : "the run goes on (resumed)");
    said_paused_ = paused;
    if (!paused && (valid >= s_.num_workunits_per_update || (open == 0 && valid > 0))) return true;
    // Units held far longer than the class's others take are taken off
    // their holders and served to other logins (sql/0022, 0023): one login
    // holding more units than the quorum can do without no longer holds the
    // update for its hold bound. The pace is the update's once a unit of it
    // is in, the last update's before that, the coordinator's own before any
    // unit of the run is in (sql/0031).
    if (!paused && claimed > 0) {
      pg::Result late = c_->exec("SELECT login, units, bound_seconds FROM gannf.take_off_late_logins($1)", p);
      if (late.rows() > 0) {
        std::string who;
        int64_t units = 0;
        for (int i = 0; i < late.rows(); ++i) {
          units += late.get<int64_t>(i, 1);
          who += (i ? ", " : "") + late.get<std::string>(i, 0) + " (" +
                 std::to_string(late.get<int64_t>(i, 1)) + ", allowed " + fmt("%.1f", late.get<double>(i, 2)) + " s)";
        }
        // Before any unit of the run is in, the class has no pace: the
        // coordinator's own stands in (sql/0031).
        const bool first = !c_->exec("SELECT gannf.run_has_pace($1)", p).get<bool>(0, 0);
        say("iteration " + std::to_string(iteration_) + ": " + std::to_string(units) +
            " unit(s) late, taken off " + who + " and served to other logins (held over hold_factor x " +
            (first ? "first_pace_slack x this machine's own CPU time for such a unit -- no unit of the run is in "
                     "yet --, at least first_late_floor"
                   : "what the class's machines take for such a unit or claim, at least late_floor") +
            "; trust_settings)");
      }
    }
    if (valid >= quorum && !quorum_at) {
      quorum_at = Clock::now();
      grace = std::max(0.5, since(t0));
    }
    if (!paused && quorum_at && since(*quorum_at) >= grace) {
      say("iteration " + std::to_string(iteration_) + ": closing with " + std::to_string(valid) + " of " +
          std::to_string(U) + " units (the quorum); " + std::to_string(open) +
          " unit(s) still open are served again in the next update");
      return true;
    }
    if (open == 0 && submitted == 0) {  // no units, nothing submitted: every epoch is done
      *finished = true;
      return false;
    }
    // (open == 0 with units submitted but not fetched: they arrived after
    // refresh_pending(); their notifications end the wait below at once.)
    // A lease that passed makes its unit claimable, but nothing announces
    // that: nudge idle workers (they LISTEN on gannf_work).
    if (expired > 0) c_->notify(channel::kWork, std::to_string(iteration_));
    if (since(last_report) >= o_.idle_report_seconds) {
      const int64_t active = c_->exec("SELECT count(*) FROM gannf.present_workers").get<int64_t>(0, 0);
      say("iteration " + std::to_string(iteration_) + ": waiting " + fmt("%.0f", since(t0)) + " s for workers: " +
          std::to_string(valid) + " of " + std::to_string(s_.num_workunits_per_update) + " submissions in, " +
          std::to_string(open) + " units open (" + std::to_string(claimed) + " claimed, " +
          std::to_string(expired) + " with expired leases), " + std::to_string(active) + " workers active");
      last_report = Clock::now();
    }
    // LISTEN with a timeout: a submission wakes us at once; the timeout only
    // re-checks leases, and slices of 250 ms let a signal stop us quickly.
    auto until = Clock::now() + std::chrono::seconds(1);
    if (quorum_at)
      until = std::min(until, *quorum_at + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace)));
    bool woke = false;
    while (!woke && Clock::now() < until && !(o_.stop && o_.stop->load()))
      woke = c_->wait_notification(std::chrono::milliseconds(250)).has_value();
    // Any login may NOTIFY this channel: a wake-up is only a hint to read
    // the tables, at most every 20 ms, so a flood cannot keep this loop busy.
    if (woke) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    while (woke && c_->wait_notification(std::chrono::milliseconds(0))) {
    }
  }
}

// The iteration's pending submissions (plain ones and summed groups'
// leaders), fetched and validated one by one where not yet; those that fail
// are rejected here.
std::vector<Coordinator::Submission*> Coordinator::pending_of(int64_t k) {
  pg::Connection& c = *c_;
  pg::Params pk;
  pk.add(k);
  pg::Result ids = c.exec("SELECT id, work_unit_id FROM gannf.submissions WHERE iteration = $1 AND state = 'pending' "
                          "AND (summed_with IS NULL OR summed_with = id)",
                          pk);
  std::vector<Submission*> used;
  for (int i = 0; i < ids.rows(); ++i) {
    const int64_t id = ids.get<int64_t>(i, 0);
    auto it = pending_.find(id);
    if (it == pending_.end()) {  // arrived after the last look
      auto sub = std::make_unique<Submission>();
      if (auto why = fetch_and_validate(id, sub.get())) {
        reject(id, ids.get<int64_t>(i, 1), *why, sub->lost, sub->recomputed_differs);
        say("iteration " + std::to_string(k) + (sub->lost ? ": dropped" : ": rejected") + " submission " +
            std::to_string(id) + " (worker " + sub->worker + "): " + *why);
        continue;
      }
      it = pending_.emplace(id, std::move(sub)).first;
    }
    used.push_back(it->second.get());
  }
  return used;
}

// Rejects used[j] where why[j] is set (each with its reason, said with
// `context`), forgets them, and keeps the rest in used.
void Coordinator::drop(int64_t k, std::vector<Submission*>& used, const std::vector<std::string>& why,
                       const std::string& context) {
  std::vector<Submission*> kept;
  for (size_t j = 0; j < used.size(); ++j) {
    if (why[j].empty()) {
      kept.push_back(used[j]);
      continue;
    }
    const Submission& s = *used[j];
    reject(s.id, s.unit, why[j], false, s.recomputed_differs, /*defer=*/true);
    say("iteration " + std::to_string(k) + ": rejected submission " + std::to_string(s.id) + " (worker " + s.worker +
        ")" + context + ": " + why[j]);
    pending_.erase(s.id);
  }
  used.swap(kept);
}

// The norm check's first updates: with fewer than min_reference past updates
// and fewer than min_reference logins in this one there is no majority to
// judge by (one hostile login beside one honest one, at the start of a run,
// was clipped and used). Then every submission is recomputed, when the
// coordinator has the data: at most min_reference updates' worth of work,
// and exact.
void Coordinator::check_first_updates(int64_t k, std::vector<Submission*>& used) {
  if (s_.norm_ratio <= 0 || !spot_) return;
  std::set<std::string> logins;
  for (const Submission* s : used) logins.insert(s->worker.substr(0, s->worker.find('/')));
  const size_t need = NormCheck{}.min_reference;
  if (norm_history_[0].size() >= need || logins.size() >= need) return;
  std::vector<std::string> why(used.size());
  for (size_t j = 0; j < used.size(); ++j) {
    Submission& s = *used[j];
    if (s.spot_checked) continue;
    why[j] = spot_check(s).value_or("");
  }
  drop(k, used, why, ", checked because the run has no norm history yet");
}

// Statistical validation across the update (validate.h): per-tensor
// gradient norms against recent accepted ones and this update's.
void Coordinator::check_norms_across(int64_t k, std::vector<Submission*>& used) {
  if (s_.norm_ratio <= 0 || used.empty()) return;
  NormCheck nc;
  nc.max_ratio = s_.norm_ratio;
  std::vector<std::string> why(used.size());
  for (int k2 = 0; k2 < 2; ++k2) {
    const Net<float>& net = k2 ? *D_ : *G_;
    std::vector<std::vector<double>> norms;
    std::vector<std::string> logins;
    for (const Submission* s : used) {
      norms.push_back(s->norms[k2]);
      logins.push_back(s->worker.substr(0, s->worker.find('/')));  // "login/name"
    }
    const auto verdict = check_norms(norms, norm_history_[k2], nc, net.params_layout(), &logins);
    for (size_t j = 0; j < used.size(); ++j)
      if (verdict[j] && why[j].empty()) why[j] = std::string(kNetName[k2]) + ": " + *verdict[j];
  }
  // The norm check is statistical: an honest class's gradients may outgrow
  // their recent median (the discriminator winning), and every rejection is
  // a strike. Where the coordinator can recompute, a flagged submission gets
  // a second opinion first: the same numbers again, and it is honest and
  // used (the rule still clips it); other numbers, and it is rejected, the
  // recomputation's verdict beside the norm's.
  if (spot_)
    for (size_t j = 0; j < used.size(); ++j) {
      if (why[j].empty()) continue;
      Submission& s = *used[j];
      // Passed a spot check already (in used): honest.
      const std::optional<std::string> again = s.spot_checked ? std::nullopt : spot_check(s);
      if (again) {
        why[j] += "; recomputed, it differs (" + *again + ")";
        continue;
      }
      say("iteration " + std::to_string(k) + ": submission " + std::to_string(s.id) + " (worker " + s.worker +
          ") failed the norm check (" + why[j] + ") but its recomputation agrees: used");
      why[j].clear();
    }
  drop(k, used, why, "");
}

// The update (aggregate.h): the used submissions aggregated into the nets'
// gradients, one Adam step, the BN statistics folded; `units` gets what was
// aggregated.
AggregateResult Coordinator::apply_update(int64_t k, const std::vector<Submission*>& used,
                                          std::vector<UnitContribution>* units_out) {
  std::vector<UnitContribution>& units = *units_out;
  // A summed submission enters as its units, each with its own weight, BN
  // statistics and losses and the submission's gradient (the mean over all
  // of them): k votes, as k submissions of that gradient would be, so that it
  // neither weighs as one unit nor escapes trimming (docs/scaling.md).
  std::vector<size_t> unit_of;  // units[] index of each used[]'s first member
  for (const Submission* s : used) {
    unit_of.push_back(units.size());
    std::vector<SummedUnit> parts;
    for (const Submission::Member& m : s->members) parts.push_back({m.id, m.sample_count, m.micro_batch, m.losses});
    const std::span<const float> grad[2] = {s->grad[0], s->grad[1]}, bn[2] = {s->bn[0], s->bn[1]};
    const size_t stats[2] = {G_->num_stats(), D_->num_stats()};
    append_summed(units, parts, grad, bn, stats);  // fetch_and_validate checked the lengths
  }
  const AggregationRule rule = *parse_rule(s_.aggregation);
  RobustParams rp;
  rp.clip_factor = s_.clip_factor;
  rp.trim = s_.trim;
  for (int k2 = 0; k2 < 2; ++k2)
    if (norm_history_[k2].size() >= NormCheck{}.min_reference) rp.reference_norm[k2] = norm_history_[k2].median_total();
  const AggregateResult agg = aggregate(units, rule, rp);
  for (int k2 = 0; k2 < 2; ++k2) {
    Net<float>& net = k2 ? *D_ : *G_;
    be_->upload(net.grads(), agg.grad[k2].data(), agg.grad[k2].size());
    for (size_t j = 0; j < used.size(); ++j)
      if (agg.scale[k2][unit_of[j]] < 1)
        say("iteration " + std::to_string(k) + ": clipped " + kNetName[k2] + "'s gradient of submission " +
            std::to_string(used[j]->id) + " (worker " + used[j]->worker + ") by " +
            fmt("%.3g", agg.scale[k2][unit_of[j]]));
  }
  adamD_->step(*D_);
  adamG_->step(*G_);
  // The coordinator's back end is the CPU one: the nets' statistics are host
  // memory. The exact mean folds as a local step does; the robust rules fold
  // once per unit, so that a worker's micro-batch cannot weigh in.
  auto target = [](Net<float>& n) {
    return BnTarget{n.stats(), &n.num_batches_tracked, &n.layers(), n.num_stats(), n.bn_momentum};
  };
  fold_bn(target(*G_), target(*D_), units, rule == AggregationRule::Mean);
  return agg;
}

IterationReport Coordinator::close_iteration() {
  const auto t0 = Clock::now();
  pg::Connection& c = *c_;
  IterationReport rep;
  const int64_t k = iteration_;
  rep.iteration = k;
  pg::Params pk;
  pk.add(k);

  pg::Transaction tx(c);
  // Lock order of sql/0002: the state row first. submit() takes it FOR
  // SHARE, so from here until COMMIT no submission can slip in; the ones
  // that wait see iteration k+1 afterwards and are refused as
  // iteration_closed.
  // A worker session that keeps an accepted submit's transaction open holds
  // the row FOR SHARE: wait for it a bounded time, then run() reaps and retries.
  c.exec("SET LOCAL lock_timeout = '10s'");
  pg::Result ts = c.exec("SELECT iteration FROM gannf.training_state FOR UPDATE");
  test_pause("locked", k);
  if (ts.rows() != 1 || ts.get<int64_t>(0, 0) != k)
    throw std::runtime_error("the run moved past iteration " + std::to_string(k) +
                             " behind this coordinator's back (a second coordinator, or init?)");
  // A submission that slipped past its login's quarantine -- strike()
  // waits at most 2 s for a session of the login that keeps a transaction
  // open (sql/0029) -- is refused here, where no submit is in flight.
  c.exec("SELECT gannf.drop_login_work(t.login, 'quarantined') FROM gannf.login_trust t "
         "WHERE t.quarantined_at IS NOT NULL AND EXISTS (SELECT 1 FROM gannf.submissions s "
         "JOIN gannf.workers w ON w.id = s.worker_id WHERE w.login = t.login AND s.state = 'pending')");
  std::vector<Submission*> used = pending_of(k);
  // Local training's order: by position in the epoch's permutation.
  std::sort(used.begin(), used.end(), [](const Submission* a, const Submission* b) {
    return std::tie(a->epoch, a->first_index, a->id) < std::tie(b->epoch, b->first_index, b->id);
  });
  strikes_due_.clear();  // a retried update judges again
  check_first_updates(k, used);
  check_norms_across(k, used);
  // A failed recomputation quarantined its login at once (strike() rejected
  // its pending work): its other submissions of this update go too. Before,
  // they stayed in `used`, were aggregated and marked 'used' although the
  // log said its work was refused.
  refuse_quarantined(k, used);
  if (used.empty()) {
    settle_strikes(k, {});
    tx.commit();  // rejections only
    rep.used = 0;
    return rep;
  }
  std::vector<UnitContribution> units;
  const AggregateResult agg = apply_update(k, used, &units);
  rep.aggregate_seconds = since(t0);
  test_pause("updated", k);
  rep.losses = agg.losses;
  const int64_t total = agg.samples;

  // Bookkeeping, in the lock order: units, then submissions.
  std::vector<int64_t> sub_ids, unit_ids;
  for (const Submission* s : used)
    for (const Submission::Member& m : s->members) {
      sub_ids.push_back(m.id);
      unit_ids.push_back(m.unit);
    }
  c.exec("UPDATE gannf.work_units SET state = 'done' WHERE id IN (" + join_ids(unit_ids) + ")");
  c.exec("UPDATE gannf.submissions SET state = 'used' WHERE id IN (" + join_ids(sub_ids) + ")");
  // Forgivable strikes taken back by the logins' used work (sql/0024), and
  // the update's own forgivable strikes, in submission order.
  settle_strikes(k, sub_ids);
  // Units not done are served again against the new weights, not to the
  // logins they were taken off while another may have them (sql/0021); their
  // holders learn it from heartbeat (NULL) or submit (iteration_closed).
  pg::Params pmove;
  pmove.add(k);
  const int64_t carried = c.exec("SELECT gannf.carry_over($1)", pmove).get<int64_t>(0, 0);
  int64_t epoch = epoch_, position = position_;
  const int made = create_units(c, s_, k + 1, std::max<int>(0, s_.open_units() - (int)carried), &epoch, &position);
  const bool finished = carried + made == 0;

  const auto t_publish = Clock::now();
  // The exact delta from the weights of k, for the workers that hold them
  // (published_ is what this coordinator published or loaded for k).
  std::vector<float> published[2];
  for (int n = 0; n < 2; ++n)
    published[n] =
        insert_weights(c, k + 1, n, n ? *D_ : *G_, published_iteration_ == k ? &published_[n] : nullptr, k);
  insert_optimizer(c, k + 1, 0, *adamG_, *be_);
  insert_optimizer(c, k + 1, 1, *adamD_, *be_);
  rep.publish_seconds = since(t_publish);
  test_pause("published", k);
  // Keep weights k (a worker may still be reading them) and k+1; the blobs
  // of submissions that are settled are no longer needed (the rows stay, for
  // the leaderboard and the rejection reasons).
  c.exec("DELETE FROM gannf.weights WHERE iteration < $1", pk);
  // Each blob's submission by its key: a join could be planned as a scan of
  // every submission of the run (sql/0016).
  c.exec("DELETE FROM gannf.submission_blobs b WHERE (SELECT s.iteration <= $1 AND s.state <> 'pending' "
         "FROM gannf.submissions s WHERE s.id = b.submission_id)",
         pk);

  rep.used = (int)units.size();  // units: a summed submission counts each of its own
  rep.rejected = rejected_;
  rep.samples = total;
  rep.epoch = used.back()->members.back().epoch;  // the epoch of the update's last image, as gannf-train counts it
  // Seen in the last 90 s and not left (sql/0011): not the workers that exited.
  rep.active_workers = (int)c.exec("SELECT count(*) FROM gannf.present_workers").get<int64_t>(0, 0);
  rep.epoch_progress = epoch_progress(rep.epoch);
  rep.seconds = since(last_commit_);
  rep.update_seconds = since(t0);
  rep.images_per_second = rep.seconds > 0 ? total / rep.seconds : 0;

  pg::Params ph;
  auto opt = [&](double v) { return rep.losses.samples > 0 ? std::optional<float>((float)v) : std::nullopt; };
  ph.add(k).add((int32_t)rep.epoch).add(opt(rep.losses.d_loss)).add(opt(rep.losses.g_loss)).add(opt(rep.losses.d_real))
      .add(opt(rep.losses.d_fake)).add(opt(rep.losses.d_acc)).add((int32_t)total).add((int32_t)rep.used)
      .add((int32_t)rep.rejected).add((int32_t)rep.active_workers).add((float)rep.images_per_second)
      .add((float)rep.seconds).add((float)rep.update_seconds);
  c.exec("INSERT INTO gannf.loss_history (iteration, epoch, loss_d, loss_g, d_real, d_fake, d_accuracy, samples, "
         "submissions_used, submissions_rejected, active_workers, images_per_second, seconds, update_seconds) "
         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
         ph);
  // The last update of a bounded run stops the run in the same commit, so no
  // worker claims a unit of an iteration that will never close; a pause or
  // stop from another terminal meanwhile stays.
  const bool bound = o_.max_iterations > 0 && k + 1 >= o_.max_iterations;
  pg::Params pst;
  pst.add(k + 1).add((int32_t)epoch).add(position).add(finished ? "finished" : bound ? "stopped" : "running");
  c.exec("UPDATE gannf.training_state SET iteration = $1, epoch = $2, position = $3, "
         "status = CASE WHEN $4 = 'running' AND status IN ('paused', 'stopped') THEN status ELSE $4 END, "
         "updated_at = now()",
         pst);
  test_pause("commit", k);
  const auto t_commit = Clock::now();
  tx.commit();  // synchronous: weights and optimizer state are never lost
  rep.commit_seconds = since(t_commit);
  for (int n = 0; n < 2; ++n) published_[n] = std::move(published[n]);
  published_iteration_ = k + 1;
  if (test_lose_commit_reply(k))
    throw pg::Error("test hook: the reply to COMMIT was lost", "08006", "", "", "", true);

  // An update enters the norm history only if it was judged: against a
  // history, by three or more logins, or with every unit recomputed
  // (check_first_updates, when spot checks are on). One that nothing could
  // judge — a run without spot checks whose first update a single login held
  // entirely — would otherwise be the whole reference of the next update
  // (Summed.SummedGradientTimes1e4FailsTheNormCheck failed so, 1 run in 15
  // under load: the hostile login's ×1e4 passed with three logins voting).
  std::set<std::string> voters;
  for (const Submission* s : used) voters.insert(s->worker.substr(0, s->worker.find('/')));
  const size_t need = NormCheck{}.min_reference;
  const bool judged = norm_history_[0].size() >= need || voters.size() >= need || spot_ != nullptr;
  for (int k2 = 0; k2 < 2 && judged; ++k2) {
    std::vector<std::vector<double>> norms;
    std::vector<double> totals;
    std::vector<std::string> logins;
    for (const Submission* s : used) {
      norms.push_back(s->norms[k2]);
      totals.push_back(s->total_norm[k2]);
      logins.push_back(s->worker.substr(0, s->worker.find('/')));  // "login/name"
    }
    norm_history_[k2].add_update(norms, totals, logins);
  }
  iteration_ = k + 1;
  epoch_ = epoch;
  position_ = position;
  finished_ = finished;
  pending_.clear();
  rejected_ = 0;
  last_commit_ = Clock::now();
  rep.update_seconds = since(t0);
  return rep;
}

// What the commit deleted (weights and Adam state two iterations old, used
// gradients) becomes free space for the next inserts, so the tables stay at a
// few iterations' size however long the run (sql/0010). Outside any
// transaction; SKIP_LOCKED: a table that someone locks is done next time.
void Coordinator::vacuum_storage() {
  c_->exec_script(
      "VACUUM (SKIP_LOCKED) gannf.weights, gannf.weights_delta, gannf.optimizer_state, gannf.submission_blobs");
}

// Workers that report what they measured (gannf-worker reports after each
// accepted submission) get their share of the next update's units; those
// that do not are counted with one. The counts are advice: claim() caps what
// a login holds whatever it asks, so this is not part of the update's
// transaction, and an error here (other than a lost connection, which the
// run loop handles) is said once and training goes on without new counts.
void Coordinator::assign_unit_counts() {
  try {
    pg::Params p;
    p.add(iteration_);
    pg::Result r = c_->exec(
        "SELECT w.id, w.timing_units, w.timing_compute_seconds, w.timing_upload_seconds, "
        "w.timing_download_seconds, coalesce(h.units, 1), "
        // Every unit of the update, the ones already claimed since the commit too.
        "(SELECT count(*) FROM gannf.work_units u "
        " WHERE u.iteration = $1 AND u.state IN ('available', 'claimed', 'submitted')), "
        "(SELECT least(t.max_held_units, coalesce(t.max_units_per_iteration, 64), 64) FROM gannf.trust_settings t) "
        "FROM gannf.present_workers pw JOIN gannf.workers w ON w.id = pw.id "
        "LEFT JOIN gannf.unit_hints h ON h.worker_id = w.id ORDER BY w.id",
        p);
    if (r.rows() == 0) return;
    std::vector<WorkerPace> pace(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
      const auto units = r.opt<int32_t>(i, 1);
      if (!units || *units < 1) continue;
      pace[i].measured = true;
      pace[i].compute_per_unit = r.opt<float>(i, 2).value_or(0) / *units;
      pace[i].upload_seconds = r.opt<float>(i, 3).value_or(0);
      pace[i].download_seconds = r.opt<float>(i, 4).value_or(0);
    }
    const int open = (int)r.get<int64_t>(0, 6);
    const int cap = (int)r.opt<int32_t>(0, 7).value_or(4);
    const std::vector<int> counts = choose_unit_counts(pace, open, cap);
    std::vector<int64_t> ids;
    std::vector<int> changed;
    for (int i = 0; i < r.rows(); ++i)
      if (r.get<int32_t>(i, 5) != counts[i]) {
        ids.push_back(r.get<int64_t>(i, 0));
        changed.push_back(counts[i]);
      }
    if (ids.empty()) return;
    std::string values;
    for (size_t i = 0; i < ids.size(); ++i)
      values += (i ? ", (" : "(") + std::to_string(ids[i]) + ", " + std::to_string(changed[i]) + ")";
    // A table only the coordinator writes (sql/0027): no worker's call locks
    // a row this waits for, however busy the worker.
    c_->exec("INSERT INTO gannf.unit_hints (worker_id, units) VALUES " + values +
             " ON CONFLICT (worker_id) DO UPDATE SET units = EXCLUDED.units");
  } catch (const pg::Error& e) {
    if (e.retry_later()) throw;
    if (!said_unit_counts_error_) say(std::string("could not set the workers' units per claim: ") + e.what());
    said_unit_counts_error_ = true;
  }
}

double Coordinator::epoch_progress(int64_t epoch) {
  pg::Params pe;
  pe.add(epoch);
  // One row kept by triggers (sql/0016), not a sum over the epoch's units.
  const int64_t done = c_->exec("SELECT coalesce((SELECT samples FROM gannf.epoch_done WHERE epoch = $1), 0)::bigint",
                                pe).get<int64_t>(0, 0);
  return (double)done / (double)s_.dataset_size;
}

// The reports of updates that committed without this process seeing the
// reply (the connection dropped during COMMIT): read back from loss_history,
// so that every committed update gets its status line, losses row and
// checkpoint exactly once.
std::vector<IterationReport> Coordinator::committed_reports(int64_t from, int64_t to) {
  pg::Params p;
  p.add(from).add(to);
  pg::Result r = c_->exec(
      "SELECT iteration, epoch, loss_d, loss_g, d_real, d_fake, d_accuracy, samples, submissions_used, "
      "submissions_rejected, active_workers, images_per_second, seconds, update_seconds "
      "FROM gannf.loss_history WHERE iteration >= $1 AND iteration < $2 ORDER BY iteration",
      p);
  std::vector<IterationReport> out(r.rows());
  for (int i = 0; i < r.rows(); ++i) {
    IterationReport& rep = out[i];
    rep.iteration = r.get<int64_t>(i, 0);
    rep.epoch = r.get<int32_t>(i, 1);
    rep.samples = r.get<int32_t>(i, 7);
    if (!r.is_null(i, 2))
      rep.losses = StepStats{r.get<float>(i, 2), r.get<float>(i, 3), r.get<float>(i, 4), r.get<float>(i, 5),
                             r.get<float>(i, 6), rep.samples};
    rep.used = r.get<int32_t>(i, 8);
    rep.rejected = r.get<int32_t>(i, 9);
    rep.active_workers = r.get<int32_t>(i, 10);
    rep.images_per_second = r.get<float>(i, 11);
    rep.seconds = r.get<float>(i, 12);
    rep.update_seconds = r.get<float>(i, 13);
    rep.epoch_progress = epoch_progress(rep.epoch);
    rep.recovered = true;
  }
  return out;
}

// The coordinator's own time per image of a unit (cpu_seconds_per_image),
// measured once per process and written at every start: until a unit of the
// run is in, the first update's units are judged by it (sql/0031).
void Coordinator::record_pace() {
  if (pace_seconds_ <= 0) pace_seconds_ = cpu_seconds_per_image(s_, *G_, *D_);
  pg::Params p;
  p.add(pace_seconds_).add(iteration_).add((int64_t)s_.images_per_work_unit);
  pg::Result r = c_->exec(
      "WITH w AS (UPDATE gannf.training_state SET coordinator_pace = make_interval(secs => $1) RETURNING 1) "
      "SELECT NOT gannf.run_has_pace($2), "
      "extract(epoch FROM greatest(t.late_floor, t.first_late_floor, "
      "($3::float8 * t.hold_factor * t.first_pace_slack) * make_interval(secs => $1)))::float8, "
      "(t.hold_factor * t.first_pace_slack)::float8 "
      "FROM gannf.trust_settings t CROSS JOIN w",
      p);
  std::string line = "this machine's CPU computes an image of a unit (G and D, forward and backward) in " +
                     fmt("%.2f", pace_seconds_ * 1e3) + " ms";
  if (r.rows() > 0 && r.get<bool>(0, 0))
    line += "; until a unit of the run is in, a unit of " + std::to_string(s_.images_per_work_unit) +
            " images held " + fmt("%.0f", r.get<double>(0, 1)) + " s (" + fmt("%.0f", r.get<double>(0, 2)) +
            " x that, at least first_late_floor; trust_settings) is taken off its holder as late";
  say(line);
}

Coordinator::Outcome Coordinator::run(const std::function<void(const IterationReport&)>& on_update) {
  last_commit_ = Clock::now();
  double backoff = 1;
  bool need_reload = false, started = false;
  auto last_unwritable = Clock::now() - std::chrono::hours(1);
  for (;;) {
    try {
      if (need_reload) {
        const int64_t seen = iteration_;
        connect();
        load_state();
        need_reload = false;
        started = false;
        backoff = 1;
        say("reconnected to " + c_->describe() + "; resuming at iteration " + std::to_string(iteration_));
        // The iteration number settles a COMMIT whose reply was lost: it
        // moved on iff the update committed.
        if (iteration_ > seen)
          for (IterationReport& rep : committed_reports(seen, iteration_)) {
            say("update " + std::to_string(rep.iteration) + " had committed before the connection dropped");
            if (on_update) on_update(rep);
          }
      }
      if (o_.stop && o_.stop->load()) return Outcome::Stopped;
      if (stop_command_) return Outcome::StopCommand;
      pg::Params p;
      p.add(iteration_);
      if (finished_ || c_->exec("SELECT count(*) FROM gannf.work_units WHERE iteration = $1 "
                                "AND state IN ('available', 'claimed', 'submitted')",
                                p).get<int64_t>(0, 0) == 0) {
        set_status("finished");
        return Outcome::Finished;
      }
      if (o_.max_iterations > 0 && iteration_ >= o_.max_iterations) {
        set_status("stopped");
        return Outcome::Bound;
      }
      if (!started) {
        set_status("running");
        record_pace();
        started = true;
      }
      double wait = 0;
      bool finished = false;
      if (!wait_until_ready(&wait, &finished)) {
        if (finished) finished_ = true;
        continue;
      }
      IterationReport rep;
      try {
        rep = close_iteration();
      } catch (...) {
        // The transaction rolled back; the nets and Adam state in memory may
        // hold half an update. The database has the truth.
        need_reload = true;
        throw;
      }
      if (rep.used == 0) continue;
      test_pause("committed", rep.iteration);
      rep.wait_seconds = wait;
      if (on_update) on_update(rep);
      test_pause("vacuum", rep.iteration);
      vacuum_storage();
      // The next update's shares; none after the last (its workers are
      // already leaving, and a share computed without them would be wrong).
      if (!(o_.max_iterations > 0 && iteration_ >= o_.max_iterations)) assign_unit_counts();
    } catch (const pg::Error& e) {
      if (e.sqlstate() == "55P03") {  // lock_timeout: a stuck worker session holds what a statement needs
        say(std::string("waited too long for a lock (") + e.what() +
            "); ending stuck worker sessions and trying again");
        last_reap_ = {};
        try {
          reap();
        } catch (const pg::Error& again) {
          if (again.sqlstate() != "55P03") throw;  // still held: the next pass of the loop reaps again
        }
        continue;  // need_reload is set where it matters: the update is computed again from the database
      }
      if (e.sqlstate() == "40P01") {  // chosen to break a deadlock, whose other side is a worker's transaction
        say(std::string("a deadlock with another session ended this coordinator's transaction (") + e.message() +
            "); trying again");
        end_deadlocked_sessions(e.detail());
        continue;  // need_reload is set where it matters: the update is computed again from the database
      }
      if (!e.retry_later()) throw;
      if (e.connection_lost()) {
        say(std::string("lost the database connection: ") + e.message() + "; retrying in " + fmt("%.0f", backoff) +
            " s");
      } else if (since(last_unwritable) >= 60) {  // one line a minute while it lasts
        say(std::string("the database server refuses writes: ") + e.message() +
            "; waiting until it takes them again (nothing is lost)");
        last_unwritable = Clock::now();
      }
      need_reload = true;
      c_.reset();
      for (double t = 0; t < backoff && !(o_.stop && o_.stop->load()); t += 0.25)
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
      backoff = std::min(backoff * 2, e.connection_lost() ? 30.0 : 10.0);
    }
  }
}

}  // namespace gannf::cluster
