#include "blas_runtime.h"

#include <cblas.h>
#include <unistd.h>
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

extern "C" char* openblas_get_corename(void);
extern "C" int openblas_get_parallel(void);

namespace gannf::cpu {

namespace {
std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

int core_level_impl(const std::string& core) {
  const std::string c = lower(core);
  for (const char* n : {"skylakex", "cooperlake", "sapphirerapids"})
    if (c == n) return 3;
  for (const char* n : {"haswell", "zen", "skylake", "excavator", "cortexa", "neoverse"})
    if (c.rfind(n, 0) == 0) return 2;
  for (const char* n : {"sandybridge", "bulldozer", "piledriver", "steamroller"})
    if (c == n) return 1;
  return 0;
}

int cpu_level_impl() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return 3;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
  if (__builtin_cpu_supports("avx")) return 1;
#endif
  return 0;
}

const char* core_for_level(int level) {
  switch (level) {
    case 3: return "SkylakeX";
    case 2: return "Haswell";
    case 1: return "Sandybridge";
    default: return nullptr;
  }
}
}  // namespace

int blas_core_level(const std::string& core) { return core_level_impl(core); }
int cpu_isa_level() { return cpu_level_impl(); }

std::string blas_core_name() {
  const char* n = openblas_get_corename();
  return n ? std::string(n) : std::string("unknown");
}

std::string blas_summary() {
  const int par = openblas_get_parallel();  // 0 sequential, 1 pthreads, 2 OpenMP
  const char* flavour = par == 2 ? "openmp" : par == 1 ? "pthreads" : "sequential";
  return "OpenBLAS core " + blas_core_name() + ", " + flavour + ", " +
         std::to_string(openblas_get_num_threads()) + " threads";
}

void blas_ensure_coretype(int argc, char** argv, bool quiet) {
  (void)argc;
  if (std::getenv("OPENBLAS_CORETYPE")) return;  // the user's choice wins
  if (std::getenv("GANNF_BLAS_REEXEC")) return;  // already tried once; never loop
  const std::string core = blas_core_name();
  const int have = blas_core_level(core), can = cpu_isa_level();
  if (have >= can) return;
  const char* want = core_for_level(can);
  if (!want) return;
  if (!quiet)
    std::fprintf(stderr,
                 "gannf: OpenBLAS chose the '%s' kernels on a CPU with %s; re-running with "
                 "OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE yourself to override)\n",
                 core.c_str(), can == 3 ? "AVX-512" : can == 2 ? "AVX2" : "AVX", want);
  setenv("OPENBLAS_CORETYPE", want, 1);
  setenv("GANNF_BLAS_REEXEC", "1", 1);
  std::fflush(nullptr);
#if defined(__linux__)
  execv("/proc/self/exe", argv);
#else
  errno = ENOSYS;  // no /proc/self/exe (macOS): keep the kernels OpenBLAS chose
#endif
  // exec failed: carry on with the slow kernels rather than stop.
  std::fprintf(stderr, "gannf: re-exec failed (%s); continuing with OpenBLAS core '%s'\n",
               std::strerror(errno), core.c_str());
}

std::string cpu_model_from_cpuinfo(const std::string& cpuinfo) {
  std::istringstream in(cpuinfo);
  std::string line, implementer, part;
  auto value = [&]() {  // "key\t: value" -> "value"
    const size_t colon = line.find(':');
    const size_t start = colon == std::string::npos ? std::string::npos : line.find_first_not_of(" \t", colon + 1);
    return start == std::string::npos ? std::string() : line.substr(start);
  };
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return value();
    // arm64 Linux lists no model name, only the MIDR fields of each core.
    if (line.rfind("CPU implementer", 0) == 0 && implementer.empty()) implementer = value();
    if (line.rfind("CPU part", 0) == 0 && part.empty()) part = value();
  }
  if (part.empty()) return "unknown CPU";
  if (implementer == "0x41") {  // Arm Ltd's own cores: the ones cloud and boards use
    static const std::pair<const char*, const char*> kArm[] = {
        {"0xd03", "Cortex-A53"}, {"0xd08", "Cortex-A72"}, {"0xd0b", "Cortex-A76"},
        {"0xd0c", "Neoverse-N1"}, {"0xd40", "Neoverse-V1"}, {"0xd49", "Neoverse-N2"},
        {"0xd4f", "Neoverse-V2"}};
    for (auto& [id, name] : kArm)
      if (part == id) return name;
  }
  return (implementer == "0x41" ? std::string("ARM") : "implementer " + implementer) + " part " + part;
}

std::string cpu_model() {
#if defined(__APPLE__)
  char buf[256];
  size_t n = sizeof(buf);
  if (sysctlbyname("machdep.cpu.brand_string", buf, &n, nullptr, 0) == 0 && n > 1) return std::string(buf);
  return "unknown CPU";
#else
  std::ifstream f("/proc/cpuinfo");
  std::stringstream text;
  text << f.rdbuf();
  return cpu_model_from_cpuinfo(text.str());
#endif
}

}  // namespace gannf::cpu
