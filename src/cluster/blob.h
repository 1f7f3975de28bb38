// Blob codec (docs/architecture.md, Blobs): a gradient, weight or statistics blob is a
// network's flat float32 buffer as raw little-endian bytes, nothing else; the
// metadata (network, iteration, element count, layout hash, checksum) lives
// in typed columns beside it.
//
// Checksum: CRC-32C (Castagnoli), the polynomial of iSCSI, ext4 and
// PostgreSQL's own WAL, computed over the blob's bytes. Chosen over xxHash64
// because CPUs compute it in hardware (SSE4.2 crc32, ARMv8 crc32c*), so it
// costs about as much as reading the bytes, needs no third-party code, and 32
// bits are plenty to catch corruption (it guards against accidents; a
// hostile worker can forge any checksum, which is why the coordinator also
// checks sizes and finiteness). Stored as bigint in [0, 2^32).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "crc32c.h"

namespace gannf::cluster {

// CRC-32C lives in src/common (checkpoint files use it too).
using gannf::crc32c;
namespace detail {
using gannf::detail::crc32c_portable;
}  // namespace detail

// The checksum of a float buffer's blob (its little-endian bytes).
uint32_t blob_checksum(std::span<const float> values);

// A float buffer's blob bytes: a view of the floats themselves on
// little-endian hosts (no copy), a byte-swapped copy on big-endian ones.
class EncodedBlob {
 public:
  explicit EncodedBlob(std::span<const float> values);
  EncodedBlob(const EncodedBlob&) = delete;  // bytes() may point into swapped_
  EncodedBlob& operator=(const EncodedBlob&) = delete;
  std::span<const std::byte> bytes() const { return bytes_; }
  uint32_t checksum() const { return crc32c(bytes_); }
  size_t element_count() const { return bytes_.size() / 4; }

 private:
  std::vector<std::byte> swapped_;
  std::span<const std::byte> bytes_;
};

// Blob bytes seen as floats, for reading: the bytes themselves where the host
// is little-endian and they are aligned for float (libpq's binary results
// are), so a 25 MB download is not copied again; a decoded copy otherwise.
// The view is valid while the bytes live. Throws std::invalid_argument if the
// length is not a multiple of 4.
class DecodedBlob {
 public:
  DecodedBlob() = default;
  explicit DecodedBlob(std::span<const std::byte> bytes);
  explicit DecodedBlob(std::vector<float> owned) : copy_(std::move(owned)), view_(copy_) {}
  DecodedBlob(DecodedBlob&& o) noexcept;
  DecodedBlob& operator=(DecodedBlob&& o) noexcept;
  std::span<const float> floats() const { return view_; }
  size_t size() const { return view_.size(); }

 private:
  std::vector<float> copy_;
  std::span<const float> view_;
};

// Blob bytes -> floats. Throws std::invalid_argument if the byte length is not
// 4 * out.size() (decode_floats(bytes, out)) or not a multiple of 4.
void decode_floats(std::span<const std::byte> bytes, std::span<float> out);
std::vector<float> decode_floats(std::span<const std::byte> bytes);

}  // namespace gannf::cluster
