// gannf-dash end to end (labels cluster, dash): a real gannf-coord and two
// real gannf-workers run a few iterations against the fixture's PostgreSQL,
// then a real gannf-dash process serves them.
//
//  - ApiEqualsTheDatabase: every figure of every JSON document (and the
//    sample grids' bytes, the CSV, /metrics, the time-lapse) equals what the
//    database says, read as the coordinator; a rejected submission shows with
//    its reason; a worker named like an HTML tag and one named like a
//    spreadsheet formula stay text; a login the coordinator quarantined
//    (gannf.strike) and one with a strike show so in the leaderboard, the
//    CSV, /metrics and the status; active workers are present workers.
//  - SafeByDefault: read-only (405), 404 and 400 with one line, a foreign
//    Host refused, the token enforced, a public address refused without one,
//    a login outside gannf_monitor refused with what to do, and the monitor
//    role kept from gradients, weights, every function that writes and the
//    instructor's login_trust (monitor_logins has no reasons); the run's
//    states ready, paused, stopped as gannf-coord status words them.
//  - BrowserShowsTheRunLive: headless Chromium (DevTools protocol over a
//    pipe, tests/cdp.h) loads the page as a student's login would; after its
//    scripts ran the leaderboard lists both workers, the hostile name is text,
//    the loss chart has a point per iteration with the database's values, the
//    newest grid is shown, each name beside its login; the next iteration's
//    commit changes the page with no reload; a quarantine shows in its cell;
//    the screenshot is the README's (GANNF_DASH_SCREENSHOT=path).
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <map>
#include <regex>

#include <nlohmann/json.hpp>

#include "blob.h"
#include "cdp.h"
#include "protocol.h"
#include "test_cluster_harness.h"

namespace {

using namespace gannf;
using namespace gannf::test;
using Json = nlohmann::json;

const std::string kDashBin = std::string(GANNF_BINARY_DIR) + "/tools/gannf-dash";
// A worker's name is its own choice: these must come out as text everywhere.
const std::string kHostile = "<img src=x onerror=window.pwned=1>";
const std::string kFormula = "=HYPERLINK(\"http://evil\",\"x\")";

class Dash : public ClusterRun {
 protected:
  // gannf-dash logged in as `login`, on a free port of 127.0.0.1: its port
  // (0 when it did not come up; the log says why).
  int start_dash(const std::string& login, std::vector<std::string> extra = {}, const std::string& log = "dash.log") {
    std::vector<std::string> args = {kDashBin, "--db", "user=" + login + " dbname=" + db_, "--port", "0",
                                     "--poll", "0.5"};
    args.insert(args.end(), extra.begin(), extra.end());
    procs_.push_back(std::make_unique<Proc>(args, (dir_ / log).string()));
    Proc& p = *procs_.back();
    int port = 0;
    wait_for([&] {
      std::smatch m;
      const std::string l = p.log();
      if (std::regex_search(l, m, std::regex(R"(http://[^/\s]+:(\d+)/)"))) port = std::stoi(m[1]);
      return port > 0 || !p.running();
    }, 60);
    EXPECT_GT(port, 0) << p.command() << ":\n" << p.log();
    return port;
  }

  // Units of 8 images of the synthetic set, 2 per update; the first worker
  // named like an HTML tag (login 1), the second plainly (login 2).
  void start_run_and_workers(int iterations, const std::vector<std::string>& init,
                             const std::vector<std::string>& worker_args) {
    coord_cmd("init", init);
    if (HasFatalFailure()) return;
    start_worker(kHostile, worker_args, 1);
    start_worker("b", worker_args, 2);
    run_coordinator(iterations);
  }
  void run_coordinator(int iterations) {
    Proc& run = start_coord_run({"--iterations", std::to_string(iterations), "--sample-interval", "1",
                                 "--checkpoint-interval", "0", "--quiet"},
                                "coord-run-" + std::to_string(iterations) + ".log");
    const auto rc = run.wait(150);
    ASSERT_TRUE(rc.has_value()) << "the coordinator did not finish:\n" << logs();
    ASSERT_EQ(*rc, 0) << logs();
  }

  // A made-up worker that sends one unit's gradients with a NaN in them
  // (checksums right): the coordinator rejects it with a reason.
  void hostile_submission() {
    pg::Connection evil = connect_or_fail(worker_db(2));
    const int64_t me = cluster::register_worker(evil, {.name = kFormula, .batch_size = 8});
    pg::Result w = evil.exec("SELECT network::text, layout_hash, element_count, bn_count FROM gannf.weights "
                             "WHERE iteration = 0 ORDER BY network");
    ASSERT_EQ(w.rows(), 2);
    const int64_t dn = w.get<int64_t>(0, 2), gn = w.get<int64_t>(1, 2);
    std::vector<float> d(dn, 1e-3f), g(gn, 1e-3f), dstats(2 * w.get<int64_t>(0, 3), 0.5f),
        gstats(w.get<int64_t>(1, 3), 0.5f);
    g[3] = std::nanf("");
    std::vector<cluster::ClaimedUnit> u = cluster::claim(evil, me);
    ASSERT_EQ(u.size(), 1u);
    cluster::UnitResult r;
    r.sample_count = u[0].sample_count;
    r.micro_batch = u[0].sample_count;
    r.g = {(uint64_t)w.get<int64_t>(1, 1), g, gstats};
    r.d = {(uint64_t)w.get<int64_t>(0, 1), d, dstats};
    ASSERT_EQ(cluster::submit(evil, me, u[0], r).status, cluster::SubmitStatus::Accepted);
  }

