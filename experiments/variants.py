"""Every dropout placement and variant alone, against no dropout, on data large enough to
separate them.

For each dataset, every placement of the registry that a classifier has
(input, between, output, recurrent, weight, zoneout_h, zoneout_c, semeniuta,
rnndrop) is trained alone at each rate, next to no dropout, over the same
seeds; the runs share one model shape, so they train in one vmapped step.
Then the best combination found is trained over the same seeds: each
placement at its best rate by mean best validation accuracy, keeping those
that beat no dropout on validation (at most ``--combine`` of them, the best
first). Selection uses validation only; test accuracy is read at the best
validation checkpoint.

The tables (``variants.md``/``.csv``/``.tex``) give every setting's mean ±
std over seeds and the paired difference of its test accuracy against no
dropout, seed by seed, with a 95% t-interval; ``variants.png`` plots those
differences. Run folders go to ``OUT/<dataset>/runs/`` (re-running resumes
and skips finished runs).

Command::

  python experiments/variants.py            # synthetic_large and JapaneseVowels, 5 seeds
  python experiments/variants.py --quick    # a few minutes on a CPU

Datasets: ``synthetic_large`` (the synthetic task with 300 training, 300
validation and 1,000 clean test series; 10% of the training and validation
labels flipped) and JapaneseVowels (9 speakers, variable length 7-29, 189
training and 81 validation series from the official 270, and the 370 official
test series).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import tyro

from lstmdrop_jax import plots, report, tables
from lstmdrop_jax.config import Config
from lstmdrop_jax.dropout import REGISTRY
from lstmdrop_jax.parallel import setup_cpu_devices
from lstmdrop_jax.platform import keep_freed_host_memory
from lstmdrop_jax.run_folder import RunFolderError
from lstmdrop_jax.sweep import Sweep, train_points

#: The placements a classifier has, in registry order.
CLASSIFIER_PLACEMENTS = tuple(p.name for p in REGISTRY if not p.lm_only)
#: Share of each dataset's official train split held out for validation.
VAL_FRACTION = {"synthetic_large": 0.5}
COMBINATION = "combination"


@dataclasses.dataclass(frozen=True)
class Args:
  """Every dropout placement and variant alone, and the best combination, over seeds."""

  datasets: tuple[str, ...] = ("synthetic_large", "JapaneseVowels")
  seeds: int = 5
  rates: tuple[float, ...] = (0.1, 0.25, 0.5)
  placements: tuple[str, ...] = CLASSIFIER_PLACEMENTS
  combine: int = 3
  """Most placements in the combination (0: no combination stage)."""
  hidden: int = 64
  layers: int = 2
  epochs: int = 60
  batch_size: int = 32
  learning_rate: float = 2e-3
  eval_every: int = 5
  group_size: int = 0
  """Runs trained together in one compiled step (0: every run of a dataset)."""
  cpu_devices: int | None = None
  """CPU: present the CPU as this many JAX devices (default: one per usable core, or
  $LSTMDROP_CPU_DEVICES; 1 switches it off)."""
  quick: bool = False
  """A CPU-sized version: 2 seeds, rate 0.25, 32 units, 15 epochs."""
  out: Path | None = None
  """Output folder (default results/variants[_quick])."""

  def resolved(self) -> Args:
    if not self.quick:
      return self
    return dataclasses.replace(self, seeds=2, rates=(0.25,), hidden=32, epochs=15)


def base_config(args: Args, dataset: str) -> Config:
  return Config(
    dataset=dataset,
    val_fraction=VAL_FRACTION.get(dataset, 0.3),
    hidden=args.hidden,
    layers=args.layers,
    epochs=args.epochs,
    batch_size=args.batch_size,
    learning_rate=args.learning_rate,
    eval_every=args.eval_every,
    checkpoint_every=50,
  )


def single_points(args: Args, dataset: str) -> list[tuple[str, Config]]:
  """No dropout and each placement alone at each rate, every seed."""
  settings = ("none", *args.placements)
  return Sweep(base_config(args, dataset), settings, args.rates, args.seeds).points()


def best_combination(rows: list[dict], most: int) -> dict[str, float]:
  """``{placement: rate}``: each placement at its best rate by mean best validation
  accuracy, kept if that beats no dropout's, the ``most`` best of them."""
  (none,) = (r for r in rows if r["setting"] == "none")
  best: dict[str, tuple[float, float]] = {}
  for r in rows:
    if r["setting"] in CLASSIFIER_PLACEMENTS:
      val = r["val_acc_best"]["mean"]
      if val > best.get(r["setting"], (-1.0, 0.0))[0]:
        best[r["setting"]] = (val, r["rate"])
  gains = sorted(
    ((v - none["val_acc_best"]["mean"], p, rate) for p, (v, rate) in best.items()), reverse=True
  )
  return {p: rate for gain, p, rate in gains[:most] if gain > 0}


