// Parity with PyTorch: replays the states that tools/make_fixtures.py dumped
// from the reference DCGAN (every module's output, summarised per channel and
// sampled unless the fixture stores it whole; losses, every gradient, running
// statistics, weights after two Adam steps) through
// build_generator/build_discriminator, GanStep and Adam on the CPU back end.
// The fixed inputs (initial weights, images, noise) are drawn on both sides
// from the same named streams instead of being stored (fixed_tensor below).
//
// Tolerance: |ours - ref| <= 1e-5 + 1e-4 |ref| (tighter only where Adam runs
// alone on PyTorch's gradients; see there). The fixtures are
// float32 PyTorch; make_fixtures.py reruns each step in float64 and reports
// that float32 rounding alone uses at most about a third of this tolerance
// (the worst case is the first Adam step, where a gradient near Adam's eps
// makes the update sensitive to the gradient's last bits). A wrong index, a
// missing term or a transposed weight is off by orders of magnitude more.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dcgan.h"
#include "format.h"
#include "safetensors.h"

using namespace gannf;

namespace {

constexpr double kAtol = 1e-5, kRtol = 1e-4;

const char* const kFixtures[] = {"dcgan_s32_c1", "dcgan_s32_c3", "dcgan_s64_c1", "dcgan_s64_c3"};

std::string fixture_path(const std::string& name) {
  return std::string(GANNF_FIXTURES) + "/" + name + ".safetensors";
}

// Compares tensors and remembers, per group of tensors, the worst share of
// the tolerance used and the largest relative error (over elements with
// |ref| >= 1e-3, where a relative error means something), for the summary.
class Checker {
 public:
  explicit Checker(std::string config) : config_(std::move(config)) {}

  void check(const std::string& group, const std::string& name, const double* got,
             const double* ref, size_t n, double atol = kAtol, double rtol = kRtol) {
    Stat& g = groups_[group];
    size_t bad = 0, worst = 0;
    double worst_use = -1;
    for (size_t i = 0; i < n; i++) {
      const double err = std::fabs(got[i] - ref[i]);
      const double use = std::isfinite(got[i]) ? err / (atol + rtol * std::fabs(ref[i])) : INFINITY;
      if (use > 1) bad++;
      if (use > worst_use) worst_use = use, worst = i;
      if (std::fabs(ref[i]) >= 1e-3) g.max_rel = std::max(g.max_rel, err / std::fabs(ref[i]));
    }
    g.tensors++;
    if (worst_use > g.worst_use) g.worst_use = worst_use, g.where = name;
    if (bad)
      ADD_FAILURE() << config_ << ": " << name << ": " << bad << " of " << n
                    << " elements out of tolerance; worst element " << worst << " is "
                    << fmt(got[worst]) << ", PyTorch has " << fmt(ref[worst]) << " (|diff| "
                    << fmt(std::fabs(got[worst] - ref[worst])) << ", allowed "
                    << fmt(atol + rtol * std::fabs(ref[worst])) << ")";
  }
  template <class A, class B>
  void check(const std::string& group, const std::string& name, const std::vector<A>& got,
             const std::vector<B>& ref, double atol = kAtol, double rtol = kRtol) {
    if (got.size() != ref.size()) {
      ADD_FAILURE() << config_ << ": " << name << ": " << got.size() << " values, PyTorch has "
                    << ref.size();
      return;
    }
    std::vector<double> a(got.begin(), got.end()), b(ref.begin(), ref.end());
    check(group, name, a.data(), b.data(), a.size(), atol, rtol);
  }
  void scalar(const std::string& group, const std::string& name, double got, double ref) {
    check(group, name, &got, &ref, 1);
  }

  void print() const {
    for (auto& [group, s] : groups_)
      std::printf("[parity] %-13s %-8s %3d tensors: worst %.3f of tolerance (%s), max rel err %.2e\n",
                  config_.c_str(), group.c_str(), s.tensors, s.worst_use, s.where.c_str(), s.max_rel);
  }

