"""Sweeps: a grid of runs from one command, trained in compiled groups, then the tables.

A sweep is a base ``Config`` and what varies around it: dropout settings
(none, one placement alone, or all three) at some rates, seeds, and the
values of any other config field. Points that differ only per run (seed,
dropout rates) train together in one compiled step; each other combination of
field values is its own group. Every point writes its own run folder under
``OUT/runs/`` (re-running resumes and skips finished ones), then
``report.build_report`` writes the tables and plots to ``OUT``.

Command line (the base config takes every flag of ``python -m lstmdrop_jax.train``)::

  python -m lstmdrop_jax.sweep --out results/sweep --dataset GunPoint --epochs 100 \\
      --settings none output all --rates 0.2 0.5 --seeds 3 --vary hidden=32,64

``experiments/overfit.py`` is a preset of it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import tyro

from lstmdrop_jax import parallel as par
from lstmdrop_jax.config import PER_RUN_FIELDS, Config
from lstmdrop_jax.platform import keep_freed_host_memory
from lstmdrop_jax.report import ALL_SETTINGS, build_report, setting_rates
from lstmdrop_jax.run_folder import RunFolderError
from lstmdrop_jax.train import train_runs


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A grid of runs.

  Attributes:
    base: every field the grid does not vary.
    settings: dropout settings (``report.ALL_SETTINGS``: none, any placement
      alone, or all three stack placements), each at every rate (``none`` once).
    rates: the rates of the settings other than ``none``.
    seeds: seeds 0 .. seeds-1 of every point.
    vary: ``{field: values}`` of other ``Config`` fields (a field of the
      dropout config as ``dropout.<name>``); every combination is a point.
  """

  base: Config = Config()
  settings: tuple[str, ...] = ("none",)
  rates: tuple[float, ...] = ()
  seeds: int = 1
  vary: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)

  def points(self) -> list[tuple[str, Config]]:
    """``(run folder name, config)`` of every point, in grid order.

    Raises:
      ValueError: an unknown setting or field, or no rates for a setting.
    """
    unknown = sorted(set(self.settings) - set(ALL_SETTINGS))
    if unknown:
      raise ValueError(f"unknown settings {unknown}; valid ones are {list(ALL_SETTINGS)}")
    if any(s != "none" for s in self.settings) and not self.rates:
      raise ValueError("settings other than 'none' need --rates")
    if not isinstance(self.seeds, int) or self.seeds < 1:
      raise ValueError(f"seeds must be an int >= 1, got {self.seeds!r}")
    dropout = [("none", 0.0)] if "none" in self.settings else []
    dropout += [(p, r) for p in self.settings if p != "none" for r in self.rates]
    out = []
    for values in itertools.product(*self.vary.values()):
      changes = dict(zip(self.vary, values, strict=True))
      prefix = "".join(f"{k}={_name(v)}/" for k, v in changes.items())
      base = _with(self.base, changes)
      for setting, rate in dropout:
        rates = {
          **dict.fromkeys(("input", "between", "output"), 0.0),
          **setting_rates(setting, rate),
        }
        drop = base.dropout.replace(**rates)
        for seed in range(self.seeds):
          name = f"{prefix}{setting}_{rate:g}/seed_{seed}"
          out.append((name, dataclasses.replace(base, dropout=drop, seed=seed)))
    return out


def _name(value: Any) -> str:
  return json.dumps(value) if not isinstance(value, str) else value.replace("/", "_")


def _with(config: Config, changes: dict[str, Any]) -> Config:
  top = {k: v for k, v in changes.items() if not k.startswith("dropout.")}
  drop = {k[len("dropout.") :]: v for k, v in changes.items() if k.startswith("dropout.")}
  fields = {f.name for f in dataclasses.fields(Config)}
  unknown = sorted(set(top) - fields)
  if unknown:
    raise ValueError(f"unknown config fields {unknown} in --vary")
  if "seed" in top or "dropout" in top:
    raise ValueError(
      "vary seeds with --seeds, and dropout with --settings/--rates or dropout.<name>"
    )
  try:
    return dataclasses.replace(config, **top, dropout=config.dropout.replace(**drop))
  except TypeError as e:
    raise ValueError(f"--vary: {e}") from None


def groups(points: Sequence[tuple[str, Config]], size: int = 0) -> list[list[tuple[str, Config]]]:
  """The points in stackable groups (equal but for seed and dropout rates), each cut
  to at most ``size`` points (0: no limit)."""
  by_key: dict[str, list] = {}
  for name, c in points:
    d = c.to_dict()
    key = {k: v for k, v in d.items() if k not in PER_RUN_FIELDS}
    key["time_locked"] = d["dropout"]["time_locked"]
    key["per_gate"] = d["dropout"].get("per_gate", False)
    by_key.setdefault(json.dumps(key, sort_keys=True), []).append((name, c))
  size = size or len(points)
  return [g[i : i + size] for g in by_key.values() for i in range(0, len(g), size)]


