#!/usr/bin/env bash
# Label `notebook` (tests/platforms.cmake): executes notebooks/gannf_colab.ipynb
# with nbclient (Debian's python3-nbclient, python3-ipykernel) as Colab would,
# on this machine's CPU: the clone step points at this checkout (GANNF_REPO),
# the login comes from the environment (GANNF_DB_URL, GANNF_DB_PASSWORD; the
# notebook's fallback where Colab's secrets are absent), and the worker joins
# a one-update run of the host's gannf-coord on a private PostgreSQL over TCP.
# Passes when every cell ran, the coordinator finished the run with the
# notebook worker's 2 submissions used, and the password is nowhere in the
# executed notebook.
#
#   notebook_test.sh REPO BUILD_DIR GANNF_COORD
set -euo pipefail
repo=$1 build=$2 coord=$3
dir=$build/notebook-test
rm -rf "$dir"; mkdir -p "$dir/work"
fail() { echo "notebook_test: FAILED: $*" >&2; for f in "$dir"/*.log; do echo "--- $f"; tail -40 "$f"; done >&2; exit 1; }
source "$(dirname "$0")/platform_run.sh"
trap platform_run_cleanup EXIT
t0=$SECONDS

platform_run_start 43

# The libpq service of the test fixture must not stand in for the notebook's login.
unset PGSERVICE PGSERVICEFILE PGPASSFILE
export GANNF_REPO=$repo GANNF_WORKDIR=$dir/work
# The notebook clones the committed tree of this checkout; ccache (where CI
# has one) keeps its second and later builds short. CMake reads the launcher
# from the environment.
if command -v ccache > /dev/null; then export CMAKE_CXX_COMPILER_LAUNCHER=ccache CMAKE_C_COMPILER_LAUNCHER=ccache; fi
export GANNF_DB_URL="postgresql://gannf_student@127.0.0.1:$port/gannf" GANNF_DB_PASSWORD=$password
export GANNF_WORKER_ARGS="--name colab-notebook --threads 1 --batch-size 4 --no-cache --exit-when-done --poll-interval 0.2"
/usr/bin/python3 - "$repo/notebooks/gannf_colab.ipynb" "$dir/executed.ipynb" > "$dir/nbclient.log" 2>&1 <<'PY' ||
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
try:
    NotebookClient(nb, timeout=1500, kernel_name="python3").execute()
finally:
    nbformat.write(nb, sys.argv[2])
for c in nb.cells:
    for o in c.get("outputs", []):
        text = o.get("text") or "".join(str(v) for v in o.get("data", {}).values())
        print(text.rstrip())
PY
  fail "the notebook did not run to the end (executed copy: $dir/executed.ipynb)"
platform_run_wait
grep -q "gannf-worker exited with 0" "$dir/nbclient.log" || fail "no clean exit line from the notebook"
if grep -qF "$password" "$dir/executed.ipynb"; then fail "the password appears in the executed notebook"; fi
used=$(platform_used colab-notebook)
[ "$used" = 2 ] || fail "expected the notebook worker's 2 submissions used, found '$used'"
grep -E "^built .* in [0-9]+ s" "$dir/nbclient.log" | sed 's/^/notebook_test: /'
echo "notebook_test: passed in $((SECONDS - t0)) s"
