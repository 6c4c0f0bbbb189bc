"""The report's figures (matplotlib, files only): curves per setting, per-run losses, gap.

Each function takes the rows of ``report.report_rows`` (one per config but
the seed, with their runs' log records) and writes one PNG.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path: str | Path) -> Path:
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  _pyplot().close(fig)
  return path


def _series(run: dict, key: str) -> dict[int, float]:
  """``{epoch: value}`` of ``key`` in a run's log (eval or training records)."""
  return {r["epoch"]: r[key] for r in run["records"] if key in r and r.get("epoch", 0) > 0}


def _curves(runs: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """Epochs and ``[seeds, epochs]`` values of a logged metric (common epochs only)."""
  series = [_series(r, key) for r in runs]
  common = sorted(set.intersection(*(set(s) for s in series))) if series else []
  return np.array(common), np.array([[s[e] for e in common] for s in series])


def _others(row: dict) -> str:
  """The row's other varying fields, as a panel-title prefix."""
  return ", ".join(f"{k}={v}" for k, v in row["fields"].items())


def plot_curves(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
  """Training (no dropout) and validation accuracy against epoch: one panel per setting
  (and value of the other varying fields), one colour per rate, the no-dropout run in
  black; lines are means over seeds, bands ± one std."""
  plt = _pyplot()
  panels: dict[tuple, list[dict]] = defaultdict(list)
  nones: dict[str, dict] = {}
  for r in rows:
    others = json.dumps(r["fields"], sort_keys=True)
    if r["setting"] == "none":
      nones[others] = r
    else:
      panels[(others, r["setting"])].append(r)
  if not panels:
    panels = {(k, "none"): [] for k in nones}
  fig, axes = plt.subplots(
    1, len(panels), figsize=(4 * len(panels), 3.4), sharey=True, squeeze=False
  )
  cmap = plt.get_cmap("viridis")
  for ax, ((others, setting), members) in zip(axes[0], panels.items(), strict=True):
    entries = ([nones[others]] if others in nones else []) + sorted(
      members, key=lambda r: r["rate"]
    )
    for i, r in enumerate(entries):
      label = "none" if r["setting"] == "none" else f"{r['rate']:g}"
      color = "black" if label == "none" else cmap(i / max(len(entries), 2))
      for key, style in (("train/accuracy", "--"), ("val/accuracy", "-")):
        epochs, vals = _curves(r["runs"], key)
        if len(epochs) == 0:
          continue
        m, s = vals.mean(0), vals.std(0)
        ax.plot(epochs, m, style, color=color, lw=1.3, label=label if style == "-" else None)
        ax.fill_between(epochs, m - s, m + s, color=color, alpha=0.12, lw=0)
    prefix = _others(entries[0]) if entries else ""
    ax.set_title((f"{prefix}\n" if prefix else "") + f"dropout: {setting}", fontsize=9)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("accuracy (dashed: train, solid: val)")
  axes[0][-1].legend(title="rate", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_losses(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
  """Every run's loss curves: one panel per row, one colour per seed; dashed the
  training loss (with dropout, the epoch's mean), solid the validation loss."""
  plt = _pyplot()
  n = len(rows)
  cols = min(n, 4)
  fig, axes = plt.subplots(
    -(-n // cols), cols, figsize=(3.6 * cols, 2.8 * -(-n // cols)), squeeze=False
  )
  cmap = plt.get_cmap("tab10")
  for ax, r in zip(axes.flat, rows, strict=False):
    for j, run in enumerate(sorted(r["runs"], key=lambda m: m["config"]["seed"])):
      color = cmap(j % 10)
      for key, style in (("train_loss", "--"), ("val/loss", "-")):
        s = _series(run, key)
        if s:
          ax.plot(list(s), list(s.values()), style, color=color, lw=1.0,
                  label=f"seed {run['config']['seed']}" if style == "-" else None)  # fmt: skip
    label = r["setting"] + ("" if r["setting"] == "none" else f" {r['rate']:g}")
    prefix = _others(r)
    ax.set_title((f"{prefix}\n" if prefix else "") + label, fontsize=9)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  axes[0][0].set_ylabel("loss (dashed: train, solid: val)")
  axes[0][0].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_gap(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
  """Final train - validation accuracy gap against rate, one line per setting.

  Every seed is a dot and the line joins the means; 95% intervals are drawn
  only from 3 seeds on (with 2 a t-interval is wider than the plot). The
  no-dropout gap is the dashed line, its seeds the grey band's ends.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  settings = list(dict.fromkeys(r["setting"] for r in rows if r["setting"] != "none"))
  for r in rows:
    if r["setting"] == "none":
      gaps = _gaps(r)
      ax.axhline(np.mean(gaps), color="black", ls="--", lw=1, label="none")
      ax.axhspan(min(gaps), max(gaps), color="black", alpha=0.06)
  for k, setting in enumerate(settings):
    sel = sorted((r for r in rows if r["setting"] == setting), key=lambda r: r["rate"])
    x = np.array([r["rate"] for r in sel])
    mean = np.array([r["gap"]["mean"] for r in sel])
    (line,) = ax.plot(x, mean, marker="o", label=setting)
    jitter = (k - (len(settings) - 1) / 2) * 0.004
    for r in sel:
      gaps = _gaps(r)
      ax.scatter(
        np.full(len(gaps), r["rate"] + jitter), gaps, s=9, color=line.get_color(), alpha=0.5
      )
      if r["gap"]["n"] >= 3:
        lo, hi = r["gap"]["lo"], r["gap"]["hi"]
        ax.vlines(r["rate"] + jitter, lo, hi, color=line.get_color(), lw=1.2)
  ax.set_xlabel("dropout rate")
  ax.set_ylabel("final train - val accuracy")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  return _save(fig, path)


def _gaps(row: dict) -> list[float]:
  return [
    m["summary"]["final"]["train/accuracy"] - m["summary"]["final"]["val/accuracy"]
    for m in row["runs"]
  ]


def plot_differences(
  panels: dict[str, Sequence[tuple[str, dict]]], path: str | Path, xlabel: str, title: str = ""
) -> Path:
  """A forest plot: per panel (e.g. a dataset), one line per setting, the mean of a
  paired difference against a baseline with its 95% interval (``mean_ci``);
  the dashed line is no difference."""
  plt = _pyplot()
  height = max(len(entries) for entries in panels.values()) * 0.22 + 1.2
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), height), squeeze=False)
  for ax, (name, entries) in zip(axes[0], panels.items(), strict=True):
    y = np.arange(len(entries))[::-1]
    for yi, (_, m) in zip(y, entries, strict=True):
      lo, hi = (m["lo"], m["hi"]) if m["n"] > 1 else (m["mean"], m["mean"])
      color = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray"
      ax.plot([lo, hi], [yi, yi], color=color, lw=1.5)
      ax.plot(m["mean"], yi, "o", color=color, ms=4)
    ax.axvline(0.0, color="black", ls="--", lw=1)
    ax.set_yticks(y, [label for label, _ in entries], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(name, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path)
