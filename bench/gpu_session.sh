#!/usr/bin/env bash
# The prepared device check: one call of about 9 minutes on one GPU.
#
# Prepare once, on the development machine (the device machine has PyTorch but not pydantic, and
# reaches no network; ../shared does not travel):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 pydantic_core==2.50.5 \
#       annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
#   mkdir -p .omniglot && cp ../shared/data/omniglot/{images_background.npz,alphabets.json} .omniglot/
#   (.whl/ and .omniglot/ are listed in .git/info/exclude)
# Then, with the device tool:
#   run(command="bash bench/gpu_session.sh", timeout_s=590, carry=[".whl", ".omniglot"])
# On a CPU, `SMOKE=1 PY=.venv/bin/python bash bench/gpu_session.sh` runs every step at toy sizes (about
# two minutes): run it before spending device time.
#
# What it does:
# 1. meta-training throughput (tasks/s) of FIGR's Reptile, vmapped Reptile, condgan and warp (~80 s);
# 2. the benchmark models, trained side by side on the one GPU for TRAIN_MIN minutes each with the
#    test and tune alphabets held out (bench/train_method.py): warp (the production design) at 64 px
#    with two meta-batch sizes. Their checkpoints come back in $OUT and are scored on the CPU with
#    bench/quality.py (docs/BENCHMARKS.md), and can be trained on there from their checkpoints.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}

if ! $PY -c "import pydantic" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [[ -d .omniglot && ! -e ../shared/data/omniglot ]]; then  # params.yaml's data.source
  mkdir -p ../shared/data && ln -s "$PWD/.omniglot" ../shared/data/omniglot
fi

if [[ ${SMOKE:-0} == 1 ]]; then
  DEVICE=cpu; PRESET=tiny; TRAIN_PRESET=tiny; TASKS=2,4; SECONDS_EACH=1; TRAIN_MIN=0.2; BATCH=4; BIG_BATCH=8
  THROUGHPUT_S=120
else
  DEVICE=cuda; PRESET=small; TRAIN_PRESET=small; TASKS=8,32,64; SECONDS_EACH=6; TRAIN_MIN=${TRAIN_MIN:-6.3}; BATCH=8
  BIG_BATCH=32; THROUGHPUT_S=110
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
fi
WORK=artifacts/gpu-session
mkdir -p $WORK

# 1. tasks/s per method and tasks per step
timeout $THROUGHPUT_S $PY bench/meta_throughput.py --device $DEVICE --preset $PRESET --shots 5 --inner-steps 5 \
  --tasks $TASKS --seconds $SECONDS_EACH --out "$OUT/meta_throughput.json" > "$OUT/meta_throughput.log" 2>&1

# 2. the benchmark models, side by side (one Python process each; the GPU is far from full)
$PY -c "from metagan.config import load_params; from metagan.task_data import prepare_task_dataset; \
prepare_task_dataset(load_params().with_overrides(data={'packed_dir': '$PWD/$WORK/tasks-64', 'image_size': 64}))"  # pack once
PY=$PY LOGS=$OUT OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} \
  TRAIN_ARGS="--preset $TRAIN_PRESET --device $DEVICE --image-size 64 --log-every 1000" \
  bash bench/train_methods.sh $TRAIN_MIN $WORK "warp=warp --meta-batch $BATCH" "warp-b$BIG_BATCH=warp --meta-batch $BIG_BATCH"
for f in $WORK/*.pt; do cp "$f" "$OUT/"; done
# at most 8 files come back: the logs travel as one
for f in "$OUT"/nvidia-smi.txt "$OUT"/*.log; do [[ -e $f ]] && { echo "=== $(basename "$f")"; cat "$f"; rm "$f"; }; done \
  > "$OUT/session-log.txt"
tail -n 40 "$OUT/session-log.txt"
ls -la "$OUT"
