// gannf::data: dataset order, the transform against torchvision, IDX files,
// unreadable files, the packed cache's rebuild rules, errors, CelebA
// partitions, the synthetic set, batches, epoch permutations, and the real
// Fashion-MNIST where Debian's dataset-fashion-mnist is installed.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dataset.h"
#include "hash.h"
#include "idx_reader.h"
#include "image_decode.h"
#include "image_transform.h"
#include "packed_dataset.h"
#include "sources.h"
#include "synthetic.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace fs = std::filesystem;
using namespace gannf::data;

namespace {

const std::string kFixtures = std::string(GANNF_FIXTURES) + "/data";

struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string t = std::string(base && *base ? base : "/tmp") + "/gannf-test-data-XXXXXX";
    if (!mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return path + "/" + rel; }
};

Options quiet() {
  Options o;
  o.quiet = true;
  return o;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), (std::streamsize)bytes.size());
}

// A smooth, seed-dependent test picture (h, w, c).
std::vector<uint8_t> pattern(int w, int h, int c, int seed) {
  std::vector<uint8_t> p((size_t)w * h * c);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < c; k++)
        p[((size_t)y * w + x) * c + k] =
            (uint8_t)((x * 200 / w + y * 50 / h + 37 * seed + 80 * k) % 256);
  return p;
}

void write_image(const std::string& path, int w, int h, int c, int seed) {
  fs::create_directories(fs::path(path).parent_path());
  const auto px = pattern(w, h, c, seed);
  std::string ext = fs::path(path).extension();
  for (char& ch : ext) ch = (char)std::tolower((unsigned char)ch);
  int ok = 0;
  if (ext == ".png")
    ok = stbi_write_png(path.c_str(), w, h, c, px.data(), w * c);
  else if (ext == ".jpg")
    ok = stbi_write_jpg(path.c_str(), w, h, c, px.data(), 95);
  else if (ext == ".bmp")
    ok = stbi_write_bmp(path.c_str(), w, h, c, px.data());
  ASSERT_TRUE(ok) << path;
}

std::string numbered(const char* prefix, int i, const char* ext) {
  char b[64];
  std::snprintf(b, sizeof b, "%s%d%s", prefix, i, ext);
  return b;
}

std::vector<float> get_all(const Dataset& ds, size_t i) {
  std::vector<float> v(ds.image_floats());
  ds.get(i, v.data());
  return v;
}

// A minimal IDX image file: magic, n, rows, cols, pixels; gzipped when gz.
void write_idx(const std::string& path, uint32_t n, uint32_t rows, uint32_t cols,
               const std::vector<uint8_t>& px, bool gz, uint32_t magic = 0x803) {
  std::string b;
  for (uint32_t v : {magic, n, rows, cols})
    for (int s = 24; s >= 0; s -= 8) b.push_back((char)(v >> s));
  b.append((const char*)px.data(), px.size());
  if (!gz) return write_bytes(path, b);
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_TRUE(f);
  ASSERT_EQ(gzwrite(f, b.data(), (unsigned)b.size()), (int)b.size());
  gzclose(f);
}

std::vector<uint8_t> idx_pixels(uint32_t n, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> px((size_t)n * rows * cols);
  for (size_t i = 0; i < px.size(); i++) px[i] = (uint8_t)((i * 2654435761u) >> 13);
  return px;
}

PackedDataset* as_packed(const std::unique_ptr<Dataset>& d) {
  auto* p = dynamic_cast<PackedDataset*>(d.get());
  EXPECT_NE(p, nullptr) << "expected a packed cache";
  return p;
}

}  // namespace

// ---- epoch permutation ---------------------------------------------------

TEST(DataPermutation, IsAPermutationDeterministicAndVariesByEpoch) {
  const auto p = epoch_permutation(1000, 42, 0);
  auto s = p;
  std::sort(s.begin(), s.end());
  for (uint32_t i = 0; i < 1000; i++) ASSERT_EQ(s[i], i);
  EXPECT_EQ(p, epoch_permutation(1000, 42, 0));
  EXPECT_NE(p, epoch_permutation(1000, 42, 1));
  EXPECT_NE(p, epoch_permutation(1000, 43, 0));
  EXPECT_TRUE(epoch_permutation(0, 1, 2).empty());
  EXPECT_EQ(epoch_permutation(1, 1, 2), std::vector<uint32_t>{0});
}

TEST(DataPermutation, GoldenValues) {
  // Pinned: every machine of a class (and every gannf version that can talk
  // to another) must deal out the same images. Changing the mixing or the
  // Fisher-Yates loop breaks this test on purpose.
  const std::vector<uint32_t> want = {6, 5, 0, 3, 7, 4, 2, 1, 8, 10, 11, 9};
  EXPECT_EQ(epoch_permutation(12, 1234, 5), want);
}

// ---- transform -----------------------------------------------------------

