// gannf-dash's pieces that need no database (label dash): the FLOPs per image
// against a count by hand, the downsampling, the APNG time-lapse decoded by an
// independent reader, the escapes of CSV and Prometheus, the leaderboard's
// grouping, and which addresses count as this machine's.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <random>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "apng.h"
#include "flops.h"
#include "image_decode.h"
#include "render.h"
#include "server.h"

namespace {

using namespace gannf;
using namespace gannf::monitor;
using Json = nlohmann::json;

TEST(DashFlops, SmallModelCountedByHand) {
  // 32x32x1, nz 16, f = 8 (G: 4f -> 2f -> f -> nc; D: nc -> f -> 2f -> 4f -> 1).
  // A convolution's forward: 2 * C_in * C_out * K^2 * (output grid for conv,
  // input grid for transposed conv).
  const double g[] = {2.0 * 16 * 32 * 16 * 1, 2.0 * 32 * 16 * 16 * 16, 2.0 * 16 * 8 * 16 * 64, 2.0 * 8 * 1 * 16 * 256};
  const double d[] = {2.0 * 1 * 8 * 16 * 256, 2.0 * 8 * 16 * 16 * 64, 2.0 * 16 * 32 * 16 * 16, 2.0 * 32 * 1 * 16 * 1};
  double fg = 0, fd = 0;
  for (double x : g) fg += x;
  for (double x : d) fd += x;
  DcganConfig cfg;
  cfg.image_size = 32, cfg.nc = 1, cfg.nz = 16, cfg.ngf = 8, cfg.ndf = 8;
  const StepFlops f = gan_step_flops(cfg);
  EXPECT_EQ(f.g_forward, fg);
  EXPECT_EQ(f.d_forward, fd);
  // G: forward + weights + data less its first layer; D: 2 forwards, 2 x
  // (weights + data less its first layer), 1 data pass with it.
  EXPECT_EQ(f.per_image, (3 * fg - g[0]) + (7 * fd - 2 * d[0]));
  EXPECT_EQ(f.per_image, 5807104.0);
  // Wider nets cost quadratically more in the inner layers.
  cfg.ngf = cfg.ndf = 16;
  EXPECT_GT(gan_step_flops(cfg).per_image, 3.5 * f.per_image);
}

TEST(DashSeries, BucketWidthIsThePowerOfTwoThatFits) {
  EXPECT_EQ(bucket_width(0, 1000), 1);
  EXPECT_EQ(bucket_width(1000, 1000), 1);
  EXPECT_EQ(bucket_width(1001, 1000), 2);
  EXPECT_EQ(bucket_width(100000, 1000), 128);
  EXPECT_EQ(bucket_width(5, 1), 8);
}

Snapshot history_snapshot(int n) {
  Snapshot s;
  auto h = std::make_shared<std::vector<HistoryRow>>();
  for (int i = 0; i < n; ++i) {
    HistoryRow r;
    r.iteration = i;
    r.loss_d = 1.0f + (float)i;
    r.loss_g = i == 9 ? std::nullopt : std::optional<float>(2.0f * (float)i);
    r.samples = 16;
    r.seconds = 0.5f + 0.5f * (float)i;
    r.images_per_second = 16.0f / *r.seconds;
    r.active_workers = (i * 7) % 5;
    h->push_back(r);
  }
  s.history = h;
  s.grids = std::make_shared<std::vector<GridInfo>>();
  s.flops_per_image = 1e9;
  return s;
}

TEST(DashSeries, BucketsAverageLossesAndAddUpRates) {
  const Snapshot s = history_snapshot(10);
  // 10 updates in at most 4 buckets: width 4, edges at iterations 0, 4, 8.
  const Json l = Json::parse(losses_json(s, parse_series_request(std::string("4"), {}, {})));
  EXPECT_EQ(l["rows"], 10);
  EXPECT_EQ(l["bucket"], 4);
  EXPECT_EQ(l["step"], Json({2.5, 6.5, 9.5}));
  EXPECT_EQ(l["loss_d"], Json({2.5, 6.5, 9.5}));
  EXPECT_EQ(l["loss_g"][2], 16.0);  // iteration 9's NULL left out of the mean
  const Json t = Json::parse(throughput_json(s, parse_series_request(std::string("4"), {}, {})));
  // A bucket's rate is its images over its seconds, not the mean of rates.
  EXPECT_DOUBLE_EQ(t["images_per_second"][0].get<double>(), 64 / (0.5 + 1.0 + 1.5 + 2.0));
  EXPECT_DOUBLE_EQ(t["tflops"][0].get<double>(), 64 / 5.0 * 1e9 / 1e12);
  EXPECT_EQ(t["active_workers"], Json({4, 4, 3}));  // the most in each bucket
  // Width 1: the database's own values, one point per update.
  const Json one = Json::parse(throughput_json(s, {}));
  ASSERT_EQ(one["step"].size(), 10u);
  EXPECT_EQ(one["images_per_second"][3].get<double>(), (double)(*(*s.history)[3].images_per_second));
  // A range of steps (iteration + 1), inclusive.
  const Json r = Json::parse(losses_json(s, parse_series_request({}, std::string("3"), std::string("5"))));
  EXPECT_EQ(r["step"], Json({3, 4, 5}));
}

TEST(DashSeries, BadParametersAreRefusedWithOneLine) {
  using O = std::optional<std::string>;
  struct Case {
    O points, from, to;
  };
  const std::vector<Case> bad = {{"abc", {}, {}}, {"1", {}, {}},   {"-5", {}, {}}, {"99999999999999999999", {}, {}},
                                 {"", {}, {}},    {{}, "7", "3"},  {{}, "1e3", {}}, {"20001", {}, {}}};
  for (const Case& c : bad)
    EXPECT_THROW(parse_series_request(c.points, c.from, c.to), std::invalid_argument)
        << c.points.value_or("-") << " " << c.from.value_or("-");
  EXPECT_EQ(parse_series_request(std::string("2"), {}, {}).points, 2u);
}

// An independent reader of what encode_apng writes: chunk by chunk, CRCs
// checked, every frame inflated and unfiltered.
struct Apng {
  int w = 0, h = 0;
  uint32_t frames = 0;
  std::vector<uint32_t> sequence;
  std::vector<std::vector<uint8_t>> images;
  std::vector<int> delays_ms;
};
uint32_t be32(const std::string& s, size_t i) {
  return (uint32_t)(uint8_t)s[i] << 24 | (uint32_t)(uint8_t)s[i + 1] << 16 | (uint32_t)(uint8_t)s[i + 2] << 8 |
         (uint8_t)s[i + 3];
}
std::vector<uint8_t> unfilter(const std::string& z, int w, int h) {
  std::vector<uint8_t> raw((size_t)(w * 3 + 1) * h + 64);
  uLongf n = raw.size();
  EXPECT_EQ(uncompress(raw.data(), &n, reinterpret_cast<const Bytef*>(z.data()), z.size()), Z_OK);
  EXPECT_EQ(n, (uLongf)(w * 3 + 1) * h);
  const size_t stride = (size_t)w * 3;
  std::vector<uint8_t> px(stride * h);
  for (int y = 0; y < h; ++y) {
    const uint8_t f = raw[y * (stride + 1)];
    for (size_t x = 0; x < stride; ++x) {
      const int v = raw[y * (stride + 1) + 1 + x];
      const int a = x >= 3 ? px[y * stride + x - 3] : 0, b = y ? px[(y - 1) * stride + x] : 0,
                c = x >= 3 && y ? px[(y - 1) * stride + x - 3] : 0;
      int pred = 0;
      if (f == 1) pred = a;
      if (f == 2) pred = b;
      if (f == 3) pred = (a + b) / 2;
      if (f == 4) {
        const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      EXPECT_LE(f, 4);
      px[y * stride + x] = (uint8_t)(v + pred);
    }
  }
  return px;
}
Apng read_apng(const std::string& s) {
  Apng a;
  EXPECT_EQ(s.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  size_t i = 8;
  std::string data;
  int dw = 0, dh = 0;
  while (i + 12 <= s.size()) {
    const uint32_t len = be32(s, i);
    const std::string type = s.substr(i + 4, 4), body = s.substr(i + 8, len);
    const uLong crc = crc32(crc32(0, Z_NULL, 0), reinterpret_cast<const Bytef*>(s.data() + i + 4), len + 4);
    EXPECT_EQ(be32(s, i + 8 + len), (uint32_t)crc) << type;
    if (type == "IHDR") a.w = (int)be32(body, 0), a.h = (int)be32(body, 4);
    if (type == "acTL") a.frames = be32(body, 0);
    if (type == "fcTL" || type == "IEND") {
      if (!data.empty()) a.images.push_back(unfilter(data, dw, dh));
      data.clear();
    }
    if (type == "fcTL") {
      a.sequence.push_back(be32(body, 0));
      dw = (int)be32(body, 4), dh = (int)be32(body, 8);
      a.delays_ms.push_back((int)((uint8_t)body[20] << 8 | (uint8_t)body[21]));
    }
    if (type == "IDAT") data += body;
    if (type == "fdAT") a.sequence.push_back(be32(body, 0)), data += body.substr(4);
    i += 12 + len;
  }
  EXPECT_EQ(i, s.size());
  return a;
}

TEST(DashTimelapse, ApngFramesDecodeToTheGrids) {
  std::mt19937 rng(5);
  std::vector<RgbImage> frames(3);
  for (int k = 0; k < 3; ++k) {
    frames[k].w = 7, frames[k].h = 5;
    frames[k].px.resize(7 * 5 * 3);
    // Smooth parts (filters pay) and noise (they do not).
    for (size_t p = 0; p < frames[k].px.size(); ++p) frames[k].px[p] = p < 50 ? (uint8_t)(p * k) : (uint8_t)rng();
  }
  const std::string png = encode_apng(frames, 150, 2000);
  const Apng a = read_apng(png);
  EXPECT_EQ(a.w, 7);
  EXPECT_EQ(a.h, 5);
  EXPECT_EQ(a.frames, 3u);
  EXPECT_EQ(a.sequence, (std::vector<uint32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(a.delays_ms, (std::vector<int>{150, 150, 2000}));
  ASSERT_EQ(a.images.size(), 3u);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(a.images[k], frames[k].px) << "frame " << k;
  // A viewer without APNG shows the first frame: a plain PNG decoder reads it.
  data::Image8 im;
  std::string why;
  ASSERT_TRUE(data::decode_image_memory(reinterpret_cast<const uint8_t*>(png.data()), png.size(), &im, &why)) << why;
  EXPECT_EQ(im.px, frames[0].px);
  frames[1].w = 6;
  EXPECT_THROW(encode_apng(frames, 150, 2000), std::invalid_argument);
  EXPECT_THROW(encode_apng({}, 150, 2000), std::invalid_argument);
}

TEST(DashTimelapse, FramesSpreadEvenlyWithFirstAndLast) {
  EXPECT_EQ(pick_frames(3, 48), (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(pick_frames(100, 5), (std::vector<size_t>{0, 25, 50, 74, 99}));
  EXPECT_EQ(pick_frames(10, 1), (std::vector<size_t>{9}));
  EXPECT_TRUE(pick_frames(0, 5).empty());
}

Snapshot board_snapshot() {
  Snapshot s;
  s.history = std::make_shared<std::vector<HistoryRow>>();
  s.grids = std::make_shared<std::vector<GridInfo>>();
  auto worker = [&](int64_t id, std::string login, std::string name, std::string backend, bool active) {
    WorkerRow w;
    w.id = id, w.login = std::move(login), w.name = std::move(name), w.backend = std::move(backend);
    w.active = active;
    w.last_seen = 1000 + (double)id;
    s.workers.push_back(w);
  };
  worker(1, "alice", "laptop", "cpu", true);
  worker(2, "alice", "=HYPERLINK(\"http://evil\",\"x\")", "cuda", true);
  worker(3, "bob", "desk, top \"1\"", "cpu", false);
  worker(4, "carol", "idle", "cpu", true);
  s.tallies[1].add("used", 64, 2.0f, std::nullopt, 10);
  s.tallies[1].add("rejected", 64, 1.0f, std::string("non-finite gradient"), 11);
  s.tallies[2].add("used", 64, 1.0f, std::nullopt, 12);
  s.tallies[2].add("pending", 64, std::nullopt, std::nullopt, 13);
  s.tallies[3].add("used", 64, 4.0f, std::nullopt, 9);
  s.tallies[3].add("rejected", 64, std::nullopt, std::string("negative BN variance"), 8);
  s.tallies[3].add("rejected", 64, std::nullopt, std::string("negative BN variance"), 7);
  s.tallies[3].add("stale", 64, std::nullopt, std::string("lost"), 7);
  return s;
}

TEST(DashLeaderboard, ByWorkerAndByLogin) {
  const Snapshot s = board_snapshot();
  const auto w = leaderboard(s, false);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0].name, "=HYPERLINK(\"http://evil\",\"x\")");  // 128 images: pending counts, as in the view
  EXPECT_EQ(w[0].images, 128);
  EXPECT_EQ(w[0].rank, 1);
  EXPECT_EQ(w[1].login, "alice");  // 64 images, a tie with bob: same rank, by login
  EXPECT_EQ(w[1].rank, 2);
  EXPECT_EQ(w[2].login, "bob");
  EXPECT_EQ(w[2].rank, 2);
  EXPECT_EQ(w[2].rejected, 2);
  ASSERT_EQ(w[2].reasons.size(), 1u);
  EXPECT_EQ(w[2].reasons[0], std::make_pair(std::string("negative BN variance"), int64_t(2)));
  EXPECT_FALSE(w[2].active);
  EXPECT_EQ(w[3].rank, 4);
  EXPECT_EQ(w[3].images, 0);
  EXPECT_DOUBLE_EQ(w[0].share, 0.5);
  EXPECT_DOUBLE_EQ(*w[0].images_per_second, 64.0);  // the pending unit reported no time
  EXPECT_DOUBLE_EQ(*w[2].images_per_second, 16.0);
  EXPECT_FALSE(w[3].images_per_second);
  const auto l = leaderboard(s, true);
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0].login, "alice");
  EXPECT_EQ(l[0].images, 192);
  EXPECT_EQ(l[0].units, 3);
  EXPECT_EQ(l[0].rejected, 1);
  EXPECT_EQ(l[0].backend, "cpu,cuda");
  EXPECT_EQ(l[0].worker_ids, (std::vector<int64_t>{1, 2}));
  EXPECT_DOUBLE_EQ(*l[0].images_per_second, 128.0 / 3.0);
}

TEST(DashLeaderboard, CsvDefusesFormulasAndQuotes) {
  EXPECT_EQ(csv_field("laptop"), "laptop");
  EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field("=1+2"), "'=1+2");
  EXPECT_EQ(csv_field("@SUM(A1)"), "'@SUM(A1)");
  EXPECT_EQ(csv_field("-3"), "'-3");
  EXPECT_EQ(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
  const std::string csv = leaderboard_csv(board_snapshot(), false);
  EXPECT_NE(csv.find("\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\""), std::string::npos) << csv;
  EXPECT_NE(csv.find("\"desk, top \"\"1\"\"\""), std::string::npos) << csv;
  EXPECT_NE(csv.find("negative BN variance (2)"), std::string::npos) << csv;
  // Header and one line per worker, each with the header's 13 fields outside quotes.
  std::vector<std::string> lines;
  for (size_t i = 0, j; (j = csv.find("\r\n", i)) != std::string::npos; i = j + 2) lines.push_back(csv.substr(i, j - i));
  ASSERT_EQ(lines.size(), 5u);
  for (const std::string& line : lines) {
    int fields = 1;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') quoted = !quoted;
      if (c == ',' && !quoted) ++fields;
    }
    EXPECT_EQ(fields, 16) << line;
  }
}

LoginRow login_row(const std::string& login, int32_t strikes, bool quarantined, Seconds at) {
  LoginRow l;
  l.login = login;
  l.strikes = strikes;
  l.quarantined = quarantined;
  l.quarantined_at = at;
  return l;
}

// The database's trust (sql/0013) on every surface: a quarantine is the
// login's, so each of its workers shows it, and a login without workers
// (struck by the reaper) still counts in the gauge.
TEST(DashLeaderboard, QuarantineAndStrikesByLogin) {
  Snapshot s = board_snapshot();
  s.db_ok = true;
  EXPECT_EQ(Json::parse(leaderboard_json(s, false))["rows"][0]["quarantined"], nullptr);  // before sql/0013
  EXPECT_EQ(metrics_text(s).find("gannf_quarantined_logins"), std::string::npos);
  for (WorkerRow& w : s.workers) {
    w.quarantined = w.login == "alice";
    w.strikes = w.login == "alice" ? 5 : w.login == "bob" ? 1 : 0;
  }
  s.logins = std::vector<LoginRow>{login_row("alice", 5, true, 2000), login_row("bob", 1, false, 0),
                                   login_row("dave", 5, true, 2100)};
  const Json w = Json::parse(leaderboard_json(s, false));
  ASSERT_EQ(w["rows"].size(), 4u);
  for (const Json& r : w["rows"]) {
    EXPECT_EQ(r["quarantined"], r["login"] == "alice") << r.dump();
    EXPECT_EQ(r["strikes"], r["login"] == "alice" ? 5 : r["login"] == "bob" ? 1 : 0) << r.dump();
  }
  const auto l = leaderboard(s, true);
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0].login, "alice");
  EXPECT_EQ(l[0].quarantined, true);
  EXPECT_EQ(l[0].strikes, 5);  // the login's, not a sum over its two workers
  const std::string csv = leaderboard_csv(s, true);
  EXPECT_NE(csv.find(",quarantined,strikes,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",yes,5,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",no,1,"), std::string::npos) << csv;
  const std::string m = metrics_text(s);
  EXPECT_NE(m.find("\ngannf_quarantined_logins 2\n"), std::string::npos) << m;
  EXPECT_NE(m.find("\ngannf_login_strikes{login=\"dave\"} 5\n"), std::string::npos) << m;
}

