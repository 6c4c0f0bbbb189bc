"""Run folders: the files of a run besides its checkpoints, and how they recover.

A run folder holds::

  config.json     the run's configuration (written once; guards reuse)
  data.json       what the run trains on: classes or vocabulary, split sizes, the
                  normalisation statistics, a fingerprint of your own arrays
  metrics.jsonl   one JSON object per log event (``MetricsLog``)
  checkpoints/    the last k checkpoints and the best (``checkpoint.py``)
  summary.json    written when the run ends

``config.json`` and ``summary.json`` are written atomically (a temporary
file, then ``os.replace``), so a run killed at any moment leaves either the
old file or the new one, and perhaps a temporary file that the next run
removes. Every failure to read or write the folder is a ``RunFolderError``
whose message names the file, the operation and what to do. Nothing here
knows about models.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class RunFolderError(Exception):
  """A run folder could not be read or written; the message says which file and what to do."""


_HINTS = {
  errno.ENOSPC: "free some space, then re-run the same command to resume",
  errno.EDQUOT: "free some space, then re-run the same command to resume",
  errno.EACCES: "check the folder's permissions, or choose another --workdir",
  errno.EPERM: "check the folder's permissions, or choose another --workdir",
  errno.EROFS: "the file system is read-only; choose another --workdir",
  errno.ENOENT: "check that the path exists",
}


@contextlib.contextmanager
def os_errors(operation: str, path: str | os.PathLike) -> Iterator[None]:
  """Turns an ``OSError`` into a ``RunFolderError`` naming ``operation`` and ``path``."""
  try:
    yield
  except OSError as e:
    reason = e.strerror or str(e)
    hint = _HINTS.get(e.errno, "fix that, then re-run the same command to resume")
    raise RunFolderError(f"cannot {operation} {os.fspath(path)}: {reason}; {hint}") from e


def write_json_atomic(path: Path, obj: Any) -> None:
  """Writes ``obj`` as JSON so that ``path`` is always either old or new."""
  path = Path(path)
  with os_errors("write", path):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
      with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    except BaseException:  # a kill leaves the temporary file; the next run removes it
      Path(tmp).unlink(missing_ok=True)
      raise


def read_json(path: Path, fix: str) -> Any:
  """A JSON file of a run folder; ``fix`` says what to do when it is damaged."""
  with os_errors("read", path):
    text = Path(path).read_text()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise RunFolderError(
      f"{path} is damaged: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); {fix}"
    ) from None


def _temp_files(folder: Path) -> list[Path]:
  """Temporary files that a write cut short by a kill left behind."""
  names = (".config.json.", ".summary.json.", ".metrics.jsonl.", ".data.json.")
  return [p for p in folder.iterdir() if p.name.startswith(names) and p.name.endswith(".tmp")]


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


def read_config(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The ``config.json`` of the run in ``workdir``, or None for a new run; writes nothing.

  Raises:
    ValueError: the folder is not a run folder (not empty, no config.json),
      or ``workdir`` is a file.
    RunFolderError: its ``config.json`` is damaged or unreadable.
  """
  path = check_workdir(workdir)
  cfg_path = path / "config.json"
  if cfg_path.exists():
    return read_json(
      cfg_path,
      "restore it (it holds the run's flags), or start the run afresh in a new --workdir",
    )
  if path.exists():
    with os_errors("list", path):
      foreign = [p for p in path.iterdir() if p not in _temp_files(path)]
    if foreign:
      raise ValueError(
        f"{str(path)!r} is not empty and holds no config.json; it is not a run folder of "
        "this project. Choose a new --workdir"
      )
  return None


def never_trained(workdir: str | os.PathLike) -> bool:
  """Whether the run folder in ``workdir`` holds a config but no training: no epoch in
  its log, no checkpoint file and no summary (a start that failed, or was killed,
  before its first epoch)."""
  path = Path(workdir)
  if not (path / "config.json").exists() or (path / "summary.json").exists():
    return False
  if any(r.get("epoch", 0) >= 1 for r in read_jsonl(path / "metrics.jsonl")):
    return False
  with os_errors("list the checkpoints of", path):
    return not any(p.is_file() for p in (path / "checkpoints").rglob("*"))


