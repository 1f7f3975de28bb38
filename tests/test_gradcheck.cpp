// Finite-difference gradient checks, in double precision, of every op's
// backward, of whole G and D through the GAN step and of gannf-eval's
// classifier through softmax cross-entropy; then the float kernels
// against the double path.
//
// Tolerances, and why:
//  - analytic vs central difference (h = 1e-6, double): max relative error
//    1e-6, where the error of an element is |a - n| / max(|a|, |n|, floor) and
//    floor = 1e-3 * (largest |gradient| of the tensor). The floor keeps entries
//    that are zero up to rounding (e.g. BN's input gradient of a constant
//    direction) from dividing noise by noise; every other entry is judged
//    relative to itself. Truncation error is O(h^2) ~ 1e-12 and rounding
//    O(eps |L| / h) ~ 1e-9 |L|, both far below 1e-6 of the gradients here.
//    Whole networks use h = 1e-5: their forward pass sums thousands of terms
//    per value, so the loss carries ~1e-14 relative noise, which h = 1e-6 would
//    turn into ~1e-8 of absolute gradient error (over 1e-6 of the smallest
//    gradients), while h^2 truncation at 1e-5 is still ~1e-10.
//  - float kernels vs the double path: |f - d| <= 1e-5 * (|d| + mean|d|) per
//    element, i.e. 1e-5 relative with a floor at the tensor's mean magnitude
//    (float has 6e-8 unit rounding; sums of a few hundred terms stay well inside).
//  - Points within 1e-4 of a kink (ReLU, LeakyReLU at 0) are skipped: there the
//    difference quotient straddles two slopes and is wrong by construction.
#include <functional>

#include "check.h"
#include "classifier_net.h"
#include "dcgan.h"
#include "ops.h"

using namespace gannf;
using namespace gannf::cpu;
using gannf::test::randn;

namespace {

constexpr double kH = 1e-6;
constexpr double kFdTol = 1e-6;
constexpr double kFloatTol = 1e-5;

// Checks `analytic` against central differences of `loss` wrt `x` at up to
// max_points entries (all when the tensor is small), perturbing x in place.
void fd_check(const std::string& what, std::vector<double>& x, const std::vector<double>& analytic,
              const std::function<double()>& loss, size_t max_points = 400,
              const std::vector<double>* kink = nullptr, double h = kH,
              const uint64_t* signature = nullptr) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  const double floor = 1e-3 * gannf::test::max_abs(analytic);
  Rng pick(x.size());
  const bool all = x.size() <= max_points;
  double worst = 0;
  size_t worst_i = 0, checked = 0;
  double worst_a = 0, worst_n = 0;
  for (size_t k = 0; k < (all ? x.size() : max_points); k++) {
    const size_t i = all ? k : pick.below(x.size());
    if (kink && std::fabs((*kink)[i]) < 1e-4) continue;
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    const uint64_t sp = signature ? *signature : 0;
    x[i] = x0 - h;
    const double lm = loss();
    const uint64_t sm = signature ? *signature : 0;
    x[i] = x0;
    // In a whole network the kink is inside: skip the point when the step moved
    // any ReLU/LeakyReLU input across zero (its sign pattern changed).
    if (signature && sp != sm) continue;
    const double num = (lp - lm) / (2 * h), a = analytic[i];
    const double err = std::fabs(a - num) / std::max({std::fabs(a), std::fabs(num), floor, 1e-300});
    checked++;
    if (err > worst) worst = err, worst_i = i, worst_a = a, worst_n = num;
  }
  EXPECT_GT(checked, 0u) << what;
  EXPECT_LE(worst, kFdTol) << what << ": element " << worst_i << " analytic " << worst_a
                           << " numeric " << worst_n << " (" << checked << " checked)";
}

template <class T>
double dot(const std::vector<T>& a, const std::vector<double>& w) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += (double)a[i] * w[i];
  return s;
}

