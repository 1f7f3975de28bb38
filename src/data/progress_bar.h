// Progress on stderr for long preparation steps (packing a dataset). On a
// terminal: one redrawn line with a bar, the count, the rate and an ETA; in a
// log (stderr not a TTY): one line per 10 %. Warnings go through it so they
// do not tear the bar. Not thread-safe: call it from one thread.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>

namespace gannf::data {

class ProgressBar {
 public:
  // enabled=false: silent, warnings included.
  ProgressBar(std::string label, size_t total, bool enabled);
  ~ProgressBar();
  void update(size_t done);
  void warn(const std::string& line);
  // Final line: "<label>: N in T s (R img/s)" plus `extra`.
  void finish(const std::string& extra = "");
  double seconds() const;

 private:
  void draw(bool force);
  std::string label_;
  size_t total_, done_ = 0;
  bool enabled_, tty_, finished_ = false;
  int next_decile_ = 1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace gannf::data
