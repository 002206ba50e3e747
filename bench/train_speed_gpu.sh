#!/usr/bin/env bash
# Every training-speed measurement of docs/training.md in one go, on one GPU (H100 or H200):
#
#     bash bench/train_speed_gpu.sh [RESULTS_DIR]
#
# It needs torch, transformers, pillow, pyarrow and pyyaml (a GPU image's Python has them; the project itself need
# not be installed: the repository root goes on PYTHONPATH). The Python is $PYTHON, else .venv/bin/python where it
# exists, else python3. TINY=1 runs every case on the tiny model (a check of the script on any machine).
#
# Each case prints the card, the exactness check (fast, fast-flex and packed-flex against the naive step, in bf16
# and in fp32) and one JSON line per mode into RESULTS_DIR (default bench/results/<date>) as <case>.jsonl; its
# errors and any profiles go to <case>.err. A case that fails or runs past its time limit does not
# stop the others; the limits add up to 9 minutes, so one 10-minute call runs all of them.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/$(date -u +%Y-%m-%d)}
mkdir -p "$out"
if [[ -n "${PYTHON:-}" ]]; then
  python=$PYTHON
elif [[ -x .venv/bin/python ]]; then
  python=.venv/bin/python
else
  python=python3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
tiny=()
[[ "${TINY:-0}" == 1 ]] && tiny=(--size tiny --pairs 2 --image 56 --answer 32 --steps 1)

run() {
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$python" -m bench.train_speed "$@" ${tiny[@]+"${tiny[@]}"} >"$out/$name.jsonl" 2>"$out/$name.err"
  echo "$name: exit $? ($(wc -l <"$out/$name.jsonl") records)"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} >"$out/machine.txt" 2>&1

# 3B at 8 pairs/step: today's defaults and flex attention and packed rows (both profiled), the naive baseline,
# then nothing recomputed (what recomputation costs; may not fit an 80 GB card)
run 3b 240 --size 3b --pairs 8 --modes fast-vit-kept-compiled fast-vit-kept-flex-compiled \
  packed-vit-kept-flex-compiled naive fast-vit-kept-compiled-no-checkpointing \
  --profile fast-vit-kept-compiled packed-vit-kept-flex-compiled
# answers of different lengths (0.25x to 1.75x the mean), as a real mixture has: padded rows against packed ones
run 3b-spread 80 --size 3b --pairs 8 --spread 0.75 --modes fast-vit-kept-compiled packed-vit-kept-flex-compiled
# the long-row case: 8 rows of about 8,300 tokens, dense mask against block mask (and packed: a row each)
run 3b-long 110 --size 3b --pairs 8 --answer 3968 --steps 2 \
  --modes fast-vit-kept-compiled fast-vit-kept-flex-compiled packed-vit-kept-flex-compiled
# 7B with bf16 weights and AdamW state, to fit one GPU
run 7b 110 --size 7b --pairs 4 --weights bf16 --steps 2 \
  --modes fast-vit-kept-compiled fast-vit-kept-flex-compiled packed-vit-kept-flex-compiled
