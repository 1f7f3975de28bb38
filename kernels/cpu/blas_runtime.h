// OpenBLAS at run time: which kernel it chose, and the fix for Debian 12's
// OpenBLAS 0.3.21, which takes recent Xeons for a "Prescott" (SSE3) and runs
// sgemm about 5x below the machine's peak.
#pragma once
#include <string>

namespace gannf::cpu {

// The core name OpenBLAS runs its kernels for ("Haswell", "SkylakeX", ...).
std::string blas_core_name();
// One line for logs: core, flavour, thread count.
std::string blas_summary();
// The CPU's model name (/proc/cpuinfo on Linux, sysctl on macOS), "unknown
// CPU" where there is none.
std::string cpu_model();
// The model name in a /proc/cpuinfo text: x86's "model name", else arm64's
// implementer and part numbers ("Neoverse-N1", "ARM part 0xd0c").
std::string cpu_model_from_cpuinfo(const std::string& cpuinfo);

// Instruction-set levels: 3 = AVX-512, 2 = AVX2+FMA, 1 = AVX, 0 = older.
int blas_core_level(const std::string& core);  // of an OpenBLAS core name
int cpu_isa_level();                            // of this CPU

// Call first thing in main(). When OPENBLAS_CORETYPE is unset and OpenBLAS's
// core is weaker than the CPU's instruction set (AVX2/AVX-512 present but a
// pre-AVX core chosen), prints one line saying so and re-executes the program
// with OPENBLAS_CORETYPE set to the best core the CPU supports; OpenBLAS reads
// the variable only when it loads, so a re-exec is the only reliable fix.
// An OPENBLAS_CORETYPE set by the user always wins. `quiet` suppresses the line.
void blas_ensure_coretype(int argc, char** argv, bool quiet = false);

}  // namespace gannf::cpu