def run_sweep(
  sweep: Sweep,
  out: str | Path,
  *,
  group_size: int = 0,
  parallel: str = "auto",
  runs_at_once: int | None = None,
  title: str = "",
  name: str | None = None,
  progress: bool = True,
) -> dict[str, Path]:
  """Trains every point (checking every group first), then writes the report.

  Returns:
    The report's files (``report.build_report``), named ``name`` (default: the
    name of the ``out`` folder).

  Raises:
    ValueError: a bad point or a group the devices cannot split, before
      anything is trained or written.
  """
  out = Path(out)
  runs = out / "runs"
  train_points(
    sweep.points(),
    runs,
    group_size=group_size,
    parallel=parallel,
    runs_at_once=runs_at_once,
    progress=progress,
  )
  return build_report(out / "runs", out, title, name)


def train_points(
  points: Sequence[tuple[str, Config]],
  runs_dir: str | Path,
  *,
  group_size: int = 0,
  parallel: str = "auto",
  runs_at_once: int | None = None,
  progress: bool = True,
) -> None:
  """Trains ``(run folder name, config)`` points into ``runs_dir/<name>``, in stackable
  groups, every group checked before any is trained.

  Raises:
    ValueError: a bad point or a group the devices cannot split, before
      anything is trained or written.
  """
  for _, c in points:
    c.validate()
  par.check_runs_at_once(runs_at_once)
  chunks = groups(points, group_size)
  for chunk in chunks:
    batch_size = chunk[0][1].batch_size
    mode, mesh = par.plan(parallel, runs=len(chunk), batch_size=batch_size)
    par.check_layout(mode, mesh, runs=len(chunk), batch_size=batch_size)
  for chunk in chunks:
    train_runs(
      [c for _, c in chunk],
      [Path(runs_dir) / n for n, _ in chunk],
      parallel=parallel,
      runs_at_once=runs_at_once,
      progress=progress,
    )


def parse_vary(items: Sequence[str]) -> dict[str, tuple[Any, ...]]:
  """``["hidden=32,64", "dropout.recurrent=0,0.2"]`` -> ``{'hidden': (32, 64), ...}``.

  Values are read as JSON where they can be (numbers, true/false, null),
  else as strings.
  """
  out = {}
  for item in items:
    field, sep, values = item.partition("=")
    if not sep or not field or not values:
      raise ValueError(f"--vary {item!r}: expected FIELD=V1,V2,...")
    out[field] = tuple(_value(v) for v in values.split(","))
  return out


def _value(text: str) -> Any:
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


@dataclasses.dataclass(frozen=True)
class _Cli:
  out: Path
  """Output folder: run folders under OUT/runs, tables and plots in OUT."""
  config: Annotated[Config, tyro.conf.arg(name="")] = Config()
  settings: tuple[str, ...] = ("none",)
  """Dropout settings: none, any placement alone (input, recurrent, zoneout_h, ...), or all
  (input, between and output at one rate)."""
  rates: tuple[float, ...] = ()
  """Rates of the settings other than none."""
  seeds: int = 1
  """Seeds per point."""
  vary: tuple[str, ...] = ()
  """Other fields to vary, as FIELD=V1,V2 (e.g. hidden=32,64 or dropout.recurrent=0,0.2)."""
  group_size: int = 0
  """Most runs trained together in one compiled step (0: every stackable point)."""
  parallel: str = "auto"
  """How devices share a group: 'data' (split batches), 'runs' (whole runs per device), or
  'auto' (runs when a group has at least as many runs as devices, on a CPU)."""
  runs_at_once: int | None = None
  """Runs of a device one pass of the step computes together, vmapped; it loops over the
  rest (default: 1 on a CPU, all on an accelerator)."""
  cpu_devices: int | None = None
  """CPU: present the CPU as this many JAX devices (default: one per usable core, or
  $LSTMDROP_CPU_DEVICES; 1 switches it off)."""
  title: str = ""
  name: str | None = None
  """The report files' name (default: the --out folder's name)."""


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
  description = __doc__.split("\n\n")[0]
  args = tyro.cli(_Cli, args=argv, prog="python -m lstmdrop_jax.sweep", description=description)
  keep_freed_host_memory()
  try:
    par.setup_cpu_devices(args.cpu_devices)
    sweep = Sweep(args.config, args.settings, args.rates, args.seeds, parse_vary(args.vary))
    t0 = time.perf_counter()
    paths = run_sweep(
      sweep,
      args.out,
      group_size=args.group_size,
      parallel=args.parallel,
      runs_at_once=args.runs_at_once,
      title=args.title,
      name=args.name,
    )
  except (ValueError, OSError, RunFolderError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    raise SystemExit(2) from None
  minutes = (time.perf_counter() - t0) / 60
  print(paths["md"].read_text())
  print(f"{len(sweep.points())} runs in {minutes:.1f} min; wrote", *map(str, paths.values()))
  return paths


if __name__ == "__main__":
  main()
