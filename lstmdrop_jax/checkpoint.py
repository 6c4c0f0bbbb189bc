"""Run folders and checkpoints (Orbax ``CheckpointManager``).

A run folder holds::

  config.json     the run's configuration (written once; guards reuse)
  metrics.jsonl   one JSON object per log event
  checkpoints/
    last/<epoch>/ the last ``keep`` checkpoints
    best/<epoch>/ the checkpoint with the best validation score
  summary.json    written when the run ends

Each checkpoint holds the train state (an arbitrary pytree) and a small JSON
``meta`` dict (epoch, best score so far, early-stopping counters, elapsed
time), so a resumed run continues with exactly the bookkeeping it had.
Orbax writes every checkpoint to a temporary folder and renames it when
complete, so a run killed at any moment leaves only whole checkpoints;
``config.json`` and ``summary.json`` are written the same way (temporary
file, then ``os.replace``). Nothing here knows about models.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


def write_json_atomic(path: Path, obj: Any) -> None:
  """Writes ``obj`` as JSON so that ``path`` is always either old or new."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def check_workdir(workdir: str | os.PathLike) -> Path:
  """Raises ``ValueError`` when ``workdir`` cannot be a run folder."""
  path = Path(workdir)
  if path.exists() and not path.is_dir():
    raise ValueError(f"workdir {str(path)!r} exists and is not a folder; pick another --workdir")
  for parent in path.parents:
    if parent.exists():
      if not parent.is_dir():
        raise ValueError(f"workdir {str(path)!r}: {str(parent)!r} is a file, not a folder")
      break
  return path


def prepare_run_folder(workdir: str | os.PathLike, config: dict[str, Any]) -> Path:
  """Creates the run folder, or checks that it belongs to ``config``.

  Returns:
    The folder's path.

  Raises:
    ValueError: the folder holds a run with another configuration (the
      message lists the differing fields), or ``workdir`` is a file.
  """
  path = check_workdir(workdir)
  cfg_path = path / "config.json"
  if cfg_path.exists():
    old = json.loads(cfg_path.read_text())
    if old != config:
      diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
      details = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff[:6])
      raise ValueError(
        f"{str(path)!r} holds a run with a different config ({details}); re-run with the "
        "same config to resume it, or choose a new --workdir"
      )
    return path
  if path.exists() and any(p.name != "config.json" for p in path.iterdir()):
    raise ValueError(
      f"{str(path)!r} is not empty and holds no config.json; it is not a run folder of "
      "this project. Choose a new --workdir"
    )
  path.mkdir(parents=True, exist_ok=True)
  write_json_atomic(cfg_path, config)
  return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
  """The records of a JSONL file, skipping a torn last line."""
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue  # a line cut by a kill mid-write
  return records


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
