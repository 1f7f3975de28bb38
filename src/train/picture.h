// Pictures people would rather look at than read: image grids and loss curves, as PNG.
#pragma once
#include <string>
#include <vector>

namespace gannf {

// images: (n, nc, S, S) in [-1, 1]; nc 1 or 3. A grid of `cols` columns with a
// 2-pixel gutter. Throws std::runtime_error naming the path on failure.
void write_grid_png(const std::string& path, const float* images, int n, int nc, int S,
                    int cols = 8, int gutter = 2);

struct Series {
  std::string label;
  std::vector<double> y;         // one value per x
  unsigned char r, g, b;
};
// A line chart of several series over x (e.g. steps), with axes, tick labels
// and a legend, moving-average smoothed over `smooth` points (raw data faint).
void write_line_chart_png(const std::string& path, const std::string& title,
                          const std::vector<double>& x, const std::vector<Series>& series,
                          int width = 900, int height = 420, int smooth = 25);

}  // namespace gannf
