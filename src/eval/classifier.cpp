#include "classifier.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "checkpoint.h"
#include "labels.h"

namespace gannf::eval {

LabelledImages open_labelled(const std::string& dir, int image_size, bool test, bool quiet) {
  data::Options opt;
  opt.partition = test ? data::Partition::Test : data::Partition::Train;
  opt.quiet = quiet;
  LabelledImages out;
  out.images = data::open_dataset(dir, image_size, 1, opt);
  out.labels = read_idx_labels(find_idx_labels(dir, test), kClasses);
  if (out.labels.size() != out.images->size())
    throw std::runtime_error(dir + ": " + std::to_string(out.images->size()) + " " +
                             (test ? "test" : "training") + " images but " +
                             std::to_string(out.labels.size()) +
                             " labels; the image and label files do not belong together");
  return out;
}

void classify(Net<float>& net, size_t n, const ImageSource& images, float* features,
              float* logits, const std::function<void(size_t)>& progress) {
  Backend<float>& be = net.backend();
  const int mb = net.max_batch();
  const size_t per = net.in_size(), F = net.layers()[feature_layer(net)].C_out;
  std::vector<float> host((size_t)mb * per);
  Buffer<float> x(be, host.size());
  for (size_t first = 0; first < n; first += mb) {
    const int k = (int)std::min<size_t>(mb, n - first);
    images(first, k, host.data());
    be.upload(x.data(), host.data(), (size_t)k * per);
    const float* y = net.forward(x.data(), k, Mode::Eval);
    if (features)
      be.download(features + first * F, net.layer_output(feature_layer(net)), (size_t)k * F);
    if (logits) be.download(logits + first * kClasses, y, (size_t)k * kClasses);
    if (progress) progress(first + k);
  }
}

ImageSource dataset_images(const data::Dataset& ds, const std::vector<uint64_t>& indices) {
  return [&ds, &indices](size_t first, int count, float* out) {
    data::get_batch(ds, indices.data() + first, count, out);
  };
}

double accuracy(const std::vector<float>& logits, const std::vector<int32_t>& labels) {
  if (labels.empty() || logits.size() != labels.size() * kClasses)
    throw std::invalid_argument("accuracy: logits and labels do not match");
  size_t right = 0;
  for (size_t i = 0; i < labels.size(); i++) {
    const float* row = logits.data() + i * kClasses;
    right += std::max_element(row, row + kClasses) - row == labels[i];
  }
  return (double)right / labels.size();
}

namespace {
double test_accuracy(Net<float>& net, const LabelledImages& test, size_t max_test) {
  const size_t n = max_test ? std::min(max_test, test.labels.size()) : test.labels.size();
  std::vector<uint64_t> idx(n);
  for (size_t i = 0; i < n; i++) idx[i] = i;
  std::vector<float> logits(n * kClasses);
  classify(net, n, dataset_images(*test.images, idx), nullptr, logits.data());
  return accuracy(logits, std::vector<int32_t>(test.labels.begin(), test.labels.begin() + n));
}
}  // namespace

TrainClassifierResult train_classifier(Net<float>& net, const LabelledImages& train,
                                       const LabelledImages& test,
                                       const TrainClassifierOptions& o) {
  Backend<float>& be = net.backend();
  const int B = o.batch_size;
  if (B < 2 || B > net.max_batch())
    throw std::invalid_argument("classifier batch size " + std::to_string(B) + ": 2.." +
                                std::to_string(net.max_batch()));
  const size_t n = o.max_train ? std::min(o.max_train, train.labels.size()) : train.labels.size();
  const int64_t steps_per_epoch = (int64_t)(n / B);  // the last partial batch is dropped
  if (steps_per_epoch < 1)
    throw std::invalid_argument("fewer training images (" + std::to_string(n) + ") than a batch");
  const int64_t total_steps = steps_per_epoch * o.epochs;
  net.init_dcgan(o.seed);
  Buffer<float> m(be, net.num_params()), v(be, net.num_params());
  Buffer<float> x(be, (size_t)B * net.in_size()), probs(be, (size_t)B * kClasses);
  std::vector<float> host((size_t)B * net.in_size());
  std::vector<uint64_t> idx(B);
  std::vector<int32_t> targets(B);
  TrainClassifierResult r;
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int epoch = 0; epoch < o.epochs; epoch++) {
    const auto perm = data::epoch_permutation(n, o.seed, (uint64_t)epoch);
    double loss_sum = 0;
    for (int64_t s = 0; s < steps_per_epoch; s++) {
      for (int i = 0; i < B; i++) {
        idx[i] = perm[(size_t)s * B + i];
        targets[i] = train.labels[idx[i]];
      }
      data::get_batch(*train.images, idx.data(), B, host.data());
      be.upload(x.data(), host.data(), host.size());
      const float* logits = net.forward(x.data(), B, Mode::Train);
      loss_sum += be.softmax_xent_forward(probs.data(), logits, targets.data(), B, kClasses);
      be.softmax_xent_backward(probs.data(), probs.data(), targets.data(), B, kClasses, 1.f / B);
      net.zero_grads();
      net.backward(probs.data(), nullptr, true);
      AdamParams ap;
      ap.beta1 = 0.9f;
      ap.lr = o.lr * (float)(1.0 - (double)r.steps / total_steps);
      be.adam_update(net.params(), m.data(), v.data(), net.grads(), net.num_params(), ap,
                     ++r.steps);
      if (!o.quiet && ((s + 1) % std::max<int64_t>(1, steps_per_epoch / 5) == 0))
        std::fprintf(stderr, "gannf-eval: epoch %d/%d, step %lld/%lld, loss %.4f, %.0f img/s\n",
                     epoch + 1, o.epochs, (long long)s + 1, (long long)steps_per_epoch,
                     loss_sum / (s + 1), (double)r.steps * B / seconds());
    }
    if (!be.all_finite(net.params(), net.num_params()))
      throw std::runtime_error("classifier training diverged (NaN or Inf in the weights)");
    r.last_epoch_loss = loss_sum / steps_per_epoch;
    r.test_accuracy = test_accuracy(net, test, o.max_test);
    if (!o.quiet)
      std::fprintf(stderr, "gannf-eval: epoch %d/%d done: loss %.4f, test accuracy %.2f%% (%.0f s)\n",
                   epoch + 1, o.epochs, r.last_epoch_loss, 100 * r.test_accuracy, seconds());
  }
  r.seconds = seconds();
  return r;
}

