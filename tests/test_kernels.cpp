// The float kernels against plain reference loops, the workspace chunking, the
// numerics of BN, BCE and Adam, and refusal of bad input.
//
// Tolerance for float kernels vs the double reference loops: 1e-5 relative with
// an absolute floor of 1e-5 * (largest |reference|): GEMM reorders the sums of
// up to C*K*K = a few hundred products, each rounding at 6e-8.
#include <limits>

#include "check.h"
#include "ops.h"

using namespace gannf;
using namespace gannf::cpu;
using gannf::test::randn;

namespace {

// Direct convolution, double accumulation: y[b,o,i,j] = sum x[b,c,i*s-p+kh, j*s-p+kw] w[o,c,kh,kw]
std::vector<double> conv_ref(const std::vector<float>& x, const std::vector<float>& w,
                             const ConvDims& d) {
  std::vector<double> y((size_t)d.B * d.C_out * d.H_out * d.W_out, 0.0);
  for (int b = 0; b < d.B; b++)
    for (int o = 0; o < d.C_out; o++)
      for (int i = 0; i < d.H_out; i++)
        for (int j = 0; j < d.W_out; j++) {
          double s = 0;
          for (int c = 0; c < d.C_in; c++)
            for (int kh = 0; kh < d.K; kh++)
              for (int kw = 0; kw < d.K; kw++) {
                const int ih = i * d.stride - d.pad + kh, iw = j * d.stride - d.pad + kw;
                if (ih < 0 || ih >= d.H_in || iw < 0 || iw >= d.W_in) continue;
                s += (double)x[(((size_t)b * d.C_in + c) * d.H_in + ih) * d.W_in + iw] *
                     w[(((size_t)o * d.C_in + c) * d.K + kh) * d.K + kw];
              }
          y[(((size_t)b * d.C_out + o) * d.H_out + i) * d.W_out + j] = s;
        }
  return y;
}

// Transposed convolution as a scatter: each input pixel adds w[c,o,:,:] * x onto the output.
std::vector<double> convt_ref(const std::vector<float>& x, const std::vector<float>& w,
                              const ConvDims& d) {
  std::vector<double> y((size_t)d.B * d.C_out * d.H_out * d.W_out, 0.0);
  for (int b = 0; b < d.B; b++)
    for (int c = 0; c < d.C_in; c++)
      for (int i = 0; i < d.H_in; i++)
        for (int j = 0; j < d.W_in; j++) {
          const double v = x[(((size_t)b * d.C_in + c) * d.H_in + i) * d.W_in + j];
          for (int o = 0; o < d.C_out; o++)
            for (int kh = 0; kh < d.K; kh++)
              for (int kw = 0; kw < d.K; kw++) {
                const int oh = i * d.stride - d.pad + kh, ow = j * d.stride - d.pad + kw;
                if (oh < 0 || oh >= d.H_out || ow < 0 || ow >= d.W_out) continue;
                y[(((size_t)b * d.C_out + o) * d.H_out + oh) * d.W_out + ow] +=
                    v * w[(((size_t)c * d.C_out + o) * d.K + kh) * d.K + kw];
              }
        }
  return y;
}

struct Shape {
  bool transposed;
  int B, C_in, H, C_out, K, s, p;
};

class ConvVsReference : public ::testing::TestWithParam<Shape> {};

TEST_P(ConvVsReference, ForwardMatchesDirectLoopsForEveryWorkspaceSize) {
  const auto c = GetParam();
  const ConvDims d = c.transposed ? conv_transpose_dims(c.B, c.C_in, c.H, c.H, c.C_out, c.K, c.s, c.p)
                                  : conv_dims(c.B, c.C_in, c.H, c.H, c.C_out, c.K, c.s, c.p);
  const auto x = randn<float>((size_t)d.B * d.C_in * d.H_in * d.W_in, 5);
  const auto w = randn<float>((size_t)d.C_in * d.C_out * d.K * d.K, 6, 0.1);
  const auto ref = c.transposed ? convt_ref(x, w, d) : conv_ref(x, w, d);
  const size_t wmin = c.transposed ? conv_transpose2d_workspace_min(d) : conv2d_workspace_min(d);
  const size_t wfull = c.transposed ? conv_transpose2d_workspace_size(d) : conv2d_workspace_size(d);
  ASSERT_GE(wfull, wmin);
  // One image per chunk, chunks of 2 with a remainder, and the full chunk.
  for (size_t ws_n : {wmin, std::min(wfull, 2 * wmin + wmin / 2), wfull}) {
    std::vector<float> ws(ws_n), y(ref.size());
    if (c.transposed)
      conv_transpose2d_forward(y.data(), x.data(), w.data(), d, ws.data(), ws.size());
    else
      conv2d_forward(y.data(), x.data(), w.data(), d, ws.data(), ws.size());
    EXPECT_TRUE(gannf::test::close("forward, workspace " + std::to_string(ws_n), y, ref, 1e-5,
                                   1e-5 * gannf::test::max_abs(ref)));
  }
}

TEST_P(ConvVsReference, BackwardIsTheSameForEveryWorkspaceSize) {
  const auto c = GetParam();
  const ConvDims d = c.transposed ? conv_transpose_dims(c.B, c.C_in, c.H, c.H, c.C_out, c.K, c.s, c.p)
                                  : conv_dims(c.B, c.C_in, c.H, c.H, c.C_out, c.K, c.s, c.p);
  const auto x = randn<float>((size_t)d.B * d.C_in * d.H_in * d.W_in, 7);
  const auto w = randn<float>((size_t)d.C_in * d.C_out * d.K * d.K, 8, 0.1);
  const auto dy = randn<float>((size_t)d.B * d.C_out * d.H_out * d.W_out, 9);
  const size_t wmin = c.transposed ? conv_transpose2d_workspace_min(d) : conv2d_workspace_min(d);
  const size_t wfull = c.transposed ? conv_transpose2d_workspace_size(d) : conv2d_workspace_size(d);
  std::vector<float> dx0, dw0;
  for (size_t ws_n : {wfull, wmin}) {
    std::vector<float> ws(ws_n), dx(x.size()), dw(w.size(), 0.f);
    if (c.transposed)
      conv_transpose2d_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), d, ws.data(), ws_n);
    else
      conv2d_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), d, ws.data(), ws_n);
    if (dx0.empty()) {
      dx0 = dx, dw0 = dw;
      continue;
    }
    EXPECT_TRUE(gannf::test::close("dinp", dx, dx0, 1e-5, 1e-6 * gannf::test::max_abs(dx0)));
    EXPECT_TRUE(gannf::test::close("dweight", dw, dw0, 1e-5, 1e-6 * gannf::test::max_abs(dw0)));
  }
  // Null halves are skipped, not crashed on.
  std::vector<float> ws(wfull), dx(x.size());
  if (c.transposed)
    conv_transpose2d_backward(dx.data(), (float*)nullptr, dy.data(), x.data(), w.data(), d, ws.data(), wfull);
  else
    conv2d_backward(dx.data(), (float*)nullptr, dy.data(), x.data(), w.data(), d, ws.data(), wfull);
  EXPECT_TRUE(gannf::test::close("dinp alone", dx, dx0, 1e-6, 1e-7));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvVsReference,
    ::testing::Values(Shape{false, 5, 3, 9, 4, 4, 2, 1},   // odd sizes, stride 2
                      Shape{false, 4, 6, 4, 1, 4, 1, 0},   // D's logit layer
                      Shape{false, 3, 2, 6, 3, 3, 1, 1},
                      Shape{true, 5, 4, 5, 3, 4, 2, 1},    // G's stride-2 stage
                      Shape{true, 4, 7, 1, 5, 4, 1, 0},    // G's first layer
                      Shape{true, 3, 2, 4, 2, 3, 2, 0},
                      // big enough for the per-thread chunks (>= 256 columns a
                      // thread) and more than one 256-row channel block
                      Shape{false, 8, 20, 16, 6, 4, 2, 1},
                      Shape{true, 8, 6, 8, 20, 4, 2, 1}),
    [](const auto& i) {
      const auto& s = i.param;
      return std::string(s.transposed ? "convT" : "conv") + "_B" + std::to_string(s.B) + "_C" +
             std::to_string(s.C_in) + "_H" + std::to_string(s.H) + "_K" + std::to_string(s.K) +
             "_s" + std::to_string(s.s) + "_p" + std::to_string(s.p);
    });

