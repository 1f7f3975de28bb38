#!/usr/bin/env bash
# The main job: install what is missing, build, and train the DCGAN on
# Fashion-MNIST (Debian's dataset-fashion-mnist) at 32x32 on this machine.
# Samples, losses and checkpoints go to ./run/fashion-mnist (override with OUT=...).
#   tools/run.sh                 2 epochs (a few minutes on 2 cores)
#   tools/run.sh --epochs 5      any gannf-train option is passed through
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
BUILD=${GANNF_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${GANNF_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target gannf-train gannf-info >/dev/null
OUT=${OUT:-run/fashion-mnist}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
"$BUILD/tools/gannf-info" | head -2
"$BUILD/tools/gannf-train" --dataset "$DATA" --image-size 32 --epochs 2 \
  --sample-interval 200 --checkpoint-interval 500 --output-dir "$OUT" "$@"
echo
echo "samples:     $OUT/samples/$(cat "$OUT/samples/latest.txt" 2>/dev/null)"
echo "loss curve:  $OUT/loss-curve.png"
echo "checkpoint:  $(cat "$OUT/checkpoints/latest" 2>/dev/null | sed "s|^|$OUT/checkpoints/|")"
