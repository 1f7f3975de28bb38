#include "safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "crc32c.h"

namespace gannf {

// Data are copied byte for byte between the file and host values.
static_assert(std::endian::native == std::endian::little,
              "the safetensors codec assumes a little-endian host");

namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// The reference's limit: a longer header is a corrupt length, not a real file.
constexpr uint64_t kMaxHeader = 100'000'000;

struct DtypeInfo {
  const char* name;
  size_t size;  // bytes per element; 0: sub-byte, not supported here
  int rank;     // the reference's Dtype enum order, which sorts the data section
};
// The reference's enum, in its order.
constexpr DtypeInfo kDtypes[] = {
    {"BOOL", 1, 0},     {"F4", 0, 1},       {"F6_E2M3", 0, 2},  {"F6_E3M2", 0, 3},
    {"U8", 1, 4},       {"I8", 1, 5},       {"F8_E5M2", 1, 6},  {"F8_E4M3", 1, 7},
    {"F8_E8M0", 1, 8},  {"I16", 2, 9},      {"U16", 2, 10},     {"F16", 2, 11},
    {"BF16", 2, 12},    {"I32", 4, 13},     {"U32", 4, 14},     {"F32", 4, 15},
    {"C64", 8, 16},     {"F64", 8, 17},     {"I64", 8, 18},     {"U64", 8, 19},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

// numel * elem_size in bytes, or false on overflow / negative dimension.
bool byte_size(const std::vector<int64_t>& shape, size_t elem, uint64_t& out) {
  uint64_t n = elem;
  for (auto s : shape) {
    if (s < 0) return false;
    if (__builtin_mul_overflow(n, (uint64_t)s, &n)) return false;
  }
  out = n;
  return true;
}

template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float f = std::ldexp((float)mant, -24);
    return sign ? -f : f;
  }
  const uint32_t bits = exp == 31 ? sign | 0x7f800000u | (mant << 13)
                                  : sign | ((exp + 112) << 23) | (mant << 13);
  return std::bit_cast<float>(bits);
}

template <class T>
std::vector<T> tensor_as_float(const StTensor& t, const std::string& src, const std::string& name) {
  const size_t n = t.numel();
  std::vector<T> v(n);
  const uint8_t* p = t.data.data();
  if (t.dtype == "F32") {
    for (size_t i = 0; i < n; i++) v[i] = (T)load_le<float>(p + 4 * i);
  } else if (t.dtype == "F64") {
    for (size_t i = 0; i < n; i++) v[i] = (T)load_le<double>(p + 8 * i);
  } else if (t.dtype == "F16") {
    for (size_t i = 0; i < n; i++) v[i] = (T)half_to_float(load_le<uint16_t>(p + 2 * i));
  } else if (t.dtype == "BF16") {
    for (size_t i = 0; i < n; i++)
      v[i] = (T)std::bit_cast<float>((uint32_t)load_le<uint16_t>(p + 2 * i) << 16);
  } else {
    throw std::runtime_error("safetensors: " + src + ": tensor '" + name + "' has dtype " +
                             t.dtype + ", not a floating-point type");
  }
  return v;
}

std::string json_what(const std::exception& e) {
  // nlohmann prefixes "[json.exception.parse_error.101] "; the rest says it.
  std::string w = e.what();
  if (w.rfind("[json.exception.", 0) == 0) {
    auto close = w.find("] ");
    if (close != std::string::npos) w = w.substr(close + 2);
  }
  return w;
}

}  // namespace

size_t st_dtype_size(const std::string& dtype) {
  const DtypeInfo* d = find_dtype(dtype);
  return d ? d->size : 0;
}

std::string st_shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

size_t StTensor::numel() const {
  size_t n = 1;
  for (auto s : shape) n *= (size_t)s;
  return n;
}

