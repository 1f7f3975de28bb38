#include "sources.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "image_decode.h"
#include "image_transform.h"
#include "synthetic.h"

namespace gannf::data {

namespace {

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string basename_of(const std::string& p) {
  const size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

std::string dirname_of(const std::string& p) {
  const size_t s = p.rfind('/');
  if (s == std::string::npos) return ".";
  return s == 0 ? "/" : p.substr(0, s);
}

std::string strip_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void walk(const std::string& abs, const std::string& rel, std::set<std::pair<dev_t, ino_t>>& seen,
          std::vector<FileEntry>& out, bool top) {
  DIR* d = opendir(abs.c_str());
  if (!d) {
    if (top) throw std::runtime_error("cannot read " + abs + ": " + std::strerror(errno));
    std::fprintf(stderr, "warning: cannot read folder %s: %s (skipped)\n", abs.c_str(),
                 std::strerror(errno));
    return;
  }
  std::vector<std::string> names;
  while (const dirent* e = readdir(d))
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  closedir(d);
  for (const std::string& name : names) {
    const std::string full = join(abs, name);
    struct stat st;
    if (stat(full.c_str(), &st) != 0) continue;  // a dangling link, or gone meanwhile
    if (S_ISDIR(st.st_mode)) {
      if (seen.insert({st.st_dev, st.st_ino}).second) walk(full, rel + name + "/", seen, out, false);
    } else if (S_ISREG(st.st_mode) && is_image_name(name)) {
      out.push_back({rel + name, (uint64_t)st.st_size,
                     (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec});
    }
  }
}

void check_sizes(int image_size, int channels) {
  if (image_size < 1 || image_size > 4096)
    throw std::invalid_argument("image size must be 1 .. 4096, not " + std::to_string(image_size));
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("channels must be 1 or 3, not " + std::to_string(channels));
}

std::string transform_text(int s, int c) {
  return "Resize(" + std::to_string(s) + ") + CenterCrop(" + std::to_string(s) + "), " +
         std::to_string(c) + (c == 1 ? " channel" : " channels");
}

std::string entry_line(const std::string& name, const FileEntry& e) {
  return name + "\t" + std::to_string(e.size) + "\t" + std::to_string(e.mtime_ns) + "\n";
}

// ---- CelebA ------------------------------------------------------------

struct CelebaLayout {
  std::string image_dir;
  std::vector<std::string> partition_dirs;  // where list_eval_partition.* may be
};

bool find_celeba(const std::string& dir, CelebaLayout* L) {
  if (basename_of(dir) == "img_align_celeba") {
    L->image_dir = dir;
    L->partition_dirs = {dir, dirname_of(dir)};
  } else if (is_dir(join(dir, "img_align_celeba"))) {
    L->image_dir = join(dir, "img_align_celeba");
    L->partition_dirs = {dir, L->image_dir};
  } else if (is_dir(join(dir, "celeba/img_align_celeba"))) {  // torchvision's root
    L->image_dir = join(dir, "celeba/img_align_celeba");
    L->partition_dirs = {join(dir, "celeba"), dir, L->image_dir};
  } else {
    return false;
  }
  // Kaggle's archive nests the folder in a folder of the same name.
  if (is_dir(join(L->image_dir, "img_align_celeba")))
    L->image_dir = join(L->image_dir, "img_align_celeba");
  return true;
}

// list_eval_partition.txt ("000001.jpg 0") or Kaggle's .csv
// ("image_id,partition" then "000001.jpg,0"): file name → split.
bool read_partition(const CelebaLayout& L, std::map<std::string, int>* split, std::string* which,
                    FileEntry* stat_out) {
  for (const std::string& d : L.partition_dirs)
    for (const char* name : {"list_eval_partition.txt", "list_eval_partition.csv"}) {
      const std::string p = join(d, name);
      if (!is_file(p)) continue;
      std::string text, why;
      if (!read_file(p, &text, &why)) throw std::runtime_error("cannot read " + p + ": " + why);
      std::istringstream in(text);
      std::string line;
      while (std::getline(in, line)) {
        for (char& ch : line)
          if (ch == ',' || ch == '\r' || ch == '\t') ch = ' ';
        std::istringstream ls(line);
        std::string file;
        int s;
        if (ls >> file >> s) (*split)[file] = s;
      }
      if (split->empty()) throw std::runtime_error(p + ": no entries (expected \"000001.jpg 0\" lines)");
      *which = p;
      stat_file(p, stat_out);
      return true;
    }
  return false;
}

std::unique_ptr<Source> open_celeba(const std::string& root, const CelebaLayout& L, int s, int c,
                                    Partition part) {
  ImageFolderSource::Spec spec;
  spec.kind = "CelebA";
  spec.root = root;
  spec.image_dir = L.image_dir;
  std::vector<FileEntry> files = list_image_files(L.image_dir);
  if (files.empty()) throw std::runtime_error("no JPEG/PNG/BMP images in " + L.image_dir);
  std::map<std::string, int> split;
  std::string pfile;
  FileEntry pstat;
  const bool have = read_partition(L, &split, &pfile, &pstat);
  if (part == Partition::Auto) part = have ? Partition::Train : Partition::All;
  if (part != Partition::All && !have)
    throw std::runtime_error("CelebA partition '" + std::string(partition_name(part)) +
                             "' asked for, but there is no list_eval_partition.txt next to " +
                             L.image_dir);
  spec.variant = part == Partition::Train ? "" : partition_name(part);
  if (part == Partition::All) {
    spec.files = std::move(files);
    spec.note = have ? "all partitions" : "all images (no list_eval_partition.txt)";
    spec.settings = "partition all\n";
  } else {
    const int want = part == Partition::Train ? 0 : part == Partition::Valid ? 1 : 2;
    size_t unlisted = 0;
    for (FileEntry& f : files) {
      const auto it = split.find(basename_of(f.rel));
      if (it == split.end())
        unlisted++;
      else if (it->second == want)
        spec.files.push_back(std::move(f));
    }
    if (spec.files.empty())
      throw std::runtime_error("no images of CelebA partition '" +
                               std::string(partition_name(part)) + "' in " + L.image_dir +
                               " (per " + pfile + ")");
    spec.note = std::string("partition ") + partition_name(part) + " of " + basename_of(pfile);
    if (unlisted) spec.note += ", " + std::to_string(unlisted) + " unlisted files left out";
    spec.settings = std::string("partition ") + partition_name(part) + "\n" +
                    entry_line("partition-file " + basename_of(pfile), pstat);
  }
  return std::make_unique<ImageFolderSource>(std::move(spec), s, c);
}

// ---- IDX ---------------------------------------------------------------

// Image IDX files in `dir` (and dir/raw, torchvision's layout), by split.
bool find_idx(const std::string& dir, std::vector<std::string>* train,
              std::vector<std::string>* test) {
  for (const std::string& d : {dir, join(dir, "raw")}) {
    DIR* h = opendir(d.c_str());
    if (!h) continue;
    std::vector<std::string> names;
    while (const dirent* e = readdir(h)) names.emplace_back(e->d_name);
    closedir(h);
    std::sort(names.begin(), names.end());
    // Both foo and foo.gz: the same images, take the uncompressed one.
    auto pick = [&](const std::string& prefix, const std::string& alt,
                    std::vector<std::string>* out) {
      std::string best;
      for (const std::string& n : names) {
        if (n[0] == '.' || n.find("idx3-ubyte") == std::string::npos) continue;
        if (n.rfind(prefix, 0) != 0 && n.rfind(alt, 0) != 0) continue;
        if (!is_file(join(d, n))) continue;
        const bool gz = n.size() > 3 && n.compare(n.size() - 3, 3, ".gz") == 0;
        if (best.empty() || (!gz && best.size() > 3 &&
                             best.compare(best.size() - 3, 3, ".gz") == 0))
          best = n;
      }
      if (!best.empty()) out->push_back(join(d, best));
    };
    pick("train", "train", train);
    pick("t10k", "test", test);
    if (!train->empty() || !test->empty()) return true;
  }
  return false;
}

}  // namespace

bool stat_file(const std::string& path, FileEntry* e) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return false;
  e->size = (uint64_t)st.st_size;
  e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

std::vector<FileEntry> list_image_files(const std::string& dir) {
  std::vector<FileEntry> out;
  std::set<std::pair<dev_t, ino_t>> seen;
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) seen.insert({st.st_dev, st.st_ino});
  walk(dir, "", seen, out, true);
  // std::string's < is char_traits<char>::lt: bytes compared as unsigned
  // char, i.e. byte-wise, whatever the locale.
  std::sort(out.begin(), out.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.rel < b.rel; });
  return out;
}

// ---- ImageFolderSource -------------------------------------------------

ImageFolderSource::ImageFolderSource(Spec spec, int image_size, int channels)
    : s_(std::move(spec)), size_(image_size), channels_(channels) {}

bool ImageFolderSource::get_u8(size_t index, uint8_t* out, std::string* why) const {
  if (index >= s_.files.size()) return *why = "index out of range", false;
  return transform_file(join(s_.image_dir, s_.files[index].rel), size_, channels_, out, why);
}

std::string ImageFolderSource::fingerprint() const {
  std::string f = "gannf-source v1\ntransform " + std::string(kTransformVersion) + "\nkind " +
                  s_.kind + "\nsize " + std::to_string(size_) + "\nchannels " +
                  std::to_string(channels_) + "\n" + s_.settings + "files " +
                  std::to_string(s_.files.size()) + "\n";
  f.reserve(f.size() + s_.files.size() * 40);
  for (const FileEntry& e : s_.files) f += entry_line(e.rel, e);
  return f;
}

std::string ImageFolderSource::describe() const {
  std::string d = s_.kind + " " + s_.image_dir + ": " + std::to_string(s_.files.size()) +
                  " images";
  if (!s_.note.empty()) d += " (" + s_.note + ")";
  return d + ", " + transform_text(size_, channels_);
}

// ---- IdxSource ---------------------------------------------------------

IdxSource::IdxSource(std::vector<std::string> paths, std::string root, std::string variant,
                     int image_size, int channels, bool quiet)
    : paths_(std::move(paths)), root_(std::move(root)), variant_(std::move(variant)),
      size_(image_size), channels_(channels), quiet_(quiet) {
  for (const std::string& p : paths_) {
    FileEntry e;
    if (!stat_file(p, &e)) throw std::runtime_error("cannot read " + p + ": " + std::strerror(errno));
    uint32_t h[4];
    if (!read_idx_header(p, h, 4)) throw std::runtime_error(p + ": not an IDX file (header cut short)");
    if (h[0] != 0x00000803) {
      char m[16];
      std::snprintf(m, sizeof m, "0x%08x", h[0]);
      throw std::runtime_error(p + ": not an IDX image file (magic " + m + ", expected 0x00000803)");
    }
    if (rows_ && (h[2] != rows_ || h[3] != cols_))
      throw std::runtime_error(p + ": image size differs from " + paths_[0]);
    rows_ = h[2];
    cols_ = h[3];
    stats_.push_back(e);
    declared_.push_back(h[1]);
  }
}

void IdxSource::load() const {
  size_t start = 0;
  for (const std::string& p : paths_) {
    files_.push_back(read_idx_images(p));
    if (!files_.back().problem.empty() && !quiet_)
      std::fprintf(stderr, "warning: %s: %s\n", p.c_str(), files_.back().problem.c_str());
    starts_.push_back(start);
    start += files_.back().count;
  }
  total_ = start;
}

size_t IdxSource::size() const {
  std::call_once(loaded_, [this] { load(); });
  return total_;
}

bool IdxSource::get_u8(size_t index, uint8_t* out, std::string* why) const {
  try {
    if (index >= size()) return *why = "index out of range", false;
    const size_t f = std::upper_bound(starts_.begin(), starts_.end(), index) - starts_.begin() - 1;
    const IdxImages& im = files_[f];
    const size_t per = (size_t)im.rows * im.cols;
    Image8 img;
    img.w = (int)im.cols;
    img.h = (int)im.rows;
    img.c = 1;
    const uint8_t* p = im.pixels.data() + (index - starts_[f]) * per;
    img.px.assign(p, p + per);
    transform_image(img, size_, channels_, out);
    return true;
  } catch (const std::exception& e) {
    *why = e.what();
    return false;
  }
}

std::string IdxSource::item_name(size_t index) const {
  size();
  const size_t f = std::upper_bound(starts_.begin(), starts_.end(), index) - starts_.begin() - 1;
  return basename_of(paths_[f]) + "#" + std::to_string(index - starts_[f]);
}

std::string IdxSource::fingerprint() const {
  std::string f = "gannf-source v1\ntransform " + std::string(kTransformVersion) +
                  "\nkind idx\nsize " + std::to_string(size_) + "\nchannels " +
                  std::to_string(channels_) + "\nfiles " + std::to_string(paths_.size()) + "\n";
  for (size_t i = 0; i < paths_.size(); i++) f += entry_line(basename_of(paths_[i]), stats_[i]);
  return f;
}

std::string IdxSource::describe() const {
  std::string names;
  uint64_t n = 0;
  for (size_t i = 0; i < paths_.size(); i++) {
    names += (i ? " + " : "") + paths_[i];
    n += declared_[i];
  }
  return "MNIST-style IDX " + names + ": " + std::to_string(n) + " images " +
         std::to_string(cols_) + "x" + std::to_string(rows_) + ", " +
         transform_text(size_, channels_);
}

// ---- open_source -------------------------------------------------------

std::unique_ptr<Source> open_source(const std::string& spec_in, int s, int c, const Options& opt) {
  check_sizes(s, c);
  if (spec_in == "synthetic" || spec_in.rfind("synthetic:", 0) == 0) {
    size_t n = 10000;
    if (spec_in.size() > 10) {
      const std::string num = spec_in.substr(10);
      char* end = nullptr;
      const unsigned long long v = std::strtoull(num.c_str(), &end, 10);
      if (num.empty() || *end || v == 0 || num[0] == '-' || v > (1ull << 32))
        throw std::invalid_argument("bad dataset spec '" + spec_in +
                                    "': expected synthetic:N with N in 1 .. 2^32");
      n = (size_t)v;
    }
    return std::make_unique<SyntheticDataset>(n, s, c, opt.seed);
  }
  if (spec_in.empty()) throw std::runtime_error("no dataset given (a folder, an IDX file or synthetic[:N])");
  const std::string spec = strip_slashes(spec_in);
  struct stat st;
  if (stat(spec.c_str(), &st) != 0)
    throw std::runtime_error("dataset not found: " + spec + " (" + std::strerror(errno) + ")");
  const Partition part = opt.partition;
  if (S_ISREG(st.st_mode)) {
    uint32_t magic = 0;
    if (read_idx_header(spec, &magic, 1) && magic == 0x00000803) {
      if (part != Partition::Auto && part != Partition::Train && part != Partition::All)
        throw std::runtime_error("a partition applies to folders; " + spec + " is one IDX file");
      return std::make_unique<IdxSource>(std::vector<std::string>{spec}, dirname_of(spec), "", s,
                                         c, opt.quiet);
    }
    if (magic == 0x00000801)
      throw std::runtime_error(spec + " is an IDX label file; give the images file (…-images-idx3-ubyte)");
    if (is_image_name(spec))
      throw std::runtime_error(spec + " is a single image; give the folder that holds the dataset");
    throw std::runtime_error(spec + ": not a dataset (expected a folder of images, an IDX image "
                                    "file or a gannf cache .bin)");
  }
  if (!S_ISDIR(st.st_mode)) throw std::runtime_error(spec + ": not a file or folder");

  CelebaLayout L;
  if (find_celeba(spec, &L)) return open_celeba(spec, L, s, c, part);

  std::vector<std::string> train, test;
  if (find_idx(spec, &train, &test)) {
    std::vector<std::string> use;
    std::string variant;
    switch (part) {
      case Partition::Auto:
      case Partition::Train:
        use = train.empty() ? test : train;
        variant = train.empty() ? "test" : "";
        break;
      case Partition::Test:
        use = test;
        variant = "test";
        break;
      case Partition::All:
        use = train;
        use.insert(use.end(), test.begin(), test.end());
        variant = "all";
        break;
      case Partition::Valid:
        throw std::runtime_error("IDX datasets have no validation partition (" + spec + ")");
    }
    if (use.empty())
      throw std::runtime_error("no " + std::string(partition_name(part)) +
                               " IDX image file (train-/t10k-…idx3-ubyte) in " + spec);
    return std::make_unique<IdxSource>(use, spec, variant, s, c, opt.quiet);
  }

  if (part == Partition::Valid || part == Partition::Test)
    throw std::runtime_error("partition '" + std::string(partition_name(part)) +
                             "' applies to CelebA and IDX folders; " + spec + " is a plain image folder");
  ImageFolderSource::Spec fs;
  fs.kind = "image folder";
  fs.root = spec;
  fs.image_dir = spec;
  fs.files = list_image_files(spec);
  if (fs.files.empty())
    throw std::runtime_error("no JPEG/PNG/BMP images in " + spec + " (searched recursively)");
  return std::make_unique<ImageFolderSource>(std::move(fs), s, c);
}

}  // namespace gannf::data
