#include "dataset.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <stdexcept>

#include "hash.h"
#include "idx_reader.h"
#include "image_transform.h"
#include "packed_dataset.h"
#include "progress_bar.h"
#include "rng.h"

namespace gannf::data {

const char* partition_name(Partition p) {
  switch (p) {
    case Partition::Auto: return "auto";
    case Partition::Train: return "train";
    case Partition::Valid: return "valid";
    case Partition::Test: return "test";
    case Partition::All: return "all";
  }
  return "?";
}

Partition parse_partition(const std::string& s) {
  if (s == "auto" || s.empty()) return Partition::Auto;
  if (s == "train" || s == "0") return Partition::Train;
  if (s == "valid" || s == "val" || s == "validation" || s == "1") return Partition::Valid;
  if (s == "test" || s == "2") return Partition::Test;
  if (s == "all") return Partition::All;
  throw std::invalid_argument("unknown partition '" + s + "' (train, valid, test, all or auto)");
}

void Source::get(size_t index, float* out) const {
  const size_t n = image_floats();
  std::vector<uint8_t> px(n);
  std::string why;
  bool ok;
  try {
    ok = get_u8(index, px.data(), &why);
  } catch (const std::exception& e) {
    ok = false;
    why = e.what();
  }
  if (ok) {
    u8_to_float(px.data(), n, out);
    return;
  }
  std::fill(out, out + n, 0.f);
  std::lock_guard<std::mutex> g(warn_mu_);
  if (warned_.insert(index).second)
    std::fprintf(stderr, "warning: %s: %s (read as a blank image)\n", item_name(index).c_str(),
                 why.c_str());
}

namespace {

// A file-backed source without its cache: every item is decoded once at open
// and the unreadable ones are left out, exactly as packing does, so that a
// run's images (and their count, which workers check) are the same with and
// without the cache. The price is the decode pass of packing, without the write.
class ReadableItems : public Dataset {
 public:
  ReadableItems(std::unique_ptr<Source> src, bool quiet) : src_(std::move(src)) {
    const size_t n = src_->size(), img = src_->image_floats();
    ProgressBar bar("checking " + std::to_string(n) + " images (--no-cache)", n, !quiet);
    const size_t chunk = 1024;
    std::vector<uint8_t> buf(chunk * img);
    std::vector<char> ok(chunk);
    std::vector<std::string> why(chunk);
    for (size_t base = 0; base < n; base += chunk) {
      const long long m = (long long)std::min(chunk, n - base);
#pragma omp parallel for schedule(dynamic, 4)
      for (long long i = 0; i < m; i++) {
        why[i].clear();
        try {
          ok[i] = src_->get_u8(base + i, buf.data() + i * img, &why[i]);
        } catch (const std::exception& e) {
          ok[i] = 0;
          why[i] = e.what();
        }
      }
      for (long long i = 0; i < m; i++) {
        if (ok[i]) index_.push_back(base + i);
        else bar.warn("skipping " + src_->item_name(base + i) + ": " + why[i]);
      }
      bar.update(base + m);
    }
    skipped_ = n - index_.size();
    bar.finish(skipped_ ? ", " + std::to_string(skipped_) + " skipped" : "");
    if (skipped_ && !quiet)
      std::fprintf(stderr, "warning: skipped %zu of %zu files that are not readable JPEG/PNG/BMP "
                   "images (corrupt, truncated or another format)\n", skipped_, n);
    if (index_.empty())
      throw std::runtime_error("no readable images in " + src_->root() + ": all " + std::to_string(n) +
                               " files were skipped");
  }
  size_t size() const override { return index_.size(); }
  int channels() const override { return src_->channels(); }
  int image_size() const override { return src_->image_size(); }
  void get(size_t index, float* out) const override { src_->get(index_.at(index), out); }
  std::string describe() const override {
    return src_->describe() + (skipped_ ? " (" + std::to_string(skipped_) + " unreadable files skipped)" : "");
  }
  size_t skipped() const { return skipped_; }

