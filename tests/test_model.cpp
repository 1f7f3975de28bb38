// The DCGAN's structure (names, shapes and sizes of PyTorch's state_dict), its
// initialisation, modes, and refusal of bad configurations and inputs.
#include <limits>

#include "check.h"
#include "dcgan.h"

using namespace gannf;

namespace {

struct Nets {
  std::unique_ptr<Backend<float>> be = make_backend<float>("cpu");
  Net<float> G{*be, "G"}, D{*be, "D"};
  Nets(const DcganConfig& c, int B) {
    build_generator(G, c, B);
    build_discriminator(D, c, B);
  }
};

std::string shape_str(const TensorSpec& t) {
  std::string s;
  for (auto v : t.shape) {
    if (!s.empty()) s += ',';
    s += std::to_string(v);
  }
  return t.name + "[" + s + "]";
}

TEST(Dcgan, ReferenceLayoutAt64) {
  Nets n(DcganConfig{}, 2);
  // The reference PyTorch model's state_dict: 3,576,704 generator and 2,765,568
  // discriminator parameters (BN weight and bias included).
  EXPECT_EQ(n.G.num_params(), 3576704u);
  EXPECT_EQ(n.D.num_params(), 2765568u);
  std::vector<std::string> g, d;
  for (auto& t : n.G.params_layout().tensors) g.push_back(shape_str(t));
  for (auto& t : n.D.params_layout().tensors) d.push_back(shape_str(t));
  EXPECT_EQ(g, (std::vector<std::string>{
                   "main.0.weight[100,512,4,4]", "main.1.weight[512]", "main.1.bias[512]",
                   "main.3.weight[512,256,4,4]", "main.4.weight[256]", "main.4.bias[256]",
                   "main.6.weight[256,128,4,4]", "main.7.weight[128]", "main.7.bias[128]",
                   "main.9.weight[128,64,4,4]", "main.10.weight[64]", "main.10.bias[64]",
                   "main.12.weight[64,3,4,4]"}));
  EXPECT_EQ(d, (std::vector<std::string>{
                   "main.0.weight[64,3,4,4]", "main.2.weight[128,64,4,4]", "main.3.weight[128]",
                   "main.3.bias[128]", "main.5.weight[256,128,4,4]", "main.6.weight[256]",
                   "main.6.bias[256]", "main.8.weight[512,256,4,4]", "main.9.weight[512]",
                   "main.9.bias[512]", "main.11.weight[1,512,4,4]"}));
  std::vector<std::string> st;
  for (auto& t : n.D.stats_layout().tensors) st.push_back(shape_str(t));
  EXPECT_EQ(st, (std::vector<std::string>{"main.3.running_mean[128]", "main.3.running_var[128]",
                                          "main.6.running_mean[256]", "main.6.running_var[256]",
                                          "main.9.running_mean[512]", "main.9.running_var[512]"}));
  // offsets are contiguous in order
  size_t off = 0;
  for (auto& t : n.G.params_layout().tensors) {
    EXPECT_EQ(t.offset, off) << t.name;
    off += t.numel();
  }
}

TEST(Dcgan, LayoutAt32HasOneStageFewer) {
  DcganConfig c;
  c.image_size = 32;
  c.nc = 1;
  c.ngf = c.ndf = 8;
  Nets n(c, 2);
  EXPECT_EQ(n.G.params_layout().tensors.front().shape, (std::vector<int64_t>{100, 32, 4, 4}));
  EXPECT_EQ(n.G.params_layout().tensors.back().name, "main.9.weight");
  EXPECT_EQ(n.G.params_layout().tensors.back().shape, (std::vector<int64_t>{8, 1, 4, 4}));
  EXPECT_EQ(n.D.params_layout().tensors.back().name, "main.8.weight");
  EXPECT_EQ(n.D.params_layout().tensors.back().shape, (std::vector<int64_t>{1, 32, 4, 4}));
  EXPECT_EQ(n.G.out_size(), 32u * 32u);
  EXPECT_EQ(n.D.out_size(), 1u);
  Nets m(DcganConfig{}, 2);
  EXPECT_NE(n.G.layout_hash(), m.G.layout_hash());
  EXPECT_NE(n.D.layout_hash(), m.D.layout_hash());
  EXPECT_NE(m.G.layout_hash(), m.D.layout_hash());
}

TEST(Dcgan, InitialisationIsDcgansAndSeeded) {
  Nets a(DcganConfig{}, 2), b(DcganConfig{}, 2);
  a.G.init_dcgan(7);
  b.G.init_dcgan(7);
  EXPECT_EQ(a.G.get_params(), b.G.get_params());
  b.G.init_dcgan(8);
  EXPECT_NE(a.G.get_params(), b.G.get_params());
  const auto p = a.G.get_params();
  const auto* w = a.G.params_layout().find("main.3.weight");
  const auto* g = a.G.params_layout().find("main.4.weight");
  const auto* bias = a.G.params_layout().find("main.4.bias");
  double s = 0, ss = 0;
  for (size_t i = 0; i < w->numel(); i++) s += p[w->offset + i], ss += p[w->offset + i] * p[w->offset + i];
  const double m = s / w->numel(), sd = std::sqrt(ss / w->numel() - m * m);
  EXPECT_NEAR(m, 0.0, 1e-4);
  EXPECT_NEAR(sd, 0.02, 2e-4);
  double gs = 0;
  for (size_t i = 0; i < g->numel(); i++) gs += p[g->offset + i];
  EXPECT_NEAR(gs / g->numel(), 1.0, 0.01);
  for (size_t i = 0; i < bias->numel(); i++) EXPECT_EQ(p[bias->offset + i], 0.f);
  const auto st = a.G.get_stats();
  const auto* rv = a.G.stats_layout().find("main.1.running_var");
  for (size_t i = 0; i < rv->numel(); i++) EXPECT_EQ(st[rv->offset + i], 1.f);
}

TEST(Dcgan, TrainAndEvalModes) {
  DcganConfig c;
  c.image_size = 32, c.nc = 3, c.ngf = c.ndf = 8, c.nz = 16;
  Nets n(c, 4);
  n.G.init_dcgan(1);
  const auto z = gannf::test::randn<float>(4 * 16, 2);
  const float* y = n.G.forward(z.data(), 4, Mode::Train);
  std::vector<float> train(y, y + 4 * n.G.out_size());
  for (float v : train) ASSERT_TRUE(v >= -1.f && v <= 1.f);
  EXPECT_EQ(n.G.num_batches_tracked, 1);
  // Running stats moved by momentum 0.1 towards the batch statistics.
  const auto st = n.G.get_stats();
  const auto* rm = n.G.stats_layout().find("main.1.running_mean");
  const float* bs = n.G.batch_stats();
  EXPECT_NEAR(st[rm->offset], 0.1f * bs[0], 1e-7);
  // Eval mode uses running statistics: a different output, and no update.
  const float* ye = n.G.forward(z.data(), 4, Mode::Eval);
  std::vector<float> eval(ye, ye + 4 * n.G.out_size());
  EXPECT_NE(eval, train);
  EXPECT_EQ(n.G.num_batches_tracked, 1);
  EXPECT_EQ(n.G.get_stats(), st);
  // update_running = false leaves them alone too
  n.G.forward(z.data(), 4, Mode::Train, false);
  EXPECT_EQ(n.G.get_stats(), st);
}

TEST(Dcgan, BadConfigurationsAreRefused) {
  auto be = make_backend<float>("cpu");
  for (auto bad : {DcganConfig{48, 100, 64, 64, 3}, DcganConfig{64, 0, 64, 64, 3},
                   DcganConfig{64, 100, -1, 64, 3}, DcganConfig{64, 100, 64, 0, 3},
                   DcganConfig{64, 100, 64, 64, 2}}) {
    Net<float> G(*be, "G");
    EXPECT_THROW(build_generator(G, bad, 4), std::invalid_argument) << bad.describe();
  }
  Net<float> G(*be, "G");
  EXPECT_THROW(build_generator(G, DcganConfig{}, 0), std::invalid_argument);
  try {
    DcganConfig{48, 100, 64, 64, 3}.validate();
    ADD_FAILURE() << "image size 48 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("use 32 or 64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_backend<float>("tpu"), std::runtime_error);
}

TEST(Dcgan, BadInputsAreRefused) {
  DcganConfig c;
  c.image_size = 32, c.nc = 1, c.ngf = c.ndf = 4, c.nz = 8;
  Nets n(c, 4);
  const auto z = gannf::test::randn<float>(5 * 8, 3);
  EXPECT_THROW(n.G.forward(z.data(), 0, Mode::Train), std::invalid_argument);
  EXPECT_THROW(n.G.forward(z.data(), 5, Mode::Train), std::invalid_argument);
  EXPECT_THROW(n.G.set_params(std::vector<float>(7)), std::invalid_argument);
  EXPECT_THROW(n.D.set_stats(std::vector<float>(n.D.num_stats() + 1)), std::invalid_argument);

  GanStep<float> step(n.G, n.D);
  auto real = gannf::test::randn<float>(4 * n.D.in_size(), 4);
  EXPECT_THROW(step.accumulate(real.data(), z.data(), 5, 0.25), std::invalid_argument);
  EXPECT_THROW(step.accumulate(real.data(), z.data(), 4, 0.0), std::invalid_argument);
  real[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(step.accumulate(real.data(), z.data(), 4, 0.25), std::invalid_argument);

  // G and D that do not fit each other
  DcganConfig c64 = c;
  c64.image_size = 64;
  Nets m(c64, 4);
  EXPECT_THROW(GanStep<float>(n.G, m.D), std::invalid_argument);

  // Adam refuses non-finite gradients and leaves the weights alone.
  Adam<float> adam(*n.be, n.G.num_params(), AdamParams{});
  n.G.init_dcgan(1);
  auto g = n.G.get_grads();
  g[3] = std::numeric_limits<float>::infinity();
  n.be->upload(n.G.grads(), g.data(), g.size());
  const auto before = n.G.get_params();
  EXPECT_THROW(adam.step(n.G), std::runtime_error);
  EXPECT_EQ(n.G.get_params(), before);
  EXPECT_EQ(adam.t, 0);
}

// Micro-batches add up: two halves accumulated with scale 1/total equal one
// batch for D's real-side and G-side gradients when BN sees the same batches.
// (BN statistics are per micro-batch, so the comparison is against two
// separate half-batch steps summed, the contract distributed training keeps.)
TEST(GanStep, MicroBatchesAccumulate) {
  DcganConfig c;
  c.image_size = 32, c.nc = 1, c.ngf = c.ndf = 4, c.nz = 8;
  Nets n(c, 4);
  n.G.init_dcgan(1);
  n.D.init_dcgan(2);
  const auto real = gannf::test::randn<float>(8 * n.D.in_size(), 5, 0.5);
  const auto z = gannf::test::randn<float>(8 * 8, 6);
  GanStep<float> step(n.G, n.D);
  std::vector<float> sumG(n.G.num_params(), 0.f), sumD(n.D.num_params(), 0.f);
  for (int h = 0; h < 2; h++) {
    step.zero_grads();
    step.accumulate(real.data() + h * 4 * n.D.in_size(), z.data() + h * 4 * 8, 4, 1.0 / 8);
    auto g = n.G.get_grads(), d = n.D.get_grads();
    for (size_t i = 0; i < g.size(); i++) sumG[i] += g[i];
    for (size_t i = 0; i < d.size(); i++) sumD[i] += d[i];
  }
  step.zero_grads();
  StepStats total;
  total.merge(step.accumulate(real.data(), z.data(), 4, 1.0 / 8));
  total.merge(step.accumulate(real.data() + 4 * n.D.in_size(), z.data() + 4 * 8, 4, 1.0 / 8));
  EXPECT_EQ(total.samples, 8);
  EXPECT_TRUE(gannf::test::close("G grads", n.G.get_grads(), sumG, 1e-5, 1e-8));
  EXPECT_TRUE(gannf::test::close("D grads", n.D.get_grads(), sumD, 1e-5, 1e-8));
  EXPECT_GT(total.d_loss, 0);
  EXPECT_GE(total.d_acc, 0);
  EXPECT_LE(total.d_acc, 1);
}

// Nets fuse BN + ReLU / LeakyReLU into BN's kernels; with fusion off they run
// the two ops one after the other. A whole GAN step and an eval forward are
// the same bit for bit either way.
TEST(GanStep, FusedBnActivationsChangeNothing) {
  DcganConfig c;
  c.image_size = 64, c.nc = 3, c.ngf = c.ndf = 4, c.nz = 8;
  std::vector<std::vector<float>> out[2];
  for (int fuse = 0; fuse < 2; fuse++) {
    Nets n(c, 3);
    n.G.fuse_bn_act = n.D.fuse_bn_act = fuse == 1;
    n.G.init_dcgan(1);
    n.D.init_dcgan(2);
    const auto real = gannf::test::randn<float>(3 * n.D.in_size(), 5, 0.5);
    const auto z = gannf::test::randn<float>(3 * 8, 6);
    GanStep<float> step(n.G, n.D);
    step.zero_grads();
    const StepStats st = step.accumulate(real.data(), z.data(), 3, 1.0 / 3);
    const float* y = n.G.forward(z.data(), 3, Mode::Eval);
    out[fuse] = {n.G.get_grads(), n.D.get_grads(), n.G.get_stats(), n.D.get_stats(),
                 std::vector<float>(y, y + 3 * n.G.out_size()),
                 {(float)st.d_loss, (float)st.g_loss}};
  }
  const char* what[] = {"G grads", "D grads", "G stats", "D stats", "G eval output", "losses"};
  for (int i = 0; i < 6; i++) EXPECT_EQ(out[0][i], out[1][i]) << what[i];
}

}  // namespace
