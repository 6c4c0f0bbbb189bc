"""A run's checkpoints: exact round trips, the last ``keep`` kept, the best one apart, and
damaged checkpoints skipped with a warning or named in one clear error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmdrop_jax.checkpoint import RunCheckpoints
from lstmdrop_jax.run_folder import RunFolder, RunFolderError


def _state(epoch: int) -> dict:
  """A train-state-like pytree whose values tell the epoch apart, with awkward floats."""
  w = np.array([epoch, -0.0, np.nan, np.inf, -np.inf, 1e-45, 3.4e38], np.float32)
  return {
    "step": jnp.int32(epoch),
    "params": {"w": jnp.asarray(w), "b": jnp.full(3, 0.1 * epoch, jnp.bfloat16)},
    "dropout": [jnp.float32(0.25), jnp.float32(0.0)],
    "key": jax.random.key_data(jax.random.key(epoch)),
  }


def _meta(epoch: int) -> dict:
  return {"epoch": epoch, "best": {"epoch": 1, "val/loss": 0.5}, "elapsed": 1.5 * epoch}


def _assert_bits_equal(got, want) -> None:
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


@pytest.fixture
def ckpt(tmp_path):
  c = RunCheckpoints(tmp_path, keep=2)
  yield c
  c.close()


def test_a_restored_checkpoint_is_the_saved_one_bit_for_bit(ckpt):
  ckpt.save(3, _state(3), _meta(3))
  state, meta = ckpt.restore()  # as saved: nested dicts and lists of arrays
  _assert_bits_equal(state, _state(3))
  assert meta == _meta(3)
  like, _ = ckpt.restore(jax.tree.map(jnp.zeros_like, _state(3)))  # onto a target's structure
  _assert_bits_equal(like, _state(3))
  assert ckpt.restore(which="best") is None  # none written
  with pytest.raises(ValueError, match="which must be 'last' or 'best', got 'first'"):
    ckpt.restore(which="first")
  with pytest.raises(ValueError, match="keep must be >= 1, got 0"):
    RunCheckpoints(ckpt.root.parent, keep=0)


def test_only_the_last_keep_checkpoints_remain(ckpt):
  for epoch in range(1, 6):
    ckpt.save(epoch, _state(epoch), _meta(epoch))
    assert ckpt.epochs() == list(range(max(epoch - 1, 1), epoch + 1))
  assert ckpt.latest_epoch() == 5
  _assert_bits_equal(ckpt.restore(epoch=4)[0], _state(4))
  assert sorted(p.name for p in (ckpt.root / "last").iterdir()) == ["4", "5"]


def test_a_kill_while_the_only_kept_checkpoint_is_replaced_leaves_the_previous_one(
  tmp_path, monkeypatch
):
  """keep=1: the new last checkpoint is written before the old one is deleted."""
  import lstmdrop_jax.checkpoint as checkpoint

  ckpt = RunCheckpoints(tmp_path, keep=1)
  ckpt.save(1, _state(1), _meta(1), best=True)
  ckpt.save(2, _state(2), _meta(2))
  assert ckpt.epochs("last") == [2] and ckpt.epochs("best") == [1]

  def killed(mgr, epoch, args):
    raise KeyboardInterrupt  # the process dies inside the write: nothing of epoch 3 is finished

  monkeypatch.setattr(checkpoint, "_write", killed)
  with pytest.raises(KeyboardInterrupt):
    ckpt.save(3, _state(3), _meta(3))
  ckpt.close()
  monkeypatch.undo()
  again = RunCheckpoints(tmp_path, keep=1)
  assert again.epochs("last") == [2] and again.epochs("best") == [1]
  _assert_bits_equal(again.restore()[0], _state(2))
  again.close()


def test_the_best_checkpoint_is_kept_apart_from_the_last_ones(ckpt):
  ckpt.save(1, _state(1), _meta(1), best=True)
  ckpt.save(2, _state(2), _meta(2))
  ckpt.save(3, _state(3), _meta(3))
  assert ckpt.epochs("last") == [2, 3] and ckpt.epochs("best") == [1]
  _assert_bits_equal(ckpt.restore(which="best")[0], _state(1))  # epoch 1 left last/, not best/
  ckpt.save_best(4, _state(4), _meta(4))  # a held best state, written before its epoch's last
  ckpt.save(5, _state(5), _meta(5))
  assert ckpt.epochs("best") == [4] and ckpt.epochs("last") == [3, 5]
  state, meta = ckpt.restore(which="best")
  _assert_bits_equal(state, _state(4))
  assert meta == _meta(4)
  ckpt.discard_after(3)  # a resume from epoch 3 drops what came later, best included
  assert ckpt.epochs("last") == [3] and ckpt.epochs("best") == []


def test_a_damaged_checkpoint_is_skipped_and_none_intact_is_one_clear_error(tmp_path):
  folder = RunFolder(tmp_path, keep=2)
  try:
    for epoch in (1, 2):
      folder.save(epoch, _state(epoch), _meta(epoch), best=False)
    newest = tmp_path / "checkpoints" / "last" / "2"
    (newest / "meta" / "metadata").write_text("{")
    with pytest.warns(UserWarning, match=r"skipping the damaged checkpoint of epoch 2 in .*last"):
      state, meta = folder.resume(None)
    _assert_bits_equal(state, _state(1))
    assert meta == _meta(1) and folder.ckpt.epochs() == [1]  # the damaged one discarded
    (tmp_path / "checkpoints" / "last" / "1" / "meta" / "metadata").write_text("")
    with pytest.warns(UserWarning), pytest.raises(RunFolderError) as e:
      folder.resume(None)
  finally:
    folder.close()
  assert str(e.value).startswith(f"no intact checkpoint in {tmp_path / 'checkpoints' / 'last'}")
  assert "epoch 1: JSONDecodeError" in str(e.value)
  assert f"move the folder {tmp_path} away and start the run afresh" in str(e.value)