TEST(ConvInput, BadGeometryAndWorkspaceAreRefused) {
  EXPECT_THROW(conv_dims(2, 3, 2, 2, 4, 5, 1, 0), std::invalid_argument);   // kernel > input
  EXPECT_THROW(conv_dims(0, 3, 8, 8, 4, 4, 2, 1), std::invalid_argument);   // zero batch
  EXPECT_THROW(conv_dims(2, 3, 8, 8, 4, 4, 0, 1), std::invalid_argument);   // stride 0
  EXPECT_THROW(conv_transpose_dims(2, 3, 1, 1, 4, 1, 1, 1), std::invalid_argument);  // empty
  const ConvDims d = conv_dims(2, 3, 8, 8, 4, 4, 2, 1);
  std::vector<float> x(2 * 3 * 64), w(4 * 3 * 16), y(2 * 4 * 16), ws(conv2d_workspace_min(d) - 1);
  EXPECT_THROW(conv2d_forward(y.data(), x.data(), w.data(), d, ws.data(), ws.size()),
               std::invalid_argument);
}

TEST(BatchNorm, RunningStatisticsFollowPyTorchsRule) {
  const int B = 4, C = 3, HW = 6;
  const auto x = randn<float>((size_t)B * C * HW, 41, 2.0);
  std::vector<float> g(C, 1.f), b(C, 0.f), y(x.size()), mean(C), var(C);
  batchnorm2d_forward_train(y.data(), mean.data(), var.data(), x.data(), g.data(), b.data(), B, C, HW, 1e-5f);
  std::vector<float> rm(C, 0.5f), rv(C, 2.f);
  batchnorm2d_update_running(rm.data(), rv.data(), mean.data(), var.data(), C, (int64_t)B * HW, 0.1f);
  for (int c = 0; c < C; c++) {
    double s = 0, ss = 0;
    const int n = B * HW;
    for (int bb = 0; bb < B; bb++)
      for (int i = 0; i < HW; i++) s += x[((size_t)bb * C + c) * HW + i];
    const double m = s / n;
    for (int bb = 0; bb < B; bb++)
      for (int i = 0; i < HW; i++) ss += std::pow(x[((size_t)bb * C + c) * HW + i] - m, 2);
    EXPECT_NEAR(mean[c], m, 1e-6);
    EXPECT_NEAR(var[c], ss / n, 1e-5);                        // biased, for normalising
    EXPECT_NEAR(rm[c], 0.9 * 0.5 + 0.1 * m, 1e-6);
    EXPECT_NEAR(rv[c], 0.9 * 2.0 + 0.1 * ss / (n - 1), 1e-5);  // unbiased, for running
  }
  // eval mode with the batch's own statistics reproduces training mode's output
  std::vector<float> ye(x.size()), vb(var);
  batchnorm2d_forward_eval(ye.data(), x.data(), g.data(), b.data(), mean.data(), vb.data(), B, C, HW, 1e-5f);
  EXPECT_TRUE(gannf::test::close("eval vs train", ye, y, 1e-5, 1e-5));
}

