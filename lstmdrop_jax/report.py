"""Run folders -> paper-style tables (Markdown, CSV, LaTeX) and plots.

Reads files only; never trains, never imports the model. A run folder is any
folder holding ``config.json`` (see ``checkpoint.py``); runs are grouped into
settings by their dropout placement and rate, and every number is reported
as mean ± std over seeds with a 95% t-interval for the mean.

Command line (the over-fitting study's report from its run folders)::

  python -m lstmdrop_jax.report results/overfit_GunPoint/runs --out results/overfit_GunPoint
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lstmdrop_jax import tables
from lstmdrop_jax.dropout import PLACEMENTS
from lstmdrop_jax.run_folder import RunFolderError, read_json, read_jsonl, read_summary

#: The settings of the over-fitting grid, in table order: no dropout, one
#: placement alone, or all three placements at one rate.
SETTINGS = ("none", *PLACEMENTS, "all")


def setting_rates(setting: str, rate: float) -> dict[str, float]:
  """``{placement: rate}`` of a grid setting (the inverse of ``placement_of``)."""
  if setting not in SETTINGS:
    raise ValueError(f"unknown setting {setting!r}; valid ones are {list(SETTINGS)}")
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
        "config": read_json(cfg, "restore it, or move the run folder out of the report's folder"),
        "summary": read_summary(folder),
        "records": read_jsonl(folder / "metrics.jsonl"),
      }
    )
  return runs


def placement_of(config: dict[str, Any]) -> tuple[str, float]:
  """``(placement, rate)`` of a config: 'none', one of input/between/output, 'all'
  (the three at one rate), or 'custom'."""
  d = config["dropout"]
  rates = {p: d[p] for p in PLACEMENTS}
  extra = any(d.get(k, 0.0) for k in ("recurrent", "weight", "embedding"))
  on = {p: r for p, r in rates.items() if r}
  if extra:
    return "custom", 0.0
  if not on:
    return "none", 0.0
  if len(on) == 1:
    ((p, r),) = on.items()
    return p, r
  if len(on) == 3 and len(set(on.values())) == 1:
    return "all", next(iter(on.values()))
  return "custom", 0.0


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
  """Mean, sample std and a t-interval for the mean (NaN-free input)."""
  from scipy import stats

  x = np.asarray(values, dtype=float)
  n = len(x)
  mean = float(x.mean()) if n else math.nan
  std = float(x.std(ddof=1)) if n > 1 else 0.0
  half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
  return {"mean": mean, "std": std, "lo": mean - half, "hi": mean + half, "n": n}


# Metric columns of the over-fitting table: (column, summary path, label).
OVERFIT_METRICS = (
  ("train_acc", ("final", "train/accuracy"), "train acc"),
  ("train_loss", ("final", "train/loss"), "train loss"),
  ("val_acc_best", ("best", "val/accuracy"), "best val acc"),
  ("val_acc_final", ("final", "val/accuracy"), "final val acc"),
  ("test_acc", ("best", "test/accuracy"), "test acc @ best val"),
  ("gap", None, "gap (train - val)"),
)


def _metric(summary: dict, name: str, path) -> float:
  if name == "gap":
    return summary["final"]["train/accuracy"] - summary["final"]["val/accuracy"]
  return summary[path[0]][path[1]]


def overfit_rows(runs: Sequence[dict]) -> list[dict[str, Any]]:
  """One row per (placement, rate): every metric's mean/std/interval over seeds."""
  groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
  for r in runs:
    s = r["summary"]
    if s is None or s.get("status") == "diverged" or s.get("final") is None:
      continue
    groups[placement_of(r["config"])].append(s)
  rows = []
  order = {p: i for i, p in enumerate((*SETTINGS, "custom"))}
  for (placement, rate), summaries in sorted(
    groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])
  ):
    row: dict[str, Any] = {"placement": placement, "rate": rate, "seeds": len(summaries)}
    for name, path, _ in OVERFIT_METRICS:
      row[name] = mean_ci([_metric(s, name, path) for s in summaries])
    rows.append(row)
  return rows


def write_overfit_tables(
  rows: Sequence[dict], out_dir: str | Path, stem: str, caption: str = ""
) -> dict[str, Path]:
  """Writes ``{stem}.md``, ``{stem}.csv`` and ``{stem}.tex``; returns their paths.

  Display cells are ``mean ± std`` with the gap's 95% interval; the CSV holds
  each metric's mean, std and interval ends.
  """
  metrics = [(n, label) for n, _, label in OVERFIT_METRICS]
  fmt = lambda m: f"{m['mean']:.3f} ± {m['std']:.3f}"
  ci = lambda m: f"[{m['lo']:.3f}, {m['hi']:.3f}]" if m["n"] > 1 else "n/a"
  header = ["placement", "rate", "seeds", *(label for _, label in metrics), "gap 95% CI"]
  display = [
    [
      r["placement"],
      f"{r['rate']:g}",
      str(r["seeds"]),
      *(fmt(r[n]) for n, _ in metrics),
      ci(r["gap"]),
    ]
    for r in rows
  ]
  stats_ = ("mean", "std", "lo", "hi")
  csv_header = ["placement", "rate", "seeds"] + [
    f"{n}_{s}" for n, _ in metrics for s in ("mean", "std", "ci_lo", "ci_hi")
  ]
  csv_rows = [
    [r["placement"], r["rate"], r["seeds"]] + [f"{r[n][s]:.6g}" for n, _ in metrics for s in stats_]
    for r in rows
  ]
  return tables.write_tables(
    out_dir, stem, header, display, caption=caption, csv_header=csv_header, csv_rows=csv_rows
  )


