#!/usr/bin/env bash
# The performance benchmark on one GPU: fp32 and bf16 against Flax's stock
# stack and PyTorch's cuDNN LSTM, and 8 seeds in one vmapped step.
# Writes JSON and Markdown tables under $OUT.
#
# On the lent GPU machine (no registry; its own jax, flax, optax, torch):
#   bash scripts/gpu_bench.sh
# CPU check of the script: DEVICE=cpu QUICK=1 bash scripts/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_bench}
DEVICE=${DEVICE:-gpu}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
if [ "${QUICK:-0}" = 1 ]; then
  CONFIGS="seed_clf"; BF16_CONFIGS="seed_clf"; TIMING="--warmup 1 --steps 2 --repeats 2"
else
  CONFIGS="seed_clf zaremba_medium zaremba_large wide_clf"
  BF16_CONFIGS="zaremba_medium zaremba_large wide_clf"; TIMING=""
fi
python scripts/bench.py --device "$DEVICE" --configs $CONFIGS $TIMING \
  --json "$OUT/bench_fp32.json" 2>&1 | tee "$OUT/bench_fp32.md"
python scripts/bench.py --device "$DEVICE" --configs $BF16_CONFIGS --dtype bfloat16 $TIMING \
  --json "$OUT/bench_bf16.json" 2>&1 | tee "$OUT/bench_bf16.md"
python scripts/bench.py --device "$DEVICE" --configs seed_clf --impls ours --seeds 8 $TIMING \
  --json "$OUT/bench_seeds.json" 2>&1 | tee "$OUT/bench_seeds.md"
