"""Where should dropout go in an LSTM classifier? Every placement compared across every
classification dataset the library loads offline, as the time-series field compares
classifiers: mean ranks over datasets and a critical-difference diagram.

Datasets: the eight UCR/UEA sets aeon 1.6 ships (ACSF1, ArrowHead, BasicMotions,
GunPoint, ItalyPowerDemand, JapaneseVowels, OSULeaf, PickupGestureWiimoteZ) and the
library's two synthetic sets (``synthetic``, ``synthetic_large``). Long series are
shortened by averaging windows of ``window`` steps (a variable-length series over its
valid steps only); the tables give the steps used against the original.

Settings (``SETTINGS``): none; input; between; output; all three of those at one rate;
recurrent (Gal & Ghahramani's mask on h_{t-1}); weight (DropConnect on W_hh); zoneout
(zoneout_h and zoneout_c both at the rate); semeniuta; rnndrop.

Protocol:

* Resamples. For a UCR/UEA set, resample 0 is the official train/test split and
  resample r > 0 a stratified redraw of train and test from their union with the
  official sizes and class counts (aeon's ``stratified_resample_data_indices`` with
  ``random_state=r``). The synthetic sets' generator is fixed by the library, so their
  resample r is only seed r. Every run of resample r has ``seed = r``: it picks the
  validation series held out of the train split (``val_fraction``, stratified), the
  initialisation, the data order and the dropout masks. The field's convention is 30
  resamples; the default is 5 (about half an hour on a 2-core CPU; 30 take about six
  times as long).
* Rates. Each setting's rate is chosen per dataset from ``--rates`` on validation only:
  the rate with the highest mean best-validation accuracy over the resamples (ties: the
  lower rate). Test accuracy is read at each run's best-validation checkpoint (by
  validation accuracy, ties broken by validation loss) and never used to choose.
* Model: the same for every dataset, a 2-layer, 32-unit LSTM with a dense head, Adam
  (learning rate 2e-3, gradients clipped to norm 5), batch 16, evaluated every epoch;
  ``BUDGETS`` gives each dataset's epochs and window.
* Comparison: each setting's score on a dataset is its mean test accuracy over the
  resamples; settings are ranked per dataset (1 = best, ties averaged) and the ranks
  averaged over datasets. aeon's ``plot_critical_difference`` runs the Friedman test
  and, if it rejects at ``ALPHA``, one-sided Wilcoxon signed-rank tests between
  settings against ``ALPHA / (settings - 1)`` (what aeon calls its Holm correction);
  settings joined by a bar are not told apart. Each setting is also compared with no
  dropout dataset by dataset, resample by resample (paired differences, 95%
  t-intervals).

Outputs in ``OUT`` (``--out``, default ``results/benchmark``): ``benchmark_accuracy``
(test accuracy mean ± std over resamples, with the chosen rate, a row per dataset),
``benchmark_rates`` (every rate's mean validation and test accuracy, the chosen one
marked), ``benchmark_ranks`` (mean rank and per-dataset ranks), ``benchmark_pvalues``
(the pairwise Wilcoxon p-values and the Friedman test), ``benchmark_vs_none`` (paired
differences against no dropout), each as ``.md`` and ``.csv``; ``benchmark_cd.png``;
``benchmark.json`` (wall time, commit, machine, each dataset's budget). Every run has
its own folder ``OUT/<dataset>/r<r>/<setting>_<rate>/``; re-running resumes unfinished
runs and skips finished ones. The runs of one (dataset, resample) share their data and
train as one compiled group; compiled programs are kept in ``OUT/jax_cache``, which
resamples of the same shapes reuse.

Command::

  python experiments/benchmark.py             # the full benchmark (about half an hour on 2 cores)
  python experiments/benchmark.py --quick     # 3 small sets, 2 resamples: ~2 minutes

The full run's wall time and machine are written to ``benchmark.json``; docs/benchmark.md
gives those of the documented run. Each dataset's wall time per group is in
``datasets.<name>.group_s``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from lstmdrop_jax import report, tables
from lstmdrop_jax import results as provenance
from lstmdrop_jax.config import Config
from lstmdrop_jax.data import ArrayData
from lstmdrop_jax.dropout import DropoutConfig
from lstmdrop_jax.parallel import setup_cpu_devices
from lstmdrop_jax.platform import keep_freed_host_memory
from lstmdrop_jax.run_folder import RunFolderError

#: Each setting's placements, all at the setting's rate.
SETTINGS: dict[str, tuple[str, ...]] = {
  "none": (),
  "input": ("input",),
  "between": ("between",),
  "output": ("output",),
  "all": ("input", "between", "output"),
  "recurrent": ("recurrent",),
  "weight": ("weight",),
  "zoneout": ("zoneout_h", "zoneout_c"),
  "semeniuta": ("semeniuta",),
  "rnndrop": ("rnndrop",),
}
#: Significance level of the Friedman test and of the pairwise tests (before correction).
ALPHA = 0.05
#: The library's generated sets (loaded by name; the rest come from aeon).
SYNTHETIC = ("synthetic", "synthetic_large")


@dataclasses.dataclass(frozen=True)
class Budget:
  """What one dataset gets.

  Attributes:
    epochs: training epochs of every run.
    window: steps averaged into one (1: the series as they are).
    val_fraction: share of the train split held out for validation.
  """

  epochs: int
  window: int = 1
  val_fraction: float = 0.3


#: Each dataset's budget (epochs, window), the same for every setting and resample.
BUDGETS: dict[str, Budget] = {
  "ACSF1": Budget(epochs=60, window=10),
  "ArrowHead": Budget(epochs=60, window=2),
  "BasicMotions": Budget(epochs=60),
  "GunPoint": Budget(epochs=60),
  "ItalyPowerDemand": Budget(epochs=60),
  "JapaneseVowels": Budget(epochs=60),
  "OSULeaf": Budget(epochs=60, window=4),
  "PickupGestureWiimoteZ": Budget(epochs=60, window=4),
  "synthetic": Budget(epochs=60),
  "synthetic_large": Budget(epochs=30, val_fraction=0.5),
}
DATASETS = tuple(BUDGETS)
QUICK_DATASETS = ("ItalyPowerDemand", "BasicMotions", "JapaneseVowels")


@dataclasses.dataclass(frozen=True)
class Args:
  """Dropout placements compared across datasets: mean ranks and a critical-difference
  diagram."""

  datasets: tuple[str, ...] = DATASETS
  settings: tuple[str, ...] = tuple(SETTINGS)
  """Dropout settings to compare ('none' is trained whatever is named)."""
  resamples: int = 5
  """Resamples 0 .. R-1 of every dataset (0: the official split)."""
  rates: tuple[float, ...] = (0.1, 0.3)
  """The grid each setting's rate is chosen from, per dataset, on validation."""
  epochs: int | None = None
  """Epochs of every dataset (default: each dataset's from the script's table)."""
  hidden: int = 32
  layers: int = 2
  cpu_devices: int | None = None
  """CPU: present the CPU as this many JAX devices (default: one per usable core, or
  $LSTMDROP_CPU_DEVICES; 1 switches it off)."""
  compilation_cache: bool = True
  """Keep compiled programs in OUT/jax_cache (or $JAX_COMPILATION_CACHE_DIR) for groups of
  the same shapes."""
  quick: bool = False
  """A few minutes on a CPU: 3 small datasets, 2 resamples, 5 epochs, a 2x16 model."""
  out: Path | None = None
  """Output folder (default results/benchmark, results/benchmark_quick with --quick)."""

  def resolved(self) -> Args:
    if not self.quick:
      return self
    return dataclasses.replace(
      self,
      datasets=QUICK_DATASETS if self.datasets == DATASETS else self.datasets,
      resamples=2,
      epochs=self.epochs or 5,
      hidden=16,
    )