 private:
  struct Stat {
    int tensors = 0;
    double worst_use = 0, max_rel = 0;
    std::string where;
  };
  static std::string fmt(double v) { return gannf::fmt("%.9g", v); }
  std::string config_;
  std::map<std::string, Stat> groups_;
};

int meta_int(const SafeTensors& fx, const std::string& key) {
  auto it = fx.metadata.find(key);
  if (it == fx.metadata.end())
    throw std::runtime_error(fx.source() + ": metadata has no \"" + key + "\"");
  return std::stoi(it->second);
}

// The fixed tensors -- initial weights, images, noise -- are not in the
// fixtures: both sides draw them from the same streams (tools/make_fixtures.py,
// fixed_uniform): SplitMix64's output function over FNV-1a(name) + i * golden,
// 24 bits a value, turned into floats by arithmetic that is exact in double.
uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char b : text) h = (h ^ b) * 0x100000001B3ull;
  return h;
}
// offset + (u - 0.5) * scale for the stream's first n numbers u in [0, 1).
std::vector<float> fixed_tensor(const std::string& name, size_t n, double scale,
                                double offset = 0.0) {
  std::vector<float> v(n);
  const uint64_t seed = fnv1a64(name);
  for (size_t i = 0; i < n; i++) {
    uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const double u = (double)(z >> 40) / (double)(1 << 24);
    v[i] = (float)(offset + (u - 0.5) * scale);
  }
  return v;
}

int meta_int(const SafeTensors& fx, const std::string& key);

// "s<size>_c<nc>": the fixture's streams are named after it.
std::string stream_tag(const SafeTensors& fx) {
  return "s" + std::to_string(meta_int(fx, "image_size")) + "_c" + std::to_string(meta_int(fx, "nc"));
}

// An input of the step: "real", "real2" (images in [-1, 1)) or "noise", "noise2".
std::vector<float> fixed_input(const SafeTensors& fx, const std::string& name, size_t n) {
  const bool image = name.rfind("real", 0) == 0;
  return fixed_tensor(stream_tag(fx) + "." + name, n, image ? 2.0 : 4.0);
}

// G and D for a fixture's configuration.
struct Model {
  DcganConfig cfg;
  int B = 0;
  std::unique_ptr<Backend<float>> be = make_backend<float>("cpu");
  Net<float> G{*be, "G"}, D{*be, "D"};

  explicit Model(const SafeTensors& fx) {
    cfg.image_size = meta_int(fx, "image_size");
    cfg.nc = meta_int(fx, "nc");
    cfg.nz = meta_int(fx, "nz");
    cfg.ngf = meta_int(fx, "ngf");
    cfg.ndf = meta_int(fx, "ndf");
    B = meta_int(fx, "batch");
    build_generator(G, cfg, B);
    build_discriminator(D, cfg, B);
  }
};

// Adam's results and step 2's gradients are in the 32x32 fixtures only
// (make_fixtures.py: they are elementwise, so a larger net adds nothing).
// Which fixture carries them is decided here, not by looking, so that a
// fixture that lost them fails instead of skipping their checks.
bool carries_adam(const SafeTensors& fx, const Model& m, const std::string& key) {
  const bool carries = m.cfg.image_size == 32;
  EXPECT_EQ(fx.has(key), carries) << fx.source() << ": " << key;
  return carries;
}

// A fixture tensor for one of our tensors, its shape checked first.
std::vector<float> ref_tensor(const SafeTensors& fx, const std::string& key,
                              const std::vector<int64_t>& shape) {
  const StTensor& t = fx.at(key);
  if (t.shape != shape)
    throw std::runtime_error(fx.source() + ": " + key + " has shape " + st_shape_str(t.shape) +
                             ", gannf's tensor is " + st_shape_str(shape));
  return fx.floats(key);
}

// Fills a flat buffer from `<prefix><name>` of every tensor in the layout.
std::vector<float> gather(const SafeTensors& fx, const Layout& lay, const std::string& prefix) {
  std::vector<float> v(lay.total);
  for (auto& t : lay.tensors) {
    auto r = ref_tensor(fx, prefix + t.name, t.shape);
    std::copy(r.begin(), r.end(), v.begin() + t.offset);
  }
  return v;
}

