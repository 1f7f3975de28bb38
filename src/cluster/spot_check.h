// Spot checks (issue 12, item 3): the coordinator recomputes a fraction of
// the submitted units itself — the run's dataset, the unit's images and
// noise, the worker's micro-batch split, the same step code as the worker
// (step_micro_batch below, which gannf-worker runs too) — and compares the
// gradients. Determinism makes it cheap: an honest unit differs from the
// recomputation only by the back end's rounding.
//
// Tolerance, relative L2 distance per network (spot_check_tolerance below):
// 5e-2 for the CPU and CUDA FP32 back ends -- two honest machines' units at
// the class's size are up to 7.8e-3 apart (bench_spot_check, docs/security.md
// "A false positive: the FP32 tolerance at the class's size") -- 0.1 for TF32
// and 0.3 for BF16. A sign flip is 2 away, noise of the same norm 1.4, zeros
// 1, "a little is enough" with z = 1.5 also 1.5.
//
// Kinks: a ReLU / LeakyReLU input within rounding of zero may fall on either
// side on two machines (another summation order: a GPU, another CPU's BLAS
// kernels), and its derivative then differs. One such activation moved an
// honest unit's whole G gradient by up to 2.4% at the tests' small net
// (docs/security.md, "Kinks"), and a failed spot check quarantines at once.
// So SpotChecker::check() gives a failed comparison a second opinion: the
// activations nearest their kink in the recomputation put on their other
// side, each in turn and up to three at once.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataset.h"
#include "dcgan.h"
#include "run_settings.h"

namespace gannf::cluster {

struct MicroBatchBuffers {
  std::vector<float> real, noise;  // (max_batch, C, S, S), (max_batch, nz)
  std::vector<uint64_t> idx;
};

// One micro-batch of a unit: images perm[first + 0 .. n) of the epoch, each
// sample's noise from (seed, epoch, position) — what a local step draws for
// the same image — accumulated into gan's gradients with scale 1/unit_size.
StepStats step_micro_batch(GanStep<float>& gan, const data::Dataset& ds, std::span<const uint32_t> perm,
                           const RunSettings& s, int epoch, int64_t first, int n, int unit_size,
                           MicroBatchBuffers& buf);

// The coordinator's own time per image of a unit on its CPU back end: one
// micro-batch of min(64, the run's unit images) random images through a
// whole GAN step (G and D, forward and backward) at G's and D's weights,
// the faster of two passes (the first allocates). A run's first update has
// no pace of the class's machines yet; sql/0031 judges its units by this one
// (gannf-coord run measures it at its start).
double cpu_seconds_per_image(const RunSettings& s, const Net<float>& G, const Net<float>& D);

// Whether submission `id` is checked: a hash of (seed, id) against fraction,
// so that a worker cannot tell which of its units will be.
bool chosen_for_spot_check(uint64_t seed, int64_t id, double fraction);

// Relative L2 a spot-checked gradient may be from the coordinator's FP32
// recomputation: 5e-2 for cpu and cuda (FP32; measured:
// SpotCheck.HonestUnitsAtTheClassSizePassWhateverTheThreadCounts), 0.1 for
// cuda-tf32 and other back ends, 0.3 for cuda-bf16 (measured:
// SpotCheck.TensorCoreTolerancesCoverAnHonestStep).
double spot_check_tolerance(std::string_view backend);

// The distance past which a failed spot check is certain to be no rounding
// of `backend`, and quarantines at once; a failure nearer is refused with a
// forgivable strike (sql/0024), as an honest machine can earn. The exact
// FP32 back ends (cpu, cuda): their tolerance itself, every failure is
// certain -- 6x their largest honest distance, which kinks aside does not
// vary. The tensor-core math (cuda-tf32, cuda-bf16, other names): three
// times the tolerance, at most 0.8 -- its distance is a cascade of operands
// straddling rounding boundaries, with a tail: an honest emulated cuda-tf32
// unit was 0.171 from the recomputation in a real run (tolerance 0.1;
// docs/security.md, "A false positive: a TF32 tail"). Every attack of
// docs/security.md's table is 1 or more away.
double spot_check_certain(std::string_view backend);

// Relative L2 distance of a from the reference b (absolute where b is 0).
double relative_l2(const std::vector<float>& a, const std::vector<float>& b);

// Relative L2 distance of each network's submitted gradient from the
// recomputed one, refused beyond `tolerance`.
std::optional<std::string> compare_recomputed(const std::vector<float> submitted[2], const std::vector<float> recomputed[2],
                                              double tolerance);

// The output of a ReLU (act relu) or LeakyReLU (leaky_relu, slope) whose
// input x is put on the other side of its kink, as small: -x's output, and
// for x exactly 0 (the negative side: the forward's v > 0 and the
// backward's out > 0 decide) the smallest positive float, derivative 1.
float kink_other_side(float x, BnAct act, float slope);

// The coordinator's recomputation: its own networks on the CPU back end.
class SpotChecker {
 public:
  // Opens the dataset (`dataset`, or the run's path when empty); throws
  // std::runtime_error when it is not the run's. `backend` runs recompute():
  // the coordinator's is "cpu"; bench_spot_check computes a GPU worker's
  // units with "cuda" and the others (make_backend's names). check()'s first
  // comparison is against recompute(); its second opinion runs on the CPU.
  SpotChecker(const RunSettings& s, const std::string& dataset, const std::string& backend = "cpu");
  ~SpotChecker();
  // The unit's G and D gradients against the weights and BN statistics of
  // G and D (the master networks of the current iteration).
  void recompute(const Net<float>& G, const Net<float>& D, int epoch, int64_t first_index, int sample_count,
                 int micro_batch, std::vector<float> out[2]);
  // A summed submission's (sql/0017): the units in the order given, into one
  // buffer with scale 1/(their images), as the worker computes it.
  struct Unit {
    int epoch = 0;
    int64_t first_index = 0;
    int sample_count = 0, micro_batch = 0;
  };
  void recompute(const Net<float>& G, const Net<float>& D, std::span<const Unit> units, std::vector<float> out[2]);

