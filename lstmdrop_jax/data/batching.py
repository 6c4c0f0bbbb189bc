"""Splits, datasets, and static-shape batching for sequence classification.

A ``Split`` holds channels-last series ``x [N, T, F]`` (zero-padded after each
series' length), integer labels ``y [N]`` and, for variable-length data, the
valid lengths ``[N]``. Batches are dicts of numpy arrays with static shapes:
the last partial batch is padded to ``batch_size`` with rows whose ``mask`` is
False, so a jitted step compiles once and no example is ever dropped.

The training order is a function of ``(seed, epoch)`` only, so a resumed run
sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a classification dataset.

  Attributes:
    x: ``[N, T, F]`` float32, channels-last, zero after each series' length.
    y: ``[N]`` int32 class ids.
    lengths: ``[N]`` int32 valid steps, or None when every series has the
      full length ``T``.

  Arrays are converted to the dtypes above; shapes are checked.
  """

  x: np.ndarray
  y: np.ndarray
  lengths: np.ndarray | None = None

  def __post_init__(self):
    x = np.asarray(self.x, np.float32)
    y = np.asarray(self.y, np.int32)
    if x.ndim != 3:
      raise ValueError(f"Split.x must be [N, T, F], got shape {x.shape}")
    if y.shape != (x.shape[0],):
      raise ValueError(f"Split.y must be [N] = [{x.shape[0]}], got shape {y.shape}")
    object.__setattr__(self, "x", x)
    object.__setattr__(self, "y", y)
    if self.lengths is not None:
      lengths = np.asarray(self.lengths, np.int32)
      if lengths.shape != y.shape:
        raise ValueError(f"Split.lengths must be [N] = [{len(y)}], got shape {lengths.shape}")
      if lengths.size and (lengths.min() < 1 or lengths.max() > x.shape[1]):
        raise ValueError(
          f"Split.lengths must lie in [1, T={x.shape[1]}], "
          f"got range [{lengths.min()}, {lengths.max()}]"
        )
      object.__setattr__(self, "lengths", lengths)

  def __len__(self) -> int:
    return int(self.y.shape[0])

  def subset(self, idx: np.ndarray) -> Split:
    """The examples at ``idx``, in that order."""
    lengths = None if self.lengths is None else self.lengths[idx]
    return Split(self.x[idx], self.y[idx], lengths)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A classification dataset: train/val/test splits and the label mapping.

  Attributes:
    name: the dataset's name (``"synthetic"``, ``"GunPoint"``, ...).
    train: the split models are fitted on.
    val: held out from the official train split, for curves and early stopping.
    test: the official test split, reported separately (None: the data has none).
    classes: class id ``i`` stands for the original label ``classes[i]``.
    normalizer: the ``normalize.Normalizer`` fitted on ``train`` and applied to
      every split, or None when the data is used as it comes.
    fingerprint: identifies the data a run was trained on (checked on resume).
  """

  name: str
  train: Split
  val: Split
  test: Split | None
  classes: tuple[str, ...]
  normalizer: Any = None
  fingerprint: str = ""

  @property
  def splits(self) -> tuple[str, ...]:
    """The evaluation splits this dataset has: train, val and (if any) test."""
    return ("train", "val") if self.test is None else ("train", "val", "test")

  def __post_init__(self):
    shapes = {s: getattr(self, s).x.shape[1:] for s in self.splits}
    if len(set(shapes.values())) != 1:
      raise ValueError(f"all splits must share [T, F], got {shapes}")
    object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  @property
  def num_features(self) -> int:
    """``F``, the channels per time step."""
    return int(self.train.x.shape[2])

  @property
  def length(self) -> int:
    """``T``, the padded series length."""
    return int(self.train.x.shape[1])


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  return int(value)


def num_batches(n: int, batch_size: int) -> int:
  """Batches per pass over ``n`` examples: ``ceil(n / batch_size)``."""
  n = _check_int("n", n, 0)
  batch_size = _check_int("batch_size", batch_size, 1)
  return math.ceil(n / batch_size)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  """The training order of epoch ``epoch``: a permutation of ``range(n)``.

  A function of ``(seed, epoch)`` only (no global state), so resuming at any
  epoch reproduces the uninterrupted run's order.
  """
  n = _check_int("n", n, 0)
  seed = _check_int("seed", seed, 0)
  epoch = _check_int("epoch", epoch, 0)
  return np.random.default_rng([seed, epoch]).permutation(n)


def _check_split(split: Split, batch_size: int) -> None:
  _check_int("batch_size", batch_size, 1)
  if not isinstance(split, Split):
    raise ValueError(f"expected a Split, got {type(split).__name__}")
  if len(split) == 0:
    raise ValueError("cannot batch an empty split (0 examples)")


def _batches(split: Split, order: np.ndarray, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  n = len(order)
  for start in range(0, n, batch_size):
    idx = order[start : start + batch_size]
    pad = batch_size - len(idx)
    mask_B = np.ones(batch_size, bool)
    if pad:
      mask_B[len(idx) :] = False
    x_BTF = split.x[idx]
    y_B = split.y[idx]
    if pad:
      # Padding rows: zeros, label 0, length 0; masked out of every metric.
      x_BTF = np.concatenate([x_BTF, np.zeros((pad, *x_BTF.shape[1:]), np.float32)])
      y_B = np.concatenate([y_B, np.zeros(pad, np.int32)])
    batch = {"x": x_BTF, "y": y_B, "mask": mask_B}
    if split.lengths is not None:
      lengths_B = split.lengths[idx]
      if pad:
        lengths_B = np.concatenate([lengths_B, np.zeros(pad, np.int32)])
      batch["lengths"] = lengths_B
    yield batch


def train_batches(
  split: Split, batch_size: int, seed: int, epoch: int
) -> Iterator[dict[str, np.ndarray]]:
  """One training epoch in ``epoch_order(len(split), seed, epoch)``.

  Args:
    split: the examples.
    batch_size: rows per batch; the last batch is padded up to it.
    seed: the run's seed.
    epoch: the epoch index (0-based).

  Yields:
    ``{"x": [B, T, F] float32, "y": [B] int32, "mask": [B] bool}`` plus
    ``"lengths": [B] int32`` when the split has lengths. Every example appears
    exactly once per epoch with ``mask`` True.

  Raises:
    ValueError: ``batch_size < 1``, an empty split, or a negative seed/epoch.
  """
  _check_split(split, batch_size)
  return _batches(split, epoch_order(len(split), seed, epoch), batch_size)


def eval_batches(split: Split, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """One pass over ``split`` in index order, batched as in ``train_batches``.

  Raises:
    ValueError: ``batch_size < 1`` or an empty split.
  """
  _check_split(split, batch_size)
  return _batches(split, np.arange(len(split)), batch_size)


def stratified_split(
  y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Splits example indices into train and validation, class by class.

  The validation set takes ``max(1, round(val_fraction * N))`` examples,
  shared out over the classes in proportion to their counts (largest
  remainder, ties to the lower class id), and every class keeps at least one
  example in train. The sizes depend on the class counts only; ``seed`` picks
  which examples, so splits of several seeds have equal shapes.

  Args:
    y: ``[N]`` int class ids.
    val_fraction: in ``(0, 1)``.
    seed: a non-negative int.

  Returns:
    ``(train_idx, val_idx)``, each sorted.

  Raises:
    ValueError: a bad ``val_fraction`` or seed, or too few examples to give
      validation one example while every class keeps one in train.
  """
  check_val_fraction(val_fraction)
  seed = _check_int("seed", seed, 0)
  y = np.asarray(y)
  classes, counts = np.unique(y, return_counts=True)
  n = len(y)
  n_val = max(1, round(val_fraction * n))
  room = counts - 1  # each class keeps one in train
  if n_val > room.sum():
    raise ValueError(
      f"cannot hold out {n_val} of {n} examples for validation while each of the "
      f"{len(classes)} classes keeps one in train; lower val_fraction ({val_fraction})"
    )
  quota = n_val * counts / n
  take = np.minimum(np.floor(quota).astype(int), room)
  # Share out the rest by largest remainder; the stable sort breaks ties by class.
  while take.sum() < n_val:
    rest = np.where(take < room, quota - take, -np.inf)
    take[np.argsort(-rest, kind="stable")[0]] += 1
  rng = np.random.default_rng(seed)
  val = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)]
  val_idx = np.sort(np.concatenate(val))
  train_idx = np.setdiff1d(np.arange(n), val_idx)
  return train_idx, val_idx


def check_val_fraction(val_fraction: float) -> float:
  """Returns ``val_fraction`` as a float, or raises unless it is in (0, 1)."""
  if (
    isinstance(val_fraction, bool)
    or not isinstance(val_fraction, numbers.Real)
    or not 0.0 < float(val_fraction) < 1.0
  ):
    raise ValueError(
      f"val_fraction must be a number in (0, 1), the share of the official train "
      f"split held out for validation; got {val_fraction!r}"
    )
  return float(val_fraction)


def stack_runs(per_item: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """``[{name: a}, ...] -> {name: stacked a}`` on a new leading axis."""
  per_item = list(per_item)
  return {name: np.stack([d[name] for d in per_item]) for name in per_item[0]}