void save_classifier(const std::string& path, const Net<float>& net, const ClassifierConfig& cfg,
                     const std::map<std::string, std::string>& extra) {
  auto meta = extra;
  meta["gannf.classifier"] =
      nlohmann::json{{"image_size", cfg.image_size}, {"nc", cfg.nc}, {"width", cfg.width},
                     {"classes", kClasses}, {"feature_dim", cfg.feature_dim()}}
          .dump();
  meta["gannf.net"] = net.name();
  meta["format"] = "pt";
  save_safetensors(path, state_dict(net), meta);
}

std::unique_ptr<Net<float>> load_classifier(const std::string& path, Backend<float>& be,
                                            int max_batch, ClassifierConfig* cfg,
                                            std::map<std::string, std::string>* metadata) {
  const auto st = SafeTensors::load(path);
  auto it = st.metadata.find("gannf.classifier");
  if (it == st.metadata.end())
    throw std::runtime_error(path + ": not a gannf-eval classifier (no gannf.classifier in its "
                                    "metadata)");
  ClassifierConfig c;
  try {
    const auto j = nlohmann::json::parse(it->second);
    c.image_size = j.at("image_size").get<int>();
    c.nc = j.at("nc").get<int>();
    c.width = j.at("width").get<int>();
    c.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": bad gannf.classifier metadata: " + e.what());
  }
  auto net = std::make_unique<Net<float>>(be, "classifier");
  build_classifier(*net, c, max_batch);
  load_state_dict(st, *net);
  if (cfg) *cfg = c;
  if (metadata) *metadata = st.metadata;
  return net;
}

}  // namespace gannf::eval
