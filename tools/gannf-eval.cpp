// gannf-eval: a training-quality figure. The Fréchet distance between real
// and generated Fashion-MNIST images in the feature space of a classifier
// trained by gannf itself (src/eval), and the commands that make and check
// that classifier.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <exception>
#include <filesystem>

#include "blas_runtime.h"
#include "checkpoint.h"
#include "classifier.h"
#include "cli.h"
#include "frechet.h"
#include "rng.h"
#include "run_outputs.h"

namespace fs = std::filesystem;
using namespace gannf;
using namespace gannf::eval;

namespace {

const char* kUsage =
    "usage: gannf-eval COMMAND [options]\n"
    "Measures training quality by a Fréchet distance (FD) between real Fashion-MNIST test images\n"
    "and generated ones, in the 128 features of a Fashion-MNIST classifier trained by gannf.\n"
    "Lower is better; 0 means the two feature distributions' means and covariances agree.\n\n"
    "commands:\n"
    "  fid               FD against the test set of one of:\n"
    "                      --checkpoint PATH  a generator (checkpoint folder, output folder or\n"
    "                                         generator .safetensors; eval mode)\n"
    "                      --untrained        a freshly initialised generator (--image-size, --ngf)\n"
    "                      --real halves      the test set's first half against its second\n"
    "                      --real train       N training images against the test set\n"
    "  accuracy          the classifier's accuracy on the test set\n"
    "  train-classifier  trains the classifier for --image-size and writes it to --classifier\n\n"
    "Prints progress on stderr and, last on stdout, one line for scripts:\n"
    "  fid=12.3456 mean_term=... trace_term=... n_real=10000 n_other=10000 image_size=32 ...\n"
    "FD is biased upwards by few samples: compare figures measured with the same --n.";

struct Options {
  std::string command;
  std::string dataset = "/usr/share/datasets/fashion-mnist";
  std::string classifier;  // "" : the committed one for the image size
  std::string checkpoint, real;
  bool untrained = false;
  int image_size = 0;      // 0: the checkpoint's (fid), else required
  int64_t n = 10000;
  uint64_t seed = 0;
  int repeats = 1;
  int ngf = 64, nz = 100;
  std::string backend = "cpu";
  int threads = 0;
  int epochs = 5;
  uint64_t train_seed = 1;
  bool quiet = false;
};

std::string default_classifier(int image_size) {
  return std::string(GANNF_MODELS_DIR) + "/fashion-mnist-classifier-" +
         std::to_string(image_size) + ".safetensors";
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void note(const Options& o, const char* fmt, auto... args) {
  if (o.quiet) return;
  std::fprintf(stderr, "gannf-eval: ");
  std::fprintf(stderr, fmt, args...);
  std::fputc('\n', stderr);
}

std::unique_ptr<Net<float>> open_classifier(const Options& o, Backend<float>& be, int image_size) {
  const std::string path = o.classifier.empty() ? default_classifier(image_size) : o.classifier;
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw std::runtime_error("no classifier at " + path + "; make it with `gannf-eval "
                             "train-classifier --image-size " + std::to_string(image_size) +
                             "` (docs/quality.md says how long it takes) or name one with "
                             "--classifier");
  ClassifierConfig cfg;
  auto net = load_classifier(path, be, 128, &cfg);
  if (cfg.image_size != image_size || cfg.nc != 1)
    throw std::runtime_error(path + " classifies " + std::to_string(cfg.image_size) + "x" +
                             std::to_string(cfg.image_size) + "x" + std::to_string(cfg.nc) +
                             " images, not " + std::to_string(image_size) + "x" +
                             std::to_string(image_size) + "x1");
  note(o, "%s (%s)", cfg.describe().c_str(), path.c_str());
  return net;
}

// Features of `n` images from `images`, with a progress line per quarter.
std::vector<float> features_of(const Options& o, Net<float>& clf, size_t n,
                               const ImageSource& images, const std::string& what) {
  const size_t F = clf.layers()[feature_layer(clf)].C_out;
  std::vector<float> feats(n * F);
  const auto t0 = std::chrono::steady_clock::now();
  size_t next = n / 4;
  classify(clf, n, images, feats.data(), nullptr, [&](size_t done) {
    if (done >= next && done < n) {
      note(o, "%s: %zu/%zu images (%.0f img/s)", what.c_str(), done, n, done / since(t0));
      next += n / 4;
    }
  });
  note(o, "%s: %zu images in %.1f s", what.c_str(), n, since(t0));
  return feats;
}

std::vector<uint64_t> range(size_t first, size_t n) {
  std::vector<uint64_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = first + i;
  return v;
}

// Images of a generator in eval mode; image i's z is gannf-generate's z of
// seed (seed * 10^6 + i), so `gannf-generate grid --seeds 0-63` shows the
// first 64 images of --seed 0.
ImageSource generator_images(Net<float>& G, int nz, uint64_t seed) {
  auto zd = std::make_shared<Buffer<float>>(G.backend(), (size_t)G.max_batch() * nz);
  return [&G, nz, seed, zd](size_t first, int count, float* out) {
    std::vector<float> z((size_t)count * nz);
    for (int i = 0; i < count; i++)
      Rng(seed * 1000000 + first + i).fill_normal(z.data() + (size_t)i * nz, nz);
    G.backend().upload(zd->data(), z.data(), z.size());
    const float* y = G.forward(zd->data(), count, Mode::Eval);
    G.backend().download(out, y, (size_t)count * G.out_size());
  };
}

int run_fid(const Options& o) {
  const int sources = !o.checkpoint.empty() + o.untrained + !o.real.empty();
  if (sources != 1)
    throw cli::Error("fid: give exactly one of --checkpoint, --untrained, --real halves|train");
  if (!o.real.empty() && o.real != "halves" && o.real != "train")
    throw cli::Error("--real: 'halves' or 'train', not '" + o.real + "'");
  if (o.n < 2 || o.n > 1000000) throw cli::Error("--n: 2..1000000");
  if (o.repeats < 1 || o.repeats > 1000) throw cli::Error("--repeats: 1..1000");
  if (o.repeats > 1 && !o.real.empty())
    throw cli::Error("--repeats applies to generated images; real ones have no seed");
  auto be = make_backend<float>(o.backend);
  DcganConfig gcfg;
  std::string gfile;
  int S = o.image_size;
  if (!o.checkpoint.empty()) {
    gfile = generator_file(o.checkpoint);
    gcfg = read_model_config(gfile);
    if (S && S != gcfg.image_size)
      throw cli::Error("--image-size " + std::to_string(S) + " but " + gfile + " makes " +
                       std::to_string(gcfg.image_size) + "x" + std::to_string(gcfg.image_size) +
                       " images (leave --image-size out)");
    S = gcfg.image_size;
    if (gcfg.nc != 1)
      throw std::runtime_error(gfile + " makes " + std::to_string(gcfg.nc) +
                               "-channel images; the classifier knows Fashion-MNIST (1 channel)");
  } else if (!S) {
    throw cli::Error("--image-size is required (32 or 64)");
  }
  auto clf = open_classifier(o, *be, S);
  const int F = clf->layers()[feature_layer(*clf)].C_out;
  const auto t0 = std::chrono::steady_clock::now();
  LabelledImages test = open_labelled(o.dataset, S, true, o.quiet);
  const size_t n_test = test.images->size();
  // Equal sizes on both sides: FD's bias depends on them.
  const size_t n = std::min<size_t>(o.real == "halves" ? n_test / 2 : n_test, o.n);
  const auto ia = range(0, n);
  const Gaussian real = fit_gaussian(
      features_of(o, *clf, n, dataset_images(*test.images, ia),
                  o.real == "halves" ? "test images, first half" : "test images").data(),
      n, F);
  // The other side's features for one seed.
  std::function<std::vector<float>(uint64_t)> other;
  LabelledImages train;
  Net<float> G(*be, "generator");
  std::string what = "generated images";
  if (o.real == "halves") {
    what = "test images";
    other = [&](uint64_t) {
      const auto ib = range(n_test - n, n);
      return features_of(o, *clf, n, dataset_images(*test.images, ib), "test images, second half");
    };
  } else if (o.real == "train") {
    what = "training images";
    train = open_labelled(o.dataset, S, false, o.quiet);
    other = [&](uint64_t) {
      const auto ib = range(0, n);
      return features_of(o, *clf, n, dataset_images(*train.images, ib), what);
    };
  } else {
    if (o.untrained) {
      gcfg.image_size = S;
      gcfg.nc = 1;
      gcfg.ngf = o.ngf;
      gcfg.nz = o.nz;
    }
    build_generator(G, gcfg, 128);
    if (!o.untrained) load_model(gfile, G);
    note(o, "generator: %s (%s)", gcfg.describe().c_str(),
         o.untrained ? "untrained: DCGAN initialisation seeded by --seed" : gfile.c_str());
    other = [&](uint64_t seed) {
      if (o.untrained) G.init_dcgan(seed);
      return features_of(o, *clf, n, generator_images(G, gcfg.nz, seed), what);
    };
  }
  std::vector<double> all;
  for (uint64_t seed = o.seed; seed < o.seed + (uint64_t)o.repeats; seed++) {
    const auto fb = other(seed);
    const Frechet f = frechet_distance(real, fit_gaussian(fb.data(), n, F));
    all.push_back(f.distance);
    const std::string src = !o.real.empty() ? "real-" + o.real
                            : o.untrained   ? "untrained"
                                            : gfile;
    const std::string seeded = o.real.empty() ? " (seed " + std::to_string(seed) + ")" : "";
    std::printf("Fréchet distance %.4f (means %.4f + covariances %.4f): %zu test images against "
                "%zu %s%s, %dx%d, %d features\n",
                f.distance, f.mean_term, f.trace_term, n, n, what.c_str(), seeded.c_str(), S, S, F);
    std::printf("fid=%.4f mean_term=%.4f trace_term=%.4f n_real=%zu n_other=%zu image_size=%d "
                "features=%d seed=%llu source=%s\n",
                f.distance, f.mean_term, f.trace_term, n, n, S, F, (unsigned long long)seed,
                src.c_str());
    std::fflush(stdout);
  }
  note(o, "done in %.1f s", since(t0));
  if (all.size() > 1) {
    double mean = 0, var = 0;
    for (double d : all) mean += d / all.size();
    for (double d : all) var += (d - mean) * (d - mean) / (all.size() - 1);
    std::printf("fid_mean=%.4f fid_sd=%.4f fid_min=%.4f fid_max=%.4f repeats=%zu\n", mean,
                std::sqrt(var), *std::min_element(all.begin(), all.end()),
                *std::max_element(all.begin(), all.end()), all.size());
  }
  return 0;
}

int run_accuracy(const Options& o) {
  if (!o.image_size) throw cli::Error("--image-size is required (32 or 64)");
  auto be = make_backend<float>(o.backend);
  auto clf = open_classifier(o, *be, o.image_size);
  LabelledImages test = open_labelled(o.dataset, o.image_size, true, o.quiet);
  const size_t n = std::min<size_t>(test.images->size(), o.n);
  std::vector<float> logits(n * kClasses);
  const auto idx = range(0, n);
  classify(*clf, n, dataset_images(*test.images, idx), nullptr, logits.data());
  const double acc = accuracy(logits, std::vector<int32_t>(test.labels.begin(), test.labels.begin() + n));
  std::printf("test accuracy %.2f%% on %zu images (%dx%d)\n", 100 * acc, n, o.image_size,
              o.image_size);
  std::printf("accuracy=%.4f n=%zu image_size=%d\n", acc, n, o.image_size);
  return 0;
}

int run_train(const Options& o) {
  if (!o.image_size) throw cli::Error("--image-size is required (32 or 64)");
  if (o.epochs < 1) throw cli::Error("--epochs must be at least 1");
  const std::string out = o.classifier.empty() ? default_classifier(o.image_size) : o.classifier;
  auto be = make_backend<float>(o.backend);
  ClassifierConfig cfg;
  cfg.image_size = o.image_size;
  TrainClassifierOptions t;
  t.epochs = o.epochs;
  t.seed = o.train_seed;
  t.quiet = o.quiet;
  Net<float> net(*be, "classifier");
  build_classifier(net, cfg, t.batch_size);
  note(o, "training the %s on %s, %d epochs, %s", cfg.describe().c_str(), o.dataset.c_str(),
       t.epochs, be->describe().c_str());
  LabelledImages train = open_labelled(o.dataset, o.image_size, false, o.quiet);
  LabelledImages test = open_labelled(o.dataset, o.image_size, true, o.quiet);
  const auto r = train_classifier(net, train, test, t);
  char acc[32], secs[32];
  std::snprintf(acc, sizeof acc, "%.4f", r.test_accuracy);
  std::snprintf(secs, sizeof secs, "%.0f", r.seconds);
  std::error_code ec;
  fs::create_directories(fs::path(out).parent_path(), ec);
  save_classifier(out, net, cfg,
                  {{"gannf.training",
                    "{\"epochs\": " + std::to_string(t.epochs) + ", \"batch_size\": " +
                        std::to_string(t.batch_size) + ", \"seed\": " + std::to_string(t.seed) +
                        ", \"test_accuracy\": " + acc + ", \"seconds\": " + secs +
                        ", \"threads\": " + std::to_string(omp_get_max_threads()) + "}"}});
  std::printf("wrote %s: test accuracy %.2f%%, %lld steps in %.0f s\n", out.c_str(),
              100 * r.test_accuracy, (long long)r.steps, r.seconds);
  std::printf("accuracy=%.4f seconds=%.0f image_size=%d\n", r.test_accuracy, r.seconds,
              o.image_size);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  cli::Parser p("gannf-eval", kUsage);
  p.opt("checkpoint", &o.checkpoint, "fid: the generator to measure");
  p.flag("untrained", &o.untrained, "fid: measure a freshly initialised generator");
  p.opt("real", &o.real, "fid: 'halves' or 'train', real images instead of generated ones");
  p.opt("image-size", &o.image_size, "32 or 64 (fid with --checkpoint: the checkpoint's)");
  p.opt("n", &o.n, "images on each side: test images and generated (or training) ones; "
                   "--real halves: at most half the test set");
  p.opt("seed", &o.seed, "fid: noise seed of the generated images (--untrained: also its weights)");
  p.opt("repeats", &o.repeats,
        "fid: measure seeds --seed, --seed+1, ... this many times (the test set's features once); "
        "ends with a line of their mean and standard deviation");
  p.opt("ngf", &o.ngf, "fid --untrained: generator width");
  p.opt("latent-dim", &o.nz, "fid --untrained: size of the noise vector z");
  p.opt("dataset", &o.dataset, "the Fashion-MNIST folder (IDX images and labels)");
  p.opt("classifier", &o.classifier,
        "classifier weights (default: models/fashion-mnist-classifier-<size>.safetensors in the "
        "source tree); train-classifier writes here");
  p.opt("epochs", &o.epochs, "train-classifier: passes over the training set");
  p.opt("train-seed", &o.train_seed, "train-classifier: initial weights and data order");
  p.opt("backend", &o.backend, "cpu, cuda or auto (train-classifier: cpu)");
  p.opt("threads", &o.threads, "CPU threads (0: all cores)");
  p.flag("quiet", &o.quiet, "no progress lines");
  p.positional("command", &o.command, "fid, accuracy or train-classifier");
  try {
    p.parse(argc, argv);
    if (p.help_requested) {
      std::fputs(p.help().c_str(), stdout);
      return 0;
    }
    if (o.command.empty()) throw cli::Error("no command (fid, accuracy, train-classifier; see --help)");
    if (o.command != "fid" && o.command != "accuracy" && o.command != "train-classifier")
      throw cli::Error("unknown command '" + o.command + "' (fid, accuracy, train-classifier)");
    if (o.image_size != 0 && o.image_size != 32 && o.image_size != 64)
      throw cli::Error("--image-size: 32 or 64");
    if (o.threads < 0) throw cli::Error("--threads must not be negative");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-eval: %s\n", e.what());
    return 2;
  }
  cpu::blas_ensure_coretype(argc, argv, o.quiet);
  if (o.threads > 0) omp_set_num_threads(o.threads);
  try {
    if (o.command == "fid") return run_fid(o);
    if (o.command == "accuracy") return run_accuracy(o);
    return run_train(o);
  } catch (const cli::Error& e) {
    std::fprintf(stderr, "gannf-eval: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-eval: %s\n", e.what());
    return 1;
  }
}
