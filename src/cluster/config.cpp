#include "config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

namespace gannf {

namespace {

using Setter = std::function<void(const YAML::Node&, const std::string& key)>;
using Getter = std::function<std::string()>;

// A value as YAML writes it: numbers in their shortest exact decimal form (2e-4 is
// "0.0002"), strings quoted, empty strings as "".
std::string yaml_text(const std::string& v) { return "\"" + v + "\""; }
std::string yaml_text(double v) {
  char b[32];
  auto r = std::to_chars(b, b + sizeof b, v, std::chars_format::fixed);
  std::string s(b, r.ptr);
  return s;
}
template <class T>
std::string yaml_text(T v) {
  return std::to_string(v);
}

template <class T>
Setter scalar(T* dst, const char* what) {
  return [dst, what](const YAML::Node& n, const std::string& key) {
    if (!n.IsScalar())
      throw ConfigError(key + ": expected " + what + ", got a " +
                        (n.IsMap() ? "mapping" : n.IsSequence() ? "list" : "null"));
    try {
      *dst = n.as<T>();
    } catch (const YAML::Exception&) {
      throw ConfigError(key + ": expected " + what + ", got '" + n.Scalar() + "'");
    }
  };
}

struct Entry {
  ConfigKey info;
  Setter set;
  Getter get;
};

template <class T>
Entry key(const char* section, const char* name, const char* legacy, const char* flag, const char* programs,
          const char* help, T* field, const char* what) {
  return {{section, name, legacy, flag, programs, help, ""}, scalar(field, what), [field] { return yaml_text(*field); }};
}

// THE table: every key of the file, the flag that sets the same thing, and
// the reference project's name where gannf's differs. Keys are named as
// their flags (--images-per-unit: images_per_unit); the database keys are
// libpq's own, and a --db string can carry each.
std::vector<Entry> table(Config& c) {
  auto& d = c.database;
  auto& t = c.training;
  auto& w = c.worker;
  const char* coord_init = "gannf-coord init";
  const char* cluster = "gannf-coord, gannf-worker";
  return {
      key("database", "url", "", "--db", cluster, "a libpq connection string or postgresql:// URI", &d.url,
          "a connection string"),
      key("database", "host", "", "--db 'host=...'", cluster, "the server (empty: PGHOST, the local socket)", &d.host,
          "a host name"),
      key("database", "port", "", "--db 'port=...'", cluster, "its port (0: PGPORT, 5432)", &d.port, "a port number"),
      key("database", "dbname", "database", "--db 'dbname=...'", cluster, "the database (empty: PGDATABASE)",
          &d.database, "a database name"),
      key("database", "user", "", "--db 'user=...'", cluster, "the login (empty: PGUSER, your user name)", &d.user,
          "a user name"),
      key("database", "password", "", "--db 'password=...'", cluster,
          "better left out: ~/.pgpass or PGPASSWORD (the hand-out's .pgpass line)", &d.password, "a password"),
      key("database", "sslmode", "", "--db 'sslmode=...'", cluster,
          "verify-full over a network: TLS and the server's name checked", &d.sslmode, "an sslmode"),
      key("training", "latent_dim", "", "--latent-dim", coord_init, "size of the noise vector z", &t.latent_dim,
          "a whole number"),
      key("training", "image_size", "", "--image-size", coord_init, "32 or 64", &t.image_size, "a whole number"),
      key("training", "channels", "", "--channels", coord_init, "1 or 3 (0: 1 for IDX data, else 3)", &t.channels,
          "a whole number"),
      key("training", "ngf", "", "--ngf", coord_init, "generator width", &t.ngf, "a whole number"),
      key("training", "ndf", "", "--ndf", coord_init, "discriminator width", &t.ndf, "a whole number"),
      key("training", "images_per_unit", "images_per_work_unit", "--images-per-unit", coord_init,
          "images in one work unit", &t.images_per_work_unit, "a whole number"),
      key("training", "units_per_update", "num_workunits_per_update", "--units-per-update", coord_init,
          "work units averaged into one update", &t.num_workunits_per_update, "a whole number"),
      key("training", "lr", "learning_rate", "--lr", coord_init, "Adam learning rate", &t.learning_rate, "a number"),
      key("training", "beta1", "", "--beta1", coord_init, "Adam beta1", &t.beta1, "a number"),
      key("training", "beta2", "", "--beta2", coord_init, "Adam beta2", &t.beta2, "a number"),
      key("training", "epochs", "num_epochs", "--epochs", coord_init, "passes over the dataset", &t.epochs,
          "a whole number"),
      key("training", "iterations", "max_iterations", "--iterations", "gannf-coord run",
          "stop once the run has made this many updates (0: no bound)", &t.max_iterations, "a whole number"),
      key("training", "seed", "", "--seed", coord_init, "seeds weights, data order and noise", &t.seed,
          "a whole number"),
      key("training", "sample_interval", "", "--sample-interval", "gannf-coord run",
          "iterations between sample grids (0: at the end only)", &t.sample_interval, "a whole number"),
      key("training", "checkpoint_interval", "", "--checkpoint-interval", "gannf-coord run",
          "iterations between checkpoints (0: at the end only)", &t.checkpoint_interval, "a whole number"),
      key("worker", "name", "", "--name", "gannf-worker", "this machine's name in the cluster (empty: the host name)",
          &w.name, "a name"),
      key("worker", "batch_size", "", "--batch-size", "gannf-worker", "images per forward pass on this machine",
          &w.batch_size, "a whole number"),
      key("worker", "poll_interval", "", "--poll-interval", "gannf-worker",
          "seconds between claims when no notification comes (a fallback)", &w.poll_interval, "a number of seconds"),
      key("worker", "heartbeat_interval", "", "--heartbeat-interval", "gannf-worker", "seconds between heartbeats",
          &w.heartbeat_interval, "a number of seconds"),
      key("worker", "lease", "work_unit_timeout", "--lease", coord_init,
          "seconds a worker may hold a unit without a heartbeat", &w.work_unit_timeout, "a number of seconds"),
      key("data", "dataset", "dataset_path", "--dataset", "gannf-coord init, gannf-worker",
          "'synthetic[:N]', a CelebA folder, a folder of images, or MNIST-style IDX files", &c.data.dataset_path,
          "a path"),
      key("trust", "aggregation", "", "--aggregation", coord_init,
          "how submissions are combined: mean (exact, trusted workers only), clip, trimmed, clip+trimmed",
          &c.trust.aggregation, "a rule name"),
      key("trust", "clip_factor", "", "--clip-factor", coord_init,
          "clip: a submission's norm is bounded by this times the recent median", &c.trust.clip_factor, "a number"),
      key("trust", "trim", "", "--trim", coord_init, "trimmed: values dropped at each end of every element",
          &c.trust.trim, "a whole number"),
      key("trust", "norm_ratio", "", "--norm-ratio", coord_init,
          "reject per-tensor gradient norms beyond this ratio, either way, of the recent median (0: off)",
          &c.trust.norm_ratio, "a number"),
      key("trust", "spot_check", "", "--spot-check", coord_init,
          "fraction of units the coordinator recomputes (0 to 1; needs the dataset at run time)",
          &c.trust.spot_check, "a number"),
      key("trust", "quorum", "", "--quorum", coord_init,
          "robust rules: an update closes with this fraction of its units (at least 3) once the rest are as late "
          "again as these took; their units are served in the next (1: wait for all; mean always waits)",
          &c.trust.quorum, "a number"),
      key("trust", "backends", "", "--backends", coord_init,
          "back ends the class accepts, comma-separated (cpu, cuda, cuda-tf32, cuda-bf16); empty: all. Spot checks "
          "allow cuda-tf32 0.1 and cuda-bf16 0.3 where cpu and cuda get 5e-2 (docs/security.md)",
          &c.trust.backends, "a list of back ends"),
      key("wire", "blob_format", "", "--blob-format", coord_init,
          "gradient blobs on the wire: f32 (exact), bf16 or f16s (half the bytes; docs/scaling.md)",
          &c.wire.blob_format, "f32, bf16 or f16s"),
  };
}

// Sections of the reference project that gannf reads elsewhere or not at
// all; accepted so that its config.yaml loads without warnings.
bool accepted_wholesale(const std::string& section) { return section == "model" || section == "huggingface"; }

}  // namespace

std::vector<ConfigKey> config_keys() {
  Config defaults;
  std::vector<ConfigKey> out;
  for (auto& e : table(defaults)) {
    out.push_back(e.info);
    out.back().default_value = e.get();
  }
  return out;
}

std::string sample_config() {
  std::ostringstream o;
  o << "# gannf's configuration: every key, the flag that sets the same thing, and its\n"
       "# default (the value shown). gannf-coord and gannf-worker read it with --config FILE;\n"
       "# flags win over it, and it wins over libpq's PG* variables and ~/.pgpass.\n"
       "# Keys are named as their flags (images_per_unit is --images-per-unit). The reference\n"
       "# project's names (images_per_work_unit, learning_rate, ...) still work, with a note.\n"
       "# Written by gannf::sample_config() (src/cluster/config.cpp); test_config checks it.\n";
  std::string section;
  for (const auto& k : config_keys()) {
    if (k.section != section) {
      section = k.section;
      o << "\n" << section << ":\n";
    }
    o << "  # " << k.help << "\n  #   " << k.flag << " (" << k.programs << ")"
      << (k.legacy.empty() ? "" : "; the reference's name: " + k.legacy) << "\n";
    // A password never belongs in a shared file: shown commented out.
    o << (k.key == "password" ? "  # " : "  ") << k.key << ": " << k.default_value << "\n";
  }
  return o.str();
}

Config parse_config(const std::string& text, const std::string& name,
                    std::vector<std::string>* warnings) {
  Config c;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(name + ": not valid YAML (line " + std::to_string(e.mark.line + 1) + ": " +
                      e.msg + ")");
  }
  if (root.IsNull()) return c;
  if (!root.IsMap()) throw ConfigError(name + ": expected sections (database:, training:, ...)");
  const auto keys = table(c);
  std::string legacy_used, current_names;
  std::map<const Entry*, std::string> given;  // entry -> the name it was given under
  for (auto sec : root) {
    const std::string s = sec.first.as<std::string>();
    const bool known = accepted_wholesale(s) ||
                       std::any_of(keys.begin(), keys.end(), [&](const Entry& e) { return e.info.section == s; });
    if (!known) {
      if (warnings) warnings->push_back(name + ": unknown section '" + s + "' ignored");
      continue;
    }
    if (sec.second.IsNull()) continue;
    if (!sec.second.IsMap()) throw ConfigError(name + ": " + s + ": expected a mapping of keys");
    if (accepted_wholesale(s)) continue;
    for (auto kv : sec.second) {
      const std::string k = kv.first.as<std::string>();
      const Entry* e = nullptr;
      for (const auto& x : keys)
        if (x.info.section == s && (x.info.key == k || x.info.legacy == k)) e = &x;
      if (!e) {
        if (warnings) warnings->push_back(name + ": unknown key '" + s + "." + k + "' ignored");
        continue;
      }
      if (auto it = given.find(e); it != given.end())
        throw ConfigError(name + ": " + s + "." + it->second + " and " + s + "." + k +
                          " are the same setting; keep one");
      given[e] = k;
      if (k == e->info.legacy) {
        legacy_used += (legacy_used.empty() ? "" : ", ") + s + "." + k;
        current_names += (current_names.empty() ? "" : ", ") + e->info.key;
      }
      if (kv.second.IsNull()) continue;
      try {
        e->set(kv.second, s + "." + k);
      } catch (const ConfigError& err) {
        throw ConfigError(name + ": " + err.what());
      }
    }
  }
  if (!legacy_used.empty() && warnings)
    warnings->push_back(name + ": " + legacy_used + ": the reference project's names, still read; gannf's are " +
                        current_names + " (named as the flags; see config.sample.yaml)");
  return c;
}

