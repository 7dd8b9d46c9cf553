#!/usr/bin/env bash
# The GPU check in one call: set up, generate ESC-10, then each step under its own time limit, its
# stdout and stderr saved under OUT (default results/gpu_check) as NAME.out / NAME.err, and one
# line per step in OUT/summary.txt: name, status, seconds, note (tab-separated). Status is the exit
# status, or "skipped: REASON" ("skipped: no GPU", "skipped: budget", ...).
#
#   bash scripts/gpu_check.sh [OUT]
#
# Steps:
#   0_setup   with a .gpu/ folder (the device pack: wheels, the ESC-10 Ogg clips and
#             ogg_to_esc50.py): install its wheels into $GPU_CHECK_SITE (default /tmp/site, put on
#             PYTHONPATH) and rebuild the ESC-50 layout from .gpu/ESC-10-ogg, with PY=python3;
#             without it (or with GPU_CHECK_NO_PACK=1): PY=.venv/bin/python and the ESC-50 layout
#             in $ESC10_DIR (default $ESC50_DIR, else ../shared/data/ESC-50-esc10). PY=...
#             overrides either.
#   0_env     versions, and what Chainer sees: cuda.available, cuDNN, CuPy's device count
#   1_esc_gen esc_gen.py into the work folder (all clips on a GPU; on the CPU one clip per fold
#             and class, 50 clips: GPU_CHECK_CLIPS=N per fold and class, 0 = all)
#   a_test_gpu          pytest tests/test_gpu.py (it skips without a GPU; the note says so)
#   b_bench_NET_LEARN[_tf32]  bench.py, NET envnetv2 / logmel_cnn (PiczakCNN), LEARN standard / bc /
#             speechmix / intermix, on split 1 of the generated data, JSON in OUT/b_*.json;
#             _tf32: with CUPY_TF32=1. Stops when GPU_CHECK_BENCH_BUDGET seconds (default 200)
#             have gone on bench runs; later runs are then "skipped: budget"
#   c_probe_torch, c_probe_chainer   gpu_probe.py torch|chainer 64 20 (the anchor: EnvNet-v2 step
#             time, PyTorch + cuDNN vs Chainer + CuPy), from .gpu/gpu_probe.py if the pack
#             carries it, else $GPU_PROBE (default ../shared/tools/gpu_probe.py)
#   d_piczak_intermix   main.py, PiczakCNN InterMix, ESC-10 split 1 at the protocol, testing every
#             10 epochs, for half the time left, then
#   d_envnetv2_intermix_strong   EnvNet-v2 InterMix --strongAugment for the rest. A run stopped by
#             its limit gets SIGTERM, writes its snapshot and stops (status 124, note "stopped at
#             the limit"); the next gpu_check.sh with the same GPU_CHECK_WORK resumes it (--resume).
#             Logs, result.json and the other small files are copied to OUT/d_*/ (snapshots and
#             models stay in the work folder). On the CPU these runs start afresh each time.
#
# Without a GPU (CuPy missing or seeing no device, or GPU_CHECK_CPU=1) the same steps run on the CPU
# with tiny settings (bench: 1 step of 4 pairs, no warm-up, no loop; every method on logmel_cnn,
# intermix only on envnetv2, no CUPY_TF32=1 runs; main.py: 1 epoch on the 50-clip subset), and the
# GPU-only parts say "no GPU: ..." (the envnetv2 runs it leaves out "skipped: CPU"). That takes
# about 1 minute on 2 cores (tests/test_gpu_check.py runs it).
#
# Time: GPU_CHECK_BUDGET seconds for the whole script from its start (default 420 on a GPU, 240 on
# the CPU); a step never runs past it (its limit is cut to what is left) and one that would get
# under 10 s is "skipped: budget". GPU_CHECK_STEPS="a b c d" picks the lettered steps (0 and 1
# always run). Work folder (data, runs, snapshots): GPU_CHECK_WORK (default $TMPDIR or /tmp,
# /gpu_check_work), kept for resuming. Exit status: 0 if every step passed, was skipped, or (d)
# stopped at its limit; 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-results/gpu_check}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
T0=$SECONDS
STEPS=${GPU_CHECK_STEPS:-a b c d}
FAILED=0

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
left() { echo $((BUDGET - (SECONDS - T0))); }
wanted() { [[ " $STEPS " == *" $1 "* ]]; }