def create_run_folder(workdir: str | os.PathLike, config: dict[str, Any]) -> Path:
  """Creates the folder of a new run and writes its ``config.json``; what a start that
  never trained left there (``never_trained``: its data description, log and empty
  checkpoint folders) goes first."""
  path = Path(workdir)
  with os_errors("create the run folder", path):
    path.mkdir(parents=True, exist_ok=True)
    for tmp in _temp_files(path):
      tmp.unlink()
    for name in ("data.json", "metrics.jsonl"):
      (path / name).unlink(missing_ok=True)
    if (path / "checkpoints").is_dir():
      shutil.rmtree(path / "checkpoints")
  write_json_atomic(path / "config.json", config)
  return path


def prepare_run_folder(workdir: str | os.PathLike, config: dict[str, Any], kind: str) -> None:
  """Readies ``workdir`` for ``config`` as ``config.resume_kind`` judged it: creates a
  ``"new"`` run's folder, extends an ``"extend"`` one, leaves a ``"same"`` one."""
  if kind == "new":
    create_run_folder(workdir, config)
  elif kind == "extend":
    extend_run_folder(workdir, config)


def extend_run_folder(workdir: str | os.PathLike, config: dict[str, Any]) -> None:
  """Makes the run in ``workdir`` the run of ``config`` (more epochs, say).

  The summary goes first: a kill before the new ``config.json`` is written
  leaves the old run unfinished, and either command then continues it.
  """
  path = Path(workdir)
  with os_errors("remove the summary of the run being extended in", path):
    (path / "summary.json").unlink(missing_ok=True)
  write_json_atomic(path / "config.json", config)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
  """The records of a JSONL file, skipping a torn last line."""
  if not path.exists():
    return []
  with os_errors("read", path):
    lines = path.read_text().splitlines()
  records = []
  for line in lines:
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
      with os_errors("append to", self.path), open(self.path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")

  def records(self) -> list[dict[str, Any]]:
    return read_jsonl(self.path)

  def truncate(self, epoch: int) -> None:
    """Keeps the records of epochs up to ``epoch`` (none for ``epoch < 0``)."""
    if not self.write:
      return
    kept = [r for r in self.records() if epoch >= 0 and r.get("epoch", 0) <= epoch]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
    tmp = self.path.with_name(".metrics.jsonl.tmp")
    with os_errors("rewrite", self.path):
      tmp.write_text(text)
      tmp.replace(self.path)


def read_summary(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The run's ``summary.json``, or None while the run has not ended."""
  f = Path(workdir) / "summary.json"
  if not f.exists():
    return None
  return read_json(
    f, "delete it and re-run the same command: the summary is rebuilt from the last checkpoint"
  )


class RunFolder:
  """One run folder as the training loop uses it: log, checkpoints, summary.

  Args:
    workdir: the folder (``create_run_folder`` made it).
    keep: how many of the latest checkpoints to keep.
    write: whether this process writes the folder's own files (with several
      processes only the first does; all take part in checkpoints).
  """

  def __init__(self, workdir: str | os.PathLike, *, keep: int, write: bool = True):
    from lstmdrop_jax.checkpoint import RunCheckpoints

    self.path = Path(workdir)
    self.write = write
    self.log = MetricsLog(self.path, write=write)
    with os_errors("open the checkpoints of", self.path):
      self.ckpt = RunCheckpoints(self.path, keep=keep)
    if write:
      with os_errors("clean up", self.path):
        for tmp in _temp_files(self.path):
          tmp.unlink()

  def check_data(self, described: dict[str, Any]) -> None:
    """Writes ``data.json`` on the first start; later, checks the run still sees that data.

    Raises:
      ValueError: the classes, normalisation or arrays differ from the ones
        the run started with.
    """
    path = self.path / "data.json"
    if not path.exists():
      if self.write:
        write_json_atomic(path, described)
      return
    old = read_json(path, "delete it: it is rewritten from the data on the next start")
    keys = ("classes", "vocab_size", "normalizer", "fingerprint")
    diff = [k for k in keys if old.get(k) != described.get(k)]
    if diff:
      raise ValueError(
        f"{self.path} was trained on other data: its {', '.join(diff)} differ from the data "
        "given now. Train on the same data to resume it, or choose a new --workdir"
      )

  def resume(
    self, template: Any, from_template: tuple[str, ...] = ()
  ) -> tuple[Any, dict[str, Any]] | None:
    """The newest intact checkpoint's ``(state, meta)``, or None for a fresh start.

    Whatever a killed run wrote after that checkpoint (log records, newer or
    damaged checkpoints) is dropped, so the resumed run repeats those epochs
    exactly. A damaged checkpoint is skipped with a warning. ``from_template``:
    fields taken from ``template`` (``RunCheckpoints.restore``'s ``from_target``).

    Raises:
      RunFolderError: there are checkpoints, but none can be read.
    """
    epochs = self.ckpt.epochs()
    if not epochs:
      self.ckpt.discard_after(0)
      self.log.truncate(-1)
      return None
    failures = []
    for epoch in reversed(epochs):
      try:
        state, meta = self.ckpt.restore(template, epoch=epoch, from_target=from_template)
      except Exception as e:
        failures.append(f"epoch {epoch}: {type(e).__name__}: {str(e)[:200]}")
        warnings.warn(
          f"skipping the damaged checkpoint of epoch {epoch} in {self.ckpt.root / 'last'} "
          f"({type(e).__name__}); the run resumes from an older one and repeats the epochs",
          stacklevel=2,
        )
        continue
      with os_errors("discard the checkpoints newer than the one resumed in", self.path):
        self.ckpt.discard_after(epoch)
        self.ckpt.discard_stale_best(epoch)
      self.log.truncate(epoch)
      return state, meta
    raise RunFolderError(
      f"no intact checkpoint in {self.ckpt.root / 'last'} ({'; '.join(failures)}); move the "
      f"folder {self.path} away and start the run afresh in a new --workdir"
    )

  def save(self, epoch: int, state: Any, meta: dict[str, Any], *, best: bool) -> None:
    """Checkpoints epoch ``epoch`` (and as the best one)."""
    with self._writing(f"the checkpoint of epoch {epoch}"):
      self.ckpt.save(epoch, state, meta, best=best)

  def save_best(self, epoch: int, state: Any, meta: dict[str, Any]) -> None:
    """Checkpoints an earlier epoch as the best one (``RunCheckpoints.save_best``)."""
    with self._writing(f"the best checkpoint (epoch {epoch})"):
      self.ckpt.save_best(epoch, state, meta)

  @contextlib.contextmanager
  def _writing(self, what: str) -> Iterator[None]:
    try:
      yield
    except Exception as e:
      raise RunFolderError(
        f"cannot write {what} under {self.ckpt.root}: {_reason(e)}; the older checkpoints "
        "are intact: fix that, then re-run the same command to resume"
      ) from e

  def write_summary(self, summary: dict[str, Any]) -> None:
    if self.write:
      write_json_atomic(self.path / "summary.json", summary)

  def close(self) -> None:
    self.ckpt.close()


def _reason(e: Exception) -> str:
  """A short reason for a failed checkpoint write (Orbax wraps the OS error in its text)."""
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  text = str(e)
  code = text.rsplit("os_error_code='", 1)[-1].split("'")[0] if "os_error_code='" in text else ""
  return os.strerror(int(code)) if code.isdigit() else text[:300]


class ShadowFolder:
  """A pad run's stand-in for the folder of the run it copies (``parallel.padding``):
  it reads that folder's log and checkpoints, and writes nothing."""

  def __init__(self, of: RunFolder):
    self.path, self.ckpt, self.write = of.path, of.ckpt, False
    self.log = MetricsLog(of.path, write=False)

  def save(self, *args: Any, **kwargs: Any) -> None:
    pass

  def save_best(self, *args: Any, **kwargs: Any) -> None:
    pass

  def write_summary(self, summary: dict[str, Any]) -> None:
    pass

  def close(self) -> None:
    pass