TEST(DataTransform, SizesAndCropOffsetsAreTorchvisions) {
  int w, h;
  resized_size(178, 218, 64, &w, &h);
  EXPECT_EQ(w, 64);
  EXPECT_EQ(h, 78);  // int(64 * 218 / 178) = int(78.38)
  resized_size(50, 40, 32, &w, &h);
  EXPECT_EQ(w, 40);
  EXPECT_EQ(h, 32);
  resized_size(28, 28, 32, &w, &h);
  EXPECT_EQ(w, 32);
  EXPECT_EQ(h, 32);
  EXPECT_EQ(center_crop_offset(78, 64), 7);
  EXPECT_EQ(center_crop_offset(49, 32), 8);   // round(8.5) = 8: half to even
  EXPECT_EQ(center_crop_offset(51, 32), 10);  // round(9.5) = 10
  EXPECT_EQ(center_crop_offset(39, 32), 4);   // round(3.5) = 4
  EXPECT_EQ(center_crop_offset(64, 64), 0);
}

TEST(DataTransform, ChannelConversionIsPillows) {
  Image8 rgba{2, 1, 4, {10, 200, 30, 0, 255, 255, 255, 128}};
  const Image8 rgb = convert_channels(rgba, 3);
  EXPECT_EQ(rgb.px, (std::vector<uint8_t>{10, 200, 30, 255, 255, 255}));  // alpha dropped
  const Image8 l = convert_channels(rgba, 1);
  EXPECT_EQ(l.px[0], (10 * 19595 + 200 * 38470 + 30 * 7471 + 32768) >> 16);
  EXPECT_EQ(l.px[1], 255);
  Image8 la{1, 1, 2, {77, 9}};
  EXPECT_EQ(convert_channels(la, 3).px, (std::vector<uint8_t>{77, 77, 77}));
  EXPECT_EQ(convert_channels(la, 1).px, (std::vector<uint8_t>{77}));
}

TEST(DataTransform, ResizeKeepsConstantsAndIdentity) {
  Image8 c{37, 23, 3, std::vector<uint8_t>(37 * 23 * 3, 201)};
  for (auto [w, h] : {std::pair{16, 9}, {64, 64}, {37, 50}, {5, 23}}) {
    const Image8 r = resize_bilinear_pil(c, w, h);
    ASSERT_EQ(r.px.size(), (size_t)w * h * 3);
    EXPECT_TRUE(std::all_of(r.px.begin(), r.px.end(), [](uint8_t v) { return v == 201; }));
  }
  Image8 p{13, 7, 1, pattern(13, 7, 1, 3)};
  EXPECT_EQ(resize_bilinear_pil(p, 13, 7).px, p.px);
}

// The committed fixtures (tools/make_data_fixtures.py) hold torchvision's
// output for each case. Tolerances:
// - lossless sources (PNG, BMP, and the JPEG as PIL decoded it, stored as a
//   PNG): the resampling is Pillow's fixed-point arithmetic reproduced, so
//   every pixel must be the same uint8 level; the floats then differ only by
//   how the scaling rounds ((x/255-0.5)/0.5 in float32 vs x/127.5-1 rounded
//   once): 1e-6.
// - the JPEG itself: stb_image and libjpeg-turbo (Pillow's) use different
//   IDCT and YCbCr rounding, so decoded pixels differ by a level or two here
//   and there, and the resize averages those: measured max 1 level, mean
//   0.08 levels at 64x64x3; allowed max 2 levels (the usual ±1–2 of two
//   JPEG decoders), mean 0.25. The lossless twin shows the rest is exact.
TEST(DataTransform, MatchesTorchvisionFixtures) {
  std::ifstream mf(kFixtures + "/manifest.json");
  ASSERT_TRUE(mf) << "missing " << kFixtures << "/manifest.json (tools/make_data_fixtures.py)";
  const auto manifest = nlohmann::json::parse(mf);
  int cases = 0;
  for (const auto& c : manifest["cases"]) {
    const std::string image = c["image"];
    const int s = c["size"], ch = c["channels"];
    const bool lossless = c["lossless"];
    const std::string exp = read_bytes(kFixtures + "/" + c["expected"].get<std::string>());
    const size_t n = (size_t)ch * s * s;
    ASSERT_EQ(exp.size(), n * 4) << c["expected"];
    std::vector<float> want(n);
    std::memcpy(want.data(), exp.data(), exp.size());
    std::vector<uint8_t> u8(n);
    std::string why;
    ASSERT_TRUE(transform_file(kFixtures + "/" + image, s, ch, u8.data(), &why)) << why;
    std::vector<float> got(n);
    u8_to_float(u8.data(), n, got.data());
    double maxd = 0, sum = 0;
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) {
      const double d = std::fabs(got[i] - want[i]);
      maxd = std::max(maxd, d);
      sum += d;
      differ += d > 1e-6;
    }
    const double max_levels = maxd * 127.5, mean_levels = sum / n * 127.5;
    std::printf("  %-30s %2dx%-2dx%d  max %.3f levels, mean %.4f, %zu/%zu values differ\n",
                image.c_str(), s, s, ch, max_levels, mean_levels, differ, n);
    if (lossless) {
      EXPECT_LE(maxd, 1e-6) << image << " " << s << "x" << ch;
    } else {
      EXPECT_LE(max_levels, 2.0 + 1e-4) << image << " " << s << "x" << ch;
      EXPECT_LE(mean_levels, 0.25) << image << " " << s << "x" << ch;
    }
    cases++;
  }
  EXPECT_GE(cases, 8);
}

