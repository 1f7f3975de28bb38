#include "monitor.h"

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
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
  // The look itself (sql/0016), which reads the views above with the login's rights.
  pg::Result f = c.exec(
      "SELECT p IS NOT NULL, p IS NOT NULL AND has_function_privilege(p, 'EXECUTE') "
      "FROM to_regprocedure('gannf.monitor_look(bigint, bigint, bigint, integer, boolean)') p");
  if (!f.get<bool>(0, 0))
    throw std::runtime_error("the gannf schema in " + who +
                             " has no gannf.monitor_look: it predates this dashboard (sql/0016_update_cost.sql); "
                             "'gannf-coord run' of this version upgrades it");
  if (!f.get<bool>(0, 1))
    throw std::runtime_error("login " + c.exec("SELECT session_user::text").get<std::string>(0, 0) +
                             " may not call gannf.monitor_look: log in as a member of gannf_monitor or gannf_worker");
  pg::Result w = c.exec(
      "SELECT session_user::text, has_table_privilege(c.oid, 'UPDATE') FROM pg_class c "
      "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'gannf' AND c.relname = 'training_state'");
  if (w.rows() == 1 && w.get<bool>(0, 1) && log)
    log("note: login " + w.get<std::string>(0, 0) +
        " may change the run; the dashboard only reads (its session is read-only), and a login in gannf_monitor is "
        "all it needs");
}

using Json = nlohmann::json;

// Rows a look reads at once: a first look at 100 000 iterations of history
// and 400 000 submissions takes a few pages, never one document of them all.
constexpr size_t kPage = 20000;

template <typename T>
std::optional<T> optional(const Json& v) {
  return v.is_null() ? std::nullopt : std::optional<T>(v.get<T>());
}

// A real column, sent as its text (sql/0016): strtof gives back the float4
// the column holds, which a detour through a double might not.
std::optional<float> real(const Json& v) {
  if (v.is_null()) return std::nullopt;
  return std::strtof(v.get_ref<const std::string&>().c_str(), nullptr);
}

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
  Clock::time_point last_whole{};  // the last look that read the workers and logins
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

