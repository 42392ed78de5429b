// Host lookups in the static imgsvc binary (src/app/CMakeLists.txt links it
// with -static-pie, glibc included).
//
// A static glibc has the "files" and "dns" sources of host names built in,
// but would dlopen any other module /etc/nsswitch.conf names (mdns, resolve,
// myhostname, ...), and a module built against another glibc than the one
// linked in can crash the process that loads it. So host names are looked up
// in /etc/hosts, then DNS, whatever the machine's configuration says: what a
// server reaching AWS endpoints and binding its listening address needs.
#include <nss.h>

#include <cstdio>
#include <cstdlib>

namespace {

[[gnu::constructor]] void ResolveHostsThroughFilesAndDns() {
  if (__nss_configure_lookup("hosts", "files dns") != 0) {
    std::fputs("imgsvc: cannot restrict host lookups to files and dns\n", stderr);
    std::abort();
  }
}

}  // namespace