// |f - d| <= tol * (|d| + mean|d|)
::testing::AssertionResult float_close(const std::string& what, const std::vector<float>& f,
                                       const std::vector<double>& d) {
  double mean = 0;
  for (double v : d) mean += std::fabs(v);
  mean /= std::max<size_t>(1, d.size());
  for (size_t i = 0; i < d.size(); i++)
    if (!(std::fabs(f[i] - d[i]) <= kFloatTol * (std::fabs(d[i]) + mean)))
      return ::testing::AssertionFailure() << what << ": element " << i << " float " << f[i]
                                           << " double " << d[i];
  return ::testing::AssertionSuccess();
}

// ---- convolutions ------------------------------------------------------------

struct ConvCase {
  const char* name;
  bool transposed;
  int B, C_in, H, C_out, K, stride, pad;
};

class ConvGrad : public ::testing::TestWithParam<ConvCase> {};

template <class T>
struct ConvRun {
  ConvDims d;
  bool transposed;
  std::vector<T> ws;
  ConvRun(const ConvDims& dd, bool t) : d(dd), transposed(t) {
    ws.resize(t ? conv_transpose2d_workspace_size(d) : conv2d_workspace_size(d));
  }
  size_t out_n() const { return (size_t)d.B * d.C_out * d.H_out * d.W_out; }
  std::vector<T> forward(const std::vector<T>& x, const std::vector<T>& w) {
    std::vector<T> y(out_n());
    if (transposed)
      conv_transpose2d_forward(y.data(), x.data(), w.data(), d, ws.data(), ws.size());
    else
      conv2d_forward(y.data(), x.data(), w.data(), d, ws.data(), ws.size());
    return y;
  }
  void backward(std::vector<T>& dx, std::vector<T>& dw, const std::vector<T>& dy,
                const std::vector<T>& x, const std::vector<T>& w) {
    if (transposed)
      conv_transpose2d_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), d, ws.data(),
                                ws.size());
    else
      conv2d_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), d, ws.data(),
                      ws.size());
  }
};

TEST_P(ConvGrad, BackwardMatchesFiniteDifferences) {
  const auto c = GetParam();
  const ConvDims d = c.transposed ? conv_transpose_dims(c.B, c.C_in, c.H, c.H, c.C_out, c.K,
                                                        c.stride, c.pad)
                                  : conv_dims(c.B, c.C_in, c.H, c.H, c.C_out, c.K, c.stride, c.pad);
  ConvRun<double> run(d, c.transposed);
  auto x = randn<double>((size_t)d.B * d.C_in * d.H_in * d.W_in, 1);
  auto w = randn<double>((size_t)d.C_in * d.C_out * d.K * d.K, 2, 0.3);
  const auto wy = randn<double>(run.out_n(), 3);  // loss = <y, wy>, so dL/dy = wy
  std::vector<double> dx(x.size()), dw(w.size(), 0.0);
  run.backward(dx, dw, wy, x, w);
  auto loss = [&] { return dot(run.forward(x, w), wy); };
  fd_check(std::string(c.name) + " dinp", x, dx, loss);
  fd_check(std::string(c.name) + " dweight", w, dw, loss);

  // Parameter gradients accumulate: a second backward doubles dweight.
  std::vector<double> dw2 = dw;
  run.backward(dx, dw2, wy, x, w);
  for (size_t i = 0; i < dw.size(); i++) ASSERT_NEAR(dw2[i], 2 * dw[i], 1e-12 * (1 + std::fabs(dw[i])));

  // float kernels against the double path
  ConvRun<float> runf(d, c.transposed);
  auto xf = gannf::test::cast<float>(x), wf = gannf::test::cast<float>(w),
       wyf = gannf::test::cast<float>(wy);
  EXPECT_TRUE(float_close(std::string(c.name) + " float forward", runf.forward(xf, wf),
                          run.forward(x, w)));
  std::vector<float> dxf(xf.size()), dwf(wf.size(), 0.f);
  runf.backward(dxf, dwf, wyf, xf, wf);
  EXPECT_TRUE(float_close(std::string(c.name) + " float dinp", dxf, dx));
  EXPECT_TRUE(float_close(std::string(c.name) + " float dweight", dwf, dw));
}

