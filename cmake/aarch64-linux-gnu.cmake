# Cross build for linux/arm64 with Debian's crossbuild-essential-arm64, against
# a sysroot of Debian's arm64 packages (tools/cross-arm64.sh makes it and passes
# GANNF_ARM64_SYSROOT), or GANNF_ARM64_SYSROOT=/ where the arm64 -dev packages
# are installed in the system itself by multiarch (the build stage of
# containers/Containerfile.cpu). Tests run under qemu-user-static (the
# emulator below), so ctest works as on a native build.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

if(NOT GANNF_ARM64_SYSROOT)
  set(GANNF_ARM64_SYSROOT $ENV{GANNF_ARM64_SYSROOT})
endif()
if(NOT GANNF_ARM64_SYSROOT OR NOT EXISTS ${GANNF_ARM64_SYSROOT}/usr)
  message(FATAL_ERROR "GANNF_ARM64_SYSROOT: no arm64 sysroot given; tools/cross-arm64.sh makes one")
endif()
# Passed on to try_compile's projects, which read this file again.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES GANNF_ARM64_SYSROOT)

# Headers and libraries come from the sysroot (and the cross compiler's own
# /usr/aarch64-linux-gnu); programs (cmake, the shell) from the host.
set(CMAKE_FIND_ROOT_PATH ${GANNF_ARM64_SYSROOT} /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# The sysroot's libraries link against each other (libopenblas -> libgfortran).
set(_lib ${GANNF_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,-rpath-link,${_lib} -Wl,-rpath-link,${_lib}/openblas-openmp")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "${CMAKE_EXE_LINKER_FLAGS_INIT}")

# The test programs run through qemu, with the sysroot's libraries on the
# loader's path (qemu's -L is the prefix for the dynamic loader itself).
set(CMAKE_CROSSCOMPILING_EMULATOR
    qemu-aarch64-static -L /usr/aarch64-linux-gnu
    -E LD_LIBRARY_PATH=${_lib}/openblas-openmp:${_lib}:${GANNF_ARM64_SYSROOT}/lib/aarch64-linux-gnu)
