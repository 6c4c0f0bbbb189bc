"""One group of runs trained together: ``Group`` compiles the epoch and evaluation
functions once and drives every run's epochs, evaluations, checkpoints and summary;
``Run`` is one run's host-side bookkeeping."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from lstmdrop_jax import console, groups, optim, steps
from lstmdrop_jax import parallel as par
from lstmdrop_jax import run_folder as rf
from lstmdrop_jax.config import Config
from lstmdrop_jax.tasks import Task

#: Train-state fields the run's config fixes: restored from the config, not the
#: checkpoint (whose form of them depends on the version that wrote it).
_FROM_CONFIG = ("dropout",)


@dataclasses.dataclass
class Run:
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
    elif self.out_of_patience():
      self.status = "early_stopped"

  def out_of_patience(self) -> bool:
    """Early stopping is on and this epoch, an evaluation's (never one between two), is at
    least ``early_stopping`` epochs after the best."""
    c = self.config
    return bool(
      c.early_stopping
      and self.best
      and self.epoch % c.eval_every == 0
      and self.epoch - self.best["epoch"] >= c.early_stopping
    )

  def due_for_eval(self) -> bool:
    c = self.config
    return self.status == "running" and (self.epoch % c.eval_every == 0 or self.epoch >= c.epochs)


@dataclasses.dataclass
class Group:
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
  runs: list[Run] = dataclasses.field(default_factory=list)
  console: Any = None  # console.Progress while training
  states: Any = None  # the stacked train states, laid out on the mesh
  keys: Any = None  # the stacked dropout keys

  @classmethod
  def compile(
    cls, task: Task, configs: Sequence[Config], mesh, mode: str, at_once: int | None
  ) -> Group:
    """Builds the model and the jitted epoch and evaluation functions."""
    cfg = configs[0]
    sh = par.shardings(mode, mesh)
    # The step has every placement a run of the group uses; each run's rates are in its state.
    union = dataclasses.replace(cfg, dropout=groups.union([c.dropout for c in configs]))
    model = task.model_from(union, task.describe(0))
    tx = optim.optimizer_of(cfg, task.steps_per_epoch)
    over_runs = partial(par.map_runs, mode=mode, mesh=mesh, runs=len(configs), at_once=at_once)
    epoch_fn = _epoch_function(task, model, tx, over_runs, mesh, mode, sh)
    eval_fn = jax.jit(
      over_runs(steps.make_evaluate(model, task.objective)), out_shardings=sh["replicated"]
    )
    eval_sharding = sh["eval"] if task.eval_splittable or mode == "runs" else sh["replicated"]
    observe_fn = _observe_function(cfg, sh)
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
      run = Run(c, folder, len(self.runs), fresh, started=started)
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
    """Scores every split of every run once if any trained run is due; ``{}`` if none. The
    final-only splits are scored when a due run ends here (all epochs, or early stopping)."""
    due = [k for k in trained if self.runs[k].due_for_eval()]
    if not due:
      return {}
    score = lambda splits: {
      split: jax.device_get(self.eval_fn(self.states, eval_batches[split])) for split in splits
    }
    final_only = self.task.final_only_splits
    evals = score([s for s in eval_batches if s not in final_only])
    if any(self.ends_here(k, evals) for k in due):
      evals.update(score([s for s in eval_batches if s in final_only]))
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

  def ends_here(self, k: int, evals: dict[str, dict]) -> bool:
    """Whether run ``k``'s epoch is its last, given this evaluation (``end_epoch`` then
    marks it finished or early-stopped)."""
    run = self.runs[k]
    if run.epoch >= run.config.epochs:
      return True
    if not run.out_of_patience() or "val" not in evals:
      return False
    val = self.task.eval_record("val", {n: float(v[k]) for n, v in evals["val"].items()})
    return not self.task.better(val, run.best)  # an improvement would reset the patience

  def end_epoch(self, run: Run, evals: dict[str, dict], rows: par.Rows) -> None:
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

  def save_best(self, run: Run) -> None:
    """Writes the run's best state held since its last checkpoint, if any."""
    if run.unsaved_best is not None:
      run.folder.save_best(*run.unsaved_best)
      run.unsaved_best = None

  def finish(self, run: Run) -> None:
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


def _epoch_function(task: Task, model, tx, over_runs, mesh, mode: str, sh: dict) -> Any:
  """One epoch of every run of the group, jitted: ``(states, batches, keys, active) ->
  (states, metrics)``; inactive runs (finished, stopped, diverged) keep their state."""
  split = mode == "data" and mesh.size > 1  # each device trains on its rows of the batch
  axis = par.AXIS if split else None
  train_epoch = steps.make_train_epoch(
    steps.make_train_step(model, tx, task.objective, batch_axis=axis)
  )

  def run_epoch(state, batches, key_data, active):
    new, metrics = train_epoch(state, batches, jax.random.wrap_key_data(key_data))
    metrics = dict(metrics, lr_scale=optim.lr_scale(new.opt_state))
    return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), metrics

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
  return jax.jit(run_epochs, donate_argnums=0, out_shardings=(sh["state"], sh["replicated"]))


def _observe_function(cfg: Config, sh: dict) -> Any:
  """``(states, val_losses, due) -> states``, jitted: feeds each due run's validation loss
  to its plateau schedule; None for the other schedules."""
  plateau = optim.plateau_of(cfg)
  if plateau is None:
    return None

  def observe(state, value, due):
    new = state.replace(opt_state=optim.observe_plateau(state.opt_state, value, *plateau))
    return jax.tree.map(lambda n, o: jnp.where(due, n, o), new, state)

  return jax.jit(jax.vmap(observe), donate_argnums=0, out_shardings=sh["state"])
