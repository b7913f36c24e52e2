#!/usr/bin/env bash
# Meta-train several methods side by side, one CPU thread each, for the same wall-clock budget.
#   bash bench/train_methods.sh MINUTES OUT_DIR METHOD...
set -euo pipefail
minutes=$1; out=$2; shift 2
mkdir -p "$out"
for m in "$@"; do
  OMP_NUM_THREADS=1 .venv/bin/python bench/train_method.py --method "$m" --minutes "$minutes" --out "$out" \
    > "$out/$m.log" 2>&1 &
done
wait
