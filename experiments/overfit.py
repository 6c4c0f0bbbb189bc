"""The over-fitting comparison of the motivating text: does dropout close the gap?

An LSTM large enough to memorise a small time-series training set is trained
with dropout at each placement (none, input, between, output, all three) and
rate, over several seeds; each (setting, seed) writes a run folder, and the
study writes tables (Markdown, CSV, LaTeX: mean ± std and a 95% interval
over seeds) and plots (train/validation curves per placement, gap vs rate).
The runs of the grid share one model shape, so they train K at a time in one
jitted step (``--group-size``), compiled once for every rate; on a CPU each
device loops over its share of them one at a time (``--runs-at-once``).

Command (the main job; GunPoint is the default dataset)::

  python experiments/overfit.py                       # GunPoint, 5 seeds
  python experiments/overfit.py --dataset synthetic
  python experiments/overfit.py --quick               # a few minutes on a CPU

Outputs go to ``results/overfit_<dataset>/`` (``runs/`` holds the run
folders; re-running resumes and skips finished runs).

Wall times and results: ``python experiments/reproduce.py --list`` and docs/overfit.md.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import tyro

from lstmdrop_jax.parallel import setup_cpu_devices
from lstmdrop_jax.platform import keep_freed_host_memory
from lstmdrop_jax.report import SETTINGS
from lstmdrop_jax.run_folder import RunFolderError
from lstmdrop_jax.sweep import Sweep, run_sweep
from lstmdrop_jax.train import Config


@dataclasses.dataclass(frozen=True)
class Args:
  """The over-fitting comparison: placements x rates x seeds."""

  dataset: str = "GunPoint"
  """Dataset (see python -m lstmdrop_jax.train --help)."""
  seeds: int = 5
  """Seeds per setting (each seed: initialisation, train/val split, order, masks)."""
  rates: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
  placements: tuple[str, ...] = SETTINGS
  """Settings: none, one placement alone, or all three at one rate."""
  hidden: int = 64
  layers: int = 2
  epochs: int = 200
  batch_size: int = 16
  learning_rate: float = 2e-3
  eval_every: int = 5
  group_size: int = 0
  """Runs trained together in one compiled step (0: the whole grid)."""
  parallel: str = "auto"
  """How devices share a group: 'data' (split batches), 'runs' (whole runs per device), or
  'auto' (runs when a group has at least as many runs as devices, on a CPU)."""
  runs_at_once: int | None = None
  """Runs of a device one pass of the step computes together, vmapped; it loops over the
  rest (default: 1 on a CPU, all on an accelerator)."""
  cpu_devices: int | None = None
  """CPU: present the CPU as this many JAX devices (default: one per usable core, or
  $LSTMDROP_CPU_DEVICES; 1 switches it off)."""
  quick: bool = False
  """A CPU-sized version: 2 seeds, rates 0.2 and 0.5, 32 units, 60 epochs."""
  out: Path | None = None
  """Output folder (default results/overfit_<dataset>[_quick])."""

  def resolved(self) -> Args:
    if not self.quick:
      return self
    return dataclasses.replace(self, seeds=2, rates=(0.2, 0.5), hidden=32, epochs=60, eval_every=5)


def sweep(args: Args) -> Sweep:
  """The grid: every setting at every rate (``none`` once), every seed."""
  base = Config(
    dataset=args.dataset,
    hidden=args.hidden,
    layers=args.layers,
    epochs=args.epochs,
    batch_size=args.batch_size,
    learning_rate=args.learning_rate,
    eval_every=args.eval_every,
    checkpoint_every=50,
  )
  return Sweep(base, settings=args.placements, rates=args.rates, seeds=args.seeds)


def grid(args: Args) -> list[tuple[str, Config]]:
  """``(run name, config)`` for every placement, rate and seed."""
  return sweep(args).points()


def main(argv=None) -> None:
  args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0]).resolved()
  keep_freed_host_memory()
  out = args.out or Path("results") / f"overfit_{args.dataset}{'_quick' if args.quick else ''}"
  title = (
    f"{args.dataset}: {args.layers}x{args.hidden} LSTM, {args.epochs} epochs, {args.seeds} seeds"
  )
  t0 = time.perf_counter()
  # Every bad value, and every group the devices cannot split, is reported
  # before anything is trained or written.
  try:
    setup_cpu_devices(args.cpu_devices)
    study = sweep(args)
    paths = run_sweep(
      study,
      out,
      group_size=args.group_size,
      parallel=args.parallel,
      runs_at_once=args.runs_at_once,
      title=title,
      name="overfit",
    )
  except (ValueError, OSError, RunFolderError) as e:
    raise SystemExit(f"error: {e}") from None
  minutes = (time.perf_counter() - t0) / 60
  print(paths["md"].read_text())
  print(f"{len(study.points())} runs in {minutes:.1f} min; wrote", *map(str, paths.values()))


if __name__ == "__main__":
  main()
