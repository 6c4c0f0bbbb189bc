"""A run killed in every window of its writes resumes to the folder an uninterrupted run leaves.

A kill is injected, not timed: a patched function raises ``Killed`` (a
``BaseException``, so nothing in the library catches it) at a chosen point
of the run's writes, which leaves the folder as a kill there would. Then the
same call runs again, and the folder must end bit-identical to that of an
uninterrupted run: the log, the summary, which checkpoints exist and what
they hold (elapsed wall time aside). The checkpoint's own mid-write window
is killed for real (``os._exit`` inside Orbax, in a subprocess).
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.path import atomicity

from lstmdrop_jax import run_folder
from lstmdrop_jax.run_folder import MetricsLog, read_jsonl
from lstmdrop_jax.train import train_and_evaluate
from tests.conftest import SMALL_RUN
from tests.helpers import ROOT

RUN = SMALL_RUN


class Killed(BaseException):
  """The injected kill."""


@pytest.fixture(scope="module")
def uninterrupted(reference_run):
  return reference_run


def _kill_then_resume(workdir: Path, monkeypatch, patch) -> None:
  with monkeypatch.context() as m:
    patch(m)
    with pytest.raises(Killed):
      train_and_evaluate(RUN, workdir, progress=False)
  assert not (workdir / "summary.json").exists()
  train_and_evaluate(RUN, workdir, progress=False)


def test_killed_after_the_start_record(tmp_path, monkeypatch, uninterrupted, same_folder):
  append = MetricsLog.append

  def kill_after_start(self, record):
    append(self, record)
    if record.get("event") == "start":
      raise Killed

  _kill_then_resume(
    tmp_path / "run", monkeypatch, lambda m: m.setattr(MetricsLog, "append", kill_after_start)
  )
  same_folder(tmp_path / "run", uninterrupted)


def test_killed_mid_write_of_a_log_record(tmp_path, monkeypatch, uninterrupted, same_folder):
  append = MetricsLog.append

  def torn_at_epoch_3(self, record):
    if record.get("epoch") == 3 and "event" not in record:
      with open(self.path, "a") as f:
        f.write(json.dumps(record)[:20])
      raise Killed
    append(self, record)

  _kill_then_resume(
    tmp_path / "run", monkeypatch, lambda m: m.setattr(MetricsLog, "append", torn_at_epoch_3)
  )
  same_folder(tmp_path / "run", uninterrupted)


@pytest.mark.parametrize(("epoch", "first"), [(RUN.epochs, RUN.epochs), (2, 1)])
def test_killed_between_the_two_checkpoints_of_an_epoch(
  tmp_path, monkeypatch, uninterrupted, epoch, first, same_folder
):
  """The final epoch (a new best score) writes its state as the best and as the last
  checkpoint; epoch 2 writes epoch 1's held best state, then its own last checkpoint.
  Killed after the first of the two, whichever the library writes first."""
  assert {first, epoch} <= best_epochs(uninterrupted) | {epoch}, "choose an epoch with two writes"
  save = ocp.CheckpointManager.save
  writes = []

  def kill_after_first_write_of_epoch(self, step, *args, **kwargs):
    if step == epoch and writes:
      raise Killed
    out = save(self, step, *args, **kwargs)
    if step == first:
      writes.append(self.directory)
    return out

  _kill_then_resume(
    tmp_path / "run",
    monkeypatch,
    lambda m: m.setattr(ocp.CheckpointManager, "save", kill_after_first_write_of_epoch),
  )
  same_folder(tmp_path / "run", uninterrupted)


def best_epochs(workdir: Path) -> set[int]:
  """Epochs whose evaluation was a new best in the reference run."""
  records = [r for r in read_jsonl(workdir / "metrics.jsonl") if r.get("event") == "eval"]
  best, out = None, set()
  for r in records:
    key = (r["val/accuracy"], -r["val/loss"])
    if best is None or key > best:
      best = key
      out.add(r["epoch"])
  return out


def test_killed_between_the_checkpoints_and_the_summary(
  tmp_path, monkeypatch, uninterrupted, same_folder
):
  write = run_folder.write_json_atomic

  def kill_before_summary(path, obj):
    if Path(path).name == "summary.json":
      raise Killed
    write(path, obj)

  _kill_then_resume(
    tmp_path / "run",
    monkeypatch,
    lambda m: m.setattr(run_folder, "write_json_atomic", kill_before_summary),
  )
  same_folder(tmp_path / "run", uninterrupted)


_KILL_BEFORE_RENAME = """
import json, os, sys
from lstmdrop_jax.train import Config, train_and_evaluate
replace = os.replace

