#!/usr/bin/env bash
# The prepared device check for the performance issue: one call of about 9 minutes on one GPU.
#
# Prepare once, on the development machine (the device machine has PyTorch but not pydantic, and
# reaches no network; ../shared does not travel):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 pydantic_core==2.50.5 \
#       annotated-types==0.8.0 typing-inspection==0.4.5
#   mkdir -p .omniglot && cp ../shared/data/omniglot/{images_background.npz,alphabets.json} .omniglot/
#   (.whl/ and .omniglot/ are listed in .git/info/exclude; artifacts/bench2/evaluator.pt is the
#   benchmark evaluator, trained without the held-out alphabets)
# Then, with the device tool:
#   run(command="bash bench/gpu_session.sh", timeout_s=590,
#       carry=[".whl", ".omniglot", "artifacts/bench2/evaluator.pt"])
# On a CPU, `SMOKE=1 PY=.venv/bin/python bash bench/gpu_session.sh` runs every step at toy sizes (about
# a minute): run it before spending device time.
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
  DEVICE=cpu; PRESET=tiny; TRAIN_PRESET=tiny; TASKS=2,4; SECONDS_EACH=1; TRAIN_MIN=0.1; CLASSES="--classes 4"; BATCH=4
else
  DEVICE=cuda; PRESET=figr; TRAIN_PRESET=small; TASKS=16,32,64; SECONDS_EACH=12; TRAIN_MIN=2.5; CLASSES=""; BATCH=32
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
fi

# 1. tasks/s: FIGR's one-task Reptile against vmapped Reptile (fp32, bf16) and condgan (~3.5 min)
timeout 260 $PY bench/meta_throughput.py --device $DEVICE --preset $PRESET --shots 4 --inner-steps 10 \
  --tasks $TASKS --bf16 --seconds $SECONDS_EACH --out "$OUT/meta_throughput.json" 2>&1 | tee "$OUT/meta_throughput.log"

# 2. time to quality: condgan (small preset) meta-trained on the GPU with the test and tune alphabets
#    held out, then the quality benchmark's test split at K = 5 (adaptation runs on the CPU cores)
WORK=artifacts/gpu-session
timeout 200 $PY bench/train_method.py --method condgan --preset $TRAIN_PRESET --minutes $TRAIN_MIN --meta-batch $BATCH --device $DEVICE \
  --out $WORK --name condgan-gpu 2>&1 | tee "$OUT/train.log"
mkdir -p $WORK/eval && cp artifacts/bench2/evaluator.pt $WORK/eval/evaluator.pt
timeout 150 $PY bench/quality.py --reuse --out $WORK/eval --methods "" --split val --shots 5 $CLASSES \
  --checkpoint condgan-gpu=$WORK/condgan-gpu.pt --report quality.json 2>&1 | tee "$OUT/quality.log"
cp $WORK/eval/quality.json "$OUT/quality.json" 2>/dev/null
ls -la "$OUT"
