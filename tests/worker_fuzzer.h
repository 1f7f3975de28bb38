// The fuzzer of a worker login, shared by the database tests
// (test_trust_db.cpp: one session, four sessions, the coordinator's calls
// imitated) and the real-process ones (test_trust_runs.cpp: beside a real
// gannf-coord and gannf-workers): random calls of every function a worker
// login may execute, the documented SQLSTATEs they may fail with, and the
// table of outcomes a run prints.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "blob.h"
#include "pg.h"
#include "protocol.h"
#include "sql_test.h"

namespace gannf::test::fuzz {

using cluster::ClaimedUnit;
using pg::Connection;
using pg::Params;
using Clock = std::chrono::steady_clock;
constexpr auto floats = random_floats;

// What a worker function may fail with (docs/security.md, the worker
// functions' table): anything else is a refusal no counter counts and an
// error no worker can act on.
inline const std::set<std::string> kDocumentedSqlstates = {"ZG001", "ZG002", "ZG003", "ZG004",
                                                            "ZG005", "ZG006", "22023", "42501"};

// One argument of a fuzzed call in PostgreSQL's text form (nullopt: NULL),
// cast in the statement to the parameter's declared type: every value a
// client can send in that type, since whatever the client sends reaches
// the function as a value of it.
using FuzzArg = std::optional<std::string>;

inline std::string bytea_text(std::span<const float> v) {
  static const char* hex = "0123456789abcdef";
  std::string s = "\\x";
  const auto* b = reinterpret_cast<const unsigned char*>(v.data());  // little-endian hosts: the wire layout
  for (size_t i = 0; i < v.size() * 4; ++i) s += hex[b[i] >> 4], s += hex[b[i] & 15];
  return s;
}

inline std::string real_text(float x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", x);
  return b;
}

template <class T>
inline std::string array_text(const std::vector<T>& v) {
  std::string s = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s + "}";
}

// A hostile client of one login: random calls of every function its login
// may execute, each either an honest worker's call with one to three
// arguments replaced or wholly drawn from the values that matter for each
// type (its own and another login's ids, real unit ids and attempts, the
// published sizes and hashes and their neighbours, the edges of the type,
// NULL, blobs of every published size and of none, NaN, long arrays).
class Fuzzer {
 public:
  struct Call {
    std::string fn;
    std::vector<std::string> types;
    std::vector<FuzzArg> args;
    std::string describe() const {
      std::string s = "gannf." + fn + "(";
      for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i] ? *args[i] : "NULL";
        if (a.size() > 40) a = a.substr(0, 24) + "…(" + std::to_string(a.size()) + " chars)";
        if (i) s += ", ";
        s += a + "::" + types[i];
      }
      return s + ")";
    }
    pg::Result run(Connection& c) const {
      std::string sql = "SELECT * FROM gannf." + fn + "(";
      Params p;
      for (size_t i = 0; i < args.size(); ++i) {
        if (i) sql += ", ";
        sql += "$" + std::to_string(i + 1) + "::" + types[i];
        if (args[i]) p.add(*args[i]); else p.null();
      }
      return c.exec(sql + ")", p);
    }
  };

  // The published layouts the honest calls are of: hashes, element
  // counts, and BN statistics per pass (D's submissions carry two passes).
  struct Layout {
    uint64_t hash_g, hash_d;
    size_t g, gbn, d, dbn;
  };

  std::mt19937_64 rng;
  Layout L;
  std::vector<int64_t> own;        // the login's registered workers
  int64_t other = 0;               // a worker of another login
  struct Held {
    int64_t worker;
    ClaimedUnit unit;
    Clock::time_point at = Clock::now();  // when its claim was committed, as far as the login knows
  };
  std::vector<Held> held;          // what claim() answered to the login's workers
  std::vector<int64_t> units;      // every unit id there is
  int64_t iteration = 0;
  std::vector<float> g = floats(L.g, 3), gbn = floats(L.gbn, 4), d = floats(L.d, 5), dbn = floats(2 * L.dbn, 6);

  Fuzzer(uint64_t seed, Layout layout) : rng(seed), L(layout) {}

  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng); }
  template <class T>
  const T& any(const std::vector<T>& v) { return v[pick(v.size())]; }
  int64_t own_worker() { return own.empty() ? -1 : any(own); }
  const Held* held_unit() { return held.empty() ? nullptr : &held[pick(held.size())]; }

  FuzzArg value(const std::string& type) {
    if (chance(0.08)) return std::nullopt;
    const int64_t unit = units.empty() ? 1 : any(units);
    if (type == "bigint") {
      const std::vector<int64_t> v = {0, -1, 1, int64_t{1} << 31, std::numeric_limits<int64_t>::max(),
                                      std::numeric_limits<int64_t>::min(), own_worker(), other, unit, unit + 1000,
                                      iteration, iteration - 1, iteration + 1, (int64_t)L.hash_g, (int64_t)L.hash_d,
                                      (int64_t)L.g, (int64_t)L.g - 1, (int64_t)L.gbn, (int64_t)L.d, 2 * (int64_t)L.dbn,
                                      (int64_t)cluster::blob_checksum(g), (int64_t)cluster::blob_checksum(d)};
      return std::to_string(any(v));
    }
    if (type == "integer") {
      const std::vector<int32_t> v = {0, -1, 1, 2, 3, 4, 15, 16, 17, 64, 65, std::numeric_limits<int32_t>::max(),
                                      std::numeric_limits<int32_t>::min()};
      return std::to_string(any(v));
    }
    if (type == "real") {
      const float inf = std::numeric_limits<float>::infinity();
      const std::vector<float> v = {0.f, -0.f, 0.5f, 1.f, -1.f, 1e-45f, 3e38f, -3e38f, std::nanf(""), inf, -inf,
                                    1e4f, 1.0001e4f, 86400.f, 86401.f};
      return real_text(any(v));
    }
    if (type == "text") {
      const std::vector<std::string> v = {"", "cpu", "cuda", "cuda-tf32", "cuda-bf16", "gpu", "honest", "fz",
                                          std::string(64, 'x'), std::string(65, 'x'), std::string(10000, 'y'),
                                          "\x1b[2J", "a\u202Eb", " lead", "trail ", "é", "\u200b", "'; DROP TABLE x"};
      return any(v);
    }
    if (type == "boolean") return chance(0.5) ? "true" : "false";
    if (type == "bytea") {
      switch (pick(9)) {
        case 0: return "\\x";
        case 1: return "\\x00";
        case 2: return bytea_text(floats(L.g + 1, 7));
        case 3: return bytea_text(floats(L.g - 1, 7));
        case 4: return bytea_text(std::vector<float>(L.g, std::nanf("")));
        case 5: return bytea_text(std::vector<float>(L.g, 0.f));
        case 6: return bytea_text(floats(64 * 1024, 8));
        case 7: return bytea_text(gbn);
        default: return bytea_text(d);
      }
    }
    if (type == "bigint[]") {
      std::vector<int64_t> v;
      switch (pick(7)) {
        case 0: return "{}";
        case 1: return "{NULL}";
        case 2: for (const Held& h : held) v.push_back(h.unit.unit_id); break;
        case 3: v = {unit, unit}; break;
        case 4: v = {-1, std::numeric_limits<int64_t>::max()}; break;
        case 5: v = units; break;
        default: v.assign(10000, unit);
      }
      return array_text(v);
    }
    if (type == "integer[]") {
      std::vector<int32_t> v;
      switch (pick(6)) {
        case 0: return "{}";
        case 1: return "{NULL}";
        case 2: v = {16, 16}; break;
        case 3: v = {-1, std::numeric_limits<int32_t>::max()}; break;
        case 4: v = {0}; break;
        default: v.assign(10000, 16);
      }
      return array_text(v);
    }
    if (type == "real[]") {
      switch (pick(5)) {
        case 0: return "{}";
        case 1: return "{NaN,1,1,1,1}";
        case 2: return "{1.3,0.7,0.6,0.4,0.55}";
        case 3: return "{1.3,0.7,0.6,0.4,0.55,1.3,0.7,0.6,0.4,0.55}";
        default: {
          std::string s = "{";
          for (int i = 0; i < 10000; ++i) s += (i ? ",1" : "1");
          return s + "}";
        }
      }
    }
    ADD_FAILURE() << "the fuzzer has no values of type " << type;
    return std::nullopt;
  }

  // What an honest worker of this login would send, or nothing where the
  // function is one the fuzzer has no honest call of (then every argument
  // is drawn at random).
  std::vector<FuzzArg> honest(const std::string& fn, size_t n) {
    const Held* h = held_unit();
    const ClaimedUnit* u = h ? &h->unit : nullptr;
    const int64_t w = h && fn != "register_worker" && fn != "claim" ? h->worker : own_worker();
    auto i = [](int64_t x) -> FuzzArg { return std::to_string(x); };
    auto network = [&](std::vector<FuzzArg>& a, uint64_t hash, const std::vector<float>& grad,
                       const std::vector<float>& bn) {
      a.insert(a.end(), {i((int64_t)hash), i((int64_t)grad.size()), bytea_text(grad),
                         i((int64_t)cluster::blob_checksum(grad)), i((int64_t)bn.size()), bytea_text(bn),
                         i((int64_t)cluster::blob_checksum(bn))});
    };
    std::vector<FuzzArg> a;
    if (fn == "register_worker") {
      a = {"fz" + std::to_string(pick(24)), "cpu", "2", "8000000000", std::nullopt, std::nullopt, "64"};
    } else if (fn == "heartbeat") {
      a = {i(w), u ? i(u->unit_id) : FuzzArg{}, u ? i(u->attempt) : FuzzArg{}};
    } else if (fn == "claim") {
      a = {i(w), i(1 + (int64_t)pick(4))};
    } else if (fn == "release" && u) {
      a = {i(w), i(u->unit_id), i(u->attempt)};
    } else if (fn == "release_held" || fn == "leave") {
      a = {i(w)};
    } else if (fn == "report_timing") {
      a = {i(w), "2", "1.5", "0.4", "13000000", "0.8", "25000000"};
    } else if (fn == "monitor_look") {
      a = {"0", "0", "0", "50", "false"};
    } else if (fn == "submit" && u) {
      a = {i(w), i(u->unit_id), i(u->attempt), i(u->iteration), i(u->sample_count)};
      network(a, L.hash_g, g, gbn);
      network(a, L.hash_d, d, dbn);
      a.insert(a.end(), {"1.3", "0.7", "0.6", "0.4", "0.55", "1", i(u->sample_count)});
    } else if (fn == "submit_summed" && u) {
      std::vector<ClaimedUnit> us;
      for (const Held& o : held)
        if (o.worker == w && o.unit.iteration == u->iteration && (o.unit.unit_id == u->unit_id || chance(0.7)))
          us.push_back(o.unit);
      std::sort(us.begin(), us.end(), [](auto& x, auto& y) { return x.unit_id < y.unit_id; });
      std::vector<int64_t> ids;
      std::vector<int32_t> attempts, counts;
      std::vector<float> gb, db;
      std::string losses = "{";
      for (const ClaimedUnit& h : us) {
        ids.push_back(h.unit_id), attempts.push_back(h.attempt), counts.push_back(h.sample_count);
        gb.insert(gb.end(), gbn.begin(), gbn.end());
        db.insert(db.end(), dbn.begin(), dbn.end());
        if (losses.size() > 1) losses += ',';
        losses += "1.3,0.7,0.6,0.4,0.55";
      }
      a = {i(w), array_text(ids), array_text(attempts), i(u->iteration), array_text(counts)};
      network(a, L.hash_g, g, gb);
      network(a, L.hash_d, d, db);
      a.insert(a.end(), {losses + "}", "1", i(us[0].sample_count)});
    }
    if (!a.empty() && a.size() != n) {
      ADD_FAILURE() << "gannf." << fn << " takes " << n << " arguments; the fuzzer's honest call has " << a.size();
      a.clear();
    }
    return a;
  }

  // What a call's answer gives the login: units claimed, workers registered.
  void learn(const Call& call, const pg::Result& res) {
    if (call.fn == "claim" && call.args[0])
      for (int i = 0; i < res.rows(); ++i)
        held.push_back({std::stoll(*call.args[0]),
                        {res.get<int64_t>(i, 0), res.get<int32_t>(i, 1), res.get<int64_t>(i, 2),
                         res.get<int32_t>(i, 3), res.get<int64_t>(i, 4), res.get<int32_t>(i, 5), {}}});
    if (call.fn == "register_worker" && res.rows() == 1 && !res.is_null(0, 0)) {
      const int64_t id = res.get<int64_t>(0, 0);
      if (std::find(own.begin(), own.end(), id) == own.end()) own.push_back(id);
    }
  }

  // Units submitted or taken back (`live`: the claimed units' ids and
  // attempts, read at `taken`) are no longer the login's to send; a few
  // stale ones are kept to send anyway. A unit claimed after `taken` is not
  // in `live` yet.
  void forget(const std::set<std::pair<int64_t, int32_t>>& live, Clock::time_point taken = Clock::now()) {
    std::erase_if(held, [&](const Held& h) {
      return !live.count({h.unit.unit_id, h.unit.attempt}) && h.at < taken && !chance(0.1);
    });
  }

  // A transaction's claims are committed now.
  void committed(Clock::time_point since) {
    for (Held& h : held)
      if (h.at >= since) h.at = Clock::now();
  }

  // fns: each function's name, its arguments' types and names.
  using Signature = std::tuple<std::string, std::vector<std::string>, std::vector<std::string>>;
  Call next(const std::vector<Signature>& fns) {
    // Weighted towards the calls with the most to check.
    static const std::vector<std::pair<std::string, int>> weight = {
        {"submit", 25}, {"submit_summed", 15}, {"claim", 15}, {"heartbeat", 10}, {"release", 7},
        {"register_worker", 6}, {"release_held", 5}, {"report_timing", 5}, {"monitor_look", 4}, {"leave", 1}};
    std::vector<int> w;
    for (auto& [name, types, names] : fns) {
      int x = 2;
      for (auto& [n, k] : weight)
        if (n == name) x = k;
      w.push_back(x);
    }
    size_t at = std::discrete_distribution<size_t>(w.begin(), w.end())(rng);
    // With units in hand, mostly what is done with them.
    if (!held.empty() && chance(0.4)) {
      static const std::vector<std::string> with_units = {"submit", "submit", "submit_summed", "heartbeat",
                                                          "release"};
      const std::string& want = any(with_units);
      for (size_t i = 0; i < fns.size(); ++i)
        if (std::get<0>(fns[i]) == want) at = i;
    }
    const auto& [fn, types, names] = fns[at];
    Call c{fn, types, honest(fn, types.size())};
    if (c.args.empty()) {
      // Mostly as one of its own workers: the checks past the first.
      for (size_t i = 0; i < types.size(); ++i)
        c.args.push_back(names[i] == "p_worker" && chance(0.75) ? std::to_string(own_worker()) : value(types[i]));
    } else if (!chance(0.3)) {
      for (size_t k = 1 + pick(3); k > 0; --k) {
        const size_t at = pick(types.size());
        c.args[at] = value(types[at]);
      }
    }
    return c;
  }
};

