"""Damaged run folders, failing file systems and bad inputs: one clear line, nothing lost.

Each case runs the command line (``cli.main``) or the API against a folder
damaged on purpose, or with an operating-system failure injected where the
library touches the disk, and checks the one-line message (the file, what is
wrong, what to do), the exit status, and that re-running once the cause is
gone ends at the folder an uninterrupted run leaves.
"""

import contextlib
import dataclasses
import errno
import re
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import orbax.checkpoint as ocp
import pytest

from lstmdrop_jax import from_keras_lstm, from_torch_lstm, run_folder
from lstmdrop_jax.cli import main
from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import train_and_evaluate
from tests.conftest import SMALL_RUN, folder_state
from tests.helpers import PTB_DIR


def _flags(config) -> list[str]:
  """The command-line flags of ``config`` (the fields that differ from the defaults)."""
  d, default = config.to_dict(), type(config)().to_dict()
  out = []
  for k, v in d.items():
    if k == "dropout":
      out += [f"--dropout.{p}={r}" for p, r in v.items() if p != "time_locked" and r]
    elif v != default[k]:
      out += [f"--{k.replace('_', '-')}", str(v)]
  return out


def _cli_error(capsys, workdir: Path, config=SMALL_RUN, patch: tuple = ()) -> str:
  """Runs the command line, expects exit status 2; returns the one error line.

  ``patch``: ``(target, name, value)``, an attribute replaced for this run only.
  """
  replaced = mock.patch.object(*patch, create=True) if patch else contextlib.nullcontext()
  with replaced, pytest.raises(SystemExit) as stop:
    main(["--workdir", str(workdir), *_flags(config)])
  assert stop.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) >= 1 and err[-1].startswith("error: ")
  assert "Traceback" not in "\n".join(err)
  return err[-1]


def _rerun_ends_as(reference_run: Path, same_folder, workdir: Path) -> None:
  """Re-running the command in ``workdir`` ends at the folder an uninterrupted run leaves."""
  train_and_evaluate(SMALL_RUN, workdir, progress=False)
  same_folder(workdir, reference_run)


def _copy(reference: Path, tmp_path: Path) -> Path:
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  return workdir


def _mtimes(folder: Path) -> dict:
  return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_flags_reproduce_the_config(tmp_path):
  """The helper above: the flags parse back to the config the tests compare against."""
  import tyro

  from lstmdrop_jax.cli import _Cli

  args = tyro.cli(_Cli, args=["--workdir", str(tmp_path), *_flags(SMALL_RUN)])
  assert args.config == SMALL_RUN


# --- damaged files ----------------------------------------------------------


def test_a_damaged_config_json_is_named_with_a_way_out(tmp_path, capsys, reference_run):
  workdir = _copy(reference_run, tmp_path)
  (workdir / "config.json").write_text('{"dataset": "synthetic", \n')
  before = _mtimes(workdir)
  line = _cli_error(capsys, workdir)
  assert re.search(r"config\.json is damaged: not valid JSON \(.* at line \d+, column \d+\)", line)
  assert str(workdir / "config.json") in line and "new --workdir" in line
  assert _mtimes(workdir) == before


def test_a_damaged_summary_is_named_and_rebuilt_once_deleted(
  tmp_path, capsys, reference_run, same_folder
):
  workdir = _copy(reference_run, tmp_path)
  (workdir / "summary.json").write_text("")
  line = _cli_error(capsys, workdir)
  assert str(workdir / "summary.json") in line and "not valid JSON" in line
  assert "delete it and re-run the same command" in line
  (workdir / "summary.json").unlink()
  _rerun_ends_as(reference_run, same_folder, workdir)


def _killed_after_epoch_4_checkpoint(reference_run: Path, tmp_path: Path) -> Path:
  """The reference folder as a kill before the summary left it."""
  workdir = _copy(reference_run, tmp_path)
  (workdir / "summary.json").unlink()
  return workdir


@pytest.mark.parametrize("damage", ["meta", "state"])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_intact_one(
  tmp_path, reference_run, same_folder, damage
):
  workdir = _killed_after_epoch_4_checkpoint(reference_run, tmp_path)
  newest = workdir / "checkpoints" / "last" / "4"
  if damage == "meta":
    (newest / "meta" / "metadata").write_text("")
  else:  # the array data of the train state
    for f in (newest / "state").rglob("*"):
      if f.is_file() and f.parent.name == "d":
        f.write_bytes(b"\0" * 16)
  with pytest.warns(UserWarning, match=r"skipping the damaged checkpoint of epoch 4 in .*last"):
    train_and_evaluate(SMALL_RUN, workdir, progress=False)
  same_folder(workdir, reference_run)


