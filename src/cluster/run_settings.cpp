#include "run_settings.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "aggregate.h"

namespace gannf::cluster {

DcganConfig RunSettings::dcgan() const {
  DcganConfig c;
  c.image_size = image_size;
  c.nc = channels;
  c.nz = nz;
  c.ngf = ngf;
  c.ndf = ndf;
  return c;
}

AdamParams RunSettings::adam() const {
  return AdamParams{(float)learning_rate, (float)beta1, (float)beta2, (float)adam_eps};
}

void RunSettings::validate() const {
  auto bad = [](const std::string& m) { throw std::invalid_argument(m); };
  dcgan().validate();
  if (dataset.empty()) bad("the dataset must be named");
  if (dataset_size < 2) bad("the dataset has " + std::to_string(dataset_size) + " images; at least 2 are needed");
  if (images_per_work_unit < 2)
    bad("training.images_per_work_unit must be at least 2 (batch norm needs two images), got " +
        std::to_string(images_per_work_unit));
  if (num_workunits_per_update < 1)
    bad("training.num_workunits_per_update must be at least 1, got " +
        std::to_string(num_workunits_per_update));
  if (extra_units < 0 || extra_units > 10000) bad("extra units must be between 0 and 10000");
  if (!(std::isfinite(learning_rate) && learning_rate > 0))
    bad("training.learning_rate must be a positive number");
  if (!(beta1 >= 0 && beta1 < 1)) bad("training.beta1 must be in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) bad("training.beta2 must be in [0, 1)");
  if (!(adam_eps > 0)) bad("Adam's epsilon must be positive");
  if (epochs < 1) bad("training.epochs must be at least 1, got " + std::to_string(epochs));
  if (!(std::isfinite(lease_seconds) && lease_seconds >= 1 && lease_seconds <= 7 * 86400))
    bad("worker.work_unit_timeout must be between 1 second and a week");
  if (!parse_rule(aggregation))
    bad("the aggregation rule must be mean, clip, trimmed or clip+trimmed, got '" + aggregation + "'");
  if (!(std::isfinite(clip_factor) && clip_factor >= 1 && clip_factor <= 1e3))
    bad("the clip factor must be between 1 and 1000");
  if (trim < 0 || trim > 1000) bad("the trim count must be between 0 and 1000");
  if (!(norm_ratio == 0 || (std::isfinite(norm_ratio) && norm_ratio >= 2 && norm_ratio <= 1e6)))
    bad("the norm ratio must be 0 (off) or between 2 and 1e6");
  if (!(spot_check >= 0 && spot_check <= 1)) bad("the spot-check fraction must be between 0 and 1");
  if (!(quorum > 0 && quorum <= 1)) bad("the quorum must be a fraction above 0 and at most 1");
  if (blob_format != "f32" && blob_format != "bf16" && blob_format != "f16s")
    bad("the blob format must be f32, bf16 or f16s, got '" + blob_format + "'");
}

std::string RunSettings::to_json() const {
  nlohmann::json j = {
      {"training",
       {{"latent_dim", nz},
        {"image_size", image_size},
        {"channels", channels},
        {"ngf", ngf},
        {"ndf", ndf},
        {"images_per_work_unit", images_per_work_unit},
        {"num_workunits_per_update", num_workunits_per_update},
        {"extra_units", extra_units},
        {"learning_rate", learning_rate},
        {"beta1", beta1},
        {"beta2", beta2},
        {"adam_eps", adam_eps},
        {"seed", seed},
        {"epochs", epochs}}},
      {"data", {{"dataset_path", dataset}, {"dataset_size", dataset_size}, {"content_hash", dataset_hash}}},
      {"worker", {{"work_unit_timeout", lease_seconds}}},
      {"trust",
       {{"aggregation", aggregation}, {"clip_factor", clip_factor}, {"trim", trim}, {"norm_ratio", norm_ratio},
        {"spot_check", spot_check}, {"quorum", quorum}}},
      {"wire", {{"blob_format", blob_format}}},
      {"format", 1}};
  return j.dump();
}

RunSettings RunSettings::from_json(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw std::runtime_error("the run's configuration (training_state.config) is not a JSON object");
  RunSettings s;
  auto get = [&](const char* section, const char* key, auto& dst) {
    if (!j.contains(section) || !j[section].contains(key))
      throw std::runtime_error(std::string("the run's configuration lacks ") + section + "." + key +
                               "; was the run made by an older gannf-coord? (gannf-coord init)");
    try {
      j[section][key].get_to(dst);
    } catch (const nlohmann::json::exception&) {
      throw std::runtime_error(std::string("the run's configuration has a bad ") + section + "." + key);
    }
  };
  get("training", "latent_dim", s.nz);
  get("training", "image_size", s.image_size);
  get("training", "channels", s.channels);
  get("training", "ngf", s.ngf);
  get("training", "ndf", s.ndf);
  get("training", "images_per_work_unit", s.images_per_work_unit);
  get("training", "num_workunits_per_update", s.num_workunits_per_update);
  get("training", "extra_units", s.extra_units);
  get("training", "learning_rate", s.learning_rate);
  get("training", "beta1", s.beta1);
  get("training", "beta2", s.beta2);
  get("training", "adam_eps", s.adam_eps);
  get("training", "seed", s.seed);
  get("training", "epochs", s.epochs);
  get("data", "dataset_path", s.dataset);
  get("data", "dataset_size", s.dataset_size);
  get("data", "content_hash", s.dataset_hash);
  get("worker", "work_unit_timeout", s.lease_seconds);
  if (j.contains("trust")) {
    get("trust", "aggregation", s.aggregation);
    get("trust", "clip_factor", s.clip_factor);
    get("trust", "trim", s.trim);
    get("trust", "norm_ratio", s.norm_ratio);
    get("trust", "spot_check", s.spot_check);
    s.quorum = 1;  // runs made before the quorum waited for every unit
    if (j["trust"].contains("quorum")) get("trust", "quorum", s.quorum);
  } else {
    s.quorum = 1;
    s.aggregation = "mean";  // a run made before the checks: as it was made
    s.norm_ratio = 0;
    s.spot_check = 0;
  }
  if (j.contains("wire")) get("wire", "blob_format", s.blob_format);
  try {
    s.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(std::string("the run's configuration is invalid: ") + e.what());
  }
  return s;
}

std::vector<int> micro_batches(int total, int micro_batch) {
  std::vector<int> sizes;
  if (total <= 0) return sizes;
  const int mb = std::max(1, micro_batch);
  for (int b0 = 0; b0 < total;) {
    int n = std::min(mb, total - b0);
    if (total - b0 - n == 1) n++;
    sizes.push_back(n);
    b0 += n;
  }
  return sizes;
}

std::vector<size_t> tensor_sizes(const Layout& l) {
  std::vector<size_t> n;
  for (const TensorSpec& t : l.tensors) n.push_back(t.numel());
  return n;
}

}  // namespace gannf::cluster
