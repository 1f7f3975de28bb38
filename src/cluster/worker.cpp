#include "worker.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "blob.h"
#include "bn_recorder.h"
#include "dataset.h"
#include "dcgan.h"
#include "format.h"
#include "packed_dataset.h"
#include "pg.h"
#include "protocol.h"
#include "rng.h"
#include "run_settings.h"
#include "self_check.h"
#include "spot_check.h"
#include "worker_sql.h"

namespace gannf::cluster {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string hex64(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "%016llx", (unsigned long long)v);
  return b;
}

std::string host_name() {
  char b[256] = {0};
  if (gethostname(b, sizeof b - 1) != 0 || !b[0]) return "worker";
  return b;
}

// Why a unit was taken off this login, for its student (sql/0023's
// monitor_logins: the reason of the login's last unit taken off, if that
// was within the last `within_s` seconds); "" when nothing was, the server
// predates 0023, or the row cannot be read. The connection may be lost:
// the caller goes on without the reason.
std::string why_taken(pg::Connection& c, double within_s) {
  try {
    pg::Params p;
    p.add(within_s + 2);  // the database's clock and ours
    pg::Result r = c.exec(worker_sql::kWhyTaken, p);
    if (r.rows() == 0) return "";
    const std::string why = r.get<std::string>(0, 0);
    const std::optional<double> bound = r.opt<double>(0, 1);
    std::string said;
    if (why == "late")
      said = "late: held over " + fmt("%.1f", bound.value_or(0)) +
             " s, several times what the class's other machines take for its images, so a faster machine computes "
             "it. This machine is slower than most of the class's just now; each unit it finishes in time still "
             "counts";
    else if (why == "hold bound")
      said = "held past the hold bound (" + fmt("%.0f", bound.value_or(0)) + " s allowed for its images)";
    else if (why == "lease")
      said = "its lease passed without a heartbeat (the machine slept, or the network was away) and another worker "
             "took it over";
    else if (why == "closed")
      said = "its update closed at the quorum without it; it is served again in the next update";
    else
      return "";
    if (r.get<bool>(0, 2))
      said += "; this login holds one unit at a time until a result of it is accepted, and lets the class's other "
              "machines claim first";
    return said;
  } catch (const pg::Error&) {
    return "";
  }
}

// Everything that depends on the run: rebuilt when the run changes.
struct Model {
  std::string run_id;
  RunSettings s;
  std::unique_ptr<data::Dataset> ds;
  std::unique_ptr<Net<float>> G, D;
  std::unique_ptr<GanStep<float>> gan;
  int64_t weights_iteration = -1;
  int64_t perm_epoch = -1;
  std::vector<uint32_t> perm;
  MicroBatchBuffers buf;
};

class WorkerLoop {
 public:
  explicit WorkerLoop(const WorkerOptions& o) : o_(o) {
    if (o_.batch_size < 2) throw std::invalid_argument("--batch-size must be at least 2 (batch norm needs two images)");
    if (!(o_.poll_interval > 0)) throw std::invalid_argument("poll interval must be positive");
    if (!(o_.heartbeat_interval > 0)) throw std::invalid_argument("heartbeat interval must be positive");
    if (o_.name.empty()) o_.name = host_name();
    const auto chars = std::count_if(o_.name.begin(), o_.name.end(), [](unsigned char ch) { return (ch & 0xC0) != 0x80; });
    if (chars > 64 || std::any_of(o_.name.begin(), o_.name.end(), [](unsigned char ch) { return ch < 32 || ch == 127; }))
      throw std::invalid_argument("--name must be 1 to 64 printable characters (it names this machine in the run's "
                                  "list of workers)");
    if (o_.threads > 0) omp_set_num_threads(o_.threads);
    auto be = make_backend<float>(o_.backend);
    // A GPU's gradients are checked against the CPU's once, before any is sent.
    if (const std::string line = require_self_check(*be); !line.empty()) say(line);
    be_ = std::make_unique<RecordingBackend<float>>(std::move(be));
    o_.backend = be_->name();  // "auto" resolved: what the coordinator records
  }

  ~WorkerLoop() {
    if (upload_thread_.joinable()) upload_thread_.join();
  }

  int run();

 private:
  enum class UnitEnd { Submitted, Dropped, Stopped };

  bool stopping() const { return o_.stop && o_.stop->load(); }
  void say(const std::string& l) const {
    std::lock_guard<std::mutex> lock(log_mutex_);  // the upload thread says things too
    if (o_.log) o_.log(l);
  }
  void connect();
  void drop_connection() { c_.reset(); }
  // A read-only or full server: one line a minute while it lasts, from
  // whichever thread meets it first.
  void say_unwritable(const pg::Error& e) {
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
    int64_t last = last_unwritable_s_.load();
    if (now - last >= 60 && last_unwritable_s_.compare_exchange_strong(last, now))
      say(std::string("the database server refuses writes: ") + e.what() +
          "; waiting until it takes them again (the unit in hand is kept)");
  }
  void sleep_backoff();
  bool ensure_run();
  void build_model(const std::string& run_id, const RunSettings& s);
  double ensure_weights(int64_t iteration);
  UnitEnd process(std::vector<ClaimedUnit> units);
  void idle_wait();
  // A finished unit's submit runs on a thread and a connection of its own
  // while the loop claims and computes the next unit, so that the ~25 MB
  // upload is off the critical path. One upload at a time.
  struct Upload;
  void start_upload(std::unique_ptr<Upload> up);
  void upload(Upload& up);
  // Waits for the upload in flight, if any; counts and reports its outcome
  // and rethrows what it could not get past.
  void finish_upload();
  bool weights_moved_past(int64_t iteration);
  // On the upload thread, after an accepted upload: what this worker
  // measured, to gannf.report_timing (sql/0018); its answer is the
  // coordinator's units per claim for this worker (used with --sum-units auto).
  void report_timing(const Upload& up);
  void wait_for_upload_quietly();
  void resubmit_if_lost();
  void heartbeat_if_due(const ClaimedUnit* u, bool* lost);
  template <class F>
  auto with_db(F f) -> decltype(f());