TEST(DataDecode, RejectsTruncatedCorruptAndForeignFiles) {
  const std::string jpg = read_bytes(kFixtures + "/celeba_like.jpg");
  const std::string png = read_bytes(kFixtures + "/gray_30x46.png");
  const std::string bmp = read_bytes(kFixtures + "/rgb_33x21.bmp");
  Image8 img;
  std::string why;
  auto dec = [&](const std::string& b) {
    why.clear();
    return decode_image_memory((const uint8_t*)b.data(), b.size(), &img, &why);
  };
  EXPECT_TRUE(dec(jpg));
  EXPECT_EQ(img.w, 178);
  EXPECT_EQ(img.h, 218);
  EXPECT_EQ(img.c, 3);
  EXPECT_TRUE(dec(png));
  EXPECT_EQ(img.c, 1);
  EXPECT_TRUE(dec(bmp));
  EXPECT_FALSE(dec(jpg.substr(0, jpg.size() / 2)));
  EXPECT_NE(why.find("truncated"), std::string::npos) << why;
  EXPECT_FALSE(dec(png.substr(0, png.size() - 20)));
  EXPECT_NE(why.find("truncated"), std::string::npos) << why;
  EXPECT_FALSE(dec(bmp.substr(0, bmp.size() - 100)));
  EXPECT_NE(why.find("truncated"), std::string::npos) << why;
  EXPECT_FALSE(dec("hello, I am not a picture"));
  EXPECT_FALSE(dec(""));
  // Zeros over the JPEG's start-of-scan header (at byte 609) and on: refused,
  // with stb's reason.
  auto zeroed = [&](size_t from, size_t to) {
    std::string z = jpg;
    for (size_t i = from; i < to; i++) z[i] = (char)0x00;
    return z;
  };
  EXPECT_FALSE(dec(zeroed(600, 3000)));
  EXPECT_EQ(why.rfind("cannot decode: ", 0), 0u) << why;
  // Zeros inside the entropy-coded data only: nothing in the format can tell,
  // so the picture decodes, whole and at its size, to other pixels.
  ASSERT_TRUE(dec(jpg));
  const std::vector<uint8_t> clean = img.px;
  ASSERT_TRUE(dec(zeroed(1000, 3000))) << why;
  EXPECT_EQ(img.w, 178);
  EXPECT_EQ(img.h, 218);
  EXPECT_EQ(img.c, 3);
  ASSERT_EQ(img.px.size(), clean.size());
  EXPECT_NE(img.px, clean);
}

// ---- order ---------------------------------------------------------------

TEST(DataOrder, SortedByteWiseAndIndependentOfCreationOrder) {
  const std::vector<std::string> names = {
      "b.png", "a.png", "A.png", "sub/c.png", "sub/a.jpg", "a b.png", "z/x/y.bmp",
      "\xc3\xa9.png", "10.png", "9.png", "sub/deeper/q.PNG"};
  const std::vector<std::string> sorted = {
      "10.png", "9.png", "A.png", "a b.png", "a.png", "b.png", "sub/a.jpg", "sub/c.png",
      "sub/deeper/q.PNG", "z/x/y.bmp", "\xc3\xa9.png"};
  TempDir d1, d2;
  std::vector<std::string> order1 = names, order2 = names;
  std::mt19937 g(7);
  std::shuffle(order1.begin(), order1.end(), g);
  std::shuffle(order2.begin(), order2.end(), g);
  ASSERT_NE(order1, order2);
  auto seed_of = [&](const std::string& n) {
    return (int)(std::find(names.begin(), names.end(), n) - names.begin());
  };
  for (const auto& n : order1) write_image(d1 / n, 20, 16, 3, seed_of(n));
  for (const auto& n : order2) write_image(d2 / n, 20, 16, 3, seed_of(n));
  for (const TempDir* d : {&d1, &d2}) {  // ignored: hidden and non-image files
    write_image(*d / ".hidden.png", 8, 8, 3, 1);
    write_image(*d / ".thumbs/x.png", 8, 8, 3, 1);
    write_bytes(*d / "notes.txt", "not an image");
  }
  auto a = open_source(d1.path, 16, 3, quiet());
  auto b = open_source(d2.path, 16, 3, quiet());
  auto a2 = open_source(d1.path, 16, 3, quiet());
  ASSERT_EQ(a->size(), sorted.size());
  ASSERT_EQ(b->size(), sorted.size());
  for (size_t i = 0; i < sorted.size(); i++) {
    EXPECT_EQ(a->item_name(i), sorted[i]);
    EXPECT_EQ(b->item_name(i), sorted[i]);
    EXPECT_EQ(a2->item_name(i), sorted[i]);
    EXPECT_EQ(get_all(*a, i), get_all(*b, i)) << sorted[i];
  }
  // The cache keeps the order.
  Options o = quiet();
  o.cache_path = d1 / "cache.bin";
  auto p = open_dataset(d1.path, 16, 3, o);
  ASSERT_EQ(p->size(), sorted.size());
  for (size_t i = 0; i < sorted.size(); i++) {
    EXPECT_EQ(as_packed(p)->source_index(i), i);
    EXPECT_EQ(get_all(*p, i), get_all(*a, i));
  }
}

// ---- IDX -----------------------------------------------------------------