// num_batches_tracked: PyTorch keeps one per BN layer, gannf one per net.
std::vector<int64_t> ref_batches_tracked(const SafeTensors& fx, const Net<float>& net,
                                         const std::string& prefix) {
  std::vector<int64_t> v;
  for (auto& l : net.layers())
    if (l.kind == LayerKind::BatchNorm)
      v.push_back(fx.ints(prefix + "main." + std::to_string(l.index) + ".num_batches_tracked").at(0));
  return v;
}

// The initial state make_fixtures.py gives net `n` ("G" or "D"): conv weights
// (u - 0.5) / 16, BN weights 1 + (u - 0.5) / 16 and biases (u - 0.5) / 16, from
// the streams of their state_dict names; PyTorch's default statistics.
void load_init(const SafeTensors& fx, Net<float>& net, const std::string& n) {
  std::map<int, LayerKind> kind;
  for (auto& l : net.layers()) kind[l.index] = l.kind;
  std::vector<float> p(net.params_layout().total);
  for (auto& t : net.params_layout().tensors) {
    const int index = std::stoi(t.name.substr(t.name.find('.') + 1));
    const bool bn_weight = kind.at(index) == LayerKind::BatchNorm &&
                           t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
    const auto v = fixed_tensor(stream_tag(fx) + "." + n + "." + t.name, t.numel(), 1.0 / 16,
                                bn_weight ? 1.0 : 0.0);
    std::copy(v.begin(), v.end(), p.begin() + t.offset);
  }
  net.set_params(p);
  std::vector<float> st(net.stats_layout().total);
  for (auto& t : net.stats_layout().tensors)
    std::fill(st.begin() + t.offset, st.begin() + t.offset + t.numel(),
              t.name.find("running_var") != std::string::npos ? 1.f : 0.f);
  net.set_stats(st);
  net.num_batches_tracked = 0;
}

void check_buffer(Checker& ck, const std::string& group, const SafeTensors& fx, const Layout& lay,
                  const std::vector<float>& ours, const std::string& prefix,
                  double atol = kAtol, double rtol = kRtol) {
  for (auto& t : lay.tensors) {
    auto ref = ref_tensor(fx, prefix + t.name, t.shape);
    std::vector<float> got(ours.begin() + t.offset, ours.begin() + t.offset + t.numel());
    ck.check(group, prefix + t.name, got, ref, atol, rtol);
  }
}

void check_stats(Checker& ck, const std::string& group, const SafeTensors& fx, const Net<float>& net,
                 const std::string& prefix) {
  check_buffer(ck, group, fx, net.stats_layout(), net.get_stats(), prefix);
  for (auto n : ref_batches_tracked(fx, net, prefix))
    EXPECT_EQ(net.num_batches_tracked, n) << fx.source() << ": " << prefix << "num_batches_tracked";
}

// A forward in train mode without touching the running statistics; the output
// copied to the host.
std::vector<float> forward(Net<float>& net, const std::vector<float>& in, int B) {
  Backend<float>& be = net.backend();
  Buffer<float> x(be, in.size());
  be.upload(x.data(), in.data(), in.size());
  const size_t n = (size_t)B * net.out_size();
  std::vector<float> y(n);
  be.download(y.data(), net.forward(x.data(), B, Mode::Train, /*update_running=*/false), n);
  return y;
}

