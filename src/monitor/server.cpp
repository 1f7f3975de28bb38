#include "server.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <httplib.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "gate.h"
#include "render.h"
#include "web_assets.h"

namespace gannf::monitor {

namespace {

using httplib::Request;
using httplib::Response;

constexpr const char* kCookie = "gannf_dash_token";

bool same_secret(const std::string& a, const std::string& b) {
  // Time independent of where they differ.
  unsigned char d = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i) d |= (unsigned char)(a[i] ^ (i < b.size() ? b[i] : 0));
  return d == 0 && !a.empty();
}

std::string cookie_value(const Request& req, const std::string& name) {
  const std::string c = req.get_header_value("Cookie");
  size_t i = 0;
  while (i < c.size()) {
    size_t j = c.find(';', i);
    if (j == std::string::npos) j = c.size();
    std::string kv = c.substr(i, j - i);
    const size_t s = kv.find_first_not_of(' ');
    kv = s == std::string::npos ? "" : kv.substr(s);
    if (kv.rfind(name + "=", 0) == 0) return kv.substr(name.size() + 1);
    i = j + 1;
  }
  return "";
}

// The host part of a Host header: "127.0.0.1:8765" -> 127.0.0.1, "[::1]:80" -> ::1.
std::string host_of(const std::string& h) {
  if (!h.empty() && h[0] == '[') {
    const size_t e = h.find(']');
    return e == std::string::npos ? "" : h.substr(1, e - 1);
  }
  const size_t c = h.find(':');
  return c == std::string::npos ? h : h.substr(0, c);
}

std::string json_error(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void fail(Response& res, int status, const std::string& message, bool json) {
  res.status = status;
  if (json) res.set_content(json_error(message), "application/json");
  else res.set_content(message + "\n", "text/plain; charset=utf-8");
}

bool is_api(const Request& req) { return req.path.rfind("/api/", 0) == 0; }

// 400 unless every parameter is one this path takes (or the token).
bool only_params(const Request& req, Response& res, const std::vector<const char*>& allowed) {
  for (const auto& [k, v] : req.params) {
    if (k == "token") continue;
    bool ok = false;
    for (const char* a : allowed) ok = ok || k == a;
    if (!ok) {
      std::string takes;
      for (const char* a : allowed) takes += (takes.empty() ? "" : ", ") + std::string(a);
      fail(res, 400,
           "unknown parameter '" + k.substr(0, 40) + "'" +
               (takes.empty() ? " (this path takes none)" : " (this path takes: " + takes + ")"),
           is_api(req));
      return false;
    }
  }
  return true;
}

std::optional<std::string> param(const Request& req, const char* name) {
  if (!req.has_param(name)) return std::nullopt;
  return req.get_param_value(name);
}

// by=worker (default) or by=login.
std::optional<bool> by_login(const Request& req, Response& res) {
  const auto by = param(req, "by");
  if (!by || *by == "worker") return false;
  if (*by == "login") return true;
  fail(res, 400, "by: '" + by->substr(0, 40) + "' is neither 'worker' nor 'login'", is_api(req));
  return std::nullopt;
}

}  // namespace

bool is_loopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) == 1) return (ntohl(a.s_addr) >> 24) == 127;
  return false;
}