TEST(DataIdx, RawAndGzipReadTheSameAndTransformLikeMnist) {
  TempDir d;
  const auto px = idx_pixels(5, 28, 28);
  write_idx(d / "raw-images-idx3-ubyte", 5, 28, 28, px, false);
  write_idx(d / "gz-images-idx3-ubyte.gz", 5, 28, 28, px, true);
  auto raw = open_source(d / "raw-images-idx3-ubyte", 32, 1, quiet());
  auto gz = open_source(d / "gz-images-idx3-ubyte.gz", 32, 1, quiet());
  ASSERT_EQ(raw->size(), 5u);
  ASSERT_EQ(gz->size(), 5u);
  EXPECT_NE(raw->describe().find("IDX"), std::string::npos);
  for (size_t i = 0; i < 5; i++) {
    std::vector<uint8_t> a(32 * 32), b(32 * 32), want(32 * 32);
    std::string why;
    ASSERT_TRUE(raw->get_u8(i, a.data(), &why)) << why;
    ASSERT_TRUE(gz->get_u8(i, b.data(), &why)) << why;
    Image8 img{28, 28, 1, std::vector<uint8_t>(px.begin() + i * 784, px.begin() + (i + 1) * 784)};
    transform_image(img, 32, 1, want.data());
    EXPECT_EQ(a, want);
    EXPECT_EQ(b, want);
  }
}

TEST(DataIdx, MatchesTorchvisionMnistPipeline) {
  // torchvision's MNIST hands Image.fromarray(mode='L') to Resize(32): the
  // 28x28 fixture PNG's pixels stored as IDX must give its expected output.
  Image8 img;
  std::string why;
  ASSERT_TRUE(decode_image_file(kFixtures + "/mnist_like_28x28.png", &img, &why)) << why;
  ASSERT_EQ(img.c, 1);
  TempDir d;
  write_idx(d / "train-images-idx3-ubyte.gz", 1, 28, 28, img.px, true);
  auto src = open_source(d.path, 32, 1, quiet());
  ASSERT_EQ(src->size(), 1u);
  const std::string exp = read_bytes(kFixtures + "/expected/mnist_like_28x28_32x32x1.f32");
  ASSERT_EQ(exp.size(), 32u * 32 * 4);
  const auto got = get_all(*src, 0);
  for (size_t i = 0; i < got.size(); i++) {
    float w;
    std::memcpy(&w, exp.data() + 4 * i, 4);
    ASSERT_NEAR(got[i], w, 1e-6) << i;
  }
}

TEST(DataIdx, FolderSplitsTruncationAndBadFiles) {
  TempDir d;
  write_idx(d / "train-images-idx3-ubyte.gz", 5, 28, 28, idx_pixels(5, 28, 28), true);
  write_idx(d / "t10k-images-idx3-ubyte", 3, 28, 28, idx_pixels(3, 28, 28), false);
  write_idx(d / "train-labels-idx1-ubyte", 5, 0, 0, {}, false, 0x801);
  EXPECT_EQ(open_source(d.path, 32, 1, quiet())->size(), 5u);
  Options o = quiet();
  o.partition = Partition::Test;
  EXPECT_EQ(open_source(d.path, 32, 1, o)->size(), 3u);
  o.partition = Partition::All;
  EXPECT_EQ(open_source(d.path, 32, 3, o)->size(), 8u);
  o.partition = Partition::Valid;
  EXPECT_THROW(open_source(d.path, 32, 1, o), std::runtime_error);

  try {
    open_source(d / "train-labels-idx1-ubyte", 32, 1, quiet());
    ADD_FAILURE() << "a label file opened as images";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("label"), std::string::npos) << e.what();
  }
  write_bytes(d / "junk-idx3-ubyte", "\x00\x00\x08\x01 not really");
  EXPECT_THROW(open_source(d / "junk-idx3-ubyte", 32, 1, quiet()), std::runtime_error);

  // Cut short: the complete images stay usable, and they are the file's first
  // images, unchanged.
  auto same_start = [](const Dataset& cut, const Dataset& whole) {
    for (size_t i = 0; i < cut.size(); i++) EXPECT_EQ(get_all(cut, i), get_all(whole, i)) << "image " << i;
  };
  std::string raw = read_bytes(d / "t10k-images-idx3-ubyte");
  write_bytes(d / "cut/t10k-images-idx3-ubyte", raw.substr(0, 16 + 784 * 2 + 300));
  o.partition = Partition::Test;
  auto cut = open_source(d / "cut", 32, 1, o);
  EXPECT_EQ(cut->size(), 2u);
  same_start(*cut, *open_source(d.path, 32, 1, o));
  std::string gz = read_bytes(d / "train-images-idx3-ubyte.gz");
  // The last 20 bytes: the trailer and the end of the deflate stream (the
  // pattern compresses about 4:1, so the rest still holds whole images).
  write_bytes(d / "cutgz/train-images-idx3-ubyte.gz", gz.substr(0, gz.size() - 20));
  auto cutgz = open_source(d / "cutgz", 32, 1, quiet());
  EXPECT_GE(cutgz->size(), 1u);
  EXPECT_LT(cutgz->size(), 5u);
  same_start(*cutgz, *open_source(d.path, 32, 1, quiet()));
}

// ---- unreadable files ----------------------------------------------------

