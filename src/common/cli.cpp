#include "cli.h"

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <type_traits>

namespace gannf::cli {

namespace {

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

}  // namespace

struct Parser::Impl {
  CLI::App app;
  std::string program;
  bool keep_unknown = false;
  Impl(const std::string& prog, const std::string& usage) : app(usage, prog), program(prog) {}
  template <class T>
  void add_number(const std::string& name, T* v, const std::string& help) {
    app.add_option("--" + name, *v, help)->transform(number<T>())->capture_default_str();
  }
};

Parser::Parser(const std::string& program, const std::string& usage)
    : impl_(std::make_unique<Impl>(program, usage)) {
  CLI::App& app = impl_->app;
  app.formatter(std::make_shared<Formatter>());
  app.get_formatter()->column_width(34);
  app.get_formatter()->label("Positionals", "arguments");
  // As before CLI11: an option given twice takes the last value.
  app.option_defaults()->group("options")->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.set_help_flag("-h,--help", "this text");
  app.allow_extras();  // unknown arguments are reported by parse(), in our words
}

Parser::~Parser() = default;

void Parser::opt(const std::string& name, std::string* v, const std::string& help) {
  impl_->app.add_option("--" + name, *v, help)->capture_default_str();
}
void Parser::opt(const std::string& name, int* v, const std::string& help) { impl_->add_number(name, v, help); }
void Parser::opt(const std::string& name, int64_t* v, const std::string& help) { impl_->add_number(name, v, help); }
void Parser::opt(const std::string& name, uint64_t* v, const std::string& help) { impl_->add_number(name, v, help); }
void Parser::opt(const std::string& name, float* v, const std::string& help) { impl_->add_number(name, v, help); }
void Parser::opt(const std::string& name, double* v, const std::string& help) { impl_->add_number(name, v, help); }
void Parser::flag(const std::string& name, bool* v, const std::string& help) {
  impl_->app.add_flag("--" + name, *v, help);
}
void Parser::positional(const std::string& name, std::string* v, const std::string& help) {
  impl_->app.add_option(name, *v, help);
}
void Parser::positionals(const std::string& name, std::vector<std::string>* v, const std::string& help) {
  impl_->app.add_option(name, *v, help);
}
void Parser::keep_unknown() { impl_->keep_unknown = true; }

void Parser::parse(int argc, char** argv, int first) {
  try {
    impl_->app.parse(argc - first + 1, argv + first - 1);
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
  if (impl_->keep_unknown) return;
  for (const std::string& a : impl_->app.remaining()) {
    if (a.size() > 1 && a[0] == '-')
      throw Error("unknown option " + a.substr(0, a.find('=')) + " (see " + impl_->program + " --help)");
    throw Error("unexpected argument '" + a + "'");
  }
}

std::string Parser::help() const { return impl_->app.help(); }
std::vector<std::string> Parser::rest() const { return impl_->app.remaining(); }

std::string value_before_parse(int argc, char** argv, const std::string& name, int first) {
  std::string v;
  const std::string flag = "--" + name;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == flag && i + 1 < argc) v = argv[i + 1];
    else if (a.rfind(flag + "=", 0) == 0) v = a.substr(flag.size() + 1);
  }
  return v;
}

void add_model_options(Parser& p, const ModelOptions& m) {
  p.opt("dataset", m.dataset, "'synthetic[:N]', a CelebA folder, a folder of images, or MNIST-style IDX files");
  p.opt("image-size", m.image_size, "32 or 64");
  p.opt("channels", m.channels, "1 or 3 (0: 1 for IDX data, else 3)");
  p.opt("latent-dim", m.nz, "size of the noise vector z");
  p.opt("ngf", m.ngf, "generator width");
  p.opt("ndf", m.ndf, "discriminator width");
}

}  // namespace gannf::cli
