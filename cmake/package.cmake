# function.zip for AWS Lambda's provided.al2023 runtime (deploy/README.md):
# `bootstrap` is the imgsvc binary itself, stripped, mode 0755; Lambda unpacks
# the zip at /var/task and execs it with no shell in between.
#   target function_zip (part of ALL) -> ${IMGSVC_FUNCTION_ZIP}, and its files
#                                       unpacked in ${IMGSVC_FUNCTION_DIR}
#
# Amazon Linux 2023 has glibc 2.34, older than this machine's, so running the
# binary here cannot show that it starts there. The binary is static
# (src/app/CMakeLists.txt), and package_static_test fails when anything in the
# zip would need a loader or a shared library from the machine.

# Without the static executable the zip would lack its shared libraries.
if(NOT IMGSVC_STATIC_EXECUTABLE)
  return()
endif()

find_program(IMGSVC_ZIP_EXECUTABLE zip REQUIRED)
set(IMGSVC_FUNCTION_ZIP ${CMAKE_BINARY_DIR}/function.zip)
set(IMGSVC_FUNCTION_DIR ${CMAKE_BINARY_DIR}/function)
# The same binary gives the same zip (a fixed time stamp; -X leaves out uid,
# gid and access times), so deploy tools skip uploading unchanged code.
add_custom_command(
  OUTPUT ${IMGSVC_FUNCTION_ZIP}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${IMGSVC_FUNCTION_DIR}
  COMMAND ${CMAKE_STRIP} --strip-all -o ${IMGSVC_FUNCTION_DIR}/bootstrap $<TARGET_FILE:imgsvc>
  COMMAND chmod 0755 ${IMGSVC_FUNCTION_DIR}/bootstrap
  COMMAND touch -d "2000-01-01 00:00:00" ${IMGSVC_FUNCTION_DIR}/bootstrap
  COMMAND ${CMAKE_COMMAND} -E rm -f ${IMGSVC_FUNCTION_ZIP}
  COMMAND ${CMAKE_COMMAND} -E chdir ${IMGSVC_FUNCTION_DIR} ${IMGSVC_ZIP_EXECUTABLE} -q -X ${IMGSVC_FUNCTION_ZIP} bootstrap
  DEPENDS imgsvc
  COMMENT "Packaging function.zip"
  VERBATIM)
add_custom_target(function_zip ALL DEPENDS ${IMGSVC_FUNCTION_ZIP})

add_test(NAME package_static_test COMMAND ${PROJECT_SOURCE_DIR}/scripts/check-static ${IMGSVC_FUNCTION_ZIP})
# The gate itself: a dynamically linked program (here the shell) must fail and
# name its loader.
add_test(NAME package_static_gate_test
  COMMAND sh -c [[out=$("$0" /bin/sh); [ $? -eq 1 ] && printf '%s\n' "$out" | grep -F 'interpreter /lib']]
          ${PROJECT_SOURCE_DIR}/scripts/check-static)
# Exactly one entry, `bootstrap`, executable: Lambda runs nothing else.
add_test(NAME package_zip_layout_test COMMAND ${CMAKE_COMMAND} -E tar tvf ${IMGSVC_FUNCTION_ZIP})
set_tests_properties(package_zip_layout_test PROPERTIES
  PASS_REGULAR_EXPRESSION "^-rwxr-xr-x [^\n]* bootstrap\n$")
set_tests_properties(package_static_test package_static_gate_test package_zip_layout_test PROPERTIES LABELS package)