  // The spot check itself: `submitted` (a worker's G and D gradients of
  // `units`) against the recomputation, within `tolerance`
  // (compare_recomputed). A failure gets the second opinion above: the
  // recomputation again with the kKinkCandidates activations nearest their
  // kink (|input| below kKinkBand x the rms of its layer's inputs in that
  // pass) on their other side -- each in turn; then, greedily, the one that
  // brought the recomputation nearest the submission kept there and each of
  // the others tried beside it, up to kKinkFlips at once; then every pair
  // of candidates the greedy rounds did not try. The submission passes if
  // one such set brings it within `tolerance`. Then *note (when given) says
  // which, for the coordinator's log. Returns the first comparison's reason
  // when none does. At most 2 + 8 + 7 + 6 + 21 = 44 recomputations, and
  // only for a submission that failed the first (a hostile login pays them
  // once: it is quarantined).
  static constexpr int kKinkCandidates = 8;
  static constexpr int kKinkFlips = 3;  // at most this many candidates on their other side at once
  static constexpr double kKinkBand = 1e-2;
  // *distance (when given): the first comparison's, the larger of G's and D's.
  std::optional<std::string> check(const Net<float>& G, const Net<float>& D, std::span<const Unit> units,
                                   const std::vector<float> submitted[2], double tolerance, std::string* note = nullptr,
                                   double* distance = nullptr);

 private:
  class KinkProbe;
  // The networks on be_ (recompute) or on the probe (check's second opinion).
  struct Nets {
    std::unique_ptr<Net<float>> G, D;
    std::unique_ptr<GanStep<float>> gan;
    int max_batch = 0;
  };
  void run_units(Nets& n, Backend<float>& be, const Net<float>& G, const Net<float>& D, std::span<const Unit> units,
                 std::vector<float> out[2]);
  RunSettings s_;
  std::unique_ptr<data::Dataset> ds_;
  std::unique_ptr<Backend<float>> be_;
  int64_t perm_epoch_ = -1;
  std::vector<uint32_t> perm_;
  std::unique_ptr<KinkProbe> probe_;  // before the nets that live on it (destroyed after them)
  Nets nets_, probe_nets_;
  MicroBatchBuffers buf_;
};

}  // namespace gannf::cluster
