#!/usr/bin/env bash
# The performance benchmark on one GPU, sized for a device lease: fp32 and
# bf16 against Flax's stock stack and PyTorch's cuDNN LSTM, 8 seeds in one
# vmapped step, then unroll sweeps and the autodiff recurrence (ours-scan)
# while the time budget lasts. Measurements run in order of importance; none
# starts after BUDGET seconds (those left are listed as skipped), and one
# failure does not stop the rest. Writes under $OUT: log.txt (everything
# printed, with every table), bench.json (every invocation's results) and
# profile.json (the kernels of our fp32 step, scripts/profile_step.py).
#
# On the lent GPU machine (no registry; its own jax, flax, optax, torch):
#   bash scripts/gpu_bench.sh                   (BUDGET=360 seconds by default)
# CPU check of the script: DEVICE=cpu QUICK=1 bash scripts/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/find_python.sh
OUT=${OUT:-results/gpu_bench}
DEVICE=${DEVICE:-gpu}
UNTIL=$(($(date +%s) + ${BUDGET:-360}))
mkdir -p "$OUT/parts"
LOG=$OUT/log.txt
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# Repeated compilations (ours at one seed in the seeds run) come from disk.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/lstmdrop_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
{
  date -u
  nvidia-smi || true
  "$PYBIN" -c 'import sys, jax, flax, optax; print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
  "$PYBIN" -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())' || true
} >"$LOG" 2>&1
cat "$LOG"

bench() { # bench NAME ARGS...: one bench.py invocation, its JSON under parts/
  local name=$1
  shift
  echo "### $name: bench.py $*"
  "$PYBIN" scripts/bench.py --device "$DEVICE" --until "$UNTIL" --grace 45 "$@" $TIMING \
    --json "$OUT/parts/$name.json" || echo "### $name: exit $?"
}

if [ "${QUICK:-0}" = 1 ]; then
  ALL="seed_clf" LM="seed_clf" TIMING="--warmup 1 --steps 2 --repeats 2"
else
  ALL="seed_clf zaremba_medium zaremba_large wide_clf" LM="zaremba_medium zaremba_large wide_clf" TIMING=""
fi
{
  bench fp32 --configs $ALL
  bench bf16 --configs $LM --dtype bfloat16 --impls ours torch
  bench seeds --configs seed_clf --impls ours --seeds 8
  if [ "$(date +%s)" -lt "$UNTIL" ]; then # where the time goes (compilations come from disk)
    echo "### profile: profile_step.py --configs $ALL"
    timeout $((UNTIL + 45 - $(date +%s))) \
      "$PYBIN" scripts/profile_step.py --configs $ALL --steps 5 --json "$OUT/parts/profile.json" ||
      echo "### profile: exit $?"
  fi
  for u in 1 4 16; do bench "fp32_unroll$u" --configs $ALL --impls ours --unroll $u; done
  bench fp32_scan --configs $ALL --impls ours-scan
  bench bf16_unroll4 --configs $LM --dtype bfloat16 --impls ours --unroll 4
  bench bf16_flax --configs $LM --dtype bfloat16 --impls flax
} 2>&1 | tee -a "$LOG"

# One JSON for every invocation, and a summary table last (what the device
# tool's reply shows).
"$PYBIN" - "$OUT" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
files = sorted((out / "parts").glob("*.json"), key=lambda p: p.stat().st_mtime)  # run order
files = [p for p in files if p.stem != "profile"]
prof = out / "parts" / "profile.json"
if prof.exists():
  prof.replace(out / "profile.json")
parts = {p.stem: json.loads(p.read_text()) for p in files}
(out / "bench.json").write_text(json.dumps(parts, indent=2))
print("\n| run | config | dtype | unroll | impl | ms/step |\n| --- | --- | --- | --- | --- | --- |")
for run, part in parts.items():
  for r in part["results"]:
    for impl, v in r.items():
      if isinstance(v, dict) and "ms" in v:
        print(f"| {run} | {r['config']} | {r['dtype']} | {r['unroll'] or 'default'} | {impl} | {v['ms']:.3f} |")
    for impl in r.get("skipped", []):
      print(f"| {run} | {r['config']} | {r['dtype']} | {r['unroll'] or 'default'} | {impl} | skipped |")
PY
# The parts are removed only once they are merged.
[ -s "$OUT/bench.json" ] && rm -rf "$OUT/parts"
