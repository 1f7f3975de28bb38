// A sequential network of the DCGAN's layer set over flat buffers.
//
// Parameters live in ONE contiguous buffer, their gradients in a second of the
// same layout, BN running statistics in a third; tensors are offsets into them
// taken from a size table (see layout()). Names and shapes are those of the
// reference PyTorch model's state_dict (`main.0.weight`, `main.1.running_mean`,
// ...), so checkpoints interoperate with PyTorch.
#pragma once
#include <cstdint>
#include <string>
#include <span>
#include <vector>

#include "backend.h"

namespace gannf {

// One named tensor inside a flat buffer.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;  // in elements
  size_t numel() const {
    size_t n = 1;
    for (auto s : shape) n *= (size_t)s;
    return n;
  }
};

// The ordered tensors of one flat buffer.
struct Layout {
  std::vector<TensorSpec> tensors;
  size_t total = 0;
  const TensorSpec* find(const std::string& name) const;
  void add(const std::string& name, std::vector<int64_t> shape);
};

enum class LayerKind { Conv, ConvTranspose, BatchNorm, ReLU, LeakyReLU, Tanh };

// One layer of the sequence. Geometry is per image; the batch comes at run time.
struct LayerSpec {
  LayerKind kind;
  int index;                 // position in the PyTorch nn.Sequential (`main.<index>`)
  int C_in, H_in, W_in;      // input shape
  int C_out, H_out, W_out;   // output shape
  int K = 0, stride = 1, pad = 0;
  size_t weight = 0, bias = 0;            // offsets into the parameter buffer
  size_t running_mean = 0, running_var = 0;  // offsets into the stats buffer
  size_t stat_cache = 0;     // offset of (mean, var) in the per-forward cache
};

enum class Mode { Train, Eval };

template <class T>
class Net {
 public:
  // Layers are added by the builders in dcgan.h; then finalize() sizes every
  // buffer for batches of up to max_batch.
  Net(Backend<T>& be, std::string name);
  void add_conv(int index, int C_out, int K, int stride, int pad, bool transposed);
  void add_batchnorm(int index);
  void add_activation(int index, LayerKind kind);
  void finalize(int C_in, int H_in, int W_in, int max_batch);

  const std::string& name() const { return name_; }
  const Layout& params_layout() const { return params_; }
  const Layout& stats_layout() const { return stats_; }
  const std::vector<LayerSpec>& layers() const { return layers_; }
  // FNV-1a over the names and shapes of parameters and statistics: identifies
  // an architecture across machines and checkpoints.
  uint64_t layout_hash() const;
  int max_batch() const { return max_batch_; }
  size_t in_size() const { return (size_t)c_in_ * h_in_ * w_in_; }    // per image
  size_t out_size() const;                                              // per image

  T* params() { return params_buf_.data(); }
  T* grads() { return grads_buf_.data(); }
  T* stats() { return stats_buf_.data(); }
  const T* params() const { return params_buf_.data(); }
  const T* grads() const { return grads_buf_.data(); }
  const T* stats() const { return stats_buf_.data(); }
  size_t num_params() const { return params_.total; }
  size_t num_stats() const { return stats_.total; }
  int64_t num_batches_tracked = 0;

  // BN hyper-parameters (PyTorch's defaults).
  T bn_eps = T(1e-5);
  T bn_momentum = T(0.1);
  T leaky_slope = T(0.2);
  // A ReLU / LeakyReLU right after batch norm runs inside BN's kernels (one
  // pass over the tensor fewer each way; bit for bit the same results). Off:
  // the two ops one after the other (tests compare the two).
  bool fuse_bn_act = true;

  // Forward over B <= max_batch images at `input` (back-end memory; the net
  // keeps the pointer for backward, so it must stay valid until then). In Train
  // mode BN uses batch statistics and, when update_running, folds them into the
  // running statistics (and counts num_batches_tracked). Returns the output
  // (back-end memory owned by the net, valid until the next forward).
  const T* forward(const T* input, int B, Mode mode, bool update_running = true);
  // Backward of the last forward. dout: gradient of the output (B, out).
  // Parameter gradients accumulate into grads() when param_grads; dinput, if
  // not null, receives the input's gradient (overwritten).
  void backward(const T* dout, T* dinput, bool param_grads);
  // Output of layer i in the last forward (back-end memory, B x C_out x H_out
  // x W_out). An in-place activation shares its input's buffer, so the output
  // of a layer followed by one is overwritten by it.
  const T* layer_output(size_t i) const { return out_[i]; }
  int last_batch() const { return batch_; }
  // BN batch statistics (mean, biased var per BN layer, in layer order) of the
  // last Train forward: stat_cache_size() elements.
  const T* batch_stats() const { return cache_buf_.data(); }
  size_t stat_cache_size() const { return cache_size_; }

  void zero_grads();
  // DCGAN initialisation: conv weights N(0, 0.02), BN weight N(1, 0.02), BN
  // bias 0, running mean 0, running var 1.
  void init_dcgan(uint64_t seed);

  // Host copies of the flat buffers.
  std::vector<T> get_params() const;
  std::vector<T> get_grads() const;
  std::vector<T> get_stats() const;
  void set_params(std::span<const T> v);
  void set_stats(std::span<const T> v);

  Backend<T>& backend() { return be_; }

 private:
  // The activation fused into the BN layer at i (BnAct::none: none follows,
  // or fusion is off).
  BnAct fused_act(size_t i) const;
  Backend<T>& be_;
  std::string name_;
  std::vector<LayerSpec> layers_;
  Layout params_, stats_;
  int c_in_ = 0, h_in_ = 0, w_in_ = 0, max_batch_ = 0;
  bool finalized_ = false;
  size_t cache_size_ = 0;
  size_t max_act_ = 0, ws_size_ = 0;
  Buffer<T> params_buf_, grads_buf_, stats_buf_, cache_buf_, ws_buf_;
  std::vector<Buffer<T>> acts_;   // per layer output; in-place activations alias
  std::vector<T*> out_;           // per layer output pointer
  Buffer<T> gbuf_[2];             // ping-pong activation gradients
  const T* input_ = nullptr;
  int batch_ = 0;
  Mode mode_ = Mode::Train;
  ConvDims dims(const LayerSpec& l, int B) const;
};

}  // namespace gannf