template <class V>
static StTensor make_tensor(const char* dtype, std::vector<int64_t> shape, const V* v) {
  StTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  for (auto s : t.shape)
    if (s < 0) throw std::invalid_argument("safetensors: negative dimension in shape " + st_shape_str(t.shape));
  const size_t bytes = t.numel() * sizeof(V);
  t.data.resize(bytes);
  if (bytes) std::memcpy(t.data.data(), v, bytes);
  return t;
}

StTensor StTensor::f32(std::vector<int64_t> shape, const float* v) {
  return make_tensor("F32", std::move(shape), v);
}
StTensor StTensor::f64(std::vector<int64_t> shape, const double* v) {
  return make_tensor("F64", std::move(shape), v);
}
StTensor StTensor::i64(std::vector<int64_t> shape, const int64_t* v) {
  return make_tensor("I64", std::move(shape), v);
}
// The vector overloads check that the values fill the shape.
static void check_count(const std::vector<int64_t>& shape, size_t have) {
  StTensor t;
  t.shape = shape;
  for (auto s : shape)
    if (s < 0) throw std::invalid_argument("safetensors: negative dimension in shape " + st_shape_str(shape));
  if (t.numel() != have)
    throw std::invalid_argument("safetensors: shape " + st_shape_str(shape) + " has " +
                                std::to_string(t.numel()) + " elements, given " +
                                std::to_string(have) + " values");
}
StTensor StTensor::f32(std::vector<int64_t> shape, const std::vector<float>& v) {
  check_count(shape, v.size());
  return f32(std::move(shape), v.data());
}
StTensor StTensor::f64(std::vector<int64_t> shape, const std::vector<double>& v) {
  check_count(shape, v.size());
  return f64(std::move(shape), v.data());
}
StTensor StTensor::i64(std::vector<int64_t> shape, const std::vector<int64_t>& v) {
  check_count(shape, v.size());
  return i64(std::move(shape), v.data());
}

// ---- reader -------------------------------------------------------------------

SafeTensors SafeTensors::parse(const std::vector<uint8_t>& bytes, const std::string& name) {
  return parse(bytes.data(), bytes.size(), name);
}