# --- operating-system failures ------------------------------------------------


def _oserror(code: int, path) -> OSError:
  return OSError(code, __import__("os").strerror(code), str(path))


@pytest.mark.parametrize(
  ("step", "what"),
  # Epoch 2's checkpoint: epoch 1's held best state first, then epoch 2's own.
  [(1, "the best checkpoint (epoch 1)"), (2, "the checkpoint of epoch 2")],
)
def test_a_full_disk_during_a_checkpoint_is_one_line_and_loses_nothing(
  tmp_path, capsys, reference_run, same_folder, step, what
):
  save = ocp.CheckpointManager.save

  def disk_full_at(self, at, *args, **kwargs):
    if at == step:
      raise _oserror(errno.ENOSPC, self.directory / f"{at}.orbax-checkpoint-tmp")
    return save(self, at, *args, **kwargs)

  workdir = tmp_path / "run"
  line = _cli_error(capsys, workdir, patch=(ocp.CheckpointManager, "save", disk_full_at))
  assert line == (
    f"error: cannot write {what} under {workdir / 'checkpoints'}: No space left on device; "
    "the older checkpoints are intact: fix that, then re-run the same command to resume"
  )
  _rerun_ends_as(reference_run, same_folder, workdir)


def test_orbax_wrapped_os_errors_are_read_back():
  """Orbax reports a failed write as text ending in the OS error code."""
  text = (
    'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "/x/": Failed '
    "to write 510317 bytes to file 11: No space left on device [os_error_code='28']"
  )
  assert run_folder._reason(ValueError(text)) == "No space left on device"
  assert run_folder._reason(ValueError("something else")) == "something else"


def _failing_open(code: int, name: str, after: int):
  """``open`` that refuses ``name`` for writing after ``after`` successful calls."""
  calls = []

  def fake_open(path, mode="r", *args, **kwargs):
    if Path(path).name == name and ("a" in mode or "w" in mode):
      calls.append(path)
      if len(calls) > after:
        raise _oserror(code, path)
    return open(path, mode, *args, **kwargs)

  return fake_open


def test_permission_denied_on_the_log_is_one_line_and_loses_nothing(
  tmp_path, capsys, reference_run, same_folder
):
  workdir = tmp_path / "run"
  refused = _failing_open(errno.EACCES, "metrics.jsonl", 3)  # epoch 2's training record
  line = _cli_error(capsys, workdir, patch=(run_folder, "open", refused))
  assert line == (
    f"error: cannot append to {workdir / 'metrics.jsonl'}: Permission denied; check the "
    "folder's permissions, or choose another --workdir"
  )
  _rerun_ends_as(reference_run, same_folder, workdir)


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path, capsys, monkeypatch):
  def refuse(self, *args, **kwargs):
    raise _oserror(errno.EACCES, self)

  workdir = tmp_path / "locked" / "run"
  monkeypatch.setattr(Path, "mkdir", refuse)
  line = _cli_error(capsys, workdir)
  assert line.startswith(f"error: cannot create the run folder {workdir}: Permission denied")
  assert not workdir.exists()


def test_a_summary_that_cannot_be_written_is_one_line_and_loses_nothing(
  tmp_path, capsys, reference_run, same_folder
):
  import tempfile

  mkstemp = tempfile.mkstemp

  def read_only(*args, prefix="", **kwargs):
    if prefix.startswith(".summary.json"):
      raise _oserror(errno.EROFS, Path(kwargs["dir"]) / prefix)
    return mkstemp(*args, prefix=prefix, **kwargs)

  workdir = tmp_path / "run"
  line = _cli_error(capsys, workdir, patch=(run_folder.tempfile, "mkstemp", read_only))
  assert line.startswith(f"error: cannot write {workdir / 'summary.json'}: Read-only file system")
  assert not (workdir / "summary.json").exists()
  _rerun_ends_as(reference_run, same_folder, workdir)


# --- bad inputs -----------------------------------------------------------------


def test_a_batch_larger_than_the_training_split_is_refused_before_any_write(tmp_path, capsys):
  workdir = tmp_path / "run"
  line = _cli_error(capsys, workdir, dataclasses.replace(SMALL_RUN, batch_size=500))
  assert line == (
    "error: batch_size 500 is larger than the training split of synthetic (70 series after "
    "holding out val_fraction=0.3); use --batch-size 70 or less"
  )
  assert not workdir.exists()