  WorkerOptions o_;
  std::unique_ptr<RecordingBackend<float>> be_;
  std::unique_ptr<pg::Connection> c_;
  int64_t id_ = 0;
  Model m_;
  std::string status_ = "running";
  bool saw_running_ = false;  // of this run: a pause seen before is not its end
  double backoff_ = 1;
  std::atomic<int64_t> last_unwritable_s_{-3600};
  Clock::time_point last_beat_ = Clock::now();
  int64_t accepted_ = 0;
  // Weight downloads (issue 17): at most one per iteration, however many of
  // its units this worker computes; said when the worker ends.
  int64_t downloads_ = 0, downloaded_bytes_ = 0;
  double last_download_s_ = 0;  // the latest download's seconds and bytes, for report_timing
  int64_t last_download_bytes_ = 0;
  // The parameters of the last download: the base of the next one's delta
  // (sql/0019); how many downloads came as deltas.
  WeightsBase base_;
  int64_t delta_downloads_ = 0;
  std::atomic<int> units_hint_{1};  // the coordinator's units per claim (sql/0018), for --sum-units auto
  // --weights-db: its connection, and how often it served the weights (the
  // primary served the rest).
  std::unique_ptr<pg::Connection> weights_c_;
  int64_t replica_downloads_ = 0;
  Clock::time_point replica_retry_at_{};
  bool said_replica_down_ = false;
  std::string totals() const;
  bool said_no_run_ = false;
  bool said_no_schema_ = false;
  std::string said_status_;                       // the run status last reported
  Clock::time_point last_idle_line_ = Clock::now();  // "waiting for work" at least every 10 s
  // Why no unit came; true when this worker should exit (--exit-when-done).
  bool idle_says_exit();
  void leave();
  bool said_quarantined_ = false;  // the claims are refused: the login is quarantined (sql/0008)
  int coordinator_pid_ = 0;         // its backend's pid, from pg_locks; 0: unknown
  mutable std::mutex log_mutex_;
  std::unique_ptr<Upload> upload_;   // in flight (or finished, not yet collected)
  // The last accepted upload, kept until the next one is in: submit() commits
  // asynchronously (sql/0006), so a server crash right after it can lose the
  // submission while this worker moved on. After a reconnect the worker asks
  // whether the unit is still held by it (the submission is gone) and, if so,
  // sends it again instead of leaving the unit to its lease.
  std::unique_ptr<Upload> last_upload_;
  bool recheck_last_ = false;
  std::thread upload_thread_;
  std::unique_ptr<pg::Connection> upload_c_;  // used by the upload thread only
};

struct WorkerLoop::Upload {
  int64_t worker = 0;
  ClaimedUnit unit;          // the first of `units`
  std::vector<ClaimedUnit> units;
  std::vector<UnitLosses> losses;  // per unit, for a summed submission
  std::string what;          // "unit N (iteration ...)", for the line
  std::vector<float> g_grad, d_grad, g_bn, d_bn;
  std::vector<size_t> g_seg, d_seg;  // F16S's scale segments (the tensors)
  UnitResult res;            // spans into the vectors above
  StepStats st;
  double compute_s = 0, weights_s = 0;
  double held_s_at_upload = 0;  // since the units were claimed, when the upload began
  double download_s = 0;     // this worker's last weights download (maybe an earlier iteration's)
  int64_t download_bytes = 0;
  // Filled by the thread:
  std::optional<SubmitOutcome> outcome;
  double upload_s = 0;
  std::exception_ptr error;
};

void WorkerLoop::sleep_backoff() {
  for (double t = 0; t < backoff_ && !stopping(); t += 0.1)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  backoff_ = std::min(backoff_ * 2, 30.0);
}

