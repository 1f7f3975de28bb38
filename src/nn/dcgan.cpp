#include "dcgan.h"

#include <cmath>
#include <stdexcept>

namespace gannf {

void DcganConfig::validate() const {
  auto bad = [](const std::string& what) { throw std::invalid_argument(what); };
  if (image_size != 32 && image_size != 64)
    bad("image size " + std::to_string(image_size) + " is not supported (use 32 or 64)");
  if (nz <= 0) bad("latent size must be positive, got " + std::to_string(nz));
  if (ngf <= 0) bad("generator width (ngf) must be positive, got " + std::to_string(ngf));
  if (ndf <= 0) bad("discriminator width (ndf) must be positive, got " + std::to_string(ndf));
  if (nc != 1 && nc != 3) bad("image channels must be 1 or 3, got " + std::to_string(nc));
}

std::string DcganConfig::describe() const {
  return "DCGAN " + std::to_string(image_size) + "x" + std::to_string(image_size) + "x" +
         std::to_string(nc) + ", nz " + std::to_string(nz) + ", ngf " + std::to_string(ngf) +
         ", ndf " + std::to_string(ndf);
}

static int hidden_stages(const DcganConfig& c) { return c.image_size == 64 ? 3 : 2; }

template <class T>
void build_generator(Net<T>& G, const DcganConfig& c, int max_batch) {
  c.validate();
  int mult = 1 << hidden_stages(c);  // 8 for 64x64, 4 for 32x32
  int idx = 0;
  G.add_conv(idx++, mult * c.ngf, 4, 1, 0, true);
  G.add_batchnorm(idx++);
  G.add_activation(idx++, LayerKind::ReLU);
  for (int s = 0; s < hidden_stages(c); s++) {
    mult /= 2;
    G.add_conv(idx++, mult * c.ngf, 4, 2, 1, true);
    G.add_batchnorm(idx++);
    G.add_activation(idx++, LayerKind::ReLU);
  }
  G.add_conv(idx++, c.nc, 4, 2, 1, true);
  G.add_activation(idx++, LayerKind::Tanh);
  G.finalize(c.nz, 1, 1, max_batch);
}

template <class T>
void build_discriminator(Net<T>& D, const DcganConfig& c, int max_batch) {
  c.validate();
  int idx = 0, mult = 1;
  D.add_conv(idx++, c.ndf, 4, 2, 1, false);
  D.add_activation(idx++, LayerKind::LeakyReLU);
  for (int s = 0; s < hidden_stages(c); s++) {
    mult *= 2;
    D.add_conv(idx++, mult * c.ndf, 4, 2, 1, false);
    D.add_batchnorm(idx++);
    D.add_activation(idx++, LayerKind::LeakyReLU);
  }
  D.add_conv(idx++, 1, 4, 1, 0, false);
  D.finalize(c.nc, c.image_size, c.image_size, max_batch);
}

template void build_generator<float>(Net<float>&, const DcganConfig&, int);
template void build_generator<double>(Net<double>&, const DcganConfig&, int);
template void build_discriminator<float>(Net<float>&, const DcganConfig&, int);
template void build_discriminator<double>(Net<double>&, const DcganConfig&, int);

void StepStats::merge(const StepStats& o) {
  const double n = (double)samples + (double)o.samples;
  if (n == 0) return;
  const double a = samples / n, b = o.samples / n;
  d_loss = a * d_loss + b * o.d_loss;
  g_loss = a * g_loss + b * o.g_loss;
  d_real = a * d_real + b * o.d_real;
  d_fake = a * d_fake + b * o.d_fake;
  d_acc = a * d_acc + b * o.d_acc;
  samples += o.samples;
}

template <class T>
GanStep<T>::GanStep(Net<T>& G, Net<T>& D) : G_(G), D_(D), be_(G.backend()) {
  if (&G.backend() != &D.backend())
    throw std::invalid_argument("GanStep: G and D must live on the same back end");
  if (G.max_batch() != D.max_batch())
    throw std::invalid_argument("GanStep: G and D were sized for different batches");
  if (G.out_size() != D.in_size())
    throw std::invalid_argument("GanStep: G's output (" + std::to_string(G.out_size()) +
                                " values) does not fit D's input (" +
                                std::to_string(D.in_size()) + ")");
  if (D.out_size() != 1) throw std::invalid_argument("GanStep: D must output one logit");
  const int B = G.max_batch();
  real_ = Buffer<T>(be_, (size_t)B * D.in_size());
  noise_ = Buffer<T>(be_, (size_t)B * G.in_size());
  dfake_ = Buffer<T>(be_, (size_t)B * D.in_size());
  dlogits_ = Buffer<T>(be_, (size_t)B);
  kept_logits_ = Buffer<T>(be_, 2 * (size_t)B);
  logits_.resize(2 * (size_t)B);
}

template <class T>
void GanStep<T>::zero_grads() {
  G_.zero_grads();
  D_.zero_grads();
}

namespace {
template <class T>
double bce_mean(const T* x, int B, double t) {
  double s = 0;
  for (int i = 0; i < B; i++) {
    const double v = x[i];
    s += std::max(v, 0.0) - v * t + std::log1p(std::exp(-std::fabs(v)));
  }
  return s / B;
}
double sigmoid(double x) { return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x)); }
}  // namespace

