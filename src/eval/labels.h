// Class labels of an MNIST-style IDX dataset (Fashion-MNIST): the label file
// beside the images that src/data reads, in the same order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gannf::eval {

// The labels of an IDX label file (magic 0x00000801), gzipped or raw. Throws
// std::runtime_error naming the path for a missing, short or damaged file, or
// a label outside [0, classes).
std::vector<int32_t> read_idx_labels(const std::string& path, int classes);

// train-labels-idx1-ubyte[.gz] (test: t10k-labels-…) in `dir` or dir/raw, as
// find the image files; throws std::runtime_error saying what is missing.
std::string find_idx_labels(const std::string& dir, bool test);

}  // namespace gannf::eval