void WorkerLoop::connect() {
  int failures = 0;
  while (!stopping()) {
    try {
      auto c = std::make_unique<pg::Connection>(o_.conninfo);
      // Started before the instructor's `gannf-coord init`: no schema yet.
      if (c->exec(worker_sql::kHasSchema).get<bool>(0, 0)) {
        if (!said_no_schema_)
          say("no gannf run in " + c->describe() + " yet; waiting for the instructor's 'gannf-coord init'");
        said_no_schema_ = true;
        c.reset();
        for (double t = 0; t < o_.poll_interval && !stopping(); t += 0.1)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      c->listen(channel::kWork);
      c->listen(channel::kWeights);
      WorkerInfo info;
      info.name = o_.name;
      info.backend = o_.declared_backend.empty() ? o_.backend : o_.declared_backend;
      info.cpu_cores = (int32_t)std::max(1u, std::thread::hardware_concurrency());
      info.ram_bytes = (int64_t)sysconf(_SC_PHYS_PAGES) * (int64_t)sysconf(_SC_PAGE_SIZE);
      if (!be_->device_name().empty()) {  // the GPU's model, within the column's 128 characters
        info.gpu_name = be_->device_name().substr(0, 128);
        info.gpu_memory_bytes = (int64_t)be_->device_memory_bytes();
      }
      info.batch_size = o_.batch_size;
      const int64_t id = register_worker(*c, info);
      if (id_ != id) {
        say("registered as worker " + std::to_string(id) + " '" + o_.name + "' on " + c->describe() + " (" +
            o_.backend + ", micro-batch " + std::to_string(o_.batch_size) + ")");
        // First registration of this process: whatever this worker id still
        // holds was left by a previous process of the same name.
        if (const int n = release_held(*c, id))
          say("handed back " + std::to_string(n) + " unit(s) an earlier run of '" + o_.name + "' left claimed");
      } else {
        say("reconnected to " + c->describe());
        recheck_last_ = true;  // the server may have restarted: did the last submission survive?
      }
      id_ = id;
      c_ = std::move(c);
      backoff_ = 1;
      last_beat_ = Clock::now();
      return;
    } catch (const pg::Error& e) {
      if (!e.connection_lost()) throw;
      // A refused login does not get better by retrying: say so once.
      if (const auto why = login_refused(e)) throw std::runtime_error(*why);
      // Never connected yet: a typo in the host or a wrong password is far
      // likelier than an outage, so say so and stop after a few tries. Once
      // this worker has been in, it keeps retrying: the database will be back.
      if (id_ == 0 && ++failures >= 3)
        throw std::runtime_error(std::string("cannot connect to the database: ") + e.what());
      say(std::string("cannot reach the database: ") + e.what() + "; retrying in " + fmt("%.0f", backoff_) + " s");
      sleep_backoff();
    }
  }
}

// Runs f against the connection; on a lost connection reconnects (with
// backoff) and runs it again. Only for calls that may be repeated: the
// worker functions are idempotent per lease (submit answers 'duplicate').
template <class F>
auto WorkerLoop::with_db(F f) -> decltype(f()) {
  for (;;) {
    if (!c_) connect();
    if (!c_) throw std::runtime_error("stopped");
    try {
      return f();
    } catch (const pg::Error& e) {
      if (!e.retry_later() || stopping()) throw;
      if (e.connection_lost())
        say(std::string("lost the database connection: ") + e.message() + "; retrying in " + fmt("%.0f", backoff_) +
            " s");
      else
        say_unwritable(e);
      drop_connection();
      sleep_backoff();
    }
  }
}

bool WorkerLoop::ensure_run() {
  // With the backend of the coordinator, whose notifications are acted on
  // at once (worker_sql.h says which session that is).
  pg::Result r = c_->exec(worker_sql::kTrainingState);
  if (r.rows() == 0) {
    if (!said_no_run_) say("no training run in the database yet; waiting for the coordinator (gannf-coord init)");
    said_no_run_ = true;
    return false;
  }
  said_no_run_ = false;
  coordinator_pid_ = r.opt<int32_t>(0, 3).value_or(0);
  status_ = r.get<std::string>(0, 1);
  const std::string run_id = r.get<std::string>(0, 0);
  if (run_id != m_.run_id) {
    build_model(run_id, RunSettings::from_json(r.get<std::string>(0, 2)));
    saw_running_ = false;
  }
  if (status_ == "running") saw_running_ = true;
  return true;
}

void WorkerLoop::build_model(const std::string& run_id, const RunSettings& s) {
  Model m;
  m.run_id = run_id;
  m.s = s;
  const std::string spec = o_.dataset.empty() ? s.dataset : o_.dataset;
  data::Options dopt;
  dopt.cache = o_.cache;
  dopt.seed = s.seed;  // synthetic images are a function of (seed, index)
  dopt.quiet = o_.quiet;
  m.ds = data::open_dataset(spec, s.image_size, s.channels, dopt);
  if ((int64_t)m.ds->size() != s.dataset_size)
    throw std::runtime_error("dataset " + spec + " has " + std::to_string(m.ds->size()) +
                             " images; the run was made with " + std::to_string(s.dataset_size) + " (" +
                             s.dataset + "); give this worker the same data with --dataset");
  if (auto* packed = dynamic_cast<const data::PackedDataset*>(m.ds.get()))
    if (!s.dataset_hash.empty() && hex64(packed->content_hash()) != s.dataset_hash)
      throw std::runtime_error("dataset " + spec + " holds other images (content hash " +
                               hex64(packed->content_hash()) + ") than the run's (" + s.dataset_hash +
                               "); give this worker the same data with --dataset");
  const int mb = std::min(o_.batch_size, s.images_per_work_unit);
  // Room for a micro-batch with a trailing single image folded in.
  const int max_batch = std::min(s.images_per_work_unit, mb + 1);
  m.G = std::make_unique<Net<float>>(*be_, "generator");
  m.D = std::make_unique<Net<float>>(*be_, "discriminator");
  build_generator(*m.G, s.dcgan(), max_batch);
  build_discriminator(*m.D, s.dcgan(), max_batch);
  m.gan = std::make_unique<GanStep<float>>(*m.G, *m.D);
  m.buf.real.resize((size_t)max_batch * m.ds->image_floats());
  m.buf.noise.resize((size_t)max_batch * s.nz);
  m.buf.idx.resize(max_batch);
  m_ = std::move(m);
  base_ = WeightsBase{};  // another run's weights are no base for this one's
  say("joined run " + run_id.substr(0, 8) + ": " + s.dcgan().describe() + "; " + m_.ds->describe());
}

double WorkerLoop::ensure_weights(int64_t iteration) {
  if (m_.weights_iteration == iteration) return -1;
  const auto t0 = Clock::now();
  const WeightsBase* base = o_.full_weights ? nullptr : &base_;
  std::optional<PublishedWeights> replica;
  if (!o_.weights_db.empty() && Clock::now() >= replica_retry_at_) {
    try {
      if (!weights_c_) {
        // libpq waits for a host that does not answer as long as TCP does
        // (minutes) unless told: a replica is an option, not worth that wait.
        std::string ci = o_.weights_db;
        if (ci.find("connect_timeout") == std::string::npos) {
          const bool uri = ci.rfind("postgres://", 0) == 0 || ci.rfind("postgresql://", 0) == 0;
          ci += uri ? (ci.find('?') == std::string::npos ? "?" : "&") + std::string("connect_timeout=5")
                    : " connect_timeout=5";
        }
        weights_c_ = std::make_unique<pg::Connection>(ci);
      }
      replica.emplace(fetch_weights(*weights_c_, iteration, m_.run_id, base));
      said_replica_down_ = false;
    } catch (const pg::Error& e) {
      // Not replayed yet (lag), a conflict with recovery, damaged, or down:
      // the primary has them. An unreachable replica is tried again in 30 s,
      // so that its connect timeout is not paid every iteration.
      if (e.connection_lost()) {
        weights_c_.reset();
        replica_retry_at_ = Clock::now() + std::chrono::seconds(30);
        if (!said_replica_down_)
          say(std::string("cannot reach the weights replica (") + e.what() +
              "); downloading the weights from the primary, trying the replica again every 30 s");
        said_replica_down_ = true;
      }
    }
  }
  PublishedWeights w = replica ? std::move(*replica) : fetch_weights(*c_, iteration, "", base);
  if (replica) ++replica_downloads_;
  for (int k = 0; k < 2; ++k) {
    Net<float>& net = k ? *m_.D : *m_.G;
    PublishedNetwork& pub = k ? w.d : w.g;
    if (pub.layout_hash != net.layout_hash() || pub.params.size() != net.num_params() ||
        pub.bn_running.size() != net.num_stats())
      throw std::runtime_error(std::string("the run's ") + (k ? "D" : "G") + " has another layout than the " +
                               m_.s.dcgan().describe() + " this worker builds; update gannf on this machine");
    net.set_params(pub.params.floats());
    net.set_stats(pub.bn_running.floats());
  }
  if (base) base_.keep(iteration, w);
  downloaded_bytes_ += w.bytes;
  last_download_bytes_ = w.bytes;
  if (w.deltas == 2) ++delta_downloads_;
  ++downloads_;
  last_download_s_ = since(t0);
  m_.weights_iteration = iteration;
  return since(t0);
}

void WorkerLoop::heartbeat_if_due(const ClaimedUnit* u, bool* lost) {
  const double every = std::min(o_.heartbeat_interval, std::max(1.0, m_.s.lease_seconds / 3));
  if (since(last_beat_) < every) return;
  last_beat_ = Clock::now();
  if (!u) {
    with_db([&] { heartbeat(*c_, id_); });
    return;
  }
  auto until = with_db([&] { return heartbeat(*c_, id_, *u); });
  if (!until && lost) *lost = true;
}

void WorkerLoop::idle_wait() {
  const auto t0 = Clock::now();
  const auto until = t0 + std::chrono::milliseconds((int64_t)(o_.poll_interval * 1000));
  while (!stopping() && Clock::now() < until && c_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    // Slices of 250 ms, so that a signal is seen soon; a notification (new
    // work, new weights) ends the wait. Any login may NOTIFY these channels
    // (PostgreSQL has no privilege for it), so a notification is only a hint
    // to read the tables: at once when the coordinator's backend sent it (it
    // publishes the weights and the units), otherwise (a worker's release, or
    // a flood) at most every 100 ms after the last look.
    if (auto n = c_->wait_notification(std::min(left, std::chrono::milliseconds(250)))) {
      auto from_coordinator = [&](const pg::Notification& m) {
        return coordinator_pid_ != 0 && m.backend_pid == coordinator_pid_;
      };
      // Until 100 ms after the last look only the coordinator's own
      // notification ends the wait early; the others are read and dropped
      // (not drained to the end: a flood has no end).
      bool act = from_coordinator(*n);
      while (!act) {
        const auto rest = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::milliseconds(100) - (Clock::now() - t0));
        if (rest <= std::chrono::milliseconds(0)) break;
        if (auto m = c_->wait_notification(rest)) act = from_coordinator(*m);
      }
      return;
    }
    heartbeat_if_due(nullptr, nullptr);
  }
}

