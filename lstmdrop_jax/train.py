"""The training loop: ``train_and_evaluate(config, workdir)``, and its CLI.

One loop trains one run, or K runs at once (``train_runs``): runs that share
the model's shape and differ in seed and dropout rates are stacked on a
leading axis and trained by one ``vmap``-ed, jitted epoch function, each run
still writing its own run folder. Every run has its own epoch counter, so
runs resumed from different checkpoints train together; a run that finishes,
stops early or diverges is frozen while the others go on.

An epoch is one compiled call: ``lax.scan`` of the pure ``train_step`` over
the epoch's batches, metrics summed on device and fetched once.

Command line (every ``Config`` field is a flag; see ``--help``)::

  python -m lstmdrop_jax.train --workdir runs/gunpoint --dataset GunPoint \\
      --dropout.output 0.3 --epochs 200

Re-running the same command resumes the run bit for bit from its last
checkpoint; the same folder with another config is refused.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Both are dependencies; a bare GPU machine without them still imports this module
# and trains (without a bar), only the command line needs tyro.
try:
  from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
  tqdm = None
try:
  import tyro
except ImportError:  # pragma: no cover
  tyro = None

from lstmdrop_jax import parallel as par
from lstmdrop_jax import steps
from lstmdrop_jax.checkpoint import (
  RunCheckpoints,
  check_workdir,
  prepare_run_folder,
  read_jsonl,
  write_json_atomic,
)
from lstmdrop_jax.config import PER_RUN_FIELDS, Config, build_model, is_language_model
from lstmdrop_jax.tasks import ClassificationData, LanguageModelData

__all__ = ["Config", "build_model", "main", "train_and_evaluate", "train_runs"]


def train_and_evaluate(
  config: Config, workdir: str | Path, *, progress: bool = True
) -> dict[str, Any]:
  """Trains one run in ``workdir`` (resuming it if it exists) and returns its summary.

  Data parallel over every device (one device: plain training); see
  ``parallel.py``.

  Raises:
    ValueError: a bad config, or ``workdir`` holds another config.
    FloatingPointError: the loss or the parameters became non-finite; the
      last good checkpoint is kept.
  """
  summary = train_runs([config], [workdir], progress=progress)[0]
  if summary["status"] == "diverged":
    raise FloatingPointError(summary["error"])
  return summary


def train_runs(
  configs: Sequence[Config],
  workdirs: Sequence[str | Path],
  *,
  progress: bool = True,
  parallel: str = "data",
) -> list[dict[str, Any]]:
  """Trains K runs together (one vmapped step), each in its own run folder.

  The configs may differ only in ``seed`` and the dropout rates (not in
  ``dropout.time_locked``). Finished runs are read back, not retrained.
  ``parallel`` says how the devices share the work: ``"data"`` splits every
  batch over them, ``"runs"`` gives each device whole runs (K must be a
  multiple of the device count); see ``parallel.py``.

  Returns:
    One summary per run, in order. A run whose loss became non-finite has
    ``status == 'diverged'`` and an ``error``; its folder keeps its last
    good checkpoint.
  """
  if not configs or len(configs) != len(workdirs):
    raise ValueError(
      f"need one workdir per config, got {len(configs)} configs and {len(workdirs)} workdirs"
    )
  for c in configs:
    c.validate()
  _check_stackable(configs)
  paths = [check_workdir(w).absolute() for w in workdirs]
  if len(set(paths)) != len(paths):
    raise ValueError("two runs share a workdir; give each run its own folder")
  mesh = par.make_mesh()
  par.check_layout(parallel, mesh, runs=len(configs), batch_size=configs[0].batch_size)
  if par.is_main_process():
    for p, c in zip(paths, configs, strict=True):
      prepare_run_folder(p, c.to_dict())
  par.sync("run folders prepared")
  summaries: list[dict | None] = [_read_summary(p) for p in paths]
  # Data parallel: train only the unfinished runs. Runs parallel: keep the
  # group whole (finished runs ride along frozen) so it still splits evenly.
  todo = [k for k, s in enumerate(summaries) if s is None or parallel == "runs"]
  if any(summaries[k] is None for k in todo):
    done = _train_group(
      [configs[k] for k in todo],
      [paths[k] for k in todo],
      [summaries[k] is not None for k in todo],
      mesh=mesh,
      mode=parallel,
      progress=progress and par.is_main_process(),
    )
    for k, s in zip(todo, done, strict=True):
      summaries[k] = s
  par.sync("runs finished")
  return summaries  # type: ignore[return-value]


def _check_stackable(configs: Sequence[Config]) -> None:
  ref = configs[0].to_dict()
  for c in configs[1:]:
    d = c.to_dict()
    diff = [k for k in ref if k not in PER_RUN_FIELDS and ref[k] != d[k]]
    if ref["dropout"]["time_locked"] != d["dropout"]["time_locked"]:
      diff.append("dropout.time_locked")
    if diff:
      raise ValueError(
        f"runs trained together may differ only in seed and dropout rates; these differ: {diff}"
      )


def _read_summary(path: Path) -> dict | None:
  f = path / "summary.json"
  return json.loads(f.read_text()) if f.exists() else None


@dataclasses.dataclass
class _Run:
  """Host-side bookkeeping of one run (saved as the checkpoint's ``meta``)."""

  config: Config
  path: Path
  ckpt: RunCheckpoints
  index: int  # position in the stacked state
  template: Any  # a fresh state: the structure checkpoints restore into
  epoch: int = 0
  best: dict[str, Any] | None = None
  elapsed: float = 0.0
  status: str = "running"
  error: str | None = None

  def meta(self) -> dict[str, Any]:
    return {"epoch": self.epoch, "best": self.best, "elapsed": self.elapsed}

  def log(self, record: dict[str, Any]) -> None:
    if not par.is_main_process():
      return
    with open(self.path / "metrics.jsonl", "a") as f:
      f.write(json.dumps(record, sort_keys=True) + "\n")

  def truncate_log(self, epoch: int) -> None:
    """Keeps the log records of epochs up to ``epoch`` (those the checkpoint saw)."""
    if not par.is_main_process():
      return
    kept = [r for r in read_jsonl(self.path / "metrics.jsonl") if r.get("epoch", 0) <= epoch]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
    tmp = self.path / ".metrics.jsonl.tmp"
    tmp.write_text(text)
    tmp.replace(self.path / "metrics.jsonl")


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _index(tree: Any, k: int) -> Any:
  return jax.tree.map(lambda a: a[k], tree)


def _train_group(
  configs: Sequence[Config],
  paths: Sequence[Path],
  finished: Sequence[bool],
  *,
  mesh,
  mode: str,
  progress: bool,
) -> list[dict]:
  cfg = configs[0]
  lm = is_language_model(cfg.dataset)
  data = LanguageModelData(configs) if lm else ClassificationData(configs, multiple=mesh.size)
  sh = par.shardings(mode, mesh)
  model = build_model(
    cfg,
    num_classes=getattr(data, "num_classes", None),
    vocab_size=getattr(data, "vocab_size", None),
  )
  tx = steps.make_optimizer(
    cfg.optimizer,
    cfg.learning_rate,
    steps_per_epoch=data.steps_per_epoch,
    lr_decay=cfg.lr_decay,
    decay_after=cfg.decay_after,
    clip_norm=cfg.clip_norm,
    weight_decay=cfg.weight_decay,
  )
  train_step = steps.make_train_step(model, tx)
  eval_split = data.make_eval_split(model)

  def run_epoch(state, batches, key_data, active):
    key = jax.random.wrap_key_data(key_data)
    if lm:  # the hidden state is reset at the start of each epoch
      state = state.replace(carry=jax.tree.map(jnp.zeros_like, state.carry))
    new, per_step = jax.lax.scan(lambda s, b: train_step(s, b, key), state, batches)
    metrics = jax.tree.map(lambda a: jnp.sum(a, 0), per_step)
    metrics["finite"] = jnp.isfinite(optax.tree.norm(new.params)) & jnp.isfinite(
      metrics["loss_sum"]
    )
    # Frozen runs (finished, stopped, diverged) keep their state.
    new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)
    return new, metrics

  epoch_fn = jax.jit(
    jax.vmap(run_epoch), donate_argnums=0, out_shardings=(sh["state"], sh["replicated"])
  )
  eval_fn = jax.jit(jax.vmap(eval_split), out_shardings=sh["replicated"])
  eval_sharding = sh["eval"] if data.eval_splittable or mode == "runs" else sh["replicated"]

  runs, states, keys = [], [], []
  for c, p, done in zip(configs, paths, finished, strict=True):
    init_key, dropout_key = jax.random.split(jax.random.key(c.seed))
    fresh = steps.create_train_state(model.clone(dropout=c.dropout), tx, init_key, data.sample_x)
    run = _Run(c, p, RunCheckpoints(p, keep=c.keep_checkpoints), len(runs), fresh)
    restored = run.ckpt.restore(fresh)
    if restored is None:
      run.truncate_log(0)
      state = fresh
    else:
      state, meta = restored
      run.epoch, run.best, run.elapsed = meta["epoch"], meta["best"], meta["elapsed"]
      run.ckpt.discard_after(run.epoch)
      run.truncate_log(run.epoch)
    if done:  # finished earlier; trained along frozen (parallel="runs")
      run.status = "done"
    elif run.epoch == 0:
      run.log(
        {"event": "start", "epoch": 0, "n_params": _count(state.params), **data.describe(len(runs))}
      )
    runs.append(run)
    states.append(state)
    keys.append(jax.random.key_data(dropout_key))
  # Host copies -> global arrays laid out on the mesh (each host its own rows).
  states = par.put(jax.device_get(_stack(states)), sh["state"])
  keys = par.put(np.stack(jax.device_get(keys)), sh["state"])
  eval_batches = {s: par.put(b, eval_sharding) for s, b in data.eval_batches().items()}

  bar = (tqdm if tqdm is not None and progress else _NoBar)(
    total=sum(c.epochs for c in configs),
    initial=sum(r.epoch for r in runs),
    desc=f"{cfg.dataset} x{len(runs)}",
    unit="epoch",
    file=sys.stderr,
    mininterval=0.5 if sys.stderr.isatty() else 30.0,
  )
  try:
    for run in runs:  # killed after its last checkpoint but before its summary
      if run.status == "done":
        continue
      _check_done(run)
      if run.status != "running":
        _finish(run, data, model)
    while any(r.status == "running" for r in runs):
      active = [r.status == "running" for r in runs]
      t0 = time.perf_counter()
      epochs = [r.epoch + 1 if a else 1 for r, a in zip(runs, active, strict=True)]
      batches = par.put(data.train_epoch_batches(epochs), sh["batch"])
      states, metrics = epoch_fn(states, batches, keys, par.put(np.asarray(active), sh["state"]))
      metrics = jax.device_get(metrics)
      elapsed = time.perf_counter() - t0
      trained = [k for k in range(len(runs)) if active[k]]
      for k in trained:
        run = runs[k]
        run.epoch += 1
        run.elapsed += elapsed
        bar.update(1)
        m = {n: float(v[k]) for n, v in metrics.items()}
        record = {"epoch": run.epoch, "step": run.epoch * data.steps_per_epoch, "time": run.elapsed}
        record.update(data.train_record(m, run.config, run.epoch))
        if m["finite"]:
          run.log(record)
          continue
        run.status = "diverged"
        run.error = (
          f"non-finite training loss or parameters in epoch {run.epoch} of {run.path}; "
          f"the last good checkpoint (epoch {run.ckpt.latest_epoch()}) is kept. Lower the "
          "learning rate or clip gradients (--clip-norm)"
        )
        run.log({**record, "event": "diverged", "error": run.error})
        _finish(run, data, model)
      need_eval = [
        k
        for k in trained
        if runs[k].status == "running"
        and (
          runs[k].epoch % runs[k].config.eval_every == 0 or runs[k].epoch >= runs[k].config.epochs
        )
      ]
      if need_eval:
        last = any(runs[k].epoch >= runs[k].config.epochs for k in need_eval)
        evals = {
          split: jax.device_get(eval_fn(states, b))
          for split, b in eval_batches.items()
          if last or split not in data.final_only_splits
        }
      for k in trained:
        run = runs[k]
        if run.status != "running":
          continue
        improved = False
        if k in need_eval:
          record = {"epoch": run.epoch, "event": "eval"}
          for split, ev in evals.items():
            record.update(data.eval_record(split, {n: float(v[k]) for n, v in ev.items()}))
          run.log(record)
          improved = run.best is None or data.better(record, run.best)
          if improved:
            run.best = record
        _check_done(run)
        if improved or run.status != "running" or run.epoch % run.config.checkpoint_every == 0:
          run.ckpt.save(run.epoch, _index(states, k), run.meta(), best=improved)
        if run.status != "running":
          _finish(run, data, model)
      bar.set_postfix_str(data.postfix([r.best for r in runs]))
  finally:
    bar.close()
    for r in runs:
      r.ckpt.close()
  par.sync("summaries written")
  return [_read_summary(r.path) for r in runs]


