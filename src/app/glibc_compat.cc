// arc4random for the static libstdc++ inside the imgsvc binary, reached through
// -Wl,--wrap=arc4random (src/app/CMakeLists.txt).
//
// The binary runs on Lambda's provided.al2023 (Amazon Linux 2023, glibc 2.34),
// but glibc only gained arc4random in 2.36. libstdc++.a's std::random_device
// refers to it, and every static link pulls that object in (std::logic_error
// needs the COW std::string object, which also holds a random_device
// constructor) although imgsvc never makes a random_device. getrandom(2)
// exists since glibc 2.25, so the reference no longer needs GLIBC_2.36.
#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

// Like glibc's arc4random, this cannot fail: a kernel without getrandom(2)
// aborts rather than return a predictable value.
extern "C" std::uint32_t __wrap_arc4random() {
  std::uint32_t value = 0;
  while (getrandom(&value, sizeof value, 0) != static_cast<ssize_t>(sizeof value)) {
    if (errno != EINTR) std::abort();
  }
  return value;
}
