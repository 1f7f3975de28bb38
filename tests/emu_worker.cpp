// emu_worker: the real gannf worker (run_worker) on the emulated GPU — the
// CUDA back end's code and kernels compiled against kernels/cuda/emu, as
// test_cuda_emu runs them — so that the trust runs can mix a GPU worker
// with CPU ones on a machine without a GPU. --backend cuda (the default),
// cuda-tf32 or cuda-bf16 picks the maths; it registers under that name
// (what the back end calls itself), so its submissions are spot-checked at
// that back end's tolerance. Tests only: not installed, no product flag.
#include <cstdio>
#include <memory>
#include <string>

#include "backend.h"
#include "cli.h"
#include "worker.h"

namespace gannf {
std::unique_ptr<Backend<float>> make_cuda_emu_backend(const std::string& name);  // backend_cuda.cpp, emulated
}

using namespace gannf;

namespace {
void log_line(const std::string& l) { std::fprintf(stderr, "emu_worker: %s\n", l.c_str()); }
}  // namespace

int main(int argc, char** argv) {
  cluster::WorkerOptions o;
  bool no_cache = false;
  std::string backend = "cuda";
  cli::Parser p("emu_worker",
                "usage: emu_worker --db CONNINFO [options]\n"
                "The real gannf worker on the host emulator of the CUDA back end (tests only).");
  p.opt("db", &o.conninfo, "libpq connection string");
  p.opt("name", &o.name, "this worker's name");
  p.opt("backend", &backend, "cuda, cuda-tf32 or cuda-bf16 (emulated)");
  p.opt("batch-size", &o.batch_size, "images per forward pass");
  p.opt("poll-interval", &o.poll_interval, "seconds between claims without a notification");
  p.flag("exit-when-done", &o.exit_when_done, "exit 0 when the run pauses or finishes");
  p.flag("no-cache", &no_cache, "no dataset cache file");
  try {
    p.parse(argc, argv);
    if (p.help_requested) {
      std::fputs(p.help().c_str(), stdout);
      return 0;
    }
  } catch (const std::exception& e) {
    log_line(e.what());
    return 2;
  }
  register_backend("cuda-emu", [backend] { return make_cuda_emu_backend(backend); });
  // The tensor-core back ends' self-check measures the FP32 "cuda" beside them.
  register_backend("cuda", [] { return make_cuda_emu_backend("cuda"); });
  o.backend = "cuda-emu";
  o.cache = !no_cache;
  o.quiet = true;
  o.log = log_line;
  try {
    return cluster::run_worker(o);
  } catch (const std::exception& e) {
    log_line(e.what());
    return 1;
  }
}
