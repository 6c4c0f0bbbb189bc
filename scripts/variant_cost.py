"""What each dropout variant adds to a training step, measured in one process.

Every preset of ``bench_models.DROPOUT_PRESETS`` given is compiled once; the
timing windows then go round-robin over the presets, so drift in the
machine's speed hits them all alike (separate processes on a small CPU
differ by 10-20%, more than the costs measured here). Prints the median
milliseconds per step of each preset and its ratio to the first.

  python scripts/variant_cost.py --config seed_clf
  python scripts/variant_cost.py --config seed_clf --presets zaremba zoneout --windows 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import bench_models as models

from lstmdrop_jax import tables
from lstmdrop_jax.host_memory import keep_freed_host_memory

ALL = [
  "zaremba",
  "recurrent",
  "weight",
  "zoneout_h",
  "zoneout_c",
  "zoneout",
  "semeniuta",
  "semeniuta_locked",
  "rnndrop",
]


def measure(config: str, presets: list[str], windows: int, steps: int) -> dict[str, list[float]]:
  """Seconds per step of every window of every preset, windows interleaved."""
  import jax

  built = {p: models.jax_step(config, "ours", dropout=p) for p in presets}
  states = {p: s.state for p, s in built.items()}

  def window(p: str, n: int) -> float:
    s = built[p]
    t0 = time.perf_counter()
    for _ in range(n):
      states[p], _ = s.step(states[p], s.batch, s.key)
    jax.block_until_ready(states[p])
    return (time.perf_counter() - t0) / n

  for p in presets:  # compile and warm up
    window(p, 3)
  times = {p: [] for p in presets}
  for _ in range(windows):
    for p in presets:
      times[p].append(window(p, steps))
  return times


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="seed_clf", choices=list(models.CONFIGS))
  parser.add_argument("--presets", nargs="+", default=ALL, choices=list(models.DROPOUT_PRESETS))
  parser.add_argument("--windows", type=int, default=20, help="timed windows per preset")
  parser.add_argument("--steps", type=int, default=10, help="steps per window")
  args = parser.parse_args(argv)
  if args.windows < 1 or args.steps < 1:
    parser.error("--windows and --steps must be >= 1")
  keep_freed_host_memory()  # as the training command line
  times = measure(args.config, args.presets, args.windows, args.steps)
  base = statistics.median(times[args.presets[0]])
  rows = []
  for p in args.presets:
    ms = 1e3 * statistics.median(times[p])
    rows.append([p, f"{ms:.3f}", f"{statistics.median(times[p]) / base:.3f}x"])
  header = ["dropout preset", "ms per step (median)", f"vs {args.presets[0]}"]
  caption = (
    f"{args.config}: median of {args.windows} windows of {args.steps} steps each, the "
    "presets' windows interleaved in one process"
  )
  print(tables.markdown(header, rows, caption), end="")


if __name__ == "__main__":
  main()
