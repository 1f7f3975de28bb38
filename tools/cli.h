// A small command-line parser shared by the gannf programs: --name value or
// --name=value, typed values with one clear error each, --help text.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace gannf::cli {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Parser {
 public:
  Parser(std::string program, std::string usage) : prog_(std::move(program)), usage_(std::move(usage)) {}
  void opt(const std::string& name, std::string* v, const std::string& help) {
    add(name, help, *v, [v](const std::string& s) { *v = s; });
  }
  void opt(const std::string& name, int* v, const std::string& help) {
    add(name, help, std::to_string(*v), [v, name](const std::string& s) { *v = (int)to_int(name, s); });
  }
  void opt(const std::string& name, int64_t* v, const std::string& help) {
    add(name, help, std::to_string(*v), [v, name](const std::string& s) { *v = to_int(name, s); });
  }
  void opt(const std::string& name, uint64_t* v, const std::string& help) {
    add(name, help, std::to_string(*v), [v, name](const std::string& s) {
      const int64_t x = to_int(name, s);
      if (x < 0) throw Error("--" + name + ": must not be negative");
      *v = (uint64_t)x;
    });
  }
  void opt(const std::string& name, float* v, const std::string& help) {
    add(name, help, fmt(*v), [v, name](const std::string& s) { *v = (float)to_num(name, s); });
  }
  void flag(const std::string& name, bool* v, const std::string& help) {
    flags_[name] = v;
    help_.push_back("  --" + name + "\n      " + help);
  }
  // Parses argv[first..]; returns positional arguments. Throws Error.
  std::vector<std::string> parse(int argc, char** argv, int first = 1) {
    std::vector<std::string> pos;
    for (int i = first; i < argc; i++) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        help_requested = true;
        continue;
      }
      if (a.rfind("--", 0) != 0 || a == "--") {
        pos.push_back(a);
        continue;
      }
      std::string name = a.substr(2), value;
      bool has_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      if (auto f = flags_.find(name); f != flags_.end()) {
        if (has_value) throw Error("--" + name + " takes no value");
        *f->second = true;
        continue;
      }
      auto o = opts_.find(name);
      if (o == opts_.end()) throw Error("unknown option --" + name + " (see " + prog_ + " --help)");
      if (!has_value) {
        if (i + 1 >= argc) throw Error("--" + name + " needs a value");
        value = argv[++i];
      }
      o->second(value);
    }
    return pos;
  }
  std::string help() const {
    std::string h = usage_ + "\n\noptions:\n";
    for (auto& l : help_) h += l + "\n";
    h += "  --help\n      this text\n";
    return h;
  }
  bool help_requested = false;

 private:
  static int64_t to_int(const std::string& name, const std::string& s) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end || errno) throw Error("--" + name + ": '" + s + "' is not a whole number");
    return v;
  }
  static double to_num(const std::string& name, const std::string& s) {
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end || !std::isfinite(v)) throw Error("--" + name + ": '" + s + "' is not a number");
    return v;
  }
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
  }
  void add(const std::string& name, const std::string& help, const std::string& def,
           std::function<void(const std::string&)> set) {
    opts_[name] = std::move(set);
    help_.push_back("  --" + name + " VALUE   (default: " + (def.empty() ? "none" : def) + ")\n      " + help);
  }
  std::string prog_, usage_;
  std::map<std::string, std::function<void(const std::string&)>> opts_;
  std::map<std::string, bool*> flags_;
  std::vector<std::string> help_;
};

// The options that name the data and the model's shape, shared (same names,
// same help) by gannf-train and gannf-coord init.
struct ModelOptions {
  std::string* dataset;
  int *image_size, *channels, *nz, *ngf, *ndf;
};
inline void add_model_options(Parser& p, const ModelOptions& m) {
  p.opt("dataset", m.dataset,
        "'synthetic[:N]', a CelebA folder, a folder of images, or MNIST-style IDX files");
  p.opt("image-size", m.image_size, "32 or 64");
  p.opt("channels", m.channels, "1 or 3 (0: 1 for IDX data, else 3)");
  p.opt("latent-dim", m.nz, "size of the noise vector z");
  p.opt("ngf", m.ngf, "generator width");
  p.opt("ndf", m.ndf, "discriminator width");
}

}  // namespace gannf::cli
