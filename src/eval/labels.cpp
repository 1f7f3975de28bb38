#include "labels.h"

#include <zlib.h>

#include <filesystem>
#include <memory>
#include <stdexcept>

namespace gannf::eval {

std::vector<int32_t> read_idx_labels(const std::string& path, int classes) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> f(gzopen(path.c_str(), "rb"), gzclose);
  if (!f) throw std::runtime_error(path + ": cannot open the label file");
  uint8_t h[8];
  if (gzread(f.get(), h, 8) != 8) throw std::runtime_error(path + ": IDX header cut short");
  const uint32_t magic = (uint32_t)h[0] << 24 | h[1] << 16 | h[2] << 8 | h[3];
  const uint32_t n = (uint32_t)h[4] << 24 | h[5] << 16 | h[6] << 8 | h[7];
  if (magic != 0x00000801)
    throw std::runtime_error(path + ": not an IDX label file (magic " + std::to_string(magic) + ")");
  if (n > (1u << 28)) throw std::runtime_error(path + ": implausible label count " + std::to_string(n));
  std::vector<uint8_t> raw(n);
  if (n && gzread(f.get(), raw.data(), n) != (int)n)
    throw std::runtime_error(path + ": " + std::to_string(n) + " labels announced, file cut short");
  std::vector<int32_t> out(n);
  for (uint32_t i = 0; i < n; i++) {
    if (raw[i] >= classes)
      throw std::runtime_error(path + ": label " + std::to_string(raw[i]) + " at " +
                               std::to_string(i) + " is not one of the " +
                               std::to_string(classes) + " classes");
    out[i] = raw[i];
  }
  return out;
}

std::string find_idx_labels(const std::string& dir, bool test) {
  namespace fs = std::filesystem;
  const std::string name = std::string(test ? "t10k" : "train") + "-labels-idx1-ubyte";
  for (const fs::path& d : {fs::path(dir), fs::path(dir) / "raw"})
    for (const char* ext : {"", ".gz"}) {
      std::error_code ec;
      if (fs::is_regular_file(d / (name + ext), ec)) return (d / (name + ext)).string();
    }
  throw std::runtime_error("no " + name + "[.gz] in " + dir +
                           " (the classifier needs Fashion-MNIST's labels: apt-get install "
                           "dataset-fashion-mnist, or --dataset a folder that has them)");
}

}  // namespace gannf::eval