def die_before_the_rename(src, dst):
  if os.path.basename(dst) == sys.argv[3]:  # the temporary file is complete
    os._exit(9)
  replace(src, dst)

os.replace = die_before_the_rename
train_and_evaluate(Config.from_dict(json.loads(sys.argv[2])), sys.argv[1], progress=False)
"""


def _killed_in_a_subprocess(script: str, workdir: Path, *args: str) -> None:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
  proc = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(script), str(workdir), json.dumps(RUN.to_dict()), *args],
    env=env, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert proc.returncode == 9, proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["summary.json", "config.json"])
def test_killed_mid_write_of_a_json_file(tmp_path, uninterrupted, name, same_folder):
  """The temporary file is complete, the rename to ``name`` never happens."""
  _killed_in_a_subprocess(_KILL_BEFORE_RENAME, tmp_path / "run", name)
  assert any(p.name.startswith(f".{name}.") for p in (tmp_path / "run").iterdir())
  train_and_evaluate(RUN, tmp_path / "run", progress=False)
  same_folder(tmp_path / "run", uninterrupted)


_KILL_INSIDE_ORBAX = """
import os, sys
from orbax.checkpoint._src.path import atomicity
from lstmdrop_jax.train import Config, train_and_evaluate
config = Config.from_dict(__import__("json").loads(sys.argv[2]))
finalize = atomicity.AtomicRenameTemporaryPath.finalize
calls = []

async def die_in_the_third_checkpoint(self, *args, **kwargs):
  calls.append(self)
  if len(calls) == 3:  # its files are written, the rename to the final name is not
    os._exit(9)
  return await finalize(self, *args, **kwargs)

atomicity.AtomicRenameTemporaryPath.finalize = die_in_the_third_checkpoint
train_and_evaluate(config, sys.argv[1], progress=False)
"""


def test_killed_mid_write_of_a_checkpoint(tmp_path, uninterrupted, same_folder):
  workdir = tmp_path / "run"
  _killed_in_a_subprocess(_KILL_INSIDE_ORBAX, workdir)
  assert any("orbax-checkpoint-tmp" in p.name for p in workdir.rglob("*")), "not killed mid-write"
  train_and_evaluate(RUN, workdir, progress=False)
  same_folder(workdir, uninterrupted)


def test_keep_checkpoints_holds_at_every_moment(tmp_path, monkeypatch):
  """Never more than ``keep_checkpoints`` finished checkpoints in last/, before or after
  any write or deletion (not only once a save has cleaned up)."""
  last = tmp_path / "run" / "checkpoints" / "last"
  seen = []

  def count():
    if last.exists():
      seen.append(sum(p.name.isdigit() for p in last.iterdir()))

  def counted(method):
    def wrapper(self, *args, **kwargs):
      count()
      out = method(self, *args, **kwargs)
      count()
      return out

    return wrapper

  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def counted_finalize(self, *args, **kwargs):  # a checkpoint has just got its name
    out = await finalize(self, *args, **kwargs)
    count()
    return out

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", counted_finalize)
  monkeypatch.setattr(ocp.CheckpointManager, "save", counted(ocp.CheckpointManager.save))
  monkeypatch.setattr(ocp.CheckpointManager, "delete", counted(ocp.CheckpointManager.delete))
  cfg = dataclasses.replace(RUN, epochs=6, checkpoint_every=1)
  train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert seen and max(seen) <= cfg.keep_checkpoints, seen
