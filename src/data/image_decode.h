// JPEG / PNG / BMP decoding through stb_image, with the checks stb leaves out:
// stb happily returns a half-grey picture for a truncated JPEG or BMP, so the
// files are checked for their end markers (JPEG EOI after the last scan, PNG
// IEND, BMP pixel array within the file) before decoding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "image_transform.h"

namespace gannf::data {

// True for names ending in .jpg .jpeg .png .bmp (any case).
bool is_image_name(const std::string& name);

// Decodes to the file's own channel count (1 L, 2 LA, 3 RGB, 4 RGBA). False,
// with a one-line reason in *why, for an unreadable, empty, truncated,
// corrupt or non-image file. Thread-safe.
bool decode_image_memory(const uint8_t* data, size_t n, Image8* out, std::string* why);
bool decode_image_file(const std::string& path, Image8* out, std::string* why);

// Reads a whole file; false with the reason (strerror) on failure.
bool read_file(const std::string& path, std::string* bytes, std::string* why);

}  // namespace gannf::data
