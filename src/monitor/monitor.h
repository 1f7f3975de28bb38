// The dashboard's one view of the database. A thread of its own holds ONE
// connection that LISTENs (gannf_monitor: the run's state changed, a grid or a
// worker arrived; gannf_submission: a submission arrived) and polls every few
// seconds for what announces nothing (heartbeats, leases that pass). Each
// look is one statement (gannf.monitor_look, sql/0016) and reads only what is
// new since the last one (loss history and grids by
// iteration, submissions by id, folded into per-worker tallies once their
// iteration is closed), so a look costs the same at iteration 10 and at
// iteration 100 000; and every HTTP request is served from the published
// Snapshot, so a hundred browsers cost the database what one costs.
//
// A second connection, used under a lock and only on demand, fetches the PNG
// bytes of sample grids, which are cached here (they never change).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "pg.h"
#include "snapshot.h"

namespace gannf::monitor {

struct MonitorOptions {
  std::string conninfo;
  double poll_seconds = 2;           // a look at least this often
  double min_interval_seconds = 0.2; // and at most this often: a burst of NOTIFYs is one look
  size_t grid_cache_bytes = 64u << 20;
  std::function<void(const std::string&)> log;  // one line per event worth telling
};

class Monitor {
 public:
  // Connects once, checks that the login can read what the dashboard needs
  // (throws std::runtime_error saying what to do if not) and takes the first
  // look; then start() runs the loop on its thread.
  explicit Monitor(MonitorOptions o);
  ~Monitor();
  void start();
  void stop();

  std::shared_ptr<const Snapshot> snapshot() const;
  // Waits until the generation differs from `seen`, `timeout` passes or
  // stop(); returns the snapshot then.
  std::shared_ptr<const Snapshot> wait_for_change(uint64_t seen, std::chrono::milliseconds timeout) const;
  bool stopping() const { return stop_; }

  // The PNG of the grid of `iteration`; nullptr when there is none (or the
  // database cannot be reached: `error` says so). Thread-safe.
  std::shared_ptr<const std::string> grid_png(int64_t iteration, std::string* error = nullptr);
  // How many looks at the database so far (for the tests and the benchmark).
  uint64_t looks() const { return looks_; }

  // One look now, on the caller's thread (the loop's body; tests call it).
  // `whole`: the workers, the logins and the coordinator's lock too; else
  // those stay as the last whole look saw them (the first look is whole).
  void look(bool whole = true);

 private:
  void loop();
  void connect();
  void publish(std::shared_ptr<Snapshot> s);

  MonitorOptions o_;
  std::unique_ptr<pg::Connection> c_;      // the listener; only the loop's thread uses it
  std::unique_ptr<pg::Connection> fetch_;  // grid bytes, under fetch_mu_
  std::mutex fetch_mu_;

  // What the loop keeps between looks.
  struct State;
  std::unique_ptr<State> st_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::shared_ptr<const Snapshot> snap_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> looks_{0};
  std::thread thread_;

  // Grid bytes by iteration, least recently used first out.
  std::mutex cache_mu_;
  std::list<std::pair<int64_t, std::shared_ptr<const std::string>>> lru_;
  std::map<int64_t, decltype(lru_)::iterator> cache_;
  size_t cache_bytes_ = 0;
  std::string cache_run_;
};

}  // namespace gannf::monitor
