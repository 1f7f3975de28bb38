// The packed cache: a dataset decoded and transformed once, stored as uint8
// (C, S, S) images in one file that training memory-maps.
//
// File layout (little-endian):
//   [0, 4096)        header (CacheHeader in packed_dataset.cpp): magic
//                    "GANNFPK\x1a", format version, file size, count, C, S,
//                    offsets, the source's fingerprint (a 128-bit hash of
//                    Source::fingerprint(): relative paths, sizes and mtimes
//                    of the files, image size, channels, partition,
//                    transform version), a checksum of the data, the
//                    source's description, and a checksum of the header
//   [4096, ...)      count x C x S x S uint8 pixels, source order
//   then, 8-aligned  count x uint32: the source index of each packed image
//                    (unreadable source files are skipped, so they differ)
//
// A cache is written to a temporary file, fsync'ed and renamed into place,
// so a reader never sees half a cache. One whose header, size, checksum or
// fingerprint does not check out is rebuilt, never trusted.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dataset.h"

namespace gannf::data {

inline constexpr uint32_t kCacheVersion = 1;

struct PackStats {
  size_t source_count = 0;  // items in the source
  size_t packed = 0;        // images written
  size_t skipped = 0;       // unreadable items
  std::vector<std::string> skipped_items;  // "name: reason", source order
  double seconds = 0;
};

// Writing the cache failed (permissions, disk full): open_dataset then tries
// the per-user cache folder.
struct CacheWriteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class PackedDataset : public Dataset {
 public:
  ~PackedDataset() override;
  PackedDataset(const PackedDataset&) = delete;
  PackedDataset& operator=(const PackedDataset&) = delete;

  // Opens and checks a cache file: nullptr, with the reason in *why, when it
  // is missing, foreign, damaged, truncated, or (expect given) packed from
  // other files or settings than `expect`'s. verify: also check the data
  // checksum (reads the whole file once).
  static std::unique_ptr<PackedDataset> try_open(const std::string& path, const Source* expect,
                                                 bool verify, std::string* why);
  // The same, throwing std::runtime_error with the path and the reason.
  static std::unique_ptr<PackedDataset> open(const std::string& path, bool verify = true);

  size_t size() const override { return count_; }
  int channels() const override { return channels_; }
  int image_size() const override { return size_; }
  // x / 127.5 - 1 of the stored uint8 pixels.
  void get(size_t index, float* out) const override;
  std::string describe() const override;

  // (C, S, S) uint8 of image `index`, inside the mapping.
  const uint8_t* pixels(size_t index) const { return data_ + index * image_bytes_; }
  // Checksum of the stored data: equal on two machines ⇒ same images, same order.
  uint64_t content_hash() const { return content_hash_; }
  // Which source item packed image `index` came from.
  uint32_t source_index(size_t index) const;
  uint64_t source_count() const { return source_count_; }
  uint64_t skipped() const { return skipped_; }
  const std::string& path() const { return path_; }
  const std::string& source_description() const { return source_desc_; }

  // Set by open_packed(): whether this open (re)built the file, why, and the
  // packing counts (zero when it was reused).
  bool built() const { return built_; }
  const std::string& build_reason() const { return build_reason_; }
  const PackStats& pack_stats() const { return stats_; }

 private:
  PackedDataset() = default;
  friend std::unique_ptr<PackedDataset> open_packed(const Source&, const std::string&,
                                                    const Options&);
  std::string path_, source_desc_;
  const uint8_t* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint8_t* data_ = nullptr;
  const uint8_t* index_ = nullptr;
  size_t count_ = 0, image_bytes_ = 0;
  int channels_ = 0, size_ = 0;
  uint64_t content_hash_ = 0, source_count_ = 0, skipped_ = 0;
  bool built_ = false;
  std::string build_reason_;
  PackStats stats_;
};

// Decodes and transforms every item of `src` (in parallel, OpenMP), skipping
// unreadable ones with one warning each and a total, and writes the cache to
// `path` atomically. Progress on stderr unless quiet. Throws
// std::runtime_error naming the source when nothing could be read, and
// CacheWriteError when the file cannot be written.
PackStats pack_dataset(const Source& src, const std::string& path, bool quiet);

// The cache of `src` at `path`: reused when valid, else (re)built — under a
// lock file, so processes starting together pack it once.
std::unique_ptr<PackedDataset> open_packed(const Source& src, const std::string& path,
                                           const Options& opt);

// ".gannf-cache-<S>x<S>x<C>[-<variant>].bin"
std::string cache_file_name(const Source& src);
// <root>/<cache_file_name> when the dataset folder is writable (and not under
// /usr, which belongs to the package manager), else user_cache_path().
std::string default_cache_path(const Source& src);
// $XDG_CACHE_HOME/gannf/ (or ~/.cache/gannf/) + <folder name>-<hash of its
// absolute path>-<S>x<S>x<C>[-<variant>].bin
std::string user_cache_path(const Source& src);
// The same name in the temp dir ($TMPDIR or /tmp, gannf-cache-<uid>/): the
// last place tried before reading without a cache.
std::string temp_cache_path(const Source& src);

}  // namespace gannf::data