// The activation after layer k: a net of the first k+1 layers of `net`, with
// the same state_dict names, so its weights load from the fixture as they are.
std::vector<float> activation(const SafeTensors& fx, Net<float>& net, const std::string& n,
                              size_t k, const std::vector<float>& in, int B,
                              std::vector<int64_t>& shape) {
  Net<float> part(net.backend(), net.name() + "[0.." + std::to_string(k) + "]");
  const auto& layers = net.layers();
  for (size_t i = 0; i <= k; i++) {
    const LayerSpec& l = layers[i];
    switch (l.kind) {
      case LayerKind::Conv:
      case LayerKind::ConvTranspose:
        part.add_conv(l.index, l.C_out, l.K, l.stride, l.pad, l.kind == LayerKind::ConvTranspose);
        break;
      case LayerKind::BatchNorm:
        part.add_batchnorm(l.index);
        break;
      default:
        part.add_activation(l.index, l.kind);
    }
  }
  part.bn_eps = net.bn_eps;
  part.bn_momentum = net.bn_momentum;
  part.leaky_slope = net.leaky_slope;
  part.finalize(layers[0].C_in, layers[0].H_in, layers[0].W_in, B);
  load_init(fx, part, n);
  const LayerSpec& last = layers[k];
  shape = {B, last.C_out, last.H_out, last.W_out};
  return forward(part, in, B);
}

// Compares an activation with the fixture: whole (make_fixtures.py --acts
// full), or by the summary it stores by default (per-channel mean and mean of
// squares, a strided sample), as the fixture's metadata says.
void check_activation(Checker& ck, const SafeTensors& fx, const std::string& key,
                      const std::vector<float>& y, const std::vector<int64_t>& shape) {
  const auto acts = fx.metadata.find("acts");
  if (acts == fx.metadata.end())
    throw std::runtime_error(fx.source() + ": metadata has no \"acts\" (full or summary)");
  if (acts->second == "full") {
    ck.check("acts", key, y, ref_tensor(fx, key, shape));
    return;
  }
  const int B = (int)shape[0], C = (int)shape[1];
  const size_t HW = (size_t)shape[2] * shape[3];
  std::vector<double> mean(C, 0.0), sq(C, 0.0);
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++)
      for (size_t i = 0; i < HW; i++) {
        const double v = y[((size_t)b * C + c) * HW + i];
        mean[c] += v;
        sq[c] += v * v;
      }
  for (int c = 0; c < C; c++) mean[c] /= (double)B * HW, sq[c] /= (double)B * HW;
  ck.check("acts", key + ".mean", mean, fx.doubles(key + ".mean"));
  ck.check("acts", key + ".sqmean", sq, fx.doubles(key + ".sqmean"));
  const int64_t stride = fx.ints(key + ".stride").at(0);
  const std::vector<float> sample = fx.floats(key + ".sample");
  std::vector<float> ours;
  for (size_t i = 0; i < sample.size(); i++) ours.push_back(y.at((size_t)(i * stride)));
  ck.check("acts", key + ".sample", ours, sample);
}

class Parity : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    // A missing fixture is a failure, not a skip: they are part of the tree.
    fx_ = std::make_unique<SafeTensors>(SafeTensors::load(fixture_path(GetParam())));
  }
  std::unique_ptr<SafeTensors> fx_;
};

// The fixture's state_dict keys and shapes (PyTorch's gradients and running
// statistics) are exactly gannf's layout: a checkpoint moves between the two
// without renaming.
TEST_P(Parity, StateDictNamesAndShapes) {
  const SafeTensors& fx = *fx_;
  Model m(fx);
  for (auto [net, n] : {std::pair{&m.G, "G"}, std::pair{&m.D, "D"}}) {
    for (auto [lay, what] : {std::pair{&net->params_layout(), ".grad."},
                             std::pair{&net->stats_layout(), ".stats."}}) {
      std::vector<std::string> ours, theirs;
      for (auto& t : lay->tensors) {
        ours.push_back(t.name + st_shape_str(t.shape));
        EXPECT_NO_THROW(ref_tensor(fx, std::string(n) + what + t.name, t.shape));
      }
      const std::string pre = std::string(n) + what;
      for (auto& k : fx.names())
        if (k.rfind(pre, 0) == 0 && k.find("num_batches_tracked") == std::string::npos)
          theirs.push_back(k.substr(pre.size()) + st_shape_str(fx.at(k).shape));
      std::sort(ours.begin(), ours.end());
      std::sort(theirs.begin(), theirs.end());
      EXPECT_EQ(ours, theirs) << n << what;
    }
  }
}

