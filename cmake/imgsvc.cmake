# One way to declare every library, binary and test, so flags stay alike.
#   imgsvc_library(NAME [SOURCES ...] DEPS ...) -> static library imgsvc_<NAME>; without
#                                               SOURCES, every .cc/.S of the calling folder
#   imgsvc_test(NAME SOURCES ... DEPS ... [ARGS ...] [LABELS ...] [PROPERTIES ...])
#                                               -> gtest executable, registered with CTest
#   imgsvc_test_code(TARGET [OPTIMISED_IN_RELEASE]) -> compile TARGET as test code (below)
set(IMGSVC_WARNINGS -Wall -Wextra -Werror -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual -Wimplicit-fallthrough)
# g++ 12 at -O3 warns falsely about std::string inside libstdc++ (GCC bug 105651).
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  list(APPEND IMGSVC_WARNINGS -Wno-restrict)
endif()

function(imgsvc_apply_flags target)
  target_compile_options(${target} PRIVATE ${IMGSVC_WARNINGS})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  if(IMGSVC_FUZZ)
    # All our code gets libFuzzer's coverage instrumentation and ASan/UBSan, so
    # the fuzzers are guided by (and check) the parsers themselves. The fuzzer
    # runtime, with its main(), goes into the <name>_fuzz binaries only (fuzz/).
    # Undefined behaviour stops the run, so libFuzzer keeps the input.
    target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link,address,undefined
                                             -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
  elseif(IMGSVC_SANITIZE)
    # Undefined behaviour fails the test that meets it, as in the fuzz build.
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=undefined
                                             -fno-omit-frame-pointer)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # GCC's flow analysis sees through less of the instrumented code and
      # reports Boost.Beast's optional<> members as maybe uninitialised (GCC's
      # manual warns that sanitizers make this warning unreliable).
      target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
    endif()
  endif()
endfunction()

function(imgsvc_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  if(NOT ARG_SOURCES)
    file(GLOB ARG_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cc ${CMAKE_CURRENT_SOURCE_DIR}/*.S)
  endif()
  add_library(imgsvc_${name} STATIC ${ARG_SOURCES})
  imgsvc_apply_flags(imgsvc_${name})
  target_link_libraries(imgsvc_${name} PUBLIC ${ARG_DEPS})
endfunction()

# Test code is built unoptimised and as one translation unit per target (a
# unity build): on two slow cores GoogleTest's headers and templates, parsed
# and instantiated once per file, dominate the build, and optimising test code
# buys nothing. The code under test keeps the build type's optimisation.
# OPTIMISED_IN_RELEASE: code that benchmarks run inside what they time (the
# fake Lambda Runtime API answers the function a cold start measures) keeps
# the optimisation of a Release build, the benchmarks' build.
function(imgsvc_test_code target)
  cmake_parse_arguments(ARG "OPTIMISED_IN_RELEASE" "" "" ${ARGN})
  if(NOT (ARG_OPTIMISED_IN_RELEASE AND CMAKE_BUILD_TYPE STREQUAL "Release"))
    target_compile_options(${target} PRIVATE -O0)
  endif()
  set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 0)
endfunction()

function(imgsvc_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;ARGS;LABELS;PROPERTIES" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  imgsvc_apply_flags(${name})
  imgsvc_test_code(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name} ${ARG_ARGS})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" ${ARG_PROPERTIES})
endfunction()
