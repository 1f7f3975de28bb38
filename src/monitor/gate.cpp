#include "gate.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <map>
#include <stdexcept>
#include <vector>

namespace gannf::monitor {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kRelayBuffer = 256 * 1024;  // per direction; past it, the gate stops reading that side

struct Conn {
  int c = -1, b = -1;  // the client's socket; the web server's, once the request is whole
  std::string peer;
  Clock::time_point deadline;
  bool relaying = false, b_connected = false, done = false;
  std::string in;          // the request so far
  std::string to_b, to_c;  // what waits to be written
  bool b_eof = false;
};

std::string lower(std::string s) {
  for (char& ch : s) ch = (char)std::tolower((unsigned char)ch);
  return s;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// One line for the client, then the connection is closed (best effort:
// a client that does not read it loses nothing else). The line is followed
// by a FIN (shutdown) before the caller's close(): a close with unread
// input sends a reset, which may reach the client before it has read the
// line; after the FIN it reads the line and then the end.
void refuse(int fd, const char* status) {
  const std::string r = std::string("HTTP/1.1 ") + status +
                        "\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: " +
                        std::to_string(std::strlen(status) + 1) + "\r\n\r\n" + status + "\n";
  (void)!::send(fd, r.data(), r.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
  char drain[4096];
  for (int i = 0; i < 16 && ::recv(fd, drain, sizeof drain, MSG_DONTWAIT) > 0; ++i) {
  }
}

std::string peer_of(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, buf, sizeof buf);
  } else if (a.ss_family == AF_INET6) {
    const auto& a6 = reinterpret_cast<const sockaddr_in6&>(a);
    if (IN6_IS_ADDR_V4MAPPED(&a6.sin6_addr))
      inet_ntop(AF_INET, &a6.sin6_addr.s6_addr[12], buf, sizeof buf);
    else
      inet_ntop(AF_INET6, &a6.sin6_addr, buf, sizeof buf);
  }
  return buf;
}

// The request as the web server gets it: the client's header lines but its
// Connection and Keep-Alive, then "Connection: close". Empty (and *why
// set) when the gate refuses it.
std::string rewrite(const std::string& head, const char** why) {
  std::string out;
  size_t at = 0;
  bool first = true;
  while (at < head.size()) {
    size_t e = head.find("\r\n", at);
    if (e == std::string::npos) e = head.size();
    const std::string line = head.substr(at, e - at);
    at = e + 2;
    if (first) {
      out += line + "\r\n";
      first = false;
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string::npos || colon == 0) {
      *why = "400 Bad Request";
      return "";
    }
    const std::string name = lower(trim(line.substr(0, colon)));
    // The dashboard takes GET and HEAD: a request with a body is none of its.
    if (name == "transfer-encoding" || (name == "content-length" && trim(line.substr(colon + 1)) != "0")) {
      *why = "400 Bad Request";
      return "";
    }
    if (name == "connection" || name == "keep-alive" || name == "proxy-connection") continue;
    out += line + "\r\n";
  }
  return out + "Connection: close\r\n\r\n";
}

}  // namespace

Gate::Gate(GateOptions o) : o_(std::move(o)) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  const std::string port = std::to_string(o_.port);
  if (getaddrinfo(o_.host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
    throw std::runtime_error("cannot listen on " + o_.host + ": not an address of this machine (--listen)");
  for (addrinfo* a = res; a && listen_fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 512) == 0) {
      listen_fd_ = fd;
    } else {
      ::close(fd);
    }
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0)
    throw std::runtime_error("cannot listen on " + o_.host + " port " + std::to_string(o_.port) +
                             ": in use, or not an address of this machine (--listen, --port)");
  sockaddr_storage a{};
  socklen_t n = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &n);
  port_ = ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(a).sin6_port
                                        : reinterpret_cast<sockaddr_in&>(a).sin_port);
  if (::pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error(std::string("gannf-dash: pipe: ") + std::strerror(errno));
  }
}

Gate::~Gate() {
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int fd : wake_)
    if (fd >= 0) ::close(fd);
}

void Gate::stop() {
  stop_ = true;
  (void)!::write(wake_[1], "x", 1);
}

