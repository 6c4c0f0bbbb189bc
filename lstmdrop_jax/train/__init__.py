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

import dataclasses
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from lstmdrop_jax import console, fused, optim, steps
from lstmdrop_jax import parallel as par
from lstmdrop_jax import run_folder as rf
from lstmdrop_jax.config import Config, check_stackable, resume_kind
from lstmdrop_jax.data import ArrayData
from lstmdrop_jax.dropout import DropoutConfig
from lstmdrop_jax.tasks import Task, make_task, task_type

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
  if not configs or len(configs) != len(workdirs):
    raise ValueError(
      f"need one workdir per config, got {len(configs)} configs and {len(workdirs)} workdirs"
    )
  for c in configs:
    c.validate(external_data=data is not None)
  check_stackable(configs)
  par.check_runs_at_once(runs_at_once)
  paths = [rf.check_workdir(w).absolute() for w in workdirs]
  if len(set(paths)) != len(paths):
    raise ValueError("two runs share a workdir; give each run its own folder")
  pays = task_type(configs[0].dataset, external_data=data is not None).cpu_split_pays
  parallel, mesh = par.plan(parallel, runs=len(configs), batch_size=configs[0].batch_size,
                            split_pays=pays)  # fmt: skip
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
    task = make_task(group_configs, devices=mesh.size if parallel == "data" else 1, data=data)
    if par.is_main_process():
      for k in todo:
        rf.prepare_run_folder(paths[k], configs[k].to_dict(), folders[k])
    par.sync("run folders prepared")
    group = _Group.compile(task, group_configs, mesh, parallel, runs_at_once)
    # For evaluation, which XLA splits; the training step runs per device (whole rows).
    with fused.batch_split_over_devices(parallel == "data" and mesh.size > 1):
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


#: Train-state fields the run's config fixes: restored from the config, not the
#: checkpoint (whose form of them depends on the version that wrote it).
_FROM_CONFIG = ("dropout",)


@dataclasses.dataclass
class _Run:
  """Host-side bookkeeping of one run (saved as the checkpoint's ``meta``)."""

  config: Config
  folder: rf.RunFolder
  index: int  # position in the stacked state
  template: Any  # a fresh state: the structure checkpoints restore into
  epoch: int = 0
  best: dict[str, Any] | None = None
  elapsed: float = 0.0  # seconds in training epochs
  wall: float = 0.0  # seconds of wall clock up to the start of this invocation
  status: str = "running"
  error: str | None = None
  started: float = 0.0  # time.perf_counter() when this invocation began
  latest: dict[str, Any] | None = None  # the last training record
  # The best state not yet checkpointed, held until the next checkpoint:
  # (epoch, host copy of the state, meta).
  unsaved_best: tuple[int, Any, dict[str, Any]] | None = None

  def meta(self) -> dict[str, Any]:
    wall = self.wall + time.perf_counter() - self.started
    return {"epoch": self.epoch, "best": self.best, "elapsed": self.elapsed, "wall": wall}

  def check_done(self) -> None:
    """Marks the run finished (all epochs) or early-stopped (no recent improvement)."""
    c = self.config
    if self.status != "running":
      return
    if self.epoch >= c.epochs:
      self.status = "finished"
    elif c.early_stopping and self.best and self.epoch - self.best["epoch"] >= c.early_stopping:
      self.status = "early_stopped"

  def due_for_eval(self) -> bool:
    c = self.config
    return self.status == "running" and (self.epoch % c.eval_every == 0 or self.epoch >= c.epochs)


