// hostile_worker: a test-only program that plays issue 12's hostile or broken
// student. It IS the real worker (run_worker, the same claim, compute and
// submit code); WorkerOptions::tamper spoils each finished unit's result
// before it is submitted. Not installed, not a flag of any product program.
#include <cmath>
#include <cstdio>
#include <string>

#include "cli.h"
#include "protocol.h"
#include "rng.h"
#include "worker.h"

using namespace gannf;

namespace {

void log_line(const std::string& l) { std::fprintf(stderr, "hostile_worker: %s\n", l.c_str()); }

double norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += (double)x * x;
  return std::sqrt(s);
}

// The attack's change to one unit's result; false for an unknown name.
bool make_attack(const std::string& spec, std::function<void(cluster::UnitTamper&)>* out) {
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  const double arg = colon == std::string::npos ? 0 : std::stod(spec.substr(colon + 1));
  auto each_grad = [](cluster::UnitTamper& t, const std::function<void(std::vector<float>&, int)>& f) {
    for (int k = 0; k < 2; ++k) f(*t.grad[k], k);
  };
  if (name == "constant")  // every gradient value 9e5 (under the old 1e6 cap)
    *out = [=](cluster::UnitTamper& t) { each_grad(t, [](auto& g, int) { std::fill(g.begin(), g.end(), 9e5f); }); };
  else if (name == "scale")  // the honest gradient × arg (−1: a sign flip)
    *out = [=](cluster::UnitTamper& t) {
      each_grad(t, [=](auto& g, int) {
        for (float& x : g) x = (float)(x * arg);
      });
    };
  else if (name == "zeros")  // nothing computed, as far as the coordinator can tell
    *out = [=](cluster::UnitTamper& t) { each_grad(t, [](auto& g, int) { std::fill(g.begin(), g.end(), 0.f); }); };
  else if (name == "noise")  // Gaussian noise of the honest gradient's norm
    *out = [=](cluster::UnitTamper& t) {
      Rng r((uint64_t)t.unit_id * 7919 + 1);
      each_grad(t, [&](auto& g, int) {
        const double n = norm(g);
        r.fill_normal(g.data(), g.size());
        const double k = n / norm(g);
        for (float& x : g) x = (float)(x * k);
      });
    };
  else if (name == "alie")  // "a little is enough": a shift of arg typical element sizes along a direction every colluder shares
    *out = [=](cluster::UnitTamper& t) {
      each_grad(t, [&](auto& g, int k) {
        Rng r(12345 + k);  // the same direction in every colluding process
        const double step = arg * norm(g) / std::sqrt((double)g.size());
        for (float& x : g) x = (float)(x + (r.uniform() < 0.5 ? -step : step));
      });
    };
  else if (name == "bn")  // running statistics of 1e30: finite, variance ≥ 0
    *out = [](cluster::UnitTamper& t) {
      for (int k = 0; k < 2; ++k) std::fill(t.bn[k]->begin(), t.bn[k]->end(), 1e30f);
    };
  else if (name == "losses")  // forged losses and an accuracy outside [0, 1]
    *out = [](cluster::UnitTamper& t) {
      t.result->loss_d = 3e38f;
      t.result->d_accuracy = 2.f;
    };
  else
    return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  cluster::WorkerOptions o;
  std::string attack;
  bool no_cache = false;
  int max_units = 0, every = 1;
  cli::Parser p("hostile_worker",
                "usage: hostile_worker --attack NAME[:ARG] --db CONNINFO [options]\n"
                "The real gannf worker with each unit's result spoiled before it is submitted (tests only).\n"
                "Attacks: constant, scale:F, zeros, noise, alie:Z, bn, losses.");
  p.opt("every", &every, "spoil only every Nth result, the others honest (a machine that errs now and then)");
  p.opt("attack", &attack, "what to do to each result");
  p.opt("declare-backend", &o.declared_backend,
        "register as this back end (cuda-tf32: its spot-check tolerance) while computing on the CPU");
  p.opt("db", &o.conninfo, "libpq connection string");
  p.opt("name", &o.name, "this worker's name");
  p.opt("batch-size", &o.batch_size, "images per forward pass");
  p.opt("threads", &o.threads, "CPU threads");
  p.opt("poll-interval", &o.poll_interval, "seconds between claims without a notification");
  p.opt("max-units", &max_units, "exit after this many submitted units (0: never)");
  p.opt("sum-units", &o.sum_units, "units claimed at once and sent as one summed submission");
  p.flag("exit-when-done", &o.exit_when_done, "exit 0 when the run pauses or finishes");
  p.flag("no-cache", &no_cache, "no dataset cache file");
  try {
    p.parse(argc, argv);
    if (p.help_requested) {
      std::fputs(p.help().c_str(), stdout);
      return 0;
    }
    if (!make_attack(attack, &o.tamper)) throw cli::Error("unknown --attack '" + attack + "'");
    if (every < 1) throw cli::Error("--every: at least 1");
    if (every > 1)  // results spoiled: the every-th, 2×every-th, ... (a summed one counts once)
      o.tamper = [spoil = o.tamper, every, n = 0](cluster::UnitTamper& t) mutable {
        if (++n % every == 0) spoil(t);
      };
  } catch (const std::exception& e) {
    log_line(e.what());
    return 2;
  }
  o.max_units = max_units;
  o.cache = !no_cache;
  o.quiet = true;
  o.log = log_line;
  try {
    return cluster::run_worker(o);
  } catch (const std::exception& e) {
    log_line(e.what());
    return 1;
  }
}