// Calls by function and outcome ("ok" or the SQLSTATE), one line per
// function; `total` gets the number of calls.
inline std::string outcome_table(const std::map<std::string, std::map<std::string, int>>& outcomes, int* total = nullptr) {
  std::string table;
  for (auto& [fn, by] : outcomes) {
    table += "  " + fn + ":";
    for (auto& [state, k] : by) {
      table += " " + state + " " + std::to_string(k);
      if (total) *total += k;
    }
    table += "\n";
  }
  return table;
}

// Every function worker login `login` may execute, with its arguments' types and
// names, from pg_proc: a function granted later is fuzzed too.
inline std::vector<Fuzzer::Signature> worker_functions(Connection& c, const std::string& login) {
  std::vector<Fuzzer::Signature> fns;
  Params who;
  who.add(login);
  pg::Result r = c.exec(
      "SELECT p.proname::text, "
      "       coalesce(array_to_string(ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) "
      "                                       WITH ORDINALITY a(t, n) ORDER BY n), ','), ''), "
      "       coalesce(array_to_string((p.proargnames)[1:p.pronargs], ','), '') "
      "FROM pg_proc p WHERE p.pronamespace = 'gannf'::regnamespace "
      "AND has_function_privilege($1, p.oid, 'EXECUTE') ORDER BY 1, 2",
      who);
  auto split = [](const std::string& all) {
    std::vector<std::string> out;
    for (size_t at = 0; !all.empty() && at != std::string::npos;) {
      const size_t comma = all.find(',', at);
      out.push_back(all.substr(at, comma == std::string::npos ? comma : comma - at));
      at = comma == std::string::npos ? comma : comma + 1;
    }
    return out;
  };
  for (int i = 0; i < r.rows(); ++i) {
    std::vector<std::string> types = split(r.get<std::string>(i, 1)), names = split(r.get<std::string>(i, 2));
    EXPECT_EQ(names.size(), types.size()) << r.get<std::string>(i, 0) << ": every argument named";
    fns.push_back({r.get<std::string>(i, 0), types, names});
  }
  return fns;
}