Config load_config(const std::string& path, std::vector<std::string>* warnings) {
  std::ifstream f(path);
  if (!f) throw ConfigError(path + ": cannot read the configuration file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_config(ss.str(), path, warnings);
}

Config config_or_defaults(const std::string& path,
                          const std::function<void(const std::string&)>& warn) {
  if (path.empty()) return Config{};
  std::vector<std::string> warnings;
  Config c = load_config(path, &warnings);
  for (const auto& w : warnings) warn(w);
  return c;
}

void Config::validate() const {
  auto bad = [](const std::string& m) { throw ConfigError(m); };
  const auto& t = training;
  if (t.image_size != 32 && t.image_size != 64) bad("training.image_size must be 32 or 64");
  if (t.channels != 0 && t.channels != 1 && t.channels != 3) bad("training.channels must be 1 or 3");
  if (t.latent_dim <= 0) bad("training.latent_dim must be positive");
  if (t.ngf <= 0 || t.ndf <= 0) bad("training.ngf and training.ndf must be positive");
  if (t.images_per_work_unit < 2) bad("training.images_per_unit (--images-per-unit) must be at least 2");
  if (t.num_workunits_per_update < 1) bad("training.units_per_update (--units-per-update) must be at least 1");
  if (!(std::isfinite(t.learning_rate) && t.learning_rate > 0))
    bad("training.lr (--lr) must be a positive number");
  if (!(t.beta1 >= 0 && t.beta1 < 1)) bad("training.beta1 must be in [0, 1)");
  if (!(t.beta2 >= 0 && t.beta2 < 1)) bad("training.beta2 must be in [0, 1)");
  if (t.epochs <= 0) bad("training.epochs (--epochs) must be positive");
  if (t.max_iterations < 0) bad("training.iterations (--iterations) must be 0 (no limit) or positive");
  if (t.sample_interval < 0 || t.checkpoint_interval < 0) bad("training intervals must be >= 0");
  if (worker.batch_size < 2) bad("worker.batch_size must be at least 2 (batch norm needs two images)");
  if (!(worker.poll_interval > 0)) bad("worker.poll_interval must be a positive number of seconds");
  if (!(worker.heartbeat_interval > 0)) bad("worker.heartbeat_interval must be positive");
  if (!(worker.work_unit_timeout > worker.heartbeat_interval))
    bad("worker.lease (--lease) must be longer than worker.heartbeat_interval");
  if (database.port < 0 || database.port > 65535) bad("database.port must be 1..65535");
  const auto& r = trust;
  if (r.aggregation != "mean" && r.aggregation != "clip" && r.aggregation != "trimmed" &&
      r.aggregation != "clip+trimmed")
    bad("trust.aggregation (--aggregation) must be mean, clip, trimmed or clip+trimmed, got '" + r.aggregation + "'");
  if (!(std::isfinite(r.clip_factor) && r.clip_factor > 0)) bad("trust.clip_factor (--clip-factor) must be positive");
  if (r.trim < 0) bad("trust.trim (--trim) must be 0 or more");
  if (!(r.norm_ratio == 0 || (std::isfinite(r.norm_ratio) && r.norm_ratio > 1)))
    bad("trust.norm_ratio (--norm-ratio) must be 0 (off) or more than 1");
  if (!(r.spot_check >= 0 && r.spot_check <= 1)) bad("trust.spot_check (--spot-check) must be in [0, 1]");
  if (!(r.quorum > 0 && r.quorum <= 1)) bad("trust.quorum (--quorum) must be above 0 and at most 1");
  try {
    parse_backend_list(trust.backends);
  } catch (const std::invalid_argument& e) {
    bad(std::string("trust.backends (--backends): ") + e.what());
  }
  const std::string& f = wire.blob_format;
  if (f != "f32" && f != "bf16" && f != "f16s")
    bad("wire.blob_format (--blob-format) must be f32, bf16 or f16s, got '" + f + "'");
}

std::string Config::conninfo() const {
  // libpq key=value syntax: values in single quotes, \ and ' escaped. A URI in
  // `url` stays first; libpq lets later keys override it.
  auto q = [](const std::string& v) {
    std::string r = "'";
    for (char ch : v) {
      if (ch == '\\' || ch == '\'') r += '\\';
      r += ch;
    }
    return r + "'";
  };
  std::string s;
  auto add = [&](const char* k, const std::string& v) {
    if (!v.empty()) s += std::string(s.empty() ? "" : " ") + k + "=" + q(v);
  };
  const auto& d = database;
  if (!d.url.empty()) {
    if (d.url.rfind("postgres://", 0) == 0 || d.url.rfind("postgresql://", 0) == 0)
      add("dbname", d.url);  // libpq expands a URI given as dbname
    else
      s = d.url;
  }
  add("host", d.host);
  if (d.port) add("port", std::to_string(d.port));
  add("dbname", d.database);
  add("user", d.user);
  add("password", d.password);
  add("sslmode", d.sslmode);
  add("application_name", "gannf");
  return s;
}

const std::vector<std::string>& backend_names() {
  static const std::vector<std::string> names = {"cpu", "cuda", "cuda-tf32", "cuda-bf16"};
  return names;
}

std::vector<std::string> parse_backend_list(const std::string& list) {
  std::vector<std::string> out;
  const auto& known = backend_names();
  auto known_text = [&] {
    std::string t;
    for (const auto& n : known) t += (t.empty() ? "" : ", ") + n;
    return t;
  };
  if (list.find_first_not_of(" \t") == std::string::npos) return out;
  size_t at = 0;
  for (;;) {
    const size_t comma = list.find(',', at);
    std::string name = list.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    const size_t b = name.find_first_not_of(" \t"), e = name.find_last_not_of(" \t");
    name = b == std::string::npos ? "" : name.substr(b, e - b + 1);
    if (name.empty()) throw std::invalid_argument("an empty name in '" + list + "' (give e.g. cpu,cuda)");
    if (std::find(known.begin(), known.end(), name) == known.end())
      throw std::invalid_argument("unknown back end '" + name + "' (choose from " + known_text() + ")");
    if (std::find(out.begin(), out.end(), name) != out.end())
      throw std::invalid_argument("back end '" + name + "' named twice");
    out.push_back(name);
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return out;
}

}  // namespace gannf
