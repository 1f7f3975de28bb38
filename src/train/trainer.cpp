#include "trainer.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "self_check.h"

namespace fs = std::filesystem;

namespace gannf {

void TrainOptions::validate() const {
  auto bad = [](const std::string& m) { throw std::invalid_argument(m); };
  if (image_size != 32 && image_size != 64)
    bad("--image-size must be 32 or 64, got " + std::to_string(image_size));
  if (channels != 0 && channels != 1 && channels != 3)
    bad("--channels must be 1 or 3, got " + std::to_string(channels));
  if (epochs <= 0) bad("--epochs must be positive, got " + std::to_string(epochs));
  if (max_steps < 0) bad("--steps must be 0 (no limit) or positive");
  if (batch_size < 2) bad("--batch-size must be at least 2 (batch norm needs two images), got " +
                          std::to_string(batch_size));
  if (micro_batch < 0 || micro_batch > batch_size)
    bad("--micro-batch must be between 1 and --batch-size (0: the whole batch)");
  if (micro_batch == 1) bad("--micro-batch must be at least 2 (batch norm needs two images)");
  if (mode != "simultaneous" && mode != "alternating")
    bad("--mode must be 'simultaneous' or 'alternating', not '" + mode + "'");
  auto positive = [&](double v, const char* name) {
    if (!(std::isfinite(v) && v > 0)) bad(std::string(name) + " must be a positive number");
  };
  positive(adam.lr, "--lr");
  if (!(adam.beta1 >= 0 && adam.beta1 < 1)) bad("--beta1 must be in [0, 1)");
  if (!(adam.beta2 >= 0 && adam.beta2 < 1)) bad("--beta2 must be in [0, 1)");
  if (nz <= 0) bad("--latent-dim must be positive");
  if (ngf <= 0 || ndf <= 0) bad("--ngf and --ndf must be positive");
  if (sample_interval < 0 || checkpoint_interval < 0) bad("intervals must be 0 or positive");
  if (threads < 0) bad("--threads must be 0 (automatic) or positive");
  if (output_dir.empty()) bad("--output-dir must not be empty");
}

Trainer::Trainer(const TrainOptions& opt) : opt_(opt) {
  opt_.validate();
  if (opt_.threads > 0) omp_set_num_threads(opt_.threads);
  if (opt_.channels == 0) opt_.channels = default_channels(opt_.dataset);
  if (opt_.micro_batch == 0) opt_.micro_batch = opt_.batch_size;
  cfg_.image_size = opt_.image_size;
  cfg_.nc = opt_.channels;
  cfg_.nz = opt_.nz;
  cfg_.ngf = opt_.ngf;
  cfg_.ndf = opt_.ndf;
  cfg_.validate();

  data::Options dopt;
  dopt.cache = opt_.cache;
  dopt.seed = opt_.seed;
  dopt.quiet = opt_.quiet;
  data_ = data::open_dataset(opt_.dataset, opt_.image_size, opt_.channels, dopt);
  steps_per_epoch_ = (int64_t)(data_->size() / (size_t)opt_.batch_size);
  if (steps_per_epoch_ == 0)
    throw std::runtime_error(opt_.dataset + ": " + std::to_string(data_->size()) +
                             " images, fewer than one batch of " +
                             std::to_string(opt_.batch_size));

  be_ = make_backend<float>(opt_.backend);
  // A GPU's gradients against the CPU's, once.
  if (const std::string line = require_self_check(*be_); !line.empty() && !opt_.quiet)
    std::fprintf(stderr, "gannf-train: %s\n", line.c_str());
  G_ = std::make_unique<Net<float>>(*be_, "generator");
  D_ = std::make_unique<Net<float>>(*be_, "discriminator");
  const int max_batch = std::min(opt_.batch_size, opt_.micro_batch + 1);
  build_generator(*G_, cfg_, max_batch);
  build_discriminator(*D_, cfg_, max_batch);
  G_->init_dcgan(opt_.seed * 2 + 1);
  D_->init_dcgan(opt_.seed * 2 + 2);
  gan_ = std::make_unique<GanStep<float>>(*G_, *D_);
  adamG_ = std::make_unique<Adam<float>>(*be_, G_->num_params(), opt_.adam);
  adamD_ = std::make_unique<Adam<float>>(*be_, D_->num_params(), opt_.adam);
  real_.resize((size_t)opt_.batch_size * data_->image_floats());
  noise_.resize((size_t)opt_.batch_size * cfg_.nz);
  idx_.resize(opt_.batch_size);

  out_ = std::make_unique<RunOutputs>(opt_.output_dir, "gannf-train", cfg_, opt_.seed);
  if (!opt_.resume.empty()) {
    std::string dir = opt_.resume;
    if (dir == "auto") dir = latest_checkpoint(opt_.output_dir);
    if (!dir.empty()) load_checkpoint(dir);
    else if (!opt_.quiet)
      std::fprintf(stderr, "gannf-train: no checkpoint in %s yet; starting fresh\n",
                   opt_.output_dir.c_str());
  }
  if (!opt_.quiet) {
    std::fprintf(stderr, "gannf-train: %s\n", data_->describe().c_str());
    std::fprintf(stderr, "gannf-train: %s on %s; %lld steps per epoch of %d images\n",
                 cfg_.describe().c_str(), be_->describe().c_str(), (long long)steps_per_epoch_,
                 opt_.batch_size);
  }
}

Trainer::~Trainer() = default;

void Trainer::ensure_permutation() {
  if (perm_epoch_ == epoch_) return;
  perm_ = data::epoch_permutation(data_->size(), opt_.seed, (uint64_t)epoch_);
  perm_epoch_ = epoch_;
}

StepStats Trainer::step() {
  ensure_permutation();
  const int B = opt_.batch_size, mb = opt_.micro_batch;
  for (int i = 0; i < B; i++) idx_[i] = perm_[(size_t)pos_ * B + i];
  data::get_batch(*data_, idx_.data(), B, real_.data());
  // z of each sample from (seed, epoch, position): the same numbers a cluster
  // worker draws for the same sample (sample_noise in rng.h).
  for (int i = 0; i < B; i++)
    sample_noise(noise_.data() + (size_t)i * cfg_.nz, cfg_.nz, opt_.seed, (uint64_t)epoch_,
                 (uint64_t)pos_ * B + i);
  // Micro-batches of mb images; a trailing one of a single image would break
  // batch norm, so it is folded into the one before (the nets are sized for
  // micro_batch + 1 for this).
  std::vector<std::pair<int, int>> parts;  // (first image, count)
  for (int b0 = 0; b0 < B;) {
    int n = std::min(mb, B - b0);
    if (B - b0 - n == 1) n++;
    parts.push_back({b0, n});
    b0 += n;
  }
  auto real_of = [&](int b0) { return real_.data() + (size_t)b0 * data_->image_floats(); };
  auto noise_of = [&](int b0) { return noise_.data() + (size_t)b0 * cfg_.nz; };
  StepStats st;
  if (opt_.mode == "alternating") {
    D_->zero_grads();
    for (auto [b0, n] : parts) st.merge(gan_->accumulate_d(real_of(b0), noise_of(b0), n, 1.0 / B));
    adamD_->step(*D_);
    G_->zero_grads();
    double g_loss = 0;
    for (auto [b0, n] : parts) g_loss += n * gan_->accumulate_g(noise_of(b0), n, 1.0 / B);
    st.g_loss = g_loss / B;  // against the updated D, as PyTorch's errG
    adamG_->step(*G_);
  } else {
    gan_->zero_grads();
    for (auto [b0, n] : parts) st.merge(gan_->accumulate(real_of(b0), noise_of(b0), n, 1.0 / B));
    adamD_->step(*D_);
    adamG_->step(*G_);
  }
  step_++;
  out_->append_loss({step_, epoch_ + 1, st});
  if (++pos_ == steps_per_epoch_) {
    pos_ = 0;
    epoch_++;
  }
  return st;
}

std::string Trainer::write_samples() { return out_->write_samples(*G_, step_); }

void Trainer::save_checkpoint(const std::string& dir) {
  nlohmann::json o = {{"dataset", opt_.dataset},        {"image_size", opt_.image_size},
                      {"channels", cfg_.nc},            {"batch_size", opt_.batch_size},
                      {"micro_batch", opt_.micro_batch}, {"lr", opt_.adam.lr},
                      {"beta1", opt_.adam.beta1},       {"beta2", opt_.adam.beta2},
                      {"seed", opt_.seed},              {"dataset_size", data_->size()},
                      {"mode", opt_.mode}};
  write_checkpoint_folder(dir, *G_, *D_, cfg_, *adamG_, *adamD_,
                          {step_, epoch_, pos_, adamG_->t, adamD_->t},
                          {{"gannf.training", o.dump()}});
}

void Trainer::load_checkpoint(const std::string& dir_in) {
  const fs::path dir(dir_in);
  if (!fs::is_directory(dir))
    throw std::runtime_error(dir_in + ": no such checkpoint folder");
  load_model((dir / "generator.safetensors").string(), *G_);
  load_model((dir / "discriminator.safetensors").string(), *D_);
  const std::string sp = (dir / "state.safetensors").string();
  const auto st = SafeTensors::load(sp);
  warn_if_unchecked(st);
  auto it = st.metadata.find("gannf.training");
  if (it == st.metadata.end()) throw std::runtime_error(sp + ": no training metadata");
  const auto o = nlohmann::json::parse(it->second, nullptr, false);
  if (o.is_discarded()) throw std::runtime_error(sp + ": training metadata is not JSON");
  auto same = [&](const char* key, const nlohmann::json& v) {
    if (!o.contains(key) || o[key] != v)
      throw std::runtime_error(sp + ": written with " + key + " = " +
                               (o.contains(key) ? o[key].dump() : "?") + ", this run has " +
                               v.dump() + "; resume with the same settings");
  };
  same("batch_size", opt_.batch_size);
  same("seed", opt_.seed);
  same("dataset_size", data_->size());
  auto load_f = [&](const std::string& name, float* dst, size_t n) {
    const auto v = st.floats(name);
    if (v.size() != n)
      throw std::runtime_error(sp + ": '" + name + "' has " + std::to_string(v.size()) +
                               " values, expected " + std::to_string(n));
    be_->upload(dst, v.data(), n);
  };
  load_f("generator.adam.exp_avg", adamG_->m(), adamG_->size());
  load_f("generator.adam.exp_avg_sq", adamG_->v(), adamG_->size());
  load_f("discriminator.adam.exp_avg", adamD_->m(), adamD_->size());
  load_f("discriminator.adam.exp_avg_sq", adamD_->v(), adamD_->size());
  const auto c = st.ints("counters");
  if (c.size() != 5) throw std::runtime_error(sp + ": counters have the wrong size");
  if (c[0] < 0 || c[1] < 0 || c[2] < 0 || c[2] >= steps_per_epoch_ || c[3] < 0 || c[4] < 0)
    throw std::runtime_error(sp + ": counters out of range");
  step_ = c[0], epoch_ = c[1], pos_ = c[2];
  adamG_->t = c[3], adamD_->t = c[4];
  perm_epoch_ = -1;
  // losses.csv up to the checkpoint's step: the steps redone are not repeated.
  out_->rewrite_losses(out_->read_losses(step_));
  if (!opt_.quiet)
    std::fprintf(stderr, "gannf-train: resumed from %s at step %lld (epoch %lld)\n",
                 dir_in.c_str(), (long long)step_, (long long)epoch_ + 1);
}

void Trainer::run(const std::atomic<bool>* stop) {
  const bool tty = isatty(2);
  const int64_t report_every = std::max<int64_t>(1, steps_per_epoch_ / 20);
  auto t_last = std::chrono::steady_clock::now();
  const auto t_start = t_last;
  int64_t imgs_since = 0, steps_done = 0;
  double rate = 0;
  const fs::path out(opt_.output_dir);
  auto done = [&] {
    return epoch_ >= opt_.epochs || (opt_.max_steps > 0 && step_ >= opt_.max_steps) ||
           (stop && stop->load());
  };
  while (!done()) {
    const StepStats s = step();
    steps_done++;
    imgs_since += opt_.batch_size;
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - t_last).count();
    if (dt > 2.0 || rate == 0) {
      rate = imgs_since / dt;
      imgs_since = 0;
      t_last = now;
    }
    if (!opt_.quiet && (tty || step_ % report_every == 0 || done())) {
      std::fprintf(stderr,
                   "%sepoch %lld/%d step %lld/%lld (total %lld) | %.1f img/s | D %.3f G %.3f | "
                   "D(x) %.3f D(G(z)) %.3f | acc %.2f%s",
                   tty ? "\r" : "", (long long)out_->history().back().epoch,
                   opt_.epochs, (long long)(pos_ ? pos_ : steps_per_epoch_),
                   (long long)steps_per_epoch_, (long long)step_, rate, s.d_loss, s.g_loss,
                   s.d_real, s.d_fake, s.d_acc, tty ? "\x1b[K" : "\n");
    }
    if (opt_.sample_interval > 0 && step_ % opt_.sample_interval == 0) write_samples();
    if (opt_.checkpoint_interval > 0 && step_ % opt_.checkpoint_interval == 0) {
      save_checkpoint((out / "checkpoints" / step_name(step_)).string());
      write_loss_curve();
    }
  }
  if (tty && !opt_.quiet) std::fprintf(stderr, "\n");
  write_samples();
  save_checkpoint((out / "checkpoints" / step_name(step_)).string());
  write_loss_curve();
  if (!opt_.quiet) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::fprintf(stderr,
                 "gannf-train: %lld steps in %.1f s (%.1f img/s)%s; samples in %s, checkpoint "
                 "%s\n",
                 (long long)steps_done, secs, steps_done * opt_.batch_size / std::max(secs, 1e-9),
                 stop && stop->load() ? ", stopped by signal" : "",
                 (out / "samples").string().c_str(), latest_checkpoint(opt_.output_dir).c_str());
  }
}

int default_channels(const std::string& dataset) {
  std::error_code ec;
  auto is_idx = [](const fs::path& p) { return p.filename().string().find("idx3-ubyte") != std::string::npos; };
  if (fs::is_regular_file(dataset, ec)) return is_idx(dataset) ? 1 : 3;
  for (const fs::path& d : {fs::path(dataset), fs::path(dataset) / "raw"}) {
    if (!fs::is_directory(d, ec)) continue;
    for (auto& e : fs::directory_iterator(d, ec))
      if (is_idx(e.path())) return 1;
  }
  return 3;
}

}  // namespace gannf
