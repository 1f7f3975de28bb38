// A real headless Chromium for the tests, driven over the DevTools protocol
// through --remote-debugging-pipe: JSON messages ending in a NUL byte, the
// browser reading fd 3 and writing fd 4. No WebSocket, no driver, no Python:
// a fork, two pipes and nlohmann::json.
#pragma once
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace gannf::test {

class Chromium {
 public:
  using Json = nlohmann::json;

  // The browser binary, or "" when none is installed (tools/setup.sh installs Debian's).
  static std::string find() {
    for (const char* p : {"/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser",
                          "/usr/bin/google-chrome"})
      if (access(p, X_OK) == 0) return p;
    return "";
  }

  // Starts the browser with a profile in `dir` and its output in dir/chromium.log.
  Chromium(const std::string& bin, const std::filesystem::path& dir) : log_(dir / "chromium.log") {
    std::filesystem::create_directories(dir / "profile");
    int to[2], from[2];
    if (pipe(to) != 0 || pipe(from) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      // The pipe ends to fds 3 and 4, by way of fds out of their way.
      const int r = fcntl(to[0], F_DUPFD, 10), w = fcntl(from[1], F_DUPFD, 10);
      const int log = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (log >= 0) dup2(log, 1), dup2(log, 2);
      dup2(r, 3);
      dup2(w, 4);
      for (int fd = 5; fd < 1024; ++fd) close(fd);
      const std::string profile = "--user-data-dir=" + (dir / "profile").string();
      std::vector<std::string> args = {bin, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                                       profile, "--no-first-run", "--no-default-browser-check",
                                       "--disable-extensions", "--disable-background-networking", "--disable-sync",
                                       "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars",
                                       "--force-device-scale-factor=1", "--window-size=1600,1200", "about:blank"};
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(to[0]);
    close(from[1]);
    out_ = to[1];
    in_ = from[0];
    signal(SIGPIPE, SIG_IGN);  // a browser that died is reported by call(), not by a signal
  }
  Chromium(const Chromium&) = delete;
  Chromium& operator=(const Chromium&) = delete;
  ~Chromium() {
    try {
      call("Browser.close", {}, "", 5);
    } catch (...) {
    }
    close(out_);
    close(in_);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

  std::string log() const {
    std::ifstream f(log_);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  // One command; its result, or throws with the browser's error.
  Json call(const std::string& method, Json params = Json::object(), const std::string& session = "",
            double timeout = 30) {
    const int id = ++id_;
    Json msg = {{"id", id}, {"method", method}, {"params", std::move(params)}};
    if (!session.empty()) msg["sessionId"] = session;
    std::string text = msg.dump();
    text.push_back('\0');
    size_t off = 0;
    while (off < text.size()) {
      const ssize_t n = write(out_, text.data() + off, text.size() - off);
      if (n <= 0) throw std::runtime_error("Chromium is gone (" + method + "); its log:\n" + log());
      off += (size_t)n;
    }
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout));
    for (;;) {
      Json m = next(until, method);
      if (m.contains("id") && m["id"] == id) {
        if (m.contains("error")) throw std::runtime_error(method + ": " + m["error"].dump());
        return m["result"];
      }
      if (!m.contains("id")) events.push_back(std::move(m));
    }
  }

  // A new tab, attached: its session id.
  std::string open_page(int width, int height) {
    const std::string target = call("Target.createTarget", {{"url", "about:blank"}})["targetId"];
    const std::string s = call("Target.attachToTarget", {{"targetId", target}, {"flatten", true}})["sessionId"];
    call("Page.enable", {}, s);
    call("Runtime.enable", {}, s);
    call("Log.enable", {}, s);
    call("Emulation.setDeviceMetricsOverride",
         {{"width", width}, {"height", height}, {"deviceScaleFactor", 1}, {"mobile", false}}, s);
    return s;
  }

  // The value of a JavaScript expression (promises awaited); throws on an exception.
  Json eval(const std::string& session, const std::string& expr, double timeout = 30) {
    Json r = call("Runtime.evaluate",
                  {{"expression", expr}, {"awaitPromise", true}, {"returnByValue", true}}, session, timeout);
    if (r.contains("exceptionDetails")) throw std::runtime_error("page: " + expr + ": " + r["exceptionDetails"].dump());
    return r["result"].contains("value") ? r["result"]["value"] : Json();
  }

  // Polls until the expression is true; false after `seconds`.
  bool wait_for(const std::string& session, const std::string& expr, double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    do {
      if (eval(session, "!!(" + expr + ")") == true) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (std::chrono::steady_clock::now() < until);
    return false;
  }

  // A PNG of the whole page.
  std::string screenshot(const std::string& session, int width) {
    const Json size = eval(session, "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]");
    call("Emulation.setDeviceMetricsOverride",
         {{"width", width}, {"height", size[1].get<int>()}, {"deviceScaleFactor", 1}, {"mobile", false}}, session);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the charts resize to the new viewport
    return base64_decode(call("Page.captureScreenshot", {{"format", "png"}}, session, 60)["data"]);
  }

  // Events the browser sent so far (console, exceptions, log entries).
  std::vector<Json> events;

  static std::string base64_decode(const std::string& s) {
    auto v = [](char c) -> int {
      if (c >= 'A' && c <= 'Z') return c - 'A';
      if (c >= 'a' && c <= 'z') return c - 'a' + 26;
      if (c >= '0' && c <= '9') return c - '0' + 52;
      if (c == '+') return 62;
      if (c == '/') return 63;
      return -1;
    };
    std::string out;
    int bits = 0, acc = 0;
    for (char c : s) {
      const int x = v(c);
      if (x < 0) continue;
      acc = (acc << 6) | x;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out.push_back((char)((acc >> bits) & 0xff));
      }
    }
    return out;
  }

 private:
  Json next(std::chrono::steady_clock::time_point until, const std::string& waiting_for) {
    for (;;) {
      const size_t z = buf_.find('\0');
      if (z != std::string::npos) {
        Json m = Json::parse(buf_.substr(0, z));
        buf_.erase(0, z + 1);
        return m;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) throw std::runtime_error("Chromium did not answer " + waiting_for + " in time");
      pollfd p{in_, POLLIN, 0};
      if (poll(&p, 1, (int)std::min<int64_t>(left.count(), 1000)) <= 0) continue;
      char chunk[65536];
      const ssize_t n = read(in_, chunk, sizeof chunk);
      if (n <= 0) throw std::runtime_error("Chromium is gone (" + waiting_for + "); its log:\n" + log());
      buf_.append(chunk, (size_t)n);
    }
  }

  std::filesystem::path log_;
  pid_t pid_ = -1;
  int out_ = -1, in_ = -1;
  int id_ = 0;
  std::string buf_;
};

}  // namespace gannf::test
