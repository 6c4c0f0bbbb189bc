"""Run folders: the files of a run besides its checkpoints.

A run folder holds::

  config.json     the run's configuration (written once; guards reuse)
  metrics.jsonl   one JSON object per log event (``MetricsLog``)
  checkpoints/    the last k checkpoints and the best (``checkpoint.py``)
  summary.json    written when the run ends

``config.json`` and ``summary.json`` are written atomically (a temporary
file, then ``os.replace``), so a run killed at any moment leaves either the
old file or the new one. Nothing here knows about models.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


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


class MetricsLog:
  """A run folder's ``metrics.jsonl``: one JSON object per event, appended.

  Records carry the (1-based) ``epoch`` they belong to; ``truncate`` cuts the
  log back to what a checkpoint has seen, so a resumed run logs every epoch
  exactly once. ``write=False`` (the processes other than the first) makes
  every call a no-op.
  """

  def __init__(self, workdir: str | os.PathLike, *, write: bool = True):
    self.path = Path(workdir) / "metrics.jsonl"
    self.write = write

  def append(self, record: dict[str, Any]) -> None:
    if self.write:
      with open(self.path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")

  def records(self) -> list[dict[str, Any]]:
    return read_jsonl(self.path)

  def truncate(self, epoch: int) -> None:
    """Keeps the records of epochs up to ``epoch``."""
    if not self.write:
      return
    kept = [r for r in self.records() if r.get("epoch", 0) <= epoch]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
    tmp = self.path.with_name(".metrics.jsonl.tmp")
    tmp.write_text(text)
    tmp.replace(self.path)


def read_summary(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The run's ``summary.json``, or None while the run has not ended."""
  f = Path(workdir) / "summary.json"
  return json.loads(f.read_text()) if f.exists() else None


class RunFolder:
  """One run folder as the training loop uses it: log, checkpoints, summary.

  Args:
    workdir: the folder (``prepare_run_folder`` made it).
    keep: how many of the latest checkpoints to keep.
    write: whether this process writes the folder's own files (with several
      processes only the first does; all take part in checkpoints).
  """

  def __init__(self, workdir: str | os.PathLike, *, keep: int, write: bool = True):
    from lstmdrop_jax.checkpoint import RunCheckpoints

    self.path = Path(workdir)
    self.write = write
    self.log = MetricsLog(self.path, write=write)
    self.ckpt = RunCheckpoints(self.path, keep=keep)

  def resume(self, template: Any) -> tuple[Any, dict[str, Any]] | None:
    """The latest checkpoint's ``(state, meta)``, or None for a fresh start.

    Whatever a killed run wrote after that checkpoint (log records, newer
    checkpoints) is dropped, so the resumed run repeats those epochs exactly.
    """
    restored = self.ckpt.restore(template)
    if restored is None:
      self.log.truncate(0)
      return None
    state, meta = restored
    self.ckpt.discard_after(meta["epoch"])
    self.log.truncate(meta["epoch"])
    return state, meta

  def save(self, epoch: int, state: Any, meta: dict[str, Any], *, best: bool) -> None:
    """Checkpoints epoch ``epoch`` (and as the best one)."""
    self.ckpt.save(epoch, state, meta, best=best)

  def write_summary(self, summary: dict[str, Any]) -> None:
    if self.write:
      write_json_atomic(self.path / "summary.json", summary)

  def close(self) -> None:
    self.ckpt.close()