// Units taken off a login (sql/0023) on every surface, by login like a
// quarantine; unknown (null, empty, no metric) where the database predates it.
TEST(DashLeaderboard, UnitsTakenOffByLogin) {
  Snapshot s = board_snapshot();
  s.db_ok = true;
  s.logins = std::vector<LoginRow>{login_row("bob", 1, false, 0)};
  EXPECT_EQ(Json::parse(leaderboard_json(s, false))["rows"][0]["units_taken"], nullptr);
  EXPECT_EQ(metrics_text(s).find("gannf_login_units_taken_total"), std::string::npos);
  LoginRow alice = login_row("alice", 0, false, 0);
  alice.units_taken = 3;
  alice.taken_at = 1500;
  alice.taken_why = "late";
  alice.taken_bound = 2.5;
  alice.held_to_one = true;
  LoginRow erin = login_row("erin", 0, false, 0);  // no workers on the board
  erin.units_taken = 1;
  erin.taken_why = "lease";
  s.logins = std::vector<LoginRow>{alice, (*s.logins)[0], erin};
  s.logins_taken = true;
  const Json w = Json::parse(leaderboard_json(s, false));
  ASSERT_EQ(w["rows"].size(), 4u);
  for (const Json& r : w["rows"]) {
    const bool a = r["login"] == "alice";
    EXPECT_EQ(r["units_taken"], a ? 3 : 0) << r.dump();
    EXPECT_EQ(r["held_to_one"], a) << r.dump();
    EXPECT_EQ(r["taken_why"], a ? Json("late") : Json(nullptr)) << r.dump();
    EXPECT_EQ(r["taken_bound"], a ? Json(2.5) : Json(nullptr)) << r.dump();
  }
  const auto l = leaderboard(s, true);
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0].login, "alice");
  EXPECT_EQ(l[0].units_taken, 3);  // the login's, not a sum over its two workers
  const std::string csv = leaderboard_csv(s, true);
  EXPECT_NE(csv.find(",units_taken_off,last_taken_why,held_to_one,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",3,late,yes,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",0,,no,"), std::string::npos) << csv;
  const std::string m = metrics_text(s);
  EXPECT_NE(m.find("\ngannf_login_units_taken_total{login=\"alice\"} 3\n"), std::string::npos) << m;
  EXPECT_NE(m.find("\ngannf_login_units_taken_total{login=\"erin\"} 1\n"), std::string::npos) << m;
  EXPECT_EQ(m.find("gannf_login_units_taken_total{login=\"bob\"}"), std::string::npos) << m;
  EXPECT_NE(m.find("\ngannf_logins_held_to_one_unit 1\n"), std::string::npos) << m;
}

