"""Per-channel z-normalisation fitted on a training split, saved with the run.

The statistics come from the valid steps of the training split only
(padding excluded); padding stays zero in every split. A run folder keeps
them (``data.json``), so new raw data is scaled exactly as the training data
was (``lstmdrop_jax.predict``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lstmdrop_jax.data.batching import Split

# Channels whose train std is below this are centred but not scaled (constant inputs).
_MIN_STD = 1e-8


def valid_steps(x_NTC: np.ndarray, lengths_N: np.ndarray | None) -> np.ndarray:
  """``[N, T]`` True at the valid (unpadded) steps."""
  N, T = x_NTC.shape[:2]
  if lengths_N is None:
    return np.ones((N, T), bool)
  return np.arange(T)[None, :] < np.asarray(lengths_N)[:, None]


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """``(x - mean) / std`` per channel, zero at padded steps.

  Attributes:
    mean, std: ``[C]`` float64 statistics of the training split.
  """

  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def fit(cls, train: Split) -> Normalizer:
    x_VC = train.x[valid_steps(train.x, train.lengths)].astype(np.float64)
    std_C = x_VC.std(0)
    return cls(x_VC.mean(0), np.where(std_C < _MIN_STD, 1.0, std_C))

  def __call__(self, x_NTC: np.ndarray, lengths_N: np.ndarray | None = None) -> np.ndarray:
    """Normalised ``[N, T, C]`` float32."""
    x_NTC = np.asarray(x_NTC)
    if x_NTC.ndim != 3 or x_NTC.shape[-1] != len(self.mean):
      raise ValueError(
        f"expected series of shape [N, T, {len(self.mean)}] (the channels the run was trained "
        f"on), got {x_NTC.shape}"
      )
    x = (x_NTC - self.mean) / self.std
    return np.where(valid_steps(x_NTC, lengths_N)[..., None], x, 0.0).astype(np.float32)

  def apply(self, split: Split) -> Split:
    return Split(self(split.x, split.lengths), split.y, split.lengths)

  def to_dict(self) -> dict[str, Any]:
    return {"mean": self.mean.tolist(), "std": self.std.tolist()}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Normalizer:
    return cls(np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64))


def znormalise(train: Split, *others: Split) -> tuple[Split, ...]:
  """``(train, *others)`` normalised with statistics of ``train``."""
  norm = Normalizer.fit(train)
  return tuple(norm.apply(s) for s in (train, *others))
