# The private PostgreSQL that tests labelled `cluster` talk to
# (docs/architecture.md, Tests): ctest starts it before the first test that
# needs it and stops it after the last, so `ctest -L cluster` (or any single
# cluster test) works on its own from any build directory, from nothing.
#
#   pg_start  FIXTURES_SETUP postgres    tools/pg-embedded.sh start <build>/pg
#                                        (initdb on first use, then just start)
#   pg_stop   FIXTURES_CLEANUP postgres  tools/pg-embedded.sh stop <build>/pg
#
# gannf_cluster_test(<name> SOURCES <files...> [LIBS <libs...>] [LABELS <labels...>] [TIMEOUT <s>])
# builds a test binary with gannf_test_binary (shared main, GANNF_* definitions)
# and registers each of its GoogleTest cases with LABELS cluster (plus any
# given, e.g. faults), FIXTURES_REQUIRED postgres and the connection environment
# (both through gannf_test_list_properties, tests/CMakeLists.txt):
#   PGSERVICEFILE=<build>/pg/pg_service.conf PGSERVICE=gannf
# i.e. libpq's service file, written by pg-embedded.sh at start, naming the
# socket directory, port, database gannf and user gannf_coord (the service
# file, rather than PGHOST itself, because the socket directory is only known
# once the script has checked the path: too long a path for a Unix socket, or
# a folder the server user cannot reach, moves it to /tmp). GANNF_PG_DIR
# names the folder for tests that start programs of their own.
#
# The cluster persists in <build>/pg between runs (initdb takes a few
# seconds); the tests make a database of their own each.
# `tools/pg-embedded.sh destroy <build>/pg` starts from nothing (deleting the
# folder alone may leave the server's files in /tmp, which the next start
# then removes, as initdb ran with GANNF_PG_NOSYNC=1).

set(GANNF_TEST_PG_DIR ${PROJECT_BINARY_DIR}/pg)
set(GANNF_PG_SCRIPT ${PROJECT_SOURCE_DIR}/tools/pg-embedded.sh)

add_test(NAME pg_start COMMAND ${GANNF_PG_SCRIPT} start ${GANNF_TEST_PG_DIR})
set_tests_properties(pg_start PROPERTIES
  FIXTURES_SETUP postgres
  LABELS cluster
  TIMEOUT 120
  # The cluster is a throw-away: skip initdb's fsync of the fresh files.
  ENVIRONMENT GANNF_PG_NOSYNC=1)
add_test(NAME pg_stop COMMAND ${GANNF_PG_SCRIPT} stop ${GANNF_TEST_PG_DIR})
set_tests_properties(pg_stop PROPERTIES
  FIXTURES_CLEANUP postgres
  LABELS cluster
  TIMEOUT 120)

set(GANNF_PG_TEST_ENV
  "PGSERVICEFILE=${GANNF_TEST_PG_DIR}/pg_service.conf"
  "PGSERVICE=gannf"
  "GANNF_PG_DIR=${GANNF_TEST_PG_DIR}"
  "OMP_WAIT_POLICY=PASSIVE")   # as gannf_test: ctest -j on few cores

function(gannf_cluster_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  if(NOT TARGET gannf_cluster)
    return()
  endif()
  gannf_test_binary(${name} SOURCES ${T_SOURCES} LIBS gannf_cluster ${T_LIBS})
  # Discovery runs the binary with --gtest_list_tests only: no database.
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60
    PROPERTIES FIXTURES_REQUIRED postgres TIMEOUT ${T_TIMEOUT})
  set(labels cluster ${T_LABELS})
  list(REMOVE_DUPLICATES labels)
  gannf_test_list_properties(${name} "${labels}" "${GANNF_PG_TEST_ENV}")
endfunction()
