"""The main job on one CPU device against one device per core, in one invocation.

Runs ``experiments/overfit.py`` (the over-fitting grid, by default GunPoint's
85 runs) with ``--cpu-devices 1`` and with its default (one device per
usable core), alternating for ``--rounds`` rounds, each in a fresh process
and a fresh output folder; prints each layout's median wall time, the ratio,
and whether the two layouts wrote the same table, byte for byte.

  python scripts/bench_cores.py                 # the full grid: about 45 minutes on 2 cores
  python scripts/bench_cores.py --epochs 40     # the same grid, fewer epochs
  python scripts/bench_cores.py -- --quick      # anything after -- goes to overfit.py
  python scripts/bench_cores.py --one-device-runs-at-once 85   # against all runs vmapped
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lstmdrop_jax import tables
from lstmdrop_jax.parallel import usable_cores

OVERFIT = Path(__file__).resolve().parents[1] / "experiments" / "overfit.py"


def run_once(layout: list[str], out: Path, extra: list[str]) -> float:
  """Seconds of one ``overfit.py`` run with the ``layout`` flags (none: its default)."""
  cmd = [sys.executable, str(OVERFIT), "--out", str(out), *extra, *layout]
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True)
  seconds = time.perf_counter() - t0
  if proc.returncode:
    raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
  return seconds


def main(argv=None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  extra = argv[argv.index("--") + 1 :] if "--" in argv else []
  argv = argv[: argv.index("--")] if "--" in argv else argv
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of both layouts")
  parser.add_argument("--epochs", type=int, help="overfit.py's --epochs (default: its own)")
  parser.add_argument(
    "--one-device-runs-at-once",
    type=int,
    help="the one-device layout's --runs-at-once (85: all of GunPoint's runs vmapped, as every "
    "device trained a group before the CPU's loop over runs; default: its own, one at a time)",
  )
  args = parser.parse_args(argv)
  if args.rounds < 1:
    parser.error("--rounds must be >= 1")
  if args.one_device_runs_at_once is not None and args.one_device_runs_at_once < 1:
    parser.error("--one-device-runs-at-once must be >= 1")
  extra += ["--epochs", str(args.epochs)] if args.epochs else []
  cores = usable_cores()
  one, at_once = ["--cpu-devices", "1"], args.one_device_runs_at_once
  one_name = "1 device" + (f", {at_once} runs at once" if at_once else "")
  one += ["--runs-at-once", str(at_once)] if at_once else []
  layouts = {one_name: one, f"{cores} devices (default)": []}
  times: dict[str, list[float]] = {name: [] for name in layouts}
  with tempfile.TemporaryDirectory(prefix="bench_cores_") as tmp:
    for r in range(args.rounds):
      for i, (name, layout) in enumerate(layouts.items()):
        times[name].append(run_once(layout, Path(tmp) / f"{r}_{i}", extra))
        print(f"round {r + 1}, {name}: {times[name][-1] / 60:.1f} min", flush=True)
    csvs = {(Path(tmp) / f"0_{i}" / "overfit.csv").read_text() for i in range(len(layouts))}
  base = statistics.median(times[one_name])
  rows = [
    [name, f"{statistics.median(t) / 60:.2f}", f"{base / statistics.median(t):.2f}x"]
    for name, t in times.items()
  ]
  caption = (
    f"python experiments/overfit.py {' '.join(extra)}: median wall time of {args.rounds} "
    f"round(s); tables identical across layouts: {'yes' if len(csvs) == 1 else 'NO'}"
  )
  print(tables.markdown(["layout", "minutes", "speed-up"], rows, caption), end="")


if __name__ == "__main__":
  main()
