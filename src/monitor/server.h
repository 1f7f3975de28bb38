// gannf-dash's web server (cpp-httplib): the page, its assets, a JSON API
// behind every panel, the sample grids and the time-lapse, live updates as
// Server-Sent Events, and /metrics for Prometheus. docs/dashboard.md lists
// every path and parameter.
//
// Safe by default:
//  - read-only: GET and HEAD only (other methods: 405); no endpoint writes,
//    and the database session itself is read-only (monitor.cpp);
//  - bound to 127.0.0.1 unless told otherwise; any address that other
//    machines can reach requires an access token (a cookie set from
//    ?token=..., or "Authorization: Bearer ..."), checked on every request;
//    without a token, requests must name a loopback host, so that a web page
//    elsewhere cannot read the dashboard through DNS rebinding;
//  - unknown paths: 404; unknown or bad parameters: 400 with one line;
//  - a shared dashboard (any other address) is reached through a gate
//    (gate.h) that reads each request whole, within 5 s, before a thread
//    of the web server sees it, and bounds each client's connections;
//  - a Content-Security-Policy that runs no inline script, and a page that
//    sets every worker-supplied string with textContent.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "monitor.h"
#include "timelapse.h"

namespace httplib {
class Server;
}

namespace gannf::monitor {

class Gate;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8765;                // 0: any free port (port() says which)
  std::string token;              // required unless host is a loopback address
  int max_streams = 128;          // live pages at once; more get 503 and poll instead
  int per_client = 16;            // a shared dashboard's connections per client address (gate.h)
  size_t default_frames = 48;     // of the time-lapse
  std::function<void(const std::string&)> log;
};

// Loopback addresses (127.0.0.0/8, ::1, "localhost"): only this machine reaches them.
bool is_loopback(const std::string& host);

class DashServer {
 public:
  // Binds at once; throws std::runtime_error saying why it cannot (a port in
  // use, an address that is not this machine's, a public address without a token).
  DashServer(Monitor& m, ServerOptions o);
  ~DashServer();
  int port() const { return port_; }
  std::string url() const;  // the address to open, with the token when there is one
  // Serves until stop() (from another thread or a signal's watcher).
  void run();
  void stop();
  int live_streams() const { return streams_; }

 private:
  void routes();
  // The body rendered once per snapshot under `key`.
  std::shared_ptr<const std::string> rendered(const std::shared_ptr<const Snapshot>& s, const std::string& key,
                                              const std::function<std::string()>& render);

  Monitor& m_;
  ServerOptions o_;
  std::unique_ptr<httplib::Server> svr_;
  // In front of a shared dashboard (host not loopback): the public address
  // is the gate's, the web server listens on 127.0.0.1 behind it.
  std::unique_ptr<Gate> gate_;
  int port_ = 0;
  std::atomic<int> streams_{0};
  std::atomic<bool> stopping_{false};
  Timelapse timelapse_;

  std::mutex cache_mu_;
  const Snapshot* cache_for_ = nullptr;
  std::shared_ptr<const Snapshot> cache_snap_;
  std::map<std::string, std::shared_ptr<const std::string>> cache_;
};

}  // namespace gannf::monitor