TEST(DataCorrupt, UnreadableFilesAreSkippedWithOneWarningEachAndCounted) {
  TempDir d;
  write_image(d / "good1.png", 24, 20, 3, 1);
  write_image(d / "good2.jpg", 24, 20, 3, 2);
  write_image(d / "good3.bmp", 24, 20, 3, 3);
  const std::string jpg = read_bytes(kFixtures + "/celeba_like.jpg");
  const std::string png = read_bytes(kFixtures + "/rgba_50x40.png");
  const std::string bmp = read_bytes(kFixtures + "/rgb_33x21.bmp");
  write_bytes(d / "bad_truncated.jpg", jpg.substr(0, jpg.size() / 3));
  write_bytes(d / "bad_text.png", "this is text, not a PNG\n");
  write_bytes(d / "bad_empty.jpg", "");
  write_bytes(d / "bad_truncated.png", png.substr(0, png.size() / 2));
  write_bytes(d / "bad_truncated.bmp", bmp.substr(0, 200));

  auto src = open_source(d.path, 16, 3, quiet());
  ASSERT_EQ(src->size(), 8u);
  Options o;
  o.cache_path = d / "cache.bin";
  testing::internal::CaptureStderr();
  auto ds = open_dataset(d.path, 16, 3, o);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_EQ(ds->size(), 3u);
  auto* p = as_packed(ds);
  EXPECT_EQ(p->skipped(), 5u);
  EXPECT_EQ(p->source_count(), 8u);
  EXPECT_EQ(p->pack_stats().skipped, 5u);
  ASSERT_EQ(p->pack_stats().skipped_items.size(), 5u);
  EXPECT_EQ(p->pack_stats().skipped_items[0].rfind("bad_empty.jpg: ", 0), 0u);
  size_t warnings = 0;
  for (size_t at = 0; (at = err.find("warning: skipping ", at)) != std::string::npos; at++)
    warnings++;
  EXPECT_EQ(warnings, 5u) << err;
  EXPECT_NE(err.find("skipped 5 of 8"), std::string::npos) << err;
  // The packed images are the readable ones, in order.
  const std::vector<std::string> good = {"good1.png", "good2.jpg", "good3.bmp"};
  for (size_t i = 0; i < 3; i++) {
    EXPECT_EQ(src->item_name(p->source_index(i)), good[i]);
    EXPECT_EQ(get_all(*ds, i), get_all(*src, p->source_index(i)));
  }
  // Without the cache: the same images, the same count, the same warnings
  // (not blank images in their place).
  Options nc;
  nc.cache = false;
  testing::internal::CaptureStderr();
  auto direct = open_dataset(d.path, 16, 3, nc);
  const std::string err3 = testing::internal::GetCapturedStderr();
  ASSERT_EQ(direct->size(), 3u);
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(get_all(*direct, i), get_all(*ds, i)) << i;
  EXPECT_NE(direct->describe().find("5 unreadable files skipped"), std::string::npos) << direct->describe();
  EXPECT_NE(err3.find("skipped 5 of 8"), std::string::npos) << err3;
  // Read directly, an unreadable file is a blank image and one warning.
  testing::internal::CaptureStderr();
  const auto blank = get_all(*src, 0);
  get_all(*src, 0);
  const std::string err2 = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(std::all_of(blank.begin(), blank.end(), [](float v) { return v == 0.f; }));
  EXPECT_EQ(std::count(err2.begin(), err2.end(), '\n'), 1) << err2;
}

// ---- the cache -----------------------------------------------------------