// BN with a ReLU / LeakyReLU fused in gives, bit for bit, what BN and then the
// activation kernel give: forward (train and eval) and backward (input and
// parameter gradients), also in place over the incoming gradient.
template <class T>
void check_fused_bn_act() {
  const int B = 3, C = 5, HW = 37;  // odd sizes: no vector width divides them
  const size_t n = (size_t)B * C * HW;
  const auto x = randn<T>(n, 61, 1.5), g = randn<T>(n, 62);
  auto w = randn<T>(C, 63, 0.3), b = randn<T>(C, 64, 0.5);
  for (auto& v : w) v += T(1);
  const T eps = T(1e-5), slope = T(0.2);
  for (BnAct act : {BnAct::relu, BnAct::leaky_relu}) {
    const char* name = act == BnAct::relu ? "relu" : "leaky_relu";
    auto apply = [&](std::vector<T>& y) {
      if (act == BnAct::relu)
        relu_forward(y.data(), y.data(), n);
      else
        leaky_relu_forward(y.data(), y.data(), n, slope);
    };
    // forward, train
    std::vector<T> y1(n), m1(C), v1(C), y2(n), m2(C), v2(C);
    batchnorm2d_forward_train(y1.data(), m1.data(), v1.data(), x.data(), w.data(), b.data(), B, C, HW, eps);
    apply(y1);
    batchnorm2d_forward_train(y2.data(), m2.data(), v2.data(), x.data(), w.data(), b.data(), B, C, HW, eps,
                              act, slope);
    EXPECT_EQ(y1, y2) << name << " train forward";
    EXPECT_EQ(m1, m2) << name;
    EXPECT_EQ(v1, v2) << name;
    // forward, eval
    std::vector<T> e1(n), e2(n);
    batchnorm2d_forward_eval(e1.data(), x.data(), w.data(), b.data(), m1.data(), v1.data(), B, C, HW, eps);
    apply(e1);
    batchnorm2d_forward_eval(e2.data(), x.data(), w.data(), b.data(), m1.data(), v1.data(), B, C, HW, eps,
                             act, slope);
    EXPECT_EQ(e1, e2) << name << " eval forward";
    // backward: the activation's backward, then BN's; against the fused one
    std::vector<T> dy(n), dx1(n), dw1(C, T(0.5)), db1(C, T(-0.5));
    if (act == BnAct::relu)
      relu_backward(dy.data(), g.data(), y1.data(), n);
    else
      leaky_relu_backward(dy.data(), g.data(), y1.data(), n, slope);
    batchnorm2d_backward(dx1.data(), dw1.data(), db1.data(), dy.data(), x.data(), w.data(), m1.data(),
                         v1.data(), B, C, HW, eps);
    std::vector<T> dx2(n), dw2(C, T(0.5)), db2(C, T(-0.5));
    batchnorm2d_backward(dx2.data(), dw2.data(), db2.data(), g.data(), x.data(), w.data(), m1.data(),
                         v1.data(), B, C, HW, eps, act, slope, y1.data());
    EXPECT_EQ(dx1, dx2) << name << " backward";
    EXPECT_EQ(dw1, dw2) << name << " dweight";
    EXPECT_EQ(db1, db2) << name << " dbias";
    auto inplace = g;  // dinp over dout
    batchnorm2d_backward(inplace.data(), (T*)nullptr, (T*)nullptr, inplace.data(), x.data(), w.data(),
                         m1.data(), v1.data(), B, C, HW, eps, act, slope, y1.data());
    EXPECT_EQ(inplace, dx1) << name << " backward in place";
  }
  // A fused backward without the activation's output, or a LeakyReLU with a
  // non-positive slope, is refused.
  std::vector<T> y(n), m(C), v(C, T(1));
  EXPECT_THROW(batchnorm2d_backward(y.data(), (T*)nullptr, (T*)nullptr, g.data(), x.data(), w.data(),
                                    m.data(), v.data(), B, C, HW, eps, BnAct::relu, T(0), (const T*)nullptr),
               std::invalid_argument);
  EXPECT_THROW(batchnorm2d_forward_train(y.data(), m.data(), v.data(), x.data(), w.data(), b.data(), B, C,
                                         HW, eps, BnAct::leaky_relu, T(0)),
               std::invalid_argument);
}
TEST(BatchNorm, FusedActivationIsBitForBitTheTwoOps) {
  check_fused_bn_act<float>();
  check_fused_bn_act<double>();
}

