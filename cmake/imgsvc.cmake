# One way to declare every library, binary and test, so flags stay alike.
#   imgsvc_library(NAME [SOURCES ...] DEPS ...) -> static library imgsvc_<NAME>; without
#                                               SOURCES, every .cc/.S of the calling folder
#   imgsvc_test(NAME SOURCES ... DEPS ... [LABELS ...] [PROPERTIES ...])
#                                               -> gtest executable, registered with CTest
set(IMGSVC_WARNINGS -Wall -Wextra -Werror -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual -Wimplicit-fallthrough)

function(imgsvc_apply_flags target)
  target_compile_options(${target} PRIVATE ${IMGSVC_WARNINGS})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  if(IMGSVC_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
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

function(imgsvc_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS;PROPERTIES" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  imgsvc_apply_flags(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" ${ARG_PROPERTIES})
endfunction()
