"""The report's figures (matplotlib, files only): curves per setting, per-run losses, and
the gap against rate (``plot_gap``) or per setting (``plot_settings``).

Each function takes the rows of ``report.report_rows`` (one per config but
the seed, with their runs' log records) and writes one PNG. Panels wrap
into rows of at most ``COLUMNS``, and long titles wrap, so a sweep of some
30 settings stays readable.
"""

from __future__ import annotations

import json
import textwrap
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


#: Panels per row of a figure.
COLUMNS = 4


def _others(row: dict) -> str:
  """The row's other varying fields, as a panel-title prefix."""
  return ", ".join(f"{k}={v}" for k, v in row["fields"].items())


def _title(*parts: str, width: int = 38) -> str:
  """A panel title: the non-empty parts, each wrapped to ``width`` characters."""
  return "\n".join(textwrap.fill(p, width) for p in parts if p)


def _grid(plt, n: int, width: float, height: float, **kwargs):
  """A figure of ``n`` panels in rows of at most ``COLUMNS``; the unused axes are hidden."""
  cols = min(n, COLUMNS)
  nrows = -(-n // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(width * cols, height * nrows), squeeze=False,
                           **kwargs)  # fmt: skip
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  return fig, list(axes.flat)[:n]


def _label(row: dict) -> str:
  """A row's setting and rate (``none`` and custom settings, whose rates are in their
  name, alone)."""
  if row["setting"] == "none" or row["setting"].startswith("custom"):
    return row["setting"]
  return f"{row['setting']} {row['rate']:g}"


