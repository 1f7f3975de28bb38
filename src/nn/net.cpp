#include "net.h"

#include <stdexcept>

#include "rng.h"

namespace gannf {

const TensorSpec* Layout::find(const std::string& name) const {
  for (auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}
void Layout::add(const std::string& name, std::vector<int64_t> shape) {
  TensorSpec t{name, std::move(shape), total};
  total += t.numel();
  tensors.push_back(std::move(t));
}

template <class T>
Net<T>::Net(Backend<T>& be, std::string name) : be_(be), name_(std::move(name)) {}

template <class T>
void Net<T>::add_conv(int index, int C_out, int K, int stride, int pad, bool transposed) {
  LayerSpec l{};
  l.kind = transposed ? LayerKind::ConvTranspose : LayerKind::Conv;
  l.index = index;
  l.C_out = C_out;
  l.K = K;
  l.stride = stride;
  l.pad = pad;
  layers_.push_back(l);
}
template <class T>
void Net<T>::add_batchnorm(int index) {
  LayerSpec l{};
  l.kind = LayerKind::BatchNorm;
  l.index = index;
  layers_.push_back(l);
}
template <class T>
void Net<T>::add_activation(int index, LayerKind kind) {
  LayerSpec l{};
  l.kind = kind;
  l.index = index;
  layers_.push_back(l);
}

template <class T>
ConvDims Net<T>::dims(const LayerSpec& l, int B) const {
  ConvDims d{B, l.C_in, l.H_in, l.W_in, l.C_out, l.H_out, l.W_out, l.K, l.stride, l.pad};
  return d;
}

template <class T>
void Net<T>::finalize(int C_in, int H_in, int W_in, int max_batch) {
  if (finalized_) throw std::logic_error(name_ + ": finalize() called twice");
  if (max_batch <= 0) throw std::invalid_argument(name_ + ": batch size must be positive");
  c_in_ = C_in, h_in_ = H_in, w_in_ = W_in, max_batch_ = max_batch;
  int C = C_in, H = H_in, W = W_in;
  for (auto& l : layers_) {
    const std::string pre = "main." + std::to_string(l.index) + ".";
    l.C_in = C, l.H_in = H, l.W_in = W;
    switch (l.kind) {
      case LayerKind::Conv: {
        ConvDims d = conv_dims(1, C, H, W, l.C_out, l.K, l.stride, l.pad);
        l.H_out = d.H_out, l.W_out = d.W_out;
        l.weight = params_.total;
        params_.add(pre + "weight", {l.C_out, C, l.K, l.K});
        break;
      }
      case LayerKind::ConvTranspose: {
        ConvDims d = conv_transpose_dims(1, C, H, W, l.C_out, l.K, l.stride, l.pad);
        l.H_out = d.H_out, l.W_out = d.W_out;
        l.weight = params_.total;
        params_.add(pre + "weight", {C, l.C_out, l.K, l.K});
        break;
      }
      case LayerKind::BatchNorm:
        l.C_out = C, l.H_out = H, l.W_out = W;
        l.weight = params_.total;
        params_.add(pre + "weight", {C});
        l.bias = params_.total;
        params_.add(pre + "bias", {C});
        l.running_mean = stats_.total;
        stats_.add(pre + "running_mean", {C});
        l.running_var = stats_.total;
        stats_.add(pre + "running_var", {C});
        l.stat_cache = cache_size_;
        cache_size_ += 2 * (size_t)C;
        break;
      default:
        l.C_out = C, l.H_out = H, l.W_out = W;
    }
    C = l.C_out, H = l.H_out, W = l.W_out;
  }
  params_buf_ = Buffer<T>(be_, params_.total);
  grads_buf_ = Buffer<T>(be_, params_.total);
  stats_buf_ = Buffer<T>(be_, stats_.total);
  cache_buf_ = Buffer<T>(be_, cache_size_ ? cache_size_ : 1);
  // Activations: one buffer per layer that makes a new tensor; activation
  // functions run in place on their input, as their backward needs only the output.
  out_.assign(layers_.size(), nullptr);
  acts_.clear();
  max_act_ = in_size();
  for (size_t i = 0; i < layers_.size(); i++) {
    const auto& l = layers_[i];
    const size_t n = (size_t)l.C_out * l.H_out * l.W_out;
    max_act_ = std::max(max_act_, n);
    const bool in_place = l.kind == LayerKind::ReLU || l.kind == LayerKind::LeakyReLU ||
                          l.kind == LayerKind::Tanh;
    if (in_place && i > 0) {
      out_[i] = out_[i - 1];
    } else {
      acts_.emplace_back(be_, n * max_batch);
      out_[i] = acts_.back().data();
    }
    if (l.kind == LayerKind::Conv)
      ws_size_ = std::max(ws_size_, be_.conv2d_workspace(dims(l, max_batch)));
    if (l.kind == LayerKind::ConvTranspose)
      ws_size_ = std::max(ws_size_, be_.conv_transpose2d_workspace(dims(l, max_batch)));
  }
  ws_buf_ = Buffer<T>(be_, ws_size_ ? ws_size_ : 1);
  gbuf_[0] = Buffer<T>(be_, max_act_ * max_batch);
  gbuf_[1] = Buffer<T>(be_, max_act_ * max_batch);
  finalized_ = true;
  // running_var starts at 1 (PyTorch's reset_running_stats)
  std::vector<T> st(stats_.total, T(0));
  for (auto& l : layers_)
    if (l.kind == LayerKind::BatchNorm)
      for (int c = 0; c < l.C_out; c++) st[l.running_var + c] = T(1);
  set_stats(st);
}

template <class T>
size_t Net<T>::out_size() const {
  const auto& l = layers_.back();
  return (size_t)l.C_out * l.H_out * l.W_out;
}

template <class T>
uint64_t Net<T>::layout_hash() const {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  for (const Layout* lay : {&params_, &stats_})
    for (auto& t : lay->tensors) {
      mix(t.name);
      // ":" and the digits mixed apart: the same bytes as ":" + digits, without
      // GCC 12's false -Wrestrict on a literal + a temporary string.
      for (auto s : t.shape) {
        mix(":");
        mix(std::to_string(s));
      }
      mix(";");
    }
  return h;
}

template <class T>
const T* Net<T>::forward(const T* input, int B, Mode mode, bool update_running) {
  if (!finalized_) throw std::logic_error(name_ + ": forward before finalize()");
  if (B <= 0 || B > max_batch_)
    throw std::invalid_argument(name_ + ": batch of " + std::to_string(B) +
                                " images; this net was sized for 1.." +
                                std::to_string(max_batch_));
  if (mode == Mode::Train && B == 1) {
    // PyTorch refuses BN training on one value per channel (no variance).
    for (auto& l : layers_)
      if (l.kind == LayerKind::BatchNorm && (size_t)l.H_in * l.W_in == 1)
        throw std::invalid_argument(name_ + ": batch norm in training mode needs more than one "
                                            "value per channel; use a batch of 2 or more");
  }
  input_ = input;
  batch_ = B;
  mode_ = mode;
  T* P = params();
  const T* x = input;
  for (size_t i = 0; i < layers_.size(); i++) {
    const auto& l = layers_[i];
    T* y = out_[i];
    const size_t n = (size_t)B * l.C_out * l.H_out * l.W_out;
    const int HW = l.H_out * l.W_out;
    switch (l.kind) {
      case LayerKind::Conv:
        be_.conv2d_forward(y, x, P + l.weight, dims(l, B), ws_buf_.data(), ws_size_);
        break;
      case LayerKind::ConvTranspose:
        be_.conv_transpose2d_forward(y, x, P + l.weight, dims(l, B), ws_buf_.data(), ws_size_);
        break;
      case LayerKind::BatchNorm: {
        // A fused activation writes its (in-place) output here, into the same buffer.
        const BnAct act = fused_act(i);
        if (mode == Mode::Train) {
          T* mean = cache_buf_.data() + l.stat_cache;
          T* var = mean + l.C_out;
          be_.batchnorm2d_forward_train(y, mean, var, x, P + l.weight, P + l.bias, B, l.C_out, HW,
                                        bn_eps, act, leaky_slope);
          if (update_running)
            be_.batchnorm2d_update_running(stats() + l.running_mean, stats() + l.running_var,
                                           mean, var, l.C_out, (int64_t)B * HW, bn_momentum);
        } else {
          be_.batchnorm2d_forward_eval(y, x, P + l.weight, P + l.bias, stats() + l.running_mean,
                                       stats() + l.running_var, B, l.C_out, HW, bn_eps, act,
                                       leaky_slope);
        }
        break;
      }
      case LayerKind::ReLU:
        if (i == 0 || fused_act(i - 1) == BnAct::none) be_.relu_forward(y, x, n);
        break;
      case LayerKind::LeakyReLU:
        if (i == 0 || fused_act(i - 1) == BnAct::none) be_.leaky_relu_forward(y, x, n, leaky_slope);
        break;
      case LayerKind::Tanh:
        be_.tanh_forward(y, x, n);
        break;
    }
    x = y;
  }
  if (mode == Mode::Train && update_running) num_batches_tracked++;
  return x;
}

template <class T>
void Net<T>::backward(const T* dout, T* dinput, bool param_grads) {
  if (!input_) throw std::logic_error(name_ + ": backward without a forward");
  if (mode_ != Mode::Train)
    throw std::logic_error(name_ + ": backward after an eval-mode forward is not supported");
  const int B = batch_;
  T* P = params();
  T* G = param_grads ? grads() : nullptr;
  const T* g = dout;  // gradient of the current layer's output
  int slot = 0;
  for (size_t i = layers_.size(); i-- > 0;) {
    const auto& l = layers_[i];
    const T* x = i > 0 ? out_[i - 1] : input_;
    const T* y = out_[i];
    const size_t n = (size_t)B * l.C_out * l.H_out * l.W_out;
    const int HW = l.H_out * l.W_out;
    // An activation fused into the BN before it: that BN's backward takes
    // the gradient of the activation's output as it is.
    if (i > 0 && fused_act(i - 1) != BnAct::none) continue;
    // The first layer writes straight into dinput (or skips its input
    // gradient when nobody wants it); the others write the next ping-pong buffer.
    T* dx;
    if (i == 0) {
      dx = dinput;
    } else {
      const bool in_place = l.kind == LayerKind::ReLU || l.kind == LayerKind::LeakyReLU ||
                            l.kind == LayerKind::Tanh;
      // In place when the incoming gradient is our own scratch; never write into dout.
      if (in_place && g != dout) {
        dx = const_cast<T*>(g);
      } else {
        dx = gbuf_[slot].data();
        slot ^= 1;
      }
    }
    switch (l.kind) {
      case LayerKind::Conv:
        be_.conv2d_backward(dx, G ? G + l.weight : nullptr, g, x, P + l.weight, dims(l, B),
                            ws_buf_.data(), ws_size_);
        break;
      case LayerKind::ConvTranspose:
        be_.conv_transpose2d_backward(dx, G ? G + l.weight : nullptr, g, x, P + l.weight,
                                      dims(l, B), ws_buf_.data(), ws_size_);
        break;
      case LayerKind::BatchNorm: {
        const T* mean = cache_buf_.data() + l.stat_cache;
        // With a fused activation, g is the gradient of its output, out_[i + 1] (== y).
        const BnAct act = fused_act(i);
        if (dx)
          be_.batchnorm2d_backward(dx, G ? G + l.weight : nullptr, G ? G + l.bias : nullptr, g, x,
                                   P + l.weight, mean, mean + l.C_out, B, l.C_out, HW, bn_eps, act,
                                   leaky_slope, act == BnAct::none ? nullptr : out_[i + 1]);
        else if (G)
          throw std::logic_error(name_ + ": a net may not start with batch norm");
        break;
      }
      case LayerKind::ReLU:
        if (dx) be_.relu_backward(dx, g, y, n);
        break;
      case LayerKind::LeakyReLU:
        if (dx) be_.leaky_relu_backward(dx, g, y, n, leaky_slope);
        break;
      case LayerKind::Tanh:
        if (dx) be_.tanh_backward(dx, g, y, n);
        break;
    }
    g = dx;
  }
}

template <class T>
BnAct Net<T>::fused_act(size_t i) const {
  if (!fuse_bn_act || layers_[i].kind != LayerKind::BatchNorm || i + 1 >= layers_.size())
    return BnAct::none;
  // Activations run in place on BN's output (finalize), which the fused kernel writes.
  if (out_[i + 1] != out_[i]) return BnAct::none;
  switch (layers_[i + 1].kind) {
    case LayerKind::ReLU: return BnAct::relu;
    case LayerKind::LeakyReLU: return leaky_slope > T(0) ? BnAct::leaky_relu : BnAct::none;
    default: return BnAct::none;
  }
}

template <class T>
void Net<T>::zero_grads() {
  be_.zero(grads(), num_params());
}

template <class T>
void Net<T>::init_dcgan(uint64_t seed) {
  Rng rng(seed);
  std::vector<T> p(num_params(), T(0));
  for (auto& l : layers_) {
    if (l.kind == LayerKind::Conv || l.kind == LayerKind::ConvTranspose) {
      const size_t n = (size_t)l.C_in * l.C_out * l.K * l.K;
      rng.fill_normal(p.data() + l.weight, n, 0.0, 0.02);
    } else if (l.kind == LayerKind::BatchNorm) {
      rng.fill_normal(p.data() + l.weight, l.C_out, 1.0, 0.02);
    }
  }
  set_params(p);
  std::vector<T> st(num_stats(), T(0));
  for (auto& l : layers_)
    if (l.kind == LayerKind::BatchNorm)
      for (int c = 0; c < l.C_out; c++) st[l.running_var + c] = T(1);
  set_stats(st);
  num_batches_tracked = 0;
  zero_grads();
}

template <class T>
std::vector<T> Net<T>::get_params() const {
  std::vector<T> v(num_params());
  be_.download(v.data(), params(), v.size());
  return v;
}
template <class T>
std::vector<T> Net<T>::get_grads() const {
  std::vector<T> v(num_params());
  be_.download(v.data(), grads(), v.size());
  return v;
}
template <class T>
std::vector<T> Net<T>::get_stats() const {
  std::vector<T> v(num_stats());
  be_.download(v.data(), stats(), v.size());
  return v;
}
template <class T>
void Net<T>::set_params(std::span<const T> v) {
  if (v.size() != num_params())
    throw std::invalid_argument(name_ + ": parameter buffer of " + std::to_string(v.size()) +
                                " elements, expected " + std::to_string(num_params()));
  be_.upload(params(), v.data(), v.size());
}
template <class T>
void Net<T>::set_stats(std::span<const T> v) {
  if (v.size() != num_stats())
    throw std::invalid_argument(name_ + ": statistics buffer of " + std::to_string(v.size()) +
                                " elements, expected " + std::to_string(num_stats()));
  be_.upload(stats(), v.data(), v.size());
}

template class Net<float>;
template class Net<double>;

}  // namespace gannf
