#include "image_decode.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

// The one stb_image implementation of gannf_data, with internal linkage so
// that another target embedding its own copy cannot collide with it.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#include <stb_image.h>

namespace gannf::data {

namespace {

// Decompression bombs: a 60 KB PNG can claim 30000 x 30000 pixels.
constexpr long long kMaxPixels = 1ll << 28;

uint32_t le32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

// A complete JPEG ends its last scan with an EOI marker (FF D9). Inside
// entropy-coded data every FF is stuffed as FF 00, so an EOI can only be a
// marker; an embedded EXIF thumbnail's EOI comes before the main scan (SOS,
// FF DA), so "an EOI with no SOS after it" tells a truncated file.
bool jpeg_complete(const uint8_t* p, size_t n) {
  size_t eoi = n;
  for (size_t i = n; i >= 2; i--)
    if (p[i - 2] == 0xFF && p[i - 1] == 0xD9) {
      eoi = i - 2;
      break;
    }
  if (eoi == n) return false;
  for (size_t i = eoi + 2; i + 1 < n; i++)
    if (p[i] == 0xFF && p[i + 1] == 0xDA) return false;
  return true;
}

// A complete PNG has an IEND chunk (zero length, type "IEND").
bool png_complete(const uint8_t* p, size_t n) {
  for (size_t i = n; i >= 8; i--)
    if (std::memcmp(p + i - 8, "\0\0\0\0IEND", 8) == 0) return true;
  return false;
}

// An uncompressed BMP's pixel array must fit in the file.
bool bmp_complete(const uint8_t* p, size_t n, std::string* why) {
  if (n < 54) return *why = "truncated BMP header", false;
  const uint32_t off = le32(p + 10), dib = le32(p + 14);
  if (dib < 40) return true;  // OS/2 BITMAPCOREHEADER: leave it to stb
  const int32_t w = (int32_t)le32(p + 18), h = (int32_t)le32(p + 22);
  const int bpp = p[28] | p[29] << 8;
  const uint32_t comp = le32(p + 30);
  if (comp != 0 && comp != 3 && comp != 6) return true;  // RLE: stb rejects those itself
  const long long ah = h < 0 ? -(long long)h : h;
  const long long stride = (((long long)w * bpp + 31) / 32) * 4;
  if (w <= 0 || ah == 0 || bpp == 0) return *why = "bad BMP header", false;
  if ((long long)off + stride * ah > (long long)n)
    return *why = "truncated BMP (pixel data ends past the end of the file)", false;
  return true;
}

}  // namespace

bool is_image_name(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& ch : ext) ch = (char)((ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch);
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp";
}

bool read_file(const std::string& path, std::string* bytes, std::string* why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return *why = std::strerror(errno), false;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    *why = std::strerror(errno);
    ::close(fd);
    return false;
  }
  bytes->resize((size_t)st.st_size);
  size_t got = 0;
  while (got < bytes->size()) {
    const ssize_t r = ::read(fd, bytes->data() + got, bytes->size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      *why = std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  bytes->resize(got);
  ::close(fd);
  return true;
}

bool decode_image_memory(const uint8_t* p, size_t n, Image8* out, std::string* why) {
  if (n == 0) return *why = "empty file", false;
  if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) {
    if (!jpeg_complete(p, n)) return *why = "truncated JPEG (no end-of-image marker)", false;
  } else if (n >= 8 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) {
    if (!png_complete(p, n)) return *why = "truncated PNG (no IEND chunk)", false;
  } else if (n >= 2 && p[0] == 'B' && p[1] == 'M') {
    if (!bmp_complete(p, n, why)) return false;
  } else {
    return *why = "not a JPEG, PNG or BMP file", false;
  }
  if (n > (size_t)INT32_MAX) return *why = "file too large", false;
  int w = 0, h = 0, c = 0;
  if (!stbi_info_from_memory(p, (int)n, &w, &h, &c))
    return *why = std::string("cannot decode: ") + stbi_failure_reason(), false;
  if (w <= 0 || h <= 0 || (long long)w * h > kMaxPixels)
    return *why = "unreasonable image size " + std::to_string(w) + "x" + std::to_string(h), false;
  uint8_t* px = stbi_load_from_memory(p, (int)n, &w, &h, &c, 0);
  if (!px) return *why = std::string("cannot decode: ") + stbi_failure_reason(), false;
  out->w = w;
  out->h = h;
  out->c = c;
  out->px.assign(px, px + (size_t)w * h * c);
  stbi_image_free(px);
  return true;
}

bool decode_image_file(const std::string& path, Image8* out, std::string* why) {
  std::string bytes;
  if (!read_file(path, &bytes, why)) return false;
  return decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), out,
                             why);
}

}  // namespace gannf::data