// Every module's output, each through a net cut after that module: locates a
// divergence to one layer.
TEST_P(Parity, EveryLayerOutput) {
  const SafeTensors& fx = *fx_;
  Model m(fx);
  Checker ck(GetParam());
  struct Pass {
    Net<float>* net;
    const char* n;       // state_dict prefix
    const char* prefix;  // activation prefix
    const char* input;
  };
  for (const Pass& p : {Pass{&m.G, "G", "G", "noise"}, Pass{&m.D, "D", "D_real", "real"},
                        Pass{&m.D, "D", "D_fake", "fake"}}) {
    const std::vector<float> in = std::string(p.input) == "fake"
                                      ? fx.floats("fake")
                                      : fixed_input(fx, p.input, (size_t)m.B * p.net->in_size());
    for (size_t k = 0; k < p.net->layers().size(); k++) {
      std::vector<int64_t> shape;
      const auto y = activation(fx, *p.net, p.n, k, in, m.B, shape);
      check_activation(ck, fx, std::string(p.prefix) + ".act.main." +
                                   std::to_string(p.net->layers()[k].index), y, shape);
    }
  }
  ck.print();
}

// One GanStep (simultaneous mode) and two Adam steps, against PyTorch.
TEST_P(Parity, GanStepAndAdam) {
  const SafeTensors& fx = *fx_;
  Model m(fx);
  Checker ck(GetParam());
  const int B = m.B;
  load_init(fx, m.G, "G");
  load_init(fx, m.D, "D");

  // Forwards: G's image, D's logits on real and on our fakes.
  const std::vector<float> real = fixed_input(fx, "real", (size_t)B * m.D.in_size()),
                           noise = fixed_input(fx, "noise", (size_t)B * m.G.in_size());
  const std::vector<float> fake = forward(m.G, noise, B);
  ck.check("forward", "fake", fake, fx.floats("fake"));
  ck.check("forward", "out_r", forward(m.D, real, B), fx.floats("out_r"));
  ck.check("forward", "out_f", forward(m.D, fake, B), fx.floats("out_f"));

  GanStep<float> step(m.G, m.D);
  step.zero_grads();
  const StepStats st = step.accumulate(real.data(), noise.data(), B, 1.0 / B);
  const double errD_real = fx.floats("errD_real").at(0), errD_fake = fx.floats("errD_fake").at(0);
  ck.scalar("losses", "errD_real + errD_fake", st.d_loss, errD_real + errD_fake);
  ck.scalar("losses", "errG", st.g_loss, fx.floats("errG").at(0));
  double d_real = 0, d_fake = 0;
  for (float x : fx.floats("out_r")) d_real += 1 / (1 + std::exp(-(double)x));
  for (float x : fx.floats("out_f")) d_fake += 1 / (1 + std::exp(-(double)x));
  ck.scalar("losses", "mean sigmoid(out_r)", st.d_real, d_real / B);
  ck.scalar("losses", "mean sigmoid(out_f)", st.d_fake, d_fake / B);
  EXPECT_EQ(st.samples, B);

  check_buffer(ck, "grads", fx, m.G.params_layout(), m.G.get_grads(), "G.grad.");
  check_buffer(ck, "grads", fx, m.D.params_layout(), m.D.get_grads(), "D.grad.");
  check_stats(ck, "stats", fx, m.G, "G.stats.");
  check_stats(ck, "stats", fx, m.D, "D.stats.");

  Adam<float> adamG(*m.be, m.G.num_params(), AdamParams{});
  Adam<float> adamD(*m.be, m.D.num_params(), AdamParams{});
  adamG.step(m.G);
  adamD.step(m.D);
  // The 64x64 fixtures check step 2's losses and statistics only.
  const bool adam = carries_adam(fx, m, "G.step1." + m.G.params_layout().tensors[0].name);
  if (adam) {
    check_buffer(ck, "adam1", fx, m.G.params_layout(), m.G.get_params(), "G.step1.");
    check_buffer(ck, "adam1", fx, m.D.params_layout(), m.D.get_params(), "D.step1.");
  }

  // Step 2 on new data with the updated weights (ours, not PyTorch's).
  const std::vector<float> real2 = fixed_input(fx, "real2", (size_t)B * m.D.in_size()),
                           noise2 = fixed_input(fx, "noise2", (size_t)B * m.G.in_size());
  step.zero_grads();
  const StepStats st2 = step.accumulate(real2.data(), noise2.data(), B, 1.0 / B);
  ck.scalar("step2", "step2 errD_real + errD_fake", st2.d_loss,
            (double)fx.floats("step2.errD_real").at(0) + fx.floats("step2.errD_fake").at(0));
  ck.scalar("step2", "step2 errG", st2.g_loss, fx.floats("step2.errG").at(0));
  check_stats(ck, "step2", fx, m.G, "G.stats2.");
  check_stats(ck, "step2", fx, m.D, "D.stats2.");
  if (carries_adam(fx, m, "G.grad2." + m.G.params_layout().tensors[0].name)) {
    check_buffer(ck, "step2", fx, m.G.params_layout(), m.G.get_grads(), "G.grad2.");
    check_buffer(ck, "step2", fx, m.D.params_layout(), m.D.get_grads(), "D.grad2.");
  }
  adamG.step(m.G);
  adamD.step(m.D);
  if (adam) {
    check_buffer(ck, "adam2", fx, m.G.params_layout(), m.G.get_params(), "G.step2.");
    check_buffer(ck, "adam2", fx, m.D.params_layout(), m.D.get_params(), "D.step2.");
  }
  ck.print();
}

