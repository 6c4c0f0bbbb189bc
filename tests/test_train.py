"""The training loop end to end: run folders, resume, refusals, divergence, CLI."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lstmdrop_jax import steps
from lstmdrop_jax.checkpoint import RunCheckpoints
from lstmdrop_jax.cli import main
from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import train_and_evaluate
from tests.conftest import SMALL_RUN
from tests.helpers import ROOT, restored_params

#: ``SMALL_RUN`` with the default seed.
TINY = dataclasses.replace(SMALL_RUN, seed=0)


def _without_time(records):
  return [{k: v for k, v in r.items() if k != "time"} for r in records]


def test_tiny_run_writes_every_file(tmp_path):
  summary = train_and_evaluate(dataclasses.replace(TINY, mc_samples=3), tmp_path / "run")
  run = tmp_path / "run"
  assert (
    json.loads((run / "config.json").read_text())
    == dataclasses.replace(TINY, mc_samples=3).to_dict()
  )
  assert (run / "summary.json").exists() and summary["status"] == "finished"
  assert summary["epochs"] == 4 and summary["final"]["epoch"] == 4
  last = sorted(int(p.name) for p in (run / "checkpoints" / "last").iterdir() if p.name.isdigit())
  assert last[-1] == 4 and len(last) <= TINY.keep_checkpoints
  assert any(p.name.isdigit() for p in (run / "checkpoints" / "best").iterdir())
  records = read_jsonl(run / "metrics.jsonl")
  assert [r["epoch"] for r in records if "train_loss" in r] == [1, 2, 3, 4]
  assert [r["epoch"] for r in records if r.get("event") == "eval"] == [1, 2, 3, 4]
  assert 0.0 <= summary["mc"]["test/accuracy"] <= 1.0 and summary["mc"]["samples"] == 3
  # Re-running a finished run reads it back.
  assert train_and_evaluate(dataclasses.replace(TINY, mc_samples=3), run) == summary


def test_monte_carlo_dropout_scores_the_best_checkpoint(tmp_path, monkeypatch):
  """With the best epoch before the last, the MC evaluation gets the best state."""
  from lstmdrop_jax.tasks.classification import ClassificationTask

  # No epoch improves on the first: epoch 1 stays the best.
  monkeypatch.setattr(ClassificationTask, "better", lambda self, record, best: False)
  seen = []
  mc_evaluate = ClassificationTask.mc_evaluate

  def spy(self, model, state, k):
    seen.append(state)
    return mc_evaluate(self, model, state, k)

  monkeypatch.setattr(ClassificationTask, "mc_evaluate", spy)
  config = dataclasses.replace(TINY, mc_samples=3, epochs=2, checkpoint_every=1)
  summary = train_and_evaluate(config, tmp_path / "run")
  assert summary["best"]["epoch"] == 1 and summary["final"]["epoch"] == 2
  ckpt = RunCheckpoints(tmp_path / "run")
  try:
    best, _ = ckpt.restore(which="best")
    last, _ = ckpt.restore(which="last")
  finally:
    ckpt.close()
  (state,) = seen
  same = lambda a, b: all(np.array_equal(x, y) for x, y in
                          zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))  # fmt: skip
  assert same(state.params, best["params"]) and not same(state.params, last["params"])


def test_a_run_without_checkpoints_trains_the_same_and_writes_none(tmp_path):
  with_ckpt = train_and_evaluate(TINY, tmp_path / "a")
  without = train_and_evaluate(dataclasses.replace(TINY, checkpoint_every=0), tmp_path / "b")
  assert without["status"] == "finished" and without["final"] == with_ckpt["final"]
  ckpt = RunCheckpoints(tmp_path / "b")
  try:
    assert ckpt.epochs("last") == [] and ckpt.epochs("best") == []
  finally:
    ckpt.close()
  assert RunCheckpoints(tmp_path / "a").epochs("last")[-1] == TINY.epochs


def test_evaluation_counts_every_example(tmp_path):
  from lstmdrop_jax.data import load_dataset

  d = load_dataset("synthetic", seed=0)
  cfg = dataclasses.replace(TINY, epochs=1, eval_batch_size=64)  # no split is a multiple of 64
  train_and_evaluate(cfg, tmp_path / "run")
  ev = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("event") == "eval"][-1]
  assert (ev["train/count"], ev["val/count"], ev["test/count"]) == (
    len(d.train),
    len(d.val),
    len(d.test),
  )
  assert {len(d.train), len(d.val), len(d.test)}.isdisjoint({64, 128, 192, 256, 512})


def test_same_seed_gives_identical_metrics(tmp_path):
  train_and_evaluate(TINY, tmp_path / "a")
  train_and_evaluate(TINY, tmp_path / "b")
  a = _without_time(read_jsonl(tmp_path / "a" / "metrics.jsonl"))
  b = _without_time(read_jsonl(tmp_path / "b" / "metrics.jsonl"))
  assert a == b
  other = _without_time(read_jsonl(_run(dataclasses.replace(TINY, seed=1), tmp_path / "c")))
  assert other != a


def _run(cfg, workdir):
  train_and_evaluate(cfg, workdir)
  return workdir / "metrics.jsonl"


def test_different_config_in_a_run_folder_is_refused(tmp_path):
  train_and_evaluate(dataclasses.replace(TINY, epochs=2), tmp_path / "run")
  before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
  with pytest.raises(ValueError, match=r"different config \(hidden: 8 -> 16\).*new --workdir"):
    train_and_evaluate(dataclasses.replace(TINY, epochs=2, hidden=16), tmp_path / "run")
  assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == before


def test_huge_learning_rate_stops_with_a_clear_error(tmp_path):
  cfg = dataclasses.replace(TINY, optimizer="sgd", learning_rate=1e38, clip_norm=None)
  with pytest.raises(FloatingPointError, match="non-finite training loss or parameters in epoch 1"):
    train_and_evaluate(cfg, tmp_path / "run")
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["status"] == "diverged"
  with pytest.raises(FloatingPointError, match="Lower the learning rate"):
    train_and_evaluate(cfg, tmp_path / "run")


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  """Fault injection: the step turns the parameters to NaN from epoch 4 on."""
  make = steps.make_train_step

  def poisoned(model, tx, objective, **kw):
    step = make(model, tx, objective, **kw)

    def train_step(state, batch, key):
      state, m = step(state, batch, key)
      bad = state.step > 3 * steps_per_epoch
      params = jax.tree.map(lambda p: jax.numpy.where(bad, np.nan, p), state.params)
      return state.replace(params=params), m

    return train_step

  from lstmdrop_jax.data import load_dataset, num_batches

  steps_per_epoch = num_batches(len(load_dataset("synthetic", seed=0).train), TINY.batch_size)
  monkeypatch.setattr(steps, "make_train_step", poisoned)
  cfg = dataclasses.replace(TINY, epochs=6)
  with pytest.raises(
    FloatingPointError, match=r"epoch 4 .*last good checkpoint \(epoch [23]\) is kept"
  ):
    train_and_evaluate(cfg, tmp_path / "run")
  last = sorted(
    int(p.name) for p in (tmp_path / "run" / "checkpoints" / "last").iterdir() if p.name.isdigit()
  )
  assert last[-1] <= 3
  params = restored_params(tmp_path / "run")
  assert all(np.isfinite(a).all() for a in jax.tree.leaves(params))


def _cli(workdir, *extra):
  return [
      sys.executable, "-m", "lstmdrop_jax.train", "--workdir", str(workdir),
      "--dataset", "synthetic", "--hidden", "12", "--epochs", "24", "--checkpoint-every", "3",
      "--dropout.output", "0.3", "--dropout.between", "0.2", "--unroll", "1",
      "--schedule", "plateau", "--lr-decay", "2", "--learning-rate", "0.01", *extra,
  ]  # fmt: skip


def _default_sigint() -> None:
  signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
  subprocess.run(_cli(workdir), check=True, cwd=ROOT, capture_output=True)
  lrs = [r["lr"] for r in read_jsonl(workdir / "metrics.jsonl") if "lr" in r]
  assert lrs[3] < lrs[0], lrs  # the plateau's state is in the checkpoints that resume
  return workdir


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_kill_and_resume_equals_uninterrupted(tmp_path, uninterrupted, sig):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
    _cli(workdir),
    cwd=ROOT,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    # A shell's background jobs inherit SIGINT ignored, and Python keeps it
    # so; a user's Ctrl-C reaches a trainer with the default disposition.
    preexec_fn=_default_sigint,
  )
  log = workdir / "metrics.jsonl"
  deadline = time.time() + 120
  # Interrupt somewhere after the first checkpoint (epoch 3), before the end.
  while time.time() < deadline and len(read_jsonl(log)) < 12:
    time.sleep(0.005)
  os.kill(proc.pid, sig)
  proc.wait(timeout=60)
  assert not (workdir / "summary.json").exists(), "the run ended before the signal"
  assert any(p.name.isdigit() for p in (workdir / "checkpoints" / "last").iterdir())
  subprocess.run(_cli(workdir), check=True, cwd=ROOT, capture_output=True)
  got, want = restored_params(workdir), restored_params(uninterrupted)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert _without_time(read_jsonl(log)) == _without_time(
    read_jsonl(uninterrupted / "metrics.jsonl")
  )


@pytest.mark.parametrize(
  ("args", "message"),
  [
    (["--dataset", "NoSuchSet"], "unknown dataset 'NoSuchSet'.*GunPoint"),
    (["--dropout.output", "1.5"], r"dropout rate 'output' must satisfy 0 <= rate <.*got 1\.5"),
    (["--epochs", "-3"], "epochs must be an integer >= 1, got -3"),
    (
      ["--checkpoint-every", "0", "--mc-samples", "2", "--dropout.output", "0.2"],
      "mc_samples scores the best checkpoint",
    ),
    (["--mc-samples", "2"], "this run has no dropout: every pass is the same"),
    (["--eval-tokens", "1"], "eval_tokens must be an integer >= 2 or unset"),
    (["--train-tokens", "0"], "train_tokens must be an integer >= 2 or unset"),
    (["--checkpoint-every", "-1"], "checkpoint_every must be an integer >= 0, got -1"),
    (["--dropout.time-locked", "hidden"], r"valid placements are \['input', 'between', 'output',"),
  ],
)
def test_bad_cli_values_give_clear_errors(tmp_path, capsys, args, message):
  with pytest.raises(SystemExit) as e:
    main(["--workdir", str(tmp_path / "run"), *args])
  assert e.value.code != 0
  import re

  assert re.search(message, capsys.readouterr().err, re.S)
  assert not (tmp_path / "run").exists()


def test_workdir_that_is_a_file_is_refused(tmp_path, capsys):
  f = tmp_path / "file.txt"
  f.write_text("precious")
  with pytest.raises(SystemExit):
    main(["--workdir", str(f), "--dataset", "synthetic"])
  assert "exists and is not a folder" in capsys.readouterr().err
  assert f.read_text() == "precious"
