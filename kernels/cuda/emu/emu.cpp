// The emulator's scheduler: one fiber per CUDA thread of the running block,
// run on the calling OS thread, always the lowest-numbered one that is not
// blocked at a barrier. See emu.h for what this is for.
#include "emu.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>

// A fiber switch is the emulator's inner loop (every barrier of every thread).
// glibc's swapcontext makes a system call per switch to save the signal mask;
// on x86-64 a six-register switch does the job in nanoseconds. Elsewhere, and
// under AddressSanitizer (which must see stack switches), ucontext it is.
#if defined(__x86_64__) && defined(__ELF__) && !defined(__SANITIZE_ADDRESS__)
#define GANNF_EMU_FAST_SWITCH 1
extern "C" void gannf_emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl gannf_emu_switch
.type gannf_emu_switch,@function
gannf_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size gannf_emu_switch,.-gannf_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");
#else
#define GANNF_EMU_FAST_SWITCH 0
#endif

#include <array>
#include <cstdio>
#include <vector>

namespace gannf::emu {

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

// Kernel frames are small (a GEMM thread holds ~100 floats), but an
// unoptimised or sanitised build needs room; the stacks are reserved once and
// only touched pages cost memory.
constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned kMaxThreads = 1024;

struct Barrier {
  unsigned count = 0, expected = 0;
  std::vector<unsigned> waiters;
};

// A cp.async in flight: 16 bytes read at issue, written at completion.
struct AsyncCopy {
  void* dst;
  unsigned char data[16];
};

struct Fiber {
#if GANNF_EMU_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  bool done = false;
  // cp.async: committed groups, oldest first, and the copies not yet committed.
  std::vector<std::vector<AsyncCopy>> groups;
  std::vector<AsyncCopy> open_group;
};

struct Scheduler {
#if GANNF_EMU_FAST_SWITCH
  void* main_sp = nullptr;
#else
  ucontext_t main;
#endif
  std::vector<Fiber> fibers;
  char* stacks = nullptr;
  const std::function<void()>* body = nullptr;
  unsigned threads = 0, cur = 0, alive = 0;
  std::vector<uint64_t> ready;  // bit t: fiber t can run (not blocked, not done)
  bool running = false;
  Barrier block;
  std::vector<Barrier> warp;
  std::vector<std::array<unsigned char, 32 * 64>> gather;
};
Scheduler S;

void set_thread_index(unsigned t) {
  threadIdx.x = t % blockDim.x;
  threadIdx.y = (t / blockDim.x) % blockDim.y;
  threadIdx.z = t / (blockDim.x * blockDim.y);
}

#if GANNF_EMU_FAST_SWITCH
void yield() { gannf_emu_switch(&S.fibers[S.cur].sp, S.main_sp); }
void resume(unsigned t) { gannf_emu_switch(&S.main_sp, S.fibers[t].sp); }
#else
void yield() { swapcontext(&S.fibers[S.cur].ctx, &S.main); }
void resume(unsigned t) { swapcontext(&S.main, &S.fibers[t].ctx); }
#endif

void set_ready(unsigned t, bool on) {
  if (on)
    S.ready[t / 64] |= (uint64_t)1 << (t % 64);
  else
    S.ready[t / 64] &= ~((uint64_t)1 << (t % 64));
}

// The last thread to arrive releases the others and runs on; a blocked thread
// is resumed only after its release.
void wait(Barrier& b) {
  if (++b.count == b.expected) {
    b.count = 0;
    for (unsigned t : b.waiters) set_ready(t, true);
    b.waiters.clear();
    return;
  }
  b.waiters.push_back(S.cur);
  set_ready(S.cur, false);
  yield();
}

void land(std::vector<AsyncCopy>& copies) {
  for (const AsyncCopy& c : copies) std::memcpy(c.dst, c.data, 16);
  copies.clear();
}

void fiber_main() {
  (*S.body)();
  {  // copies never waited for land by the end of their thread
    Fiber& f = S.fibers[S.cur];
    for (auto& g : f.groups) land(g);
    f.groups.clear();
    land(f.open_group);
  }
  S.fibers[S.cur].done = true;
  S.alive--;
  set_ready(S.cur, false);
#if GANNF_EMU_FAST_SWITCH
  yield();  // never resumed
  __builtin_unreachable();
#endif
  // (ucontext) returning resumes uc_link, the scheduler
}

#if GANNF_EMU_FAST_SWITCH
// A new fiber's stack as gannf_emu_switch expects to find it: six saved
// registers, then the address to "return" to. After that ret the stack
// pointer must be 8 mod 16, as at the entry of any called function.
void* initial_stack(char* base, size_t size) {
  uintptr_t top = ((uintptr_t)(base + size)) & ~(uintptr_t)15;
  void** sp = (void**)(top - 8);  // sp + 1 after the ret: 8 mod 16
  *--sp = (void*)&fiber_main;     // return address
  for (int i = 0; i < 6; i++) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
  return sp;
}
#endif

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "gannf CUDA emulator: %s (block %u,%u,%u of %u,%u,%u; %u threads)\n", what,
               blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z, S.threads);
  std::abort();
}

}  // namespace