def check_args(
  datasets: Sequence[str],
  settings: Sequence[str],
  rates: Sequence[float],
  resamples: int,
  epochs: int | None,
) -> None:
  """Raises ``ValueError`` naming the flag and what to do on the first bad value."""
  if not datasets:
    raise ValueError(f"--datasets: name at least one of {list(DATASETS)}")
  unknown = [d for d in datasets if d not in BUDGETS]
  if unknown:
    raise ValueError(
      f"--datasets: unknown dataset(s) {unknown}; choose from {list(DATASETS)} (the "
      "classification sets the library loads offline)"
    )
  if len(set(datasets)) != len(datasets):
    raise ValueError("--datasets: a dataset is named twice; name each once")
  unknown = [s for s in settings if s not in SETTINGS]
  if unknown:
    raise ValueError(f"--settings: unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
  if len({*settings, "none"}) < 3:
    raise ValueError("--settings: name at least two settings besides 'none' to rank three")
  if not rates:
    raise ValueError("--rates: give at least one rate in (0, 1)")
  bad = [r for r in rates if not 0.0 < r < 1.0]
  if bad:
    raise ValueError(f"--rates: {bad} outside (0, 1); a dropout rate must satisfy 0 < rate < 1")
  if len(set(rates)) != len(rates):
    raise ValueError("--rates: a rate is given twice; give each once")
  if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
    raise ValueError(f"--resamples must be an integer >= 1, got {resamples!r}")
  if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
    raise ValueError(f"--epochs must be an integer >= 1 (or unset), got {epochs!r}")


# Data.


@dataclasses.dataclass(frozen=True)
class Series:
  """Padded channels-last series ``x [N, T, C]``, labels ``y [N]`` (strings) and valid
  ``lengths [N]``."""

  x: np.ndarray
  y: np.ndarray
  lengths: np.ndarray

  def take(self, idx: np.ndarray) -> Series:
    return Series(self.x[idx], self.y[idx], self.lengths[idx])


@dataclasses.dataclass(frozen=True)
class Official:
  """A UCR/UEA set's official splits, already shortened, and its original length."""

  train: Series
  test: Series
  steps_original: int

  @property
  def steps_used(self) -> int:
    return self.train.x.shape[1]


def _padded(X) -> Series:
  """aeon's ``[N, C, T]`` array or list of ``[C, T_i]`` -> padded ``[N, T, C]``."""
  series = [np.asarray(s, np.float32).T for s in X]
  T = max(len(s) for s in series)
  x = np.zeros((len(series), T, series[0].shape[1]), np.float32)
  for i, s in enumerate(series):
    x[i, : len(s)] = s
  return Series(x, np.array([]), np.array([len(s) for s in series], np.int32))


def window_mean(s: Series, window: int) -> Series:
  """Each run of ``window`` valid steps averaged into one (a series keeps
  ``ceil(length / window)`` steps; its last window may be partial)."""
  if window == 1:
    return s
  N, T, C = s.x.shape
  T_out = -(-T // window)
  x = np.zeros((N, T_out * window, C), np.float32)
  x[:, :T] = s.x  # zero after each length, so sums count valid steps only
  sums = x.reshape(N, T_out, window, C).sum(axis=2)
  starts = np.arange(T_out) * window
  counts = np.clip(s.lengths[:, None] - starts[None, :], 0, window)
  mean = np.where(counts[..., None] > 0, sums / np.maximum(counts, 1)[..., None], 0.0)
  return Series(mean.astype(np.float32), s.y, (-(-s.lengths // window)).astype(np.int32))


def load_official(name: str, window: int) -> Official:
  """The official train and test splits of a set aeon ships, as aeon reads them offline."""
  from aeon.datasets import load_classification

  splits = {}
  for split in ("train", "test"):
    X, y = load_classification(name, split=split)
    padded = _padded(X)
    if not all(np.isfinite(s).all() for s in X):
      raise ValueError(f"{name} ({split} split) has missing values; this study does not impute")
    splits[split] = dataclasses.replace(padded, y=np.asarray([str(v) for v in y]))
  T = max(s.x.shape[1] for s in splits.values())
  for split, s in splits.items():  # one length for both splits
    x = np.zeros((len(s.x), T, s.x.shape[2]), np.float32)
    x[:, : s.x.shape[1]] = s.x
    splits[split] = window_mean(dataclasses.replace(s, x=x), window)
  return Official(splits["train"], splits["test"], T)


def resample(official: Official, r: int) -> tuple[Series, Series]:
  """Resample ``r``: 0 is the official split, r > 0 a stratified redraw of the union
  with the official sizes and class counts."""
  if r == 0:
    return official.train, official.test
  from aeon.benchmarking.resampling import stratified_resample_data_indices

  tr, te = official.train, official.test
  train_idx, test_idx = stratified_resample_data_indices(tr.y, te.y, random_state=r)
  union = Series(
    np.concatenate([tr.x, te.x]), np.concatenate([tr.y, te.y]),
    np.concatenate([tr.lengths, te.lengths]),
  )  # fmt: skip
  return union.take(train_idx), union.take(test_idx)


def array_data(train: Series, test: Series) -> ArrayData:
  # Lengths only where some series is shorter: equal-length sets train as they always do.
  ragged = bool((np.concatenate([train.lengths, test.lengths]) < train.x.shape[1]).any())
  return ArrayData(
    train.x, train.y, train.lengths if ragged else None,
    x_test=test.x, y_test=test.y, lengths_test=test.lengths if ragged else None,
  )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Prepared:
  """One dataset as the study uses it: how to build each resample's data."""

  name: str
  budget: Budget
  official: Official | None  # None: a synthetic set, loaded by name
  steps_original: int
  steps_used: int

  def data(self, r: int) -> ArrayData | None:
    if self.official is None:
      return None
    return array_data(*resample(self.official, r))


def prepare(name: str) -> Prepared:
  budget = BUDGETS[name]
  if name in SYNTHETIC:
    from lstmdrop_jax.data.synthetic import NAMED, generate_task

    T = generate_task(**{**NAMED[name], "n_test": 1}).pool_x.shape[1]
    return Prepared(name, budget, None, T, T)
  official = load_official(name, budget.window)
  return Prepared(name, budget, official, official.steps_original, official.steps_used)


# Runs.


def run_name(setting: str, rate: float) -> str:
  return f"{setting}_{rate:g}"


def grid(settings: Sequence[str], rates: Sequence[float]) -> list[tuple[str, float]]:
  """``(setting, rate)`` of every run of a group: none once, every other setting at
  every rate."""
  return [("none", 0.0)] + [(s, r) for s in settings if s != "none" for r in sorted(rates)]


def run_config(
  prepared: Prepared, setting: str, rate: float, r: int, *, epochs: int, hidden: int, layers: int
) -> Config:
  return Config(
    dataset=prepared.name,
    val_fraction=prepared.budget.val_fraction,
    hidden=hidden,
    layers=layers,
    dropout=DropoutConfig(**dict.fromkeys(SETTINGS[setting], rate)),
    learning_rate=2e-3,
    schedule="constant",
    batch_size=16,
    epochs=epochs,
    eval_every=1,
    checkpoint_every=max(10, epochs // 3),  # resumable, without a checkpoint per epoch
    seed=r,
  )


# Results.


def _round(x):
  # Means of the same accuracies summed in another order must tie.
  return np.round(np.asarray(x, float), 12)


def choose_rate(val_by_rate: dict[float, Sequence[float]]) -> float:
  """The rate with the highest mean best-validation accuracy (ties: the lower rate)."""
  means = {rate: float(_round(np.mean(v))) for rate, v in val_by_rate.items()}
  top = max(means.values())
  return min(rate for rate, m in means.items() if m == top)


def ranks_of(scores: np.ndarray) -> np.ndarray:
  """Per-dataset ranks of ``scores [datasets, settings]``: 1 = highest, ties averaged."""
  from scipy.stats import rankdata

  return rankdata(-_round(scores), axis=1)


def pairwise_pvalues(scores: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, float]:
  """The tests behind the diagram: the Friedman test's p-value, and ``p [settings,
  settings]``, symmetric, each pair's one-sided Wilcoxon signed-rank p-value that the
  setting of the better mean rank is more accurate (aeon's own test, in its order)."""
  import warnings

  from aeon.benchmarking.stats import check_friedman, wilcoxon_test

  scores = _round(scores)
  ranks = ranks_of(scores)
  order = np.argsort(ranks.mean(axis=0))  # aeon's order: best mean rank first
  with warnings.catch_warnings():  # settings that tie on every dataset get p = 1, as they should
    warnings.simplefilter("ignore")
    ordered = wilcoxon_test(scores[:, order], [labels[i] for i in order])
  p = np.eye(len(labels))
  for a in range(len(order)):
    for b in range(a + 1, len(order)):
      p[order[a], order[b]] = p[order[b], order[a]] = ordered[a, b]
  return p, float(check_friedman(ranks))


def _steps_text(p: Prepared) -> str:
  if p.steps_used == p.steps_original:
    return f"{p.steps_used} / {p.steps_original}"
  return f"{p.steps_used} / {p.steps_original} (mean of {p.budget.window})"


def _ci(m: dict) -> str:
  return f"{m['mean']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}]" if m["n"] > 1 else "n/a"


def write_outputs(
  out: Path,
  prepared: dict[str, Prepared],
  results: dict[tuple[str, int, str, float], dict[str, float]],
  *,
  settings: Sequence[str],
  rates: Sequence[float],
  resamples: int,
  epochs: dict[str, int],
  title: str,
) -> dict[str, Any]:
  """Chooses the rates, ranks the settings, writes every table and the diagram.

  Args:
    results: ``{(dataset, resample, setting, rate): {"val": best validation accuracy,
      "test": test accuracy at that checkpoint}}``.

  Returns:
    The JSON summary's results part (with ``paths``).
  """
  names = list(prepared)
  labels = ["none", *(s for s in settings if s != "none")]
  chosen: dict[str, dict[str, float]] = {d: {} for d in names}
  test: dict[tuple[str, str], np.ndarray] = {}  # per resample, at the chosen rate
  rate_rows, rate_csv = [], []
  for d in names:
    for s in labels:
      options = [0.0] if s == "none" else sorted(rates)
      val = {rate: [results[d, r, s, rate]["val"] for r in range(resamples)] for rate in options}
      chosen[d][s] = choose_rate(val)
      test[d, s] = np.array([results[d, r, s, chosen[d][s]]["test"] for r in range(resamples)])
      for rate in options:
        t = [results[d, r, s, rate]["test"] for r in range(resamples)]
        mark = "yes" if rate == chosen[d][s] else ""
        rate_rows.append(
          [d, s, f"{rate:g}", f"{np.mean(val[rate]):.4f}", f"{np.mean(t):.4f}", mark]
        )
        rate_csv.append(
          [d, s, rate, f"{np.mean(val[rate]):.6g}", f"{np.mean(t):.6g}", int(bool(mark))]
        )
  rule = (
    "Rate chosen per dataset and setting on validation only: the highest mean best-validation "
    "accuracy over resamples (ties: the lower rate); test accuracy at each run's best-validation "
    "checkpoint."
  )
  paths: dict[str, Any] = {}
  paths["rates"] = tables.write_tables(
    out, "benchmark_rates",
    ["dataset", "setting", "rate", "mean best val acc", "mean test acc", "chosen"], rate_rows,
    caption=f"{title}. {rule}",
    csv_header=["dataset", "setting", "rate", "val_acc_best_mean", "test_acc_mean", "chosen"],
    csv_rows=rate_csv, formats=("md", "csv"),
  )  # fmt: skip

  # (a) Test accuracy of every setting at its chosen rate.
  acc_rows, acc_csv = [], []
  for d in names:
    p = prepared[d]
    cells = []
    for s in labels:
      m, sd = test[d, s].mean(), test[d, s].std(ddof=1) if resamples > 1 else 0.0
      rate = "" if s == "none" else f" ({chosen[d][s]:g})"
      cells.append(f"{m:.3f} ± {sd:.3f}{rate}")
    acc_rows.append([d, _steps_text(p), str(epochs[d]), str(resamples), *cells])
    per_setting = [
      (f"{test[d, s].mean():.6g}", f"{test[d, s].std(ddof=1) if resamples > 1 else 0:.6g}",
       chosen[d][s])
      for s in labels
    ]  # fmt: skip
    acc_csv.append(
      [d, p.steps_used, p.steps_original, p.budget.window, epochs[d], resamples]
      + [v for cells_of_s in per_setting for v in cells_of_s]
    )
  paths["accuracy"] = tables.write_tables(
    out, "benchmark_accuracy", ["dataset", "steps used / original", "epochs", "resamples", *labels],
    acc_rows,
    caption=f"{title}. Test accuracy, mean ± std over resamples, each setting at its chosen rate "
    f"(in brackets). {rule}",
    csv_header=["dataset", "steps_used", "steps_original", "window", "epochs", "resamples"]
    + [f"{s}_{k}" for s in labels for k in ("test_mean", "test_std", "rate")],
    csv_rows=acc_csv, formats=("md", "csv"),
  )  # fmt: skip

  # (b) Ranks.
  scores = np.array([[test[d, s].mean() for s in labels] for d in names])
  ranks = ranks_of(scores)
  mean_rank = ranks.mean(axis=0)
  order = np.argsort(mean_rank, kind="stable")
  paths["ranks"] = tables.write_tables(
    out, "benchmark_ranks", ["setting", "mean rank", *names],
    [[labels[i], f"{mean_rank[i]:.2f}", *(f"{x:g}" for x in ranks[:, i])] for i in order],
    caption=f"{title}. Rank of each setting's mean test accuracy per dataset (1 = best, ties "
    f"averaged) and the mean over {len(names)} datasets.",
    csv_rows=[[labels[i], f"{mean_rank[i]:.6g}", *(f"{x:g}" for x in ranks[:, i])] for i in order],
    formats=("md", "csv"),
  )  # fmt: skip

  # (c) The critical-difference diagram and its tests.
  pvalues, friedman = pairwise_pvalues(scores, labels)
  threshold = ALPHA / (len(labels) - 1)
  paths["cd"] = plot_cd(scores, labels, out / "benchmark_cd.png", title)
  significant = friedman < ALPHA
  p_rows = [
    [labels[i], *("-" if i == j else f"{pvalues[i, j]:.4f}" + ("*" if significant and
                  pvalues[i, j] < threshold else "") for j in range(len(labels)))]
    for i in range(len(labels))
  ]  # fmt: skip
  verdict = (
    f"rejects equal performance at {ALPHA:g}: settings whose p-value is below {threshold:.4g} "
    f"({ALPHA:g} / {len(labels) - 1}, marked *) differ, and the diagram's bars join those that "
    "do not"
    if significant
    else f"does not reject equal performance at {ALPHA:g}, so the diagram joins every setting in "
    "one clique; the p-values are shown for reference"
  )
  paths["pvalues"] = tables.write_tables(
    out, "benchmark_pvalues", ["", *labels], p_rows,
    caption=f"{title}. One-sided Wilcoxon signed-rank p-values over {len(names)} datasets (each "
    f"setting's mean test accuracy per dataset), the better-ranked setting of each pair against "
    f"the other; unadjusted. The Friedman test (p = {friedman:.4g}) {verdict}.",
    csv_header=["setting", *labels],
    csv_rows=[[labels[i], *(f"{pvalues[i, j]:.6g}" for j in range(len(labels)))]
              for i in range(len(labels))],
    formats=("md", "csv"),
  )  # fmt: skip

  # (d) Paired differences against no dropout.
  diff_rows, diff_csv = [], []
  for d in names:
    for s in labels[1:]:
      m = report.mean_ci(test[d, s] - test[d, "none"])
      diff_rows.append([d, s, f"{chosen[d][s]:g}", f"{m['std']:.3f}", _ci(m), str(m["n"])])
      diff_csv.append([d, s, chosen[d][s], *(f"{m[k]:.6g}" for k in ("mean", "std", "lo", "hi")),
                       m["n"]])  # fmt: skip
  paths["vs_none"] = tables.write_tables(
    out, "benchmark_vs_none",
    ["dataset", "setting", "rate", "std", "Δ test acc vs none (95% CI)", "resamples"], diff_rows,
    caption=f"{title}. Test accuracy minus no dropout's, resample by resample (paired; the "
    "same split and seed), each setting at its chosen rate; mean with a 95% t-interval.",
    csv_header=["dataset", "setting", "rate", "delta_mean", "delta_std", "ci_lo", "ci_hi", "n"],
    csv_rows=diff_csv, formats=("md", "csv"),
  )  # fmt: skip
  return {
    "paths": paths,
    "chosen_rates": chosen,
    "mean_ranks": {labels[i]: float(mean_rank[i]) for i in order},
    "friedman_p": friedman,
    "alpha": ALPHA,
    "pairwise_threshold": threshold,
  }


def plot_cd(scores: np.ndarray, labels: Sequence[str], path: Path, title: str) -> Path:
  """aeon's critical-difference diagram of ``scores [datasets, settings]``."""
  import warnings

  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from aeon.visualisation import plot_critical_difference

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # aeon warns of settings tied on every dataset
    fig, _ = plot_critical_difference(
      _round(scores), list(labels), test="wilcoxon", correction="holm", alpha=ALPHA
    )
  fig.suptitle(title, fontsize=8, y=1.02)
  fig.savefig(path, bbox_inches="tight", dpi=150)
  plt.close(fig)
  return path


# The study.


def run_benchmark(
  out: str | Path,
  *,
  datasets: Sequence[str] = DATASETS,
  settings: Sequence[str] = tuple(SETTINGS),
  rates: Sequence[float] = (0.1, 0.3),
  resamples: int = 5,
  epochs: int | None = None,
  hidden: int = 32,
  layers: int = 2,
  progress: bool = True,
) -> dict[str, Any]:
  """Trains every (dataset, resample) group that is not finished, then writes the outputs.

  Args:
    out: the output folder (run folders under ``out/<dataset>/r<r>/``).
    datasets, settings, rates, resamples: the study's grid (see the module doc).
    epochs: every dataset's epochs (None: ``BUDGETS``).
    hidden, layers: the model.
    progress: progress bars.

  Returns:
    The JSON summary written to ``out/benchmark.json`` (with ``paths``).

  Raises:
    ValueError: a bad argument, before anything is trained.
  """
  from tqdm.auto import tqdm

  from lstmdrop_jax.train import train_runs

  t0, commit = time.perf_counter(), provenance.commit()  # the code the runs start from
  check_args(datasets, settings, rates, resamples, epochs)
  out = Path(out)
  runs = grid(settings, rates)
  prepared = {d: prepare(d) for d in datasets}
  epochs_of = {d: epochs or BUDGETS[d].epochs for d in datasets}
  model = dict(hidden=hidden, layers=layers)
  configs = {
    (d, r): [run_config(prepared[d], s, rate, r, epochs=epochs_of[d], **model) for s, rate in runs]
    for d in datasets
    for r in range(resamples)
  }
  for (d, _), cs in configs.items():  # every run is checked before anything trains
    for c in cs:
      c.validate(external_data=d not in SYNTHETIC)
  results: dict[tuple[str, int, str, float], dict[str, float]] = {}
  group_s: dict[str, dict[int, float]] = {d: {} for d in datasets}
  bar = tqdm(configs.items(), desc="groups", unit="group", disable=not progress, position=0)
  for (d, r), cs in bar:
    bar.set_postfix_str(f"{d} r{r}")
    started = time.perf_counter()
    workdirs = [out / d / f"r{r}" / run_name(s, rate) for s, rate in runs]
    summaries = train_runs(cs, workdirs, data=prepared[d].data(r), progress=progress)
    group_s[d][r] = round(time.perf_counter() - started, 1)
    for (s, rate), w, summary in zip(runs, workdirs, summaries, strict=True):
      best = summary.get("best")
      if not best or "test/accuracy" not in best:
        raise ValueError(f"{w}: the run has no best checkpoint with a test score ({summary})")
      results[d, r, s, rate] = {"val": best["val/accuracy"], "test": best["test/accuracy"]}
  bar.close()
  title = f"{layers}x{hidden} LSTM, {resamples} resamples"
  summary = write_outputs(
    out, prepared, results, settings=settings, rates=rates, resamples=resamples, epochs=epochs_of,
    title=title,
  )  # fmt: skip
  paths = summary.pop("paths")
  summary = {
    "wall_time_s": round(time.perf_counter() - t0, 1),
    "commit": commit,
    "machine": provenance.machine(),
    "model": {**model, "optimizer": "adam", "learning_rate": 2e-3, "batch_size": 16},
    "settings": {s: list(SETTINGS[s]) for s in ["none", *(s for s in settings if s != "none")]},
    "rates": sorted(rates),
    "resamples": resamples,
    "rate_rule": "highest mean best-validation accuracy over resamples; ties: the lower rate",
    "datasets": {
      d: {
        "epochs": epochs_of[d],
        "window": prepared[d].budget.window,
        "steps_used": prepared[d].steps_used,
        "steps_original": prepared[d].steps_original,
        "val_fraction": prepared[d].budget.val_fraction,
        "resample_rule": "seed r only (fixed generator)" if d in SYNTHETIC
        else "r = 0 official split; r > 0 stratified redraw with the official sizes",
        "group_s": group_s[d],
      }
      for d in datasets
    },
    **summary,
  }  # fmt: skip
  (out / "benchmark.json").write_text(json.dumps(summary, indent=2) + "\n")
  summary["paths"] = paths
  return summary


def enable_compilation_cache(out: Path) -> str:
  """JAX's persistent cache of compiled programs, every program kept: groups of the same
  shapes (the resamples of a dataset) compile once. ``$JAX_COMPILATION_CACHE_DIR`` wins."""
  import jax

  folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(out / "jax_cache")
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return folder


def main(argv: Sequence[str] | None = None) -> None:
  args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0]).resolved()
  out = args.out or Path("results") / f"benchmark{'_quick' if args.quick else ''}"
  try:
    check_args(args.datasets, args.settings, args.rates, args.resamples, args.epochs)
    keep_freed_host_memory()
    setup_cpu_devices(args.cpu_devices)
    if args.compilation_cache:
      enable_compilation_cache(out)
    summary = run_benchmark(
      out, datasets=args.datasets, settings=args.settings, rates=args.rates,
      resamples=args.resamples, epochs=args.epochs, hidden=args.hidden, layers=args.layers,
    )  # fmt: skip
  except (ValueError, OSError, RunFolderError) as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  paths = summary["paths"]
  print(paths["accuracy"]["md"].read_text())
  print(paths["ranks"]["md"].read_text())
  minutes = summary["wall_time_s"] / 60
  print(f"{minutes:.1f} min; wrote {out}/benchmark_*.md/.csv, {paths['cd']}, {out}/benchmark.json")


if __name__ == "__main__":
  main()