// The alternating step (gannf-train --mode alternating) against PyTorch's
// DCGAN example from the same initial state: D's update, then G's gradients
// through the updated D, D's running statistics after its three forwards. The
// 32x32x1 fixture carries it.
TEST(ParityAlternating, MatchesPyTorchsDcganStep) {
  const SafeTensors fx = SafeTensors::load(fixture_path("dcgan_s32_c1"));
  Model m(fx);
  Checker ck("dcgan_s32_c1, alternating");
  const int B = m.B;
  load_init(fx, m.G, "G");
  load_init(fx, m.D, "D");
  const std::vector<float> real = fixed_input(fx, "real", (size_t)B * m.D.in_size()),
                           noise = fixed_input(fx, "noise", (size_t)B * m.G.in_size());
  GanStep<float> step(m.G, m.D);
  m.D.zero_grads();
  const StepStats sd = step.accumulate_d(real.data(), noise.data(), B, 1.0 / B);
  ck.scalar("alternating", "errD_real + errD_fake", sd.d_loss,
            (double)fx.floats("errD_real").at(0) + fx.floats("errD_fake").at(0));
  Adam<float> adamD(*m.be, m.D.num_params(), AdamParams{});
  adamD.step(m.D);
  check_buffer(ck, "alternating", fx, m.D.params_layout(), m.D.get_params(), "alt.D.step1.");
  m.G.zero_grads();
  double d_fake_after = 0;
  const double errG = step.accumulate_g(noise.data(), B, 1.0 / B, &d_fake_after);
  ck.scalar("alternating", "errG against the updated D", errG, fx.floats("alt.errG").at(0));
  ck.scalar("alternating", "mean D(G(z)) after D's update", d_fake_after, fx.floats("alt.D_G_z2").at(0));
  check_buffer(ck, "alternating", fx, m.G.params_layout(), m.G.get_grads(), "alt.G.grad.");
  check_stats(ck, "alternating", fx, m.D, "alt.D.stats.");
  check_stats(ck, "alternating", fx, m.G, "G.stats.");  // G's statistics moved once, as in PyTorch
  ck.print();
}

