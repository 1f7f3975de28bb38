# Finds gannf's dependencies and prints one ✓/✗ line for each.
function(gannf_report name ok detail)
  if(ok)
    message(STATUS "  ✓ ${name} ${detail}")
  else()
    message(STATUS "  ✗ ${name} ${detail}")
  endif()
endfunction()

message(STATUS "gannf dependencies:")

# macOS (untested, docs/platforms.md): Homebrew keeps libomp, openblas and
# libpq out of the default search paths, and Apple clang has no OpenMP runtime
# of its own, so its flags and library are named (the usual libomp recipe).
if(APPLE)
  find_program(GANNF_BREW brew)
  if(GANNF_BREW)
    foreach(formula libomp openblas libpq zstd)
      execute_process(COMMAND ${GANNF_BREW} --prefix ${formula} OUTPUT_VARIABLE _prefix
                      OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
      if(IS_DIRECTORY "${_prefix}")
        list(APPEND CMAKE_PREFIX_PATH ${_prefix})
        if(formula STREQUAL "libomp")
          set(_libomp ${_prefix})
        endif()
      endif()
    endforeach()
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "AppleClang" AND _libomp AND NOT OpenMP_CXX_FLAGS)
    foreach(lang C CXX)
      set(OpenMP_${lang}_FLAGS "-Xpreprocessor -fopenmp -I${_libomp}/include")
      set(OpenMP_${lang}_LIB_NAMES omp)
    endforeach()
    set(OpenMP_omp_LIBRARY ${_libomp}/lib/libomp.dylib)
  endif()
endif()

find_package(OpenMP REQUIRED)
gannf_report("OpenMP" TRUE "${OpenMP_CXX_VERSION}")

