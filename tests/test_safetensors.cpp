// The safetensors codec: round trips, byte-for-byte agreement with the
// reference writer (a golden file from tools/make_fixtures.py), atomic saves,
// and a clear refusal of every kind of damaged file.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "safetensors.h"

using namespace gannf;
namespace fs = std::filesystem;

namespace {

// Suites are named in lower case so that `ctest -R safetensors` selects them.
class safetensorsFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gannf_st_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string write(const std::string& name, const std::vector<uint8_t>& b) const {
    const std::string p = path(name);
    std::ofstream(p, std::ios::binary).write((const char*)b.data(), (std::streamsize)b.size());
    return p;
  }
  static std::vector<uint8_t> read(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
  }
  fs::path dir_;
};

std::vector<uint8_t> header_of(const std::vector<uint8_t>& file) {
  uint64_t n;
  std::memcpy(&n, file.data(), 8);
  return std::vector<uint8_t>(file.begin() + 8, file.begin() + 8 + (long)n);
}
std::string header_str(const std::vector<uint8_t>& file) {
  auto h = header_of(file);
  return std::string(h.begin(), h.end());
}

// ---- round trips --------------------------------------------------------------

TEST_F(safetensorsFiles, RoundTripF32F64I64WithMetadata) {
  const std::vector<float> w = {1.5f, -0.0f, 3e-38f, std::numeric_limits<float>::infinity(),
                                -2.25f, 1e30f};
  const std::vector<double> d = {1e-300, -2.5, M_PI};
  const std::vector<int64_t> i = {0, -1, int64_t(1) << 40, std::numeric_limits<int64_t>::min(),
                                  std::numeric_limits<int64_t>::max()};
  const float s = 7.5f;
  StEntries t = {{"w", StTensor::f32({2, 3}, w)},
                 {"d", StTensor::f64({3}, d)},
                 {"i", StTensor::i64({5}, i)},
                 {"scalar", StTensor::f32({}, &s)},
                 {"empty", StTensor::f32({0, 4}, std::vector<float>{})}};
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"iteration", "12"},
                                                   {"note", "ünïcode \"quoted\"\n"}};
  const std::string p = path("rt.safetensors");
  save_safetensors(p, t, meta);
  const SafeTensors st = SafeTensors::load(p);
  EXPECT_EQ(st.source(), p);
  EXPECT_EQ(st.metadata, meta);
  EXPECT_EQ(st.size(), 5u);
  EXPECT_EQ(st.at("w").dtype, "F32");
  EXPECT_EQ(st.at("w").shape, (std::vector<int64_t>{2, 3}));
  const auto w2 = st.floats("w");
  ASSERT_EQ(w2.size(), w.size());
  EXPECT_EQ(std::memcmp(w2.data(), w.data(), w.size() * 4), 0);  // bit exact, -0 included
  EXPECT_EQ(st.doubles("d"), d);
  EXPECT_EQ(st.ints("i"), i);
  EXPECT_EQ(st.at("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(st.floats("scalar"), std::vector<float>{7.5f});
  EXPECT_EQ(st.at("empty").shape, (std::vector<int64_t>{0, 4}));
  EXPECT_TRUE(st.floats("empty").empty());
  EXPECT_TRUE(st.has("d"));
  EXPECT_FALSE(st.has("nope"));
  // F64 converts to float, F32 to double
  EXPECT_FLOAT_EQ(st.floats("d")[1], -2.5f);
  EXPECT_EQ(st.doubles("w")[0], 1.5);
  // The in-memory path reads the same thing.
  const SafeTensors mem = SafeTensors::parse(serialize_safetensors(t, meta), "<memory>");
  EXPECT_EQ(mem.names(), st.names());
  EXPECT_EQ(mem.ints("i"), i);
}

TEST(safetensorsFormat, LayoutFollowsTheReference) {
  // Widest dtype first, then by name; __metadata__ first; header padded with
  // spaces to a multiple of 8; the data tile the section in that order.
  const double d = 1;
  const int64_t i = 2;
  const float f[3] = {1, 2, 3};
  StEntries t = {{"b", StTensor::f32({3}, f)}, {"a", StTensor::f32({1}, f)},
                 {"z", StTensor::f64({}, &d)}, {"c", StTensor::i64({1}, &i)}};
  const auto bytes = serialize_safetensors(t, {{"k", "v"}});
  const std::string h = header_str(bytes);
  EXPECT_EQ(h.size() % 8, 0u);
  const std::string json = h.substr(0, h.find_last_not_of(' ') + 1);
  EXPECT_EQ(json,
            "{\"__metadata__\":{\"k\":\"v\"},"
            "\"c\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
            "\"z\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[8,16]},"
            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[20,32]}}");
  EXPECT_EQ(bytes.size(), 8 + h.size() + 32);
  EXPECT_EQ(SafeTensors::parse(bytes, "x").names(),
            (std::vector<std::string>{"c", "z", "a", "b"}));
  // An empty file is a valid one.
  const auto empty = serialize_safetensors({});
  EXPECT_EQ(header_str(empty), "{}      ");
  EXPECT_EQ(SafeTensors::parse(empty, "empty").size(), 0u);
}