// Adam alone: PyTorch's own step-1 gradients through our Adam. The update is
// only lr = 2e-4 per weight, so the 1e-5 tolerance above would let a 5% error
// in it through; fed the same gradients, the two Adams differ only by float
// rounding in the same sequence of operations (and by lr being a float here,
// a double in PyTorch), a few ulp of the weight: 1e-9 + 1e-6 |w| is 8 ulp at
// |w| = 1 and about 10 at the conv weights' |w| ~ 0.02, and catches a 1% error
// in the update. The 32x32 fixtures carry Adam's results.
class ParityAdam : public Parity {};
TEST_P(ParityAdam, AdamStepOnPyTorchGradients) {
  const SafeTensors& fx = *fx_;
  Model m(fx);
  Checker ck(GetParam());
  for (auto [net, n] : {std::pair{&m.G, "G"}, std::pair{&m.D, "D"}}) {
    load_init(fx, *net, n);
    const std::vector<float> g = gather(fx, net->params_layout(), std::string(n) + ".grad.");
    m.be->upload(net->grads(), g.data(), g.size());
    Adam<float> adam(*m.be, net->num_params(), AdamParams{});
    adam.step(*net);
    check_buffer(ck, "adam-only", fx, net->params_layout(), net->get_params(),
                 std::string(n) + ".step1.", 1e-9, 1e-6);
    // Step 2, where beta1 and beta2 no longer cancel in the bias corrections.
    const std::string g2 = std::string(n) + ".grad2.";
    const std::vector<float> gs = gather(fx, net->params_layout(), g2);
    m.be->upload(net->grads(), gs.data(), gs.size());
    adam.step(*net);
    check_buffer(ck, "adam-only", fx, net->params_layout(), net->get_params(),
                 std::string(n) + ".step2.", 1e-9, 1e-6);
  }
  ck.print();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Parity, ::testing::ValuesIn(kFixtures),
                         [](const auto& info) { return std::string(info.param); });
const char* const kAdamFixtures[] = {"dcgan_s32_c1", "dcgan_s32_c3"};
INSTANTIATE_TEST_SUITE_P(Fixtures, ParityAdam, ::testing::ValuesIn(kAdamFixtures),
                         [](const auto& info) { return std::string(info.param); });

// The loader refuses a damaged fixture with one line that names the file and
// the damage, rather than replaying garbage.
class DamagedFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gannf_parity_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    std::ifstream f(fixture_path(kFixtures[0]), std::ios::binary);
    bytes_.assign(std::istreambuf_iterator<char>(f), {});
    ASSERT_GT(bytes_.size(), 1000u) << fixture_path(kFixtures[0]);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::vector<char>& b) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary).write(b.data(), (std::streamsize)b.size());
    return p;
  }
  std::string load_error(const std::string& path) {
    try {
      SafeTensors::load(path);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "(loaded without an error)";
  }
  std::filesystem::path dir_;
  std::vector<char> bytes_;
};

TEST_F(DamagedFixture, TruncatedDataIsRefused) {
  auto b = bytes_;
  b.resize(b.size() - 100);
  const std::string p = write("cut.safetensors", b);
  const std::string err = load_error(p);
  EXPECT_NE(err.find(p), std::string::npos) << err;
  EXPECT_NE(err.find("beyond the data section"), std::string::npos) << err;
}

TEST_F(DamagedFixture, TruncatedHeaderIsRefused) {
  std::vector<char> b(bytes_.begin(), bytes_.begin() + 200);
  const std::string p = write("cut_header.safetensors", b);
  const std::string err = load_error(p);
  EXPECT_NE(err.find(p), std::string::npos) << err;
  EXPECT_NE(err.find("truncated"), std::string::npos) << err;
}

TEST_F(DamagedFixture, CorruptHeaderIsRefused) {
  auto b = bytes_;
  b[8 + 30] = '\x01';  // a control character inside the JSON header
  const std::string p = write("corrupt.safetensors", b);
  const std::string err = load_error(p);
  EXPECT_NE(err.find(p), std::string::npos) << err;
  EXPECT_NE(err.find("not valid JSON"), std::string::npos) << err;
}

}  // namespace