# OpenBLAS, OpenMP flavour. The pthread flavour (Debian's default alternative)
# spins its own thread pool next to libgomp's and the two fight over the cores;
# the OpenMP flavour runs its GEMMs on the same libgomp team as our kernels.
find_library(GANNF_OPENBLAS openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
set(GANNF_OPENBLAS_FLAVOUR "openmp")
if(NOT GANNF_OPENBLAS)
  find_library(GANNF_OPENBLAS openblas)
  set(GANNF_OPENBLAS_FLAVOUR "default")
endif()
find_path(GANNF_CBLAS_INCLUDE cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
if(NOT GANNF_CBLAS_INCLUDE)
  find_path(GANNF_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas)
endif()
if(NOT GANNF_OPENBLAS OR NOT GANNF_CBLAS_INCLUDE)
  gannf_report("OpenBLAS" FALSE "— run tools/setup.sh (libopenblas-openmp-dev)")
  message(FATAL_ERROR "OpenBLAS not found")
endif()
gannf_report("OpenBLAS" TRUE "${GANNF_OPENBLAS} (${GANNF_OPENBLAS_FLAVOUR})")
get_filename_component(GANNF_OPENBLAS_DIR ${GANNF_OPENBLAS} DIRECTORY)
# The SONAME is plain libopenblas.so.0, which the loader would resolve through
# Debian's alternatives to the pthread flavour; pin the directory we linked.
set(CMAKE_BUILD_RPATH ${GANNF_OPENBLAS_DIR})
set(CMAKE_INSTALL_RPATH ${GANNF_OPENBLAS_DIR})

find_package(GTest)
gannf_report("GoogleTest" "${GTest_FOUND}" "")
if(NOT GTest_FOUND AND NOT GANNF_WORKER_ONLY)
  message(FATAL_ERROR "GoogleTest not found — run tools/setup.sh (libgtest-dev)")
endif()

find_package(benchmark QUIET)
set(GANNF_HAVE_BENCHMARK ${benchmark_FOUND})
gannf_report("Google Benchmark" "${benchmark_FOUND}" "(bench/ is skipped without it)")

find_path(GANNF_STB_INCLUDE stb_image.h PATH_SUFFIXES stb)
find_library(GANNF_STB stb)
gannf_report("stb" "${GANNF_STB_INCLUDE}" "${GANNF_STB_INCLUDE}")

find_package(ZLIB)
gannf_report("zlib" "${ZLIB_FOUND}" "")

find_package(nlohmann_json 3 QUIET)
gannf_report("nlohmann-json" "${nlohmann_json_FOUND}" "")
if(NOT nlohmann_json_FOUND)
  message(FATAL_ERROR "nlohmann-json not found — run tools/setup.sh (nlohmann-json3-dev)")
endif()

# CLI11 (header only): every program's command line.
find_path(GANNF_CLI11_INCLUDE CLI/CLI.hpp)
if(GANNF_CLI11_INCLUDE)
  gannf_report("CLI11" TRUE "${GANNF_CLI11_INCLUDE}")
else()
  gannf_report("CLI11" FALSE "— the programs and benchmarks are skipped: run tools/setup.sh (libcli11-dev)")
endif()

# yaml-cpp: the cluster programs' configuration file.
find_package(yaml-cpp QUIET)
if(yaml-cpp_FOUND)
  gannf_report("yaml-cpp" TRUE "${yaml-cpp_VERSION}")
else()
  gannf_report("yaml-cpp" FALSE "— gannf-coord, gannf-worker and their tests are skipped: run tools/setup.sh (libyaml-cpp-dev)")
endif()

find_package(PostgreSQL QUIET)
gannf_report("libpq" "${PostgreSQL_FOUND}" "${PostgreSQL_LIBRARIES}")

# zstd: the exact weight deltas a worker downloads (src/cluster/weights_delta.h);
# src/cluster needs it beside libpq.
find_path(GANNF_ZSTD_INCLUDE zstd.h)
find_library(GANNF_ZSTD zstd)
if(GANNF_ZSTD_INCLUDE AND GANNF_ZSTD)
  gannf_report("zstd" TRUE "${GANNF_ZSTD}")
else()
  gannf_report("zstd" FALSE "— src/cluster (the coordinator and the worker) is skipped: run tools/setup.sh (libzstd-dev)")
endif()

# gannf-dash, the class's dashboard: cpp-httplib (Debian builds it as a
# library, and its header's feature macros come from its pkg-config file) and
# Chart.js, which the program serves itself (read at build time: the binary
# needs no file at run time and works offline).
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(GANNF_HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
endif()
gannf_report("cpp-httplib" "${GANNF_HTTPLIB_FOUND}" "${GANNF_HTTPLIB_VERSION}")
set(GANNF_CHARTJS /usr/share/javascript/chart.js/chart.min.js CACHE FILEPATH
    "Chart.js, UMD build (Debian's libjs-chart.js), compiled into gannf-dash")
if(EXISTS ${GANNF_CHARTJS})
  set(GANNF_CHARTJS_FOUND TRUE)
  gannf_report("Chart.js" TRUE "${GANNF_CHARTJS}")
else()
  set(GANNF_CHARTJS_FOUND FALSE)
  gannf_report("Chart.js" FALSE "${GANNF_CHARTJS} is missing")
endif()
if(NOT GANNF_HTTPLIB_FOUND OR NOT GANNF_CHARTJS_FOUND)
  message(STATUS "  gannf-dash and its tests are skipped: run tools/setup.sh (libcpp-httplib-dev, libjs-chart.js)")
endif()

include(CheckLanguage)
check_language(CUDA)
set(GANNF_HAVE_CUDA OFF)
option(GANNF_CUDA "build the CUDA back end where nvcc is found" ON)
set(_cuda_note "${CMAKE_CUDA_COMPILER}")
if(GANNF_CUDA AND CMAKE_CUDA_COMPILER)
  if(EXISTS ${PROJECT_SOURCE_DIR}/kernels/cuda/CMakeLists.txt)
    set(GANNF_HAVE_CUDA ON)
  else()
    set(_cuda_note "${CMAKE_CUDA_COMPILER} found, but this tree has no CUDA back end yet")
  endif()
elseif(NOT GANNF_CUDA)
  set(_cuda_note "disabled with -DGANNF_CUDA=OFF")
else()
  set(_cuda_note "nvcc not found: CPU back end only")
endif()
gannf_report("CUDA (nvcc)" "${GANNF_HAVE_CUDA}" "${_cuda_note}")
