#include "protocol.h"

#include "blob.h"

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
  return c.exec("SELECT gannf.register_worker($1, $2, $3, $4, $5, $6, $7)", p).get<int64_t>(0, 0);
}

void heartbeat(pg::Connection& c, int64_t worker) {
  pg::Params p;
  p.add(worker);
  c.exec("SELECT gannf.heartbeat($1)", p);
}

std::optional<pg::TimePoint> heartbeat(pg::Connection& c, int64_t worker, const ClaimedUnit& unit) {
  pg::Params p;
  p.add(worker).add(unit.unit_id).add(unit.attempt);
  return c.exec("SELECT gannf.heartbeat($1, $2, $3)", p).opt<pg::TimePoint>(0, 0);
}

std::vector<ClaimedUnit> claim(pg::Connection& c, int64_t worker, int32_t max_units) {
  pg::Params p;
  p.add(worker).add(max_units);
  pg::Result r = c.exec(
      "SELECT unit_id, attempt, iteration, epoch, first_index, sample_count, lease_until "
      "FROM gannf.claim($1, $2)",
      p);
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

void add_network(pg::Params& p, const NetworkResult& n, const EncodedBlob& grad, const EncodedBlob& bn) {
  p.add((int64_t)n.layout_hash)   // the same 64 bits, as bigint
      .add((int64_t)grad.element_count()).bytes(grad.bytes()).add((int64_t)grad.checksum())
      .add((int64_t)bn.element_count()).bytes(bn.bytes()).add((int64_t)bn.checksum());
}

}  // namespace

SubmitOutcome submit(pg::Connection& c, int64_t worker, const ClaimedUnit& unit, const UnitResult& res) {
  EncodedBlob g_grad(res.g.grad), g_bn(res.g.bn_stats), d_grad(res.d.grad), d_bn(res.d.bn_stats);
  pg::Params p;
  p.add(worker).add(unit.unit_id).add(unit.attempt).add(unit.iteration).add(res.sample_count);
  add_network(p, res.g, g_grad, g_bn);
  add_network(p, res.d, d_grad, d_bn);
  p.add(res.loss_d).add(res.loss_g).add(res.d_real).add(res.d_fake).add(res.d_accuracy)
      .add(res.compute_seconds).add(res.micro_batch);
  pg::Result r = c.exec(
      "SELECT status, submission_id FROM gannf.submit($1, $2, $3, $4, $5, "
      "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, "
      "$20, $21, $22, $23, $24, $25, $26)",
      p);
  SubmitOutcome out;
  std::string s = r.get<std::string>(0, 0);
  if (s == "accepted") out.status = SubmitStatus::Accepted;
  else if (s == "duplicate") out.status = SubmitStatus::Duplicate;
  else if (s == "not_held") out.status = SubmitStatus::NotHeld;
  else if (s == "iteration_closed") out.status = SubmitStatus::IterationClosed;
  else throw pg::Error("gannf.submit returned an unknown status \"" + s + "\"");
  out.submission_id = r.opt<int64_t>(0, 1).value_or(0);
  return out;
}

bool release(pg::Connection& c, int64_t worker, const ClaimedUnit& unit) {
  pg::Params p;
  p.add(worker).add(unit.unit_id).add(unit.attempt);
  return c.exec("SELECT gannf.release($1, $2, $3)", p).get<bool>(0, 0);
}

PublishedWeights fetch_weights(pg::Connection& c, int64_t iteration) {
  pg::Params p;
  p.add(iteration);
  pg::Result r = c.exec(
      "SELECT network::text, layout_hash, params, params_checksum, bn_running, bn_checksum, num_batches_tracked "
      "FROM gannf.weights WHERE iteration = $1",
      p);
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
    auto params = rows.bytes(row, 2), stats = rows.bytes(row, 4);
    if (crc32c(params) != (uint32_t)rows.get<int64_t>(row, 3) || crc32c(stats) != (uint32_t)rows.get<int64_t>(row, 5))
      throw pg::Error(std::string("the weights of ") + name + " for iteration " + std::to_string(iteration) +
                      " arrived damaged (checksum)");
    PublishedNetwork& n = k ? out.d : out.g;
    n.layout_hash = (uint64_t)rows.get<int64_t>(row, 1);
    n.params = DecodedBlob(params);
    n.bn_running = DecodedBlob(stats);
    n.num_batches_tracked = rows.get<int64_t>(row, 6);
  }
  return out;
}

int release_held(pg::Connection& c, int64_t worker) {
  pg::Params p;
  p.add(worker);
  return c.exec("SELECT gannf.release_held($1)", p).get<int32_t>(0, 0);
}

bool credentials_refused(const pg::Error& e) {
  if (e.sqlstate() == "28P01" || e.sqlstate() == "28000") return true;
  const std::string& m = e.message();
  auto has = [&](const char* w) { return m.find(w) != std::string::npos; };
  return has("password authentication failed") || has("authentication failed for user") ||
         has("no password supplied") || (has("role \"") && has("does not exist"));
}

}  // namespace gannf::cluster
