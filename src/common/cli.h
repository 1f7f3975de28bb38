// The programs' command lines, on CLI11 (Debian's libcli11-dev): --name value
// or --name=value, numbers checked with one clear line each ("--lr: 'fast' is
// not a number"), --help listing every option with its default. CLI11 does the
// parsing; this fixes the wording and what a program sees, the same in all.
#pragma once
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace gannf::cli {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

// A number in the option's type, written in base 10 (CLI11 alone would read
// 010 as octal), or one line saying what is wrong. Rewrites whole numbers in
// their plain form for CLI11's conversion.
template <class T>
CLI::Validator number() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        if constexpr (std::is_unsigned_v<T>) {
          if (s.find('-') != std::string::npos) return "'" + s + "' must not be negative";
          const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
          if (s.empty() || *end || errno) return "'" + s + "' is not a whole number";
          if (v > std::numeric_limits<T>::max()) return "'" + s + "' is out of range";
          s = std::to_string(v);
        } else if constexpr (std::is_integral_v<T>) {
          const long long v = std::strtoll(s.c_str(), &end, 10);
          if (s.empty() || *end || errno) return "'" + s + "' is not a whole number";
          if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max())
            return "'" + s + "' is out of range";
          s = std::to_string(v);
        } else {
          const double v = std::strtod(s.c_str(), &end);
          if (s.empty() || *end || !std::isfinite(v) || !std::isfinite((T)v)) return "'" + s + "' is not a number";
        }
        return {};
      },
      "", "number");
}

// Help without CLI11's own usage line: the program's usage text (which starts
// with "usage:") comes first instead.
class Formatter : public CLI::Formatter {
 public:
  std::string make_usage(const CLI::App*, std::string) const override { return {}; }
};

}  // namespace detail

class Parser {
 public:
  Parser(const std::string& program, const std::string& usage) : app_(usage, program), program_(program) {
    app_.formatter(std::make_shared<detail::Formatter>());
    app_.get_formatter()->column_width(34);
    app_.get_formatter()->label("Positionals", "arguments");
    // As before CLI11: an option given twice takes the last value.
    app_.option_defaults()->group("options")->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app_.set_help_flag("-h,--help", "this text");
    app_.allow_extras();  // unknown arguments are reported below, in our words
  }

  void opt(const std::string& name, std::string* v, const std::string& help) {
    app_.add_option("--" + name, *v, help)->capture_default_str();
  }
  template <class T, std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>, int> = 0>
  void opt(const std::string& name, T* v, const std::string& help) {
    app_.add_option("--" + name, *v, help)->transform(detail::number<T>())->capture_default_str();
  }
  void flag(const std::string& name, bool* v, const std::string& help) { app_.add_flag("--" + name, *v, help); }
  // A positional argument (gannf-generate's command).
  void positional(const std::string& name, std::string* v, const std::string& help) {
    app_.add_option(name, *v, help);
  }
  // Arguments this parser does not know are kept for rest() instead of
  // refused: the benchmarks hand them on to Google Benchmark.
  void keep_unknown() { keep_unknown_ = true; }

  // Parses argv[first..] (argv[first - 1] stands for the program). Throws
  // Error with one line; help_requested is set by --help / -h.
  void parse(int argc, char** argv, int first = 1) {
    try {
      app_.parse(argc - first + 1, argv + first - 1);
    } catch (const CLI::CallForHelp&) {
      help_requested = true;
      return;
    } catch (const CLI::ArgumentMismatch& e) {
      // "--batch-size: 1 required INT missing": an option at the end without its value
      const std::string m = e.what();
      if (m.find("missing") == std::string::npos) throw Error(m);
      throw Error(m.substr(0, m.find(':')) + " needs a value");
    } catch (const CLI::ConversionError& e) {
      // "Could not convert: --quiet = banana": only flags get here (numbers are checked before)
      const std::string m = e.what(), pre = "Could not convert: ";
      const size_t eq = m.find(" = ");
      if (m.rfind(pre, 0) != 0 || eq == std::string::npos) throw Error(m);
      throw Error(m.substr(pre.size(), eq - pre.size()) + " takes no value");
    } catch (const CLI::ParseError& e) {
      throw Error(e.what());
    }
    if (keep_unknown_) return;
    for (const std::string& a : app_.remaining()) {
      if (a.size() > 1 && a[0] == '-')
        throw Error("unknown option " + a.substr(0, a.find('=')) + " (see " + program_ + " --help)");
      throw Error("unexpected argument '" + a + "'");
    }
  }
  bool help_requested = false;
  std::string help() const { return app_.help(); }
  // The arguments kept by keep_unknown(), in order.
  std::vector<std::string> rest() const { return app_.remaining(); }

 private:
  CLI::App app_;
  std::string program_;
  bool keep_unknown_ = false;
};

// The value of --name in argv[first..] before the full parse: the config file
// (--config), whose values become the defaults that the other flags override.
inline std::string value_before_parse(int argc, char** argv, const std::string& name, int first = 1) {
  std::string v;
  const std::string flag = "--" + name;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == flag && i + 1 < argc) v = argv[i + 1];
    else if (a.rfind(flag + "=", 0) == 0) v = a.substr(flag.size() + 1);
  }
  return v;
}

// The options that name the data and the model's shape, shared (same names,
// same help) by gannf-train and gannf-coord init.
struct ModelOptions {
  std::string* dataset;
  int *image_size, *channels, *nz, *ngf, *ndf;
};
inline void add_model_options(Parser& p, const ModelOptions& m) {
  p.opt("dataset", m.dataset, "'synthetic[:N]', a CelebA folder, a folder of images, or MNIST-style IDX files");
  p.opt("image-size", m.image_size, "32 or 64");
  p.opt("channels", m.channels, "1 or 3 (0: 1 for IDX data, else 3)");
  p.opt("latent-dim", m.nz, "size of the noise vector z");
  p.opt("ngf", m.ngf, "generator width");
  p.opt("ndf", m.ndf, "discriminator width");
}

}  // namespace gannf::cli
