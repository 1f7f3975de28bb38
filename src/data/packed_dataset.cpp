#include "packed_dataset.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "hash.h"
#include "image_transform.h"
#include "progress_bar.h"

namespace gannf::data {

static_assert(std::endian::native == std::endian::little,
              "the cache format is little-endian and written as memory images");

namespace {

constexpr char kMagic[8] = {'G', 'A', 'N', 'N', 'F', 'P', 'K', '\x1a'};
constexpr size_t kHeaderBytes = 4096;  // pixel data starts page-aligned
constexpr size_t kBlock = 1 << 20;     // checksum block: hashed in parallel on open

struct CacheHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_size;
  uint64_t file_size;
  uint64_t count;
  uint32_t channels;
  uint32_t image_size;
  uint64_t pixel_offset;
  uint64_t pixel_bytes;
  uint64_t index_offset;
  uint64_t source_count;
  uint64_t skipped;
  uint64_t fingerprint[2];
  uint64_t content_hash;  // over [pixel_offset, file_size), see data_hash()
  uint64_t created_unix;
  char description[512];
  uint64_t header_hash;  // over the bytes before it
};
static_assert(sizeof(CacheHeader) <= kHeaderBytes);
static_assert(offsetof(CacheHeader, header_hash) % 8 == 0);

void fingerprint_of(const Source& src, uint64_t out[2]) {
  const std::string f = src.fingerprint();
  out[0] = hash64(f.data(), f.size(), 0x6761616E6E663031ull);
  out[1] = hash64(f.data(), f.size(), 0x6D756C7469706C79ull);
}

uint64_t header_hash(const CacheHeader& h) {
  return hash64(&h, offsetof(CacheHeader, header_hash), 0x4845414445520001ull);
}

uint64_t combine_blocks(const std::vector<uint64_t>& b) {
  return hash64(b.data(), b.size() * 8, 0x424C4F434B530001ull ^ b.size());
}

// The data checksum: each 1 MiB block hashed on its own (seeded with its
// number), then the list of block hashes — the same value whether computed
// while streaming the file out or in parallel over the mapping.
uint64_t data_hash(const uint8_t* p, size_t n) {
  const size_t nb = (n + kBlock - 1) / kBlock;
  std::vector<uint64_t> b(nb);
#pragma omp parallel for schedule(static)
  for (long long i = 0; i < (long long)nb; i++) {
    const size_t off = (size_t)i * kBlock;
    b[i] = hash64(p + off, std::min(kBlock, n - off), (uint64_t)i);
  }
  return combine_blocks(b);
}

size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

std::string dirname_of(const std::string& p) {
  const size_t s = p.rfind('/');
  if (s == std::string::npos) return ".";
  return s == 0 ? "/" : p.substr(0, s);
}

// Writes through a 1 MiB staging buffer that is also the checksum block.
class BlockWriter {
 public:
  BlockWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) { buf_.reserve(kBlock); }
  void put(const void* p, size_t n) {
    const auto* s = static_cast<const uint8_t*>(p);
    while (n) {
      const size_t k = std::min(n, kBlock - buf_.size());
      buf_.insert(buf_.end(), s, s + k);
      s += k;
      n -= k;
      if (buf_.size() == kBlock) flush();
    }
  }
  uint64_t finish() {
    if (!buf_.empty()) flush();
    return combine_blocks(hashes_);
  }

 private:
  void flush() {
    hashes_.push_back(hash64(buf_.data(), buf_.size(), (uint64_t)hashes_.size()));
    size_t done = 0;
    while (done < buf_.size()) {
      const ssize_t r = ::write(fd_, buf_.data() + done, buf_.size() - done);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw CacheWriteError("cannot write " + path_ + ": " + std::strerror(errno));
      done += (size_t)r;
    }
    buf_.clear();
  }
  int fd_;
  std::string path_;
  std::vector<uint8_t> buf_;
  std::vector<uint64_t> hashes_;
};

