// The YAML configuration shared by gannf-coord and gannf-worker.
//
// Sections and keys are the reference project's (database, training, worker,
// data; model and huggingface are accepted too), so its config.yaml works
// unchanged. Unknown keys are warned about; a value of the wrong type is
// refused with the key's name. libpq's own conventions still apply: keys left
// out fall back to PG* variables, ~/.pgpass and service files, and
// database.url (or a --db URI) may carry a whole connection string. A
// password never has to be in the file. Command-line flags win over the file.
#pragma once
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace gannf {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Config {
  struct Database {
    std::string url;        // a libpq URI or key=value string; other keys add to it
    std::string host;       // empty: libpq's default (PGHOST, the local socket)
    int port = 0;           // 0: libpq's default
    std::string database;   // key dbname ("database" in the reference)
    std::string user;
    std::string password;   // better left to ~/.pgpass or PGPASSWORD
    std::string sslmode;
  } database;
  struct Training {
    int latent_dim = 100;
    int image_size = 64;
    int channels = 0;                  // 0: from the dataset (1 for IDX, else 3)
    int ngf = 64, ndf = 64;
    int images_per_work_unit = 256;
    int num_workunits_per_update = 4;
    double learning_rate = 2e-4, beta1 = 0.5, beta2 = 0.999;
    int epochs = 5;
    int64_t max_iterations = 0;        // 0: no limit
    uint64_t seed = 0;
    int sample_interval = 10;          // iterations between sample grids
    int checkpoint_interval = 50;      // iterations between checkpoints
  } training;
  struct Worker {
    std::string name;                  // empty: the host name
    int batch_size = 32;               // micro-batch of this machine
    double poll_interval = 5;          // seconds; only a fallback to LISTEN/NOTIFY
    double heartbeat_interval = 30;    // seconds
    double work_unit_timeout = 300;    // seconds: the lease
  } worker;
  struct Data {
    std::string dataset_path;
  } data;
  // How gannf-coord init makes a run combine and check submissions (issue 12:
  // aggregate.h, validate.h, spot_check.h). The classroom default, chosen by
  // measurement (docs/security.md); a trusted cluster that needs
  // distributed = local bit for bit sets aggregation: mean, spot_check: 0.
  struct Trust {
    std::string aggregation = "clip+trimmed";  // mean, clip, trimmed, clip+trimmed
    double clip_factor = 2;                    // clip: bound = factor × median of recent norms
    int trim = 1;                              // trimmed: values dropped at each end per element
    double norm_ratio = 10;                    // per-tensor norm check ×/÷ band; 0: off
    double spot_check = 0.1;                   // fraction of units the coordinator recomputes
    double quorum = 0.6;                       // robust rules: an update may close with this fraction of its units
    std::string backends;                      // back ends the class accepts, comma-separated; empty: all
  } trust;
  // The gradient blobs' format on the wire (blob_codec.h, docs/scaling.md):
  // f32 exact; bf16 and f16s halve the bytes and change the sums.
  struct Wire {
    std::string blob_format = "f32";
  } wire;

  // Throws ConfigError naming the first out-of-range value.
  void validate() const;
  // The libpq connection string: url plus every key that is set, quoted.
  std::string conninfo() const;
};

// One key of the file (config.sample.yaml lists them all): its section and
// name, the reference project's name for it where gannf's differs (still
// read, with a note), the flag that sets the same thing and the programs that
// have it, and its default as YAML.
struct ConfigKey {
  std::string section, key, legacy, flag, programs, help, default_value;
};
// Every key, in the file's order; the one table parse_config() reads by.
std::vector<ConfigKey> config_keys();
// The commented sample file (config.sample.yaml), made from that table.
std::string sample_config();

// Parses a YAML file. Throws ConfigError ("config.yaml: training.learning_rate:
// expected a number, got 'fast'"); unknown keys are appended to *warnings.
Config load_config(const std::string& path, std::vector<std::string>* warnings);
Config parse_config(const std::string& yaml_text, const std::string& name,
                    std::vector<std::string>* warnings);
// What a program starts from: the file --config names, read before its flags
// so that they win over it (cli::value_before_parse gives the path), or the
// defaults where `path` is empty; each warning goes to `warn`.
Config config_or_defaults(const std::string& path,
                          const std::function<void(const std::string&)>& warn);

// The names gannf-worker registers its back end under ("auto" resolves to
// one of them), in the order of their spot-check tolerance.
const std::vector<std::string>& backend_names();
// trust.backends (--backends): "" is every back end (an empty list); else
// comma-separated names of backend_names(), spaces around them allowed,
// each once. Throws std::invalid_argument naming the first bad entry.
std::vector<std::string> parse_backend_list(const std::string& list);

}  // namespace gannf
