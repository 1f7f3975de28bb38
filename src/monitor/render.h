// The panels, as the API serves them: pure functions of a Snapshot, so that
// every figure on the page can be checked against the database in tests and
// rendered once per snapshot for every browser. docs/dashboard.md documents
// each document's fields.
//
// Strings that come from workers (names, logins, back ends, GPU names) and
// from the coordinator (rejection reasons) are data: JSON-encoded here and
// set with textContent by the page; in CSV, quoted and defused against
// spreadsheet formulas; in /metrics, escaped as label values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "snapshot.h"

namespace gannf::monitor {

// The run's state for people, as gannf-coord status words it: running (a
// coordinator holds it), paused, stopped (gannf-coord stop, or its
// --iterations bound), finished; ready (initialised, never run) and
// interrupted (no coordinator holds a running run); "none" without a run.
std::string run_state(const Snapshot& s);

// Downsampling of the per-iteration series: consecutive iterations in buckets
// of a power-of-two width, the smallest that leaves at most max_points
// buckets, so that bucket edges stay put as the run grows (a chart does not
// shimmer at every update) and 100 000 iterations arrive as ~1000 points.
int64_t bucket_width(size_t rows, size_t max_points);

struct SeriesRequest {
  size_t points = 1000;  // at most this many buckets
  std::optional<int64_t> from, to;  // steps (iteration + 1), inclusive
};
// Parses "points", "from", "to" query values; throws std::invalid_argument
// with one line for a bad one.
SeriesRequest parse_series_request(const std::optional<std::string>& points, const std::optional<std::string>& from,
                                   const std::optional<std::string>& to);

std::string status_json(const Snapshot& s);
// D's and G's losses, D(x), D(G(z)) and D's accuracy: per bucket, the mean
// over its iterations (NULLs left out; null where all were NULL).
std::string losses_json(const Snapshot& s, const SeriesRequest& q);
// images/s (a bucket's images over its seconds), TFLOP/s (that times the
// model's FLOPs per image) and the active workers (a bucket's largest count).
std::string throughput_json(const Snapshot& s, const SeriesRequest& q);
std::string samples_json(const Snapshot& s);
std::string resources_json(const Snapshot& s);

struct LeaderRow {
  int rank = 0;
  std::string login, name;        // name: empty when grouped by login
  std::vector<int64_t> worker_ids;
  std::string backend;            // comma-separated where a login has several
  int64_t units = 0, images = 0, rejected = 0;
  double share = 0;               // of all accepted images
  std::optional<double> images_per_second;  // its own compute rate
  std::vector<std::pair<std::string, int64_t>> reasons;  // most frequent first
  std::optional<bool> quarantined;
  std::optional<int32_t> strikes;  // the login's (sql/0008 strike())
  // The login's units taken off it, the last one's reason and how long it
  // had been allowed, and whether it holds one unit at a time now (sql/0023;
  // nullopt before it).
  std::optional<int64_t> units_taken;
  std::string taken_why;
  std::optional<double> taken_bound;
  std::optional<bool> held_to_one;
  Seconds last_seen = 0, last_submission = 0;
  bool active = false;
};
// By accepted images, then login and name; rank as the 0003 view's rank().
std::vector<LeaderRow> leaderboard(const Snapshot& s, bool by_login);
std::string leaderboard_json(const Snapshot& s, bool by_login);
std::string leaderboard_csv(const Snapshot& s, bool by_login);

// Prometheus' text exposition format (version 0.0.4).
std::string metrics_text(const Snapshot& s);

// The event a live page receives: what changed, in a few fields.
std::string event_json(const Snapshot& s);

// Escapes for the formats above (exposed for the tests).
std::string csv_field(const std::string& v);
std::string prometheus_label(const std::string& v);

}  // namespace gannf::monitor
