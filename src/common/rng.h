// A small, portable, serialisable RNG: xoshiro256** seeded through splitmix64,
// with Box-Muller normals. std::normal_distribution is implementation-defined,
// so the same seed would give different weights on different standard
// libraries; this one gives the same numbers on every machine of a class.
#pragma once
#include <cmath>
#include <cstdint>
#include <array>

namespace gannf {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed) {
    uint64_t x = seed;
    for (auto& w : s_) w = splitmix(x);
    has_spare_ = false;
    spare_ = 0;
  }
  uint64_t next_u64() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  // uniform in [0, 1) with 53 random bits
  double uniform() { return (double)(next_u64() >> 11) * 0x1.0p-53; }
  // uniform integer in [0, n), unbiased (Lemire's rejection)
  uint64_t below(uint64_t n) {
    if (n <= 1) return 0;
    const uint64_t limit = (0 - n) % n;
    for (;;) {
      const uint64_t r = next_u64();
      const unsigned __int128 m = (unsigned __int128)r * n;
      if ((uint64_t)m >= limit) return (uint64_t)(m >> 64);
    }
  }
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1;
    do u1 = uniform(); while (u1 <= 0.0);
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1)), th = 6.283185307179586476925 * u2;
    spare_ = r * std::sin(th);
    has_spare_ = true;
    return r * std::cos(th);
  }
  template <class T>
  void fill_normal(T* x, size_t n, double mean = 0.0, double std = 1.0) {
    for (size_t i = 0; i < n; i++) x[i] = (T)(mean + std * normal());
  }

  // State for checkpoints: 4 words, the cached normal, and its flag.
  struct State {
    std::array<uint64_t, 4> s;
    double spare;
    uint64_t has_spare;
  };
  State state() const { return {s_, spare_, has_spare_ ? 1u : 0u}; }
  void set_state(const State& st) {
    s_ = st.s;
    spare_ = st.spare;
    has_spare_ = st.has_spare != 0;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t splitmix(uint64_t& x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::array<uint64_t, 4> s_{};
  double spare_ = 0;
  bool has_spare_ = false;
};

// The noise vector z of one training sample: a pure function of (seed, epoch,
// the sample's position in the epoch's permutation). Local training and every
// worker of a cluster draw the same z for the same sample, whoever computes it,
// which is what lets K work units equal one local step.
template <class T>
void sample_noise(T* z, int nz, uint64_t seed, uint64_t epoch, uint64_t position) {
  uint64_t k = seed * 0x9E3779B97F4A7C15ull ^ (epoch + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull;
  k ^= (position + 1) * 0x94D049BB133111EBull;
  Rng r(k);
  r.fill_normal(z, (size_t)nz);
}

}  // namespace gannf