SafeTensors SafeTensors::parse(const uint8_t* p, size_t n, const std::string& src) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error("safetensors: " + src + ": " + what);
  };
  if (n < 8)
    fail("truncated: " + std::to_string(n) +
         " bytes, too short for the 8-byte header length that starts the file");
  const uint64_t hlen = load_le<uint64_t>(p);
  if (hlen > kMaxHeader)
    fail("header length " + std::to_string(hlen) + " exceeds the format's limit of " +
         std::to_string(kMaxHeader) + " bytes: not a safetensors file, or a corrupt one");
  if (hlen > n - 8)
    fail("truncated: the header length says " + std::to_string(hlen) + " bytes but only " +
         std::to_string(n - 8) + " follow it (file of " + std::to_string(n) + " bytes)");
  const char* hp = reinterpret_cast<const char*>(p + 8);
  if (hlen < 2 || hp[0] != '{')
    fail("the header does not start with a JSON object ('{'): not a safetensors file");

  // Parse, refusing duplicate keys at any level (nlohmann would keep the last,
  // silently dropping a tensor's entry).
  std::vector<std::set<std::string>> keys;
  std::string dup;
  auto cb = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) keys.emplace_back();
    else if (ev == json::parse_event_t::object_end) keys.pop_back();
    else if (ev == json::parse_event_t::key && !keys.empty() &&
             !keys.back().insert(parsed.get<std::string>()).second && dup.empty())
      dup = parsed.get<std::string>();
    return true;
  };
  json h;
  try {
    h = json::parse(hp, hp + hlen, cb);
  } catch (const json::exception& e) {
    fail("the header is not valid JSON: " + json_what(e));
  }
  if (!dup.empty()) fail("the header repeats the key \"" + dup + "\"");
  if (!h.is_object()) fail("the header is not a JSON object");

  const uint64_t data_size = n - 8 - hlen;
  SafeTensors st;
  st.source_ = src;
  struct Span {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail("__metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail("__metadata__ entry \"" + m.key() + "\" is not a string (the format allows only strings)");
        st.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tn = "tensor '" + key + "': ";
    if (!v.is_object()) fail(tn + "its entry is not a JSON object");
    for (auto f = v.begin(); f != v.end(); ++f)
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets")
        fail(tn + "unexpected field \"" + f.key() + "\"");
    for (const char* f : {"dtype", "shape", "data_offsets"})
      if (!v.contains(f)) fail(tn + "missing field \"" + f + "\"");
    if (!v["dtype"].is_string()) fail(tn + "dtype is not a string");
    StTensor t;
    t.dtype = v["dtype"].get<std::string>();
    const DtypeInfo* d = find_dtype(t.dtype);
    if (!d) fail(tn + "unknown dtype \"" + t.dtype + "\"");
    if (d->size == 0) fail(tn + "dtype " + t.dtype + " is sub-byte, which gannf does not support");
    // Integers only, non-negative and within int64 (nlohmann reads a number
    // with a fraction or exponent, or one beyond uint64, as a float).
    auto as_count = [&](const json& x, const std::string& what) -> uint64_t {
      if (!x.is_number_integer()) fail(tn + what + " holds " + x.dump() + ", not an integer");
      if (x.is_number_unsigned()) {
        const uint64_t u = x.get<uint64_t>();
        if (u > (uint64_t)std::numeric_limits<int64_t>::max()) fail(tn + what + " value " + x.dump() + " is too large");
        return u;
      }
      const int64_t s = x.get<int64_t>();
      if (s < 0) fail(tn + what + " holds the negative value " + std::to_string(s));
      return (uint64_t)s;
    };
    const json& shape = v["shape"];
    if (!shape.is_array()) fail(tn + "shape is not an array");
    for (auto& s : shape) t.shape.push_back((int64_t)as_count(s, "shape"));
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2) fail(tn + "data_offsets is not an array of two integers");
    const uint64_t b = as_count(off[0], "data_offsets"), e = as_count(off[1], "data_offsets");
    if (b > e) fail(tn + "data_offsets [" + std::to_string(b) + "," + std::to_string(e) + "] end before they begin");
    if (e > data_size)
      fail(tn + "data_offsets [" + std::to_string(b) + "," + std::to_string(e) +
           "] reach beyond the data section of " + std::to_string(data_size) + " bytes (truncated file?)");
    uint64_t need = 0;
    if (!byte_size(t.shape, d->size, need)) fail(tn + "shape " + st_shape_str(t.shape) + " overflows");
    if (need != e - b)
      fail(tn + "dtype " + t.dtype + " and shape " + st_shape_str(t.shape) + " need " +
           std::to_string(need) + " bytes, but data_offsets [" + std::to_string(b) + "," +
           std::to_string(e) + "] hold " + std::to_string(e - b));
    t.data.assign(p + 8 + hlen + b, p + 8 + hlen + e);
    spans.push_back({b, e, key});
    st.tensors_.emplace(key, std::move(t));
  }

  // The tensors must tile the data section: sorted by offset, each begins
  // where the previous one ended, and the last ends at the end of the file.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  const std::string* prev = nullptr;
  for (auto& s : spans) {
    if (s.begin < pos)
      fail("tensors '" + *prev + "' and '" + s.name + "' overlap in the data section");
    if (s.begin > pos)
      fail("bytes [" + std::to_string(pos) + "," + std::to_string(s.begin) +
           ") of the data section belong to no tensor (before '" + s.name + "')");
    pos = s.end;
    prev = &s.name;
    st.order_.push_back(s.name);
  }
  if (pos != data_size)
    fail("the tensors cover " + std::to_string(pos) + " bytes but the data section has " +
         std::to_string(data_size) + " (trailing bytes, or a corrupt header)");

  if (auto ck = st.metadata.find(kStChecksumKey); ck != st.metadata.end()) {
    const json sums = json::parse(ck->second, nullptr, false);
    if (!sums.is_object()) fail(std::string("the ") + kStChecksumKey + " metadata is not a JSON object");
    for (auto it = sums.begin(); it != sums.end(); ++it)
      if (!st.tensors_.count(it.key()))
        fail(std::string(kStChecksumKey) + " lists tensor '" + it.key() +
             "', which the file does not hold (a damaged header?)");
    for (const std::string& name : st.order_) {
      auto it = sums.find(name);
      if (it == sums.end() || !it->is_string())
        fail("tensor '" + name + "' has no checksum in " + kStChecksumKey + " (a damaged header?)");
      const StTensor& t = st.tensors_.at(name);
      char have[9];
      std::snprintf(have, sizeof have, "%08x", crc32c(t.data.data(), t.data.size()));
      if (it->get<std::string>() != have)
        fail("tensor '" + name + "' is damaged: its data fails the CRC-32C checksum stored in the file (" +
             it->get<std::string>() + ", the bytes give " + have +
             "); restore the file from a copy or use an earlier checkpoint");
    }
    st.checksummed_ = true;
  }
  return st;
}

