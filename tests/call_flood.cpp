// call_flood: a test-only program that plays a student who floods the server
// with a gannf-worker's own statements (worker_sql.h), byte for byte the
// worker's text, as fast as libpq's pipeline mode can send them: no round
// trip per call, so the student's machine is not what limits the flood.
// Used by Trust.AFloodOfAWorkersOwnCallsIsShutOut and bench/cpu_hog.sh
// --hog pipeline. Not installed, not a flag of any product program.
//
//   call_flood --db CONNINFO [--sessions N] [--seconds S] [--call heartbeat|why_waiting|claim|training_state]
//
// Each of N sessions registers a worker (as a gannf-worker does), then
// sends the call in pipelines of 256 until S seconds pass or the server ends
// it. Prints the calls per second, how the sessions ended, and exits 0.
#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pg.h"
#include "protocol.h"
#include "worker_sql.h"

using namespace gannf::cluster;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "call_flood: %s\nusage: call_flood --db CONNINFO [--sessions N] [--seconds S] "
               "[--call heartbeat|why_waiting|claim|training_state]\n",
               why);
  std::exit(2);
}

struct Session {
  std::atomic<long> calls{0};
  std::atomic<bool> done{false};
  std::string ended;  // why it stopped: "time", or the server's words
};

// One session's flood: its own worker, registered as a gannf-worker does
// (so that the sessions do not wait for each other's row), then pipelines
// of `batch` calls, one Sync each, on the same connection.
void flood(const std::string& conninfo, const std::string& call, double seconds, Session* s) {
  std::unique_ptr<gannf::pg::Connection> conn;
  std::string worker;
  try {
    conn = std::make_unique<gannf::pg::Connection>(conninfo);
    WorkerInfo info;
    info.name = "call_flood";
    info.backend = "cpu", info.cpu_cores = 1, info.ram_bytes = 1000000000, info.batch_size = 16;
    worker = std::to_string(register_worker(*conn, info));
  } catch (const std::exception& e) {
    s->ended = e.what();
    s->done = true;
    return;
  }
  PGconn* c = conn->raw();
  const char* sql = worker_sql::kHeartbeat;
  std::vector<std::string> args = {worker};
  if (call == "why_waiting") {
    sql = worker_sql::kWhyWaiting;
    args.clear();
  } else if (call == "claim") {
    sql = worker_sql::kClaim;
    args.push_back("1");
  } else if (call == "training_state") {
    sql = worker_sql::kTrainingState;
    args.clear();
  }
  std::vector<const char*> vals;
  for (const std::string& a : args) vals.push_back(a.c_str());
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  const int batch = 256;
  s->ended = "time";
  while (Clock::now() < end) {
    if (!PQenterPipelineMode(c)) break;
    bool sent = true;
    for (int i = 0; i < batch && sent; ++i)
      sent = PQsendQueryParams(c, sql, (int)vals.size(), nullptr, vals.data(), nullptr, nullptr, 0) == 1;
    sent = sent && PQpipelineSync(c) == 1;
    if (!sent) {
      s->ended = PQerrorMessage(c);
      break;
    }
    // Read every result up to the Sync's.
    bool lost = false;
    long ok = 0;
    for (;;) {
      PGresult* r = PQgetResult(c);
      if (!r) {
        if (PQstatus(c) != CONNECTION_OK) {
          lost = true;
          break;
        }
        continue;  // the end of one call's results
      }
      const ExecStatusType st = PQresultStatus(r);
      if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) ++ok;
      if (st == PGRES_FATAL_ERROR && s->ended == "time") {
        const char* m = PQresultErrorMessage(r);
        s->ended = m ? m : "error";
      }
      PQclear(r);
      if (st == PGRES_PIPELINE_SYNC) break;
    }
    s->calls += ok;
    PQexitPipelineMode(c);
    if (lost || PQstatus(c) != CONNECTION_OK) {
      s->ended = std::string("connection ended: ") + PQerrorMessage(c);
      break;
    }
  }
  for (char& ch : s->ended)
    if (ch == '\n') ch = ' ';
  s->done = true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string db, call = "heartbeat";
  int sessions = 4;
  double seconds = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage((a + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "--db") db = next();
    else if (a == "--sessions") sessions = std::atoi(next().c_str());
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--call") call = next();
    else if (a == "-h" || a == "--help") usage("a flood of a gannf-worker's own calls (test-only)");
    else usage(("unknown argument " + a).c_str());
  }
  if (db.empty()) usage("--db is required");
  if (sessions < 1 || sessions > 64 || !(seconds > 0)) usage("--sessions 1..64, --seconds > 0");

  if (call != "heartbeat" && call != "why_waiting" && call != "claim" && call != "training_state")
    usage("--call: heartbeat, why_waiting, claim or training_state");
  std::printf("call_flood: %d session(s) of %s, a worker each\n", sessions, call.c_str());
  std::fflush(stdout);
  std::vector<Session> s(sessions);
  std::vector<std::thread> t;
  const auto t0 = Clock::now();
  for (int i = 0; i < sessions; ++i) t.emplace_back(flood, db, call, seconds, &s[i]);
  // A progress line every 5 s (a bench kills it rather than wait).
  long last = 0;
  for (int tick = 1;; ++tick) {
    bool all_done = true;
    for (auto& x : s) all_done = all_done && x.done;
    if (all_done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (tick % 50 == 0) {
      long n = 0;
      for (auto& x : s) n += x.calls;
      std::printf("call_flood: %.0f calls a second over the last 5 s\n", (n - last) / 5.0);
      std::fflush(stdout);
      last = n;
    }
  }
  for (auto& x : t) x.join();
  const double el = std::chrono::duration<double>(Clock::now() - t0).count();
  long total = 0;
  for (auto& x : s) total += x.calls;
  std::printf("call_flood: %ld calls in %.1f s (%.0f a second)\n", total, el, total / el);
  for (int i = 0; i < sessions; ++i) std::printf("call_flood: session %d: %s\n", i, s[i].ended.c_str());
  return 0;
}
