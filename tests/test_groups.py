"""Groups of runs: K runs in one compiled step (``train_runs``) equal each run alone, write
one folder each, and hold a best epoch between checkpoints."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from lstmdrop_jax import groups
from lstmdrop_jax.checkpoint import RunCheckpoints
from lstmdrop_jax.dropout import DropoutConfig
from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import train_and_evaluate, train_runs
from tests.conftest import SMALL_RUN
from tests.helpers import restored_params

#: ``SMALL_RUN`` with the default seed.
TINY = dataclasses.replace(SMALL_RUN, seed=0)


def test_group_of_runs_writes_one_folder_each(tmp_path):
  cfgs = [
    dataclasses.replace(TINY, seed=s, dropout=DropoutConfig(output=r))
    for s, r in [(0, 0.0), (1, 0.5)]
  ]
  summaries = train_runs(cfgs, [tmp_path / "a", tmp_path / "b"], progress=False)
  assert [s["status"] for s in summaries] == ["finished", "finished"]
  with pytest.raises(
    ValueError, match=r"may differ only in seed and dropout; these differ: \['hidden'\]"
  ):
    train_runs([TINY, dataclasses.replace(TINY, hidden=4)], [tmp_path / "c", tmp_path / "d"])
  assert not (tmp_path / "c").exists()


def test_runs_that_differ_in_time_locking_train_together_as_alone(tmp_path):
  """A group whose runs lock different placements (``GroupDropout``) = each run alone."""
  rates = DropoutConfig(input=0.3, between=0.3, output=0.3, semeniuta=0.2)
  locked = rates.replace(time_locked=["input", "between", "output", "semeniuta"])
  cfgs = [
    dataclasses.replace(TINY, epochs=1, seed=0, dropout=rates),
    dataclasses.replace(TINY, epochs=1, seed=1, dropout=locked),
  ]
  union = groups.union([c.dropout for c in cfgs])
  assert union.per_run == ("input", "between", "output", "semeniuta")
  train_runs(cfgs, [tmp_path / f"together{k}" for k in range(2)], progress=False)
  for k, c in enumerate(cfgs):
    train_and_evaluate(c, tmp_path / f"alone{k}")
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      restored_params(tmp_path / f"together{k}"),
      restored_params(tmp_path / f"alone{k}"),
    )


def test_runs_that_differ_in_per_gate_masks_train_together_as_alone(tmp_path):
  """A group of a per-gate run and a shared-mask run: the per-gate run equals itself
  trained alone, bit for bit; the other takes the per-gate path with its one mask
  repeated over the gates, the same function, equal to rounding. (That per-gate masks
  differ by gate: test_dropout.py.)"""
  shared = DropoutConfig(input=0.3, between=0.3, recurrent=0.3, time_locked=True)
  cfgs = [
    dataclasses.replace(TINY, epochs=2, seed=0, dropout=shared.replace(per_gate=True)),
    dataclasses.replace(TINY, epochs=2, seed=1, dropout=shared),
  ]
  assert groups.union([c.dropout for c in cfgs]).gate_flag is not None
  train_runs(cfgs, [tmp_path / f"together{k}" for k in range(2)], progress=False)
  for k, c in enumerate(cfgs):
    train_and_evaluate(c, tmp_path / f"alone{k}")
  together, alone = (
    [restored_params(tmp_path / f"{w}{k}") for k in range(2)] for w in ("together", "alone")
  )
  jax.tree.map(np.testing.assert_array_equal, together[0], alone[0])
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), together[1], alone[1]
  )
  assert json.loads((tmp_path / "alone0" / "config.json").read_text())["dropout"]["per_gate"]


def test_runs_trained_together_equal_runs_trained_alone(tmp_path):
  """K runs in one compiled step (different seeds and rates) = each run alone, bit for
  bit: on a CPU the step loops over the runs, each computed as it is alone."""
  cfgs = [
    dataclasses.replace(TINY, epochs=3, seed=0, dropout=DropoutConfig(output=0.5)),
    dataclasses.replace(TINY, epochs=3, seed=1, dropout=DropoutConfig(input=0.2, between=0.3)),
  ]
  train_runs(cfgs, [tmp_path / "together0", tmp_path / "together1"], progress=False)
  for k, c in enumerate(cfgs):
    train_and_evaluate(c, tmp_path / f"alone{k}")
    together, alone = (
      restored_params(tmp_path / f"together{k}"),
      restored_params(tmp_path / f"alone{k}"),
    )
    jax.tree.map(np.testing.assert_array_equal, together, alone)
    ev = lambda d: [r for r in read_jsonl(d / "metrics.jsonl") if r.get("event") == "eval"]
    assert ev(tmp_path / f"together{k}") == ev(tmp_path / f"alone{k}")


def test_a_best_epoch_between_checkpoints_is_written_with_the_next_checkpoint(tmp_path):
  """The best state of an epoch that is not a checkpoint epoch is held and written
  with the next checkpoint: the best checkpoint equals that epoch's state."""
  held = [dataclasses.replace(TINY, epochs=6, checkpoint_every=6, seed=s) for s in range(4)]
  every = [dataclasses.replace(c, checkpoint_every=1, keep_checkpoints=6) for c in held]
  got = train_runs(held, [tmp_path / f"held{k}" for k in range(4)], progress=False)
  want = train_runs(every, [tmp_path / f"every{k}" for k in range(4)], progress=False)
  assert [s["best"] for s in got] == [s["best"] for s in want]
  bests = [s["best"]["epoch"] for s in got]
  assert min(bests) < 6  # some best came between checkpoints
  for k, b in enumerate(bests):
    ckpt, ref = RunCheckpoints(tmp_path / f"held{k}"), RunCheckpoints(tmp_path / f"every{k}")
    try:
      assert ckpt.epochs("last") == [6] and ckpt.epochs("best") == [b]
      state, meta = ckpt.restore(which="best")
      ref_state, _ = ref.restore(epoch=b)
      jax.tree.map(np.testing.assert_array_equal, state["params"], ref_state["params"])
      assert meta["epoch"] == b and meta["best"] == got[k]["best"]
    finally:
      ckpt.close()
      ref.close()
