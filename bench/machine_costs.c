/* What this machine charges for the kernel's part of a request and of a
 * start: one system call (getppid) and one page fault (the first write to an
 * anonymous page), each the median of 9 timings, printed as JSON. A
 * hypervisor that traps every kernel entry or fault raises both (on the
 * machine of 2026-11-28, 1.1 us and 12 us: a server's CPU per request and its
 * cold start against a static hello world, which takes 27 fault traps to
 * imgsvc's ~180, rise with them). bench/run records these beside its results so that
 * runs on different machines can be told apart. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { kCalls = 1000000, kPages = 4096, kTimings = 9 };

static double Nanoseconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1e9 + now.tv_nsec;
}

static double SyscallNs(void) {
  const double begin = Nanoseconds();
  for (int i = 0; i < kCalls; ++i) syscall(SYS_getppid);
  return (Nanoseconds() - begin) / kCalls;
}

static double PageFaultNs(void) {
  const long page = sysconf(_SC_PAGESIZE);
  const size_t size = (size_t)kPages * (size_t)page;
  char* memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
  const double begin = Nanoseconds();
  for (size_t offset = 0; offset < size; offset += (size_t)page) ((volatile char*)memory)[offset] = 1;
  const double elapsed = Nanoseconds() - begin;
  munmap(memory, size);
  return elapsed / kPages;
}

static int Ascending(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double Median(double (*measure)(void)) {
  double timings[kTimings];
  for (int i = 0; i < kTimings; ++i) timings[i] = measure();
  qsort(timings, kTimings, sizeof timings[0], Ascending);
  return timings[kTimings / 2];
}

int main(void) {
  const double syscall_ns = Median(SyscallNs);
  const double page_fault_ns = Median(PageFaultNs);
  printf("{\"syscall_ns\":%.1f,\"page_fault_ns\":%.1f}\n", syscall_ns, page_fault_ns);
  return 0;
}