WorkerLoop::UnitEnd WorkerLoop::process(std::vector<ClaimedUnit> units) {
  // Several units of one iteration (--sum-units) are computed into one
  // gradient buffer, in ascending unit id, and sent as one summed submission
  // (sql/0017); the units of other iterations are handed back.
  std::sort(units.begin(), units.end(),
            [](const ClaimedUnit& a, const ClaimedUnit& b) { return a.unit_id < b.unit_id; });
  const ClaimedUnit& u = units[0];
  const auto claimed_t = Clock::now();
  auto describe = [](const ClaimedUnit& x) {
    return "unit " + std::to_string(x.unit_id) + " (iteration " + std::to_string(x.iteration) + ", epoch " +
           std::to_string(x.epoch + 1) + ", images " + std::to_string(x.first_index) + ".." +
           std::to_string(x.first_index + x.sample_count - 1) + ")";
  };
  for (size_t i = 1; i < units.size();)
    if (units[i].iteration != u.iteration) {
      if (c_) try {
          release(*c_, id_, units[i]);
        } catch (const pg::Error&) {
        }
      units.erase(units.begin() + (ptrdiff_t)i);
    } else {
      ++i;
    }
  std::string what = describe(u);
  if (units.size() > 1) what = std::to_string(units.size()) + " units summed, " + what + " to " + describe(units.back());
  auto give_back = [&](const std::string& why) {
    try {
      bool any = false;
      for (const ClaimedUnit& x : units) any = (c_ && release(*c_, id_, x)) || any;
      if (any) say("released " + what + ": " + why);
    } catch (const pg::Error&) {
      // Its lease will pass; someone else computes it then.
    }
  };
  const RunSettings& s = m_.s;
  int U = 0;  // images of all the units: the scale of the summed gradient
  for (const ClaimedUnit& x : units) {
    if (x.first_index < 0 || x.sample_count < 1 || x.first_index + x.sample_count > s.dataset_size) {
      give_back("outside the dataset");
      throw std::runtime_error(describe(x) + " lies outside the dataset of " + std::to_string(s.dataset_size) +
                               " images");
    }
    U += x.sample_count;
  }
  // A lost connection is retried: the lease is (worker, unit, attempt), not
  // the session, so the unit stays ours across a reconnect.
  double weights_s = 0;
  try {
    weights_s = with_db([&] { return ensure_weights(u.iteration); });
  } catch (const pg::Error& e) {
    if (e.connection_lost()) throw;  // stopping while reconnecting
    give_back(e.what());
    return UnitEnd::Dropped;
  }

  const auto t0 = Clock::now();
  Net<float>&G = *m_.G, &D = *m_.D;
  be_->clear();
  m_.gan->zero_grads();
  StepStats st;
  std::vector<UnitLosses> per_unit;
  size_t passes = 0;
  int mb = 0;
  for (const ClaimedUnit& x : units) {
    if (m_.perm_epoch != x.epoch) {
      m_.perm = data::epoch_permutation(m_.ds->size(), s.seed, (uint64_t)x.epoch);
      m_.perm_epoch = x.epoch;
    }
    mb = std::min(o_.batch_size, x.sample_count);
    const std::vector<int> sizes = micro_batches(x.sample_count, mb);
    passes += sizes.size();
    StepStats ust;
    int64_t off = 0;
    for (int n : sizes) {
      try {
        // The step code the coordinator's spot checks run too (spot_check.h),
        // scaled by 1/U: one unit's mean, or the mean over the summed units.
        ust.merge(step_micro_batch(*m_.gan, *m_.ds, m_.perm, s, x.epoch, x.first_index + off, n, U, m_.buf));
      } catch (const std::exception& e) {  // bad data on this machine, out of memory: not the unit's fault
        give_back(e.what());
        throw;
      }
      off += n;
      if (stopping()) {
        give_back("stopping");
        return UnitEnd::Stopped;
      }
      bool lost = false;
      // New weights mean the unit's iteration closed and the unit was moved
      // on (sql 0005 close): ask at once instead of at the next heartbeat.
      if (with_db([&] { return weights_moved_past(u.iteration); })) last_beat_ = Clock::time_point{};
      const auto beat = last_beat_;
      for (const ClaimedUnit& y : units) {
        last_beat_ = beat;  // every unit's lease at the same beat
        heartbeat_if_due(&y, &lost);
      }
      if (lost) {
        // One unit taken back spoils the sum: all go back.
        if (units.size() > 1) give_back("one of them was taken back");
        const std::string why = c_ ? why_taken(*c_, since(claimed_t)) : "";
        say(what + " was taken off this worker (" +
            (why.empty() ? std::string("its lease passed, or its iteration closed") : why) + "); dropping it");
        return UnitEnd::Dropped;
      }
      if (o_.throttle_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o_.throttle_ms));
    }
    per_unit.push_back({(float)ust.d_loss, (float)ust.g_loss, (float)ust.d_real, (float)ust.d_fake, (float)ust.d_acc});
    st.merge(ust);
  }
  const double compute_s = since(t0);

  auto up = std::make_unique<Upload>();
  up->worker = id_;
  up->unit = u;
  up->units = units;
  up->losses = per_unit;
  up->what = what;
  up->g_grad = G.get_grads();
  up->d_grad = D.get_grads();
  up->g_bn = be_->stats_of(G.stats(), G.num_stats());
  up->d_bn = be_->stats_of(D.stats(), D.num_stats());
  if (up->g_bn.size() != passes * G.num_stats() || up->d_bn.size() != 2 * passes * D.num_stats())
    throw std::logic_error("recorded BN statistics do not match the forward passes run");
  UnitResult& res = up->res;
  res.sample_count = U;
  up->g_seg = tensor_sizes(G.params_layout());
  up->d_seg = tensor_sizes(D.params_layout());
  res.g = {G.layout_hash(), up->g_grad, up->g_bn, up->g_seg};
  res.d = {D.layout_hash(), up->d_grad, up->d_bn, up->d_seg};
  res.grad_format = s.grad_format();
  res.loss_d = (float)st.d_loss;
  res.loss_g = (float)st.g_loss;
  res.d_real = (float)st.d_real;
  res.d_fake = (float)st.d_fake;
  res.d_accuracy = (float)st.d_acc;
  res.compute_seconds = (float)compute_s;
  // The worker's micro-batch; sql/0017 stores each unit's min(it, unit size).
  int largest = 0;
  for (const ClaimedUnit& x : units) largest = std::max(largest, x.sample_count);
  res.micro_batch = units.size() > 1 ? std::min(o_.batch_size, largest) : mb;
  if (o_.tamper) {
    UnitTamper t{u.unit_id, u.first_index, u.epoch, {&up->g_grad, &up->d_grad}, {&up->g_bn, &up->d_bn}, &res};
    o_.tamper(t);
    res.g.grad = up->g_grad, res.g.bn_stats = up->g_bn;  // the vectors may have moved
    res.d.grad = up->d_grad, res.d.bn_stats = up->d_bn;
  }
  up->st = st;
  up->held_s_at_upload = since(claimed_t);
  up->compute_s = compute_s;
  up->weights_s = weights_s;
  up->download_s = last_download_s_;
  up->download_bytes = last_download_bytes_;
  start_upload(std::move(up));
  return UnitEnd::Submitted;
}