TEST(DataCache, ReusedThenRebuiltWhenSourceChangesOrFileIsDamaged) {
  TempDir d;
  for (int i = 0; i < 4; i++) write_image(d / numbered("img", i, ".png"), 30, 22, 3, i);
  const std::string cache = d / ".gannf-cache-16x16x3.bin";
  auto open = [&] { return open_dataset(d.path, 16, 3, quiet()); };

  auto ds = open();  // default location: the dataset folder
  ASSERT_TRUE(fs::exists(cache));
  EXPECT_TRUE(as_packed(ds)->built());
  EXPECT_EQ(as_packed(ds)->path(), cache);
  const auto img2 = get_all(*ds, 2);
  const uint64_t h0 = as_packed(ds)->content_hash();
  ds.reset();

  ds = open();
  EXPECT_FALSE(as_packed(ds)->built()) << as_packed(ds)->build_reason();
  EXPECT_EQ(as_packed(ds)->content_hash(), h0);

  // touch: a newer mtime → stale.
  const auto f1 = d / "img1.png";
  fs::last_write_time(f1, fs::last_write_time(f1) + std::chrono::seconds(100));
  ds = open();
  EXPECT_TRUE(as_packed(ds)->built());
  EXPECT_NE(as_packed(ds)->build_reason().find("stale"), std::string::npos);
  EXPECT_FALSE(as_packed(open())->built());

  // New content in a file → rebuilt with the new pixels.
  write_image(d / "img2.png", 30, 22, 3, 9);
  ds = open();
  EXPECT_TRUE(as_packed(ds)->built());
  EXPECT_NE(get_all(*ds, 2), img2);
  EXPECT_EQ(get_all(*ds, 2), get_all(*open_source(d.path, 16, 3, quiet()), 2));

  // A file added, a file removed.
  write_image(d / "img4.png", 30, 22, 3, 4);
  EXPECT_EQ(open()->size(), 5u);
  fs::remove(d / "img0.png");
  EXPECT_EQ(open()->size(), 4u);
  ds = open();
  EXPECT_FALSE(as_packed(ds)->built());
  const auto good = read_bytes(cache);
  const uint64_t h_good = as_packed(ds)->content_hash();
  ds.reset();

  struct Damage {
    const char* what;
    std::string bytes;
    const char* reason;
  };
  std::string flipped = good;
  flipped[4096 + 100] ^= 0x40;
  std::string header = good;
  header[16] ^= 1;  // the count
  std::mt19937 g(3);
  std::string foreign(good.size(), 0);
  for (char& c : foreign) c = (char)g();
  const std::vector<Damage> damages = {
      {"one pixel flipped", flipped, "checksum"},
      {"header byte flipped", header, "header"},
      {"truncated", good.substr(0, good.size() - 10), "truncated"},
      {"cut inside the header", good.substr(0, 100), "foreign or truncated"},
      {"trailing bytes", good + "xx", "too many"},
      {"foreign file", foreign, "not a gannf cache"},
      {"empty file", "", "not a gannf cache"},
  };
  for (const Damage& dm : damages) {
    write_bytes(cache, dm.bytes);
    ds = open();
    auto* p = as_packed(ds);
    EXPECT_TRUE(p->built()) << dm.what;
    EXPECT_NE(p->build_reason().find(dm.reason), std::string::npos)
        << dm.what << ": " << p->build_reason();
    // Rebuilt: the same images (the header differs only by its timestamp).
    EXPECT_EQ(p->content_hash(), h_good) << dm.what;
    EXPECT_EQ(p->size(), 4u) << dm.what;
  }
  // Other settings get their own file; the first stays valid.
  auto gray = open_dataset(d.path, 16, 1, quiet());
  EXPECT_EQ(as_packed(gray)->path(), d / ".gannf-cache-16x16x1.bin");
  EXPECT_FALSE(as_packed(open())->built());
  // No stray temporary or lock files.
  for (const auto& e : fs::directory_iterator(d.path))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  EXPECT_FALSE(fs::exists(cache + ".lock"));
  // A cache file can be opened on its own (a worker that only has the cache).
  auto direct = open_dataset(cache, 16, 3, quiet());
  EXPECT_EQ(direct->size(), 4u);
  EXPECT_THROW(open_dataset(cache, 32, 3, quiet()), std::runtime_error);
}