SafeTensors SafeTensors::load(const std::string& path) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error("safetensors: " + path + ": " + what);
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat sb {};
  if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    fail("not a regular file");
  }
  std::vector<uint8_t> bytes((size_t)sb.st_size);
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int err = errno;
      ::close(fd);
      fail(r == 0 ? "the file shrank while being read" : std::string("read error: ") + std::strerror(err));
    }
    got += (size_t)r;
  }
  ::close(fd);
  return parse(bytes, path);
}

const StTensor& SafeTensors::at(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    throw std::runtime_error("safetensors: " + source_ + ": no tensor named '" + name + "'");
  return it->second;
}

std::vector<float> SafeTensors::floats(const std::string& name) const {
  return tensor_as_float<float>(at(name), source_, name);
}

std::vector<double> SafeTensors::doubles(const std::string& name) const {
  return tensor_as_float<double>(at(name), source_, name);
}

template <class V>
static void widen(std::vector<int64_t>& out, const uint8_t* p) {
  for (size_t i = 0; i < out.size(); i++) out[i] = (int64_t)load_le<V>(p + sizeof(V) * i);
}

std::vector<int64_t> SafeTensors::ints(const std::string& name) const {
  const StTensor& t = at(name);
  std::vector<int64_t> v(t.numel());
  const uint8_t* p = t.data.data();
  const std::string& d = t.dtype;
  if (d == "I64") widen<int64_t>(v, p);
  else if (d == "I32") widen<int32_t>(v, p);
  else if (d == "I16") widen<int16_t>(v, p);
  else if (d == "I8") widen<int8_t>(v, p);
  else if (d == "U32") widen<uint32_t>(v, p);
  else if (d == "U16") widen<uint16_t>(v, p);
  else if (d == "U8" || d == "BOOL") widen<uint8_t>(v, p);
  else if (d == "U64") {
    for (size_t i = 0; i < v.size(); i++) {
      const uint64_t u = load_le<uint64_t>(p + 8 * i);
      if (u > (uint64_t)std::numeric_limits<int64_t>::max())
        throw std::runtime_error("safetensors: " + source_ + ": tensor '" + name +
                                 "' holds a U64 value beyond int64");
      v[i] = (int64_t)u;
    }
  } else {
    throw std::runtime_error("safetensors: " + source_ + ": tensor '" + name + "' has dtype " +
                             d + ", not an integer type");
  }
  return v;
}

// ---- writer -------------------------------------------------------------------