void WorkerLoop::start_upload(std::unique_ptr<Upload> up) {
  // The previous unit's, long done in the usual case. Its refusal is
  // reported after this unit's upload has started: thrown before, it left
  // this unit claimed and forgotten, and its iteration waited for the lease.
  std::exception_ptr previous;
  try {
    finish_upload();
  } catch (...) {
    previous = std::current_exception();
  }
  upload_ = std::move(up);
  upload_thread_ = std::thread([this] { upload(*upload_); });
  if (previous) std::rethrow_exception(previous);
}

// On the upload thread: submit on upload_c_, reconnecting with backoff when
// the connection drops (submit is idempotent per lease: a retry after a lost
// reply answers 'duplicate'). Gives up only when the worker is stopping; the
// unit's lease then passes and another worker computes it.
void WorkerLoop::upload(Upload& up) {
  double backoff = 1;
  const auto t0 = Clock::now();
  try {
    for (;;) {
      try {
        if (!upload_c_) upload_c_ = std::make_unique<pg::Connection>(o_.conninfo);
        up.outcome = up.units.size() > 1 ? submit_summed(*upload_c_, up.worker, up.units, up.res, up.losses)
                                         : submit(*upload_c_, up.worker, up.unit, up.res);
        break;
      } catch (const pg::Error& e) {
        if (!e.retry_later()) {
          // The database refused it (no correct worker meets this): hand the
          // unit back so that it does not wait for its lease.
          try {
            if (upload_c_)
              for (const ClaimedUnit& x : up.units) release(*upload_c_, up.worker, x);
          } catch (const pg::Error&) {
          }
          throw;
        }
        upload_c_.reset();
        if (stopping()) throw;
        // The login disabled or shut out while a unit was uploading: the
        // worker ends with why, instead of retrying for ever.
        if (const auto why = login_refused(e)) throw std::runtime_error(*why);
        if (e.connection_lost())
          say(std::string("upload of ") + up.what + ": lost the database connection: " + e.what() +
              "; retrying in " + fmt("%.0f", backoff) + " s");
        else
          say_unwritable(e);
        for (double t = 0; t < backoff && !stopping(); t += 0.1)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        backoff = std::min(backoff * 2, 30.0);
      }
    }
  } catch (...) {
    up.error = std::current_exception();
  }
  up.upload_s = since(t0);
  if (up.outcome && up.outcome->status == SubmitStatus::Accepted) report_timing(up);
  if (!up.outcome || o_.quiet) return;
  std::string outcome;
  switch (up.outcome->status) {
    case SubmitStatus::Accepted: outcome = "accepted"; break;
    case SubmitStatus::Duplicate: outcome = "already in (a retry after a lost reply); counted once"; break;
    case SubmitStatus::NotHeld:
      outcome = "refused: the unit is no longer ours (reclaimed after its lease passed, or served again after "
                "its iteration closed, and another worker's result came first); dropped";
      break;
    case SubmitStatus::IterationClosed:
      outcome = "refused: iteration " + std::to_string(up.unit.iteration) +
                " closed first; the unit is served again against the new weights";
      break;
  }
  if (up.outcome->status == SubmitStatus::NotHeld || up.outcome->status == SubmitStatus::IterationClosed) {
    // Taken off this worker first (sql/0023 says why), then computed by
    // another or carried into the next update: say what happened.
    const std::string why = upload_c_ ? why_taken(*upload_c_, up.held_s_at_upload + up.upload_s) : "";
    if (!why.empty()) outcome = "refused: taken off this worker (" + why + "); dropped";
  }
  const int U = up.res.sample_count;
  say(up.what + ": " + std::to_string(U) + " images in " + fmt("%.2f", up.compute_s) + " s (" +
      fmt("%.1f", U / std::max(up.compute_s, 1e-9)) + " img/s) | D " + fmt("%.3f", up.st.d_loss) + " G " +
      fmt("%.3f", up.st.g_loss) + " | D(x) " + fmt("%.2f", up.st.d_real) + " D(G(z)) " + fmt("%.2f", up.st.d_fake) +
      " | weights " + (up.weights_s < 0 ? std::string("cached") : fmt("%.2f s", up.weights_s)) + " | upload " +
      fmt("%.2f", up.upload_s) + " s | " + outcome);
}

