# Every third-party library comes from Debian packages (scripts/install-deps).
# Static archives are preferred: each shared library costs process start time.
if(IMGSVC_STATIC_DEPS)
  set(Boost_USE_STATIC_LIBS ON)
  set(OPENSSL_USE_STATIC_LIBS TRUE)
endif()
find_package(Boost 1.81 EXACT REQUIRED COMPONENTS json url)
find_package(OpenSSL 3 REQUIRED)
find_package(Threads REQUIRED)
find_package(GTest REQUIRED)
find_package(benchmark QUIET)
find_package(CLI11 QUIET)
find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)

if(IMGSVC_STATIC_DEPS)
  find_library(SQLITE3_LIBRARY NAMES libsqlite3.a sqlite3 REQUIRED)
else()
  find_library(SQLITE3_LIBRARY NAMES sqlite3 REQUIRED)
endif()
find_path(SQLITE3_INCLUDE_DIR sqlite3.h REQUIRED)
add_library(imgsvc_sqlite3 INTERFACE)
target_include_directories(imgsvc_sqlite3 INTERFACE ${SQLITE3_INCLUDE_DIR})
target_link_libraries(imgsvc_sqlite3 INTERFACE ${SQLITE3_LIBRARY} ${CMAKE_DL_LIBS} Threads::Threads m)

add_library(imgsvc_boost INTERFACE)
target_link_libraries(imgsvc_boost INTERFACE Boost::headers Boost::json Boost::url)
target_compile_definitions(imgsvc_boost INTERFACE BOOST_ASIO_NO_DEPRECATED BOOST_BEAST_USE_STD_STRING_VIEW)

add_library(imgsvc_openssl INTERFACE)
target_link_libraries(imgsvc_openssl INTERFACE OpenSSL::SSL OpenSSL::Crypto ${CMAKE_DL_LIBS} Threads::Threads)

# The static imgsvc binary runs on Lambda's Amazon Linux 2023 (glibc 2.34), but
# libgcc's static unwinder (libgcc_eh) needs glibc 2.35's _dl_find_object; LLVM's
# libunwind (libunwind-14-dev) only needs dl_iterate_phdr. Its own folder, as
# /usr/lib/x86_64-linux-gnu/libunwind.a may be the unrelated nongnu libunwind.
if(IMGSVC_STATIC_DEPS)
  find_library(IMGSVC_LLVM_UNWIND_LIBRARY NAMES libunwind.a PATHS /usr/lib/llvm-14/lib NO_DEFAULT_PATH REQUIRED)
  add_library(imgsvc_llvm_unwind STATIC IMPORTED)
  set_target_properties(imgsvc_llvm_unwind PROPERTIES IMPORTED_LOCATION ${IMGSVC_LLVM_UNWIND_LIBRARY})
endif()
