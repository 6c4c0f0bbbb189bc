"""The training loop: ``train_and_evaluate(config, workdir)``, and its CLI.

One loop trains one run, or K runs at once (``train_runs``): runs that share
the model's shape and differ in seed and dropout rates are stacked on a
leading axis and trained by one jitted epoch function (vmapped, or on a CPU
looped over: ``parallel.map_runs``), each run still writing its own run
folder. Every run has its own epoch counter, so runs resumed from different
checkpoints train together; a run that finishes, stops early or diverges is
frozen while the others go on.

An epoch is one compiled call (``steps.make_train_epoch``): ``lax.scan`` of
the pure ``train_step`` over the epoch's batches, metrics summed on device
and fetched once. Everything task-specific (data, model, scores) comes from
a ``tasks.Task``.

Re-running the same call (or command, ``cli.py``) resumes the run bit for
bit from its last checkpoint; the same folder with another config is
refused.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lstmdrop_jax import parallel as par
from lstmdrop_jax import platform
from lstmdrop_jax import run_folder as rf
from lstmdrop_jax.config import Config, check_stackable, resume_kind
from lstmdrop_jax.data import ArrayData
from lstmdrop_jax.tasks import task_class, task_name
from lstmdrop_jax.train.group import Group

__all__ = ["Config", "train_and_evaluate", "train_runs"]


def train_and_evaluate(
  config: Config, workdir: str | Path, *, progress: bool = True, data: ArrayData | None = None
) -> dict[str, Any]:
  """Trains one run in ``workdir`` (resuming it if it exists) and returns its summary.

  The batch is split over the devices as ``parallel.plan`` says (one device:
  plain training). ``data``: your own ``ArrayData`` (``config.dataset`` is
  then only its label); a resumed run checks that it is the same data.

  Raises:
    ValueError: a bad config, or ``workdir`` holds another config.
    FloatingPointError: the loss or the parameters became non-finite; the
      last good checkpoint is kept.
  """
  summary = train_runs([config], [workdir], progress=progress, data=data)[0]
  if summary["status"] == "diverged":
    raise FloatingPointError(summary["error"])
  return summary


def train_runs(
  configs: Sequence[Config],
  workdirs: Sequence[str | Path],
  *,
  progress: bool = True,
  parallel: str = "auto",
  runs_at_once: int | None = None,
  data: ArrayData | None = None,
) -> list[dict[str, Any]]:
  """Trains K runs together (one compiled step), each in its own run folder.

  The configs may differ only in ``seed`` and ``dropout`` (rates, and which
  placements are time-locked: ``GroupDropout``). Finished runs are read back, not
  retrained.
  ``parallel``: ``"data"`` splits every batch over the devices, ``"runs"`` gives
  each device whole runs (K padded with copies of the first run, which write
  nothing), ``"auto"`` picks one (``parallel.plan``). ``runs_at_once``: how
  many of a device's runs one pass of the step computes together, vmapped
  (``parallel.map_runs``; None: one on a CPU, all on an accelerator). ``data``: your own
  ``ArrayData`` for every run (each run splits off its validation series by
  its seed unless the arrays give a validation split).

  Returns:
    One summary per run, in order. A run whose loss became non-finite has
    ``status == 'diverged'`` and an ``error``; its folder keeps its last
    good checkpoint.
  """
  started = time.perf_counter()
  paths = _check_runs(configs, workdirs, runs_at_once, external_data=data is not None)
  name = task_name(configs[0].dataset, external_data=data is not None)
  parallel, mesh = par.plan(
    parallel, runs=len(configs), batch_size=configs[0].batch_size,
    split_pays=platform.cpu_batch_split_pays(name),
  )  # fmt: skip
  par.check_layout(parallel, mesh, runs=len(configs), batch_size=configs[0].batch_size)
  folders = [_folder_kind(p, c) for p, c in zip(paths, configs, strict=True)]
  summaries = [
    rf.read_summary(p) if f == "same" else None for p, f in zip(paths, folders, strict=True)
  ]
  # Data parallel: train only the unfinished runs. Runs parallel: keep the
  # group whole (finished runs ride along frozen) so it still splits evenly.
  todo = [k for k, s in enumerate(summaries) if s is None or parallel == "runs"]
  if any(summaries[k] is None for k in todo):
    pads = [configs[todo[0]]] * par.padding(parallel, mesh, len(todo))  # they write nothing
    group_configs = [configs[k] for k in todo] + pads
    # The data first: a bad dataset or batch size fails before anything is written.
    # Evaluation batches are padded to split over the devices only where they are split.
    devices = mesh.size if parallel == "data" else 1
    task = task_class(name)(group_configs, devices=devices, data=data)
    if par.is_main_process():
      for k in todo:
        rf.prepare_run_folder(paths[k], configs[k].to_dict(), folders[k])
    par.sync("run folders prepared")
    group = Group.compile(task, group_configs, mesh, parallel, runs_at_once)
    # For evaluation, which XLA splits; the training step runs per device (whole rows).
    with platform.batch_split_over_devices(parallel == "data" and mesh.size > 1):
      done = group.train(
        [paths[k] for k in todo],
        [summaries[k] is not None for k in todo],
        progress=progress and par.is_main_process(),
        started=started,
      )
    for k, s in zip(todo, done, strict=True):
      summaries[k] = s
  par.sync("runs finished")
  return summaries  # type: ignore[return-value]


def _check_runs(
  configs: Sequence[Config],
  workdirs: Sequence[str | Path],
  runs_at_once: int | None,
  *,
  external_data: bool,
) -> list[Path]:
  """The runs' absolute folders, after checking that the configs can train together."""
  if not configs or len(configs) != len(workdirs):
    raise ValueError(
      f"need one workdir per config, got {len(configs)} configs and {len(workdirs)} workdirs"
    )
  for c in configs:
    c.validate(external_data=external_data)
  check_stackable(configs)
  par.check_runs_at_once(runs_at_once)
  paths = [rf.check_workdir(w).absolute() for w in workdirs]
  if len(set(paths)) != len(paths):
    raise ValueError("two runs share a workdir; give each run its own folder")
  return paths


def _folder_kind(path: Path, config: Config) -> str:
  """``resume_kind`` of the run folder at ``path``; a folder in which nothing ever
  trained (``run_folder.never_trained``) takes ``config`` as a new run, with a note
  when its own config differed."""
  old = rf.read_config(path)
  if old is not None and rf.never_trained(path):
    try:
      same = Config.from_dict(old).to_dict() == config.to_dict()
    except (TypeError, ValueError):  # a config of another version
      same = False
    if not same and par.is_main_process():
      print(
        f"note: {path} held a run that never trained (no epoch logged, no checkpoint); it "
        "starts afresh with the config given now",
        file=sys.stderr,
      )
    return "new"
  return resume_kind(old, config, path)
