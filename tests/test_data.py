"""Tests for lstmdrop_jax.data: batching, synthetic task, UCR/UEA loading."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstmdrop_jax.data import (
  BUNDLED,
  DATASETS,
  Dataset,
  Split,
  check_dataset_name,
  epoch_order,
  eval_batches,
  load_dataset,
  num_batches,
  train_batches,
)
from lstmdrop_jax.data import synthetic as syn
from lstmdrop_jax.data.batching import stratified_split
from lstmdrop_jax.data.ucr import bundled_dir, load_ucr


def _split(n=23, T=5, F=3, ragged=False):
  rng = np.random.default_rng(0)
  # Each row's first value is its index, so batches can be traced back to examples.
  x = rng.standard_normal((n, T, F)).astype(np.float32)
  x[:, 0, 0] = np.arange(n)
  lengths = rng.integers(1, T + 1, n) if ragged else None
  return Split(x, rng.integers(0, 3, n), lengths)


def _ids(batch):
  return batch["x"][batch["mask"], 0, 0].astype(int)


# --- batching ----------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 4, 7, 23, 50])
def test_train_batches_cover_every_example_once(batch_size):
  split = _split()
  batches = list(train_batches(split, batch_size, seed=3, epoch=1))
  assert len(batches) == num_batches(len(split), batch_size)
  for b in batches:
    assert b["x"].shape == (batch_size, 5, 3) and b["x"].dtype == np.float32
    assert b["y"].shape == (batch_size,) and b["y"].dtype == np.int32
    assert b["mask"].shape == (batch_size,) and b["mask"].dtype == bool
    assert "lengths" not in b
  seen = np.concatenate([_ids(b) for b in batches])
  np.testing.assert_array_equal(seen, epoch_order(len(split), 3, 1))
  assert sorted(seen) == list(range(len(split)))
  # Labels travel with their rows.
  np.testing.assert_array_equal(np.concatenate([b["y"][b["mask"]] for b in batches]), split.y[seen])


def test_padding_rows_are_zero_and_masked():
  split = _split(n=10, ragged=True)
  last = list(train_batches(split, 4, seed=0, epoch=0))[-1]
  np.testing.assert_array_equal(last["mask"], [True, True, False, False])
  assert not last["x"][2:].any()
  np.testing.assert_array_equal(last["y"][2:], 0)
  np.testing.assert_array_equal(last["lengths"][2:], 0)


def test_epoch_order_is_a_function_of_seed_and_epoch():
  np.testing.assert_array_equal(epoch_order(50, 1, 2), epoch_order(50, 1, 2))
  assert not np.array_equal(epoch_order(50, 1, 2), epoch_order(50, 1, 3))
  assert not np.array_equal(epoch_order(50, 1, 2), epoch_order(50, 2, 2))
  np.testing.assert_array_equal(np.sort(epoch_order(50, 1, 2)), np.arange(50))
  split = _split()
  # NumPy's global generator in two different states: the order must not see it.
  np.random.seed(0)
  a = [_ids(b) for b in train_batches(split, 4, seed=5, epoch=7)]
  np.random.seed(1)
  np.random.random(10)
  b = [_ids(b) for b in train_batches(split, 4, seed=5, epoch=7)]
  for u, v in zip(a, b, strict=True):
    np.testing.assert_array_equal(u, v)
  # A fresh process (where a resumed run continues) draws the same order.
  code = "from lstmdrop_jax.data import epoch_order; print(epoch_order(50, 1, 2).tolist())"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert json.loads(out.stdout) == epoch_order(50, 1, 2).tolist()


def test_eval_batches_in_order_with_padded_last_batch():
  split = _split(n=10, ragged=True)
  batches = list(eval_batches(split, 4))
  assert [b["x"].shape[0] for b in batches] == [4, 4, 4]
  np.testing.assert_array_equal(np.concatenate([_ids(b) for b in batches]), np.arange(10))
  np.testing.assert_array_equal(batches[-1]["mask"], [True, True, False, False])
  lengths = np.concatenate([b["lengths"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(lengths, split.lengths)
  assert all(b["lengths"].dtype == np.int32 for b in batches)


def test_batching_errors():
  split = _split()
  with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
    list(eval_batches(split, 0))
  with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
    train_batches(split, -2, seed=0, epoch=0)
  with pytest.raises(ValueError, match="empty split"):
    eval_batches(Split(np.zeros((0, 5, 3)), np.zeros(0)), 4)
  with pytest.raises(ValueError, match="seed must be an int >= 0"):
    epoch_order(5, -1, 0)
  with pytest.raises(ValueError, match=r"Split.x must be \[N, T, F\]"):
    Split(np.zeros((4, 5)), np.zeros(4))
  with pytest.raises(ValueError, match=r"Split\.lengths must lie in"):
    Split(np.zeros((2, 5, 1)), np.zeros(2), np.array([3, 6]))
  assert num_batches(10, 4) == 3 and num_batches(8, 4) == 2


def test_stratified_split_sizes_do_not_depend_on_seed():
  y = np.array([0] * 24 + [1] * 26 + [2] * 2)
  splits = [stratified_split(y, 0.3, seed) for seed in range(5)]
  for train_idx, val_idx in splits:
    assert len(val_idx) == round(0.3 * len(y)) and len(train_idx) == len(y) - len(val_idx)
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(np.bincount(y[val_idx]), np.bincount(y[splits[0][1]]))
    assert set(y[train_idx]) == {0, 1, 2}  # every class keeps one in train
  assert len({tuple(v) for _, v in splits}) > 1
  with pytest.raises(ValueError, match="cannot hold out"):
    stratified_split(np.array([0, 1, 2]), 0.5, 0)


# --- synthetic ---------------------------------------------------------------


def test_synthetic_shapes_and_determinism():
  ds = syn.make_synthetic(0)
  assert isinstance(ds, Dataset)
  assert (ds.length, ds.num_features, ds.num_classes) == (100, 20, 2)
  assert ds.classes == ("0", "1")
  assert (len(ds.train), len(ds.val), len(ds.test)) == (70, 30, 500)
  assert ds.train.lengths is None and ds.train.x.dtype == np.float32
  again = syn.make_synthetic(0)
  for s in ("train", "val", "test"):
    np.testing.assert_array_equal(getattr(ds, s).x, getattr(again, s).x)
    np.testing.assert_array_equal(getattr(ds, s).y, getattr(again, s).y)


def test_synthetic_seed_splits_the_same_pool():
  a, b = syn.make_synthetic(0), syn.make_synthetic(1)
  assert (len(a.train), len(a.val)) == (len(b.train), len(b.val))
  np.testing.assert_array_equal(np.bincount(a.val.y), np.bincount(b.val.y))
  assert not np.array_equal(a.val.x, b.val.x)
  np.testing.assert_array_equal(a.test.x, b.test.x)  # the task is fixed by data_seed

  def rows(ds):
    return {r.tobytes() for r in np.concatenate([ds.train.x, ds.val.x])}

  assert rows(a) == rows(b)
  assert not np.array_equal(syn.make_synthetic(0, data_seed=1).test.x, a.test.x)


def _oracle(task, x):
  """Knows the planted channels and signs: matched filter, sign of the peak."""
  z_NT = (x[:, :, task.channels] * task.signs).sum(-1)
  w = syn.template()
  f = np.stack([np.convolve(r, w[::-1], mode="valid") for r in z_NT])
  peak = np.abs(f).argmax(1)
  return (f[np.arange(len(f)), peak] > 0).astype(np.int32)


def test_synthetic_label_noise_in_pool_not_test():
  task = syn.generate_task(0)
  assert (task.pool_y != task.pool_y_clean).mean() == pytest.approx(0.1)
  assert np.bincount(task.test_y).tolist() == [250, 250]
  # The planted signal decides the clean label, so an oracle recovers the test
  # labels and disagrees with the pool labels exactly where they were flipped.
  assert (_oracle(task, task.test_x) == task.test_y).mean() >= 0.97
  assert (_oracle(task, task.pool_x) == task.pool_y).mean() <= 0.92
  quiet = syn.generate_task(0, label_noise=0.0)
  np.testing.assert_array_equal(quiet.pool_y, quiet.pool_y_clean)


def test_synthetic_errors():
  with pytest.raises(ValueError, match="val_fraction must be a number in"):
    syn.make_synthetic(0, val_fraction=1.0)
  with pytest.raises(ValueError, match="label_noise"):
    syn.make_synthetic(0, label_noise=0.5)
  with pytest.raises(ValueError, match="length must be an int"):
    syn.make_synthetic(0, length=3)


# --- UCR/UEA -----------------------------------------------------------------


@pytest.fixture(scope="module")
def gunpoint():
  return load_ucr("GunPoint", 0)


def test_gunpoint_shapes_and_classes(gunpoint):
  ds = gunpoint
  assert ds.name == "GunPoint" and ds.classes == ("1", "2")
  assert (ds.length, ds.num_features, ds.num_classes) == (150, 1, 2)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (35, 15, 150)
  assert ds.train.lengths is None and ds.test.lengths is None
  assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int32


def test_gunpoint_labels_match_aeon(gunpoint):
  from aeon.datasets import load_classification

  X, y = load_classification("GunPoint", split="test")
  np.testing.assert_array_equal(np.array(gunpoint.classes)[gunpoint.test.y], y)
  # The test split is untouched apart from the train statistics' normalisation.
  x = X[:, 0, :]
  back = gunpoint.test.x[:, :, 0]
  corr = np.corrcoef(x.ravel(), back.ravel())[0, 1]
  assert corr == pytest.approx(1.0, abs=1e-6)


def test_gunpoint_znormalised_on_train(gunpoint):
  x = gunpoint.train.x.reshape(-1, 1)
  np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(x.std(0), 1.0, atol=1e-5)
  assert abs(gunpoint.val.x.mean()) < 0.5  # same statistics, not refitted


def test_gunpoint_split_stratified_and_seed_dependent(gunpoint):
  other = load_ucr("GunPoint", 1)
  assert (len(other.train), len(other.val)) == (len(gunpoint.train), len(gunpoint.val))
  for ds in (gunpoint, other):
    np.testing.assert_array_equal(np.bincount(ds.val.y), [7, 8])  # 24/26 in the pool
    np.testing.assert_array_equal(np.bincount(ds.train.y), [17, 18])
  # Rows are matched up to the affine normalisation: a shared example has correlation 1.
  corr = np.corrcoef(gunpoint.val.x[:, :, 0], other.val.x[:, :, 0])[:15, 15:]
  shared = (corr > 1 - 1e-6).any(1).sum()
  assert shared < len(gunpoint.val)


def test_japanese_vowels_variable_length():
  ds = load_ucr("JapaneseVowels", 0)
  assert (ds.length, ds.num_features, ds.num_classes) == (29, 12, 9)
  assert (len(ds.train) + len(ds.val), len(ds.test)) == (270, 370)
  for split in (ds.train, ds.val, ds.test):
    assert split.lengths is not None and split.lengths.dtype == np.int32
    assert split.lengths.min() >= 1 and split.lengths.max() <= 29
    pad_NT = np.arange(29)[None, :] >= split.lengths[:, None]
    assert pad_NT.any() and not split.x[pad_NT].any()
  valid = ds.train.x[np.arange(29)[None, :] < ds.train.lengths[:, None]]
  np.testing.assert_allclose(valid.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(valid.std(0), 1.0, atol=1e-4)
  assert ds.test.lengths.max() == 29


def test_ucr_missing_files_error(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"Download its \.ts files.*extract_path"):
    load_ucr("Adiac", 0, extract_path=str(tmp_path))
  assert not any(tmp_path.iterdir())  # nothing was downloaded


def test_ucr_from_extract_path(tmp_path):
  # A dataset aeon does not bundle, as .ts files under data_dir: a renamed copy.
  src = Path(bundled_dir()) / "ItalyPowerDemand"
  (tmp_path / "Tiny").mkdir()
  for split in ("TRAIN", "TEST"):
    text = (src / f"ItalyPowerDemand_{split}.ts").read_text()
    (tmp_path / "Tiny" / f"Tiny_{split}.ts").write_text(text)
  ds = load_dataset("Tiny", seed=0, data_dir=str(tmp_path))
  assert ds.name == "Tiny" and ds.classes == ("1", "2")
  assert (ds.length, len(ds.train) + len(ds.val), len(ds.test)) == (24, 67, 1029)


# --- load_dataset ------------------------------------------------------------


def test_load_dataset_dispatch():
  assert ("synthetic", "synthetic_large", *BUNDLED) == DATASETS
  ds = load_dataset("synthetic", seed=0, val_fraction=0.2)
  assert (len(ds.train), len(ds.val)) == (80, 20)
  assert load_dataset("ItalyPowerDemand", seed=0).num_classes == 2


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(ValueError, match="unknown dataset 'GunPont'") as err:
    load_dataset("GunPont", seed=0)
  for name in DATASETS:
    assert name in str(err.value)
  assert "data_dir" in str(err.value) and "Did you mean 'GunPoint'" in str(err.value)
  with pytest.raises(ValueError, match="Valid names: synthetic, synthetic_large, GunPoint"):
    check_dataset_name("nope")
  check_dataset_name("GunPoint")
  check_dataset_name("Adiac")  # aeon knows it; its files are checked at load time


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, "0.3", True])
def test_bad_val_fraction(bad):
  with pytest.raises(ValueError, match=r"val_fraction must be a number in \(0, 1\)"):
    load_dataset("synthetic", seed=0, val_fraction=bad)