TEST(Bce, StableForLargeLogits) {
  const float big[4] = {1000.f, -1000.f, 88.f, -88.f};
  EXPECT_NEAR(bce_with_logits_forward(big, 1.f, 1), 0.0, 1e-12);
  EXPECT_NEAR(bce_with_logits_forward(big + 1, 1.f, 1), 1000.0, 1e-9);
  EXPECT_NEAR(bce_with_logits_forward(big + 1, 0.f, 1), 0.0, 1e-12);
  EXPECT_TRUE(std::isfinite(bce_with_logits_forward(big, 0.f, 4)));
  float d[4];
  bce_with_logits_backward(d, big, 1.f, 4, 0.25f);
  for (float v : d) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(d[0], 0.f, 1e-7);
  EXPECT_NEAR(d[1], -0.25f, 1e-7);
  const float zero = 0.f;
  EXPECT_NEAR(bce_with_logits_forward(&zero, 1.f, 1), std::log(2.0), 1e-12);
}

TEST(Adam, MatchesTheTextbookFormulaOverSeveralSteps) {
  const size_t n = 1000;
  auto p = randn<float>(n, 51), g1 = randn<float>(n, 52), g2 = randn<float>(n, 53);
  std::vector<float> m(n, 0.f), v(n, 0.f);
  std::vector<double> pd(p.begin(), p.end()), md(n, 0), vd(n, 0);
  AdamParams ap;
  ap.lr = 2e-4f, ap.beta1 = 0.5f, ap.beta2 = 0.999f, ap.eps = 1e-8f;
  for (int t = 1; t <= 3; t++) {
    const auto& g = t == 2 ? g2 : g1;
    adam_update(p.data(), m.data(), v.data(), g.data(), n, ap, t);
    for (size_t i = 0; i < n; i++) {
      md[i] = ap.beta1 * md[i] + (1 - ap.beta1) * (double)g[i];
      vd[i] = ap.beta2 * vd[i] + (1 - ap.beta2) * (double)g[i] * g[i];
      const double mh = md[i] / (1 - std::pow((double)ap.beta1, t));
      const double vh = vd[i] / (1 - std::pow((double)ap.beta2, t));
      pd[i] -= ap.lr * mh / (std::sqrt(vh) + ap.eps);
    }
  }
  // 1e-6 absolute on parameters of size ~1 after steps of 2e-4: float rounding of p.
  EXPECT_TRUE(gannf::test::close("params after 3 steps", p, pd, 0, 1e-6));
  // The first step of Adam moves each weight by lr against its gradient's sign
  // (exactly lr * g / (|g| + eps): m-hat = g and sqrt(v-hat) = |g|).
  std::vector<float> q(n, 0.f), m1(n, 0.f), v1(n, 0.f);
  adam_update(q.data(), m1.data(), v1.data(), g1.data(), n, ap, 1);
  for (size_t i = 0; i < n; i++) EXPECT_NEAR(q[i], -2e-4 * g1[i] / (std::fabs(g1[i]) + 1e-8), 1e-10);  // 4 float ulps of 2e-4
}