def _curves(runs: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """Epochs and ``[seeds, epochs]`` values of an eval metric (common epochs only)."""
  series = []
  for r in runs:
    ev = {
      rec["epoch"]: rec[key] for rec in r["records"] if rec.get("event") == "eval" and key in rec
    }
    series.append(ev)
  common = sorted(set.intersection(*(set(s) for s in series))) if series else []
  return np.array(common), np.array([[s[e] for e in common] for s in series])


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path: str | Path) -> Path:
  fig.tight_layout()
  path = Path(path)
  fig.savefig(path, dpi=120)
  _pyplot().close(fig)
  return path


def plot_curves(runs: Sequence[dict], path: str | Path, title: str = "") -> Path:
  """Training (no dropout) and validation accuracy against epoch, one panel per
  placement, one colour per rate; lines are means over seeds, bands ± one std."""
  plt = _pyplot()
  groups: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
  for r in runs:
    if r["summary"] is not None and r["summary"].get("status") != "diverged":
      p, rate = placement_of(r["config"])
      groups[p][rate].append(r)
  panels = [p for p in SETTINGS if p in groups and p != "none"] or ["none"]
  fig, axes = plt.subplots(
    1, len(panels), figsize=(4 * len(panels), 3.4), sharey=True, squeeze=False
  )
  cmap = plt.get_cmap("viridis")
  for ax, p in zip(axes[0], panels, strict=True):
    entries = [(0.0, groups["none"][0.0], "none")] if "none" in groups else []
    rates = sorted(groups[p]) if p != "none" else []
    entries += [(rate, groups[p][rate], f"{rate:g}") for rate in rates]
    for i, (_, members, label) in enumerate(entries):
      color = "black" if label == "none" else cmap(i / max(len(entries), 2))
      for key, style in (("train/accuracy", "--"), ("val/accuracy", "-")):
        epochs, vals = _curves(members, key)
        if len(epochs) == 0:
          continue
        m, s = vals.mean(0), vals.std(0)
        ax.plot(
          epochs, m, style, color=color, lw=1.3, label=f"{label}" if key == "val/accuracy" else None
        )
        ax.fill_between(epochs, m - s, m + s, color=color, alpha=0.12, lw=0)
    ax.set_title(f"dropout: {p}")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("accuracy (dashed: train, solid: val)")
  axes[0][-1].legend(title="rate", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_gap(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
  """Train - validation accuracy gap against rate, one line per placement, with
  95% intervals; the no-dropout gap is the dashed line."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for r in rows:
    if r["placement"] == "none":
      g = r["gap"]
      ax.axhline(g["mean"], color="black", ls="--", lw=1, label="none")
      if g["n"] > 1:
        ax.axhspan(g["lo"], g["hi"], color="black", alpha=0.08)
  for p in SETTINGS[1:]:
    sel = [r for r in rows if r["placement"] == p]
    if not sel:
      continue
    x = [r["rate"] for r in sel]
    m = np.array([r["gap"]["mean"] for r in sel])
    lo = np.array([r["gap"]["lo"] if r["gap"]["n"] > 1 else r["gap"]["mean"] for r in sel])
    hi = np.array([r["gap"]["hi"] if r["gap"]["n"] > 1 else r["gap"]["mean"] for r in sel])
    ax.errorbar(x, m, yerr=np.stack([m - lo, hi - m]), marker="o", capsize=3, label=p)
  ax.set_xlabel("dropout rate")
  ax.set_ylabel("final train - val accuracy")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  return _save(fig, path)


def build_overfit_report(
  runs_dir: str | Path, out_dir: str | Path, title: str = ""
) -> dict[str, Path]:
  """Tables and plots of the over-fitting study from its run folders."""
  runs = load_runs(runs_dir)
  if not runs:
    raise ValueError(f"no run folders (with config.json) under {str(runs_dir)!r}")
  rows = overfit_rows(runs)
  if not rows:
    raise ValueError(f"none of the {len(runs)} runs under {str(runs_dir)!r} has finished")
  out = Path(out_dir)
  return {
    **write_overfit_tables(rows, out, "overfit", caption=title),
    "curves": plot_curves(runs, out / "curves.png", title),
    "gap": plot_gap(rows, out / "gap.png", title),
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description="Tables and plots from run folders.")
  parser.add_argument("runs_dir", help="folder holding run folders (searched recursively)")
  parser.add_argument("--out", required=True, help="where to write the tables and plots")
  parser.add_argument("--title", default="")
  args = parser.parse_args(argv)
  try:
    paths = build_overfit_report(args.runs_dir, args.out, args.title)
  except (ValueError, RunFolderError, OSError) as e:
    raise SystemExit(f"error: {e}") from None
  for kind, path in paths.items():
    print(f"{kind}: {path}")


if __name__ == "__main__":
  main()
