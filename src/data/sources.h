// The file-backed sources behind open_source(): a folder of images (CelebA is
// one, with a partition filter) and MNIST-style IDX files.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "dataset.h"
#include "idx_reader.h"

namespace gannf::data {

// Bumped whenever the transform changes what pixels a source gives, so that
// caches packed by an older gannf are rebuilt.
inline constexpr const char* kTransformVersion =
    "pil-convert,resize-shorter-pil-bilinear-aa,center-crop-round-half-even v1";

struct FileEntry {
  std::string rel;  // relative path, '/'-separated
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

// The JPEG/PNG/BMP files under `dir`, recursively, sorted byte-wise by
// relative path. Hidden entries (names starting with '.') are skipped;
// symbolic links are followed, each directory visited once. Throws
// std::runtime_error when `dir` cannot be read.
std::vector<FileEntry> list_image_files(const std::string& dir);

// Size and mtime of a file; false when it cannot be stat'ed.
bool stat_file(const std::string& path, FileEntry* e);

class ImageFolderSource : public Source {
 public:
  struct Spec {
    std::string kind;       // "CelebA" or "image folder"
    std::string root;       // the folder the user named (cache goes here)
    std::string image_dir;  // where the files are
    std::vector<FileEntry> files;
    std::string variant;    // "" or the partition name
    std::string settings;   // extra fingerprint lines (partition file, split)
    std::string note;       // for describe(): partition, files left out
  };
  ImageFolderSource(Spec spec, int image_size, int channels);
  size_t size() const override { return s_.files.size(); }
  int channels() const override { return channels_; }
  int image_size() const override { return size_; }
  bool get_u8(size_t index, uint8_t* out, std::string* why) const override;
  std::string item_name(size_t index) const override { return s_.files.at(index).rel; }
  std::string fingerprint() const override;
  std::string root() const override { return s_.root; }
  std::string variant() const override { return s_.variant; }
  std::string describe() const override;
  const std::string& image_dir() const { return s_.image_dir; }

 private:
  Spec s_;
  int size_, channels_;
};

class IdxSource : public Source {
 public:
  // paths: one or more IDX image files, concatenated in this order.
  IdxSource(std::vector<std::string> paths, std::string root, std::string variant, int image_size,
            int channels, bool quiet);
  size_t size() const override;
  int channels() const override { return channels_; }
  int image_size() const override { return size_; }
  bool get_u8(size_t index, uint8_t* out, std::string* why) const override;
  std::string item_name(size_t index) const override;
  std::string fingerprint() const override;
  std::string root() const override { return root_; }
  std::string variant() const override { return variant_; }
  std::string describe() const override;

 private:
  // The pixels are read on first use: a cache hit never decompresses them.
  void load() const;
  std::vector<std::string> paths_;
  std::vector<FileEntry> stats_;
  std::vector<uint32_t> declared_;
  uint32_t rows_ = 0, cols_ = 0;
  std::string root_, variant_;
  int size_, channels_;
  bool quiet_;
  mutable std::once_flag loaded_;
  mutable std::vector<IdxImages> files_;
  mutable std::vector<size_t> starts_;  // first index of each file
  mutable size_t total_ = 0;
};

}  // namespace gannf::data
