"""Run folders -> paper-style tables (Markdown, CSV, LaTeX) and plots.

Reads files only; never trains, never imports the model. A run folder is any
folder holding ``config.json`` (see ``run_folder.py``). Runs are grouped by
their whole config except the seed, so runs that differ in dataset, size,
epochs or anything else never share a row; each row shows its number of
seeds ``n``, every number is mean ± std over them with a 95% t-interval for
the mean, and the fields that differ between rows get a column each.
Diverged and unfinished runs are left out (and counted on stderr).

Command line::

  python -m lstmdrop_jax.report results/overfit_GunPoint/runs --out results/overfit_GunPoint
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lstmdrop_jax import tables
from lstmdrop_jax.dropout import PLACEMENTS, RATE_FIELDS
from lstmdrop_jax.run_folder import RunFolderError, read_json, read_jsonl, read_summary

#: The settings of the over-fitting grid, in table order: no dropout, one
#: placement alone, or all three placements at one rate.
SETTINGS = ("none", *PLACEMENTS, "all")
#: Every setting a sweep may name: those, or any placement of the registry alone.
ALL_SETTINGS = (*SETTINGS, *(p for p in RATE_FIELDS if p not in SETTINGS))


def setting_rates(setting: str, rate: float) -> dict[str, float]:
  """``{placement: rate}`` of a setting (the inverse of ``placement_of``)."""
  if setting not in ALL_SETTINGS:
    raise ValueError(f"unknown setting {setting!r}; valid ones are {list(ALL_SETTINGS)}")
  if setting == "none":
    return {}
  return dict.fromkeys(PLACEMENTS if setting == "all" else (setting,), rate)


def load_runs(root: str | Path) -> list[dict[str, Any]]:
  """Every run folder under ``root``: ``{'path', 'config', 'summary', 'records'}``.

  ``summary`` is None for a run that has not finished.
  """
  runs = []
  for cfg in sorted(Path(root).rglob("config.json")):
    folder = cfg.parent
    runs.append(
      {
        "path": folder,
        "config": normalized(
          read_json(cfg, "restore it, or move the run folder out of the report's folder")
        ),
        "summary": read_summary(folder),
        "records": read_jsonl(folder / "metrics.jsonl"),
      }
    )
  return runs


def placement_of(config: dict[str, Any]) -> tuple[str, float]:
  """``(setting, rate)`` of a config's dropout: ``none``; one placement alone (any
  of ``REGISTRY``); ``all`` (the stack's three placements at one rate); each with
  `` (locked)`` when its masks are time-locked. Anything else is ``custom`` with
  its rates spelled out. Per-gate masks add `` (per gate)``."""
  setting, rate = _placement_of(config["dropout"])
  per_gate = config["dropout"].get("per_gate") and setting != "none"
  return setting + (" (per gate)" if per_gate else ""), rate


def _placement_of(d: dict[str, Any]) -> tuple[str, float]:
  locked = set(d.get("time_locked", ()))
  on = {p: d.get(p, 0.0) for p in RATE_FIELDS if d.get(p, 0.0)}
  if not on:
    return "none", 0.0
  suffix = " (locked)" if locked and locked >= set(on) else ""
  if not locked or suffix:
    if len(on) == 1:
      ((p, r),) = on.items()
      return p + suffix, r
    if set(on) == set(PLACEMENTS) and len(set(on.values())) == 1:
      return "all" + suffix, next(iter(on.values()))
  rates = ", ".join(f"{p} {r:g}" for p, r in on.items())
  return f"custom: {rates}" + (f"; locked {', '.join(sorted(locked))}" if locked else ""), 0.0


def normalized(config: dict[str, Any]) -> dict[str, Any]:
  """A ``config.json`` with the fields its version lacked at their defaults, so runs
  written before a field existed group with the runs that have it at its default."""
  from lstmdrop_jax.config import Config

  try:
    return Config.from_dict(config).to_dict()
  except (TypeError, ValueError):  # not a config of this version: as it is
    return config


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
  """Mean, sample std and a t-interval for the mean (NaN where a value is missing)."""
  from scipy import stats

  x = np.asarray(values, dtype=float)
  n = len(x)
  mean = float(x.mean()) if n else math.nan
  std = float(x.std(ddof=1)) if n > 1 else 0.0
  half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
  return {"mean": mean, "std": std, "lo": mean - half, "hi": mean + half, "n": n}


# Metric columns: (column, summary path, label).
METRICS = (
  ("train_acc", ("final", "train/accuracy"), "train acc"),
  ("train_loss", ("final", "train/loss"), "train loss"),
  ("val_acc_best", ("best", "val/accuracy"), "best val acc"),
  ("val_acc_final", ("final", "val/accuracy"), "final val acc"),
  ("test_acc", ("best", "test/accuracy"), "test acc @ best val"),
  ("gap", None, "gap (train - val)"),
)
#: Monte-Carlo dropout scores of the best checkpoint (shown when runs have them).
MC_METRICS = (
  ("mc_val_acc", ("mc", "val/accuracy"), "MC val acc"),
  ("mc_test_acc", ("mc", "test/accuracy"), "MC test acc"),
)


def _metric(summary: dict, name: str, path) -> float:
  if name == "gap":
    return summary["final"]["train/accuracy"] - summary["final"]["val/accuracy"]
  return float(summary.get(path[0], {}).get(path[1], math.nan))


def _without_seed(config: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in config.items() if k != "seed"}


def report_rows(runs: Sequence[dict]) -> list[dict[str, Any]]:
  """One row per config but the seed: every metric's mean/std/interval over seeds.

  Each row holds ``setting``/``rate`` (``placement_of``), ``seeds`` (n),
  ``fields`` (the other fields in which rows differ), ``config`` and ``runs``.
  """
  groups: dict[str, list[dict]] = defaultdict(list)
  for r in runs:
    s = r["summary"]
    if s is None or s.get("status") == "diverged" or s.get("final") is None:
      continue
    groups[json.dumps(_without_seed(r["config"]), sort_keys=True)].append(r)
  configs = [json.loads(k) for k in groups]
  keys = sorted({k for c in configs for k in c} - {"dropout"})
  varying = [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]
  has_mc = any("mc" in r["summary"] for members in groups.values() for r in members)
  rows = []
  for key, members in groups.items():
    config = json.loads(key)
    setting, rate = placement_of(config)
    row = {"setting": setting, "rate": rate, "seeds": len(members), "config": config}
    row.update(fields={k: config.get(k) for k in varying}, runs=members)
    for name, path, _ in METRICS + (MC_METRICS if has_mc else ()):
      row[name] = mean_ci([_metric(m["summary"], name, path) for m in members])
    rows.append(row)
  return sorted(rows, key=_row_order)


def paired_difference(row: dict, base: dict, name: str) -> dict[str, float]:
  """``mean_ci`` of ``row``'s metric minus ``base``'s over the seeds both rows hold,
  seed by seed (the seed fixes the split, the initialisation and the order, so
  the pairs share everything but what the rows differ in)."""
  path = {n: p for n, p, _ in METRICS + MC_METRICS}[name]
  by_seed = lambda r: {m["config"]["seed"]: _metric(m["summary"], name, path) for m in r["runs"]}
  mine, theirs = by_seed(row), by_seed(base)
  return mean_ci([mine[s] - theirs[s] for s in sorted(mine.keys() & theirs.keys())])


def _row_order(row: dict) -> tuple:
  base = row["setting"].split(" (")[0]
  order = ALL_SETTINGS
  rank = order.index(base) if base in order else len(order)
  fields = tuple(json.dumps(v) for v in row["fields"].values())
  return (fields, rank, row["setting"], row["rate"])


def mean_std(m: dict) -> str:
  """A ``mean_ci`` result as the tables show it: ``mean ± std`` (``n/a`` when missing)."""
  return "n/a" if math.isnan(m["mean"]) else f"{m['mean']:.3f} ± {m['std']:.3f}"


def write_tables(
  rows: Sequence[dict], out_dir: str | Path, stem: str, caption: str = ""
) -> dict[str, Path]:
  """Writes ``{stem}.md``, ``{stem}.csv`` and ``{stem}.tex``; returns their paths.

  Display cells are ``mean ± std`` with the gap's 95% interval; the CSV holds
  each metric's mean, std and interval ends.
  """
  metrics = [(n, label) for n, _, label in METRICS + MC_METRICS if rows and n in rows[0]]
  varying = list(rows[0]["fields"]) if rows else []
  ci = lambda m: f"[{m['lo']:.3f}, {m['hi']:.3f}]" if m["n"] > 1 else "n/a"
  header = [*varying, "placement", "rate", "seeds", *(label for _, label in metrics), "gap 95% CI"]
  display = [
    [*(tables.cell(r["fields"][k]) for k in varying), r["setting"], f"{r['rate']:g}",
     str(r["seeds"]), *(mean_std(r[n]) for n, _ in metrics), ci(r["gap"])]
    for r in rows
  ]  # fmt: skip
  stats = ("mean", "std", "lo", "hi")
  csv_header = [*varying, "placement", "rate", "seeds"] + [
    f"{n}_{s}" for n, _ in metrics for s in ("mean", "std", "ci_lo", "ci_hi")
  ]
  csv_rows = [
    [*(r["fields"][k] for k in varying), r["setting"], r["rate"], r["seeds"]]
    + [f"{r[n][s]:.6g}" for n, _ in metrics for s in stats]
    for r in rows
  ]
  return tables.write_tables(
    out_dir, stem, header, display, caption=caption, csv_header=csv_header, csv_rows=csv_rows
  )


def build_report(runs_dir: str | Path, out_dir: str | Path, title: str = "") -> dict[str, Path]:
  """Tables and plots of the run folders under ``runs_dir``."""
  from lstmdrop_jax import plots

  runs = load_runs(runs_dir)
  if not runs:
    raise ValueError(f"no run folders (with config.json) under {str(runs_dir)!r}")
  rows = report_rows(runs)
  if not rows:
    raise ValueError(f"none of the {len(runs)} runs under {str(runs_dir)!r} has finished")
  left_out = len(runs) - sum(r["seeds"] for r in rows)
  if left_out:
    print(f"report: {left_out} unfinished or diverged run(s) left out", file=sys.stderr)
  out = Path(out_dir)
  return {
    **write_tables(rows, out, "overfit", caption=title),
    "curves": plots.plot_curves(rows, out / "curves.png", title),
    "losses": plots.plot_losses(rows, out / "losses.png", title),
    "gap": plots.plot_gap(rows, out / "gap.png", title),
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description="Tables and plots from run folders.")
  parser.add_argument("runs_dir", help="folder holding run folders (searched recursively)")
  parser.add_argument("--out", required=True, help="where to write the tables and plots")
  parser.add_argument("--title", default="")
  args = parser.parse_args(argv)
  try:
    paths = build_report(args.runs_dir, args.out, args.title)
  except (ValueError, RunFolderError, OSError) as e:
    raise SystemExit(f"error: {e}") from None
  for kind, path in paths.items():
    print(f"{kind}: {path}")


if __name__ == "__main__":
  main()
