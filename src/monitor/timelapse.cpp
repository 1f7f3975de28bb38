#include "timelapse.h"

#include "apng.h"
#include "image_decode.h"

namespace gannf::monitor {

std::shared_ptr<const std::string> Timelapse::get(Monitor& m, const Snapshot& s, size_t frames, std::string* error) {
  error->clear();
  const std::vector<GridInfo>& grids = *s.grids;
  if (grids.empty() || !s.run) {
    *error = "no sample grid stored yet: the coordinator stores one at each sample step (--sample-interval)";
    return nullptr;
  }
  const std::string key = s.run->run_id + "/" + std::to_string(grids.back().iteration) + "/" +
                          std::to_string(grids.size()) + "/" + std::to_string(frames);
  std::lock_guard<std::mutex> l(mu_);
  if (key == key_ && apng_) return apng_;
  std::vector<RgbImage> images;
  for (size_t i : pick_frames(grids.size(), frames)) {
    auto png = m.grid_png(grids[i].iteration, error);
    if (!png) {
      if (error->empty()) *error = "grid " + std::to_string(grids[i].iteration) + " vanished";
      return nullptr;
    }
    data::Image8 im;
    std::string why;
    if (!data::decode_image_memory(reinterpret_cast<const uint8_t*>(png->data()), png->size(), &im, &why)) {
      *error = "grid " + std::to_string(grids[i].iteration) + ": " + why;
      return nullptr;
    }
    RgbImage f;
    f.w = im.w, f.h = im.h;
    f.px.resize((size_t)im.w * im.h * 3);
    for (size_t p = 0; p < (size_t)im.w * im.h; ++p)
      for (int ch = 0; ch < 3; ++ch) f.px[p * 3 + ch] = im.px[p * im.c + (im.c >= 3 ? ch : 0)];
    // A grid of another size (the model changed under the same run) cannot
    // share the animation: the newest size wins.
    if (!images.empty() && (images.back().w != f.w || images.back().h != f.h)) images.clear();
    images.push_back(std::move(f));
  }
  apng_ = std::make_shared<const std::string>(encode_apng(images, kDelayMs, kHoldMs));
  key_ = key;
  return apng_;
}

}  // namespace gannf::monitor
