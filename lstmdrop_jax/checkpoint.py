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

  Args:
    workdir: the run folder.
    keep: how many of the latest checkpoints to keep (>= 1).
  """

  def __init__(self, workdir: str | os.PathLike, keep: int = 2):
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    root = Path(workdir).absolute() / "checkpoints"

    def manager(name: str, max_to_keep: int) -> ocp.CheckpointManager:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
      )
      handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
      return ocp.CheckpointManager(root / name, options=options, item_handlers=handlers)

    self._last = manager("last", keep)
    self._best = manager("best", 1)

  def save(self, epoch: int, state: Any, meta: dict[str, Any], *, best: bool = False) -> None:
    """Saves ``state`` and ``meta`` as epoch ``epoch`` (and as the best one)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    self._last.save(epoch, args=args, force=True)
    if best:
      self._best.save(epoch, args=args, force=True)
    self._last.wait_until_finished()
    self._best.wait_until_finished()

  def discard_after(self, epoch: int) -> None:
    """Deletes checkpoints newer than ``epoch`` (left by a run that resumes earlier)."""
    for mgr in (self._last, self._best):
      for step in mgr.all_steps():
        if step > epoch:
          mgr.delete(step)

  def latest_epoch(self, which: str = "last") -> int | None:
    return self._manager(which).latest_step()

  def restore(
    self, target: Any = None, *, which: str = "last", epoch: int | None = None
  ) -> tuple[Any, dict[str, Any]] | None:
    """Restores ``(state, meta)``; None when there is no checkpoint.

    Args:
      target: a pytree of arrays (or ``jax.ShapeDtypeStruct``s, with
        shardings) giving the structure, dtypes and placement to restore to;
        None restores the tree as saved (nested dicts of arrays) onto the
        first local device, whatever device layout wrote it.
      which: ``"last"`` or ``"best"``.
      epoch: which epoch (default: the latest).
    """
    mgr = self._manager(which)
    epoch = mgr.latest_step() if epoch is None else epoch
    if epoch is None:
      return None
    if target is None:
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        mgr.item_metadata(epoch)["state"],
      )
    else:
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    out = mgr.restore(epoch, args=args)
    return out["state"], dict(out["meta"])

  def _manager(self, which: str) -> ocp.CheckpointManager:
    if which not in ("last", "best"):
      raise ValueError(f"which must be 'last' or 'best', got {which!r}")
    return self._last if which == "last" else self._best

  def close(self) -> None:
    self._last.close()
    self._best.close()
