#!/usr/bin/env bash
# The performance benchmark on one GPU: float32 and bf16 against Flax's stock
# stack and PyTorch's cuDNN LSTM, 8 seeds in one vmapped step, a profile of
# our step, then unroll sweeps, the autodiff recurrence (ours-scan) and bf16
# variants. Measurements run in this order of importance, one configuration
# per scripts/bench.py invocation, and one failure does not stop the rest.
# Writes under $OUT: log.txt (everything printed, every table, the summary
# table last), bench.json (every invocation, bench.py --json) and
# profile.json (the kernels of our float32 step, bench.py profile --json).
#
# Variables:
#   PYTHON   the Python that has jax, flax and optax (and torch for the PyTorch
#            baseline, skipped without it); default python3
#   OUT      the output folder; default results/gpu_bench
#   DEVICE   gpu (default) or cpu
#   BUDGET   seconds; an invocation starts only while time is left, each of its
#            measurements may take at most the time left, and the invocations
#            that would start after it are skipped and listed; default 360
#            (120 with QUICK=1)
#   QUICK=1  one small configuration and short timing windows: a check of the
#            script, not a measurement
#
#   bash scripts/gpu_bench.sh
#   PYTHON=.venv/bin/python BUDGET=600 bash scripts/gpu_bench.sh
#   DEVICE=cpu QUICK=1 bash scripts/gpu_bench.sh      # the same script on a CPU, about 2 min
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-results/gpu_bench}
DEVICE=${DEVICE:-gpu}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  ALL="seed_clf" LM="seed_clf" TIMING="--warmup 1 --steps 2 --repeats 2" BUDGET=${BUDGET:-120}
else
  ALL="seed_clf zaremba_medium zaremba_large wide_clf" LM="zaremba_medium zaremba_large wide_clf"
  TIMING="" BUDGET=${BUDGET:-360}
fi
DEADLINE=$(($(date +%s) + BUDGET))
if ! "$PYTHON" -c "import jax" 2>/dev/null; then
  echo "error: PYTHON=$PYTHON cannot import jax; set PYTHON to a Python that can" >&2
  exit 2
fi
mkdir -p "$OUT"
rm -f "$OUT/bench.json" "$OUT/profile.json" # bench.py --json appends: start this run afresh
LOG=$OUT/log.txt
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# Repeated compilations (ours at one seed in the seeds run) come from disk.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/lstmdrop_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
{
  date -u
  nvidia-smi || true
  "$PYTHON" -c 'import sys, jax, flax, optax; print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())' 2>/dev/null ||
    echo "torch is not importable: no PyTorch baseline"
} >"$LOG" 2>&1
cat "$LOG"

SKIPPED=()
left() { echo $((DEADLINE - $(date +%s))); }

bench() { # bench TAG "CONFIGS" ARGS...: one bench.py invocation per configuration, in bench.json
  local tag=$1 configs=$2 config t
  shift 2
  for config in $configs; do
    t=$(left)
    if [ "$t" -le 0 ]; then
      SKIPPED+=("$tag/$config")
      continue
    fi
    echo "### $tag, $config: bench.py${*:+ $*} (at most $t s per measurement)"
    "$PYTHON" scripts/bench.py --device "$DEVICE" --configs "$config" "$@" $TIMING \
      --timeout "$t" --tag "$tag" --json "$OUT/bench.json" || echo "### $tag, $config: exit $?"
  done
}

profile() { # where the time goes in our float32 step, one configuration per invocation
  local config t
  for config in $ALL; do
    t=$(left)
    if [ "$t" -le 0 ]; then
      SKIPPED+=("profile/$config")
      continue
    fi
    echo "### profile, $config: bench.py profile --steps 5 --warmup 2 (at most $t s)"
    "$PYTHON" scripts/bench.py profile --device "$DEVICE" --configs "$config" --steps 5 \
      --warmup 2 --timeout "$t" --tag profile --json "$OUT/profile.json" ||
      echo "### profile, $config: exit $?"
  done
}

{
  bench fp32 "$ALL"
  bench bf16 "$LM" --dtype bfloat16 --impls ours torch
  bench seeds seed_clf --impls ours --seeds 8
  profile
  for u in 1 4 16; do bench "fp32_unroll$u" "$ALL" --impls ours --unroll $u; done
  bench fp32_scan "$ALL" --impls ours-scan
  bench bf16_unroll4 "$LM" --dtype bfloat16 --impls ours --unroll 4
  bench bf16_flax "$LM" --dtype bfloat16 --impls flax
  echo
  if [ ${#SKIPPED[@]} -gt 0 ]; then
    echo "skipped (BUDGET of $BUDGET s spent): ${SKIPPED[*]}"
  fi
  if [ -s "$OUT/bench.json" ]; then
    echo "### every measurement"
    "$PYTHON" scripts/bench.py --show "$OUT/bench.json"
  fi
} 2>&1 | tee -a "$LOG"