  static Json get_json(httplib::Client& http, const std::string& path) {
    auto r = http.Get(path.c_str());
    if (!r) {
      ADD_FAILURE() << path << ": no answer";
      return Json();
    }
    EXPECT_EQ(r->status, 200) << path << ": " << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json") << path;
    return Json::parse(r->body);
  }
  int status_of(httplib::Client& http, const std::string& path, const httplib::Headers& h = {}) {
    auto r = http.Get(path.c_str(), h);
    return r ? r->status : -1;
  }
};

// JSON numbers come from float columns: equal as floats, bit for bit.
float as_float(const Json& j) { return (float)j.get<double>(); }

TEST_F(Dash, ApiEqualsTheDatabase) {
  ensure_worker_login("gannf_test_viewer", "gannf_monitor");
  coord_cmd("init", small_run(64, 8, 2, 21));
  if (HasFatalFailure()) return;
  hostile_submission();
  if (HasFatalFailure()) return;
  start_worker(kHostile, {"--batch-size", "4"}, 1);
  start_worker("b", {"--batch-size", "4"}, 2);
  run_coordinator(3);
  if (HasFatalFailure()) return;
  // The instructor's verdict against the first login (its whole threshold at
  // once, as a failed spot check); the second has the NaN's one strike.
  coord().exec("SELECT gannf.strike('gannf_test_w1', 'a test''s verdict', "
               "(SELECT strike_threshold FROM gannf.trust_settings))");
  // Two units taken off the second login as late (sql/0023), as the
  // coordinator's take_off_late() records them.
  coord().exec("SELECT gannf.note_taken('{gannf_test_w2,gannf_test_w2}', 'late', '{2.5 s,1.5 s}')");
  const int port = start_dash("gannf_test_viewer");
  ASSERT_GT(port, 0);
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(30);
  // The dashboard looks at its own pace; the workers' heartbeats go on, so
  // compare after a look that saw the finished run.
  ASSERT_TRUE(wait_for([&] { return get_json(http, "/api/status")["run"]["state"] == "stopped"; }, 30));
  pg::Connection& db = coord();

  // Status.
  const Json st = get_json(http, "/api/status");
  pg::Result ts = db.exec("SELECT run_id::text, iteration, status FROM gannf.training_state");
  const Json& run = st["run"];
  EXPECT_TRUE(st["database"]["ok"].get<bool>());
  EXPECT_EQ(run["run_id"], ts.get<std::string>(0, 0));
  EXPECT_EQ(run["iteration"], 3);
  EXPECT_EQ(run["iteration"], ts.get<int64_t>(0, 1));
  EXPECT_EQ(run["db_status"], ts.get<std::string>(0, 2));
  EXPECT_EQ(run["coordinator_running"], false);
  EXPECT_EQ(run["images_processed"], count("SELECT sum(samples) FROM gannf.loss_history"));
  // Present as the coordinator counts them (sql/0011), not seen within the lease.
  EXPECT_EQ(run["active_workers"], count("SELECT count(*) FROM gannf.present_workers"));
  EXPECT_EQ(run["quarantined_logins"], count("SELECT count(*) FROM gannf.login_status WHERE quarantined"));
  EXPECT_EQ(run["quarantined_logins"], 1);
  EXPECT_EQ(run["registered_workers"], count("SELECT count(*) FROM gannf.workers"));
  EXPECT_EQ(run["model"]["describe"], "DCGAN 32x32x1, nz 16, ngf 8, ndf 8");
  EXPECT_EQ(run["flops_per_image"], 5807104.0);  // test_dash_unit counts it by hand

  // Losses and throughput: a point per iteration, the database's values.
  pg::Result h = db.exec("SELECT iteration, loss_d, loss_g, d_real, d_fake, d_accuracy, images_per_second, "
                         "active_workers FROM gannf.loss_history ORDER BY iteration");
  ASSERT_EQ(h.rows(), 3);
  const Json l = get_json(http, "/api/losses");
  const Json t = get_json(http, "/api/throughput");
  ASSERT_EQ(l["step"].size(), 3u);
  ASSERT_EQ(t["step"].size(), 3u);
  EXPECT_EQ(l["bucket"], 1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(l["step"][i], h.get<int64_t>(i, 0) + 1);
    EXPECT_EQ(as_float(l["loss_d"][i]), h.get<float>(i, 1));
    EXPECT_EQ(as_float(l["loss_g"][i]), h.get<float>(i, 2));
    EXPECT_EQ(as_float(l["d_real"][i]), h.get<float>(i, 3));
    EXPECT_EQ(as_float(l["d_fake"][i]), h.get<float>(i, 4));
    EXPECT_EQ(as_float(l["d_accuracy"][i]), h.get<float>(i, 5));
    EXPECT_EQ(as_float(t["images_per_second"][i]), h.get<float>(i, 6));
    EXPECT_DOUBLE_EQ(t["tflops"][i].get<double>(), (double)h.get<float>(i, 6) * 5807104.0 / 1e12);
    EXPECT_EQ(t["active_workers"][i], h.get<int32_t>(i, 7));
  }

  // Sample grids: the coordinator's files, in the database, through the API.
  pg::Result g = db.exec("SELECT iteration, epoch, png FROM gannf.sample_grids ORDER BY iteration");
  ASSERT_EQ(g.rows(), 3);
  const Json sm = get_json(http, "/api/samples");
  ASSERT_EQ(sm["count"], 3);
  EXPECT_EQ(sm["latest"], 3);
  for (int i = 0; i < 3; ++i) {
    const int64_t it = g.get<int64_t>(i, 0);
    EXPECT_EQ(sm["iteration"][i], it);
    EXPECT_EQ(sm["epoch"][i], g.get<int32_t>(i, 1) + 1);
    const auto bytes = g.bytes(i, 2);
    const std::string stored(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    std::ifstream f(dir_ / "out" / "samples" / ("step-0000000" + std::to_string(it) + ".png"), std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(f), {}), stored) << "grid " << it;
    auto r = http.Get(("/samples/" + std::to_string(it) + ".png?run=" + run["run_id"].get<std::string>()).c_str());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->get_header_value("Content-Type"), "image/png");
    EXPECT_EQ(r->body, stored) << "grid " << it;
  }
  auto latest = http.Get("/samples/latest.png");
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->get_header_value("X-Gannf-Iteration"), "3");

  // The time-lapse: an APNG of the three grids.
  auto tl = http.Get("/timelapse.png?download=1");
  ASSERT_TRUE(tl);
  ASSERT_EQ(tl->status, 200) << tl->body;
  EXPECT_EQ(tl->body.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  const size_t actl = tl->body.find("acTL");
  ASSERT_NE(actl, std::string::npos);
  EXPECT_EQ(tl->body.substr(actl + 4, 4), std::string("\0\0\0\3", 4));
  EXPECT_NE(tl->get_header_value("Content-Disposition").find("attachment"), std::string::npos);

  // Leaderboard: the 0003 view's counts, worker by worker, and the reasons.
  pg::Result lb = db.exec("SELECT l.worker_id, l.login::text, l.name, l.units, l.images, l.rejected, "
                          "coalesce(t.quarantined, false), coalesce(t.strikes, 0), coalesce(k.units_taken, 0), "
                          "k.taken_why, extract(epoch FROM k.taken_bound)::float8, coalesce(k.held_to_one, false) "
                          "FROM gannf.leaderboard l "
                          "LEFT JOIN gannf.login_status t ON t.login = l.login::text "
                          "LEFT JOIN gannf.monitor_logins k ON k.login = l.login::text");
  const Json board = get_json(http, "/api/leaderboard");
  ASSERT_EQ(board["rows"].size(), (size_t)lb.rows());
  ASSERT_EQ(lb.rows(), 3);
  std::map<int64_t, Json> by_id;
  for (const Json& r : board["rows"]) by_id[r["worker_ids"][0].get<int64_t>()] = r;
  int64_t total = 0;
  for (int i = 0; i < lb.rows(); ++i) {
    const Json& r = by_id[lb.get<int64_t>(i, 0)];
    EXPECT_EQ(r["login"], lb.get<std::string>(i, 1));
    EXPECT_EQ(r["name"], lb.get<std::string>(i, 2));
    EXPECT_EQ(r["units"], lb.get<int32_t>(i, 3));
    EXPECT_EQ(r["images"], lb.get<int64_t>(i, 4));
    EXPECT_EQ(r["rejected"], lb.get<int32_t>(i, 5));
    EXPECT_EQ(r["quarantined"], lb.get<bool>(i, 6)) << r.dump();
    EXPECT_EQ(r["strikes"], lb.get<int32_t>(i, 7)) << r.dump();
    EXPECT_EQ(r["quarantined"], r["login"] == "gannf_test_w1") << r.dump();
    EXPECT_EQ(r["units_taken"], lb.get<int64_t>(i, 8)) << r.dump();
    EXPECT_EQ(r["units_taken"], r["login"] == "gannf_test_w2" ? 2 : 0) << r.dump();
    EXPECT_EQ(r["taken_why"], lb.is_null(i, 9) ? Json(nullptr) : Json(lb.get<std::string>(i, 9))) << r.dump();
    EXPECT_EQ(r["taken_bound"], lb.is_null(i, 10) ? Json(nullptr) : Json(lb.get<double>(i, 10))) << r.dump();
    EXPECT_EQ(r["held_to_one"], lb.get<bool>(i, 11)) << r.dump();
    total += lb.get<int64_t>(i, 4);
  }
  EXPECT_EQ(board["total_images"], total);
  EXPECT_GT(count("SELECT count(DISTINCT worker_id) FROM gannf.submissions WHERE state = 'used'"), 0);
  pg::Result why = db.exec("SELECT worker_id, reject_reason FROM gannf.submissions WHERE state = 'rejected'");
  ASSERT_EQ(why.rows(), 1) << "the NaN submission should have been rejected:\n" << logs();
  const Json& evil = by_id[why.get<int64_t>(0, 0)];
  EXPECT_EQ(evil["name"], kFormula);
  ASSERT_EQ(evil["reasons"].size(), 1u);
  EXPECT_EQ(evil["reasons"][0]["reason"], why.get<std::string>(0, 1));
  EXPECT_EQ(evil["reasons"][0]["count"], 1);
  const Json by_login = get_json(http, "/api/leaderboard?by=login");
  EXPECT_EQ(by_login["rows"].size(), 2u);  // two logins; the second runs two workers

  // Resources: the active workers' machines.
  const Json res = get_json(http, "/api/resources");
  const std::string present = "gannf.workers w JOIN gannf.present_workers p USING (id)";
  EXPECT_EQ(res["totals"]["workers"], count("SELECT count(*) FROM " + present));
  EXPECT_EQ(res["totals"]["cpu_cores"], count("SELECT coalesce(sum(cpu_cores), 0) FROM " + present));
  EXPECT_EQ(res["totals"]["ram_bytes"], count("SELECT coalesce(sum(ram_bytes), 0)::bigint FROM " + present));

  // CSV for the instructor: the hostile names as text, the formula defused.
  auto csv = http.Get("/leaderboard.csv");
  ASSERT_TRUE(csv);
  EXPECT_EQ(csv->get_header_value("Content-Type"), "text/csv; charset=utf-8");
  EXPECT_NE(csv->body.find("," + kHostile + ","), std::string::npos) << csv->body;
  const int threshold = (int)count("SELECT strike_threshold FROM gannf.trust_settings");
  EXPECT_NE(csv->body.find(",yes," + std::to_string(threshold) + ","), std::string::npos) << csv->body;
  EXPECT_NE(csv->body.find(",\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\","), std::string::npos) << csv->body;

  // /metrics: the same figures for Prometheus.
  auto m = http.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(m->body.find("\ngannf_updates_total 3\n"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find("\ngannf_images_processed_total " + std::to_string(run["images_processed"].get<int64_t>()) +
                         "\n"),
            std::string::npos);
  EXPECT_NE(m->body.find("gannf_run_state{state=\"stopped\"} 1\n"), std::string::npos);
  EXPECT_NE(m->body.find("\ngannf_quarantined_logins 1\n"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find("\ngannf_login_strikes{login=\"gannf_test_w2\"} 1\n"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find("\ngannf_login_units_taken_total{login=\"gannf_test_w2\"} 2\n"), std::string::npos)
      << m->body;
  EXPECT_NE(m->body.find("\ngannf_logins_held_to_one_unit 1\n"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find("worker=\"=HYPERLINK(\\\"http://evil\\\",\\\"x\\\")\""), std::string::npos);
}

TEST_F(Dash, SafeByDefault) {
  ensure_worker_login("gannf_test_viewer", "gannf_monitor");
  ensure_worker_login("gannf_test_nobody", "");
  coord_cmd("init", small_run(64, 8, 2, 3));
  if (HasFatalFailure()) return;
  // The monitor role: the views and grids, nothing else.
  {
    pg::Connection v = connect_or_fail("user=gannf_test_viewer dbname=" + db_);
    v.on_notice({});
    EXPECT_EQ(v.exec("SELECT count(*) FROM gannf.monitor_run").get<int64_t>(0, 0), 1);
    // Of the logins' trust, what the class sees: not the instructor's reasons.
    EXPECT_EQ(v.exec("SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
                     "WHERE attrelid = 'gannf.monitor_logins'::regclass AND attnum > 0")
                  .get<std::string>(0, 0),
              "login,strikes,quarantined,quarantined_at,units_taken,taken_at,taken_why,taken_bound,held_to_one");
    for (const char* q : {"SELECT count(*) FROM gannf.leaderboard", "SELECT count(*) FROM gannf.training_progress",
                          "SELECT count(*) FROM gannf.sample_grids", "SELECT count(*) FROM gannf.monitor_submissions"})
      EXPECT_NO_THROW(v.exec(q)) << q;
    for (const char* q :
         {"SELECT count(*) FROM gannf.weights", "SELECT count(*) FROM gannf.optimizer_state",
          "SELECT count(*) FROM gannf.submission_blobs", "SELECT count(*) FROM gannf.submissions",
          "SELECT count(*) FROM gannf.training_state", "SELECT gannf.register_worker('x')",
          "SELECT count(*) FROM gannf.login_trust", "SELECT count(*) FROM gannf.login_status",
          "SELECT gannf.strike('gannf_test_w1', 'x', 100)", "SELECT gannf.lift_quarantine('gannf_test_w1')",
          "INSERT INTO gannf.sample_grids (iteration, run_id, epoch, png) SELECT 99, run_id, 0, '\\x89504e470d0a1a0a' "
          "FROM gannf.monitor_run",
          "UPDATE gannf.clock SET skew = '1 hour'"}) {
      try {
        v.exec(q);
        ADD_FAILURE() << "gannf_monitor may: " << q;
      } catch (const pg::Error& e) {
        EXPECT_EQ(e.sqlstate(), "42501") << q << ": " << e.what();
      }
    }
  }
  // A login in neither group: one line that says what to do.
  {
    Proc p({kDashBin, "--db", "user=gannf_test_nobody dbname=" + db_, "--port", "0"}, (dir_ / "nobody.log").string());
    EXPECT_EQ(p.wait(30), 1) << p.log();
    EXPECT_NE(p.log().find("GRANT gannf_monitor TO"), std::string::npos) << p.log();
  }
  // Another address than loopback needs a token; a short token is refused.
  {
    Proc p({kDashBin, "--db", "user=gannf_test_viewer dbname=" + db_, "--listen", "0.0.0.0", "--port", "0"},
           (dir_ / "public.log").string());
    EXPECT_EQ(p.wait(30), 1) << p.log();
    EXPECT_NE(p.log().find("--token"), std::string::npos) << p.log();
    Proc q({kDashBin, "--db", "user=gannf_test_viewer dbname=" + db_, "--token", "short", "--port", "0"},
           (dir_ / "short.log").string());
    EXPECT_EQ(q.wait(30), 1) << q.log();
  }

  const int port = start_dash("gannf_test_viewer");
  ASSERT_GT(port, 0);
  httplib::Client http("127.0.0.1", port);
  EXPECT_EQ(status_of(http, "/api/status"), 200);
  // The run's states as gannf-coord status words them: initialised and never
  // run; paused by 'gannf-coord pause' with no coordinator up is still paused.
  EXPECT_EQ(get_json(http, "/api/status")["run"]["state"], "ready");
  coord_cmd("pause", {});
  EXPECT_TRUE(wait_for([&] { return get_json(http, "/api/status")["run"]["state"] == "paused"; }, 30))
      << get_json(http, "/api/status").dump();
  coord_cmd("stop", {});
  EXPECT_TRUE(wait_for([&] { return get_json(http, "/api/status")["run"]["state"] == "stopped"; }, 30))
      << get_json(http, "/api/status").dump();
  EXPECT_EQ(status_of(http, "/"), 200);
  EXPECT_EQ(status_of(http, "/chart.min.js"), 200);
  for (const char* p : {"/nope", "/api/nope", "/samples/99.png", "/samples/x.png", "/../etc/passwd", "/api/status/"})
    EXPECT_EQ(status_of(http, p), 404) << p;
  for (const char* p : {"/api/losses?points=abc", "/api/losses?points=1", "/api/losses?from=9&to=3",
                        "/api/throughput?points=-4", "/api/status?x=1", "/api/leaderboard?by=evil",
                        "/leaderboard.csv?by=", "/timelapse.png?frames=0", "/timelapse.png?frames=1e3",
                        "/timelapse.png?download=yes", "/metrics?format=json", "/?debug=1"})
    EXPECT_EQ(status_of(http, p), 400) << p;
  auto bad = http.Get("/api/losses?points=abc");
  ASSERT_TRUE(bad);
  EXPECT_EQ(Json::parse(bad->body)["error"], "points: 'abc' is not a whole number");
  // No grid yet (no iteration ran): 404 saying why, and a run that is not this one.
  EXPECT_EQ(status_of(http, "/samples/latest.png"), 404);
  EXPECT_EQ(status_of(http, "/timelapse.png"), 404);
  // Read-only.
  auto refused = [](const httplib::Result& r) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 405);
    EXPECT_EQ(r->get_header_value("Allow"), "GET, HEAD");
  };
  refused(http.Post("/api/status", "", "text/plain"));
  refused(http.Put("/api/status", "x", "text/plain"));
  refused(http.Delete("/metrics"));
  refused(http.Patch("/", "x", "text/plain"));
  // A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding).
  EXPECT_EQ(status_of(http, "/api/status", {{"Host", "evil.example:" + std::to_string(port)}}), 403);
  EXPECT_EQ(status_of(http, "/api/status", {{"Host", "localhost:" + std::to_string(port)}}), 200);
  // Headers that keep the page's scripts its own.
  auto page = http.Get("/");
  ASSERT_TRUE(page);
  EXPECT_NE(page->get_header_value("Content-Security-Policy").find("script-src 'self'"), std::string::npos);
  EXPECT_EQ(page->get_header_value("X-Content-Type-Options"), "nosniff");

  // With a token: nothing without it; the page's address sets a cookie.
  const std::string token = "test-token-0123456789abcdef";
  const int tport = start_dash("gannf_test_viewer", {"--token", token}, "dash-token.log");
  ASSERT_GT(tport, 0);
  httplib::Client tok("127.0.0.1", tport);
  EXPECT_EQ(status_of(tok, "/api/status"), 401);
  EXPECT_EQ(status_of(tok, "/"), 401);
  EXPECT_EQ(status_of(tok, "/api/status?token=wrong-token-0123456789ab"), 401);
  EXPECT_EQ(status_of(tok, "/api/status", {{"Authorization", "Bearer " + token}}), 200);
  EXPECT_EQ(status_of(tok, ("/metrics?token=" + token).c_str()), 200);
  auto in = tok.Get(("/?token=" + token).c_str());
  ASSERT_TRUE(in);
  EXPECT_EQ(in->status, 303);
  EXPECT_EQ(in->get_header_value("Location"), "/");
  const std::string cookie = in->get_header_value("Set-Cookie");
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
  EXPECT_NE(cookie.find("SameSite=Strict"), std::string::npos);
  EXPECT_EQ(status_of(tok, "/api/status", {{"Cookie", cookie.substr(0, cookie.find(';'))}}), 200);
  // A token holder may use any Host (a projector reaches it by name).
  EXPECT_EQ(status_of(tok, "/api/status", {{"Host", "projector.example"}, {"Authorization", "Bearer " + token}}), 200);
}

// A shared dashboard (--listen 0.0.0.0) beside 300 connections that each
// send a request line and then one header line a second: before its gate
// (src/monitor/gate.h), every thread of the web server waited on them and
// 200 such connections stalled the dashboard for everyone (a request timed
// out after 15 s). Half come from 15 addresses (10 each: under the
// per-client bound), half from one address (past it). Requests of another
// client are answered at once throughout; every slow connection is answered
// (408 past the 5 s deadline, 503 past its address's bound) and closed.
TEST_F(Dash, ASharedDashboardAnswersBesideHundredsOfSlowConnections) {
  coord_cmd("init", small_run(64, 8, 2, 3));
  if (HasFatalFailure()) return;
  ensure_worker_login("gannf_test_viewer", "gannf_monitor");
  const std::string token = "slow-connections-token-0123";
  const int port = start_dash("gannf_test_viewer", {"--listen", "0.0.0.0", "--token", token});
  ASSERT_GT(port, 0);
  // A connection from `source` (127.0.0.0/8 is all loopback) with the start
  // of a request; -1 when it could not be made.
  auto slow = [&](const std::string& source) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in from{}, to{};
    from.sin_family = to.sin_family = AF_INET;
    inet_pton(AF_INET, source.c_str(), &from.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    to.sin_port = htons((uint16_t)port);
    const char* start = "GET /api/status HTTP/1.1\r\nHost: dash\r\n";
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
        ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 ||
        ::send(fd, start, std::strlen(start), MSG_NOSIGNAL) < 0) {
      if (fd >= 0) ::close(fd);
      return -1;
    }
    return fd;
  };
  std::vector<int> fds;
  for (int i = 0; i < 150; ++i) fds.push_back(slow("127.0.1." + std::to_string(1 + i % 15)));
  for (int i = 0; i < 150; ++i) fds.push_back(slow("127.0.0.2"));
  for (int fd : fds) ASSERT_GE(fd, 0) << "could not open the slow connections";
  std::atomic<bool> stop{false};
  std::thread drip([&] {
    while (!stop) {
      for (int fd : fds) (void)!::send(fd, "X-Slow: 1\r\n", 11, MSG_NOSIGNAL | MSG_DONTWAIT);
      for (int t = 0; t < 10 && !stop; ++t) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(15, 0);
  double slowest = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(status_of(http, "/api/status", {{"Authorization", "Bearer " + token}}), 200) << "request " << i;
    slowest = std::max(slowest, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_LT(slowest, 2.0) << "a request beside the slow connections";
  std::this_thread::sleep_for(std::chrono::seconds(4));  // past every slow connection's 5 s
  stop = true;
  drip.join();
  int timed_out = 0, turned_away = 0, other = 0;
  for (int fd : fds) {
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string got;  // all of it, to the close
    bool closed = false;
    for (char buf[256]; got.size() < 4096;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        closed = n == 0;
        break;
      }
      got.append(buf, (size_t)n);
    }
    if (closed && got.rfind("HTTP/1.1 408", 0) == 0) {
      ++timed_out;
    } else if (closed && got.rfind("HTTP/1.1 503", 0) == 0) {
      ++turned_away;
    } else {
      ++other;
    }
    ::close(fd);
  }
  std::printf("300 slow connections: %d timed out (408), %d turned away (503); the slowest of 5 requests beside "
              "them: %.3f s\n",
              timed_out, turned_away, slowest);
  EXPECT_EQ(other, 0);
  EXPECT_EQ(turned_away, 150 - 16) << "one address past --per-client (16)";
  EXPECT_EQ(timed_out, 150 + 16);
}

TEST_F(Dash, BrowserShowsTheRunLive) {
  const std::string chromium = Chromium::find();
  if (chromium.empty()) GTEST_SKIP() << "no Chromium installed (tools/setup.sh installs Debian's chromium)";
  // The README's screenshot is this test's: asked for, it trains a while on
  // Fashion-MNIST (GANNF_DASH_DATA, GANNF_DASH_ITERATIONS) so that the page
  // shows garments; otherwise three updates of the synthetic set.
  const char* shot_env = std::getenv("GANNF_DASH_SCREENSHOT");
  const char* data_env = std::getenv("GANNF_DASH_DATA");
  const char* iter_env = std::getenv("GANNF_DASH_ITERATIONS");
  const int first = shot_env ? (iter_env ? std::atoi(iter_env) : 400) : 3;
  ASSERT_GT(first, 0);
  std::vector<std::string> init = small_run(64, 8, 2, 21);
  if (shot_env)
    init = {"--dataset", data_env ? data_env : "/usr/share/datasets/fashion-mnist", "--image-size", "32",
            "--channels", "1", "--ngf", "32", "--ndf", "32", "--images-per-unit", "64",
            "--units-per-update", "2", "--seed", "1", "--quiet"};
  // The tiny model's updates take milliseconds: slowed down, so that a
  // coordinator at work can be seen at work.
  start_run_and_workers(first, init,
                        shot_env ? std::vector<std::string>{"--batch-size", "32"}
                                 : std::vector<std::string>{"--batch-size", "4", "--throttle-ms", "150"});
  if (HasFatalFailure()) return;
  // As a student would: the worker login itself, on a shared dashboard --
  // so through its gate (gate.h), the live stream included.
  const std::string token = "browser-test-token-0123456";
  const int port = start_dash("gannf_test_w1", {"--listen", "0.0.0.0", "--token", token});
  ASSERT_GT(port, 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/?token=" + token;

  Chromium browser(chromium, dir_ / "chromium");
  const std::string page = browser.open_page(1600, 1200);
  browser.call("Page.navigate", {{"url", url}}, page);
  ASSERT_TRUE(browser.wait_for(page, "window.gannfDash && gannfDash.refreshes > 0 && gannfDash.mode === 'live'", 60))
      << browser.eval(page, "window.gannfDash ? JSON.stringify({mode: gannfDash.mode, errors: gannfDash.errors}) : "
                            "document.documentElement.outerHTML.slice(0, 2000)");
  auto text = [&](const std::string& id) {
    return browser.eval(page, "document.getElementById('" + id + "').textContent").get<std::string>();
  };
  EXPECT_EQ(text("iteration"), std::to_string(first));

  // The leaderboard: both workers, the hostile name as text and nothing run.
  const Json names = browser.eval(
      page, "[...document.querySelectorAll('#leaderboard tbody tr')].map(tr => tr.children[2].textContent).sort()");
  EXPECT_EQ(names, Json({kHostile, "b"}));
  // Each name beside the login that registered it: no worker passes for another login.
  EXPECT_EQ(browser.eval(page, "[...document.querySelectorAll('#leaderboard tbody tr')].map(tr => "
                               "tr.children[1].textContent + '/' + tr.children[2].textContent).sort()"),
            Json({"gannf_test_w1/" + kHostile, "gannf_test_w2/b"}));
  EXPECT_EQ(browser.eval(page, "document.querySelectorAll('img[src=\"x\"]').length + "
                               "document.querySelectorAll('#leaderboard img, #resources img').length"),
            0);
  EXPECT_TRUE(browser.eval(page, "window.pwned === undefined").get<bool>());

  // The loss chart: one point per iteration, the database's values.
  auto chart_points = [&] {
    return browser.eval(page, "gannfDash.charts.loss.data.datasets.map(d => d.data.map(p => [p.x, p.y]))");
  };
  pg::Result h = coord().exec("SELECT iteration + 1, loss_d, loss_g FROM gannf.loss_history ORDER BY iteration");
  Json pts = chart_points();
  ASSERT_EQ(pts.size(), 2u);
  ASSERT_EQ(pts[0].size(), (size_t)h.rows());
  for (int i = 0; i < h.rows(); ++i) {
    EXPECT_EQ(pts[0][i][0], h.get<int64_t>(i, 0));
    EXPECT_EQ(as_float(pts[0][i][1]), h.get<float>(i, 1));
    EXPECT_EQ(as_float(pts[1][i][1]), h.get<float>(i, 2));
  }
  EXPECT_EQ(browser.eval(page, "gannfDash.charts.throughput.data.datasets[0].data.length"), h.rows());

  // The newest grid, shown and decoded, the size the database's PNG says.
  ASSERT_TRUE(browser.wait_for(page, "document.getElementById('sample').complete && "
                                     "document.getElementById('sample').naturalWidth > 0", 20));
  const std::string src = browser.eval(page, "document.getElementById('sample').getAttribute('src')");
  EXPECT_EQ(src.substr(0, src.find('?')), "/samples/" + std::to_string(first) + ".png");
  pg::Result png = coord().exec("SELECT png FROM gannf.sample_grids ORDER BY iteration DESC LIMIT 1");
  const auto b = png.bytes(0, 0);
  const uint32_t width = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | (uint32_t)b[19];
  EXPECT_EQ(browser.eval(page, "document.getElementById('sample').naturalWidth"), width);

  // The next iteration commits: the page follows, with no reload.
  browser.eval(page, "window.stillTheSamePage = 42");
  const int events = browser.eval(page, "gannfDash.events").get<int>();
  run_coordinator(first + 1);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(browser.wait_for(page,
                               "document.getElementById('iteration').textContent === '" + std::to_string(first + 1) +
                                   "' && gannfDash.charts.loss.data.datasets[0].data.length === " +
                                   std::to_string(first + 1) + " && document.getElementById('sample').getAttribute("
                                   "'src').startsWith('/samples/" + std::to_string(first + 1) + ".png')",
                               30))
      << text("iteration");
  EXPECT_EQ(browser.eval(page, "window.stillTheSamePage"), 42);
  EXPECT_GT(browser.eval(page, "gannfDash.events").get<int>(), events) << "no Server-Sent Event arrived";
  EXPECT_EQ(browser.eval(page, "gannfDash.mode"), "live");

  // Nothing went wrong in the page: no script error, no refused resource.
  EXPECT_EQ(browser.eval(page, "gannfDash.errors"), Json::array());
  for (const Json& e : browser.events) {
    const std::string m = e.value("method", "");
    if (m == "Runtime.exceptionThrown") ADD_FAILURE() << e.dump();
    if (m == "Log.entryAdded" && e["params"]["entry"]["level"] == "error") ADD_FAILURE() << e.dump();
    if (m == "Runtime.consoleAPICalled" && e["params"]["type"] == "error") ADD_FAILURE() << e.dump();
  }

  // While a coordinator runs: the state, the rate and the ETA, taken in the
  // middle of its updates (the screenshot shows a run in progress).
  const int until = first + 1 + (shot_env ? 40 : 6);
  Proc& more = start_coord_run({"--iterations", std::to_string(until), "--sample-interval", "1",
                                "--checkpoint-interval", "0", "--quiet"},
                               "coord-run-more.log");
  EXPECT_TRUE(browser.wait_for(page,
                               "document.getElementById('state').textContent === 'running' && "
                               "+document.getElementById('iteration').textContent.replace(/,/g, '') >= " +
                                   std::to_string(first + 3) + " && document.getElementById('rate').textContent !== '–'",
                               60))
      << text("state") << " " << text("iteration") << " " << text("rate") << "\n" << logs();
  const std::string shot = browser.screenshot(page, 1600);
  EXPECT_EQ(shot.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  const fs::path out = shot_env ? fs::path(shot_env) : fs::path(GANNF_BINARY_DIR) / "dash-screenshot.png";
  std::ofstream(out, std::ios::binary) << shot;
  std::printf("screenshot: %s (%zu bytes)\n", out.c_str(), shot.size());
  EXPECT_EQ(more.wait(150), 0) << logs();

  // A quarantine shows in the leaderboard's cell, live.
  coord().exec("SELECT gannf.strike('gannf_test_w2', 'a test''s verdict', "
               "(SELECT strike_threshold FROM gannf.trust_settings))");
  const std::string cell = "[...document.querySelectorAll('#leaderboard tbody tr')].find(tr => "
                           "tr.children[2].textContent === 'b').children[9].textContent";
  EXPECT_TRUE(browser.wait_for(page, cell + ".startsWith('yes')", 30)) << browser.eval(page, cell);

  // So do units taken off a login (sql/0023): how many, the last reason.
  coord().exec("SELECT gannf.note_taken('{gannf_test_w2}', 'late', '{2.5 s}')");
  const std::string taken = "[...document.querySelectorAll('#leaderboard tbody tr')].find(tr => "
                            "tr.children[2].textContent === 'b').children[10].textContent";
  EXPECT_TRUE(browser.wait_for(page, taken + " === '1last: late (2.50 s allowed)one unit at a time'", 30))
      << browser.eval(page, taken);
  EXPECT_EQ(browser.eval(page, "document.querySelector('#leaderboard thead tr').children[10].textContent"),
            "taken off");
  // For a person to look at: the leaderboard with both.
  const fs::path board = fs::path(GANNF_BINARY_DIR) / "dash-screenshot-leaderboard.png";
  std::ofstream(board, std::ios::binary) << browser.screenshot(page, 1600);
  std::printf("screenshot: %s\n", board.c_str());
}

}  // namespace
