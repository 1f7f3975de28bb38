// The YAML configuration: the reference project's file loads unchanged,
// unknown keys warn, wrong types are refused by name, conninfo is libpq's.
#include <gtest/gtest.h>

#include "config.h"

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

using namespace gannf;

namespace {

const char* kReference = R"(
database:
  host: db.example.edu
  port: 5432
  database: distributed_gan
  user: student
  password: "it's secret"
training:
  batch_size: 32
  latent_dim: 100
  image_size: 64
  images_per_work_unit: 320
  num_workunits_per_update: 3
  learning_rate: 0.0002
  beta1: 0.5
  beta2: 0.999
worker:
  name: laptop-7
  batch_size: 16
  poll_interval: 5
  heartbeat_interval: 30
  work_unit_timeout: 300
model:
  generator_features: 64
data:
  dataset_path: data/celeba
huggingface:
  enabled: false
)";

// The trust section sets what gannf-coord init's trust flags set; unset, the
// classroom default (docs/security.md).
TEST(Config, TrustSectionAndTheClassroomDefault) {
  const Config d = parse_config("", "config.yaml", nullptr);
  EXPECT_EQ(d.trust.aggregation, "clip+trimmed");
  EXPECT_EQ(d.trust.spot_check, 0.1);
  EXPECT_EQ(d.trust.quorum, 0.6);
  std::vector<std::string> warn;
  const Config c = parse_config("trust:\n  aggregation: mean\n  spot_check: 0\n  norm_ratio: 20\n", "config.yaml", &warn);
  EXPECT_EQ(c.trust.aggregation, "mean");
  EXPECT_EQ(c.trust.spot_check, 0);
  EXPECT_EQ(c.trust.norm_ratio, 20);
  EXPECT_TRUE(warn.empty());
  EXPECT_THROW(parse_config("trust:\n  spot_check: often\n", "config.yaml", nullptr), ConfigError);
  // Values of the right type but out of range: one error naming the key.
  for (const char* bad : {"trust:\n  aggregation: median\n", "trust:\n  spot_check: 1.5\n",
                          "trust:\n  norm_ratio: 0.5\n", "trust:\n  quorum: 0\n", "trust:\n  quorum: 1.5\n",
                          "wire:\n  blob_format: f8\n"}) {
    const Config b = parse_config(bad, "config.yaml", nullptr);
    EXPECT_THROW(b.validate(), ConfigError) << bad;
  }
  const Config w = parse_config("wire:\n  blob_format: bf16\n", "config.yaml", nullptr);
  EXPECT_EQ(w.wire.blob_format, "bf16");
  EXPECT_NO_THROW(w.validate());
}

TEST(Config, ReferenceFileLoadsUnchanged) {
  std::vector<std::string> warn;
  const Config c = parse_config(kReference, "config.yaml", &warn);
  EXPECT_EQ(c.database.host, "db.example.edu");
  EXPECT_EQ(c.database.port, 5432);
  EXPECT_EQ(c.training.images_per_work_unit, 320);
  EXPECT_EQ(c.training.num_workunits_per_update, 3);
  EXPECT_DOUBLE_EQ(c.training.learning_rate, 2e-4);
  EXPECT_EQ(c.worker.name, "laptop-7");
  EXPECT_EQ(c.worker.batch_size, 16);
  EXPECT_EQ(c.data.dataset_path, "data/celeba");
  // training.batch_size is the reference's; gannf's micro-batch is worker.batch_size.
  // Then one line for all the reference's names that gannf spells as its flags.
  ASSERT_EQ(warn.size(), 2u);
  EXPECT_NE(warn[0].find("training.batch_size"), std::string::npos);
  EXPECT_EQ(warn[1],
            "config.yaml: database.database, training.images_per_work_unit, training.num_workunits_per_update, "
            "training.learning_rate, worker.work_unit_timeout, data.dataset_path: the reference project's names, "
            "still read; gannf's are dbname, images_per_unit, units_per_update, lr, lease, dataset (named as the "
            "flags; see config.sample.yaml)");
  EXPECT_NO_THROW(c.validate());
  const std::string ci = c.conninfo();
  EXPECT_NE(ci.find("host='db.example.edu'"), std::string::npos) << ci;
  EXPECT_NE(ci.find("dbname='distributed_gan'"), std::string::npos) << ci;
  EXPECT_NE(ci.find("password='it\\'s secret'"), std::string::npos) << ci;
}

// What the programs start from: no --config, the defaults; a file, its values
// with each warning handed on; a file that cannot be read, one clear error.
TEST(Config, ProgramsStartFromTheFileOrTheDefaults) {
  std::vector<std::string> warned;
  auto warn = [&](const std::string& w) { warned.push_back(w); };
  const Config d = config_or_defaults("", warn);
  EXPECT_EQ(d.worker.batch_size, Config{}.worker.batch_size);
  EXPECT_TRUE(warned.empty());
  const std::string path = ::testing::TempDir() + "gannf_config_or_defaults.yaml";
  std::ofstream(path) << kReference;
  const Config c = config_or_defaults(path, warn);
  EXPECT_EQ(c.worker.name, "laptop-7");
  EXPECT_EQ(c.worker.batch_size, 16);
  EXPECT_EQ(warned.size(), 2u);  // as ReferenceFileLoadsUnchanged
  std::remove(path.c_str());
  try {
    config_or_defaults(path, warn);
    ADD_FAILURE() << "a missing file was read";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read the configuration file"), std::string::npos)
        << e.what();
  }
}

