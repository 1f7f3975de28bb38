#include "render.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace gannf::monitor {

namespace {

using Json = nlohmann::ordered_json;

// Worker-supplied strings are valid UTF-8 (the server checks its encoding),
// but nothing here should throw on one that is not.
std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

template <class T>
Json opt(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}

// A run's images per epoch and work units per epoch: the coordinator skips a
// last slice of one image (batch norm cannot train on it; coordinator.cpp).
int64_t images_per_epoch(const RunRow& r) {
  return r.images_per_unit > 0 && r.dataset_size % r.images_per_unit == 1 ? r.dataset_size - 1 : r.dataset_size;
}
int64_t units_per_epoch(const RunRow& r) {
  if (r.images_per_unit <= 0) return 0;
  return r.dataset_size / r.images_per_unit + (r.dataset_size % r.images_per_unit >= 2 ? 1 : 0);
}

// images/s over the last minute of updates (the last row's own rate when the
// minute holds one update); 0 when nothing was committed in the last minute.
std::optional<double> recent_rate(const std::vector<HistoryRow>& h, Seconds now) {
  if (h.empty()) return std::nullopt;
  const Seconds t1 = h.back().recorded_at;
  if (now - t1 > 60) return 0.0;
  size_t i = h.size() - 1;
  while (i > 0 && h[i - 1].recorded_at >= t1 - 60) --i;
  if (i + 1 < h.size() && t1 > h[i].recorded_at) {
    int64_t images = 0;
    for (size_t k = i + 1; k < h.size(); ++k) images += h[k].samples;
    return images / (t1 - h[i].recorded_at);
  }
  if (h.back().images_per_second) return *h.back().images_per_second;
  return std::nullopt;
}

struct Range {
  size_t begin = 0, end = 0;  // rows of the history
  int64_t width = 1;
};

Range select(const std::vector<HistoryRow>& h, const SeriesRequest& q) {
  Range r;
  auto lo = std::lower_bound(h.begin(), h.end(), q.from.value_or(INT64_MIN),
                             [](const HistoryRow& x, int64_t step) { return x.iteration + 1 < step; });
  auto hi = std::upper_bound(h.begin(), h.end(), q.to.value_or(INT64_MAX),
                             [](int64_t step, const HistoryRow& x) { return step < x.iteration + 1; });
  r.begin = (size_t)(lo - h.begin());
  r.end = std::max(r.begin, (size_t)(hi - h.begin()));
  if (r.end > r.begin) {
    const int64_t span = h[r.end - 1].iteration - h[r.begin].iteration + 1;
    r.width = bucket_width((size_t)span, q.points);
  }
  return r;
}

// Calls f(first, last) for each bucket of rows [first, last) of the range.
template <class F>
void for_each_bucket(const std::vector<HistoryRow>& h, const Range& r, F&& f) {
  size_t i = r.begin;
  while (i < r.end) {
    const int64_t b = h[i].iteration / r.width;
    size_t j = i + 1;
    while (j < r.end && h[j].iteration / r.width == b) ++j;
    f(i, j);
    i = j;
  }
}

double mean_step(const std::vector<HistoryRow>& h, size_t i, size_t j) {
  double s = 0;
  for (size_t k = i; k < j; ++k) s += (double)(h[k].iteration + 1);
  return s / (double)(j - i);
}

Json mean_of(const std::vector<HistoryRow>& h, size_t i, size_t j, std::optional<float> HistoryRow::*m) {
  if (j - i == 1) return opt(h[i].*m);  // the database's own value
  double s = 0;
  int n = 0;
  for (size_t k = i; k < j; ++k)
    if ((h[k].*m) && std::isfinite(*(h[k].*m))) s += *(h[k].*m), ++n;
  return n ? Json(s / n) : Json(nullptr);
}

std::string iso_utc(Seconds t) {
  if (t <= 0) return "";
  const std::time_t tt = (std::time_t)std::floor(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

}  // namespace

std::string run_state(const Snapshot& s) {
  if (!s.run) return "none";
  // What was asked (sql/0011: finished, stopped, paused) holds with or
  // without a coordinator; 'running' is true only while one holds the run.
  if (s.run->db_status != "running" || s.run->coordinator_running) return s.run->db_status;
  if (s.run->iteration == 0 && s.history->empty()) return "ready";
  return "interrupted";
}

int64_t bucket_width(size_t rows, size_t max_points) {
  if (max_points == 0) max_points = 1;
  int64_t w = 1;
  while ((rows + (size_t)w - 1) / (size_t)w > max_points) w *= 2;
  return w;
}

SeriesRequest parse_series_request(const std::optional<std::string>& points, const std::optional<std::string>& from,
                                   const std::optional<std::string>& to) {
  auto whole = [](const std::string& name, const std::string& v, int64_t lo, int64_t hi) {
    if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos)
      throw std::invalid_argument(name + ": '" + v.substr(0, 40) + "' is not a whole number");
    const int64_t x = std::stoll(v);
    if (x < lo || x > hi)
      throw std::invalid_argument(name + ": " + v + " is out of range (" + std::to_string(lo) + ".." +
                                  std::to_string(hi) + ")");
    return x;
  };
  SeriesRequest q;
  if (points) q.points = (size_t)whole("points", *points, 2, 20000);
  if (from) q.from = whole("from", *from, 0, INT64_C(999999999999999999));
  if (to) q.to = whole("to", *to, 0, INT64_C(999999999999999999));
  if (q.from && q.to && *q.from > *q.to) throw std::invalid_argument("from is after to");
  return q;
}

std::string status_json(const Snapshot& s) {
  Json j;
  j["generation"] = s.generation;
  j["now"] = s.db_now;
  j["database"] = {{"ok", s.db_ok}, {"error", s.db_ok ? Json(nullptr) : Json(s.db_error)}};
  if (!s.run) {
    j["run"] = nullptr;
    return dump(j);
  }
  const RunRow& r = *s.run;
  const std::vector<HistoryRow>& h = *s.history;
  const std::string state = run_state(s);
  const int64_t per_epoch = images_per_epoch(r);
  const int64_t total_images = per_epoch * r.epochs;
  const int64_t epoch_done = per_epoch > 0 ? std::min<int64_t>(s.images_processed / per_epoch, r.epochs) : 0;
  const int64_t epoch = std::min<int64_t>(epoch_done + 1, std::max(r.epochs, 1));
  const double progress =
      per_epoch > 0 ? (double)(s.images_processed - (epoch - 1) * per_epoch) / (double)per_epoch : 0;
  const int64_t units = units_per_epoch(r) * r.epochs;
  const int64_t total_iterations =
      r.units_per_update > 0 ? (units + r.units_per_update - 1) / r.units_per_update : 0;
  const std::optional<double> rate = state == "running" ? recent_rate(h, s.db_now) : std::nullopt;
  int active = 0;
  for (const WorkerRow& w : s.workers) active += w.active;

  Json run;
  run["run_id"] = r.run_id;
  run["state"] = state;
  run["db_status"] = r.db_status;
  run["coordinator_running"] = r.coordinator_running;
  run["iteration"] = r.iteration;
  run["iterations_total"] = total_iterations;
  run["epoch"] = epoch;
  run["epochs"] = r.epochs;
  run["epoch_progress"] = std::clamp(progress, 0.0, 1.0);
  run["images_processed"] = s.images_processed;
  run["images_total"] = total_images;
  run["started_at"] = r.started_at;
  run["last_update_at"] = h.empty() ? Json(nullptr) : Json(h.back().recorded_at);
  // Until now while the run moves; until its last update once it stands still.
  const Seconds end = state == "running" || h.empty() ? s.db_now : h.back().recorded_at;
  run["elapsed_seconds"] = std::max(0.0, end - r.started_at);
  run["images_per_second"] = opt(rate);
  run["tflops"] = rate ? Json(*rate * s.flops_per_image / 1e12) : Json(nullptr);
  run["eta_seconds"] =
      rate && *rate > 0 ? Json(std::max<double>(0, (double)(total_images - s.images_processed) / *rate))
                        : Json(nullptr);
  run["flops_per_image"] = s.flops_per_image;
  run["model"] = {{"image_size", r.model.image_size}, {"channels", r.model.nc}, {"nz", r.model.nz},
                  {"ngf", r.model.ngf},               {"ndf", r.model.ndf},     {"describe", r.model.describe()}};
  run["dataset"] = r.dataset;
  run["dataset_size"] = r.dataset_size;
  run["images_per_unit"] = r.images_per_unit;
  run["units_per_update"] = r.units_per_update;
  run["active_workers"] = active;
  run["registered_workers"] = s.workers.size();
  if (s.logins) {
    int64_t q = 0;
    for (const LoginRow& l : *s.logins) q += l.quarantined;
    run["quarantined_logins"] = q;
  } else {
    run["quarantined_logins"] = nullptr;
  }
  if (h.empty()) {
    run["latest"] = nullptr;
  } else {
    const HistoryRow& x = h.back();
    run["latest"] = {{"step", x.iteration + 1},     {"epoch", x.epoch + 1},       {"loss_d", opt(x.loss_d)},
                     {"loss_g", opt(x.loss_g)},     {"d_real", opt(x.d_real)},    {"d_fake", opt(x.d_fake)},
                     {"d_accuracy", opt(x.d_accuracy)}, {"seconds", opt(x.seconds)}};
  }
  run["latest_grid"] = s.grids->empty() ? Json(nullptr) : Json(s.grids->back().iteration);
  j["run"] = run;
  return dump(j);
}

std::string losses_json(const Snapshot& s, const SeriesRequest& q) {
  const std::vector<HistoryRow>& h = *s.history;
  const Range r = select(h, q);
  Json j, step = Json::array(), ld = Json::array(), lg = Json::array(), dr = Json::array(), df = Json::array(),
          da = Json::array();
  for_each_bucket(h, r, [&](size_t i, size_t k) {
    step.push_back(mean_step(h, i, k));
    ld.push_back(mean_of(h, i, k, &HistoryRow::loss_d));
    lg.push_back(mean_of(h, i, k, &HistoryRow::loss_g));
    dr.push_back(mean_of(h, i, k, &HistoryRow::d_real));
    df.push_back(mean_of(h, i, k, &HistoryRow::d_fake));
    da.push_back(mean_of(h, i, k, &HistoryRow::d_accuracy));
  });
  j["generation"] = s.generation;
  j["rows"] = r.end - r.begin;
  j["bucket"] = r.width;
  j["step"] = std::move(step);
  j["loss_d"] = std::move(ld);
  j["loss_g"] = std::move(lg);
  j["d_real"] = std::move(dr);
  j["d_fake"] = std::move(df);
  j["d_accuracy"] = std::move(da);
  return dump(j);
}

std::string throughput_json(const Snapshot& s, const SeriesRequest& q) {
  const std::vector<HistoryRow>& h = *s.history;
  const Range r = select(h, q);
  Json j, step = Json::array(), ips = Json::array(), tf = Json::array(), aw = Json::array();
  for_each_bucket(h, r, [&](size_t i, size_t k) {
    step.push_back(mean_step(h, i, k));
    std::optional<double> rate;
    if (k - i == 1) {
      if (h[i].images_per_second) rate = *h[i].images_per_second;
    } else {
      double images = 0, secs = 0;
      for (size_t m = i; m < k; ++m)
        if (h[m].seconds && *h[m].seconds > 0) images += h[m].samples, secs += *h[m].seconds;
      if (secs > 0) rate = images / secs;
    }
    ips.push_back(opt(rate));
    tf.push_back(rate ? Json(*rate * s.flops_per_image / 1e12) : Json(nullptr));
    std::optional<int32_t> most;
    for (size_t m = i; m < k; ++m)
      if (h[m].active_workers) most = std::max(most.value_or(0), *h[m].active_workers);
    aw.push_back(opt(most));
  });
  j["generation"] = s.generation;
  j["rows"] = r.end - r.begin;
  j["bucket"] = r.width;
  j["flops_per_image"] = s.flops_per_image;
  j["step"] = std::move(step);
  j["images_per_second"] = std::move(ips);
  j["tflops"] = std::move(tf);
  j["active_workers"] = std::move(aw);
  return dump(j);
}

std::string samples_json(const Snapshot& s) {
  Json j, it = Json::array(), ep = Json::array(), at = Json::array(), by = Json::array();
  for (const GridInfo& g : *s.grids) {
    it.push_back(g.iteration);
    ep.push_back(g.epoch + 1);
    at.push_back(g.recorded_at);
    by.push_back(g.bytes);
  }
  j["generation"] = s.generation;
  j["count"] = s.grids->size();
  j["latest"] = s.grids->empty() ? Json(nullptr) : Json(s.grids->back().iteration);
  j["iteration"] = std::move(it);
  j["epoch"] = std::move(ep);
  j["recorded_at"] = std::move(at);
  j["bytes"] = std::move(by);
  return dump(j);
}

std::string resources_json(const Snapshot& s) {
  int64_t cores = 0, ram = 0, gpus = 0, gpu_mem = 0, n = 0;
  std::map<std::string, int64_t> backends;
  Json ws = Json::array();
  for (const WorkerRow& w : s.workers) {
    if (!w.active) continue;
    ++n;
    cores += w.cpu_cores.value_or(0);
    ram += w.ram_bytes.value_or(0);
    if (w.gpu_name && !w.gpu_name->empty()) ++gpus, gpu_mem += w.gpu_memory_bytes.value_or(0);
    backends[w.backend.value_or("unknown")] += 1;
    ws.push_back({{"id", w.id},
                  {"login", w.login},
                  {"name", w.name},
                  {"backend", opt(w.backend)},
                  {"cpu_cores", opt(w.cpu_cores)},
                  {"ram_bytes", opt(w.ram_bytes)},
                  {"gpu_name", opt(w.gpu_name)},
                  {"gpu_memory_bytes", opt(w.gpu_memory_bytes)},
                  {"batch_size", opt(w.batch_size)},
                  {"last_seen", w.last_seen}});
  }
  Json j;
  j["generation"] = s.generation;
  j["totals"] = {{"workers", n},   {"registered_workers", s.workers.size()},
                 {"cpu_cores", cores}, {"ram_bytes", ram},
                 {"gpus", gpus},   {"gpu_memory_bytes", gpu_mem},
                 {"backends", backends}};
  j["workers"] = std::move(ws);
  return dump(j);
}

std::vector<LeaderRow> leaderboard(const Snapshot& s, bool by_login) {
  std::vector<LeaderRow> rows;
  std::map<std::string, size_t> by_name;  // login -> row, when grouping
  std::map<std::string, int64_t> reason_counts;
  std::vector<std::map<std::string, int64_t>> reasons;
  std::vector<double> secs, timed;
  std::vector<std::set<std::string>> backends;
  for (const WorkerRow& w : s.workers) {
    size_t k;
    auto g = by_name.find(w.login);
    if (by_login && g != by_name.end()) {
      k = g->second;
    } else {
      k = rows.size();
      rows.emplace_back();
      reasons.emplace_back();
      secs.push_back(0);
      timed.push_back(0);
      backends.emplace_back();
      rows[k].login = w.login;
      if (!by_login) rows[k].name = w.name;
      if (by_login) by_name[w.login] = k;
    }
    LeaderRow& r = rows[k];
    r.worker_ids.push_back(w.id);
    if (w.backend) backends[k].insert(*w.backend);
    r.last_seen = std::max(r.last_seen, w.last_seen);
    r.active = r.active || w.active;
    if (w.quarantined) r.quarantined = r.quarantined.value_or(false) || *w.quarantined;
    if (w.strikes) r.strikes = std::max(r.strikes.value_or(0), *w.strikes);
    auto t = s.tallies.find(w.id);
    if (t == s.tallies.end()) continue;
    const Tally& x = t->second;
    r.units += x.units;
    r.images += x.images;
    r.rejected += x.rejected;
    r.last_submission = std::max(r.last_submission, x.last_submission);
    secs[k] += x.compute_seconds;
    timed[k] += (double)x.timed_images;
    for (const auto& [why, n] : x.reasons) reasons[k][why] += n;
  }
  std::map<std::string, const LoginRow*> login_rows;
  if (s.logins)
    for (const LoginRow& l : *s.logins) login_rows[l.login] = &l;
  int64_t total = 0;
  for (const LeaderRow& r : rows) total += r.images;
  for (size_t k = 0; k < rows.size(); ++k) {
    LeaderRow& r = rows[k];
    if (s.logins_taken) {
      auto l = login_rows.find(r.login);
      r.units_taken = l == login_rows.end() ? 0 : l->second->units_taken;
      r.held_to_one = l != login_rows.end() && l->second->held_to_one;
      if (l != login_rows.end()) {
        r.taken_why = l->second->taken_why;
        r.taken_bound = l->second->taken_bound;
      }
    }
    r.share = total > 0 ? (double)r.images / (double)total : 0;
    if (secs[k] > 0) r.images_per_second = timed[k] / secs[k];
    for (const std::string& b : backends[k]) r.backend += (r.backend.empty() ? "" : ",") + b;
    r.reasons.assign(reasons[k].begin(), reasons[k].end());
    std::stable_sort(r.reasons.begin(), r.reasons.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
  }
  std::sort(rows.begin(), rows.end(), [](const LeaderRow& a, const LeaderRow& b) {
    if (a.images != b.images) return a.images > b.images;
    if (a.login != b.login) return a.login < b.login;
    return a.name < b.name;
  });
  for (size_t k = 0; k < rows.size(); ++k)
    rows[k].rank = k > 0 && rows[k].images == rows[k - 1].images ? rows[k - 1].rank : (int)k + 1;
  return rows;
}

std::string leaderboard_json(const Snapshot& s, bool by_login) {
  Json rows = Json::array();
  int64_t total = 0;
  for (const LeaderRow& r : leaderboard(s, by_login)) {
    total += r.images;
    Json reasons = Json::array();
    for (const auto& [why, n] : r.reasons) reasons.push_back({{"reason", why}, {"count", n}});
    Json row;
    row["rank"] = r.rank;
    row["login"] = r.login;
    row["name"] = by_login ? Json(nullptr) : Json(r.name);
    row["worker_ids"] = r.worker_ids;
    row["backend"] = r.backend;
    row["units"] = r.units;
    row["images"] = r.images;
    row["share"] = r.share;
    row["images_per_second"] = opt(r.images_per_second);
    row["rejected"] = r.rejected;
    row["reasons"] = std::move(reasons);
    row["quarantined"] = opt(r.quarantined);
    row["strikes"] = opt(r.strikes);
    row["units_taken"] = opt(r.units_taken);
    row["taken_why"] = r.taken_why.empty() ? Json(nullptr) : Json(r.taken_why);
    row["taken_bound"] = opt(r.taken_bound);
    row["held_to_one"] = opt(r.held_to_one);
    row["last_seen"] = r.last_seen;
    row["last_submission"] = r.last_submission > 0 ? Json(r.last_submission) : Json(nullptr);
    row["active"] = r.active;
    rows.push_back(std::move(row));
  }
  Json j;
  j["generation"] = s.generation;
  j["by"] = by_login ? "login" : "worker";
  j["total_images"] = total;
  j["rows"] = std::move(rows);
  return dump(j);
}

std::string csv_field(const std::string& v) {
  std::string x = v;
  // A cell a spreadsheet would evaluate (=, +, -, @, or a tab or CR before
  // one) becomes text: a worker named "=HYPERLINK(...)" stays a name.
  if (!x.empty() && std::string("=+-@\t\r").find(x[0]) != std::string::npos) x = "'" + x;
  if (x.find_first_of(",\"\r\n") == std::string::npos) return x;
  std::string q = "\"";
  for (char ch : x) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

std::string leaderboard_csv(const Snapshot& s, bool by_login) {
  std::string out = by_login ? "rank,login,workers" : "rank,login,worker";
  out += ",backend,units,images,share_percent,images_per_second,rejected,reject_reasons,quarantined,strikes,"
         "units_taken_off,last_taken_why,held_to_one,last_seen_utc\r\n";
  char num[64];
  // Cells joined one by one: the rows are text a worker chose, each through csv_field.
  auto cells = [&out](std::initializer_list<std::string> xs) {
    bool first = true;
    for (const std::string& x : xs) {
      if (!first) out += ',';
      out += x;
      first = false;
    }
    out += "\r\n";
  };
  for (const LeaderRow& r : leaderboard(s, by_login)) {
    std::string reasons;
    for (const auto& [why, n] : r.reasons) {
      if (!reasons.empty()) reasons += "; ";
      reasons += why;
      reasons += " (" + std::to_string(n) + ")";
    }
    std::snprintf(num, sizeof num, "%.2f", 100 * r.share);
    const std::string share = num;
    std::string rate;
    if (r.images_per_second) {
      std::snprintf(num, sizeof num, "%.1f", *r.images_per_second);
      rate = num;
    }
    cells({std::to_string(r.rank), csv_field(r.login),
           by_login ? std::to_string(r.worker_ids.size()) : csv_field(r.name), csv_field(r.backend),
           std::to_string(r.units), std::to_string(r.images), share, rate, std::to_string(r.rejected),
           csv_field(reasons), r.quarantined ? (*r.quarantined ? "yes" : "no") : "",
           r.strikes ? std::to_string(*r.strikes) : "", r.units_taken ? std::to_string(*r.units_taken) : "",
           csv_field(r.taken_why), r.held_to_one ? (*r.held_to_one ? "yes" : "no") : "", iso_utc(r.last_seen)});
  }
  return out;
}

std::string prometheus_label(const std::string& v) {
  std::string o;
  for (char ch : v) {
    if (ch == '\\') o += "\\\\";
    else if (ch == '"') o += "\\\"";
    else if (ch == '\n') o += "\\n";
    else o += ch;
  }
  return o;
}

std::string metrics_text(const Snapshot& s) {
  std::string o;
  char b[128];
  auto num = [&](double v) {
    if (std::isnan(v)) return std::string("NaN");
    if (std::isinf(v)) return std::string(v > 0 ? "+Inf" : "-Inf");
    std::snprintf(b, sizeof b, "%.17g", v);
    return std::string(b);
  };
  auto family = [&](const std::string& name, const char* type, const std::string& help) {
    o += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto sample = [&](const std::string& name, double v, const std::string& labels = "") {
    o += name + (labels.empty() ? "" : "{" + labels + "}") + " " + num(v) + "\n";
  };
  family("gannf_up", "gauge", "Whether the dashboard could read the database at its last look (1) or not (0).");
  sample("gannf_up", s.db_ok ? 1 : 0);
  family("gannf_run_info", "gauge", "The run in the database (value 1; no sample without a run).");
  if (s.run)
    sample("gannf_run_info", 1,
           "run_id=\"" + prometheus_label(s.run->run_id) + "\",model=\"" + prometheus_label(s.run->model.describe()) +
               "\"");
  family("gannf_run_state", "gauge",
         "The run's state: 1 for the current one of running, paused, stopped, finished, ready, interrupted.");
  for (const char* st : {"running", "paused", "stopped", "finished", "ready", "interrupted"})
    if (s.run) sample("gannf_run_state", run_state(s) == st ? 1 : 0, std::string("state=\"") + st + "\"");
  family("gannf_coordinator_up", "gauge", "Whether a gannf-coord holds the run (1) or not (0).");
  if (s.run) sample("gannf_coordinator_up", s.run->coordinator_running ? 1 : 0);
  family("gannf_updates_total", "counter", "Updates committed by the coordinator (the weights' iteration).");
  if (s.run) sample("gannf_updates_total", (double)s.run->iteration);
  family("gannf_images_processed_total", "counter", "Images whose gradients went into an update.");
  if (s.run) sample("gannf_images_processed_total", (double)s.images_processed);
  family("gannf_model_flops_per_image", "gauge",
         "Floating-point operations of one image's share of a GAN step, from the layer shapes.");
  if (s.run) sample("gannf_model_flops_per_image", s.flops_per_image);
  const std::vector<HistoryRow>& h = *s.history;
  const HistoryRow* last = h.empty() ? nullptr : &h.back();
  auto last_metric = [&](const std::string& name, const std::string& help, std::optional<float> HistoryRow::*m) {
    family(name, "gauge", help);
    if (last && (last->*m)) sample(name, *(last->*m));
  };
  last_metric("gannf_discriminator_loss", "D's loss at the last update.", &HistoryRow::loss_d);
  last_metric("gannf_generator_loss", "G's loss at the last update.", &HistoryRow::loss_g);
  last_metric("gannf_discriminator_real_score", "Mean D(x) over the last update's real images.", &HistoryRow::d_real);
  last_metric("gannf_discriminator_fake_score", "Mean D(G(z)) over the last update's fakes.", &HistoryRow::d_fake);
  last_metric("gannf_discriminator_accuracy_ratio", "D's accuracy on real and fake at the last update.",
              &HistoryRow::d_accuracy);
  last_metric("gannf_last_update_seconds", "Wall time of the last update, commit to commit.", &HistoryRow::seconds);
  family("gannf_last_update_timestamp_seconds", "gauge", "When the last update was committed (Unix time).");
  if (last) sample("gannf_last_update_timestamp_seconds", last->recorded_at);

  int64_t active = 0, cores = 0, ram = 0, gpus = 0, gpu_mem = 0;
  for (const WorkerRow& w : s.workers)
    if (w.active) {
      ++active;
      cores += w.cpu_cores.value_or(0);
      ram += w.ram_bytes.value_or(0);
      if (w.gpu_name && !w.gpu_name->empty()) ++gpus, gpu_mem += w.gpu_memory_bytes.value_or(0);
    }
  family("gannf_workers_active", "gauge", "Workers present: seen within 90 s and not left (sql/0011).");
  sample("gannf_workers_active", (double)active);
  family("gannf_workers_registered", "gauge", "Workers ever registered with this database.");
  sample("gannf_workers_registered", (double)s.workers.size());
  family("gannf_workers_cpu_cores", "gauge", "CPU cores of the active workers.");
  sample("gannf_workers_cpu_cores", (double)cores);
  family("gannf_workers_memory_bytes", "gauge", "RAM of the active workers.");
  sample("gannf_workers_memory_bytes", (double)ram);
  family("gannf_workers_gpus", "gauge", "GPUs of the active workers.");
  sample("gannf_workers_gpus", (double)gpus);
  family("gannf_workers_gpu_memory_bytes", "gauge", "GPU memory of the active workers.");
  sample("gannf_workers_gpu_memory_bytes", (double)gpu_mem);

  const std::vector<LeaderRow> board = leaderboard(s, false);
  auto labels = [&](const LeaderRow& r) {
    return "login=\"" + prometheus_label(r.login) + "\",worker=\"" + prometheus_label(r.name) + "\"";
  };
  family("gannf_worker_units_total", "counter", "Work units a worker computed that were accepted.");
  for (const LeaderRow& r : board) sample("gannf_worker_units_total", (double)r.units, labels(r));
  family("gannf_worker_images_total", "counter", "Images a worker computed that were accepted.");
  for (const LeaderRow& r : board) sample("gannf_worker_images_total", (double)r.images, labels(r));
  family("gannf_worker_rejected_total", "counter", "A worker's submissions the coordinator rejected.");
  for (const LeaderRow& r : board) sample("gannf_worker_rejected_total", (double)r.rejected, labels(r));
  family("gannf_worker_last_seen_timestamp_seconds", "gauge", "When a worker was last heard from (Unix time).");
  for (const LeaderRow& r : board) sample("gannf_worker_last_seen_timestamp_seconds", r.last_seen, labels(r));
  if (s.logins) {  // the database tracks quarantines (sql/0013)
    int64_t quarantined = 0;
    for (const LoginRow& l : *s.logins) quarantined += l.quarantined;
    family("gannf_quarantined_logins", "gauge", "Student logins whose work the run refuses (sql/0008).");
    sample("gannf_quarantined_logins", (double)quarantined);
    family("gannf_login_strikes", "gauge", "A login's strikes: rejected submissions, sessions the reaper ended.");
    for (const LoginRow& l : *s.logins)
      sample("gannf_login_strikes", (double)l.strikes, "login=\"" + prometheus_label(l.login) + "\"");
  }
  if (s.logins && s.logins_taken) {  // sql/0023
    family("gannf_login_units_taken_total", "counter",
           "Units taken off a login unfinished: late, past the hold bound, a lease that passed, an update closed "
           "without them.");
    for (const LoginRow& l : *s.logins)
      if (l.units_taken > 0)
        sample("gannf_login_units_taken_total", (double)l.units_taken, "login=\"" + prometheus_label(l.login) + "\"");
    int64_t held = 0;
    for (const LoginRow& l : *s.logins) held += l.held_to_one;
    family("gannf_logins_held_to_one_unit", "gauge", "Logins that hold one unit at a time: a unit was taken off "
                                                      "them and no submission of theirs was accepted since.");
    sample("gannf_logins_held_to_one_unit", (double)held);
  }
  return o;
}

std::string event_json(const Snapshot& s) {
  Json j;
  j["generation"] = s.generation;
  j["state"] = run_state(s);
  j["iteration"] = s.run ? Json(s.run->iteration) : Json(nullptr);
  j["latest_grid"] = s.grids->empty() ? Json(nullptr) : Json(s.grids->back().iteration);
  j["database"] = s.db_ok;
  return dump(j);
}

}  // namespace gannf::monitor
