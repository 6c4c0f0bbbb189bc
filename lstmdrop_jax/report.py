"""Run folders -> paper-style tables (Markdown, CSV, LaTeX) and plots.

Reads files only; never trains, never imports the model. A run folder is any
folder holding ``config.json`` (see ``run_folder.py``).

The grouping rule (``GROUPING_RULE``): a row is one config, seed aside, on
one data (``data_key``: the fingerprint of your own arrays in ``data.json``,
else what ``data.json`` says of a named dataset), so runs that differ in
dataset, size, epochs, data or anything else never share a row. A seed
counts once per row: of several runs with the same config, seed and data,
the one trained longest is kept and the others are named as left out. Each
row shows its number of distinct seeds, every number is mean ± std over
them with a 95% t-interval for the mean, and the fields that differ between
rows get a column each (``data`` too, when rows differ in it). Diverged and
unfinished runs are left out. The report prints the rule and what it left
out or split, and writes them under the Markdown table.

Command line::

  python -m lstmdrop_jax.report results/overfit_GunPoint/runs --out results/overfit_GunPoint

writes ``overfit_GunPoint.{md,csv,tex}`` and ``overfit_GunPoint_*.png`` (the
files take the name of ``--out``'s folder, or ``--name``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lstmdrop_jax import tables
from lstmdrop_jax.placements import PLACEMENTS, RATE_FIELDS
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
  """Every run folder under ``root``: ``{'path', 'config', 'data', 'summary', 'records'}``.

  ``summary`` is None for a run that has not finished; ``data`` is its
  ``data.json`` (None before its first start).
  """
  fix = "restore it, or move the run folder out of the report's folder"
  runs = []
  for cfg in sorted(Path(root).rglob("config.json")):
    folder = cfg.parent
    data = folder / "data.json"
    runs.append(
      {
        "path": folder,
        "config": normalized(read_json(cfg, fix)),
        "data": read_json(data, fix) if data.exists() else None,
        "summary": read_summary(folder),
        "records": read_jsonl(folder / "metrics.jsonl"),
      }
    )
  return runs


GROUPING_RULE = (
  "a row is one config (seed aside) on one data (data.json's fingerprint of your own arrays, "
  "else its description of a named dataset); a seed counts once per row (of runs with the "
  "same config, seed and data, the one trained longest)"
)


def data_key(data: dict[str, Any] | None) -> str:
  """A short name of the data a run trained on, from its ``data.json``: the fingerprint
  of your own arrays, else a hash of the description of a named dataset (its
  normalisation statistics aside, which depend on the seed's split)."""
  if not data:
    return ""
  if data.get("fingerprint"):
    return str(data["fingerprint"])[:8]
  described = {k: v for k, v in data.items() if k != "normalizer"}
  return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:8]


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


@dataclasses.dataclass
class Grouping:
  """The rows of a set of runs (``group_runs``) and what the grouping left out or split.

  Attributes:
    rows: one per config (seed aside) and data, sorted (``report_rows``).
    unfinished: folders of runs left out as unfinished or diverged.
    duplicates: ``(kept, left out)`` folders of runs with the same config, seed
      and data.
    split_by_data: one line per config whose runs trained on more than one data.
  """

  rows: list[dict[str, Any]]
  unfinished: list[Path] = dataclasses.field(default_factory=list)
  duplicates: list[tuple[Path, list[Path]]] = dataclasses.field(default_factory=list)
  split_by_data: list[str] = dataclasses.field(default_factory=list)

  def notes(self) -> list[str]:
    """The rule and every exception to it, one line each."""
    lines = [f"Grouping: {GROUPING_RULE}."]
    if self.unfinished:
      lines.append(f"Left out, unfinished or diverged: {_paths(self.unfinished)}.")
    for kept, dropped in self.duplicates:
      lines.append(f"Same config, seed and data: kept {kept}, left out {_paths(dropped)}.")
    lines += [f"Same config on other data, separate rows: {line}." for line in self.split_by_data]
    return lines


def _paths(paths: Sequence[Path]) -> str:
  return ", ".join(str(p) for p in paths)


def _finished(run: dict) -> bool:
  s = run["summary"]
  return s is not None and s.get("status") != "diverged" and s.get("final") is not None