class _NoBar:
  def __init__(self, **_):
    pass

  def update(self, n: int) -> None:
    pass

  def set_postfix_str(self, s: str) -> None:
    pass

  def close(self) -> None:
    pass


def _check_done(run: _Run) -> None:
  """Marks a run finished (all epochs) or early-stopped (no recent improvement)."""
  c = run.config
  if run.status != "running":
    return
  if run.epoch >= c.epochs:
    run.status = "finished"
  elif c.early_stopping and run.best and run.epoch - run.best["epoch"] >= c.early_stopping:
    run.status = "early_stopped"


def _finish(run: _Run, data, model) -> None:
  """Writes ``summary.json`` (and runs the Monte-Carlo evaluation if asked)."""
  records = read_jsonl(run.path / "metrics.jsonl")
  evals = [r for r in records if r.get("event") == "eval"]
  summary = {
    "status": run.status,
    "epochs": run.epoch,
    "steps": run.epoch * data.steps_per_epoch,
    "wall_time_s": run.elapsed,
    "final": evals[-1] if evals else None,
    "best": run.best,
    "device": jax.devices()[0].device_kind,
  }
  if run.error:
    summary["error"] = run.error
  if run.config.mc_samples and run.best is not None:
    summary["mc"] = data.mc_evaluate(model, run)
  if par.is_main_process():
    write_json_atomic(run.path / "summary.json", summary)


def _count(params) -> int:
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(params)))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Command-line entry point: ``python -m lstmdrop_jax.train --workdir DIR [flags]``."""
  try:
    args = tyro.cli(_Cli, args=argv, description=__doc__.split("\n\n")[0])
    par.use_cpu_devices(args.cpu_devices)
    par.keep_freed_host_memory()
    par.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    summary = train_and_evaluate(args.config, args.workdir)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  print(json.dumps({k: summary[k] for k in ("status", "epochs", "best")}, indent=2))
  return summary


@dataclasses.dataclass(frozen=True)
class _Cli:
  workdir: Path
  """Run folder: created if absent, resumed if it holds this config."""
  config: Annotated[Config, tyro.conf.arg(name="")] = Config()
  coordinator: str | None = None
  """Multi-host: host:port of process 0 (with --num-processes and --process-id).
  Inside a SLURM allocation of several tasks these are read from SLURM."""
  num_processes: int | None = None
  """Multi-host: number of processes."""
  process_id: int | None = None
  """Multi-host: this process's index."""
  cpu_devices: int | None = None
  """CPU: present the CPU as this many JAX devices (e.g. one per core) and train
  data parallel across them; the batch size must be a multiple of it."""


if __name__ == "__main__":
  main()