TEST(DataCache, ProcessesStartingTogetherPackOnce) {
  // flock() locks belong to open file descriptions, so two threads that each
  // open the lock file exclude each other like two processes do.
  TempDir d;
  for (int i = 0; i < 40; i++) write_image(d / numbered("i", i, ".png"), 40, 30, 3, i);
  Options o = quiet();
  o.cache_path = d / "sub/dir/cache.bin";  // folders made as needed
  std::unique_ptr<Dataset> a, b;
  std::thread ta([&] { a = open_dataset(d.path, 16, 3, o); });
  std::thread tb([&] { b = open_dataset(d.path, 16, 3, o); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(as_packed(a)->built() + as_packed(b)->built(), 1);
  EXPECT_EQ(as_packed(a)->content_hash(), as_packed(b)->content_hash());
  EXPECT_EQ(a->size(), 40u);
}

TEST(DataCache, PackedEqualsSourceAndHashIsReproducible) {
  TempDir d;
  auto src = open_source("synthetic:40", 24, 3, quiet());
  pack_dataset(*src, d / "a.bin", true);
  pack_dataset(*src, d / "b.bin", true);
  auto a = PackedDataset::open(d / "a.bin");
  auto b = PackedDataset::open(d / "b.bin");
  EXPECT_EQ(a->content_hash(), b->content_hash());
  ASSERT_EQ(a->size(), 40u);
  for (size_t i = 0; i < 40; i++) ASSERT_EQ(get_all(*a, i), get_all(*src, i));
  EXPECT_NE(a->describe().find("synthetic"), std::string::npos) << a->describe();
}

TEST(DataCache, FallsBackToTheUserCacheFolder) {
  TempDir d, xdg;
  write_image(d / "x.png", 20, 20, 3, 1);
  auto src = open_source(d.path, 16, 3, quiet());
  EXPECT_EQ(default_cache_path(*src), d / ".gannf-cache-16x16x3.bin");
  const char* old = std::getenv("XDG_CACHE_HOME");
  const std::string saved = old ? old : "";
  setenv("XDG_CACHE_HOME", xdg.path.c_str(), 1);
  const std::string u = user_cache_path(*src);
  if (old)
    setenv("XDG_CACHE_HOME", saved.c_str(), 1);
  else
    unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(u.rfind(xdg / "gannf/", 0), 0u) << u;
  EXPECT_NE(u.find("-16x16x3.bin"), std::string::npos) << u;
  EXPECT_TRUE(fs::is_directory(xdg / "gannf"));
  auto syn = open_source("synthetic:3", 16, 3, quiet());
  EXPECT_EQ(syn->root(), "");
}

// Where no cache can be written (the dataset's folder, the user's cache
// folder and the temp dir all refuse), the images are read without one, with
// a line saying so. (Tests run as root, whom permissions do not stop: each
// place is made unwritable by a directory or a file where the cache or its
// folder would go.)
TEST(DataCache, NoWritablePlaceMeansNoCacheNotAnError) {
  TempDir d, elsewhere;
  write_image(d / "x.png", 20, 20, 3, 1);
  write_image(d / "y.png", 20, 20, 3, 2);
  auto src = open_source(d.path, 16, 3, quiet());
  fs::create_directories(default_cache_path(*src));  // a folder where the file would go
  write_bytes(elsewhere / "file", "x");
  auto set = [](const char* k, const std::string& v) {
    const char* old = std::getenv(k);
    std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;
    setenv(k, v.c_str(), 1);
    return saved;
  };
  auto restore = [](const char* k, const std::optional<std::string>& v) {
    if (v) setenv(k, v->c_str(), 1);
    else unsetenv(k);
  };
  const auto xdg = set("XDG_CACHE_HOME", elsewhere / "file/xdg");
  const auto tmp = set("TMPDIR", elsewhere / "file/tmp");
  testing::internal::CaptureStderr();
  std::unique_ptr<Dataset> ds;
  EXPECT_NO_THROW(ds = open_dataset(d.path, 16, 3, Options{}));
  const std::string err = testing::internal::GetCapturedStderr();
  restore("XDG_CACHE_HOME", xdg);
  restore("TMPDIR", tmp);
  ASSERT_TRUE(ds);
  EXPECT_EQ(ds->size(), 2u);
  EXPECT_EQ(dynamic_cast<PackedDataset*>(ds.get()), nullptr);
  EXPECT_NE(err.find("reading the images without a cache"), std::string::npos) << err;
  EXPECT_EQ(get_all(*ds, 1), get_all(*src, 1));
}

// ---- errors --------------------------------------------------------------

TEST(DataErrors, MissingOrEmptyDatasetIsOneClearError) {
  TempDir d;
  auto expect_error = [](const std::string& spec, const std::string& needle) {
    try {
      open_dataset(spec, 32, 3, quiet());
      ADD_FAILURE() << spec << " opened";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(d / "does/not/exist", d / "does/not/exist");
  fs::create_directories(d / "empty");
  expect_error(d / "empty", d / "empty");
  write_bytes(d / "texts/readme.txt", "hello");
  expect_error(d / "texts", d / "texts");
  write_bytes(d / "broken/a.png", "garbage");
  write_bytes(d / "broken/b.jpg", "\xff\xd8\xff garbage");
  expect_error(d / "broken", d / "broken");
  write_image(d / "single.png", 8, 8, 3, 0);
  expect_error(d / "single.png", "single image");
  EXPECT_THROW(open_dataset("", 32, 3, quiet()), std::runtime_error);
  EXPECT_THROW(open_dataset("synthetic:0", 32, 3, quiet()), std::invalid_argument);
  EXPECT_THROW(open_dataset("synthetic:ten", 32, 3, quiet()), std::invalid_argument);
  EXPECT_THROW(open_dataset("synthetic", 32, 2, quiet()), std::invalid_argument);
  EXPECT_THROW(open_dataset("synthetic", 0, 3, quiet()), std::invalid_argument);
  EXPECT_THROW(parse_partition("training"), std::invalid_argument);
  EXPECT_EQ(parse_partition("1"), Partition::Valid);
}

// ---- CelebA --------------------------------------------------------------

TEST(DataCeleba, LayoutsAndPartitions) {
  TempDir d;
  const std::string root = d / "celeba";
  for (int i = 1; i <= 6; i++) {
    char name[64];
    std::snprintf(name, sizeof name, "img_align_celeba/%06d.jpg", i);
    write_image(root + "/" + name, 178, 218, 3, i);
  }
  write_bytes(root + "/list_eval_partition.txt",
              "000001.jpg 0\n000002.jpg 0\n000003.jpg 0\n000004.jpg 1\n000005.jpg 1\n"
              "000006.jpg 2\n");
  auto src = open_source(root, 64, 3, quiet());
  EXPECT_EQ(src->size(), 3u);
  EXPECT_NE(src->describe().find("CelebA"), std::string::npos) << src->describe();
  EXPECT_NE(src->describe().find("train"), std::string::npos) << src->describe();
  EXPECT_EQ(src->item_name(2), "000003.jpg");
  EXPECT_EQ(open_source(root + "/img_align_celeba", 64, 3, quiet())->size(), 3u);
  EXPECT_EQ(open_source(d.path, 64, 3, quiet())->size(), 3u);  // torchvision's root
  Options o = quiet();
  for (auto [p, n] : {std::pair{Partition::Train, 3u}, {Partition::Valid, 2u},
                      {Partition::Test, 1u}, {Partition::All, 6u}}) {
    o.partition = p;
    EXPECT_EQ(open_source(root, 64, 3, o)->size(), n) << partition_name(p);
  }
  // Each partition caches separately.
  o.partition = Partition::Valid;
  auto valid = open_dataset(root, 32, 3, o);
  EXPECT_EQ(as_packed(valid)->path(), root + "/.gannf-cache-32x32x3-valid.bin");
  std::vector<uint8_t> a(64 * 64 * 3), b(64 * 64 * 3);
  std::string why;
  ASSERT_TRUE(src->get_u8(0, a.data(), &why)) << why;
  ASSERT_TRUE(transform_file(root + "/img_align_celeba/000001.jpg", 64, 3, b.data(), &why));
  EXPECT_EQ(a, b);

  // Kaggle's CSV and nested folder.
  const std::string k = d / "kaggle";
  for (int i = 1; i <= 4; i++) {
    char name[64];
    std::snprintf(name, sizeof name, "img_align_celeba/img_align_celeba/%06d.jpg", i);
    write_image(k + "/" + name, 178, 218, 3, i);
  }
  write_bytes(k + "/list_eval_partition.csv",
              "image_id,partition\r\n000001.jpg,0\r\n000002.jpg,2\r\n000003.jpg,0\r\n000004.jpg,1\r\n");
  EXPECT_EQ(open_source(k, 64, 3, quiet())->size(), 2u);

  // No partition file: everything by default, a named partition is an error.
  fs::remove(root + "/list_eval_partition.txt");
  EXPECT_EQ(open_source(root, 64, 3, quiet())->size(), 6u);
  o.partition = Partition::Train;
  EXPECT_THROW(open_source(root, 64, 3, o), std::runtime_error);
}

// ---- synthetic -----------------------------------------------------------

TEST(DataSynthetic, DeterministicVariedAndInRange) {
  auto a = open_dataset("synthetic:100", 32, 3, quiet());
  auto b = open_dataset("synthetic:100", 32, 3, quiet());
  Options o = quiet();
  o.seed = 1;
  auto c = open_dataset("synthetic:100", 32, 3, o);
  EXPECT_EQ(a->size(), 100u);
  EXPECT_EQ(open_dataset("synthetic", 8, 1, quiet())->size(), 10000u);
  for (size_t i = 0; i < 100; i += 7) {
    const auto x = get_all(*a, i);
    EXPECT_EQ(x, get_all(*b, i));
    EXPECT_NE(x, get_all(*c, i));
    EXPECT_NE(x, get_all(*a, i + 1));
    const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
    EXPECT_GE(*lo, -1.f);
    EXPECT_LE(*hi, 1.f);
    EXPECT_GT(*hi - *lo, 0.2f) << "image " << i << " is nearly flat";
  }
  for (int s : {8, 64})
    for (int ch : {1, 3}) EXPECT_EQ(get_all(*open_dataset("synthetic:2", s, ch, quiet()), 1).size(), (size_t)ch * s * s);
  // Pinned: image 3 of seed 7 must be these pixels on every machine.
  std::vector<uint8_t> px(32 * 32 * 3);
  SyntheticDataset::render(7, 3, 32, 3, px.data());
  EXPECT_EQ(hash64(px.data(), px.size(), 0), 6652211149654798070ull);
}

// ---- batches -------------------------------------------------------------

TEST(DataBatch, GetBatchEqualsGet) {
  auto ds = open_dataset("synthetic:20", 16, 3, quiet());
  const std::vector<uint64_t> idx = {3, 0, 19, 3, 7};
  std::vector<float> out(idx.size() * ds->image_floats());
  get_batch(*ds, idx.data(), (int)idx.size(), out.data());
  for (size_t i = 0; i < idx.size(); i++) {
    const auto one = get_all(*ds, idx[i]);
    EXPECT_TRUE(std::equal(one.begin(), one.end(), out.begin() + i * ds->image_floats()));
  }
  const uint64_t bad = 20;
  EXPECT_THROW(get_batch(*ds, &bad, 1, out.data()), std::out_of_range);
}

// ---- Fashion-MNIST (Debian's dataset-fashion-mnist) ----------------------

TEST(DataFashionMnist, OpensTheTrainSetAndPacksIt) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::is_directory(dir)) GTEST_SKIP() << dir << " not installed (apt-get install dataset-fashion-mnist)";
  TempDir d;
  Options o = quiet();
  o.cache_path = d / "fashion.bin";
  const auto t0 = std::chrono::steady_clock::now();
  auto ds = open_dataset(dir, 32, 1, o);
  const double pack_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(ds->size(), 60000u);
  EXPECT_EQ(ds->channels(), 1);
  EXPECT_EQ(ds->image_size(), 32);
  EXPECT_TRUE(as_packed(ds)->built());
  const auto t1 = std::chrono::steady_clock::now();
  auto again = open_dataset(dir, 32, 1, o);
  const double reopen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  EXPECT_FALSE(as_packed(again)->built());
  std::printf("  Fashion-MNIST: packed 60000 images 32x32x1 in %.2f s (%.0f images/s, gunzip "
              "included); reopened with checksum in %.3f s\n",
              pack_s, 60000 / pack_s, reopen_s);
  auto src = open_source(dir, 32, 1, quiet());
  for (size_t i : {0ul, 12345ul, 59999ul}) EXPECT_EQ(get_all(*ds, i), get_all(*src, i));
  const auto x = get_all(*ds, 0);
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  EXPECT_EQ(*lo, -1.f);  // black background
  EXPECT_GT(*hi, 0.5f);
  Options t = quiet();
  t.partition = Partition::Test;
  EXPECT_EQ(open_source(dir, 32, 1, t)->size(), 10000u);
}
