// OpenBLAS's core detection and gannf's correction of it (kernels/cpu/blas_runtime.h).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "blas_runtime.h"
#include "run_command.h"

using namespace gannf::cpu;

namespace {

std::string run(const std::string& cmd) {
  const gannf::test::Output o = gannf::test::run_command(cmd);
  EXPECT_EQ(o.code, 0) << cmd << "\n" << o.text;
  return o.text;
}

const std::string kInfo = std::string("env -u OPENBLAS_CORETYPE -u GANNF_BLAS_REEXEC ") +
                          GANNF_BINARY_DIR + "/tools/gannf-info";

TEST(Blas, CoreNamesMapToInstructionSets) {
  EXPECT_EQ(blas_core_level("Prescott"), 0);
  EXPECT_EQ(blas_core_level("Sandybridge"), 1);
  EXPECT_EQ(blas_core_level("Haswell"), 2);
  EXPECT_EQ(blas_core_level("Zen"), 2);
  EXPECT_EQ(blas_core_level("SkylakeX"), 3);
  EXPECT_EQ(blas_core_level("SapphireRapids"), 3);
}

TEST(Blas, ThisProcessRunsKernelsTheCpuSupports) {
  // The shared test main ran blas_ensure_coretype; unless the user chose a
  // core themselves, OpenBLAS now runs kernels of the CPU's own level. A
  // core the user chose (a machine's environment may say
  // OPENBLAS_CORETYPE=Haswell) is the one that runs: the user wins
  // (MisdetectionIsFixedWithOneLineAndTheUserWins checks the fix without it).
  if (const char* user = std::getenv("OPENBLAS_CORETYPE"); user && !std::getenv("GANNF_BLAS_REEXEC")) {
    EXPECT_EQ(blas_core_level(blas_core_name()), blas_core_level(user)) << "chosen: " << user << "; " << blas_summary();
    return;
  }
  EXPECT_GE(blas_core_level(blas_core_name()), cpu_isa_level()) << blas_summary();
}

TEST(Blas, MisdetectionIsFixedWithOneLineAndTheUserWins) {
  const std::string raw = run(kInfo + " --no-fix");
  const bool misdetected = raw.find("(level " + std::to_string(cpu_isa_level())) ==
                               std::string::npos &&
                           cpu_isa_level() > 0;
  const std::string fixed = run(kInfo);
  const std::string want = "this CPU supports level " + std::to_string(cpu_isa_level());
  ASSERT_NE(fixed.find(want), std::string::npos) << fixed;
  // After the fix the core's level is the CPU's.
  EXPECT_NE(fixed.find("(level " + std::to_string(cpu_isa_level()) + ";"), std::string::npos)
      << fixed;
  if (misdetected)
    EXPECT_NE(fixed.find("re-running with OPENBLAS_CORETYPE="), std::string::npos) << fixed;
  else
    EXPECT_EQ(fixed.find("re-running"), std::string::npos) << fixed;
  // An explicit OPENBLAS_CORETYPE is never overridden, and nothing is printed.
  // The core must be one of this architecture's (OpenBLAS ignores others).
#if defined(__x86_64__)
  const std::string core = "Prescott", shown = "Prescott";
#elif defined(__aarch64__)
  const std::string core = "CORTEXA57", shown = "cortexa57";
#else
  GTEST_SKIP() << "no OpenBLAS core name known to this test for this architecture";
#endif
  const std::string user = run("env -u GANNF_BLAS_REEXEC OPENBLAS_CORETYPE=" + core + " " +
                               GANNF_BINARY_DIR + "/tools/gannf-info");
  EXPECT_NE(user.find("blas core: " + shown), std::string::npos) << user;
  EXPECT_EQ(user.find("re-running"), std::string::npos) << user;
}

}  // namespace
