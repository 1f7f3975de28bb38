// The safetensors format (https://github.com/huggingface/safetensors): fixtures
// from PyTorch and model checkpoints that PyTorch loads with
// safetensors.torch.load_file.
//
// Layout of a file:
//   8 bytes   N, the header's length, unsigned little-endian
//   N bytes   UTF-8 JSON object: {"__metadata__": {str: str, ...},
//                                 "<name>": {"dtype": "F32", "shape": [..],
//                                            "data_offsets": [begin, end]}, ...}
//   rest      the data section; offsets are relative to its start
//
// The reader trusts nothing: every size, offset and type is checked, the
// tensors must tile the data section exactly (no gap, no overlap, nothing
// left over), and any violation throws std::runtime_error naming the file and
// what is wrong. The writer produces the same bytes as the reference
// implementation (the Rust core behind safetensors' Python package):
// `__metadata__` first, then the tensors by descending dtype rank (widest
// types first, so every tensor stays aligned) and by name within a dtype, the
// header padded with spaces to a multiple of 8 bytes. With several metadata
// keys the reference's order is a hash map's, so there we write them sorted.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace gannf {

// Bytes per element of a safetensors dtype ("F32" -> 4); 0 when the dtype is
// unknown or not byte-sized (F4, F6_*), which this codec does not handle.
size_t st_dtype_size(const std::string& dtype);

// A shape as the header writes it, "[4,3,64,64]" ("[]" for a scalar): for messages.
std::string st_shape_str(const std::vector<int64_t>& shape);

// One tensor: raw little-endian bytes, row-major.
struct StTensor {
  std::string dtype;           // "F32", "F64", "I64", ... (see st_dtype_size)
  std::vector<int64_t> shape;  // [] is a scalar (one element)
  std::vector<uint8_t> data;   // numel() * st_dtype_size(dtype) bytes

  size_t numel() const;
  static StTensor f32(std::vector<int64_t> shape, const float* v);
  static StTensor f64(std::vector<int64_t> shape, const double* v);
  static StTensor i64(std::vector<int64_t> shape, const int64_t* v);
  static StTensor f32(std::vector<int64_t> shape, const std::vector<float>& v);
  static StTensor f64(std::vector<int64_t> shape, const std::vector<double>& v);
  static StTensor i64(std::vector<int64_t> shape, const std::vector<int64_t>& v);
};

// A parsed file. Lookups of a missing tensor throw std::runtime_error naming
// the file and the tensor.
class SafeTensors {
 public:
  static SafeTensors load(const std::string& path);
  // `name` is only used in error messages (a path, or "<memory>").
  static SafeTensors parse(const uint8_t* bytes, size_t n, const std::string& name);
  static SafeTensors parse(const std::vector<uint8_t>& bytes, const std::string& name);

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const StTensor& at(const std::string& name) const;
  // Values converted to the requested type. floats()/doubles() accept F16,
  // BF16, F32 and F64; ints() accepts BOOL and the integer dtypes. Another
  // dtype throws, naming the tensor and its dtype.
  std::vector<float> floats(const std::string& name) const;
  std::vector<double> doubles(const std::string& name) const;
  std::vector<int64_t> ints(const std::string& name) const;

  // Tensor names in the order of their data in the file.
  const std::vector<std::string>& names() const { return order_; }
  size_t size() const { return order_.size(); }
  const std::string& source() const { return source_; }
  // Whether the file carried per-tensor checksums (kStChecksumKey), all of
  // which parse() verified; gannf files written before they existed do not.
  bool checksummed() const { return checksummed_; }

  std::map<std::string, std::string> metadata;  // the header's __metadata__

 private:
  std::string source_;
  bool checksummed_ = false;
  std::map<std::string, StTensor> tensors_;
  std::vector<std::string> order_;
};

using StEntries = std::vector<std::pair<std::string, StTensor>>;

// Integrity of checkpoint files: this metadata key holds a JSON object
// {"<tensor>": "<CRC-32C of its data bytes, 8 hex digits>", ...}. Metadata
// values are plain strings, so PyTorch's loader reads such a file unchanged.
// When a file has the key, SafeTensors::parse checks every tensor against it
// and refuses the file naming the first damaged tensor; a tensor without an
// entry, or an entry without a tensor, is refused too.
inline constexpr const char* kStChecksumKey = "gannf.crc32c";
// `metadata` plus the checksums of `tensors` under kStChecksumKey.
std::map<std::string, std::string> with_checksums(const StEntries& tensors,
                                                  std::map<std::string, std::string> metadata);

// The file's bytes. Throws std::invalid_argument on a duplicate or empty name,
// the reserved name `__metadata__`, an unknown dtype, a negative dimension, or
// data whose size does not match dtype and shape.
std::vector<uint8_t> serialize_safetensors(const StEntries& tensors,
                                           const std::map<std::string, std::string>& metadata = {});
// Writes atomically: a temporary file in the same directory, fsync, rename over
// `path`, fsync of the directory. A crash leaves either the old file or the new
// one, never a torn one. Throws std::runtime_error naming the path on I/O errors.
void save_safetensors(const std::string& path, const StEntries& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace gannf
