"""Your own series as numpy arrays (or an ``.npz`` file of them).

``ArrayData`` holds the series ``x [N, T, F]`` (or ``[N, T]`` for one
channel; ``layout="NCT"`` takes aeon's ``[N, channels, time]`` and
transposes it), their labels ``y [N]`` (ints or strings), optional valid
``lengths [N]`` for variable-length series (zero-padded after each length),
and optional explicit validation and test splits. Without a validation
split, ``val_fraction`` of ``x`` is held out by seed (stratified, as for the
UCR sets); without a test split there is none, and the tables show n/a
where a test score would stand.

An ``.npz`` file holds the same arrays under these keys::

  x, y, lengths                  the training series (lengths optional)
  x_val, y_val, lengths_val      optional validation split
  x_test, y_test, lengths_test   optional test split
  classes                        optional label names; y are then ints in [0, K)

Save one with ``np.savez(path, x=x, y=y, x_test=..., y_test=...)`` and train
with ``--dataset path.npz`` (``--layout NCT`` for aeon's layout); or pass ``ArrayData`` to
``train_and_evaluate(config, workdir, data=...)``. Every split is
z-normalised per channel with statistics of the training split
(``normalize.py``); the run folder keeps them for prediction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from collections import Counter

import numpy as np

from lstmdrop_jax.data.batching import Dataset, Split, check_val_fraction, stratified_split
from lstmdrop_jax.data.normalize import Normalizer

SPLIT_KEYS = {"train": "", "val": "_val", "test": "_test"}
#: How a 3-D array of series is laid out: ``NTF`` [N, time, features] (this
#: library's), ``NCT`` [N, channels, time] (aeon's and sktime's).
LAYOUTS = ("NTF", "NCT")
NPZ_KEYS = (
  *(f"{a}{suffix}" for suffix in SPLIT_KEYS.values() for a in ("x", "y", "lengths")),
  "classes",
)


def open_npz(path: str | os.PathLike) -> np.lib.npyio.NpzFile:
  """``np.load`` of an ``.npz`` file, without pickles.

  Raises:
    ValueError: the file is not an ``.npz`` archive of arrays (the message names it).
  """
  try:
    f = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile):
    f = None
  if not isinstance(f, np.lib.npyio.NpzFile):
    raise ValueError(
      f"{os.fspath(path)}: not an .npz file of numpy arrays; write one with "
      "np.savez(path, x=x, y=y, ...) (keys: x, y[, lengths, x_val, y_val, x_test, y_test, "
      "classes])"
    )
  return f


def check_layout(layout: str) -> None:
  """Raises ``ValueError`` unless ``layout`` is one of ``LAYOUTS``."""
  if layout not in LAYOUTS:
    raise ValueError(
      f"layout must be 'NTF' ([N, time, features]) or 'NCT' (aeon's [N, channels, time]), "
      f"got {layout!r}"
    )


def as_series(x, name: str = "x", layout: str = "NTF") -> np.ndarray:
  """``x`` checked and as float32 ``[N, T, F]`` (a ``[N, T]`` array gets one channel;
  ``layout="NCT"``: a 3-D ``x`` is ``[N, channels, time]``, transposed).

  Raises:
    ValueError: not numbers of such a shape, NaN, or series of one time step
      (the message names aeon's layout, the likely cause).
  """
  check_layout(layout)
  x = np.asarray(x)
  if x.ndim == 2:  # one channel
    x = x[..., None]
  if x.ndim != 3 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.number):
    raise ValueError(
      f"{name} must be numbers of shape [N, T, F] (or [N, T] for one channel), got "
      f"{x.dtype} of shape {x.shape}"
    )
  if layout == "NCT":
    x = x.transpose(0, 2, 1)
  if x.shape[1] == 1:
    raise ValueError(
      f"{name} holds series of one time step ([N, T, F] = {list(x.shape)}): an LSTM would "
      f"see {x.shape[2]} features once. Arrays from aeon are [N, channels, time]: pass "
      "layout='NCT' (--layout NCT), or transpose them to [N, time, channels]"
    )
  if not np.isfinite(x).all():
    raise ValueError(f"{name} has NaN or infinite values; impute or drop them first")
  return x.astype(np.float32)


def label_order(labels) -> list[str]:
  """Sorted label names; numerically when all are numbers, so "10" follows "9"."""
  names = sorted({str(v) for v in labels})
  try:
    return sorted(names, key=lambda s: (float(s), s))
  except ValueError:
    return names


@dataclasses.dataclass(frozen=True)
class ArrayData:
  """Series, labels and optional lengths; optional explicit val and test splits.

  See the module doc for shapes. Arrays are checked and converted when built.
  """

  x: np.ndarray
  y: np.ndarray
  lengths: np.ndarray | None = None
  x_val: np.ndarray | None = None
  y_val: np.ndarray | None = None
  lengths_val: np.ndarray | None = None
  x_test: np.ndarray | None = None
  y_test: np.ndarray | None = None
  lengths_test: np.ndarray | None = None
  classes: tuple[str, ...] | None = None
  layout: str = "NTF"

  def __post_init__(self):
    check_layout(self.layout)
    for suffix in SPLIT_KEYS.values():
      x, y = getattr(self, f"x{suffix}"), getattr(self, f"y{suffix}")
      if (x is None) != (y is None):
        raise ValueError(f"give both x{suffix} and y{suffix}, or neither")
      if x is None:
        if getattr(self, f"lengths{suffix}") is not None:
          raise ValueError(f"lengths{suffix} given without x{suffix}")
        continue
      object.__setattr__(self, f"x{suffix}", as_series(x, f"x{suffix}", self.layout))
      y = np.asarray(y)
      if y.shape != (len(x),):
        raise ValueError(f"y{suffix} must be [N] = [{len(x)}] labels, got shape {y.shape}")
      object.__setattr__(self, f"y{suffix}", y)
    if self.classes is not None:
      object.__setattr__(self, "classes", tuple(str(c) for c in np.asarray(self.classes)))
    features = {getattr(self, f"x{s}").shape[2] for s in SPLIT_KEYS.values() if self._has(s)}
    if len(features) != 1:
      raise ValueError(f"every split needs the same number of channels F, got {sorted(features)}")
    counts = Counter(str(v) for v in self.y)
    if len(counts) < 2:
      label, n = next(iter(counts.items()))
      raise ValueError(
        f"y holds one class ({label!r}: {n} series); a classifier needs labels of at least "
        "two classes"
      )

  def _has(self, suffix: str) -> bool:
    return getattr(self, f"x{suffix}") is not None

  @classmethod
  def from_npz(cls, path: str | os.PathLike, layout: str = "NTF") -> ArrayData:
    """Reads the keys of the module doc from an ``.npz`` file (``layout``: its ``x``
    arrays').

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an ``.npz`` file, unknown keys, or arrays of the wrong shape.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"dataset file {path!r} not found")
    with open_npz(path) as f:
      unknown = sorted(set(f.files) - set(NPZ_KEYS))
      if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; valid keys are {list(NPZ_KEYS)}")
      if "x" not in f.files or "y" not in f.files:
        raise ValueError(f"{path}: needs at least the keys 'x' and 'y', got {f.files}")
      try:
        return cls(**{k: f[k] for k in f.files}, layout=layout)
      except ValueError as e:
        raise ValueError(f"{path}: {e}") from None

  def fingerprint(self) -> str:
    """A hash of every array: a resumed run checks it trains on the same data."""
    h = hashlib.sha256()
    for field in dataclasses.fields(self):
      if field.name == "layout":  # the arrays are kept as [N, T, F] whatever they came as
        continue
      a = getattr(self, field.name)
      h.update(field.name.encode())
      if a is not None:
        a = np.asarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]

  def dataset(self, name: str, *, seed: int, val_fraction: float = 0.3) -> Dataset:
    """The splits of one run: val held out by ``seed`` unless given, all normalised."""
    check_val_fraction(val_fraction)
    classes = self.classes or tuple(label_order(np.concatenate(self._labels())))
    ids = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split, suffix in SPLIT_KEYS.items():
      if self._has(suffix):
        splits[split] = Split(
          getattr(self, f"x{suffix}"),
          self._ids(getattr(self, f"y{suffix}"), ids, classes, f"y{suffix}"),
          getattr(self, f"lengths{suffix}"),
        )
    if "val" not in splits:
      train_idx, val_idx = stratified_split(splits["train"].y, val_fraction, seed)
      splits["val"] = splits["train"].subset(val_idx)
      splits["train"] = splits["train"].subset(train_idx)
    norm = Normalizer.fit(splits["train"])
    test = splits.get("test")
    return Dataset(
      name=name,
      train=norm.apply(splits["train"]),
      val=norm.apply(splits["val"]),
      test=None if test is None else norm.apply(test),
      classes=classes,
      normalizer=norm,
      fingerprint=self.fingerprint(),
    )

  def _labels(self) -> list[np.ndarray]:
    return [getattr(self, f"y{s}") for s in SPLIT_KEYS.values() if self._has(s)]

  def _ids(self, y: np.ndarray, ids: dict, classes, key: str) -> np.ndarray:
    if self.classes is not None:  # ints in [0, K)
      if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(classes):
        raise ValueError(f"with classes given, {key} must be ints in [0, {len(classes)})")
      return y.astype(np.int32)
    return np.array([ids[str(v)] for v in y], np.int32)