def group_runs(runs: Sequence[dict]) -> Grouping:
  """Groups finished runs by config (seed aside) and data (``GROUPING_RULE``).

  Of several runs with the same config, seed and data, the one with the most
  epochs is kept (the first by folder on a tie).
  """
  done = [r for r in runs if _finished(r)]
  out = Grouping(rows=[], unfinished=[r["path"] for r in runs if not _finished(r)])
  groups: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
  for r in done:
    key = (json.dumps(_without_seed(r["config"]), sort_keys=True), data_key(r["data"]))
    groups[key][r["config"]["seed"]].append(r)
  members_of: dict[tuple[str, str], list[dict]] = {}
  for key, by_seed in groups.items():
    members_of[key] = []
    for same in by_seed.values():
      same = sorted(same, key=lambda r: (-r["summary"].get("epochs", 0), str(r["path"])))
      members_of[key].append(same[0])
      if len(same) > 1:
        out.duplicates.append((same[0]["path"], [r["path"] for r in same[1:]]))
  datas: dict[str, list[str]] = defaultdict(list)
  for config_key, data in members_of:
    datas[config_key].append(data)
  for config_key, keys in datas.items():
    if len(keys) > 1:
      setting = placement_of(json.loads(config_key))[0]
      out.split_by_data.append(f"{setting} on data {', '.join(sorted(keys))}")
  out.rows = _rows(members_of)
  return out


def report_rows(runs: Sequence[dict]) -> list[dict[str, Any]]:
  """One row per config but the seed, and per data: every metric's mean/std/interval
  over the row's distinct seeds (``group_runs``).

  Each row holds ``setting``/``rate`` (``placement_of``), ``seeds`` (n),
  ``fields`` (the other fields in which rows differ, ``data`` among them when
  rows differ in it), ``config``, ``data`` and ``runs``.
  """
  return group_runs(runs).rows


def _rows(members_of: dict[tuple[str, str], list[dict]]) -> list[dict[str, Any]]:
  configs = [json.loads(c) | {"data": d} for c, d in members_of]
  keys = sorted({k for c in configs for k in c} - {"dropout"})
  varying = [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]
  has_mc = any("mc" in r["summary"] for members in members_of.values() for r in members)
  rows = []
  for config, ((_, data), members) in zip(configs, members_of.items(), strict=True):
    setting, rate = placement_of(config)
    row = {"setting": setting, "rate": rate, "seeds": len(members), "data": data}
    row.update(config={k: v for k, v in config.items() if k != "data"})
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
  fields = tuple(_sortable(v) for v in row["fields"].values())
  return (fields, rank, row["setting"], row["rate"])


def _sortable(value: Any) -> tuple:
  """Numbers in numeric order (32 before 128), before anything else, in text order."""
  number = isinstance(value, int | float) and not isinstance(value, bool)
  return (0, value, "") if number else (1, 0, json.dumps(value))


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


def build_report(
  runs_dir: str | Path, out_dir: str | Path, title: str = "", name: str | None = None
) -> dict[str, Path]:
  """Tables and plots of the run folders under ``runs_dir``, written to ``out_dir`` as
  ``{name}.{md,csv,tex}`` and ``{name}_{curves,losses,gap|settings}.png`` (``name``:
  ``out_dir``'s folder name by default). The grouping's notes (``Grouping.notes``)
  are printed and written under the Markdown table."""
  from lstmdrop_jax import plots

  runs = load_runs(runs_dir)
  if not runs:
    raise ValueError(f"no run folders (with config.json) under {str(runs_dir)!r}")
  grouping = group_runs(runs)
  rows = grouping.rows
  if not rows:
    raise ValueError(f"none of the {len(runs)} runs under {str(runs_dir)!r} has finished")
  out = Path(out_dir)
  name = name or out.resolve().name
  paths = write_tables(rows, out, name, caption=title)
  notes = grouping.notes()
  with open(paths["md"], "a") as f:
    f.write("\n" + "\n".join(f"- {line}" for line in notes) + "\n")
  print("report: " + "\nreport: ".join(notes), file=sys.stderr)
  kind, plot = (
    ("gap", plots.plot_gap) if plots.rate_sweep(rows) else ("settings", plots.plot_settings)
  )
  return {
    **paths,
    "curves": plots.plot_curves(rows, out / f"{name}_curves.png", title),
    "losses": plots.plot_losses(rows, out / f"{name}_losses.png", title),
    kind: plot(rows, out / f"{name}_{kind}.png", title),
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description="Tables and plots from run folders.")
  parser.add_argument("runs_dir", help="folder holding run folders (searched recursively)")
  parser.add_argument("--out", required=True, help="where to write the tables and plots")
  parser.add_argument("--title", default="")
  parser.add_argument("--name", help="the files' name (default: the --out folder's name)")
  args = parser.parse_args(argv)
  try:
    paths = build_report(args.runs_dir, args.out, args.title, args.name)
  except (ValueError, RunFolderError, OSError) as e:
    raise SystemExit(f"error: {e}") from None
  for kind, path in paths.items():
    print(f"{kind}: {path}")


if __name__ == "__main__":
  main()
