"""UCR/UEA classification datasets through ``aeon``, ready for an LSTM.

``load_ucr`` reads the official train and test splits with
``aeon.datasets.load_classification``, converts them to channels-last
``[N, T, C]`` float32 (variable-length series zero-padded to the longest
series of all splits, with their lengths recorded), maps the labels to ids,
splits the official train split into train/val by seed, and z-normalises
each channel with statistics of the train split.

Nothing here touches the network: the datasets aeon bundles (GunPoint,
BasicMotions, ArrowHead, ItalyPowerDemand, JapaneseVowels, ...) load offline;
any other dataset is read from ``<extract_path>/<name>/<name>_{TRAIN,TEST}.ts``.
aeon is imported lazily, so importing this package stays cheap.
"""

from __future__ import annotations

import os

import numpy as np

from lstmdrop_jax.data.arrays import label_order
from lstmdrop_jax.data.batching import Dataset, Split, check_val_fraction, stratified_split
from lstmdrop_jax.data.normalize import Normalizer


def bundled_dir() -> str:
  """The folder where aeon keeps the datasets it ships with."""
  import aeon.datasets

  return os.path.join(os.path.dirname(aeon.datasets.__file__), "data")


def _cache_dir() -> str | None:
  """aeon's download cache, which it also reads offline (a private helper)."""
  try:
    from aeon.datasets._data_loaders import _get_data_home
  except ImportError:
    return None
  return _get_data_home()


def has_ts_files(root: str, name: str) -> bool:
  """True when ``root/name/name_TRAIN.ts`` and ``..._TEST.ts`` both exist."""
  return all(
    os.path.isfile(os.path.join(root, name, f"{name}_{split}.ts")) for split in ("TRAIN", "TEST")
  )


def _source(name: str, extract_path: str | None) -> str | None:
  """The ``extract_path`` to hand to aeon, chosen so that aeon never downloads.

  aeon downloads whatever is missing from an explicit ``extract_path`` (and
  ignores its bundled copy then), so the bundled copy is used unless the
  files are under ``extract_path``.
  """
  if extract_path is not None and has_ts_files(os.path.expanduser(extract_path), name):
    return os.path.expanduser(extract_path)
  # Without extract_path aeon reads its bundled copy, else its cache.
  if any(root and has_ts_files(root, name) for root in (bundled_dir(), _cache_dir())):
    return None
  where = (
    f"under extract_path={extract_path!r}"
    if extract_path is not None
    else "(no extract_path given)"
  )
  raise FileNotFoundError(
    f"UCR/UEA dataset {name!r} is not bundled with aeon and was not found {where}. "
    f"Download its .ts files (e.g. from https://timeseriesclassification.com) so that "
    f"<extract_path>/{name}/{name}_TRAIN.ts and {name}_TEST.ts exist, and pass "
    f"extract_path (data_dir in load_dataset). Nothing is downloaded at run time."
  )


def _channels_last(X, name: str, split: str) -> list[np.ndarray]:
  """aeon's ``[N, C, T]`` array or list of ``[C, T_i]`` -> list of ``[T_i, C]``."""
  series = [np.asarray(s, np.float64).T for s in X]
  if any(np.isnan(s).any() for s in series):
    raise ValueError(
      f"{name} ({split} split) has missing values (NaN); this loader does not impute them"
    )
  return series


def _pad(series: list[np.ndarray], T: int) -> tuple[np.ndarray, np.ndarray]:
  C = series[0].shape[1]
  x_NTC = np.zeros((len(series), T, C), np.float32)
  for i, s in enumerate(series):
    x_NTC[i, : len(s)] = s
  return x_NTC, np.array([len(s) for s in series], np.int32)


def load_raw(name: str, extract_path: str | None = None) -> tuple[dict[str, Split], list[str]]:
  """The official train and test splits as read (not normalised), and the class names.

  Both splits are padded to the longest series of either; ``lengths`` is None
  unless some series is shorter. Class id ``i`` is label ``classes[i]``,
  labels sorted (numerically when all are numbers).

  Raises:
    FileNotFoundError: the dataset is neither bundled nor under ``extract_path``.
    ValueError: a test label absent from the train split, or missing values.
  """
  path = _source(name, extract_path)
  from aeon.datasets import load_classification

  raw = {}
  for split in ("train", "test"):
    X, labels = load_classification(name, split=split, extract_path=path)
    raw[split] = (_channels_last(X, name, split), [str(v) for v in labels])

  classes = label_order(raw["train"][1])
  ids = {c: i for i, c in enumerate(classes)}
  unseen = sorted(set(raw["test"][1]) - set(ids))
  if unseen:
    raise ValueError(
      f"{name}: test labels {unseen} never occur in the train split (labels {classes})"
    )
  T = max(len(s) for series, _ in raw.values() for s in series)
  ragged = any(len(s) != T for series, _ in raw.values() for s in series)
  splits = {}
  for split, (series, labels) in raw.items():
    x_NTC, lengths_N = _pad(series, T)
    y_N = np.array([ids[v] for v in labels], np.int32)
    splits[split] = Split(x_NTC, y_N, lengths_N if ragged else None)
  return splits, classes


def load_ucr(
  name: str, seed: int, *, val_fraction: float = 0.3, extract_path: str | None = None
) -> Dataset:
  """Loads a UCR/UEA classification dataset, split and normalised.

  Args:
    name: the dataset's name as aeon spells it (``"GunPoint"``).
    seed: picks which official-train examples go to validation. The split is
      stratified, each class keeps at least one example in train, and the
      split sizes do not depend on ``seed``.
    val_fraction: share of the official train split held out, in ``(0, 1)``.
    extract_path: folder holding ``<name>/<name>_{TRAIN,TEST}.ts``, for
      datasets aeon does not bundle (checked first when given).

  Returns:
    A ``Dataset`` whose ``test`` is the official test split. ``x`` is
    ``[N, T, C]`` with ``T`` the longest series of all splits; ``lengths``
    is None unless some series is shorter. Class id ``i`` is label
    ``classes[i]``, labels sorted (numerically when all are numbers).

  Raises:
    FileNotFoundError: the dataset is neither bundled nor under ``extract_path``.
    ValueError: a bad ``val_fraction`` or seed, a test label absent from the
      train split, or missing values.
  """
  val_fraction = check_val_fraction(val_fraction)
  splits, classes = load_raw(name, extract_path)
  official = splits["train"]
  train_idx, val_idx = stratified_split(official.y, val_fraction, seed)
  train = official.subset(train_idx)
  norm = Normalizer.fit(train)
  return Dataset(
    name=name,
    train=norm.apply(train),
    val=norm.apply(official.subset(val_idx)),
    test=norm.apply(splits["test"]),
    classes=tuple(classes),
    normalizer=norm,
  )
