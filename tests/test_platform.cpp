// Portability of the CPU description (kernels/cpu/blas_runtime.h): arm64 Linux
// has no "model name" in /proc/cpuinfo, only the implementer and part numbers,
// and a worker on a Raspberry Pi or a Graviton must still say what it runs on.
#include <gtest/gtest.h>

#include <string>

#include "blas_runtime.h"

using gannf::cpu::cpu_model_from_cpuinfo;

TEST(Platform, X86CpuinfoGivesTheModelName) {
  const std::string text =
      "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
      "flags\t\t: fpu vme avx2\n";
  EXPECT_EQ(cpu_model_from_cpuinfo(text), "Intel(R) Xeon(R) Platinum 8480+");
}

// What a Graviton 2 (Neoverse-N1) prints, two cores of it.
TEST(Platform, Arm64CpuinfoGivesTheCoreName) {
  const std::string core =
      "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid\n"
      "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\n"
      "CPU revision\t: 1\n\n";
  EXPECT_EQ(cpu_model_from_cpuinfo("processor\t: 0\nBogoMIPS\t: 243.75\n" + core +
                                   "processor\t: 1\nBogoMIPS\t: 243.75\n" + core),
            "Neoverse-N1");
}

TEST(Platform, UnknownArmPartsAreNamedByNumber) {
  EXPECT_EQ(cpu_model_from_cpuinfo("CPU implementer\t: 0x41\nCPU part\t: 0xd99\n"), "ARM part 0xd99");
  EXPECT_EQ(cpu_model_from_cpuinfo("CPU implementer\t: 0x61\nCPU part\t: 0x022\n"), "implementer 0x61 part 0x022");
}

TEST(Platform, NothingKnownIsUnknown) {
  EXPECT_EQ(cpu_model_from_cpuinfo(""), "unknown CPU");
  EXPECT_EQ(cpu_model_from_cpuinfo("processor\t: 0\n"), "unknown CPU");
}
