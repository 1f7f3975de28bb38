#include "progress_bar.h"

#include <unistd.h>

#include <cstdio>

namespace gannf::data {

namespace {
std::string hms(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  const long t = (long)(s + 0.5);
  char b[32];
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    std::snprintf(b, sizeof b, "%ld:%02ld", t / 60, t % 60);
  return b;
}
}  // namespace

ProgressBar::ProgressBar(std::string label, size_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(2) == 1),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {
  if (enabled_ && !tty_) std::fprintf(stderr, "%s: %zu items\n", label_.c_str(), total_);
}

ProgressBar::~ProgressBar() {
  if (enabled_ && tty_ && !finished_) std::fprintf(stderr, "\n");
}

double ProgressBar::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::update(size_t done) {
  done_ = done;
  if (enabled_) draw(false);
}

void ProgressBar::draw(bool force) {
  const auto now = std::chrono::steady_clock::now();
  const double t = seconds();
  const double rate = t > 0 ? done_ / t : 0;
  const double eta = rate > 0 ? (total_ - done_) / rate : -1;
  const int pct = total_ ? (int)(100.0 * done_ / total_) : 100;
  if (tty_) {
    // Redrawing more often than 10 times a second only costs time.
    if (!force && now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
    last_draw_ = now;
    constexpr int W = 30;
    const int fill = total_ ? (int)((double)W * done_ / total_) : W;
    std::string bar(fill, '#');
    bar.resize(W, '.');
    std::fprintf(stderr, "\r%s [%s] %zu/%zu %3d%% %.0f img/s ETA %s\033[K", label_.c_str(),
                 bar.c_str(), done_, total_, pct, rate, hms(eta).c_str());
  } else {
    if (total_ == 0 || pct < next_decile_ * 10 || done_ == total_) return;
    while (next_decile_ * 10 <= pct) next_decile_++;
    std::fprintf(stderr, "%s: %zu/%zu (%d%%), %.0f img/s, ETA %s\n", label_.c_str(), done_,
                 total_, pct, rate, hms(eta).c_str());
  }
  std::fflush(stderr);
}

void ProgressBar::warn(const std::string& line) {
  if (!enabled_) return;
  if (tty_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "warning: %s\n", line.c_str());
  if (tty_) draw(true);
  std::fflush(stderr);
}

void ProgressBar::finish(const std::string& extra) {
  if (!enabled_ || finished_) return;
  finished_ = true;
  const double t = seconds();
  if (tty_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s: %zu in %.2f s (%.0f img/s)%s\n", label_.c_str(), done_, t,
               t > 0 ? done_ / t : 0.0, extra.c_str());
  std::fflush(stderr);
}

}  // namespace gannf::data
