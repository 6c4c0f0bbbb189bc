#!/usr/bin/env bash
# Zaremba et al. (2014) on PTB, medium configuration (and optionally large and
# the medium variants), on one GPU. Writes tables and logs under $OUT. Runs
# from the checkout without `pip install -e .` (it puts the checkout on
# PYTHONPATH).
#
# Variables:
#   PYTHON    the Python that has jax, flax and optax; default python3
#   PTB_DIR   the folder of ptb.{train,valid,test}.txt; default ../shared/data/ptb
#   OUT       the output folder; default results/gpu_ptb
#   CONFIGS   "medium" (default) or "medium large"
#   VARIANTS=1  also the medium variants
#   EPOCHS    overrides the configurations' epochs (e.g. to fit a time budget)
#   QUICK=1   a short run: a check of the pipeline, not a result
#
#   PTB_DIR=.ptb bash scripts/gpu_ptb.sh
#   QUICK=1 JAX_PLATFORMS=cpu bash scripts/gpu_ptb.sh     # the pipeline on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import jax" 2>/dev/null; then
  echo "error: PYTHON=$PYTHON cannot import jax; set PYTHON to a Python that can" >&2
  exit 2
fi
OUT=${OUT:-results/gpu_ptb}
PTB_DIR=${PTB_DIR:-../shared/data/ptb}
CONFIGS=${CONFIGS:-medium}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
"$PYTHON" - "$OUT" "$PTB_DIR" "$CONFIGS" "${VARIANTS:-0}" "${EPOCHS:-}" "${QUICK:-0}" <<'PY' 2>&1 | tee "$OUT/log.txt"
import sys, time
from pathlib import Path
import jax
from experiments.ptb_zaremba import run_study

out, data, configs, variants, epochs, quick = sys.argv[1:]
print("devices:", jax.devices(), flush=True)
for name in configs.split():
  t0 = time.perf_counter()
  path = run_study(name, variants_too=(variants == "1" and name == "medium"), data_dir=data,
                   out=Path(out), quick_run=quick == "1", epochs=int(epochs) if epochs else None)
  print(path.read_text(), f"({name}: {(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
PY
# Keep the outputs few and small: the tables, the log, and every run's
# summary in one file.
"$PYTHON" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("runs/*/summary.json"))}
(out / "summaries.json").write_text(json.dumps(runs, indent=2))
PY
rm -rf "$OUT/runs"
