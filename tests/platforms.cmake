# The platform tests (docs/platforms.md): labels container, notebook, arm64.
# Each builds gannf again from nothing in its own way (an image, the Colab
# notebook's worker-only build, a cross build), minutes on 2 cores, so the
# default run lists them as skipped (DISABLED); .ci/platforms runs them with
# -DGANNF_PLATFORM_TESTS=ON.
# The portable paths' unit tests run everywhere (label unit).
gannf_test(test_platform LABELS unit SOURCES test_platform.cpp)

option(GANNF_PLATFORM_TESTS "run the container, notebook and arm64 tests (long: .ci/platforms)" OFF)

find_program(GANNF_PODMAN podman)
find_program(GANNF_BUILDAH buildah)
find_program(GANNF_DEBOOTSTRAP debootstrap)
find_program(GANNF_CROSS_CXX aarch64-linux-gnu-g++)
find_program(GANNF_QEMU_AARCH64 qemu-aarch64-static)
execute_process(COMMAND /usr/bin/python3 -c "import nbclient, nbformat, ipykernel"
                RESULT_VARIABLE _nb_rc OUTPUT_QUIET ERROR_QUIET)
if(_nb_rc EQUAL 0)
  set(GANNF_HAVE_NBCLIENT TRUE)
endif()
set(_need_container "GANNF_PODMAN,GANNF_BUILDAH,GANNF_DEBOOTSTRAP|podman, buildah and debootstrap (tools/setup.sh --platforms)")
set(_need_notebook "GANNF_HAVE_NBCLIENT|nbclient and ipykernel for /usr/bin/python3 (python3-nbclient, python3-ipykernel)")
set(_need_arm64 "GANNF_CROSS_CXX,GANNF_QEMU_AARCH64|an arm64 cross compiler and qemu (crossbuild-essential-arm64, qemu-user-static)")

function(gannf_platform_test name label)
  set_tests_properties(${name} PROPERTIES LABELS ${label} TIMEOUT 1800 RUN_SERIAL TRUE)
  if(NOT GANNF_PLATFORM_TESTS)
    set_tests_properties(${name} PROPERTIES DISABLED TRUE)
  endif()
endfunction()

if(TARGET gannf-coord AND GANNF_PODMAN AND GANNF_BUILDAH AND GANNF_DEBOOTSTRAP)
  add_test(NAME platform_container
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/container_test.sh ${PROJECT_SOURCE_DIR}
                   ${PROJECT_BINARY_DIR} $<TARGET_FILE:gannf-coord>)
  gannf_platform_test(platform_container container)
endif()
# The arm64 image (cross-compiled) and its worker under qemu, on an amd64 host.
if(TARGET gannf-coord AND GANNF_PODMAN AND GANNF_BUILDAH AND GANNF_DEBOOTSTRAP AND GANNF_QEMU_AARCH64
   AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  add_test(NAME platform_container_arm64
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/container_test.sh ${PROJECT_SOURCE_DIR}
                   ${PROJECT_BINARY_DIR} $<TARGET_FILE:gannf-coord> arm64)
  gannf_platform_test(platform_container_arm64 container)
endif()
if(TARGET gannf-coord AND GANNF_HAVE_NBCLIENT)
  add_test(NAME platform_notebook
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/notebook_test.sh ${PROJECT_SOURCE_DIR}
                   ${PROJECT_BINARY_DIR} $<TARGET_FILE:gannf-coord>)
  gannf_platform_test(platform_notebook notebook)
endif()
if(GANNF_CROSS_CXX AND GANNF_QEMU_AARCH64)
  add_test(NAME platform_arm64
           COMMAND bash ${PROJECT_SOURCE_DIR}/tools/cross-arm64.sh ${PROJECT_BINARY_DIR}/arm64)
  gannf_platform_test(platform_arm64 arm64)
endif()
if(GANNF_PLATFORM_TESTS)
  gannf_expect(platform_container NEEDS container pq yaml data cli)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
    gannf_expect(platform_container_arm64 NEEDS container arm64 pq yaml data cli)
  endif()
  gannf_expect(platform_notebook NEEDS notebook pq yaml data cli)
  gannf_expect(platform_arm64 NEEDS arm64)
endif()
