// The page and what it loads, compiled into the program (embed_web.cmake):
// gannf-dash serves them itself and works offline, Chart.js included (from
// Debian's libjs-chart.js at build time), so the projector's laptop needs
// nothing but the binary and a browser.
#pragma once
#include <span>
#include <string_view>

namespace gannf::monitor {

struct WebAsset {
  std::string_view path;          // "/app.js"; the page itself is "/index.html"
  std::string_view content_type;
  std::string_view body;
};

std::span<const WebAsset> web_assets();

}  // namespace gannf::monitor