template <class T>
void GanStep<T>::load(const T* real, const T* noise, int B, double scale) {
  if (B <= 0 || B > G_.max_batch())
    throw std::invalid_argument("GanStep: micro-batch of " + std::to_string(B) +
                                " images; sized for 1.." + std::to_string(G_.max_batch()));
  if (!std::isfinite(scale) || scale <= 0)
    throw std::invalid_argument("GanStep: gradient scale must be a positive number");
  // A NaN or Inf in the data would silently poison both networks' weights at
  // the next Adam step; refuse it here, where the batch can still be named.
  if (real && !cpu::all_finite(real, (size_t)B * D_.in_size()))
    throw std::invalid_argument("GanStep: the real images contain NaN or Inf");
  if (!cpu::all_finite(noise, (size_t)B * G_.in_size()))
    throw std::invalid_argument("GanStep: the noise contains NaN or Inf");
  if (real) be_.upload(real_.data(), real, (size_t)B * D_.in_size());
  be_.upload(noise_.data(), noise, (size_t)B * G_.in_size());
}

template <class T>
void GanStep<T>::d_passes(int B, T sc) {
  const T* fake = G_.forward(noise_.data(), B, Mode::Train);  // (B, nc, S, S)

  // D on real, label 1. Its logits are kept (D's next forward overwrites them).
  const T* lr = D_.forward(real_.data(), B, Mode::Train);  // (B) logits
  be_.copy(kept_logits_.data(), lr, B);
  be_.bce_with_logits_backward(dlogits_.data(), lr, T(1), B, sc);
  D_.backward(dlogits_.data(), nullptr, true);

  // D on the fakes, label 0: fakes detached, so no input gradient.
  const T* lf = D_.forward(fake, B, Mode::Train);
  be_.copy(kept_logits_.data() + B, lf, B);
  be_.bce_with_logits_backward(dlogits_.data(), lf, T(0), B, sc);
  D_.backward(dlogits_.data(), nullptr, true);
  fake_logits_ = lf;
}

template <class T>
StepStats GanStep<T>::d_stats(int B) {
  be_.download(logits_.data(), kept_logits_.data(), 2 * (size_t)B);
  const T *real = logits_.data(), *fake = logits_.data() + B;
  StepStats st;
  st.samples = B;
  double d_real = 0, d_fake = 0;
  int correct = 0;
  for (int i = 0; i < B; i++) {
    d_real += sigmoid(real[i]);
    correct += real[i] > 0;
    d_fake += sigmoid(fake[i]);
    correct += fake[i] < 0;
  }
  st.d_loss = bce_mean(real, B, 1.0) + bce_mean(fake, B, 0.0);
  st.g_loss = bce_mean(fake, B, 1.0);
  st.d_real = d_real / B;
  st.d_fake = d_fake / B;
  st.d_acc = correct / (2.0 * B);
  return st;
}