TEST(DashMetrics, ExpositionFormatWithEscapedLabels) {
  EXPECT_EQ(prometheus_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  Snapshot s = board_snapshot();
  s.db_ok = true;
  const std::string m = metrics_text(s);
  const std::regex comment(R"(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+)");
  const std::regex sample(
      R"re([a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*",?)*\})? -?([0-9.e+-]+|NaN|\+Inf|-Inf))re");
  std::set<std::string> counters;
  size_t n = 0;
  for (size_t i = 0, j; (j = m.find('\n', i)) != std::string::npos; i = j + 1, ++n) {
    const std::string line = m.substr(i, j - i);
    if (line[0] == '#') {
      EXPECT_TRUE(std::regex_match(line, comment)) << line;
      if (line.rfind("# TYPE ", 0) == 0 && line.find(" counter") != std::string::npos) counters.insert(line.substr(7, line.find(' ', 7) - 7));
    } else {
      EXPECT_TRUE(std::regex_match(line, sample)) << line;
    }
  }
  EXPECT_GT(n, 30u);
  for (const std::string& c : counters) EXPECT_EQ(c.substr(c.size() - 6), "_total") << c;
  EXPECT_NE(m.find("gannf_worker_images_total{login=\"alice\",worker=\"=HYPERLINK(\\\"http://evil\\\",\\\"x\\\")\"} 128"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("gannf_workers_active 3\n"), std::string::npos);
}