@dataclasses.dataclass
class _Group:
  """K runs trained together: the task, the compiled functions, the device layout."""

  configs: Sequence[Config]
  task: Task
  model: Any
  tx: Any
  shardings: dict[str, Any]
  epoch_fn: Any
  eval_fn: Any
  eval_sharding: Any
  observe_fn: Any = None  # feeds validation losses to a plateau schedule (None: no plateau)
  runs: list[_Run] = dataclasses.field(default_factory=list)
  console: Any = None  # console.Progress while training
  states: Any = None  # the stacked train states, laid out on the mesh
  keys: Any = None  # the stacked dropout keys

  @classmethod
  def compile(
    cls, task: Task, configs: Sequence[Config], mesh, mode: str, at_once: int | None
  ) -> _Group:
    """Builds the model and the jitted epoch and evaluation functions."""
    cfg = configs[0]
    sh = par.shardings(mode, mesh)
    # The step has every placement a run of the group uses; each run's rates are in its state.
    union = dataclasses.replace(cfg, dropout=DropoutConfig.union([c.dropout for c in configs]))
    model = task.model_from(union, task.describe(0))
    tx = optim.optimizer_of(cfg, task.steps_per_epoch)
    split = mode == "data" and mesh.size > 1  # each device trains on its rows of the batch
    axis = par.AXIS if split else None
    train_epoch = steps.make_train_epoch(model, tx, task.objective, batch_axis=axis)

    def run_epoch(state, batches, key_data, active):
      new, metrics = train_epoch(state, batches, jax.random.wrap_key_data(key_data))
      metrics = dict(metrics, lr_scale=optim.lr_scale(new.opt_state))
      # Frozen runs (finished, stopped, diverged) keep their state.
      return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), metrics

    over_runs = partial(par.map_runs, mode=mode, mesh=mesh, runs=len(configs), at_once=at_once)
    run_epochs = over_runs(run_epoch)
    if split:
      has_carry = task.objective.init_carry(model, 1) is not None
      state = steps.sharded_state_spec(has_carry, P(None, par.AXIS))
      rest = P()  # keys and flags
      run_epochs = jax.shard_map(
        run_epochs,
        mesh=mesh,
        in_specs=(state, P(*sh["batch"].spec), rest, rest),
        out_specs=(state, P()),
        check_vma=False,  # the step sums over the devices itself
      )
    epoch_fn = jax.jit(run_epochs, donate_argnums=0, out_shardings=(sh["state"], sh["replicated"]))
    eval_fn = jax.jit(
      over_runs(steps.make_evaluate(model, task.objective)), out_shardings=sh["replicated"]
    )
    eval_sharding = sh["eval"] if task.eval_splittable or mode == "runs" else sh["replicated"]
    observe_fn = None
    if (plateau := optim.plateau_of(cfg)) is not None:

      def observe(state, value, due):
        new = state.replace(opt_state=optim.observe_plateau(state.opt_state, value, *plateau))
        return jax.tree.map(lambda n, o: jnp.where(due, n, o), new, state)

      observe_fn = jax.jit(jax.vmap(observe), donate_argnums=0, out_shardings=sh["state"])
    return cls(configs, task, model, tx, sh, epoch_fn, eval_fn, eval_sharding, observe_fn)

  def open_runs(self, paths: Sequence[Path], finished: Sequence[bool], started: float) -> None:
    """Restores each run from its latest checkpoint, or starts it, and stacks the states."""
    states, keys = [], []
    # Compiled once for the group (the rates are traced): eager, it is most of a start.
    init = jax.jit(
      lambda key, dropout: steps.create_train_state(
        self.model.clone(dropout=dropout), self.tx, key, self.task.sample_x, self.task.objective
      )
    )
    for c, p, done in zip(self.configs[: len(paths)], paths, finished, strict=True):
      init_key, dropout_key = jax.random.split(jax.random.key(c.seed))
      fresh = init(init_key, self.model.dropout.member(c.dropout))
      folder = rf.RunFolder(p, keep=c.keep_checkpoints, write=par.is_main_process())
      run = _Run(c, folder, len(self.runs), fresh, started=started)
      folder.check_data(self.task.describe(run.index))
      restored = folder.resume(fresh, _FROM_CONFIG)
      state = fresh
      if restored is not None:
        state, meta = restored
        run.epoch, run.best, run.elapsed = meta["epoch"], meta["best"], meta["elapsed"]
        run.wall = meta.get("wall", meta["elapsed"])
      if done:  # finished earlier; trained along frozen (parallel="runs")
        run.status = "done"
      elif run.epoch == 0:
        n_params = int(sum(np.prod(a.shape) for a in jax.tree.leaves(state.params)))
        run.folder.log.append(
          {"event": "start", "epoch": 0, "n_params": n_params, **self.task.describe(run.index)}
        )
      self.runs.append(run)
      states.append(state)
      keys.append(jax.random.key_data(dropout_key))
    first, pads = self.runs[0], len(self.configs) - len(paths)  # pad runs: the first again
    for k in range(len(paths), len(self.configs)):
      self.runs.append(dataclasses.replace(first, index=k, folder=rf.ShadowFolder(first.folder)))
    states, keys = states + [states[0]] * pads, keys + [keys[0]] * pads
    # Host copies -> global arrays laid out on the mesh (each host its own rows).
    self.states = par.put(jax.device_get(par.stack(states)), self.shardings["state"])
    self.keys = par.put(np.stack(jax.device_get(keys)), self.shardings["state"])

  def train(
    self, paths: Sequence[Path], finished: Sequence[bool], *, progress: bool, started: float
  ) -> list:
    """Trains every run of the group to its end; returns their summaries.

    ``started``: ``time.perf_counter()`` when the call began (wall times count from it).
    """
    self.open_runs(paths, finished, started)
    eval_batches = {s: par.put(b, self.eval_sharding) for s, b in self.task.eval_batches().items()}
    self.console = console.progress(
      f"{self.configs[0].dataset} x{len(self.runs)}" if len(self.runs) > 1 else str(paths[0]),
      total=sum(c.epochs for c in self.configs),
      initial=sum(r.epoch for r in self.runs),
      epochs=max(c.epochs for c in self.configs),
      enabled=progress,
    )
    try:
      for run in self.runs:  # killed after its last checkpoint but before its summary
        if run.status != "done":
          run.check_done()
          if run.status != "running":
            self.finish(run)
      while any(r.status == "running" for r in self.runs):
        trained, metrics = self.train_epoch()
        self.log_train(trained, metrics)
        evals, rows = self.evaluate(trained, eval_batches), par.Rows(self.states)
        for k in trained:
          self.end_epoch(self.runs[k], evals, rows)
        text = console.scores([r.latest for r in self.runs], [r.best for r in self.runs])
        self.console.update(len(trained), max(self.runs[k].epoch for k in trained), text)
    finally:
      self.console.close()
      for r in self.runs:
        r.folder.close()
    par.sync("summaries written")
    return [rf.read_summary(p) for p in paths]

  def train_epoch(self) -> tuple[list[int], dict[str, np.ndarray]]:
    """One epoch of every running run in one call: the runs trained, their ``[K]`` metrics."""
    active = [r.status == "running" for r in self.runs]
    t0 = time.perf_counter()
    epochs = [r.epoch + 1 if a else 1 for r, a in zip(self.runs, active, strict=True)]
    batches = par.put(self.task.train_epoch_batches(epochs), self.shardings["batch"])
    active_flags = par.put(np.asarray(active), self.shardings["state"])
    self.states, metrics = self.epoch_fn(self.states, batches, self.keys, active_flags)
    metrics = jax.device_get(metrics)
    elapsed = time.perf_counter() - t0
    trained = [k for k, a in enumerate(active) if a]
    for k in trained:
      self.runs[k].epoch += 1
      self.runs[k].elapsed += elapsed
    return trained, metrics

  def log_train(self, trained: Sequence[int], metrics: dict[str, np.ndarray]) -> None:
    """Logs each trained run's epoch; a non-finite one ends its run as diverged."""
    steps_per_epoch = self.task.steps_per_epoch
    for k in trained:
      run = self.runs[k]
      m = {n: float(v[k]) for n, v in metrics.items()}
      record = {"epoch": run.epoch, "step": run.epoch * steps_per_epoch, "time": run.elapsed}
      record.update(self.task.train_record(m, run.config, run.epoch))
      run.latest = record
      if m["finite"]:
        run.folder.log.append(record)
        continue
      run.status = "diverged"
      good = run.folder.ckpt.latest_epoch()
      kept = (
        f"the last good checkpoint (epoch {good}) is kept"
        if good is not None
        else "no checkpoint was written before it"
      )
      run.error = (
        f"non-finite training loss or parameters in epoch {run.epoch} of {run.folder.path}; "
        f"{kept}. Lower the learning rate or clip gradients (--clip-norm)"
      )
      run.folder.log.append({**record, "event": "diverged", "error": run.error})
      self.finish(run)

  def evaluate(self, trained: Sequence[int], eval_batches: dict) -> dict[str, dict]:
    """Scores every split of every run once if any trained run is due; ``{}`` if none."""
    due = [k for k in trained if self.runs[k].due_for_eval()]
    if not due:
      return {}
    last = any(self.runs[k].epoch >= self.runs[k].config.epochs for k in due)
    evals = {
      split: jax.device_get(self.eval_fn(self.states, b))
      for split, b in eval_batches.items()
      if last or split not in self.task.final_only_splits
    }
    if self.observe_fn is not None:  # before the checkpoints: a resumed run has the new rate
      val = evals["val"]
      loss = np.asarray(val["loss_sum"], np.float32) / np.maximum(val["count"], 1.0)
      flags = np.isin(np.arange(len(self.runs)), due)
      self.states = self.observe_fn(
        self.states,
        par.put(loss.astype(np.float32), self.shardings["state"]),
        par.put(flags, self.shardings["state"]),
      )
    return evals

  def end_epoch(self, run: _Run, evals: dict[str, dict], rows: par.Rows) -> None:
    """Logs the run's evaluation, keeps its best, checkpoints, and finishes it if done."""
    if run.status != "running":
      return
    improved = False
    if evals and run.due_for_eval():
      record = {"epoch": run.epoch, "event": "eval"}
      for split, ev in evals.items():
        record.update(self.task.eval_record(split, {n: float(v[run.index]) for n, v in ev.items()}))
      run.folder.log.append(record)
      improved = run.best is None or self.task.better(record, run.best)
      if improved:
        run.best = record
    run.check_done()
    every = run.config.checkpoint_every
    if improved:
      run.unsaved_best = None  # superseded
    if every and (run.status != "running" or run.epoch % every == 0):
      self.save_best(run)
      run.folder.save(run.epoch, rows[run.index], run.meta(), best=improved)
    elif every and improved:
      # Written with the next checkpoint: a kill before it loses nothing, since
      # the resumed run repeats these epochs bit for bit and finds this best again.
      copy = lambda a: np.array(a) if isinstance(a, np.ndarray) else a  # not a view of all runs
      run.unsaved_best = (run.epoch, jax.tree.map(copy, rows[run.index]), run.meta())
    if run.status != "running":
      self.finish(run)

  def save_best(self, run: _Run) -> None:
    """Writes the run's best state held since its last checkpoint, if any."""
    if run.unsaved_best is not None:
      run.folder.save_best(*run.unsaved_best)
      run.unsaved_best = None

  def finish(self, run: _Run) -> None:
    """Writes ``summary.json`` (after the Monte-Carlo evaluation, if asked)."""
    if isinstance(run.folder, rf.ShadowFolder):
      return
    self.save_best(run)  # a diverged run's, which ends without a last checkpoint
    evals = [r for r in run.folder.log.records() if r.get("event") == "eval"]
    summary = {
      "status": run.status,
      "epochs": run.epoch,
      "steps": run.epoch * self.task.steps_per_epoch,
      "wall_time_s": run.meta()["wall"],  # start-up, evaluation and saving included
      "train_time_s": run.elapsed,
      "final": evals[-1] if evals else None,
      "best": run.best,
      "device": jax.devices()[0].device_kind,
    }
    self.console.run_ended(run.folder.path, run.status, run.epoch, run.best)
    if run.error:
      summary["error"] = run.error
    if run.config.mc_samples and run.best is not None:
      best_state, _ = run.folder.ckpt.restore(run.template, which="best", from_target=_FROM_CONFIG)
      model = self.model.clone(dropout=run.config.dropout)
      summary["mc"] = self.task.mc_evaluate(model, best_state, run.index)
    run.folder.write_summary(summary)


if __name__ == "__main__":  # python -m lstmdrop_jax.train: the command line (cli.py)
  from lstmdrop_jax.cli import main

  main()
