#!/usr/bin/env bash
# Copy the finished splits of run.sh's runs into reproduction/ -- result.json, log.jsonl, run.json
# (report.py reads the settings there), record.json (the commit it ran at, and each resume's) and
# the error curve; no model or snapshot files -- then
# redo reproduction/report/ (report.py --paper: tables, bar chart, per-class errors, confusion
# matrices). A split without result.json (not finished) is not copied.
#   OUT=DIR   where run.sh saved the runs (default results/reproduction)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/reproduction}
PY=${PY:-.venv/bin/python}
shopt -s nullglob
for result in "$OUT"/esc10-logmel_cnn-*/split*/result.json; do
  src=$(dirname "$result")
  dst=reproduction/${src#"$OUT"/}
  mkdir -p "$dst"
  cp "$src"/result.json "$src"/log.jsonl "$src"/run.json "$src"/record.json "$src"/error.png "$dst"/
  echo "copied $src -> $dst"
done
"$PY" report.py reproduction --paper --out reproduction/report
