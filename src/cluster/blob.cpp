#include "blob.h"

#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>

namespace gannf::cluster {

EncodedBlob::EncodedBlob(std::span<const float> values) {
  if constexpr (std::endian::native == std::endian::little) {
    bytes_ = std::as_bytes(values);
  } else {
    swapped_.resize(values.size() * 4);
    for (size_t i = 0; i < values.size(); ++i) {
      uint32_t u = __builtin_bswap32(std::bit_cast<uint32_t>(values[i]));
      std::memcpy(&swapped_[4 * i], &u, 4);
    }
    bytes_ = swapped_;
  }
}

uint32_t blob_checksum(std::span<const float> values) { return EncodedBlob(values).checksum(); }

void decode_floats(std::span<const std::byte> bytes, std::span<float> out) {
  if (bytes.size() != out.size() * 4)
    throw std::invalid_argument("blob has " + std::to_string(bytes.size()) + " bytes, expected " +
                                std::to_string(out.size()) + " float32 values (" +
                                std::to_string(out.size() * 4) + " bytes)");
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  if constexpr (std::endian::native == std::endian::big) {
    for (float& f : out) f = std::bit_cast<float>(__builtin_bswap32(std::bit_cast<uint32_t>(f)));
  }
}

std::vector<float> decode_floats(std::span<const std::byte> bytes) {
  if (bytes.size() % 4 != 0)
    throw std::invalid_argument("blob has " + std::to_string(bytes.size()) +
                                " bytes, not a whole number of float32 values");
  std::vector<float> out(bytes.size() / 4);
  decode_floats(bytes, out);
  return out;
}

DecodedBlob::DecodedBlob(std::span<const std::byte> bytes) {
  if (bytes.size() % 4 != 0)
    throw std::invalid_argument("blob has " + std::to_string(bytes.size()) +
                                " bytes, not a whole number of float32 values");
  if (std::endian::native == std::endian::little && reinterpret_cast<uintptr_t>(bytes.data()) % alignof(float) == 0) {
    view_ = std::span<const float>(reinterpret_cast<const float*>(bytes.data()), bytes.size() / 4);
  } else {
    copy_ = decode_floats(bytes);
    view_ = copy_;
  }
}

DecodedBlob::DecodedBlob(DecodedBlob&& o) noexcept { *this = std::move(o); }

DecodedBlob& DecodedBlob::operator=(DecodedBlob&& o) noexcept {
  const bool owned = !o.copy_.empty() && o.view_.data() == o.copy_.data();
  copy_ = std::move(o.copy_);
  view_ = owned ? std::span<const float>(copy_) : o.view_;
  o.view_ = {};
  return *this;
}

}  // namespace gannf::cluster
