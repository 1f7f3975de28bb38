// gannf-dash: the class's live dashboard, a read-only web server on any
// machine that reaches the run's database (the projector's laptop, a
// student's). src/monitor holds it; docs/dashboard.md documents its API.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <thread>

#include "cli.h"
#include "config.h"
#include "monitor.h"
#include "render.h"
#include "server.h"

using namespace gannf;

namespace {

void log_line(const std::string& l) { std::fprintf(stderr, "gannf-dash: %s\n", l.c_str()); }

// 24 characters of /dev/urandom in an alphabet a URL and a cookie carry as is.
std::string random_token() {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::ifstream f("/dev/urandom", std::ios::binary);
  std::string t;
  for (int i = 0; i < 24; ++i) {
    unsigned char b = 0;
    if (!f.read(reinterpret_cast<char*>(&b), 1)) throw std::runtime_error("cannot read /dev/urandom for --token auto");
    t += kAlphabet[b & 63];
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  std::string config_path = cli::value_before_parse(argc, argv, "config");
  std::string db, listen = "127.0.0.1", token;
  int port = 8765;
  double poll = 2;
  int max_streams = 128, frames = 48;
  bool quiet = false;
  cli::Parser p("gannf-dash",
                "usage: gannf-dash [options]\n"
                "The class's live dashboard: a read-only web page of the run in the database (status, losses,\n"
                "samples and their time-lapse, throughput and workers, cluster resources, the leaderboard with\n"
                "a CSV export), its JSON API and /metrics for Prometheus. Log in with a monitoring login (a\n"
                "member of gannf_monitor) or a student's worker login; the database comes from --db, else the\n"
                "config's database section, else libpq's PG* variables, service files and ~/.pgpass.\n\n"
                "example:\n"
                "  gannf-dash --db postgresql://projector@db.example.edu/gannf\n"
                "  gannf-dash --listen 0.0.0.0 --token auto      (other machines too; share the printed address)");
  p.opt("config", &config_path, "YAML configuration (its database section)");
  p.opt("db", &db, "libpq connection string or postgresql:// URI");
  p.opt("listen", &listen, "address to listen on; other than 127.0.0.1 (or ::1) needs --token");
  p.opt("port", &port, "TCP port (0: any free one, printed)");
  p.opt("token", &token,
        "access token for every request, at least 16 characters; 'auto' makes a random one (default: "
        "$GANNF_DASH_TOKEN)");
  p.opt("poll", &poll, "seconds between looks at the database when no NOTIFY comes (heartbeats)");
  p.opt("max-streams", &max_streams, "live pages at once; more pages poll every 5 s instead");
  p.opt("frames", &frames, "frames of the time-lapse");
  int per_client = 16;
  p.opt("per-client", &per_client,
        "a shared dashboard's connections per client address at once (raise it for a class behind one NAT)");
  p.flag("quiet", &quiet, "no line but the address and errors");
  try {
    p.parse(argc, argv);
    if (p.help_requested) {
      std::fputs(p.help().c_str(), stdout);
      return 0;
    }
    if (port < 0 || port > 65535) throw cli::Error("--port: " + std::to_string(port) + " is not a TCP port (0..65535)");
    if (!(poll >= 0.1 && poll <= 3600)) throw cli::Error("--poll: between 0.1 and 3600 seconds");
    if (max_streams < 1 || max_streams > 10000) throw cli::Error("--max-streams: between 1 and 10000");
    if (frames < 1 || frames > 500) throw cli::Error("--frames: between 1 and 500");
    if (per_client < 1 || per_client > 10000) throw cli::Error("--per-client: between 1 and 10000");
    if (token.empty())
      if (const char* t = std::getenv("GANNF_DASH_TOKEN")) token = t;
    if (token == "auto") token = random_token();
    cfg = config_or_defaults(config_path, [](const std::string& w) { log_line("warning: " + w); });
  } catch (const std::exception& e) {
    log_line(e.what());
    return 2;
  }

  // Signals go to one thread that stops the server; every other thread
  // (the monitor's, the server's pool) is made with them blocked.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  try {
    monitor::MonitorOptions mo;
    mo.conninfo = db.empty() ? cfg.conninfo() : db;
    mo.poll_seconds = poll;
    mo.log = log_line;
    monitor::Monitor m(mo);
    monitor::ServerOptions so;
    so.host = listen;
    so.port = port;
    so.token = token;
    so.max_streams = max_streams;
    so.per_client = per_client;
    so.default_frames = (size_t)frames;
    so.log = log_line;
    monitor::DashServer server(m, so);
    m.start();
    std::atomic<bool> signalled{false};
    std::thread watcher([&] {
      int sig = 0;
      sigwait(&sigs, &sig);
      if (signalled.exchange(true)) return;
      if (!quiet) log_line("stopping");
      server.stop();
    });
    std::printf("gannf-dash: %s\n", server.url().c_str());
    std::fflush(stdout);
    if (!quiet) {
      const auto s = m.snapshot();
      log_line(s->run ? "run " + s->run->run_id + " at iteration " + std::to_string(s->run->iteration) + " (" +
                            monitor::run_state(*s) + ")"
                      : "no run in the database yet; the page shows one as soon as gannf-coord init makes it");
      log_line("open the address above in a browser (F11: full screen for the projector); Ctrl-C stops");
    }
    server.run();
    // The server stopped (a signal, or it could not go on): let the watcher go.
    if (!signalled.exchange(true)) pthread_kill(watcher.native_handle(), SIGTERM);
    watcher.join();
    return 0;
  } catch (const std::exception& e) {
    log_line(e.what());
    return 1;
  }
}