def test_divergence_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path):
  cfg = dataclasses.replace(SMALL_RUN, optimizer="sgd", learning_rate=1e38, clip_norm=None)
  with pytest.raises(FloatingPointError) as e:
    train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert "in epoch 1 of" in str(e.value) and "no checkpoint was written before it" in str(e.value)
  assert "None" not in str(e.value)


def test_parse_errors_name_the_command(capsys):
  with pytest.raises(SystemExit) as stop:
    main(["--workdir", "x", "--epochs", "many"])
  assert stop.value.code == 2
  err = capsys.readouterr().err
  assert (
    "python -m lstmdrop_jax.train --help" in err or "usage: python -m lstmdrop_jax.train" in err
  )
  assert "train.py" not in err


def _torch_state_dict(sizes):
  """An nn.LSTM-layout state dict with layers of the given (input, hidden) sizes."""
  rng = np.random.default_rng(0)
  sd = {}
  for k, (f, h) in enumerate(sizes):
    sd[f"weight_ih_l{k}"] = rng.normal(size=(4 * h, f)).astype(np.float32)
    sd[f"weight_hh_l{k}"] = rng.normal(size=(4 * h, h)).astype(np.float32)
    sd[f"bias_ih_l{k}"] = np.zeros(4 * h, np.float32)
    sd[f"bias_hh_l{k}"] = np.zeros(4 * h, np.float32)
  return sd


@pytest.mark.parametrize(
  ("sizes", "message"),
  [
    ([(3, 4), (5, 4)], r"layer 1 takes 5 inputs, but layer 0 gives 4 \(its hidden size\)"),
    ([(3, 4), (4, 6)], r"layer 1 has 6 hidden units and layer 0 has 4"),
  ],
)
def test_converters_refuse_layers_that_do_not_chain(sizes, message):
  with pytest.raises(ValueError, match=message):
    from_torch_lstm(_torch_state_dict(sizes))
  keras = [
    [w.T for w in (sd[f"weight_ih_l{k}"], sd[f"weight_hh_l{k}"])] + [sd[f"bias_ih_l{k}"]]
    for sd in [_torch_state_dict(sizes)]
    for k in range(len(sizes))
  ]
  with pytest.raises(ValueError, match=message):
    from_keras_lstm(keras)


def test_the_start_record_counts_the_tokens_used(tmp_path):
  from lstmdrop_jax.train import Config

  cfg = Config(
    dataset="ptb", data_dir=str(PTB_DIR), hidden=8, layers=1, num_steps=10, batch_size=10,
    train_tokens=3000, eval_tokens=2000, optimizer="sgd", learning_rate=1.0, epochs=1,
    unroll=1,
  )  # fmt: skip
  train_and_evaluate(cfg, tmp_path / "lm", progress=False)
  start = read_jsonl(tmp_path / "lm" / "metrics.jsonl")[0]
  assert start["tokens"] == {"train": 3000, "valid": 2000, "test": 2000}


def test_a_checkpoint_written_by_an_older_version_resumes(tmp_path, reference_run, same_folder):
  """Older versions saved the train state's dropout rates with six placements; the rates
  come from the config, so such a checkpoint resumes exactly."""
  from lstmdrop_jax.checkpoint import RunCheckpoints

  workdir = tmp_path / "run"
  train_and_evaluate(dataclasses.replace(SMALL_RUN, epochs=2), workdir, progress=False)
  ckpt = RunCheckpoints(workdir, keep=SMALL_RUN.keep_checkpoints)
  try:
    state, meta = ckpt.restore(epoch=2)
    assert len(state["dropout"]) > 6
    ckpt.discard_after(1)
    ckpt.save(2, dict(state, dropout=state["dropout"][:6]), meta)  # the older form
  finally:
    ckpt.close()
  import warnings

  with warnings.catch_warnings():  # read as it is, not skipped as damaged
    warnings.simplefilter("error", UserWarning)
    train_and_evaluate(SMALL_RUN, workdir, progress=False)  # extended to 4 epochs
  # The same folder, but for the older form of epoch 2's rates, which is kept.
  assert len(folder_state(workdir)["last/2"][0]["dropout"]) == 6
  same_folder(workdir, reference_run, but=("last/2", "dropout"))