 private:
  std::unique_ptr<Source> src_;
  std::vector<size_t> index_;
  size_t skipped_ = 0;
};

bool is_cache_file(const std::string& spec) {
  uint32_t w[2];
  // The magic "GANNFPK\x1a" read as two big-endian words.
  return spec.size() > 4 && spec.compare(spec.size() - 4, 4, ".bin") == 0 &&
         read_idx_header(spec, w, 2) && w[0] == 0x47414E4Eu && w[1] == 0x46504B1Au;
}
}  // namespace

std::unique_ptr<Dataset> open_dataset(const std::string& spec, int image_size, int channels,
                                      const Options& opt) {
  if (is_cache_file(spec)) {
    auto p = PackedDataset::open(spec, opt.verify_cache);
    if (p->image_size() != image_size || p->channels() != channels)
      throw std::runtime_error(spec + " holds " + std::to_string(p->image_size()) + "x" +
                               std::to_string(p->image_size()) + "x" +
                               std::to_string(p->channels()) + " images, not " +
                               std::to_string(image_size) + "x" + std::to_string(image_size) +
                               "x" + std::to_string(channels));
    return p;
  }
  std::unique_ptr<Source> src = open_source(spec, image_size, channels, opt);
  if (src->root().empty() && opt.cache_path.empty()) return src;  // synthetic: nothing to read
  if (!opt.cache) return std::make_unique<ReadableItems>(std::move(src), opt.quiet);
  if (!opt.cache_path.empty()) return open_packed(*src, opt.cache_path, opt);
  // The dataset's folder, then the user's cache folder, then the temp dir;
  // where none can be written, no cache (the same images, decoded each time).
  std::set<std::string> tried;
  std::string last_error;
  for (int where = 0; where < 3; ++where) {
    std::string path;
    try {
      path = where == 0 ? default_cache_path(*src) : where == 1 ? user_cache_path(*src) : temp_cache_path(*src);
    } catch (const std::exception&) {
      continue;
    }
    if (!tried.insert(path).second) continue;
    if (!last_error.empty() && !opt.quiet)
      std::fprintf(stderr, "warning: %s; using %s instead\n", last_error.c_str(), path.c_str());
    try {
      return open_packed(*src, path, opt);
    } catch (const CacheWriteError& e) {
      last_error = e.what();
    }
  }
  if (!opt.quiet) std::fprintf(stderr, "warning: %s; reading the images without a cache\n", last_error.c_str());
  return std::make_unique<ReadableItems>(std::move(src), opt.quiet);
}

void get_batch(const Dataset& ds, const uint64_t* indices, int n, float* out) {
  const size_t per = ds.image_floats();
  const size_t size = ds.size();
  for (int i = 0; i < n; i++)
    if (indices[i] >= size)
      throw std::out_of_range("get_batch: index " + std::to_string(indices[i]) +
                              " out of range for " + std::to_string(size) + " images");
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
  for (int i = 0; i < n; i++) ds.get(indices[i], out + (size_t)i * per);
}

std::vector<uint32_t> epoch_permutation(size_t n, uint64_t seed, uint64_t epoch) {
  if (n > (1ull << 32)) throw std::invalid_argument("epoch_permutation: n must be <= 2^32");
  std::vector<uint32_t> p(n);
  for (size_t i = 0; i < n; i++) p[i] = (uint32_t)i;
  // (seed, epoch) → one 64-bit seed; mix64 first so that nearby seeds and
  // epochs land far apart.
  Rng rng(mix64(mix64(seed ^ 0x65706F6368536565ull) + mix64(epoch + 0x9E3779B97F4A7C15ull)));
  for (size_t i = n; i > 1; i--) {
    const size_t j = (size_t)rng.below(i);
    std::swap(p[i - 1], p[j]);
  }
  return p;
}

}  // namespace gannf::data
