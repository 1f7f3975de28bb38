// The YAML configuration: the reference project's file loads unchanged,
// unknown keys warn, wrong types are refused by name, conninfo is libpq's.
#include <gtest/gtest.h>

#include "config.h"

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
  // training.batch_size is the reference's; gannf's micro-batch is worker.batch_size
  ASSERT_EQ(warn.size(), 1u);
  EXPECT_NE(warn[0].find("training.batch_size"), std::string::npos);
  EXPECT_NO_THROW(c.validate());
  const std::string ci = c.conninfo();
  EXPECT_NE(ci.find("host='db.example.edu'"), std::string::npos) << ci;
  EXPECT_NE(ci.find("dbname='distributed_gan'"), std::string::npos) << ci;
  EXPECT_NE(ci.find("password='it\\'s secret'"), std::string::npos) << ci;
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

}  // namespace
