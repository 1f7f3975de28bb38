// The run's time-lapse: its sample grids as the frames of one animated PNG
// (APNG: every current browser plays it, and a viewer without APNG support
// shows its first frame), written here with zlib alone: 24-bit colour, so a
// grid needs no palette and loses nothing, and no dependency beyond the
// one every PNG needs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gannf::monitor {

struct RgbImage {
  int w = 0, h = 0;
  std::vector<uint8_t> px;  // (h, w, 3)
};

// frames: at least one, all of one size. delay_ms: each frame's time on
// screen; the last one stays hold_ms before the animation starts over.
// Throws std::invalid_argument for frames that do not fit.
std::string encode_apng(const std::vector<RgbImage>& frames, int delay_ms, int hold_ms);

// Which of `count` stored grids make a time-lapse of at most `frames`:
// evenly spread, the first and the last always in.
std::vector<size_t> pick_frames(size_t count, size_t frames);

}  // namespace gannf::monitor
