#include "idx_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace gannf::data {

namespace {
uint32_t be32(const uint8_t* p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

struct Gz {
  gzFile f;
  explicit Gz(const std::string& path) : f(gzopen(path.c_str(), "rb")) {}
  ~Gz() {
    if (f) gzclose(f);
  }
  // Reads up to n bytes; returns the count, -1 on a stream error.
  long long read(void* dst, size_t n) {
    size_t got = 0;
    while (got < n) {
      const unsigned chunk = (unsigned)std::min<size_t>(n - got, 1u << 30);
      const int r = gzread(f, (char*)dst + got, chunk);
      if (r < 0) return -1;
      if (r == 0) break;
      got += (size_t)r;
    }
    return (long long)got;
  }
  std::string error() {
    int e = 0;
    const char* m = gzerror(f, &e);
    return e == Z_ERRNO ? std::strerror(errno) : (m ? m : "read error");
  }
};
}  // namespace

bool read_idx_header(const std::string& path, uint32_t* out, int words) {
  Gz gz(path);
  if (!gz.f || words < 1 || words > 8) return false;
  uint8_t h[32];
  if (gz.read(h, 4 * (size_t)words) != 4 * words) return false;
  for (int i = 0; i < words; i++) out[i] = be32(h + 4 * i);
  return true;
}

IdxImages read_idx_images(const std::string& path) {
  Gz gz(path);
  if (!gz.f) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  gzbuffer(gz.f, 1 << 18);
  uint8_t h[16];
  if (gz.read(h, 16) != 16) throw std::runtime_error(path + ": not an IDX file (header cut short)");
  const uint32_t magic = be32(h);
  if (magic != 0x00000803) {
    char m[16];
    std::snprintf(m, sizeof m, "0x%08x", magic);
    const std::string hint = magic == 0x00000801 ? " (an IDX label file, not images)" : "";
    throw std::runtime_error(path + ": not an IDX image file: magic " + m + hint +
                             ", expected 0x00000803");
  }
  IdxImages out;
  out.declared = be32(h + 4);
  out.rows = be32(h + 8);
  out.cols = be32(h + 12);
  if (out.rows == 0 || out.cols == 0 || out.rows > 4096 || out.cols > 4096)
    throw std::runtime_error(path + ": unreasonable IDX image size " + std::to_string(out.rows) +
                             "x" + std::to_string(out.cols));
  const size_t per = (size_t)out.rows * out.cols;
  out.pixels.resize(per * out.declared);
  const long long got = gz.read(out.pixels.data(), out.pixels.size());
  if (got < 0) {
    out.problem = "damaged (" + gz.error() + ")";
    // gzread reports the error without saying how much it delivered before
    // it; reread up to the damage with a fresh stream.
    Gz again(path);
    gzbuffer(again.f, 1 << 18);
    again.read(h, 16);
    size_t ok = 0;
    std::vector<uint8_t> one(per);
    while (ok < out.declared && again.read(one.data(), per) == (long long)per) {
      std::memcpy(out.pixels.data() + ok * per, one.data(), per);
      ok++;
    }
    out.count = (uint32_t)ok;
  } else {
    out.count = (uint32_t)((size_t)got / per);
    if (out.count < out.declared) out.problem = "cut short";
  }
  if (out.count < out.declared)
    out.problem += ": holds " + std::to_string(out.count) + " complete images of " +
                   std::to_string(out.declared);
  else
    out.problem.clear();
  out.pixels.resize(per * out.count);
  return out;
}

}  // namespace gannf::data
