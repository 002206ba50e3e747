#!/usr/bin/env bash
# Every training-speed measurement of docs/training.md in one go, on one GPU (H100 or H200):
#
#     make install && bash bench/train_speed_gpu.sh [RESULTS_DIR]
#
# Each case prints the card, the exactness check (fast and fast-flex against the naive step, in bf16 and in fp32)
# and one JSON line per mode; its records go to RESULTS_DIR (default bench/results/<date>) as <case>.jsonl, its
# errors to <case>.err. A case that fails or runs out of time does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/$(date -u +%Y-%m-%d)}
mkdir -p "$out"
python=${PYTHON:-.venv/bin/python}

run() {
  local name=$1
  shift
  timeout "${CASE_TIMEOUT:-300}" "$python" -m bench.train_speed "$@" >"$out/$name.jsonl" 2>"$out/$name.err"
  echo "$name: exit $? ($(wc -l <"$out/$name.jsonl") records)"
}

# 3B at 8 pairs/step: the baseline, today's defaults, flex attention with and without compiled layers, packed rows
run 3b --size 3b --pairs 8 --modes naive fast fast-flex fast-vit-kept-compiled fast-vit-kept-flex-compiled \
  packed-vit-kept-flex-compiled
# the long-row case: 8 rows of about 8,300 tokens, dense mask against block mask (and packed: a row each)
run 3b-long --size 3b --pairs 8 --answer 3968 --steps 2 \
  --modes fast-vit-kept-compiled fast-vit-kept-flex-compiled packed-vit-kept-flex-compiled
# 7B with bf16 weights and AdamW state, to fit one GPU
run 7b --size 7b --pairs 4 --weights bf16 --steps 4 \
  --modes naive fast-vit-kept-compiled fast-vit-kept-flex-compiled packed-vit-kept-flex-compiled
