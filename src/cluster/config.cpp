#include "config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

namespace gannf {

namespace {

using Setter = std::function<void(const YAML::Node&, const std::string& key)>;

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

}  // namespace

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
  auto& d = c.database;
  auto& t = c.training;
  auto& w = c.worker;
  const std::map<std::string, std::map<std::string, Setter>> keys = {
      {"database",
       {{"url", scalar(&d.url, "a connection string")},
        {"host", scalar(&d.host, "a host name")},
        {"port", scalar(&d.port, "a port number")},
        {"database", scalar(&d.database, "a database name")},
        {"dbname", scalar(&d.database, "a database name")},
        {"user", scalar(&d.user, "a user name")},
        {"password", scalar(&d.password, "a password")},
        {"sslmode", scalar(&d.sslmode, "an sslmode")}}},
      {"training",
       {{"latent_dim", scalar(&t.latent_dim, "a whole number")},
        {"image_size", scalar(&t.image_size, "a whole number")},
        {"channels", scalar(&t.channels, "a whole number")},
        {"ngf", scalar(&t.ngf, "a whole number")},
        {"ndf", scalar(&t.ndf, "a whole number")},
        {"images_per_work_unit", scalar(&t.images_per_work_unit, "a whole number")},
        {"num_workunits_per_update", scalar(&t.num_workunits_per_update, "a whole number")},
        {"learning_rate", scalar(&t.learning_rate, "a number")},
        {"beta1", scalar(&t.beta1, "a number")},
        {"beta2", scalar(&t.beta2, "a number")},
        {"epochs", scalar(&t.epochs, "a whole number")},
        {"num_epochs", scalar(&t.epochs, "a whole number")},
        {"max_iterations", scalar(&t.max_iterations, "a whole number")},
        {"seed", scalar(&t.seed, "a whole number")},
        {"sample_interval", scalar(&t.sample_interval, "a whole number")},
        {"checkpoint_interval", scalar(&t.checkpoint_interval, "a whole number")}}},
      {"worker",
       {{"name", scalar(&w.name, "a name")},
        {"batch_size", scalar(&w.batch_size, "a whole number")},
        {"poll_interval", scalar(&w.poll_interval, "a number of seconds")},
        {"heartbeat_interval", scalar(&w.heartbeat_interval, "a number of seconds")},
        {"work_unit_timeout", scalar(&w.work_unit_timeout, "a number of seconds")}}},
      {"data", {{"dataset_path", scalar(&c.data.dataset_path, "a path")}}},
      // Sections of the reference project that gannf reads elsewhere or not at
      // all; accepted so that its config.yaml loads without warnings.
      {"model", {}},
      {"huggingface", {}},
  };
  for (auto sec : root) {
    const std::string s = sec.first.as<std::string>();
    auto it = keys.find(s);
    if (it == keys.end()) {
      if (warnings) warnings->push_back(name + ": unknown section '" + s + "' ignored");
      continue;
    }
    if (sec.second.IsNull()) continue;
    if (!sec.second.IsMap()) throw ConfigError(name + ": " + s + ": expected a mapping of keys");
    if (it->second.empty()) continue;  // accepted wholesale
    for (auto kv : sec.second) {
      const std::string k = kv.first.as<std::string>();
      auto set = it->second.find(k);
      if (set == it->second.end()) {
        if (warnings) warnings->push_back(name + ": unknown key '" + s + "." + k + "' ignored");
        continue;
      }
      if (kv.second.IsNull()) continue;
      try {
        set->second(kv.second, s + "." + k);
      } catch (const ConfigError& e) {
        throw ConfigError(name + ": " + e.what());
      }
    }
  }
  return c;
}

Config load_config(const std::string& path, std::vector<std::string>* warnings) {
  std::ifstream f(path);
  if (!f) throw ConfigError(path + ": cannot read the configuration file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_config(ss.str(), path, warnings);
}

void Config::validate() const {
  auto bad = [](const std::string& m) { throw ConfigError(m); };
  const auto& t = training;
  if (t.image_size != 32 && t.image_size != 64) bad("training.image_size must be 32 or 64");
  if (t.channels != 0 && t.channels != 1 && t.channels != 3) bad("training.channels must be 1 or 3");
  if (t.latent_dim <= 0) bad("training.latent_dim must be positive");
  if (t.ngf <= 0 || t.ndf <= 0) bad("training.ngf and training.ndf must be positive");
  if (t.images_per_work_unit < 2) bad("training.images_per_work_unit must be at least 2");
  if (t.num_workunits_per_update < 1) bad("training.num_workunits_per_update must be at least 1");
  if (!(std::isfinite(t.learning_rate) && t.learning_rate > 0))
    bad("training.learning_rate must be a positive number");
  if (!(t.beta1 >= 0 && t.beta1 < 1)) bad("training.beta1 must be in [0, 1)");
  if (!(t.beta2 >= 0 && t.beta2 < 1)) bad("training.beta2 must be in [0, 1)");
  if (t.epochs <= 0) bad("training.epochs must be positive");
  if (t.max_iterations < 0) bad("training.max_iterations must be 0 (no limit) or positive");
  if (t.sample_interval < 0 || t.checkpoint_interval < 0) bad("training intervals must be >= 0");
  if (worker.batch_size < 2) bad("worker.batch_size must be at least 2 (batch norm needs two images)");
  if (!(worker.poll_interval > 0)) bad("worker.poll_interval must be a positive number of seconds");
  if (!(worker.heartbeat_interval > 0)) bad("worker.heartbeat_interval must be positive");
  if (!(worker.work_unit_timeout > worker.heartbeat_interval))
    bad("worker.work_unit_timeout must be longer than worker.heartbeat_interval");
  if (database.port < 0 || database.port > 65535) bad("database.port must be 1..65535");
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

}  // namespace gannf