void syncthreads() {
  if (!S.running) die("__syncthreads outside a kernel");
  wait(S.block);
}

void syncwarp() {
  if (!S.running) die("__syncwarp outside a kernel");
  wait(S.warp[S.cur / 32]);
}

namespace {
// The one warp-collective mechanism: every lane of the calling warp publishes
// `bytes` (at most 64) at `mine`; when all have, each copies the warp's (lane
// order) to `all`; then all wait again, so the slots can be reused. Returns
// the warp's width (lanes in it: fewer than 32 in a block's partial last warp).
unsigned collect(const char* what, const void* mine, size_t bytes, void* all) {
  if (!S.running) die((std::string(what) + " outside a kernel").c_str());
  if (bytes > 64) die("a warp-collective exchange of more than 64 bytes a lane");
  const unsigned w = S.cur / 32, lane = S.cur % 32, width = S.warp[w].expected;
  std::memcpy(S.gather[w].data() + lane * bytes, mine, bytes);
  wait(S.warp[w]);
  std::memcpy(all, S.gather[w].data(), width * bytes);
  wait(S.warp[w]);
  return width;
}
}  // namespace

uint64_t warp_exchange(uint64_t mine, int src) {
  uint64_t all[32];
  const unsigned width = collect("warp shuffle", &mine, sizeof mine, all);
  return (src >= 0 && (unsigned)src < width) ? all[src] : mine;
}

void warp_gather(const void* mine, size_t bytes, void* all) {
  if (S.running && S.warp[S.cur / 32].expected != 32)
    die("warp-collective instruction in a partial warp");
  collect("warp-collective instruction", mine, bytes, all);
}

void cp_async(void* dst, const void* src, int valid) {
  if (!S.running) die("cp.async outside a kernel");
  if (reinterpret_cast<uintptr_t>(dst) % 16 || (valid && reinterpret_cast<uintptr_t>(src) % 16))
    die("cp.async of 16 bytes with an address not 16-byte aligned");
  if (valid != 0 && valid != 16) die("cp.async with a source size other than 0 or 16");
  AsyncCopy c{dst, {}};
  if (valid) std::memcpy(c.data, src, 16);
  S.fibers[S.cur].open_group.push_back(c);
}

void cp_async_commit() {
  if (!S.running) die("cp.async.commit_group outside a kernel");
  Fiber& f = S.fibers[S.cur];
  f.groups.push_back(std::move(f.open_group));
  f.open_group.clear();
}

void cp_async_wait(int pending) {
  if (!S.running) die("cp.async.wait_group outside a kernel");
  Fiber& f = S.fibers[S.cur];
  while ((int)f.groups.size() > pending) {
    land(f.groups.front());
    f.groups.erase(f.groups.begin());
  }
}

// ---- stream capture ------------------------------------------------------------------

namespace {
struct Capture {
  bool on = false;
  std::vector<std::function<void()>> work;
};
Capture& cap() {
  static Capture c;
  return c;
}
}  // namespace

bool capturing() { return cap().on; }
void record(std::function<void()> work) { cap().work.push_back(std::move(work)); }

cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (cap().on) return cudaErrorInvalidValue;
  cap().on = true;
  cap().work.clear();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  if (!cap().on) return cudaErrorInvalidValue;
  cap().on = false;
  *graph = new EmuGraph{std::move(cap().work)};
  cap().work.clear();
  return cudaSuccess;
}

// ---- device memory: mapped with no access outside launches and copies -----------