INSTANTIATE_TEST_SUITE_P(
    Ops, ConvGrad,
    ::testing::Values(
        // the DCGAN's stride-2 shape, odd sizes so nothing divides evenly
        ConvCase{"conv_s2", false, 2, 3, 7, 4, 4, 2, 1},
        // D's last layer: 4x4 -> 1x1 logit
        ConvCase{"conv_last", false, 3, 5, 4, 1, 4, 1, 0},
        ConvCase{"conv_k3_s1", false, 2, 2, 5, 3, 3, 1, 1},
        // G's stride-2 stage and its first layer (1x1 -> 4x4)
        ConvCase{"convT_s2", true, 2, 3, 3, 2, 4, 2, 1},
        ConvCase{"convT_first", true, 3, 5, 1, 4, 4, 1, 0},
        ConvCase{"convT_k3_s2_p0", true, 2, 2, 3, 3, 3, 2, 0}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- batch norm ----------------------------------------------------------------

TEST(BatchNormGrad, TrainingModeMatchesFiniteDifferences) {
  const int B = 3, C = 4, HW = 5;
  const size_t n = (size_t)B * C * HW;
  auto x = randn<double>(n, 11, 2.0);
  for (size_t i = 0; i < n; i++) x[i] += 0.5;  // non-zero mean
  auto g = randn<double>(C, 12, 0.5), b = randn<double>(C, 13, 0.5);
  for (auto& v : g) v += 1.0;
  const auto wy = randn<double>(n, 14);
  const double eps = 1e-5;
  std::vector<double> y(n), mean(C), var(C);
  auto loss = [&] {
    batchnorm2d_forward_train(y.data(), mean.data(), var.data(), x.data(), g.data(), b.data(), B,
                              C, HW, eps);
    return dot(y, wy);
  };
  loss();
  std::vector<double> dx(n), dg(C, 0.0), db(C, 0.0);
  batchnorm2d_backward(dx.data(), dg.data(), db.data(), wy.data(), x.data(), g.data(), mean.data(),
                       var.data(), B, C, HW, eps);
  fd_check("bn dinp", x, dx, loss);
  fd_check("bn dweight", g, dg, loss);
  fd_check("bn dbias", b, db, loss);

  // float against double
  auto xf = gannf::test::cast<float>(x), gf = gannf::test::cast<float>(g),
       bf = gannf::test::cast<float>(b), wyf = gannf::test::cast<float>(wy);
  std::vector<float> yf(n), mf(C), vf(C), dxf(n), dgf(C, 0.f), dbf(C, 0.f);
  batchnorm2d_forward_train(yf.data(), mf.data(), vf.data(), xf.data(), gf.data(), bf.data(), B, C,
                            HW, 1e-5f);
  loss();
  EXPECT_TRUE(float_close("bn float forward", yf, y));
  batchnorm2d_backward(dxf.data(), dgf.data(), dbf.data(), wyf.data(), xf.data(), gf.data(),
                       mf.data(), vf.data(), B, C, HW, 1e-5f);
  EXPECT_TRUE(float_close("bn float dinp", dxf, dx));
  EXPECT_TRUE(float_close("bn float dweight", dgf, dg));
  EXPECT_TRUE(float_close("bn float dbias", dbf, db));
}

// ---- activations and loss ----------------------------------------------------------

enum class Act { ReLU, Leaky, Tanh };
class ActivationGrad : public ::testing::TestWithParam<Act> {};

TEST_P(ActivationGrad, BackwardFromOutputMatchesFiniteDifferences) {
  const size_t n = 200;
  auto x = randn<double>(n, 21, 1.5);
  const auto wy = randn<double>(n, 22);
  std::vector<double> y(n), dx(n);
  auto fwd = [&](std::vector<double>& out, const std::vector<double>& in) {
    switch (GetParam()) {
      case Act::ReLU: relu_forward(out.data(), in.data(), n); break;
      case Act::Leaky: leaky_relu_forward(out.data(), in.data(), n, 0.2); break;
      case Act::Tanh: tanh_forward(out.data(), in.data(), n); break;
    }
  };
  fwd(y, x);
  switch (GetParam()) {
    case Act::ReLU: relu_backward(dx.data(), wy.data(), y.data(), n); break;
    case Act::Leaky: leaky_relu_backward(dx.data(), wy.data(), y.data(), n, 0.2); break;
    case Act::Tanh: tanh_backward(dx.data(), wy.data(), y.data(), n); break;
  }
  std::vector<double> tmp(n);
  const std::vector<double> at = x;  // kink test on the unperturbed input
  fd_check("activation", x, dx, [&] { fwd(tmp, x); return dot(tmp, wy); }, 400,
           GetParam() == Act::Tanh ? nullptr : &at);
  // in place (out aliases inp, dinp aliases dout) gives the same result
  std::vector<double> xi = x, gi = wy;
  fwd(xi, xi);
  switch (GetParam()) {
    case Act::ReLU: relu_backward(gi.data(), gi.data(), xi.data(), n); break;
    case Act::Leaky: leaky_relu_backward(gi.data(), gi.data(), xi.data(), n, 0.2); break;
    case Act::Tanh: tanh_backward(gi.data(), gi.data(), xi.data(), n); break;
  }
  for (size_t i = 0; i < n; i++) ASSERT_EQ(gi[i], dx[i]);
}
INSTANTIATE_TEST_SUITE_P(Ops, ActivationGrad, ::testing::Values(Act::ReLU, Act::Leaky, Act::Tanh),
                         [](const auto& i) {
                           return std::string(i.param == Act::ReLU    ? "relu"
                                              : i.param == Act::Leaky ? "leaky_relu"
                                                                      : "tanh");
                         });

TEST(BceGrad, BackwardIsTheGradientOfTheMean) {
  const int n = 7;
  for (double t : {0.0, 1.0}) {
    auto x = randn<double>(n, 31, 3.0);
    std::vector<double> dx(n);
    bce_with_logits_backward(dx.data(), x.data(), t, n, 1.0 / n);
    fd_check("bce target " + std::to_string((int)t), x, dx,
             [&] { return bce_with_logits_forward(x.data(), t, n); });
  }
}

TEST(SoftmaxXentGrad, BackwardIsTheGradientOfTheMean) {
  const int B = 4, C = 6;
  auto x = randn<double>((size_t)B * C, 41, 3.0);
  for (int c = 0; c < C; c++) x[C + c] += 60;  // a row far from 0: only the shift keeps exp finite
  const std::vector<int32_t> t = {0, 5, 2, 2};
  std::vector<double> p(x.size()), dx(x.size()), q(x.size());
  softmax_xent_forward(p.data(), x.data(), t.data(), B, C);
  softmax_xent_backward(dx.data(), p.data(), t.data(), B, C, 1.0 / B);
  fd_check("softmax_xent", x, dx,
           [&] { return softmax_xent_forward(q.data(), x.data(), t.data(), B, C); });

  // dlogits may alias probs
  std::vector<double> pa = p;
  softmax_xent_backward(pa.data(), pa.data(), t.data(), B, C, 1.0 / B);
  EXPECT_EQ(pa, dx);

  // float against double
  auto xf = gannf::test::cast<float>(x);
  std::vector<float> pf(x.size()), dxf(x.size());
  const double lf = softmax_xent_forward(pf.data(), xf.data(), t.data(), B, C);
  EXPECT_NEAR(lf, softmax_xent_forward(q.data(), x.data(), t.data(), B, C), 1e-6);
  softmax_xent_backward(dxf.data(), pf.data(), t.data(), B, C, 1.f / B);
  EXPECT_TRUE(float_close("softmax_xent float probs", pf, p));
  EXPECT_TRUE(float_close("softmax_xent float dlogits", dxf, dx));
}

// Values known without the kernel: equal logits give log C and a uniform
// softmax; logits (1000, 0) give a loss of 1000 against class 1 and
// log1p(e^-1000) = 0 against class 0 (a naive exp would overflow to inf/inf).
TEST(SoftmaxXent, KnownValues) {
  std::vector<double> x(7, 2.5), p(7);
  const int32_t t3 = 3;
  EXPECT_NEAR(softmax_xent_forward(p.data(), x.data(), &t3, 1, 7), std::log(7.0), 1e-15);
  for (double v : p) EXPECT_NEAR(v, 1.0 / 7, 1e-15);
  const std::vector<float> big = {1000.f, 0.f};
  std::vector<float> pb(2);
  const int32_t t1 = 1, t0 = 0;
  EXPECT_EQ(softmax_xent_forward(pb.data(), big.data(), &t1, 1, 2), 1000.0);
  EXPECT_EQ(softmax_xent_forward(pb.data(), big.data(), &t0, 1, 2), 0.0);
  EXPECT_EQ(pb[0], 1.f);
  EXPECT_EQ(pb[1], 0.f);
}

// ---- whole networks through the GAN step -------------------------------------------

// Larger conv weights than DCGAN's 0.02, so every layer's gradient in a
// whole net is well above rounding noise.
void scale_conv_weights(Net<double>& net, double s) {
  auto p = net.get_params();
  for (auto& l : net.layers())
    if (l.kind == LayerKind::Conv || l.kind == LayerKind::ConvTranspose)
      for (size_t i = 0; i < (size_t)l.C_in * l.C_out * l.K * l.K; i++) p[l.weight + i] *= s;
  net.set_params(p);
}
// Mixes the sign pattern of every ReLU/LeakyReLU output of net's last
// forward (B images) into *sig.
void hash_signs(const Net<double>& net, int B, uint64_t* sig) {
  for (size_t i = 0; i < net.layers().size(); i++) {
    const auto& l = net.layers()[i];
    if (l.kind != LayerKind::ReLU && l.kind != LayerKind::LeakyReLU) continue;
    const double* y = net.layer_output(i);
    const size_t n = (size_t)B * l.C_out * l.H_out * l.W_out;
    for (size_t k = 0; k < n; k++) *sig = (*sig ^ (uint64_t)(y[k] > 0)) * 1099511628211ull;
  }
}
// Every parameter tensor of `net` (gradients `grads`) against central
// differences of `loss`, which sets *sig (hash_signs) as it runs.
void check_net(Net<double>& net, const std::vector<double>& grads,
               const std::function<double()>& loss, const std::string& tag, const uint64_t* sig) {
  for (auto& t : net.params_layout().tensors) {
    std::vector<double> p = net.get_params();
    std::vector<double> x(p.begin() + t.offset, p.begin() + t.offset + t.numel());
    std::vector<double> a(grads.begin() + t.offset, grads.begin() + t.offset + t.numel());
    auto eval = [&] {
      std::copy(x.begin(), x.end(), p.begin() + t.offset);
      net.set_params(p);
      return loss();
    };
    fd_check(tag + " " + t.name, x, a, eval, 60, nullptr, 1e-5, sig);
    std::copy(x.begin(), x.end(), p.begin() + t.offset);
    net.set_params(p);
  }
}

struct NetCase {
  int image_size, nc;
};
class GanGrad : public ::testing::TestWithParam<NetCase> {
 public:
  static constexpr int B = 3;
  // Whole G and D (f = 4, batch 3) in double, with larger conv weights than
  // DCGAN's 0.02 so every layer's gradient is well above rounding noise.
  void SetUp() override {
    const auto c = GetParam();
    cfg.image_size = c.image_size;
    cfg.nc = c.nc;
    cfg.nz = 8;
    cfg.ngf = cfg.ndf = 4;
    build_generator(G, cfg, B);
    build_discriminator(D, cfg, B);
    G.init_dcgan(1);
    D.init_dcgan(2);
    scale_conv_weights(G, 10);
    scale_conv_weights(D, 10);
    real = randn<double>((size_t)B * D.in_size(), 3, 0.5);
    noise = randn<double>((size_t)B * G.in_size(), 4);
  }
  // The losses recomputed from scratch without touching running statistics;
  // sig_ hashes the sign pattern of every ReLU/LeakyReLU output of the passes.
  void sign_hash(const Net<double>& net) { hash_signs(net, B, &sig_); }
  double bce(const double* l, double t) { return bce_with_logits_forward(l, t, B); }
  // BCE(D(x),1) + BCE(D(G(z)),0) with G(z) held fixed.
  double d_loss() {
    sig_ = 0;
    const double* fake = G.forward(noise.data(), B, Mode::Train, false);
    sign_hash(G);
    std::vector<double> f(fake, fake + (size_t)B * D.in_size());  // detached copy
    be->download(logits.data(), D.forward(real.data(), B, Mode::Train, false), B);
    sign_hash(D);
    const double lr = bce(logits.data(), 1.0);
    be->download(logits.data(), D.forward(f.data(), B, Mode::Train, false), B);
    sign_hash(D);
    return lr + bce(logits.data(), 0.0);
  }
  // BCE(D(G(z)),1).
  double g_loss() {
    sig_ = 0;
    const double* fake = G.forward(noise.data(), B, Mode::Train, false);
    sign_hash(G);
    be->download(logits.data(), D.forward(fake, B, Mode::Train, false), B);
    sign_hash(D);
    return bce(logits.data(), 1.0);
  }
  // Every tensor of `net`'s gradients against central differences of `loss`.
  void check(Net<double>& net, const std::vector<double>& grads, double (GanGrad::*loss)(), const char* tag) {
    check_net(net, grads, [&] { return (this->*loss)(); }, tag, &sig_);
  }

  DcganConfig cfg;
  std::unique_ptr<Backend<double>> be = make_backend<double>("cpu");
  Net<double> G{*be, "G"}, D{*be, "D"};
  std::vector<double> real, noise, logits = std::vector<double>(B);
  uint64_t sig_ = 0;
};

// BN in training mode, the loss included: D's gradient is that of
// BCE(D(x),1) + BCE(D(G(z)),0) with G(z) held fixed, and G's is that of
// BCE(D(G(z)),1) — and nothing of G's loss reaches D's buffer.
TEST_P(GanGrad, StepGradientsMatchFiniteDifferences) {
  GanStep<double> step(G, D);
  step.zero_grads();
  step.accumulate(real.data(), noise.data(), B, 1.0 / B);
  const auto gG = G.get_grads(), gD = D.get_grads();
  check(D, gD, &GanGrad::d_loss, "D");
  check(G, gG, &GanGrad::g_loss, "G");
}

// The alternating step (gannf-train --mode alternating): D's gradients are
// the simultaneous step's, bit for bit; after D's Adam step, G's gradient is
// that of BCE(D'(G(z)),1) against the updated D'; G's running statistics
// moved once (its second forward leaves them), D's three times.
TEST_P(GanGrad, AlternatingStepTakesGsGradientAgainstTheUpdatedD) {
  Net<double> G0(*be, "G0"), D0(*be, "D0");
  build_generator(G0, cfg, B);
  build_discriminator(D0, cfg, B);
  G0.set_params(G.get_params());
  D0.set_params(D.get_params());
  GanStep<double> simultaneous(G0, D0);
  simultaneous.zero_grads();
  const StepStats s0 = simultaneous.accumulate(real.data(), noise.data(), B, 1.0 / B);

  GanStep<double> step(G, D);
  D.zero_grads();
  const StepStats sd = step.accumulate_d(real.data(), noise.data(), B, 1.0 / B);
  EXPECT_EQ(D.get_grads(), D0.get_grads());
  EXPECT_EQ(sd.d_loss, s0.d_loss);
  Adam<double> adam_d(*be, D.num_params(), AdamParams{});
  adam_d.step(D);
  EXPECT_NE(D.get_params(), D0.get_params());
  G.zero_grads();
  double d_fake_after = 0;
  const double g_after = step.accumulate_g(noise.data(), B, 1.0 / B, &d_fake_after);
  EXPECT_NEAR(g_after, g_loss(), 1e-12);
  EXPECT_NE(g_after, s0.g_loss);  // a different D
  EXPECT_GT(d_fake_after, 0.0);
  EXPECT_LT(d_fake_after, 1.0);
  const auto gG = G.get_grads();
  check(G, gG, &GanGrad::g_loss, "G after D's update");

  EXPECT_EQ(G.get_stats(), G0.get_stats());
  EXPECT_EQ(G.num_batches_tracked, G0.num_batches_tracked);
  EXPECT_EQ(D.num_batches_tracked, D0.num_batches_tracked + 1);
}
INSTANTIATE_TEST_SUITE_P(Nets, GanGrad, ::testing::Values(NetCase{32, 1}, NetCase{64, 3}),
                         [](const auto& i) {
                           std::string n = "s";  // appended, not "s" + temporary: GCC 12's false -Wrestrict
                           n += std::to_string(i.param.image_size);
                           n += "_c";
                           n += std::to_string(i.param.nc);
                           return n;
                         });


// ---- the classifier behind gannf-eval, through softmax cross-entropy ------------------

// Every layer of the classifier (width 1, batch 3, BN in training mode) with
// the loss on top: the gradient of the mean cross-entropy over the batch.
class ClassifierGrad : public ::testing::TestWithParam<int> {};
TEST_P(ClassifierGrad, SoftmaxXentThroughTheWholeNetMatchesFiniteDifferences) {
  constexpr int B = 3;
  eval::ClassifierConfig cfg;
  cfg.image_size = GetParam();
  cfg.width = 1;
  auto be = make_backend<double>("cpu");
  Net<double> net(*be, "classifier");
  eval::build_classifier(net, cfg, B);
  net.init_dcgan(5);
  scale_conv_weights(net, 10);
  // BN biases away from 0: with beta = 0 a conv + BN following a BN makes the
  // loss blind to that BN's scale, its gamma's gradient is 0 and the finite
  // difference only rounding noise.
  auto p = net.get_params();
  const auto shift = randn<double>(p.size(), 7, 0.5);
  for (auto& l : net.layers())
    if (l.kind == LayerKind::BatchNorm)
      for (int c = 0; c < l.C_out; c++) p[l.bias + c] = shift[l.bias + c];
  net.set_params(p);
  const auto x = randn<double>((size_t)B * net.in_size(), 6, 0.5);
  const std::vector<int32_t> t = {3, 0, 9};
  std::vector<double> probs((size_t)B * eval::kClasses);
  uint64_t sig = 0;
  auto loss = [&] {
    sig = 0;
    const double* logits = net.forward(x.data(), B, Mode::Train, false);
    hash_signs(net, B, &sig);
    return softmax_xent_forward(probs.data(), logits, t.data(), B, eval::kClasses);
  };
  loss();
  softmax_xent_backward(probs.data(), probs.data(), t.data(), B, eval::kClasses, 1.0 / B);
  net.zero_grads();
  net.backward(probs.data(), nullptr, true);
  check_net(net, net.get_grads(), loss, cfg.image_size == 32 ? "classifier s32" : "classifier s64",
            &sig);
}
INSTANTIATE_TEST_SUITE_P(Nets, ClassifierGrad, ::testing::Values(32, 64),
                         [](const auto& i) { return std::string(i.param == 32 ? "s32" : "s64"); });

}  // namespace
