// A back end that records the BN batch statistics of every training forward.
//
// A worker must send the coordinator exactly the (mean, biased variance) that
// a local step would fold into the running statistics: G's of its one forward
// per micro-batch, D's of the real pass and then of the fake pass. GanStep
// runs all three forwards inside accumulate(), and each overwrites the net's
// batch-statistics cache, so the worker cannot read them afterwards. Every
// one of them, however, goes through Backend::batchnorm2d_update_running() in
// order, once per BN layer; this decorator copies its arguments on the way
// through (2·C floats per layer: nothing next to a forward pass) and forwards
// everything else untouched (ForwardingBackend), so the numbers are the very
// ones local training uses. The copies go to a staging buffer on the device
// and come to the host in one download when they are asked for: copying each
// layer's statistics to the host as it passed made a GPU worker wait for the
// GPU twice per BN layer per forward (20 times a micro-batch at 64x64).
#pragma once
#include <algorithm>
#include <memory>
#include <vector>

#include "forwarding_backend.h"

namespace gannf {

template <class T>
class RecordingBackend final : public ForwardingBackend<T> {
 public:
  explicit RecordingBackend(std::unique_ptr<Backend<T>> inner)
      : ForwardingBackend<T>(std::move(inner)) {}

  // One update_running call: which running_mean it updated, and where its
  // (mean[C], var[C]) sit in values().
  struct Call {
    const T* running_mean;
    int C;
    int64_t n;
    size_t offset;
  };
  void clear() {
    calls_.clear();
    used_ = 0;
    fetched_ = false;
  }
  const std::vector<Call>& calls() const { return calls_; }
  // The (mean, var) pairs of the calls that updated running statistics inside
  // [stats, stats + n), in call order: for a net's forwards, one copy of its
  // running-stats layout per forward (running_mean, running_var per BN layer).
  std::vector<T> stats_of(const T* stats, size_t n) {
    if (!fetched_) {  // everything recorded since clear(), in one download
      host_.resize(used_);
      if (used_) this->inner().download(host_.data(), staging_.data(), used_);
      fetched_ = true;
    }
    std::vector<T> out;
    for (const Call& c : calls_)
      if (c.running_mean >= stats && c.running_mean < stats + n)
        out.insert(out.end(), host_.begin() + c.offset, host_.begin() + c.offset + 2 * c.C);
    return out;
  }
  void batchnorm2d_update_running(T* rm, T* rv, const T* mean, const T* var, int C, int64_t n,
                                  T momentum) override {
    const size_t off = used_;
    reserve(off + 2 * (size_t)C);
    this->inner().copy(staging_.data() + off, mean, (size_t)C);
    this->inner().copy(staging_.data() + off + C, var, (size_t)C);
    used_ += 2 * (size_t)C;
    fetched_ = false;
    calls_.push_back({rm, C, n, off});
    this->inner().batchnorm2d_update_running(rm, rv, mean, var, C, n, momentum);
  }

 private:
  // Room for `need` values; what is staged so far moves along (on the device).
  void reserve(size_t need) {
    if (staging_.size() >= need) return;
    Buffer<T> bigger(this->inner(), std::max({need, 2 * staging_.size(), (size_t)1 << 14}));
    if (used_) this->inner().copy(bigger.data(), staging_.data(), used_);
    staging_ = std::move(bigger);
  }
  std::vector<Call> calls_;
  Buffer<T> staging_;  // on the inner back end's device; kept across clear()
  size_t used_ = 0;
  std::vector<T> host_;
  bool fetched_ = false;
};

}  // namespace gannf