TEST(Config, WrongTypesAreRefusedByName) {
  try {
    parse_config("training:\n  learning_rate: fast\n", "c.yaml", nullptr);
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "c.yaml: training.learning_rate: expected a number, got 'fast'");
  }
  EXPECT_THROW(parse_config("worker:\n  batch_size: [1, 2]\n", "c", nullptr), ConfigError);
  EXPECT_THROW(parse_config("database: 7\n", "c", nullptr), ConfigError);
  EXPECT_THROW(parse_config("training: {image_size: 64\n", "c", nullptr), ConfigError);
  Config c = parse_config("training:\n  image_size: 48\n", "c", nullptr);
  EXPECT_THROW(c.validate(), ConfigError);
}

TEST(Config, NoPasswordNeededAndUrlsPassThrough) {
  Config c = parse_config("database:\n  url: postgresql://u@h:5433/db\n", "c", nullptr);
  EXPECT_EQ(c.conninfo().find("password"), std::string::npos);
  EXPECT_NE(c.conninfo().find("dbname='postgresql://u@h:5433/db'"), std::string::npos);
  Config empty = parse_config("", "c", nullptr);  // everything from PG* / defaults
  EXPECT_EQ(empty.conninfo(), "application_name='gannf'");
}

TEST(Config, GannfNamesAreTheFlagsAndOneSettingHasOneName) {
  std::vector<std::string> warn;
  const Config c = parse_config(
      "training:\n  images_per_unit: 64\n  units_per_update: 2\n  lr: 0.001\n  iterations: 9\n"
      "worker:\n  lease: 120\ndata:\n  dataset: synthetic\ndatabase:\n  dbname: class\n",
      "c", &warn);
  EXPECT_TRUE(warn.empty()) << warn[0];
  EXPECT_EQ(c.training.images_per_work_unit, 64);
  EXPECT_EQ(c.training.num_workunits_per_update, 2);
  EXPECT_DOUBLE_EQ(c.training.learning_rate, 1e-3);
  EXPECT_EQ(c.training.max_iterations, 9);
  EXPECT_DOUBLE_EQ(c.worker.work_unit_timeout, 120);
  EXPECT_EQ(c.data.dataset_path, "synthetic");
  EXPECT_EQ(c.database.database, "class");
  try {
    parse_config("training:\n  lr: 0.001\n  learning_rate: 0.002\n", "c", nullptr);
    FAIL() << "two names of one setting accepted";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "c: training.lr and training.learning_rate are the same setting; keep one");
  }
}

// config.sample.yaml is sample_config(), made from the table parse_config()
// reads by; every key has a flag named like it (dashes for underscores) or,
// for the connection, a libpq keyword of --db.
TEST(Config, SampleIsTheTableAndEveryKeyHasItsFlag) {
  const std::string path = std::string(GANNF_SOURCE_DIR) + "/config.sample.yaml";
  if (std::getenv("GANNF_WRITE_SAMPLE_CONFIG")) std::ofstream(path) << sample_config();
  std::ifstream f(path);
  std::stringstream file;
  file << f.rdbuf();
  EXPECT_EQ(file.str(), sample_config())
      << path << " differs from sample_config(): GANNF_WRITE_SAMPLE_CONFIG=1 ctest -R Config.Sample rewrites it";
  std::vector<std::string> warn;
  const Config c = parse_config(file.str(), path, &warn);
  EXPECT_TRUE(warn.empty()) << warn[0];
  const Config d;
  EXPECT_EQ(c.conninfo(), d.conninfo());
  EXPECT_EQ(c.training.images_per_work_unit, d.training.images_per_work_unit);
  EXPECT_DOUBLE_EQ(c.training.learning_rate, d.training.learning_rate);
  EXPECT_DOUBLE_EQ(c.worker.work_unit_timeout, d.worker.work_unit_timeout);
  EXPECT_NE(file.str().find("  lr: 0.0002\n"), std::string::npos);
  std::set<std::string> names;
  for (const auto& k : config_keys()) {
    EXPECT_TRUE(names.insert(k.section + "." + k.key).second) << k.key;
    EXPECT_FALSE(k.programs.empty()) << k.key;
    if (k.section == "database") {
      const std::string libpq = k.key == "url" ? "--db" : "--db '" + k.key + "=...'";
      EXPECT_EQ(k.flag, libpq);
    } else {
      std::string flag = "--" + k.key;
      std::replace(flag.begin(), flag.end(), '_', '-');
      EXPECT_EQ(k.flag, flag) << k.section << "." << k.key;
    }
    EXPECT_NE(file.str().find(k.flag + " (" + k.programs + ")"), std::string::npos) << k.key;
  }
}

// trust.backends / --backends: names of real back ends, each once; empty is
// every back end. Every name has a spot-check tolerance of its own.
TEST(Config, BackEndListsNameKnownBackEndsOnce) {
  EXPECT_TRUE(parse_backend_list("").empty());
  EXPECT_TRUE(parse_backend_list("  ").empty());
  EXPECT_EQ(parse_backend_list("cpu, cuda"), (std::vector<std::string>{"cpu", "cuda"}));
  EXPECT_EQ(parse_backend_list("cuda-bf16"), (std::vector<std::string>{"cuda-bf16"}));
  auto why = [](const std::string& list) {
    try {
      parse_backend_list(list);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(why("cpu,auto"), "unknown back end 'auto' (choose from cpu, cuda, cuda-tf32, cuda-bf16)");
  EXPECT_EQ(why("cpu,,cuda"), "an empty name in 'cpu,,cuda' (give e.g. cpu,cuda)");
  EXPECT_EQ(why("cuda,cuda"), "back end 'cuda' named twice");
  Config c;
  c.trust.backends = "cpu,fpga";
  try {
    c.validate();
    ADD_FAILURE() << "validate() accepted an unknown back end";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("trust.backends (--backends): unknown back end 'fpga'"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(backend_names().size(), 4u);
}

}  // namespace