void WorkerLoop::report_timing(const Upload& up) {
  if (!upload_c_) return;
  const int64_t per_value = up.res.grad_format == BlobFormat::F32 ? 4 : 2;
  const int64_t bytes = per_value * (int64_t)(up.g_grad.size() + up.d_grad.size()) +
                        4 * (int64_t)(up.g_bn.size() + up.d_bn.size());
  UploadTiming t;
  t.units = (int32_t)up.units.size();
  t.compute_s = up.compute_s, t.upload_s = up.upload_s, t.download_s = up.download_s;
  t.upload_bytes = bytes, t.download_bytes = up.download_bytes;
  try {
    units_hint_ = cluster::report_timing(*upload_c_, up.worker, t);
  } catch (const pg::Error& e) {
    // Advice only: nothing is lost without it. A dropped connection is
    // made again by the next upload.
    if (e.connection_lost()) upload_c_.reset();
  }
}

void WorkerLoop::finish_upload() {
  if (upload_thread_.joinable()) upload_thread_.join();
  if (!upload_) return;
  std::unique_ptr<Upload> up = std::move(upload_);
  if (up->outcome && up->outcome->stored()) {
    accepted_ += (int64_t)up->units.size();
    last_upload_ = std::move(up);
    return;
  }
  if (up->error) {
    try {
      std::rethrow_exception(up->error);
    } catch (const pg::Error& e) {
      if (e.connection_lost()) {  // only when stopping: the lease passes, someone else computes it
        say("gave up uploading " + up->what + " (stopping): " + e.what());
        return;
      }
      // Refused for what it holds (sizes, ranges): hand the unit back at once,
      // so that the iteration does not wait for its lease.
      if (c_) try {
          for (const ClaimedUnit& x : up->units) release(*c_, up->worker, x);
        } catch (const pg::Error&) {
        }
      throw pg::Error("the database refused " + up->what + ": " + e.what(), e.sqlstate());
    }
  }
}