TEST(DashStatus, StatesAndProgress) {
  Snapshot s = history_snapshot(10);
  s.db_ok = true;
  EXPECT_EQ(run_state(s), "none");
  EXPECT_EQ(Json::parse(status_json(s))["run"], nullptr);
  RunRow r;
  r.run_id = "r";
  r.db_status = "running";
  r.dataset_size = 65;  // units of 16: 4 of 16 and a last single image that is skipped
  r.images_per_unit = 16;
  r.units_per_update = 3;
  r.epochs = 2;
  r.iteration = 10;
  s.run = r;
  s.images_processed = 160;
  EXPECT_EQ(run_state(s), "interrupted");  // no coordinator holds the running run
  s.run->coordinator_running = true;
  EXPECT_EQ(run_state(s), "running");
  // What was asked shows as such, with or without a coordinator (sql/0011).
  for (const char* st : {"paused", "stopped", "finished"})
    for (const bool coord : {false, true}) {
      Snapshot x = s;
      x.run->db_status = st;
      x.run->coordinator_running = coord;
      EXPECT_EQ(run_state(x), st) << coord;
    }
  {
    Snapshot x = s;
    x.run->coordinator_running = false;
    x.run->iteration = 0;
    x.history = std::make_shared<std::vector<HistoryRow>>();
    EXPECT_EQ(run_state(x), "ready");
  }
  const Json j = Json::parse(status_json(s))["run"];
  EXPECT_EQ(j["images_total"], 128);
  EXPECT_EQ(j["iterations_total"], 3);  // ceil(8 units / 3)
  EXPECT_EQ(j["epoch"], 2);
  EXPECT_DOUBLE_EQ(j["epoch_progress"].get<double>(), 1.0);
  // images/s over the last minute of updates; 0 once a minute passed without one.
  auto h = std::make_shared<std::vector<HistoryRow>>(*s.history);
  for (size_t i = 0; i < h->size(); ++i) (*h)[i].recorded_at = 1000 + (double)i;
  s.history = h;
  s.db_now = 1009.5;
  const Json live = Json::parse(status_json(s))["run"];
  EXPECT_DOUBLE_EQ(live["images_per_second"].get<double>(), 9 * 16 / 9.0);
  EXPECT_DOUBLE_EQ(live["tflops"].get<double>(), 16 * 1e9 / 1e12);
  s.db_now = 1100;
  EXPECT_EQ(Json::parse(status_json(s))["run"]["images_per_second"], 0.0);
  EXPECT_EQ(Json::parse(status_json(s))["run"]["eta_seconds"], nullptr);
  s.run->db_status = "finished";
  s.run->coordinator_running = false;
  EXPECT_EQ(run_state(s), "finished");
  EXPECT_EQ(Json::parse(status_json(s))["run"]["images_per_second"], nullptr);
}

TEST(DashServer, LoopbackAddresses) {
  for (const char* h : {"127.0.0.1", "127.1.2.3", "::1", "localhost"}) EXPECT_TRUE(is_loopback(h)) << h;
  for (const char* h : {"0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "localhost.evil.example", "", "128.0.0.1"})
    EXPECT_FALSE(is_loopback(h)) << h;
}

}  // namespace
