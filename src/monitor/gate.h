// The front door of a shared gannf-dash (--listen other than loopback).
//
// cpp-httplib gives each connection a thread from the moment it is
// accepted, and the thread waits there while the request's headers arrive,
// before the token is checked: 200 connections that each sent one header
// line every 2 s stalled the dashboard for everyone (docs/dashboard.md).
// The gate takes the public address instead. One thread, poll(2), no
// thread per connection: it reads each request whole (headers only -- the
// dashboard takes GET and HEAD) within a deadline from the connection's
// accept, and only then hands it to the web server on a loopback port,
// with "Connection: close" (one request per connection, so a request on a
// kept-alive connection cannot trickle in either), and relays the answer,
// Server-Sent Event streams included. Per client address, at most
// `per_client` connections at once; in all, at most `max_connections`.
// What it turns away gets one HTTP line (408, 431, 400, 503) and is closed.
#pragma once
#include <atomic>
#include <cstddef>
#include <string>

namespace gannf::monitor {

struct GateOptions {
  std::string host;                // the public address
  int port = 0;                    // 0: any free port
  int backend_port = 0;            // the web server, on 127.0.0.1
  double header_deadline_s = 5;    // from accept to the request's last header line
  int per_client = 16;             // connections of one client address at once
  int max_connections = 400;       // in all (two descriptors each)
  size_t max_request = 16384;      // bytes of a request's headers
};

class Gate {
 public:
  // Binds and listens at once; throws std::runtime_error saying why not.
  explicit Gate(GateOptions o);
  ~Gate();
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  int port() const { return port_; }
  // Serves until stop(), from another thread.
  void run();
  void stop();

 private:
  GateOptions o_;
  int listen_fd_ = -1, port_ = 0;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
};

}  // namespace gannf::monitor
