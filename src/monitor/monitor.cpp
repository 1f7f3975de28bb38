#include "monitor.h"

#include <algorithm>
#include <stdexcept>

#include "flops.h"
#include "run_settings.h"

namespace gannf::monitor {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kChannels[] = {"gannf_monitor", "gannf_submission"};

// Every view and table the dashboard reads (sql/0007).
constexpr const char* kNeeded[] = {"monitor_run", "monitor_history", "monitor_workers", "monitor_submissions",
                                   "sample_grids"};

std::unique_ptr<pg::Connection> open_read_only(const std::string& conninfo) {
  auto c = std::make_unique<pg::Connection>(conninfo);
  c->on_notice({});
  // The dashboard changes nothing; the server holds it to that too.
  c->exec("SET default_transaction_read_only = on");
  c->exec("SET statement_timeout = '30s'");
  c->exec("SET application_name = 'gannf-dash'");
  return c;
}

// Throws, saying what to do, unless this login can read every view.
void check_access(pg::Connection& c, const std::function<void(const std::string&)>& log) {
  const std::string who = c.describe();
  pg::Result s = c.exec("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'gannf')");
  if (!s.get<bool>(0, 0))
    throw std::runtime_error("no gannf schema in " + who +
                             ": is this the run's database? The coordinator creates it (gannf-coord init)");
  for (const char* rel : kNeeded) {
    pg::Params p;
    p.add(rel);
    pg::Result r = c.exec(
        "SELECT c.oid IS NOT NULL, coalesce(has_table_privilege(c.oid, 'SELECT'), false) "
        "FROM (SELECT 1) one LEFT JOIN (pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "AND n.nspname = 'gannf') ON c.relname = $1",
        p);
    if (!r.get<bool>(0, 0))
      throw std::runtime_error("the gannf schema in " + who + " has no gannf." + rel +
                               ": it predates the dashboard (sql/0007_dashboard.sql); 'gannf-coord run' of this "
                               "version upgrades it");
    if (!r.get<bool>(0, 1))
      throw std::runtime_error("login " + c.exec("SELECT session_user::text").get<std::string>(0, 0) +
                               " may not read gannf." + rel +
                               ": log in as a member of gannf_monitor or gannf_worker (an administrator: GRANT "
                               "gannf_monitor TO <login>)");
  }
  pg::Result w = c.exec(
      "SELECT session_user::text, has_table_privilege(c.oid, 'UPDATE') FROM pg_class c "
      "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'gannf' AND c.relname = 'training_state'");
  if (w.rows() == 1 && w.get<bool>(0, 1) && log)
    log("note: login " + w.get<std::string>(0, 0) +
        " may change the run; the dashboard only reads (its session is read-only), and a login in gannf_monitor is "
        "all it needs");
}

std::optional<float> opt_f(const pg::Result& r, int i, int c) { return r.opt<float>(i, c); }

// Equal but for when each was last seen: a heartbeat is no news worth a
// live page's refresh (the page counts "seen ... ago" by itself).
bool same_workers(const std::vector<WorkerRow>& a, const std::vector<WorkerRow>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    WorkerRow x = a[i];
    x.last_seen = b[i].last_seen;
    if (!(x == b[i])) return false;
  }
  return true;
}

}  // namespace

struct Monitor::State {
  std::string run_id;
  std::shared_ptr<const std::vector<HistoryRow>> history = std::make_shared<std::vector<HistoryRow>>();
  std::shared_ptr<const std::vector<GridInfo>> grids = std::make_shared<std::vector<GridInfo>>();
  int64_t images_processed = 0;
  // Submissions of closed iterations are final (no state changes after the
  // iteration's commit): folded once, by id.
  int64_t folded_id = 0;
  std::map<int64_t, Tally> folded;
  std::string flops_model;
  double flops = 0;
  uint64_t generation = 0;
  Clock::time_point backoff_until{};
  double backoff = 0;

  void reset(const std::string& id) {
    run_id = id;
    history = std::make_shared<std::vector<HistoryRow>>();
    grids = std::make_shared<std::vector<GridInfo>>();
    images_processed = 0;
    folded_id = 0;
    folded.clear();
  }
};

Monitor::Monitor(MonitorOptions o) : o_(std::move(o)), st_(std::make_unique<State>()) {
  connect();
  check_access(*c_, o_.log);
  look();
  if (!snapshot()->db_ok) throw std::runtime_error(snapshot()->db_error);
}

Monitor::~Monitor() { stop(); }

void Monitor::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
}

