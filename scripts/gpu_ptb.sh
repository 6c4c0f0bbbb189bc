#!/usr/bin/env bash
# Zaremba et al. (2014) on PTB, medium configuration (and optionally large and
# the medium variants), on one GPU. Writes tables and logs under $OUT.
#
# On the lent GPU machine (no registry there, so no `pip install -e .`): the
# PTB files do not travel from ../shared, so copy them into an ignored folder
# of the checkout first and carry it:
#   here:   mkdir -p .ptb && cp ../shared/data/ptb/ptb.*.txt .ptb/ && echo /.ptb/ >> .git/info/exclude
#   there:  PTB_DIR=.ptb bash scripts/gpu_ptb.sh            (carry: [".ptb"])
# Variables: PTB_DIR (data), OUT (outputs), CONFIGS ("medium" or "medium large"),
# VARIANTS=1 (medium variants), EPOCHS (override, e.g. to fit a time budget).
# CPU check of the pipeline: QUICK=1 JAX_PLATFORMS=cpu bash scripts/gpu_ptb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/find_python.sh
OUT=${OUT:-results/gpu_ptb}
PTB_DIR=${PTB_DIR:-../shared/data/ptb}
CONFIGS=${CONFIGS:-medium}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
"$PYBIN" - "$OUT" "$PTB_DIR" "$CONFIGS" "${VARIANTS:-0}" "${EPOCHS:-}" "${QUICK:-0}" <<'PY' 2>&1 | tee "$OUT/log.txt"
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
# Keep what comes back few and small (the device returns at most 8 files):
# the tables, the log, and every run's summary in one file.
"$PYBIN" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("runs/*/summary.json"))}
(out / "summaries.json").write_text(json.dumps(runs, indent=2))
PY
rm -rf "$OUT/runs"
