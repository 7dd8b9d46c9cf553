#!/usr/bin/env bash
# Full-protocol runs of the reproduction (README "Results"): real ESC-10, PiczakCNN (logmel_cnn),
# the training defaults of docs/method.md (600 epochs standard, 1200 mixing; LR 0.01, x0.1 at
# 50 % and 75 %; batch 64 clips), one learning method after the other, in the background at low
# priority. A run that was stopped continues with --resume; a finished split is skipped.
#   OUT=DIR        where the runs are saved (default results/reproduction)
#   DATA=DIR       esc_gen.py output (default data)
#   SPLITS="1"     splits to run;   LEARNINGS="standard intermix bc speechmix"
#                  (and the mixing-point study's arms: intermix-L0 = --learning intermix
#                  --eligible 0, intermix-L012 = --learning intermix --eligible 0 1 2)
#   THREADS=N      --threads of each run (two run.sh side by side on 2 cores: THREADS=1 each,
#                  README "Two runs on one machine"); default: every core
# Usage: nice -n 10 bash reproduction/run.sh > run.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/reproduction}
DATA=${DATA:-data}
PY=${PY:-.venv/bin/python}
for learning in ${LEARNINGS:-standard intermix bc speechmix}; do
  for split in ${SPLITS:-1}; do
    save="$OUT/esc10-logmel_cnn-$learning"
    if [ -f "$save/split$split/result.json" ]; then
      echo "=== $learning split $split finished before ($save/split$split/result.json): skipped"
      continue
    fi
    resume=()
    [ -d "$save/split$split" ] && resume=(--resume)
    echo "=== $(date -u +%FT%TZ) $learning split $split ${resume[*]}"
    start=$(date +%s)
    case "$learning" in
      intermix-L0) method=(--learning intermix --eligible 0) ;;
      intermix-L012) method=(--learning intermix --eligible 0 1 2) ;;
      *) method=(--learning "$learning") ;;
    esac
    "$PY" main.py --data "$DATA" --dataset esc10 --netType logmel_cnn "${method[@]}" \
      --split "$split" --seed "$split" --testEvery 10 --gpu -1 --save "$save" \
      ${THREADS:+--threads "$THREADS"} "${resume[@]}"
    rc=$?  # before any other command (a $(...) below would reset $?)
    echo "=== $(date -u +%FT%TZ) $learning split $split rc=$rc wall=$(( $(date +%s) - start )) s"
  done
done