namespace {
struct DeviceMemory {
  std::mutex mu;
  std::map<char*, size_t> regions;  // base -> mapped bytes
  int open = 0;                     // nested windows
  bool fence = [] {
    const char* e = std::getenv("GANNF_EMU_FENCE");
    return !(e && std::string(e) == "0");
  }();
  void protect_all(int prot) {
    for (auto& [base, size] : regions)
      if (mprotect(base, size, prot) != 0) die("mprotect of emulated device memory failed");
  }
};
DeviceMemory& dm() {  // never destroyed: static back ends free their memory at exit
  static DeviceMemory* d = new DeviceMemory;
  return *d;
}
}  // namespace

void* device_alloc(size_t n) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t size = std::max<size_t>((n + page - 1) / page * page, page);
  DeviceMemory& d = dm();
  std::lock_guard<std::mutex> lock(d.mu);
  const int prot = !d.fence || d.open ? PROT_READ | PROT_WRITE : PROT_NONE;
  void* p = mmap(nullptr, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  d.regions[(char*)p] = size;
  return p;
}

void device_free(void* p) {
  if (!p) return;
  DeviceMemory& d = dm();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.regions.find((char*)p);
  if (it == d.regions.end()) die("cudaFree of a pointer cudaMalloc did not return");
  munmap(it->first, it->second);
  d.regions.erase(it);
}

DeviceWindow::DeviceWindow() {
  DeviceMemory& d = dm();
  std::lock_guard<std::mutex> lock(d.mu);
  if (d.open++ == 0 && d.fence) d.protect_all(PROT_READ | PROT_WRITE);
}

DeviceWindow::~DeviceWindow() {
  DeviceMemory& d = dm();
  std::lock_guard<std::mutex> lock(d.mu);
  if (--d.open == 0 && d.fence) d.protect_all(PROT_NONE);
}

void launch(dim3 grid, dim3 block, const std::function<void()>& body) {
  if (S.running) die("kernel launched from inside a kernel");
  DeviceWindow open;  // the kernel, and only it, sees device memory
  const unsigned n = block.x * block.y * block.z;
  if (n == 0 || n > kMaxThreads) die("block size outside 1..1024");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) die("empty grid");
  // The hardware's limits (every GPU since compute capability 3.0): a launch
  // past them fails with "invalid configuration argument".
  if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) die("grid larger than 2^31-1 x 65535 x 65535");
  if (block.x > 1024 || block.y > 1024 || block.z > 64) die("block larger than 1024 x 1024 x 64");
  if (!S.stacks) {
    void* p = mmap(nullptr, kStackBytes * kMaxThreads, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    S.stacks = (char*)p;
  }
  S.fibers.assign(n, Fiber{});
  S.threads = n;
  S.body = &body;
  const unsigned warps = (n + 31) / 32;
  S.warp.assign(warps, Barrier{});
  S.ready.assign((n + 63) / 64, 0);
  S.gather.resize(warps);
  gridDim = grid;
  blockDim = block;
  S.running = true;
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
      for (unsigned bx = 0; bx < grid.x; bx++) {
        blockIdx.x = bx, blockIdx.y = by, blockIdx.z = bz;
        S.block = Barrier{0, n, {}};
        for (unsigned w = 0; w < warps; w++) S.warp[w] = Barrier{0, std::min(32u, n - 32 * w), {}};
        for (unsigned t = 0; t < n; t++) set_ready(t, true);
        for (unsigned t = 0; t < n; t++) {
          Fiber& f = S.fibers[t];
          f.done = false;
#if GANNF_EMU_FAST_SWITCH
          f.sp = initial_stack(S.stacks + (size_t)t * kStackBytes, kStackBytes);
#else
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = S.stacks + (size_t)t * kStackBytes;
          f.ctx.uc_stack.ss_size = kStackBytes;
          f.ctx.uc_link = &S.main;
          makecontext(&f.ctx, fiber_main, 0);
#endif
        }
        S.alive = n;
        while (S.alive) {
          // Always the lowest-numbered thread that can run: low warps race as
          // far ahead of the others as barriers allow.
          unsigned t = n;
          for (size_t w = 0; w < S.ready.size(); w++)
            if (S.ready[w]) {
              t = (unsigned)(w * 64 + __builtin_ctzll(S.ready[w]));
              break;
            }
          if (t >= n) die("deadlock: some threads wait at a barrier that others never reach");
          S.cur = t;
          set_thread_index(t);
          resume(t);
        }
      }
  S.running = false;
}

}  // namespace gannf::emu