void Monitor::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const Snapshot> Monitor::snapshot() const {
  std::lock_guard<std::mutex> l(mu_);
  return snap_;
}

std::shared_ptr<const Snapshot> Monitor::wait_for_change(uint64_t seen, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, timeout, [&] { return stop_ || (snap_ && snap_->generation != seen); });
  return snap_;
}

void Monitor::publish(std::shared_ptr<Snapshot> s) {
  {
    std::lock_guard<std::mutex> l(mu_);
    snap_ = std::move(s);
  }
  cv_.notify_all();
}

void Monitor::connect() {
  c_.reset();
  auto c = open_read_only(o_.conninfo);
  for (const char* ch : kChannels) c->listen(ch);
  c_ = std::move(c);
}

void Monitor::look() {
  ++looks_;
  State& st = *st_;
  auto s = std::make_shared<Snapshot>();
  const std::shared_ptr<const Snapshot> last = snapshot();
  try {
    if (!c_) connect();
    pg::Connection& c = *c_;
    // One consistent view of every table: the fold below relies on the
    // run's iteration and the submissions being read at the same instant.
    pg::Transaction tx(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    pg::Result r = c.exec(
        "SELECT r.run_id::text, r.status, r.coordinator_running, r.iteration, r.epoch, r.position, r.dataset_size, "
        "extract(epoch FROM r.lease)::float8, extract(epoch FROM r.started_at)::float8, "
        "extract(epoch FROM r.updated_at)::float8, r.config::text, extract(epoch FROM gannf.now())::float8 "
        "FROM (SELECT 1) one LEFT JOIN gannf.monitor_run r ON true");
    s->db_now = r.get<double>(0, 11);
    if (!r.is_null(0, 0)) {
      RunRow run;
      run.run_id = r.get<std::string>(0, 0);
      run.db_status = r.get<std::string>(0, 1);
      run.coordinator_running = r.get<bool>(0, 2);
      run.iteration = r.get<int64_t>(0, 3);
      run.epoch = r.get<int32_t>(0, 4);
      run.position = r.get<int64_t>(0, 5);
      run.dataset_size = r.get<int64_t>(0, 6);
      run.lease_seconds = r.get<double>(0, 7);
      run.started_at = r.get<double>(0, 8);
      run.updated_at = r.get<double>(0, 9);
      const cluster::RunSettings rs = cluster::RunSettings::from_json(r.get<std::string>(0, 10));
      run.model = rs.dcgan();
      run.epochs = rs.epochs;
      run.images_per_unit = rs.images_per_work_unit;
      run.units_per_update = rs.num_workunits_per_update;
      run.dataset = rs.dataset;
      if (run.run_id != st.run_id) st.reset(run.run_id);
      if (run.model.describe() != st.flops_model) {
        st.flops = gan_step_flops(run.model).per_image;
        st.flops_model = run.model.describe();
      }
      s->flops_per_image = st.flops;
      s->run = run;
    } else if (!st.run_id.empty()) {
      st.reset("");
    }

    if (s->run) {
      pg::Params ph;
      ph.add(st.history->empty() ? int64_t(-1) : st.history->back().iteration);
      pg::Result h = c.exec(
          "SELECT iteration, epoch, loss_d, loss_g, d_real, d_fake, d_accuracy, samples, submissions_used, "
          "submissions_rejected, active_workers, images_per_second, seconds, update_seconds, "
          "extract(epoch FROM recorded_at)::float8 FROM gannf.monitor_history WHERE iteration > $1 ORDER BY iteration",
          ph);
      if (h.rows() > 0) {
        // Copied once per new row set, then shared by every snapshot until the next.
        auto next = std::make_shared<std::vector<HistoryRow>>();
        next->reserve(st.history->size() + h.rows());
        *next = *st.history;
        for (int i = 0; i < h.rows(); ++i) {
          HistoryRow x;
          x.iteration = h.get<int64_t>(i, 0);
          x.epoch = h.get<int32_t>(i, 1);
          x.loss_d = opt_f(h, i, 2);
          x.loss_g = opt_f(h, i, 3);
          x.d_real = opt_f(h, i, 4);
          x.d_fake = opt_f(h, i, 5);
          x.d_accuracy = opt_f(h, i, 6);
          x.samples = h.get<int32_t>(i, 7);
          x.used = h.get<int32_t>(i, 8);
          x.rejected = h.get<int32_t>(i, 9);
          x.active_workers = h.opt<int32_t>(i, 10);
          x.images_per_second = opt_f(h, i, 11);
          x.seconds = opt_f(h, i, 12);
          x.update_seconds = opt_f(h, i, 13);
          x.recorded_at = h.get<double>(i, 14);
          st.images_processed += x.samples;
          next->push_back(x);
        }
        st.history = std::move(next);
      }

      pg::Params pg_;
      pg_.add(st.grids->empty() ? int64_t(-1) : st.grids->back().iteration);
      pg::Result g = c.exec(
          "SELECT iteration, epoch, extract(epoch FROM recorded_at)::float8, octet_length(png)::bigint "
          "FROM gannf.sample_grids WHERE iteration > $1 ORDER BY iteration",
          pg_);
      if (g.rows() > 0) {
        auto next = std::make_shared<std::vector<GridInfo>>(*st.grids);
        for (int i = 0; i < g.rows(); ++i)
          next->push_back({g.get<int64_t>(i, 0), g.get<int32_t>(i, 1), g.get<double>(i, 2), g.get<int64_t>(i, 3)});
        st.grids = std::move(next);
      }

      pg::Params ps;
      ps.add(st.folded_id);
      pg::Result sub = c.exec(
          "SELECT id, iteration, worker_id, state, sample_count, compute_seconds, reject_reason, "
          "extract(epoch FROM submitted_at)::float8 FROM gannf.monitor_submissions WHERE id > $1 ORDER BY id",
          ps);
      s->tallies = st.folded;
      bool open = false;  // from the first submission of an open iteration on, nothing is final
      for (int i = 0; i < sub.rows(); ++i) {
        const int64_t id = sub.get<int64_t>(i, 0), it = sub.get<int64_t>(i, 1), w = sub.get<int64_t>(i, 2);
        Tally x;
        x.add(sub.get<std::string>(i, 3), sub.get<int32_t>(i, 4), sub.opt<float>(i, 5),
              sub.opt<std::string>(i, 6), sub.get<double>(i, 7));
        s->tallies[w].merge(x);
        open = open || it >= s->run->iteration;
        if (!open) {
          st.folded[w].merge(x);
          st.folded_id = id;
        }
      }
    }

    // Since sql/0013: presence as the coordinator counts it, and the logins' trust.
    const bool trust = c.exec("SELECT to_regclass('gannf.monitor_logins') IS NOT NULL").get<bool>(0, 0);
    pg::Result w = c.exec(std::string("SELECT id, login, name, backend, cpu_cores, ram_bytes, gpu_name, "
                                      "gpu_memory_bytes, batch_size, extract(epoch FROM registered_at)::float8, "
                                      "extract(epoch FROM last_seen)::float8, ") +
                          (trust ? "present, strikes, quarantined" : "active, NULL::int, NULL::bool") +
                          " FROM gannf.monitor_workers ORDER BY id");
    s->workers.resize(w.rows());
    for (int i = 0; i < w.rows(); ++i) {
      WorkerRow& x = s->workers[i];
      x.id = w.get<int64_t>(i, 0);
      x.login = w.get<std::string>(i, 1);
      x.name = w.get<std::string>(i, 2);
      x.backend = w.opt<std::string>(i, 3);
      x.cpu_cores = w.opt<int32_t>(i, 4);
      x.ram_bytes = w.opt<int64_t>(i, 5);
      x.gpu_name = w.opt<std::string>(i, 6);
      x.gpu_memory_bytes = w.opt<int64_t>(i, 7);
      x.batch_size = w.opt<int32_t>(i, 8);
      x.registered_at = w.get<double>(i, 9);
      x.last_seen = w.get<double>(i, 10);
      x.active = w.get<bool>(i, 11);
      x.strikes = w.opt<int32_t>(i, 12);
      x.quarantined = w.opt<bool>(i, 13);
    }
    if (trust) {
      pg::Result t = c.exec(
          "SELECT login, strikes, quarantined, coalesce(extract(epoch FROM quarantined_at)::float8, 0) "
          "FROM gannf.monitor_logins ORDER BY login");
      s->logins.emplace(t.rows());
      for (int i = 0; i < t.rows(); ++i)
        (*s->logins)[i] = {t.get<std::string>(i, 0), t.get<int32_t>(i, 1), t.get<bool>(i, 2), t.get<double>(i, 3)};
    }
    tx.commit();
    s->db_ok = true;
    st.backoff = 0;
  } catch (const std::exception& e) {
    // Keep showing what was there, and say why it is not moving.
    if (last) {
      s = std::make_shared<Snapshot>(*last);
    }
    s->db_ok = false;
    s->db_error = e.what();
    const auto* pe = dynamic_cast<const pg::Error*>(&e);
    if (!pe || pe->connection_lost() || !c_ || PQstatus(c_->raw()) != CONNECTION_OK) c_.reset();
    st.backoff = std::min(30.0, st.backoff > 0 ? st.backoff * 2 : 1.0);
    st.backoff_until = Clock::now() + std::chrono::milliseconds((int64_t)(st.backoff * 1000));
    if (o_.log && (!last || last->db_ok)) o_.log("the database cannot be read: " + s->db_error + "; retrying");
  }
  s->history = st.history;
  s->grids = st.grids;
  s->images_processed = st.images_processed;

  const bool same = last && last->db_ok == s->db_ok && last->db_error == s->db_error && last->run == s->run &&
                    last->history->size() == s->history->size() && *last->grids == *s->grids &&
                    same_workers(last->workers, s->workers) && last->logins == s->logins &&
                    last->tallies == s->tallies;
  if (same && s->db_ok) {
    // Nothing worth a live page's refresh changed: the same generation, with
    // the newer clock and last-seen times for whoever asks next.
    auto moved = std::make_shared<Snapshot>(*last);
    moved->db_now = s->db_now;
    moved->workers = std::move(s->workers);
    s = moved;
  } else if (!same) {
    s->generation = ++st.generation;
  }
  if (!same || !last) {
    if (o_.log && s->db_ok && last && !last->db_ok) o_.log("the database is back");
    publish(std::move(s));
  } else {
    // The same generation with a newer clock: the status panel's "now".
    std::lock_guard<std::mutex> l(mu_);
    snap_ = std::move(s);
  }
}

void Monitor::loop() {
  while (!stop_) {
    const auto t0 = Clock::now();
    if (Clock::now() >= st_->backoff_until) look();
    // Sleep until a notification, the next poll, or stop(); a burst of
    // notifications (an iteration's commit, its submissions) makes one look.
    const auto deadline = t0 + std::chrono::milliseconds((int64_t)(o_.poll_seconds * 1000));
    bool woke = false;
    try {
      while (!stop_ && !woke && Clock::now() < deadline) {
        if (!c_ || Clock::now() < st_->backoff_until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          if (!c_ && Clock::now() >= st_->backoff_until) break;
          continue;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        woke = c_->wait_notification(std::clamp(left, std::chrono::milliseconds(1), std::chrono::milliseconds(250)))
                   .has_value();
      }
      if (woke) {
        const auto until = Clock::now() + std::chrono::milliseconds((int64_t)(o_.min_interval_seconds * 1000));
        while (!stop_ && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        while (c_ && c_->wait_notification(std::chrono::milliseconds(0))) {
        }
      }
    } catch (const pg::Error&) {
      c_.reset();  // the next look reconnects, and says so if it cannot
    }
  }
}

std::shared_ptr<const std::string> Monitor::grid_png(int64_t iteration, std::string* error) {
  const auto snap = snapshot();
  const std::string run = snap && snap->run ? snap->run->run_id : "";
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    if (run != cache_run_) {
      lru_.clear();
      cache_.clear();
      cache_bytes_ = 0;
      cache_run_ = run;
    }
    auto it = cache_.find(iteration);
    if (it != cache_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  std::shared_ptr<const std::string> png;
  try {
    std::lock_guard<std::mutex> l(fetch_mu_);
    if (!fetch_) fetch_ = open_read_only(o_.conninfo);
    pg::Params p;
    p.add(iteration);
    pg::Result r = fetch_->exec("SELECT png FROM gannf.sample_grids WHERE iteration = $1", p);
    if (r.rows() == 0) return nullptr;
    const auto b = r.bytes(0, 0);
    png = std::make_shared<const std::string>(reinterpret_cast<const char*>(b.data()), b.size());
  } catch (const std::exception& e) {
    {
      std::lock_guard<std::mutex> l(fetch_mu_);
      fetch_.reset();
    }
    if (error) *error = e.what();
    return nullptr;
  }
  std::lock_guard<std::mutex> l(cache_mu_);
  if (cache_.count(iteration) || run != cache_run_) return png;
  lru_.emplace_front(iteration, png);
  cache_[iteration] = lru_.begin();
  cache_bytes_ += png->size();
  while (cache_bytes_ > o_.grid_cache_bytes && lru_.size() > 1) {
    cache_bytes_ -= lru_.back().second->size();
    cache_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return png;
}

}  // namespace gannf::monitor
