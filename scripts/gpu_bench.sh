#!/usr/bin/env bash
# The performance benchmark on one GPU, in order of importance: float32 against
# Flax's stock stack and PyTorch's cuDNN LSTM, bf16 against PyTorch, 8 seeds in
# one vmapped step, and a profile of our float32 step. One configuration per
# scripts/bench.py invocation; one failure does not stop the rest. Writes under
# $OUT: log.txt (everything printed), bench.json and profile.json (bench.py --json).
#
#   PYTHON   a Python with jax, flax and optax (and torch, else no PyTorch baseline)
#   OUT      the output folder (default results/gpu_bench); DEVICE gpu (default) or cpu
#   BUDGET   seconds (default 360, 120 with QUICK=1): an invocation starts only while
#            time is left and may take at most what is left; the rest are listed as skipped
#   QUICK=1  one small configuration and short windows: a check of the script
#
#   bash scripts/gpu_bench.sh
#   DEVICE=cpu QUICK=1 bash scripts/gpu_bench.sh      # the same script on a CPU, about 2 min
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3} OUT=${OUT:-results/gpu_bench} DEVICE=${DEVICE:-gpu}
if [ "${QUICK:-0}" = 1 ]; then
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
bench() { # bench FILE TAG "CONFIGS" ARGS...: one bench.py invocation per configuration
  local file=$1 tag=$2 configs=$3 config t
  shift 3
  for config in $configs; do
    t=$((DEADLINE - $(date +%s)))
    if [ "$t" -le 0 ]; then
      SKIPPED+=("$tag/$config")
      continue
    fi
    echo "### $tag, $config: bench.py $* (at most $t s per measurement)"
    "$PYTHON" scripts/bench.py "$@" --device "$DEVICE" --configs "$config" --timeout "$t" \
      --tag "$tag" --json "$OUT/$file" || echo "### $tag, $config: exit $?"
  done
}

{
  bench bench.json fp32 "$ALL" $TIMING
  bench bench.json bf16 "$LM" --dtype bfloat16 --impls ours torch $TIMING
  bench bench.json seeds seed_clf --impls ours --seeds 8 $TIMING
  bench profile.json profile "$ALL" profile --steps 5 --warmup 2
  if [ ${#SKIPPED[@]} -gt 0 ]; then
    echo "skipped (BUDGET of $BUDGET s spent): ${SKIPPED[*]}"
  fi
} 2>&1 | tee -a "$LOG"