// flock() on "<cache>.lock" while packing, so that the coordinator and the
// local workers starting together pack once and the others wait. Where no
// lock file can be made (a read-only folder) it goes on without one: the
// atomic rename keeps even concurrent packing correct, only wasteful.
class PackLock {
 public:
  explicit PackLock(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return;
    while (flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
  ~PackLock() {
    if (fd_ < 0) return;
    ::unlink(path_.c_str());  // a waiter then re-checks the finished cache
    ::close(fd_);
  }

 private:
  std::string path_;
  int fd_ = -1;
};

std::atomic<unsigned> g_tmp_counter{0};

void make_dirs(const std::string& dir) {  // mkdir -p; failures show up at the write
  for (size_t i = 1; i <= dir.size(); i++)
    if (i == dir.size() || dir[i] == '/') ::mkdir(dir.substr(0, i).c_str(), 0755);
}

}  // namespace

// ---- PackedDataset -----------------------------------------------------

PackedDataset::~PackedDataset() {
  if (map_) munmap(const_cast<uint8_t*>(map_), map_bytes_);
}

std::unique_ptr<PackedDataset> PackedDataset::try_open(const std::string& path,
                                                       const Source* expect, bool verify,
                                                       std::string* why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *why = errno == ENOENT ? "no cache yet" : std::string("cannot open: ") + std::strerror(errno);
    return nullptr;
  }
  struct stat st;
  CacheHeader h;
  std::memset(&h, 0, sizeof h);
  const bool ok = fstat(fd, &st) == 0 && st.st_size >= (off_t)kHeaderBytes &&
                  ::pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h;
  auto fail = [&](std::string reason) {
    ::close(fd);
    *why = std::move(reason);
    return nullptr;
  };
  if (!ok || std::memcmp(h.magic, kMagic, 8) != 0)
    return fail("not a gannf cache (foreign or truncated file)");
  if (h.version != kCacheVersion)
    return fail("cache format version " + std::to_string(h.version) + ", this gannf writes " +
                std::to_string(kCacheVersion));
  if (h.header_hash != header_hash(h)) return fail("damaged header (checksum mismatch)");
  const uint64_t img = (uint64_t)h.channels * h.image_size * h.image_size;
  if (h.header_size != kHeaderBytes || h.pixel_offset != kHeaderBytes || h.count == 0 ||
      h.channels == 0 || h.image_size == 0 || h.pixel_bytes != h.count * img ||
      h.index_offset != align8(h.pixel_offset + h.pixel_bytes) ||
      h.file_size != h.index_offset + 4 * h.count)
    return fail("damaged header (inconsistent sizes)");
  if ((uint64_t)st.st_size != h.file_size)
    return fail((uint64_t)st.st_size < h.file_size
                    ? "truncated (" + std::to_string(st.st_size) + " of " +
                          std::to_string(h.file_size) + " bytes)"
                    : "damaged (" + std::to_string(st.st_size - h.file_size) + " bytes too many)");
  if (expect) {
    if ((int)h.channels != expect->channels() || (int)h.image_size != expect->image_size())
      return fail("packed at " + std::to_string(h.image_size) + "x" + std::to_string(h.image_size) +
                  "x" + std::to_string(h.channels) + ", not " +
                  std::to_string(expect->image_size()) + "x" +
                  std::to_string(expect->image_size()) + "x" + std::to_string(expect->channels()));
    uint64_t fp[2];
    fingerprint_of(*expect, fp);
    if (fp[0] != h.fingerprint[0] || fp[1] != h.fingerprint[1])
      return fail("stale (the source's files or the settings changed since it was packed)");
  }
  void* m = mmap(nullptr, h.file_size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) {
    *why = std::string("cannot map: ") + std::strerror(errno);
    return nullptr;
  }
  std::unique_ptr<PackedDataset> p(new PackedDataset());
  p->map_ = static_cast<const uint8_t*>(m);
  p->map_bytes_ = h.file_size;
  if (verify &&
      data_hash(p->map_ + h.pixel_offset, h.file_size - h.pixel_offset) != h.content_hash) {
    *why = "damaged data (checksum mismatch)";
    return nullptr;
  }
  p->path_ = path;
  h.description[sizeof h.description - 1] = 0;
  p->source_desc_ = h.description;
  p->data_ = p->map_ + h.pixel_offset;
  p->index_ = p->map_ + h.index_offset;
  p->count_ = h.count;
  p->channels_ = (int)h.channels;
  p->size_ = (int)h.image_size;
  p->image_bytes_ = img;
  p->content_hash_ = h.content_hash;
  p->source_count_ = h.source_count;
  p->skipped_ = h.skipped;
  return p;
}

std::unique_ptr<PackedDataset> PackedDataset::open(const std::string& path, bool verify) {
  std::string why;
  auto p = try_open(path, nullptr, verify, &why);
  if (!p) throw std::runtime_error("cannot use cache " + path + ": " + why);
  return p;
}

void PackedDataset::get(size_t index, float* out) const {
  u8_to_float(pixels(index), image_bytes_, out);
}

