#include "protocol.h"

#include <algorithm>

#include <cstdio>
#include <stdexcept>
#include <string>

#include "blob.h"
#include "weights_delta.h"
#include "worker_sql.h"

namespace gannf::cluster {

const char* to_string(SubmitStatus s) {
  switch (s) {
    case SubmitStatus::Accepted: return "accepted";
    case SubmitStatus::Duplicate: return "duplicate";
    case SubmitStatus::NotHeld: return "not_held";
    case SubmitStatus::IterationClosed: return "iteration_closed";
  }
  return "?";
}

int64_t register_worker(pg::Connection& c, const WorkerInfo& info) {
  pg::Params p;
  p.add(info.name).add(info.backend).add(info.cpu_cores).add(info.ram_bytes).add(info.gpu_name)
      .add(info.gpu_memory_bytes).add(info.batch_size);
  return c.exec(worker_sql::kRegister, p).get<int64_t>(0, 0);
}

void heartbeat(pg::Connection& c, int64_t worker) {
  pg::Params p;
  p.add(worker);
  c.exec(worker_sql::kHeartbeat, p);
}

std::optional<pg::TimePoint> heartbeat(pg::Connection& c, int64_t worker, const ClaimedUnit& unit) {
  pg::Params p;
  p.add(worker).add(unit.unit_id).add(unit.attempt);
  return c.exec(worker_sql::kHeartbeatUnit, p).opt<pg::TimePoint>(0, 0);
}

std::vector<ClaimedUnit> claim(pg::Connection& c, int64_t worker, int32_t max_units) {
  pg::Params p;
  p.add(worker).add(max_units);
  pg::Result r = c.exec(worker_sql::kClaim, p);
  std::vector<ClaimedUnit> out(r.rows());
  for (int i = 0; i < r.rows(); ++i) {
    out[i].unit_id = r.get<int64_t>(i, 0);
    out[i].attempt = r.get<int32_t>(i, 1);
    out[i].iteration = r.get<int64_t>(i, 2);
    out[i].epoch = r.get<int32_t>(i, 3);
    out[i].first_index = r.get<int64_t>(i, 4);
    out[i].sample_count = r.get<int32_t>(i, 5);
    out[i].lease_until = r.get<pg::TimePoint>(i, 6);
  }
  return out;
}

namespace {

// A gradient on the wire: float32 as a view (no copy), a compact format
// encoded here, in the upload thread, so that it overlaps the next unit.
struct WireGrad {
  std::optional<EncodedBlob> f32;
  std::vector<std::byte> compact;
  std::span<const std::byte> bytes() const { return f32 ? f32->bytes() : std::span<const std::byte>(compact); }
};

void encode_grad(BlobFormat f, const NetworkResult& n, WireGrad& out) {
  if (f == BlobFormat::F32)
    out.f32.emplace(n.grad);
  else
    out.compact = encode_blob(f, n.grad, n.segments);
}

void add_network(pg::Params& p, const NetworkResult& n, const WireGrad& grad, const EncodedBlob& bn) {
  p.add((int64_t)n.layout_hash)   // the same 64 bits, as bigint
      .add((int64_t)n.grad.size()).bytes(grad.bytes()).add((int64_t)crc32c(grad.bytes()))
      .add((int64_t)bn.element_count()).bytes(bn.bytes()).add((int64_t)bn.checksum());
}

// Runs a submit call and turns the refusals a correct worker meets into
// its SubmitStatus.
SubmitOutcome submit_call(pg::Connection& c, const std::string& sql, const pg::Params& p) {
  SubmitOutcome out;
  try {
    pg::Result r = c.exec(sql, p);
    const std::string s = r.get<std::string>(0, 0);
    if (s != "accepted") throw pg::Error("gannf.submit returned an unknown status \"" + s + "\"");
    out.status = SubmitStatus::Accepted;
    out.submission_id = r.get<int64_t>(0, 1);
  } catch (const pg::Error& e) {
    if (e.sqlstate() == sqlstate::kIterationClosed) {
      out.status = SubmitStatus::IterationClosed;
    } else if (e.sqlstate() == sqlstate::kNotHeld) {
      out.status = SubmitStatus::NotHeld;
    } else if (e.sqlstate() == sqlstate::kDuplicate) {
      out.status = SubmitStatus::Duplicate;
      const std::string& d = e.detail();  // "submission <id>"
      const size_t at = d.find_first_of("0123456789");
      if (at == std::string::npos) throw;
      out.submission_id = std::stoll(d.substr(at));
    } else {
      throw;
    }
  }
  return out;
}

}  // namespace

SubmitOutcome submit(pg::Connection& c, int64_t worker, const ClaimedUnit& unit, const UnitResult& res) {
  WireGrad g_grad, d_grad;
  encode_grad(res.grad_format, res.g, g_grad);
  encode_grad(res.grad_format, res.d, d_grad);
  EncodedBlob g_bn(res.g.bn_stats), d_bn(res.d.bn_stats);
  pg::Params p;
  p.add(worker).add(unit.unit_id).add(unit.attempt).add(unit.iteration).add(res.sample_count);
  add_network(p, res.g, g_grad, g_bn);
  add_network(p, res.d, d_grad, d_bn);
  p.add(res.loss_d).add(res.loss_g).add(res.d_real).add(res.d_fake).add(res.d_accuracy)
      .add(res.compute_seconds).add(res.micro_batch);
  return submit_call(c, worker_sql::kSubmit, p);
}

SubmitOutcome submit_summed(pg::Connection& c, int64_t worker, std::span<const ClaimedUnit> units,
                            const UnitResult& res, std::span<const UnitLosses> losses) {
  if (units.empty() || losses.size() != units.size())
    throw std::invalid_argument("submit_summed: one UnitLosses per unit");
  // Arrays travel as their text form ("{1,2}"), cast in the statement.
  std::string ids = "{", attempts = "{", counts = "{", ls = "{";
  for (size_t i = 0; i < units.size(); ++i) {
    if (i) ids += ',', attempts += ',', counts += ',';
    ids += std::to_string(units[i].unit_id);
    attempts += std::to_string(units[i].attempt);
    counts += std::to_string(units[i].sample_count);
    for (float x : {losses[i].loss_d, losses[i].loss_g, losses[i].d_real, losses[i].d_fake, losses[i].d_accuracy}) {
      char b[32];
      std::snprintf(b, sizeof b, "%.9g", x);
      if (ls.size() > 1) ls += ',';
      ls += b;
    }
  }
  ids += "}", attempts += "}", counts += "}", ls += "}";
  WireGrad g_grad, d_grad;
  encode_grad(res.grad_format, res.g, g_grad);
  encode_grad(res.grad_format, res.d, d_grad);
  EncodedBlob g_bn(res.g.bn_stats), d_bn(res.d.bn_stats);
  pg::Params p;
  p.add(worker).add(ids).add(attempts).add(units[0].iteration).add(counts);
  add_network(p, res.g, g_grad, g_bn);
  add_network(p, res.d, d_grad, d_bn);
  p.add(ls).add(res.compute_seconds).add(res.micro_batch);
  return submit_call(c, worker_sql::kSubmitSummed, p);
}

bool release(pg::Connection& c, int64_t worker, const ClaimedUnit& unit) {
  pg::Params p;
  p.add(worker).add(unit.unit_id).add(unit.attempt);
  return c.exec(worker_sql::kRelease, p).get<bool>(0, 0);
}

void WeightsBase::keep(int64_t it, const PublishedWeights& w) {
  iteration = -1;
  for (int k = 0; k < 2; ++k) {
    const auto f = (k ? w.d : w.g).params.floats();
    params[k].assign(f.begin(), f.end());
  }
  iteration = it;
}

PublishedWeights fetch_weights(pg::Connection& c, int64_t iteration, const std::string& run_id,
                               const WeightsBase* base) {
  const bool with_base = base && base->iteration >= 0 && base->iteration < iteration;
  pg::Params p;
  p.add(iteration).add(run_id).add(with_base ? base->iteration : (int64_t)-1);
  pg::Result r = c.exec(worker_sql::kWeights, p);
  // A delta that did not rebuild the published weights: the whole download
  // again without a base (its bytes are the ones counted).
  auto in_full = [&] {
    PublishedWeights w = fetch_weights(c, iteration, run_id);
    w.delta_refetched = true;
    return w;
  };
  auto damaged = [&](const char* name) {
    return pg::Error(std::string("the weights of ") + name + " for iteration " + std::to_string(iteration) +
                     " arrived damaged (checksum)");
  };
  PublishedWeights out;
  out.rows = std::move(r);
  const pg::Result& rows = out.rows;
  for (int k = 0; k < 2; ++k) {
    const char* name = k ? "D" : "G";
    int row = -1;
    for (int i = 0; i < rows.rows(); ++i)
      if (rows.get<std::string>(i, 0) == name) row = i;
    if (row < 0)
      throw pg::Error(std::string("no published weights of ") + name + " for iteration " + std::to_string(iteration));
    auto stats = rows.bytes(row, 4);
    const uint32_t params_crc = (uint32_t)rows.get<int64_t>(row, 3);
    PublishedNetwork& n = k ? out.d : out.g;
    if (!rows.is_null(row, 7)) {
      // A delta from the base: rebuilt here, checked against the published
      // checksum; anything wrong means a full download (in_full).
      auto delta = rows.bytes(row, 7);
      const std::vector<float>& b = base->params[k];
      if ((int64_t)b.size() != rows.get<int64_t>(row, 8)) return in_full();
      std::vector<float> rebuilt(b.size());
      try {
        decode_weights_delta(b, delta, rebuilt);
      } catch (const std::invalid_argument&) {
        return in_full();
      }
      if (blob_checksum(rebuilt) != params_crc) return in_full();
      n.params = DecodedBlob(std::move(rebuilt));
      out.bytes += (int64_t)delta.size();
      ++out.deltas;
    } else {
      auto params = rows.bytes(row, 2);
      if (crc32c(params) != params_crc) throw damaged(name);
      n.params = DecodedBlob(params);
      out.bytes += (int64_t)params.size();
    }
    if (crc32c(stats) != (uint32_t)rows.get<int64_t>(row, 5)) throw damaged(name);
    n.layout_hash = (uint64_t)rows.get<int64_t>(row, 1);
    n.bn_running = DecodedBlob(stats);
    n.num_batches_tracked = rows.get<int64_t>(row, 6);
    out.bytes += (int64_t)stats.size();
  }
  return out;
}

int release_held(pg::Connection& c, int64_t worker) {
  pg::Params p;
  p.add(worker);
  return c.exec(worker_sql::kReleaseHeld, p).get<int32_t>(0, 0);
}

bool credentials_refused(const pg::Error& e) {
  if (e.sqlstate() == "28P01" || e.sqlstate() == "28000") return true;
  const std::string& m = e.message();
  auto has = [&](const char* w) { return m.find(w) != std::string::npos; };
  return has("password authentication failed") || has("authentication failed for user") ||
         has("no password supplied") || (has("role \"") && has("does not exist"));
}

int32_t report_timing(pg::Connection& c, int64_t worker, const UploadTiming& t) {
  pg::Params p;
  p.add(worker).add(t.units).add((float)t.compute_s).add((float)t.upload_s).add(t.upload_bytes)
      .add((float)t.download_s).add(t.download_bytes);
  const auto hint = c.exec(worker_sql::kReportTiming, p).opt<int32_t>(0, 0);
  return std::clamp(hint.value_or(1), 1, 64);
}

int parse_sum_units(const std::string& text) {
  if (text == "auto") return 0;
  size_t used = 0;
  int n = 0;
  try {
    n = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || n < 1 || n > 64)
    throw std::invalid_argument("--sum-units must be a number from 1 to 64, or auto, not '" + text + "'");
  return n;
}

}  // namespace gannf::cluster

namespace gannf::cluster::worker_sql {

std::vector<std::string> all() {
  std::vector<std::string> v = {kRegister,     kHeartbeat, kHeartbeatUnit, kClaim,     kSubmit,
                                kSubmitSummed, kRelease,   kReleaseHeld,   kReportTiming, kLeave,
                                kWeights,      kHasSchema, kTrainingState, kWhyTaken,  kWhyWaiting};
  for (const char* ch : {channel::kWork, channel::kWeights}) v.push_back(std::string("LISTEN \"") + ch + "\"");
  return v;
}

std::vector<std::string> data() { return {kSubmit, kSubmitSummed, kWeights}; }

}  // namespace gannf::cluster::worker_sql
