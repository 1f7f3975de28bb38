// MNIST-style IDX image files (magic 0x00000803: unsigned bytes, 3
// dimensions n x rows x cols, big-endian sizes), gzipped or raw — zlib's
// gzread reads both.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gannf::data {

struct IdxImages {
  uint32_t count = 0;     // complete images held in pixels
  uint32_t declared = 0;  // images the header announces (more when truncated)
  uint32_t rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // (count, rows, cols)
  std::string problem;          // non-empty when the file was cut short or damaged
};

// Reads an IDX image file. A file cut short, or whose gzip stream breaks off,
// keeps the complete images before the damage and says so in `problem`.
// Throws std::runtime_error naming the path for a missing file, a wrong magic
// (an IDX label file, say) or a header that cannot be read.
IdxImages read_idx_images(const std::string& path);

// Reads the first `words` big-endian uint32 of a file (through gzip if it is
// gzipped): magic, then the dimensions. False when the file is shorter or
// cannot be opened.
bool read_idx_header(const std::string& path, uint32_t* out, int words);

}  // namespace gannf::data