void WorkerLoop::resubmit_if_lost() {
  recheck_last_ = false;
  finish_upload();
  if (!last_upload_ || !c_) return;
  // Still ours (claimed, this attempt): the accepted submission did not
  // survive. Anything else — submitted, done, served again — and it did, or
  // the coordinator has taken the unit back.
  if (!heartbeat(*c_, id_, last_upload_->unit)) return;
  say("the database lost the submission of " + last_upload_->what +
      " (it restarted before writing it to disk); sending it again");
  accepted_ -= (int64_t)last_upload_->units.size();
  std::unique_ptr<Upload> up = std::move(last_upload_);
  up->outcome.reset();
  up->error = nullptr;
  start_upload(std::move(up));
}

// True when weights newer than `iteration` were announced: the coordinator
// closed it, and a unit of it still being computed has been moved on (its
// heartbeat will say so). Consumes the notifications that arrived.
bool WorkerLoop::weights_moved_past(int64_t iteration) {
  bool moved = false;
  if (!c_) return false;
  while (auto n = c_->wait_notification(std::chrono::milliseconds(0)))
    // Only the coordinator publishes weights: any other sender's claim is
    // ignored (any login may NOTIFY), when the coordinator's pid is known.
    if (n->channel == channel::kWeights && (coordinator_pid_ == 0 || n->backend_pid == coordinator_pid_)) {
      char* end = nullptr;
      const long long it = std::strtoll(n->payload.c_str(), &end, 10);
      if (end && *end == 0 && it > iteration) moved = true;
    }
  return moved;
}

int WorkerLoop::run() {
  int errors = 0;
  while (!stopping()) {
    try {
      if (!c_) connect();
      if (!c_) break;  // stopped while connecting
      if (recheck_last_) resubmit_if_lost();
      if (!ensure_run()) {
        idle_wait();
        continue;
      }
      if (o_.max_units > 0 && accepted_ + (upload_ ? (int64_t)upload_->units.size() : 0) >= o_.max_units) {
        finish_upload();  // is the last one in?
        if (accepted_ >= o_.max_units) {
          say("done: " + totals());
          leave();
          return 0;
        }
        continue;
      }
      // With --sum-units, never more than --max-units leaves room for.
      int32_t want = o_.sum_units > 0 ? o_.sum_units : units_hint_.load();
      if (o_.max_units > 0) want = (int32_t)std::min<int64_t>(want, o_.max_units - accepted_ - (upload_ ? (int64_t)upload_->units.size() : 0));
      std::vector<ClaimedUnit> units = claim(*c_, id_, std::max(1, want));
      last_beat_ = Clock::now();
      if (units.empty()) {
        if (idle_says_exit()) {
          finish_upload();
          say(totals());
          leave();
          return 0;
        }
        idle_wait();
        continue;
      }
      if (said_quarantined_) say("the login's quarantine was lifted; working again");
      said_quarantined_ = false;
      if (process(std::move(units)) == UnitEnd::Stopped) break;
      last_idle_line_ = Clock::now();
      errors = 0;
    } catch (const pg::Error& e) {
      if (e.connection_lost()) {
        say(std::string("lost the database connection: ") + e.message() + "; retrying in " + fmt("%.0f", backoff_) +
            " s");
        drop_connection();
        sleep_backoff();
        continue;
      }
      if (e.server_unwritable()) {  // an outage of the server, not this worker's error: wait it out
        say_unwritable(e);
        drop_connection();
        sleep_backoff();
        continue;
      }
      if (e.sqlstate() == sqlstate::kBackendRefused) {
        // The class's setting (sql/0020): asking again would not change it.
        say(std::string("refused: ") + e.what());
        wait_for_upload_quietly();
        leave();
        return 1;
      }
      if (e.sqlstate() == sqlstate::kQuarantined) {
        // The instructor decides (gannf-coord quarantine lift): say why once,
        // then ask again every minute without counting it as an error.
        if (!said_quarantined_) say(std::string("refused: ") + e.what() + "; asking again every minute");
        said_quarantined_ = true;
        bool over = false;
        for (int t = 0; t < 600 && !stopping() && !over; ++t) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          // An --exit-when-done worker still leaves when the run ends.
          if (o_.exit_when_done && t % 10 == 9) try {
              over = ensure_run() && (status_ == "finished" || (status_ == "stopped" && saw_running_));
            } catch (const pg::Error&) {
            }
        }
        if (over) {
          say("the run is " + status_ + "; exiting (this login is still quarantined)");
          leave();
          return 0;
        }
        continue;
      }
      say(std::string("error: ") + e.what());
      if (++errors >= 5) {
        say("giving up after 5 errors in a row");
        return 1;
      }
      sleep_backoff();
    } catch (const std::exception& e) {
      if (stopping()) break;
      say(std::string("error: ") + e.what());
      wait_for_upload_quietly();
      return 1;
    }
  }
  // A finished unit is worth its upload: let it complete (a lost connection
  // while stopping gives it up; its lease passes).
  wait_for_upload_quietly();
  leave();
  say("stopped (" + totals() + ")");
  return 0;
}