// Invariants any login's calls must leave a run in, each a boolean SQL
// expression over the coordinator's view: no login holds more claimed
// units than max_held_units or has more workers than
// max_workers_per_login, and no quarantined login holds a unit.
inline const std::string kWithinHeldCap =
    "(SELECT coalesce(max(n), 0) FROM (SELECT w.login, count(*) n FROM gannf.work_units u "
    "   JOIN gannf.workers w ON w.id = u.worker_id WHERE u.state = 'claimed' GROUP BY 1) x) "
    "  <= (SELECT max_held_units FROM gannf.trust_settings)";
inline const std::string kWithinWorkersCap =
    "(SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM gannf.workers GROUP BY login) x) "
    "  <= (SELECT max_workers_per_login FROM gannf.trust_settings)";
inline const std::string kNoQuarantinedHolder =
    "NOT EXISTS (SELECT 1 FROM gannf.work_units u JOIN gannf.workers w ON w.id = u.worker_id "
    "  JOIN gannf.login_trust t ON t.login = w.login WHERE u.state = 'claimed' AND t.quarantined_at IS NOT NULL)";

// What the sessions of a concurrent fuzzed run share with the thread that
// watches the run (thread-safe): the last snapshot of the units they may
// name, and their outcomes and errors.
class Shared {
 public:
  using Live = std::set<std::pair<int64_t, int32_t>>;  // claimed units' ids and attempts
  // A snapshot: every unit id, the iteration, the claimed units read at `at`.
  void set(std::vector<int64_t> units, int64_t iteration, Live live, Clock::time_point at) {
    std::lock_guard<std::mutex> g(m_);
    units_ = std::move(units), iteration_ = iteration, live_ = std::move(live), live_at_ = at;
  }
  // Before a session's call: the snapshot, and the units no longer its own forgotten.
  void give(Fuzzer& fz) {
    std::lock_guard<std::mutex> g(m_);
    fz.units = units_, fz.iteration = iteration_;
    fz.forget(live_, live_at_);
  }
  void record(const std::string& fn, const std::string& state) {
    std::lock_guard<std::mutex> g(m_);
    ++outcomes_[fn][state];
  }
  void error(const std::string& what) {
    std::lock_guard<std::mutex> g(m_);
    errors_.push_back(what);
  }
  // Each session's server process and the call it makes (or made last), so
  // that an error that names processes -- a deadlock's DETAIL, "Process N
  // waits for ... blocked by process M" -- can say what each was doing: the
  // server's log has the statements, but a worker login's are kept out of
  // it (sql/roles.sql).
  void calling(int pid, const std::string& what) {
    std::lock_guard<std::mutex> g(m_);
    calls_[pid] = what;
  }
  // `e`'s message, and where it names processes, their calls.
  std::string explain(const pg::Error& e) {
    std::string out = e.what();
    if (e.detail().empty()) return out;
    std::string detail = e.detail();
    std::replace(detail.begin(), detail.end(), '\n', ' ');
    out += "; DETAIL: " + detail;
    std::lock_guard<std::mutex> g(m_);
    std::set<int> named;
    static const std::regex process("[Pp]rocess ([0-9]+)");
    for (std::sregex_iterator it(e.detail().begin(), e.detail().end(), process), end; it != end; ++it)
      named.insert(std::stoi((*it)[1].str()));
    for (int pid : named) {
      auto c = calls_.find(pid);
      out += "; process " + std::to_string(pid) + ": " + (c == calls_.end() ? "(not a session of this test)" : c->second);
    }
    return out;
  }
  // Once the sessions have ended.
  const std::map<std::string, std::map<std::string, int>>& outcomes() const { return outcomes_; }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::mutex m_;
  std::vector<int64_t> units_;
  int64_t iteration_ = 0;
  Live live_;
  Clock::time_point live_at_ = Clock::now();
  std::map<std::string, std::map<std::string, int>> outcomes_;
  std::vector<std::string> errors_;
  std::map<int, std::string> calls_;
};

}  // namespace gannf::test::fuzz
