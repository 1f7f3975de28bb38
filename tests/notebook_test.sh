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
pg=$dir/pg
rm -rf "$dir"; mkdir -p "$dir/work"
fail() { echo "notebook_test: FAILED: $*" >&2; for f in "$dir"/*.log; do echo "--- $f"; tail -40 "$f"; done >&2; exit 1; }
cleanup() { [ -n "${coord_pid:-}" ] && kill "$coord_pid" 2>/dev/null; "$repo/tools/pg-embedded.sh" destroy "$pg" >/dev/null 2>&1 || true; }
trap cleanup EXIT
t0=$SECONDS

GANNF_PG_NOSYNC=1 "$repo/tools/pg-embedded.sh" start "$pg" --tcp > "$dir/pg.log" 2>&1 || fail "pg-embedded.sh start"
port=$(sed -n 's/^port=//p' "$pg/pg_service.conf" | head -1)
sock=$(sed -n 's/^host=//p' "$pg/pg_service.conf" | head -1)
password=$(awk -F: '$4 == "gannf_student" {print $5; exit}' "$pg/pgpass")
[ -n "$port" ] && [ -n "$sock" ] && [ -n "$password" ] || fail "no port, socket or gannf_student password in $pg"
coord_db="host=$sock port=$port dbname=gannf user=gannf_coord"
"$coord" init --db "$coord_db" --dataset synthetic:32 --image-size 32 --channels 1 --latent-dim 16 \
  --ngf 8 --ndf 8 --images-per-unit 8 --units-per-update 2 --seed 43 --no-cache --quiet \
  > "$dir/coord-init.log" 2>&1 || fail "gannf-coord init"
"$coord" run --db "$coord_db" --output-dir "$dir/out" --iterations 1 --sample-interval 0 \
  --checkpoint-interval 0 > "$dir/coord-run.log" 2>&1 &
coord_pid=$!

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
wait "$coord_pid" || fail "gannf-coord run exited with $?"
coord_pid=
grep -q "gannf-worker exited with 0" "$dir/nbclient.log" || fail "no clean exit line from the notebook"
if grep -qF "$password" "$dir/executed.ipynb"; then fail "the password appears in the executed notebook"; fi
used=$("$repo/tools/pg-embedded.sh" psql "$pg" -tAc "SELECT count(*) FROM gannf.submissions s
  JOIN gannf.workers w ON w.id = s.worker_id WHERE w.name = 'colab-notebook' AND s.state = 'used'")
[ "$used" = 2 ] || fail "expected the notebook worker's 2 submissions used, found '$used'"
grep -E "^built .* in [0-9]+ s" "$dir/nbclient.log" | sed 's/^/notebook_test: /'
echo "notebook_test: passed in $((SECONDS - t0)) s"