DashServer::DashServer(Monitor& m, ServerOptions o) : m_(m), o_(std::move(o)), svr_(std::make_unique<httplib::Server>()) {
  if (!is_loopback(o_.host) && o_.token.empty())
    throw std::runtime_error("--listen " + o_.host +
                             " lets other machines read the dashboard: give it an access token (--token, at least 16 "
                             "characters, or --token auto), or listen on 127.0.0.1");
  if (!o_.token.empty() && o_.token.size() < 16)
    throw std::runtime_error("--token: at least 16 characters (or --token auto for a random one)");
  if (o_.token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~") !=
      std::string::npos)
    throw std::runtime_error("--token: letters, digits and -_.~ only (it travels in a URL and a cookie)");
  if (o_.max_streams < 1) throw std::runtime_error("--max-streams must be at least 1");
  // One thread per connection: live pages hold theirs, so the pool is larger
  // than the number of them; the rest are for requests and keep-alives.
  const size_t threads = (size_t)o_.max_streams + 32;
  svr_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr_->set_keep_alive_timeout(3);
  svr_->set_payload_max_length(4096);
  svr_->set_default_headers({
      {"Content-Security-Policy",
       "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
      {"X-Content-Type-Options", "nosniff"},
      {"Referrer-Policy", "no-referrer"},
      {"X-Frame-Options", "DENY"},
  });
  routes();
  if (!is_loopback(o_.host)) {
    // Shared: the gate takes the public address, the web server a loopback
    // port only the gate uses.
    const int inner = svr_->bind_to_any_port("127.0.0.1");
    if (inner <= 0) throw std::runtime_error("cannot listen on 127.0.0.1, behind --listen " + o_.host);
    GateOptions g;
    g.host = o_.host;
    g.port = o_.port;
    g.backend_port = inner;
    g.per_client = o_.per_client;
    g.max_connections = std::max(400, o_.max_streams + 64);
    gate_ = std::make_unique<Gate>(g);
    port_ = gate_->port();
    return;
  }
  if (o_.port == 0) {
    port_ = svr_->bind_to_any_port(o_.host);
    if (port_ < 0) port_ = 0;
  } else {
    port_ = svr_->bind_to_port(o_.host, o_.port) ? o_.port : 0;
  }
  if (port_ <= 0)
    throw std::runtime_error("cannot listen on " + o_.host + " port " + std::to_string(o_.port) +
                             ": in use, or not an address of this machine (--listen, --port)");
}

DashServer::~DashServer() { stop(); }

std::string DashServer::url() const {
  std::string host = o_.host;
  if (host == "0.0.0.0" || host == "::") {
    char name[256] = {0};
    host = gethostname(name, sizeof name - 1) == 0 && name[0] ? name : "localhost";
  }
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "http://" + host + ":" + std::to_string(port_) + "/" + (o_.token.empty() ? "" : "?token=" + o_.token);
}

void DashServer::run() {
  if (!gate_) {
    svr_->listen_after_bind();
    return;
  }
  std::thread inner([this] { svr_->listen_after_bind(); });
  gate_->run();
  svr_->stop();
  inner.join();
}

void DashServer::stop() {
  if (stopping_.exchange(true)) return;
  m_.stop();  // wakes every live page's wait, which then ends its stream
  if (gate_) gate_->stop();
  svr_->stop();
}

std::shared_ptr<const std::string> DashServer::rendered(const std::shared_ptr<const Snapshot>& s,
                                                        const std::string& key,
                                                        const std::function<std::string()>& render) {
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    if (cache_for_ != s.get()) {
      cache_.clear();
      cache_for_ = s.get();
      cache_snap_ = s;  // keeps the address from being reused while it is the key
    }
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
  }
  // Rendered outside the lock: two requests may both render the first time,
  // which costs less than making every other panel wait.
  auto body = std::make_shared<const std::string>(render());
  std::lock_guard<std::mutex> l(cache_mu_);
  if (cache_for_ == s.get()) {
    if (cache_.size() > 64) cache_.clear();  // arbitrary ranges must not grow it without end
    cache_.emplace(key, body);
  }
  return body;
}

