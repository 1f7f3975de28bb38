// The time-lapse as served: the stored grids picked by pick_frames, decoded
// and encoded as one APNG, built once per (run, newest grid, frame count) and
// shared by every request until a new grid arrives. One build at a time: a
// hundred browsers asking at once wait for the same one.
#pragma once
#include <memory>
#include <mutex>
#include <string>

#include "monitor.h"

namespace gannf::monitor {

class Timelapse {
 public:
  static constexpr int kDelayMs = 150, kHoldMs = 2000;
  // nullptr with *error set when there is no grid or the grids cannot be read.
  std::shared_ptr<const std::string> get(Monitor& m, const Snapshot& s, size_t frames, std::string* error);

 private:
  std::mutex mu_;
  std::string key_;
  std::shared_ptr<const std::string> apng_;
};

}  // namespace gannf::monitor
