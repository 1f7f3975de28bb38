// Runs a shell command line for a test and returns its exit code and its
// output (stdout and stderr together).
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace gannf::test {

struct Output {
  int code;  // the exit status; -1 when it did not start or did not exit normally
  std::string text;
};

inline Output run_command(const std::string& cmd) {
  Output o{-1, ""};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return o;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) o.text += buf;
  const int st = pclose(p);
  o.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

}  // namespace gannf::test