void DashServer::routes() {
  httplib::Server& svr = *svr_;

  svr.set_pre_routing_handler([this](const Request& req, Response& res) {
    if (!o_.token.empty()) {
      std::string given = cookie_value(req, kCookie);
      const std::string auth = req.get_header_value("Authorization");
      if (auth.rfind("Bearer ", 0) == 0) given = auth.substr(7);
      const bool in_url = req.has_param("token");
      if (in_url) given = req.get_param_value("token");
      if (!same_secret(given, o_.token)) {
        fail(res, 401,
             "this dashboard needs its access token: open the address gannf-dash printed (.../?token=...), or send "
             "'Authorization: Bearer <token>'",
             is_api(req));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (in_url && (req.path == "/" || req.path == "/index.html")) {
        // Into a cookie, and out of the address bar (and of screenshots).
        res.status = 303;
        res.set_header("Location", "/");
        res.set_header("Set-Cookie",
                       std::string(kCookie) + "=" + o_.token + "; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000");
        return httplib::Server::HandlerResponse::Handled;
      }
    } else if (!is_loopback(host_of(req.get_header_value("Host")))) {
      fail(res, 403,
           "this dashboard answers to 127.0.0.1 and localhost only (it was started without a token); open "
           "http://127.0.0.1:" + std::to_string(port_) + "/",
           is_api(req));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  svr.set_exception_handler([this](const Request&, Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    if (o_.log) o_.log("internal error: " + what);
    fail(res, 500, "internal error: " + what, true);
  });
  svr.set_error_handler([](const Request& req, Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) fail(res, 404, "no such page: " + req.path.substr(0, 80) + " (see docs/dashboard.md)", is_api(req));
  });
  // Read-only: nothing but GET and HEAD.
  auto refuse = [](const Request& req, Response& res) {
    res.set_header("Allow", "GET, HEAD");
    fail(res, 405, "read-only: " + req.method + " is not allowed here (GET and HEAD only)", is_api(req));
  };
  svr.Post(".*", refuse);
  svr.Put(".*", refuse);
  svr.Patch(".*", refuse);
  svr.Delete(".*", refuse);
  svr.Options(".*", refuse);

  for (const WebAsset& a : web_assets()) {
    auto serve = [a](const Request& req, Response& res) {
      if (!only_params(req, res, {})) return;
      res.set_header("Cache-Control", "no-cache");
      res.set_content(std::string(a.body), std::string(a.content_type));
    };
    svr.Get(std::string(a.path), serve);
    if (a.path == "/index.html") svr.Get("/", serve);
  }

  auto json = [this](const std::string& key, std::initializer_list<const char*> allowed,
                     std::function<std::string(const Snapshot&, const Request&)> render) {
    return [this, key, allowed = std::vector<const char*>(allowed), render](const Request& req, Response& res) {
      if (!only_params(req, res, allowed)) return;
      const auto s = m_.snapshot();
      std::string k = key;
      for (const char* a : allowed)
        if (req.has_param(a)) k += std::string("&") + a + "=" + req.get_param_value(a);
      auto body = rendered(s, k, [&] { return render(*s, req); });
      res.set_header("Cache-Control", "no-store");
      res.set_content(*body, "application/json");
    };
  };
  auto series = [](const Request& req) {
    return parse_series_request(param(req, "points"), param(req, "from"), param(req, "to"));
  };
  // Bad values throw std::invalid_argument: 400 with its line.
  auto guarded = [](auto handler) {
    return [handler](const Request& req, Response& res) {
      try {
        handler(req, res);
      } catch (const std::invalid_argument& e) {
        fail(res, 400, e.what(), is_api(req));
      }
    };
  };
  svr.Get("/api/status", json("status", {}, [](const Snapshot& s, const Request&) { return status_json(s); }));
  svr.Get("/api/losses", guarded(json("losses", {"points", "from", "to"}, [series](const Snapshot& s, const Request& r) {
            return losses_json(s, series(r));
          })));
  svr.Get("/api/throughput",
          guarded(json("throughput", {"points", "from", "to"},
                       [series](const Snapshot& s, const Request& r) { return throughput_json(s, series(r)); })));
  svr.Get("/api/samples", json("samples", {}, [](const Snapshot& s, const Request&) { return samples_json(s); }));
  svr.Get("/api/resources", json("resources", {}, [](const Snapshot& s, const Request&) { return resources_json(s); }));
  svr.Get("/api/leaderboard", [this, json](const Request& req, Response& res) {
    const auto by = by_login(req, res);
    if (!by) return;
    json("leaderboard", {"by"}, [by](const Snapshot& s, const Request&) { return leaderboard_json(s, *by); })(req, res);
  });
  svr.Get("/leaderboard.csv", [this](const Request& req, Response& res) {
    if (!only_params(req, res, {"by"})) return;
    const auto by = by_login(req, res);
    if (!by) return;
    const auto s = m_.snapshot();
    auto body = rendered(s, *by ? "csv-login" : "csv", [&] { return leaderboard_csv(*s, *by); });
    res.set_header("Cache-Control", "no-store");
    res.set_header("Content-Disposition", std::string("attachment; filename=\"gannf-leaderboard") +
                                              (*by ? "-by-login" : "") + ".csv\"");
    res.set_content(*body, "text/csv; charset=utf-8");
  });
  svr.Get("/metrics", [this](const Request& req, Response& res) {
    if (!only_params(req, res, {})) return;
    const auto s = m_.snapshot();
    auto body = rendered(s, "metrics", [&] { return metrics_text(*s); });
    res.set_header("Cache-Control", "no-store");
    res.set_content(*body, "text/plain; version=0.0.4; charset=utf-8");
  });

  // A grid's PNG. With ?run=<run id> (as the page asks) it never changes, so
  // the browser may keep it; a run that was replaced answers 404.
  auto grid = [this](const Request& req, Response& res, std::optional<int64_t> it) {
    if (!only_params(req, res, {"run"})) return;
    const auto s = m_.snapshot();
    const auto run = param(req, "run");
    if (run && (!s->run || *run != s->run->run_id)) {
      fail(res, 404, "no such run: the run was replaced (gannf-coord init --force); reload the page", false);
      return;
    }
    if (!it) {
      if (s->grids->empty()) {
        fail(res, 404, "no sample grid yet: the coordinator stores one at each sample step (--sample-interval)", false);
        return;
      }
      it = s->grids->back().iteration;
    }
    std::string error;
    auto png = m_.grid_png(*it, &error);
    if (!png) {
      if (!error.empty()) fail(res, 503, "the database cannot be read: " + error, false);
      else fail(res, 404, "no sample grid of iteration " + std::to_string(*it), false);
      return;
    }
    res.set_header("Cache-Control", run ? "private, max-age=31536000, immutable" : "no-cache");
    res.set_header("X-Gannf-Iteration", std::to_string(*it));
    res.set_content(*png, "image/png");
  };
  svr.Get("/samples/latest.png", [grid](const Request& req, Response& res) { grid(req, res, std::nullopt); });
  svr.Get(R"(/samples/(\d{1,18})\.png)",
          [grid](const Request& req, Response& res) { grid(req, res, std::stoll(req.matches[1].str())); });

  svr.Get("/timelapse.png", guarded([this](const Request& req, Response& res) {
            if (!only_params(req, res, {"frames", "download"})) return;
            size_t frames = o_.default_frames;
            if (const auto f = param(req, "frames")) {
              if (f->empty() || f->size() > 4 || f->find_first_not_of("0123456789") != std::string::npos ||
                  std::stoi(*f) < 1 || std::stoi(*f) > 500)
                throw std::invalid_argument("frames: '" + f->substr(0, 40) + "' is not a whole number in 1..500");
              frames = (size_t)std::stoi(*f);
            }
            const auto dl = param(req, "download");
            if (dl && *dl != "0" && *dl != "1") throw std::invalid_argument("download: 0 or 1");
            const auto s = m_.snapshot();
            std::string error;
            auto apng = timelapse_.get(m_, *s, frames, &error);
            if (!apng) {
              fail(res, s->grids->empty() ? 404 : 503, error, false);
              return;
            }
            res.set_header("Cache-Control", "no-cache");
            if (dl && *dl == "1")
              res.set_header("Content-Disposition", "attachment; filename=\"gannf-timelapse-" +
                                                        std::to_string(s->grids->back().iteration) + ".png\"");
            res.set_content(*apng, "image/png");
          }));

  // Live updates: one event per new snapshot, a comment every 15 s so that
  // proxies keep the stream open and a page that went away is noticed.
  svr.Get("/api/events", [this](const Request& req, Response& res) {
    if (!only_params(req, res, {})) return;
    if (streams_.fetch_add(1) >= o_.max_streams) {
      --streams_;
      fail(res, 503, "too many live pages at once; this one polls instead", true);
      return;
    }
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Accel-Buffering", "no");
    auto seen = std::make_shared<std::optional<uint64_t>>();
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, seen](size_t, httplib::DataSink& sink) {
          const auto s = *seen ? m_.wait_for_change(**seen, std::chrono::seconds(15)) : m_.snapshot();
          if (stopping_ || m_.stopping()) {
            sink.done();
            return true;
          }
          std::string msg;
          if (!*seen) msg = "retry: 3000\n";
          if (!*seen || s->generation != **seen) {
            msg += "event: update\ndata: " + event_json(*s) + "\n\n";
            *seen = s->generation;
          } else {
            msg += ": still here\n\n";
          }
          return sink.write(msg.data(), msg.size());
        },
        [this](bool) { --streams_; });
  });
}

}  // namespace gannf::monitor
