// CRC-32C (Castagnoli), the polynomial of iSCSI, ext4 and PostgreSQL's WAL:
// the checksum of gradient blobs (src/cluster/blob.h) and of each tensor of a
// checkpoint file (src/nn/safetensors.h). CPUs compute it in hardware, so it
// costs about as much as reading the bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace gannf {

// CRC-32C of `n` bytes. Chain pieces with crc32c(b, nb, crc32c(a, na)).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
inline uint32_t crc32c(std::span<const std::byte> bytes, uint32_t crc = 0) {
  return crc32c(bytes.data(), bytes.size(), crc);
}

namespace detail {
// The table-driven CRC-32C that crc32c() falls back to without the CPU
// instruction; exposed so that the tests can check the two agree.
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);
}  // namespace detail

}  // namespace gannf