# record NAME STATUS SECONDS NOTE
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"
  printf 'gpu_check: %-34s %-18s %6ss  %s\n' "$1" "$2" "$3" "$4"
}

skip() { record "$1" "skipped: $2" 0 "${3:-}"; }

# step NAME LIMIT CMD...: CMD under `timeout LIMIT` (cut to the budget left), SIGKILL 30 s after
# the SIGTERM; stdout/stderr in OUT/NAME.out, OUT/NAME.err. Sets RC; STEP_NOTE is the note.
step() {
  local name=$1 limit=$2 l t
  shift 2
  l=$(left)
  ((limit > l)) && limit=$l
  if ((limit < 10)); then
    skip "$name" budget "under 10 s of GPU_CHECK_BUDGET=$BUDGET left"
    RC=skipped STEP_NOTE=
    return
  fi
  echo "gpu_check: $name (limit ${limit}s): $*" >&2
  t=$(now)
  timeout -k 30 "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
  RC=$?
  local note=${STEP_NOTE:-}
  if ((RC == 124 || RC == 137)); then
    note="stopped at the limit (${limit}s)${note:+; $note}"
  fi
  record "$name" "$RC" "$(since "$t")" "$note"
  STEP_NOTE=
}

# --- 0: set-up -------------------------------------------------------------------------------
if [ -n "${GPU_CHECK_WORK:-}" ]; then WORK=$GPU_CHECK_WORK; else WORK=${TMPDIR:-/tmp}/gpu_check_work; fi
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
t=$(now)
if [ -d .gpu/whl ] && [ "${GPU_CHECK_NO_PACK:-0}" != 1 ]; then
  PY=${PY:-python3}
  SITE=${GPU_CHECK_SITE:-/tmp/site}
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  SRC=$WORK/ESC-50-esc10
  (
    set -e
    [ -f "$SITE/.gpu_check_done" ] || {
      "$PY" -m pip install -q --no-index --no-deps --upgrade --target "$SITE" .gpu/whl/*.whl
      touch "$SITE/.gpu_check_done"
    }
    [ -f "$SRC/.gpu_check_done" ] || {
      "$PY" .gpu/ogg_to_esc50.py .gpu/ESC-10-ogg "$SRC"
      touch "$SRC/.gpu_check_done"
    }
  ) >"$OUT/0_setup.out" 2>"$OUT/0_setup.err"
  rc=$?
  record 0_setup "$rc" "$(since "$t")" "device pack: wheels into $SITE, ESC-10 rebuilt from Ogg into $SRC"
else
  PY=${PY:-.venv/bin/python}
  SRC=${ESC10_DIR:-${ESC50_DIR:-../shared/data/ESC-50-esc10}}
  if [ -f "$SRC/meta/esc50.csv" ]; then rc=0; else rc=1; fi
  echo "no .gpu/ folder: python $PY, ESC-50 layout $SRC" >"$OUT/0_setup.out"
  record 0_setup "$rc" "$(since "$t")" "no device pack: $PY, clips from $SRC$([ $rc = 0 ] || echo ' (missing: no meta/esc50.csv)')"
fi
[ "$rc" = 0 ] || FAILED=1

GPU=0
if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then
  WHY='GPU_CHECK_CPU=1'
else
  WHY=$(timeout 120 "$PY" -c '
import sys
try:
    import cupy
    n = cupy.cuda.runtime.getDeviceCount()
except Exception as e:
    sys.exit("%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
if n < 1:
    sys.exit("CuPy sees 0 devices")
print("%d device(s), GPU 0: %s" % (n, cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()))
' 2>&1 | tail -n 1) && GPU=1
fi
if [ "$GPU" = 1 ]; then
  MODE=gpu
  BUDGET=${GPU_CHECK_BUDGET:-420}
  echo "gpu_check: GPU: $WHY; budget ${BUDGET}s; OUT $OUT; work $WORK"
else
  MODE=cpu
  BUDGET=${GPU_CHECK_BUDGET:-240}
  echo "gpu_check: no GPU ($WHY): the steps run on the CPU with tiny settings; budget ${BUDGET}s; OUT $OUT; work $WORK"
fi
echo "$MODE: $WHY" >"$OUT/mode.txt"

STEP_NOTE="$MODE: $WHY"
step 0_env 120 "$PY" -c '
import os, platform, sys
import numpy
import compat  # noqa: F401
import chainer
from chainer.backends import cuda
print("python", platform.python_version(), "numpy", numpy.__version__, "chainer", chainer.__version__)
print("cuda.available", cuda.available, "cudnn_enabled", cuda.cudnn_enabled)
if not cuda.available:
    print("why not:", repr(getattr(cuda, "_resolution_error", None)))
else:
    import cupy
    print("cupy", cupy.__version__, "CUPY_TF32", os.environ.get("CUPY_TF32"))
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        print("devices", n)
        for i in range(n):
            p = cupy.cuda.runtime.getDeviceProperties(i)
            print("device", i, p["name"].decode(), "%.1f GiB" % (p["totalGlobalMem"] / 2**30),
                  "cc %d.%d" % (p["major"], p["minor"]))
        print("cuda runtime", cupy.cuda.runtime.runtimeGetVersion(),
              "driver", cupy.cuda.runtime.driverGetVersion())
    except Exception as e:
        print("no device:", type(e).__name__, e)
'
[ "$RC" = 0 ] || FAILED=1
command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1

# --- 1: ESC-10 --------------------------------------------------------------------------------
CLIPS=${GPU_CHECK_CLIPS:-$([ $MODE = gpu ] && echo 0 || echo 1)}
MWORK=$WORK/$MODE
DATA=$MWORK/data
mkdir -p "$MWORK"
GEN_SRC=$SRC
if [ "$CLIPS" != 0 ]; then
  GEN_SRC=$MWORK/esc-subset
  rm -rf "$GEN_SRC"
  "$PY" - "$SRC" "$GEN_SRC" "$CLIPS" <<'EOF' >"$OUT/1_subset.out" 2>&1 || FAILED=1
import csv, os, sys
src, out, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(os.path.join(src, 'meta', 'esc50.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
count, keep = {}, []
for r in rows:
    key = (r['fold'], r['target'])
    if count.get(key, 0) < k:
        count[key] = count.get(key, 0) + 1
        keep.append(r)
os.makedirs(os.path.join(out, 'meta'))
os.makedirs(os.path.join(out, 'audio'))
with open(os.path.join(out, 'meta', 'esc50.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(keep)
for r in keep:
    os.symlink(os.path.abspath(os.path.join(src, 'audio', r['filename'])),
               os.path.join(out, 'audio', r['filename']))
print('%d of %d clips (%d per fold and class) -> %s' % (len(keep), len(rows), k, out))
EOF
fi
rm -rf "$DATA"
STEP_NOTE="from $GEN_SRC$([ "$CLIPS" = 0 ] || echo " ($CLIPS clip(s) per fold and class)")"
step 1_esc_gen 300 "$PY" esc_gen.py "$DATA" --source "$GEN_SRC"
[ "$RC" = 0 ] || FAILED=1

# --- a: tests/test_gpu.py -----------------------------------------------------------------------
if wanted a; then
  [ $MODE = cpu ] && STEP_NOTE="no GPU: test_gpu.py skips its tests"
  step a_test_gpu 180 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py
  [ "$RC" = 0 ] || FAILED=1
  if [ "$RC" = 0 ]; then
    # the pytest result line (e.g. "5 passed" or "5 skipped") into the note
    res=$(grep -E '[0-9]+ (passed|skipped|failed)' "$OUT/a_test_gpu.out" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')
    sed -i "\$s|\$| ($res)|" "$SUMMARY"
  fi
fi

# --- b: bench.py -------------------------------------------------------------------------------
if wanted b; then
  BENCH_BUDGET=${GPU_CHECK_BENCH_BUDGET:-200}
  BENCH_LIMIT=${GPU_CHECK_BENCH_LIMIT:-90}
  if [ $MODE = gpu ]; then
    BARGS=(--gpu 0 --steps 10 --warmupSteps 2 --loopEpochs 0 --iterBatches 10 --testBatches 2)
  else
    BARGS=(--gpu -1 --steps 1 --warmupSteps 0 --loopEpochs 0 --batchSize 4 --iterBatches 2
           --testBatches 1 --testBatchSize 2)
  fi
  b0=$SECONDS
  for tf32 in 0 1; do
    for net in envnetv2 logmel_cnn; do
      for learn in standard bc speechmix intermix; do
        name=b_bench_${net}_${learn}$([ $tf32 = 1 ] && echo _tf32)
        if [ $tf32 = 1 ] && [ $MODE = cpu ]; then
          skip "$name" "no GPU" "CUPY_TF32=1 changes nothing on the CPU"
          continue
        fi
        if [ $MODE = cpu ] && [ $net = envnetv2 ] && [ $learn != intermix ]; then
          skip "$name" "CPU" "on the CPU logmel_cnn runs every method, envnetv2 intermix only"
          continue
        fi
        bl=$((BENCH_BUDGET - (SECONDS - b0)))
        if ((bl < 10)); then
          skip "$name" budget "GPU_CHECK_BENCH_BUDGET=${BENCH_BUDGET}s spent"
          continue
        fi
        ((bl > BENCH_LIMIT)) && bl=$BENCH_LIMIT
        STEP_NOTE="CUPY_TF32=$tf32"
        if [ $tf32 = 1 ]; then tfenv=(env CUPY_TF32=1); else tfenv=(env -u CUPY_TF32); fi
        step "$name" "$bl" "${tfenv[@]}" "$PY" bench.py --netType "$net" --learning "$learn" \
          --data "$DATA" --dataset esc10 "${BARGS[@]}" --out "$OUT/$name.json"
        [ "$RC" = 0 ] || [ "$RC" = skipped ] || FAILED=1
      done
    done
  done
fi

# --- c: the anchor: gpu_probe.py ------------------------------------------------------------------
if wanted c; then
  if [ -f .gpu/gpu_probe.py ]; then PROBE=.gpu/gpu_probe.py; else PROBE=${GPU_PROBE:-../shared/tools/gpu_probe.py}; fi
  for which in torch chainer; do
    name=c_probe_$which
    if [ $MODE = cpu ]; then
      skip "$name" "no GPU" "gpu_probe.py needs CUDA"
    elif [ ! -f "$PROBE" ]; then
      skip "$name" "no probe" "$PROBE not found (carry it as .gpu/gpu_probe.py)"
      FAILED=1
    elif [ $which = torch ] && ! "$PY" -c 'import torch' >/dev/null 2>&1; then
      skip "$name" "torch missing" "PyTorch is not installed for $PY"
    else
      step "$name" 150 "$PY" "$PROBE" "$which" 64 20
      [ "$RC" = 0 ] || [ "$RC" = skipped ] || FAILED=1
    fi
  done
fi

# --- d: the protocol runs on ESC-10 split 1 ------------------------------------------------------
# copy_small SAVE DEST: the run's small files (logs, JSON, plots), not its snapshots and models
copy_small() {
  [ -d "$1" ] || return 0
  (cd "$1" && find . -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.csv' -o -name '*.png' \
    -o -name '*.txt' \) -exec cp --parents {} "$2" \;)
}

if wanted d; then
  runs=("d_piczak_intermix logmel_cnn" "d_envnetv2_intermix_strong envnetv2 --strongAugment")
  for i in 0 1; do
    set -- ${runs[$i]}
    name=$1 net=$2
    shift 2
    save=$MWORK/$name
    if [ $MODE = gpu ]; then
      dargs=(--gpu 0)
      l=$(($(left) - 40))            # kept for the SIGTERM snapshot and the copy
      ((i == 0)) && l=$((l / 2))
    else
      dargs=(--gpu -1 --nEpochs 1)
      l=150
      rm -rf "$save"                 # the CPU check starts afresh
    fi
    ((l < 10)) && l=0
    STEP_NOTE="split 1, --testEvery 10, work folder $save"
    step "$name" "$l" "$PY" main.py --data "$DATA" --dataset esc10 --netType "$net" \
      --learning intermix "$@" --split 1 --seed 1 --testEvery 10 --save "$save" --resume "${dargs[@]}"
    case $RC in
      0 | skipped) ;;
      124 | 137) [ $MODE = gpu ] || FAILED=1 ;;
      *) FAILED=1 ;;
    esac
    mkdir -p "$OUT/$name"
    copy_small "$save" "$OUT/$name"
    grep -hE '^epoch |^split 1: final' "$OUT/$name.out" "$OUT/$name.err" 2>/dev/null | tail -n 2
  done
fi

echo "gpu_check: $((SECONDS - T0)) s in all; summary $SUMMARY"
cat "$SUMMARY"
exit $FAILED
