"""Checkpoints of a run: the last ``keep`` and the best, with Orbax.

A run folder (``run_folder.py``) keeps them under ``checkpoints/``::

  checkpoints/
    last/<epoch>/ the last ``keep`` checkpoints
    best/<epoch>/ the checkpoint with the best validation score

Each checkpoint holds the train state (an arbitrary pytree) and a small JSON
``meta`` dict (epoch, best score so far, elapsed time), so a resumed run
continues with exactly the bookkeeping it had. Orbax writes every
checkpoint to a temporary folder and renames it when complete, so a run
killed at any moment leaves only whole checkpoints. Nothing here knows about
models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
  """The last ``keep`` checkpoints and the best one of a run folder.

  ``save`` writes in an order whose every prefix a resumed run can use: the
  best checkpoint first, then the last one, and only then the previous best
  is deleted. ``last/`` keeps one finished checkpoint through every write:
  with ``keep >= 2`` the oldest are deleted before the write, so it never
  holds more than ``keep``; with ``keep=1`` the old one is deleted after
  it, so it holds two for a moment rather than none. A kill between the
  writes leaves a best checkpoint newer than the last one, which
  ``discard_after`` removes when the run resumes from the last one and
  repeats the epoch.

  Args:
    workdir: the run folder.
    keep: how many of the latest checkpoints to keep (>= 1).
  """

  def __init__(self, workdir: str | os.PathLike, keep: int = 2):
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    self.keep = keep
    self.root = Path(workdir).absolute() / "checkpoints"

    def manager(name: str) -> ocp.CheckpointManager:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=None,  # pruned here, in the order above
        create=True,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,  # the remains of a write a kill cut short
      )
      handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
      return ocp.CheckpointManager(self.root / name, options=options, item_handlers=handlers)

    self._last = manager("last")
    self._best = manager("best")

  def save(self, epoch: int, state: Any, meta: dict[str, Any], *, best: bool = False) -> None:
    """Saves ``state`` and ``meta`` as epoch ``epoch`` (and as the best one)."""
    args = _args(state, meta)
    if best:
      _write(self._best, epoch, args)
    older = sorted(s for s in self._last.all_steps() if s != epoch)
    for old in older[: -max(self.keep - 1, 1)]:  # one finished checkpoint stays
      self._last.delete(old)
    _write(self._last, epoch, args)
    for old in sorted(self._last.all_steps())[: -self.keep]:
      self._last.delete(old)
    self.discard_stale_best(epoch)

  def save_best(self, epoch: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves an earlier epoch's state as the best one, before the next ``save``.

    A training loop may hold the best state in memory and write it only with
    the next last checkpoint: a kill before then loses nothing, since the
    resumed run repeats those epochs bit for bit and finds the same best.
    """
    _write(self._best, epoch, _args(state, meta))
    self.discard_stale_best(epoch)

  def discard_stale_best(self, epoch: int) -> None:
    """Keeps only the newest best checkpoint up to ``epoch``."""
    steps = sorted(s for s in self._best.all_steps() if s <= epoch)
    for old in steps[:-1]:
      self._best.delete(old)

  def discard_after(self, epoch: int) -> None:
    """Deletes checkpoints newer than ``epoch`` (left by a run that resumes earlier)."""
    for mgr in (self._last, self._best):
      for step in mgr.all_steps():
        if step > epoch:
          mgr.delete(step)

  def epochs(self, which: str = "last") -> list[int]:
    """The epochs of the finished checkpoints, oldest first."""
    return sorted(self._manager(which).all_steps())

  def latest_epoch(self, which: str = "last") -> int | None:
    return self._manager(which).latest_step()

  def restore(
    self,
    target: Any = None,
    *,
    which: str = "last",
    epoch: int | None = None,
    from_target: tuple[str, ...] = (),
  ) -> tuple[Any, dict[str, Any]] | None:
    """Restores ``(state, meta)``; None when there is no checkpoint.

    Args:
      target: a pytree of arrays (or ``jax.ShapeDtypeStruct``s, with
        shardings) giving the structure, dtypes and placement to restore to;
        None restores the tree as saved (nested dicts of arrays) onto the
        first local device, whatever device layout wrote it.
      which: ``"last"`` or ``"best"``.
      epoch: which epoch (default: the latest).
      from_target: fields of a dataclass ``target`` (``.replace``) to take
        from it rather than from the checkpoint: values the run's config
        fixes, whose saved form may differ (older versions saved fewer).
    """
    mgr = self._manager(which)
    epoch = mgr.latest_step() if epoch is None else epoch
    if epoch is None:
      return None
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    as_saved = lambda tree: jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree
    )
    if target is None:
      abstract = as_saved(mgr.item_metadata(epoch)["state"])
    else:
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    if from_target:
      saved = mgr.item_metadata(epoch)["state"]
      abstract = abstract.replace(**{n: as_saved(saved[n]) for n in from_target})
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    out = mgr.restore(epoch, args=args)
    state = out["state"]
    if from_target:
      state = state.replace(**{n: getattr(target, n) for n in from_target})
    return state, dict(out["meta"])

  def _manager(self, which: str) -> ocp.CheckpointManager:
    if which not in ("last", "best"):
      raise ValueError(f"which must be 'last' or 'best', got {which!r}")
    return self._last if which == "last" else self._best

  def close(self) -> None:
    self._last.close()
    self._best.close()


def _args(state: Any, meta: dict[str, Any]) -> ocp.args.Composite:
  return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


def _write(mgr: ocp.CheckpointManager, epoch: int, args: Any) -> None:
  """One synchronous save; raises if Orbax did not finish it.

  Orbax logs, rather than raises, some failures of a save's last step, so
  the checkpoint's presence is checked.
  """
  mgr.save(epoch, args=args, force=True)
  mgr.wait_until_finished()
  mgr.reload()
  if epoch not in mgr.all_steps():
    raise OSError(f"the checkpoint of epoch {epoch} was not completed in {mgr.directory}")
