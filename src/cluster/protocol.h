// The worker side of the work-unit protocol: typed C++ calls of the SQL
// functions in sql/0002_worker_api.sql (which holds the rules; this file only
// marshals). Every call is one statement; the caller's login is its identity.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "blob.h"
#include "blob_codec.h"
#include "pg.h"

namespace gannf::cluster {

// LISTEN channels; the payload is the iteration.
namespace channel {
constexpr const char* kWork = "gannf_work";              // units became claimable
constexpr const char* kWeights = "gannf_weights";        // new weights were published
constexpr const char* kSubmission = "gannf_submission";  // a submission was accepted
}  // namespace channel

struct WorkerInfo {
  std::string name{};                     // unique per login; the hostname by default
  std::optional<std::string> backend{};   // "cpu", "cuda", "cuda-tf32", "cuda-bf16"
  std::optional<int32_t> cpu_cores{};
  std::optional<int64_t> ram_bytes{};
  std::optional<std::string> gpu_name{};
  std::optional<int64_t> gpu_memory_bytes{};
  std::optional<int32_t> batch_size{};
};

struct ClaimedUnit {
  int64_t unit_id = 0;
  int32_t attempt = 0;      // with unit_id, names this lease
  int64_t iteration = 0;    // the weights to compute against
  int32_t epoch = 0;
  int64_t first_index = 0;  // into the epoch's permutation
  int32_t sample_count = 0;
  pg::TimePoint lease_until;
};

// One network's contribution: the gradient buffer (its parameter layout)
// and the BN batch statistics of the unit's micro-batches.
struct NetworkResult {
  uint64_t layout_hash = 0;
  std::span<const float> grad;
  std::span<const float> bn_stats;
  // The parameter tensors' element counts, in order: F16S's scale segments
  // (tensor_sizes() of the net's params_layout()); unused by F32 and BF16.
  std::span<const size_t> segments{};
};

struct UnitResult {
  int32_t sample_count = 0;
  NetworkResult g, d;
  std::optional<float> loss_d, loss_g, d_real, d_fake, d_accuracy, compute_seconds;
  // Images per forward pass the unit was computed in (at most sample_count);
  // the coordinator needs it to fold BN statistics as local training does
  // (sql/0005). nullopt: the worker's registered batch_size stands in.
  std::optional<int32_t> micro_batch;
  // The run's gradient blob format (RunSettings::blob_format); submit()
  // encodes the gradients in it. BN statistics always travel as float32
  // (a few kB; the coordinator folds them exactly).
  BlobFormat grad_format = BlobFormat::F32;
};

// SQLSTATEs of the worker functions' refusals (sql/0008): submit() raises
// every outcome but 'accepted', so that a caller's open transaction keeps
// no lock; submit() below turns the three a correct worker meets back into
// a SubmitStatus.
namespace sqlstate {
constexpr const char* kQuarantined = "ZG001";     // claim/submit of a quarantined login
constexpr const char* kIterationClosed = "ZG002";
constexpr const char* kNotHeld = "ZG003";
constexpr const char* kDuplicate = "ZG004";       // detail: "submission <id>"
constexpr const char* kLimitReached = "ZG005";    // register_worker: the login's worker cap
constexpr const char* kBackendRefused = "ZG006";  // register_worker/claim: a back end the class does not accept (sql/0020)
}  // namespace sqlstate

enum class SubmitStatus { Accepted, Duplicate, NotHeld, IterationClosed };
const char* to_string(SubmitStatus s);

struct SubmitOutcome {
  SubmitStatus status = SubmitStatus::NotHeld;
  int64_t submission_id = 0;  // accepted or duplicate: the submission that stands
  // Accepted and Duplicate both mean the unit's result is in.
  bool stored() const { return status == SubmitStatus::Accepted || status == SubmitStatus::Duplicate; }
};

int64_t register_worker(pg::Connection& c, const WorkerInfo& info);
// Liveness only.
void heartbeat(pg::Connection& c, int64_t worker);
// Liveness, and extends the unit's lease: the new deadline, or nullopt when
// the unit is no longer ours (drop it).
std::optional<pg::TimePoint> heartbeat(pg::Connection& c, int64_t worker, const ClaimedUnit& unit);
std::vector<ClaimedUnit> claim(pg::Connection& c, int64_t worker, int32_t max_units = 1);

// What a worker measured for one accepted upload (sql/0018): its units and
// their compute seconds, the upload's seconds and bytes, its last weights
// download's seconds and bytes.
struct UploadTiming {
  int32_t units = 1;
  double compute_s = 0, upload_s = 0, download_s = 0;
  int64_t upload_bytes = 0, download_bytes = 0;
};
// gannf.report_timing(): returns the coordinator's units per claim for this
// worker, 1 to 64.
int32_t report_timing(pg::Connection& c, int64_t worker, const UploadTiming& t);

// A --sum-units value: "auto" gives 0 (the coordinator's units per claim,
// sql/0018), a whole number 1 to 64 itself; anything else throws
// std::invalid_argument with the one-line message a program prints.
int parse_sum_units(const std::string& text);
SubmitOutcome submit(pg::Connection& c, int64_t worker, const ClaimedUnit& unit, const UnitResult& result);
// Several units of one iteration as one summed submission (sql/0017):
// `units` in ascending unit id (the order they were summed in); `result`
// holds the one gradient per network (the mean over all their images), the
// BN statistics of all their forward passes in unit order, sample_count the
// units' total and micro_batch the worker's; `losses` one entry per unit.
struct UnitLosses {
  float loss_d = 0, loss_g = 0, d_real = 0, d_fake = 0, d_accuracy = 0;
};
SubmitOutcome submit_summed(pg::Connection& c, int64_t worker, std::span<const ClaimedUnit> units,
                            const UnitResult& result, std::span<const UnitLosses> losses);
bool release(pg::Connection& c, int64_t worker, const ClaimedUnit& unit);
// The published weights of one network (sql/0001 gannf.weights). The
// floats are views into the downloaded rows (no copy on little-endian hosts),
// or the parameters rebuilt from a delta, valid while the PublishedWeights lives.
struct PublishedNetwork {
  uint64_t layout_hash = 0;
  DecodedBlob params;       // the flat parameter buffer
  DecodedBlob bn_running;   // BN running statistics, the net's stats layout
  int64_t num_batches_tracked = 0;
};
struct PublishedWeights {
  pg::Result rows;          // owns the bytes the views point into
  PublishedNetwork g, d;
  int64_t bytes = 0;        // what came over the wire: parameters or their deltas, and BN statistics
  int deltas = 0;           // networks whose parameters came as a delta (0 to 2)
  bool delta_refetched = false;  // a delta did not rebuild the published weights: downloaded in full
};
// What a worker keeps of its last download: the base of the next download's
// delta (sql/0019).
struct WeightsBase {
  int64_t iteration = -1;        // -1: none
  std::vector<float> params[2];  // G, D
  // Keeps what `w` holds as the base (copies the parameters).
  void keep(int64_t it, const PublishedWeights& w);
};
// Downloads the weights of `iteration`, both networks in one statement, and
// checks their checksums. Throws pg::Error when they are not (or no longer)
// published or arrived damaged. The caller checks the layout hashes against
// the networks it builds. With `run_id`, only weights of that run (a
// lagging replica may still hold another run's rows of the same iteration).
// With a `base` of an earlier iteration, a network whose delta from that
// iteration is published comes as the delta and is rebuilt exactly (the
// published checksum is checked on the result); where that fails (another
// base, a damaged delta) the weights are downloaded again in full.
PublishedWeights fetch_weights(pg::Connection& c, int64_t iteration, const std::string& run_id = "",
                               const WeightsBase* base = nullptr);

// Hands back every unit this worker id still holds (sql/0005): for a worker
// process that starts, whose predecessor of the same name may have crashed
// holding units. Returns how many.
int release_held(pg::Connection& c, int64_t worker);

// Whether a failed connection was the server refusing the login (a wrong
// password, no password, an unknown role: SQLSTATE 28P01 / 28000), which no
// retry cures. libpq gives no SQLSTATE for a failed connection, so this reads
// its message, which the server sends in English whatever lc_messages says
// before authentication.
bool credentials_refused(const pg::Error& e);

}  // namespace gannf::cluster