def combination_points(args: Args, dataset: str, rates: dict[str, float]):
  base = base_config(args, dataset)
  drop = base.dropout.replace(**rates)
  return [
    (f"{COMBINATION}/seed_{s}", dataclasses.replace(base, dropout=drop, seed=s))
    for s in range(args.seeds)
  ]


def _label(row: dict) -> str:
  if row["setting"].startswith("custom: "):
    return "combination: " + row["setting"][len("custom: ") :]
  return row["setting"] if row["setting"] == "none" else f"{row['setting']} {row['rate']:g}"


def study_rows(runs_dir: Path) -> list[dict]:
  """The report's rows of one dataset, each with ``delta_test``: its paired test
  accuracy difference against no dropout."""
  rows = report.report_rows(report.load_runs(runs_dir))
  nones = [r for r in rows if r["setting"] == "none"]
  if len(nones) != 1:
    raise ValueError(f"{runs_dir}: expected one finished no-dropout setting, found {len(nones)}")
  for r in rows:
    r["delta_test"] = report.paired_difference(r, nones[0], "test_acc")
  return rows


def write_study(per_dataset: dict[str, list[dict]], out: Path, title: str) -> dict[str, Path]:
  ci = lambda m: f"{m['mean']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}]" if m["n"] > 1 else "n/a"
  metrics = ("train_acc", "val_acc_best", "test_acc", "val_acc_final", "gap")
  labels = {n: label for n, _, label in report.METRICS}
  header = ["dataset", "setting", "seeds", *(labels[n] for n in metrics)]
  header.append("Δ test acc vs none (95% CI)")
  rows, csv_rows = [], []
  for dataset, drows in per_dataset.items():
    for r in drows:
      label = _label(r)
      rows.append([dataset, label, str(r["seeds"]), *(report.mean_std(r[n]) for n in metrics)])
      rows[-1].append("(baseline)" if r["setting"] == "none" else ci(r["delta_test"]))
      csv_rows.append(
        [dataset, label, r["seeds"]]
        + [f"{r[n][s]:.6g}" for n in (*metrics, "delta_test") for s in ("mean", "lo", "hi")]
      )
  csv_header = ["dataset", "setting", "seeds"] + [
    f"{n}_{s}" for n in (*metrics, "delta_test") for s in ("mean", "ci_lo", "ci_hi")
  ]
  paths = tables.write_tables(
    out, "variants", header, rows, caption=title, csv_header=csv_header, csv_rows=csv_rows
  )
  short = lambda r: "combination" if r["setting"].startswith("custom") else _label(r)
  panels = {
    dataset: [(short(r), r["delta_test"]) for r in drows if r["setting"] != "none"]
    for dataset, drows in per_dataset.items()
  }
  paths["plot"] = plots.plot_differences(
    panels, out / "variants.png", "test accuracy - no dropout's (paired by seed)", title
  )
  return paths


def run(args: Args, out: Path) -> dict[str, Path]:
  """Trains both stages of every dataset, then writes the tables and the plot."""
  for dataset in args.datasets:  # every stage-1 point is checked before anything trains
    for _, c in single_points(args, dataset):
      c.validate()
  per_dataset = {}
  for dataset in args.datasets:
    runs_dir = out / dataset / "runs"
    train_points(single_points(args, dataset), runs_dir, group_size=args.group_size)
    rows = [r for r in study_rows(runs_dir) if not r["setting"].startswith("custom")]
    rates = best_combination(rows, args.combine) if args.combine else {}
    if len(rates) >= 2:  # one placement alone is already in the table
      train_points(combination_points(args, dataset, rates), runs_dir)
      print(f"{dataset}: combination {rates}")
    else:
      print(f"{dataset}: no combination trained (placements beating none: {rates or 'none'})")
    per_dataset[dataset] = study_rows(runs_dir)
  title = (
    f"{args.layers}x{args.hidden} LSTM, {args.epochs} epochs, {args.seeds} seeds; test accuracy "
    "at the best validation checkpoint"
  )
  return write_study(per_dataset, out, title)


def main(argv=None) -> None:
  args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0]).resolved()
  keep_freed_host_memory()
  out = args.out or Path("results") / f"variants{'_quick' if args.quick else ''}"
  t0 = time.perf_counter()
  try:
    unknown = sorted(set(args.placements) - set(CLASSIFIER_PLACEMENTS))
    if unknown:
      raise ValueError(
        f"--placements: {unknown} are not placements of a classifier; valid ones are "
        f"{list(CLASSIFIER_PLACEMENTS)}"
      )
    setup_cpu_devices(args.cpu_devices)
    paths = run(args, out)
  except (ValueError, OSError, RunFolderError) as e:
    raise SystemExit(f"error: {e}") from None
  print(paths["md"].read_text())
  minutes = (time.perf_counter() - t0) / 60
  print(f"{minutes:.1f} min; wrote", *map(str, paths.values()))


if __name__ == "__main__":
  main()
