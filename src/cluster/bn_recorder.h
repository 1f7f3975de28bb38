// A back end that records the BN batch statistics of every training forward.
//
// A worker must send the coordinator exactly the (mean, biased variance) that
// a local step would fold into the running statistics: G's of its one forward
// per micro-batch, D's of the real pass and then of the fake pass. GanStep
// runs all three forwards inside accumulate(), and each overwrites the net's
// batch-statistics cache, so the worker cannot read them afterwards. Every
// one of them, however, goes through Backend::batchnorm2d_update_running() in
// order, once per BN layer; this decorator copies its arguments to the host
// on the way through (2·C floats per layer: nothing next to a forward pass)
// and forwards everything else untouched (ForwardingBackend), so the numbers
// are the very ones local training uses.
#pragma once
#include <memory>
#include <vector>

#include "forwarding_backend.h"

namespace gannf::cluster {

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
    values_.clear();
  }
  const std::vector<Call>& calls() const { return calls_; }
  // The (mean, var) pairs of the calls that updated running statistics inside
  // [stats, stats + n), in call order: for a net's forwards, one copy of its
  // running-stats layout per forward (running_mean, running_var per BN layer).
  std::vector<T> stats_of(const T* stats, size_t n) const {
    std::vector<T> out;
    for (const Call& c : calls_)
      if (c.running_mean >= stats && c.running_mean < stats + n)
        out.insert(out.end(), values_.begin() + c.offset, values_.begin() + c.offset + 2 * c.C);
    return out;
  }
  void batchnorm2d_update_running(T* rm, T* rv, const T* mean, const T* var, int C, int64_t n,
                                  T momentum) override {
    const size_t off = values_.size();
    values_.resize(off + 2 * (size_t)C);
    this->inner().download(values_.data() + off, mean, (size_t)C);
    this->inner().download(values_.data() + off + C, var, (size_t)C);
    calls_.push_back({rm, C, n, off});
    this->inner().batchnorm2d_update_running(rm, rv, mean, var, C, n, momentum);
  }

 private:
  std::vector<Call> calls_;
  std::vector<T> values_;
};

}  // namespace gannf::cluster