def rate_sweep(rows: Sequence[dict]) -> bool:
  """Whether the rows are settings at several rates: every setting but none is one
  placement or all three at a rate, and some setting has at least two rates (with
  the other fields equal). Then ``plot_gap`` applies; otherwise ``plot_settings``."""
  rates: dict[tuple, set] = defaultdict(set)
  for r in rows:
    if r["setting"] == "none":
      continue
    if r["setting"].startswith("custom"):
      return False
    rates[(json.dumps(r["fields"], sort_keys=True), r["setting"])].add(r["rate"])
  return any(len(v) > 1 for v in rates.values())


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
  fig, axes = _grid(plt, len(panels), 4.0, 3.4, sharey=True)
  cmap = plt.get_cmap("viridis")
  for ax, ((others, setting), members) in zip(axes, panels.items(), strict=True):
    entries = ([nones[others]] if others in nones else []) + sorted(
      members, key=lambda r: r["rate"]
    )
    for i, r in enumerate(entries):
      label = f"{r['rate']:g}" if r["rate"] else r["setting"].split(":")[0]  # none, custom
      color = "black" if label == "none" else cmap(i / max(len(entries), 2))
      for key, style in (("train/accuracy", "--"), ("val/accuracy", "-")):
        epochs, vals = _curves(r["runs"], key)
        if len(epochs) == 0:
          continue
        m, s = vals.mean(0), vals.std(0)
        ax.plot(epochs, m, style, color=color, lw=1.3, label=label if style == "-" else None)
        ax.fill_between(epochs, m - s, m + s, color=color, alpha=0.12, lw=0)
    prefix = _others(entries[0]) if entries else ""
    ax.set_title(_title(prefix, f"dropout: {setting}"), fontsize=8)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(title="rate", fontsize=7, title_fontsize=7, loc="lower right")
  axes[0].set_ylabel("accuracy (dashed: train, solid: val)")
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_losses(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
  """Every run's loss curves: one panel per row, one colour per seed; dashed the
  training loss (with dropout, the epoch's mean), solid the validation loss."""
  plt = _pyplot()
  fig, axes = _grid(plt, len(rows), 3.6, 2.8)
  cmap = plt.get_cmap("tab10")
  for ax, r in zip(axes, rows, strict=True):
    for j, run in enumerate(sorted(r["runs"], key=lambda m: m["config"]["seed"])):
      color = cmap(j % 10)
      for key, style in (("train_loss", "--"), ("val/loss", "-")):
        s = _series(run, key)
        if s:
          ax.plot(list(s), list(s.values()), style, color=color, lw=1.0,
                  label=f"seed {run['config']['seed']}" if style == "-" else None)  # fmt: skip
    ax.set_title(_title(_others(r), _label(r)), fontsize=8)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("loss (dashed: train, solid: val)")
  axes[0].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_gap(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
  """Final train - validation accuracy gap against rate, one line per setting and a
  panel per value of the other varying fields (``rate_sweep`` rows).

  Every seed is a dot and the line joins the means; 95% intervals are drawn
  only from 3 seeds on (with 2 a t-interval is wider than the plot). The
  panel's no-dropout gap is the dashed line, its seeds the grey band's ends.
  """
  plt = _pyplot()
  panels: dict[str, list[dict]] = defaultdict(list)
  for r in rows:
    panels[json.dumps(r["fields"], sort_keys=True)].append(r)
  fig, axes = _grid(plt, len(panels), 5.5, 3.8)
  for ax, members in zip(axes, panels.values(), strict=True):
    _gap_panel(ax, members)
    ax.set_title(_title(_others(members[0]), title, width=50), fontsize=9)
  return _save(fig, path)


def _gap_panel(ax, rows: Sequence[dict]) -> None:
  for r in rows:
    if r["setting"] == "none":
      gaps = _gaps(r)
      ax.axhline(np.mean(gaps), color="black", ls="--", lw=1, label="none")
      ax.axhspan(min(gaps), max(gaps), color="black", alpha=0.06)
  settings = list(dict.fromkeys(r["setting"] for r in rows if r["setting"] != "none"))
  rates = sorted({r["rate"] for r in rows if r["setting"] != "none"})
  spread = (rates[-1] - rates[0]) if len(rates) > 1 else 1.0
  for k, setting in enumerate(settings):
    sel = sorted((r for r in rows if r["setting"] == setting), key=lambda r: r["rate"])
    x = np.array([r["rate"] for r in sel])
    mean = np.array([r["gap"]["mean"] for r in sel])
    (line,) = ax.plot(x, mean, marker="o", label=setting)
    jitter = (k - (len(settings) - 1) / 2) * 0.01 * spread
    for r in sel:
      gaps = _gaps(r)
      ax.scatter(
        np.full(len(gaps), r["rate"] + jitter), gaps, s=9, color=line.get_color(), alpha=0.5
      )
      if r["gap"]["n"] >= 3:
        lo, hi = r["gap"]["lo"], r["gap"]["hi"]
        ax.vlines(r["rate"] + jitter, lo, hi, color=line.get_color(), lw=1.2)
  ax.set_xticks(rates)
  ax.set_xlabel("dropout rate")
  ax.set_ylabel("final train - val accuracy")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


#: The dot plot's panels: (report metric, axis label).
SETTING_PANELS = (("gap", "final train - val accuracy"), ("test_acc", "test accuracy @ best val"))


def plot_settings(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
  """One line per row (setting, rate and other fields): every seed a dot, the mean a
  diamond with its 95% interval from 3 seeds on; a panel each for the final gap and
  the test accuracy at the best validation checkpoint (for sweeps that are not
  ``rate_sweep``s)."""
  plt = _pyplot()
  labels = [_title(_label(r), _others(r), width=60).replace("\n", "; ") for r in rows]
  height = 0.32 * len(rows) + 1.4
  fig, axes = plt.subplots(1, len(SETTING_PANELS), figsize=(11, height), sharey=True,
                           squeeze=False)  # fmt: skip
  y = np.arange(len(rows))[::-1]
  for ax, (name, xlabel) in zip(axes[0], SETTING_PANELS, strict=True):
    for yi, r in zip(y, rows, strict=True):
      values = _values(r, name)
      ax.scatter(values, np.full(len(values), yi), s=10, color="tab:blue", alpha=0.5)
      m = r[name]
      if m["n"] >= 3:
        ax.plot([m["lo"], m["hi"]], [yi, yi], color="black", lw=1.2)
      ax.plot(m["mean"], yi, "D", color="black", ms=4)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
  axes[0][0].set_yticks(y, labels, fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path)


def _values(row: dict, name: str) -> list[float]:
  if name == "gap":
    return _gaps(row)
  return [float(m["summary"]["best"].get("test/accuracy", np.nan)) for m in row["runs"]]


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