std::string WorkerLoop::totals() const {
  std::string r = std::to_string(accepted_) + " units submitted, weights downloaded " + std::to_string(downloads_) +
                  " time(s), " + fmt("%.1f", (double)downloaded_bytes_ / 1e6) + " MB";
  if (!o_.weights_db.empty())
    r += " (" + std::to_string(replica_downloads_) + " from the replica, " +
         std::to_string(downloads_ - replica_downloads_) + " from the primary)";
  if (delta_downloads_ > 0)
    r += ", " + std::to_string(delta_downloads_) + " of them as the delta from the previous iteration's";
  return r;
}

bool WorkerLoop::idle_says_exit() {
  // A stop seen before this worker saw the run running is the previous
  // coordinator's, which a new 'gannf-coord run' is about to carry on.
  const bool over = status_ == "finished" || (status_ == "stopped" && saw_running_);
  std::string why;
  if (status_ == "paused") why = "the run is paused ('gannf-coord pause'); waiting for 'gannf-coord resume'";
  else if (status_ == "stopped")
    why = "the run is stopped ('gannf-coord stop' or its --iterations bound)" +
          std::string(over && o_.exit_when_done ? "; exiting" : "; waiting until 'gannf-coord run' carries it on");
  else if (status_ == "finished")
    why = std::string("the run is finished") +
          (o_.exit_when_done ? "; exiting" : "; waiting for a new run ('gannf-coord init')");
  else
    why = "every open unit is taken; the next ones come with the next update";
  const bool leaving = over && o_.exit_when_done;
  if (leaving || status_ != said_status_ || since(last_idle_line_) >= 10) {
    if (status_ == "running" && c_) why += why_waiting(*c_);
    say(leaving ? why : "waiting for work: " + why);
    said_status_ = status_;
    last_idle_line_ = Clock::now();
  }
  return leaving;
}

// Tell the database this worker is gone (status stops listing it at once);
// best effort: a worker that cannot is dropped 90 s after its last call.
void WorkerLoop::leave() {
  if (!c_ || id_ == 0) return;
  try {
    pg::Params p;
    p.add(id_);
    c_->exec(worker_sql::kLeave, p);
  } catch (const std::exception&) {
  }
}

void WorkerLoop::wait_for_upload_quietly() {
  try {
    finish_upload();
  } catch (const std::exception& e) {
    say(std::string("error: ") + e.what());
  }
}

}  // namespace

std::optional<std::string> login_refused(const pg::Error& e) {
  if (e.message().find("is not permitted to log in") != std::string::npos)
    return "the database refused this login: " + e.message() +
           "; the instructor disabled it (gannf-coord remove-students), or the coordinator shut it out because SQL "
           "of this login kept the server busy (its own statements, or a gannf-worker's calls made far more often "
           "than a gannf-worker makes them: its log says which); ask the instructor to let it in again";
  if (credentials_refused(e))
    return "the database refused this login: " + e.message() +
           "; check the user name and the password (~/.pgpass, PGPASSWORD or the connection string) with the "
           "instructor";
  return std::nullopt;
}

std::string why_waiting(pg::Connection& c) {
  try {
    pg::Result r = c.exec(worker_sql::kWhyWaiting);
    if (r.rows() == 0) return "";
    const std::string why = r.get<std::string>(0, 0);
    const std::string reason = why == "late"         ? "it was late"
                               : why == "hold bound" ? "it was held past the hold bound"
                               : why == "lease"      ? "its lease passed"
                               : why == "closed"     ? "its update closed without it"
                                                     : "";
    return "; a unit was taken off this login" + (reason.empty() ? std::string() : " (" + reason + ")") +
           ", so until a result of it is accepted it holds one unit at a time and lets the class's other machines "
           "claim first";
  } catch (const pg::Error&) {
    return "";
  }
}

int run_worker(const WorkerOptions& o) {
  WorkerLoop w(o);
  return w.run();
}

}  // namespace gannf::cluster