TEST(safetensorsFormat, HalfAndBfloatConvert) {
  StTensor h;
  h.dtype = "F16";
  h.shape = {7};
  const uint16_t hv[7] = {0x3c00, 0xc000, 0x0001, 0x8000, 0x7c00, 0xfc00, 0x7bff};
  h.data.resize(sizeof hv);
  std::memcpy(h.data.data(), hv, sizeof hv);
  StTensor b;
  b.dtype = "BF16";
  b.shape = {2};
  const uint16_t bv[2] = {0x3f80, 0xc040};  // 1, -3
  b.data.resize(sizeof bv);
  std::memcpy(b.data.data(), bv, sizeof bv);
  const SafeTensors st = SafeTensors::parse(serialize_safetensors({{"h", h}, {"b", b}}), "x");
  const auto f = st.floats("h");
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -2.0f);
  EXPECT_EQ(f[2], std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(f[3] == 0 && std::signbit(f[3]));
  EXPECT_EQ(f[4], std::numeric_limits<float>::infinity());
  EXPECT_EQ(f[5], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(f[6], 65504.0f);
  EXPECT_EQ(st.floats("b"), (std::vector<float>{1.0f, -3.0f}));
}

// The reference implementation (safetensors.torch.save_file) wrote this file;
// gannf must read it and write the very same bytes.
TEST(safetensorsFormat, GoldenFileFromTheReference) {
  const std::string p = std::string(GANNF_FIXTURES) + "/safetensors_golden.safetensors";
  const SafeTensors st = SafeTensors::load(p);
  EXPECT_EQ(st.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(st.floats("weights"), (std::vector<float>{-1, -0.5f, 0, 0.5f, 1, 1.5f}));
  EXPECT_EQ(st.at("weights").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(st.doubles("wide"), (std::vector<double>{1e-300, -2.5, 3.141592653589793}));
  EXPECT_EQ(st.ints("steps"), (std::vector<int64_t>{0, -1, int64_t(1) << 40,
                                                    std::numeric_limits<int64_t>::min()}));
  EXPECT_EQ(st.at("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(st.floats("scalar"), std::vector<float>{3.25f});
  EXPECT_EQ(st.at("empty").shape, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(st.floats("half"), (std::vector<float>{1.5f, -0.25f, 65504.0f}));
  EXPECT_EQ(st.floats("brain"), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(st.ints("small"), (std::vector<int64_t>{0, 127, 255}));
  EXPECT_EQ(st.ints("count"), std::vector<int64_t>{-7});

  StEntries again;
  for (auto& n : st.names()) again.emplace_back(n, st.at(n));
  std::ifstream f(p, std::ios::binary);
  const std::vector<uint8_t> golden(std::istreambuf_iterator<char>(f), {});
  const auto ours = serialize_safetensors(again, st.metadata);
  EXPECT_EQ(header_str(ours), header_str(golden));
  EXPECT_TRUE(ours == golden) << "gannf's bytes differ from the reference writer's";
  // The order of the input does not matter.
  std::reverse(again.begin(), again.end());
  EXPECT_TRUE(serialize_safetensors(again, st.metadata) == golden);
}

// The parity fixtures (hundreds of tensors, F32, F64 and I64, metadata) come
// back byte for byte when gannf rewrites what it read.
TEST(safetensorsFormat, FixturesRewriteByteForByte) {
  int seen = 0;
  for (auto& e : fs::directory_iterator(GANNF_FIXTURES)) {
    if (e.path().extension() != ".safetensors") continue;
    std::ifstream f(e.path(), std::ios::binary);
    const std::vector<uint8_t> file(std::istreambuf_iterator<char>(f), {});
    const SafeTensors st = SafeTensors::parse(file, e.path().string());
    StEntries all;
    for (auto& n : st.names()) all.emplace_back(n, st.at(n));
    EXPECT_TRUE(serialize_safetensors(all, st.metadata) == file) << e.path();
    seen++;
  }
  EXPECT_GE(seen, 5) << "expected the parity fixtures and the golden file in " << GANNF_FIXTURES;
}

TEST(safetensorsFormat, WrongTypeAndMissingNameAreClear) {
  const int64_t i = 3;
  const float f = 1;
  const auto st = SafeTensors::parse(
      serialize_safetensors({{"n", StTensor::i64({}, &i)}, {"x", StTensor::f32({}, &f)}}), "f.st");
  auto msg = [](auto fn) {
    try {
      fn();
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(msg([&] { st.floats("n"); }).find("tensor 'n' has dtype I64, not a floating"), std::string::npos);
  EXPECT_NE(msg([&] { st.ints("x"); }).find("tensor 'x' has dtype F32, not an integer"), std::string::npos);
  EXPECT_NE(msg([&] { st.at("y"); }).find("f.st: no tensor named 'y'"), std::string::npos);
}

TEST(safetensorsFormat, WriterRefusesBadInput) {
  const float f[2] = {1, 2};
  StTensor good = StTensor::f32({2}, f);
  StTensor short_data = good;
  short_data.data.pop_back();
  StTensor unknown = good;
  unknown.dtype = "F128";
  StTensor negative = good;
  negative.shape = {-2};
  EXPECT_THROW(serialize_safetensors({{"a", good}, {"a", good}}), std::invalid_argument);
  EXPECT_THROW(serialize_safetensors({{"", good}}), std::invalid_argument);
  EXPECT_THROW(serialize_safetensors({{"__metadata__", good}}), std::invalid_argument);
  EXPECT_THROW(serialize_safetensors({{"a", short_data}}), std::invalid_argument);
  EXPECT_THROW(serialize_safetensors({{"a", unknown}}), std::invalid_argument);
  EXPECT_THROW(serialize_safetensors({{"a", negative}}), std::invalid_argument);
  EXPECT_THROW(serialize_safetensors({{"a", good}}, {{"k", "\xff\xfe"}}), std::invalid_argument);
  EXPECT_THROW(StTensor::f32({3}, std::vector<float>{1, 2}), std::invalid_argument);
}

// ---- atomic saves ---------------------------------------------------------------

TEST_F(safetensorsFiles, SaveReplacesAtomicallyAndLeavesNoTemporaries) {
  const std::string p = path("ckpt.safetensors");
  const float a = 1, b = 2;
  save_safetensors(p, {{"x", StTensor::f32({}, &a)}});
  ::chmod(p.c_str(), 0640);
  save_safetensors(p, {{"x", StTensor::f32({}, &b)}});
  EXPECT_EQ(SafeTensors::load(p).floats("x"), std::vector<float>{2});
  struct stat sb {};
  ASSERT_EQ(::stat(p.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0640u) << "a replaced file keeps its mode";
  int files = 0;
  for (auto& e : fs::directory_iterator(dir_)) {
    files++;
    EXPECT_EQ(e.path().filename(), "ckpt.safetensors");
  }
  EXPECT_EQ(files, 1);
}

TEST_F(safetensorsFiles, SaveIntoMissingFolderFailsNamingThePath) {
  const std::string p = path("no/such/dir/x.safetensors");
  try {
    save_safetensors(p, {});
    ADD_FAILURE() << "saved into a missing folder";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// ---- damaged files ----------------------------------------------------------------

// A file with the given header text and data section, its length field
// correct unless `hlen` overrides it.
std::vector<uint8_t> file_with(const std::string& header, size_t data_bytes,
                               uint64_t hlen = UINT64_MAX) {
  const uint64_t n = hlen == UINT64_MAX ? header.size() : hlen;
  std::vector<uint8_t> b(8 + header.size() + data_bytes);
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  for (size_t i = 0; i < data_bytes; i++) b[8 + header.size() + i] = (uint8_t)i;
  return b;
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}

struct Damage {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* expect;  // a phrase the error must contain
};

std::vector<Damage> damages() {
  const std::string a = entry("a", "F32", "[2]", "[0,8]");
  const std::string b = entry("b", "F32", "[1]", "[8,12]");
  const std::string ok = "{" + a + "," + b + "}";
  std::vector<Damage> d;
  d.push_back({"empty", {}, "truncated"});
  d.push_back({"short", {1, 0, 0}, "truncated"});
  d.push_back({"header_past_end", file_with(ok, 12, ok.size() + 100), "truncated: the header length says"});
  d.push_back({"header_huge", file_with(ok, 12, uint64_t(1) << 40), "exceeds the format's limit"});
  d.push_back({"not_an_object", file_with("[1,2]", 0), "does not start with a JSON object"});
  d.push_back({"bad_json", file_with("{\"a\":{\"dtype\":", 0), "not valid JSON"});
  d.push_back({"trailing_garbage_in_header", file_with(ok + "x", 12), "not valid JSON"});
  d.push_back({"bad_utf8", file_with("{\"\xff\":1}", 0), "not valid JSON"});
  d.push_back({"data_cut", file_with(ok, 10), "beyond the data section"});
  d.push_back({"trailing_data", file_with(ok, 16), "the tensors cover 12 bytes but the data section has 16"});
  d.push_back({"overlap", file_with("{" + a + "," + entry("b", "F32", "[1]", "[4,8]") + "}", 8), "overlap"});
  d.push_back({"gap", file_with("{" + a + "," + entry("b", "F32", "[1]", "[12,16]") + "}", 16),
               "bytes [8,12) of the data section belong to no tensor"});
  d.push_back({"not_from_zero", file_with("{" + entry("a", "F32", "[1]", "[4,8]") + "}", 8), "belong to no tensor"});
  d.push_back({"size_mismatch", file_with("{" + entry("a", "F32", "[3]", "[0,8]") + "}", 8),
               "dtype F32 and shape [3] need 12 bytes, but data_offsets [0,8] hold 8"});
  d.push_back({"f64_size_mismatch", file_with("{" + entry("a", "F64", "[2]", "[0,8]") + "}", 8), "need 16 bytes"});
  d.push_back({"unknown_dtype", file_with("{" + entry("a", "F42", "[2]", "[0,8]") + "}", 8), "unknown dtype \"F42\""});
  d.push_back({"sub_byte_dtype", file_with("{" + entry("a", "F4", "[2]", "[0,1]") + "}", 1), "sub-byte"});
  d.push_back({"reversed_offsets", file_with("{" + entry("a", "F32", "[0]", "[8,0]") + "}", 8), "end before they begin"});
  d.push_back({"negative_dim", file_with("{" + entry("a", "F32", "[-2]", "[0,8]") + "}", 8), "negative value -2"});
  d.push_back({"fractional_offset", file_with("{" + entry("a", "F32", "[2]", "[0,8.0]") + "}", 8), "not an integer"});
  d.push_back({"three_offsets", file_with("{" + entry("a", "F32", "[2]", "[0,8,8]") + "}", 8), "array of two integers"});
  d.push_back({"shape_overflow", file_with("{" + entry("a", "F32", "[4294967296,4294967296]", "[0,8]") + "}", 8), "overflows"});
  d.push_back({"missing_field", file_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8), "missing field \"data_offsets\""});
  d.push_back({"extra_field", file_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8),
               "unexpected field \"x\""});
  d.push_back({"entry_not_object", file_with("{\"a\":[1]}", 0), "entry is not a JSON object"});
  d.push_back({"dtype_not_string", file_with("{\"a\":{\"dtype\":4,\"shape\":[],\"data_offsets\":[0,4]}}", 4), "dtype is not a string"});
  d.push_back({"metadata_not_string", file_with("{\"__metadata__\":{\"k\":1}}", 0), "is not a string"});
  d.push_back({"metadata_not_object", file_with("{\"__metadata__\":\"x\"}", 0), "__metadata__ is not a JSON object"});
  d.push_back({"duplicate_tensor", file_with("{" + a + "," + a + "}", 8), "repeats the key \"a\""});
  return d;
}

TEST_F(safetensorsFiles, EveryDamageIsRefusedWithAClearMessage) {
  for (const Damage& dmg : damages()) {
    const std::string p = write(std::string(dmg.name) + ".safetensors", dmg.bytes);
    try {
      SafeTensors::load(p);
      ADD_FAILURE() << dmg.name << ": loaded without an error";
    } catch (const std::runtime_error& e) {
      const std::string w = e.what();
      EXPECT_NE(w.find(p), std::string::npos) << dmg.name << ": the error does not name the file: " << w;
      EXPECT_NE(w.find(dmg.expect), std::string::npos)
          << dmg.name << ": expected \"" << dmg.expect << "\" in: " << w;
    }
  }
}

TEST_F(safetensorsFiles, MissingFileAndFolderAreRefused) {
  EXPECT_THROW(
      {
        try {
          SafeTensors::load(path("absent.safetensors"));
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos) << e.what();
          throw;
        }
      },
      std::runtime_error);
  EXPECT_THROW(SafeTensors::load(dir_.string()), std::runtime_error);
}

// Every single-byte truncation of a valid file is refused, never read short.
TEST_F(safetensorsFiles, EveryTruncationIsRefused) {
  const float f[5] = {1, 2, 3, 4, 5};
  const auto good = serialize_safetensors({{"a", StTensor::f32({5}, f)}}, {{"k", "v"}});
  for (size_t n = 0; n < good.size(); n++) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + (long)n);
    EXPECT_THROW(SafeTensors::parse(cut, "cut"), std::runtime_error) << "cut at " << n;
  }
  EXPECT_NO_THROW(SafeTensors::parse(good, "whole"));
}

}  // namespace
