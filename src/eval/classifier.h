// The classifier behind gannf-eval (its layers: classifier_net.h): data with
// labels, running it over images, training it, and its model file.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "classifier_net.h"
#include "dataset.h"

namespace gannf::eval {

// One split of an MNIST-style IDX folder (Fashion-MNIST) through src/data's
// transform (the training data's), and its labels in the same order.
struct LabelledImages {
  std::unique_ptr<data::Dataset> images;
  std::vector<int32_t> labels;
};
LabelledImages open_labelled(const std::string& dir, int image_size, bool test, bool quiet);

// Writes images first .. first+count-1, (count, nc, S, S), to out.
using ImageSource = std::function<void(size_t first, int count, float* out)>;
// Runs n images through the classifier in eval mode, max_batch at a time;
// writes (n, feature_dim) features and/or (n, 10) logits (either may be
// null). `progress(done)` is called after each batch when given.
void classify(Net<float>& net, size_t n, const ImageSource& images, float* features,
              float* logits, const std::function<void(size_t)>& progress = {});
ImageSource dataset_images(const data::Dataset& ds, const std::vector<uint64_t>& indices);
// Fraction of rows whose largest logit is the label.
double accuracy(const std::vector<float>& logits, const std::vector<int32_t>& labels);

struct TrainClassifierOptions {
  int epochs = 5;
  int batch_size = 128;
  float lr = 1e-3f;          // Adam's, decayed linearly to 0 over the run
  uint64_t seed = 1;         // initial weights and data order
  size_t max_train = 0;      // use the first N training images (0: all), for tests
  size_t max_test = 0;       // judge on the first N test images (0: all)
  bool quiet = false;        // no progress lines on stderr
};
struct TrainClassifierResult {
  double test_accuracy = 0;
  double last_epoch_loss = 0;  // mean training loss of the last epoch
  int64_t steps = 0;
  double seconds = 0;
};
TrainClassifierResult train_classifier(Net<float>& net, const LabelledImages& train,
                                       const LabelledImages& test,
                                       const TrainClassifierOptions& o);

// A classifier file: the net's state_dict as safetensors (PyTorch names),
// with the ClassifierConfig and `extra` (how it was trained) in the metadata.
void save_classifier(const std::string& path, const Net<float>& net, const ClassifierConfig& cfg,
                     const std::map<std::string, std::string>& extra);
// Reads the config from the metadata, builds the net and loads it. Throws
// std::runtime_error naming the file and the problem.
std::unique_ptr<Net<float>> load_classifier(const std::string& path, Backend<float>& be,
                                            int max_batch, ClassifierConfig* cfg,
                                            std::map<std::string, std::string>* metadata = nullptr);

}  // namespace gannf::eval
