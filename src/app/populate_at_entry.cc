// The static imgsvc binary's entry point on x86-64 (src/app/CMakeLists.txt
// links it with -e imgsvc_entry): it makes the writable segments' pages
// present in one system call, then jumps to the C library's _start.
//
// Before main, libc's self-relocation writes a pointer into every page of
// .data.rel.ro (about 110 pages, mostly OpenSSL's tables), and constructors
// write .data and .bss. Each first write is a copy-on-write page fault; on a
// machine where a fault traps to a hypervisor that is about 13 µs apiece,
// against about 1 µs a page for madvise(MADV_POPULATE_WRITE) doing the same
// work in one call (bench/machine_costs measures both). Kernels before 5.14
// refuse the advice, and the pages then fault as before.
//
// This runs before the C library is set up: no relocation is applied yet and
// there is no thread pointer, so the code reads only PC-relative data (the
// ELF headers through the linker's hidden __ehdr_start), makes the system
// call itself (madvise() would set errno, a thread-local), and is built
// without stack-protector canaries (read through the thread pointer).
#include <elf.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <cstdint>

extern "C" const ElfW(Ehdr) __ehdr_start [[gnu::visibility("hidden")]];

namespace {

constexpr std::uintptr_t kPageSize = 4096;  // the smallest x86-64 page

[[gnu::no_stack_protector]] void Madvise(std::uintptr_t start, std::uintptr_t length, long advice) {
  long result;
  asm volatile("syscall"
               : "=a"(result)
               : "0"(static_cast<long>(SYS_madvise)), "D"(start), "S"(length), "d"(advice)
               : "rcx", "r11", "memory");
  static_cast<void>(result);  // a refusal leaves the pages to fault one by one
}

}  // namespace

extern "C" [[gnu::visibility("hidden"), gnu::no_stack_protector, gnu::used]] void imgsvc_populate_writable_segments() {
  // A position-independent executable's headers are loaded at its load bias.
  const auto bias = reinterpret_cast<std::uintptr_t>(&__ehdr_start);
  const auto* headers = reinterpret_cast<const ElfW(Phdr)*>(bias + __ehdr_start.e_phoff);
  for (ElfW(Half) i = 0; i < __ehdr_start.e_phnum; ++i) {
    const ElfW(Phdr)& segment = headers[i];
    if (segment.p_type != PT_LOAD || (segment.p_flags & PF_W) == 0) continue;
    const std::uintptr_t start = (bias + segment.p_vaddr) & ~(kPageSize - 1);
    const std::uintptr_t end = (bias + segment.p_vaddr + segment.p_memsz + kPageSize - 1) & ~(kPageSize - 1);
    Madvise(start, end - start, MADV_POPULATE_WRITE);
  }
}

// The kernel starts a process here with the stack holding argc, argv, the
// environment and the auxiliary vector, which _start reads; %rdx (a
// function for atexit, zero from the kernel) is passed on as well.
asm(R"(
  .text
  .globl imgsvc_entry
  .type imgsvc_entry, @function
imgsvc_entry:
  .cfi_startproc
  .cfi_undefined rip
  endbr64
  mov %rsp, %r12
  mov %rdx, %r13
  and $-16, %rsp
  call imgsvc_populate_writable_segments
  mov %r12, %rsp
  mov %r13, %rdx
  jmp _start
  .cfi_endproc
  .size imgsvc_entry, .-imgsvc_entry
)");