template <class T>
void GanStep<T>::passes(int B, T sc) {
  auto run = [&] {
    d_passes(B, sc);
    // G: the same forward of D on the fakes, label 1; only the input gradient of
    // D is taken (param_grads = false), so G's loss never reaches D's buffer.
    be_.bce_with_logits_backward(dlogits_.data(), fake_logits_, T(1), B, sc);
    D_.backward(dlogits_.data(), dfake_.data(), false);
    G_.backward(dfake_.data(), nullptr, true);
  };
  Graph* g = nullptr;
  for (Graph& x : graphs_)
    if (x.B == B && x.scale == sc) g = &x;
  if (g && g->handle) {
    be_.replay(g->handle);
    G_.num_batches_tracked += g->dg;
    D_.num_batches_tracked += g->dd;
    return;
  }
  if (!g) {  // first time: run, and remember it (graphs capture the second)
    graphs_.push_back(Graph{B, sc, 0, 0, 0});
    run();
    return;
  }
  if (!be_.begin_capture()) {
    run();
    return;
  }
  const int64_t g0 = G_.num_batches_tracked, d0 = D_.num_batches_tracked;
  try {
    run();  // recorded, not run: the host side (counters) moves now
  } catch (...) {
    be_.end_capture();  // (discarded: the capture must end before anything else runs)
    throw;
  }
  g->handle = be_.end_capture();
  g->dg = G_.num_batches_tracked - g0;
  g->dd = D_.num_batches_tracked - d0;
  be_.replay(g->handle);
}

template <class T>
StepStats GanStep<T>::accumulate(const T* real, const T* noise, int B, double scale) {
  load(real, noise, B, scale);
  passes(B, (T)scale);
  return d_stats(B);
}

template <class T>
StepStats GanStep<T>::accumulate_d(const T* real, const T* noise, int B, double scale) {
  load(real, noise, B, scale);
  d_passes(B, (T)scale);
  return d_stats(B);
}

template <class T>
double GanStep<T>::accumulate_g(const T* noise, int B, double scale, double* d_fake) {
  load(nullptr, noise, B, scale);
  const T sc = (T)scale;
  const T* fake = G_.forward(noise_.data(), B, Mode::Train, /*update_running=*/false);
  const T* lf = D_.forward(fake, B, Mode::Train);
  be_.download(logits_.data(), lf, B);
  const double g_loss = bce_mean(logits_.data(), B, 1.0);
  if (d_fake) {
    double s = 0;
    for (int i = 0; i < B; i++) s += sigmoid(logits_[i]);
    *d_fake = s / B;
  }
  be_.bce_with_logits_backward(dlogits_.data(), lf, T(1), B, sc);
  D_.backward(dlogits_.data(), dfake_.data(), false);
  G_.backward(dfake_.data(), nullptr, true);
  return g_loss;
}

template <class T>
void Adam<T>::step(Net<T>& net) {
  if (net.num_params() != m_.size())
    throw std::invalid_argument("Adam: state of " + std::to_string(m_.size()) +
                                " elements for a net of " + std::to_string(net.num_params()));
  // Non-finite gradients (a diverged step, or a hostile upload) would make
  // every weight NaN; refuse them and leave weights and moments untouched.
  if (!be_.all_finite(net.grads(), m_.size()))
    throw std::runtime_error("Adam: " + net.name() + "'s gradients contain NaN or Inf; step refused");
  t++;
  be_.adam_update(net.params(), m_.data(), v_.data(), net.grads(), m_.size(), p_, t);
}

template class GanStep<float>;
template class GanStep<double>;
template class Adam<float>;
template class Adam<double>;

}  // namespace gannf
