// gannf datasets: one interface over a CelebA folder, any folder of images,
// MNIST-style IDX files, a built-in synthetic set, and the packed cache that
// training reads from.
//
// Index → image is the same on every machine: files are taken in byte-wise
// sorted order of their relative paths (never directory order), IDX images in
// file order, synthetic images from (seed, index) alone, and the packed cache
// keeps the source order (skipping unreadable files). Workers on different
// machines receive only indices, so this is what makes them agree;
// PackedDataset::content_hash() lets them check it.
//
// Every image comes out as (C, S, S) floats in [-1, 1] through the transform
// of torchvision's DCGAN pipeline (image_transform.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

namespace gannf::data {

// CelebA's list_eval_partition.txt splits (0 train, 1 valid, 2 test); for
// IDX folders Train is train-*, Test is t10k-*, All is both.
// Auto: CelebA train when the partition file is there (all images when it is
// not); IDX train.
enum class Partition { Auto, Train, Valid, Test, All };
const char* partition_name(Partition p);
// "auto", "train", "valid", "test", "all" or "0", "1", "2"; throws std::invalid_argument.
Partition parse_partition(const std::string& s);

struct Options {
  Partition partition = Partition::Auto;
  // Pack the source into a cache file once and read that (memory-mapped).
  // Synthetic datasets are never cached unless cache_path is given.
  bool cache = true;
  // Explicit cache file; empty: default_cache_path() (packed_dataset.h).
  std::string cache_path;
  // Check the cache's pixel checksum when opening it (reads the whole file
  // once, ~GB/s; a damaged cache is rebuilt instead of trusted).
  bool verify_cache = true;
  // Synthetic: the images are a function of (seed, index).
  uint64_t seed = 0;
  // No progress bar, notes or warnings on stderr (counts are still kept).
  bool quiet = false;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual int channels() const = 0;
  virtual int image_size() const = 0;
  // Image `index` as (C, S, S) floats in [-1, 1]. Thread-safe.
  virtual void get(size_t index, float* out) const = 0;
  // One line: what this is, where from, how many, which transform.
  virtual std::string describe() const = 0;
  size_t image_floats() const { return (size_t)channels() * image_size() * image_size(); }
};

// A dataset read from its original files, one image at a time; what the
// packed cache is made from.
class Source : public Dataset {
 public:
  // Image `index` as (C, S, S) uint8 after the transform. False, with a
  // one-line reason in *why, when the item cannot be read or decoded.
  // Thread-safe.
  virtual bool get_u8(size_t index, uint8_t* out, std::string* why) const = 0;
  // What a warning calls item `index`: a relative path, or "file#123".
  virtual std::string item_name(size_t index) const = 0;
  // Everything a packed copy depends on, as text: kind, relative paths,
  // sizes and mtimes of the files, transform settings (size, channels,
  // partition) and the transform's version.
  virtual std::string fingerprint() const = 0;
  // The folder the data lives in (where the cache goes by default); empty
  // for sources without files.
  virtual std::string root() const = 0;
  // Tells caches of one folder apart beyond S and C ("" or e.g. "test").
  virtual std::string variant() const { return ""; }
  // get_u8 scaled to [-1, 1]. An unreadable item warns once on stderr and
  // reads as zeros; the packed cache skips such items instead.
  void get(size_t index, float* out) const override;

 private:
  mutable std::mutex warn_mu_;
  mutable std::unordered_set<size_t> warned_;
};

// The source behind `spec`, without any cache:
//   "synthetic" or "synthetic:N"      the built-in shapes (N images, default 10000)
//   a folder containing (or being) img_align_celeba, or containing
//     celeba/img_align_celeba         CelebA, list_eval_partition.txt honoured
//   a folder (or its raw/ subfolder) with *idx3-ubyte[.gz] files,
//     or one such file                MNIST-style IDX
//   any other folder                  its JPEG/PNG/BMP files, recursively
// Throws std::runtime_error naming the path when it is missing, unreadable or
// holds no images; std::invalid_argument for bad sizes (image_size 1..4096,
// channels 1 or 3).
std::unique_ptr<Source> open_source(const std::string& spec, int image_size, int channels,
                                    const Options& opt = {});

// What training uses: open_source(), then (options.cache) the packed cache,
// built on first use and rebuilt when stale or damaged. A spec that is itself
// a cache file (.bin) is opened directly.
std::unique_ptr<Dataset> open_dataset(const std::string& spec, int image_size, int channels,
                                      const Options& opt = {});

// n images (indices[i]) into out (n, C, S, S), in parallel over images.
void get_batch(const Dataset& ds, const uint64_t* indices, int n, float* out);

// The permutation of [0, n) for one epoch: Fisher-Yates driven by gannf::Rng
// seeded from (seed, epoch) mixed. Identical on every machine. n < 2^32.
std::vector<uint32_t> epoch_permutation(size_t n, uint64_t seed, uint64_t epoch);

}  // namespace gannf::data
