#!/usr/bin/env bash
# Meta-train several benchmark models side by side for the same wall-clock budget (one process
# each, one CPU thread each unless OMP_NUM_THREADS says otherwise), with the test and tune
# alphabets held out (bench/train_method.py). The one training loop of the CPU rounds and of the
# GPU session (bench/gpu_session.sh).
#   bash bench/train_methods.sh MINUTES OUT_DIR RUN...
# RUN is a method (`warp`), or `NAME=METHOD EXTRA ARGS` as one word (`"warp-b32=warp --meta-batch 32"`).
# TRAIN_ARGS are given to every run (`--image-size 64 --device cuda`); PY is the interpreter;
# LOGS is where each run's log goes (default OUT_DIR), as train-NAME.log.
set -euo pipefail
minutes=$1; out=$2; shift 2
PY=${PY:-.venv/bin/python}
LOGS=${LOGS:-$out}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$out" "$LOGS"
for run in "$@"; do
  if [[ $run == *=* ]]; then name=${run%%=*}; rest=${run#*=}; else name=$run; rest=$run; fi
  read -r method extra <<< "$rest"
  # shellcheck disable=SC2086  # TRAIN_ARGS and extra are lists of arguments
  $PY bench/train_method.py --method "$method" --name "$name" --minutes "$minutes" --out "$out" \
    ${TRAIN_ARGS:-} $extra > "$LOGS/train-$name.log" 2>&1 &
done
wait