std::vector<uint8_t> serialize_safetensors(const StEntries& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("safetensors: " + what); };
  std::vector<size_t> order(tensors.size());
  std::vector<int> rank(tensors.size());
  std::set<std::string> names;
  for (size_t i = 0; i < tensors.size(); i++) {
    const auto& [name, t] = tensors[i];
    if (name.empty()) bad("a tensor has an empty name");
    if (name == "__metadata__") bad("\"__metadata__\" is reserved and cannot name a tensor");
    if (!names.insert(name).second) bad("two tensors are named '" + name + "'");
    const DtypeInfo* d = find_dtype(t.dtype);
    if (!d || d->size == 0) bad("tensor '" + name + "': unsupported dtype \"" + t.dtype + "\"");
    uint64_t need = 0;
    if (!byte_size(t.shape, d->size, need))
      bad("tensor '" + name + "': bad shape " + st_shape_str(t.shape));
    if (need != t.data.size())
      bad("tensor '" + name + "': dtype " + t.dtype + " and shape " + st_shape_str(t.shape) +
          " need " + std::to_string(need) + " bytes, the data has " + std::to_string(t.data.size()));
    order[i] = i;
    rank[i] = d->rank;
  }
  // The reference's order: widest dtype first (keeps every tensor aligned to
  // its element size), then by name.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (rank[a] != rank[b]) return rank[a] > rank[b];
    return tensors[a].first < tensors[b].first;
  });

  ordered_json h = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json m = ordered_json::object();
    for (auto& [k, v] : metadata) m[k] = v;
    h["__metadata__"] = std::move(m);
  }
  uint64_t pos = 0;
  for (size_t i : order) {
    const StTensor& t = tensors[i].second;
    ordered_json e = ordered_json::object();
    e["dtype"] = t.dtype;
    e["shape"] = ordered_json::array();
    for (auto s : t.shape) e["shape"].push_back(s);
    e["data_offsets"] = ordered_json::array({pos, pos + t.data.size()});
    pos += t.data.size();
    h[tensors[i].first] = std::move(e);
  }
  std::string header;
  try {
    header = h.dump();
  } catch (const ordered_json::exception& e) {
    bad("a tensor name or metadata string is not valid UTF-8 (" + json_what(e) + ")");
  }
  header.append((8 - header.size() % 8) % 8, ' ');

  std::vector<uint8_t> out;
  out.reserve(8 + header.size() + pos);
  const uint64_t hlen = header.size();
  for (int b = 0; b < 8; b++) out.push_back((uint8_t)(hlen >> (8 * b)));
  out.insert(out.end(), header.begin(), header.end());
  for (size_t i : order) {
    const auto& d = tensors[i].second.data;
    out.insert(out.end(), d.begin(), d.end());
  }
  return out;
}

std::map<std::string, std::string> with_checksums(const StEntries& tensors,
                                                  std::map<std::string, std::string> metadata) {
  json sums = json::object();
  for (const auto& [name, t] : tensors) {
    char b[9];
    std::snprintf(b, sizeof b, "%08x", crc32c(t.data.data(), t.data.size()));
    sums[name] = b;
  }
  metadata[kStChecksumKey] = sums.dump();
  return metadata;
}

void save_safetensors(const std::string& path, const StEntries& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::vector<uint8_t> bytes = serialize_safetensors(tensors, metadata);
  auto fail = [&](const std::string& what, int err) {
    throw std::runtime_error("safetensors: " + path + ": " + what + ": " + std::strerror(err));
  };
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  std::string tmpl = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) fail("cannot create a temporary file in " + dir.string(), errno);
  auto abandon = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    fail(what, err);
  };
  // mkstemp makes the file 0600; give it the mode of the file it replaces, or
  // the usual 0644.
  struct stat sb {};
  const mode_t mode = ::stat(path.c_str(), &sb) == 0 ? (sb.st_mode & 07777) : 0644;
  if (::fchmod(fd, mode) != 0) abandon("cannot set the mode of " + tmpl);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) abandon("cannot write " + tmpl);
    done += (size_t)w;
  }
  if (::fsync(fd) != 0) abandon("cannot flush " + tmpl);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    fail("cannot close " + tmpl, err);
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    fail("cannot rename " + tmpl + " over it", err);
  }
  // Make the rename itself durable.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace gannf
