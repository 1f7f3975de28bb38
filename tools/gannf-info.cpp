// gannf-info: what this machine offers gannf — CPU, BLAS kernels, back ends.
#include <cstdio>
#include <exception>

#include "backend.h"
#include "blas_runtime.h"
#include "cli.h"
#include "self_check.h"

int main(int argc, char** argv) {
  bool no_fix = false;
  gannf::cli::Parser p("gannf-info",
                       "usage: gannf-info [--no-fix]\n"
                       "Prints the CPU, the OpenBLAS kernels in use and the back ends this build offers;\n"
                       "for each usable GPU back end, the self-check the worker runs before it joins a run.");
  p.flag("no-fix", &no_fix, "do not correct OpenBLAS's CPU detection (show what it chose by itself)");
  try {
    p.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gannf-info: %s\n", e.what());
    return 2;
  }
  if (p.help_requested) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (!no_fix) gannf::cpu::blas_ensure_coretype(argc, argv);
  auto cpu = gannf::make_backend<float>("cpu");
  std::printf("cpu:  %s\n", cpu->describe().c_str());
  std::printf("blas core: %s (level %d; this CPU supports level %d)\n",
              gannf::cpu::blas_core_name().c_str(),
              gannf::cpu::blas_core_level(gannf::cpu::blas_core_name()),
              gannf::cpu::cpu_isa_level());
  // The GPU's gradients against the CPU's, as gannf-worker checks them.
  // fp32: the FP32 back end the TF32 one's step check runs on (else it makes its own).
  auto check = [](gannf::Backend<float>& be, gannf::Backend<float>* fp32 = nullptr) {
    const gannf::SelfCheck c = gannf::self_check(be, fp32);
    std::printf("  self-check: %s: %s\n", c.ok ? "ok" : "FAILED -- do not use this back end",
                c.describe().c_str());
    return c.ok;
  };
  bool ok = true;
  try {
    auto cuda = gannf::make_backend<float>("cuda");
    std::printf("cuda: %s\n", cuda->describe().c_str());
    ok = check(*cuda) && ok;
    for (const char* name : {"cuda-tf32", "cuda-bf16"}) {
      try {
        auto tc = gannf::make_backend<float>(name);
        std::printf("%s: available (--backend %s: %s tensor-core convolutions)\n", name, name,
                    std::string(name) == "cuda-tf32" ? "TF32" : "BF16 (FP32 sums)");
        ok = check(*tc, cuda.get()) && ok;
      } catch (const std::exception& e) {
        std::printf("%s: unavailable — %s\n", name, e.what());
      }
    }
  } catch (const std::exception& e) {
    std::printf("cuda: unavailable — %s\n", e.what());
  }
  return ok ? 0 : 1;
}