void Monitor::look(bool whole) {
  ++looks_;
  State& st = *st_;
  auto s = std::make_shared<Snapshot>();
  const std::shared_ptr<const Snapshot> last = snapshot();
  whole = whole || !last || !last->db_ok;
  try {
    if (!c_) connect();
    pg::Connection& c = *c_;
    // One statement per round (sql/0016's monitor_look): one snapshot of
    // every table, so the fold below may trust that the run's iteration and
    // the submissions were read at the same instant. A long history arrives
    // in pages of kPage rows (the first look of a dashboard opened late).
    for (;;) {
      pg::Params pl;
      pl.add(st.history->empty() ? int64_t(-1) : st.history->back().iteration)
          .add(st.grids->empty() ? int64_t(-1) : st.grids->back().iteration)
          .add(st.folded_id)
          .add((int32_t)kPage)
          .add(whole);
      const Json doc =
          Json::parse(c.exec("SELECT gannf.monitor_look($1, $2, $3, $4, $5)::text", pl).get<std::string>(0, 0));
      s->db_now = doc["now"].get<double>();
      s->run.reset();
      if (const Json& r = doc["run"]; !r.is_null()) {
        RunRow run;
        run.run_id = r[0].get<std::string>();
        run.db_status = r[1].get<std::string>();
        // Not asked (a look at a commit): as the last whole look saw it.
        run.coordinator_running = r[2].is_null() ? last->run && last->run->coordinator_running : r[2].get<bool>();
        run.iteration = r[3].get<int64_t>();
        run.epoch = r[4].get<int32_t>();
        run.position = r[5].get<int64_t>();
        run.dataset_size = r[6].get<int64_t>();
        run.lease_seconds = r[7].get<double>();
        run.started_at = r[8].get<double>();
        run.updated_at = r[9].get<double>();
        const cluster::RunSettings rs = cluster::RunSettings::from_json(r[10].dump());
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
      bool more = false;
      if (s->run) {
        const Json& h = doc["history"];
        if (!h.empty()) {
          // Copied once per new row set, then shared by every snapshot until the next.
          auto next = std::make_shared<std::vector<HistoryRow>>();
          next->reserve(st.history->size() + h.size());
          *next = *st.history;
          for (const Json& row : h) {
            HistoryRow x;
            x.iteration = row[0].get<int64_t>();
            x.epoch = row[1].get<int32_t>();
            x.loss_d = real(row[2]);
            x.loss_g = real(row[3]);
            x.d_real = real(row[4]);
            x.d_fake = real(row[5]);
            x.d_accuracy = real(row[6]);
            x.samples = row[7].get<int32_t>();
            x.used = row[8].get<int32_t>();
            x.rejected = row[9].get<int32_t>();
            x.active_workers = optional<int32_t>(row[10]);
            x.images_per_second = real(row[11]);
            x.seconds = real(row[12]);
            x.update_seconds = real(row[13]);
            x.recorded_at = row[14].get<double>();
            st.images_processed += x.samples;
            next->push_back(x);
          }
          st.history = std::move(next);
        }
        const Json& g = doc["grids"];
        if (!g.empty()) {
          auto next = std::make_shared<std::vector<GridInfo>>(*st.grids);
          for (const Json& row : g)
            next->push_back({row[0].get<int64_t>(), row[1].get<int32_t>(), row[2].get<double>(), row[3].get<int64_t>()});
          st.grids = std::move(next);
        }
        const Json& sub = doc["submissions"];
        s->tallies = st.folded;
        bool open = false;  // from the first submission of an open iteration on, nothing is final
        for (const Json& row : sub) {
          const int64_t id = row[0].get<int64_t>(), it = row[1].get<int64_t>(), w = row[2].get<int64_t>();
          Tally x;
          x.add(row[3].get<std::string>(), row[4].get<int32_t>(), real(row[5]), optional<std::string>(row[6]),
                row[7].get<double>());
          s->tallies[w].merge(x);
          open = open || it >= s->run->iteration;
          if (!open) {
            st.folded[w].merge(x);
            st.folded_id = id;
          }
        }
        // A full page of final rows (or of history, or of grids): more follow.
        more = h.size() == kPage || g.size() == kPage || (sub.size() == kPage && !open);
      }
      if (!whole) {
        s->workers = last->workers;
        s->logins = last->logins;
        s->logins_taken = last->logins_taken;
        if (!more) break;
        continue;
      }
      const Json& w = doc["workers"];
      s->workers.resize(w.size());
      for (size_t i = 0; i < w.size(); ++i) {
        const Json& row = w[i];
        WorkerRow& x = s->workers[i];
        x.id = row[0].get<int64_t>();
        x.login = row[1].get<std::string>();
        x.name = row[2].get<std::string>();
        x.backend = optional<std::string>(row[3]);
        x.cpu_cores = optional<int32_t>(row[4]);
        x.ram_bytes = optional<int64_t>(row[5]);
        x.gpu_name = optional<std::string>(row[6]);
        x.gpu_memory_bytes = optional<int64_t>(row[7]);
        x.batch_size = optional<int32_t>(row[8]);
        x.registered_at = row[9].get<double>();
        x.last_seen = row[10].get<double>();
        x.active = row[11].get<bool>();
        x.strikes = optional<int32_t>(row[12]);
        x.quarantined = optional<bool>(row[13]);
      }
      const Json& t = doc["logins"];
      s->logins.emplace(t.size());
      s->logins_taken = doc.value("logins_taken", false);
      for (size_t i = 0; i < t.size(); ++i) {
        LoginRow& x = (*s->logins)[i];
        x.login = t[i][0].get<std::string>();
        x.strikes = t[i][1].get<int32_t>();
        x.quarantined = t[i][2].get<bool>();
        x.quarantined_at = t[i][3].get<double>();
        if (s->logins_taken) {
          x.units_taken = t[i][4].get<int64_t>();
          x.taken_at = t[i][5].get<double>();
          x.taken_why = t[i][6].is_null() ? "" : t[i][6].get<std::string>();
          x.taken_bound = optional<double>(t[i][7]);
          x.held_to_one = t[i][8].get<bool>();
        }
      }
      if (!more) break;
    }
    s->db_ok = true;
    st.backoff = 0;
    if (whole) st.last_whole = Clock::now();
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
  bool workers_changed = false;
  while (!stop_) {
    const auto t0 = Clock::now();
    // The workers and logins (most of a look's cost) every poll interval
    // and when one registers; a commit's or a submission's look reads only
    // what is new (sql/0016's monitor_look).
    const auto poll = std::chrono::milliseconds((int64_t)(o_.poll_seconds * 1000));
    if (Clock::now() >= st_->backoff_until) {
      look(workers_changed || Clock::now() - st_->last_whole >= poll);
      workers_changed = false;
    }
    // Sleep until a notification, the next poll, or stop(); a burst of
    // notifications (an iteration's commit, its submissions) makes one look.
    const auto deadline = t0 + poll;
    bool woke = false;
    auto seen = [&](const std::optional<pg::Notification>& n) {
      if (n && n->payload == "workers") workers_changed = true;
      return n.has_value();
    };
    try {
      while (!stop_ && !woke && Clock::now() < deadline) {
        if (!c_ || Clock::now() < st_->backoff_until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          if (!c_ && Clock::now() >= st_->backoff_until) break;
          continue;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        woke = seen(c_->wait_notification(std::clamp(left, std::chrono::milliseconds(1), std::chrono::milliseconds(250))));
      }
      if (woke) {
        const auto until = Clock::now() + std::chrono::milliseconds((int64_t)(o_.min_interval_seconds * 1000));
        while (!stop_ && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        while (c_ && seen(c_->wait_notification(std::chrono::milliseconds(0)))) {
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