template <class T>
void check_finiteness_scan() {
  using L = std::numeric_limits<T>;
  for (size_t n : {(size_t)5, (size_t)100003}) {  // serial, and over the OpenMP threshold
    // Finite extremes: largest, smallest normal and subnormal, both zeros.
    std::vector<T> x(n, T(1));
    for (size_t i = 0; i < n; i += 7) x[i] = i % 2 ? L::max() : -L::max();
    x[n / 3] = L::denorm_min(), x[n / 2] = -T(0), x[n - 1] = L::min();
    EXPECT_TRUE(all_finite(x.data(), n)) << n;
    EXPECT_TRUE(all_finite(x.data(), 0));
    for (size_t at : {(size_t)0, n / 2, n - 1})
      for (T bad : {L::quiet_NaN(), -L::quiet_NaN(), L::signaling_NaN(), L::infinity(), -L::infinity()}) {
        auto y = x;
        y[at] = bad;
        EXPECT_FALSE(all_finite(y.data(), n)) << bad << " at " << at << " of " << n;
        if (at > 0) {
          EXPECT_TRUE(all_finite(y.data(), at)) << "reads past n";
        }
      }
  }
}

TEST(Finite, DetectsNaNAndInfInFloatAndDouble) {
  check_finiteness_scan<float>();
  check_finiteness_scan<double>();
}

}  // namespace

// The comparison every suite relies on: a NaN or an infinity fails it, on
// either side (a reference gone NaN once let every comparison pass), and only
// an exactly equal infinity passes.
TEST(CheckClose, NonFiniteValuesOnEitherSideFail) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = INFINITY;
  const std::vector<double> ref = {1.0, 2.0, 3.0};
  EXPECT_TRUE(gannf::test::close("same", ref, ref, 1e-6, 0));
  for (size_t i = 0; i < ref.size(); i++)
    for (double bad : {nan, inf, -inf}) {
      std::vector<double> r = ref, a = ref;
      r[i] = bad;
      EXPECT_FALSE(gannf::test::close("reference", a, r, 1e-6, 1e-6)) << "ref[" << i << "] = " << bad;
      a[i] = bad;
      r[i] = ref[i];
      EXPECT_FALSE(gannf::test::close("value", a, r, 1e-6, 1e-6)) << "a[" << i << "] = " << bad;
    }
  const std::vector<double> both_nan = {1.0, nan}, both_inf = {1.0, -inf};
  EXPECT_FALSE(gannf::test::close("NaN against NaN", both_nan, both_nan, 1e-6, 1e-6));
  EXPECT_TRUE(gannf::test::close("equal infinities", both_inf, both_inf, 1e-6, 1e-6));
  const ::testing::AssertionResult r = gannf::test::close("named", std::vector<double>{1.0, 5.0},
                                                          std::vector<double>{1.0, nan}, 1e-6, 1e-6);
  EXPECT_NE(std::string(r.message()).find("named: element 1 of 2 is 5, expected nan"), std::string::npos)
      << r.message();
}
