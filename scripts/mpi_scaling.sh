#!/bin/sh
# Data-parallel scaling on one machine: `vkqat train` as 1 process vs `mpirun -n 2`, each
# rank with one lavapipe thread (LP_NUM_THREADS=1), alternating PAIRS times after a warm-up
# (pipeline cache). Prints each run's training images/s and, for 2 ranks, the per-step
# waiting / all-reduce / optimizer times from summary.json's data_parallel record.
#   scripts/mpi_scaling.sh build/vkqat WORKDIR [PAIRS] [extra train flags...]
# Default model: ResNet-20 width 8, global batch 64, 1280 images (20 steps).
set -eu
VKQAT=$1; WORK=$2; PAIRS=${3:-3}
[ $# -ge 3 ] && shift 3 || shift $#
command -v mpirun >/dev/null || { echo "mpi_scaling.sh: mpirun not found (openmpi-bin)" >&2; exit 1; }
ROOT=""; [ "$(id -u)" = 0 ] && ROOT=--allow-run-as-root
mkdir -p "$WORK"
FLAGS="--model resnet20 --width 8 --batch-size 64 --train-limit 1280 --test-limit 64 --epochs 1 --seed 1 $*"
run() {  # $1 = ranks, $2 = run dir
  rm -rf "$2"
  if [ "$1" = 1 ]; then
    LP_NUM_THREADS=1 "$VKQAT" train $FLAGS --out "$2" >"$2.log" 2>&1
  else
    mpirun $ROOT --oversubscribe -n "$1" -x LP_NUM_THREADS=1 "$VKQAT" train $FLAGS --out "$2" >"$2.log" 2>&1
  fi
  python3 - "$1" "$2/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
dp = s.get("data_parallel", {})
extra = "" if not dp else (f"  wait {dp['wait_ms_per_step']:.1f} ms, all-reduce {dp['allreduce_ms_per_step']:.1f} ms"
                           f" ({dp['gradient_bytes'] / 1e3:.0f} KB), optimizer {dp['update_ms_per_step']:.1f} ms per step")
print(f"{sys.argv[1]} rank(s): {s['train_images_per_s']:.1f} img/s, {s['pipeline']['ms_per_step']:.0f} ms/step{extra}")
PY
}
run 1 "$WORK/warmup-1" >/dev/null  # fills the pipeline cache: each batch size compiles its own
run 2 "$WORK/warmup-2" >/dev/null
for i in $(seq "$PAIRS"); do
  run 1 "$WORK/one-$i"
  run 2 "$WORK/two-$i"
done