void Gate::run() {
  std::list<Conn> conns;
  std::map<std::string, int> per_peer;
  auto close_conn = [&](Conn& k) {
    if (k.c >= 0) ::close(k.c);
    if (k.b >= 0) ::close(k.b);
    k.c = k.b = -1;
    if (--per_peer[k.peer] <= 0) per_peer.erase(k.peer);
    k.done = true;
  };
  // The request is whole: to the web server on loopback.
  auto start_relay = [&](Conn& k, const std::string& request) {
    k.relaying = true;
    k.to_b = request;
    k.in.clear();
    k.b = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)o_.backend_port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (k.b < 0 || (::connect(k.b, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS)) {
      refuse(k.c, "502 Bad Gateway");
      close_conn(k);
    }
  };
  std::vector<pollfd> fds;
  std::vector<Conn*> owner;  // fds[i]'s connection (nullptr: the pipe, the listener)
  while (!stop_) {
    fds.clear();
    owner.clear();
    fds.push_back({wake_[0], POLLIN, 0});
    owner.push_back(nullptr);
    const bool room = (int)conns.size() < o_.max_connections;
    fds.push_back({listen_fd_, POLLIN, 0});
    owner.push_back(nullptr);
    auto next_deadline = Clock::now() + std::chrono::seconds(1);
    for (Conn& k : conns) {
      short ce = 0, be = 0;
      if (!k.relaying) {
        ce = POLLIN;
        next_deadline = std::min(next_deadline, k.deadline);
      } else {
        ce = (short)(POLLIN | (k.to_c.empty() ? 0 : POLLOUT));
        be = (short)((!k.b_connected || !k.to_b.empty() ? POLLOUT : 0) |
                     (k.b_connected && !k.b_eof && k.to_c.size() < kRelayBuffer ? POLLIN : 0));
      }
      fds.push_back({k.c, ce, 0});
      owner.push_back(&k);
      if (k.b >= 0) {
        fds.push_back({k.b, be, 0});
        owner.push_back(&k);
      }
    }
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_deadline - Clock::now()).count();
    const int r = ::poll(fds.data(), fds.size(), (int)std::clamp<long long>(wait + 1, 0, 1000));
    if (r < 0 && errno != EINTR) break;
    if (stop_) break;
    if (fds[1].revents & POLLIN) {
      for (;;) {
        sockaddr_storage a{};
        socklen_t n = sizeof a;
        const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&a), &n, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        const std::string peer = peer_of(a);
        if (!room || (int)conns.size() >= o_.max_connections) {
          refuse(fd, "503 Service Unavailable");
          ::close(fd);
          continue;
        }
        if (per_peer[peer] >= o_.per_client) {
          refuse(fd, "503 Service Unavailable");
          ::close(fd);
          continue;
        }
        ++per_peer[peer];
        Conn k;
        k.c = fd;
        k.peer = peer;
        k.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(o_.header_deadline_s));
        conns.push_back(std::move(k));
      }
    }
    char buf[65536];
    for (size_t i = 2; i < fds.size(); ++i) {
      Conn& k = *owner[i];
      if (k.done) continue;
      const bool is_client = fds[i].fd == k.c;
      const short ev = fds[i].revents;
      if (!ev) continue;
      if (!k.relaying) {  // reading the request
        const ssize_t n = ::recv(k.c, buf, sizeof buf, 0);
        if (n <= 0) {
          if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
          close_conn(k);
          continue;
        }
        k.in.append(buf, (size_t)n);
        const size_t end = k.in.find("\r\n\r\n");
        if (end == std::string::npos) {
          if (k.in.size() > o_.max_request) {
            refuse(k.c, "431 Request Header Fields Too Large");
            close_conn(k);
          }
          continue;
        }
        const char* why = nullptr;
        const std::string request = end + 4 <= o_.max_request ? rewrite(k.in.substr(0, end), &why) : "";
        if (request.empty()) {
          refuse(k.c, why ? why : "431 Request Header Fields Too Large");
          close_conn(k);
          continue;
        }
        start_relay(k, request);
        continue;
      }
      if (is_client) {
        if (ev & POLLIN) {  // after its request a client has nothing to say; it may only leave
          const ssize_t n = ::recv(k.c, buf, sizeof buf, 0);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            close_conn(k);
            continue;
          }
        }
        if ((ev & POLLOUT) && !k.to_c.empty()) {
          const ssize_t n = ::send(k.c, k.to_c.data(), k.to_c.size(), MSG_NOSIGNAL);
          if (n < 0 && errno != EAGAIN && errno != EINTR) {
            close_conn(k);
            continue;
          }
          if (n > 0) k.to_c.erase(0, (size_t)n);
        }
        if ((ev & (POLLERR | POLLHUP)) && !(ev & POLLIN)) close_conn(k);
      } else {
        if (!k.b_connected && (ev & (POLLOUT | POLLERR | POLLHUP))) {
          int err = 0;
          socklen_t len = sizeof err;
          ::getsockopt(k.b, SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) {
            refuse(k.c, "502 Bad Gateway");
            close_conn(k);
            continue;
          }
          k.b_connected = true;
        }
        if ((ev & POLLOUT) && !k.to_b.empty()) {
          const ssize_t n = ::send(k.b, k.to_b.data(), k.to_b.size(), MSG_NOSIGNAL);
          if (n < 0 && errno != EAGAIN && errno != EINTR) {
            close_conn(k);
            continue;
          }
          if (n > 0) k.to_b.erase(0, (size_t)n);
        }
        if (ev & (POLLIN | POLLHUP | POLLERR)) {
          const ssize_t n = ::recv(k.b, buf, sizeof buf, 0);
          if (n > 0) {
            k.to_c.append(buf, (size_t)n);
          } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            k.b_eof = true;  // the answer is whole: what is left goes to the client, then both close
            ::close(k.b);
            k.b = -1;
          }
        }
      }
      if (k.relaying && !k.done && k.b_eof && k.to_c.empty()) close_conn(k);
    }
    // Requests still incomplete at their deadline.
    const auto now = Clock::now();
    for (Conn& k : conns)
      if (!k.done && !k.relaying && now >= k.deadline) {
        refuse(k.c, "408 Request Timeout");
        close_conn(k);
      }
    conns.remove_if([](const Conn& k) { return k.done; });
  }
  for (Conn& k : conns)
    if (!k.done) close_conn(k);
}

}  // namespace gannf::monitor