uint32_t PackedDataset::source_index(size_t index) const {
  uint32_t v;
  std::memcpy(&v, index_ + 4 * index, 4);
  return v;
}

std::string PackedDataset::describe() const {
  std::string d = "packed cache " + path_ + ": " + std::to_string(count_) + " images " +
                  std::to_string(size_) + "x" + std::to_string(size_) + "x" +
                  std::to_string(channels_);
  if (skipped_) d += " (" + std::to_string(skipped_) + " unreadable files skipped)";
  return d + " of " + source_desc_;
}

// ---- packing -----------------------------------------------------------

PackStats pack_dataset(const Source& src, const std::string& path, bool quiet) {
  uint64_t fp[2];
  fingerprint_of(src, fp);  // before reading: a file changed meanwhile makes it stale
  PackStats st;
  st.source_count = src.size();
  if (st.source_count >= (1ull << 32))
    throw std::runtime_error("cannot pack " + std::to_string(st.source_count) +
                             " images: the cache indexes them with uint32");
  const int C = src.channels(), S = src.image_size();
  const size_t img = (size_t)C * S * S;

  const std::string tmp = path + ".tmp." + std::to_string(getpid()) + "." +
                          std::to_string(g_tmp_counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw CacheWriteError("cannot create " + tmp + ": " + std::strerror(errno));
  struct Cleanup {
    int fd;
    const std::string& tmp;
    bool done = false;
    ~Cleanup() {
      if (done) return;
      ::close(fd);
      ::unlink(tmp.c_str());
    }
  } cleanup{fd, tmp};

  std::vector<uint8_t> zeros(kHeaderBytes, 0);
  if (::write(fd, zeros.data(), kHeaderBytes) != (ssize_t)kHeaderBytes)
    throw CacheWriteError("cannot write " + tmp + ": " + std::strerror(errno));
  BlockWriter out(fd, tmp);
  std::vector<uint32_t> index;
  index.reserve(st.source_count);

  ProgressBar bar("packing " + std::to_string(S) + "x" + std::to_string(S) + "x" +
                      std::to_string(C),
                  st.source_count, !quiet);
  // Chunks keep the decoded pixels bounded and the warnings in source order.
  const size_t chunk = 1024;
  std::vector<uint8_t> buf(chunk * img);
  std::vector<char> ok(chunk);
  std::vector<std::string> why(chunk);
  for (size_t base = 0; base < st.source_count; base += chunk) {
    const long long m = (long long)std::min(chunk, st.source_count - base);
#pragma omp parallel for schedule(dynamic, 4)
    for (long long i = 0; i < m; i++) {
      why[i].clear();
      try {
        ok[i] = src.get_u8(base + i, buf.data() + i * img, &why[i]);
      } catch (const std::exception& e) {
        ok[i] = 0;
        why[i] = e.what();
      }
    }
    for (long long i = 0; i < m; i++) {
      if (ok[i]) {
        out.put(buf.data() + i * img, img);
        index.push_back((uint32_t)(base + i));
      } else {
        std::string line = src.item_name(base + i) + ": " + why[i];
        bar.warn("skipping " + line);
        st.skipped_items.push_back(std::move(line));
      }
    }
    bar.update(base + m);
  }
  st.packed = index.size();
  st.skipped = st.skipped_items.size();
  st.seconds = bar.seconds();
  bar.finish(st.skipped ? ", " + std::to_string(st.skipped) + " skipped" : "");
  if (st.skipped && !quiet)
    std::fprintf(stderr, "warning: skipped %zu of %zu files that are not readable JPEG/PNG/BMP "
                 "images (corrupt, truncated or another format)\n",
                 st.skipped, st.source_count);
  if (st.packed == 0)
    throw std::runtime_error("no readable images in " + (src.root().empty() ? src.describe() : src.root()) +
                             ": all " + std::to_string(st.source_count) + " files were skipped");

  const size_t pixel_bytes = st.packed * img;
  const size_t pad = align8(kHeaderBytes + pixel_bytes) - (kHeaderBytes + pixel_bytes);
  out.put(zeros.data(), pad);
  out.put(index.data(), index.size() * 4);

  CacheHeader h;
  std::memset(&h, 0, sizeof h);
  std::memcpy(h.magic, kMagic, 8);
  h.version = kCacheVersion;
  h.header_size = kHeaderBytes;
  h.count = st.packed;
  h.channels = (uint32_t)C;
  h.image_size = (uint32_t)S;
  h.pixel_offset = kHeaderBytes;
  h.pixel_bytes = pixel_bytes;
  h.index_offset = kHeaderBytes + pixel_bytes + pad;
  h.file_size = h.index_offset + 4 * st.packed;
  h.source_count = st.source_count;
  h.skipped = st.skipped;
  h.fingerprint[0] = fp[0];
  h.fingerprint[1] = fp[1];
  h.content_hash = out.finish();
  h.created_unix = (uint64_t)std::time(nullptr);
  std::snprintf(h.description, sizeof h.description, "%s", src.describe().c_str());
  h.header_hash = header_hash(h);
  if (::pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || ::fsync(fd) != 0)
    throw CacheWriteError("cannot write " + tmp + ": " + std::strerror(errno));
  if (::close(fd) != 0) {
    cleanup.done = true;
    ::unlink(tmp.c_str());
    throw CacheWriteError("cannot write " + tmp + ": " + std::strerror(errno));
  }
  cleanup.done = true;
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw CacheWriteError("cannot rename " + tmp + " to " + path + ": " + std::strerror(e));
  }
  // The rename itself must reach the disk too.
  const int dfd = ::open(dirname_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return st;
}

std::unique_ptr<PackedDataset> open_packed(const Source& src, const std::string& path,
                                           const Options& opt) {
  std::string why;
  if (auto p = PackedDataset::try_open(path, &src, opt.verify_cache, &why)) return p;
  make_dirs(dirname_of(path));
  PackLock lock(path + ".lock");
  // Look again under the lock: another process may have packed it meanwhile
  // (it renames the cache into place before it drops its lock).
  {
    std::string why2;
    if (auto p = PackedDataset::try_open(path, &src, opt.verify_cache, &why2)) return p;
  }
  if (!opt.quiet)
    std::fprintf(stderr, "cache %s: %s; packing %s\n", path.c_str(), why.c_str(),
                 src.describe().c_str());
  PackStats stats = pack_dataset(src, path, opt.quiet);
  std::string why2;
  auto p = PackedDataset::try_open(path, &src, false, &why2);
  if (!p) throw std::runtime_error("cache " + path + " just written is unreadable: " + why2);
  p->built_ = true;
  p->build_reason_ = why;
  p->stats_ = std::move(stats);
  return p;
}

// ---- where caches go ---------------------------------------------------

std::string cache_file_name(const Source& src) {
  const std::string s = std::to_string(src.image_size());
  std::string n = ".gannf-cache-" + s + "x" + s + "x" + std::to_string(src.channels());
  if (!src.variant().empty()) {
    n += '-';  // not "-" + variant: GCC 12 -Wrestrict false positive (PR 105329)
    n += src.variant();
  }
  return n + ".bin";
}

namespace {
std::string temp_cache_base() {
  const char* t = std::getenv("TMPDIR");
  return std::string(t && *t == '/' ? t : "/tmp") + "/gannf-cache-" + std::to_string(getuid());
}
std::string cache_path_in(const std::string& base, const Source& src) {
  make_dirs(base);
  std::string root = src.root(), name = "dataset";
  if (char* r = root.empty() ? nullptr : realpath(root.c_str(), nullptr)) {
    root = r;
    std::free(r);
  }
  if (const size_t s = root.find_last_of('/'); s != std::string::npos && s + 1 < root.size())
    name = root.substr(s + 1);
  char h[24];
  std::snprintf(h, sizeof h, "%012llx",
                (unsigned long long)(hash64(root.data(), root.size(), 1) & 0xFFFFFFFFFFFFull));
  return base + "/" + name + "-" + h + "-" + cache_file_name(src).substr(13);
}
}  // namespace

std::string temp_cache_path(const Source& src) { return cache_path_in(temp_cache_base(), src); }

std::string user_cache_path(const Source& src) {
  std::string base;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x == '/')
    base = std::string(x) + "/gannf";
  else if (const char* home = std::getenv("HOME"); home && *home)
    base = std::string(home) + "/.cache/gannf";
  else
    base = temp_cache_base();
  return cache_path_in(base, src);
}

std::string default_cache_path(const Source& src) {
  const std::string root = src.root();
  if (root.empty()) return user_cache_path(src);
  std::string real = root;
  if (char* r = realpath(root.c_str(), nullptr)) {
    real = r;
    std::free(r);
  }
  if (real.rfind("/usr/", 0) != 0 && access(root.c_str(), W_OK) == 0)
    return root + "/" + cache_file_name(src);
  return user_cache_path(src);
}

}  // namespace gannf::data
