#include "checkpoint.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace gannf {

namespace {
std::string hex(uint64_t h) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", (unsigned long long)h);
  return b;
}
}  // namespace

StEntries state_dict(const Net<float>& net) {
  const auto p = net.get_params();
  const auto s = net.get_stats();
  StEntries out;
  // PyTorch order: per module, parameters then buffers.
  for (auto& l : net.layers()) {
    const std::string pre = "main." + std::to_string(l.index) + ".";
    for (auto& t : net.params_layout().tensors)
      if (t.name.rfind(pre, 0) == 0)
        out.emplace_back(t.name, StTensor::f32(t.shape, p.data() + t.offset));
    for (auto& t : net.stats_layout().tensors)
      if (t.name.rfind(pre, 0) == 0)
        out.emplace_back(t.name, StTensor::f32(t.shape, s.data() + t.offset));
    if (l.kind == LayerKind::BatchNorm)
      out.emplace_back(pre + "num_batches_tracked", StTensor::i64({}, &net.num_batches_tracked));
  }
  return out;
}

void save_model(const std::string& path, const Net<float>& net, const DcganConfig& cfg,
                const std::map<std::string, std::string>& extra) {
  auto meta = extra;
  nlohmann::json j = {{"image_size", cfg.image_size}, {"nz", cfg.nz}, {"ngf", cfg.ngf},
                      {"ndf", cfg.ndf},               {"nc", cfg.nc}};
  meta["gannf.config"] = j.dump();
  meta["gannf.net"] = net.name();
  meta["gannf.layout_hash"] = hex(net.layout_hash());
  meta["format"] = "pt";  // what safetensors.torch writes; lets the Hub show it
  const StEntries tensors = state_dict(net);
  save_safetensors(path, tensors, with_checksums(tensors, std::move(meta)));
}

void warn_if_unchecked(const SafeTensors& st) {
  if (!st.checksummed())
    std::fprintf(stderr, "gannf: warning: %s has no tensor checksums (written by a gannf before they "
                 "existed); loaded without an integrity check\n", st.source().c_str());
}

void load_state_dict(const SafeTensors& st, Net<float>& net) {
  const std::string& src = st.source();
  warn_if_unchecked(st);
  auto fail = [&](const std::string& what) {
    throw std::runtime_error(src + ": " + what);
  };
  auto it = st.metadata.find("gannf.net");
  if (it != st.metadata.end() && it->second != net.name())
    fail("holds the " + it->second + " network, not the " + net.name());
  std::vector<float> p(net.num_params()), s(net.num_stats());
  size_t expected = 0;
  auto take = [&](const TensorSpec& t, std::vector<float>& dst) {
    if (!st.has(t.name))
      fail("architecture mismatch: no tensor '" + t.name + "' (this model expects " +
           st_shape_str(t.shape) + "; was the file written for another image size or net?)");
    const auto& x = st.at(t.name);
    if (x.shape != t.shape)
      fail("architecture mismatch: '" + t.name + "' is " + st_shape_str(x.shape) +
           ", this model expects " + st_shape_str(t.shape));
    const auto v = st.floats(t.name);
    for (size_t i = 0; i < v.size(); i++)
      if (!std::isfinite(v[i])) fail("'" + t.name + "' contains NaN or Inf");
    std::copy(v.begin(), v.end(), dst.begin() + t.offset);
    expected++;
  };
  for (auto& t : net.params_layout().tensors) take(t, p);
  for (auto& t : net.stats_layout().tensors) take(t, s);
  int64_t nbt = -1;
  for (auto& l : net.layers())
    if (l.kind == LayerKind::BatchNorm) {
      const std::string name = "main." + std::to_string(l.index) + ".num_batches_tracked";
      expected++;
      if (!st.has(name)) fail("architecture mismatch: no tensor '" + name + "'");
      const auto v = st.ints(name);
      if (v.size() != 1 || v[0] < 0) fail("'" + name + "' must be one non-negative count");
      nbt = std::max(nbt, v[0]);
    }
  if (st.size() != expected) {
    for (auto& n : st.names())
      if (!net.params_layout().find(n) && !net.stats_layout().find(n) &&
          n.find("num_batches_tracked") == std::string::npos)
        fail("architecture mismatch: unexpected tensor '" + n + "' for this model");
    fail("architecture mismatch: " + std::to_string(st.size()) + " tensors, this model has " +
         std::to_string(expected));
  }
  net.set_params(p);
  net.set_stats(s);
  if (nbt >= 0) net.num_batches_tracked = nbt;
}

void load_model(const std::string& path, Net<float>& net) {
  load_state_dict(SafeTensors::load(path), net);
}

DcganConfig read_model_config(const std::string& path) {
  const auto st = SafeTensors::load(path);
  auto it = st.metadata.find("gannf.config");
  if (it == st.metadata.end())
    throw std::runtime_error(path + ": no gannf.config in the metadata (not written by gannf?)");
  DcganConfig c;
  try {
    const auto j = nlohmann::json::parse(it->second);
    c.image_size = j.at("image_size").get<int>();
    c.nz = j.at("nz").get<int>();
    c.ngf = j.at("ngf").get<int>();
    c.ndf = j.at("ndf").get<int>();
    c.nc = j.at("nc").get<int>();
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": bad gannf.config metadata: " + e.what());
  }
  try {
    c.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  return c;
}

}  // namespace gannf
