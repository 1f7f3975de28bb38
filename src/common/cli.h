// The programs' command lines, on CLI11 (Debian's libcli11-dev): --name value
// or --name=value, numbers checked with one clear line each ("--lr: 'fast' is
// not a number"), --help listing every option with its default. CLI11 does the
// parsing (in cli.cpp, so that only one file compiles its headers); this fixes
// the wording and what a program sees, the same in all.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace gannf::cli {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Parser {
 public:
  // `usage` starts the help text ("usage: gannf-train [options]\n...").
  Parser(const std::string& program, const std::string& usage);
  ~Parser();
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // --name VALUE; the variable's value is the default. Given twice, the last wins.
  void opt(const std::string& name, std::string* v, const std::string& help);
  void opt(const std::string& name, int* v, const std::string& help);
  void opt(const std::string& name, int64_t* v, const std::string& help);
  void opt(const std::string& name, uint64_t* v, const std::string& help);
  void opt(const std::string& name, float* v, const std::string& help);
  void opt(const std::string& name, double* v, const std::string& help);
  void flag(const std::string& name, bool* v, const std::string& help);
  // A positional argument (gannf-generate's command).
  void positional(const std::string& name, std::string* v, const std::string& help);
  // Every positional argument from here on (gannf-coord settings NAME=VALUE ...).
  void positionals(const std::string& name, std::vector<std::string>* v, const std::string& help);
  // Arguments this parser does not know are kept for rest() instead of
  // refused: the benchmarks hand them on to Google Benchmark.
  void keep_unknown();

  // Parses argv[first..] (argv[first - 1] stands for the program). Throws
  // Error with one line; help_requested is set by --help / -h.
  void parse(int argc, char** argv, int first = 1);
  bool help_requested = false;
  std::string help() const;
  // The arguments kept by keep_unknown(), in order.
  std::vector<std::string> rest() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The value of --name in argv[first..] before the full parse: the config file
// (--config), whose values become the defaults that the other flags override.
std::string value_before_parse(int argc, char** argv, const std::string& name, int first = 1);

// The options that name the data and the model's shape, shared (same names,
// same help) by gannf-train and gannf-coord init.
struct ModelOptions {
  std::string* dataset;
  int *image_size, *channels, *nz, *ngf, *ndf;
};
void add_model_options(Parser& p, const ModelOptions& m);

}  // namespace gannf::cli
