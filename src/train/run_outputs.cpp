#include "run_outputs.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "atomic_file.h"
#include "checkpoint.h"
#include "picture.h"
#include "rng.h"

namespace fs = std::filesystem;

namespace gannf {

namespace {

constexpr int kKeepCheckpoints = 3;  // older step-* folders are removed
constexpr int kGrid = 64;            // images in a sample grid, 8 x 8
constexpr const char* kCsvHeader = "step,epoch,d_loss,g_loss,d_real,d_fake,d_acc\n";

std::string csv_row(const LossRow& r) {
  char b[256];
  std::snprintf(b, sizeof b, "%lld,%lld,%.6f,%.6f,%.6f,%.6f,%.6f\n", (long long)r.step, (long long)r.epoch,
                r.s.d_loss, r.s.g_loss, r.s.d_real, r.s.d_fake, r.s.d_acc);
  return b;
}

}  // namespace

RunOutputs::RunOutputs(std::string dir, std::string program, const DcganConfig& cfg, uint64_t seed)
    : dir_(std::move(dir)), program_(std::move(program)), cfg_(cfg) {
  fs::create_directories(fs::path(dir_) / "samples");
  fs::create_directories(fs::path(dir_) / "checkpoints");
  Rng fixed(seed ^ 0x666978656400ull);  // "fixed": the sample grid's noise
  fixed_noise_.resize((size_t)kGrid * cfg_.nz);
  fixed.fill_normal(fixed_noise_.data(), fixed_noise_.size());
}

void RunOutputs::append_loss(const LossRow& r) {
  const fs::path p = fs::path(dir_) / "losses.csv";
  const bool fresh = !fs::exists(p);
  std::ofstream f(p, std::ios::app);
  if (fresh) f << kCsvHeader;
  f << csv_row(r);
  if (!f) throw std::runtime_error(p.string() + ": cannot append (disk full, or no permission?)");
  history_.push_back(r);
}

void RunOutputs::rewrite_losses(std::vector<LossRow> rows) {
  std::string out = kCsvHeader;
  for (const LossRow& r : rows) out += csv_row(r);
  write_file_atomic((fs::path(dir_) / "losses.csv").string(), out);
  history_ = std::move(rows);
}

std::vector<LossRow> RunOutputs::read_losses(int64_t last) const {
  std::vector<LossRow> rows;
  std::ifstream f(fs::path(dir_) / "losses.csv");
  std::string line;
  if (f) std::getline(f, line);  // the header
  while (f && std::getline(f, line)) {
    LossRow r{};
    long long s, e;
    if (std::sscanf(line.c_str(), "%lld,%lld,%lf,%lf,%lf,%lf,%lf", &s, &e, &r.s.d_loss, &r.s.g_loss,
                    &r.s.d_real, &r.s.d_fake, &r.s.d_acc) != 7)
      continue;
    if (s > last) break;
    r.step = s, r.epoch = e;
    rows.push_back(r);
  }
  return rows;
}

std::string RunOutputs::write_samples(Net<float>& G, int64_t step) {
  // Eval mode: running statistics, as a user of the published model samples.
  Backend<float>& be = G.backend();
  const int n = std::min(kGrid, G.max_batch());
  std::vector<float> img((size_t)kGrid * G.out_size());
  Buffer<float> z(be, (size_t)n * cfg_.nz);
  for (int b0 = 0; b0 < kGrid; b0 += n) {
    const int k = std::min(n, kGrid - b0);
    be.upload(z.data(), fixed_noise_.data() + (size_t)b0 * cfg_.nz, (size_t)k * cfg_.nz);
    const float* y = G.forward(z.data(), k, Mode::Eval);
    be.download(img.data() + (size_t)b0 * G.out_size(), y, (size_t)k * G.out_size());
  }
  const std::string name = step_name(step) + ".png";
  const fs::path path = fs::path(dir_) / "samples" / name;
  write_grid_png(path.string(), img.data(), kGrid, cfg_.nc, cfg_.image_size, 8);
  write_file_atomic((fs::path(dir_) / "samples" / "latest.txt").string(), name + "\n");
  return path.string();
}

void RunOutputs::write_loss_curve() const {
  if (history_.empty()) return;
  std::vector<double> x;
  Series d{"D loss", {}, 200, 60, 40}, g{"G loss", {}, 40, 90, 200};
  for (const LossRow& r : history_) {
    x.push_back((double)r.step);
    d.y.push_back(r.s.d_loss);
    g.y.push_back(r.s.g_loss);
  }
  write_line_chart_png((fs::path(dir_) / "loss-curve.png").string(), program_ + ": " + cfg_.describe(), x,
                       {d, g});
}

std::string RunOutputs::save_checkpoint(int64_t step, Net<float>& G, Net<float>& D, Adam<float>& adamG,
                                        Adam<float>& adamD, const std::vector<int64_t>& counters,
                                        const nlohmann::json& training) const {
  const std::string dir = (fs::path(dir_) / "checkpoints" / step_name(step)).string();
  write_checkpoint_folder(dir, G, D, cfg_, adamG, adamD, counters, {{"gannf.training", training.dump()}});
  return dir;
}

std::function<void(const std::string&)> checkpoint_written_test_hook;

void write_checkpoint_folder(const std::string& dir_in, Net<float>& G, Net<float>& D,
                             const DcganConfig& cfg, Adam<float>& adamG, Adam<float>& adamD,
                             const std::vector<int64_t>& counters,
                             const std::map<std::string, std::string>& meta) {
  const fs::path dir(dir_in);
  const fs::path tmp = dir.parent_path() / ("." + dir.filename().string() + ".tmp");
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_model((tmp / "generator.safetensors").string(), G, cfg, meta);
  save_model((tmp / "discriminator.safetensors").string(), D, cfg, meta);
  auto moment = [&](Adam<float>& a, bool second) {
    std::vector<float> v(a.size());
    G.backend().download(v.data(), second ? a.v() : a.m(), v.size());
    return StTensor::f32({(int64_t)v.size()}, v);
  };
  StEntries st = {
      {"generator.adam.exp_avg", moment(adamG, false)},
      {"generator.adam.exp_avg_sq", moment(adamG, true)},
      {"discriminator.adam.exp_avg", moment(adamD, false)},
      {"discriminator.adam.exp_avg_sq", moment(adamD, true)},
      {"counters", StTensor::i64({(int64_t)counters.size()}, counters)},
  };
  auto sm = meta;
  sm["gannf.counters"] = "step, epoch, position in epoch, generator adam step, discriminator adam step";
  save_safetensors((tmp / "state.safetensors").string(), st, with_checksums(st, std::move(sm)));
  // Read every file back before the folder takes its name and `latest` moves:
  // a write that went wrong (full disk, bad memory, a bug) throws here, and
  // the previous checkpoint stays the latest one and is not pruned.
  if (checkpoint_written_test_hook) checkpoint_written_test_hook(tmp.string());
  for (const char* f : {"generator.safetensors", "discriminator.safetensors", "state.safetensors"})
    SafeTensors::load((tmp / f).string());
  fsync_dir(tmp.string());
  fs::remove_all(dir);
  fs::rename(tmp, dir);
  fsync_dir(dir.parent_path().string());
  write_file_atomic((dir.parent_path() / "latest").string(), dir.filename().string() + "\n");
  // Keep the newest few step-* folders.
  std::vector<fs::path> all;
  for (auto& e : fs::directory_iterator(dir.parent_path()))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0)
      all.push_back(e.path());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + kKeepCheckpoints < all.size(); i++)
    if (all[i] != dir) fs::remove_all(all[i]);
}

std::string latest_checkpoint(const std::string& output_dir) {
  const fs::path dir = fs::path(output_dir) / "checkpoints";
  std::ifstream f(dir / "latest");
  std::string name;
  if (f && std::getline(f, name) && !name.empty() && fs::is_directory(dir / name))
    return (dir / name).string();
  return "";
}

std::string generator_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path;
  if (fs::is_regular_file(fs::path(path) / "generator.safetensors", ec))
    return (fs::path(path) / "generator.safetensors").string();
  if (const std::string ck = latest_checkpoint(path); !ck.empty())
    return (fs::path(ck) / "generator.safetensors").string();
  throw std::runtime_error(path + ": not a checkpoint folder, output folder or .safetensors file");
}

std::string step_name(int64_t step) {
  char b[32];
  std::snprintf(b, sizeof b, "step-%08lld", (long long)step);
  return b;
}

}  // namespace gannf
